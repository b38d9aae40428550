#include "pipe_names.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>

#include "ipcbus/access.hpp"
#include "ipcbus/registry.hpp"
#include "ipcbus/transports/pipe.hpp"

namespace ipcbus::transport::pipe {
namespace fs = std::filesystem;

namespace {

bool is_hex16(std::string_view s) {
  return s.size() == 16 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::uint64_t parse_hex16(std::string_view s) {
  std::uint64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v, 16);
  return v;
}

// "<16 hex>.pipe" or "<16 hex>.<16 hex>.fifo": the FIFOs this transport makes.
bool is_our_fifo_name(std::string_view name) {
  if (name.size() == 21 && name.ends_with(".pipe")) return is_hex16(name.substr(0, 16));
  return name.size() == 38 && name.ends_with(".fifo") && name[16] == '.' && is_hex16(name.substr(0, 16)) &&
         is_hex16(name.substr(17, 16));
}

}  // namespace

fs::path attach_fifo_path(const fs::path& domain_dir, std::uint64_t publisher_id) {
  return domain_dir / (id_to_hex(publisher_id) + ".pipe");
}

fs::path data_fifo_path(const fs::path& domain_dir, std::uint64_t publisher_id, std::uint64_t link_id) {
  return domain_dir / (id_to_hex(publisher_id) + "." + id_to_hex(link_id) + ".fifo");
}

std::optional<attach_target> parse_uri(std::string_view uri) {
  constexpr std::string_view scheme = "pipe://";
  if (!uri.starts_with(scheme) || uri.find('\0') != std::string_view::npos) return std::nullopt;
  const fs::path path(std::string(uri.substr(scheme.size())));
  if (!path.is_absolute() || path.lexically_normal() != path) return std::nullopt;
  const std::string name = path.filename().string();
  if (name.size() != 21 || !name.ends_with(".pipe") || !is_hex16(std::string_view(name).substr(0, 16)))
    return std::nullopt;
  attach_target t;
  t.domain_dir = path.parent_path();
  t.attach_fifo = path;
  t.publisher_id = parse_hex16(std::string_view(name).substr(0, 16));
  if (t.publisher_id == 0) return std::nullopt;
  return t;
}

std::array<char, attach_record_size> encode_attach(const attach_record& r) {
  std::array<char, attach_record_size> out{};
  std::memcpy(out.data(), &attach_magic, 4);
  std::memcpy(out.data() + 4, &attach_version, 2);
  std::memcpy(out.data() + 8, &r.link_id, 8);
  std::memcpy(out.data() + 16, &r.pid, 4);
  return out;
}

std::optional<attach_record> decode_attach(const char* bytes) {
  std::uint32_t magic = 0;
  std::uint16_t version = 0;
  std::memcpy(&magic, bytes, 4);
  std::memcpy(&version, bytes + 4, 2);
  if (magic != attach_magic || version != attach_version) return std::nullopt;
  attach_record r;
  std::memcpy(&r.link_id, bytes + 8, 8);
  std::memcpy(&r.pid, bytes + 16, 4);
  if (r.link_id == 0) return std::nullopt;
  return r;
}

bool fifo_owner_allowed(int fd, const security_settings& security, std::string& why) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    why = std::strerror(errno);
    return false;
  }
  if (!S_ISFIFO(st.st_mode)) {
    why = "not a FIFO";
    return false;
  }
  if (owner_allowed(st, security)) return true;
  why = "owned by uid " + std::to_string(st.st_uid) + " gid " + std::to_string(st.st_gid);
  return false;
}

std::vector<fs::path> reclaim_orphaned_fifos(const fs::path& domain_dir, bool dry_run, std::chrono::seconds min_age) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(domain_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!is_our_fifo_name(name)) continue;
    struct stat st {};
    if (::lstat(e.path().c_str(), &st) != 0 || !S_ISFIFO(st.st_mode)) continue;
    if (::time(nullptr) - st.st_ctime < min_age.count()) continue;
    // Never blocks: without a reader this fails with ENXIO; with one it
    // succeeds and the reader, holding its own write end, notices nothing.
    const int fd = ::open(e.path().c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) {
      ::close(fd);
      continue;
    }
    if (errno != ENXIO) continue;
    if (dry_run || ::unlink(e.path().c_str()) == 0) out.push_back(e.path());
  }
  return out;
}

}  // namespace ipcbus::transport::pipe
