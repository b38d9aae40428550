#include "mq_names.hpp"

#include <mqueue.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <fstream>

#include "ipcbus/access.hpp"
#include "ipcbus/registry.hpp"
#include "ipcbus/transports/mqueue.hpp"

namespace ipcbus::transport::mqueue {
namespace fs = std::filesystem;

namespace {

constexpr std::string_view name_start = "ipcbus-";
constexpr long mqueue_magic = 0x19800202;  // MQUEUE_MAGIC (linux/magic.h)

bool is_hex16(std::string_view s) {
  return s.size() == 16 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::uint64_t hex64(std::string_view s) {
  std::uint64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v, 16);
  return v;
}

// A decimal pid of 1..10 digits, no sign, no leading zero.
std::optional<std::uint32_t> parse_pid(std::string_view s) {
  if (s.empty() || s.size() > 10 || s[0] == '0') return std::nullopt;
  std::uint32_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v == 0 || v > 0x7fffffffu) return std::nullopt;
  return v;
}

long read_long(const char* path, long fallback) {
  std::ifstream in(path);
  long v = 0;
  return in >> v && v > 0 ? v : fallback;
}

void store(char* out, const void* v, std::size_t n) { std::memcpy(out, v, n); }

// Unlinks `q` (and its marker) when its owner is gone; records the name.
void reclaim_one(const fs::path& domain_dir, const queue_name& q, bool dry_run, std::vector<std::string>& out) {
  if (!process_gone(q.owner_pid)) return;
  const std::string name = q.text();
  if (std::find(out.begin(), out.end(), name) != out.end()) return;
  if (!dry_run) {
    ::mq_unlink(name.c_str());  // ENOENT: already gone, only the marker is left
    if (!domain_dir.empty()) {
      std::error_code ec;
      fs::remove(marker_path(domain_dir, q), ec);
    }
  }
  out.push_back(name);
}

}  // namespace

std::string queue_prefix(const fs::path& domain_dir) {
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a 64
  for (const char c : domain_dir.lexically_normal().string())
    h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return std::string(name_start) + id_to_hex(h) + "-";
}

std::string queue_name::text() const {
  std::string s = "/" + std::string(name_start) + hash + "-" + id_to_hex(publisher_id) + "-";
  if (link_id == 0) return s + "p" + std::to_string(owner_pid);
  return s + id_to_hex(link_id) + "-s" + std::to_string(owner_pid);
}

std::optional<queue_name> parse_queue_name(std::string_view name) {
  if (name.starts_with("/")) name.remove_prefix(1);
  if (!name.starts_with(name_start)) return std::nullopt;
  name.remove_prefix(name_start.size());
  // <hash>-<publisher>-p<pid>  or  <hash>-<publisher>-<link>-s<pid>
  if (name.size() < 16 + 1 + 16 + 1 + 2 || name[16] != '-' || name[33] != '-') return std::nullopt;
  queue_name q;
  q.hash = std::string(name.substr(0, 16));
  const auto pub = name.substr(17, 16);
  if (!is_hex16(q.hash) || !is_hex16(pub)) return std::nullopt;
  q.publisher_id = hex64(pub);
  auto rest = name.substr(34);
  char role = 'p';
  if (rest.size() > 17 && rest[16] == '-') {
    if (!is_hex16(rest.substr(0, 16))) return std::nullopt;
    q.link_id = hex64(rest.substr(0, 16));
    if (q.link_id == 0) return std::nullopt;
    rest.remove_prefix(17);
    role = 's';
  }
  if (rest.empty() || rest[0] != role) return std::nullopt;
  const auto pid = parse_pid(rest.substr(1));
  if (!pid || q.publisher_id == 0) return std::nullopt;
  q.owner_pid = *pid;
  return q;
}

fs::path marker_dir(const fs::path& domain_dir) { return domain_dir / "mq"; }

void ensure_marker_dir(const fs::path& domain_dir, const security_settings& security) {
  const fs::path dir = marker_dir(domain_dir);
  (void)make_directory(dir, security);  // an error shows when the marker is made
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0 && st.st_uid == ::geteuid() &&
      ((st.st_mode & 07777) != directory_mode(security) ||
       (security.group_gid && st.st_gid != *security.group_gid)))
    (void)share_path(dir, security, true);
}

fs::path marker_path(const fs::path& domain_dir, const queue_name& q) {
  return marker_dir(domain_dir) / q.text().substr(1);
}

