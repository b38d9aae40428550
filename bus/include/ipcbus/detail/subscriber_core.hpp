// The type-erased subscriber behind Subscriber<T>. Internal.
//
// Finds matching publishers in the registry, keeps one transport link per
// publisher, drops duplicates, computes lost_before from sequence gaps, and
// either calls a handler on the io thread or queues messages for receive().
// Thread-safety: pop()/close()/counts from any thread; links on the io thread.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <system_error>

#include "ipcbus/detail/bus_state.hpp"
#include "ipcbus/detail/light_mutex.hpp"
#include "ipcbus/message.hpp"
#include "ipcbus/stats_block.hpp"

namespace ipcbus::detail {

class subscriber_core : public std::enable_shared_from_this<subscriber_core> {
 public:
  // Returns false when the payload does not parse as the expected type.
  using frame_handler = std::function<bool(const frame_view&, const MessageInfo&)>;

  // An empty handler means pull mode (receive()). `skip_pid` non-zero: never
  // attach to publishers of that process (the bridge passes its own pid, so
  // it does not read back what it republished); ordinary subscriptions pass 0
  // and receive their own process's messages as any others.
  static std::shared_ptr<subscriber_core> create(std::shared_ptr<bus_state> bus, std::string_view pattern,
                                                 const std::string& type_name, frame_handler handler,
                                                 std::error_code& ec, int skip_pid = 0);
  ~subscriber_core();

  // Pull mode: waits up to `timeout` for a message. timed_out or closed in ec.
  bool pop(std::string& payload, MessageInfo& info, std::chrono::milliseconds timeout,
           std::error_code& ec);
  std::size_t publisher_count() const { return link_count_.load(); }
  bool wait_for_publishers(std::size_t n, std::chrono::milliseconds timeout) const;
  void close();
  // Stops taking frames from every publisher attached (and from those that
  // attach meanwhile) until resume(): each link stops reading, so a reliable
  // publisher feels the backpressure through its own queue, as with any slow
  // subscriber; a drop policy drops there and counts it. Called on the io
  // thread (in a callback, say) it takes effect before the next frame; from
  // another thread it is posted there. Independent of the pause a full pull
  // queue makes: reading goes on only when neither holds it.
  void pause();
  void resume();
  void rescan();  // io thread
  const std::string& pattern() const { return pattern_; }
  stats_counters& counters() { return stats_->counters(); }

  subscriber_core(std::shared_ptr<bus_state> bus, std::string pattern, std::string type_name,
                  frame_handler handler);

 private:
  struct link_entry {
    std::unique_ptr<subscriber_link> link;
    std::uint64_t last_sequence = 0;  // duplicates (history overlap) are dropped
    // What callbacks get: topic, transport and publisher are set once, the rest
    // is refreshed per frame (no strings copied per message).
    MessageInfo info;
    // This publisher's entry in last_delivered_ (nodes of a map stay put, and
    // entries are never erased), once a callback delivered from this link:
    // spares a map search per message. Used with delivery_mutex_ held.
    std::uint64_t* last_delivered = nullptr;
  };
  struct queued {
    std::string payload;
    MessageInfo info;
  };

  void connect_to(const participant_record& pub);
  void on_frame(std::uint64_t publisher_id, const frame_view& frame);
  void on_link_closed(std::uint64_t publisher_id, std::error_code ec, const std::string& reason);
  void enqueue(const frame_view& frame, MessageInfo info);
  // Fills info.lost_before from the gap since the last message delivered from
  // that publisher. Returns that publisher's entry in last_delivered_.
  std::uint64_t& account_gap(MessageInfo& info);
  // As account_gap, for a publisher whose entry is known.
  void account_gap(MessageInfo& info, std::uint64_t& last_delivered);
  void count_delivery(std::size_t bytes);  // with delivery_mutex_ held
  void set_paused(bool paused);  // io thread: the pull queue is full (or not any more)
  // How short a full pull queue must get before reading resumes (pop()).
  std::size_t resume_level() const { return settings_.depth / 2; }
  void set_held(bool held);      // io thread: pause()/resume()
  void update_links_paused();    // io thread: pauses or resumes the links as the two flags say

  std::shared_ptr<bus_state> bus_;
  std::string pattern_;
  std::string type_name_;
  topic_settings settings_;
  security_settings security_;  // as configured when it was created: a reload does not change it
  frame_handler handler_;
  int skip_pid_ = 0;  // set before the first rescan, then only read
  std::uint64_t id_;
  std::unique_ptr<registration> registration_;
  std::unique_ptr<stats_block> stats_;

  // io thread only
  std::map<std::uint64_t, link_entry> links_;
  // The entry on_frame found last (map nodes stay put; cleared when it is
  // erased): frames come in runs from one publisher, and the search cost
  // about 25 instructions per message.
  link_entry* recent_link_ = nullptr;
  std::uint64_t recent_link_pid_ = 0;
  std::set<std::uint64_t> refused_;
  // The last sequence delivered by links that ended, by publisher, and when:
  // a link made again to a publisher still listed (one that died an instant
  // ago, say) skips what the old link delivered.
  struct ended_link {
    std::uint64_t sequence = 0;
    std::chrono::steady_clock::time_point when;
  };
  std::map<std::uint64_t, ended_link> ended_links_;
  std::atomic<bool> paused_{false};  // the pull queue is full; written on the io thread, read by pop()
  bool resume_posted_ = false;       // guarded by delivery_mutex_: pop() asked the io thread to resume
  bool held_ = false;                // pause() without resume() yet
  bool links_paused_ = false;        // what the links were last told
  std::atomic<std::size_t> link_count_{0};

  // Delivery: guards the queue, the gap tracker and the closed flag. The handler
  // runs with it held so that close() returns only once no callback is running.
  mutable light_recursive_mutex delivery_mutex_;
  mutable std::condition_variable_any delivery_cv_;
  std::deque<queued> queue_;
  std::map<std::uint64_t, std::uint64_t> last_delivered_;
  bool closed_ = false;
};

}  // namespace ipcbus::detail
