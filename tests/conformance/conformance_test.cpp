// The conformance suite: the same behaviour, asserted the same way, on every
// transport. A transport is done when it passes this file (skips documented
// in docs/transports.md).
#define BOOST_TEST_MODULE conformance
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <cstring>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <system_error>
#include <stop_token>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "test_support.hpp"

using namespace std::chrono_literals;
using ipcbus::test::Sample;
using ipcbus::test::scratch_domain;

namespace {

struct unix_transport { static constexpr const char* name = "unix"; };
struct tcp_transport { static constexpr const char* name = "tcp"; };
struct shm_transport { static constexpr const char* name = "shm"; };
struct pipe_transport { static constexpr const char* name = "pipe"; };
struct mq_transport { static constexpr const char* name = "mq"; };
using transports = boost::mpl::list<unix_transport, tcp_transport, shm_transport, pipe_transport, mq_transport>;

std::string yaml(const std::string& transport, const std::string& extra_defaults = "",
                 const std::string& topics = "") {
  std::string y = "defaults: { transport: " + transport;
  if (!extra_defaults.empty()) y += ", " + extra_defaults;
  y += " }\n";
  if (!topics.empty()) y += "topics:\n" + topics;
  return y;
}

// Collects what a callback subscriber got.
struct collector {
  std::mutex m;
  std::vector<std::pair<Sample, ipcbus::MessageInfo>> got;
  void operator()(const Sample& s, const ipcbus::MessageInfo& i) {
    std::lock_guard l(m);
    got.emplace_back(s, i);
  }
  std::size_t size() {
    std::lock_guard l(m);
    return got.size();
  }
};

// What a reliable publisher accepted before it timed out: messages 1..count
// in order, none lost, and nothing after them.
void expect_exactly_in_order(ipcbus::Subscriber<Sample>& sub, std::uint64_t count) {
  for (std::uint64_t i = 1; i <= count; ++i) {
    auto r = sub.receive(5s);
    BOOST_REQUIRE(r.has_value());
    BOOST_TEST(r->message.index() == i);
    BOOST_TEST(r->info.lost_before == 0u);
  }
  BOOST_TEST(!sub.receive(100ms).has_value());
}

// A message whose serializer fails when told to: returns false (as protobuf's
// does when a message changed between sizing and writing), or throws.
struct flaky {
  enum class how { writes, fails, throws };
  std::string bytes;
  how mode = how::writes;
};

}  // namespace

template <>
struct ipcbus::message_traits<flaky> {
  static const std::string& type_name() {
    static const std::string name = "test.flaky";
    return name;
  }
  static const google::protobuf::Descriptor* descriptor() { return nullptr; }
  static std::size_t byte_size(const flaky& m) { return m.bytes.size(); }
  static bool write(const flaky& m, char* out, std::size_t size) {
    if (m.mode == flaky::how::throws) throw std::runtime_error("the serializer failed");
    if (m.mode == flaky::how::fails) return false;
    std::memcpy(out, m.bytes.data(), size);
    return true;
  }
  static bool parse(std::string_view bytes, flaky& out) {
    out.bytes.assign(bytes);
    return true;
  }
};

// CONFORMANCE_CASE(name) { body } runs body once per transport, with `transport`
// naming it. The body is an ordinary function, compiled once; only the one-line
// template case is instantiated per transport. (Five instantiations of every body
// made this the slowest file of the build by far.)
#define CONFORMANCE_CASE(case_name)                                                  \
  static void case_name##_on(const std::string& transport);                          \
  BOOST_AUTO_TEST_CASE_TEMPLATE(case_name, T, transports) { case_name##_on(T::name); } \
  static void case_name##_on(const std::string& transport)

CONFORMANCE_CASE(messages_arrive_complete_and_in_order) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml(transport)));
  collector c;
  auto sub = bus.subscribe<Sample>("orders/in", std::ref(c));
  auto pub = bus.advertise<Sample>("orders/in");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
  constexpr int n = 2000;
  for (int i = 1; i <= n; ++i) pub.publish(ipcbus::test::make_sample(i, 100));
  BOOST_REQUIRE(ipcbus::test::eventually([&] { return c.size() == n; }));
  for (int i = 0; i < n; ++i) {
    BOOST_TEST(c.got[i].first.index() == static_cast<std::uint64_t>(i + 1));
    BOOST_TEST(c.got[i].second.sequence == static_cast<std::uint64_t>(i + 1));
    BOOST_TEST(c.got[i].second.lost_before == 0u);
    BOOST_TEST(c.got[i].second.transport == transport);
    BOOST_TEST(c.got[i].second.topic == "orders/in");
    BOOST_TEST(ipcbus::test::sample_intact(c.got[i].first));
  }
}

// A publisher faster than its subscriber: the stream transports coalesce the
// backlog into gathered writes that end inside frames; sizes on both sides of
// the coalescing limit (4 KiB) mix batched and direct writes.
CONFORMANCE_CASE(a_burst_faster_than_the_subscriber_reads_arrives_complete_and_in_order) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml(transport, "qos: reliable, depth: 16, publish_timeout_ms: 10000")));
  auto sub = bus.subscribe<Sample>("burst/in");
  auto pub = bus.advertise<Sample>("burst/in");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
  constexpr int n = 3000;
  std::thread publisher([&] {
    for (int i = 1; i <= n; ++i) pub.publish(ipcbus::test::make_sample(i, (i * 7919) % 6000));
  });
  for (int i = 1; i <= n; ++i) {
    auto r = sub.receive(15s);
    BOOST_REQUIRE(r.has_value());
    BOOST_REQUIRE(r->message.index() == static_cast<std::uint64_t>(i));
    BOOST_TEST(r->info.lost_before == 0u);
    BOOST_TEST(ipcbus::test::sample_intact(r->message));
    if (i % 200 == 0) std::this_thread::sleep_for(5ms);  // the backlog grows meanwhile
  }
  publisher.join();
  BOOST_TEST(!sub.receive(100ms).has_value());  // nothing twice
  BOOST_TEST(pub.counters().dropped == 0u);
  BOOST_TEST(pub.counters().timeouts == 0u);
  BOOST_TEST(sub.counters()->dropped.load() == 0u);
}

