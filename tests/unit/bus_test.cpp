// The Bus object itself: an external io_context, shutdown, configuration reloads,
// and what handles do afterwards.
#define BOOST_TEST_MODULE bus
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "ipcbus/detail/publisher_core.hpp"
#include "ipcbus/registry.hpp"

#include "test_support.hpp"

using namespace std::chrono_literals;
using ipcbus::test::Sample;
using ipcbus::test::scratch_domain;

namespace {
bool fs_empty_or_missing(const std::filesystem::path& dir) {
  return !std::filesystem::exists(dir) || std::filesystem::is_empty(dir);
}
}  // namespace

BOOST_AUTO_TEST_CASE(a_bus_runs_on_an_io_context_the_caller_owns) {
  scratch_domain d;
  boost::asio::io_context io;
  ipcbus::Bus bus(io, d.options());
  int delivered = 0;
  auto sub = bus.subscribe<Sample>("ext/io", [&](const Sample& s, const ipcbus::MessageInfo&) {
    delivered += static_cast<int>(s.index());
  });
  auto pub = bus.advertise<Sample>("ext/io");
  // Nothing runs until the caller runs the io_context: discovery, accept and delivery included.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (pub.subscriber_count() == 0 && std::chrono::steady_clock::now() < deadline) io.run_for(10ms);
  BOOST_REQUIRE(pub.subscriber_count() == 1u);
  pub.publish(ipcbus::test::make_sample(5, 1));
  while (delivered == 0 && std::chrono::steady_clock::now() < deadline) io.run_for(10ms);
  BOOST_TEST(delivered == 5);
  bus.shutdown();
}

// A callback that throws out of an io_context the application runs: the
// exception comes out of run(), and once run() is called again the
// subscriber goes on with the next message. Over shm the link used to stay
// stuck on the message whose callback threw, so a reliable publisher timed
// out as soon as the subscriber's queue was full.
BOOST_AUTO_TEST_CASE(a_callback_that_throws_out_of_run_does_not_stop_the_subscriber) {
  for (const std::string transport : {"shm", "unix", "tcp", "pipe", "mq"}) {
    BOOST_TEST_CONTEXT("transport " << transport) {
      scratch_domain d;
      const std::string yaml =
          "defaults: { transport: " + transport + ", qos: reliable, depth: 4, publish_timeout_ms: 2000 }\n";
      boost::asio::io_context io;
      ipcbus::Bus bus(io, d.options(yaml));
      std::vector<std::uint64_t> delivered;
      auto sub = bus.subscribe<Sample>("throw/x", [&](const Sample& s, const ipcbus::MessageInfo&) {
        if (s.index() == 1) throw std::runtime_error("the application's handler failed");
        delivered.push_back(s.index());
      });
      auto pub = bus.advertise<Sample>("throw/x");
      const auto deadline = std::chrono::steady_clock::now() + 20s;
      while (pub.subscriber_count() == 0 && std::chrono::steady_clock::now() < deadline) io.run_for(10ms);
      BOOST_REQUIRE(pub.subscriber_count() == 1u);
      // Published from another thread: a reliable publish may wait for room,
      // which only this thread's io.run_for makes.
      std::atomic<int> failed{0};
      std::atomic<bool> done{false};
      std::thread publisher([&] {
        for (std::uint64_t i = 1; i <= 20; ++i) {
          std::error_code ec;
          pub.publish(ipcbus::test::make_sample(i, 16), ec);
          if (ec) ++failed;
        }
        done = true;
      });
      int thrown = 0;
      while ((!done || delivered.size() < 19) && std::chrono::steady_clock::now() < deadline) {
        try {
          io.run_for(10ms);
        } catch (const std::runtime_error&) {
          ++thrown;
        }
      }
      publisher.join();
      BOOST_TEST(thrown == 1);
      BOOST_TEST(failed.load() == 0);
      std::vector<std::uint64_t> expected;
      for (std::uint64_t i = 2; i <= 20; ++i) expected.push_back(i);
      BOOST_TEST(delivered == expected, boost::test_tools::per_element());
      bus.shutdown();
    }
  }
}

// The callback may use anything that lives as long as the Subscriber: when
// the last copy goes, a callback that is running is waited for, and none runs
// afterwards.
BOOST_AUTO_TEST_CASE(dropping_the_last_copy_of_a_subscriber_waits_for_its_callback) {
  scratch_domain d;
  ipcbus::Bus bus(d.options());
  auto pub = bus.advertise<Sample>("drop/sub");
  std::atomic<int> started{0}, finished{0};
  bool finished_when_dropped = false;
  {
    auto sub = bus.subscribe<Sample>("drop/sub", [&](const Sample&, const ipcbus::MessageInfo&) {
      ++started;
      std::this_thread::sleep_for(300ms);
      ++finished;
    });
    auto copy = sub;  // copies share it: dropping one of two closes nothing
    BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
    pub.publish(ipcbus::test::make_sample(1, 1));
    BOOST_REQUIRE(ipcbus::test::eventually([&] { return started.load() == 1; }));
    sub = {};
    BOOST_TEST(copy.publisher_count() == 1u);
  }  // the last copy goes while the callback sleeps
  finished_when_dropped = finished.load() == 1;
  BOOST_TEST(finished_when_dropped);
  for (int i = 2; i <= 5; ++i) pub.publish(ipcbus::test::make_sample(i, 1));
  std::this_thread::sleep_for(200ms);
  BOOST_TEST(started.load() == 1);
}

