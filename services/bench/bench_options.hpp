// What `ipcbus bench` measures: its options, the participants it compares
// (ipcbus transports, raw baselines, ZeroMQ) and the records a run produces.
//
// Plain values, filled in once by the command line and read-only afterwards.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ipcbus::bench {

enum class workload { pingpong, throughput, loaded };
// loan: Bytes written into Publisher<Bytes>::loan memory (ping-pong on shm:// only).
// *_batch: published with Publisher::publish_batch, batch_size messages a call (throughput 1->1).
enum class payload_kind { bytes, protobuf, loan, bytes_batch, protobuf_batch };
constexpr std::size_t batch_size = 64;
inline bool is_protobuf(payload_kind p) { return p == payload_kind::protobuf || p == payload_kind::protobuf_batch; }
inline bool is_batch(payload_kind p) { return p == payload_kind::bytes_batch || p == payload_kind::protobuf_batch; }
// How a receiver waits: busy-polling (spin) or blocked in the kernel (sleep).
enum class wait_mode { spin, sleep };

std::string to_string(workload w);
std::string to_string(payload_kind p);
std::string to_string(wait_mode m);
std::optional<workload> parse_workload(const std::string& text);

// Who is measured. `kind` says which code runs it.
enum class candidate_kind { bus, raw, zmq };

struct candidate {
  std::string name;       // JSON "transport": shm, unix, raw-spin, zmq-ipc, ...
  candidate_kind kind = candidate_kind::bus;
  wait_mode mode = wait_mode::sleep;
  std::string baseline;   // for bus candidates: the raw mechanism it is compared with
  std::string peer;       // for bus candidates: the ZeroMQ transport it is compared with
  std::string family;     // the bus transport this belongs to (shm for raw-spin, ...)
};

// Every candidate this build can run, bus transports first. Adding a transport
// to the comparison is one line in bench_options.cpp.
std::vector<candidate> all_candidates(bool have_zmq);

struct bench_options {
  bool quick = false;
  std::vector<std::string> transports;  // empty: all; else these and their baselines and peers
  std::vector<std::size_t> sizes;       // empty: the defaults of each workload
  std::vector<workload> workloads;      // empty: all
  int rounds = 0;                       // 0: 3 with --quick, else 5
  std::string json_file;
  std::string samples_file;
  std::string plots_dir;
  bool pin = true;                      // pin participants to CPUs, spread over the allowed set
};

// Figures of one measurement (one round of one case). Absent: not measured.
struct figures {
  std::optional<double> p50_ns, p99_ns, p999_ns, max_ns;
  std::optional<double> msgs_per_s, bytes_per_s;
  std::optional<double> cpu_ns_per_msg;
  std::optional<double> rss_kib;  // the largest VmHWM of the participants
};

struct case_key {
  workload what = workload::pingpong;
  std::string transport;
  std::size_t size = 0;
  wait_mode mode = wait_mode::sleep;
  int subscribers = 1;
  payload_kind payload = payload_kind::bytes;
};

// One case over all rounds: the figures of each round and their medians.
struct record {
  case_key key;
  std::vector<figures> rounds;
  figures median;
  std::vector<std::string> errors;  // rounds that failed, and why
};

}  // namespace ipcbus::bench
