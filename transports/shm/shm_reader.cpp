#include "shm_reader.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "ipcbus/error.hpp"
#include "ipcbus/frame_codec.hpp"

namespace ipcbus::transport::shm {

namespace {
constexpr std::uint64_t min_ring = 4096;
constexpr std::uint64_t max_ring = 1ull << 30;  // larger than any ring we make; bounds what we map
// How many times next() follows a publisher that keeps lapping it before it
// lets the io thread do something else.
constexpr int max_attempts = 64;
constexpr auto owner_check_interval = std::chrono::milliseconds(200);
// The byte budget (blob_pool_budget) is what bounds the cache; the count only
// keeps the scan short. It must exceed what a publisher keeps in rotation
// (depth + 1 segments, shm_publisher.cpp): a least-recently-used cache smaller
// than a cyclic working set misses on every frame.
constexpr std::size_t max_cached_blobs = 64;

std::error_code malformed() { return make_error_code(errc::malformed_frame); }
}  // namespace

std::error_code ring_reader::attach(const std::string& name, const link_options& options, std::string& why) {
  name_ = name;
  options_ = options;
  const open_request req{name, true, layout::data_offset + min_ring, layout::data_offset + max_ring, false};
  if (auto ec = open_segment(req, options.security, ring_)) {
    why = ec == errc::malformed_frame ? "segment " + name + " has an impossible size" : ec.message();
    return ec;
  }
  hdr_ = reinterpret_cast<layout::ring_header*>(ring_.data());
  if (auto ec = validate_header(why)) return ec;
  capacity_ = hdr_->capacity;
  mask_ = capacity_ - 1;
  owner_ = hdr_->owner_pid;
  // A lying header only hurts its own readers' data, never their memory: every
  // view is still bounded by the mapping.
  in_place_ = hdr_->qos != static_cast<std::uint32_t>(qos_policy::drop_oldest);
  data_ = ring_.data() + layout::data_offset;
  if (auto ec = claim_slot()) {
    why = "every subscriber slot of " + name + " is taken";
    return ec;
  }
  return {};
}

std::error_code ring_reader::validate_header(std::string& why) const {
  if (hdr_->magic.load(std::memory_order_acquire) != layout::ring_magic) {
    why = "segment " + name_ + " is not an ipcbus ring (bad magic)";
  } else if (hdr_->version != layout::version || hdr_->slots != layout::slot_count ||
             hdr_->data_offset != layout::data_offset) {
    why = "segment " + name_ + " has an unsupported version or layout";
  } else if (const std::uint64_t cap = hdr_->capacity;
             cap < min_ring || cap > max_ring || (cap & (cap - 1)) != 0 || layout::data_offset + cap != ring_.size()) {
    why = "segment " + name_ + " states a capacity that does not match its size";
  } else {
    return {};
  }
  return malformed();
}

// Claim with the pid in the same CAS, then set the cursor, then go active: the
// publisher only ever looks at cursors of active slots.
std::error_code ring_reader::claim_slot() {
  const auto pid = static_cast<std::uint32_t>(::getpid());
  for (std::uint32_t i = 0; i < layout::slot_count; ++i) {
    layout::slot& s = hdr_->slot_table[i];
    std::uint64_t st = s.state.load();
    if (layout::slot_phase(st) != layout::phase_free) continue;
    const std::uint64_t claimed = layout::make_slot_state(layout::slot_generation(st), pid, layout::phase_claimed);
    if (!s.state.compare_exchange_strong(st, claimed)) continue;
    // history_start before tail: then start <= tail always holds for honest values.
    const std::uint64_t hs = hdr_->history_start.load(std::memory_order_acquire);
    const std::uint64_t t = hdr_->tail.load(std::memory_order_acquire);
    const bool history_ok = hs <= t && t - hs <= capacity_ && hs % layout::record_align == 0;
    s.cursor.store(history_ok ? hs : t);
    s.waiting.store(0);
    s.started.store(0);
    raise_slots_used(i + 1);
    const std::uint64_t active = layout::make_slot_state(layout::slot_generation(st), pid, layout::phase_active);
    std::uint64_t expected = claimed;
    if (!s.state.compare_exchange_strong(expected, active)) continue;  // evicted meanwhile: try another
    // The publisher may have announced an overwrite of our start while we were
    // not active yet (see ring_publisher::announce): then start at the head.
    std::uint64_t c = s.cursor.load();
    const auto [ti, h] = intent_and_head();
    if (ti > c && ti - c > capacity_ && h > c && h <= ti && h % layout::record_align == 0)
      s.cursor.compare_exchange_strong(c, h);
    slot_ = &s;
    my_state_ = active;
    return {};
  }
  return make_error_code(errc::would_block);
}

// tail_intent and head. The publisher stores head, then tail_intent
// (ring_publisher::announce): a head read after tail_intent may belong to the
// next announcement and lie past the tail_intent read, which is no sign of a
// broken segment; reading tail_intent again then usually finds that
// announcement's. Head may still be ahead if the publisher is between the two
// stores: recover() waits for that.
std::pair<std::uint64_t, std::uint64_t> ring_reader::intent_and_head() const {
  std::uint64_t ti = hdr_->tail_intent.load();
  const std::uint64_t h = hdr_->head.load();
  if (h > ti) ti = hdr_->tail_intent.load();
  return {ti, h};
}

// Before going active: the publisher scans only slots below slots_used.
void ring_reader::raise_slots_used(std::uint32_t n) {
  std::uint32_t used = hdr_->slots_used.load();
  while (used < n && !hdr_->slots_used.compare_exchange_weak(used, n)) {
  }
}

ring_reader::step ring_reader::fail(std::error_code ec, std::string why) {
  failure_ = {read_result::failed, ec, std::move(why)};
  return step::failed;
}

void ring_reader::release() {
  if (held_end_ == 0) return;
  if (slot_) commit(held_, held_end_);
  held_ = held_end_ = 0;
}

read_result ring_reader::next(frame_view& out) {
  release();
  if (!slot_) {
    fail(make_error_code(errc::closed), "detached");
    return failure_;
  }
  for (int attempt = 0; attempt < max_attempts; ++attempt) {
    if (slot_->state.load(std::memory_order_acquire) != my_state_) {
      fail(make_error_code(errc::peer_gone), "the publisher released this subscriber's slot");
      return failure_;
    }
    const std::uint64_t c = slot_->cursor.load(std::memory_order_acquire);
    // The tail's cache line is the one the publisher writes for every record:
    // read it again only once we have consumed up to what we saw last.
    if (c >= seen_tail_) seen_tail_ = hdr_->tail.load(std::memory_order_acquire);
    const std::uint64_t t = seen_tail_;
    if (c == t) return {};
    if (c > t) {
      // After a jump to head we may be ahead of a write still in progress.
      if (c - t <= capacity_ && c <= hdr_->tail_intent.load(std::memory_order_acquire)) return {};
      fail(malformed(), "read position " + std::to_string(c) + " is past the ring's tail " + std::to_string(t));
      return failure_;
    }
    if (c % layout::record_align != 0 || t % layout::record_align != 0) {
      fail(malformed(), "misaligned ring position");
      return failure_;
    }
    const step st = t - c > capacity_ ? step::lapped : read_record(c, t, out);
    if (st == step::delivered) return read_result::of(read_result::frame);
    if (st == step::failed) return failure_;
    if (st == step::lapped && !recover(c)) {
      fail(malformed(), "lapped, and the ring's head position is invalid");
      return failure_;
    }
  }
  return read_result::of(read_result::again);
}

// Reads the record at `c` (tail `t`). Every check is made against our own
// copy of the capacity, and every doubtful record is first blamed on being
// lapped (overrun) before it is called corrupt.
ring_reader::step ring_reader::read_record(std::uint64_t c, std::uint64_t t, frame_view& out) {
  const std::uint64_t off = c & mask_;
  const std::uint64_t room = capacity_ - off;  // >= 16: positions are 16-aligned
  const std::uint64_t avail = t - c;
  layout::record_header rh;
  std::memcpy(&rh, data_ + off, sizeof rh);
  const std::uint64_t size = layout::record_size(rh.len);
  bool sane = size <= room && size <= avail;
  if (rh.flags == layout::flag_padding) sane = sane && size == room;
  else if (rh.flags == layout::flag_blob) sane = sane && rh.len == sizeof(layout::blob_ref);
  else sane = sane && rh.flags == 0 && rh.len > 0;
  if (!sane) {
    if (overrun(c)) return step::lapped;
    return fail(malformed(), "invalid record header at ring position " + std::to_string(c));
  }
  if (rh.flags == layout::flag_padding) {
    commit(c, c + size);
    return step::retry;
  }
  if (rh.flags == layout::flag_blob) {
    layout::blob_ref ref;
    std::memcpy(&ref, data_ + off + sizeof rh, sizeof ref);
    if (overrun(c)) return step::lapped;
    return read_blob(c, c + size, ref, out);
  }
  if (rh.len > options_.max_frame) {
    if (overrun(c)) return step::lapped;
    return fail(make_error_code(errc::message_too_large), "frame of " + std::to_string(rh.len) +
                                                            " bytes exceeds the limit of " +
                                                            std::to_string(options_.max_frame));
  }
  if (in_place_) {
    const step st = decode(std::string_view(data_ + off + sizeof rh, rh.len), out);
    // No overrun check on success: the publisher does not write over what a
    // reader it can see has not passed (newcomers are moved out of the way
    // by claim_slot and announce), and reading tail_intent here would pull
    // the line the publisher writes for every record into this core each time.
    if (st == step::failed && overrun(c)) return step::lapped;
    if (st == step::delivered) {
      held_ = c;
      held_end_ = c + size;
      mark_started();
    }
    return st;
  }
  buffer_.assign(data_ + off + sizeof rh, rh.len);
  if (overrun(c)) return step::lapped;
  if (!commit(c, c + size)) return step::retry;  // the publisher lapped us meanwhile
  mark_started();
  return decode(buffer_, out);
}

// Large frames, in a side segment the publisher may reuse once every reader
// passed the record (README.md "Side segments"). The segment's name comes from
// the ring's own name and the record's segment number, never from segment
// bytes; its mapping is kept for the next time. The segment's header must say
// it holds this record's frame (use, size). In place (reliable, drop_newest)
// our cursor stays on the record until release(), so the publisher does not
// reuse the segment under the callback. drop_oldest copies the frame out and
// checks `use` again afterwards: a publisher that lapped us may have reused it.
ring_reader::step ring_reader::read_blob(std::uint64_t c, std::uint64_t next, const layout::blob_ref& ref,
                                         frame_view& out) {
  if (ref.size > options_.max_frame) {
    if (overrun(c)) return step::lapped;
    return fail(make_error_code(errc::message_too_large), "frame of " + std::to_string(ref.size) +
                                                            " bytes exceeds the limit of " +
                                                            std::to_string(options_.max_frame));
  }
  const char* base = nullptr;
  if (const auto ec = map_blob(ref.segment, ref.size, base)) {
    if (ec == errc::peer_gone) return blob_gone(c, next, ref, "does not exist");
    if (overrun(c)) return step::lapped;
    return fail(ec, "side segment " + blob_name(name_, ref.segment) + ": " + ec.message());
  }
  const auto* bh = reinterpret_cast<const layout::blob_header*>(base);
  const auto holds_this = [&] {
    return bh->use.load() == ref.use && bh->magic == layout::blob_magic && bh->segment == ref.segment &&
           bh->size == ref.size;
  };
  if (!holds_this()) return blob_gone(c, next, ref, "does not hold the frame its record names");
  const char* frame = base + sizeof(layout::blob_header);
  if (in_place_) {
    const step st = decode(std::string_view(frame, ref.size), out);
    if (st == step::delivered) {
      held_ = c;
      held_end_ = next;
      mark_started();
    }
    return st;
  }
  buffer_.assign(frame, ref.size);
  std::atomic_thread_fence(std::memory_order_acquire);  // the copy before the second look (seqlock)
  if (overrun(c)) return step::lapped;  // the record itself was overwritten: recover() finds the head
  if (bh->use.load(std::memory_order_relaxed) != ref.use) {
    // Reused under our copy: the publisher lapped us (and moved our cursor)
    // or, if it has not, released it before we attached: a loss.
    if (slot_->cursor.load() != c) return step::lapped;
    commit(c, next);
    return step::retry;
  }
  if (!commit(c, next)) return step::retry;  // the publisher lapped us meanwhile
  mark_started();
  return decode(buffer_, out);
}

// The record's side segment is gone or holds another frame. Legitimately so
// when the publisher released it before we got there (we attached in between,
// or it closed without draining) or it was reclaimed after the publisher died:
// then a loss, which shows as a sequence gap. Otherwise the segment is corrupt.
ring_reader::step ring_reader::blob_gone(std::uint64_t c, std::uint64_t next, const layout::blob_ref& ref,
                                         const std::string& what) {
  if (overrun(c)) return step::lapped;
  if (ref.use < hdr_->blobs_released.load(std::memory_order_acquire) || hdr_->closed.load() != 0 ||
      layout::process_gone(owner_)) {
    commit(c, next);
    return step::retry;
  }
  return fail(malformed(), "a record refers to side segment " + blob_name(name_, ref.segment) + ", which " + what);
}

// The mapping of side segment `segment`, big enough for a frame of `size`
// bytes: the cached one, or a new one (read-only, at most what a frame of
// max_frame may take). Errors: peer_gone (no such segment), access_denied,
// malformed_frame (too small or too large).
std::error_code ring_reader::map_blob(std::uint64_t segment, std::uint64_t size, const char*& base) {
  const std::uint64_t need = sizeof(layout::blob_header) + size;
  for (auto& b : blobs_) {
    if (b.segment != segment) continue;
    if (b.map.size() < need) return malformed();  // segments never change size
    b.last_used = ++blob_clock_;
    base = b.map.data();
    return {};
  }
  mapped_segment m;
  const open_request req{blob_name(name_, segment), false, need,
                         layout::max_blob_segment(options_.max_frame), false};
  if (auto ec = open_segment(req, options_.security, m)) return ec;
  // Room for it. Nothing is held here (next() released the last frame), so
  // any mapping may go: first those of segments the publisher unlinked (it
  // never writes them again, and our mapping alone keeps their memory), then
  // the least recently used.
  std::erase_if(blobs_, [&](const cached_blob& b) {
    struct stat st {};
    return ::stat(("/dev/shm" + blob_name(name_, b.segment)).c_str(), &st) != 0 && errno == ENOENT;
  });
  std::uint64_t bytes = m.size();
  for (const auto& b : blobs_) bytes += b.map.size();
  while (!blobs_.empty() &&
         (blobs_.size() >= max_cached_blobs || bytes > layout::blob_pool_budget(capacity_))) {
    auto lru = std::min_element(blobs_.begin(), blobs_.end(),
                                [](const cached_blob& a, const cached_blob& b) { return a.last_used < b.last_used; });
    bytes -= lru->map.size();
    blobs_.erase(lru);
  }
  blobs_.push_back({segment, std::move(m), ++blob_clock_});
  base = blobs_.back().map.data();
  return {};
}

// A record holds one frame in the local layout (frame_codec.hpp), sized by the
// record (or the side segment's size): the frame's own sizes must add up to it.
ring_reader::step ring_reader::decode(std::string_view bytes, frame_view& out) {
  if (decode_local_frame(bytes, out)) return fail(malformed(), "record length does not match its frame");
  return step::delivered;
}

// Whether the publisher has started to overwrite the bytes at `c`: the seqlock
// check, made after copying. The fence keeps the copy before the load.
bool ring_reader::overrun(std::uint64_t c) const {
  std::atomic_thread_fence(std::memory_order_acquire);
  const std::uint64_t ti = hdr_->tail_intent.load(std::memory_order_relaxed);
  return ti > c && ti - c > capacity_;
}

// Lapped: either the publisher already moved our cursor (it does, under
// drop_oldest, and counted the loss), or we were not visible to it yet: then
// jump to the oldest intact record. The gap shows up as a sequence gap.
bool ring_reader::recover(std::uint64_t c) {
  if (slot_->cursor.load(std::memory_order_acquire) != c) return true;
  const auto [ti, h] = intent_and_head();
  if (h > ti) {
    // A publisher between storing head and tail_intent: look again (the
    // caller's next attempt, or the next drain). Only the same head staying
    // ahead for a whole second is a broken segment. Kept with the head it
    // was seen with: tail_intent only grows, so once it has passed a head
    // that head is never ahead again, and an old sighting of another head
    // says nothing about this one.
    const auto now = std::chrono::steady_clock::now();
    if (h != head_ahead_) {
      head_ahead_ = h;
      head_ahead_since_ = now;
    }
    return now - head_ahead_since_ < std::chrono::seconds(1);
  }
  if (h <= c || ti - h > capacity_ || h % layout::record_align != 0) return false;
  std::uint64_t expected = c;
  slot_->cursor.compare_exchange_strong(expected, h);
  return true;
}

// Moves the cursor past a record we hold a copy of. Fails when the publisher
// moved it first (it then counted the record as dropped: we must not deliver).
bool ring_reader::commit(std::uint64_t c, std::uint64_t next) {
  std::uint64_t expected = c;
  const bool ok = slot_->cursor.compare_exchange_strong(expected, next);
  if (hdr_->publisher_waiting.load() != 0) {  // seq_cst after the CAS: pairs with the publisher's re-check
    hdr_->space_futex.fetch_add(1);
    layout::futex_wake_all(hdr_->space_futex);
  }
  return ok;
}

// Until this is set, a drop_oldest publisher does not lap us (for a while):
// the first frame we deliver is the bus's baseline for counting gaps, so it
// must be the first one sent after we attached.
void ring_reader::mark_started() {
  if (started_) return;
  started_ = true;
  slot_->started.store(1, std::memory_order_release);
}

bool ring_reader::data_available() const {
  if (!slot_) return false;
  if (slot_->state.load(std::memory_order_acquire) != my_state_) return true;
  return hdr_->tail.load() > slot_->cursor.load();
}

bool ring_reader::publisher_gone() {
  if (hdr_->closed.load(std::memory_order_acquire) != 0) return true;
  const std::int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                               std::chrono::steady_clock::now().time_since_epoch())
                               .count();
  const std::int64_t last = last_owner_check_.load(std::memory_order_relaxed);
  if (now - last < std::chrono::nanoseconds(owner_check_interval).count()) return false;
  last_owner_check_.store(now, std::memory_order_relaxed);
  return layout::process_gone(owner_);
}

