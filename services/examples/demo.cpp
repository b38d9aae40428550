// ipcbus-demo — runs the demo microservices as separate processes and reports.
//
//   ipcbus-demo --config services/examples/demo.yaml [--seconds 5]
//
// logger <- filter <- sensors (imu 200 Hz, gps 50 Hz, baro 20 Hz): starts them downstream
// first, each once the previous one is ready, lets them run, stops them upstream
// first (sensors, filter, logger) so that whatever is in flight still has a
// reader, then prints what the logger measured per topic. Exit status 0 only when
// every service stopped cleanly and every topic delivered messages.
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

#include <CLI/CLI.hpp>
#include <google/protobuf/util/json_util.h>

#include "child_service.hpp"
#include "demo.pb.h"
#include "ipcbus/config.hpp"
#include "service_support.hpp"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ipcbus::examples::child_service;

constexpr auto ready_timeout = 15s;
// Sensors drain for up to 2 s on SIGTERM (Bus::run_until_signal); allow more.
constexpr auto stop_timeout = 10s;
// After a stage has exited, what it wrote last may still sit unread in its
// readers' sockets; give them a moment to take it before they are stopped too.
constexpr auto settle_time = 200ms;

// What the demo runs and expects: one topic of every family.
const std::vector<std::string> expected_topics = {"sensors/imu/reading", "sensors/gps/reading",
                                                  "sensors/baro/reading", "metrics/filtered", "alerts/high"};

