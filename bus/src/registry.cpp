#include "ipcbus/registry.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <csignal>
#include <chrono>
#include <ctime>
#include <fstream>
#include <random>
#include <sstream>

#include <boost/asio/buffer.hpp>

#include "ipcbus/access.hpp"
#include "ipcbus/error.hpp"

namespace ipcbus {
namespace fs = std::filesystem;

namespace {


std::error_code write_all(int fd, const std::string& data) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return {errno, std::system_category()};
    }
    done += static_cast<std::size_t>(n);
  }
  return {};
}

// Removes `<id>.*` in dir (the prefix is everything before the first dot).
void remove_owned_files(const fs::path& dir, const std::string& id_hex,
                        std::vector<fs::path>* removed, const std::string& except = {}) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() > id_hex.size() && name.compare(0, id_hex.size(), id_hex) == 0 &&
        name[id_hex.size()] == '.' && name != except) {
      std::error_code rm_ec;
      if (fs::remove(e.path(), rm_ec) && removed) removed->push_back(e.path());
    }
  }
}

// The pid in a temporary's name ".<id>.<pid>.tmp", or 0.
std::uint32_t temporary_owner(const std::string& name) {
  const auto first = name.find('.', 1);
  const auto last = name.rfind('.');
  if (first == std::string::npos || last <= first + 1) return 0;
  std::uint32_t pid = 0;
  const auto [end, ec] = std::from_chars(name.data() + first + 1, name.data() + last, pid);
  return ec == std::errc() && end == name.data() + last ? pid : 0;
}

bool older_than(const fs::path& path, std::chrono::seconds age) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return false;
  return ::time(nullptr) - st.st_mtime > age.count();
}

}  // namespace

bool is_entry_name(const std::string& name) {
  return !name.empty() && name[0] != '.' &&
         (name.ends_with(".pub") || name.ends_with(".sub") || name.ends_with(".bridge"));
}

bool process_gone(std::uint32_t pid) {
  if (pid == 0 || pid > 0x7fffffffu) return true;
  if (::kill(static_cast<pid_t>(pid), 0) != 0) return errno == ESRCH;
  // "<pid> (<comm>) <state> ...": comm may hold anything, so look after the last ')'.
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return false;
  const auto paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && (stat[paren + 2] == 'Z' || stat[paren + 2] == 'X');
}

fs::path domain_dir_of(const config& cfg) { return cfg.resolved_runtime_dir() / cfg.domain; }

fs::path ensure_domain_dir(const config& cfg, std::error_code& ec) {
  const fs::path runtime = cfg.resolved_runtime_dir();
  const fs::path dir = runtime / cfg.domain;
  for (const fs::path& p : {runtime, dir}) {
    if (make_directory(p, cfg.security)) continue;
    if (errno == ENOENT) {  // parents missing: create them, then our own levels
      fs::create_directories(p.parent_path(), ec);
      if (ec) return {};
      if (make_directory(p, cfg.security)) continue;
    }
    ec = {errno, std::system_category()};
    return {};
  }
  // A directory made earlier with another mode: ours get the configured one.
  const mode_t mode = directory_mode(cfg.security);
  for (const fs::path& p : {runtime, dir}) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0 || st.st_uid != ::geteuid()) continue;
    if ((st.st_mode & 07777) == mode && (!cfg.security.group_gid || st.st_gid == *cfg.security.group_gid)) continue;
    if (auto err = share_path(p, cfg.security, true)) {
      ec = err;
      return {};
    }
  }
  ec.clear();
  return dir;
}

std::uint64_t random_id() {
  static thread_local std::mt19937_64 gen([] {
    std::random_device rd;
    return (static_cast<std::uint64_t>(rd()) << 32) ^ rd() ^
           static_cast<std::uint64_t>(::getpid());
  }());
  std::uint64_t id = 0;
  while (id == 0) id = gen();
  return id;
}

std::string id_to_hex(std::uint64_t id) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(id));
  return buf;
}

