#include "shm_link.hpp"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include <boost/asio/post.hpp>

#include "ipcbus/error.hpp"
#include "ipcbus/detail/cpu_relax.hpp"
#include "shm_wake.hpp"

namespace ipcbus::transport::shm {

namespace asio = boost::asio;

namespace {
// Frames delivered per turn before the io thread gets to other work.
constexpr int drain_batch = 256;
// A polled link asks whether its publisher's process is gone once per this
// many polls that found nothing (a poll comes every few microseconds while
// idle); a publisher that closed is seen at the next poll.
constexpr unsigned idle_polls_per_liveness_check = 64;
// The waker re-checks that the publisher still exists at least this often.
constexpr auto waker_sleep = std::chrono::milliseconds(100);

// IPCBUS_SHM_WAKE=futex keeps every link on the futex and its waker thread: for
// comparing the two, and for ruling the hand-over out when chasing a problem.
bool direct_wake_allowed() {
  const char* v = std::getenv("IPCBUS_SHM_WAKE");
  return v == nullptr || std::strcmp(v, "futex") != 0;
}
}  // namespace

shm_link_state::shm_link_state(asio::io_context& io, std::unique_ptr<ring_reader> reader, link_callbacks callbacks,
                               const link_options& options, std::error_code& ec)
    : reader_(std::move(reader)),
      callbacks_(std::move(callbacks)),
      event_(io),
      wake_connection_(io),
      spin_(options.spin),
      busy_poll_(options.busy_poll),
      polled_(options.polled_by_bus && (options.busy_poll || options.spin.count() > 0)),
      wants_direct_((polled_ || (!options.busy_poll && options.spin.count() == 0)) && direct_wake_allowed()) {
  event_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (event_fd_ < 0) {
    ec = {errno, std::system_category()};
    return;
  }
  event_.assign(event_fd_);
}

shm_link_state::~shm_link_state() { stop_waker(); }

void shm_link_state::start() {
  wait_event();
  if (wants_direct_) request_direct_wake();
  drain_later();  // history may already be waiting
}

void shm_link_state::request_direct_wake() {
  const wake_request request{wake_magic, reader_->slot_index(), reader_->slot_state()};
  std::error_code ec;
  const int fd = request_wake(reader_->name(), reader_->owner_pid(), request, event_fd_, ec);
  if (fd < 0) return;  // the futex and the waker thread, then: one wake-up more per message
  wake_connection_.assign(fd);
  wait_wake_connection();
}

void shm_link_state::wait_wake_connection() {
  wake_connection_.async_wait(asio::posix::stream_descriptor::wait_read,
                              [self = shared_from_this()](const boost::system::error_code& ec) {
                                if (ec || self->closed_) return;
                                self->on_wake_connection();
                              });
}

// The publisher's answer, or later the end of the connection.
void shm_link_state::on_wake_connection() {
  char answer = 0;
  const ssize_t n = ::recv(wake_connection_.native_handle(), &answer, 1, MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
    wait_wake_connection();
    return;
  }
  if (!direct_ && n == 1 && answer == wake_ack) {
    stop_waker();  // from now on the publisher writes our eventfd itself
    direct_ = true;
    wait_wake_connection();
    drain_later();  // look at the ring, then arm the new way
    return;
  }
  // Refused, or the publisher's end closed (it closed or died): back to the futex.
  const bool was_direct = direct_;
  direct_ = false;
  if (asleep_direct_) reader_->stop_sleeping_on_eventfd();
  asleep_direct_ = false;
  boost::system::error_code ignored;
  wake_connection_.close(ignored);
  if (was_direct && reader_->publisher_gone_now()) publisher_gone_.store(true);
  drain_later();
}

// Drains on a later turn: the bus resumes its links in a loop over them, and a
// drain can end in on_closed, which removes a link from that very container.
void shm_link_state::resume() {
  if (!paused_ || closed_) return;
  paused_ = false;
  drain_later();
}

void shm_link_state::close() {
  if (closed_) return;
  closed_ = true;
  stop_waker();
  reader_->detach();
  boost::system::error_code ignored;
  wake_connection_.close(ignored);  // the publisher forgets our eventfd
  event_.close(ignored);
}

void shm_link_state::fail(std::error_code ec, const std::string& why) {
  if (closed_) return;
  close();
  if (callbacks_.on_closed) callbacks_.on_closed(ec, why);
}

void shm_link_state::wait_event() {
  event_.async_wait(asio::posix::stream_descriptor::wait_read,
                    [self = shared_from_this()](const boost::system::error_code& ec) {
                      if (ec || self->closed_) return;
                      std::uint64_t count = 0;
                      (void)::read(self->event_fd_, &count, sizeof count);
                      self->asleep_direct_ = false;  // the publisher took the request back
                      // Armed again first: a handler that throws out of drain()
                      // must not leave the link deaf to the next wake-up.
                      if (!self->closed_) self->wait_event();
                      self->drain();
                    });
}

void shm_link_state::drain_later() {
  asio::post(event_.get_executor(), [self = shared_from_this()] { self->drain(); });
}

// Delivers up to a batch of frames. Re-entrant calls return at once: the outer
// loop carries on. on_closed may drop the link's last outside reference: every
// caller holds one of its own (the handlers of wait_event and drain_later, the
// bus's poller list), so this object outlives the call without taking another
// (two locked instructions per drain, which in a ping-pong is per message).
void shm_link_state::drain() {
  if (closed_ || paused_ || draining_) return;
  if (asleep_direct_) {  // awake for another reason: spare the publisher a write
    reader_->stop_sleeping_on_eventfd();
    asleep_direct_ = false;
  }
  draining_ = true;
  read_result::kind last = read_result::empty;
  try {
    for (int n = 0; n < drain_batch && !closed_ && !paused_; ++n) {
      frame_view f;
      read_result r = reader_->next(f);
      last = r.what;
      if (r.what == read_result::frame) {
        if (callbacks_.on_frame) callbacks_.on_frame(f);
        reader_->release();  // after the callback: it may have read the ring in place
        continue;
      }
      if (r.what == read_result::failed) {
        draining_ = false;
        fail(r.ec, r.why);
        return;
      }
      break;
    }
  } catch (...) {
    // A subscriber's callback threw (or memory ran out). On the bus's own io
    // thread that ends the process; out of an io_context the application
    // runs it comes out of run(). The frame counts as taken, and the link
    // goes on from the next one once the io_context runs again, instead of
    // holding its place in the ring (and a reliable publisher) for ever.
    reader_->release();
    draining_ = false;
    if (!closed_) drain_later();
    throw;
  }
  draining_ = false;
  after_drain(last);
}

void shm_link_state::after_drain(read_result::kind last) {
  if (closed_ || paused_) return;  // paused: resume() drains again
  if (last == read_result::frame || last == read_result::again) {
    drain_later();  // more to do: let the io thread breathe first
    return;
  }
  // Empty. A publisher that is gone wrote its last record before it said so:
  // when the ring is still empty now, it is empty for good.
  if (publisher_gone_.load()) {
    if (reader_->data_available()) drain_later();
    else fail(make_error_code(errc::peer_gone), "publisher closed");
    return;
  }
  if (polled_) return;  // polled: the bus arms us when it stops polling (prepare_sleep)
  if (yield_before_sleep()) {
    drain_later();
    return;
  }
  arm();
}

// A drained link yields the CPU once and looks again before it sleeps. When
// the publisher shares this CPU, the wake-up it sends for the next record
// would otherwise switch to us at once, for that one record, again and again:
// a write and two context switches per message. The yield lets it write a
// batch first. Yields that keep finding nothing (a quiet publisher, a
// ping-pong) are paused for a while: they would only cost a system call.
bool shm_link_state::yield_before_sleep() {
  constexpr unsigned misses_before_pause = 4;
  constexpr unsigned sleeps_per_pause = 64;
  if (yields_paused_ > 0) {
    --yields_paused_;
    return false;
  }
  ::sched_yield();
  if (reader_->data_available()) {
    yield_misses_ = 0;
    return true;
  }
  // Once paused, a single miss pauses again: misses stay counted until a hit.
  if (++yield_misses_ >= misses_before_pause) yields_paused_ = sleeps_per_pause;
  return false;
}

bool shm_link_state::poll() {
  if (closed_ || paused_ || draining_) return false;
  if (!reader_->data_available()) {
    // The bus polls between its glances at the rings, every few microseconds
    // while idle. The closed flag is a load of a line only it uses; whether
    // the publisher's process still exists is asked only every so many
    // polls, as the question reads the clock (30-80 ns on a VM) and a record
    // arriving meanwhile would wait for the answer.
    if (!reader_->publisher_closed() && ++idle_polls_ % idle_polls_per_liveness_check != 0) return false;
    if (!reader_->publisher_gone()) return false;
    publisher_gone_.store(true);  // drain() delivers what is left, then reports it
  }
  drain();
  return true;
}

void shm_link_state::prepare_sleep() {
  if (!closed_ && !paused_) arm();
}

void shm_link_state::arm() {
  if (direct_) {
    if (reader_->sleep_on_eventfd()) {
      asleep_direct_ = true;
      return;
    }
    // Something to read already, or the ring closed.
    if (reader_->publisher_gone()) publisher_gone_.store(true);
    drain_later();
    return;
  }
  ensure_waker();
  {
    std::lock_guard lock(mutex_);
    armed_ = true;
  }
  cv_.notify_one();
}

void shm_link_state::ensure_waker() {
  if (waker_.joinable()) return;
  stop_ = false;
  // The waker must not take signals meant for the io thread (DESIGN.md section 6):
  // it is born with every signal blocked.
  sigset_t all, old;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_BLOCK, &all, &old);
  waker_ = std::thread([this] { waker_loop(); });
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

void shm_link_state::waker_loop() {
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [&] { return armed_ || stop_.load(); });
      if (stop_) return;
    }
    while (!stop_) {
      const bool gone = publisher_gone_.load() || reader_->publisher_gone();
      if (gone || reader_->data_available()) {
        if (gone) publisher_gone_.store(true);
        {
          std::lock_guard lock(mutex_);
          armed_ = false;
        }
        const std::uint64_t one = 1;
        (void)::write(event_fd_, &one, sizeof one);
        break;
      }
      if ((spin_.count() > 0 || busy_poll_) && !polled_ && spin_for_data()) continue;
      reader_->wait_for_data(waker_sleep);
    }
  }
}

bool shm_link_state::spin_for_data() {
  const auto until = std::chrono::steady_clock::now() + spin_;
  for (unsigned n = 1; !stop_.load(std::memory_order_relaxed); ++n) {
    if (reader_->data_available()) return true;
    detail::cpu_relax();
    if (n % 1024 != 0) continue;
    // Busy polling still checks now and then whether the publisher is gone; the
    // check is throttled, so its answer is kept rather than asked again.
    if (busy_poll_ && reader_->publisher_gone()) {
      publisher_gone_.store(true);
      return true;
    }
    if (!busy_poll_ && std::chrono::steady_clock::now() >= until) return false;
  }
  return false;
}

void shm_link_state::stop_waker() {
  if (!waker_.joinable()) return;
  stop_ = true;
  {
    std::lock_guard lock(mutex_);
    armed_ = false;
  }
  cv_.notify_all();
  reader_->wake_sleepers();
  waker_.join();
}

}  // namespace ipcbus::transport::shm
