#include "bench_plots.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

namespace ipcbus::bench {
namespace {

namespace fs = std::filesystem;

// Runs `gnuplot plots.gp` in `dir`; gives it a minute.
std::string run_gnuplot(const fs::path& dir) {
  const pid_t pid = ::fork();
  if (pid < 0) return "fork failed";
  if (pid == 0) {
    if (::chdir(dir.c_str()) != 0) ::_exit(126);
    ::execlp("gnuplot", "gnuplot", "plots.gp", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > give_up) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return "gnuplot did not finish within 60 s";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return "gnuplot failed (see its messages above)";
  return {};
}

std::string gp_quote(const std::string& s) { return "'" + s + "'"; }

}  // namespace

bool gnuplot_available() {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "/usr/bin:/bin");
  for (std::string d; std::getline(dirs, d, ':');)
    if (!d.empty() && ::access((fs::path(d) / "gnuplot").c_str(), X_OK) == 0) return true;
  return false;
}

std::string write_plots(const fs::path& dir, const run_result& run) {
  if (!gnuplot_available()) return "gnuplot is not installed (Debian: gnuplot-nox); no plots drawn";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return "cannot create " + dir.string() + ": " + ec.message();

  // latency-<transport>.dat: size p50 p99 (ping-pong, Bytes).
  std::map<std::string, std::ostringstream> latency;
  // throughput-<size>-<transport>.dat: subscribers msgs/s (Bytes).
  std::map<std::size_t, std::map<std::string, std::ostringstream>> throughput;
  for (const auto& r : run.records) {
    if (r.key.payload != payload_kind::bytes) continue;
    const auto& m = r.median;
    // A bus transport measured in both modes is two series ("shm", "shm-spin");
    // the raw baselines carry their mode in their name already.
    const bool spin_series = r.key.mode == wait_mode::spin && !r.key.transport.starts_with("raw-");
    const std::string series = r.key.transport + (spin_series ? "-spin" : "");
    if (r.key.what == workload::pingpong && m.p50_ns && m.p99_ns)
      latency[series] << r.key.size << ' ' << *m.p50_ns << ' ' << *m.p99_ns << '\n';
    if (r.key.what == workload::throughput && m.msgs_per_s)
      throughput[r.key.size][series] << r.key.subscribers << ' ' << *m.msgs_per_s << '\n';
  }
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir / name) << text;
  };
  std::ostringstream gp;
  gp << "# Drawn by `ipcbus bench --plots`; run `gnuplot plots.gp` here to redraw.\n"
        "set grid\nset key outside right top\nset style data linespoints\n";
  const std::string outputs[] = {"svg size 960,600", "pngcairo size 960,600"};
  const std::string extensions[] = {"svg", "png"};
  if (!latency.empty()) {
    std::string plot;
    for (auto& [t, data] : latency) {
      write("latency-" + t + ".dat", data.str());
      plot += std::string(plot.empty() ? "plot " : ", ") + gp_quote("latency-" + t + ".dat") +
              " using 1:2 title " + gp_quote(t + " p50") + " lw 2";
    }
    for (int i = 0; i < 2; ++i)
      gp << "set terminal " << outputs[i] << "\nset output 'latency." << extensions[i] << "'\n"
         << "set title 'One-way latency (p50) vs message size'\nset logscale xy\n"
         << "set xlabel 'message size (bytes)'\nset ylabel 'one-way latency (ns)'\n"
         << plot << "\nunset logscale\n";
  }
  for (auto& [size, per_transport] : throughput) {
    std::string plot;
    for (auto& [t, data] : per_transport) {
      const std::string file = "throughput-" + std::to_string(size) + "-" + t + ".dat";
      write(file, data.str());
      plot += std::string(plot.empty() ? "plot " : ", ") + gp_quote(file) + " using 1:2 title " + gp_quote(t) +
              " lw 2";
    }
    for (int i = 0; i < 2; ++i)
      gp << "set terminal " << outputs[i] << "\nset output 'throughput-" << size << "." << extensions[i] << "'\n"
         << "set title 'Throughput of " << size << " B messages vs subscribers'\nset logscale y\n"
         << "set xlabel 'subscribers'\nset ylabel 'messages per second (each subscriber)'\nset xtics 1\n"
         << plot << "\nunset logscale\nset xtics autofreq\n";
  }
  write("plots.gp", gp.str());
  return run_gnuplot(dir);
}

}  // namespace ipcbus::bench
