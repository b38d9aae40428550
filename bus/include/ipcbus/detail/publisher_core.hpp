// The type-erased publisher behind Publisher<T>. Internal.
//
// Owns the transport endpoint, the discovery entry and the stats block; assigns
// sequence numbers, keeps history and encodes each message exactly once: into
// the endpoint's own memory when it offers that (shm://), else into a shared
// buffer that every subscriber queue holds.
// Thread-safety: publish() and loans from any thread (serialized by a mutex,
// one loan at a time); the rest too.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <type_traits>

#include <google/protobuf/descriptor.h>

#include "ipcbus/detail/borrowed_callable.hpp"
#include "ipcbus/detail/bus_state.hpp"
#include "ipcbus/detail/light_mutex.hpp"
#include "ipcbus/frame_codec.hpp"
#include "ipcbus/stats_block.hpp"

namespace ipcbus::detail {

// What publish() calls to write the payload.
using payload_writer_ref = borrowed_callable<bool(char*, std::size_t)>;

// What publish_batch() asks of the messages it publishes: message i's
// payload size and a writer of its payload, as payload_writer_ref's. Borrowed
// for the call; `S` has size(i) and write(i, out, n).
class batch_source_ref {
 public:
  template <typename S>
  explicit batch_source_ref(S& source)
      : source_(&source),
        size_([](void* s, std::size_t i) { return static_cast<S*>(s)->size(i); }),
        write_([](void* s, std::size_t i, char* out, std::size_t n) {
          return static_cast<bool>(static_cast<S*>(s)->write(i, out, n));
        }) {}
  std::size_t size(std::size_t i) const { return size_(source_, i); }
  bool write(std::size_t i, char* out, std::size_t n) const { return write_(source_, i, out, n); }

 private:
  void* source_;
  std::size_t (*size_)(void*, std::size_t);
  bool (*write_)(void*, std::size_t, char*, std::size_t);
};

class publisher_core {
 public:
  static std::shared_ptr<publisher_core> create(std::shared_ptr<bus_state> bus, std::string_view topic,
                                                const std::string& type_name,
                                                const google::protobuf::Descriptor* descriptor,
                                                std::error_code& ec);
  ~publisher_core();

  // Encodes a message of `payload_size` bytes written by `write` and sends it.
  std::error_code publish(std::size_t payload_size, payload_writer_ref write);
  // Publishes `count` messages in order, each as publish() would, under one
  // lock and one clock read (they share a publish time); the endpoint may
  // make them visible together (publisher_endpoint::begin_batch). Stops at
  // the first that fails: `published` says how many went out before it.
  std::error_code publish_batch(std::size_t count, batch_source_ref messages, std::size_t& published);
  // Publishes a frame that came from another bus (ipcbus-bridge): as publish(),
  // but the frame keeps `origin`'s origin host and publish time and counts one
  // more hop, so that bridges can tell where it entered and stop loops.
  // Sequence and publisher id are this publisher's own. `skip`: how many
  // frames of the origin the other bus lost before this one (dropped on a
  // link); the sequence moves on by as many first, so subscribers see that
  // gap as one of this publisher's own (lost_before). Blocks and fails as publish(),
  // but a frame that fails still spends its sequence number: nobody publishes it
  // again, so subscribers must see it missing.
  std::error_code publish_forwarded(const frame_header& origin, std::string_view payload, std::uint64_t skip = 0);
  // Spends `n` sequence numbers without publishing: frames that will never come
  // (ipcbus-bridge dropped them on the way), shown to subscribers as a gap.
  void skip_sequences(std::uint64_t n);
  // A loan: room for a payload of `size` bytes that the caller fills, then
  // publishes (finish_loan) or gives back (cancel_loan). While a loan is out,
  // publish() and begin_loan() wait for it, up to publish_timeout (timed_out).
  // Errors: as publish().
  std::error_code begin_loan(std::size_t size, char*& payload);
  std::error_code finish_loan();
  void cancel_loan();
  std::size_t subscriber_count() const;
  endpoint_counters counters() const;
  bool wait_for_subscribers(std::size_t n, std::chrono::milliseconds timeout) const;
  // Drains queued frames for up to `drain`, then closes the endpoint and unregisters.
  void close(std::chrono::milliseconds drain);
  // Closes the endpoint at once, without waiting for a publish in progress on
  // another thread: one waiting for room in a full subscriber queue fails with
  // `closed` within the transport's wait slice instead of after
  // publish_timeout, and so does every later one. close() still has to follow
  // (it unregisters). Any thread; blocks only on the endpoint's own lock
  // (during a batch on shm://, until the ring's next periodic tail store).
  void abort();

