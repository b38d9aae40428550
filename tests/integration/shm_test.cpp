// The shm:// transport with real processes: peers killed at any instant, a
// segment scribbled over while it is in use, and frames far larger than the ring.
#define BOOST_TEST_MODULE shm
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "ipcbus/registry.hpp"
#include "shm_layout.hpp"
#include "shm_wake.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using ipcbus::test::child_process;
using ipcbus::test::eventually;
using ipcbus::test::Sample;
using ipcbus::test::scratch_domain;
namespace fs = std::filesystem;

namespace {

const std::string peer = ipcbus::test::built_program("ipcbus_test_peer");

// The shared memory object name (with its leading '/') a publisher of `topic` advertises.
std::string ring_of(const fs::path& dir, const std::string& topic) {
  for (const auto& p : ipcbus::list_participants(dir, true))
    if (p.info.role() == ipcbus::ROLE_PUBLISHER && p.info.topic() == topic && p.info.endpoint().starts_with("shm://"))
      return p.info.endpoint().substr(6);
  return {};
}

// Objects in /dev/shm whose name starts with `ring` (the ring and its side segments).
std::size_t segments_of(const std::string& ring) {
  std::size_t n = 0;
  for (const auto& e : fs::directory_iterator("/dev/shm")) {
    std::string name(1, '/');  // not `"/" + ...`: a false -Wrestrict of GCC 12 at -O3
    name += e.path().filename().string();
    if (name.starts_with(ring)) ++n;
  }
  return n;
}

std::size_t files_named(const fs::path& dir, const std::string& prefix) {
  std::size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().starts_with(prefix)) ++n;
  return n;
}

// Overwrites the ring's records (everything after the header page) with `byte`.
void scribble_over_records(const std::string& ring, unsigned char byte) {
  const int fd = ::shm_open(ring.c_str(), O_RDWR, 0);
  BOOST_REQUIRE(fd >= 0);
  struct stat st {};
  BOOST_REQUIRE(::fstat(fd, &st) == 0);
  const auto size = static_cast<std::size_t>(st.st_size);
  void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  BOOST_REQUIRE(base != MAP_FAILED);
  // The ring is the last `capacity` bytes; capacity is the header's third field (offset 16).
  std::uint64_t capacity = 0;
  std::memcpy(&capacity, static_cast<char*>(base) + 16, sizeof capacity);
  BOOST_REQUIRE(capacity < size);
  std::memset(static_cast<char*>(base) + (size - capacity), byte, capacity);
  ::munmap(base, size);
}

// The header of a live ring, mapped read-only, for looking at its slots.
class ring_view {
 public:
  explicit ring_view(const std::string& ring) {
    const int fd = ::shm_open(ring.c_str(), O_RDONLY, 0);
    BOOST_REQUIRE(fd >= 0);
    base_ = ::mmap(nullptr, sizeof(ipcbus::transport::shm::layout::ring_header), PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    BOOST_REQUIRE(base_ != MAP_FAILED);
  }
  ~ring_view() { ::munmap(base_, sizeof(ipcbus::transport::shm::layout::ring_header)); }
  ring_view(const ring_view&) = delete;
  ring_view& operator=(const ring_view&) = delete;
  const ipcbus::transport::shm::layout::ring_header& header() const {
    return *static_cast<const ipcbus::transport::shm::layout::ring_header*>(base_);
  }
  // The active slot of the subscriber process `pid`, or nullptr.
  const ipcbus::transport::shm::layout::slot* slot_of(pid_t pid) const {
    namespace layout = ipcbus::transport::shm::layout;
    for (const auto& s : header().slot_table) {
      const std::uint64_t st = s.state.load();
      if (layout::slot_phase(st) == layout::phase_active && layout::slot_pid(st) == static_cast<std::uint32_t>(pid))
        return &s;
    }
    return nullptr;
  }

 private:
  void* base_ = nullptr;
};

std::size_t thread_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/self/task")) ++n;
  return n;
}

// Whether the peer closed `fd` within a few seconds.
bool hung_up(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 5000) != 1) return false;
  char c;
  return ::recv(fd, &c, 1, MSG_DONTWAIT) == 0;
}

}  // namespace

// A sleeping subscriber hands its eventfd to the publisher, which then wakes
// its io thread directly, once per message: the slot says so while it sleeps,
// and the link keeps no thread of its own. With IPCBUS_SHM_WAKE=futex a
// subscriber keeps the futex and its waker thread; both get every message.
BOOST_AUTO_TEST_CASE(sleeping_subscribers_are_woken_through_their_eventfd) {
  namespace layout = ipcbus::transport::shm::layout;
  scratch_domain d;
  const std::string yaml = "defaults: { transport: shm, qos: reliable, publish_timeout_ms: 10000 }\n";
  const auto cfg = d.write_config(yaml);
  ipcbus::Bus bus(d.options(yaml));
  auto pub = bus.advertise<Sample>("wake/x");
  const std::size_t threads = thread_count();
  std::atomic<int> got{0};
  auto sub = bus.subscribe<Sample>("wake/x", [&](const Sample&, const ipcbus::MessageInfo&) { ++got; });
  constexpr int count = 30;
  child_process futex_sub(peer, {"subscribe", cfg.string(), "wake/x", std::to_string(count), "30000"},
                          {"IPCBUS_SHM_WAKE=futex"});
  BOOST_REQUIRE(pub.wait_for_subscribers(2, 10s));
  const std::string ring = ring_of(d.domain_dir(), "wake/x");
  BOOST_REQUIRE(!ring.empty());
  ring_view view(ring);
  const layout::slot* mine = view.slot_of(::getpid());
  const layout::slot* other = view.slot_of(futex_sub.pid());
  BOOST_REQUIRE(mine && other);
  for (int i = 0; i < count; ++i) {
    // Both are asleep before each message: a wake-up each time.
    BOOST_REQUIRE(eventually([&] { return mine->waiting.load() == layout::waiting_eventfd; }));
    BOOST_REQUIRE(eventually([&] { return other->waiting.load() == layout::waiting_futex; }));
    pub.publish(ipcbus::test::make_sample(i + 1, 32));
    BOOST_REQUIRE(eventually([&] { return got.load() == i + 1; }));
  }
  BOOST_TEST(futex_sub.wait(10s) == 0, futex_sub.output());
  BOOST_TEST(futex_sub.output().find("received 30 lost 0 corrupt 0") != std::string::npos, futex_sub.output());
  BOOST_TEST(eventually([&] { return thread_count() == threads; }));  // no waker thread left for our link
}

