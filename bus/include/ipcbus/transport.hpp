// The transport interface: what a backend (unix, tcp, shm, pipe, mq) provides.
//
// A transport is selected by URI scheme. The publisher side (publisher_endpoint)
// owns whatever subscribers attach to and the per-subscriber queues, and applies
// the topic's QoS; the subscriber side (subscriber_link) delivers decoded frames
// from one publisher. The bus core above does naming, discovery, serialization,
// sequence numbers and history, identically for every transport.
//
// Thread-safety: publisher_endpoint's send, reserve/commit/cancel, flush,
// counters, counters_version, subscriber_count and close may be called from any
// thread (the bus serializes send and reservations per endpoint). Subscriber
// links, pollers and every callback run on the io_context's thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "ipcbus/config.hpp"
#include "ipcbus/detail/borrowed_callable.hpp"
#include "ipcbus/error.hpp"
#include "ipcbus/frame_codec.hpp"

namespace ipcbus {

// One encoded, length-delimited frame, shared by every subscriber queue it sits in.
struct encoded_frame {
  std::string bytes;        // varint32 length + Frame
  std::uint64_t sequence = 0;
};
using frame_ptr = std::shared_ptr<const encoded_frame>;

// Counters an endpoint keeps; read by the bus for stats.
struct endpoint_counters {
  std::uint64_t dropped = 0;        // frames a drop policy discarded (summed over subscribers)
  std::uint64_t timeouts = 0;       // reliable sends that gave up
  std::uint64_t peers_refused = 0;  // connections refused (credentials, errors)
  std::uint64_t peers_lost = 0;     // subscribers that went away
};

struct endpoint_options {
  std::string topic;
  std::uint64_t publisher_id = 0;
  topic_settings settings;
  std::filesystem::path domain_dir;   // where file-based endpoints live
  security_settings security;
  // Called on the io thread when a subscriber attaches; returns the frames it
  // should get before live traffic (history for late joiners).
  std::function<std::vector<frame_ptr>()> history;
};

// Room for one frame in an endpoint's own memory, which subscribers read in
// place (shm://): the bus encodes the frame straight into it. See
// publisher_endpoint::reserve.
struct frame_slot {
  char* data = nullptr;   // `size` writable bytes; null when the frame was dropped
  std::size_t size = 0;
  bool dropped = false;   // a drop policy discarded the frame (already counted)
  // In: the caller fills the bytes and commits or cancels at once, on the same
  // thread (a publish, not a loan), so the endpoint may keep its lock from
  // reserve() to commit() instead of taking it twice.
  bool brief = false;
};

// What publisher_endpoint::write_frame calls to write a frame's bytes.
using frame_writer_ref = detail::borrowed_callable<bool(char*)>;

// Runs `write` at `out`; when it returns false (then invalid_argument) or
// throws (then the exception goes on), `cancel()` first: a reservation must
// never stay open, and its endpoint may hold a lock for it.
template <typename Cancel>
std::error_code write_or_cancel(frame_writer_ref write, char* out, Cancel&& cancel) {
  bool written = false;
  try {
    written = write(out);
  } catch (...) {
    cancel();
    throw;
  }
  if (written) return {};
  cancel();
  return make_error_code(errc::invalid_argument);
}

class publisher_endpoint {
 public:
  virtual ~publisher_endpoint() = default;
  // The URI subscribers use to attach, recorded in the discovery entry.
  virtual std::string uri() const = 0;
  // Queues `frame` for every attached subscriber under the topic's QoS.
  // reliable: blocks up to settings.publish_timeout while any subscriber's queue
  // is full, then returns errc::timed_out and sends to nobody. drop_*: never blocks.
  virtual std::error_code send(const frame_ptr& frame) = 0;
  virtual std::size_t subscriber_count() const = 0;
  // Waits up to `timeout` until every queued frame has been handed to the kernel.
  virtual bool flush(std::chrono::milliseconds timeout) = 0;
  virtual endpoint_counters counters() const = 0;
  // Changes whenever counters() or subscriber_count() may have changed, so that
  // the bus copies them into the stats block only then. 0: unknown, ask every time.
  virtual std::uint64_t counters_version() const { return 0; }
  // Stops accepting, closes every subscriber and removes owned files. Idempotent.
  virtual void close() = 0;

