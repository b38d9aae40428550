#include "stream_link.hpp"

#include <cstring>

#include "ipcbus/error.hpp"
#include "ipcbus/frame_codec.hpp"

namespace ipcbus::transport::stream {

namespace {
// Bytes read at a time (more only while a larger frame is assembled). Every
// frame read is delivered before the next read, and only a read frees room in
// the kernel for a reliable publisher waiting on this subscriber: a read of
// small frames must not hold more callbacks than a publish_timeout allows.
// Publishers coalesce small frames, which packs several thousand into a
// socket's buffer (one frame per send used to fill it with about 300);
// 16 KiB is some 200 small frames, still few system calls per frame.
constexpr std::size_t initial_buffer = 16 * 1024;
}

void stream_link_state::resume() {
  if (!paused_ || closed_) return;
  paused_ = false;
  deliver_and_go_on();  // read_more() does nothing while a read is outstanding
}

void stream_link_state::close() {
  if (closed_) return;
  closed_ = true;
  boost::system::error_code ignored;
  descriptor_.close(ignored);
}

void stream_link_state::peer_closed() {
  if (closed_ || draining_) return;
  draining_ = true;
  if (reading_) {
    // The outstanding read has consumed nothing yet; its handler drains instead.
    boost::system::error_code ignored;
    descriptor_.cancel(ignored);
    return;
  }
  if (!paused_) drain();
}

void stream_link_state::fail(std::error_code ec, const std::string& reason) {
  if (closed_) return;
  close();
  if (callbacks_.on_closed) callbacks_.on_closed(ec, reason);
}

bool stream_link_state::deliver_buffered() {
  while (!paused_ && !closed_) {
    const std::string_view avail(buffer_.data() + begin_, end_ - begin_);
    std::uint32_t length = 0;
    std::size_t prefix = 0;
    const auto st = read_length_prefix(avail, length, prefix);
    if (st == prefix_status::malformed) {
      fail(make_error_code(errc::malformed_frame), "bad length prefix");
      return false;
    }
    if (st == prefix_status::complete && length > options_.max_frame) {
      fail(make_error_code(errc::message_too_large),
           "frame of " + std::to_string(length) + " bytes exceeds the limit of " +
               std::to_string(options_.max_frame));
      return false;
    }
    if (st == prefix_status::need_more || avail.size() < prefix + length) {
      // Make room for the whole frame (bounded by max_frame, checked above).
      const std::size_t need = st == prefix_status::complete ? prefix + length : 5;
      if (begin_ > 0 && (begin_ + need > buffer_.size() || begin_ > buffer_.size() / 2)) {
        std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
        end_ -= begin_;
        begin_ = 0;
      }
      if (need > buffer_.size()) buffer_.resize(need);
      return true;
    }
    frame_view frame;
    if (auto ec = decode_frame(avail.substr(prefix, length), frame)) {
      fail(ec, "undecodable frame");
      return false;
    }
    begin_ += prefix + length;
    if (callbacks_.on_frame) callbacks_.on_frame(frame);
  }
  if (begin_ == end_) begin_ = end_ = 0;
  return !closed_;
}

void stream_link_state::prepare_space() {
  if (buffer_.size() < initial_buffer) buffer_.resize(initial_buffer);
  if (end_ == buffer_.size()) {  // only when a frame is being assembled at the end
    std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
}

void stream_link_state::drain() {
  boost::system::error_code ec;
  descriptor_.non_blocking(true, ec);
  while (!closed_ && !paused_) {
    prepare_space();
    const std::size_t n = descriptor_.read_some(boost::asio::buffer(buffer_.data() + end_, buffer_.size() - end_), ec);
    if (ec) {
      // Nothing left (would_block), or the end: a partial last frame is not delivered.
      fail(make_error_code(errc::peer_gone), "publisher closed");
      return;
    }
    end_ += n;
    try {
      if (!deliver_buffered()) return;
    } catch (...) {
      go_on_later();
      throw;
    }
  }
}

void stream_link_state::read_more() {
  if (closed_ || paused_ || reading_ || draining_) return;
  prepare_space();
  reading_ = true;
  descriptor_.async_read_some(
      boost::asio::buffer(buffer_.data() + end_, buffer_.size() - end_),
      [self = shared_from_this()](const boost::system::error_code& ec, std::size_t n) {
        self->reading_ = false;
        if (self->closed_) return;
        if (ec == boost::asio::error::operation_aborted && self->draining_) {
          if (!self->paused_) self->drain();
          return;
        }
        if (ec) {
          self->fail(make_error_code(errc::peer_gone),
                     ec == boost::asio::error::eof ? "publisher closed" : ec.message());
          return;
        }
        self->end_ += n;
        self->deliver_and_go_on();
      });
}

// After a callback threw: the frame it got counts as taken (begin_ is past
// it); what is buffered after it, and reading (or draining) on, at the next turn.
void stream_link_state::go_on_later() {
  boost::asio::post(descriptor_.get_executor(), [self = shared_from_this()] {
    if (!self->closed_) self->deliver_and_go_on();
  });
}

void stream_link_state::deliver_and_go_on() {
  try {
    if (!deliver_buffered()) return;
  } catch (...) {
    go_on_later();
    throw;
  }
  if (draining_) {
    if (!paused_) drain();
  } else {
    read_more();
  }
}

}  // namespace ipcbus::transport::stream
