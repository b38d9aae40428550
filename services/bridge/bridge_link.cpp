#include "bridge_link.hpp"

#include <algorithm>

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include "ipcbus/frame_codec.hpp"
#include "ipcbus/log.hpp"

namespace ipcbus::bridge {

namespace asio = boost::asio;
using asio::ip::tcp;

link::link(asio::io_context& io, tls_stream stream, bool tls, bool dialed, std::string peer, BridgeHello own_hello,
           std::string token, link_limits limits, std::shared_ptr<link_counters> counters, hooks h)
    : io_(io),
      stream_(std::move(stream)),
      tls_(tls),
      dialed_(dialed),
      peer_(std::move(peer)),
      own_hello_(std::move(own_hello)),
      token_(std::move(token)),
      limits_(limits),
      counters_(std::move(counters)),
      hooks_(std::move(h)),
      reader_(limits.hello_record),
      heartbeat_(io) {}

link::~link() = default;

template <class F>
void link::with_stream(F&& f) {
  if (tls_)
    f(stream_);
  else
    f(stream_.next_layer());
}

void link::start() {
  boost::system::error_code ec;
  stream_.next_layer().set_option(tcp::no_delay(true), ec);  // frames go out when written, not 40 ms later
  last_heard_ = started_ = std::chrono::steady_clock::now();
  arm_heartbeat();
  if (!tls_) {
    send_hello();
    read();
    return;
  }
  auto self = shared_from_this();
  stream_.async_handshake(dialed_ ? asio::ssl::stream_base::client : asio::ssl::stream_base::server,
                          [self](const boost::system::error_code& hec) {
                            if (self->state_ == state::closed) return;
                            if (hec) return self->close("TLS handshake failed: " + hec.message());
                            self->send_hello();
                            self->read();
                          });
}

void link::send_hello() {
  own_hello_.set_nonce(make_nonce());  // fresh for every connection: an old proof proves nothing
  BridgeRecord r;
  *r.mutable_hello() = own_hello_;
  push_control(r);
}

void link::send_proof() {
  BridgeRecord r;
  r.mutable_auth()->set_proof(auth_proof(token_, peer_hello_.nonce(), own_hello_.bus_id()));
  push_control(r);
}

void link::read() {
  auto self = shared_from_this();
  with_stream([&](auto& s) {
    s.async_read_some(asio::buffer(read_buffer_), [self](const boost::system::error_code& ec, std::size_t n) {
      if (self->state_ == state::closed) return;
      if (ec) return self->close(ec == asio::error::eof ? "peer closed the connection" : ec.message());
      self->last_heard_ = std::chrono::steady_clock::now();
      self->heard_ = true;
      self->counters_->bytes_received.fetch_add(n, std::memory_order_relaxed);
      if (self->close_after_flush_) return self->read();  // refused: what else it says is not read
      if (!self->reader_.feed(std::string_view(self->read_buffer_.data(), n))) {
        self->malformed_ = true;
        return self->close(self->reader_.error());
      }
      while (self->state_ != state::closed && !self->close_after_flush_ && self->reader_.next(self->record_)) self->handle(self->record_);
      if (self->state_ == state::closed) return;
      if (!self->reader_.error().empty()) {
        self->malformed_ = true;
        return self->close(self->reader_.error());
      }
      if (self->read_paused_) {
        self->read_parked_ = true;
        return;
      }
      self->read();
    });
  });
}

void link::resume_reading() {
  if (!read_paused_) return;
  read_paused_ = false;
  last_heard_ = std::chrono::steady_clock::now();  // what the peer sent meanwhile waited for us, not it
  if (read_parked_ && state_ != state::closed) {
    read_parked_ = false;
    read();
  }
}

void link::handle(BridgeRecord& r) {
  auto self = shared_from_this();
  if (state_ == state::handshaking) {
    if (r.has_refusal()) return close("refused by the peer: " + printable(r.refusal().reason()));
    if (!got_hello_) {
      if (!r.has_hello()) return refuse("expected a hello first");
      peer_bus_ = r.hello().bus_id();
      peer_name_ = printable(r.hello().name(), 100);  // goes into logs and stats
      if (r.hello().version() != protocol_version)
        return refuse("protocol version " + std::to_string(r.hello().version()) +
                      " is not supported (this bridge speaks " + std::to_string(protocol_version) + ")");
      if (r.hello().nonce().size() != nonce_size) return refuse("a hello without a proper nonce");
      peer_hello_ = r.hello();
      got_hello_ = true;
      // The dialer proves first. The accepting side proves nothing to a
      // stranger: its proof goes out only once the dialer's checked out.
      if (dialed_) send_proof();
      return;
    }
    if (!r.has_auth()) return refuse("expected the proof of the token");
    if (!proof_matches(auth_proof(token_, own_hello_.nonce(), peer_bus_), r.auth().proof()))
      return refuse("wrong token");
    const std::string why = hooks_.check_hello(*this, peer_hello_);
    if (!why.empty()) return refuse(why);
    if (!dialed_) send_proof();
    reader_.set_limit(limits_.max_record);
    state_ = state::up;
    was_up_ = true;
    hooks_.on_up(self);
    return;
  }
  if (r.has_ping()) return;
  if (r.has_refusal()) return close("refused by the peer: " + printable(r.refusal().reason()));
  if (r.has_hello() || r.has_auth()) return refuse("a second hello");
  if (r.has_data()) counters_->received.fetch_add(1, std::memory_order_relaxed);
  hooks_.on_record(self, r);
}

void link::close(const std::string& why) {
  if (state_.exchange(state::closed) == state::closed) return;
  close_reason_ = why;
  std::vector<std::function<void()>> wake;
  boost::system::error_code ec;
  stream_.next_layer().shutdown(tcp::socket::shutdown_both, ec);
  stream_.next_layer().close(ec);
  heartbeat_.cancel();
  {
    std::lock_guard lock(mutex_);
    // Frames still queued never reach the peer: drops, counted like any other.
    counters_->dropped.fetch_add(queue_data_, std::memory_order_relaxed);
    queue_.clear();
    queue_bytes_ = 0;
    queue_data_ = 0;
    wake = take_room_waiters(true);
  }
  room_.notify_all();  // reliable pushes waiting for room give up now
  for (auto& f : wake) f();  // and those that did not wait learn it too (their retry finds it closed)
  asio::post(io_, [self = shared_from_this()] { self->hooks_.on_closed(self); });
}

void link::refuse(const std::string& why) {
  if (state_ == state::closed) return;
  log_line(log_level::warn, "bridge: refusing " + peer_ + (peer_name_.empty() ? "" : " (" + peer_name_ + ")") + ": " + why);
  BridgeRecord r;
  r.mutable_refusal()->set_reason(why);
  push_control(r);
  close_reason_ = why;
  if (!was_up_) refused_handshake_ = true;
  close_after_flush_ = true;
  state_ = state::handshaking;  // no data is queued for it any more
}

void link::finish() {
  if (state_ != state::up) return;
  {
    std::lock_guard lock(mutex_);
    if (finishing_) return;
    finishing_ = true;
  }
  schedule_kick();
}

void link::adopt_counters(std::shared_ptr<link_counters> kept) {
  if (kept == counters_) return;
  // What this connection counted so far (its hello) moves over.
  kept->bytes_sent.fetch_add(counters_->bytes_sent.load(), std::memory_order_relaxed);
  kept->bytes_received.fetch_add(counters_->bytes_received.load(), std::memory_order_relaxed);
  kept->dropped.fetch_add(counters_->dropped.load(), std::memory_order_relaxed);
  counters_ = std::move(kept);
}

void link::push_control(const BridgeRecord& record) {
  {
    std::lock_guard lock(mutex_);
    if (state_ == state::closed || finishing_) return;
    entry e;
    append_record(record, e.bytes);
    e.interest = record.has_interest();
    if (e.interest) {
      const auto queued = std::find_if(queue_.begin(), queue_.end(), [](const entry& q) { return q.interest; });
      if (queued != queue_.end()) {  // not sent yet: the newer set replaces it
        queue_bytes_ += e.bytes.size();
        queue_bytes_ -= queued->bytes.size();
        queued->bytes = std::move(e.bytes);
        return;
      }
    }
    queue_bytes_ += e.bytes.size();
    queue_.push_back(std::move(e));
  }
  schedule_kick();
}

bool link::full() const {
  return queue_bytes_ >= limits_.queue_bytes || queue_data_ >= limits_.queue_records;
}

link::push_result link::push_data(const topic_info& t, const frame_view& frame) {
  return push(t, frame, nullptr, nullptr);
}

link::push_result link::try_push_data(const topic_info& t, const frame_view& frame, const void* key,
                                      const std::function<void()>& on_room) {
  return push(t, frame, key, &on_room);
}

std::vector<std::function<void()>> link::take_room_waiters(bool closing) {
  std::vector<std::function<void()>> wake;
  if (room_waiters_.empty() || (!closing && full())) return wake;
  for (auto& [key, f] : room_waiters_) wake.push_back(std::move(f));
  room_waiters_.clear();
  return wake;
}

link::push_result link::push(const topic_info& t, const frame_view& frame, const void* key,
                             const std::function<void()>* on_room) {
  std::unique_lock lock(mutex_);
  if (state_ != state::up || finishing_) return push_result::closed;
  if (full()) {
    bool room = false;
    if (t.qos == qos_policy::reliable && on_room) {
      // Registered under the lock that kick() and close() take to wake the
      // waiters: room made after this check cannot go unnoticed.
      const auto at = std::find_if(room_waiters_.begin(), room_waiters_.end(),
                                   [&](const auto& w) { return w.first == key; });
      if (at != room_waiters_.end()) at->second = *on_room;
      else room_waiters_.emplace_back(key, *on_room);
      return push_result::full;
    }
    if (t.qos == qos_policy::reliable) {
      // A push already waiting when a drain starts still goes out: it is part
      // of what was queued. (One that only gets in after the FIN is dropped
      // and counted by kick().)
      room = room_.wait_for(lock, t.timeout, [&] { return state_ != state::up || !full(); });
      if (state_ != state::up) return push_result::closed;
    } else if (t.qos == qos_policy::drop_oldest) {
      for (auto it = queue_.begin(); it != queue_.end(); ++it) {
        if (!it->data) continue;
        queue_bytes_ -= it->bytes.size();
        --queue_data_;
        queue_.erase(it);
        counters_->dropped.fetch_add(1, std::memory_order_relaxed);
        break;
      }
      room = !full();
    }
    if (!room) {
      counters_->dropped.fetch_add(1, std::memory_order_relaxed);
      return push_result::dropped;
    }
  }
  auto [id_it, fresh] = topic_ids_.try_emplace(t.topic, static_cast<std::uint32_t>(topic_ids_.size() + 1));
  if (fresh) {  // the peer learns the topic's name and type once, before its first frame
    scratch_.Clear();
    auto* topic = scratch_.mutable_topic();
    topic->set_id(id_it->second);
    topic->set_topic(t.topic);
    topic->set_type_name(t.type_name);
    *topic->mutable_descriptors() = t.descriptors;
    entry e;
    append_record(scratch_, e.bytes);
    queue_bytes_ += e.bytes.size();
    queue_.push_back(std::move(e));
  }
  entry e;
  e.data = true;
  // The Frame as the publisher encoded it, written straight into the record.
  if (!append_data_record(id_it->second, frame.header, frame.payload, e.bytes)) {
    counters_->dropped.fetch_add(1, std::memory_order_relaxed);
    return push_result::dropped;
  }
  queue_bytes_ += e.bytes.size();
  ++queue_data_;
  queue_.push_back(std::move(e));
  lock.unlock();
  schedule_kick();
  return push_result::queued;
}

std::size_t link::queued_bytes() const {
  std::lock_guard lock(mutex_);
  return queue_bytes_;
}

void link::schedule_kick() {
  if (kick_posted_.exchange(true)) return;
  asio::post(io_, [self = shared_from_this()] {
    self->kick_posted_ = false;
    self->kick();
  });
}

void link::kick() {
  if (writing_ || state_ == state::closed) return;
  out_.clear();
  std::uint64_t frames = 0;
  std::vector<std::function<void()>> wake;
  {
    std::lock_guard lock(mutex_);
    if (fin_sent_) {
      // Nothing may follow the FIN; push_data refuses while finishing, so
      // this is only a safety net, and what it drops is counted.
      counters_->dropped.fetch_add(queue_data_, std::memory_order_relaxed);
      queue_.clear();
      queue_bytes_ = 0;
      queue_data_ = 0;
      return;
    }
    // One write for everything queued, up to a bound that keeps one batch
    // from holding the socket (and the memory) for long.
    while (!queue_.empty() && out_.size() < 1024 * 1024) {
      entry& e = queue_.front();
      out_ += e.bytes;
      queue_bytes_ -= e.bytes.size();
      if (e.data) {
        --queue_data_;
        ++frames;
      }
      queue_.pop_front();
    }
    wake = take_room_waiters(false);
  }
  room_.notify_all();
  for (auto& f : wake) f();
  if (out_.empty()) {
    if (close_after_flush_) return close(close_reason_);
    bool finishing = false;
    {
      std::lock_guard lock(mutex_);
      finishing = finishing_;
    }
    if (finishing && !fin_sent_) {
      // Everything queued is written: the FIN follows it, and the peer
      // closes once it has read all. Closing here instead could reset the
      // connection and lose what is still in flight.
      fin_sent_ = true;
      boost::system::error_code ec;
      stream_.next_layer().shutdown(tcp::socket::shutdown_send, ec);
    }
    return;
  }
  writing_ = true;
  write_progress_ = std::chrono::steady_clock::now();
  out_written_ = 0;
  out_frames_ = frames;
  write_some();
}

// Piece by piece rather than one async_write, so that the heartbeat can tell a
// peer that reads slowly (each piece goes out eventually) from one that reads nothing.
void link::write_some() {
  auto self = shared_from_this();
  with_stream([&](auto& s) {
    s.async_write_some(asio::buffer(out_.data() + out_written_, out_.size() - out_written_),
                       [self](const boost::system::error_code& ec, std::size_t n) {
                         if (self->state_ == state::closed || ec) {
                           self->writing_ = false;
                           // The batch being written is not in the queue any more, where
                           // close() counts the losses: its frames are counted here (some
                           // may have reached the peer; none is known to).
                           self->counters_->dropped.fetch_add(self->out_frames_, std::memory_order_relaxed);
                           self->out_frames_ = 0;
                           if (self->state_ == state::closed) return;
                           return self->close("write failed: " + ec.message());
                         }
                         self->write_progress_ = std::chrono::steady_clock::now();
                         self->out_written_ += n;
                         self->counters_->bytes_sent.fetch_add(n, std::memory_order_relaxed);
                         if (self->out_written_ < self->out_.size()) return self->write_some();
                         self->writing_ = false;
                         self->counters_->sent.fetch_add(self->out_frames_, std::memory_order_relaxed);
                         if (self->out_.capacity() > 4 * 1024 * 1024) self->out_ = std::string{};  // one big batch: give it back
                         self->kick();
                       });
  });
}

void link::arm_heartbeat() {
  heartbeat_.expires_after(limits_.heartbeat);
  heartbeat_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (ec || self->state_ == state::closed) return;
    const auto now = std::chrono::steady_clock::now();
    // Before the hello the deadline counts from the connect, not from the last
    // byte: a peer trickling a byte at a time must not hold a slot for ever.
    if (self->read_paused_) self->last_heard_ = now;  // we are not listening: its silence is ours
    const bool up = self->state_ == state::up;
    const auto quiet = now - (up ? self->last_heard_ : self->started_);
    if (quiet > (up ? self->limits_.timeout : self->limits_.handshake_timeout)) {
      return self->close(std::string(up ? "nothing heard from the peer" : "handshake not done") + " after " +
                         std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(quiet).count()) +
                         " ms");
    }
    // A peer that takes in nothing (its socket buffers full) for the write
    // stall limit is given up too. Not after the link timeout: a peer whose
    // bridge paused reading (a slow subscriber there) still pings us, and TCP
    // pushing back on us for a while is what it wants.
    if (self->writing_ && now - self->write_progress_ > self->limits_.write_stall) {
      return self->close("the peer took in nothing for " +
                         std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                            now - self->write_progress_).count()) +
                         " ms");
    }
    // A ping only on an idle link: anything queued or being written keeps it alive anyway.
    bool idle = false;
    {
      std::lock_guard lock(self->mutex_);
      idle = self->queue_.empty();
    }
    if (self->state_ == state::up && idle && !self->writing_ && !self->fin_sent_) {
      BridgeRecord r;
      r.mutable_ping();
      self->push_control(r);
    }
    self->arm_heartbeat();
  });
}

}  // namespace ipcbus::bridge
