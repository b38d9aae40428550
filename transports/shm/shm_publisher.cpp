#include "shm_publisher.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <new>
#include <thread>

#include "ipcbus/error.hpp"
#include "ipcbus/log.hpp"

namespace ipcbus::transport::shm {

namespace {
constexpr std::uint64_t min_capacity = 64 * 1024;
constexpr std::uint64_t max_capacity = 64ull << 20;
constexpr std::uint64_t frame_budget = 64 * 1024;  // ring bytes planned per queued frame
constexpr std::uint64_t min_record = layout::record_size(1);  // the smallest a record can be
// How often a waiting publisher checks whether the subscribers it waits for
// still exist, and how often housekeeping does (it costs a kill() and a
// /proc read per subscriber, and only matters for counts and side segments).
constexpr auto eviction_interval = std::chrono::milliseconds(10);
constexpr auto idle_eviction_interval = std::chrono::milliseconds(500);
// Longest single sleep of a waiting publisher, so that evictions and close are noticed.
constexpr auto max_sleep = std::chrono::milliseconds(10);
// How long a drop_oldest publisher spares a subscriber's first frame.
constexpr auto newcomer_grace = std::chrono::seconds(1);
}  // namespace

std::uint64_t ring_capacity(const topic_settings& s) {
  const std::uint64_t per_frame = std::min(frame_budget, layout::record_size(s.max_message + max_frame_overhead));
  const std::uint64_t want = (std::uint64_t{s.depth} + s.history) * per_frame;
  return std::bit_ceil(std::clamp(want, min_capacity, max_capacity));
}

ring_publisher::~ring_publisher() {
  close();
  for (std::size_t i = 0; i < layout::slot_count; ++i) forget_wake_target(i);
}

std::error_code ring_publisher::open() {
  name_ = ring_name(options_.domain_dir, options_.publisher_id);
  marker_ = marker_path(options_.domain_dir, options_.publisher_id);
  capacity_ = ring_capacity(options_.settings);
  mask_ = capacity_ - 1;
  // The marker first: a segment without one is an orphan to reclaim_shm_segments.
  if (auto ec = write_marker(marker_, name_)) return ec;
  if (auto ec = create_segment(name_, layout::data_offset + capacity_, ring_)) {
    ::unlink(marker_.c_str());
    return ec;
  }
  hdr_ = new (ring_.data()) layout::ring_header();
  data_ = ring_.data() + layout::data_offset;
  hdr_->version = layout::version;
  hdr_->slots = layout::slot_count;
  hdr_->capacity = capacity_;
  hdr_->data_offset = layout::data_offset;
  hdr_->publisher_id = options_.publisher_id;
  hdr_->owner_pid = static_cast<std::uint32_t>(::getpid());
  hdr_->qos = static_cast<std::uint32_t>(options_.settings.qos);
  hdr_->blobs_released.store(next_blob_id_, std::memory_order_relaxed);
  // Everything above must be visible to whoever sees the magic.
  hdr_->magic.store(layout::ring_magic, std::memory_order_release);
  return {};
}

ring_publisher::placement ring_publisher::place(std::uint64_t len) const {
  placement at{};
  const std::uint64_t size = layout::record_size(len);
  const std::uint64_t room = capacity_ - (tail_ & mask_);
  at.pad = size > room ? room : 0;  // records never wrap: pad to the start instead
  at.start = tail_ + at.pad;
  at.end = at.start + size;
  at.len = len;
  return at;
}

std::size_t ring_publisher::index_of(std::uint64_t pos) const {
  const auto it = std::lower_bound(records_.begin(), records_.end(), pos,
                                   [](const record& r, std::uint64_t p) { return r.pos < p; });
  return static_cast<std::size_t>(it - records_.begin());
}

void ring_publisher::forget_oldest_record() {
  records_.pop_front();
  ++forgotten_;
}

std::size_t ring_publisher::active_count() const {
  std::size_t n = 0;
  for (std::size_t i = 0, used = slots_in_use(); i < used; ++i)
    if (layout::slot_phase(slot_at(i).state.load(std::memory_order_acquire)) == layout::phase_active) ++n;
  return n;
}

// True when writing `at` overwrites nothing a live subscriber has yet to read
// and leaves nobody more than `depth` frames behind. seq_cst loads: they pair
// with a reader's CAS and its check of publisher_waiting (no lost wake-up).
//
// A cursor only moves forward while its slot keeps the same state, so the
// value seen last is a safe underestimate: the cursor's cache line (which the
// reader writes for every record) is read again only when that value says
// there is no room. With it is kept the cursor's ordinal (records ever written
// before it), so that how many frames it is behind costs a subtraction, not a
// search of the index, for every record.
bool ring_publisher::room_for(const placement& at) const {
  const std::uint64_t oldest_kept = at.end > capacity_ ? at.end - capacity_ : 0;
  const std::uint64_t written = forgotten_ + records_.size();
  const std::size_t depth = options_.settings.depth;
  const auto fits = [&](const seen_cursor& seen) {
    const std::uint64_t c = seen.cursor;
    if (c > tail_) return true;  // nonsense from a broken reader: it cannot hold us up
    if (c < oldest_kept) return false;
    // Every record takes at least min_record bytes: a reader closer than depth
    // of those cannot be depth frames behind.
    if ((tail_ - c) / min_record + 1 <= depth) return true;
    return written - std::max(seen.ordinal, forgotten_) + 1 <= depth;
  };
  for (std::size_t i = 0, used = slots_in_use(); i < used; ++i) {
    const layout::slot& s = slot_at(i);
    const std::uint64_t st = s.state.load();
    if (layout::slot_phase(st) != layout::phase_active) continue;
    seen_cursor& seen = cursors_seen_[i];
    if (seen.state == st && fits(seen)) continue;
    seen.state = st;
    seen.cursor = s.cursor.load();
    seen.ordinal = forgotten_ + index_of(seen.cursor);
    if (!fits(seen)) return false;
  }
  return true;
}

std::error_code ring_publisher::wait_for_room(std::unique_lock<std::mutex>& lock, const placement& at) {
  if (room_for(at)) return {};  // the common case, without reading the clock
  const auto deadline = clock::now() + options_.settings.publish_timeout;
  for (int spins = 0; !room_for(at); ++spins) {
    if (clock::now() >= deadline) {
      ++counters_.timeouts;
      counters_changed();
      return make_error_code(errc::timed_out);
    }
    // A subscriber killed while it held us up must not hold us up for ever.
    evict_dead(eviction_interval);
    if (spins < 8) {  // a reader that is busy right now is usually done within a yield or two
      lock.unlock();
      std::this_thread::yield();
      lock.lock();
    } else {
      sleep_for_space(lock, deadline, [&] { return room_for(at); });
    }
    if (closed_) return make_error_code(errc::closed);
  }
  return {};
}

// Sleeps on space_futex until a reader moves its cursor (or a short timeout).
// Readers post only while publisher_waiting is set, so they pay no syscall otherwise.
void ring_publisher::sleep_for_space(std::unique_lock<std::mutex>& lock, clock::time_point deadline,
                                     const std::function<bool()>& ready) {
  // Flag first, then the futex word, then look once more: a reader that moved
  // its cursor after our last look either sees the flag (and bumps the word,
  // so the wait returns at once) or moved before this re-check, which sees it.
  hdr_->publisher_waiting.store(1);
  const std::uint32_t seen = hdr_->space_futex.load();
  if (!ready()) {
    const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - clock::now());
    lock.unlock();
    layout::futex_wait(hdr_->space_futex, seen, std::min<std::chrono::nanoseconds>(left, max_sleep));
    lock.lock();
  }
  hdr_->publisher_waiting.store(0);
}

