#include "bench_zmq.hpp"

#ifdef IPCBUS_HAVE_ZMQ

#include <zmq.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <new>
#include <system_error>
#include <thread>

namespace ipcbus::bench {
namespace {

[[noreturn]] void throw_zmq(const std::string& what) {
  throw std::system_error(zmq_errno(), std::generic_category(), what + ": " + zmq_strerror(zmq_errno()));
}

// A context with one socket; the socket closes before the context terminates.
// Senders linger (up to 10 s) so that their last message still leaves: a pong
// closes right after its last reply. A SUB does not: it would hold its queued
// re-subscription to a publisher that is gone for the whole linger.
class zmq_socket {
 public:
  explicit zmq_socket(int type) : ctx_(zmq_ctx_new()) {
    if (!ctx_) throw_zmq("zmq_ctx_new");
    sock_ = ::zmq_socket(ctx_, type);
    if (!sock_) throw_zmq("zmq_socket");
    const int linger = type == ZMQ_SUB ? 0 : 10000, no_limit = 0;
    zmq_setsockopt(sock_, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock_, ZMQ_SNDHWM, &no_limit, sizeof no_limit);
    zmq_setsockopt(sock_, ZMQ_RCVHWM, &no_limit, sizeof no_limit);
  }
  ~zmq_socket() {
    if (sock_) zmq_close(sock_);
    if (ctx_) zmq_ctx_term(ctx_);
  }
  zmq_socket(const zmq_socket&) = delete;
  zmq_socket& operator=(const zmq_socket&) = delete;

  void* get() const { return sock_; }
  void bind(const std::string& ep) {
    if (zmq_bind(sock_, ep.c_str()) != 0) throw_zmq("zmq_bind " + ep);
  }
  void connect(const std::string& ep) {
    if (zmq_connect(sock_, ep.c_str()) != 0) throw_zmq("zmq_connect " + ep);
  }
  void send(const char* data, std::size_t n) {
    while (zmq_send(sock_, data, n, 0) < 0)
      if (zmq_errno() != EINTR) throw_zmq("zmq_send");
  }
  void receive(char* data, std::size_t n) {
    while (zmq_recv(sock_, data, n, 0) < 0)
      if (zmq_errno() != EINTR) throw_zmq("zmq_recv");
  }

 private:
  void* ctx_ = nullptr;
  void* sock_ = nullptr;
};

class zmq_sender : public channel_sender {
 public:
  explicit zmq_sender(std::shared_ptr<zmq_socket> s) : s_(std::move(s)) {}
  void send(const char* data, std::size_t n) override { s_->send(data, n); }

 private:
  std::shared_ptr<zmq_socket> s_;
};

class zmq_receiver : public channel_receiver {
 public:
  explicit zmq_receiver(std::shared_ptr<zmq_socket> s) : s_(std::move(s)) {}
  void receive(char* data, std::size_t n) override { s_->receive(data, n); }

 private:
  std::shared_ptr<zmq_socket> s_;
};

// Where the binding side is listening, published to the connecting side through
// shared memory: the binder takes any free port (tcp://127.0.0.1:*) and the
// connector dials only once the port exists. Dialing a loopback port before
// anyone listens can connect a socket to itself (TCP simultaneous open on a
// port the kernel also hands out as an ephemeral one), which hangs ZeroMQ.
struct endpoint_slot {
  std::atomic<int> ready{0};
  char endpoint[1000] = {};
};

class rendezvous {
 public:
  rendezvous(const std::string& name, const std::filesystem::path& dir, const char* file)
      : request_(name == "zmq-tcp" ? "tcp://127.0.0.1:*" : "ipc://" + (dir / file).string()),
        block_(sizeof(endpoint_slot)),
        slot_(new (block_.data()) endpoint_slot) {}

