#include "frame_publisher.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace ipcbus::transport::stream {

namespace asio = boost::asio;

namespace {

// Coalescing: a send that follows the end of the previous write to a
// subscriber by less than this is part of a burst (a publishing loop spends
// about a microsecond between sends; a request/reply exchange waits for at
// least two wake-ups, each longer than this), so its frame waits for a
// batched write. Late by at most one io-thread turn or one batch.
constexpr auto burst_gap = std::chrono::microseconds(5);
// At most this many frames wait for a batched write; the send that makes the
// batch writes it itself. Capped by the topic's depth, so that coalescing
// alone never fills a queue.
constexpr std::size_t batch_frames = 32;
// Only frames smaller than this are coalesced: for larger ones the system call
// is a small part of the cost, and holding them back would only add latency.
constexpr std::size_t coalesce_max_frame = 4096;
// iovecs per write_some() call (far below IOV_MAX).
constexpr int max_iov = 64;

// Sockets and FIFOs are byte streams: any split of the frames will do, so a
// backlog goes out in one gathering call (write_some).
//
// One non-blocking gathering call (`call` returns what sendmsg/writev return),
// retried on EINTR. EPIPE, ECONNRESET and the like: the subscriber is gone.
template <class Call>
write_status gather(Call call, std::size_t& written) {
  for (;;) {
    const ssize_t n = call();
    if (n >= 0) {
      written = static_cast<std::size_t>(n);
      return write_status::ok;
    }
    written = 0;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return write_status::would_block;
    return write_status::gone;
  }
}

class socket_sink final : public frame_sink {
 public:
  write_status write_some(int fd, const iovec* iov, int count, std::size_t& written) override {
    msghdr m{};
    m.msg_iov = const_cast<iovec*>(iov);
    m.msg_iovlen = static_cast<std::size_t>(count);
    return gather([&] { return ::sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL); }, written);
  }
  bool gathers() const override { return true; }
  close_watch watch() const override { return close_watch::readable; }
};

class fifo_sink final : public frame_sink {
 public:
  explicit fifo_sink(std::string path) : path_(std::move(path)) {}
  // The descriptor is O_NONBLOCK: up to PIPE_BUF bytes go in whole or not at
  // all, more may go in part. SIGPIPE is ignored by the bus; EPIPE means the
  // reader closed its end or died.
  write_status write_some(int fd, const iovec* iov, int count, std::size_t& written) override {
    return gather([&] { return ::writev(fd, iov, count); }, written);
  }
  bool gathers() const override { return true; }
  close_watch watch() const override { return close_watch::error; }
  void on_removed() override { ::unlink(path_.c_str()); }

 private:
  std::string path_;
};

// POLLERR on a FIFO's write end: no reader is left.
bool reader_gone(int fd) {
  pollfd p{fd, POLLOUT, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0;
}

}  // namespace

std::unique_ptr<frame_sink> make_socket_sink() { return std::make_unique<socket_sink>(); }
std::unique_ptr<frame_sink> make_fifo_sink(std::string path) { return std::make_unique<fifo_sink>(std::move(path)); }

void frame_publisher::add_subscriber(std::unique_ptr<frame_sink> sink, int fd) {
  auto c = std::make_shared<sink_connection>();
  c->fd = fd;
  c->sink = std::move(sink);
  if (c->sink->watch() != close_watch::none) c->descriptor = std::make_unique<asio::posix::stream_descriptor>(io_, fd);
  std::vector<frame_ptr> history = options_.history ? options_.history() : std::vector<frame_ptr>{};
  std::lock_guard lock(mutex_);
  if (closed_) {
    c->sink->on_removed();
    return;  // the descriptor closes with c
  }
  // History goes first and is never dropped: the late joiner asked for it.
  for (auto& f : history) c->pending.push_back(std::move(f));
  connections_.push_back(c);
  counters_changed();
  watch_for_close(c);
  if (!write_pending(*c)) reap_dead();
  else if (!c->pending.empty()) arm_writable(c);
}

