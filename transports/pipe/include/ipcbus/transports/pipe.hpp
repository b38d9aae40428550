// pipe:// transport: named pipes (FIFOs) in the domain directory, one per
// (publisher, subscriber) pair, carrying length-delimited frames like the
// socket transports (DESIGN.md section 5, transports/pipe/README.md).
//
// pipe://<domain dir>/<publisher id>.pipe
//   The publisher's attach FIFO. A subscriber creates its own data FIFO
//   <publisher id>.<link id>.fifo next to it (mode 0600), opens it for reading
//   and writing, and writes a fixed-size attach record naming the link id into
//   the attach FIFO; the publisher then opens the data FIFO for writing. A
//   reader that goes away is EPIPE / POLLERR on the publisher's write end; a
//   publisher that goes away is POLLERR on the subscriber's attach FIFO write
//   end. Nobody polls.
//
// Thread-safety: register_pipe must run before the registry is used; the
// reclaim function is safe from any thread and any process.
#pragma once

#include <filesystem>
#include <vector>

#include "ipcbus/transport.hpp"

namespace ipcbus::transport::pipe {

// Adds the pipe:// backend to `registry`. Never blocks, never fails.
void register_pipe(transport_registry& registry);

// Removes the FIFOs of the domain at `domain_dir` that nobody reads any more
// (opening one for writing without blocking fails with ENXIO): data FIFOs of
// subscribers that died before their publisher attached them or after it went,
// attach FIFOs of dead publishers. FIFOs younger than `min_age` are left alone
// (a subscriber opens its FIFO an instant after creating it). Never blocks.
// Returns the paths removed, or with `dry_run` the paths it would remove.
std::vector<std::filesystem::path> reclaim_orphaned_fifos(const std::filesystem::path& domain_dir,
                                                          bool dry_run = false,
                                                          std::chrono::seconds min_age = std::chrono::seconds(2));

}  // namespace ipcbus::transport::pipe
