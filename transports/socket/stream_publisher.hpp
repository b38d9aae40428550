// The publisher side of a stream transport (unix, tcp): accepts subscribers and
// keeps one queue per subscriber with the topic's QoS.
//
// Writes happen on the publishing thread: a frame goes straight to the socket
// with a non-blocking send when that subscriber's queue is empty (no thread
// hop on the fast path). What the kernel does not take waits in the queue and
// is flushed by the next send or by the io thread when the socket is writable.
// A reliable send that finds a full queue waits in poll() on that socket (with
// the lock released), so it makes progress even when it is called from the io
// thread itself.
//
// Thread-safety: send/flush/counters from any thread; the rest on the io thread.
#pragma once

#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include <boost/asio.hpp>

#include "ipcbus/error.hpp"
#include "ipcbus/log.hpp"
#include "ipcbus/transport.hpp"
#include "peer_credentials.hpp"

namespace ipcbus::transport::socket {


struct stream_connection {
  int fd = -1;
  std::deque<frame_ptr> pending;
  std::size_t front_offset = 0;  // bytes of pending.front() already written
  bool dead = false;
  bool write_armed = false;
  std::unique_ptr<boost::asio::generic::stream_protocol::socket> socket;
};

class stream_publisher_state : public std::enable_shared_from_this<stream_publisher_state> {
 public:
  using clock = std::chrono::steady_clock;

  stream_publisher_state(boost::asio::io_context& io, endpoint_options options)
      : io_(io), options_(std::move(options)) {}

  // Adopts an accepted, already vetted socket (io thread).
  void add_subscriber(boost::asio::generic::stream_protocol::socket socket);
  std::error_code send(const frame_ptr& frame);
  bool flush(std::chrono::milliseconds timeout);
  std::size_t subscriber_count() const;
  endpoint_counters counters() const;
  void close_all();
  const endpoint_options& options() const { return options_; }
  void count_refused() { std::lock_guard l(mutex_); ++counters_.peers_refused; }

 private:
  using conn_ptr = std::shared_ptr<stream_connection>;
  // All with mutex_ held.
  bool write_pending(stream_connection& c);
  void enqueue(const conn_ptr& c, const frame_ptr& frame);
  void reap_dead();
  void arm_writable(const conn_ptr& c);
  void watch_for_close(const conn_ptr& c);
  bool any_full() const;
  void wait_writable(std::unique_lock<std::mutex>& lock, clock::time_point deadline);

  boost::asio::io_context& io_;
  endpoint_options options_;
  mutable std::mutex mutex_;
  std::vector<conn_ptr> connections_;
  endpoint_counters counters_;
  bool closed_ = false;
};

}  // namespace ipcbus::transport::socket
