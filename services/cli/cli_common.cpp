#include "cli_common.hpp"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <ostream>

#include "ipcbus/registry.hpp"
#include "ipcbus/topic.hpp"

namespace ipcbus::cli {
namespace {

// Written from a signal handler: lock-free atomics are async-signal-safe.
std::atomic<bool> g_stop{false};
static_assert(std::atomic<bool>::is_always_lock_free);

extern "C" void on_stop_signal(int) { g_stop.store(true); }

config load_base_config(const global_options& g) {
  try {
    return g.config_file.empty() ? load_config_from_environment() : load_config_file(g.config_file);
  } catch (const config_error& e) {
    // The file is the environment's fault, not the command line's: a runtime error.
    throw cli_error(exit_runtime, e.what());
  }
}

}  // namespace

config resolve_config(const global_options& g) {
  config cfg = load_base_config(g);
  if (!g.domain.empty()) {
    // The domain becomes a directory name: the same rules as one topic segment.
    std::string why;
    if (validate_topic(g.domain, &why) || g.domain.find('/') != std::string::npos)
      throw cli_error(exit_usage, "invalid --domain '" + g.domain + "': must be one name of [A-Za-z0-9_.-]");
    cfg.domain = g.domain;
  }
  if (!g.runtime_dir.empty()) cfg.runtime_dir = g.runtime_dir;
  return cfg;
}

bus_options make_bus_options(const global_options& g) {
  bus_options o;
  o.cfg = resolve_config(g);
  return o;
}

std::filesystem::path resolve_domain_dir(const global_options& g) { return domain_dir_of(resolve_config(g)); }

void require_valid_topic(std::string_view topic) {
  std::string why;
  if (validate_topic(topic, &why))
    throw cli_error(exit_usage, "invalid topic '" + std::string(topic) + "': " + why);
}

void require_valid_pattern(std::string_view pattern) {
  std::string why;
  if (validate_pattern(pattern, &why))
    throw cli_error(exit_usage, "invalid topic pattern '" + std::string(pattern) + "': " + why);
}

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  // No SA_RESTART: commands poll the flag between short waits anyway.
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

bool stop_requested() { return g_stop.load(); }

std::string role_name(Role role) {
  switch (role) {
    case ROLE_PUBLISHER: return "publisher";
    case ROLE_SUBSCRIBER: return "subscriber";
    case ROLE_BRIDGE: return "bridge";
    default: return "unknown";
  }
}

std::string qos_name(Qos qos) {
  switch (qos) {
    case QOS_DROP_OLDEST: return "drop_oldest";
    case QOS_DROP_NEWEST: return "drop_newest";
    default: return "reliable";
  }
}

std::string type_label(const Participant& p) { return p.type_name().empty() ? "bytes" : p.type_name(); }

void print_table(std::ostream& out, const std::vector<std::string>& header,
                 const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width(header.size());
  for (std::size_t c = 0; c < header.size(); ++c) width[c] = header[c].size();
  for (const auto& row : rows)
    for (std::size_t c = 0; c < row.size() && c < width.size(); ++c) width[c] = std::max(width[c], row[c].size());
  auto print_row = [&](const std::vector<std::string>& row) {
    std::string line;
    for (std::size_t c = 0; c < row.size() && c < width.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size()) line += std::string(width[c] - row[c].size() + 2, ' ');
    }
    out << line << '\n';
  };
  print_row(header);
  for (const auto& row : rows) print_row(row);
}

}  // namespace ipcbus::cli