namespace {

// voluntary_ctxt_switches of the calling thread: how often it slept.
long voluntary_switches_of_this_thread() {
  std::ifstream in("/proc/thread-self/status");
  for (std::string line; std::getline(in, line);)
    if (line.starts_with("voluntary_ctxt_switches:")) return std::stol(line.substr(line.find(':') + 1));
  return -1;
}

bool pin_this_thread_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return ::sched_setaffinity(0, sizeof set, &set) == 0;
}

}  // namespace

// A sleeping subscriber on the publisher's own CPU: the wake-up for the next
// message would switch to it at once, for that one message, every time (a
// sleep per message). It yields the CPU before it sleeps, so that the
// publisher writes a batch first: its io thread sleeps far less often than
// once per message.
BOOST_AUTO_TEST_CASE(a_subscriber_sharing_the_publishers_cpu_takes_batches) {
  scratch_domain d;
  const std::string yaml = "defaults: { transport: shm, qos: reliable, depth: 64, publish_timeout_ms: 10000 }\n";
  const auto cfg = d.write_config(yaml);
  ipcbus::Bus bus(d.options(yaml));
  constexpr int total = 20000, settle = 2000;
  std::atomic<int> got{0};
  std::atomic<long> slept_before{-1}, slept_after{-1};
  std::atomic<bool> pinned{true};
  auto sub = bus.subscribe<Sample>("batch/x", [&](const Sample&, const ipcbus::MessageInfo&) {
    const int n = ++got;
    if (n == 1) pinned = pin_this_thread_to(0);  // the io thread, beside the publisher
    if (n == settle) slept_before = voluntary_switches_of_this_thread();
    if (n == total) slept_after = voluntary_switches_of_this_thread();
  });
  // The publisher is born on CPU 0 (all its threads inherit the mask).
  cpu_set_t saved;
  BOOST_REQUIRE(::sched_getaffinity(0, sizeof saved, &saved) == 0);
  BOOST_REQUIRE(pin_this_thread_to(0));
  child_process pub(peer, {"publish", cfg.string(), "batch/x", std::to_string(total), "32", "0", "1"});
  BOOST_REQUIRE(::sched_setaffinity(0, sizeof saved, &saved) == 0);
  BOOST_TEST(pub.wait(60s) == 0, pub.output());
  BOOST_REQUIRE(eventually([&] { return got.load() == total; }, 30s));
  BOOST_REQUIRE(pinned.load());
  const long sleeps = slept_after.load() - slept_before.load();
  constexpr int measured = total - settle;
  BOOST_TEST_MESSAGE("subscriber io thread slept " << sleeps << " times for " << measured << " messages");
  BOOST_TEST(sleeps < measured / 40, sleeps << " sleeps for " << measured << " messages");
}

// The wake socket is reachable by any process of the host: a request that is
// not exactly a live subscriber's own (wrong magic, a free slot, a stale state,
// a descriptor that is not an eventfd) is refused, the descriptor never
// written, and delivery goes on.
// A batch keeps the ring's lock from one frame to the next. Another thread
// asking for the counters meanwhile (it waits for that lock) gets them while
// the batch is still going, not after it. No subscriber: the batch never
// waits for room, where it would let the lock go anyway.
BOOST_AUTO_TEST_CASE(a_long_batch_lets_other_threads_take_the_ring_lock) {
  scratch_domain d;
  ipcbus::Bus bus(d.options("defaults: { transport: shm, qos: reliable, depth: 64 }\n"));
  auto pub = bus.advertise<ipcbus::Bytes>("batch/long");
  const std::string ring = ring_of(d.domain_dir(), "batch/long");
  BOOST_REQUIRE(!ring.empty());
  ring_view view(ring);
  const std::string payload(64, 'b');
  const std::vector<ipcbus::Bytes> batch(2'000'000, ipcbus::Bytes::view(payload));
  std::error_code ec;
  std::size_t published = 0;
  std::atomic<bool> batch_done{false};
  std::thread publisher([&] {
    published = pub.publish_batch(batch, ec);
    batch_done = true;
  });
  // Under way once its records show: the tail is stored every 32 of them.
  while (view.header().tail.load() == 0 && !batch_done.load()) std::this_thread::yield();
  // Where the batch was when each answer came: the tail it had stored by then.
  std::vector<std::uint64_t> tails;
  while (!batch_done.load() && tails.size() < 20) {
    (void)pub.counters();  // takes the ring's lock
    tails.push_back(view.header().tail.load());
  }
  publisher.join();
  BOOST_TEST(!ec, ec.message());
  BOOST_TEST(published == batch.size());
  const std::uint64_t end = view.header().tail.load();
  const auto during = std::count_if(tails.begin(), tails.end(), [&](std::uint64_t t) { return t < end; });
  BOOST_TEST(during >= 5, during << " of " << tails.size() << " answered before the batch ended");
}

