// `ipcbus list`: every live participant of the domain, from the registry files.
//
// Reads the directory only: no Bus is created, so listing never registers,
// connects or reclaims anything (a Bus would reclaim stale entries on start).
#include <algorithm>
#include <iostream>
#include <memory>

#include "commands.hpp"
#include "ipcbus/registry.hpp"
#include "json_text.hpp"

namespace ipcbus::cli {
namespace {

struct list_options {
  bool json = false;
};

bool is_publisher(const Participant& p) { return p.role() == ROLE_PUBLISHER; }

std::vector<std::string> table_row(const Participant& p) {
  const bool pub = is_publisher(p);
  // A bridge's entry: its topic is what it exports, its endpoint where it listens.
  const bool bridge = p.role() == ROLE_BRIDGE;
  return {role_name(p.role()),
          p.topic(),
          bridge ? "-" : type_label(p),
          pub || bridge ? p.transport() : "-",
          pub ? (p.endpoint().empty() ? "(starting)" : p.endpoint()) : bridge && !p.endpoint().empty() ? p.endpoint() : "-",
          std::to_string(p.pid()),
          pub ? qos_name(p.qos()) : "-",
          pub ? std::to_string(p.depth()) : "-",
          id_to_hex(p.id())};
}

std::string json_line(const Participant& p) {
  json_object o;
  o.add("id", id_to_hex(p.id())).add("role", role_name(p.role())).add("topic", p.topic());
  o.add("type", type_label(p)).add("pid", p.pid()).add("host", p.host());
  if (is_publisher(p)) {
    o.add("transport", p.transport()).add("endpoint", p.endpoint()).add("qos", qos_name(p.qos()));
    o.add("depth", p.depth()).add("history", p.history()).add("max_message", p.max_message());
  }
  return o.str();
}

// Publishers first, then by topic: the order a reader scans for "who sends what".
void sort_for_display(std::vector<participant_record>& records) {
  std::sort(records.begin(), records.end(), [](const auto& a, const auto& b) {
    if (a.info.role() != b.info.role()) return a.info.role() < b.info.role();
    if (a.info.topic() != b.info.topic()) return a.info.topic() < b.info.topic();
    return a.info.id() < b.info.id();
  });
}

std::size_t count_stale(const std::vector<participant_record>& all) {
  return static_cast<std::size_t>(std::count_if(all.begin(), all.end(), [](const auto& r) { return !r.alive; }));
}

int run_list(const global_options& g, const list_options& o) {
  const auto dir = resolve_domain_dir(g);
  auto all = list_participants(dir, /*include_stale=*/true);
  const std::size_t stale = count_stale(all);
  std::erase_if(all, [](const auto& r) { return !r.alive; });
  sort_for_display(all);
  if (o.json) {
    for (const auto& r : all) std::cout << json_line(r.info) << '\n';
  } else if (all.empty()) {
    std::cout << "no live participants in " << dir.string() << '\n';
  } else {
    std::vector<std::vector<std::string>> rows;
    for (const auto& r : all) rows.push_back(table_row(r.info));
    print_table(std::cout, {"ROLE", "TOPIC", "TYPE", "TRANSPORT", "ENDPOINT", "PID", "QOS", "DEPTH", "ID"}, rows);
  }
  if (stale > 0) {
    // In JSON mode stdout stays machine-readable: the note goes to stderr.
    (o.json ? std::cerr : std::cout) << stale << " stale entr" << (stale == 1 ? "y" : "ies")
                                     << " (dead processes) in " << dir.string() << "; run 'ipcbus gc' to reclaim\n";
  }
  return exit_ok;
}

}  // namespace

command add_list_command(CLI::App& root, const global_options& g) {
  auto opts = std::make_shared<list_options>();
  CLI::App* app = root.add_subcommand("list", "List the live publishers and subscribers of the domain");
  app->add_flag("--json", opts->json, "Print one JSON object per participant and line");
  app->footer(
      "Shows role, topic (or pattern), type ('bytes' for raw payloads), transport, endpoint, pid,\n"
      "QoS and depth (publishers). Stale entries left by dead processes are counted, not listed.");
  return {app, [&g, opts] { return run_list(g, *opts); }};
}

}  // namespace ipcbus::cli