// Sockets: subscribers never send, so readable means EOF or an error; stray
// bytes from a misbehaving peer are read and discarded in bulk. FIFOs: the
// write end reports an error once no reader is left. Either way the waits are
// not speculative, so a state reached before the wait is queued is checked too.
void frame_publisher::watch_for_close(const conn_ptr& c) {
  const close_watch how = c->sink->watch();
  if (how == close_watch::none) return;
  const auto wait = how == close_watch::readable ? asio::posix::descriptor_base::wait_read
                                                 : asio::posix::descriptor_base::wait_error;
  c->descriptor->async_wait(wait, [self = shared_from_this(), c, how](const boost::system::error_code& ec) {
    if (ec == asio::error::operation_aborted) return;
    bool gone = static_cast<bool>(ec);
    if (!gone && how == close_watch::readable) {
      char sink[4096];
      ssize_t n = -1;
      do {
        n = ::recv(c->fd, sink, sizeof sink, MSG_DONTWAIT);
      } while (n < 0 && errno == EINTR);
      gone = n == 0 || (n < 0 && errno != EAGAIN);
    } else if (!gone) {
      gone = reader_gone(c->fd);
    }
    std::lock_guard lock(self->mutex_);
    if (c->dead) return;
    if (!gone) self->watch_for_close(c);  // may find it gone right away
    else c->dead = true;
    if (c->dead) self->reap_dead();
  });
  if (how == close_watch::error && reader_gone(c->fd)) c->dead = true;  // reaped by the caller's write
}

bool frame_publisher::write_pending(sink_connection& c) {
  if (c.dead) return false;
  if (c.sink->gathers()) return write_gathered(c);
  while (!c.pending.empty()) {
    const std::string& bytes = c.pending.front()->bytes;
    const write_status st = c.sink->write(c.fd, bytes, c.front_offset);
    if (st == write_status::gone) {
      c.dead = true;
      return false;
    }
    if (st == write_status::would_block) return true;
    c.pending.pop_front();
    c.front_offset = 0;
  }
  return true;
}

// As write_pending, for byte streams: the backlog (the front frame from
// front_offset on) in one call per max_iov frames, until the queue is empty
// or the kernel takes no more. A call that takes part of the batch leaves
// front_offset inside the frame it stopped in, possibly mid-header.
bool frame_publisher::write_gathered(sink_connection& c) {
  while (!c.pending.empty()) {
    iovec iov[max_iov];
    int count = 0;
    for (auto it = c.pending.begin(); it != c.pending.end() && count < max_iov; ++it, ++count) {
      const std::string& bytes = (*it)->bytes;
      const std::size_t skip = count == 0 ? c.front_offset : 0;
      iov[count] = {const_cast<char*>(bytes.data() + skip), bytes.size() - skip};
    }
    std::size_t written = 0;
    const write_status st = c.sink->write_some(c.fd, iov, count, written);
    if (st == write_status::gone) {
      c.dead = true;
      return false;
    }
    if (st == write_status::would_block || written == 0) return true;
    // Retire the frames the call took whole; the next one keeps how far it got.
    std::size_t left = written + c.front_offset;
    while (!c.pending.empty() && left >= c.pending.front()->bytes.size()) {
      left -= c.pending.front()->bytes.size();
      c.pending.pop_front();
    }
    // A short write usually means the buffer is full; the next call says so
    // (EAGAIN) or takes what was freed meanwhile, as the unbatched loop did.
    c.front_offset = left;
  }
  return true;
}

void frame_publisher::reap_dead() {
  for (auto it = connections_.begin(); it != connections_.end();) {
    if ((*it)->dead) {
      if (!closed_) ++counters_.peers_lost;  // closing ourselves is not losing a peer
      asio::post(io_, [c = *it] {
        c->sink->on_removed();
        c->close_descriptor();
      });
      it = connections_.erase(it);
      counters_changed();
    } else {
      ++it;
    }
  }
}