BOOST_AUTO_TEST_CASE(the_wake_socket_takes_nothing_from_strangers) {
  namespace shm = ipcbus::transport::shm;
  scratch_domain d;
  ipcbus::Bus bus(d.options("defaults: { transport: shm }\n"));
  std::atomic<int> got{0};
  auto sub = bus.subscribe<Sample>("wake/y", [&](const Sample&, const ipcbus::MessageInfo&) { ++got; });
  auto pub = bus.advertise<Sample>("wake/y");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
  const std::string ring = ring_of(d.domain_dir(), "wake/y");
  BOOST_REQUIRE(!ring.empty());
  ring_view view(ring);
  const shm::layout::slot* live = view.slot_of(::getpid());
  BOOST_REQUIRE(live);
  const auto slot = static_cast<std::uint32_t>(live - view.header().slot_table);
  const std::uint64_t state = live->state.load();
  int pipe_fds[2];
  BOOST_REQUIRE(::pipe2(pipe_fds, O_NONBLOCK | O_CLOEXEC) == 0);
  const int event_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  BOOST_REQUIRE(event_fd >= 0);
  const std::vector<std::pair<shm::wake_request, int>> requests = {
      {{0x12345678, slot, state}, event_fd},                     // not a wake request
      {{shm::wake_magic, shm::layout::slot_count - 1, state}, event_fd},  // a slot nobody holds
      {{shm::wake_magic, slot, state + (1ull << 34)}, event_fd},  // another generation
      {{shm::wake_magic, 1000, state}, event_fd},                 // no such slot
      {{shm::wake_magic, slot, state}, pipe_fds[1]},              // the right slot, but a pipe
  };
  for (const auto& [request, fd] : requests) {
    std::error_code ec;
    const int conn = shm::request_wake(ring, static_cast<std::uint32_t>(::getpid()), request, fd, ec);
    BOOST_REQUIRE_MESSAGE(conn >= 0, ec.message());
    BOOST_TEST(hung_up(conn), "slot " << request.slot << " magic " << request.magic);
    ::close(conn);
  }
  for (int i = 1; i <= 10; ++i) pub.publish(ipcbus::test::make_sample(i, 32));
  BOOST_TEST(eventually([&] { return got.load() == 10; }));
  char byte;
  BOOST_TEST(::read(pipe_fds[0], &byte, 1) == -1);  // never written
  std::uint64_t count = 0;
  BOOST_TEST(::read(event_fd, &count, sizeof count) == -1);
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
  ::close(event_fd);
}

// A link that ends while its publisher is still listed is made again, and
// the new link starts at the history window; nothing the old one delivered is
// delivered twice. In life: a publisher killed an instant before its entry is
// reclaimed. Here: the subscriber's slot is freed behind its back.
BOOST_AUTO_TEST_CASE(a_link_made_again_to_the_same_publisher_delivers_nothing_twice) {
  namespace layout = ipcbus::transport::shm::layout;
  scratch_domain d;
  ipcbus::Bus bus(d.options("defaults: { transport: shm, history: 8 }\n"));
  std::mutex m;
  std::vector<std::uint64_t> seen;
  auto sub = bus.subscribe<Sample>("again/x", [&](const Sample& s, const ipcbus::MessageInfo&) {
    std::lock_guard l(m);
    seen.push_back(s.index());
  });
  const auto count = [&] {
    std::lock_guard l(m);
    return seen.size();
  };
  auto pub = bus.advertise<Sample>("again/x");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
  for (int i = 1; i <= 5; ++i) pub.publish(ipcbus::test::make_sample(i, 32));
  BOOST_REQUIRE(eventually([&] { return count() == 5; }));
  {
    const std::string ring = ring_of(d.domain_dir(), "again/x");
    const int fd = ::shm_open(ring.c_str(), O_RDWR, 0);
    BOOST_REQUIRE(fd >= 0);
    void* base = ::mmap(nullptr, sizeof(layout::ring_header), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    BOOST_REQUIRE(base != MAP_FAILED);
    bool freed = false;
    for (auto& s : static_cast<layout::ring_header*>(base)->slot_table) {
      const std::uint64_t st = s.state.load();
      if (layout::slot_phase(st) == layout::phase_active && layout::slot_pid(st) == static_cast<std::uint32_t>(::getpid())) {
        s.state.store(layout::freed_state(st));
        freed = true;
      }
    }
    ::munmap(base, sizeof(layout::ring_header));
    BOOST_REQUIRE(freed);
  }
  pub.publish(ipcbus::test::make_sample(6, 32));  // wakes the link, which finds its slot gone
  BOOST_REQUIRE(eventually([&] { return sub.publisher_count() == 1u && count() >= 6; }));
  for (int i = 7; i <= 8; ++i) pub.publish(ipcbus::test::make_sample(i, 32));
  BOOST_REQUIRE(eventually([&] { return count() >= 8; }));
  std::this_thread::sleep_for(200ms);  // anything delivered twice would arrive by now
  std::lock_guard l(m);
  BOOST_TEST(seen == (std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6, 7, 8}), "delivered: " << [&] {
    std::string out;
    for (auto v : seen) out += std::to_string(v) + " ";
    return out;
  }());
}

