// A bus participant in its own process, driven by the integration and CLI tests.
//
//   ipcbus_test_peer publish   CONFIG TOPIC COUNT SIZE [INTERVAL_US] [WAIT_SUBSCRIBERS]
//   ipcbus_test_peer subscribe CONFIG PATTERN COUNT TIMEOUT_MS [DELAY_US]
//   ipcbus_test_peer burst     CONFIG TOPIC COUNT SIZE [PAUSE_MS]  (then waits for SIGINT/SIGTERM)
//   ipcbus_test_peer reload    CONFIG PREFIX                 (a new publisher per reload, until SIGTERM)
//   ipcbus_test_peer serve     CONFIG TOPIC          (publishes 1 msg / 10 ms until SIGTERM)
//   ipcbus_test_peer stream    CONFIG TOPIC STATUS SMALL LARGE LARGE_EVERY INTERVAL_US
//   ipcbus_test_peer verify    CONFIG PATTERN STATUS
//
// publish prints "published N", subscribe prints "received N lost L corrupt C
// out_of_order O" on stdout; both exit 0 on success, 1 otherwise. Messages are
// ipcbus.test.Sample with a checksum, so corruption is detectable.
//
// subscribe with DELAY_US sleeps that long after each message (a slow consumer).
// burst waits for one subscriber, prints "connected", waits PAUSE_MS, publishes COUNT messages as fast as it can
// (reliable ones queue up in front of a slow subscriber), prints "published N",
// then leaves through run_until_signal() with the configured drain.
// reload advertises PREFIX/0, then PREFIX/<n> after the n-th reload attempt
// (SIGHUP), successful or not, printing "reload <n> ok" or "reload <n> failed: <why>";
// a test reads the transport and QoS each publisher got from the registry.
//
// stream and verify run until SIGTERM and keep their counters in the shared file
// STATUS (test_support.hpp, peer_status), updated as they go, so that a test can
// SIGKILL them at any instant and still read what they counted. stream publishes
// bodies of SMALL bytes, every LARGE_EVERY-th one of LARGE bytes, INTERVAL_US
// apart, and shows in `phase` which kind it is publishing. verify checks every
// message it receives (body against index and checksum, order per publisher).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ipcbus/bus.hpp"
#include "test_messages.pb.h"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;

ipcbus::bus_options options_from(const char* config_file) {
  ipcbus::bus_options o;
  o.cfg = ipcbus::load_config_file(config_file);
  o.handle_signals = true;
  return o;
}

int publish(char** argv, int argc) {
  ipcbus::Bus bus(options_from(argv[2]));
  auto pub = bus.advertise<ipcbus::test::Sample>(argv[3]);
  const std::uint64_t count = std::stoull(argv[4]);
  const std::size_t size = std::stoul(argv[5]);
  const long interval_us = argc > 6 ? std::stol(argv[6]) : 0;
  const std::size_t wait_subs = argc > 7 ? std::stoul(argv[7]) : 0;
  if (wait_subs && !pub.wait_for_subscribers(wait_subs, 20s)) {
    std::cerr << "no subscribers\n";
    return 1;
  }
  std::uint64_t sent = 0;
  for (std::uint64_t i = 1; i <= count; ++i) {
    std::error_code ec;
    pub.publish(ipcbus::test::make_sample(i, size), ec);
    if (!ec) ++sent;
    if (interval_us) std::this_thread::sleep_for(std::chrono::microseconds(interval_us));
  }
  std::cout << "published " << sent << std::endl;
  bus.shutdown(5s);  // drains before exit
  return sent == count ? 0 : 1;
}

