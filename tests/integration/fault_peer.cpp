// A bus participant in its own process, driven by fault_test.cpp.
//
//   ipcbus_fault_peer pub  CONFIG TOPIC PAGE NUMBER COUNT SIZE INTERVAL_US
//   ipcbus_fault_peer sub  CONFIG PAGE cb|pull|slow PATTERN...
//   ipcbus_fault_peer exhaust fd|mq|shm-tmpfs|shm-fsize CONFIG OK_TOPIC PREFIX
//
// pub advertises TOPIC, waits for `go` on its page (fault_page.hpp), then
// publishes COUNT messages (COUNT 0: until `stop`) of SIZE bytes as publisher
// NUMBER, INTERVAL_US apart. A publish that returns timed_out is retried with
// the same index (nobody got it), so a reliable subscriber must see 1, 2, 3 ...
// Then it sets `done` and waits for `quit`.
//
// sub subscribes to each PATTERN (one Subscriber each, callbacks or a pulling
// thread each; slow: pulling, 5 ms per message) and checks every message: checksum, and order per publisher
// number. Everything goes to the page as it happens. It runs until `quit`.
// While `hog` is set it holds every file descriptor it can open (`hogging`
// says how many), so that the bus itself runs out of them.
//
// exhaust runs a publisher on OK_TOPIC, waits for one subscriber, then uses a
// resource up (RLIMIT_NOFILE, RLIMIT_MSGQUEUE, a 3 MiB /dev/shm of its own, or
// RLIMIT_FSIZE) by advertising PREFIX/0, PREFIX/1 ... until one fails; prints
// the error; publishes on OK_TOPIC; gives the resource back and advertises
// once more. Prints one line per step; exit 0 when every step went as expected,
// 3 when the resource cannot be limited here (printed "skip: reason").
#include <fcntl.h>
#include <signal.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fault_page.hpp"
#include "ipcbus/bus.hpp"
#include "test_messages.pb.h"

namespace {

using namespace std::chrono_literals;
using ipcbus::fault::fault_page;
using ipcbus::fault::page_file;
using ipcbus::test::Sample;
using clock_type = std::chrono::steady_clock;

ipcbus::bus_options options_from(const std::string& config_file) {
  ipcbus::bus_options o;
  o.cfg = ipcbus::load_config_file(config_file);
  return o;
}

void wait_for_flag(const std::atomic<std::uint32_t>& flag) {
  while (!flag.load()) std::this_thread::sleep_for(1ms);
}

int publish(char** argv) {
  page_file page(argv[4]);
  page->pid = static_cast<std::uint32_t>(::getpid());
  ipcbus::Bus bus(options_from(argv[2]));
  auto pub = bus.advertise<Sample>(argv[3]);
  const auto number = static_cast<std::uint32_t>(std::stoul(argv[5]));
  const std::uint64_t count = std::stoull(argv[6]);
  const std::size_t size = std::stoul(argv[7]);
  const auto interval = std::chrono::microseconds(std::stol(argv[8]));
  std::atomic<bool> finished{false};
  auto mirror = [&] {
    const auto c = pub.counters();
    page->pub_dropped = c.dropped;
    page->pub_timeouts = c.timeouts;
    page->subscribers = pub.subscriber_count();
  };
  std::thread reporter([&] {
    while (!finished) {
      mirror();
      std::this_thread::sleep_for(10ms);
    }
  });
  page->ready = 1;
  wait_for_flag(page->go);
  for (std::uint64_t i = 1; count == 0 ? !page->stop.load() : i <= count; ++i) {
    const Sample m = ipcbus::fault::make_message(number, i, size);
    for (;;) {
      std::error_code ec;
      const auto t0 = clock_type::now();
      pub.publish(m, ec);
      const auto us = std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - t0).count();
      if (static_cast<std::uint64_t>(us) > page->max_publish_us) page->max_publish_us = static_cast<std::uint64_t>(us);
      if (!ec) {
        ++page->sent;
        break;
      }
      if (ec == ipcbus::errc::timed_out) {
        ++page->timed_out;
        if (count == 0 && page->stop) break;  // the soak is over: give this one up
        continue;                             // nobody got it: the same index again
      }
      ++page->other_errors;
      page->last_error = static_cast<std::uint64_t>(ec.value());
      std::this_thread::sleep_for(1ms);
      if (page->quit) break;
    }
    if (interval.count()) std::this_thread::sleep_for(interval);
  }
  finished = true;
  reporter.join();
  mirror();  // drops happen inside publish calls: these counters are final
  page->done = 1;
  wait_for_flag(page->quit);
  bus.shutdown(2s);
  return page->other_errors == 0 ? 0 : 1;
}