BOOST_AUTO_TEST_CASE(sigkilled_publisher_is_noticed_and_its_segments_are_reclaimed) {
  scratch_domain d;
  // Frames of 2 MiB in a ring of 256 KiB: each one lives in a side segment.
  const std::string yaml = "defaults: { transport: shm, qos: reliable, depth: 4, publish_timeout_ms: 60000 }\n";
  const auto cfg = d.write_config(yaml);
  ipcbus::Bus bus(d.options(yaml));
  auto sub = bus.subscribe<Sample>("big/#");  // pull mode; nobody reads at first
  child_process pub(peer, {"publish", cfg.string(), "big/frames", "1000", std::to_string(2 << 20), "0", "1"});
  BOOST_REQUIRE(sub.wait_for_publishers(1, 10s));
  const std::string ring = ring_of(d.domain_dir(), "big/frames");
  BOOST_REQUIRE(!ring.empty());
  const auto id = ring.substr(ring.size() - 16);
  // The publisher fills our queue (4 frames, their side segments released once
  // read) and the ring (4 frames), then waits: the ring, 4 side segments in
  // flight and up to 4 released ones in its pool.
  BOOST_REQUIRE(eventually([&] { return segments_of(ring) >= 5 && segments_of(ring) <= 9; }));
  std::this_thread::sleep_for(500ms);  // the last side segment is written before its record
  BOOST_TEST(fs::exists(d.domain_dir() / (id + ".shm")));
  pub.signal(SIGKILL);
  pub.wait(10s);
  // What was published before the kill is still readable, intact and in order.
  std::uint64_t last = 0;
  while (auto r = sub.receive(1s)) {
    BOOST_TEST(ipcbus::test::sample_intact(r->message));
    BOOST_TEST(r->message.index() == last + 1);
    last = r->message.index();
  }
  BOOST_TEST(last == 8u);
  BOOST_TEST(eventually([&] { return sub.publisher_count() == 0; }));
  // A new participant reclaims: the Bus the stale entry and `<id>.*` (the
  // marker with it), the shm transport every segment whose marker is gone.
  ipcbus::Bus next(d.options(yaml));
  auto other = next.advertise<Sample>("other/topic");
  BOOST_TEST(files_named(d.domain_dir(), id) == 0u);
  BOOST_TEST(segments_of(ring) == 0u);
}

BOOST_AUTO_TEST_CASE(sigkilled_subscriber_does_not_block_a_reliable_publisher) {
  scratch_domain d;
  const std::string yaml = "defaults: { transport: shm, qos: reliable, depth: 4, publish_timeout_ms: 2000 }\n";
  const auto cfg = d.write_config(yaml);
  ipcbus::Bus bus(d.options(yaml));
  auto pub = bus.advertise<Sample>("work/items");
  child_process sub(peer, {"subscribe", cfg.string(), "work/items", "1000000", "60000"});
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 10s));
  BOOST_REQUIRE(sub.freeze());  // it stops reading: a reliable publisher now fills its ring
  std::error_code ec;
  for (int i = 0; i < 100000 && !ec; ++i) pub.publish(ipcbus::test::make_sample(i, 1000), ec);
  BOOST_TEST(ec == ipcbus::errc::timed_out);  // a stopped subscriber costs a timeout, not a hang
  sub.signal(SIGKILL);
  sub.wait(10s);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 1000; ++i) {
    pub.publish(ipcbus::test::make_sample(i, 1000), ec);
    BOOST_REQUIRE(!ec);
  }
  const bool quick = std::chrono::steady_clock::now() - start < 2s;
  BOOST_TEST(quick);  // evicted at once, not after a timeout
  BOOST_TEST(pub.subscriber_count() == 0u);
  BOOST_TEST(eventually([&] { return pub.counters().peers_lost == 1; }));
}

BOOST_AUTO_TEST_CASE(garbage_in_a_live_ring_closes_the_link_of_a_subscriber_in_this_process) {
  scratch_domain d;
  const std::string yaml = "defaults: { transport: shm, qos: reliable, depth: 4, publish_timeout_ms: 50 }\n";
  const auto cfg = d.write_config(yaml);
  ipcbus::Bus bus(d.options(yaml));
  auto sub = bus.subscribe<Sample>("svc/#");  // pull mode: stops reading when its queue is full
  child_process pub(peer, {"serve", cfg.string(), "svc/heartbeat"});
  BOOST_REQUIRE(sub.wait_for_publishers(1, 10s));
  const std::string ring = ring_of(d.domain_dir(), "svc/heartbeat");
  BOOST_REQUIRE(!ring.empty());
  std::this_thread::sleep_for(500ms);  // our queue fills, then the ring holds what we have not read
  scribble_over_records(ring, 0xab);
  // Reading on resumes the link, which now meets the garbage.
  BOOST_REQUIRE(eventually([&] {
    (void)sub.receive(10ms);
    return sub.counters()->bad_frames.load() == 1;
  }));
  BOOST_TEST(sub.publisher_count() == 0u);
  BOOST_TEST(pub.running());  // the publisher writes on regardless
  pub.signal(SIGTERM);        // and stops cleanly, removing its ring
  BOOST_TEST(pub.wait(10s) == 0);
  BOOST_TEST(segments_of(ring) == 0u);
}

