// `ipcbus bench --bridge`: throughput through two ipcbus-bridge processes (a
// publisher on one bus, a subscriber on another, bridged over TCP on
// 127.0.0.1), against a bare TCP stream (raw-tcp), ZeroMQ tcp:// (zmq-tcp) and
// ZeroMQ through two forwarders in the bridge's own topology (zmq-proxy,
// bench_zmq.hpp) in the same run, with the same message sizes, in interleaved
// rounds.
//
// Blocking: runs for seconds; progress goes to `progress`. Every participant is
// a child process (the bridges are exec'd, the others forked), as in the rest
// of the bench. Thread-safety: one run at a time.
#pragma once

#include <chrono>
#include <cstddef>
#include <ostream>
#include <string>
#include <vector>

namespace ipcbus::bench {

struct bridge_bench_options {
  std::vector<std::size_t> sizes;  // empty: 64 B, 1 KiB, 16 KiB
  int rounds = 3;
  std::chrono::milliseconds duration{1000};  // publishing time of one round
  std::string bridge_program;                // empty: found next to this program, else on PATH
};

struct bridge_bench_row {
  std::string who;     // bridge, raw-tcp, zmq-tcp, zmq-proxy
  std::size_t size = 0;
  double msgs_per_s = 0;  // median over rounds; 0: not measured
  std::vector<std::string> errors;
};

// Returns one row per (who, size). `failures` counts rounds that failed.
std::vector<bridge_bench_row> run_bridge_bench(const bridge_bench_options& o, std::ostream& progress, int& failures);
void print_bridge_report(std::ostream& out, const std::vector<bridge_bench_row>& rows);

}  // namespace ipcbus::bench
