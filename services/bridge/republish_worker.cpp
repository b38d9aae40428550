#include "republish_worker.hpp"

#include <pthread.h>
#include <signal.h>

#include "ipcbus/frame_codec.hpp"

namespace ipcbus::bridge {

republish_worker::republish_worker(std::shared_ptr<link_counters> counters, limits lim, std::function<void()> on_room)
    : counters_(std::move(counters)), limits_(lim), on_room_(std::move(on_room)) {
  // The io thread owns the signals (asio::signal_set): this thread starts
  // with all of them blocked, so none interrupts a republish.
  sigset_t all, previous;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &previous);
  thread_ = std::thread([this] { run(); });
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
}

republish_worker::~republish_worker() {
  {
    std::lock_guard lock(mutex_);
    if (!retired_) {
      retired_ = true;
      drop_queued_ = true;
    }
    aborted_ = true;
  }
  wake_.notify_all();
  join();
}

void republish_worker::settle(std::shared_ptr<detail::publisher_core> publisher, std::size_t subscribers,
                              std::chrono::milliseconds wait) {
  {
    std::lock_guard lock(mutex_);
    if (retired_) return;
    job j;
    j.publisher = std::move(publisher);
    j.settle = true;
    j.subscribers = subscribers;
    j.wait = wait;
    queue_.push_back(std::move(j));
  }
  wake_.notify_one();
}

republish_worker::frame_parts republish_worker::locate(std::string_view bytes, const frame_view& decoded) {
  frame_parts parts;
  // Compared as integers: the views may point into another string altogether.
  const auto begin = reinterpret_cast<std::uintptr_t>(bytes.data());
  const auto inside = [&](std::string_view part, std::size_t& offset) {
    if (part.empty()) return true;  // an empty view may point anywhere: offset 0 will do
    const auto at = reinterpret_cast<std::uintptr_t>(part.data());
    if (at < begin || at - begin > bytes.size() || part.size() > bytes.size() - (at - begin)) return false;
    offset = static_cast<std::size_t>(at - begin);
    return true;
  };
  if (!inside(decoded.header.payload_type, parts.type_offset) || !inside(decoded.payload, parts.payload_offset))
    return parts;
  parts.known = true;
  parts.header = decoded.header;
  parts.header.payload_type = {};
  parts.type_size = decoded.header.payload_type.size();
  parts.payload_size = decoded.payload.size();
  return parts;
}

void republish_worker::publish(std::shared_ptr<detail::publisher_core> publisher,
                               std::shared_ptr<republish_order> order, std::string frame,
                               std::shared_ptr<const topic_info> onward_info, std::vector<std::shared_ptr<link>> onward,
                               std::uint64_t lost, const frame_view* decoded) {
  // `decoded` views the caller's string, whose bytes `frame` took over: the
  // same buffer for any frame longer than a short string. Were they copied
  // instead, locate finds the views outside `frame` and the worker decodes.
  frame_parts parts;
  if (decoded) parts = locate(frame, *decoded);
  // The place is done when the job goes, whatever becomes of it; never under
  // mutex_ (wait_turn's stop check takes mutex_ under the order's lock).
  job j;
  if (publisher && order) j.turn = republish_order::place(std::move(order));
  {
    std::lock_guard lock(mutex_);
    if (retired_) {  // the bridge never does this: a link's worker retires with its link
      counters_->dropped.fetch_add(1, std::memory_order_relaxed);
      return;  // the place is given up when `j` goes, after the lock: not waited for on the io thread
    }
    queue_bytes_ += frame.size();
    j.publisher = std::move(publisher);
    j.frame = std::move(frame);
    j.parts = parts;
    j.onward_info = std::move(onward_info);
    j.onward = std::move(onward);
    j.lost = lost;
    queue_.push_back(std::move(j));
    if (full_locked()) was_full_ = true;
  }
  wake_.notify_one();
}

bool republish_worker::full_locked() const {
  return queue_.size() >= limits_.max_jobs || queue_bytes_ >= limits_.max_bytes;
}

bool republish_worker::full() const {
  std::lock_guard lock(mutex_);
  return full_locked();
}

bool republish_worker::idle() const {
  std::lock_guard lock(mutex_);
  return queue_.empty() && !busy_;
}

void republish_worker::retire(std::vector<std::shared_ptr<detail::publisher_core>> publishers,
                              std::chrono::milliseconds drain, bool drop_queued) {
  {
    std::lock_guard lock(mutex_);
    // A second call (the bridge stopping while the link's publishers drain)
    // may only make the worker give up sooner.
    if (!retired_) {
      to_close_ = std::move(publishers);
      drain_ = drain;
    }
    retired_ = true;
    drop_queued_ = drop_queued_ || drop_queued;
  }
  wake_.notify_all();
}

void republish_worker::abort() {
  std::shared_ptr<detail::publisher_core> current;
  {
    std::lock_guard lock(mutex_);
    retired_ = true;
    drop_queued_ = true;
    aborted_ = true;
    current = current_;
  }
  wake_.notify_all();
  if (current) current->abort();
}

