#include "bench_raw.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <mqueue.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <new>
#include <system_error>
#include <vector>

namespace ipcbus::bench {
namespace {

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

// ---- the shared ring (raw-spin, raw-futex) ----

constexpr int max_readers = 8;

struct alignas(64) ring_cursor {
  std::atomic<std::uint64_t> pos{0};
};

// Lives in shared memory: positions only grow; slot i holds message i % slots.
struct ring_header {
  alignas(64) std::atomic<std::uint64_t> tail{0};
  alignas(64) std::atomic<std::uint32_t> data_seq{0};  // futex word: bumped after each message
  std::atomic<std::uint32_t> readers_waiting{0};
  alignas(64) std::atomic<std::uint32_t> space_seq{0};  // futex word: bumped after each read
  std::atomic<std::uint32_t> writer_waiting{0};
  ring_cursor cursors[max_readers];
};

void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t seen) {
  timespec ts{0, 100'000'000};  // re-check now and then; a lost wake-up only costs time
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT, seen, &ts, nullptr, 0);
}

void futex_wake_all(std::atomic<std::uint32_t>& word) {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Waits until ready() holds: spinning, or sleeping on `word` with `waiting` raised.
template <class Ready>
void wait_until(bool spin, std::atomic<std::uint32_t>& word, std::atomic<std::uint32_t>& waiting, Ready ready) {
  if (spin) {
    // Yield now and then: with more spinners than CPUs, the peer must get to run.
    for (unsigned i = 1; !ready(); ++i) {
      cpu_relax();
      if (i % 4096 == 0) ::sched_yield();
    }
    return;
  }
  while (!ready()) {
    waiting.fetch_add(1, std::memory_order_seq_cst);
    const auto seen = word.load(std::memory_order_seq_cst);
    if (!ready()) futex_wait(word, seen);
    waiting.fetch_sub(1, std::memory_order_seq_cst);
  }
}

class shared_ring {
 public:
  shared_ring(std::size_t msg_size, int readers, bool spin)
      : slots_(std::clamp<std::size_t>((8u << 20) / std::max<std::size_t>(msg_size, 1), 2, 256)),
        size_(msg_size),
        readers_(readers),
        spin_(spin),
        block_(sizeof(ring_header) + slots_ * msg_size) {
    head_ = new (block_.data()) ring_header;
    data_ = static_cast<char*>(block_.data()) + sizeof(ring_header);
  }

  // Spinning, each side keeps the last position it saw of the other (this
  // object is each process's own copy after fork) and reads the other's cache
  // line again only when that says wait: the classic SPSC ring, the floor a
  // polling transport can be held to. Sleeping, the flags need seq_cst.
  void write(const char* p, std::size_t n) {
    const auto t = head_->tail.load(std::memory_order_relaxed);
    if (t - seen_cursor_ >= slots_)
      wait_until(spin_, head_->space_seq, head_->writer_waiting,
                 [&] { return t - (seen_cursor_ = min_cursor()) < slots_; });
    std::memcpy(data_ + (t % slots_) * size_, p, std::min(n, size_));
    if (spin_) {
      head_->tail.store(t + 1, std::memory_order_release);
      return;
    }
    head_->tail.store(t + 1, std::memory_order_seq_cst);
    head_->data_seq.fetch_add(1, std::memory_order_seq_cst);
    if (head_->readers_waiting.load(std::memory_order_seq_cst)) futex_wake_all(head_->data_seq);
  }

  void read(int reader, char* p, std::size_t n) {
    auto& cursor = head_->cursors[reader].pos;
    const auto c = cursor.load(std::memory_order_relaxed);
    if (seen_tail_ <= c)
      wait_until(spin_, head_->data_seq, head_->readers_waiting,
                 [&] { return (seen_tail_ = head_->tail.load(std::memory_order_acquire)) > c; });
    std::memcpy(p, data_ + (c % slots_) * size_, std::min(n, size_));
    if (spin_) {
      cursor.store(c + 1, std::memory_order_release);
      return;
    }
    cursor.store(c + 1, std::memory_order_seq_cst);
    head_->space_seq.fetch_add(1, std::memory_order_seq_cst);
    if (head_->writer_waiting.load(std::memory_order_seq_cst)) futex_wake_all(head_->space_seq);
  }

 private:
  std::uint64_t min_cursor() const {
    auto m = head_->cursors[0].pos.load(std::memory_order_acquire);
    for (int i = 1; i < readers_; ++i) m = std::min(m, head_->cursors[i].pos.load(std::memory_order_acquire));
    return m;
  }

  std::size_t slots_, size_;
  int readers_;
  bool spin_;
  std::uint64_t seen_cursor_ = 0;  // writer: the slowest cursor when last read
  std::uint64_t seen_tail_ = 0;    // reader: the tail when last read
  shared_block block_;
  ring_header* head_ = nullptr;
  char* data_ = nullptr;
};

class ring_sender : public channel_sender {
 public:
  explicit ring_sender(shared_ring& r) : ring_(r) {}
  void send(const char* data, std::size_t n) override { ring_.write(data, n); }

 private:
  shared_ring& ring_;
};

class ring_receiver : public channel_receiver {
 public:
  ring_receiver(shared_ring& r, int reader) : ring_(r), reader_(reader) {}
  void receive(char* data, std::size_t n) override { ring_.read(reader_, data, n); }

 private:
  shared_ring& ring_;
  int reader_;
};

class ring_pair : public pair_channel {
 public:
  ring_pair(std::size_t size, bool spin) : to_pong_(size, 1, spin), to_ping_(size, 1, spin) {}
  channel_ends open(int side) override {
    auto& out = side == 0 ? to_pong_ : to_ping_;
    auto& in = side == 0 ? to_ping_ : to_pong_;
    return {std::make_unique<ring_sender>(out), std::make_unique<ring_receiver>(in, 0)};
  }

 private:
  shared_ring to_pong_, to_ping_;
};

class ring_fanout : public fanout_channel {
 public:
  ring_fanout(std::size_t size, int subscribers, bool spin) : ring_(size, subscribers, spin) {}
  std::unique_ptr<channel_sender> open_publisher() override { return std::make_unique<ring_sender>(ring_); }
  std::unique_ptr<channel_receiver> open_subscriber(int index) override {
    return std::make_unique<ring_receiver>(ring_, index);
  }

 private:
  shared_ring ring_;
};

// ---- byte streams (raw-unix, raw-tcp, raw-pipe) ----

void write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) throw_errno("write");
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