// Where a drop_oldest write must move `cursor`: past every record it overwrites
// and close enough to the tail that at most depth frames (this one included)
// wait for that reader. Returns `cursor` when it may stay.
std::uint64_t ring_publisher::drop_target(std::uint64_t cursor, const placement& at) const {
  const std::uint64_t oldest_kept = at.end > capacity_ ? at.end - capacity_ : 0;
  const std::size_t depth = options_.settings.depth;
  const std::size_t first = index_of(cursor);
  std::size_t idx = std::max(first, index_of(oldest_kept));
  if (records_.size() + 1 > depth) idx = std::max(idx, records_.size() + 1 - depth);
  if (idx == first && cursor >= oldest_kept) return cursor;
  const std::uint64_t target = idx < records_.size() ? records_[idx].pos : tail_;
  return std::max(target, cursor);
}

// drop_oldest and a subscriber that has not consumed a frame yet: the bus
// counts gaps from the first frame a link delivers, so lapping it now would
// lose frames without a trace. For a grace period the new frame is dropped
// instead (counted); a newcomer that never reads is lapped after it.
bool ring_publisher::would_lap_newcomer(const placement& at) {
  const auto now = clock::now();
  for (std::size_t i = 0, used = slots_in_use(); i < used; ++i) {
    const layout::slot& s = slot_at(i);
    const std::uint64_t st = s.state.load();
    if (layout::slot_phase(st) != layout::phase_active || s.started.load(std::memory_order_acquire)) continue;
    auto& [state, since] = newcomers_[i];
    if (state != st) {
      state = st;
      since = now;
    }
    const std::uint64_t c = s.cursor.load();
    if (now - since < newcomer_grace && c <= tail_ && drop_target(c, at) != c) return true;
  }
  return false;
}

