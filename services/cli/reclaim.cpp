#include "reclaim.hpp"

#include <algorithm>

#include "ipcbus/registry.hpp"
#ifdef IPCBUS_HAVE_SHM
#include "ipcbus/transports/shm.hpp"
#endif
#ifdef IPCBUS_HAVE_PIPE
#include "ipcbus/transports/pipe.hpp"
#endif
#ifdef IPCBUS_HAVE_MQUEUE
#include "ipcbus/transports/mqueue.hpp"
#endif

namespace ipcbus::cli {
namespace {

// `all` without the names already in `mine`.
std::vector<std::string> others(std::vector<std::string> all, const std::vector<std::string>& mine) {
  std::erase_if(all, [&](const std::string& name) { return std::find(mine.begin(), mine.end(), name) != mine.end(); });
  return all;
}

// Shared memory segments of dead publishers: the domain's, then those of every
// domain (directories deleted meanwhile included), each name once.
void segments_of([[maybe_unused]] const std::filesystem::path& dir, [[maybe_unused]] bool dry_run,
                 std::vector<std::string>& mine, std::vector<std::string>& rest) {
#ifdef IPCBUS_HAVE_SHM
  mine = transport::shm::reclaim_shm_segments(dir, dry_run);
  rest = others(transport::shm::reclaim_orphaned_shm_segments(dry_run), mine);
#else
  mine.clear();
  rest.clear();
#endif
}

// FIFOs (pipe://) that nobody reads any more.
std::vector<std::string> fifos_of([[maybe_unused]] const std::filesystem::path& dir, [[maybe_unused]] bool dry_run) {
  std::vector<std::string> names;
#ifdef IPCBUS_HAVE_PIPE
  for (const auto& path : transport::pipe::reclaim_orphaned_fifos(dir, dry_run)) names.push_back(path.string());
#endif
  return names;
}

// Message queues (mq://) of dead processes: the domain's (through their
// markers), then any in /dev/mqueue when it is mounted.
void queues_of([[maybe_unused]] const std::filesystem::path& dir, [[maybe_unused]] bool dry_run,
               std::vector<std::string>& mine, std::vector<std::string>& rest) {
#ifdef IPCBUS_HAVE_MQUEUE
  mine = transport::mqueue::reclaim_mq_queues(dir, dry_run);
  rest = others(transport::mqueue::reclaim_orphaned_mq_queues(dry_run), mine);
#else
  mine.clear();
  rest.clear();
#endif
}

std::vector<std::string> joined(std::vector<std::string> first, const std::vector<std::string>& second) {
  first.insert(first.end(), second.begin(), second.end());
  return first;
}

}  // namespace

std::vector<Participant> stale_participants(const std::filesystem::path& domain_dir) {
  std::vector<Participant> stale;
  for (auto& rec : list_participants(domain_dir, /*include_stale=*/true))
    if (!rec.alive) stale.push_back(std::move(rec.info));
  return stale;
}

leftovers find_leftovers(const std::filesystem::path& domain_dir) {
  leftovers found;
  found.stale = stale_participants(domain_dir);
  // FIFOs and queues are judged on their own (reader, owner pid), not on
  // registry entries; segments count a publisher with a stale entry as gone.
  segments_of(domain_dir, true, found.segments, found.other_segments);
  found.fifos = fifos_of(domain_dir, true);
  queues_of(domain_dir, true, found.queues, found.other_queues);
  return found;
}

reclaimed reclaim_leftovers(const std::filesystem::path& domain_dir) {
  reclaimed done;
  // reclaim_stale checks every lock itself: what a listing said before is only a description.
  done.files = reclaim_stale(domain_dir);
  std::vector<std::string> mine, rest;
  segments_of(domain_dir, false, mine, rest);
  done.segments = joined(std::move(mine), rest);
  done.fifos = fifos_of(domain_dir, false);
  queues_of(domain_dir, false, mine, rest);
  done.queues = joined(std::move(mine), rest);
  return done;
}

}  // namespace ipcbus::cli
