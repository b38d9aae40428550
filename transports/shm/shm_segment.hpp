// POSIX shared memory objects for the shm:// transport: naming, creating,
// opening and mapping them, and the marker files that tie them to a publisher
// in the domain directory.
//
// Thread-safety: mapped_segment is a move-only value owned by one object; the
// free functions are safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <system_error>

#include "ipcbus/config.hpp"

namespace ipcbus::transport::shm {

// An mmap'ed region; unmapped on destruction. Never owns a name: unlinking is
// the creator's business.
class mapped_segment {
 public:
  mapped_segment() = default;
  mapped_segment(void* base, std::size_t size) : base_(static_cast<char*>(base)), size_(size) {}
  ~mapped_segment() { reset(); }
  mapped_segment(mapped_segment&& o) noexcept : base_(o.base_), size_(o.size_) { o.base_ = nullptr; o.size_ = 0; }
  mapped_segment& operator=(mapped_segment&& o) noexcept;
  mapped_segment(const mapped_segment&) = delete;
  mapped_segment& operator=(const mapped_segment&) = delete;

  char* data() const { return base_; }
  std::size_t size() const { return size_; }
  explicit operator bool() const { return base_ != nullptr; }
  void reset();

 private:
  char* base_ = nullptr;
  std::size_t size_ = 0;
};

// "/ipcbus-<16 hex>-<publisher id hex>"
std::string ring_name(const std::filesystem::path& domain_dir, std::uint64_t publisher_id);
// "<ring>-b<side segment number hex>"
std::string blob_name(const std::string& ring, std::uint64_t blob_id);
// Accepts only names this transport makes ("/ipcbus-" then [0-9a-f-]), so a URI
// from a discovery entry can never name some other object.
bool valid_ring_name(const std::string& name);

// Creates `name` (O_EXCL, mode 0600), reserves `size` bytes of memory for it
// (fallocate: a full /dev/shm is ENOSPC now rather than SIGBUS on a later
// write) and maps it read-write. On failure nothing is left behind.
std::error_code create_segment(const std::string& name, std::size_t size, const security_settings& security,
                               mapped_segment& out);

// Opens and maps an existing segment after checking that its owner is us, root
// or an allowed uid (errc::access_denied otherwise) and that its size is within
// [min_size, max_size] (errc::malformed_frame otherwise; message_too_large when
// `too_large_is_oversize`). ENOENT becomes errc::peer_gone.
struct open_request {
  std::string name;
  bool writable = false;
  std::size_t min_size = 0;
  std::size_t max_size = 0;
  bool too_large_is_oversize = false;
};
std::error_code open_segment(const open_request& req, const security_settings& security, mapped_segment& out);

// `<domain_dir>/<publisher id hex>.shm`, holding the ring name: what the
// registry's reclaim removes when the publisher dies.
std::filesystem::path marker_path(const std::filesystem::path& domain_dir, std::uint64_t publisher_id);
std::error_code write_marker(const std::filesystem::path& marker, const std::string& ring);

}  // namespace ipcbus::transport::shm
