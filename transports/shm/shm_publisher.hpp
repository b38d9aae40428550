// The publisher side of shm://: one broadcast ring in a shared memory object,
// written on the publishing thread, read in place by every subscriber.
//
// The publisher keeps, in its own memory, where each record it wrote starts
// (records_), so it can tell how many frames a subscriber's cursor is behind
// (`depth` means frames here too, as on every transport) and move a lapped
// cursor to a record boundary. Subscribers' slots are read with atomics and
// trusted for nothing but flow control: a garbage cursor can cost this
// publisher a timeout, never a wrong write.
//
// Thread-safety: send/flush/counters/subscriber_count/close from any thread
// (send is serialized by the bus); maintain runs on the io thread. One mutex
// guards the private state; a reliable send releases it while it sleeps.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "ipcbus/detail/light_mutex.hpp"
#include "ipcbus/transport.hpp"
#include "record_queue.hpp"
#include "shm_layout.hpp"
#include "shm_segment.hpp"

namespace ipcbus::transport::shm {

// Ring bytes for a topic: room for depth + history frames of up to 64 KiB (or
// of max_message, if smaller), a power of two within [64 KiB, 64 MiB].
std::uint64_t ring_capacity(const topic_settings& s);

class ring_publisher {
 public:
  using clock = std::chrono::steady_clock;

  explicit ring_publisher(endpoint_options options) : options_(std::move(options)) {}
  ~ring_publisher();
  ring_publisher(const ring_publisher&) = delete;
  ring_publisher& operator=(const ring_publisher&) = delete;

  // Writes the marker file, creates and fills the segment, magic last.
  // Errors: the system error of shm_open/ftruncate/fallocate/mmap or of the marker.
  std::error_code open();
  const std::string& name() const { return name_; }
  const std::string& topic() const { return options_.topic; }

  // Blocks (reliable, up to publish_timeout) while a live subscriber lacks room.
  // Errors: closed, timed_out (nothing written), the system error of a side segment.
  std::error_code send(const frame_ptr& frame);
  // send() in two steps, for frames encoded straight into the ring (or into a
  // side segment): reserve applies the QoS and announces the overwrite, the
  // caller fills out.data, commit publishes the record. The lock is not held in
  // between, so housekeeping and readers carry on during a long loan (a brief
  // reservation of up to 64 KiB, and a batch's, keep it: see reserve).
  std::error_code reserve(std::size_t size, std::uint64_t sequence, frame_slot& out);
  std::error_code commit_reserved();
  void cancel_reserved();
  // reserve(), `write` and commit_reserved() (or the end of the reservation)
  // under one hold of the lock (publisher_endpoint::write_frame), for a frame
  // of `size` bytes for which written_in_one_hold() holds: it goes into the
  // ring and is copied in a moment. Others take the two calls.
  bool written_in_one_hold(std::size_t size) const;
  std::error_code write_frame(std::size_t size, std::uint64_t sequence, frame_writer_ref write);
  // A batch (publisher_endpoint::begin_batch): until end_batch() the lock is
  // kept between frames and the tail is stored once every few records
  // instead of for each (README.md, "Protocol": when at once). Only the
  // batching thread reserves and commits meanwhile; other threads' calls
  // (close, counters, ...) get the lock after a periodic store of the tail,
  // maintain() skips a tick instead.
  void begin_batch();
  void end_batch();
  // Waits until every live subscriber has read everything; false on timeout.
  bool flush(std::chrono::milliseconds timeout);
  std::size_t subscriber_count() const;
  endpoint_counters counters() const;
  std::uint64_t counters_version() const { return counters_version_.load(std::memory_order_acquire); }
  // Periodic housekeeping: evicts dead subscribers, counts departed ones and
  // unlinks side segments nobody needs any more.
  void maintain();
  // Marks the ring closed, wakes readers, unlinks the segment, its side
  // segments and the marker. The mapping stays until destruction. Idempotent.
  void close();