namespace {

// Writes `info` under the hidden name `.<id>.tmp`, locked, and renames it to
// `entry`: readers never see a partial entry, and the lock (on the inode) is
// held before the name appears. Returns the locked descriptor, or -1 and `ec`.
int write_locked_entry(const fs::path& dir, const std::string& id_hex, const Participant& info,
                       const fs::path& entry, std::error_code& ec) {
  // The pid in the name tells a reclaim whether its writer still lives.
  const fs::path tmp = dir / ("." + id_hex + "." + std::to_string(::getpid()) + ".tmp");
  const int fd = ::open(tmp.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) {
    ec = {errno, std::system_category()};
    return -1;
  }
  if (const mode_t mode = read_only_mode_in(dir); mode != 0600) (void)::fchmod(fd, mode);
  auto fail = [&](int err) {
    ::close(fd);
    ::unlink(tmp.c_str());
    ec = {err, std::system_category()};
    return -1;
  };
  // Blocking: a reclaim may hold a shared lock on this temporary for an instant
  // while it tests it for staleness (reclaim_stale); nobody holds one longer.
  while (::flock(fd, LOCK_EX) != 0)
    if (errno != EINTR) return fail(errno);
  std::string bytes;
  if (!info.SerializeToString(&bytes)) return fail(EINVAL);
  if (auto wec = write_all(fd, bytes)) return fail(wec.value());
  if (::rename(tmp.c_str(), entry.c_str()) != 0) return fail(errno);
  ec.clear();
  return fd;
}

}  // namespace

std::unique_ptr<registration> registration::create(const fs::path& dir, const Participant& info,
                                                   std::error_code& ec) {
  const std::string id_hex = id_to_hex(info.id());
  const char* suffix = info.role() == ROLE_PUBLISHER ? ".pub" : info.role() == ROLE_BRIDGE ? ".bridge" : ".sub";
  const fs::path entry = dir / (id_hex + suffix);
  const int fd = write_locked_entry(dir, id_hex, info, entry, ec);
  if (fd < 0) return nullptr;
  return std::unique_ptr<registration>(new registration(dir, info.id(), entry, fd));
}

void registration::update(const Participant& info, std::error_code& ec) {
  // The new inode is locked before it replaces the old one, whose lock we hold
  // until then: the entry is never seen unlocked.
  const int fd = write_locked_entry(dir_, id_to_hex(id_), info, entry_path_, ec);
  if (fd < 0) return;
  ::close(fd_);
  fd_ = fd;
}

registration::~registration() {
  // The entry last: it is what a reclaim finds the other files by, should we
  // be killed half-way through.
  remove_owned_files(dir_, id_to_hex(id_), nullptr, entry_path_.filename().string());
  ::unlink(entry_path_.c_str());
  ::close(fd_);
}

bool entry_is_stale(const fs::path& entry) {
  const int fd = ::open(entry.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;  // gone already: nothing to reclaim through it
  bool stale = ::flock(fd, LOCK_SH | LOCK_NB) == 0;
  if (stale) {
    // registration::update replaces the entry with a new, locked inode and then
    // unlocks the old one: an old inode opened just before is unlocked but not
    // stale. Only the inode the name still points to counts.
    struct stat opened {}, named {};
    stale = ::fstat(fd, &opened) == 0 && ::stat(entry.c_str(), &named) == 0 && opened.st_dev == named.st_dev &&
            opened.st_ino == named.st_ino;
  }
  ::close(fd);
  return stale;
}

// Not just !entry_is_stale(): that says "not stale" for an entry removed
// meanwhile (nothing to reclaim), which for a listing is not alive either: its
// owner closed, or died and a reclaimer took it. Read as alive, a dead
// publisher's entry would be connected to again.
bool entry_is_live(const fs::path& entry) {
  std::error_code ec;
  return !entry_is_stale(entry) && fs::exists(entry, ec);
}

std::vector<participant_record> list_participants(const fs::path& dir, bool include_stale) {
  std::vector<participant_record> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (!is_entry_name(e.path().filename().string())) continue;
    participant_record rec;
    rec.entry_path = e.path();
    std::ifstream in(e.path(), std::ios::binary);
    std::ostringstream content;
    content << in.rdbuf();
    if (!in || !rec.info.ParseFromString(content.str())) continue;
    rec.alive = entry_is_live(e.path());
    if (rec.alive || include_stale) out.push_back(std::move(rec));
  }
  return out;
}

