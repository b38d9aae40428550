// Discovery: the domain's runtime directory is the registry (DESIGN.md section 3).
//
// Every participant writes one entry, `<domain dir>/<id>.pub` or `<id>.sub`,
// holding a serialized ipcbus.Participant, and keeps an exclusive flock on it
// for as long as it lives. The kernel drops the lock when the process dies, so
// any process can tell a live entry from a stale one. Everything a participant
// creates in the domain directory is named `<id>.*`, so reclaiming a dead
// participant is removing `<id>.*`.
//
// Thread-safety: registration objects are not shared; the free functions are
// safe from any thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include "ipcbus/config.hpp"
#include "ipcbus/control.pb.h"

namespace ipcbus {

// Creates <runtime>/<domain>/ (mode 0700) and returns it. Errors name the path.
std::filesystem::path ensure_domain_dir(const config& cfg, std::error_code& ec);
std::filesystem::path domain_dir_of(const config& cfg);

// A random, non-zero 64-bit id.
std::uint64_t random_id();
std::string id_to_hex(std::uint64_t id);

// An entry this process owns. Holds the flock; the destructor unlinks the entry
// and every other `<id>.*` file the participant left in the directory.
class registration {
 public:
  static std::unique_ptr<registration> create(const std::filesystem::path& domain_dir,
                                              const Participant& info, std::error_code& ec);
  ~registration();
  // Replaces the entry's contents atomically (readers see the old or the new
  // one, never a mix); the entry stays locked throughout.
  void update(const Participant& info, std::error_code& ec);
  registration(const registration&) = delete;
  registration& operator=(const registration&) = delete;
  const std::filesystem::path& entry_path() const { return entry_path_; }

 private:
  registration(std::filesystem::path dir, std::uint64_t id, std::filesystem::path entry, int fd)
      : dir_(std::move(dir)), id_(id), entry_path_(std::move(entry)), fd_(fd) {}
  std::filesystem::path dir_;
  std::uint64_t id_;
  std::filesystem::path entry_path_;
  int fd_;
};

// True when `pid` names no process (kill says ESRCH) or only a zombie: a killed
// peer whose parent has not reaped it yet holds nothing and must hold nobody up.
bool process_gone(std::uint32_t pid);

struct participant_record {
  Participant info;
  std::filesystem::path entry_path;
  bool alive = false;
};

// Reads every entry of the domain. Stale entries are included only when asked.
// Unreadable or corrupt entries are skipped (they are reported by `ipcbus doctor`).
std::vector<participant_record> list_participants(const std::filesystem::path& domain_dir,
                                                  bool include_stale = false);

// True for the file name of a registry entry (`<id>.pub`, `.sub`, `.bridge`), as
// opposed to a participant's other files and hidden temporaries.
bool is_entry_name(const std::string& name);

// True when nobody holds the entry's flock (its owner died). False for an
// entry that does not exist (nothing to reclaim).
bool entry_is_stale(const std::filesystem::path& entry);
// True when a live participant holds the entry; false for a stale entry and
// for one that does not exist (any more).
bool entry_is_live(const std::filesystem::path& entry);

// Removes every `<id>.*` of participants whose entry is stale. Returns the paths removed.
std::vector<std::filesystem::path> reclaim_stale(const std::filesystem::path& domain_dir);

// Calls `on_change` (on the io thread) whenever entries appear or vanish.
class directory_watcher {
 public:
  directory_watcher(boost::asio::io_context& io, const std::filesystem::path& dir,
                    std::function<void()> on_change, std::error_code& ec);
  ~directory_watcher();
  void close();

 private:
  void arm();
  boost::asio::posix::stream_descriptor stream_;
  std::function<void()> on_change_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  alignas(8) char buffer_[4096];
};

}  // namespace ipcbus
