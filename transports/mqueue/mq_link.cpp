#include "mq_link.hpp"

#include <mqueue.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "ipcbus/error.hpp"
#include "ipcbus/frame_codec.hpp"
#include "ipcbus/registry.hpp"

namespace ipcbus::transport::mqueue {

namespace asio = boost::asio;
namespace fs = std::filesystem;

namespace {
constexpr auto check_interval = std::chrono::milliseconds(200);
// Messages handled per turn of the io thread before others get theirs.
constexpr int batch = 256;
}  // namespace

mq_link_state::mq_link_state(asio::io_context& io, int data_fd, long msgsize, queue_name data, int attach_fd,
                             queue_name attach, fs::path domain_dir, link_options options, link_callbacks callbacks)
    : queue_(io, data_fd),
      timer_(io),
      attach_fd_(attach_fd),
      data_name_(std::move(data)),
      attach_name_(std::move(attach)),
      domain_dir_(std::move(domain_dir)),
      options_(std::move(options)),
      callbacks_(std::move(callbacks)),
      message_(static_cast<std::size_t>(msgsize), '\0') {}

mq_link_state::~mq_link_state() { close(); }

void mq_link_state::start() {
  // Not inline: the bus registers the link only once connect() has returned,
  // and frames delivered before that would find no link to go to.
  posted_ = true;
  asio::post(queue_.get_executor(), [self = shared_from_this()] {
    self->posted_ = false;
    self->process();
  });
  schedule_check();
}

void mq_link_state::resume() {
  if (!paused_ || closed_) return;
  paused_ = false;
  process_later();
}

void mq_link_state::close(bool detach) {
  if (closed_) return;
  closed_ = true;
  if (detach && !publisher_left_) {
    // Tell the publisher at once; otherwise it would notice only once our
    // process is gone. A full attach queue gets 20 ms to make room.
    const auto m = encode_control({control_kind::detach, data_name_.link_id, data_name_.owner_pid});
    auto send = [&] {
      int r = -1;
      do {
        r = ::mq_send(attach_fd_, m.data(), m.size(), 0);
      } while (r != 0 && errno == EINTR);
      return r == 0;
    };
    if (!send() && errno == EAGAIN) {
      pollfd p{attach_fd_, POLLOUT, 0};
      int ready = -1;
      do {
        ready = ::poll(&p, 1, 20);
      } while (ready < 0 && errno == EINTR);
      if (ready > 0) (void)send();
    }
  }
  ::mq_close(attach_fd_);
  boost::system::error_code ignored;
  queue_.close(ignored);
  timer_.cancel();
  ::mq_unlink(data_name_.text().c_str());
  std::error_code ec;
  fs::remove(marker_path(domain_dir_, data_name_), ec);
}

void mq_link_state::fail(std::error_code ec, const std::string& reason) {
  if (closed_) return;
  close();
  if (callbacks_.on_closed) callbacks_.on_closed(ec, reason);
}

bool mq_link_state::publisher_gone() const {
  struct stat st {};
  // The publisher unlinks its attach queue when it closes; a killed one cannot.
  return (::fstat(attach_fd_, &st) == 0 && st.st_nlink == 0) || process_gone(attach_name_.owner_pid);
}

void mq_link_state::schedule_check() {
  timer_.expires_after(check_interval);
  timer_.async_wait([weak = weak_from_this()](const boost::system::error_code& ec) {
    auto self = weak.lock();
    if (ec || !self || self->closed_) return;
    if (!self->publisher_left_ && self->publisher_gone()) {
      self->publisher_left_ = true;
      // Any participant that notices a dead publisher reclaims its attach queue.
      if (process_gone(self->attach_name_.owner_pid)) {
        ::mq_unlink(self->attach_name_.text().c_str());
        std::error_code rm;
        fs::remove(marker_path(self->domain_dir_, self->attach_name_), rm);
      }
      if (!self->paused_) self->process();
      return;
    }
    self->schedule_check();
  });
}

void mq_link_state::arm() {
  if (waiting_ || closed_) return;
  waiting_ = true;
  queue_.async_wait(asio::posix::descriptor_base::wait_read,
                    [self = shared_from_this()](const boost::system::error_code& ec) {
                      self->waiting_ = false;
                      if (ec || self->closed_) return;
                      self->process();
                    });
}

void mq_link_state::process() {
  try {
    process_batch();
  } catch (...) {
    // A subscriber's callback threw out of an io_context the application
    // runs (on the bus's own thread that ends the process). The message it
    // got counts as taken; the queue is read on at the io_context's next
    // turn, or the edge-triggered descriptor, never re-armed, would leave
    // the link deaf for good.
    process_later();
    throw;
  }
}

void mq_link_state::process_batch() {
  for (int i = 0; i < batch; ++i) {
    if (closed_ || paused_) return;
    const ssize_t n = ::mq_receive(queue_.native_handle(), message_.data(), message_.size(), nullptr);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) {
        fail(make_error_code(errc::peer_gone), std::string("queue: ") + std::strerror(errno));
        return;
      }
      // Empty. The descriptor is edge-triggered: wait only now that nothing is left.
      if (publisher_left_) fail(make_error_code(errc::peer_gone), "publisher closed");
      else arm();
      return;
    }
    if (!handle(message_.data(), static_cast<std::size_t>(n))) return;
  }
  // More may be waiting: let other handlers run, then carry on.
  process_later();
}

