// Publisher<T>: sends messages of type T (a protobuf message or ipcbus::Bytes) on one topic.
//
// Made by Bus::advertise<T>(topic). A cheap handle: copies share the publisher,
// which closes (drains, unregisters, removes its files) when the last copy goes.
// Thread-safety: publish() may be called from any thread; calls are serialized.
#pragma once

#include <chrono>
#include <memory>
#include <system_error>

#include "ipcbus/detail/publisher_core.hpp"
#include "ipcbus/error.hpp"
#include "ipcbus/message.hpp"

namespace ipcbus {

template <class T>
class Publisher {
 public:
  Publisher() = default;

  // Serializes `message` once, straight into the frame, and queues it for every
  // subscriber. Blocks only under `reliable` QoS while a subscriber's queue is
  // full, up to the topic's publish_timeout. Errors: timed_out (nobody got the
  // message), message_too_large (over max_message), closed.
  void publish(const T& message) {
    std::error_code ec;
    publish(message, ec);
    throw_if(ec, "publish on '" + topic() + "'");
  }
  void publish(const T& message, std::error_code& ec) {
    if (!core_) { ec = make_error_code(errc::closed); return; }
    const std::size_t size = message_traits<T>::byte_size(message);
    ec = core_->publish(size, [&message](char* out, std::size_t n) {
      return message_traits<T>::write(message, out, n);
    });
  }

  // Subscribers attached right now.
  std::size_t subscriber_count() const { return core_ ? core_->subscriber_count() : 0; }
  // Waits until at least `n` subscribers are attached; false on timeout.
  bool wait_for_subscribers(std::size_t n, std::chrono::milliseconds timeout) const {
    return core_ && core_->wait_for_subscribers(n, timeout);
  }
  // A snapshot of this publisher's counters (messages, bytes, dropped, timeouts, peers).
  endpoint_counters counters() const { return core_ ? core_->counters() : endpoint_counters{}; }
  const std::string& topic() const {
    static const std::string none;
    return core_ ? core_->topic() : none;
  }
  std::uint64_t id() const { return core_ ? core_->id() : 0; }
  // Drains for up to `drain`, then closes. Later publishes fail with `closed`.
  void close(std::chrono::milliseconds drain = std::chrono::seconds(2)) {
    if (core_) core_->close(drain);
    core_.reset();
  }
  explicit operator bool() const { return static_cast<bool>(core_); }

 private:
  friend class Bus;
  explicit Publisher(std::shared_ptr<detail::publisher_core> core) : core_(std::move(core)) {}
  std::shared_ptr<detail::publisher_core> core_;
};

}  // namespace ipcbus