int subscribe(char** argv, int argc) {
  ipcbus::Bus bus(options_from(argv[2]));
  auto sub = bus.subscribe<ipcbus::test::Sample>(argv[3]);
  const std::uint64_t count = std::stoull(argv[4]);
  const auto timeout = std::chrono::milliseconds(std::stol(argv[5]));
  const auto delay = std::chrono::microseconds(argc > 6 ? std::stol(argv[6]) : 0);
  std::uint64_t received = 0, lost = 0, corrupt = 0, out_of_order = 0;
  std::map<std::uint64_t, std::uint64_t> last_index;  // per publisher
  std::cout << "ready" << std::endl;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (received < count && std::chrono::steady_clock::now() < deadline) {
    auto r = sub.receive(100ms);
    if (!r) continue;
    ++received;
    if (delay.count() > 0) std::this_thread::sleep_for(delay);
    lost += r->info.lost_before;
    if (!ipcbus::test::sample_intact(r->message)) ++corrupt;
    auto& last = last_index[r->info.publisher_id];
    if (r->message.index() <= last) ++out_of_order;
    last = r->message.index();
  }
  std::cout << "received " << received << " lost " << lost << " corrupt " << corrupt << " out_of_order "
            << out_of_order << std::endl;
  return received == count && corrupt == 0 && out_of_order == 0 ? 0 : 1;
}

int burst(char** argv, int argc) {
  ipcbus::Bus bus(options_from(argv[2]));
  auto pub = bus.advertise<ipcbus::test::Sample>(argv[3]);
  const std::uint64_t count = std::stoull(argv[4]);
  const std::size_t size = std::stoul(argv[5]);
  if (!pub.wait_for_subscribers(1, 20s)) {
    std::cerr << "no subscribers\n";
    return 1;
  }
  std::cout << "connected" << std::endl;
  if (argc > 6) std::this_thread::sleep_for(std::chrono::milliseconds(std::stol(argv[6])));
  std::uint64_t sent = 0;
  for (std::uint64_t i = 1; i <= count; ++i) {
    std::error_code ec;
    pub.publish(ipcbus::test::make_sample(i, size), ec);
    if (!ec) ++sent;
  }
  std::cout << "published " << sent << std::endl;
  const int sig = bus.run_until_signal();  // drains for the configured shutdown.drain_ms
  std::cout << "stopped by signal " << sig << std::endl;
  return sent == count ? 0 : 1;
}

int reload(char** argv) {
  ipcbus::Bus bus(options_from(argv[2]));
  const std::string prefix = argv[3];
  std::mutex mutex;
  std::condition_variable cv;
  int attempts = 0;
  bus.on_config_reload([&](const std::error_code& ec, const std::string& why) {
    std::lock_guard lock(mutex);
    ++attempts;
    std::cout << "reload " << attempts << (ec ? " failed: " + why : std::string(" ok")) << std::endl;
    cv.notify_all();
  });
  std::vector<ipcbus::Publisher<ipcbus::test::Sample>> pubs;
  pubs.push_back(bus.advertise<ipcbus::test::Sample>(prefix + "/0"));
  bool stop = false;
  // Publishers are made on a thread of our own, not in the handler (the io thread).
  std::thread maker([&] {
    std::unique_lock lock(mutex);
    for (int made = 0;;) {
      cv.wait(lock, [&] { return stop || attempts > made; });
      if (stop) return;
      ++made;
      lock.unlock();
      std::error_code ec;  // `closed` once a stop signal came meanwhile
      auto pub = bus.advertise<ipcbus::test::Sample>(prefix + "/" + std::to_string(made), ec);
      if (!ec) pubs.push_back(std::move(pub));
      lock.lock();
    }
  });
  std::cout << "serving" << std::endl;
  const int sig = bus.run_until_signal();
  {
    std::lock_guard lock(mutex);
    stop = true;
    cv.notify_all();
  }
  maker.join();
  std::cout << "stopped by signal " << sig << std::endl;
  return 0;
}

int serve(char** argv) {
  ipcbus::Bus bus(options_from(argv[2]));
  auto pub = bus.advertise<ipcbus::test::Sample>(argv[3]);
  std::atomic<bool> stop{false};
  std::thread worker([&] {
    for (std::uint64_t i = 1; !stop; ++i) {
      std::error_code ec;
      pub.publish(ipcbus::test::make_sample(i, 32), ec);
      std::this_thread::sleep_for(10ms);
    }
  });
  std::cout << "serving" << std::endl;
  const int sig = bus.run_until_signal();
  stop = true;
  worker.join();
  std::cout << "stopped by signal " << sig << std::endl;
  return 0;
}