BOOST_AUTO_TEST_CASE(garbage_in_a_live_ring_does_not_crash_a_subscriber_process) {
  scratch_domain d;
  const std::string yaml = "defaults: { transport: shm, qos: reliable, depth: 64, publish_timeout_ms: 100 }\n";
  const auto cfg = d.write_config(yaml);
  ipcbus::Bus bus(d.options(yaml));
  auto pub = bus.advertise<Sample>("feed/data");
  child_process sub(peer, {"subscribe", cfg.string(), "feed/data", "1000000", "3000"});
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 10s));
  BOOST_REQUIRE(sub.freeze());  // frozen with records waiting for it...
  for (int i = 1; i <= 20; ++i) pub.publish(ipcbus::test::make_sample(i, 100));
  const std::string ring = ring_of(d.domain_dir(), "feed/data");
  scribble_over_records(ring, 0x5a);  // ...which are garbage by the time it wakes up
  ::kill(sub.pid(), SIGCONT);
  BOOST_REQUIRE(eventually([&] { return pub.subscriber_count() == 0; }));  // it left the ring
  const int status = sub.wait(20s);
  BOOST_REQUIRE(status != -1);
  BOOST_TEST(WIFEXITED(status));  // it ran to its end: no crash, no signal
  BOOST_TEST(sub.output().find("corrupt 0") != std::string::npos, sub.output());
  pub.publish(ipcbus::test::make_sample(21, 100));  // and the publisher is unharmed
}

BOOST_AUTO_TEST_CASE(random_garbage_anywhere_in_a_busy_ring_is_survived) {
  scratch_domain d;
  const std::string yaml = "defaults: { transport: shm, qos: drop_oldest, depth: 16 }\n";
  ipcbus::Bus bus(d.options(yaml));
  std::atomic<std::uint64_t> got{0};
  auto sub = bus.subscribe<ipcbus::Bytes>("noise/#", [&](const ipcbus::Bytes&, const ipcbus::MessageInfo&) { ++got; });
  auto pub = bus.advertise<ipcbus::Bytes>("noise/data");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 10s));
  const std::string ring = ring_of(d.domain_dir(), "noise/data");
  const int fd = ::shm_open(ring.c_str(), O_RDWR, 0);
  BOOST_REQUIRE(fd >= 0);
  struct stat st {};
  BOOST_REQUIRE(::fstat(fd, &st) == 0);
  const auto size = static_cast<std::size_t>(st.st_size);
  auto* base = static_cast<unsigned char*>(::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  ::close(fd);
  BOOST_REQUIRE(base != MAP_FAILED);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (std::uint64_t i = 0; !stop; ++i) {
      std::error_code ec;
      pub.publish(ipcbus::Bytes(std::string(1 + i % 3000, static_cast<char>(i))), ec);
    }
  });
  // Random bytes at random places (header, slots, records), among live traffic.
  std::mt19937_64 rng(42);
  for (int round = 0; round < 20000; ++round) {
    const std::size_t at = rng() % size;
    const std::size_t n = std::min<std::size_t>(1 + rng() % 64, size - at);
    for (std::size_t i = 0; i < n; ++i) base[at + i] = static_cast<unsigned char>(rng());
    if (round % 1000 == 0) std::this_thread::sleep_for(5ms);
  }
  stop = true;
  writer.join();
  ::munmap(base, size);
  // Still here: nothing crashed. The subscriber saw traffic and, most likely,
  // refused the publisher as soon as the garbage reached it.
  BOOST_TEST(got.load() > 0u);
  BOOST_TEST_MESSAGE("delivered " << got.load() << ", bad frames " << sub.counters()->bad_frames.load());
}

BOOST_AUTO_TEST_CASE(messages_far_larger_than_the_ring_arrive_intact) {
  scratch_domain d;
  const auto cfg = d.write_config("defaults: { transport: shm }\n");  // 4 MiB ring, 64 MiB max_message
  child_process sub(peer, {"subscribe", cfg.string(), "blobs/#", "5", "60000"});
  child_process pub(peer, {"publish", cfg.string(), "blobs/huge", "5", std::to_string(16 << 20), "0", "1"});
  BOOST_TEST(pub.wait(120s) == 0);
  BOOST_TEST(sub.wait(120s) == 0);
  BOOST_TEST(sub.output().find("received 5 lost 0 corrupt 0 out_of_order 0") != std::string::npos, sub.output());
  // Nothing of the publisher is left behind once it exited.
  ipcbus::Bus probe(d.options("defaults: { transport: shm }\n"));
  auto p = probe.advertise<Sample>("probe/topic");
  const std::string mine = ring_of(d.domain_dir(), "probe/topic");
  BOOST_REQUIRE(!mine.empty());
  BOOST_TEST(segments_of(mine.substr(0, mine.size() - 16)) == 1u);  // only the probe's own ring
}

namespace {

// The file behind the mapping that holds `address` in this process ("" if anonymous).
std::string mapping_of(const void* address) {
  const auto a = reinterpret_cast<std::uintptr_t>(address);
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    std::uintptr_t lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) != 2 || a < lo || a >= hi) continue;
    const auto slash = line.find('/');
    return slash == std::string::npos ? std::string{} : line.substr(slash);
  }
  return {};
}

bool in_shared_memory(const void* address) { return mapping_of(address).starts_with("/dev/shm/ipcbus-"); }

}  // namespace

