// The subscriber side of shm:// as the bus sees it: a ring_reader drained on
// the io thread, which sleeps in epoll (Asio) like it does for every transport.
//
// Waking. The link hands its eventfd to the publisher at start (shm_wake.hpp);
// once the publisher has it, the link marks its slot `waiting_eventfd` before
// the io thread blocks and the publisher writes the eventfd for the next
// record: one wake-up per message, straight into the io thread's epoll. Until
// then, or when the publisher cannot take it (its wake socket is missing or
// refuses), a small waker thread sleeps on the ring's futex (the publisher
// wakes it only when it sees the slot's waiting flag) and signals the eventfd
// itself. Either way the link is armed again only once the io thread found the
// ring empty, and not while it is paused: a paused link reads nothing, its
// cursor stays, and a reliable publisher waits (backpressure).
//
// Liveness. The wake connection stays open: when it closes, the link checks at
// once whether the publisher is gone. The waker thread re-checks every 100 ms.
//
// Spinning (link_options::spin / busy_poll): when the bus's own io thread polls
// the link (polled_by_bus), it calls poll() between handlers and arms the
// link only through prepare_sleep() before it blocks, so a busy subscriber
// never makes its publisher pay a system call. Without the bus polling, the
// waker thread spins on the ring for the budget before it sleeps on the futex.
//
// Thread-safety: everything but the waker runs on the io thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include "ipcbus/transport.hpp"
#include "shm_reader.hpp"

namespace ipcbus::transport::shm {

class shm_link_state : public link_poller, public std::enable_shared_from_this<shm_link_state> {
 public:
  // Takes an attached reader. Errors: the system error of eventfd().
  shm_link_state(boost::asio::io_context& io, std::unique_ptr<ring_reader> reader, link_callbacks callbacks,
                 const link_options& options, std::error_code& ec);
  ~shm_link_state();
  shm_link_state(const shm_link_state&) = delete;
  shm_link_state& operator=(const shm_link_state&) = delete;

  void start();
  void pause() { paused_ = true; }
  void resume();
  // Stops the waker (joins it), releases the slot. Idempotent; no callback.
  void close();
  // Whether the bus polls this link (it asked to spin and the bus runs its own io thread).
  bool polled() const { return polled_; }

  // link_poller, io thread.
  bool poll() override;
  bool ready() const override { return !closed_ && !paused_ && reader_->data_available(); }
  void prepare_sleep() override;
  std::chrono::microseconds spin() const override { return spin_; }
  bool busy_poll() const override { return busy_poll_; }
  bool finished() const override { return closed_; }

 private:
  void wait_event();
  // The eventfd hand-over (shm_wake.hpp) and the connection it leaves open.
  void request_direct_wake();
  void wait_wake_connection();
  void on_wake_connection();
  void drain();
  void drain_later();
  void after_drain(read_result::kind last);
  // True when, after yielding the CPU, there is something to read after all.
  bool yield_before_sleep();
  void arm();
  void ensure_waker();
  void waker_loop();
  // Polls the ring for the spin budget (for ever under busy_poll, until stopped); true when there is data.
  bool spin_for_data();
  void stop_waker();
  void fail(std::error_code ec, const std::string& why);

  std::unique_ptr<ring_reader> reader_;
  link_callbacks callbacks_;
  boost::asio::posix::stream_descriptor event_;
  int event_fd_ = -1;
  boost::asio::posix::stream_descriptor wake_connection_;
  bool direct_ = false;         // the publisher writes event_ for us
  bool asleep_direct_ = false;  // we asked it to, for the next record
  std::thread waker_;           // started when first needed, stopped once direct_
  std::mutex mutex_;
  std::condition_variable cv_;
  bool armed_ = false;                  // guarded by mutex_
  std::atomic<bool> stop_{false};
  std::atomic<bool> publisher_gone_{false};
  bool paused_ = false;
  bool closed_ = false;
  bool draining_ = false;
  unsigned yield_misses_ = 0;   // yields before sleeping that found nothing, since the last that did
  unsigned yields_paused_ = 0;  // sleeps to go before the next such yield
  unsigned idle_polls_ = 0;     // polls that found nothing (poll())
  const std::chrono::microseconds spin_;
  const bool busy_poll_;
  const bool polled_;
  const bool wants_direct_;  // false: the waker spins for us (spin without the bus polling)
};

class shm_link final : public subscriber_link {
 public:
  explicit shm_link(std::shared_ptr<shm_link_state> s) : state_(std::move(s)) {}
  ~shm_link() override { state_->close(); }
  void pause() override { state_->pause(); }
  void resume() override { state_->resume(); }
  void close() override { state_->close(); }
  std::shared_ptr<link_poller> poller() override { return state_->polled() ? state_ : nullptr; }

 private:
  std::shared_ptr<shm_link_state> state_;
};

}  // namespace ipcbus::transport::shm
