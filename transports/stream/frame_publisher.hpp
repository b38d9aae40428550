// The publisher side shared by the descriptor-based transports (unix, tcp,
// pipe, mq): one queue per subscriber with the topic's QoS, in front of a
// frame_sink that moves bytes to that subscriber.
//
// Writes happen on the publishing thread: a frame goes straight to the sink
// with a non-blocking write when that subscriber is idle (no thread hop on the
// fast path, so latency stays that of one system call). When sends come
// faster than that, each one paying a system call would cap the rate (a call
// costs several microseconds, a small frame's encoding far less), so frames
// are coalesced: while the previous write to that subscriber ended only
// moments ago, or a flush is already scheduled, a small frame waits in the
// queue and one flush on the io thread (or the send that fills a batch)
// writes the whole backlog in one writev/sendmsg. Message sinks (mq) keep one
// message per call. What the kernel does not take waits in the queue and is
// flushed by the next send or by the io thread when the descriptor is
// writable. A reliable send that finds a full queue waits in poll() on that
// descriptor (with the lock released), so it makes progress even when it is
// called from the io thread itself. Coalescing never fills a queue: a backlog
// is written before it reaches the topic's depth, so drops and reliable waits
// happen only when the kernel refuses bytes, as without it.
//
// Thread-safety: send/flush/counters/subscriber_count/close_all from any
// thread; add_subscriber, check_liveness and remove_subscriber on the io thread.
#pragma once

#include <poll.h>
#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

#include <boost/asio.hpp>

#include "ipcbus/error.hpp"
#include "ipcbus/log.hpp"
#include "ipcbus/transport.hpp"

namespace ipcbus::transport::stream {

enum class write_status { ok, would_block, gone };

// How a sink learns, without writing, that its subscriber went away.
enum class close_watch {
  readable,   // sockets: the subscriber never sends, so readable means EOF (stray bytes are discarded)
  error,      // FIFOs: the write end reports POLLERR once the last reader is gone
  none,       // the transport calls check_liveness()/remove_subscriber() itself (mq)
};

// One subscriber as the publisher sees it. A sink owns no descriptor: the
// frame_publisher wraps `fd()` in an Asio descriptor that closes it.
class frame_sink {
 public:
  virtual ~frame_sink() = default;
  // A sink implements write() (message sinks: mq) or, returning true from
  // gathers(), write_some() (byte streams: sockets, FIFOs); the publisher
  // calls only that one. Both are called with the publisher's lock held.
  //
  // Writes as much of bytes[offset..] to `fd` as the kernel takes without
  // blocking and advances `offset`; only whole units (a message, for mq) are ever counted.
  // ok: everything written; would_block: the rest must wait; gone: the
  // subscriber left (EPIPE, ...).
  virtual write_status write(int /*fd*/, std::string_view /*bytes*/, std::size_t& /*offset*/) {
    return write_status::gone;  // not reached: byte streams gather
  }
  virtual bool gathers() const { return false; }
  // One non-blocking call writing iov[0..count) in order, as much as the
  // kernel takes; `written` gets the bytes taken (ok with less than the total:
  // the kernel took part). Statuses as for write().
  virtual write_status write_some(int /*fd*/, const iovec* /*iov*/, int /*count*/, std::size_t& written) {
    written = 0;
    return write_status::gone;  // not reached: only called when gathers()
  }
  virtual close_watch watch() const = 0;
  // Cheap check that the subscriber still lives (a pid, say). Called by
  // check_liveness() and while a reliable send waits.
  virtual bool alive() { return true; }
  // The subscriber is gone or the publisher closes: remove what the sink
  // names in the file system (a FIFO, a queue). Called once, on the io thread.
  virtual void on_removed() {}
  // The publisher closes while the subscriber lives: a last word after the
  // frames already written (mq says bye; streams need none). Lock held.
  virtual void farewell(int /*fd*/) {}
  // What remove_subscriber() matches (a link id); 0 if unused.
  virtual std::uint64_t key() const { return 0; }
};

struct sink_connection {
  int fd = -1;
  std::unique_ptr<frame_sink> sink;
  std::deque<frame_ptr> pending;
  std::size_t front_offset = 0;  // bytes of pending.front() already written
  bool dead = false;
  bool write_armed = false;   // waiting for the descriptor to become writable
  bool flush_posted = false;  // a flush of the coalesced backlog is posted to the io thread
  // When the last write to this subscriber ended: a send soon after it is
  // part of a burst and is coalesced (see frame_publisher).
  std::chrono::steady_clock::time_point last_write{};
  // Registered with the io_context only when something has to wait on it.
  // Sinks with close_watch::none (message queues) stay unregistered while
  // they keep up: a queue's descriptor is readable whenever it holds
  // messages, so registered it would wake the publisher's io thread after
  // every send it made.
  std::unique_ptr<boost::asio::posix::stream_descriptor> descriptor;