// drop_oldest: laps the readers that are too far behind, counting what each
// loses. The CAS races with the reader's own CAS, so a record is either
// delivered or counted as dropped, never both and never neither.
void ring_publisher::make_room(const placement& at) {
  for (std::size_t i = 0, used = slots_in_use(); i < used; ++i) {
    layout::slot& s = slot_at(i);
    if (layout::slot_phase(s.state.load()) != layout::phase_active) continue;
    for (;;) {
      std::uint64_t c = s.cursor.load();
      if (c > tail_) break;
      const std::uint64_t target = drop_target(c, at);
      if (target == c) break;
      if (s.cursor.compare_exchange_strong(c, target)) {
        counters_.dropped += index_of(target) - index_of(c);
        counters_changed();
        break;
      }
    }
  }
}

std::error_code ring_publisher::send(const frame_ptr& frame) {
  frame_slot slot;
  if (auto ec = reserve(frame->bytes.size(), frame->sequence, slot)) return ec;
  if (slot.dropped) return {};
  std::memcpy(slot.data, frame->bytes.data(), frame->bytes.size());
  return commit_reserved();
}

std::error_code ring_publisher::reserve(std::size_t size, std::uint64_t sequence, frame_slot& out) {
  out = frame_slot{};
  std::unique_lock lock(mutex_);
  if (closed_) return make_error_code(errc::closed);
  if (pending_.active) return make_error_code(errc::would_block);  // the bus never does this
  // Frames that would take more than a quarter of the ring go to a side segment,
  // so one big frame never stalls the ring for everything else.
  const bool side = layout::record_size(size) > capacity_ / 4;
  const placement at = place(side ? sizeof(layout::blob_ref) : size);
  switch (options_.settings.qos) {
    case qos_policy::reliable:
      if (auto ec = wait_for_room(lock, at)) return ec;
      break;
    case qos_policy::drop_newest:
      if (!room_for(at)) {
        counters_.dropped += std::max<std::size_t>(1, active_count());  // every subscriber misses it
        counters_changed();
        out.dropped = true;
        return {};
      }
      break;
    case qos_policy::drop_oldest:
      if (would_lap_newcomer(at)) {
        counters_.dropped += active_count();
        counters_changed();
        out.dropped = true;
        return {};
      }
      break;
  }
  if (side) {
    if (auto ec = create_blob(size, pending_.blob, pending_.blob_id)) return ec;
    out.data = pending_.blob.data() + sizeof(layout::blob_header);
  } else {
    out.data = data_ + (at.start & mask_) + sizeof(layout::record_header);
  }
  // Only now that the frame will be written: laps counted as drops must happen.
  if (options_.settings.qos == qos_policy::drop_oldest) make_room(at);
  announce(at);
  pending_.active = true;
  pending_.at = at;
  pending_.sequence = sequence;
  pending_.size = size;
  out.size = size;
  return {};
}