void frame_publisher::check_liveness() {
  std::lock_guard lock(mutex_);
  bool dead = false;
  for (auto& c : connections_)
    if (!c->dead && !c->sink->alive()) c->dead = dead = true;
  if (dead) reap_dead();
}

void frame_publisher::remove_subscriber(std::uint64_t key) {
  std::lock_guard lock(mutex_);
  bool found = false;
  for (auto& c : connections_)
    if (!c->dead && key != 0 && c->sink->key() == key) c->dead = found = true;
  if (found) reap_dead();
}

void frame_publisher::arm_writable(const conn_ptr& c) {
  if (c->write_armed || c->dead) return;
  c->write_armed = true;
  asio::post(io_, [self = shared_from_this(), c] {
    std::lock_guard lock(self->mutex_);
    if (c->dead) {  // reaped meanwhile: its descriptor is closed or about to be
      c->write_armed = false;
      return;
    }
    if (!c->descriptor) c->descriptor = std::make_unique<asio::posix::stream_descriptor>(self->io_, c->fd);
    c->descriptor->async_wait(asio::posix::descriptor_base::wait_write,
                              [self, c](const boost::system::error_code& ec) {
                                std::lock_guard lock(self->mutex_);
                                c->write_armed = false;
                                if (ec || c->dead || self->closed_) return;
                                if (!self->write_pending(*c)) self->reap_dead();
                                else if (!c->pending.empty()) self->arm_writable(c);
                                else if (c->sink->watch() == close_watch::none) {
                                  // Caught up: leave the reactor again (see sink_connection).
                                  c->descriptor->release();
                                  c->descriptor.reset();
                                }
                              });
  });
}

void sink_connection::close_descriptor() {
  if (descriptor) {
    boost::system::error_code ignored;
    descriptor->close(ignored);
    descriptor.reset();
  } else if (fd >= 0) {
    ::close(fd);
  }
  fd = -1;
}

bool frame_publisher::any_full() const {
  for (const auto& c : connections_)
    if (c->pending.size() >= options_.settings.depth) return true;
  return false;
}

// Waits (lock released) until a full subscriber's descriptor becomes writable or the deadline.
void frame_publisher::wait_writable(std::unique_lock<std::mutex>& lock, clock::time_point deadline) {
  std::vector<pollfd> fds;
  for (const auto& c : connections_)
    if (c->pending.size() >= options_.settings.depth) fds.push_back({c->fd, POLLOUT, 0});
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
  lock.unlock();
  // Cap each wait so that subscribers closed meanwhile are noticed.
  const int ms = static_cast<int>(std::clamp<long long>(left.count(), 0, 50));
  if (::poll(fds.data(), fds.size(), ms) < 0 && errno != EINTR) { /* retried by the caller */ }
  lock.lock();
}

std::error_code frame_publisher::send(const frame_ptr& frame) {
  std::unique_lock lock(mutex_);
  if (closed_) return make_error_code(errc::closed);
  const auto& s = options_.settings;
  // Only when someone is full: reading the clock costs more than the rest of
  // a send to one subscriber that keeps up.
  if (s.qos == qos_policy::reliable && any_full()) {
    const auto deadline = clock::now() + s.publish_timeout;
    for (bool first = true;; first = false) {
      bool dead = false;
      for (auto& c : connections_) {
        if (c->pending.size() < s.depth) continue;
        // A full subscriber that died must not hold the publisher up.
        if (!first && !c->sink->alive()) c->dead = true;
        if (!write_pending(*c)) dead = true;
      }
      if (dead) reap_dead();
      if (!any_full()) break;
      if (clock::now() >= deadline) {
        ++counters_.timeouts;
        counters_changed();
        return make_error_code(errc::timed_out);
      }
      wait_writable(lock, deadline);
      if (closed_) return make_error_code(errc::closed);
    }
  }
  bool dead = false;
  clock::time_point now{};  // read once, and only when a decision needs it
  for (auto& c : connections_) {
    enqueue(c, frame);
    if (coalesce(*c, *frame, now)) {
      post_flush(c);
      continue;
    }
    if (!write_pending(*c)) {
      dead = true;
      continue;
    }
    if (c->sink->gathers()) c->last_write = now = clock::now();
    if (!c->pending.empty()) arm_writable(c);
  }
  if (dead) reap_dead();
  return {};
}

