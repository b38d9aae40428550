// What dead participants leave behind, found and reclaimed: shared by
// `ipcbus gc` (which reclaims it) and `ipcbus doctor` (which reports it and,
// with --fix, reclaims it the same way).
//
// A participant's entry is stale when nobody holds its flock (the kernel drops
// it when the process dies), so this never touches a live participant's files.
// A segment is reclaimed only when its publisher is known dead (its marker went
// with its stale entry, or the process the ring names is gone); a FIFO only
// when nobody has it open for reading; a queue only when the process its name
// and marker name is gone. The transports not built into the tool are skipped.
//
// Thread-safety: any thread; every function scans the file system and blocks
// only on that.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

#include "ipcbus/control.pb.h"

namespace ipcbus::cli {

struct leftovers {
  std::vector<Participant> stale;           // dead participants of the domain (their <id>.* files)
  std::vector<std::string> segments;        // shm:// of the domain's dead publishers ("/ipcbus-...")
  std::vector<std::string> other_segments;  // shm:// of dead publishers of other (or deleted) domains
  std::vector<std::string> fifos;           // pipe:// FIFOs of the domain that nobody reads (paths)
  std::vector<std::string> queues;          // mq:// queues of the domain's dead processes
  std::vector<std::string> other_queues;    // mq:// queues of dead processes of other domains

  bool empty() const {
    return stale.empty() && segments.empty() && other_segments.empty() && fifos.empty() && queues.empty() &&
           other_queues.empty();
  }
};

// The domain's participants whose process is gone (their entry is unlocked).
std::vector<Participant> stale_participants(const std::filesystem::path& domain_dir);

// What reclaim_leftovers would remove now. Removes nothing.
leftovers find_leftovers(const std::filesystem::path& domain_dir);

struct reclaimed {
  std::vector<std::filesystem::path> files; // <id>.* files removed from the domain directory
  std::vector<std::string> segments;        // every domain's, the domain's first
  std::vector<std::string> fifos;
  std::vector<std::string> queues;          // every domain's, the domain's first
};

// Removes everything find_leftovers finds: the registry first (a dead
// publisher's marker goes with its entry, which is what marks its segments as
// reclaimable), then segments, FIFOs and queues. Returns what it removed.
reclaimed reclaim_leftovers(const std::filesystem::path& domain_dir);

}  // namespace ipcbus::cli