  sink_connection() = default;
  sink_connection(const sink_connection&) = delete;
  sink_connection& operator=(const sink_connection&) = delete;
  ~sink_connection() { close_descriptor(); }
  void close_descriptor();
};

class frame_publisher : public std::enable_shared_from_this<frame_publisher> {
 public:
  using clock = std::chrono::steady_clock;

  frame_publisher(boost::asio::io_context& io, endpoint_options options)
      : io_(io), options_(std::move(options)) {}

  // Adopts a vetted subscriber: `fd` is a connected socket, an open FIFO write
  // end or a message queue descriptor, owned from now on (io thread). The
  // subscriber gets the history first (never dropped), then live traffic.
  void add_subscriber(std::unique_ptr<frame_sink> sink, int fd);
  // Drops subscribers whose sink is no longer alive() (io thread).
  void check_liveness();
  // Drops the subscriber whose sink has this key (it said goodbye). io thread.
  void remove_subscriber(std::uint64_t key);
  // As publisher_endpoint::send.
  std::error_code send(const frame_ptr& frame);
  bool flush(std::chrono::milliseconds timeout);
  std::size_t subscriber_count() const;
  endpoint_counters counters() const;
  // Changes whenever counters() or subscriber_count() may have: lets the bus
  // skip copying them after every send (they take the lock).
  std::uint64_t counters_version() const { return counters_version_.load(std::memory_order_acquire); }
  void close_all();
  const endpoint_options& options() const { return options_; }
  void count_refused() {
    std::lock_guard l(mutex_);
    ++counters_.peers_refused;
    counters_changed();
  }

 private:
  using conn_ptr = std::shared_ptr<sink_connection>;
  // All with mutex_ held.
  bool write_pending(sink_connection& c);
  bool write_gathered(sink_connection& c);
  bool coalesce(const sink_connection& c, const encoded_frame& frame, clock::time_point& now) const;
  void post_flush(const conn_ptr& c);
  void enqueue(const conn_ptr& c, const frame_ptr& frame);
  void reap_dead();
  void arm_writable(const conn_ptr& c);
  void watch_for_close(const conn_ptr& c);
  bool any_full() const;
  void counters_changed() { counters_version_.fetch_add(1, std::memory_order_release); }
  void wait_writable(std::unique_lock<std::mutex>& lock, clock::time_point deadline);

  boost::asio::io_context& io_;
  endpoint_options options_;
  mutable std::mutex mutex_;
  std::vector<conn_ptr> connections_;
  endpoint_counters counters_;
  std::atomic<std::uint64_t> counters_version_{1};  // bumped after counters_ or connections_ change
  bool closed_ = false;
};

// Sinks over plain descriptors, for the byte-stream transports.
// A connected stream socket: send(MSG_NOSIGNAL).
std::unique_ptr<frame_sink> make_socket_sink();
// A FIFO's write end: write(); `path` is unlinked when the subscriber goes.
std::unique_ptr<frame_sink> make_fifo_sink(std::string path);

}  // namespace ipcbus::transport::stream
