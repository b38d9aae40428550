// Subscriber<T>: receives messages of type T from every publisher whose topic
// matches a pattern ("sensors/*/temp", "logs/#"), including publishers that
// appear later.
//
// Made by Bus::subscribe<T>(pattern, callback) (callback mode: the callback runs
// on the bus's io thread) or Bus::subscribe<T>(pattern) (pull mode: receive()).
// A handle: copies share the subscriber, which closes when the last copy goes
// (waiting for a callback that is running, as close() does: the callback may
// use whatever lives as long as the handle).
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
  // timeout; throws std::system_error when the subscriber is closed, or when
  // it was made with a callback (invalid_argument: its messages go there).
  std::optional<Received<T>> receive(std::chrono::milliseconds timeout) {
    Received<T> r;
    std::error_code ec;
    if (receive(r.message, r.info, timeout, ec)) return r;
    if (ec == errc::timed_out) return std::nullopt;
    if (ec) throw_if(ec, "receive on '" + pattern() + "'");
    return std::nullopt;
  }
  // Non-throwing form: false with ec = timed_out, closed, type_mismatch
  // (the payload did not parse as T; the message is consumed and counted) or
  // invalid_argument (a subscriber with a callback, whose messages go there).
  bool receive(T& message, MessageInfo& info, std::chrono::milliseconds timeout, std::error_code& ec) {
    detail::subscriber_core* const sub = core();
    if (!sub) { ec = make_error_code(errc::closed); return false; }
    std::string payload;
    if (!sub->pop(payload, info, timeout, ec)) return false;
    if constexpr (std::is_same_v<T, Bytes>) {
      message = Bytes(std::move(payload));
    } else if (!message_traits<T>::parse(payload, message)) {
      sub->counters().bad_frames.fetch_add(1, std::memory_order_relaxed);
      ec = make_error_code(errc::type_mismatch);
      return false;
    }
    return true;
  }

  // Publishers currently attached.
  std::size_t publisher_count() const { return core() ? core()->publisher_count() : 0; }
  bool wait_for_publishers(std::size_t n, std::chrono::milliseconds timeout) const {
    return core() && core()->wait_for_publishers(n, timeout);
  }
  const std::string& pattern() const {
    static const std::string none;
    return core() ? core()->pattern() : none;
  }
  // Counters of this subscriber (messages, lost, dropped, bad_frames ...).
  const stats_counters* counters() const { return core() ? &core()->counters() : nullptr; }
  // Stops taking messages from the publishers until resume(): the links stop
  // reading, so a reliable publisher waits (up to its publish_timeout) and a
  // drop policy drops at the publisher and counts it, as with any subscriber
  // that falls behind. Called in a callback it takes effect before the next
  // message; from another thread, shortly after. Does not block. Any thread.
  void pause() {
    if (core()) core()->pause();
  }
  void resume() {
    if (core()) core()->resume();
  }
  void close() {
    if (core()) core()->close();
    handle_.reset();
  }
  explicit operator bool() const { return core() != nullptr; }

 private:
  friend class Bus;
  // The copies' shared part. The core itself is also held, for the length of a
  // callback, by the io thread: its lifetime cannot tell when the last copy went.
  struct closer {
    explicit closer(std::shared_ptr<detail::subscriber_core> c) : core(std::move(c)) {}
    ~closer() {
      if (core) core->close();
    }
    closer(const closer&) = delete;
    closer& operator=(const closer&) = delete;
    std::shared_ptr<detail::subscriber_core> core;
  };

  explicit Subscriber(std::shared_ptr<detail::subscriber_core> core)
      : handle_(std::make_shared<closer>(std::move(core))) {}
  detail::subscriber_core* core() const { return handle_ ? handle_->core.get() : nullptr; }
  std::shared_ptr<closer> handle_;
};

}  // namespace ipcbus