// A side segment of its own for a frame of `size` bytes; its header is written
// now, the frame by the caller. Readers find it only through the ring record.
std::error_code ring_publisher::create_blob(std::size_t size, mapped_segment& blob, std::uint64_t& blob_id) {
  const std::uint64_t id = next_blob_id_++;
  if (auto ec = create_segment(blob_name(name_, id), sizeof(layout::blob_header) + size, blob)) {
    log_line(log_level::warn, "topic '" + options_.topic + "': cannot create a side segment for a frame of " +
                                  std::to_string(size) + " bytes: " + ec.message());
    return ec;
  }
  const layout::blob_header h{layout::blob_magic, size, id, 0};
  std::memcpy(blob.data(), &h, sizeof h);
  blob_id = id;
  return {};
}

// Tells readers which bytes are about to change before they do: drop records
// about to be overwritten from the index, store `head` (oldest intact record)
// and `tail_intent` (end of the new record). A reader that copied bytes while
// they changed then sees tail_intent past its position and throws the copy
// away. tail_intent never goes back, even when a reservation is cancelled:
// the caller may already have scribbled over the old bytes.
void ring_publisher::announce(const placement& at) {
  const std::uint64_t oldest_kept = at.end > capacity_ ? at.end - capacity_ : 0;
  while (!records_.empty() && records_.front().pos < oldest_kept) forget_oldest_record();
  const std::uint64_t head = records_.empty() ? at.start : records_.front().pos;
  hdr_->head.store(head, std::memory_order_relaxed);
  // A subscriber attaching during a long loan must not start inside it.
  if (history_pos_ < head) {
    history_pos_ = head;
    hdr_->history_start.store(history_pos_, std::memory_order_release);
  }
  intent_ = std::max(intent_, at.end);
  hdr_->tail_intent.store(intent_);  // seq_cst: ordered before the slot scan below
  std::atomic_thread_fence(std::memory_order_release);
  // A subscriber that took its start (history_start) before this announcement
  // but went active after room_for looked at the slots would read the bytes
  // about to change. Either it sees the new tail_intent after going active and
  // moves itself (ring_reader::claim_slot), or we see it active here.
  for (std::size_t i = 0, used = slots_in_use(); i < used; ++i) {
    layout::slot& s = slot_at(i);
    if (layout::slot_phase(s.state.load()) != layout::phase_active) continue;
    std::uint64_t c = s.cursor.load();
    // Only a newcomer can be there (room_for and make_room keep the others out):
    // frames from before it attached, never counted as its losses.
    if (c < oldest_kept) s.cursor.compare_exchange_strong(c, head);
  }
}

std::error_code ring_publisher::commit_reserved() {
  std::lock_guard lock(mutex_);
  if (!pending_.active) return make_error_code(errc::invalid_argument);
  if (closed_) {
    if (pending_.blob_id) ::shm_unlink(blob_name(name_, pending_.blob_id).c_str());
    end_reservation();
    return make_error_code(errc::closed);
  }
  publish_record();
  end_reservation();
  // Trimming scans every slot: worth it at once only when a side segment may
  // be released; otherwise now and then keeps the index short enough.
  if (!blobs_.empty() || ++publishes_since_trim_ >= 32) {
    publishes_since_trim_ = 0;
    trim();
  }
  return {};
}

void ring_publisher::end_reservation() {
  pending_.active = false;
  pending_.blob_id = 0;
  if (pending_.blob) pending_.blob.reset();
}

void ring_publisher::cancel_reserved() {
  std::lock_guard lock(mutex_);
  if (!pending_.active) return;
  if (pending_.blob_id) ::shm_unlink(blob_name(name_, pending_.blob_id).c_str());
  end_reservation();
}

