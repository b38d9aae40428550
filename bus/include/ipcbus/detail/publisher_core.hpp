// The type-erased publisher behind Publisher<T>. Internal.
//
// Owns the transport endpoint, the discovery entry and the stats block; assigns
// sequence numbers, keeps history and encodes each message exactly once.
// Thread-safety: publish() from any thread (serialized by a mutex); the rest too.
#pragma once

#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>

#include <google/protobuf/descriptor.h>

#include "ipcbus/detail/bus_state.hpp"
#include "ipcbus/frame_codec.hpp"
#include "ipcbus/stats_block.hpp"

namespace ipcbus::detail {

class publisher_core {
 public:
  static std::shared_ptr<publisher_core> create(std::shared_ptr<bus_state> bus, std::string_view topic,
                                                const std::string& type_name,
                                                const google::protobuf::Descriptor* descriptor,
                                                std::error_code& ec);
  ~publisher_core();

  // Encodes a message of `payload_size` bytes written by `write` and sends it.
  std::error_code publish(std::size_t payload_size, const payload_writer& write);
  std::size_t subscriber_count() const;
  endpoint_counters counters() const;
  bool wait_for_subscribers(std::size_t n, std::chrono::milliseconds timeout) const;
  // Drains queued frames for up to `drain`, then closes the endpoint and unregisters.
  void close(std::chrono::milliseconds drain);

  const std::string& topic() const { return topic_; }
  std::uint64_t id() const { return id_; }
  const topic_settings& settings() const { return settings_; }
  std::string endpoint_uri() const;

  publisher_core(std::shared_ptr<bus_state> bus, std::string topic, std::string type_name);

 private:
  std::vector<frame_ptr> history_snapshot() const;

  std::shared_ptr<bus_state> bus_;
  std::string topic_;
  std::string type_name_;
  std::uint64_t id_;
  topic_settings settings_;
  std::unique_ptr<publisher_endpoint> endpoint_;
  std::unique_ptr<registration> registration_;
  std::unique_ptr<stats_block> stats_;

  std::mutex publish_mutex_;
  std::uint64_t next_sequence_ = 1;
  mutable std::mutex history_mutex_;  // leaf lock: taken inside the endpoint's lock
  std::deque<frame_ptr> history_;
  bool closed_ = false;
};

}  // namespace ipcbus::detail
