// ipcbus::bridge::republish_order — keeps the frames republished through one
// of the bridge's publishers in the order the io thread received them.
//
// Why: one republisher per topic is shared by every link that brings the
// topic (bridge::republisher), and each link's frames are republished on that
// link's own worker thread. A link that ended may still have frames queued on
// its worker when the peer comes back, or when the same origin's frames now
// come through another peer (a triangle): two workers would then race for the
// publisher, newer frames could go out before older ones, and a gap (`lost`)
// would show on the wrong frame. The io thread takes a place in line for each
// frame it queues for a republisher; a worker republishes (or spends the
// sequence numbers of) a frame only once every earlier place is done.
//
// No deadlock: places are taken in one order (the io thread's) and each
// worker takes its queue in that order, so the earliest frame not yet done is
// always at the front of its worker's queue and may go.
//
// Thread-safety: take() on the io thread; wait_turn() and done() on any thread.
// A place is best held in a republish_order::place, which is done() when it
// goes, whatever path a frame takes (republished, dropped, an exception).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <utility>

namespace ipcbus::bridge {

class republish_order {
 public:
  // The next place in line. Every place taken must be done() once, whatever
  // becomes of its frame, or the places after it wait until stopped.
  std::uint64_t take() {
    std::lock_guard lock(mutex_);
    return next_++;
  }

  // A place taken in an order, done() when released or destroyed. Move-only;
  // empty (no order) means no turn to wait for.
  class place {
   public:
    place() = default;
    place(std::shared_ptr<republish_order> order) : order_(std::move(order)), at_(order_->take()) {}  // NOLINT
    place(place&& other) noexcept : order_(std::move(other.order_)), at_(other.at_) {}
    place& operator=(place&& other) noexcept {
      if (this != &other) {
        release();
        order_ = std::move(other.order_);
        at_ = other.at_;
      }
      return *this;
    }
    place(const place&) = delete;
    place& operator=(const place&) = delete;
    ~place() { release(); }
    // See republish_order::wait_turn; true at once for an empty place.
    bool wait_turn(const std::function<bool()>& stop) const { return !order_ || order_->wait_turn(at_, stop); }
    void release() {
      if (order_) order_->done(at_);
      order_.reset();
    }

   private:
    std::shared_ptr<republish_order> order_;
    std::uint64_t at_ = 0;
  };

  // Waits until every place before `place` is done, checking `stop` every
  // 10 ms: true when it is this place's turn, false when `stop` said so first.
  bool wait_turn(std::uint64_t place, const std::function<bool()>& stop) {
    std::unique_lock lock(mutex_);
    while (serving_ != place) {
      if (stop && stop()) return false;
      cv_.wait_for(lock, std::chrono::milliseconds(10));
    }
    return true;
  }

  // The frame at `place` was republished, dropped or given up on: the next may go.
  // Out of turn only when a wait was stopped; then kept until its turn comes.
  void done(std::uint64_t place) {
    {
      std::lock_guard lock(mutex_);
      if (place != serving_) {
        done_early_.insert(place);
        return;
      }
      ++serving_;
      while (!done_early_.empty() && *done_early_.begin() == serving_) {
        done_early_.erase(done_early_.begin());
        ++serving_;
      }
    }
    cv_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::uint64_t next_ = 0;          // the place take() gives next
  std::uint64_t serving_ = 0;       // every place before it is done
  std::set<std::uint64_t> done_early_;  // done before their turn (stopped waits)
};

}  // namespace ipcbus::bridge