void mq_link_state::process_later() {
  if (posted_ || closed_) return;
  posted_ = true;
  asio::post(queue_.get_executor(), [self = shared_from_this()] {
    self->posted_ = false;
    self->process();
  });
}

bool mq_link_state::handle(const char* data, std::size_t size) {
  const auto h = decode_header(data, size);
  if (!h) {
    fail(make_error_code(errc::malformed_frame), "bad message header");
    return false;
  }
  const std::string_view body(data + header_size, size - header_size);
  const std::uint64_t limit = options_.max_frame + 5;  // the frame plus its length prefix
  switch (h->kind) {
    case message_kind::bye:
      publisher_left_ = true;
      fail(make_error_code(errc::peer_gone), "publisher closed");
      return false;
    case message_kind::whole:
      if (assembling_ || h->index != 0 || h->total != body.size()) break;
      return deliver(body);
    case message_kind::first:
      if (assembling_ || h->index != 0 || h->total <= body.size()) break;
      if (h->total > limit) {
        fail(make_error_code(errc::message_too_large), "frame of " + std::to_string(h->total) +
                                                           " bytes exceeds the limit of " + std::to_string(limit));
        return false;
      }
      assembly_.resize(h->total);  // bounded by max_frame, checked just above
      std::memcpy(assembly_.data(), body.data(), body.size());
      assembled_ = body.size();
      next_index_ = 1;
      assembling_ = true;
      return true;
    case message_kind::middle:
    case message_kind::last: {
      const bool last = h->kind == message_kind::last;
      if (!assembling_ || h->index != next_index_ || h->total != assembly_.size() ||
          assembled_ + body.size() > assembly_.size() || (last != (assembled_ + body.size() == assembly_.size())))
        break;
      std::memcpy(assembly_.data() + assembled_, body.data(), body.size());
      assembled_ += body.size();
      ++next_index_;
      if (!last) return true;
      assembling_ = false;
      const bool ok = deliver(assembly_);
      if (assembly_.capacity() > (1u << 20)) std::string().swap(assembly_);  // a large frame's buffer does not stay
      return ok;
    }
  }
  fail(make_error_code(errc::malformed_frame), "fragment out of order");
  return false;
}

bool mq_link_state::deliver(std::string_view encoded) {
  std::uint32_t length = 0;
  std::size_t prefix = 0;
  const auto st = read_length_prefix(encoded, length, prefix);
  if (st != prefix_status::complete) {
    fail(make_error_code(errc::malformed_frame), "bad length prefix");
    return false;
  }
  if (length > options_.max_frame) {
    fail(make_error_code(errc::message_too_large),
         "frame of " + std::to_string(length) + " bytes exceeds the limit of " + std::to_string(options_.max_frame));
    return false;
  }
  if (prefix + length != encoded.size()) {
    fail(make_error_code(errc::malformed_frame), "length prefix does not match the message");
    return false;
  }
  frame_view frame;
  if (auto ec = decode_frame(encoded.substr(prefix), frame)) {
    fail(ec, "undecodable frame");
    return false;
  }
  if (callbacks_.on_frame) callbacks_.on_frame(frame);
  return !closed_;
}

}  // namespace ipcbus::transport::mqueue