void read_exact(int fd, char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw_errno("read");
    if (r == 0) throw std::system_error(std::make_error_code(std::errc::broken_pipe), "peer closed");
    p += r;
    n -= static_cast<std::size_t>(r);
  }
}

// Writes each message to every fd in turn.
class fd_sender : public channel_sender {
 public:
  explicit fd_sender(std::vector<int> fds) : fds_(std::move(fds)) {}
  void send(const char* data, std::size_t n) override {
    for (int fd : fds_) write_all(fd, data, n);
  }

 private:
  std::vector<int> fds_;
};

class fd_receiver : public channel_receiver {
 public:
  explicit fd_receiver(int fd) : fd_(fd) {}
  void receive(char* data, std::size_t n) override { read_exact(fd_, data, n); }

 private:
  int fd_;
};

// A connected pair of descriptors: [0] written by one side, [1] by the other (or
// for pipes: [0] the read end, [1] the write end).
struct fd_link {
  int fd[2] = {-1, -1};
};

fd_link make_link(const std::string& name) {
  fd_link l;
  if (name == "raw-pipe") {
    if (::pipe(l.fd) != 0) throw_errno("pipe");
  } else if (name == "raw-unix") {
    if (::socketpair(AF_UNIX, SOCK_STREAM, 0, l.fd) != 0) throw_errno("socketpair");
  } else {  // raw-tcp: connect to a loopback listener made for this one link
    const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0) throw_errno("socket");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(listener, 1) != 0 ||
        ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ::close(listener);
      throw_errno("loopback listener");
    }
    l.fd[0] = ::socket(AF_INET, SOCK_STREAM, 0);
    if (l.fd[0] < 0 || ::connect(l.fd[0], reinterpret_cast<sockaddr*>(&addr), len) != 0) {
      ::close(listener);
      throw_errno("connect to loopback");
    }
    l.fd[1] = ::accept(listener, nullptr, nullptr);
    ::close(listener);
    if (l.fd[1] < 0) throw_errno("accept");
    const int one = 1;
    for (int fd : l.fd) ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return l;
}