void ring_reader::wait_for_data(std::chrono::milliseconds timeout) {
  if (!slot_) return;
  const std::uint32_t seen = hdr_->data_futex.load();
  slot_->waiting.store(1);  // seq_cst, then the tail load: pairs with the publisher's tail store and scan
  if (!data_available() && hdr_->closed.load() == 0) layout::futex_wait(hdr_->data_futex, seen, timeout);
  slot_->waiting.store(0);
}

bool ring_reader::sleep_on_eventfd() {
  if (!slot_) return false;
  slot_->waiting.store(layout::waiting_eventfd);  // seq_cst, then the tail load: as in wait_for_data
  if (!data_available() && hdr_->closed.load() == 0) return true;
  stop_sleeping_on_eventfd();
  return false;
}

void ring_reader::stop_sleeping_on_eventfd() {
  if (!slot_) return;
  std::uint32_t w = layout::waiting_eventfd;
  slot_->waiting.compare_exchange_strong(w, 0);
}

bool ring_reader::publisher_gone_now() const {
  return hdr_->closed.load(std::memory_order_acquire) != 0 || layout::process_gone(owner_);
}

void ring_reader::wake_sleepers() {
  if (!hdr_) return;
  // Other subscribers of this ring wake too and go back to sleep: harmless.
  hdr_->data_futex.fetch_add(1);
  layout::futex_wake_all(hdr_->data_futex);
}

void ring_reader::detach() {
  release();
  if (!slot_) return;
  slot_->waiting.store(0);
  std::uint64_t expected = my_state_;
  slot_->state.compare_exchange_strong(expected, layout::freed_state(my_state_));
  slot_ = nullptr;
}

}  // namespace ipcbus::transport::shm