bool republish_worker::finished() const {
  std::lock_guard lock(mutex_);
  return finished_;
}

void republish_worker::join() {
  if (thread_.joinable()) thread_.join();
}

// The republishers outlive this worker (a link that comes back goes on
// through them): each frame dropped here spends its sequence number there,
// and the `lost` before it too, in its turn, so that local subscribers see
// the gap where it is. Stopping does not wait for turns: nothing that comes
// after is republished then either.
bool republish_worker::aborted() const {
  std::lock_guard lock(mutex_);
  return aborted_;
}

void republish_worker::drop(std::deque<job>& jobs) {
  const auto stopping = [this] { return aborted(); };
  for (auto& j : jobs) {
    if (j.settle || !j.publisher) continue;
    j.turn.wait_turn(stopping);
    j.publisher->skip_sequences(1 + j.lost);
    j.turn.release();
  }
  jobs.clear();
}

void republish_worker::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return !queue_.empty() || retired_; });
    if (drop_queued_ && !queue_.empty()) {
      std::uint64_t frames = 0;
      for (const auto& j : queue_) frames += !j.settle;
      counters_->dropped.fetch_add(frames, std::memory_order_relaxed);  // received, never republished
      std::deque<job> dropped = std::move(queue_);
      queue_.clear();
      queue_bytes_ = 0;
      // Not under our lock: a republisher's lock may be held by another
      // link's worker waiting for room, and the io thread must not wait for
      // that to queue work here. Busy meanwhile: not idle() until done.
      busy_ = true;
      lock.unlock();
      drop(dropped);
      lock.lock();
      busy_ = false;
      continue;  // look again: more may have come, or retire()
    }
    if (queue_.empty()) {
      if (retired_) break;
      continue;
    }
    job j = std::move(queue_.front());
    queue_.pop_front();
    queue_bytes_ -= j.frame.size();
    // Resume the link a little below the limit, not at once: fewer stops and starts.
    const bool room = was_full_ && queue_.size() < limits_.max_jobs * 3 / 4 && queue_bytes_ < limits_.max_bytes * 3 / 4;
    if (room) was_full_ = false;
    busy_ = true;
    current_ = j.publisher;
    lock.unlock();
    if (room && on_room_) on_room_();
    bool failed = false;
    if (j.settle) {
      // Once the link is gone nobody waits for the first frames of its topics
      // any more: in short slices, so that a worker retired before or during
      // the wait does not spend a second per announced topic.
      const auto until = std::chrono::steady_clock::now() + j.wait;
      const auto retired = [&] {
        std::lock_guard retired_lock(mutex_);
        return retired_;
      };
      while (!retired() && !j.publisher->wait_for_subscribers(j.subscribers, std::chrono::milliseconds(10)) &&
             std::chrono::steady_clock::now() < until) {
      }
    } else {
      frame_view frame;
      // Decoded on the io thread already: the views are rebuilt from offsets
      // (about 320 instructions a frame less than decoding again).
      bool decoded = true;
      if (j.parts.known) {
        const std::string_view bytes = j.frame;
        frame.header = j.parts.header;
        frame.header.payload_type = bytes.substr(j.parts.type_offset, j.parts.type_size);
        frame.payload = bytes.substr(j.parts.payload_offset, j.parts.payload_size);
      } else {
        decoded = !decode_frame(j.frame, frame);
      }
      // After every frame the io thread queued for this publisher before it
      // (on other links' workers too); a wait cut short by stopping drops it.
      const bool turn = j.turn.wait_turn([this] { return aborted(); });
      if (turn && decoded) {
        failed = j.publisher && j.publisher->publish_forwarded(frame.header, frame.payload, j.lost);
      } else {  // spent all the same: the subscribers here see the gap
        if (j.publisher) j.publisher->skip_sequences(1 + j.lost);
        failed = true;
      }
      j.turn.release();  // before passing it on, which may wait for room on a link
      if (failed) counters_->dropped.fetch_add(1, std::memory_order_relaxed);  // timed out: counted by the publisher too
      // Passed on as it came (origin, publisher id and sequence kept, so the
      // next bridges recognise copies), one hop more, whatever became of the
      // local republish: a slow subscriber here is no reason to starve the others.
      if (decoded && j.onward_info) {
        frame_view onward = frame;
        ++onward.header.hop_count;
        for (auto& l : j.onward)
          if (l->push_data(*j.onward_info, onward) == link::push_result::closed)
            l->counters().dropped.fetch_add(1, std::memory_order_relaxed);
      }
    }
    j.publisher.reset();
    j.onward.clear();
    lock.lock();
    busy_ = false;
    current_.reset();
    // The link is gone and a local subscriber is stuck: waiting out the
    // timeout for every frame left would keep this thread for minutes.
    if (failed && retired_) drop_queued_ = true;
  }
  auto publishers = std::move(to_close_);
  const auto drain = drop_queued_ ? std::chrono::milliseconds(0) : drain_;
  lock.unlock();
  for (auto& p : publishers) p->close(drain);
  publishers.clear();
  lock.lock();
  finished_ = true;
}

}  // namespace ipcbus::bridge
