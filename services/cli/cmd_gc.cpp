// `ipcbus gc`: reclaims what dead participants left in the domain directory
// and, for the transports built in, the shared memory they left in /dev/shm,
// the FIFOs nobody reads and the POSIX message queues of dead processes.
//
// A participant's entry is stale when nobody holds its flock (the kernel drops
// it when the process dies), so this never touches a live participant's files.
// A segment is reclaimed only when its publisher is known dead (its marker went
// with its stale entry, or the process the ring names is gone); a FIFO only
// when nobody has it open for reading; a queue only when the process its name
// and marker name is gone.
#include <algorithm>
#include <iostream>
#include <memory>

#include "commands.hpp"
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

struct gc_options {
  bool dry_run = false;
};

std::string describe(const Participant& p) {
  return id_to_hex(p.id()) + "  " + role_name(p.role()) + " on '" + p.topic() + "' (pid " +
         std::to_string(p.pid()) + ", " + type_label(p) + ")";
}

// Shared memory segments of dead publishers: this domain's first, then those of
// every domain (directories deleted meanwhile included). A dry run lists what a
// real run would unlink, once each.
std::vector<std::string> reclaim_segments([[maybe_unused]] const std::filesystem::path& dir,
                                          [[maybe_unused]] bool dry_run) {
  std::vector<std::string> names;
#ifdef IPCBUS_HAVE_SHM
  names = transport::shm::reclaim_shm_segments(dir, dry_run);
  for (auto& name : transport::shm::reclaim_orphaned_shm_segments(dry_run))
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(std::move(name));
#endif
  return names;
}

// FIFOs (pipe://) that nobody reads any more.
std::vector<std::string> reclaim_fifos([[maybe_unused]] const std::filesystem::path& dir,
                                       [[maybe_unused]] bool dry_run) {
  std::vector<std::string> names;
#ifdef IPCBUS_HAVE_PIPE
  for (const auto& path : transport::pipe::reclaim_orphaned_fifos(dir, dry_run)) names.push_back(path.string());
#endif
  return names;
}

// Message queues (mq://) of dead processes: this domain's (through their
// markers), then any in /dev/mqueue when it is mounted.
std::vector<std::string> reclaim_queues([[maybe_unused]] const std::filesystem::path& dir,
                                        [[maybe_unused]] bool dry_run) {
  std::vector<std::string> names;
#ifdef IPCBUS_HAVE_MQUEUE
  names = transport::mqueue::reclaim_mq_queues(dir, dry_run);
  for (auto& name : transport::mqueue::reclaim_orphaned_mq_queues(dry_run))
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(std::move(name));
#endif
  return names;
}

int run_gc(const global_options& g, const gc_options& o) {
  const auto dir = resolve_domain_dir(g);
  std::vector<Participant> stale;
  for (auto& rec : list_participants(dir, /*include_stale=*/true))
    if (!rec.alive) stale.push_back(std::move(rec.info));
  for (const auto& p : stale) std::cout << (o.dry_run ? "stale: " : "reclaiming: ") << describe(p) << '\n';
  if (o.dry_run) {
    const auto segments = reclaim_segments(dir, true);
    for (const auto& name : segments) std::cout << "stale shared memory: " << name << '\n';
    // FIFOs and queues are judged on their own (reader, owner pid), not on
    // registry entries: the dry run lists exactly what a real run removes.
    const auto fifos = reclaim_fifos(dir, true);
    for (const auto& name : fifos) std::cout << "stale FIFO: " << name << '\n';
    const auto queues = reclaim_queues(dir, true);
    for (const auto& name : queues) std::cout << "stale message queue: " << name << '\n';
    const bool nothing = stale.empty() && segments.empty() && fifos.empty() && queues.empty();
    std::cout << stale.size() << " stale participant(s) in " << dir.string() << ", " << segments.size()
              << " shared memory segment(s) of dead publishers, " << fifos.size() << " FIFO(s) nobody reads, "
              << queues.size() << " message queue(s) of dead processes"
              << (nothing ? "" : "; run 'ipcbus gc' to reclaim") << '\n';
    return exit_ok;
  }
  // reclaim_stale re-checks every lock itself, so the listing above is only a
  // description: a participant that died meanwhile is reclaimed as well.
  const auto removed = reclaim_stale(dir);
  for (const auto& path : removed) std::cout << "removed " << path.string() << '\n';
  std::cout << "reclaimed " << stale.size() << " participant(s), " << removed.size() << " file(s) in "
            << dir.string() << '\n';
  // After the registry: a dead publisher's marker is gone now, which is what
  // marks its segments as reclaimable.
  const auto segments = reclaim_segments(dir, false);
  for (const auto& name : segments) std::cout << "removed shared memory " << name << '\n';
  std::cout << "reclaimed " << segments.size() << " shared memory segment(s) of dead publishers\n";
  const auto fifos = reclaim_fifos(dir, false);
  for (const auto& name : fifos) std::cout << "removed FIFO " << name << '\n';
  const auto queues = reclaim_queues(dir, false);
  for (const auto& name : queues) std::cout << "removed message queue " << name << '\n';
  std::cout << "reclaimed " << fifos.size() << " FIFO(s) and " << queues.size() << " message queue(s)\n";
  return exit_ok;
}

}  // namespace

command add_gc_command(CLI::App& root, const global_options& g) {
  auto opts = std::make_shared<gc_options>();
  CLI::App* app = root.add_subcommand("gc", "Reclaim the files and shared memory of participants whose process died");
  app->add_flag("--dry-run", opts->dry_run, "Only list what would be reclaimed; remove nothing");
  app->footer("Removes every <id>.* file of each stale entry (registry entry, stats, sockets, shm\n"
              "marker) and prints what was removed. Then unlinks the shared memory (/dev/shm/ipcbus-*)\n"
              "of dead shm:// publishers: this domain's, and those of any domain whose publisher\n"
              "process is gone, including domains whose directory was deleted. Then removes the\n"
              "pipe:// FIFOs of the domain that nobody reads, and unlinks the mq:// message queues\n"
              "whose owner process is gone (this domain's through <domain>/mq/ markers; any domain's\n"
              "when /dev/mqueue is mounted). Live participants and their resources are never touched.");
  return {app, [&g, opts] { return run_gc(g, *opts); }};
}

}  // namespace ipcbus::cli