namespace {

// make_directory's temporary for the domain directory itself,
// ".<domain>.<pid>.tmp" beside it: left behind, empty, by a process killed
// between its mkdir and its rename. rmdir takes only an empty one.
void reclaim_directory_temporaries(const fs::path& dir, std::vector<fs::path>& removed) {
  const fs::path domain = dir.has_filename() ? dir : dir.parent_path();
  const std::string prefix = "." + domain.filename().string() + ".";
  const std::string suffix = ".tmp";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(domain.parent_path(), ec)) {
    const std::string name = e.path().filename().string();
    if (!name.starts_with(prefix) || !name.ends_with(suffix) || name.size() <= prefix.size() + suffix.size()) continue;
    const char* first = name.data() + prefix.size();
    const char* last = name.data() + name.size() - suffix.size();
    std::uint32_t pid = 0;
    const auto [end, parse_ec] = std::from_chars(first, last, pid);
    if (parse_ec != std::errc() || end != last || pid == 0 || !process_gone(pid)) continue;
    if (::rmdir(e.path().c_str()) == 0) removed.push_back(e.path());
  }
}

}  // namespace

std::vector<fs::path> reclaim_stale(const fs::path& dir) {
  std::vector<fs::path> removed;
  reclaim_directory_temporaries(dir, removed);
  std::error_code ec;
  std::vector<fs::path> stale_entries;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (is_entry_name(name) && entry_is_stale(e.path())) stale_entries.push_back(e.path());
    // Hidden temporaries of a participant that died while registering. A live
    // one holds no lock for an instant (between open and flock): only those of
    // a process that is gone, or (pid reused, odd name) old ones, are taken.
    if (name.starts_with(".") && name.ends_with(".tmp") && entry_is_stale(e.path()) &&
        ((temporary_owner(name) != 0 && process_gone(temporary_owner(name))) ||
         older_than(e.path(), std::chrono::seconds(10)))) {
      std::error_code rm_ec;
      if (fs::remove(e.path(), rm_ec)) removed.push_back(e.path());
    }
  }
  for (const auto& entry : stale_entries) {
    const std::string name = entry.filename().string();
    remove_owned_files(dir, name.substr(0, name.find('.')), &removed, name);
    std::error_code rm_ec;  // the entry last, as in ~registration
    if (fs::remove(entry, rm_ec)) removed.push_back(entry);
  }
  return removed;
}

directory_watcher::directory_watcher(boost::asio::io_context& io, const fs::path& dir,
                                     std::function<void()> on_change, std::error_code& ec)
    : stream_(io), on_change_(std::move(on_change)) {
  const int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) { ec = {errno, std::system_category()}; return; }
  if (::inotify_add_watch(fd, dir.c_str(), IN_MOVED_TO | IN_DELETE | IN_CLOSE_WRITE) < 0) {
    ec = {errno, std::system_category()};
    ::close(fd);
    return;
  }
  stream_.assign(fd);
  ec.clear();
  arm();
}

directory_watcher::~directory_watcher() { close(); }

void directory_watcher::close() {
  *alive_ = false;
  boost::system::error_code ignored;
  stream_.close(ignored);
}

void directory_watcher::arm() {
  stream_.async_read_some(boost::asio::buffer(buffer_),
                          [this, alive = alive_](const boost::system::error_code& ec, std::size_t) {
                            if (!*alive || ec) return;
                            on_change_();
                            if (*alive) arm();
                          });
}

}  // namespace ipcbus