// Owns every descriptor it made; each process closes its copies when the channel goes.
class fd_channels {
 public:
  ~fd_channels() {
    for (auto& l : links_)
      for (int fd : l.fd)
        if (fd >= 0) ::close(fd);
  }

 protected:
  std::vector<fd_link> links_;
};

class fd_pair : public pair_channel, fd_channels {
 public:
  explicit fd_pair(const std::string& name) {
    links_.push_back(make_link(name));
    links_.push_back(name == "raw-pipe" ? make_link(name) : fd_link{});
    pipes_ = name == "raw-pipe";
  }
  channel_ends open(int side) override {
    if (pipes_)  // link 0 carries ping -> pong, link 1 pong -> ping
      return side == 0 ? channel_ends{std::make_unique<fd_sender>(std::vector{links_[0].fd[1]}),
                                      std::make_unique<fd_receiver>(links_[1].fd[0])}
                       : channel_ends{std::make_unique<fd_sender>(std::vector{links_[1].fd[1]}),
                                      std::make_unique<fd_receiver>(links_[0].fd[0])};
    const int fd = links_[0].fd[side];
    return {std::make_unique<fd_sender>(std::vector{fd}), std::make_unique<fd_receiver>(fd)};
  }

 private:
  bool pipes_ = false;
};

class fd_fanout : public fanout_channel, fd_channels {
 public:
  fd_fanout(const std::string& name, int subscribers) {
    for (int i = 0; i < subscribers; ++i) links_.push_back(make_link(name));
  }
  // Pipes: write end [1]; sockets: either end, the publisher takes [0] and a subscriber [1].
  std::unique_ptr<channel_sender> open_publisher() override {
    std::vector<int> fds;
    for (auto& l : links_) fds.push_back(l.fd[pipes() ? 1 : 0]);
    return std::make_unique<fd_sender>(std::move(fds));
  }
  std::unique_ptr<channel_receiver> open_subscriber(int index) override {
    return std::make_unique<fd_receiver>(links_[static_cast<std::size_t>(index)].fd[pipes() ? 0 : 1]);
  }

 private:
  bool pipes() const {
    // A pipe's ends differ in mode: only [1] is writable.
    return (::fcntl(links_.front().fd[0], F_GETFL) & O_ACCMODE) == O_RDONLY;
  }
};

// ---- POSIX message queues (raw-mq) ----

long mq_limit(const char* file) {
  std::ifstream in(std::string("/proc/sys/fs/mqueue/") + file);
  long v = 0;
  return in >> v ? v : 0;
}

// A queue for messages of `size`, unlinked at once: the descriptor is inherited by fork.
mqd_t make_queue(std::size_t size) {
  static int serial = 0;
  const std::string name = "/ipcbus-bench-" + std::to_string(::getpid()) + "-" + std::to_string(serial++);
  mq_attr attr{};
  attr.mq_maxmsg = std::clamp<long>(mq_limit("msg_max"), 1, 10);
  attr.mq_msgsize = static_cast<long>(size);
  // The per-user byte budget (RLIMIT_MSGQUEUE, 800 KiB by default) is too small
  // for large messages; raise it as far as we may.
  rlimit lim{};
  if (::getrlimit(RLIMIT_MSGQUEUE, &lim) == 0) {
    if (::geteuid() == 0) lim.rlim_max = RLIM_INFINITY;
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_MSGQUEUE, &lim);  // best effort: mq_open below says when it was not enough
  }
  const mqd_t q = ::mq_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600, &attr);
  if (q == static_cast<mqd_t>(-1)) throw_errno("mq_open " + name);
  ::mq_unlink(name.c_str());
  return q;
}