// Zero copy: a loan is ring (or side segment) memory, and a Bytes callback
// under reliable QoS gets a view of that same memory, not a copy.
BOOST_AUTO_TEST_CASE(loans_and_bytes_callbacks_use_the_shared_memory_itself) {
  scratch_domain d;
  ipcbus::Bus bus(d.options("defaults: { transport: shm }\n"));
  std::mutex m;
  std::vector<std::pair<bool, std::size_t>> seen;  // (view in shared memory, size)
  auto sub = bus.subscribe<ipcbus::Bytes>("zero/copy", [&](const ipcbus::Bytes& b, const ipcbus::MessageInfo&) {
    std::lock_guard l(m);
    seen.emplace_back(in_shared_memory(b.data()), b.size());
  });
  auto pub = bus.advertise<ipcbus::Bytes>("zero/copy");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
  for (const std::size_t size : {std::size_t{64}, std::size_t{8} << 20}) {  // in the ring; in a side segment
    ipcbus::Loan loan = pub.loan(size);
    BOOST_TEST(in_shared_memory(loan.data()), mapping_of(loan.data()));
    std::memset(loan.data(), 'z', size);
    loan.publish();
  }
  pub.publish(ipcbus::Bytes(std::string(100, 'p')));  // serialized straight into the ring
  BOOST_REQUIRE(eventually([&] {
    std::lock_guard l(m);
    return seen.size() == 3;
  }));
  for (const auto& [shared, size] : seen) BOOST_TEST(shared, "a view of " << size << " bytes was a copy");
}

// Under drop_oldest the publisher may overwrite a record while a callback
// reads it: those frames are copied out and checked first, never viewed in place.
BOOST_AUTO_TEST_CASE(drop_oldest_callbacks_get_a_checked_copy) {
  scratch_domain d;
  ipcbus::Bus bus(d.options("defaults: { transport: shm, qos: drop_oldest }\n"));
  std::atomic<int> in_ring{0}, copies{0};
  auto sub = bus.subscribe<ipcbus::Bytes>("lossy/x", [&](const ipcbus::Bytes& b, const ipcbus::MessageInfo&) {
    ++(in_shared_memory(b.data()) ? in_ring : copies);
  });
  auto pub = bus.advertise<ipcbus::Bytes>("lossy/x");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
  pub.publish(ipcbus::Bytes("one"));
  BOOST_REQUIRE(eventually([&] { return copies.load() == 1; }));
  BOOST_TEST(in_ring.load() == 0);
}

// A busy-polling subscriber notices a SIGKILLed publisher too, both when the
// bus's io thread polls it and when the link's own thread spins (an
// io_context the application runs).
BOOST_AUTO_TEST_CASE(busy_polling_subscribers_notice_a_sigkilled_publisher) {
  scratch_domain d;
  const std::string yaml = "defaults: { transport: shm, busy_poll: true }\n";
  const auto cfg = d.write_config(yaml);
  boost::asio::io_context io;
  auto work = boost::asio::make_work_guard(io);
  std::thread runner([&] { io.run(); });
  {
    ipcbus::Bus own(d.options(yaml));
    ipcbus::Bus external(io, d.options(yaml));
    std::atomic<int> got_own{0}, got_external{0};
    auto s1 = own.subscribe<Sample>("poll/x", [&](const Sample&, const ipcbus::MessageInfo&) { ++got_own; });
    auto s2 = external.subscribe<Sample>("poll/x", [&](const Sample&, const ipcbus::MessageInfo&) { ++got_external; });
    child_process pub(peer, {"publish", cfg.string(), "poll/x", "1000000", "16", "1", "2"});
    BOOST_REQUIRE(eventually([&] { return got_own.load() > 0 && got_external.load() > 0; }));
    pub.signal(SIGKILL);
    pub.wait(10s);
    BOOST_TEST(eventually([&] { return s1.publisher_count() == 0u; }));
    BOOST_TEST(eventually([&] { return s2.publisher_count() == 0u; }));
  }
  work.reset();
  io.stop();
  runner.join();
}

// The same without a wake connection (the eventfd hand-over turned off, as when
// a publisher has no wake socket): nothing tells a busy-polling link at once,
// so its polls must notice, a publisher that closes through the ring's closed
// flag and a killed one through the process check, though they ask the
// latter only once in 64 idle polls.
BOOST_AUTO_TEST_CASE(busy_polling_subscribers_without_a_wake_connection_notice_the_publisher_end) {
  // Set before any bus exists (nothing else reads the environment meanwhile),
  // and unset however the case ends: later cases must get the hand-over.
  struct futex_wake_only {
    futex_wake_only() { ::setenv("IPCBUS_SHM_WAKE", "futex", 1); }
    ~futex_wake_only() { ::unsetenv("IPCBUS_SHM_WAKE"); }
  } const env;
  scratch_domain d;
  const std::string yaml = "defaults: { transport: shm, busy_poll: true }\n";
  const auto cfg = d.write_config(yaml);
  for (const int sig : {SIGTERM, SIGKILL}) {
    BOOST_TEST_CONTEXT("publisher ended by signal " << sig) {
      ipcbus::Bus bus(d.options(yaml));
      std::atomic<int> got{0};
      auto sub = bus.subscribe<Sample>("poll/end", [&](const Sample&, const ipcbus::MessageInfo&) { ++got; });
      child_process pub(peer, {"serve", cfg.string(), "poll/end"});
      BOOST_REQUIRE(eventually([&] { return got.load() > 0; }));
      pub.signal(sig);
      pub.wait(10s);
      BOOST_TEST(eventually([&] { return sub.publisher_count() == 0u; }));
    }
  }
}

// ---- side segments: reused, never torn ----------------------------------------

