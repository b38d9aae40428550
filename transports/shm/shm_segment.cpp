#include "shm_segment.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>

#include "ipcbus/access.hpp"
#include "ipcbus/error.hpp"
#include "ipcbus/registry.hpp"
#include "ipcbus/transports/shm.hpp"
#include "shm_layout.hpp"

namespace ipcbus::transport::shm {
namespace fs = std::filesystem;

namespace {

std::string hex16(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::error_code errno_code(int e) { return {e, std::system_category()}; }

// Closes a descriptor on every path out of a function.
struct fd_guard {
  int fd;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

mapped_segment& mapped_segment::operator=(mapped_segment&& o) noexcept {
  if (this != &o) {
    reset();
    base_ = o.base_;
    size_ = o.size_;
    o.base_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

void mapped_segment::reset() {
  if (base_) ::munmap(base_, size_);
  base_ = nullptr;
  size_ = 0;
}

std::string segment_prefix(const fs::path& domain_dir) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::absolute(domain_dir, ec), ec);
  if (ec || p.empty()) p = domain_dir;
  const std::string s = p.lexically_normal().string();
  std::uint64_t h = 14695981039346656037ull;  // FNV-1a 64: stable across processes and builds
  for (const char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return "/ipcbus-" + hex16(h) + "-";
}

std::string ring_name(const fs::path& domain_dir, std::uint64_t publisher_id) {
  return segment_prefix(domain_dir) + id_to_hex(publisher_id);
}

std::string blob_name(const std::string& ring, std::uint64_t blob_id) { return ring + "-b" + hex16(blob_id); }

bool valid_ring_name(const std::string& name) {
  // "/ipcbus-" + 16 hex + "-" + 16 hex
  if (name.size() != 8 + 16 + 1 + 16 || !name.starts_with("/ipcbus-")) return false;
  for (std::size_t i = 8; i < name.size(); ++i) {
    const char c = name[i];
    const bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
    if (i == 8 + 16 ? c != '-' : !hex) return false;
  }
  return true;
}

std::error_code create_segment(const std::string& name, std::size_t size, const security_settings& security,
                               mapped_segment& out) {
  fd_guard fd{::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600)};
  if (fd.fd < 0) return errno_code(errno);
  auto fail = [&](int e) {
    ::shm_unlink(name.c_str());
    return errno_code(e);
  };
  if (auto ec = share_object(fd.fd, security)) return fail(ec.value());
  if (::ftruncate(fd.fd, static_cast<off_t>(size)) != 0) return fail(errno);
  // posix_fallocate returns the error instead of setting errno.
  if (const int e = ::posix_fallocate(fd.fd, 0, static_cast<off_t>(size)); e != 0 && e != EOPNOTSUPP)
    return fail(e);
  void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.fd, 0);
  if (base == MAP_FAILED) return fail(errno);
  out = mapped_segment(base, size);
  return {};
}

std::error_code open_segment(const open_request& req, const security_settings& security, mapped_segment& out) {
  fd_guard fd{::shm_open(req.name.c_str(), (req.writable ? O_RDWR : O_RDONLY) | O_CLOEXEC, 0)};
  if (fd.fd < 0) {
    if (errno == ENOENT) return make_error_code(errc::peer_gone);
    if (errno == EACCES) return make_error_code(errc::access_denied);
    return errno_code(errno);
  }
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0) return errno_code(errno);
  if (!owner_allowed(st, security)) return make_error_code(errc::access_denied);
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size > req.max_size)
    return make_error_code(req.too_large_is_oversize ? errc::message_too_large : errc::malformed_frame);
  if (size < req.min_size || size == 0) return make_error_code(errc::malformed_frame);
  const int prot = PROT_READ | (req.writable ? PROT_WRITE : 0);
  void* base = ::mmap(nullptr, size, prot, MAP_SHARED, fd.fd, 0);
  if (base == MAP_FAILED) return errno_code(errno);
  out = mapped_segment(base, size);
  return {};
}

fs::path marker_path(const fs::path& domain_dir, std::uint64_t publisher_id) {
  return domain_dir / (id_to_hex(publisher_id) + ".shm");
}

std::error_code write_marker(const fs::path& marker, const std::string& ring) {
  fd_guard fd{::open(marker.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600)};
  if (fd.fd < 0) return errno_code(errno);
  if (const mode_t mode = read_only_mode_in(marker.parent_path()); mode != 0600) (void)::fchmod(fd.fd, mode);
  const std::string line = ring + "\n";
  ssize_t n = -1;
  do {
    n = ::write(fd.fd, line.data(), line.size());
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(line.size())) {
    const int e = errno;
    ::unlink(marker.c_str());
    return errno_code(e ? e : EIO);
  }
  return {};
}

namespace layout {

bool process_gone(std::uint32_t pid) { return ipcbus::process_gone(pid); }

}  // namespace layout

// ---- reclaim ------------------------------------------------------------------

namespace {

// The owner pid recorded in a ring, or 0 when it cannot be read (not built yet,
// not ours, not a ring).
std::uint32_t ring_owner(const std::string& ring) {
  mapped_segment m;
  open_request req{ring, false, sizeof(layout::ring_header), std::size_t{1} << 40, false};
  if (open_segment(req, security_settings{}, m)) return 0;
  const auto* h = reinterpret_cast<const layout::ring_header*>(m.data());
  if (h->magic.load(std::memory_order_acquire) != layout::ring_magic) return 0;
  return h->owner_pid;
}

// Segments of one publisher found in /dev/shm: the ring and its side segments.
struct publisher_segments {
  bool has_ring = false;
  std::vector<std::string> names;  // with the leading '/'
};

// Every "<ring>[-b<16 hex>]" in /dev/shm whose ring name starts with `prefix`,
// by ring name ("/ipcbus-<16 hex>-<16 hex>").
std::map<std::string, publisher_segments> segments_under(const std::string& prefix) {
  constexpr std::size_t ring_size = 8 + 16 + 1 + 16;  // as valid_ring_name wants it
  std::map<std::string, publisher_segments> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/dev/shm", ec)) {
    // Appended rather than `"/" + ...`: GCC 12 at -O3 reports a false -Wrestrict
    // overlap for the operator+ form.
    std::string name(1, '/');
    name += e.path().filename().string();
    if (!name.starts_with(prefix) || name.size() < ring_size) continue;
    const std::string ring = name.substr(0, ring_size);
    const std::string rest = name.substr(ring_size);
    if (!valid_ring_name(ring) || !(rest.empty() || (rest.size() == 18 && rest.starts_with("-b")))) continue;
    auto& p = out[ring];
    p.names.push_back(name);
    if (rest.empty()) p.has_ring = true;
  }
  return out;
}

// The ring last: a concurrent reclaim that sees side segments without their
// ring still finds them dead. A dry run only reports the names.
void unlink_all(publisher_segments& segs, bool dry_run, std::vector<std::string>& removed) {
  std::sort(segs.names.begin(), segs.names.end(), [](const auto& a, const auto& b) { return a.size() > b.size(); });
  for (const auto& n : segs.names)
    if (dry_run || ::shm_unlink(n.c_str()) == 0) removed.push_back(n);
}

// A ring whose magic was never written although it was created long ago: its
// publisher died while building it (that takes milliseconds). Nothing in it
// names an owner, so age is all there is to go by.
bool abandoned_unbuilt(const std::string& ring) {
  constexpr auto build_time_limit = std::chrono::seconds(60);
  struct stat st {};
  std::string path = "/dev/shm";
  path += ring;
  if (::stat(path.c_str(), &st) != 0 || ::time(nullptr) - st.st_mtime < build_time_limit.count()) return false;
  mapped_segment m;
  open_request req{ring, false, sizeof(layout::ring_header), std::size_t{1} << 40, false};
  if (open_segment(req, security_settings{}, m)) return false;
  return reinterpret_cast<const layout::ring_header*>(m.data())->magic.load(std::memory_order_acquire) == 0;
}

bool owner_gone(const std::string& ring) {
  const std::uint32_t owner = ring_owner(ring);
  if (owner == 0) return abandoned_unbuilt(ring);  // unreadable, or still (or never) built
  return layout::process_gone(owner);
}

}  // namespace

