// The bench as a whole: which cases run, in which order, and their records.
//
// Rounds interleave: every round measures every case once, candidates of one
// case back to back (A B C, A B C, ...), so drift of the machine over the run
// reaches all of them alike; each figure is then the median over rounds.
// Runs in the parent process only (it forks the participants). Not thread-safe.
#pragma once

#include <iosfwd>
#include <string>
#include <utility>
#include <vector>

#include "bench_options.hpp"

namespace ipcbus::bench {

struct run_result {
  std::vector<record> records;                               // in plan order, skipped cases left out
  std::vector<candidate> candidates;                         // the ones this run compared
  std::vector<std::pair<std::string, std::string>> machine;  // nproc, cpu, kernel, zmq, pinning, ...
  std::vector<std::string> notes;                            // skipped cases and why
  int failures = 0;                                          // measurements that failed
  bool interrupted = false;
};

// The candidates named by --transport (with their baselines and ZeroMQ peers),
// or all. Throws std::invalid_argument naming an unknown transport.
std::vector<candidate> select_candidates(const std::vector<std::string>& names, bool have_zmq);

// Runs every case for every round; progress lines go to `progress` (stderr).
// Throws std::invalid_argument for options that cannot be run.
run_result run_bench(const bench_options& options, std::ostream& progress);

}  // namespace ipcbus::bench
