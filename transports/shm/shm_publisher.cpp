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
// How long a batch, letting a thread that sleeps on the ring lock in, waits for
// it to take the lock before carrying on (the wake-up takes microseconds).
constexpr auto handoff_wait = std::chrono::microseconds(200);
// How long a drop_oldest publisher spares a subscriber's first frame.
constexpr auto newcomer_grace = std::chrono::seconds(1);
// Released side segments kept for reuse: at most this many (or depth + 1, if
// more), together at most pool_budget() bytes, each for at most pool_idle_time
// unused. Fewer than depth + 1 would churn: a subscriber that falls behind by
// the whole depth and then catches up releases more than the pool keeps, and
// the next such run creates them again.
constexpr std::size_t pool_min_segments = 8;
// Largest frame a brief reservation (frame_slot::brief) holds the lock for.
constexpr std::size_t max_brief_hold = 64 * 1024;
constexpr auto pool_idle_time = std::chrono::seconds(2);
// In a batch, the tail is stored after this many records at most (and at its
// end): the subscriber starts reading before the batch is written, and the
// tail's line, which the subscriber polls, moves between the cores once per
// this many records instead of for each. Never more than half the depth: a
// subscriber that keeps up must not find itself `depth` frames behind
// records it could not read yet (a drop policy would count them lost).
constexpr unsigned batch_visible_every = 32;
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
  visible_every_ = std::clamp<unsigned>(options_.settings.depth / 2, 1, batch_visible_every);
  // The marker first: a segment without one is an orphan to reclaim_shm_segments.
  if (auto ec = write_marker(marker_, name_)) return ec;
  if (auto ec = create_segment(name_, layout::data_offset + capacity_, options_.security, ring_)) {
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
  hdr_->blobs_released.store(next_use_, std::memory_order_relaxed);
  // The pool never holds more than one over its limit (release_blob), so
  // releasing a side segment never allocates, whatever memory is left.
  pool_.reserve(pool_max_segments() + 1);
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
  return records_.lower_bound(pos, [](const record& r, std::uint64_t p) { return r.pos < p; });
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

std::error_code ring_publisher::wait_for_room(std::unique_lock<detail::light_mutex>& lock, const placement& at) {
  if (room_for(at)) return {};  // the common case, without reading the clock
  // The subscribers we wait for may be waiting for records of this batch.
  if (unpublished_) make_visible();
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
void ring_publisher::sleep_for_space(std::unique_lock<detail::light_mutex>& lock, clock::time_point deadline,
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
      if (unpublished_) make_visible();  // nobody is lapped for records it could not read yet
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
  const bool brief = out.brief;
  out = frame_slot{};
  std::unique_lock lock = take_lock();
  const lock_parker park{*this, lock};
  if (auto ec = reserve_locked(lock, size, sequence, out)) return ec;
  if (out.dropped) return {};
  // A brief reservation keeps the lock until commit_reserved: one lock per
  // publish instead of two. Only for frames copied in a moment, so that
  // housekeeping on the io thread never waits long for it.
  if (brief && size <= max_brief_hold) {
    held_ = std::move(lock);
  } else if (batch_) {
    // A large frame is copied with the lock released, in a batch too.
    if (unpublished_) make_visible();
    lock.unlock();
  }
  return {};
}

bool ring_publisher::written_in_one_hold(std::size_t size) const {
  return size <= max_brief_hold && layout::record_size(size) <= capacity_ / 4;
}

// reserve(), fill and commit_reserved() under one lock, for frames that
// reserve() would hold the lock for anyway (brief, in the ring itself).
std::error_code ring_publisher::write_frame(std::size_t size, std::uint64_t sequence, frame_writer_ref write) {
  std::unique_lock lock = take_lock();
  const lock_parker park{*this, lock};
  frame_slot slot;
  if (auto ec = reserve_locked(lock, size, sequence, slot)) return ec;
  if (slot.dropped) return {};
  // The lock is held from here to the commit, so close() cannot come between.
  // A frame in the ring that is never published needs no more than its
  // reservation ended.
  if (auto ec = write_or_cancel(write, slot.data, [&] { end_reservation(); })) return ec;
  finish_commit(lock);
  return {};
}

std::error_code ring_publisher::reserve_locked(std::unique_lock<detail::light_mutex>& lock, std::size_t size,
                                               std::uint64_t sequence, frame_slot& out) {
  if (closed_) return make_error_code(errc::closed);
  if (pending_.active) return make_error_code(errc::would_block);  // the bus never does this
  // Frames that would take more than a quarter of the ring go to a side segment,
  // so one big frame never stalls the ring for everything else.
  const bool side = layout::record_size(size) > capacity_ / 4;
  const placement at = place(side ? sizeof(layout::blob_ref) : size);
  // In a batch: never more than half a ring written past the stored tail, so
  // that neither a cursor moved to a record (drop_oldest) nor the head and
  // history_start announced are ever a ring or more past what readers see.
  if (unpublished_ && at.end > visible_tail_ + capacity_ / 2) make_visible();
  switch (options_.settings.qos) {
    case qos_policy::reliable:
      if (auto ec = wait_for_room(lock, at)) return ec;
      break;
    case qos_policy::drop_newest:
      if (!room_for(at)) {
        if (unpublished_) make_visible();  // what is there, at least, can be read now
        counters_.dropped += std::max<std::size_t>(1, active_count());  // every subscriber misses it
        counters_changed();
        out.dropped = true;
        return {};
      }
      break;
    case qos_policy::drop_oldest:
      if (would_lap_newcomer(at)) {
        if (unpublished_) make_visible();  // what is there, at least, can be read now
        counters_.dropped += active_count();
        counters_changed();
        out.dropped = true;
        return {};
      }
      break;
  }
  // Room in the record index (and the side segment list) now, while a
  // bad_alloc still leaves nothing changed: once the tail is published,
  // publish_record must not fail halfway.
  records_.reserve_one();
  if (side && blobs_.size() == blobs_.capacity()) blobs_.reserve(2 * blobs_.size() + 8);
  if (side) {
    if (auto ec = take_blob(size, pending_.blob)) return ec;
    pending_.use = next_use_++;
    // The new use before the new bytes: a reader copying the old frame out
    // (drop_oldest) then sees the change when it checks after its copy.
    // The fixed fields again too: whatever scribbled over a pooled segment is gone.
    layout::blob_header* h = pending_.blob.header();
    h->magic = layout::blob_magic;
    h->segment = pending_.blob.id;
    h->room = pending_.blob.room();
    h->use.store(pending_.use);
    h->size = size;
    std::atomic_thread_fence(std::memory_order_release);
    out.data = pending_.blob.frame();
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

// A side segment for a frame of `size` bytes: the smallest pooled one that
// fits (and is not more than twice the size class the frame needs), else a
// new one. Readers find it only through the ring record.
std::error_code ring_publisher::take_blob(std::size_t size, side_segment& out) {
  const std::uint64_t largest = layout::max_blob_segment(size);
  std::size_t best = pool_.size();
  // Newest release first: the segment most likely still in every cache.
  for (std::size_t i = pool_.size(); i-- > 0;) {
    const auto& p = pool_[i];
    if (p.seg.room() < size || p.seg.map.size() > largest) continue;
    if (best != pool_.size() && pool_[best].seg.map.size() <= p.seg.map.size()) continue;
    if (reader_at(p.pos, p.end)) continue;
    best = i;
  }
  if (best == pool_.size()) return create_blob(size, out);
  pool_bytes_ -= pool_[best].seg.map.size();
  out = std::move(pool_[best].seg);
  pool_.erase(pool_.begin() + static_cast<std::ptrdiff_t>(best));
  return {};
}

std::error_code ring_publisher::create_blob(std::size_t size, side_segment& out) {
  side_segment seg;
  seg.id = next_segment_++;
  seg.name = blob_name(name_, seg.id);
  if (auto ec = create_segment(seg.name, layout::blob_segment_size(size), options_.security, seg.map)) {
    log_line(log_level::warn, "topic '" + options_.topic + "': cannot create a side segment for a frame of " +
                                  std::to_string(size) + " bytes: " + ec.message());
    return ec;
  }
  auto* h = new (seg.map.data()) layout::blob_header();
  h->magic = layout::blob_magic;
  h->segment = seg.id;
  h->room = seg.room();
  out = std::move(seg);
  return {};
}

// Whether a live reader's cursor is at the record [pos, end): then it may be
// reading the frame in that record's side segment right now, having checked
// the segment's use before it was released. Every other reader that gets to
// that record later reads the segment's use after this scan, and so sees the
// 0 that release_blob stored before it: the record is then a loss to it
// (README.md "Side segments"). seq_cst loads, as release_blob's store.
bool ring_publisher::reader_at(std::uint64_t pos, std::uint64_t end) const {
  if (pos == end) return false;
  for (std::size_t i = 0, used = slots_in_use(); i < used; ++i) {
    const layout::slot& s = slot_at(i);
    if (layout::slot_phase(s.state.load()) != layout::phase_active) continue;
    const std::uint64_t c = s.cursor.load();
    if (c >= pos && c < end) return true;
  }
  return false;
}

// A side segment nobody needs any more: marked free, then pooled for reuse,
// or unlinked when the pool is full. The pool drops its oldest releases first
// to stay within the pool's count and pool_budget(); a single segment is
// kept whatever its size.
void ring_publisher::release_blob(side_segment seg, std::uint64_t pos, std::uint64_t end) {
  seg.header()->use.store(0);  // seq_cst: before any later reader_at scan
  pool_bytes_ += seg.map.size();
  pool_.push_back({std::move(seg), pos, end, clock::now()});
  const std::size_t most = pool_max_segments();
  while (pool_.size() > 1 && (pool_.size() > most || pool_bytes_ > pool_budget())) {
    pool_bytes_ -= pool_.front().seg.map.size();
    unlink_blob(pool_.front().seg);
    pool_.erase(pool_.begin());
  }
}

std::uint64_t ring_publisher::pool_budget() const { return layout::blob_pool_budget(capacity_); }

std::size_t ring_publisher::pool_max_segments() const {
  return std::max<std::size_t>(pool_min_segments, std::size_t{options_.settings.depth} + 1);
}

void ring_publisher::unlink_blob(side_segment& seg) {
  if (seg.id) ::shm_unlink(seg.name.c_str());
  seg.map.reset();
  seg.id = 0;
}

// Housekeeping: side segments nobody reused for a while go.
void ring_publisher::expire_pool() {
  const auto now = clock::now();
  while (!pool_.empty() && now - pool_.front().since >= pool_idle_time) {
    pool_bytes_ -= pool_.front().seg.map.size();
    unlink_blob(pool_.front().seg);
    pool_.erase(pool_.begin());
  }
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
    const std::uint64_t st = s.state.load();
    if (layout::slot_phase(st) != layout::phase_active) continue;
    // A subscriber room_for just passed, in the same state, has a cursor at or
    // past the value it saw, which is past oldest_kept: its cursor's line (the
    // one that subscriber writes for every record) is left where it is.
    if (cursors_seen_[i].state == st && cursors_seen_[i].cursor >= oldest_kept) continue;
    std::uint64_t c = s.cursor.load();
    // Only a newcomer can be there (room_for and make_room keep the others out):
    // frames from before it attached, never counted as its losses.
    if (c < oldest_kept) s.cursor.compare_exchange_strong(c, head);
  }
}

std::error_code ring_publisher::commit_reserved() {
  std::unique_lock lock = take_lock();
  const lock_parker park{*this, lock};
  if (!pending_.active) return make_error_code(errc::invalid_argument);
  if (closed_) {  // close() unlinked a side segment already
    end_reservation();
    return make_error_code(errc::closed);
  }
  finish_commit(lock);
  return {};
}

// The pending frame's bytes are in place: publishes it, then lets a waiting
// thread in (in a batch) and trims the index now and then.
void ring_publisher::finish_commit(std::unique_lock<detail::light_mutex>& lock) {
  publish_record();
  end_reservation();
  // A batch keeps the lock between frames: once the tail is stored, whoever
  // went to sleep waiting for it (counters(), close() from abort()) is let in
  // and given the moment it needs to wake up and take it.
  if (batch_ && unpublished_ == 0 && mutex_.has_sleepers()) {
    lock.unlock();
    const auto give_up = clock::now() + handoff_wait;
    while (!mutex_.is_locked() && clock::now() < give_up) std::this_thread::yield();
    lock.lock();
  }
  // Trimming scans every slot: worth it at once only when a side segment may
  // be released; otherwise now and then keeps the index short enough.
  if (!blobs_.empty() || ++publishes_since_trim_ >= 32) {
    publishes_since_trim_ = 0;
    // The frame is out: housekeeping that runs out of memory must not make
    // the caller believe it is not (it would send it again under the same
    // sequence number, which every subscriber then drops). The next trim
    // or maintain() does it again.
    try {
      trim();
    } catch (const std::bad_alloc&) {
    }
  }
}

std::unique_lock<detail::light_mutex> ring_publisher::take_lock() {
  if (held_.owns_lock()) return std::move(held_);
  if (parked_.owns_lock()) return std::move(parked_);
  return std::unique_lock(mutex_);
}

void ring_publisher::begin_batch() {
  std::unique_lock lock(mutex_);
  batch_ = true;
  parked_ = std::move(lock);
}

void ring_publisher::end_batch() {
  const std::unique_lock lock = take_lock();
  batch_ = false;
  if (unpublished_) make_visible();
}

void ring_publisher::end_reservation() {
  pending_.active = false;
  pending_.use = 0;
  if (pending_.blob.id != 0) pending_.blob = side_segment{};  // only large frames have one: spare the rest
}

// A cancelled loan's side segment was never published: nobody can be reading
// it, so it goes straight back to the pool.
void ring_publisher::cancel_reserved() {
  std::unique_lock lock = take_lock();
  const lock_parker park{*this, lock};
  if (!pending_.active) return;
  if (pending_.use && !closed_) release_blob(std::move(pending_.blob), 0, 0);
  end_reservation();
}

// Writes the record header (and padding) of the pending frame, whose bytes are
// in place, then publishes the new tail and wakes whoever sleeps; in a batch,
// only every few records (a frame in a side segment at once: its segment is
// released by trim, which must not find it unreadable).
void ring_publisher::publish_record() {
  const placement& at = pending_.at;
  if (at.pad) {
    const layout::record_header pad{static_cast<std::uint32_t>(at.pad - sizeof(layout::record_header)),
                                    layout::flag_padding, 0};
    std::memcpy(data_ + (tail_ & mask_), &pad, sizeof pad);
  }
  char* out = data_ + (at.start & mask_);
  const std::uint64_t use = pending_.use;
  const layout::record_header rh{static_cast<std::uint32_t>(at.len), use ? layout::flag_blob : 0u,
                                 pending_.sequence};
  std::memcpy(out, &rh, sizeof rh);
  if (use) {
    const layout::blob_ref ref{use, pending_.blob.id, pending_.size, 0};
    std::memcpy(out + sizeof rh, &ref, sizeof ref);
  }
  tail_ = at.end;
  records_.push_back({at.start, at.end, use});
  if (use) blobs_.push_back({records_.back(), std::move(pending_.blob)});
  ++unpublished_;
  if (!batch_ || use || unpublished_ >= visible_every_) make_visible();
}

void ring_publisher::make_visible() {
  unpublished_ = 0;
  visible_tail_ = tail_;
  hdr_->tail.store(tail_);  // seq_cst: ordered before the check of the waiting flags
  const std::size_t h = options_.settings.history;
  history_pos_ = h == 0 ? tail_ : records_[records_.size() > h ? records_.size() - h : 0].pos;
  hdr_->history_start.store(history_pos_, std::memory_order_release);
  wake_readers();
}

// A system call only when somebody sleeps: the common case costs one atomic
// add. A subscriber that handed over its eventfd is woken through it, once per
// sleep (the flag is taken back first); the others share one FUTEX_WAKE.
//
// data_futex changes only when somebody waits: a subscriber sets its waiting
// flag before it looks at the tail (seq_cst, as our tail store before this
// scan), so either we see the flag here, or it sees the new tail and does not
// sleep. Bumping it for every record would cost a locked instruction each.
void ring_publisher::wake_readers() {
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
  if (futex) {
    hdr_->data_futex.fetch_add(1);
    layout::futex_wake_all(hdr_->data_futex);
  }
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
// ring of tiny frames would otherwise cost a large index. Then releases side
// segments, oldest first, once their record left the ring or was forgotten:
// to the pool for reuse (release_blob), or unlinked. Subscribers that mapped
// an unlinked one keep reading it: unlink removes the name only.
void ring_publisher::trim() {
  std::uint64_t slowest = tail_;
  for (std::size_t i = 0, used = slots_in_use(); i < used; ++i) {
    const layout::slot& s = slot_at(i);
    if (layout::slot_phase(s.state.load()) == layout::phase_active)
      slowest = std::min(slowest, s.cursor.load(std::memory_order_acquire));
  }
  const std::uint64_t keep_from = std::min(slowest, history_pos_);
  while (!records_.empty() && records_.front().end <= keep_from) forget_oldest_record();
  records_.shrink();
  const std::uint64_t head = records_.empty() ? tail_ : records_.front().pos;
  std::size_t n = 0;
  for (; n < blobs_.size(); ++n) {
    const record& b = blobs_[n].rec;
    const bool in_ring = b.pos >= head;
    if (in_ring && (b.end > slowest || b.pos >= history_pos_)) break;
  }
  // Not past a side segment still being filled (a reservation). Stored before
  // the segments are marked free: a reader that finds one free (or reused)
  // then also finds its use below blobs_released, and takes it for a loss.
  std::uint64_t released = n < blobs_.size() ? blobs_[n].rec.use : next_use_;
  if (pending_.use) released = std::min(released, pending_.use);
  hdr_->blobs_released.store(released, std::memory_order_release);
  for (; n > 0; --n) {  // front first: usually one, and at most the frames in flight
    in_flight b = std::move(blobs_.front());
    blobs_.erase(blobs_.begin());  // first: never a moved-from entry left behind
    release_blob(std::move(b.seg), b.rec.pos, b.rec.end);
  }
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
  // On the io thread, which must not wait for a batch: busy now, next time.
  const std::unique_lock lock(mutex_, std::try_to_lock);
  if (!lock.owns_lock() || closed_ || !hdr_) return;
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
  expire_pool();
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
  for (auto& b : blobs_) unlink_blob(b.seg);
  blobs_.clear();
  for (auto& p : pool_) unlink_blob(p.seg);
  pool_.clear();
  pool_bytes_ = 0;
  // A loan still being written keeps its mapping until it ends; only the name goes.
  if (pending_.use) ::shm_unlink(pending_.blob.name.c_str());
  hdr_->blobs_released.store(next_use_);
  ::shm_unlink(name_.c_str());
  ::unlink(marker_.c_str());
}

}  // namespace ipcbus::transport::shm
