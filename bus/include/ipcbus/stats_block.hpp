// Per-participant counters in a small shared file, `<domain dir>/<id>.stats`.
//
// The owner maps it read-write and bumps relaxed atomics; `ipcbus stats` maps
// it read-only from another process and samples it twice to compute rates.
// Nothing is sent anywhere to be counted, so counting costs a few atomic adds.
//
// Thread-safety: every counter is a lock-free std::atomic; any thread may add.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <system_error>

namespace ipcbus {

struct stats_counters {
  static constexpr std::uint64_t magic_value = 0x31535442'53435049ull;  // "IPCSBTS1"
  std::uint64_t magic;
  std::atomic<std::uint64_t> messages;     // published (publisher) or delivered (subscriber)
  std::atomic<std::uint64_t> bytes;        // payload bytes of those messages
  std::atomic<std::uint64_t> dropped;      // discarded by a drop policy on this side
  std::atomic<std::uint64_t> lost;         // subscriber: gaps in sequence numbers seen
  std::atomic<std::uint64_t> timeouts;     // publisher: reliable sends that gave up
  std::atomic<std::uint64_t> bad_frames;   // malformed / oversized / wrong-type frames refused
  std::atomic<std::uint64_t> peers;        // connected peers right now
  std::atomic<std::uint64_t> peers_refused;  // connections refused (credentials)
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

class stats_block {
 public:
  // Creates and maps `<path>` read-write (mode 0600). On error returns a block
  // backed by private memory, so counting never fails; ec says why.
  static std::unique_ptr<stats_block> create(const std::filesystem::path& path, std::error_code& ec);
  // Maps an existing file read-only; nullptr when it is missing or not a stats file.
  static std::unique_ptr<const stats_block> open_read_only(const std::filesystem::path& path);
  ~stats_block();
  stats_block(const stats_block&) = delete;
  stats_block& operator=(const stats_block&) = delete;

  stats_counters& counters() { return *counters_; }
  const stats_counters& counters() const { return *counters_; }

 private:
  stats_block(stats_counters* c, bool mapped) : counters_(c), mapped_(mapped) {}
  stats_counters* counters_;
  bool mapped_;
};

}  // namespace ipcbus
