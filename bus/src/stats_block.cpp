#include "ipcbus/stats_block.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <new>

#include "ipcbus/access.hpp"

namespace ipcbus {

std::unique_ptr<stats_block> stats_block::create(const std::filesystem::path& path,
                                                 std::error_code& ec) {
  const auto fallback = [&](int err) {
    ec = {err, std::system_category()};
    auto* c = new stats_counters{};
    c->magic = stats_counters::magic_value;
    return std::unique_ptr<stats_block>(new stats_block(c, false));
  };
  const int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC | O_TRUNC, 0600);
  if (fd < 0) return fallback(errno);
  if (const mode_t mode = read_only_mode_in(path.parent_path()); mode != 0600) (void)::fchmod(fd, mode);
  if (::ftruncate(fd, sizeof(stats_counters)) != 0) {
    const int err = errno;
    ::close(fd);
    return fallback(err);
  }
  void* p = ::mmap(nullptr, sizeof(stats_counters), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int err = errno;
  ::close(fd);
  if (p == MAP_FAILED) return fallback(err);
  auto* c = new (p) stats_counters{};  // zero-filled by ftruncate; construct the atomics
  c->magic = stats_counters::magic_value;
  ec.clear();
  return std::unique_ptr<stats_block>(new stats_block(c, true));
}

std::unique_ptr<const stats_block> stats_block::open_read_only(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return nullptr;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(sizeof(stats_counters))) {
    ::close(fd);
    return nullptr;
  }
  void* p = ::mmap(nullptr, sizeof(stats_counters), PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) return nullptr;
  auto* c = static_cast<stats_counters*>(p);
  if (c->magic != stats_counters::magic_value) {
    ::munmap(p, sizeof(stats_counters));
    return nullptr;
  }
  return std::unique_ptr<const stats_block>(new stats_block(c, true));
}

stats_block::~stats_block() {
  if (mapped_) ::munmap(counters_, sizeof(stats_counters));
  else delete counters_;
}

}  // namespace ipcbus
