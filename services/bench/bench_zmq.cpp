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

// A context of its own.
class zmq_context {
 public:
  zmq_context() : ctx_(zmq_ctx_new()) {
    if (!ctx_) throw_zmq("zmq_ctx_new");
  }
  ~zmq_context() { zmq_ctx_term(ctx_); }
  zmq_context(const zmq_context&) = delete;
  zmq_context& operator=(const zmq_context&) = delete;
  void* get() const { return ctx_; }

 private:
  void* ctx_;
};

// A socket, with a context of its own unless it is given one (which must then
// outlive it); the socket closes before its own context terminates. Senders
// linger (up to 10 s) so that their last message still leaves: a pong closes
// right after its last reply. A SUB or XSUB does not: it would hold its
// queued re-subscription to a publisher that is gone for the whole linger.
class zmq_socket {
 public:
  explicit zmq_socket(int type, void* shared_context = nullptr)
      : ctx_(shared_context ? nullptr : zmq_ctx_new()) {
    if (!shared_context && !ctx_) throw_zmq("zmq_ctx_new");
    sock_ = ::zmq_socket(shared_context ? shared_context : ctx_, type);
    if (!sock_) throw_zmq("zmq_socket");
    const int linger = type == ZMQ_SUB || type == ZMQ_XSUB ? 0 : 10000, no_limit = 0;
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

// Closing waits until everything queued has left, however long: with the
// high-water marks off, a hop's backlog can outlast any fixed linger, and the
// end marker is the last thing in it. The bench's deadline (it kills the
// round's children) bounds the wait instead.
void keep_until_sent(zmq_socket& s) {
  const int forever = -1;
  zmq_setsockopt(s.get(), ZMQ_LINGER, &forever, sizeof forever);
}

// An XPUB that returns once it has seen `subscribers` subscriptions: then
// every subscriber listens, and nothing sent is lost for want of one.
std::unique_ptr<channel_sender> open_xpub(rendezvous& where, int subscribers, bool linger_until_sent = false) {
  auto s = std::make_shared<zmq_socket>(ZMQ_XPUB);
  if (linger_until_sent) keep_until_sent(*s);
  const int verbose = 1, timeout_ms = 15000;
  zmq_setsockopt(s->get(), ZMQ_XPUB_VERBOSE, &verbose, sizeof verbose);
  zmq_setsockopt(s->get(), ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
  where.bind(*s);
  for (int seen = 0; seen < subscribers;) {
    char msg[256];
    const int n = zmq_recv(s->get(), msg, sizeof msg, 0);
    if (n < 0 && zmq_errno() == EINTR) continue;
    if (n < 0) throw_zmq("waiting for subscriptions");
    if (n >= 1 && msg[0] == 1) ++seen;
  }
  return std::make_unique<zmq_sender>(s);
}

std::unique_ptr<channel_receiver> open_sub(rendezvous& where) {
  auto s = std::make_shared<zmq_socket>(ZMQ_SUB);
  where.connect(*s);
  if (zmq_setsockopt(s->get(), ZMQ_SUBSCRIBE, "", 0) != 0) throw_zmq("ZMQ_SUBSCRIBE");
  return std::make_unique<zmq_receiver>(s);
}

class zmq_fanout : public fanout_channel {
 public:
  zmq_fanout(const std::string& name, const std::filesystem::path& dir, int subscribers)
      : where_(name, dir, "zmq-pub"), subscribers_(subscribers) {}
  std::unique_ptr<channel_sender> open_publisher() override { return open_xpub(where_, subscribers_); }
  std::unique_ptr<channel_receiver> open_subscriber(int) override { return open_sub(where_); }

 private:
  rendezvous where_;
  int subscribers_;
};

// Moves what `from` holds, at most a burst of messages (zmq_proxy's way), to
// `to`, every part of each. True once a message whose first byte is 'E' (the
// end marker) went through; `count` (if given) counts the messages.
bool forward(zmq_socket& from, zmq_socket& to, std::uint64_t* count) {
  constexpr int burst = 1000;
  zmq_msg_t msg;
  zmq_msg_init(&msg);
  bool ended = false;
  for (int i = 0; i < burst && !ended;) {
    if (zmq_msg_recv(&msg, from.get(), ZMQ_DONTWAIT) < 0) {
      if (zmq_errno() == EINTR) continue;
      if (zmq_errno() == EAGAIN) break;
      zmq_msg_close(&msg);
      throw_zmq("zmq_msg_recv");
    }
    const bool more = zmq_msg_more(&msg) != 0;
    if (!more) {
      ++i;
      if (count) ++*count;
      ended = zmq_msg_size(&msg) > 0 && static_cast<const char*>(zmq_msg_data(&msg))[0] == 'E';
    }
    while (zmq_msg_send(&msg, to.get(), more ? ZMQ_SNDMORE : 0) < 0) {
      if (zmq_errno() == EINTR) continue;
      zmq_msg_close(&msg);
      throw_zmq("zmq_msg_send");
    }
  }
  zmq_msg_close(&msg);
  return ended;
}

class zmq_relay : public zmq_relay_chain {
 public:
  explicit zmq_relay(const std::filesystem::path& dir)
      : in_("zmq-ipc", dir, "zmq-relay-in"), across_("zmq-tcp", dir, ""), out_("zmq-ipc", dir, "zmq-relay-out") {}
  std::unique_ptr<channel_sender> open_publisher() override { return open_xpub(in_, 1, true); }
  std::unique_ptr<channel_receiver> open_subscriber(int) override { return open_sub(out_); }

  child_report run_forwarder(int index) override {
    child_report r;
    const zmq_context ctx;  // one I/O thread for both sockets, as zmq_proxy's caller would have
    {
      zmq_socket from(ZMQ_XSUB, ctx.get()), to(ZMQ_XPUB, ctx.get());
      keep_until_sent(to);
      // Bind first, then connect: each forwarder's downstream end exists
      // before it waits for its upstream one.
      (index == 0 ? across_ : out_).bind(to);
      (index == 0 ? in_ : across_).connect(from);
      zmq_pollitem_t items[] = {{from.get(), 0, ZMQ_POLLIN, 0}, {to.get(), 0, ZMQ_POLLIN, 0}};
      const auto cpu0 = cpu_time_ns();
      for (bool ended = false; !ended;) {
        if (zmq_poll(items, 2, -1) < 0) {
          if (zmq_errno() == EINTR) continue;
          throw_zmq("zmq_poll");
        }
        if (items[1].revents & ZMQ_POLLIN) forward(to, from, nullptr);  // subscriptions, upstream
        if (items[0].revents & ZMQ_POLLIN) ended = forward(from, to, &r.messages);
      }
      r.cpu_ns = cpu_time_ns() - cpu0;
    }
    r.hwm_kib = peak_rss_kib();
    return r;
  }

 private:
  rendezvous in_, across_, out_;
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

std::unique_ptr<zmq_relay_chain> make_zmq_relay_chain(const std::filesystem::path& dir) {
  return std::make_unique<zmq_relay>(dir);
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
std::unique_ptr<zmq_relay_chain> make_zmq_relay_chain(const std::filesystem::path&) { return nullptr; }

}  // namespace ipcbus::bench

#endif