// Writes the record header (and padding) of the pending frame, whose bytes are
// in place, then publishes the new tail and wakes whoever sleeps.
void ring_publisher::publish_record() {
  const placement& at = pending_.at;
  if (at.pad) {
    const layout::record_header pad{static_cast<std::uint32_t>(at.pad - sizeof(layout::record_header)),
                                    layout::flag_padding, 0};
    std::memcpy(data_ + (tail_ & mask_), &pad, sizeof pad);
  }
  char* out = data_ + (at.start & mask_);
  const std::uint64_t blob_id = pending_.blob_id;
  const layout::record_header rh{static_cast<std::uint32_t>(at.len), blob_id ? layout::flag_blob : 0u,
                                 pending_.sequence};
  std::memcpy(out, &rh, sizeof rh);
  if (blob_id) {
    const layout::blob_ref ref{blob_id, pending_.size};
    std::memcpy(out + sizeof rh, &ref, sizeof ref);
  }
  hdr_->tail.store(at.end);  // seq_cst: ordered before the check of the waiting flags
  tail_ = at.end;
  records_.push_back({at.start, at.end, blob_id});
  if (blob_id) blobs_.push_back(records_.back());
  const std::size_t h = options_.settings.history;
  history_pos_ = h == 0 ? tail_ : records_[records_.size() > h ? records_.size() - h : 0].pos;
  hdr_->history_start.store(history_pos_, std::memory_order_release);
  wake_readers();
}

// A system call only when somebody sleeps: the common case costs one atomic
// add. A subscriber that handed over its eventfd is woken through it, once per
// sleep (the flag is taken back first); the others share one FUTEX_WAKE.
void ring_publisher::wake_readers() {
  hdr_->data_futex.fetch_add(1);
  bool futex = false;
  for (std::size_t i = 0, used = slots_in_use(); i < used; ++i) {
    layout::slot& s = slot_at(i);
    std::uint32_t w = s.waiting.load();
    if (w == 0) continue;
    if (w == layout::waiting_eventfd) {
      if (!s.waiting.compare_exchange_strong(w, 0)) continue;  // it woke up by itself meanwhile
      if (wake_directly(i)) continue;
    }
    futex = true;
  }
  if (futex) layout::futex_wake_all(hdr_->data_futex);
}

// The slot's state is not checked: whoever registered last for the slot asked
// for this (a newcomer that has not registered yet sleeps on the futex), and an
// owner evicted meanwhile must wake up to learn it.
bool ring_publisher::wake_directly(std::size_t i) {
  const wake_target& t = wake_targets_[i];
  if (t.fd < 0) return false;
  const std::uint64_t one = 1;
  // Non-blocking (shm_wake.cpp): EAGAIN means a wake-up is pending anyway.
  (void)::write(t.fd, &one, sizeof one);
  return true;
}

std::uint64_t ring_publisher::add_wake_target(std::uint32_t slot, std::uint64_t state, std::uint32_t pid,
                                              int event_fd) {
  std::lock_guard lock(mutex_);
  if (closed_ || !hdr_ || slot >= layout::slot_count || layout::slot_phase(state) != layout::phase_active ||
      layout::slot_pid(state) != pid || slot_at(slot).state.load() != state)
    return 0;
  forget_wake_target(slot);
  wake_targets_[slot] = {state, next_wake_token_++, event_fd};
  return wake_targets_[slot].token;
}

void ring_publisher::remove_wake_target(std::uint32_t slot, std::uint64_t token) {
  std::lock_guard lock(mutex_);
  if (slot < layout::slot_count && wake_targets_[slot].token == token) forget_wake_target(slot);
}

void ring_publisher::forget_wake_target(std::size_t i) {
  if (wake_targets_[i].fd >= 0) ::close(wake_targets_[i].fd);
  wake_targets_[i] = {};
}

// Forgets records every live subscriber has passed and that are older than
// the history window: they only matter for counting and lapping, and a big
// ring of tiny frames would otherwise cost a large index. Then unlinks side
// segments, oldest first, once their record left the ring or was forgotten.
// Subscribers that already mapped one keep reading it: unlink removes the name only.
void ring_publisher::trim() {
  std::uint64_t slowest = tail_;
  for (std::size_t i = 0, used = slots_in_use(); i < used; ++i) {
    const layout::slot& s = slot_at(i);
    if (layout::slot_phase(s.state.load()) == layout::phase_active)
      slowest = std::min(slowest, s.cursor.load(std::memory_order_acquire));
  }
  const std::uint64_t keep_from = std::min(slowest, history_pos_);
  while (!records_.empty() && records_.front().end <= keep_from) forget_oldest_record();
  const std::uint64_t head = records_.empty() ? tail_ : records_.front().pos;
  while (!blobs_.empty()) {
    const record& b = blobs_.front();
    const bool in_ring = b.pos >= head;
    if (in_ring && (b.end > slowest || b.pos >= history_pos_)) break;
    ::shm_unlink(blob_name(name_, b.blob_id).c_str());
    blobs_.pop_front();
  }
  // Not past a side segment still being filled (a reservation): readers take
  // ids below blobs_released for unlinked ones.
  std::uint64_t released = blobs_.empty() ? next_blob_id_ : blobs_.front().blob_id;
  if (pending_.blob_id) released = std::min(released, pending_.blob_id);
  hdr_->blobs_released.store(released, std::memory_order_release);
}

