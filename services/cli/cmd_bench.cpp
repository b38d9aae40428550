// `ipcbus bench`: measures every transport built in against its raw mechanism
// and ZeroMQ, in interleaved rounds, and prints the medians (docs/benchmarks.md).
//
// Progress goes to stderr, the table to stdout; --json, --samples and --plots
// write files. The bench forks its participants from this process, which
// therefore never creates a Bus itself. Exit 1 when a measurement failed or the
// run was interrupted (after printing what was measured).
#include <iostream>
#include <memory>
#include <sstream>

#include "bench_bridge.hpp"
#include "bench_json.hpp"
#include "bench_plots.hpp"
#include "bench_process.hpp"
#include "bench_report.hpp"
#include "bench_runner.hpp"
#include "bench_zmq.hpp"
#include "commands.hpp"
#include "ipcbus/config.hpp"

namespace ipcbus::cli {
namespace {

struct bench_args {
  bench::bench_options options;
  std::string transports, sizes, workloads;
  bool bridge = false;
};

std::vector<std::string> split(const std::string& list) {
  std::vector<std::string> out;
  std::istringstream in(list);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

bench::bench_options resolve(const bench_args& a) {
  auto o = a.options;
  o.transports = split(a.transports);
  for (const auto& s : split(a.sizes)) {
    const auto n = parse_size(s);
    if (!n || *n == 0 || *n > (64u << 20)) throw cli_error(exit_usage, "--size: '" + s + "' is not a size from 1 B to 64 MiB");
    o.sizes.push_back(*n);
  }
  for (const auto& w : split(a.workloads)) {
    const auto parsed = bench::parse_workload(w);
    if (!parsed) throw cli_error(exit_usage, "--workload: '" + w + "'; expected pingpong, throughput or loaded");
    o.workloads.push_back(*parsed);
  }
  try {
    bench::select_candidates(o.transports, bench::zmq_built());
  } catch (const std::invalid_argument& e) {
    throw cli_error(exit_usage, std::string("--transport: ") + e.what());
  }
  return o;
}

// --bridge: the bridge against a bare TCP stream, ZeroMQ tcp:// and ZeroMQ forwarders, in one run.
int run_bridge_bench(const bench::bench_options& o) {
  bench::bridge_bench_options bo;
  bo.sizes = o.sizes;
  bo.rounds = o.rounds > 0 ? o.rounds : (o.quick ? 2 : 3);
  bo.duration = o.quick ? std::chrono::milliseconds(300) : std::chrono::milliseconds(1000);
  if (!bench::zmq_built()) std::cerr << "ipcbus bench: built without ZeroMQ; zmq-tcp and zmq-proxy are not measured\n";
  bench::install_interrupt_handler();
  int failures = 0;
  const auto rows = bench::run_bridge_bench(bo, std::cerr, failures);
  bench::print_bridge_report(std::cout, rows);
  std::cout.flush();
  if (bench::interrupted()) throw cli_error(exit_runtime, "interrupted");
  if (failures) throw cli_error(exit_runtime, std::to_string(failures) + " measurement(s) failed");
  return exit_ok;
}

int run_bench(const bench_args& a) {
  const auto o = resolve(a);
  if (a.bridge) return run_bridge_bench(o);
  if (!bench::zmq_built()) std::cerr << "ipcbus bench: built without ZeroMQ; zmq-ipc and zmq-tcp are not measured\n";
  if (!o.plots_dir.empty() && !bench::gnuplot_available())
    std::cerr << "ipcbus bench: gnuplot is not installed (Debian: gnuplot-nox); --plots will be skipped\n";
  bench::install_interrupt_handler();
  const auto run = bench::run_bench(o, std::cerr);
  bench::print_report(std::cout, run);
  std::cout.flush();
  if (!o.json_file.empty()) bench::write_json(o.json_file, run);
  if (!o.samples_file.empty()) bench::write_samples(o.samples_file, run);
  if (!o.plots_dir.empty()) {
    const auto problem = bench::write_plots(o.plots_dir, run);
    if (!problem.empty()) std::cerr << "ipcbus bench: plots: " << problem << '\n';
  }
  if (run.interrupted) throw cli_error(exit_runtime, "interrupted");
  if (run.failures) throw cli_error(exit_runtime, std::to_string(run.failures) + " measurement(s) failed");
  return exit_ok;
}

}  // namespace

command add_bench_command(CLI::App& root, const global_options&) {
  auto a = std::make_shared<bench_args>();
  CLI::App* app = root.add_subcommand("bench", "Measure the transports against raw IPC and ZeroMQ");
  app->add_flag("--quick", a->options.quick, "A short run (under a minute on 2 cores)");
  app->add_option("--transport", a->transports,
                  "Only these, comma-separated (e.g. shm,unix), with their baselines and ZeroMQ peers");
  app->add_option("--size", a->sizes, "Message sizes, comma-separated (e.g. 64,4KiB,1MiB)");
  app->add_option("--workload", a->workloads, "pingpong, throughput, loaded (comma-separated; default all)");
  app->add_option("--rounds", a->options.rounds, "Rounds (default 5, --quick 3)")->check(CLI::Range(1, 100));
  app->add_option("--json", a->options.json_file, "Write one JSON record per measurement to FILE");
  app->add_option("--samples", a->options.samples_file, "Write every round's figures as JSON to FILE");
  app->add_option("--plots", a->options.plots_dir, "Draw plots with gnuplot into DIR (SVG and PNG)");
  app->add_flag("--pin,!--no-pin", a->options.pin, "Pin peers to different CPUs (default on)");
  app->add_flag("--bridge", a->bridge,
                "Measure ipcbus-bridge throughput between two buses against raw TCP and ZeroMQ tcp:// instead "
                "(uses --size, --rounds, --quick)");
  app->footer("Runs in interleaved rounds; each figure is the median over rounds. Latency is one-way:\n"
              "round trip / 2 between two processes. Method and results: docs/benchmarks.md.");
  return {app, [a] { return run_bench(*a); }};
}

}  // namespace ipcbus::cli
