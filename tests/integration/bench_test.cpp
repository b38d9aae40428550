// `ipcbus bench` end to end: a short run over every transport, baseline and
// ZeroMQ peer of this build, checked for the shape of what it writes — never
// for how fast anything was (DESIGN.md section 10: benchmarks are programs).
#define BOOST_TEST_MODULE bench
#include <boost/test/unit_test.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <boost/json/src.hpp>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using ipcbus::test::built_program;
using ipcbus::test::child_process;
using ipcbus::test::scratch_domain;
namespace fs = std::filesystem;
namespace json = boost::json;

int exit_code_of(int status) { return status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1; }

// Runs `ipcbus bench ARGS...` with stderr folded into the output and TMPDIR
// pointing at `tmp`, so that whatever the bench leaves behind is visible there.
struct bench_run {
  int exit_code = -1;
  std::string output;
};

bench_run run_bench(const fs::path& tmp, const std::vector<std::string>& args, std::chrono::seconds timeout = 120s) {
  std::vector<std::string> argv = {"-c", "exec \"$0\" bench \"$@\" 2>&1", built_program("ipcbus")};
  argv.insert(argv.end(), args.begin(), args.end());
  child_process p("/bin/sh", argv, {"TMPDIR=" + tmp.string()});
  bench_run r;
  r.exit_code = exit_code_of(p.wait(timeout));
  r.output = p.output();
  return r;
}

json::value parse_file(const fs::path& file) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  boost::system::error_code ec;
  auto v = json::parse(text.str(), ec);
  BOOST_REQUIRE_MESSAGE(!ec, file.string() << " is not JSON: " << ec.message() << "\n" << text.str());
  return v;
}

bool positive_number(const json::value& v) {
  return (v.is_int64() && v.as_int64() > 0) || (v.is_uint64() && v.as_uint64() > 0) ||
         (v.is_double() && v.as_double() > 0);
}

std::set<std::string> expected_transports(bool have_zmq) {
  std::set<std::string> t = {"unix", "tcp", "raw-spin", "raw-futex", "raw-unix", "raw-tcp", "raw-pipe", "raw-mq"};
#ifdef IPCBUS_HAVE_SHM
  t.insert("shm");
#endif
  if (have_zmq) t.insert({"zmq-ipc", "zmq-tcp"});
  return t;
}