// Checks one message and counts it on the page. Called under `m`.
void account(fault_page& page, const Sample& s) {
  ++page.received;
  const int number = ipcbus::fault::check_message(s);
  if (number < 0) {
    ++page.corrupt;
    return;
  }
  auto& link = page.links[number];
  const std::uint64_t last = link.last_index;
  if (s.index() <= last) {
    ++link.disorder;
    return;
  }
  link.gaps += s.index() - last - 1;
  link.last_index = s.index();
  ++link.delivered;
}

int subscribe(int argc, char** argv) {
  page_file page(argv[3]);
  page->pid = static_cast<std::uint32_t>(::getpid());
  const std::string mode = argv[4];
  const bool pull = mode == "pull" || mode == "slow";
  const auto pause = mode == "slow" ? 5ms : 0ms;
  ipcbus::Bus bus(options_from(argv[2]));
  std::mutex m;
  std::vector<ipcbus::Subscriber<Sample>> subs;
  for (int i = 5; i < argc && subs.size() < ipcbus::fault::max_subscriptions; ++i) {
    if (pull) {
      subs.push_back(bus.subscribe<Sample>(argv[i]));
    } else {
      subs.push_back(bus.subscribe<Sample>(argv[i], [&](const Sample& s, const ipcbus::MessageInfo&) {
        std::lock_guard l(m);
        account(*page, s);
      }));
    }
  }
  std::atomic<bool> finished{false};
  std::vector<std::thread> pullers;
  if (pull) {
    for (auto& sub : subs) {
      pullers.emplace_back([&, sub]() mutable {
        Sample s;
        ipcbus::MessageInfo info;
        while (!finished) {
          std::error_code ec;
          if (sub.receive(s, info, 50ms, ec)) {
            {
              std::lock_guard l(m);
              account(*page, s);
            }
            if (pause.count()) std::this_thread::sleep_for(pause);
          } else if (ec && ec != ipcbus::errc::timed_out) {
            std::lock_guard l(m);
            ++page->corrupt;  // type_mismatch: a payload that is no Sample
          }
        }
      });
    }
  }
  auto mirror = [&] {
    for (std::size_t k = 0; k < subs.size(); ++k) {
      const auto* c = subs[k].counters();
      page->subs[k].dropped = c->dropped.load();
      page->subs[k].lost = c->lost.load();
      page->subs[k].bad_frames = c->bad_frames.load();
      page->subs[k].publishers = subs[k].publisher_count();
    }
  };
  mirror();
  page->ready = 1;
  std::vector<int> hogged;
  while (!page->quit) {
    mirror();
    if (page->hog) {
      // Again every turn: a descriptor the io thread held when the hog began
      // (an entry being read by a rescan) is free again once it is done.
      for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) hogged.push_back(fd);
      page->hogging = static_cast<std::uint32_t>(hogged.size());
    } else if (!hogged.empty()) {
      for (const int fd : hogged) ::close(fd);
      hogged.clear();
      page->hogging = 0;
    }
    std::this_thread::sleep_for(10ms);
  }
  for (const int fd : hogged) ::close(fd);
  finished = true;
  for (auto& t : pullers) t.join();
  mirror();
  bus.shutdown(2s);
  return 0;
}

// ---- exhaust ----------------------------------------------------------------

std::string describe(const std::error_code& ec) {
  return ec.category().name() + std::string(":") + std::to_string(ec.value()) + " " + ec.message();
}

// Puts this process alone in a mount namespace with a 3 MiB tmpfs on /dev/shm.
// Must run before any thread exists (CLONE_NEWNS implies CLONE_FS).
bool small_dev_shm(std::string& why) {
  if (::unshare(CLONE_NEWNS) != 0) {
    why = std::string("unshare(CLONE_NEWNS): ") + std::strerror(errno);
    return false;
  }
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    why = std::string("making mounts private: ") + std::strerror(errno);
    return false;
  }
  if (::mount("ipcbus-fault", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=3m,mode=1777") != 0) {
    why = std::string("mounting a tmpfs on /dev/shm: ") + std::strerror(errno);
    return false;
  }
  return true;
}

