// `ipcbus stats`: per-participant counters and rates.
//
// Every participant keeps its counters in `<domain dir>/<id>.stats`, a small
// shared file of atomics; this maps them read-only and samples twice, so
// measuring costs the measured processes nothing.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <thread>

#include "commands.hpp"
#include "ipcbus/registry.hpp"
#include "ipcbus/stats_block.hpp"
#include "json_text.hpp"

namespace ipcbus::cli {
namespace {

struct stats_options {
  double interval_s = 1.0;
  bool json = false;
};

struct sample {
  std::uint64_t messages = 0, bytes = 0, dropped = 0, lost = 0, timeouts = 0, bad_frames = 0, peers = 0;
};

sample read_sample(const stats_counters& c) {
  constexpr auto relaxed = std::memory_order_relaxed;  // independent counters: no ordering needed
  return {c.messages.load(relaxed), c.bytes.load(relaxed),      c.dropped.load(relaxed), c.lost.load(relaxed),
          c.timeouts.load(relaxed), c.bad_frames.load(relaxed), c.peers.load(relaxed)};
}

struct watched {
  Participant info;
  std::unique_ptr<const stats_block> block;
  sample first;
};

std::vector<watched> open_blocks(const std::filesystem::path& dir) {
  std::vector<watched> out;
  for (auto& rec : list_participants(dir)) {
    auto block = stats_block::open_read_only(dir / (id_to_hex(rec.info.id()) + ".stats"));
    if (!block) continue;  // not created yet, or gone since the listing
    out.push_back({std::move(rec.info), std::move(block), {}});
  }
  return out;
}

std::string rate_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

std::string json_line(const watched& w, const sample& s, double msg_rate, double byte_rate) {
  json_object o;
  o.add("id", id_to_hex(w.info.id())).add("role", role_name(w.info.role())).add("topic", w.info.topic());
  o.add("pid", w.info.pid()).add("messages_per_s", msg_rate).add("bytes_per_s", byte_rate);
  o.add("messages", s.messages).add("bytes", s.bytes).add("dropped", s.dropped).add("lost", s.lost);
  o.add("timeouts", s.timeouts).add("bad_frames", s.bad_frames).add("peers", s.peers);
  return o.str();
}

std::vector<std::string> table_row(const watched& w, const sample& s, double msg_rate, double byte_rate) {
  return {role_name(w.info.role()),    w.info.topic(),           std::to_string(w.info.pid()),
          rate_text(msg_rate),         rate_text(byte_rate),     std::to_string(s.messages),
          std::to_string(s.dropped),   std::to_string(s.lost),   std::to_string(s.timeouts),
          std::to_string(s.bad_frames), std::to_string(s.peers)};
}

// Bridges (ipcbus-bridge) keep their per-link counters in their registry
// entry, rewritten about once a second: one table per bridge, one row per link.
// Returns how many bridges were shown.
std::size_t print_bridges(const std::filesystem::path& dir, bool json) {
  std::size_t shown = 0;
  for (const auto& rec : list_participants(dir)) {
    if (rec.info.role() != ROLE_BRIDGE) continue;
    ++shown;
    const BridgeStatus& b = rec.info.bridge();
    const std::string id = id_to_hex(rec.info.id());
    if (json) {
      json_object o;
      o.add("id", id).add("role", "bridge").add("pid", rec.info.pid()).add("listen", b.listen());
      o.add("export", rec.info.topic()).add("refused", b.refused()).add("bad_records", b.bad_records());
      o.add("interest_cut", b.interest_cut()).add("duplicates", b.duplicates()).add("hop_limit", b.hop_limit());
      o.add("returned", b.returned());
      std::cout << o.str() << '\n';
      for (const auto& l : b.links()) {
        json_object lo;
        lo.add("bridge", id).add("role", "bridge_link").add("peer", l.peer()).add("peer_name", l.peer_name());
        lo.add("state", l.state()).add("sent", l.sent()).add("received", l.received()).add("dropped", l.dropped());
        lo.add("reconnects", l.reconnects()).add("queued_bytes", l.queued_bytes());
        lo.add("bytes_sent", l.bytes_sent()).add("bytes_received", l.bytes_received());
        lo.add("last_error", l.last_error());
        std::cout << lo.str() << '\n';
      }
      continue;
    }
    std::cout << "\nbridge " << id << " (pid " << rec.info.pid() << ")"
              << (b.listen().empty() ? "" : " listening on " + b.listen()) << ", exports '" << rec.info.topic()
              << "', refused " << b.refused() << ", bad records " << b.bad_records() << ", interest cut "
              << b.interest_cut() << ", duplicates " << b.duplicates() << ", hop limit " << b.hop_limit()
              << ", returned " << b.returned() << '\n';
    std::vector<std::vector<std::string>> rows;
    for (const auto& l : b.links())
      rows.push_back({l.peer(), l.peer_name().empty() ? "-" : l.peer_name(), l.state(), std::to_string(l.sent()),
                      std::to_string(l.received()), std::to_string(l.dropped()), std::to_string(l.reconnects()),
                      std::to_string(l.queued_bytes()), l.last_error().empty() ? "-" : l.last_error()});
    if (rows.empty())
      std::cout << "no links\n";
    else
      print_table(std::cout, {"PEER", "NAME", "STATE", "SENT", "RECEIVED", "DROPPED", "RECONNECTS", "QUEUED",
                              "LAST_ERROR"},
                  rows);
  }
  return shown;
}

int run_stats(const global_options& g, const stats_options& o) {
  const auto dir = resolve_domain_dir(g);
  auto blocks = open_blocks(dir);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto& w : blocks) w.first = read_sample(w.block->counters());
  std::this_thread::sleep_for(std::chrono::duration<double>(o.interval_s));
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<std::vector<std::string>> rows;
  for (const auto& w : blocks) {
    const sample s = read_sample(w.block->counters());
    const double msg_rate = static_cast<double>(s.messages - w.first.messages) / dt;
    const double byte_rate = static_cast<double>(s.bytes - w.first.bytes) / dt;
    if (o.json)
      std::cout << json_line(w, s, msg_rate, byte_rate) << '\n';
    else
      rows.push_back(table_row(w, s, msg_rate, byte_rate));
  }
  if (o.json) {
    print_bridges(dir, true);
    return exit_ok;
  }
  if (!rows.empty())
    print_table(std::cout, {"ROLE", "TOPIC", "PID", "MSG/S", "BYTES/S", "MESSAGES", "DROPPED", "LOST", "TIMEOUTS",
                            "BAD_FRAMES", "PEERS"},
                rows);
  if (print_bridges(dir, false) == 0 && rows.empty()) std::cout << "no live participants in " << dir.string() << '\n';
  return exit_ok;
}

}  // namespace

command add_stats_command(CLI::App& root, const global_options& g) {
  auto opts = std::make_shared<stats_options>();
  CLI::App* app = root.add_subcommand("stats", "Show message rates and counters of every participant");
  app->add_option("--interval,-i", opts->interval_s, "Seconds between the two samples rates are computed from")
      ->capture_default_str()
      ->check(CLI::Range(0.01, 3600.0));
  app->add_flag("--json", opts->json, "Print one JSON object per participant and line");
  app->footer(
      "Per participant: role, topic, pid, messages/s and bytes/s over the interval, then totals:\n"
      "messages (published or delivered), dropped (by a drop policy), lost (gaps a subscriber saw),\n"
      "timeouts (reliable publishes that gave up), bad_frames (refused input) and connected peers.\n"
      "Then, per ipcbus-bridge, its links: peer, state, frames sent/received/dropped, reconnects,\n"
      "bytes queued and why the last link ended (updated by the bridge about once a second).");
  return {app, [&g, opts] { return run_stats(g, *opts); }};
}

}  // namespace ipcbus::cli
