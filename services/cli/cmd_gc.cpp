// `ipcbus gc`: reclaims what dead participants left in the domain directory.
//
// A participant's entry is stale when nobody holds its flock (the kernel drops
// it when the process dies), so this never touches a live participant's files.
#include <iostream>
#include <memory>

#include "commands.hpp"
#include "ipcbus/registry.hpp"

namespace ipcbus::cli {
namespace {

struct gc_options {
  bool dry_run = false;
};

std::string describe(const Participant& p) {
  return id_to_hex(p.id()) + "  " + role_name(p.role()) + " on '" + p.topic() + "' (pid " +
         std::to_string(p.pid()) + ", " + type_label(p) + ")";
}

int run_gc(const global_options& g, const gc_options& o) {
  const auto dir = resolve_domain_dir(g);
  std::vector<Participant> stale;
  for (auto& rec : list_participants(dir, /*include_stale=*/true))
    if (!rec.alive) stale.push_back(std::move(rec.info));
  for (const auto& p : stale) std::cout << (o.dry_run ? "stale: " : "reclaiming: ") << describe(p) << '\n';
  if (o.dry_run) {
    std::cout << stale.size() << " stale participant(s) in " << dir.string()
              << (stale.empty() ? "" : "; run 'ipcbus gc' to reclaim") << '\n';
    return exit_ok;
  }
  // reclaim_stale re-checks every lock itself, so the listing above is only a
  // description: a participant that died meanwhile is reclaimed as well.
  const auto removed = reclaim_stale(dir);
  for (const auto& path : removed) std::cout << "removed " << path.string() << '\n';
  std::cout << "reclaimed " << stale.size() << " participant(s), " << removed.size() << " file(s) in "
            << dir.string() << '\n';
  return exit_ok;
}

}  // namespace

command add_gc_command(CLI::App& root, const global_options& g) {
  auto opts = std::make_shared<gc_options>();
  CLI::App* app = root.add_subcommand("gc", "Reclaim the files of participants whose process died");
  app->add_flag("--dry-run", opts->dry_run, "Only list the stale participants");
  app->footer("Removes every <id>.* file of each stale entry (registry entry, stats, sockets) and\n"
              "prints what was removed. Live participants are never touched.");
  return {app, [&g, opts] { return run_gc(g, *opts); }};
}

}  // namespace ipcbus::cli
