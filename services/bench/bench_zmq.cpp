#include "bench_zmq.hpp"

#ifdef IPCBUS_HAVE_ZMQ

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#include <system_error>

namespace ipcbus::bench {
namespace {

[[noreturn]] void throw_zmq(const std::string& what) {
  throw std::system_error(zmq_errno(), std::generic_category(), what + ": " + zmq_strerror(zmq_errno()));
}

// A context with one socket; the socket closes (lingering up to 10 s so queued
// messages still leave) before the context terminates.
class zmq_socket {
 public:
  explicit zmq_socket(int type) : ctx_(zmq_ctx_new()) {
    if (!ctx_) throw_zmq("zmq_ctx_new");
    sock_ = ::zmq_socket(ctx_, type);
    if (!sock_) throw_zmq("zmq_socket");
    const int linger = 10000, no_limit = 0;
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

// A loopback port that was free a moment ago (the run is over in seconds).
int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd >= 0) ::close(fd);
    throw std::system_error(errno, std::generic_category(), "choosing a loopback port");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::string endpoint(const std::string& name, const std::filesystem::path& dir, const char* file) {
  if (name == "zmq-tcp") return "tcp://127.0.0.1:" + std::to_string(free_loopback_port());
  return "ipc://" + (dir / file).string();
}

class zmq_pair : public pair_channel {
 public:
  explicit zmq_pair(std::string ep) : ep_(std::move(ep)) {}
  channel_ends open(int side) override {
    auto s = std::make_shared<zmq_socket>(ZMQ_PAIR);
    side == 0 ? s->connect(ep_) : s->bind(ep_);
    return {std::make_unique<zmq_sender>(s), std::make_unique<zmq_receiver>(s)};
  }

 private:
  std::string ep_;
};

class zmq_fanout : public fanout_channel {
 public:
  zmq_fanout(std::string ep, int subscribers) : ep_(std::move(ep)), subscribers_(subscribers) {}
  std::unique_ptr<channel_sender> open_publisher() override {
    auto s = std::make_shared<zmq_socket>(ZMQ_XPUB);
    const int verbose = 1, timeout_ms = 15000;
    zmq_setsockopt(s->get(), ZMQ_XPUB_VERBOSE, &verbose, sizeof verbose);
    zmq_setsockopt(s->get(), ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    s->bind(ep_);
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
    s->connect(ep_);
    if (zmq_setsockopt(s->get(), ZMQ_SUBSCRIBE, "", 0) != 0) throw_zmq("ZMQ_SUBSCRIBE");
    return std::make_unique<zmq_receiver>(s);
  }

 private:
  std::string ep_;
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
  return std::make_unique<zmq_pair>(endpoint(name, dir, "zmq-pair"));
}

std::unique_ptr<fanout_channel> make_zmq_fanout(const std::string& name, const std::filesystem::path& dir,
                                                int subscribers) {
  return std::make_unique<zmq_fanout>(endpoint(name, dir, "zmq-pub"), subscribers);
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