BOOST_AUTO_TEST_CASE(handles_report_closed_after_shutdown_and_shutdown_is_idempotent) {
  scratch_domain d;
  ipcbus::Bus bus(d.options());
  auto pub = bus.advertise<Sample>("life/cycle");
  auto sub = bus.subscribe<Sample>("life/cycle");
  bus.shutdown();
  bus.shutdown();
  std::error_code ec;
  pub.publish(ipcbus::test::make_sample(1, 1), ec);
  BOOST_TEST(ec == ipcbus::errc::closed);
  Sample s;
  ipcbus::MessageInfo info;
  BOOST_TEST(!sub.receive(s, info, 10ms, ec));
  BOOST_TEST(ec == ipcbus::errc::closed);
  auto late = bus.advertise<Sample>("life/late", ec);
  BOOST_TEST(ec == ipcbus::errc::closed);
  BOOST_TEST(fs_empty_or_missing(d.domain_dir()));
}

BOOST_AUTO_TEST_CASE(run_until_signal_returns_when_shutdown_is_called_elsewhere) {
  scratch_domain d;
  ipcbus::Bus bus(d.options());
  std::thread stopper([&] {
    std::this_thread::sleep_for(50ms);
    bus.shutdown();
  });
  BOOST_TEST(bus.run_until_signal() == 0);  // 0: no signal, an explicit shutdown
  stopper.join();
}

BOOST_AUTO_TEST_CASE(receive_times_out_without_publishers) {
  scratch_domain d;
  ipcbus::Bus bus(d.options());
  auto sub = bus.subscribe<Sample>("quiet/#");
  BOOST_TEST(!sub.receive(20ms).has_value());
  Sample s;
  ipcbus::MessageInfo info;
  std::error_code ec;
  BOOST_TEST(!sub.receive(s, info, 20ms, ec));
  BOOST_TEST(ec == ipcbus::errc::timed_out);
}

// Its messages go to the callback: receive() says so at once, also from
// inside that callback, instead of waiting out its timeout there with the
// delivery lock held (which kept close() waiting too).
BOOST_AUTO_TEST_CASE(receive_on_a_subscriber_with_a_callback_is_refused_at_once) {
  scratch_domain d;
  ipcbus::Bus bus(d.options());
  ipcbus::Subscriber<Sample>* self = nullptr;
  std::atomic<int> inside{0};
  std::error_code inside_ec;
  auto sub = bus.subscribe<Sample>("callback/only", [&](const Sample&, const ipcbus::MessageInfo&) {
    Sample s;
    ipcbus::MessageInfo info;
    self->receive(s, info, 10s, inside_ec);
    inside = 1;
  });
  self = &sub;
  Sample s;
  ipcbus::MessageInfo info;
  std::error_code ec;
  BOOST_TEST(!sub.receive(s, info, 10s, ec));
  BOOST_TEST(ec == ipcbus::errc::invalid_argument);  // not timed_out, as it was
  BOOST_CHECK_THROW(sub.receive(10s), std::system_error);

  auto pub = bus.advertise<Sample>("callback/only");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
  pub.publish(ipcbus::test::make_sample(1, 8));
  BOOST_REQUIRE(ipcbus::test::eventually([&] { return inside.load() == 1; }));
  BOOST_TEST(inside_ec == ipcbus::errc::invalid_argument);
  sub.close();
}

BOOST_AUTO_TEST_CASE(an_invalid_domain_name_is_a_config_error) {
  scratch_domain d;
  auto o = d.options();
  o.domain = "../escape";
  BOOST_CHECK_THROW(ipcbus::Bus bus(o), ipcbus::config_error);
}

namespace {
// "<transport> depth <n>" from the registry entry of the publisher on `topic`.
std::string registered(const scratch_domain& d, const std::string& topic) {
  for (const auto& r : ipcbus::list_participants(d.domain_dir()))
    if (r.info.topic() == topic) return r.info.transport() + " depth " + std::to_string(r.info.depth());
  return "(no entry)";
}
void write_file(const std::filesystem::path& file, const std::string& text) {
  std::ofstream(file.string() + ".new") << text;
  std::filesystem::rename(file.string() + ".new", file);
}
}  // namespace

