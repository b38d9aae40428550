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
#include <iostream>
#include <memory>

#include "commands.hpp"
#include "ipcbus/registry.hpp"
#include "reclaim.hpp"

namespace ipcbus::cli {
namespace {

struct gc_options {
  bool dry_run = false;
};

std::string gc_line(const Participant& p) {
  return id_to_hex(p.id()) + "  " + role_name(p.role()) + " on '" + p.topic() + "' (pid " +
         std::to_string(p.pid()) + ", " + type_label(p) + ")";
}

int run_gc(const global_options& g, const gc_options& o) {
  const auto dir = resolve_domain_dir(g);
  if (o.dry_run) {
    const leftovers found = find_leftovers(dir);
    for (const auto& p : found.stale) std::cout << "stale: " << gc_line(p) << '\n';
    const auto segments = found.segments.size() + found.other_segments.size();
    for (const auto* list : {&found.segments, &found.other_segments})
      for (const auto& name : *list) std::cout << "stale shared memory: " << name << '\n';
    for (const auto& name : found.fifos) std::cout << "stale FIFO: " << name << '\n';
    const auto queues = found.queues.size() + found.other_queues.size();
    for (const auto* list : {&found.queues, &found.other_queues})
      for (const auto& name : *list) std::cout << "stale message queue: " << name << '\n';
    std::cout << found.stale.size() << " stale participant(s) in " << dir.string() << ", " << segments
              << " shared memory segment(s) of dead publishers, " << found.fifos.size() << " FIFO(s) nobody reads, "
              << queues << " message queue(s) of dead processes"
              << (found.empty() ? "" : "; run 'ipcbus gc' to reclaim") << '\n';
    return exit_ok;
  }
  const auto stale = stale_participants(dir);
  for (const auto& p : stale) std::cout << "reclaiming: " << gc_line(p) << '\n';
  const reclaimed done = reclaim_leftovers(dir);
  for (const auto& path : done.files) std::cout << "removed " << path.string() << '\n';
  std::cout << "reclaimed " << stale.size() << " participant(s), " << done.files.size() << " file(s) in "
            << dir.string() << '\n';
  for (const auto& name : done.segments) std::cout << "removed shared memory " << name << '\n';
  std::cout << "reclaimed " << done.segments.size() << " shared memory segment(s) of dead publishers\n";
  for (const auto& name : done.fifos) std::cout << "removed FIFO " << name << '\n';
  for (const auto& name : done.queues) std::cout << "removed message queue " << name << '\n';
  std::cout << "reclaimed " << done.fifos.size() << " FIFO(s) and " << done.queues.size() << " message queue(s)\n";
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