void check_record(const json::object& r) {
  static const std::set<std::string> allowed = {"transport", "workload", "size", "mode", "subscribers", "p50_ns",
                                                "p99_ns", "p999_ns", "max_ns", "msgs_per_s", "bytes_per_s",
                                                "payload", "cpu_ns_per_msg", "rss_kib", "rounds"};
  const std::string text = json::serialize(r);
  for (const auto& kv : r) BOOST_TEST(allowed.count(std::string(kv.key())) == 1, "unexpected key in " << text);
  BOOST_REQUIRE_MESSAGE(r.contains("transport") && r.at("transport").is_string(), text);
  BOOST_REQUIRE_MESSAGE(r.contains("workload") && r.at("workload").is_string(), text);
  BOOST_REQUIRE_MESSAGE(r.contains("mode") && r.at("mode").is_string(), text);
  const std::string workload(r.at("workload").as_string());
  const std::string mode(r.at("mode").as_string());
  BOOST_TEST((workload == "pingpong" || workload == "throughput" || workload == "loaded"), text);
  BOOST_TEST((mode == "spin" || mode == "sleep"), text);
  for (const char* key : {"size", "subscribers"})
    BOOST_TEST((r.contains(key) && (r.at(key).is_int64() || r.at(key).is_uint64()) && positive_number(r.at(key))),
               key << " in " << text);
  // Every figure present is a positive number; each workload has its own.
  for (const char* key : {"p50_ns", "p99_ns", "p999_ns", "max_ns", "msgs_per_s", "bytes_per_s", "cpu_ns_per_msg",
                          "rss_kib", "rounds"})
    if (r.contains(key)) BOOST_TEST(positive_number(r.at(key)), key << " in " << text);
  const bool latency = workload != "throughput";
  for (const char* key : {"p50_ns", "p99_ns", "p999_ns", "max_ns"})
    BOOST_TEST(r.contains(key) == latency, key << " in " << text);
  for (const char* key : {"msgs_per_s", "bytes_per_s"}) BOOST_TEST(r.contains(key) == !latency, key << " in " << text);
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_quick_run_measures_every_transport_and_baseline_and_writes_json_and_plots) {
  scratch_domain d;  // only for its private directory, which the bench uses as TMPDIR
  const fs::path json_file = d.runtime_dir() / "bench.json";
  const fs::path samples_file = d.runtime_dir() / "samples.json";
  const fs::path plots = d.runtime_dir() / "plots";
  const auto run = run_bench(d.runtime_dir(), {"--quick", "--rounds", "1", "--size", "64", "--json", json_file.string(),
                                               "--samples", samples_file.string(), "--plots", plots.string()});
  BOOST_REQUIRE_MESSAGE(run.exit_code == 0, run.output);
  BOOST_TEST(run.output.find("pingpong, 64 B") != std::string::npos, run.output);

  const bool have_zmq = run.output.find("built without ZeroMQ") == std::string::npos;
  const auto records = parse_file(json_file);
  BOOST_REQUIRE(records.is_array());
  std::set<std::string> seen, seen_workloads, payloads;
  for (const auto& v : records.as_array()) {
    BOOST_REQUIRE(v.is_object());
    check_record(v.as_object());
    seen.insert(std::string(v.at("transport").as_string()));
    seen_workloads.insert(std::string(v.at("workload").as_string()));
    if (v.as_object().contains("payload")) payloads.insert(std::string(v.at("payload").as_string()));
  }
  const auto expected = expected_transports(have_zmq);
  for (const auto& t : expected) BOOST_TEST(seen.count(t) == 1, t << " missing from " << json_file.string());
  BOOST_TEST(seen_workloads == (std::set<std::string>{"pingpong", "throughput", "loaded"}));
#ifdef IPCBUS_HAVE_SHM
  // shm's ping-pong is measured through loans too (the 1 MiB loan target of issue 3).
  BOOST_TEST(payloads ==
             (std::set<std::string>{"bytes", "protobuf", "bytes-batch", "protobuf-batch", "loan"}));
  BOOST_TEST(run.output.find("pingpong, 64 B, through loans (shm)") != std::string::npos, run.output);
#else
  BOOST_TEST(payloads == (std::set<std::string>{"bytes", "protobuf", "bytes-batch", "protobuf-batch"}));
#endif
  // Publisher::publish_batch, measured beside one message per call.
  BOOST_TEST(run.output.find("throughput, 64 B, 1->1, bytes-batch (publish_batch, 64 a call)") != std::string::npos,
             run.output);

  const auto samples = parse_file(samples_file);
  BOOST_REQUIRE(samples.is_object());
  BOOST_TEST(samples.as_object().contains("machine"));
  BOOST_TEST(samples.at("records").as_array().size() >= records.as_array().size());

  if (::access("/usr/bin/gnuplot", X_OK) == 0) {
    for (const char* image : {"latency.svg", "throughput-64.svg"})
      BOOST_TEST((fs::exists(plots / image) && fs::file_size(plots / image) > 0), image);
  }
  // Every measurement's scratch directory was removed.
  for (const auto& e : fs::directory_iterator(d.runtime_dir()))
    BOOST_TEST(e.path().filename().string().rfind("ipcbus-bench-", 0) != 0, e.path().string() << " was left behind");
}

BOOST_AUTO_TEST_CASE(unknown_transports_workloads_and_sizes_are_usage_errors) {
  scratch_domain d;
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--transport", "carrier-pigeon"}, {"--workload", "fastest"}, {"--size", "huge"}}) {
    const auto run = run_bench(d.runtime_dir(), args, 30s);
    BOOST_TEST(run.exit_code == 2, args[0] << ": " << run.output);
    BOOST_TEST(run.output.find(args[1]) != std::string::npos, run.output);
  }
}

BOOST_AUTO_TEST_CASE(a_bridge_run_measures_the_bridge_raw_tcp_zeromq_and_zeromq_forwarders_and_prints_ratios) {
  scratch_domain d;
  const auto run = run_bench(d.runtime_dir(), {"--bridge", "--quick", "--rounds", "1", "--size", "64"});
  BOOST_TEST(run.exit_code == 0, run.output);
  BOOST_TEST(run.output.find("vs RAW-TCP") != std::string::npos, run.output);
  BOOST_TEST(run.output.find("vs PROXY") != std::string::npos, run.output);
  // One row for 64 B with four rates (bridge, raw-tcp, zmq-tcp, zmq-proxy)
  // and three ratios, none of them missing.
  std::istringstream lines(run.output);
  bool row = false;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("64 ", 0) != 0) continue;
    row = true;
    BOOST_TEST((line + ' ').find(" - ") == std::string::npos, line);  // the last column too
  }
  BOOST_TEST(row, run.output);
  for (const auto& e : fs::directory_iterator(d.runtime_dir()))
    BOOST_TEST(e.path().filename().string().rfind("ipcbus-bench-", 0) != 0, e.path().string() << " was left behind");
}
