// Publisher<T>: sends messages of type T (a protobuf message or ipcbus::Bytes) on one topic.
//
// Made by Bus::advertise<T>(topic). A cheap handle: copies share the publisher,
// which closes (drains, unregisters, removes its files) when the last copy goes.
// Thread-safety: publish() may be called from any thread; calls are serialized.
#pragma once

#include <chrono>
#include <concepts>
#include <memory>
#include <span>
#include <string>
#include <system_error>
#include <utility>

#include "ipcbus/detail/publisher_core.hpp"
#include "ipcbus/error.hpp"
#include "ipcbus/message.hpp"

namespace ipcbus {

// Memory for one raw message, lent by Publisher<Bytes>::loan(n): write the
// payload into data()[0, size()) and call publish(). On shm:// the memory is
// the ring itself, where subscribers read it in place, so a message of any
// size is published without a single copy; on other transports it is the
// buffer the frame is sent from (still no extra copy).
//
// One loan per publisher at a time: until it is published or destroyed (which
// gives it back unpublished), other publishes on that publisher wait, up to
// its publish_timeout. Take and publish a loan on the same thread, and do not
// hold it for longer than a publish may wait. Move-only.
class Loan {
 public:
  Loan() = default;
  Loan(Loan&& other) noexcept { *this = std::move(other); }
  Loan& operator=(Loan&& other) noexcept {
    if (this != &other) {
      cancel();
      core_ = std::move(other.core_);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  Loan(const Loan&) = delete;
  Loan& operator=(const Loan&) = delete;
  ~Loan() { cancel(); }

  char* data() const { return data_; }
  std::size_t size() const { return size_; }
  explicit operator bool() const { return static_cast<bool>(core_); }

  // Publishes what was written; the room was reserved when the loan was made,
  // so this does not wait for subscribers (only for a close() running on
  // another thread to finish). Errors: closed (the publisher closed meanwhile).
  void publish() {
    std::error_code ec;
    publish(ec);
    throw_if(ec, "publish of a loan");
  }
  void publish(std::error_code& ec) {
    if (!core_) {
      ec = make_error_code(errc::invalid_argument);
      return;
    }
    ec = core_->finish_loan();
    release();
  }
  // Gives the memory back unpublished. Nobody sees anything.
  void cancel() {
    if (core_) core_->cancel_loan();
    release();
  }

 private:
  template <class>
  friend class Publisher;
  Loan(std::shared_ptr<detail::publisher_core> core, char* data, std::size_t size)
      : core_(std::move(core)), data_(data), size_(size) {}
  void release() {
    core_.reset();
    data_ = nullptr;
    size_ = 0;
  }

  std::shared_ptr<detail::publisher_core> core_;
  char* data_ = nullptr;
  std::size_t size_ = 0;
};

template <class T>
class Publisher {
 public:
  Publisher() = default;

  // Serializes `message` once, straight into the frame (on shm://, straight
  // into the shared ring), and queues it for every subscriber. Blocks only under `reliable` QoS while a subscriber's queue is
  // full, up to the topic's publish_timeout. Errors: timed_out (nobody got the
  // message), message_too_large (over max_message), closed.
  void publish(const T& message) {
    std::error_code ec;
    publish(message, ec);
    if (ec) throw_if(ec, "publish on '" + topic() + "'");
  }
  void publish(const T& message, std::error_code& ec) {
    if (!core_) { ec = make_error_code(errc::closed); return; }
    const std::size_t size = message_traits<T>::byte_size(message);
    ec = core_->publish(size, [&message](char* out, std::size_t n) {
      return message_traits<T>::write(message, out, n);
    });
  }

  // Publishes `messages` in order, each exactly as publish() would (QoS,
  // drops counted, errors), as one batch: one lock and one clock read for all
  // (they share a publish time: when the batch started, also for messages
  // that waited for room), and on shm:// the subscribers are woken once per
  // few messages instead of for each. For bursts: much cheaper per message
  // than publish() in a loop, at the cost of the first message waiting for the
  // next few to be written. Returns how many were published: all of them, or
  // those before the one that failed (`ec` says why; the rest were not sent;
  // a message dropped by a drop policy counts as published, as for publish()).
  // Should serializing a message throw, those before it are published and
  // the exception carries no count: catch it only to give up on the batch.
  // close() from another thread waits for the batch to end, as for a publish.
  std::size_t publish_batch(std::span<const T> messages, std::error_code& ec) {
    if (!core_) {
      ec = make_error_code(errc::closed);
      return 0;
    }
    struct source {
      std::span<const T> items;
      std::size_t size(std::size_t i) const { return message_traits<T>::byte_size(items[i]); }
      bool write(std::size_t i, char* out, std::size_t n) const { return message_traits<T>::write(items[i], out, n); }
    } src{messages};
    std::size_t published = 0;
    ec = core_->publish_batch(messages.size(), detail::batch_source_ref(src), published);
    return published;
  }
  // Throws std::system_error naming how many were published before the failure.
  void publish_batch(std::span<const T> messages) {
    std::error_code ec;
    const std::size_t n = publish_batch(messages, ec);
    if (ec)
      throw_if(ec, "publish_batch on '" + topic() + "' (" + std::to_string(n) + " of " +
                       std::to_string(messages.size()) + " published)");
  }

  // Lends memory for a raw message of `size` bytes (Publisher<Bytes> only); see
  // Loan. Under reliable QoS this is where the wait for room happens. Errors:
  // message_too_large, timed_out, closed.
  Loan loan(std::size_t size)
    requires std::same_as<T, Bytes>
  {
    std::error_code ec;
    Loan l = loan(size, ec);
    if (ec) throw_if(ec, "loan on '" + topic() + "'");
    return l;
  }
  Loan loan(std::size_t size, std::error_code& ec)
    requires std::same_as<T, Bytes>
  {
    if (!core_) {
      ec = make_error_code(errc::closed);
      return {};
    }
    char* data = nullptr;
    ec = core_->begin_loan(size, data);
    if (ec) return {};
    return Loan(core_, data, size);
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
