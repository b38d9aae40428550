// The bytes of an shm:// segment, shared by the publisher and its subscribers
// (README.md "Layout"). Everything a process reads here was written by another
// process, possibly a dead, buggy or hostile one: readers copy the fixed header
// fields once at attach and validate every position, length and offset they
// read afterwards against their own copies, never against the segment.
//
// Thread-safety: the atomics are address-free and lock-free (asserted below), so
// they work across processes; plain fields are written before `magic` and never
// again.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <ctime>

namespace ipcbus::transport::shm::layout {

static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<std::uint32_t>) == 4, "futex words must be plain 32-bit");

inline constexpr std::uint64_t ring_magic = 0x31474e4952535049ull;  // "IPSRING1", little endian
inline constexpr std::uint64_t blob_magic = 0x32424f4c42535049ull;  // "IPSBLOB2"
inline constexpr std::uint32_t version = 7;  // 5: frames in the local layout (frame_codec.hpp); 6: tail alone; 7: closed alone
inline constexpr std::uint32_t slot_count = 64;

// Records start 16-byte aligned and their header is 16 bytes, so whatever is
// left before the end of the ring always holds at least a padding header.
inline constexpr std::uint64_t record_align = 16;
inline constexpr std::uint32_t flag_padding = 1;  // skip to the start of the ring
inline constexpr std::uint32_t flag_blob = 2;     // payload is a blob_ref

struct record_header {
  std::uint32_t len;    // payload bytes after this header
  std::uint32_t flags;  // 0, flag_padding or flag_blob
  std::uint64_t seq;    // frame sequence (0 for padding); informative
};
static_assert(sizeof(record_header) == record_align);

inline constexpr std::uint64_t align_up(std::uint64_t n, std::uint64_t a) { return (n + a - 1) & ~(a - 1); }
// Ring bytes a record with `len` payload bytes occupies.
inline constexpr std::uint64_t record_size(std::uint64_t len) {
  return align_up(sizeof(record_header) + len, record_align);
}

// A frame too large for the ring lives in a side segment, <ring name>-b<segment hex>.
// The publisher reuses side segments (README.md "Side segments"): `use` numbers the
// large frames (it only grows, one per frame), `segment` names the side segment
// that holds this one, and the segment's header says which use it holds right now.
struct blob_ref {
  std::uint64_t use;      // this frame's number among the ring's large frames
  std::uint64_t segment;  // names the side segment; segment numbers only grow
  std::uint64_t size;     // bytes of the encoded frame
  std::uint64_t reserved;
};

// The first 64 bytes of a side segment; the frame follows. magic, segment and
// room never change once written; use and size change each time the
// publisher puts a new frame in: `use` first (0 while the segment is free),
// then a release fence, then the bytes, so that a reader that copied the
// bytes and then finds `use` unchanged copied that frame and no other.
struct alignas(64) blob_header {
  std::uint64_t magic;
  std::uint64_t segment;           // its own number, as in its name
  std::uint64_t room;              // frame bytes it can hold: segment size - sizeof(blob_header)
  std::uint64_t reserved;
  std::atomic<std::uint64_t> use;  // blob_ref::use of the frame in it; 0: free
  std::uint64_t size;              // bytes of that frame
};
static_assert(sizeof(blob_header) == 64);

// Side segment sizes come in classes, 4, 5, 6 or 7 times a power of two (at
// least 64 KiB), so that frames of similar sizes reuse the same segments and
// at most a quarter is wasted. A segment is reused for a frame only while it
// is at most twice the class that frame needs, so a reader can bound what it
// maps by max_blob_segment(its max_frame).
inline constexpr std::uint64_t min_blob_segment = 64 * 1024;
inline constexpr std::uint64_t blob_segment_size(std::uint64_t frame_bytes) {
  const std::uint64_t need = sizeof(blob_header) + frame_bytes;
  if (need <= min_blob_segment) return min_blob_segment;
  const std::uint64_t quarter = std::uint64_t{1} << (std::bit_width(need) - 3);  // need >= 4 quarters
  return align_up(need, quarter);
}
inline constexpr std::uint64_t max_blob_segment(std::uint64_t frame_bytes) {
  return 2 * blob_segment_size(frame_bytes);
}
static_assert(blob_segment_size((1u << 20) + 64) == (5u << 18));  // a 1 MiB message: 1.25 MiB

// Bytes of side segments a publisher keeps for reuse, and a subscriber keeps
// mapped, beyond those in flight: 4 rings' worth, at least 64 MiB (so a few
// frames of several MiB fit, whatever the ring). One segment is kept whatever
// its size.
inline constexpr std::uint64_t blob_pool_budget(std::uint64_t ring_capacity) {
  return std::max<std::uint64_t>(4 * ring_capacity, std::uint64_t{64} << 20);
}