class mq_sender : public channel_sender {
 public:
  explicit mq_sender(std::vector<mqd_t> qs) : qs_(std::move(qs)) {}
  void send(const char* data, std::size_t n) override {
    for (auto q : qs_)
      while (::mq_send(q, data, n, 0) != 0)
        if (errno != EINTR) throw_errno("mq_send");
  }

 private:
  std::vector<mqd_t> qs_;
};

class mq_receiver : public channel_receiver {
 public:
  explicit mq_receiver(mqd_t q) : q_(q) {}
  void receive(char* data, std::size_t n) override {
    while (::mq_receive(q_, data, n, nullptr) < 0)
      if (errno != EINTR) throw_errno("mq_receive");
  }

 private:
  mqd_t q_;
};

class mq_channels {
 public:
  ~mq_channels() {
    for (auto q : queues_) ::mq_close(q);
  }

 protected:
  std::vector<mqd_t> queues_;
};

class mq_pair : public pair_channel, mq_channels {
 public:
  explicit mq_pair(std::size_t size) {
    queues_.push_back(make_queue(size));  // ping -> pong
    queues_.push_back(make_queue(size));  // pong -> ping
  }
  channel_ends open(int side) override {
    return {std::make_unique<mq_sender>(std::vector{queues_[side == 0 ? 0u : 1u]}),
            std::make_unique<mq_receiver>(queues_[side == 0 ? 1u : 0u])};
  }
};

class mq_fanout : public fanout_channel, mq_channels {
 public:
  mq_fanout(std::size_t size, int subscribers) {
    for (int i = 0; i < subscribers; ++i) queues_.push_back(make_queue(size));
  }
  std::unique_ptr<channel_sender> open_publisher() override { return std::make_unique<mq_sender>(queues_); }
  std::unique_ptr<channel_receiver> open_subscriber(int index) override {
    return std::make_unique<mq_receiver>(queues_[static_cast<std::size_t>(index)]);
  }
};

bool mq_fits(std::size_t size, std::string& why) {
  const long limit = mq_limit("msgsize_max");
  if (::geteuid() != 0 && limit > 0 && static_cast<long>(size) > limit) {
    why = "over /proc/sys/fs/mqueue/msgsize_max (" + std::to_string(limit) + " bytes)";
    return false;
  }
  return true;
}

}  // namespace

std::unique_ptr<pair_channel> make_raw_pair(const std::string& name, std::size_t size, std::string& why) {
  if (name == "raw-spin" || name == "raw-futex") return std::make_unique<ring_pair>(size, name == "raw-spin");
  if (name == "raw-mq") {
    if (!mq_fits(size, why)) return nullptr;
    try {
      return std::make_unique<mq_pair>(size);
    } catch (const std::system_error& e) {
      // The kernel's queue limits: a fact of this machine, not a failure.
      why = std::string(e.what()) + " (msgsize_max " + std::to_string(mq_limit("msgsize_max")) + " bytes)";
      return nullptr;
    }
  }
  return std::make_unique<fd_pair>(name);
}

std::unique_ptr<fanout_channel> make_raw_fanout(const std::string& name, std::size_t size, int subscribers,
                                                std::string& why) {
  if (subscribers > max_readers) {
    why = "more than " + std::to_string(max_readers) + " subscribers";
    return nullptr;
  }
  if (name == "raw-spin" || name == "raw-futex")
    return std::make_unique<ring_fanout>(size, subscribers, name == "raw-spin");
  if (name == "raw-mq") {
    if (!mq_fits(size, why)) return nullptr;
    try {
      return std::make_unique<mq_fanout>(size, subscribers);
    } catch (const std::system_error& e) {
      why = std::string(e.what()) + " (msgsize_max " + std::to_string(mq_limit("msgsize_max")) + " bytes)";
      return nullptr;
    }
  }
  return std::make_unique<fd_fanout>(name, subscribers);
}

}  // namespace ipcbus::bench