namespace {

// Names ("/ipcbus-...-b<hex>") of the side segments of `ring` in /dev/shm right now.
std::set<std::string> side_segments_of(const std::string& ring) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator("/dev/shm")) {
    std::string name(1, '/');
    name += e.path().filename().string();
    if (name.starts_with(ring + "-b")) out.insert(name);
  }
  return out;
}

// Fills a frame of message `index`: the index, then bytes that depend on it and
// on their place, so that bytes of two messages mixed together are noticed.
void fill_frame(char* p, std::size_t size, std::uint64_t index) {
  std::memcpy(p, &index, sizeof index);
  for (std::size_t i = sizeof index; i < size; ++i) p[i] = static_cast<char>((i * 131 + index * 7) >> 3);
}

bool frame_intact(std::string_view b) {
  std::uint64_t index = 0;
  if (b.size() < sizeof index) return false;
  std::memcpy(&index, b.data(), sizeof index);
  for (std::size_t i = sizeof index; i < b.size(); ++i)
    if (b[i] != static_cast<char>((i * 131 + index * 7) >> 3)) return false;
  return true;
}

// Overwrites every side segment of `ring` entirely with `byte`.
std::size_t scribble_over_side_segments(const std::string& ring, unsigned char byte) {
  std::size_t n = 0;
  for (const auto& name : side_segments_of(ring)) {
    const int fd = ::shm_open(name.c_str(), O_RDWR, 0);
    if (fd < 0) continue;  // released meanwhile
    struct stat st {};
    const bool ok = ::fstat(fd, &st) == 0 && st.st_size > 0;
    void* base = ok ? ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                    : MAP_FAILED;
    ::close(fd);
    if (base == MAP_FAILED) continue;
    std::memset(base, byte, static_cast<std::size_t>(st.st_size));
    ::munmap(base, static_cast<std::size_t>(st.st_size));
    ++n;
  }
  return n;
}

}  // namespace

// 1 MiB messages go to side segments; the publisher reuses released ones and
// the subscriber its mappings of them, so 300 messages pass through a handful
// of segments (each used to get one of its own), and never more are in /dev/shm
// than the frames in flight plus the pool.
BOOST_AUTO_TEST_CASE(large_frames_reuse_a_bounded_set_of_side_segments) {
  scratch_domain d;
  const std::string yaml = "defaults: { transport: shm, qos: reliable, depth: 8 }\n";  // 512 KiB ring
  ipcbus::Bus bus(d.options(yaml));
  std::mutex m;
  std::set<std::string> mapped;  // the files a Bytes view pointed into
  std::atomic<int> got{0}, torn{0};
  auto sub = bus.subscribe<ipcbus::Bytes>("big/reuse", [&](const ipcbus::Bytes& b, const ipcbus::MessageInfo&) {
    if (!frame_intact(b.bytes())) ++torn;
    {
      std::lock_guard l(m);
      mapped.insert(mapping_of(b.data()));
    }
    ++got;
  });
  auto pub = bus.advertise<ipcbus::Bytes>("big/reuse");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
  const std::string ring = ring_of(d.domain_dir(), "big/reuse");
  BOOST_REQUIRE(!ring.empty());
  constexpr int total = 300;
  std::set<std::string> names;  // every side segment seen in /dev/shm
  std::size_t most = 0;         // the most seen at once
  for (int i = 0; i < total; ++i) {
    const std::size_t size = (std::size_t{1} << 20) + static_cast<std::size_t>(i % 7) * 4096;
    ipcbus::Loan loan = pub.loan(size);
    fill_frame(loan.data(), size, static_cast<std::uint64_t>(i));
    loan.publish();
    const auto now = side_segments_of(ring);
    most = std::max(most, now.size());
    names.insert(now.begin(), now.end());
  }
  BOOST_REQUIRE(eventually([&] { return got.load() == total; }));
  BOOST_TEST(torn.load() == 0);
  // At most depth in flight (+1 being read) plus a pool of at most max(8, depth + 1).
  BOOST_TEST_MESSAGE(total << " messages: " << names.size() << " side segments, at most " << most
                           << " at once, " << mapped.size() << " mapped by the subscriber");
  BOOST_TEST(most <= 8u + 1u + 9u);
  // The pool keeps all depth + 1 a subscriber can fall behind by: a subscriber
  // that lags by the whole depth and catches up, again and again, does not
  // make new ones each time (depth + 1, and one spare for a reader's cursor
  // that sat on a pooled segment's record when it was wanted).
  BOOST_TEST(names.size() <= 8u + 1u + 1u, names.size() << " side segments for " << total << " messages");
  std::lock_guard l(m);
  BOOST_TEST(mapped.size() <= 8u + 1u + 1u, mapped.size() << " mappings for " << total << " messages");
  for (const auto& f : mapped) BOOST_TEST(f.starts_with("/dev/shm/ipcbus-"), f);
}

