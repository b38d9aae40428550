// The transport interface: what a backend (unix, tcp, shm, pipe, mq) provides.
//
// A transport is selected by URI scheme. The publisher side (publisher_endpoint)
// owns whatever subscribers attach to and the per-subscriber queues, and applies
// the topic's QoS; the subscriber side (subscriber_link) delivers decoded frames
// from one publisher. The bus core above does naming, discovery, serialization,
// sequence numbers and history, identically for every transport.
//
// Thread-safety: publisher_endpoint::send may be called from any thread, one at
// a time per endpoint (the bus serializes calls). Everything else, and every
// callback, runs on the io_context's thread.
#pragma once

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
  // Stops accepting, closes every subscriber and removes owned files. Idempotent.
  virtual void close() = 0;
};

struct link_options {
  std::uint64_t max_frame = 0;        // frames longer than this close the link
  security_settings security;
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