  void bind(zmq_socket& s) {
    s.bind(request_);
    std::size_t n = sizeof slot_->endpoint - 1;
    if (zmq_getsockopt(s.get(), ZMQ_LAST_ENDPOINT, slot_->endpoint, &n) != 0) throw_zmq("ZMQ_LAST_ENDPOINT");
    slot_->ready.store(1, std::memory_order_release);
  }

  void connect(zmq_socket& s) {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (!slot_->ready.load(std::memory_order_acquire)) {
      if (std::chrono::steady_clock::now() > give_up)
        throw std::system_error(std::make_error_code(std::errc::timed_out), "the ZeroMQ peer never bound");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    s.connect(slot_->endpoint);
  }

 private:
  std::string request_;
  shared_block block_;
  endpoint_slot* slot_;
};

class zmq_pair : public pair_channel {
 public:
  zmq_pair(const std::string& name, const std::filesystem::path& dir) : where_(name, dir, "zmq-pair") {}
  channel_ends open(int side) override {
    auto s = std::make_shared<zmq_socket>(ZMQ_PAIR);
    side == 0 ? where_.connect(*s) : where_.bind(*s);
    return {std::make_unique<zmq_sender>(s), std::make_unique<zmq_receiver>(s)};
  }

 private:
  rendezvous where_;
};

class zmq_fanout : public fanout_channel {
 public:
  zmq_fanout(const std::string& name, const std::filesystem::path& dir, int subscribers)
      : where_(name, dir, "zmq-pub"), subscribers_(subscribers) {}
  std::unique_ptr<channel_sender> open_publisher() override {
    auto s = std::make_shared<zmq_socket>(ZMQ_XPUB);
    const int verbose = 1, timeout_ms = 15000;
    zmq_setsockopt(s->get(), ZMQ_XPUB_VERBOSE, &verbose, sizeof verbose);
    zmq_setsockopt(s->get(), ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    where_.bind(*s);
    // One subscription message per subscriber: then every one of them listens.
    for (int seen = 0; seen < subscribers_;) {
      char msg[256];
      const int n = zmq_recv(s->get(), msg, sizeof msg, 0);
      if (n < 0 && zmq_errno() == EINTR) continue;
      if (n < 0) throw_zmq("waiting for subscriptions");
      if (n >= 1 && msg[0] == 1) ++seen;
    }
    return std::make_unique<zmq_sender>(s);
  }
  std::unique_ptr<channel_receiver> open_subscriber(int) override {
    auto s = std::make_shared<zmq_socket>(ZMQ_SUB);
    where_.connect(*s);
    if (zmq_setsockopt(s->get(), ZMQ_SUBSCRIBE, "", 0) != 0) throw_zmq("ZMQ_SUBSCRIBE");
    return std::make_unique<zmq_receiver>(s);
  }

 private:
  rendezvous where_;
  int subscribers_;
};

}  // namespace

bool zmq_built() { return true; }

std::string zmq_version() {
  int major = 0, minor = 0, patch = 0;
  ::zmq_version(&major, &minor, &patch);
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

std::unique_ptr<pair_channel> make_zmq_pair(const std::string& name, const std::filesystem::path& dir) {
  return std::make_unique<zmq_pair>(name, dir);
}

std::unique_ptr<fanout_channel> make_zmq_fanout(const std::string& name, const std::filesystem::path& dir,
                                                int subscribers) {
  return std::make_unique<zmq_fanout>(name, dir, subscribers);
}

}  // namespace ipcbus::bench

#else  // no libzmq in this build

namespace ipcbus::bench {

bool zmq_built() { return false; }
std::string zmq_version() { return "not built (libzmq3-dev was not found by pkg-config)"; }
std::unique_ptr<pair_channel> make_zmq_pair(const std::string&, const std::filesystem::path&) { return nullptr; }
std::unique_ptr<fanout_channel> make_zmq_fanout(const std::string&, const std::filesystem::path&, int) {
  return nullptr;
}

}  // namespace ipcbus::bench

#endif