  // Direct wake-ups (shm_wake.hpp), from the io thread. add_wake_target takes
  // `event_fd` and returns a registration token, or 0 (and leaves the
  // descriptor to the caller) when `slot` is not active in `state` for `pid`.
  // A new registration for a slot replaces the old one.
  std::uint64_t add_wake_target(std::uint32_t slot, std::uint64_t state, std::uint32_t pid, int event_fd);
  void remove_wake_target(std::uint32_t slot, std::uint64_t token);

 private:
  struct record {
    std::uint64_t pos;
    std::uint64_t end;
    std::uint64_t use;  // 0: the frame is in the ring; else its blob_ref::use
  };
  // A side segment this publisher made, mapped for as long as it keeps it.
  struct side_segment {
    std::uint64_t id = 0;  // 0: none
    std::string name;      // its shm name, kept so that unlinking it never allocates
    mapped_segment map;
    layout::blob_header* header() const { return reinterpret_cast<layout::blob_header*>(map.data()); }
    char* frame() const { return map.data() + sizeof(layout::blob_header); }
    std::uint64_t room() const { return map.size() - sizeof(layout::blob_header); }
  };
  // A published frame in its side segment.
  struct in_flight {
    record rec;
    side_segment seg;
  };
  // A released side segment kept for reuse, with the record it held last
  // (empty for a cancelled loan): a reader whose cursor is there may still be
  // reading it, so it is not reused while one is (see take_blob).
  struct pooled {
    side_segment seg;
    std::uint64_t pos;
    std::uint64_t end;
    clock::time_point since;
  };
  struct placement {
    std::uint64_t pad;    // bytes of padding record before the frame (0: none)
    std::uint64_t start;  // where the record starts
    std::uint64_t end;    // one past it: the new tail
    std::uint64_t len;    // record payload bytes
  };

  // All with mutex_ held.
  // reserve() without the lock's handling: the QoS, the placement, the announcement.
  std::error_code reserve_locked(std::unique_lock<detail::light_mutex>& lock, std::size_t size,
                                 std::uint64_t sequence, frame_slot& out);
  // commit_reserved() once its checks passed.
  void finish_commit(std::unique_lock<detail::light_mutex>& lock);
  placement place(std::uint64_t len) const;
  bool room_for(const placement& at) const;
  void forget_oldest_record();
  std::size_t index_of(std::uint64_t pos) const;
  std::error_code wait_for_room(std::unique_lock<detail::light_mutex>& lock, const placement& at);
  // Sleeps until a reader moves its cursor (or a short timeout), unless `ready` already holds.
  void sleep_for_space(std::unique_lock<detail::light_mutex>& lock, clock::time_point deadline,
                       const std::function<bool()>& ready);
  void make_room(const placement& at);
  std::uint64_t drop_target(std::uint64_t cursor, const placement& at) const;
  bool would_lap_newcomer(const placement& at);
  std::error_code take_blob(std::size_t size, side_segment& out);
  std::error_code create_blob(std::size_t size, side_segment& out);
  bool reader_at(std::uint64_t pos, std::uint64_t end) const;
  void release_blob(side_segment seg, std::uint64_t pos, std::uint64_t end);
  void unlink_blob(side_segment& seg);
  void expire_pool();
  std::uint64_t pool_budget() const;
  std::size_t pool_max_segments() const;
  void announce(const placement& at);
  void publish_record();
  // Stores the tail (every record written so far becomes readable) and wakes sleepers.
  void make_visible();
  void end_reservation();
  // The lock a brief reservation kept (held_) or a batch parked (parked_),
  // or mutex_ taken now.
  std::unique_lock<detail::light_mutex> take_lock();
  // In a batch, keeps `lock` in parked_ when the scope ends instead of unlocking it.
  struct lock_parker {
    ring_publisher& self;
    std::unique_lock<detail::light_mutex>& lock;
    ~lock_parker() {
      if (self.batch_ && lock.owns_lock()) self.parked_ = std::move(lock);
    }
  };
  void wake_readers();
  // Writes slot i's eventfd; false when none is registered for its current state.
  bool wake_directly(std::size_t i);
  void forget_wake_target(std::size_t i);
  void trim();
  void evict_dead(clock::duration at_most_every);
  std::size_t active_count() const;
  void counters_changed() { counters_version_.fetch_add(1, std::memory_order_release); }
  layout::slot& slot_at(std::size_t i) const { return hdr_->slot_table[i]; }
  // Slots [0, n) may be in use: subscribers take the lowest free one, so the
  // scans done for every frame stay short. seq_cst, as the slot loads of the
  // scans: in announce and wake_readers the scan pairs with a seq_cst store
  // before it (tail_intent, tail), and a subscriber in a slot nobody used
  // before raises slots_used before it goes active; an acquire load could be
  // ordered before that store. (On x86 both are a plain load.)
  std::size_t slots_in_use() const {
    return std::min<std::size_t>(hdr_->slots_used.load(), layout::slot_count);
  }