void ring_publisher::evict_dead(clock::duration at_most_every) {
  const auto now = clock::now();
  if (now - last_eviction_check_ < at_most_every) return;
  last_eviction_check_ = now;
  for (std::size_t i = 0, used = slots_in_use(); i < used; ++i) {
    layout::slot& s = slot_at(i);
    std::uint64_t st = s.state.load();
    if (layout::slot_phase(st) == layout::phase_free || !layout::process_gone(layout::slot_pid(st))) continue;
    // A new generation: should the owner somehow still run, its CAS fails and it
    // learns it was evicted instead of reading on in a slot it no longer owns.
    if (s.state.compare_exchange_strong(st, layout::freed_state(st)))
      log_line(log_level::info, "topic '" + options_.topic + "': evicted dead subscriber (pid " +
                                    std::to_string(layout::slot_pid(st)) + ")");
  }
}

bool ring_publisher::flush(std::chrono::milliseconds timeout) {
  const auto deadline = clock::now() + timeout;
  std::unique_lock lock(mutex_);
  const auto drained = [&] {
    for (std::size_t i = 0, used = slots_in_use(); i < used; ++i) {
      const layout::slot& s = slot_at(i);
      if (layout::slot_phase(s.state.load()) == layout::phase_active && s.cursor.load() < tail_) return false;
    }
    return true;
  };
  for (;;) {
    if (closed_ || drained()) return true;
    if (clock::now() >= deadline) return false;
    evict_dead(eviction_interval);
    sleep_for_space(lock, deadline, drained);
  }
}

std::size_t ring_publisher::subscriber_count() const {
  std::lock_guard lock(mutex_);
  return closed_ || !hdr_ ? 0 : active_count();
}

endpoint_counters ring_publisher::counters() const {
  std::lock_guard lock(mutex_);
  return counters_;
}

void ring_publisher::maintain() {
  std::lock_guard lock(mutex_);
  if (closed_ || !hdr_) return;
  evict_dead(idle_eviction_interval);
  for (std::size_t i = 0, used = slots_in_use(); i < used; ++i) {
    const std::uint64_t st = slot_at(i).state.load();
    const std::uint64_t now = layout::slot_phase(st) == layout::phase_active ? st : 0;
    if (seen_[i] != 0 && now != seen_[i]) {
      ++counters_.peers_lost;  // left, died or was evicted
      counters_changed();
    }
    seen_[i] = now;
  }
  if (const std::size_t n = active_count(); n != subscribers_seen_) {
    subscribers_seen_ = n;
    counters_changed();
  }
  trim();
}

void ring_publisher::close() {
  std::lock_guard lock(mutex_);
  if (closed_) return;
  closed_ = true;
  if (!hdr_) return;
  hdr_->closed.store(1);
  hdr_->data_futex.fetch_add(1);
  layout::futex_wake_all(hdr_->data_futex);
  for (std::size_t i = 0; i < layout::slot_count; ++i) {
    wake_directly(i);
    forget_wake_target(i);
  }
  for (const auto& b : blobs_) ::shm_unlink(blob_name(name_, b.blob_id).c_str());
  blobs_.clear();
  if (pending_.blob_id) ::shm_unlink(blob_name(name_, pending_.blob_id).c_str());
  hdr_->blobs_released.store(next_blob_id_);
  ::shm_unlink(name_.c_str());
  ::unlink(marker_.c_str());
}

}  // namespace ipcbus::transport::shm
