// mq:// transport: POSIX message queues (mq_open), one per (publisher,
// subscriber) pair, read through Asio (DESIGN.md section 5,
// transports/mqueue/README.md).
//
// mq://<domain dir>/mq/ipcbus-<domain hash>-<publisher id>-p<pid>
//   The path of the marker of the publisher's attach queue, whose name is the
//   last path element (with a leading '/'). A subscriber creates its own queue
//   /ipcbus-<domain hash>-<publisher id>-<link id>-s<pid> and sends a fixed-size
//   attach message naming its link id into the attach queue; the publisher then
//   opens that queue for writing. Frames larger than one queue message are
//   split into fragments and reassembled.
//
// Every queue has an empty marker file of the same name in <domain dir>/mq/,
// created before the queue and removed after it, so that queues of dead
// processes can be found even where /dev/mqueue is not mounted.
//
// Thread-safety: register_mqueue must run before the registry is used; the
// other functions are safe from any thread and any process.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "ipcbus/transport.hpp"

namespace ipcbus::transport::mqueue {

// Adds the mq:// backend to `registry`. Never blocks, never fails.
void register_mqueue(transport_registry& registry);

// The kernel's limits as this process sees them.
struct mq_limits {
  long msg_max = 10;            // /proc/sys/fs/mqueue/msg_max: messages per queue
  long msgsize_max = 8192;      // /proc/sys/fs/mqueue/msgsize_max: bytes per message
  std::uint64_t rlimit = 819200;  // RLIMIT_MSGQUEUE (soft): bytes of queues per user
  bool mounted = false;         // /dev/mqueue is a mounted mqueue file system
};
// Reads them (defaults above where a file cannot be read). Never blocks.
mq_limits read_mq_limits();

// Unlinks the queues of the domain at `domain_dir` whose owner process is gone,
// found through their markers (and through /dev/mqueue when it is mounted), and
// removes those markers. Live processes' queues are never touched. Returns the
// queue names ("/ipcbus-..."), or with `dry_run` the names it would unlink.
std::vector<std::string> reclaim_mq_queues(const std::filesystem::path& domain_dir, bool dry_run = false);

// For `ipcbus gc`: every ipcbus queue in /dev/mqueue (any domain, including
// domains whose directory is gone) whose owner process is gone. Empty when
// /dev/mqueue is not mounted: then only reclaim_mq_queues can find them.
std::vector<std::string> reclaim_orphaned_mq_queues(bool dry_run = false);

}  // namespace ipcbus::transport::mqueue