// A full reliable pull queue resumes reading once half of it was taken
// (subscriber_core::pop): at the smallest depths that is when it is empty
// (depth 1), one left (depth 2 and 3). A reader that takes a message only
// after the publisher filled the queue again must get every one of them, in
// order, without the publisher timing out.
CONFORMANCE_CASE(a_full_pull_queue_of_any_depth_resumes_and_loses_nothing) {
  for (const int depth : {1, 2, 3, 8}) {
    BOOST_TEST_CONTEXT("depth " << depth) {
      scratch_domain d;
      ipcbus::Bus bus(d.options(
          yaml(transport, "qos: reliable, depth: " + std::to_string(depth) + ", publish_timeout_ms: 10000")));
      auto sub = bus.subscribe<Sample>("full/in");
      auto pub = bus.advertise<Sample>("full/in");
      BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
      constexpr int n = 300;
      // A jthread: a failed check ends the case, not the whole binary.
      std::jthread publisher([&](std::stop_token stop) {
        for (int i = 1; i <= n && !stop.stop_requested(); ++i) pub.publish(ipcbus::test::make_sample(i, 100));
      });
      for (int i = 1; i <= n; ++i) {
        if (i % 50 == 1) std::this_thread::sleep_for(20ms);  // the queue fills meanwhile
        auto r = sub.receive(15s);
        BOOST_REQUIRE(r.has_value());
        BOOST_REQUIRE(r->message.index() == static_cast<std::uint64_t>(i));
        BOOST_TEST(r->info.lost_before == 0u);
      }
      publisher.join();
      BOOST_TEST(!sub.receive(100ms).has_value());
      BOOST_TEST(pub.counters().timeouts == 0u);
      BOOST_TEST(sub.counters()->dropped.load() == 0u);
    }
  }
}

// Two publishers feeding one slow pull subscriber: its queue fills, pauses
// both links, and resumes them once half of it was taken. A link that
// delivers frames it had buffered as soon as it is resumed (the stream
// transports do) can fill the queue again while the others are still being
// resumed; those must then stay paused too. Had one been resumed anyway, it
// would read on into the full queue without bound: its publisher would run
// far ahead of the reader. What either publisher may be ahead by is bounded
// by the queue, the link's read buffer, the socket's or ring's buffering and
// the publisher's own queue: for 4 KB frames about 1 500 on loopback TCP with
// its largest buffers, tens of thousands for one that was let run for a second.
CONFORMANCE_CASE(a_slow_pull_subscriber_of_two_publishers_holds_both_back) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml(transport, "qos: reliable, depth: 4, publish_timeout_ms: 200")));
  auto sub = bus.subscribe<Sample>("two/in");
  auto p1 = bus.advertise<Sample>("two/in");
  auto p2 = bus.advertise<Sample>("two/in");
  BOOST_REQUIRE(p1.wait_for_subscribers(1, 5s));
  BOOST_REQUIRE(p2.wait_for_subscribers(1, 5s));
  BOOST_REQUIRE(sub.wait_for_publishers(2, 5s));
  constexpr std::uint64_t second = 1'000'000'000;  // p2's indexes start here
  std::atomic<std::uint64_t> sent[2] = {0, 0};
  const auto publish = [&](ipcbus::Publisher<Sample>& pub, int which, std::stop_token stop) {
    for (std::uint64_t i = 1; !stop.stop_requested(); ++i) {
      std::error_code ec;
      pub.publish(ipcbus::test::make_sample(which * second + i, 4000), ec);
      if (!ec) ++sent[which];  // a timeout: held back behind the reader, as it should be; again
    }
  };
  std::jthread t1([&](std::stop_token st) { publish(p1, 0, st); });
  std::jthread t2([&](std::stop_token st) { publish(p2, 1, st); });
  std::uint64_t got[2] = {0, 0};
  const auto until = std::chrono::steady_clock::now() + 1s;
  while (std::chrono::steady_clock::now() < until) {
    auto r = sub.receive(10s);
    BOOST_REQUIRE(r.has_value());
    ++got[r->message.index() >= second ? 1 : 0];
    std::this_thread::sleep_for(1ms);
  }
  t1.request_stop();
  t2.request_stop();
  for (int which = 0; which < 2; ++which) {
    BOOST_TEST_CONTEXT("publisher " << which + 1 << ": sent " << sent[which].load() << ", received " << got[which]) {
      BOOST_TEST(sent[which].load() - got[which] < 20000u);
    }
  }
}

