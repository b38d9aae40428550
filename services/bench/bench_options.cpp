#include "bench_options.hpp"

namespace ipcbus::bench {

std::string to_string(workload w) {
  switch (w) {
    case workload::pingpong: return "pingpong";
    case workload::throughput: return "throughput";
    case workload::loaded: return "loaded";
  }
  return "?";
}

std::string to_string(payload_kind p) {
  switch (p) {
    case payload_kind::bytes: return "bytes";
    case payload_kind::protobuf: return "protobuf";
    case payload_kind::loan: return "loan";
    case payload_kind::bytes_batch: return "bytes-batch";
    case payload_kind::protobuf_batch: return "protobuf-batch";
  }
  return "?";
}

std::string to_string(wait_mode m) { return m == wait_mode::spin ? "spin" : "sleep"; }

std::optional<workload> parse_workload(const std::string& text) {
  for (auto w : {workload::pingpong, workload::throughput, workload::loaded})
    if (to_string(w) == text) return w;
  return std::nullopt;
}

std::vector<candidate> all_candidates(bool have_zmq) {
  using k = candidate_kind;
  const auto sleep = wait_mode::sleep;
  std::vector<candidate> out = {
  // The ipcbus transports built in. A new transport is one line here, once its
  // raw baseline below exists: {name, bus, mode, baseline, zmq peer, family}.
#ifdef IPCBUS_HAVE_SHM
      {"shm", k::bus, sleep, "raw-futex", "zmq-ipc", "shm"},
      {"shm", k::bus, wait_mode::spin, "raw-spin", "zmq-ipc", "shm"},  // busy-polling receivers
#endif
#ifdef IPCBUS_HAVE_SOCKET
      {"unix", k::bus, sleep, "raw-unix", "zmq-ipc", "unix"},
      {"tcp", k::bus, sleep, "raw-tcp", "zmq-tcp", "tcp"},
#endif
#ifdef IPCBUS_HAVE_PIPE
      {"pipe", k::bus, sleep, "raw-pipe", "zmq-ipc", "pipe"},
#endif
#ifdef IPCBUS_HAVE_MQUEUE
      {"mq", k::bus, sleep, "raw-mq", "zmq-ipc", "mq"},
#endif
      // The raw mechanisms, written in the bench itself (bench_raw.cpp).
      {"raw-spin", k::raw, wait_mode::spin, "", "", "shm"},
      {"raw-futex", k::raw, sleep, "", "", "shm"},
      {"raw-unix", k::raw, sleep, "", "", "unix"},
      {"raw-tcp", k::raw, sleep, "", "", "tcp"},
      {"raw-pipe", k::raw, sleep, "", "", "pipe"},
      {"raw-mq", k::raw, sleep, "", "", "mq"},
  };
  if (have_zmq) {
    out.push_back({"zmq-ipc", k::zmq, sleep, "", "", "local"});
    out.push_back({"zmq-tcp", k::zmq, sleep, "", "", "tcp"});
  }
  return out;
}

}  // namespace ipcbus::bench
