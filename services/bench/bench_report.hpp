// The table `ipcbus bench` prints on stdout: per workload and size, each
// candidate's medians and its ratio to its raw baseline and to ZeroMQ.
// Pure formatting; thread-safe.
#pragma once

#include <cstddef>
#include <iosfwd>
#include <optional>
#include <string>

#include "bench_runner.hpp"

namespace ipcbus::bench {

// The raw mechanism a candidate is compared with (shm: raw-spin in spin mode,
// raw-futex in sleep mode), and its ZeroMQ peer; "" for baselines and peers.
std::string baseline_of(const candidate& c, wait_mode mode);
std::string zmq_peer_of(const candidate& c);

// The figure a ratio compares: p50 latency, or msgs/s for throughput.
std::optional<double> headline(const record& r);

// The record of `transport` for the same workload, size, subscribers and mode
// rules as `r` (Bytes payload); nullptr when the run has none.
const record* counterpart(const run_result& run, const record& r, const std::string& transport);

void print_report(std::ostream& out, const run_result& run);

std::string format_ns(double ns);
std::string format_rate(double per_s);
// "64 B", "4 KiB", "1 MiB".
std::string format_size(std::size_t bytes);

}  // namespace ipcbus::bench