// publish_batch: the same delivery as publish() one by one. A subscriber that
// reads slower than batches come makes a reliable batch wait for room in the
// middle (on shm:// the batch's records must become readable first, or it
// would wait for itself); large messages in a batch go to side segments there.
CONFORMANCE_CASE(batches_arrive_complete_in_order_and_share_a_publish_time) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml(transport, "qos: reliable, depth: 16, publish_timeout_ms: 10000")));
  auto sub = bus.subscribe<Sample>("batch/in");
  auto pub = bus.advertise<Sample>("batch/in");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
  constexpr int batches = 30, per_batch = 100, n = batches * per_batch;
  std::error_code publish_error;  // Boost.Test assertions only on the test's own thread
  std::size_t published = 0;
  std::thread publisher([&] {
    std::vector<Sample> batch(per_batch);
    for (int b = 0; b < batches && !publish_error; ++b) {
      for (int j = 0; j < per_batch; ++j) {
        const int i = b * per_batch + j + 1;
        batch[j] = ipcbus::test::make_sample(i, i % 500 == 0 ? 300 * 1024 : (i * 7919) % 3000);
      }
      published += pub.publish_batch(batch, publish_error);
    }
  });
  std::int64_t batch_time = 0;
  for (int i = 1; i <= n; ++i) {
    auto r = sub.receive(15s);
    if (!r || r->message.index() != static_cast<std::uint64_t>(i)) {  // not REQUIRE: the publisher must be joined
      BOOST_ERROR("message " << i << (r ? " out of order" : " did not arrive"));
      break;
    }
    BOOST_TEST(r->info.sequence == static_cast<std::uint64_t>(i));
    BOOST_TEST(r->info.lost_before == 0u);
    BOOST_TEST(ipcbus::test::sample_intact(r->message));
    if ((i - 1) % per_batch == 0) batch_time = r->info.publish_time_ns;
    BOOST_TEST(r->info.publish_time_ns == batch_time);
    if (i % 250 == 0) std::this_thread::sleep_for(5ms);  // batches pile up meanwhile
  }
  publisher.join();
  BOOST_TEST(!publish_error, publish_error.message());
  BOOST_TEST(published == static_cast<std::size_t>(n));
  BOOST_TEST(!sub.receive(100ms).has_value());  // nothing twice
  BOOST_TEST(pub.counters().dropped == 0u);
  BOOST_TEST(pub.counters().timeouts == 0u);
}

// A serializer that fails or throws publishes nothing and spends no sequence
// number; the publisher is left as it was. On shm:// a publish holds the
// ring's lock while the serializer writes into the ring (a frame of up to
// 64 KiB, also in a side segment), releases it for a larger one, and a batch
// keeps it between frames: after each failure it must be free again (close()
// takes it). Under every QoS.
namespace {

void failing_serializers_leave_the_publisher_usable(const std::string& transport, const std::string& settings,
                                                    const std::vector<std::size_t>& sizes, bool batches) {
  BOOST_TEST_CONTEXT(settings) {
    scratch_domain d;
    ipcbus::Bus bus(d.options(yaml(transport, settings)));
    auto sub = bus.subscribe<flaky>("flaky/x");
    auto pub = bus.advertise<flaky>("flaky/x");
    BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
    std::vector<std::string> sent;
    const auto body = [&](std::size_t size) { return std::string(size, static_cast<char>('a' + sent.size())); };
    for (std::size_t size : sizes) {
      const std::string bytes = body(size);
      std::error_code ec;
      pub.publish(flaky{bytes, flaky::how::fails}, ec);
      BOOST_TEST(ec == ipcbus::errc::invalid_argument);
      BOOST_CHECK_THROW(pub.publish(flaky{bytes, flaky::how::throws}), std::runtime_error);
      pub.publish(flaky{bytes, flaky::how::writes}, ec);
      BOOST_TEST(!ec);
      sent.push_back(bytes);
    }
    if (batches) {
      std::vector<flaky> batch{{body(100), flaky::how::writes}, {body(100), flaky::how::fails},
                               {body(100), flaky::how::writes}};
      std::error_code ec;
      BOOST_TEST(pub.publish_batch(batch, ec) == 1u);
      BOOST_TEST(ec == ipcbus::errc::invalid_argument);
      sent.push_back(batch[0].bytes);
      batch[1].mode = flaky::how::throws;
      batch[0].bytes = body(100);
      BOOST_CHECK_THROW(pub.publish_batch(batch), std::runtime_error);
      sent.push_back(batch[0].bytes);
    }
    BOOST_TEST(pub.counters().dropped == 0u);
    BOOST_TEST(pub.counters().timeouts == 0u);
    for (std::uint64_t seq = 1; seq <= sent.size(); ++seq) {
      auto r = sub.receive(5s);
      BOOST_REQUIRE(r.has_value());
      BOOST_TEST(r->info.sequence == seq);
      BOOST_TEST(r->info.lost_before == 0u);
      BOOST_TEST((r->message.bytes == sent[seq - 1]));
    }
    BOOST_TEST(!sub.receive(100ms).has_value());
    pub.close(5s);  // takes the ring's lock on shm://: hangs if a failed publish kept it
  }
}

}  // namespace

CONFORMANCE_CASE(a_failing_serializer_publishes_nothing_and_leaves_the_publisher_usable) {
  for (const std::string qos : {"reliable", "drop_newest", "drop_oldest"}) {
    // shm://: a 512 KiB ring; 100 B in one hold of the lock, 100 KiB in the
    // ring in two steps, 600 KiB in a side segment.
    failing_serializers_leave_the_publisher_usable(transport, "qos: " + qos + ", depth: 8, max_message: 1MiB",
                                                   {100, 100 * 1024, 600 * 1024}, true);
    // shm://: a 128 KiB ring; 40 KiB in a side segment, in one hold of the lock.
    failing_serializers_leave_the_publisher_usable(transport, "qos: " + qos + ", depth: 2, max_message: 64KiB",
                                                   {40 * 1024}, false);
  }
}