// Slot state word: generation (30 bits) | pid (32 bits) | phase (2 bits). The
// pid travels in the same word as the claim so that a subscriber killed right
// after its CAS still leaves a pid the publisher can check.
enum phase : std::uint64_t { phase_free = 0, phase_claimed = 1, phase_active = 2 };
inline constexpr std::uint64_t slot_phase(std::uint64_t s) { return s & 3; }
inline constexpr std::uint32_t slot_pid(std::uint64_t s) { return static_cast<std::uint32_t>(s >> 2); }
inline constexpr std::uint64_t slot_generation(std::uint64_t s) { return s >> 34; }
inline constexpr std::uint64_t make_slot_state(std::uint64_t gen, std::uint32_t pid, std::uint64_t ph) {
  return (gen << 34) | (static_cast<std::uint64_t>(pid) << 2) | ph;
}
// The state that frees slot state `s`: a new generation, so that a stale CAS fails.
inline constexpr std::uint64_t freed_state(std::uint64_t s) {
  return make_slot_state((slot_generation(s) + 1) & ((1ull << 30) - 1), 0, phase_free);
}

// One subscriber. state, waiting and started are written by the owner (state also by a
// publisher evicting a dead owner); cursor is advanced by the owner with a CAS
// and by a drop_oldest publisher with a CAS when it laps the owner, so that a
// record is either consumed or counted as dropped, never both.
//
// The cursor has a cache line of its own: the owner writes it for every record,
// while the publisher reads state and waiting for every record and the cursor
// only when it runs short of room. Sharing one line would move it between the
// two cores twice per message.
// What a sleeping owner wants done when a record arrives (slot::waiting).
inline constexpr std::uint32_t waiting_futex = 1;    // FUTEX_WAKE data_futex
inline constexpr std::uint32_t waiting_eventfd = 2;  // write the eventfd it handed over (shm_wake.hpp)

struct alignas(64) slot {
  std::atomic<std::uint64_t> state;
  std::atomic<std::uint32_t> waiting;  // 0, or how the owner wants to be woken (above)
  std::atomic<std::uint32_t> started;  // 1 once the owner consumed its first frame
  alignas(64) std::atomic<std::uint64_t> cursor;  // absolute position of the next record to read
};
static_assert(sizeof(slot) == 128);

struct alignas(64) ring_header {
  std::atomic<std::uint64_t> magic;  // written last, when everything else is in place
  std::uint32_t version;
  std::uint32_t slots;               // slot_count
  std::uint64_t capacity;            // ring bytes, a power of two
  std::uint64_t data_offset;         // where the ring starts; segment size = data_offset + capacity
  std::uint64_t publisher_id;
  std::uint32_t owner_pid;
  std::uint32_t qos;                 // qos_policy, informative

  // Positions are absolute byte counts since creation; ring offset = position & (capacity - 1).
  // The tail has a cache line of its own: readers poll it, and the publisher
  // writes the fields below it for every record too. Sharing one line would
  // hand it back and forth between the cores once per field instead of once
  // per record.
  alignas(64) std::atomic<std::uint64_t> tail;         // end of the last complete record
  alignas(64) std::atomic<std::uint64_t> tail_intent;  // end of the record being written
  std::atomic<std::uint64_t> head;            // start of the oldest intact record
  std::atomic<std::uint64_t> history_start;   // where a new subscriber starts reading
  std::atomic<std::uint64_t> blobs_released;  // side segments with a smaller id were unlinked
  std::atomic<std::uint32_t> slots_used;      // no slot at or above this index was ever claimed

  // Alone on its line: a busy-polling reader looks at it whenever it finds
  // nothing to read. On the line above, its loads would take that line away
  // from the publisher between records, and the publisher's next tail_intent
  // store would wait for the line to come back, before the record is written.
  alignas(64) std::atomic<std::uint32_t> closed;  // 1 once the publisher closed

  alignas(64) std::atomic<std::uint32_t> data_futex;    // bumped after a record when a subscriber sleeps on it
  alignas(64) std::atomic<std::uint32_t> space_futex;   // bumped by readers for a waiting publisher
  std::atomic<std::uint32_t> publisher_waiting;

  slot slot_table[slot_count];
};

// Positions README.md ("Layout") and the fuzz seeds (tests/fuzz/make_seeds.py)
// spell out: a change here is a new layout version, and those change with it.
static_assert(offsetof(ring_header, tail) == 64 && offsetof(ring_header, tail_intent) == 128 &&
              offsetof(ring_header, closed) == 192 && sizeof(ring_header) == 8576);

inline constexpr std::uint64_t data_offset = align_up(sizeof(ring_header), 4096);

// ---- futex ------------------------------------------------------------------
// Shared (not FUTEX_PRIVATE) because the words live in memory other processes map.

// Sleeps while *word == expected, at most `timeout`. Returns on wake-up, value
// change, timeout or signal; the caller re-checks its condition in every case.
inline void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                       std::chrono::nanoseconds timeout) {
  const auto ns = timeout.count() > 0 ? timeout.count() : 0;
  timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
  (void)::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

inline void futex_wake_all(std::atomic<std::uint32_t>& word) {
  (void)::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, 0x7fffffff, nullptr, nullptr, 0);
}

// True when `pid` names no process (kill(pid, 0) says ESRCH; EPERM means
// alive) or only a zombie: a killed peer whose parent has not reaped it yet
// holds nothing any more and must not hold anyone up either.
bool process_gone(std::uint32_t pid);

}  // namespace ipcbus::transport::shm::layout