int stream(char** argv) {
  using ipcbus::test::peer_status;
  ipcbus::test::status_page status(argv[4]);
  status->pid = static_cast<std::uint32_t>(::getpid());
  ipcbus::Bus bus(options_from(argv[2]));
  auto pub = bus.advertise<ipcbus::test::Sample>(argv[3]);
  const std::size_t small = std::stoul(argv[5]);
  const std::size_t large = std::stoul(argv[6]);
  const std::uint64_t large_every = std::stoull(argv[7]);
  const auto interval = std::chrono::microseconds(std::stol(argv[8]));
  constexpr std::size_t batch_size = 8;
  std::atomic<bool> stop{false};
  std::thread worker([&] {
    std::vector<ipcbus::test::Sample> batch(batch_size);
    for (std::uint64_t i = 1; !stop;) {
      const bool is_large = large_every != 0 && i % large_every == 0;
      if (!is_large && i % 5 == 0) {
        // At indexes that are multiples of five, a few small ones through
        // publish_batch: a kill may land inside a batch, with records written
        // but the tail not yet stored. (Most messages go this way.)
        for (std::size_t k = 0; k < batch_size; ++k) batch[k] = ipcbus::test::make_sample(i + k, small);
        status->phase = peer_status::publishing_small;
        std::error_code ec;
        status->published += pub.publish_batch(batch, ec);
        status->phase = peer_status::idle;
        if (ec) ++status->publish_errors;
        i += batch_size;
        std::this_thread::sleep_for(interval);
        continue;
      }
      // Built before the phase is set: the phase covers the publish call alone.
      const auto sample = ipcbus::test::make_sample(i, is_large ? large : small);
      status->phase = is_large ? peer_status::publishing_large : peer_status::publishing_small;
      std::error_code ec;
      pub.publish(sample, ec);
      status->phase = peer_status::idle;
      ++(ec ? status->publish_errors : status->published);
      std::this_thread::sleep_for(interval);
      ++i;
    }
  });
  std::cout << "streaming" << std::endl;
  bus.run_until_signal();
  stop = true;
  worker.join();
  std::cout << "published " << status->published << " errors " << status->publish_errors << std::endl;
  return 0;
}

int verify(char** argv) {
  ipcbus::test::status_page status(argv[4]);
  status->pid = static_cast<std::uint32_t>(::getpid());
  ipcbus::Bus bus(options_from(argv[2]));
  std::map<std::uint64_t, std::uint64_t> last_index;  // per publisher; the io thread's alone
  auto sub = bus.subscribe<ipcbus::test::Sample>(
      argv[3], [&](const ipcbus::test::Sample& s, const ipcbus::MessageInfo& info) {
        // Each counter goes straight to the shared page: a kill right after
        // this callback loses nothing it found.
        if (!ipcbus::test::sample_matches_index(s)) ++status->corrupt;
        auto& last = last_index[info.publisher_id];
        if (s.index() <= last) ++status->out_of_order;
        last = s.index();
        status->lost += info.lost_before;
        if (s.body().size() >= (64u << 10)) ++status->large_received;
        ++status->received;
      });
  std::atomic<bool> stop{false};
  std::thread reporter([&] {  // bad frames are counted by the bus, not seen by the callback
    while (!stop) {
      status->bad_frames = sub.counters()->bad_frames.load();
      std::this_thread::sleep_for(20ms);
    }
  });
  std::cout << "verifying" << std::endl;
  bus.run_until_signal();
  stop = true;
  reporter.join();
  status->bad_frames = sub.counters()->bad_frames.load();
  std::cout << "received " << status->received << " corrupt " << status->corrupt << " out_of_order "
            << status->out_of_order << " lost " << status->lost << " bad_frames " << status->bad_frames << std::endl;
  return status->corrupt == 0 && status->out_of_order == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "publish" && argc >= 6) return publish(argv, argc);
    if (mode == "subscribe" && argc >= 6) return subscribe(argv, argc);
    if (mode == "burst" && argc >= 6) return burst(argv, argc);
    if (mode == "reload" && argc >= 4) return reload(argv);
    if (mode == "serve" && argc >= 4) return serve(argv);
    if (mode == "stream" && argc >= 9) return stream(argv);
    if (mode == "verify" && argc >= 5) return verify(argv);
    std::cerr << "usage: see the comment at the top of test_peer.cpp\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "ipcbus_test_peer: " << e.what() << "\n";
    return 1;
  }
}