// A batch stops at its first failure: those before it are published (and
// readable at once), the failed one and those after it are not, and the
// sequence goes on without a gap. The throwing form names how many went out.
CONFORMANCE_CASE(a_batch_stops_at_its_first_failure_and_publishes_what_came_before) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml(transport, "max_message: 4KiB")));
  auto sub = bus.subscribe<Sample>("batch/partial");
  auto pub = bus.advertise<Sample>("batch/partial");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
  std::vector<Sample> batch;
  for (int i = 1; i <= 10; ++i) batch.push_back(ipcbus::test::make_sample(i, i == 6 ? 8 * 1024 : 100));
  std::error_code ec;
  BOOST_TEST(pub.publish_batch(batch, ec) == 5u);
  BOOST_TEST(ec == ipcbus::errc::message_too_large);
  for (std::uint64_t i = 1; i <= 5; ++i) {
    auto r = sub.receive(5s);
    BOOST_REQUIRE(r.has_value());
    BOOST_TEST(r->message.index() == i);
  }
  BOOST_TEST(!sub.receive(100ms).has_value());
  try {
    pub.publish_batch(batch);
    BOOST_FAIL("publish_batch did not throw");
  } catch (const std::system_error& e) {
    BOOST_TEST(e.code() == ipcbus::errc::message_too_large);
    BOOST_TEST(std::string(e.what()).find("5 of 10 published") != std::string::npos, e.what());
  }
  const std::vector<Sample> rest(batch.begin() + 6, batch.end());
  BOOST_TEST(pub.publish_batch(rest, ec) == rest.size());
  BOOST_TEST(!ec);
  BOOST_TEST(pub.publish_batch(std::span<const Sample>(), ec) == 0u);
  BOOST_TEST(!ec);
  // Five, then the same five again, then 7..10: sequences 1..14, no gap.
  std::vector<std::uint64_t> indexes;
  for (std::uint64_t seq = 6; seq <= 14; ++seq) {
    auto r = sub.receive(5s);
    BOOST_REQUIRE(r.has_value());
    BOOST_TEST(r->info.sequence == seq);
    BOOST_TEST(r->info.lost_before == 0u);
    indexes.push_back(r->message.index());
  }
  BOOST_TEST(indexes == (std::vector<std::uint64_t>{1, 2, 3, 4, 5, 7, 8, 9, 10}), boost::test_tools::per_element());
  BOOST_TEST(!sub.receive(100ms).has_value());
}

CONFORMANCE_CASE(a_reliable_batch_times_out_on_a_stalled_subscriber_and_loses_nothing) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml(transport, "qos: reliable, depth: 4, publish_timeout_ms: 200")));
  auto sub = bus.subscribe<Sample>("batch/slow");  // pull mode, nobody reads yet
  auto pub = bus.advertise<Sample>("batch/slow");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
  std::vector<Sample> batch(500);
  std::uint64_t accepted = 0;
  std::error_code ec;
  for (int b = 0; b < 200 && !ec; ++b) {
    for (std::size_t j = 0; j < batch.size(); ++j) batch[j] = ipcbus::test::make_sample(accepted + j + 1, 1000);
    accepted += pub.publish_batch(batch, ec);
  }
  BOOST_TEST(ec == ipcbus::errc::timed_out);
  BOOST_TEST(accepted > 4u);
  BOOST_TEST(pub.counters().timeouts == 1u);
  expect_exactly_in_order(sub, accepted);
}

CONFORMANCE_CASE(a_batch_under_drop_newest_never_blocks_and_counts_every_drop) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml(transport, "qos: drop_newest, depth: 4")));
  auto sub = bus.subscribe<Sample>("batch/logs");
  auto pub = bus.advertise<Sample>("batch/logs");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
  constexpr std::uint64_t per_batch = 1000, batches = 20;
  std::vector<Sample> batch(per_batch);
  for (std::uint64_t b = 0; b < batches; ++b) {
    for (std::uint64_t j = 0; j < per_batch; ++j) batch[j] = ipcbus::test::make_sample(b * per_batch + j + 1, 1000);
    std::error_code ec;
    BOOST_TEST(pub.publish_batch(batch, ec) == per_batch);  // a drop is not a failure
    BOOST_REQUIRE(!ec);
  }
  std::uint64_t received = 0, first = 0;
  while (auto r = sub.receive(500ms)) {
    if (!first) first = r->message.index();
    ++received;
  }
  BOOST_TEST(first == 1u);
  const auto dropped = pub.counters().dropped + sub.counters()->dropped.load();
  BOOST_TEST(dropped > 0u);
  BOOST_TEST(received + dropped == per_batch * batches);
}

