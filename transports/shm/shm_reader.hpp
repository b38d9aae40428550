// The subscriber side of one shm:// ring, without any threading: attaches to
// the segment (claims a slot), reads records at its cursor, validates them and
// decodes frames. shm_link drives it from the io thread and a waker thread.
//
// Nothing read from the segment is trusted: the fixed header is validated and
// copied once at attach (capacity and offsets are then used from our copy),
// and every position and length read later is checked against the mapping
// before a byte is touched. A corrupt segment yields an error, never an
// out-of-bounds read.
//
// Thread-safety: next() and detach() on one thread (the io thread);
// data_available(), publisher_gone() and wait_for_data() may run concurrently
// on one other thread (the waker) until detach().
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <system_error>
#include <vector>

#include "ipcbus/transport.hpp"
#include "shm_layout.hpp"
#include "shm_segment.hpp"

namespace ipcbus::transport::shm {

struct read_result {
  enum kind { frame, empty, again, failed };
  kind what = empty;
  std::error_code ec;  // when failed
  std::string why;     // when failed
  static read_result of(kind k) {
    read_result r;
    r.what = k;
    return r;
  }
};

class ring_reader {
 public:
  ring_reader() = default;
  ~ring_reader() { detach(); }
  ring_reader(const ring_reader&) = delete;
  ring_reader& operator=(const ring_reader&) = delete;

  // Opens the ring `name`, validates its header and claims a slot, starting at
  // the history window. Errors: peer_gone (no such segment), access_denied
  // (owned by a uid we do not accept), malformed_frame (not a valid ring; `why`
  // says what is wrong), would_block (every slot taken).
  std::error_code attach(const std::string& name, const link_options& options, std::string& why);

  // The next frame; its views stay valid until release() or the next call.
  // `empty`: nothing to read now; `again`: the publisher lapped us repeatedly,
  // call again later; `failed`: the link is over (malformed_frame,
  // message_too_large, peer_gone).
  //
  // Under reliable and drop_newest the publisher never overwrites what our
  // cursor has not passed, so the views point into the ring itself (zero
  // copy) and the cursor moves only at release(): a reliable publisher waits
  // for the callback to finish. Under drop_oldest the publisher may lap us at
  // any moment, so the frame is copied out first and checked for overwriting.
  read_result next(frame_view& out);
  // Done with the frame next() returned: lets the publisher reuse its bytes.
  void release();

  // Whether next() has something to do (data, or an eviction to report).
  bool data_available() const;
  // The publisher closed its ring or its process no longer exists.
  bool publisher_gone();
  // The publisher closed its ring (one load; no process check).
  bool publisher_closed() const { return hdr_ != nullptr && hdr_->closed.load(std::memory_order_acquire) != 0; }
  // Sleeps on the ring's data futex until a record is published (or `timeout`).
  void wait_for_data(std::chrono::milliseconds timeout);
  // Asks the publisher to write our eventfd (handed over, shm_wake.hpp) for the
  // next record. False, and not asked, when there is already something to read
  // or the ring is closed. The publisher takes the request back when it wakes us.
  bool sleep_on_eventfd();
  // Takes the request back if the publisher has not (the io thread is awake).
  void stop_sleeping_on_eventfd();
  // publisher_gone() without its rate limit on the process check.
  bool publisher_gone_now() const;
  // What the wake request (shm_wake.hpp) names; valid while attached.
  const std::string& name() const { return name_; }
  std::uint32_t owner_pid() const { return owner_; }
  std::uint32_t slot_index() const { return static_cast<std::uint32_t>(slot_ - hdr_->slot_table); }
  std::uint64_t slot_state() const { return my_state_; }
  // Makes every thread sleeping in wait_for_data on this ring re-check at once.
  void wake_sleepers();
  // Releases the slot; the mapping stays until destruction. Idempotent.
  void detach();

 private:
  enum class step { delivered, retry, lapped, failed };
  std::error_code validate_header(std::string& why) const;
  std::error_code claim_slot();
  void raise_slots_used(std::uint32_t n);
  std::pair<std::uint64_t, std::uint64_t> intent_and_head() const;
  step read_record(std::uint64_t c, std::uint64_t t, frame_view& out);
  step read_blob(std::uint64_t c, std::uint64_t next, const layout::blob_ref& ref, frame_view& out);
  step blob_gone(std::uint64_t c, std::uint64_t next, const layout::blob_ref& ref, const std::string& what);
  std::error_code map_blob(std::uint64_t segment, std::uint64_t size, const char*& base);
  step decode(std::string_view bytes, frame_view& out);
  bool overrun(std::uint64_t c) const;
  bool recover(std::uint64_t c);
  bool commit(std::uint64_t c, std::uint64_t next);
  void mark_started();
  step fail(std::error_code ec, std::string why);

  mapped_segment ring_;
  // Side segments mapped before, kept for when the publisher reuses them: at
  // most max_cached_blobs, together at most 4 × capacity bytes (or one of any
  // size). Least recently used first out.
  struct cached_blob {
    std::uint64_t segment = 0;
    mapped_segment map;
    std::uint64_t last_used = 0;
  };
  std::vector<cached_blob> blobs_;
  std::uint64_t blob_clock_ = 0;
  std::string name_;
  std::string buffer_;   // the copy of the frame last returned
  link_options options_;
  layout::ring_header* hdr_ = nullptr;
  const char* data_ = nullptr;
  std::uint64_t capacity_ = 0;
  std::uint64_t mask_ = 0;
  std::uint32_t owner_ = 0;
  layout::slot* slot_ = nullptr;
  std::uint64_t my_state_ = 0;
  bool started_ = false;
  bool in_place_ = false;          // read frames in the ring (see next())
  std::uint64_t held_ = 0;         // in place: the record being delivered, from held_ to held_end_
  std::uint64_t held_end_ = 0;
  std::uint64_t seen_tail_ = 0;    // the ring's tail when we last looked
  // The last head recover() saw ahead of tail_intent, and since when.
  std::uint64_t head_ahead_ = 0;
  std::chrono::steady_clock::time_point head_ahead_since_{};
  read_result failure_;
  // Nanoseconds on the steady clock; atomic because the io thread (polling)
  // and the waker may both ask whether the publisher is gone.
  std::atomic<std::int64_t> last_owner_check_{0};
};

}  // namespace ipcbus::transport::shm