// Whether the frame just queued for `c` waits for a batched write instead of
// being written now. Only small frames on byte streams, only while the kernel
// takes bytes (a subscriber that is behind gets a write attempt per send, as
// before), and never up to the topic's depth: coalescing must not turn into a
// drop or a reliable wait. `now` is read on first need and shared by the
// subscribers of one send.
bool frame_publisher::coalesce(const sink_connection& c, const encoded_frame& frame, clock::time_point& now) const {
  if (!c.sink->gathers() || c.dead || c.write_armed || frame.bytes.size() >= coalesce_max_frame) return false;
  if (c.pending.size() >= std::min<std::size_t>(batch_frames, options_.settings.depth)) return false;  // the batch is full: write it
  if (c.flush_posted) return true;
  if (now == clock::time_point{}) now = clock::now();
  return now - c.last_write < burst_gap;
}

// Schedules one write of c's backlog on the io thread: whatever was queued by
// the time it runs goes out in one call. Sends from the io thread itself (a
// reply from a callback) are flushed when that handler returns.
void frame_publisher::post_flush(const conn_ptr& c) {
  if (c->flush_posted) return;
  c->flush_posted = true;
  asio::post(io_, [self = shared_from_this(), c] {
    std::lock_guard lock(self->mutex_);
    c->flush_posted = false;
    if (c->dead || self->closed_) return;
    if (!self->write_pending(*c)) {
      self->reap_dead();
      return;
    }
    c->last_write = clock::now();  // sends right after this belong to the same burst
    if (!c->pending.empty()) self->arm_writable(c);
  });
}

void frame_publisher::enqueue(const conn_ptr& c, const frame_ptr& frame) {
  const auto& s = options_.settings;
  if (c->pending.size() >= s.depth) {
    if (s.qos == qos_policy::drop_newest) {
      ++counters_.dropped;
      counters_changed();
      return;
    }
    if (s.qos == qos_policy::drop_oldest) {
      // A frame partly written must finish, or the stream would be torn.
      const auto victim = c->pending.begin() + (c->front_offset > 0 ? 1 : 0);
      if (victim != c->pending.end()) {
        c->pending.erase(victim);
        ++counters_.dropped;
        counters_changed();
      }
    }
  }
  c->pending.push_back(frame);
}

bool frame_publisher::flush(std::chrono::milliseconds timeout) {
  const auto deadline = clock::now() + timeout;
  std::unique_lock lock(mutex_);
  for (;;) {
    std::vector<pollfd> fds;
    bool dead = false;
    for (auto& c : connections_) {
      if (!c->pending.empty() && !c->sink->alive()) c->dead = true;
      if (!write_pending(*c)) dead = true;
      else if (!c->pending.empty()) fds.push_back({c->fd, POLLOUT, 0});
    }
    if (dead) reap_dead();
    if (fds.empty()) return true;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
    if (left.count() <= 0) return false;
    lock.unlock();
    (void)::poll(fds.data(), fds.size(), static_cast<int>(std::min<long long>(left.count(), 50)));
    lock.lock();
  }
}

std::size_t frame_publisher::subscriber_count() const {
  std::lock_guard lock(mutex_);
  return connections_.size();
}

endpoint_counters frame_publisher::counters() const {
  std::lock_guard lock(mutex_);
  return counters_;
}

void frame_publisher::close_all() {
  std::lock_guard lock(mutex_);
  closed_ = true;
  for (auto& c : connections_) {
    // What waited for a batched write goes to the kernel now, as far as it
    // takes it: without coalescing it would already be there.
    if (write_pending(*c)) c->sink->farewell(c->fd);
    c->dead = true;
  }
  reap_dead();
}

}  // namespace ipcbus::transport::stream