// A directory of our own under /tmp, removed with everything in it at the end.
struct temporary_directory {
  fs::path path;
  temporary_directory() {
    std::string pattern = (fs::temp_directory_path() / "ipcbus-demo-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr)
      throw std::system_error(errno, std::generic_category(), "mkdtemp " + pattern);
    path = pattern;
  }
  ~temporary_directory() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

// The demo's services live next to this program (build tree or install bindir).
fs::path sibling(const std::string& name) {
  const fs::path p = fs::read_symlink("/proc/self/exe").parent_path() / name;
  if (::access(p.c_str(), X_OK) != 0)
    throw std::runtime_error("cannot find " + p.string() + " (build target " + name + " first)");
  return p;
}

std::string fixed(double v, int decimals) {
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(decimals);
  s << v;
  return s.str();
}

std::optional<ipcbus::demo::Summary> read_report(const fs::path& file, std::string& why) {
  std::ifstream in(file);
  if (!in) {
    why = "the logger wrote no report (" + file.string() + ")";
    return std::nullopt;
  }
  std::stringstream text;
  text << in.rdbuf();
  ipcbus::demo::Summary summary;
  const auto status = google::protobuf::util::JsonStringToMessage(text.str(), &summary);
  if (!status.ok()) {
    why = "unreadable report: " + status.ToString();
    return std::nullopt;
  }
  return summary;
}

// Rows in pipeline order (sensors, filter outputs); topics we did not expect last.
std::vector<const ipcbus::demo::TopicSummary*> in_pipeline_order(const ipcbus::demo::Summary& summary) {
  auto rank = [](const std::string& topic) {
    const auto it = std::find(expected_topics.begin(), expected_topics.end(), topic);
    return static_cast<std::size_t>(it - expected_topics.begin());
  };
  std::vector<const ipcbus::demo::TopicSummary*> rows;
  for (const auto& t : summary.topics()) rows.push_back(&t);
  std::stable_sort(rows.begin(), rows.end(), [&](auto* a, auto* b) { return rank(a->topic()) < rank(b->topic()); });
  return rows;
}

void print_table(const ipcbus::demo::Summary& summary, const ipcbus::config& cfg) {
  std::printf("\n  %-22s %-9s %-12s %10s %6s %9s %9s\n", "topic", "transport", "qos", "delivered", "lost",
              "p50 (µs)", "p99 (µs)");
  for (const auto* row : in_pipeline_order(summary)) {
    const auto& t = *row;
    const auto qos = std::string(ipcbus::to_string(cfg.settings_for(t.topic()).qos));
    std::printf("  %-22s %-9s %-12s %10llu %6llu %8s %8s\n", t.topic().c_str(), t.transport().c_str(),
                qos.c_str(), static_cast<unsigned long long>(t.delivered()),
                static_cast<unsigned long long>(t.lost()), fixed(t.latency_p50_us(), 1).c_str(),
                fixed(t.latency_p99_us(), 1).c_str());
  }
  std::printf("\n  delivered: messages the logger received; lost: gaps in publisher sequence numbers\n"
              "  (drops under drop_oldest, else 0); latency: publish call to logger callback.\n");
}

using service_list = std::vector<std::unique_ptr<child_service>>;

// Starts the services downstream first, each once the previous one is ready
// (subscribed, and for publishers: their readers attached). False on the first
// that fails; what went wrong is added to `failures`.
bool start_services(service_list& services, const fs::path& config_file, const fs::path& report,
                    const fs::path& runtime_dir, std::vector<std::string>& failures) {
  const std::vector<std::pair<std::string, std::string>> env = {{"IPCBUS_RUNTIME_DIR", runtime_dir.string()}};
  const std::string config = config_file.string();
  auto start = [&](const std::string& label, const std::string& program, const std::vector<std::string>& args) {
    services.push_back(std::make_unique<child_service>(label, sibling(program).string(), args, env));
    std::string why;
    if (services.back()->wait_ready(ready_timeout, why)) return true;
    failures.push_back(label + ": " + why);
    return false;
  };
  // Each sensor waits for its 2 readers (filter, logger), the filter for its 1 (logger).
  return start("logger", "ipcbus-example-logger", {"--config", config, "--report", report.string()}) &&
         start("filter", "ipcbus-example-filter",
               {"--config", config, "--threshold", "0.9", "--wait-subscribers", "1"}) &&
         start("sensor imu", "ipcbus-example-sensor",
               {"--config", config, "--name", "imu", "--rate", "200", "--wait-subscribers", "2"}) &&
         start("sensor gps", "ipcbus-example-sensor",
               {"--config", config, "--name", "gps", "--rate", "50", "--wait-subscribers", "2"}) &&
         start("sensor baro", "ipcbus-example-sensor",
               {"--config", config, "--name", "baro", "--rate", "20", "--wait-subscribers", "2"});
}

// Lets the services run for `seconds`, printing a tick per second. Ends early on
// Ctrl-C / SIGTERM, or when a service exits by itself (a failure).
void run_for(int seconds, service_list& services, std::vector<std::string>& failures) {
  std::cout << "\nrunning for " << seconds << " s (Ctrl-C stops early):" << std::flush;
  const auto begin = std::chrono::steady_clock::now();
  int shown = 0;
  bool stop = false;
  while (!stop && shown < seconds) {
    const auto tick = begin + std::chrono::seconds(shown + 1);
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(tick - std::chrono::steady_clock::now());
    const int sig = left.count() > 0 ? ipcbus::examples::wait_for_signal(left) : 0;
    if (sig == SIGINT || sig == SIGTERM) {
      std::cout << " interrupted, stopping early" << std::flush;
      stop = true;
    }
    for (auto& s : services) {
      if (s->poll()) {
        failures.push_back(s->label() + " stopped on its own: " + s->describe());
        stop = true;
      }
    }
    if (std::chrono::steady_clock::now() >= tick) std::cout << ' ' << ++shown << std::flush;
  }
  std::cout << std::endl;
}

// SIGTERM upstream first: the sensors, then the filter, then the logger, each
// stage only after the one before has exited and its last messages were read.
void stop_services(service_list& services, std::vector<std::string>& failures) {
  std::cout << "\nstopping upstream first (sensors, filter, logger) so nothing in flight is lost:"
            << std::endl;
  std::vector<std::vector<child_service*>> stages(3);
  for (auto& s : services) {
    const auto& label = s->label();
    stages[label.starts_with("sensor") ? 0 : label == "filter" ? 1 : 2].push_back(s.get());
  }
  for (auto& stage : stages)  // one that ended early was reported already
    std::erase_if(stage, [](child_service* s) { return s->exited(); });
  for (std::size_t i = 0; i < stages.size(); ++i) {
    if (i > 0) std::this_thread::sleep_for(settle_time);
    for (auto* s : stages[i]) s->terminate();
    for (auto* s : stages[i]) {
      if (!s->wait_exit(stop_timeout)) {
        s->kill();
        failures.push_back(s->label() + " did not stop within " + std::to_string(stop_timeout.count()) +
                           " s of SIGTERM; killed");
      } else if (!s->succeeded()) {
        failures.push_back(s->label() + " " + s->describe());
      }
    }
  }
}

// Prints the logger's table; adds a failure for every expected topic without messages.
void report_results(const fs::path& report, const std::string& keep_as, const ipcbus::config& cfg,
                    std::vector<std::string>& failures) {
  std::string why;
  const auto summary = read_report(report, why);
  if (!summary) {
    failures.push_back(why);
    return;
  }
  std::error_code ec;
  if (!keep_as.empty() && !fs::copy_file(report, keep_as, fs::copy_options::overwrite_existing, ec))
    failures.push_back("cannot copy the report to " + keep_as + ": " + ec.message());
  print_table(*summary, cfg);
  std::set<std::string> delivered;
  for (const auto& t : summary->topics())
    if (t.delivered() > 0) delivered.insert(t.topic());
  for (const auto& topic : expected_topics)
    if (!delivered.contains(topic)) failures.push_back("no messages delivered on " + topic);
}

int run(const std::string& config_arg, int seconds, const std::string& keep_report) {
  const fs::path config_file = fs::absolute(config_arg);
  const ipcbus::config cfg = ipcbus::load_config_file(config_file);  // fail early, with the file's line
  for (const char* program : {"ipcbus-example-logger", "ipcbus-example-filter", "ipcbus-example-sensor"})
    sibling(program);  // all there, or fail before starting any
  temporary_directory work;
  // A runtime_dir in the config wins over IPCBUS_RUNTIME_DIR; without one the
  // run gets a private directory, so it never meets another bus's leftovers.
  const fs::path runtime_dir = cfg.runtime_dir.empty() ? work.path : cfg.runtime_dir;
  const fs::path report = work.path / "report.json";

  std::cout << "ipcbus demo: sensors -> filter -> logger, each its own process, on bus domain '" << cfg.domain
            << "'\n  config:      " << config_file.string() << "\n  runtime dir: " << runtime_dir.string()
            << (cfg.runtime_dir.empty() ? " (private to this run, removed at the end)" : " (from the config)")
            << "\n\nstarting services, each once the previous one is ready:" << std::endl;

  ipcbus::examples::block_launcher_signals();
  std::vector<std::string> failures;
  service_list services;
  if (start_services(services, config_file, report, runtime_dir, failures)) run_for(seconds, services, failures);
  stop_services(services, failures);
  report_results(report, keep_report, cfg, failures);

  if (failures.empty()) {
    std::cout << "\nOK: all " << services.size() << " services stopped cleanly and every topic delivered messages."
              << std::endl;
    return 0;
  }
  std::cout << "\nFAILED:\n";
  for (const auto& f : failures) std::cout << "  - " << f << "\n";
  std::cout << std::flush;
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ipcbus demo: runs a sensor -> filter -> logger pipeline as separate processes"};
  std::string config, keep_report;
  int seconds = 5;
  app.add_option("--config", config, "bus configuration (YAML), e.g. services/examples/demo.yaml")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--seconds", seconds, "how long the sensors publish")->check(CLI::Range(1, 3600));
  app.add_option("--report", keep_report, "also keep the logger's JSON report in this file");
  if (const auto status = ipcbus::examples::parse_command_line(app, argc, argv)) return *status;
  try {
    return run(config, seconds, keep_report);
  } catch (const std::exception& e) {
    std::cerr << "ipcbus-demo: " << e.what() << std::endl;
    return 1;
  }
}
