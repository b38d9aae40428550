// ipcbus::DynamicPublisher — publishes protobuf messages whose type is known only
// at run time: a Descriptor from a DescriptorPool built out of a FileDescriptorSet
// (for example the one another participant registered), with DynamicMessages.
//
//   auto pub = ipcbus::DynamicPublisher::advertise(bus, "sensors/temp", descriptor);
//   std::unique_ptr<google::protobuf::Message> m(factory.GetPrototype(descriptor)->New());
//   pub.publish(*m);
//
// Publisher<T> needs T at compile time; this is its run-time twin for tools such
// as `ipcbus pub`. On the bus the two are indistinguishable: the entry carries the
// type's full name and FileDescriptorSet, so typed subscribers of that type accept it.
//
// Thread-safety: as Publisher<T>: publish() from any thread; calls are serialized.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include "ipcbus/bus.hpp"
#include "ipcbus/detail/publisher_core.hpp"
#include "ipcbus/error.hpp"

namespace ipcbus {

class DynamicPublisher {
 public:
  DynamicPublisher() = default;

  // Creates a publisher on `topic` carrying `descriptor`'s type, with the
  // transport and QoS the configuration names. The descriptor (and its pool)
  // need only live during this call: the registry entry copies what it needs.
  // Errors: invalid_argument (null descriptor), invalid_topic, unknown_transport,
  // or the transport's error.
  static DynamicPublisher advertise(Bus& bus, std::string_view topic,
                                    const google::protobuf::Descriptor* descriptor, std::error_code& ec) {
    if (!descriptor) {
      ec = make_error_code(errc::invalid_argument);
      return {};
    }
    auto core = detail::publisher_core::create(bus.state(), topic, descriptor->full_name(), descriptor, ec);
    return ec ? DynamicPublisher{} : DynamicPublisher(std::move(core), descriptor->full_name());
  }
  static DynamicPublisher advertise(Bus& bus, std::string_view topic,
                                    const google::protobuf::Descriptor* descriptor) {
    std::error_code ec;
    auto p = advertise(bus, topic, descriptor, ec);
    throw_if(ec, "advertise '" + std::string(topic) + "'");
    return p;
  }

  // As Publisher<T>::publish. Additionally type_mismatch when `message` is not of
  // the advertised type (compared by full name: pools may differ).
  void publish(const google::protobuf::Message& message, std::error_code& ec) {
    if (!core_) {
      ec = make_error_code(errc::closed);
      return;
    }
    if (message.GetDescriptor()->full_name() != type_name_) {
      ec = make_error_code(errc::type_mismatch);
      return;
    }
    const std::size_t size = message.ByteSizeLong();  // caches sizes for the write below
    ec = core_->publish(size, [&message](char* out, std::size_t n) {
      auto* begin = reinterpret_cast<std::uint8_t*>(out);
      return message.SerializeWithCachedSizesToArray(begin) == begin + n;
    });
  }
  void publish(const google::protobuf::Message& message) {
    std::error_code ec;
    publish(message, ec);
    if (ec) throw_if(ec, "publish on '" + topic() + "'");
  }

  std::size_t subscriber_count() const { return core_ ? core_->subscriber_count() : 0; }
  // Waits until at least `n` subscribers are attached; false on timeout.
  bool wait_for_subscribers(std::size_t n, std::chrono::milliseconds timeout) const {
    return core_ && core_->wait_for_subscribers(n, timeout);
  }
  const std::string& topic() const {
    static const std::string none;
    return core_ ? core_->topic() : none;
  }
  const std::string& type_name() const { return type_name_; }
  std::uint64_t id() const { return core_ ? core_->id() : 0; }
  // Drains for up to `drain`, then closes. Later publishes fail with `closed`.
  void close(std::chrono::milliseconds drain = std::chrono::seconds(2)) {
    if (core_) core_->close(drain);
    core_.reset();
  }
  explicit operator bool() const { return static_cast<bool>(core_); }

 private:
  DynamicPublisher(std::shared_ptr<detail::publisher_core> core, std::string type_name)
      : core_(std::move(core)), type_name_(std::move(type_name)) {}
  std::shared_ptr<detail::publisher_core> core_;
  std::string type_name_;
};

}  // namespace ipcbus