// Under every QoS a large frame arrives whole or not at all, while side
// segments are reused: frames of varying sizes, checked byte by byte in another
// process (sample_matches_index), with that process reading as fast as it can.
BOOST_AUTO_TEST_CASE(large_frames_stay_intact_across_reuse_under_every_qos) {
  for (const std::string qos : {"reliable", "drop_newest", "drop_oldest"}) {
    BOOST_TEST_CONTEXT("qos " << qos) {
      scratch_domain d("reuse-" + qos);
      const std::string yaml = "defaults: { transport: shm, qos: " + qos + ", depth: 2, publish_timeout_ms: 5000 }\n";
      const auto cfg = d.write_config(yaml);
      const auto status_file = d.runtime_dir() / "verify.status";
      ipcbus::test::status_page status(status_file);
      ipcbus::Bus bus(d.options(yaml));
      auto pub = bus.advertise<Sample>("big/qos");
      child_process sub(peer, {"verify", cfg.string(), "big/qos", status_file.string()});
      BOOST_REQUIRE(pub.wait_for_subscribers(1, 10s));
      const std::string ring = ring_of(d.domain_dir(), "big/qos");
      constexpr std::uint64_t total = 150;
      std::size_t most = 0;
      for (std::uint64_t i = 1; i <= total; ++i) {
        pub.publish(ipcbus::test::make_sample(i, (std::size_t{1} << 20) + (i % 5) * 100000));
        most = std::max(most, side_segments_of(ring).size());
      }
      pub.close(10s);
      // Everything that was not dropped arrives; what arrives is intact.
      if (qos == "reliable") BOOST_TEST(eventually([&] { return status->received.load() == total; }));
      std::this_thread::sleep_for(300ms);
      sub.signal(SIGTERM);
      BOOST_TEST(sub.wait(10s) == 0, sub.output());
      BOOST_TEST(status->received.load() > 0u);
      BOOST_TEST(status->corrupt.load() == 0u);
      BOOST_TEST(status->out_of_order.load() == 0u);
      BOOST_TEST(status->bad_frames.load() == 0u);
      BOOST_TEST(most <= 2u + 1u + 8u);  // depth (+1 being read in place) plus the pool
      BOOST_TEST_MESSAGE(qos << ": received " << status->received.load() << " of " << total << ", lost "
                             << status->lost.load());
    }
  }
}

// drop_oldest: the publisher laps a slow reader at any moment and may then
// reuse the side segment the reader is copying from. The reader checks the
// segment's use number after its copy, so it delivers whole frames only.
BOOST_AUTO_TEST_CASE(a_lapped_drop_oldest_reader_never_delivers_a_torn_large_frame) {
  scratch_domain d;
  ipcbus::Bus bus(d.options("defaults: { transport: shm, qos: drop_oldest, depth: 1 }\n"));
  std::atomic<int> got{0}, torn{0};
  auto sub = bus.subscribe<ipcbus::Bytes>("big/lossy", [&](const ipcbus::Bytes& b, const ipcbus::MessageInfo&) {
    if (!frame_intact(b.bytes())) ++torn;
    ++got;
  });
  auto pub = bus.advertise<ipcbus::Bytes>("big/lossy");
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 5s));
  const std::string ring = ring_of(d.domain_dir(), "big/lossy");
  std::set<std::string> names;
  const auto until = std::chrono::steady_clock::now() + 3s;
  std::uint64_t sent = 0;
  while (std::chrono::steady_clock::now() < until) {
    const std::size_t size = (std::size_t{1} << 20) + (sent % 3) * 8192;
    ipcbus::Loan loan = pub.loan(size);
    fill_frame(loan.data(), size, sent++);
    loan.publish();
    if (sent % 16 == 0) {
      const auto now = side_segments_of(ring);
      names.insert(now.begin(), now.end());
    }
  }
  BOOST_REQUIRE(eventually([&] { return got.load() > 0 && sub.counters()->lost.load() > 0; }));
  BOOST_TEST(torn.load() == 0);
  BOOST_TEST(sub.counters()->bad_frames.load() == 0u);
  BOOST_TEST(names.size() < sent / 4, names.size() << " side segments for " << sent << " messages");
  BOOST_TEST_MESSAGE("sent " << sent << ", delivered " << got.load() << ", lost " << sub.counters()->lost.load()
                             << ", side segments " << names.size());
}

// A side segment scribbled over while a subscriber in another process still has
// to read it: the subscriber refuses the publisher, and neither crashes.
BOOST_AUTO_TEST_CASE(garbage_in_side_segments_closes_the_link_not_the_subscriber) {
  scratch_domain d;
  const std::string yaml = "defaults: { transport: shm, qos: reliable, depth: 4, publish_timeout_ms: 100 }\n";
  const auto cfg = d.write_config(yaml);
  ipcbus::Bus bus(d.options(yaml));
  auto pub = bus.advertise<Sample>("big/garbage");
  child_process sub(peer, {"subscribe", cfg.string(), "big/garbage", "1000000", "4000"});
  BOOST_REQUIRE(pub.wait_for_subscribers(1, 10s));
  BOOST_REQUIRE(sub.freeze());  // frozen with large frames waiting for it...
  std::error_code ec;
  for (int i = 1; i <= 40 && !ec; ++i) pub.publish(ipcbus::test::make_sample(i, 1 << 20), ec);
  BOOST_TEST(ec == ipcbus::errc::timed_out);  // its queue and the ring are full
  const std::string ring = ring_of(d.domain_dir(), "big/garbage");
  BOOST_TEST(scribble_over_side_segments(ring, 0xab) >= 4u);  // ...which are garbage when it wakes up
  ::kill(sub.pid(), SIGCONT);
  BOOST_REQUIRE(eventually([&] { return pub.subscriber_count() == 0; }));  // it left the ring
  const int status = sub.wait(20s);
  BOOST_REQUIRE(status != -1);
  BOOST_TEST(WIFEXITED(status));  // no crash, no signal
  BOOST_TEST(sub.output().find("corrupt 0") != std::string::npos, sub.output());
  pub.publish(ipcbus::test::make_sample(41, 1 << 20));  // the publisher carries on
}