bool set_soft_limit(int resource, rlim_t value, rlimit& saved) {
  if (::getrlimit(resource, &saved) != 0) return false;
  rlimit r = saved;
  r.rlim_cur = value;
  return ::setrlimit(resource, &r) == 0;
}

rlim_t open_descriptors() {
  rlim_t highest = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    const rlim_t fd = std::stoul(e.path().filename().string());
    if (fd > highest) highest = fd;
  }
  return highest + 1;
}

int exhaust(char** argv) {
  const std::string what = argv[2];
  std::string why;
  if (what == "shm-tmpfs" && !small_dev_shm(why)) {
    std::cout << "skip: " << why << std::endl;
    return 3;
  }
  if (what == "shm-fsize") ::signal(SIGXFSZ, SIG_IGN);  // EFBIG instead of a killed process
  ipcbus::Bus bus(options_from(argv[3]));
  auto ok = bus.advertise<Sample>(argv[4]);
  const std::string prefix = argv[5];
  if (!ok.wait_for_subscribers(1, 20s)) {
    std::cout << "no subscriber on " << argv[4] << std::endl;
    return 1;
  }
  // A subscriber of our own on PREFIX/0 proves the resources already held keep working.
  auto own = bus.subscribe<Sample>(prefix + "/0");
  std::vector<ipcbus::Publisher<Sample>> pubs;
  pubs.push_back(bus.advertise<Sample>(prefix + "/0"));
  if (!pubs[0].wait_for_subscribers(1, 20s)) {
    std::cout << "own subscriber did not attach" << std::endl;
    return 1;
  }
  rlimit saved{};
  int resource = -1;
  if (what == "fd") resource = RLIMIT_NOFILE;
  if (what == "mq") resource = RLIMIT_MSGQUEUE;
  if (what == "shm-fsize") resource = RLIMIT_FSIZE;
  const rlim_t limit = what == "fd" ? open_descriptors() + 6 : what == "mq" ? 0 : 256 << 10;
  if (resource >= 0 && !set_soft_limit(resource, limit, saved)) {
    std::cout << "skip: setrlimit: " << std::strerror(errno) << std::endl;
    return 3;
  }
  std::error_code failure;
  for (int i = 1; i < 200 && !failure; ++i) {
    auto p = bus.advertise<Sample>(prefix + "/" + std::to_string(i), failure);
    if (!failure) pubs.push_back(std::move(p));
  }
  if (!failure) {
    std::cout << "no failure after " << pubs.size() << " publishers" << std::endl;
    return 1;
  }
  std::cout << "limit reached after " << pubs.size() << " publishers: " << describe(failure) << " | "
            << ipcbus::Bus::describe_failure("advertise", prefix, failure) << std::endl;
  // What was made before still works, on the exhausted transport and on another.
  int delivered = 0;
  for (int i = 1; i <= 20; ++i) {
    std::error_code ec;
    pubs[0].publish(ipcbus::fault::make_message(0, i, 100), ec);
    ok.publish(ipcbus::fault::make_message(1, i, 100), ec);
    if (ec) std::cout << "publish on " << argv[4] << " failed: " << describe(ec) << std::endl;
    if (auto r = own.receive(5s); r && ipcbus::fault::check_message(r->message) == 0) ++delivered;
  }
  std::cout << "delivered on the exhausted transport: " << delivered << std::endl;
  // Give the resource back: a new publisher works again.
  if (resource >= 0) ::setrlimit(resource, &saved);
  pubs.resize(1);
  std::error_code again;
  auto fresh = bus.advertise<Sample>(prefix + "/again", again);
  std::cout << "after giving back: " << (again ? describe(again) : std::string("ok")) << std::endl;
  for (int i = 21; i <= 40; ++i) ok.publish(ipcbus::fault::make_message(1, i, 100));
  ok.wait_for_subscribers(1, 1s);
  bus.shutdown(5s);
  return delivered == 20 && !again ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "pub" && argc == 9) return publish(argv);
    if (mode == "sub" && argc >= 6) return subscribe(argc, argv);
    if (mode == "exhaust" && argc == 6) return exhaust(argv);
    std::cerr << "usage: see the comment at the top of fault_peer.cpp\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "ipcbus_fault_peer: " << e.what() << "\n";
    std::cout << "exception: " << e.what() << std::endl;
    return 1;
  }
}