std::vector<std::string> reclaim_shm_segments(const fs::path& domain_dir, bool dry_run) {
  std::vector<std::string> removed;
  for (auto& [ring, segs] : segments_under(segment_prefix(domain_dir))) {
    const std::string id = ring.substr(ring.size() - 16);
    const fs::path marker = domain_dir / (id + ".shm");
    std::error_code ec;
    bool dead = !fs::exists(marker, ec) && !ec;
    // A real run finds the marker of a dead participant already removed by the
    // registry's reclaim, which `ipcbus gc` runs first; a dry run removes
    // nothing, so it asks the registry entry directly.
    if (!dead && dry_run) dead = entry_is_stale(domain_dir / (id + ".pub"));
    if (!dead && segs.has_ring && owner_gone(ring)) {
      dead = true;
      if (!dry_run) fs::remove(marker, ec);
    }
    if (dead) unlink_all(segs, dry_run, removed);
  }
  return removed;
}

std::vector<std::string> reclaim_orphaned_shm_segments(bool dry_run) {
  std::vector<std::string> removed;
  for (auto& [ring, segs] : segments_under("/ipcbus-")) {
    // Side segments without their ring: the publisher unlinks its ring last, so
    // these belong to nobody.
    if (!segs.has_ring || owner_gone(ring)) unlink_all(segs, dry_run, removed);
  }
  return removed;
}

}  // namespace ipcbus::transport::shm
