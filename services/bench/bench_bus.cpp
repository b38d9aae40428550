#include "bench_bus.hpp"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "bench.pb.h"
#include "bench_process.hpp"
#include "ipcbus/bus.hpp"

namespace ipcbus::bench {
namespace {

using namespace std::chrono_literals;

constexpr auto discovery_timeout = 15s;  // peers find each other well within this
constexpr auto run_timeout = 60s;        // no single run needs longer

// Completion of a child's measured part, signalled from the io thread.
class completion {
 public:
  void finish(std::string error = {}) {
    std::lock_guard lock(m_);
    if (done_) return;
    done_ = true;
    error_ = std::move(error);
    cv_.notify_all();
  }
  // The error, or "" when finished in time; `what` names what was awaited.
  std::string wait(std::chrono::seconds timeout, const std::string& what) {
    std::unique_lock lock(m_);
    if (!cv_.wait_for(lock, timeout, [&] { return done_; })) return "timed out waiting for " + what;
    return error_;
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool done_ = false;
  std::string error_;
};

Bus make_bus(const bus_case& c) {
  bus_options o;
  o.cfg = bench_config(c.runtime_dir, c.transport, c.mode);
  return Bus(std::move(o));
}

// A protobuf payload whose encoding is about `size` bytes: a few scalars and a body.
BenchPayload make_payload(std::size_t size) {
  BenchPayload m;
  m.set_value(0.5);
  m.set_body(std::string(size > 32 ? size - 28 : 4, 'b'));
  return m;
}

template <class T>
Publisher<T> advertise(Bus& bus, std::string_view topic) {
  return bus.advertise<T>(topic);
}

template <class T, class F>
Subscriber<T> subscribe(Bus& bus, std::string_view pattern, const F& callback) {
  return bus.subscribe<T>(pattern, callback);
}

// How much of a loan the loan ping-pong writes: a stamp, as a producer that
// fills its message in place would write a header; the rest is left as it is.
constexpr std::size_t loan_stamp = 64;

// Publishes `size` bytes starting with `stamp` (up to loan_stamp of it) through
// a loan: no copy of the whole message anywhere.
void publish_loaned(Publisher<Bytes>& pub, std::size_t size, std::string_view stamp, std::error_code& ec) {
  Loan loan = pub.loan(size, ec);
  if (ec) return;
  std::memcpy(loan.data(), stamp.data(), std::min({stamp.size(), size, loan_stamp}));
  loan.publish(ec);
}

bool is_end(const Bytes& b) { return !b.empty() && b.data()[0] == 'E'; }
bool is_end(const BenchPayload& m) { return m.kind() == 1; }

// Publishes, retrying while a reliable publish times out (a slow subscriber is
// not a failure of the bench); gives up after `run_timeout`.
template <class T>
std::string publish_patiently(Publisher<T>& pub, const T& m) {
  const auto give_up = std::chrono::steady_clock::now() + run_timeout;
  for (;;) {
    std::error_code ec;
    pub.publish(m, ec);
    if (!ec) return {};
    if (ec != errc::timed_out || std::chrono::steady_clock::now() > give_up) return "publish: " + ec.message();
  }
}

// publish_patiently for a batch: what a timeout left unpublished is published again.
template <class T>
std::string publish_batch_patiently(Publisher<T>& pub, const std::vector<T>& batch) {
  const auto give_up = std::chrono::steady_clock::now() + run_timeout;
  std::span<const T> left(batch);
  for (;;) {
    std::error_code ec;
    left = left.subspan(pub.publish_batch(left, ec));
    if (!ec) return {};
    if (ec != errc::timed_out || std::chrono::steady_clock::now() > give_up) return "publish_batch: " + ec.message();
  }
}

template <class T>
child_report publish_for(const bus_case& c, const throughput_plan& plan, T message, bool batched) {
  Bus bus = make_bus(c);
  auto pub = advertise<T>(bus, "bench/data");
  child_report r;
  if (!pub.wait_for_subscribers(static_cast<std::size_t>(plan.subscribers), discovery_timeout)) {
    r.error = "subscribers did not attach within " + std::to_string(discovery_timeout.count()) + " s";
    return r;
  }
  const auto cpu0 = cpu_time_ns();
  const auto end = now_ns() + std::chrono::nanoseconds(plan.duration).count();
  std::uint64_t sent = 0;
  std::vector<T> batch(batched ? batch_size : 0, message);
  do {
    if (batched) {
      if constexpr (std::is_same_v<T, BenchPayload>) {
        for (std::size_t i = 0; i < batch.size(); ++i) {
          batch[i].set_sequence(sent + i);
          batch[i].set_sent_ns(now_ns());
        }
      }
      r.error = publish_batch_patiently(pub, batch);
      sent += batch.size();
      continue;
    }
    for (int i = 0; i < 64 && r.error.empty(); ++i, ++sent) {
      if constexpr (std::is_same_v<T, BenchPayload>) {
        message.set_sequence(sent);
        message.set_sent_ns(now_ns());
      }
      r.error = publish_patiently(pub, message);
    }
  } while (r.error.empty() && now_ns() < end);
  if (!r.error.empty()) return r;
  if constexpr (std::is_same_v<T, BenchPayload>) {
    message.set_kind(1);
  } else {
    std::string last(message.bytes());
    last[0] = 'E';
    message = Bytes(std::move(last));
  }
  r.error = publish_patiently(pub, message);
  pub.close(10s);  // drain: every subscriber must get the end message
  r.cpu_ns = cpu_time_ns() - cpu0;
  r.messages = sent;
  r.hwm_kib = peak_rss_kib();
  return r;
}

template <class T>
child_report count_until_end(const bus_case& c) {
  Bus bus = make_bus(c);
  child_report r;
  completion done;
  const auto cpu0 = cpu_time_ns();
  // The clock at the first message and the end marker only, as the raw
  // subscribers do (bench_channel.cpp).
  auto sub = subscribe<T>(bus, "bench/data", [&](const T& m, const MessageInfo&) {
    if (is_end(m)) {
      r.last_ns = now_ns();
      return done.finish();
    }
    if (r.messages++ == 0) r.first_ns = now_ns();
  });
  r.error = done.wait(run_timeout, "the end message");
  sub.close();  // the callback no longer runs: r is ours again
  r.cpu_ns = cpu_time_ns() - cpu0;
  r.hwm_kib = peak_rss_kib();
  return r;
}

}  // namespace

topic_settings bench_topic_settings(const std::string& transport, wait_mode mode) {
  topic_settings s;
  s.transport = transport;
  s.qos = qos_policy::reliable;  // nothing is lost, so every transport carries the same messages
  s.depth = 64;
  s.publish_timeout = std::chrono::milliseconds(1000);
  // Spin: receivers never sleep (busy_poll), as the raw-spin baseline's do.
  // Only shm:// honours it; other transports always wait in the kernel.
  s.busy_poll = mode == wait_mode::spin;
  return s;
}

config bench_config(const std::filesystem::path& runtime_dir, const std::string& transport, wait_mode mode) {
  config cfg;
  cfg.domain = scratch_dir::domain();
  cfg.runtime_dir = runtime_dir;
  cfg.defaults = bench_topic_settings(transport, mode);
  cfg.topics.push_back({"bench/#", bench_topic_settings(transport, mode), 0});
  cfg.source = "<ipcbus bench: " + transport + ", " + to_string(mode) + ">";
  return cfg;
}

child_report run_bus_ping(const bus_case& c, const pingpong_plan& plan, load_control* load) {
  Bus bus = make_bus(c);
  auto pub = advertise<Bytes>(bus, "bench/ping");
  const std::string payload(plan.size, 'D');
  const Bytes out = Bytes::view(payload);
  const int total = plan.warmup + plan.count;
  child_report r;
  r.samples_ns.reserve(static_cast<std::size_t>(plan.count));
  completion done;
  int received = 0;
  std::int64_t t0 = 0;
  // The whole exchange runs in the callback on the io thread: the reply to one
  // ping sends the next, so no thread hand-off is measured that a service
  // answering from its callback would not pay.
  auto sub = subscribe<Bytes>(bus, "bench/pong", [&](const Bytes&, const MessageInfo&) {
    const auto t = now_ns();
    if (received >= plan.warmup) r.samples_ns.push_back((t - t0) / 2);
    if (++received == total) return done.finish();
    std::error_code ec;
    t0 = now_ns();
    if (c.loan)
      publish_loaned(pub, plan.size, payload, ec);
    else
      pub.publish(out, ec);
    if (ec) done.finish("publish: " + ec.message());
  });
  if (!pub.wait_for_subscribers(1, discovery_timeout) || !sub.wait_for_publishers(1, discovery_timeout)) {
    r.error = "the pong side did not attach within " + std::to_string(discovery_timeout.count()) + " s";
    return r;
  }
  if (load) {
    const auto give_up = std::chrono::steady_clock::now() + discovery_timeout;
    while (!load->running.load() && std::chrono::steady_clock::now() < give_up) std::this_thread::sleep_for(1ms);
    if (!load->running.load()) {
      load->stop = 1;
      r.error = "the load publisher did not start";
      return r;
    }
  }
  const auto cpu0 = cpu_time_ns();
  t0 = now_ns();
  std::error_code ec;
  if (c.loan)
    publish_loaned(pub, plan.size, payload, ec);
  else
    pub.publish(out, ec);
  r.error = ec ? "publish: " + ec.message() : done.wait(run_timeout, "the replies");
  sub.close();
  r.cpu_ns = cpu_time_ns() - cpu0;
  r.messages = static_cast<std::uint64_t>(received);
  r.hwm_kib = peak_rss_kib();
  if (load) load->stop = 1;
  return r;
}

child_report run_bus_pong(const bus_case& c, const pingpong_plan& plan, bool with_load) {
  Bus bus = make_bus(c);
  auto pub = advertise<Bytes>(bus, "bench/pong");
  // Our reply publisher must have the ping side attached before we subscribe
  // to the pings: the ping side starts as soon as it sees our subscription,
  // and a reply published before its subscriber attached reaches nobody (the
  // ping side would wait for it until its run timeout).
  if (!pub.wait_for_subscribers(1, discovery_timeout)) {
    child_report r;
    r.error = "the ping side did not subscribe within " + std::to_string(discovery_timeout.count()) + " s";
    return r;
  }
  const int total = plan.warmup + plan.count;
  completion done;
  int echoed = 0;
  std::int64_t cpu0 = 0;
  auto sub = subscribe<Bytes>(bus, "bench/ping", [&](const Bytes& in, const MessageInfo&) {
    if (echoed == 0) cpu0 = cpu_time_ns();
    std::error_code ec;
    if (c.loan)
      publish_loaned(pub, in.size(), std::string_view(in.data(), in.size()), ec);
    else
      pub.publish(in, ec);
    if (ec) return done.finish("publish: " + ec.message());
    if (++echoed == total) done.finish();
  });
  std::uint64_t load_messages = 0;
  Subscriber<Bytes> load;
  if (with_load) load = subscribe<Bytes>(bus, "bench/load", [&](const Bytes&, const MessageInfo&) { ++load_messages; });
  child_report r;
  r.error = done.wait(run_timeout + discovery_timeout, "pings");
  sub.close();
  load.close();
  r.cpu_ns = cpu_time_ns() - cpu0;
  r.messages = static_cast<std::uint64_t>(echoed);
  pub.close(5s);  // the last reply must leave before the bus goes
  r.hwm_kib = peak_rss_kib();
  return r;
}

child_report run_bus_publisher(const bus_case& c, const throughput_plan& plan, payload_kind payload) {
  if (is_protobuf(payload)) return publish_for(c, plan, make_payload(plan.size), is_batch(payload));
  return publish_for(c, plan, Bytes(std::string(plan.size, 'D')), is_batch(payload));
}

child_report run_bus_subscriber(const bus_case& c, const throughput_plan&, payload_kind payload) {
  return is_protobuf(payload) ? count_until_end<BenchPayload>(c) : count_until_end<Bytes>(c);
}

child_report run_bus_loader(const bus_case& c, std::size_t size, double rate, load_control& load) {
  Bus bus = make_bus(c);
  auto pub = advertise<Bytes>(bus, "bench/load");
  child_report r;
  if (!pub.wait_for_subscribers(1, discovery_timeout)) {
    r.error = "the pong side did not subscribe to the load";
    return r;
  }
  const std::string payload(size, 'L');
  const Bytes out = Bytes::view(payload);
  load.running = 1;
  const auto cpu0 = cpu_time_ns();
  const auto start = now_ns();
  const auto give_up = start + std::chrono::nanoseconds(run_timeout + discovery_timeout).count();
  // Paced by the clock: message i is due at start + i / rate; sleep when ahead.
  while (!load.stop.load() && now_ns() < give_up) {
    const auto due = start + static_cast<std::int64_t>(static_cast<double>(r.messages) * 1e9 / rate);
    const auto ahead = due - now_ns();
    if (ahead > 50'000) {
      std::this_thread::sleep_for(std::chrono::nanoseconds(ahead));
      continue;
    }
    std::error_code ec;
    pub.publish(out, ec);
    if (ec && ec != errc::timed_out) {
      r.error = "publish: " + ec.message();
      break;
    }
    ++r.messages;
  }
  r.cpu_ns = cpu_time_ns() - cpu0;
  r.hwm_kib = peak_rss_kib();
  pub.close(std::chrono::milliseconds(0));
  return r;
}

}  // namespace ipcbus::bench
