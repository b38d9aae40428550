// The subscriber side of a byte-stream transport (unix, tcp, pipe): reads
// length-delimited frames from one publisher's descriptor and hands them,
// decoded in place, to the bus.
//
// The length prefix is checked against the limit before any buffer grows, so a
// hostile or broken peer costs at most max_frame bytes and then loses its link.
//
// Sockets report the publisher's departure as EOF. A FIFO the subscriber holds
// open for reading and writing never does: its transport calls peer_closed()
// instead, and the link delivers what the FIFO still holds before it reports
// peer_gone.
//
// Thread-safety: everything runs on the io thread.
#pragma once

#include <memory>
#include <string>

#include <boost/asio.hpp>

#include "ipcbus/transport.hpp"

namespace ipcbus::transport::stream {

class stream_link_state : public std::enable_shared_from_this<stream_link_state> {
 public:
  // Takes ownership of `descriptor` (a connected socket or a FIFO read end).
  stream_link_state(boost::asio::posix::stream_descriptor descriptor, link_options options,
                    link_callbacks callbacks)
      : descriptor_(std::move(descriptor)), options_(std::move(options)), callbacks_(std::move(callbacks)) {}

  void start() { read_more(); }
  void pause() { paused_ = true; }
  void resume();
  void close();
  // No more bytes will come: deliver what is readable now, then report peer_gone.
  void peer_closed();
  bool closed() const { return closed_; }

 private:
  void read_more();
  // Makes room at the end of the buffer for the next read.
  void prepare_space();
  // Reads without waiting until nothing is left, delivering as it goes; then fails with peer_gone.
  void drain();
  // Delivers every complete frame in the buffer; false once the link is closed.
  bool deliver_buffered();
  // deliver_buffered, then reads on (or drains on). A callback that throws
  // out of the io_context the application runs leaves with the exception;
  // the rest is delivered and reading goes on at the io_context's next turn.
  void deliver_and_go_on();
  void go_on_later();
  void fail(std::error_code ec, const std::string& reason);

  boost::asio::posix::stream_descriptor descriptor_;
  link_options options_;
  link_callbacks callbacks_;
  std::string buffer_;
  std::size_t begin_ = 0;   // first unconsumed byte
  std::size_t end_ = 0;     // one past the last byte read
  bool reading_ = false;
  bool paused_ = false;
  bool closed_ = false;
  bool draining_ = false;   // peer_closed() was called
};

class stream_link final : public subscriber_link {
 public:
  explicit stream_link(std::shared_ptr<stream_link_state> s) : state_(std::move(s)) {}
  ~stream_link() override { state_->close(); }
  void pause() override { state_->pause(); }
  void resume() override { state_->resume(); }
  void close() override { state_->close(); }

 private:
  std::shared_ptr<stream_link_state> state_;
};

}  // namespace ipcbus::transport::stream
