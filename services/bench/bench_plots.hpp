// Plots of a run, drawn by gnuplot into a directory:
//   latency.svg/.png        p50 and p99 one-way latency vs message size, per transport (log-log)
//   throughput-<size>.svg/.png   msgs/s vs number of subscribers, per transport (Bytes)
// The data (*.dat) and the gnuplot script (plots.gp) stay beside them, so a plot
// can be redrawn or restyled by hand. Blocks while gnuplot runs (bounded).
#pragma once

#include <filesystem>
#include <string>

#include "bench_runner.hpp"

namespace ipcbus::bench {

// Whether gnuplot is on PATH.
bool gnuplot_available();

// Writes data, script and images into `dir` (created if needed). Returns ""
// on success, else what went wrong (gnuplot missing or failing).
std::string write_plots(const std::filesystem::path& dir, const run_result& run);

}  // namespace ipcbus::bench
