// shm:// transport: one broadcast ring per publisher in a POSIX shared memory
// object, read in place by every subscriber on the host (DESIGN.md section 5).
//
// shm:///ipcbus-<16 hex of hash(domain dir)>-<publisher id hex>
//   The publisher creates the segment (mode 0600) and writes records into it;
//   each subscriber claims a slot in the segment's subscriber table and keeps
//   its own read cursor there. No lock is shared between processes: positions
//   only grow, slots are claimed with a CAS, and wake-ups go through futex
//   words in the segment, so a process killed at any instant never wedges the
//   others. See transports/shm/README.md for the layout and the QoS rules.
//
// Thread-safety: register_shm must run before the registry is used; the
// reclaim functions are safe from any thread and any process.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "ipcbus/transport.hpp"

namespace ipcbus::transport::shm {

// Adds the shm:// backend to `registry`. Never blocks, never fails.
void register_shm(transport_registry& registry);

// Unlinks the shared memory objects (rings and side segments) of publishers of
// the domain at `domain_dir` that are gone: those whose marker file
// `<domain_dir>/<publisher id>.shm` no longer exists (the registry's reclaim of
// a dead participant removes it with the rest of its `<id>.*` files), and those
// whose ring names an owner process that no longer exists (the marker is then
// removed too). Live publishers' segments are never touched. Scans /dev/shm;
// blocks only on that directory read. Returns the names unlinked ("/ipcbus-...").
// Errors (unreadable /dev/shm, a segment that vanished meanwhile) are skipped.
//
// With `dry_run`, nothing is unlinked or removed and the names that would be
// unlinked are returned. Since `ipcbus gc` reclaims stale registry entries
// (and with them the markers) before it reclaims segments, a dry run also
// counts a publisher whose entry `<id>.pub` is stale as gone.
std::vector<std::string> reclaim_shm_segments(const std::filesystem::path& domain_dir, bool dry_run = false);

// Like reclaim_shm_segments, for every domain (including ones whose directory
// is gone): unlinks the ipcbus rings in /dev/shm whose owner process no longer
// exists, with their side segments, and side segments whose ring is gone. For
// `ipcbus gc`; touches only objects this uid may unlink. Returns the names
// unlinked, or with `dry_run` the names it would unlink (and unlinks nothing).
std::vector<std::string> reclaim_orphaned_shm_segments(bool dry_run = false);

// The shared memory object name prefix of a domain: "/ipcbus-<16 hex>-". The
// hash is FNV-1a 64 of the domain directory's normalized absolute path.
std::string segment_prefix(const std::filesystem::path& domain_dir);

}  // namespace ipcbus::transport::shm
