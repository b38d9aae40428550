// What a message is to the bus: a protobuf message type, or raw bytes (ipcbus::Bytes),
// and the MessageInfo delivered with each one.
//
// message_traits<T> tells the bus a type's name, how big it serializes, how to
// serialize it in place and how to parse it. Thread-safety: Bytes is a value type
// (a view when delivered to a callback; see below); traits are stateless.
#pragma once

#include <chrono>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <variant>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

namespace ipcbus {

// Raw payload bytes. Publishing: owns its bytes or views caller memory that must
// stay valid during publish(). Delivered to a callback: a view into the receive
// buffer, valid only during the callback (copy with to_string() to keep it).
// Delivered by receive(): owns its bytes.
class Bytes {
 public:
  Bytes() = default;
  Bytes(std::string owned) : storage_(std::move(owned)) {}  // NOLINT: implicit on purpose
  Bytes(const char* text) : storage_(std::string(text)) {}   // NOLINT
  static Bytes view(std::string_view borrowed) {
    Bytes b;
    b.storage_ = borrowed;
    return b;
  }
  std::string_view bytes() const {
    if (const auto* s = std::get_if<std::string>(&storage_)) return *s;
    return std::get<std::string_view>(storage_);
  }
  const char* data() const { return bytes().data(); }
  std::size_t size() const { return bytes().size(); }
  bool empty() const { return size() == 0; }
  std::string to_string() const { return std::string(bytes()); }
  friend bool operator==(const Bytes& a, const Bytes& b) { return a.bytes() == b.bytes(); }

 private:
  std::variant<std::string, std::string_view> storage_;
};

struct MessageInfo {
  std::string topic;
  std::uint64_t publisher_id = 0;
  std::uint64_t sequence = 0;        // per publisher, from 1
  std::int64_t publish_time_ns = 0;  // CLOCK_REALTIME at publish
  std::string transport;             // scheme the message came over
  std::uint64_t lost_before = 0;     // messages of this publisher missed just before this one
  std::uint64_t origin_host = 0;     // where it entered the bus (bridge)
  std::uint32_t hop_count = 0;

  // Now minus publish time, for latency figures.
  std::chrono::nanoseconds age() const;
};

template <class T>
concept protobuf_message = std::derived_from<T, google::protobuf::Message>;

template <class T>
struct message_traits;

template <protobuf_message T>
struct message_traits<T> {
  static const std::string& type_name() { return T::descriptor()->full_name(); }
  static const google::protobuf::Descriptor* descriptor() { return T::descriptor(); }
  static std::size_t byte_size(const T& m) { return m.ByteSizeLong(); }
  // Requires byte_size() to have been called just before (cached sizes).
  static bool write(const T& m, char* out, std::size_t size) {
    auto* end = m.SerializeWithCachedSizesToArray(reinterpret_cast<std::uint8_t*>(out));
    return end == reinterpret_cast<std::uint8_t*>(out) + size;
  }
  static bool parse(std::string_view bytes, T& out) {
    return out.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()));
  }
};

template <>
struct message_traits<Bytes> {
  static const std::string& type_name() {
    static const std::string empty;
    return empty;
  }
  static const google::protobuf::Descriptor* descriptor() { return nullptr; }
  static std::size_t byte_size(const Bytes& b) { return b.size(); }
  static bool write(const Bytes& b, char* out, std::size_t size) {
    std::memcpy(out, b.data(), size);
    return true;
  }
  static bool parse(std::string_view bytes, Bytes& out) {
    out = Bytes::view(bytes);
    return true;
  }
};

}  // namespace ipcbus