BOOST_AUTO_TEST_CASE(reload_config_applies_to_publishers_created_afterwards_and_tells_the_handler) {
  scratch_domain d;
  const auto file = d.write_config("defaults: { transport: unix, depth: 5 }\n");
  ipcbus::bus_options o;
  o.cfg = ipcbus::load_config_file(file);
  ipcbus::Bus bus(o);
  std::vector<std::error_code> outcomes;
  bus.on_config_reload([&](const std::error_code& ec, const std::string&) { outcomes.push_back(ec); });
  auto before = bus.advertise<Sample>("reload/before");
  write_file(file, "domain: " + d.domain() + "\nruntime_dir: " + d.runtime_dir().string() +
                       "\ndefaults: { transport: tcp, depth: 9 }\nshutdown: { drain_ms: 123 }\n");
  std::error_code ec;
  bus.reload_config(ec);
  BOOST_TEST(!ec);
  auto after = bus.advertise<Sample>("reload/after");
  BOOST_TEST(registered(d, "reload/before") == "unix depth 5");
  BOOST_TEST(registered(d, "reload/after") == "tcp depth 9");
  BOOST_TEST(bus.configuration().shutdown.drain == 123ms);
  BOOST_TEST(bus.domain() == d.domain());
  BOOST_TEST(outcomes.size() == 1u);
}

BOOST_AUTO_TEST_CASE(a_broken_file_on_reload_is_a_config_error_and_the_old_config_stays) {
  scratch_domain d;
  const auto file = d.write_config("defaults: { depth: 5 }\n");
  ipcbus::bus_options o;
  o.cfg = ipcbus::load_config_file(file);
  ipcbus::Bus bus(o);
  std::string told;
  bus.on_config_reload([&](const std::error_code&, const std::string& why) { told = why; });
  write_file(file, "defaults: { depth: lots }\n");
  std::error_code ec;
  bus.reload_config(ec);
  BOOST_TEST(ec == ipcbus::errc::config_error);
  BOOST_TEST(told.find(file.string() + ":1: defaults.depth: expected an integer") == 0u, told);
  BOOST_TEST(bus.configuration().defaults.depth == 5u);
  BOOST_CHECK_THROW(bus.reload_config(), ipcbus::config_error);
  std::filesystem::remove(file);
  bus.reload_config(ec);  // an unreadable file too
  BOOST_TEST(ec == ipcbus::errc::config_error);
  BOOST_TEST(bus.configuration().defaults.depth == 5u);
}

BOOST_AUTO_TEST_CASE(reload_config_of_a_bus_not_built_from_a_file_is_invalid_argument) {
  scratch_domain d;
  ipcbus::Bus bus(d.options("defaults: { depth: 5 }\n"));  // parsed from text, not from a file
  std::error_code ec;
  bus.reload_config(ec);
  BOOST_TEST(ec == ipcbus::errc::invalid_argument);
  bus.shutdown();
  bus.reload_config(ec);
  BOOST_TEST(ec == ipcbus::errc::closed);
}

// What ipcbus-bridge stops with: a publish waiting for room in a full
// subscriber queue fails with `closed` as soon as another thread aborts the
// publisher, not after its publish_timeout.
BOOST_AUTO_TEST_CASE(abort_ends_a_publish_waiting_for_room_at_once_with_closed) {
  scratch_domain d;
  ipcbus::Bus bus(d.options("defaults: { depth: 1, publish_timeout_ms: 30000 }\n"));
  std::atomic<bool> hold{true};
  auto sub = bus.subscribe<Sample>("held/x", [&](const Sample&, const ipcbus::MessageInfo&) {
    while (hold) std::this_thread::sleep_for(1ms);
  });
  std::error_code ec;
  const auto* type = Sample::descriptor();
  auto core = ipcbus::detail::publisher_core::create(bus.state(), "held/x", type->full_name(), type, ec);
  BOOST_REQUIRE(!ec);
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (core->subscriber_count() == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  BOOST_REQUIRE(core->subscriber_count() == 1u);
  const std::string payload = ipcbus::test::make_sample(1, 64 * 1024).SerializeAsString();
  std::error_code failed;
  std::atomic<bool> done{false};
  std::thread publisher([&] {
    // Far more than the subscriber's queue and socket take while it is held.
    for (int i = 0; i < 1000 && !failed; ++i)
      failed = core->publish(payload.size(), [&](char* out, std::size_t n) {
        std::memcpy(out, payload.data(), n);
        return true;
      });
    done = true;
  });
  std::this_thread::sleep_for(500ms);  // the publisher is waiting for room by now
  BOOST_TEST(!done);
  const auto start = std::chrono::steady_clock::now();
  core->abort();
  while (!done && std::chrono::steady_clock::now() - start < 10s) std::this_thread::sleep_for(1ms);
  const auto took = std::chrono::steady_clock::now() - start;
  hold = false;
  publisher.join();
  BOOST_TEST(failed == ipcbus::errc::closed, failed.message());
  BOOST_TEST(std::chrono::duration_cast<std::chrono::milliseconds>(took).count() < 2000);
  core->close(0ms);
  bus.shutdown();
}
