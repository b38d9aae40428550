// mq:// naming, markers, limits and the bytes of its messages: everything both
// ends (and `ipcbus gc`) must agree on.
//
// Thread-safety: free functions without shared state (read_mq_limits caches nothing).
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "ipcbus/config.hpp"

namespace ipcbus::transport::mqueue {

// "ipcbus-<16 hex of FNV-1a(domain dir)>-": every queue of the domain starts so (after '/').
std::string queue_prefix(const std::filesystem::path& domain_dir);

struct queue_name {
  std::string hash;             // 16 hex
  std::uint64_t publisher_id = 0;
  std::uint64_t link_id = 0;    // 0: the publisher's attach queue
  std::uint32_t owner_pid = 0;  // who created it (publisher or subscriber)
  std::string text() const;     // "/ipcbus-...", the name for mq_open
};
// Accepts exactly the two forms below (name with or without the leading '/'):
//   ipcbus-<16 hex>-<16 hex>-p<pid>            a publisher's attach queue
//   ipcbus-<16 hex>-<16 hex>-<16 hex>-s<pid>   a subscriber's data queue
std::optional<queue_name> parse_queue_name(std::string_view name);

// <domain dir>/mq/: the markers.
std::filesystem::path marker_dir(const std::filesystem::path& domain_dir);
// Creates the marker directory with the domain's mode (0700, or 02770 for a
// sharing group) if it is missing; one we own gets that mode if it has another.
void ensure_marker_dir(const std::filesystem::path& domain_dir, const security_settings& security);
std::filesystem::path marker_path(const std::filesystem::path& domain_dir, const queue_name& q);

struct attach_target {
  std::filesystem::path domain_dir;
  queue_name queue;
};
// "mq://<dir>/mq/<attach queue name>" with the hash of <dir>; nullopt otherwise.
std::optional<attach_target> parse_uri(std::string_view uri);
std::string make_uri(const std::filesystem::path& domain_dir, const queue_name& q);

// Subscriber -> publisher, on the attach queue: 32 bytes.
inline constexpr std::size_t control_size = 32;
enum class control_kind : std::uint16_t { attach = 1, detach = 2 };
struct control_message {
  control_kind kind = control_kind::attach;
  std::uint64_t link_id = 0;
  std::uint32_t pid = 0;
};
std::array<char, control_size> encode_control(const control_message& m);
std::optional<control_message> decode_control(const char* bytes, std::size_t size);

// Publisher -> subscriber, on the data queue: a 16-byte header, then up to
// msgsize - 16 bytes of the encoded frame (varint32 length + ipcbus.Frame).
inline constexpr std::size_t header_size = 16;
enum class message_kind : std::uint8_t { whole = 1, first = 2, middle = 3, last = 4, bye = 5 };
struct message_header {
  message_kind kind = message_kind::whole;
  std::uint32_t index = 0;   // fragment number, 0 for whole and first
  std::uint64_t total = 0;   // bytes of the whole encoded frame
};
void encode_header(char* out, const message_header& h);
std::optional<message_header> decode_header(const char* bytes, std::size_t size);

}  // namespace ipcbus::transport::mqueue
