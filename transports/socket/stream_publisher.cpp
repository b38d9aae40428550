#include "stream_publisher.hpp"

#include <cerrno>

namespace ipcbus::transport::socket {

namespace asio = boost::asio;

void stream_publisher_state::add_subscriber(asio::generic::stream_protocol::socket socket) {
  auto c = std::make_shared<stream_connection>();
  boost::system::error_code ignored;
  socket.non_blocking(true, ignored);
  c->fd = socket.native_handle();
  c->socket = std::make_unique<asio::generic::stream_protocol::socket>(std::move(socket));
  std::vector<frame_ptr> history = options_.history ? options_.history() : std::vector<frame_ptr>{};
  std::lock_guard lock(mutex_);
  if (closed_) return;
  // History goes first and is never dropped: the late joiner asked for it.
  for (auto& f : history) c->pending.push_back(std::move(f));
  connections_.push_back(c);
  watch_for_close(c);
  if (!write_pending(*c)) reap_dead();
  else if (!c->pending.empty()) arm_writable(c);
}

// Subscribers never send; readable means EOF or an error: the subscriber left.
// Stray bytes from a misbehaving peer are read and discarded in bulk.
void stream_publisher_state::watch_for_close(const conn_ptr& c) {
  c->socket->async_wait(asio::socket_base::wait_read,
                        [self = shared_from_this(), c](const boost::system::error_code& ec) {
                          if (ec == asio::error::operation_aborted) return;
                          char sink[4096];
                          ssize_t n = -1;
                          do {
                            n = ::recv(c->fd, sink, sizeof sink, MSG_DONTWAIT);
                          } while (n < 0 && errno == EINTR);
                          const bool gone = ec || n == 0 || (n < 0 && errno != EAGAIN);
                          std::lock_guard lock(self->mutex_);
                          if (c->dead) return;
                          if (!gone) {
                            self->watch_for_close(c);
                            return;
                          }
                          c->dead = true;
                          self->reap_dead();
                        });
}

bool stream_publisher_state::write_pending(stream_connection& c) {
  while (!c.pending.empty()) {
    const std::string& bytes = c.pending.front()->bytes;
    const ssize_t n = ::send(c.fd, bytes.data() + c.front_offset, bytes.size() - c.front_offset,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      c.dead = true;  // EPIPE, ECONNRESET: the subscriber is gone
      return false;
    }
    c.front_offset += static_cast<std::size_t>(n);
    if (c.front_offset == bytes.size()) {
      c.pending.pop_front();
      c.front_offset = 0;
    }
  }
  return true;
}

void stream_publisher_state::reap_dead() {
  for (auto it = connections_.begin(); it != connections_.end();) {
    if ((*it)->dead) {
      if (!closed_) ++counters_.peers_lost;  // closing ourselves is not losing a peer
      asio::post(io_, [c = *it] {
        boost::system::error_code ignored;
        c->socket->close(ignored);
      });
      it = connections_.erase(it);
    } else {
      ++it;
    }
  }
}

void stream_publisher_state::arm_writable(const conn_ptr& c) {
  if (c->write_armed || c->dead) return;
  c->write_armed = true;
  asio::post(io_, [self = shared_from_this(), c] {
    c->socket->async_wait(asio::socket_base::wait_write,
                          [self, c](const boost::system::error_code& ec) {
                            std::lock_guard lock(self->mutex_);
                            c->write_armed = false;
                            if (ec || c->dead || self->closed_) return;
                            if (!self->write_pending(*c)) self->reap_dead();
                            else if (!c->pending.empty()) self->arm_writable(c);
                          });
  });
}

bool stream_publisher_state::any_full() const {
  for (const auto& c : connections_)
    if (c->pending.size() >= options_.settings.depth) return true;
  return false;
}

// Waits (lock released) until a full subscriber socket becomes writable or the deadline.
void stream_publisher_state::wait_writable(std::unique_lock<std::mutex>& lock,
                                           clock::time_point deadline) {
  std::vector<pollfd> fds;
  for (const auto& c : connections_)
    if (c->pending.size() >= options_.settings.depth) fds.push_back({c->fd, POLLOUT, 0});
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
  lock.unlock();
  // Cap each wait so that connections closed meanwhile are noticed.
  const int ms = static_cast<int>(std::clamp<long long>(left.count(), 0, 50));
  if (::poll(fds.data(), fds.size(), ms) < 0 && errno != EINTR) { /* retried by the caller */ }
  lock.lock();
}

std::error_code stream_publisher_state::send(const frame_ptr& frame) {
  std::unique_lock lock(mutex_);
  if (closed_) return make_error_code(errc::closed);
  const auto& s = options_.settings;
  if (s.qos == qos_policy::reliable) {
    const auto deadline = clock::now() + s.publish_timeout;
    for (;;) {
      bool dead = false;
      for (auto& c : connections_)
        if (c->pending.size() >= s.depth && !write_pending(*c)) dead = true;
      if (dead) reap_dead();
      if (!any_full()) break;
      if (clock::now() >= deadline) {
        ++counters_.timeouts;
        return make_error_code(errc::timed_out);
      }
      wait_writable(lock, deadline);
      if (closed_) return make_error_code(errc::closed);
    }
  }
  bool dead = false;
  for (auto& c : connections_) {
    enqueue(c, frame);
    if (!write_pending(*c)) dead = true;
    else if (!c->pending.empty()) arm_writable(c);
  }
  if (dead) reap_dead();
  return {};
}

void stream_publisher_state::enqueue(const conn_ptr& c, const frame_ptr& frame) {
  const auto& s = options_.settings;
  if (c->pending.size() >= s.depth) {
    if (s.qos == qos_policy::drop_newest) {
      ++counters_.dropped;
      return;
    }
    if (s.qos == qos_policy::drop_oldest) {
      // A frame partly on the wire must finish, or the stream would be torn.
      const auto victim = c->pending.begin() + (c->front_offset > 0 ? 1 : 0);
      if (victim != c->pending.end()) {
        c->pending.erase(victim);
        ++counters_.dropped;
      }
    }
  }
  c->pending.push_back(frame);
}

bool stream_publisher_state::flush(std::chrono::milliseconds timeout) {
  const auto deadline = clock::now() + timeout;
  std::unique_lock lock(mutex_);
  for (;;) {
    std::vector<pollfd> fds;
    bool dead = false;
    for (auto& c : connections_) {
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

std::size_t stream_publisher_state::subscriber_count() const {
  std::lock_guard lock(mutex_);
  return connections_.size();
}

endpoint_counters stream_publisher_state::counters() const {
  std::lock_guard lock(mutex_);
  return counters_;
}

void stream_publisher_state::close_all() {
  std::lock_guard lock(mutex_);
  closed_ = true;
  for (auto& c : connections_) c->dead = true;
  reap_dead();
}

}  // namespace ipcbus::transport::socket
