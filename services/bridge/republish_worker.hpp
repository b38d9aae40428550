// ipcbus::bridge::republish_worker — republishes what one link received, on a
// thread of its own.
//
// A reliable republish waits for room in a slow local subscriber's queue (up
// to the topic's publish_timeout), and a new topic's republisher waits a moment
// for its subscribers to attach. Neither may happen on the bridge's io thread:
// it also serves every other link's heartbeats, and a stalled io thread makes
// links time out and flap. The io thread hands each frame to this worker
// instead; when the worker holds `max_jobs` or `max_bytes`, the link stops
// reading (TCP then pushes back on the sending bridge) until the worker calls
// `on_room`. Each link has its own worker, so one slow subscriber holds up
// only the link that feeds it.
//
// The publishers are the bridge's, one per topic, and several links' workers
// may republish through the same one (a link that came back while the old
// one's worker still empties its queue, two peers with the same topic):
// publisher_core serialises publishes, and a frame's `lost` is skipped under
// the same lock as its publish. The workers take their turns through the
// republisher's republish_order, in the order the io thread received the
// frames: a link that comes back cannot overtake its old frames still queued
// on the ended link's worker, and each gap shows on the frame right after it.
// A worker closes only the publishers handed to retire().
//
// Thread-safety: the public functions on the bridge's io thread; the work and
// `on_room` on the worker's thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bridge_link.hpp"
#include "republish_order.hpp"
#include "ipcbus/detail/publisher_core.hpp"

namespace ipcbus::bridge {

class republish_worker {
 public:
  struct limits {
    std::size_t max_jobs = 256;
    std::size_t max_bytes = 8u << 20;
  };
  republish_worker(std::shared_ptr<link_counters> counters, limits lim, std::function<void()> on_room);
  // Drops what is still queued (counted as dropped) and joins the thread.
  ~republish_worker();
  republish_worker(const republish_worker&) = delete;
  republish_worker& operator=(const republish_worker&) = delete;

  // A new republisher: frames queued after this wait until `subscribers`
  // local subscribers attached to it, or `wait` passed, so the first frames
  // reach the subscribers that asked for them.
  void settle(std::shared_ptr<detail::publisher_core> publisher, std::size_t subscribers,
              std::chrono::milliseconds wait);
  // One encoded ipcbus.Frame (already checked to decode) to republish, then
  // to pass on to `onward` links as `onward_info` (transit), one hop more.
  // A null `publisher`: only passed on (the local subscribers had it already).
  // Passing on may wait for room in a link's queue (reliable topics): here,
  // not on the io thread, and a full worker then stops its own link's reading.
  // `lost`: how many of the origin publisher's frames before this one will
  // never come; the republisher's sequence moves on by as many first, so
  // local subscribers see the gap.
  // `decoded`: the frame as the io thread decoded it (views into `frame`
  // before the move), so that the worker does not decode it a second time;
  // without it, or when its views are not inside `frame`, the worker decodes.
  // `order`: the publisher's republish_order; with a publisher, the frame
  // takes its place in it here, on the io thread.
  void publish(std::shared_ptr<detail::publisher_core> publisher, std::shared_ptr<republish_order> order,
               std::string frame,
               std::shared_ptr<const topic_info> onward_info = nullptr, std::vector<std::shared_ptr<link>> onward = {},
               std::uint64_t lost = 0, const frame_view* decoded = nullptr);
  // True while the queue is at its limit: the link should not read more.
  bool full() const;
  // The link is gone: republish what is queued (each frame still bounded by
  // its topic's publish_timeout; after the first that fails, the rest are
  // dropped), then close `publishers` draining for up to `drain`; the thread
  // then ends. With `drop_queued`, what is queued is dropped and counted instead.
  void retire(std::vector<std::shared_ptr<detail::publisher_core>> publishers, std::chrono::milliseconds drain,
              bool drop_queued);
  // The bridge is stopping: as retire() dropping what is queued, and a
  // republish in progress is cut short (its publisher's endpoint closes, so
  // a wait for room in a slow local subscriber's queue ends now, not after
  // the topic's publish_timeout; that frame counts as dropped). The thread
  // then closes its publishers without draining and ends. Cutting short
  // closes that publisher's endpoint for every worker sharing it: only for
  // the bridge's stop, which closes them all.
  void abort();
  // Nothing queued and no republish in progress.
  bool idle() const;
  // The thread has ended (after retire): join() will not wait.
  bool finished() const;
  void join();

 private:
  // Where a decoded frame's type name and payload lie in its bytes: offsets,
  // which stay true when the string moves (a short one moves its bytes).
  struct frame_parts {
    bool known = false;
    frame_header header;  // payload_type not set: it is a view
    std::size_t type_offset = 0, type_size = 0, payload_offset = 0, payload_size = 0;
  };
  static frame_parts locate(std::string_view bytes, const frame_view& decoded);
  struct job {
    std::shared_ptr<detail::publisher_core> publisher;
    republish_order::place turn;              // with a publisher: this frame's place in its order
    bool settle = false;                      // a settle() job, not a frame
    std::string frame;
    frame_parts parts;                        // frame decoded already, if known
    std::shared_ptr<const topic_info> onward_info;
    std::vector<std::shared_ptr<link>> onward;
    std::size_t subscribers = 0;              // settle
    std::chrono::milliseconds wait{0};        // settle
    std::uint64_t lost = 0;                   // sequences to skip before this frame
  };
  void run();
  // Spends the sequence numbers of queued frames that will not be republished
  // (the frame's own and its `lost`), each in its turn.
  void drop(std::deque<job>& jobs);
  // abort() was called (or the worker is being destroyed): waits for a turn end.
  bool aborted() const;
  bool full_locked() const;

  std::shared_ptr<link_counters> counters_;
  limits limits_;
  std::function<void()> on_room_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<job> queue_;
  std::size_t queue_bytes_ = 0;
  bool busy_ = false;         // a job is being done
  std::shared_ptr<detail::publisher_core> current_;  // its publisher, for abort()
  bool was_full_ = false;     // on_room is owed once there is room again
  bool retired_ = false;
  bool drop_queued_ = false;
  bool aborted_ = false;      // stopping: no waiting for a turn either
  bool finished_ = false;
  std::vector<std::shared_ptr<detail::publisher_core>> to_close_;
  std::chrono::milliseconds drain_{0};
  std::thread thread_;
};

}  // namespace ipcbus::bridge