// drop_oldest laps a subscriber that falls behind, also in the middle of a
// batch, and a busy-polling subscriber reading meanwhile loses only what is
// counted: it never finds its cursor moved past what it can read (the link
// would be given up as malformed). Depth 1 and 8 lap it by depth, within a
// batch at 8 (on shm://, the tail is stored every 4 records); 200 KiB frames
// in a 4 MiB ring overwrite it within a batch.
static void batches_under_drop_oldest(const std::string& transport, const std::string& settings, std::size_t body) {
  BOOST_TEST_CONTEXT(transport << ", " << settings) {
    scratch_domain d;
    ipcbus::Bus bus(d.options(yaml(transport, "qos: drop_oldest, busy_poll: true, " + settings)));
    std::mutex m;
    std::uint64_t received = 0, lost = 0, last = 0, disorder = 0, damaged = 0;
    bool warmed_up = false;
    auto sub = bus.subscribe<Sample>("batch/video", [&](const Sample& s, const ipcbus::MessageInfo& info) {
      std::lock_guard l(m);
      lost += info.lost_before;
      if (s.index() == 0) {  // a warm-up frame (below)
        warmed_up = true;
        return;
      }
      ++received;
      if (s.index() <= last) ++disorder;
      if (!ipcbus::test::sample_intact(s)) ++damaged;
      last = s.index();
    });
    auto pub = bus.advertise<Sample>("batch/video");
    BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
    // A subscriber that has not read its first frame yet is spared by a
    // drop_oldest publisher for a while: the new frames are dropped instead
    // (shm_publisher.cpp, newcomers), the newest too. On a busy machine that
    // while can cover every batch below; one frame taken first ends it.
    for (int tries = 0;; ++tries) {
      {
        std::lock_guard l(m);
        if (warmed_up) break;
      }
      BOOST_REQUIRE(tries < 100);
      pub.publish(ipcbus::test::make_sample(0, 8));
      std::this_thread::sleep_for(100ms);
    }
    std::this_thread::sleep_for(100ms);  // a warm-up frame still on its way arrives first
    std::uint64_t lost_warming_up = 0;
    {
      std::lock_guard l(m);
      lost_warming_up = lost;
    }
    const auto dropped_warming_up = pub.counters().dropped + sub.counters()->dropped.load();
    constexpr std::uint64_t per_batch = 32, batches = 8, n = per_batch * batches;
    std::vector<Sample> batch(per_batch);
    for (std::uint64_t b = 0; b < batches; ++b) {
      for (std::uint64_t j = 0; j < per_batch; ++j) batch[j] = ipcbus::test::make_sample(b * per_batch + j + 1, body);
      std::error_code ec;
      BOOST_TEST(pub.publish_batch(batch, ec) == per_batch);
      BOOST_REQUIRE(!ec);
    }
    BOOST_REQUIRE(ipcbus::test::eventually([&] {
      std::lock_guard l(m);
      return last == n;  // the newest message always survives drop_oldest
    }));
    std::lock_guard l(m);
    BOOST_TEST(sub.counters()->bad_frames.load() == 0u);  // the link was never given up
    BOOST_TEST(disorder == 0u);
    BOOST_TEST(damaged == 0u);
    BOOST_TEST(received + lost - lost_warming_up == n);
    BOOST_TEST(pub.counters().dropped + sub.counters()->dropped.load() - dropped_warming_up == lost - lost_warming_up);
  }
}

CONFORMANCE_CASE(a_batch_under_drop_oldest_laps_a_slow_subscriber_and_counts_every_drop) {
  batches_under_drop_oldest(transport, "depth: 1", 8 * 1024);
  batches_under_drop_oldest(transport, "depth: 8", 8 * 1024);  // the tail stored every 4 records
  batches_under_drop_oldest(transport, "depth: 64, max_message: 256KiB", 200 * 1024);
}

CONFORMANCE_CASE(every_subscriber_gets_every_message) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml(transport)));
  collector c1, c2, c3;
  auto s1 = bus.subscribe<Sample>("fan/out", std::ref(c1));
  auto s2 = bus.subscribe<Sample>("fan/*", std::ref(c2));
  auto s3 = bus.subscribe<Sample>("#", std::ref(c3));
  auto pub = bus.advertise<Sample>("fan/out");
  BOOST_REQUIRE(pub.wait_for_subscribers(3, 5s));
  for (int i = 1; i <= 500; ++i) pub.publish(ipcbus::test::make_sample(i, 10));
  for (auto* c : {&c1, &c2, &c3}) {
    BOOST_REQUIRE(ipcbus::test::eventually([&] { return c->size() == 500; }));
    BOOST_TEST(c->got.back().first.index() == 500u);
  }
}

CONFORMANCE_CASE(wildcard_subscriber_finds_publishers_that_appear_later) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml(transport)));
  auto sub = bus.subscribe<Sample>("sensors/#");
  auto early = bus.advertise<Sample>("sensors/a");
  BOOST_REQUIRE(sub.wait_for_publishers(1, 5s));
  auto late = bus.advertise<Sample>("sensors/b/c");
  auto other = bus.advertise<Sample>("actuators/x");
  BOOST_REQUIRE(sub.wait_for_publishers(2, 5s));
  BOOST_REQUIRE(late.wait_for_subscribers(1, 5s));
  late.publish(ipcbus::test::make_sample(7, 1));
  auto r = sub.receive(5s);
  BOOST_REQUIRE(r.has_value());
  BOOST_TEST(r->info.topic == "sensors/b/c");
  BOOST_TEST(other.subscriber_count() == 0u);
}

CONFORMANCE_CASE(late_joiner_receives_the_history) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml(transport, "history: 3, depth: 16")));
  auto pub = bus.advertise<Sample>("state/mode");
  for (int i = 1; i <= 10; ++i) pub.publish(ipcbus::test::make_sample(i, 1));
  auto sub = bus.subscribe<Sample>("state/mode");
  for (std::uint64_t expected : {8u, 9u, 10u}) {
    auto r = sub.receive(5s);
    BOOST_REQUIRE(r.has_value());
    BOOST_TEST(r->message.index() == expected);
    BOOST_TEST(r->info.lost_before == 0u);  // a late joiner has lost nothing
  }
  pub.publish(ipcbus::test::make_sample(11, 1));
  auto r = sub.receive(5s);
  BOOST_REQUIRE(r.has_value());
  BOOST_TEST(r->message.index() == 11u);
  BOOST_TEST(!sub.receive(100ms).has_value());  // and nothing twice
}