std::optional<attach_target> parse_uri(std::string_view uri) {
  constexpr std::string_view scheme = "mq://";
  if (!uri.starts_with(scheme) || uri.find('\0') != std::string_view::npos) return std::nullopt;
  const fs::path marker(std::string(uri.substr(scheme.size())));
  if (!marker.is_absolute() || marker.lexically_normal() != marker) return std::nullopt;
  if (marker.parent_path().filename() != "mq") return std::nullopt;
  auto q = parse_queue_name(marker.filename().string());
  if (!q || q->link_id != 0) return std::nullopt;
  attach_target t;
  t.domain_dir = marker.parent_path().parent_path();
  if (queue_prefix(t.domain_dir) != std::string(name_start) + q->hash + "-") return std::nullopt;
  t.queue = std::move(*q);
  return t;
}

std::string make_uri(const fs::path& domain_dir, const queue_name& q) {
  return "mq://" + marker_path(domain_dir, q).string();
}

std::array<char, control_size> encode_control(const control_message& m) {
  std::array<char, control_size> out{};
  const std::uint32_t magic = 0x43425149;  // "IQBC"
  const std::uint16_t version = 1;
  const auto kind = static_cast<std::uint16_t>(m.kind);
  store(out.data(), &magic, 4);
  store(out.data() + 4, &version, 2);
  store(out.data() + 6, &kind, 2);
  store(out.data() + 8, &m.link_id, 8);
  store(out.data() + 16, &m.pid, 4);
  return out;
}

std::optional<control_message> decode_control(const char* bytes, std::size_t size) {
  if (size != control_size) return std::nullopt;
  std::uint32_t magic = 0;
  std::uint16_t version = 0, kind = 0;
  control_message m;
  std::memcpy(&magic, bytes, 4);
  std::memcpy(&version, bytes + 4, 2);
  std::memcpy(&kind, bytes + 6, 2);
  std::memcpy(&m.link_id, bytes + 8, 8);
  std::memcpy(&m.pid, bytes + 16, 4);
  if (magic != 0x43425149 || version != 1 || m.link_id == 0 || m.pid == 0 || m.pid > 0x7fffffffu) return std::nullopt;
  if (kind != static_cast<std::uint16_t>(control_kind::attach) && kind != static_cast<std::uint16_t>(control_kind::detach))
    return std::nullopt;
  m.kind = static_cast<control_kind>(kind);
  return m;
}

void encode_header(char* out, const message_header& h) {
  std::memset(out, 0, header_size);
  out[0] = static_cast<char>(h.kind);
  out[1] = 1;  // version
  store(out + 4, &h.index, 4);
  store(out + 8, &h.total, 8);
}

std::optional<message_header> decode_header(const char* bytes, std::size_t size) {
  if (size < header_size || bytes[1] != 1) return std::nullopt;
  const auto kind = static_cast<std::uint8_t>(bytes[0]);
  if (kind < 1 || kind > 5) return std::nullopt;
  message_header h;
  h.kind = static_cast<message_kind>(kind);
  std::memcpy(&h.index, bytes + 4, 4);
  std::memcpy(&h.total, bytes + 8, 8);
  return h;
}

mq_limits read_mq_limits() {
  mq_limits l;
  l.msg_max = read_long("/proc/sys/fs/mqueue/msg_max", l.msg_max);
  l.msgsize_max = read_long("/proc/sys/fs/mqueue/msgsize_max", l.msgsize_max);
  rlimit r{};
  if (::getrlimit(RLIMIT_MSGQUEUE, &r) == 0) l.rlimit = r.rlim_cur;
  struct statfs fs_info {};
  l.mounted = ::statfs("/dev/mqueue", &fs_info) == 0 && static_cast<long>(fs_info.f_type) == mqueue_magic;
  return l;
}

std::vector<std::string> reclaim_mq_queues(const fs::path& domain_dir, bool dry_run) {
  std::vector<std::string> out;
  const std::string prefix = queue_prefix(domain_dir);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(marker_dir(domain_dir), ec)) {
    const auto q = parse_queue_name(e.path().filename().string());
    if (q && e.path().filename().string().starts_with(prefix)) reclaim_one(domain_dir, *q, dry_run, out);
  }
  if (read_mq_limits().mounted) {
    for (const auto& e : fs::directory_iterator("/dev/mqueue", ec)) {
      const std::string name = e.path().filename().string();
      const auto q = parse_queue_name(name);
      if (q && name.starts_with(prefix)) reclaim_one(domain_dir, *q, dry_run, out);
    }
  }
  return out;
}

std::vector<std::string> reclaim_orphaned_mq_queues(bool dry_run) {
  std::vector<std::string> out;
  if (!read_mq_limits().mounted) return out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/dev/mqueue", ec)) {
    const auto q = parse_queue_name(e.path().filename().string());
    if (q) reclaim_one({}, *q, dry_run, out);
  }
  return out;
}

}  // namespace ipcbus::transport::mqueue
