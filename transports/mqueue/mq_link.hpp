// The subscriber side of mq://: its own queue, read through Asio (an mqd_t is
// a descriptor on Linux), fragments reassembled, frames decoded in place.
//
// Limits are checked before any buffer grows: a whole message's length prefix
// and a fragmented frame's announced total against max_frame. Out-of-order or
// foreign fragments, bad headers and undecodable frames close the link with
// malformed_frame (the bus counts it in bad_frames and does not reconnect).
//
// The publisher's departure is a bye message (after everything it sent), or,
// when the queue was too full for it, the attach queue's link count dropping to
// 0 or the publisher's process being gone (checked every 200 ms). Either way
// what is queued is delivered first, then on_closed(peer_gone).
//
// Thread-safety: everything runs on the io thread.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include <boost/asio.hpp>

#include "ipcbus/transport.hpp"
#include "mq_names.hpp"

namespace ipcbus::transport::mqueue {

class mq_link_state : public std::enable_shared_from_this<mq_link_state> {
 public:
  // Takes ownership of `data_fd` (our queue, named `data`) and `attach_fd`
  // (the publisher's attach queue, open for writing).
  mq_link_state(boost::asio::io_context& io, int data_fd, long msgsize, queue_name data, int attach_fd,
                queue_name attach, std::filesystem::path domain_dir, link_options options, link_callbacks callbacks);
  ~mq_link_state();

  void start();
  void pause() { paused_ = true; }
  void resume();
  // Says goodbye to the publisher (unless told not to: it never knew us),
  // closes and unlinks our queue. Idempotent.
  void close(bool detach = true);

 private:
  void arm();
  void schedule_check();
  // Receives and handles up to a batch of messages; re-arms or reposts itself.
  void process();
  void process_batch();
  // process() on a later turn of the io_context (at most one pending).
  void process_later();
  // Handles one message; false once the link is closed or the publisher said bye.
  bool handle(const char* data, std::size_t size);
  bool deliver(std::string_view encoded);
  void fail(std::error_code ec, const std::string& reason);
  bool publisher_gone() const;

  boost::asio::posix::stream_descriptor queue_;
  boost::asio::steady_timer timer_;
  int attach_fd_;
  queue_name data_name_;
  queue_name attach_name_;
  std::filesystem::path domain_dir_;
  link_options options_;
  link_callbacks callbacks_;
  std::string message_;      // one received message (msgsize bytes)
  std::string assembly_;     // a fragmented frame being reassembled
  std::size_t assembled_ = 0;
  std::uint32_t next_index_ = 0;
  bool assembling_ = false;
  bool waiting_ = false;     // an async_wait is queued
  bool posted_ = false;      // a process() is posted
  bool paused_ = false;
  bool closed_ = false;
  bool publisher_left_ = false;  // bye received, or found gone: drain, then peer_gone
};

class mq_link final : public subscriber_link {
 public:
  explicit mq_link(std::shared_ptr<mq_link_state> s) : state_(std::move(s)) {}
  ~mq_link() override { state_->close(); }
  void pause() override { state_->pause(); }
  void resume() override { state_->resume(); }
  void close() override { state_->close(); }

 private:
  std::shared_ptr<mq_link_state> state_;
};

}  // namespace ipcbus::transport::mqueue