CONFORMANCE_CASE(reliable_publisher_times_out_on_a_stalled_subscriber_and_loses_nothing) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml(transport, "qos: reliable, depth: 4, publish_timeout_ms: 200")));
  auto sub = bus.subscribe<Sample>("slow/topic");  // pull mode, nobody reads yet
  auto pub = bus.advertise<Sample>("slow/topic");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
  std::uint64_t accepted = 0;
  std::error_code ec;
  for (int i = 1; i <= 100000 && !ec; ++i) {
    pub.publish(ipcbus::test::make_sample(i, 1000), ec);
    if (!ec) ++accepted;
  }
  BOOST_TEST(ec == ipcbus::errc::timed_out);
  BOOST_TEST(accepted > 4u);
  expect_exactly_in_order(sub, accepted);
}

// Subscriber::pause in a callback (the bridge uses it when a link is full):
// no message after the one that paused, the reliable publisher feels it as a
// slow subscriber and times out, and resume() delivers everything accepted.
CONFORMANCE_CASE(a_paused_callback_subscriber_pushes_back_and_resumes_losing_nothing) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml(transport, "qos: reliable, depth: 4, publish_timeout_ms: 200")));
  collector c;
  ipcbus::Subscriber<Sample>* self = nullptr;
  auto sub = bus.subscribe<Sample>("held/topic", [&](const Sample& s, const ipcbus::MessageInfo& i) {
    c(s, i);
    if (s.index() == 10) self->pause();
  });
  self = &sub;
  auto pub = bus.advertise<Sample>("held/topic");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
  std::uint64_t accepted = 0;
  std::error_code ec;
  for (int i = 1; i <= 100000 && !ec; ++i) {
    pub.publish(ipcbus::test::make_sample(i, 1000), ec);
    if (!ec) ++accepted;
  }
  BOOST_TEST(ec == ipcbus::errc::timed_out);
  BOOST_TEST(accepted > 10u);
  std::this_thread::sleep_for(50ms);
  BOOST_TEST(c.size() == 10u);  // nothing after the message that paused
  sub.resume();
  BOOST_REQUIRE(ipcbus::test::eventually([&] { return c.size() == accepted; }));
  std::this_thread::sleep_for(50ms);
  std::lock_guard l(c.m);
  BOOST_TEST(c.got.size() == accepted);
  for (std::size_t k = 0; k < c.got.size(); ++k) {
    BOOST_TEST(c.got[k].first.index() == k + 1);
    BOOST_TEST(c.got[k].second.lost_before == 0u);
  }
}

CONFORMANCE_CASE(drop_oldest_never_blocks_and_counts_every_drop) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml(transport, "qos: drop_oldest, depth: 4")));
  auto sub = bus.subscribe<Sample>("video/frames");
  auto pub = bus.advertise<Sample>("video/frames");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
  constexpr std::uint64_t n = 20000;
  // Nobody reads while we publish: a blocking publisher would time out here.
  for (std::uint64_t i = 1; i <= n; ++i) {
    std::error_code ec;
    pub.publish(ipcbus::test::make_sample(i, 1000), ec);
    BOOST_REQUIRE(!ec);
  }
  std::uint64_t received = 0, lost = 0, last = 0;
  while (auto r = sub.receive(500ms)) {
    ++received;
    lost += r->info.lost_before;
    BOOST_TEST(r->message.index() > last);
    last = r->message.index();
  }
  BOOST_TEST(last == n);  // the newest message always survives drop_oldest
  BOOST_TEST(received + lost == n);
  BOOST_TEST(lost > 0u);
  BOOST_TEST(pub.counters().dropped + sub.counters()->dropped.load() == lost);
}

CONFORMANCE_CASE(drop_newest_never_blocks_and_counts_every_drop) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml(transport, "qos: drop_newest, depth: 4")));
  auto sub = bus.subscribe<Sample>("logs/app");
  auto pub = bus.advertise<Sample>("logs/app");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
  constexpr std::uint64_t n = 20000;
  for (std::uint64_t i = 1; i <= n; ++i) {
    std::error_code ec;
    pub.publish(ipcbus::test::make_sample(i, 1000), ec);
    BOOST_REQUIRE(!ec);
  }
  std::uint64_t received = 0, lost = 0, first = 0;
  while (auto r = sub.receive(500ms)) {
    if (!first) first = r->message.index();
    ++received;
    lost += r->info.lost_before;
  }
  BOOST_TEST(first == 1u);  // the oldest message always survives drop_newest
  // Exact accounting: every message was delivered or counted as dropped on one side.
  const auto dropped = pub.counters().dropped + sub.counters()->dropped.load();
  BOOST_TEST(dropped > 0u);
  BOOST_TEST(received + dropped == n);
  BOOST_TEST(lost <= dropped);  // drops at the tail show as no gap: the counters are the truth
}

CONFORMANCE_CASE(large_messages_up_to_the_limit_arrive_intact) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml(transport, "max_message: 8MiB")));
  auto sub = bus.subscribe<Sample>("blobs/big");
  auto pub = bus.advertise<Sample>("blobs/big");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
  auto big = ipcbus::test::make_sample(1, 8 * 1024 * 1024 - 64);
  pub.publish(big);
  auto r = sub.receive(10s);
  BOOST_REQUIRE(r.has_value());
  BOOST_TEST(r->message.body().size() == big.body().size());
  BOOST_TEST(ipcbus::test::sample_intact(r->message));

  std::error_code ec;
  pub.publish(ipcbus::test::make_sample(2, 8 * 1024 * 1024 + 1), ec);
  BOOST_TEST(ec == ipcbus::errc::message_too_large);
}

