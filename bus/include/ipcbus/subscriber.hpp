// Subscriber<T>: receives messages of type T from every publisher whose topic
// matches a pattern ("sensors/*/temp", "logs/#"), including publishers that
// appear later.
//
// Made by Bus::subscribe<T>(pattern, callback) (callback mode: the callback runs
// on the bus's io thread) or Bus::subscribe<T>(pattern) (pull mode: receive()).
// A handle: copies share the subscriber, which closes when the last copy goes.
// Thread-safety: receive() and close() from any thread. After close() returns,
// the callback is not running and will not run again.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <system_error>

#include "ipcbus/detail/subscriber_core.hpp"
#include "ipcbus/error.hpp"
#include "ipcbus/message.hpp"

namespace ipcbus {

template <class T>
struct Received {
  T message;
  MessageInfo info;
};

template <class T>
class Subscriber {
 public:
  Subscriber() = default;

  // Pull mode: waits up to `timeout` for the next message. Returns nullopt on
  // timeout; throws std::system_error when the subscriber is closed.
  std::optional<Received<T>> receive(std::chrono::milliseconds timeout) {
    Received<T> r;
    std::error_code ec;
    if (receive(r.message, r.info, timeout, ec)) return r;
    if (ec == errc::timed_out) return std::nullopt;
    if (ec) throw_if(ec, "receive on '" + pattern() + "'");
    return std::nullopt;
  }
  // Non-throwing form: false with ec = timed_out, closed or type_mismatch
  // (the payload did not parse as T; the message is consumed and counted).
  bool receive(T& message, MessageInfo& info, std::chrono::milliseconds timeout, std::error_code& ec) {
    if (!core_) { ec = make_error_code(errc::closed); return false; }
    std::string payload;
    if (!core_->pop(payload, info, timeout, ec)) return false;
    if constexpr (std::is_same_v<T, Bytes>) {
      message = Bytes(std::move(payload));
    } else if (!message_traits<T>::parse(payload, message)) {
      core_->counters().bad_frames.fetch_add(1, std::memory_order_relaxed);
      ec = make_error_code(errc::type_mismatch);
      return false;
    }
    return true;
  }

  // Publishers currently attached.
  std::size_t publisher_count() const { return core_ ? core_->publisher_count() : 0; }
  bool wait_for_publishers(std::size_t n, std::chrono::milliseconds timeout) const {
    return core_ && core_->wait_for_publishers(n, timeout);
  }
  const std::string& pattern() const {
    static const std::string none;
    return core_ ? core_->pattern() : none;
  }
  // Counters of this subscriber (messages, lost, dropped, bad_frames ...).
  const stats_counters* counters() const { return core_ ? &core_->counters() : nullptr; }
  void close() {
    if (core_) core_->close();
    core_.reset();
  }
  explicit operator bool() const { return static_cast<bool>(core_); }

 private:
  friend class Bus;
  explicit Subscriber(std::shared_ptr<detail::subscriber_core> core) : core_(std::move(core)) {}
  std::shared_ptr<detail::subscriber_core> core_;
};

}  // namespace ipcbus