  const std::string& topic() const { return topic_; }
  std::uint64_t id() const { return id_; }
  const topic_settings& settings() const { return settings_; }
  std::string endpoint_uri() const;

  publisher_core(std::shared_ptr<bus_state> bus, std::string topic, std::string type_name);

 private:
  // The frame between start_frame and finish_frame/cancel_frame.
  struct open_frame {
    frame_header header;
    std::size_t payload_size = 0;
    char* start = nullptr;          // where the delimited frame begins
    frame_slot slot;                // in place (the endpoint's memory)
    std::shared_ptr<encoded_frame> buffer;  // otherwise
  };

  std::vector<frame_ptr> history_snapshot() const;
  // All with publish_mutex_ held.
  std::error_code wait_for_loan(std::unique_lock<light_mutex>& lock);
  std::error_code publish_one(std::size_t payload_size, payload_writer_ref write);
  std::error_code publish_in_place(std::size_t payload_size, payload_writer_ref write);
  // The header of the next frame this publisher sends: its sequence, id, the
  // publish time (the batch's, in a batch), this host, no hop, its type.
  frame_header next_header() const;
  void count_publish(std::size_t payload_size);  // the stats block's messages and bytes
  std::shared_ptr<encoded_frame> take_spare_frame();
  // brief: the frame is filled and finished at once, on this thread (not a loan).
  std::error_code start_frame(std::size_t payload_size, char*& payload, bool brief);
  std::error_code finish_frame();
  void cancel_frame();
  void clear_frame();  // frame_ holds no open frame afterwards
  void mirror_counters();

  std::shared_ptr<bus_state> bus_;
  std::string topic_;
  std::string type_name_;
  std::uint64_t id_;
  topic_settings settings_;
  security_settings security_;  // as configured when it was created: a reload does not change it
  std::unique_ptr<publisher_endpoint> endpoint_;
  bool in_place_ = false;  // endpoint_->writes_in_place(), asked once
  std::unique_ptr<registration> registration_;
  std::unique_ptr<stats_block> stats_;

  light_mutex publish_mutex_;
  // abort() closes the endpoint without publish_mutex_: this keeps it from
  // doing so at the same time as close().
  std::mutex endpoint_close_mutex_;
  std::uint64_t next_sequence_ = 1;
  open_frame frame_;
  bool loan_out_ = false;
  const frame_header* forwarded_ = nullptr;  // set during publish_forwarded's start_frame
  // A batch is being published: its publish time, read once; the stats block
  // is updated at its end (the endpoint keeps its lock meanwhile).
  bool in_batch_ = false;
  std::int64_t batch_time_ns_ = 0;
  std::uint64_t mirrored_version_ = 0;  // endpoint counters_version() last copied to the stats block
  // The last frame sent, reused by the next publish once every subscriber
  // queue has let go of it: saves two allocations per message on the stream
  // transports. Only small frames are kept.
  std::shared_ptr<encoded_frame> spare_frame_;
  std::string dropped_loan_;  // what a loan whose frame a drop policy discarded writes into
  std::condition_variable_any loan_cv_;
  mutable std::mutex history_mutex_;  // leaf lock: taken inside the endpoint's lock
  std::deque<frame_ptr> history_;
  bool closed_ = false;
};

}  // namespace ipcbus::detail
