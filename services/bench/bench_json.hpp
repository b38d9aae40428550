// The machine-readable output of `ipcbus bench`.
//
// --json FILE: an array with one record per measured case:
//   {"transport", "workload", "size", "mode", "subscribers", "p50_ns", "p99_ns",
//    "p999_ns", "max_ns", "msgs_per_s", "bytes_per_s"} (absent figures omitted)
//   plus "payload" (bytes|protobuf), "cpu_ns_per_msg", "rss_kib", "rounds".
// --samples FILE: the machine, and per case the figures of every round.
// Throws std::system_error when a file cannot be written.
#pragma once

#include <filesystem>

#include "bench_runner.hpp"

namespace ipcbus::bench {

void write_json(const std::filesystem::path& file, const run_result& run);
void write_samples(const std::filesystem::path& file, const run_result& run);

}  // namespace ipcbus::bench