CONFORMANCE_CASE(oversize_frame_closes_only_that_link) {
  scratch_domain d;
  // The subscriber accepts 1 KiB; one publisher (other config) sends more, one stays within.
  ipcbus::Bus sub_bus(d.options(yaml(transport, "max_message: 1KiB")));
  ipcbus::Bus big_bus(d.options(yaml(transport, "max_message: 1MiB")));
  auto sub = sub_bus.subscribe<Sample>("mixed/#");
  auto big = big_bus.advertise<Sample>("mixed/big");
  auto small = big_bus.advertise<Sample>("mixed/small");
  BOOST_REQUIRE(sub.wait_for_publishers(2, 5s));
  BOOST_REQUIRE(big.wait_for_subscribers(1, 5s));  // attached on both ends before we send
  BOOST_REQUIRE(small.wait_for_subscribers(1, 5s));  // or its message may go to nobody
  big.publish(ipcbus::test::make_sample(1, 100 * 1024));
  BOOST_REQUIRE(ipcbus::test::eventually([&] { return sub.counters()->bad_frames.load() == 1; }));
  small.publish(ipcbus::test::make_sample(2, 10));
  auto r = sub.receive(5s);
  BOOST_REQUIRE(r.has_value());
  BOOST_TEST(r->info.topic == "mixed/small");
}

CONFORMANCE_CASE(publisher_going_away_is_noticed_and_a_new_one_is_picked_up) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml(transport)));
  auto sub = bus.subscribe<Sample>("svc/state");
  {
    ipcbus::Bus other(d.options(yaml(transport)));
    auto pub = other.advertise<Sample>("svc/state");
    BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
    pub.publish(ipcbus::test::make_sample(1, 1));
    BOOST_REQUIRE(sub.receive(5s).has_value());
  }
  BOOST_REQUIRE(ipcbus::test::eventually([&] { return sub.publisher_count() == 0; }));
  ipcbus::Bus again(d.options(yaml(transport)));
  auto pub2 = again.advertise<Sample>("svc/state");
  BOOST_REQUIRE(pub2.wait_for_subscribers(1, 5s));
  pub2.publish(ipcbus::test::make_sample(42, 1));
  auto r = sub.receive(5s);
  BOOST_REQUIRE(r.has_value());
  BOOST_TEST(r->message.index() == 42u);
}

CONFORMANCE_CASE(subscriber_of_another_type_is_not_fed_garbage) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml(transport)));
  auto wrong = bus.subscribe<ipcbus::test::Other>("typed/topic");
  auto raw = bus.subscribe<ipcbus::Bytes>("typed/topic");
  auto pub = bus.advertise<Sample>("typed/topic");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
  BOOST_REQUIRE(ipcbus::test::eventually([&] { return wrong.counters()->bad_frames.load() == 1; }));
  auto s = ipcbus::test::make_sample(5, 3);
  pub.publish(s);
  auto r = raw.receive(5s);  // raw bytes subscribers take any type
  BOOST_REQUIRE(r.has_value());
  BOOST_TEST(r->message.bytes() == s.SerializeAsString());
  BOOST_TEST(wrong.publisher_count() == 0u);
}

CONFORMANCE_CASE(raw_bytes_travel_unchanged) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml(transport)));
  std::mutex m;
  std::vector<std::string> got;
  auto sub = bus.subscribe<ipcbus::Bytes>("raw/data", [&](const ipcbus::Bytes& b, const ipcbus::MessageInfo&) {
    std::lock_guard l(m);
    got.push_back(b.to_string());
  });
  auto pub = bus.advertise<ipcbus::Bytes>("raw/data");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
  pub.publish(ipcbus::Bytes(std::string("\0\x01binary", 8)));
  pub.publish(ipcbus::Bytes(""));
  BOOST_REQUIRE(ipcbus::test::eventually([&] { std::lock_guard l(m); return got.size() == 2; }));
  BOOST_TEST(got[0] == std::string("\0\x01binary", 8));
  BOOST_TEST(got[1].empty());
}

namespace {

// A payload whose every byte depends on its size and position.
void fill_pattern(char* data, std::size_t size) {
  for (std::size_t i = 0; i < size; ++i) data[i] = static_cast<char>((i * 131 + size) & 0xff);
}

bool has_pattern(std::string_view bytes) {
  for (std::size_t i = 0; i < bytes.size(); ++i)
    if (bytes[i] != static_cast<char>((i * 131 + bytes.size()) & 0xff)) return false;
  return true;
}

}  // namespace

CONFORMANCE_CASE(loaned_raw_messages_arrive_intact) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml(transport)));
  auto sub = bus.subscribe<ipcbus::Bytes>("raw/loans");
  auto pub = bus.advertise<ipcbus::Bytes>("raw/loans");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
  const std::vector<std::size_t> sizes = {1, 64, 4096, 65536, 1u << 20, 3u << 20};
  for (const std::size_t size : sizes) {
    ipcbus::Loan loan = pub.loan(size);
    BOOST_REQUIRE(loan);
    BOOST_TEST(loan.size() == size);
    fill_pattern(loan.data(), size);
    loan.publish();
    BOOST_TEST(!loan);  // spent
  }
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    auto r = sub.receive(5s);
    BOOST_REQUIRE(r.has_value());
    BOOST_TEST(r->message.size() == sizes[i]);
    BOOST_TEST(has_pattern(r->message.bytes()));
    BOOST_TEST(r->info.sequence == i + 1);
    BOOST_TEST(r->info.lost_before == 0u);
  }
  BOOST_TEST(pub.counters().dropped == 0u);
}

