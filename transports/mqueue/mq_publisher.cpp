#include "mq_publisher.hpp"

#include <fcntl.h>
#include <mqueue.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

#include "ipcbus/access.hpp"
#include "ipcbus/error.hpp"
#include "ipcbus/log.hpp"
#include "ipcbus/registry.hpp"

namespace ipcbus::transport::mqueue {

namespace asio = boost::asio;
namespace fs = std::filesystem;

namespace {

constexpr auto liveness_interval = std::chrono::milliseconds(200);
// Bounds on what a subscriber's queue may claim: below, no room for a frame
// header; above, the kernel's own hard limit (HARD_MSGSIZEMAX).
constexpr long min_msgsize = 64;
constexpr long max_msgsize = 16 << 20;

class mq_sink final : public stream::frame_sink {
 public:
  mq_sink(queue_name name, fs::path domain_dir, long msgsize)
      : name_(std::move(name)), domain_dir_(std::move(domain_dir)), scratch_(static_cast<std::size_t>(msgsize), '\0') {}

  stream::write_status write(int fd, std::string_view bytes, std::size_t& offset) override {
    const std::size_t chunk = scratch_.size() - header_size;
    const bool whole = bytes.size() <= chunk;
    while (offset < bytes.size()) {
      const std::size_t n = std::min(chunk, bytes.size() - offset);
      message_header h;
      h.total = bytes.size();
      h.index = static_cast<std::uint32_t>(offset / chunk);
      h.kind = whole ? message_kind::whole
               : offset == 0 ? message_kind::first
               : offset + n == bytes.size() ? message_kind::last
                                            : message_kind::middle;
      encode_header(scratch_.data(), h);
      std::memcpy(scratch_.data() + header_size, bytes.data() + offset, n);
      if (const auto st = send_message(fd, header_size + n); st != stream::write_status::ok) return st;
      offset += n;
    }
    return stream::write_status::ok;
  }

  stream::close_watch watch() const override { return stream::close_watch::none; }
  bool alive() override { return !process_gone(name_.owner_pid); }
  std::uint64_t key() const override { return name_.link_id; }

  // A subscriber that left cleanly removed its queue itself; one that died
  // cannot, and we are the first to notice.
  void on_removed() override {
    if (!process_gone(name_.owner_pid)) return;
    ::mq_unlink(name_.text().c_str());
    std::error_code ec;
    fs::remove(marker_path(domain_dir_, name_), ec);
  }

  void farewell(int fd) override {
    message_header h;
    h.kind = message_kind::bye;
    encode_header(scratch_.data(), h);
    (void)send_message(fd, header_size);  // a full queue goes without: the subscriber sees the queue's nlink drop
  }

 private:
  stream::write_status send_message(int fd, std::size_t size) {
    for (;;) {
      if (::mq_send(fd, scratch_.data(), size, 0) == 0) return stream::write_status::ok;
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return stream::write_status::would_block;
      return stream::write_status::gone;  // EBADF, EMSGSIZE (a queue that changed under us)
    }
  }

  queue_name name_;
  fs::path domain_dir_;
  std::string scratch_;  // one message: header + chunk
};

void log_once(std::atomic<bool>& flag, log_level level, const std::string& message) {
  if (!flag.exchange(true)) log_line(level, message);
}

std::atomic<bool> depth_warned{false};

}  // namespace

// Reads attach and detach messages from the publisher's attach queue and keeps
// the subscribers' liveness checked. Everything on the io thread.
class attach_listener : public std::enable_shared_from_this<attach_listener> {
 public:
  attach_listener(asio::io_context& io, std::shared_ptr<stream::frame_publisher> publisher, queue_name self, int fd)
      : publisher_(std::move(publisher)), self_(std::move(self)), queue_(io, fd), timer_(io) {}

  void start() {
    drain();
    schedule();
  }

  void close() {
    boost::system::error_code ignored;
    queue_.close(ignored);
    timer_.cancel();
  }

 private:
  void arm() {
    queue_.async_wait(asio::posix::descriptor_base::wait_read,
                      [self = shared_from_this()](const boost::system::error_code& ec) {
                        if (!ec) self->drain();
                      });
  }

  // Takes every message the queue holds, then waits: the descriptor is
  // edge-triggered, so nothing may be left behind when waiting.
  void drain() {
    char buf[control_size * 2];
    for (;;) {
      const ssize_t n = ::mq_receive(queue_.native_handle(), buf, sizeof buf, nullptr);
      if (n < 0) {
        if (errno == EINTR) continue;
        break;  // EAGAIN: empty
      }
      const auto m = decode_control(buf, static_cast<std::size_t>(n));
      if (!m) {
        log_line(log_level::warn, "topic '" + publisher_->options().topic + "': garbage in attach queue " +
                                      self_.text() + "; discarded");
        publisher_->count_refused();
        continue;
      }
      if (m->kind == control_kind::detach) publisher_->remove_subscriber(m->link_id);
      else adopt(*m);
    }
    arm();
  }