  endpoint_options options_;
  std::string name_;
  std::filesystem::path marker_;
  mapped_segment ring_;
  layout::ring_header* hdr_ = nullptr;
  char* data_ = nullptr;
  std::uint64_t capacity_ = 0;
  std::uint64_t mask_ = 0;

  mutable detail::light_mutex mutex_;
  std::uint64_t tail_ = 0;
  record_queue<record> records_;  // records intact in the ring that someone may still read, by position
  std::vector<in_flight> blobs_;  // side segments holding a frame someone may still read, by use
  std::vector<pooled> pool_;     // released side segments kept for reuse, oldest release first
  std::uint64_t pool_bytes_ = 0;
  std::uint64_t next_use_ = 1;      // blob_ref::use of the next large frame
  std::uint64_t next_segment_ = 1;  // number (name) of the next side segment created
  std::uint64_t history_pos_ = 0;
  std::array<std::uint64_t, layout::slot_count> seen_{};  // active slot states at the last maintain
  std::uint64_t forgotten_ = 0;  // records dropped from the front of records_, ever
  // A slot's state and cursor as room_for last read them, and the cursor's
  // ordinal (forgotten_ + its index in records_ then); see there.
  struct seen_cursor {
    std::uint64_t state = 0;
    std::uint64_t cursor = 0;
    std::uint64_t ordinal = 0;
  };
  mutable std::array<seen_cursor, layout::slot_count> cursors_seen_{};
  clock::time_point last_eviction_check_{};
  std::array<std::pair<std::uint64_t, clock::time_point>, layout::slot_count> newcomers_{};
  endpoint_counters counters_;
  std::atomic<std::uint64_t> counters_version_{1};  // bumped after counters_ or the subscriber count change
  std::size_t subscribers_seen_ = 0;                // active subscribers at the last maintain
  unsigned publishes_since_trim_ = 0;
  bool closed_ = false;

  // The frame between reserve and commit.
  struct reservation {
    bool active = false;
    placement at{};
    std::uint64_t sequence = 0;
    std::uint64_t size = 0;     // bytes of the encoded frame
    std::uint64_t use = 0;  // 0: the frame goes into the ring itself
    side_segment blob;
  };
  reservation pending_;
  // mutex_, kept from a brief reserve() to its commit or cancel: only the
  // reserving thread touches it meanwhile (everyone else waits for mutex_).
  std::unique_lock<detail::light_mutex> held_;
  std::uint64_t intent_ = 0;  // the highest tail_intent announced: it never goes back
  // A batch is open: mutex_ stays locked between its frames (in parked_ while
  // no call runs), and records are written without storing the tail.
  bool batch_ = false;
  std::unique_lock<detail::light_mutex> parked_;
  unsigned unpublished_ = 0;    // records written since the tail was last stored
  std::uint64_t visible_tail_ = 0;  // the tail last stored
  unsigned visible_every_ = 1;  // in a batch, the tail is stored at least once per this many records

  // Eventfds subscribers handed over, by slot; valid while the slot keeps `state`.
  struct wake_target {
    std::uint64_t state = 0;
    std::uint64_t token = 0;
    int fd = -1;
  };
  std::array<wake_target, layout::slot_count> wake_targets_{};
  std::uint64_t next_wake_token_ = 1;
};

}  // namespace ipcbus::transport::shm