  // Endpoints that return true let the bus write frames in place, without an
  // intermediate buffer: reserve() applies the QoS exactly as send() would
  // (reliable waits here, up to publish_timeout; a drop policy may set
  // `dropped`) and hands out `size` writable bytes; commit() makes the frame
  // visible to every subscriber; cancel() forgets it. One reservation at a
  // time, which may stay open for long (a loan): other calls keep working
  // meanwhile, but the bus makes no send/reserve until it ends. Such endpoints
  // keep their history themselves (endpoint_options::history is not called).
  // Frames reserved here use the local frame layout (frame_codec.hpp), not
  // the delimited Frame that send() gets.
  virtual bool writes_in_place() const { return false; }
  // Errors: as send(); invalid_argument when !writes_in_place().
  virtual std::error_code reserve(std::size_t size, std::uint64_t sequence, frame_slot& out);
  // Errors: closed (the endpoint closed meanwhile; nobody got the frame).
  virtual std::error_code commit(frame_slot& slot);
  virtual void cancel(frame_slot& slot);
  // A publish in place in one call: reserve() of a brief slot, `write`
  // filling its `size` bytes, then commit(); or cancel() when `write` returns
  // false (invalid_argument) or throws (rethrown). A frame a drop policy
  // discards (counted by the endpoint) is not written and is no error. The
  // bus publishes through it, and through reserve()/commit() only for loans
  // and forwarded frames. The default makes exactly those calls; an endpoint
  // may do it all under one lock. Errors: as reserve() and commit().
  virtual std::error_code write_frame(std::size_t size, std::uint64_t sequence, frame_writer_ref write);

  // A batch (Publisher::publish_batch): between begin_batch() and end_batch()
  // the bus sends or reserves several frames in a row on one thread and
  // nothing else. An endpoint may defer what makes each frame visible to its
  // subscribers (shm://: the ring's tail, the wake-ups) and what it locks per
  // frame, as long as every frame a call reported as sent is visible once
  // end_batch() returns, and before the endpoint waits for room or lets
  // another thread in. Defaults: nothing deferred.
  virtual void begin_batch() {}
  virtual void end_batch() {}
};

struct link_options {
  std::uint64_t max_frame = 0;        // frames longer than this close the link
  security_settings security;
  // Waiting for data (transports that can be polled without a system call):
  // keep polling for `spin` after the last frame, or for ever with busy_poll.
  std::chrono::microseconds spin{0};
  bool busy_poll = false;
  // The bus's own io thread polls this link's poller() between handlers; when
  // false nobody does, and the link must spin on a thread of its own.
  bool polled_by_bus = false;
};

// What the bus's io thread calls to poll a link instead of sleeping in the
// kernel. All on the io thread.
class link_poller {
 public:
  virtual ~link_poller() = default;
  // Delivers what is ready (up to a batch); true if anything was delivered.
  virtual bool poll() = 0;
  // A glance, no system call and no clock: false only when poll() would
  // certainly find no frame. A spinning loop checks this between full polls.
  virtual bool ready() const { return true; }
  // The io thread is about to block: make sure new data wakes it.
  virtual void prepare_sleep() = 0;
  // Polling budget after the last frame; busy_poll() means never sleep.
  virtual std::chrono::microseconds spin() const = 0;
  virtual bool busy_poll() const = 0;
  // The link has closed: the bus forgets this poller.
  virtual bool finished() const = 0;
};

struct link_callbacks {
  // A decoded frame; the views are valid only during the call. Runs on the io thread.
  std::function<void(const frame_view&)> on_frame;
  // The link ended (peer_gone, malformed_frame, access_denied, ...). Called once.
  std::function<void(std::error_code, const std::string& reason)> on_closed;
};

class subscriber_link {
 public:
  virtual ~subscriber_link() = default;
  // Stop/start reading: a full reliable subscriber queue pushes back on the publisher.
  virtual void pause() = 0;
  virtual void resume() = 0;
  virtual void close() = 0;
  // Non-null when link_options asked for spinning and the bus polls the link.
  virtual std::shared_ptr<link_poller> poller() { return nullptr; }
};

class transport_backend {
 public:
  virtual ~transport_backend() = default;
  virtual std::string_view scheme() const = 0;
  virtual std::unique_ptr<publisher_endpoint> listen(boost::asio::io_context& io,
                                                     const endpoint_options& options,
                                                     std::error_code& ec) = 0;
  virtual std::unique_ptr<subscriber_link> connect(boost::asio::io_context& io,
                                                   const std::string& uri,
                                                   const link_options& options,
                                                   link_callbacks callbacks,
                                                   std::error_code& ec) = 0;
};

// Transports by scheme. Filled explicitly (register_unix(registry), ...): no
// static-initialisation tricks. Not thread-safe for writes; fill it before use.
class transport_registry {
 public:
  void add(std::unique_ptr<transport_backend> t);
  transport_backend* find(std::string_view scheme) const;
  std::vector<std::string> schemes() const;

 private:
  std::map<std::string, std::unique_ptr<transport_backend>, std::less<>> transports_;
};

// "unix:///run/x.sock" -> "unix"; empty when there is no "://".
std::string_view uri_scheme(std::string_view uri);

}  // namespace ipcbus
