// pipe:// naming and the attach record: everything about the files and bytes
// of the transport that both ends (and `ipcbus gc`) must agree on.
//
// Thread-safety: free functions without shared state.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "ipcbus/config.hpp"

namespace ipcbus::transport::pipe {

// <domain dir>/<publisher id hex>.pipe: the publisher's attach FIFO.
std::filesystem::path attach_fifo_path(const std::filesystem::path& domain_dir, std::uint64_t publisher_id);
// <domain dir>/<publisher id hex>.<link id hex>.fifo: one subscriber's data FIFO.
std::filesystem::path data_fifo_path(const std::filesystem::path& domain_dir, std::uint64_t publisher_id,
                                     std::uint64_t link_id);

struct attach_target {
  std::filesystem::path domain_dir;
  std::filesystem::path attach_fifo;
  std::uint64_t publisher_id = 0;
};
// Accepts exactly "pipe://<absolute, normalized dir>/<16 hex>.pipe"; nullopt otherwise.
std::optional<attach_target> parse_uri(std::string_view uri);

// What a subscriber writes into the attach FIFO: 32 bytes, well under PIPE_BUF,
// so records from many subscribers never interleave.
inline constexpr std::size_t attach_record_size = 32;
inline constexpr std::uint32_t attach_magic = 0x41425049;  // "IPBA" little-endian
inline constexpr std::uint16_t attach_version = 1;

struct attach_record {
  std::uint64_t link_id = 0;
  std::uint32_t pid = 0;
};
std::array<char, attach_record_size> encode_attach(const attach_record& r);
// nullopt when the bytes are not a record of this version (or the link id is 0).
std::optional<attach_record> decode_attach(const char* bytes);

// True when `fd` is a FIFO owned by our uid, root, or an allowed uid/gid.
// Fills `why` otherwise.
bool fifo_owner_allowed(int fd, const security_settings& security, std::string& why);

}  // namespace ipcbus::transport::pipe
