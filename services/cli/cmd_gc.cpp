// `ipcbus gc`: reclaims what dead participants left in the domain directory
// and, when the shm transport is built, the shared memory they left in /dev/shm.
//
// A participant's entry is stale when nobody holds its flock (the kernel drops
// it when the process dies), so this never touches a live participant's files.
// A segment is reclaimed only when its publisher is known dead (its marker went
// with its stale entry, or the process the ring names is gone).
#include <algorithm>
#include <iostream>
#include <memory>

#include "commands.hpp"
#include "ipcbus/registry.hpp"
#ifdef IPCBUS_HAVE_SHM
#include "ipcbus/transports/shm.hpp"
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

int run_gc(const global_options& g, const gc_options& o) {
  const auto dir = resolve_domain_dir(g);
  std::vector<Participant> stale;
  for (auto& rec : list_participants(dir, /*include_stale=*/true))
    if (!rec.alive) stale.push_back(std::move(rec.info));
  for (const auto& p : stale) std::cout << (o.dry_run ? "stale: " : "reclaiming: ") << describe(p) << '\n';
  if (o.dry_run) {
    const auto segments = reclaim_segments(dir, true);
    for (const auto& name : segments) std::cout << "stale shared memory: " << name << '\n';
    std::cout << stale.size() << " stale participant(s) in " << dir.string() << ", " << segments.size()
              << " shared memory segment(s) of dead publishers"
              << (stale.empty() && segments.empty() ? "" : "; run 'ipcbus gc' to reclaim") << '\n';
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
              "process is gone, including domains whose directory was deleted. Live participants\n"
              "and their segments are never touched.");
  return {app, [&g, opts] { return run_gc(g, *opts); }};
}

}  // namespace ipcbus::cli