  void adopt(const control_message& m) {
    const auto& o = publisher_->options();
    queue_name q = self_;
    q.link_id = m.link_id;
    q.owner_pid = m.pid;
    const std::string name = q.text();
    const mqd_t fd = ::mq_open(name.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      log_line(log_level::debug, "topic '" + o.topic + "': cannot open subscriber queue " + name + ": " +
                                     std::strerror(errno));
      return;
    }
    std::string why;
    struct stat st {};
    mq_attr attr{};
    if (::fstat(fd, &st) != 0 || ::mq_getattr(fd, &attr) != 0) {
      why = std::strerror(errno);
    } else if (!owner_allowed(st, o.security)) {
      why = "owned by uid " + std::to_string(st.st_uid);
    } else if (attr.mq_msgsize < min_msgsize || attr.mq_msgsize > max_msgsize || attr.mq_maxmsg < 1) {
      why = "unusable message size " + std::to_string(attr.mq_msgsize);
    }
    if (!why.empty()) {
      log_line(log_level::warn, "topic '" + o.topic + "': refused subscriber queue " + name + " (" + why + ")");
      publisher_->count_refused();
      ::mq_close(fd);
      return;
    }
    publisher_->add_subscriber(std::make_unique<mq_sink>(q, o.domain_dir, attr.mq_msgsize), fd);
  }

  void schedule() {
    timer_.expires_after(liveness_interval);
    timer_.async_wait([weak = weak_from_this()](const boost::system::error_code& ec) {
      auto self = weak.lock();
      if (ec || !self) return;
      self->publisher_->check_liveness();
      self->schedule();
    });
  }

  std::shared_ptr<stream::frame_publisher> publisher_;
  queue_name self_;
  asio::posix::stream_descriptor queue_;
  asio::steady_timer timer_;
};

mq_endpoint::mq_endpoint(asio::io_context& io, const endpoint_options& options, const mq_limits& limits)
    : io_(io), limits_(limits), state_(std::make_shared<stream::frame_publisher>(io, options)) {}

mq_endpoint::~mq_endpoint() { close(); }

std::error_code mq_endpoint::open() {
  const auto& o = state_->options();
  // Nothing is lost either way; a depth somebody chose deserves a warning,
  // the default one (above the kernel's default msg_max) only a note.
  if (o.settings.depth > limits_.msg_max)
    log_once(depth_warned, o.settings.depth == topic_settings{}.depth ? log_level::info : log_level::warn,
             "mq: depth " + std::to_string(o.settings.depth) + " (topic '" + o.topic +
                 "') exceeds /proc/sys/fs/mqueue/msg_max = " + std::to_string(limits_.msg_max) +
                 ": each queue holds " + std::to_string(limits_.msg_max) +
                 " messages, the rest wait in the publisher's queue");
  attach_queue_.hash = queue_prefix(o.domain_dir).substr(7, 16);
  attach_queue_.publisher_id = o.publisher_id;
  attach_queue_.owner_pid = static_cast<std::uint32_t>(::getpid());
  const std::string name = attach_queue_.text();
  // The marker before the queue: a queue without one is never left behind.
  std::error_code ec;
  ensure_marker_dir(o.domain_dir, o.security);
  const fs::path marker = marker_path(o.domain_dir, attach_queue_);
  const int mfd = ::open(marker.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  if (mfd < 0) return {errno, std::system_category()};
  ::close(mfd);
  mq_attr attr{};
  attr.mq_maxmsg = std::min<long>(limits_.msg_max, 16);
  attr.mq_msgsize = control_size;
  mqd_t fd = ::mq_open(name.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_NONBLOCK | O_CLOEXEC, 0600, &attr);
  if (fd < 0 && errno == EMFILE) {  // RLIMIT_MSGQUEUE nearly used up: a smaller attach queue still works
    attr.mq_maxmsg = 1;
    fd = ::mq_open(name.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_NONBLOCK | O_CLOEXEC, 0600, &attr);
  }
  if (fd < 0 || share_object(fd, o.security)) {
    const std::error_code err{errno, std::system_category()};
    if (fd >= 0) {
      ::mq_close(fd);
      ::mq_unlink(name.c_str());
    }
    fs::remove(marker, ec);
    return err;
  }
  uri_ = make_uri(o.domain_dir, attach_queue_);
  listener_ = std::make_shared<attach_listener>(io_, state_, attach_queue_, fd);
  asio::post(io_, [l = listener_] { l->start(); });
  return {};
}

std::error_code mq_endpoint::send(const frame_ptr& frame) {
  const auto& s = state_->options().settings;
  if (!s.mq_fragment && frame->bytes.size() + header_size > static_cast<std::size_t>(limits_.msgsize_max))
    return make_error_code(errc::message_too_large);
  return state_->send(frame);
}

// Subscribers learn of it from the bye message, or, when their queue was too
// full for it, from the attach queue's link count dropping to 0 (unlinked).
void mq_endpoint::close() {
  if (closed_) return;
  closed_ = true;
  state_->close_all();
  if (!listener_) return;
  ::mq_unlink(attach_queue_.text().c_str());
  std::error_code ec;
  fs::remove(marker_path(state_->options().domain_dir, attach_queue_), ec);
  asio::post(io_, [l = listener_] { l->close(); });
}

}  // namespace ipcbus::transport::mqueue
