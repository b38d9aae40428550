// The subscriber side of a stream transport: reads length-delimited frames from
// one publisher's socket and hands them, decoded in place, to the bus.
//
// The length prefix is checked against the limit before any buffer grows, so a
// hostile or broken peer costs at most max_frame bytes and then loses its link.
//
// Thread-safety: everything runs on the io thread.
#pragma once

#include <memory>
#include <string>

#include <boost/asio.hpp>

#include "ipcbus/transport.hpp"

namespace ipcbus::transport::socket {

class stream_link_state : public std::enable_shared_from_this<stream_link_state> {
 public:
  stream_link_state(boost::asio::generic::stream_protocol::socket socket, link_options options,
                    link_callbacks callbacks)
      : socket_(std::move(socket)), options_(std::move(options)), callbacks_(std::move(callbacks)) {}

  void start() { read_more(); }
  void pause() { paused_ = true; }
  void resume();
  void close();

 private:
  void read_more();
  // Delivers every complete frame in the buffer; false once the link is closed.
  bool deliver_buffered();
  void fail(std::error_code ec, const std::string& reason);

  boost::asio::generic::stream_protocol::socket socket_;
  link_options options_;
  link_callbacks callbacks_;
  std::string buffer_;
  std::size_t begin_ = 0;   // first unconsumed byte
  std::size_t end_ = 0;     // one past the last byte read
  bool reading_ = false;
  bool paused_ = false;
  bool closed_ = false;
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

}  // namespace ipcbus::transport::socket
