// The publisher side of mq://: its attach queue, and one frame_sink per
// subscriber queue in front of the shared frame_publisher (per-subscriber QoS
// queues, transports/stream/).
//
// A frame that fits in one queue message (msgsize - 16 bytes of header) is
// sent whole; a larger one is sent as fragments, each a message of its own, in
// order. Fragments of a frame are never dropped separately: drop policies act
// on whole frames in the publisher's queue, and a frame partly written always
// finishes. Subscribers are dropped when they say goodbye (detach), when their
// process is gone (checked every 200 ms and while a reliable send waits), or
// when their queue vanishes (EBADF and the like).
//
// Thread-safety: as publisher_endpoint (send/flush/counters from any thread;
// the attach listener and the housekeeping timer on the io thread).
#pragma once

#include <memory>
#include <string>

#include <boost/asio.hpp>

#include "frame_publisher.hpp"
#include "ipcbus/transport.hpp"
#include "ipcbus/transports/mqueue.hpp"
#include "mq_names.hpp"

namespace ipcbus::transport::mqueue {

class attach_listener;

class mq_endpoint final : public publisher_endpoint {
 public:
  mq_endpoint(boost::asio::io_context& io, const endpoint_options& options, const mq_limits& limits);
  ~mq_endpoint() override;

  // Creates the attach queue and its marker. Errors: from mq_open (EMFILE when
  // RLIMIT_MSGQUEUE is exhausted, ENOSPC past queues_max, ...).
  std::error_code open();

  std::string uri() const override { return uri_; }
  // Also errc::message_too_large when mq_fragment is off and the frame does not
  // fit in one message of msgsize_max.
  std::error_code send(const frame_ptr& frame) override;
  std::size_t subscriber_count() const override { return state_->subscriber_count(); }
  bool flush(std::chrono::milliseconds timeout) override { return state_->flush(timeout); }
  endpoint_counters counters() const override { return state_->counters(); }
  std::uint64_t counters_version() const override { return state_->counters_version(); }
  void close() override;

 private:
  boost::asio::io_context& io_;
  mq_limits limits_;
  std::shared_ptr<stream::frame_publisher> state_;
  std::shared_ptr<attach_listener> listener_;
  queue_name attach_queue_;
  std::string uri_;
  bool closed_ = false;
};

}  // namespace ipcbus::transport::mqueue