CONFORMANCE_CASE(a_loan_given_back_publishes_nothing_and_spends_no_sequence) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml(transport)));
  auto sub = bus.subscribe<ipcbus::Bytes>("raw/cancel");
  auto pub = bus.advertise<ipcbus::Bytes>("raw/cancel");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
  {
    ipcbus::Loan small = pub.loan(100);
    fill_pattern(small.data(), 100);
  }  // destroyed unpublished
  ipcbus::Loan big = pub.loan(2u << 20);  // a side segment on shm
  fill_pattern(big.data(), big.size());
  big.cancel();
  pub.publish(ipcbus::Bytes("after"));
  auto r = sub.receive(5s);
  BOOST_REQUIRE(r.has_value());
  BOOST_TEST(r->message.to_string() == "after");
  BOOST_TEST(r->info.sequence == 1u);
  BOOST_TEST(r->info.lost_before == 0u);
  BOOST_TEST(!sub.receive(200ms).has_value());
}

CONFORMANCE_CASE(a_publish_waits_for_the_outstanding_loan) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml(transport)));
  auto sub = bus.subscribe<ipcbus::Bytes>("raw/order");
  auto pub = bus.advertise<ipcbus::Bytes>("raw/order");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
  ipcbus::Loan loan = pub.loan(5);
  std::memcpy(loan.data(), "first", 5);
  std::atomic<bool> other_done{false};
  std::thread other([&] {
    pub.publish(ipcbus::Bytes("second"));
    other_done = true;
  });
  std::this_thread::sleep_for(100ms);
  BOOST_TEST(!other_done.load());  // held back by the loan
  loan.publish();
  other.join();
  for (const char* expected : {"first", "second"}) {
    auto r = sub.receive(5s);
    BOOST_REQUIRE(r.has_value());
    BOOST_TEST(r->message.to_string() == expected);
  }
}

CONFORMANCE_CASE(a_publish_on_the_loaning_thread_times_out_instead_of_hanging) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml(transport, "publish_timeout_ms: 100")));
  auto pub = bus.advertise<ipcbus::Bytes>("raw/self");
  ipcbus::Loan loan = pub.loan(10);
  std::error_code ec;
  pub.publish(ipcbus::Bytes("blocked"), ec);
  BOOST_TEST((ec == ipcbus::errc::timed_out), ec.message());
  ipcbus::Loan second = pub.loan(10, ec);
  BOOST_TEST((ec == ipcbus::errc::timed_out), ec.message());
  BOOST_TEST(!second);
  loan.publish(ec);
  BOOST_TEST(!ec, ec.message());
  BOOST_CHECK_THROW(pub.loan(65ull << 20), std::system_error);  // over max_message
}

CONFORMANCE_CASE(spinning_and_busy_polling_subscribers_get_everything) {
  scratch_domain d;
  ipcbus::Bus bus(d.options(yaml(transport, "", "  - { match: \"spin/#\", spin_us: 200 }\n"
                                        "  - { match: \"busy/#\", busy_poll: true }\n")));
  collector spin, busy;
  auto s1 = bus.subscribe<Sample>("spin/x", std::ref(spin));
  auto s2 = bus.subscribe<Sample>("busy/x", std::ref(busy));
  auto p1 = bus.advertise<Sample>("spin/x");
  auto p2 = bus.advertise<Sample>("busy/x");
  BOOST_REQUIRE(p1.wait_for_subscribers(1, 5s));
  BOOST_REQUIRE(p2.wait_for_subscribers(1, 5s));
  for (int i = 1; i <= 1000; ++i) {
    p1.publish(ipcbus::test::make_sample(i, 32));
    p2.publish(ipcbus::test::make_sample(i, 32));
    if (i % 100 == 0) std::this_thread::sleep_for(1ms);  // let the spin budget run out now and then
  }
  BOOST_REQUIRE(ipcbus::test::eventually([&] { return spin.size() == 1000 && busy.size() == 1000; }));
  for (int i = 0; i < 1000; ++i) {
    BOOST_TEST(spin.got[i].second.sequence == static_cast<std::uint64_t>(i + 1));
    BOOST_TEST(busy.got[i].second.sequence == static_cast<std::uint64_t>(i + 1));
  }
  // A publisher that goes away is still noticed by a busy-polling subscriber.
  p2.close();
  BOOST_TEST(ipcbus::test::eventually([&] { return s2.publisher_count() == 0u; }));
}  // the bus shuts down although one of its subscribers never sleeps

CONFORMANCE_CASE(spinning_works_on_an_external_io_context_too) {
  scratch_domain d;
  boost::asio::io_context io;
  auto work = boost::asio::make_work_guard(io);
  std::thread runner([&] { io.run(); });
  {
    ipcbus::Bus bus(io, d.options(yaml(transport, "busy_poll: true")));
    collector c;
    auto sub = bus.subscribe<Sample>("ext/x", std::ref(c));
    auto pub = bus.advertise<Sample>("ext/x");
    BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
    for (int i = 1; i <= 300; ++i) pub.publish(ipcbus::test::make_sample(i, 8));
    BOOST_TEST(ipcbus::test::eventually([&] { return c.size() == 300; }));
  }
  work.reset();
  io.stop();
  runner.join();
}
