#include "bench_bridge.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <new>
#include <thread>

#include "bench_channel.hpp"
#include "bench_process.hpp"
#include "bench_raw.hpp"
#include "bench_zmq.hpp"
#include "ipcbus/bus.hpp"

namespace ipcbus::bench {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// The flag the subscriber raises once a probe crossed both bridges.
struct bridge_flags {
  std::atomic<std::uint32_t> flowing;
};

std::string find_bridge(const std::string& given) {
  if (!given.empty()) return given;
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    // Installed: next to `ipcbus`. In the build tree: services/bridge/ beside services/cli/.
    for (const fs::path& p : {self.parent_path() / "ipcbus-bridge", self.parent_path().parent_path() / "bridge" / "ipcbus-bridge"})
      if (::access(p.c_str(), X_OK) == 0) return p.string();
  }
  return "ipcbus-bridge";  // execvp searches PATH
}

unsigned short free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  ::close(fd);
  return ok ? ntohs(a.sin_port) : 0;
}

// An ipcbus-bridge child, stopped with SIGTERM (then SIGKILL) on destruction.
class bridge_process {
 public:
  bridge_process(const std::string& program, const std::vector<std::string>& args) {
    std::vector<std::string> argv_s{program};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      const int null = ::open("/dev/null", O_WRONLY);
      if (null >= 0) ::dup2(null, STDOUT_FILENO);  // its "listening" line is not part of the report
      ::execvp(program.c_str(), argv.data());
      ::_exit(127);
    }
  }
  ~bridge_process() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 300; ++i) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) return;
      std::this_thread::sleep_for(10ms);
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  bool running() const { return pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == 0; }
  bridge_process(const bridge_process&) = delete;
  bridge_process& operator=(const bridge_process&) = delete;

 private:
  pid_t pid_ = -1;
};

bus_options options_for(const fs::path& config, const std::string& domain) {
  bus_options o;
  o.cfg = load_config_file(config);
  o.domain = domain;
  return o;
}

// Publisher child: probes until the subscriber saw one, then publishes for
// `duration`, then one end message. Reliable end to end: it goes as fast as
// the bridges take it.
child_report bridge_publisher(const fs::path& config, const std::string& topic, std::size_t size,
                              std::chrono::milliseconds duration, bridge_flags* flags) {
  child_report r;
  Bus bus(options_for(config, "bench-a"));
  auto pub = bus.advertise<Bytes>(topic);
  std::string buf(size, 'P');
  const auto give_up = std::chrono::steady_clock::now() + 20s;
  while (!flags->flowing.load()) {
    if (std::chrono::steady_clock::now() > give_up) {
      r.error = "no probe crossed the bridges in 20 s";
      return r;
    }
    pub.publish(Bytes::view(buf));
    std::this_thread::sleep_for(10ms);
  }
  buf[0] = 'D';
  const auto cpu0 = cpu_time_ns();
  const auto end = now_ns() + std::chrono::nanoseconds(duration).count();
  do {
    for (int i = 0; i < 64; ++i) pub.publish(Bytes::view(buf));
    r.messages += 64;
  } while (now_ns() < end);
  buf[0] = 'E';
  pub.publish(Bytes::view(buf));
  r.cpu_ns = cpu_time_ns() - cpu0;
  r.hwm_kib = peak_rss_kib();
  // Stay until the subscriber has everything: closing drains only briefly.
  while (flags->flowing.load() != 2) std::this_thread::sleep_for(5ms);
  return r;
}

child_report bridge_subscriber(const fs::path& config, const std::string& topic, bridge_flags* flags) {
  child_report r;
  Bus bus(options_for(config, "bench-b"));
  auto sub = bus.subscribe<Bytes>(topic);
  for (;;) {
    auto m = sub.receive(30s);
    if (!m) {
      r.error = "nothing received for 30 s after " + std::to_string(r.messages) + " messages";
      break;
    }
    const char kind = m->message.empty() ? 'D' : m->message.data()[0];
    if (kind == 'P') {
      flags->flowing.store(1);
      continue;
    }
    if (kind == 'E') break;
    const auto t = now_ns();
    if (r.messages++ == 0) r.first_ns = t;
    r.last_ns = t;
  }
  flags->flowing.store(2);
  r.hwm_kib = peak_rss_kib();
  return r;
}

double rate_of(const child_report& r) {
  if (r.messages < 2 || r.last_ns <= r.first_ns) return 0;
  return static_cast<double>(r.messages - 1) * 1e9 / static_cast<double>(r.last_ns - r.first_ns);
}

// One round of one candidate: the subscriber's rate, or an error.
std::string measure(const std::string& who, std::size_t size, const bridge_bench_options& o, const fs::path& config,
                    int round, double& rate) {
  throughput_plan plan;
  plan.size = size;
  plan.duration = o.duration;
  std::vector<child_spec> specs;
  std::vector<child_report> reports;
  std::string error;
  scratch_dir dir;
  std::unique_ptr<fanout_channel> ch;
  shared_block flags_mem(sizeof(bridge_flags));
  auto* flags = new (flags_mem.data()) bridge_flags{};
  if (who == "bridge") {
    // A topic per round: no publisher or republisher of an earlier round is in the way.
    const std::string topic = "bench/s" + std::to_string(size) + "/r" + std::to_string(round);
    specs.push_back({"subscriber", -1, [=] { return bridge_subscriber(config, topic, flags); }});
    specs.push_back({"publisher", -1, [=] { return bridge_publisher(config, topic, size, o.duration, flags); }});
  } else {
    std::string why;
    zmq_relay_chain* relay = nullptr;
    if (who == "zmq-proxy") {
      auto chain = make_zmq_relay_chain(dir.path());
      relay = chain.get();
      ch = std::move(chain);
    } else {
      ch = who == "raw-tcp" ? make_raw_fanout("raw-tcp", size, 1, why) : make_zmq_fanout("zmq-tcp", dir.path(), 1);
    }
    if (!ch) return why.empty() ? "not built" : why;
    specs.push_back({"subscriber", -1, [&ch, plan] { return run_channel_subscriber(*ch, 0, plan); }});
    specs.push_back({"publisher", -1, [&ch, plan] { return run_channel_publisher(*ch, plan); }});
    if (relay) {
      for (int i = 0; i < 2; ++i)
        specs.push_back({"forwarder " + std::to_string(i), -1, [relay, i] { return relay->run_forwarder(i); }});
    }
  }
  if (!run_children(specs, o.duration + 60s, reports, error)) return error;
  if (!reports[0].error.empty()) return reports[0].error;
  if (!reports[1].error.empty()) return reports[1].error;
  if (reports[0].messages != reports[1].messages)
    return "subscriber counted " + std::to_string(reports[0].messages) + " of " + std::to_string(reports[1].messages);
  // Forwarders count the end marker too.
  for (std::size_t i = 2; i < reports.size(); ++i)
    if (reports[i].messages != reports[1].messages + 1)
      return specs[i].role + " forwarded " + std::to_string(reports[i].messages) + " of " +
             std::to_string(reports[1].messages + 1);
  rate = rate_of(reports[0]);
  return rate > 0 ? "" : "too few messages to compute a rate";
}

}  // namespace

std::vector<bridge_bench_row> run_bridge_bench(const bridge_bench_options& o, std::ostream& progress, int& failures) {
  failures = 0;
  const std::vector<std::size_t> sizes = o.sizes.empty() ? std::vector<std::size_t>{64, 1024, 16384} : o.sizes;
  const std::vector<std::string> who = {"bridge", "raw-tcp", "zmq-tcp", "zmq-proxy"};
  scratch_dir runtime;
  const fs::path config = runtime.path() / "bench.yaml";
  {
    std::ofstream out(config);
    out << "runtime_dir: " << runtime.path().string() << "\n"
        << "defaults: { transport: unix, qos: reliable }\n"
        << "bridge: { token: bench, export: [\"bench/#\"] }\n";
  }
  const std::string program = find_bridge(o.bridge_program);
  const unsigned short port = free_port();
  const std::string uri = "tcp://127.0.0.1:" + std::to_string(port);
  std::vector<bridge_bench_row> rows;
  std::map<std::pair<std::string, std::size_t>, std::vector<double>> rates;
  std::map<std::pair<std::string, std::size_t>, std::vector<std::string>> errors;
  {
    bridge_process a(program, {"--config", config.string(), "--domain", "bench-a", "--listen", uri});
    bridge_process b(program, {"--config", config.string(), "--domain", "bench-b", "--no-listen", "--peer", uri});
    std::this_thread::sleep_for(300ms);
    if (!a.running() || !b.running()) {
      progress << "ipcbus bench: " << program << " did not start\n";
      ++failures;
    }
    for (int round = 1; round <= o.rounds && !interrupted(); ++round) {
      for (const auto size : sizes) {
        for (const auto& w : who) {
          if (interrupted()) break;
          progress << "round " << round << "/" << o.rounds << ": " << w << " " << size << " B ... " << std::flush;
          double rate = 0;
          const std::string err = measure(w, size, o, config, round, rate);
          if (err.empty()) {
            rates[{w, size}].push_back(rate);
            progress << static_cast<long long>(rate) << " msg/s\n";
          } else {
            ++failures;
            errors[{w, size}].push_back(err);
            progress << "failed: " << err << '\n';
          }
        }
      }
    }
  }
  for (const auto size : sizes)
    for (const auto& w : who) {
      bridge_bench_row row{w, size, 0, errors[{w, size}]};
      auto v = rates[{w, size}];
      if (!v.empty()) {
        std::sort(v.begin(), v.end());
        row.msgs_per_s = v[v.size() / 2];
      }
      rows.push_back(std::move(row));
    }
  return rows;
}

void print_bridge_report(std::ostream& out, const std::vector<bridge_bench_row>& rows) {
  std::map<std::size_t, std::map<std::string, double>> by_size;
  for (const auto& r : rows) by_size[r.size][r.who] = r.msgs_per_s;
  char line[256];
  std::snprintf(line, sizeof line, "%-8s %13s %13s %13s %13s %11s %10s %8s %10s\n", "SIZE", "BRIDGE msg/s",
                "RAW-TCP msg/s", "ZMQ-TCP msg/s", "PROXY msg/s", "BRIDGE MB/s", "vs RAW-TCP", "vs ZMQ", "vs PROXY");
  out << "Throughput, one publisher and one subscriber, reliable; bridge = two ipcbus-bridge processes\n"
         "between two buses over TCP on 127.0.0.1; zmq-proxy = ZeroMQ through two forwarders the same\n"
         "way (ipc, tcp, ipc: four processes, as the bridge); medians over rounds:\n"
      << line;
  for (const auto& [size, m] : by_size) {
    const auto rate = [&m](const char* who) { return m.count(who) ? m.at(who) : 0.0; };
    const double br = rate("bridge");
    const auto ratio = [br](double b) {
      char buf[32];
      if (br <= 0 || b <= 0) return std::string("-");
      std::snprintf(buf, sizeof buf, "%.2f", br / b);
      return std::string(buf);
    };
    std::snprintf(line, sizeof line, "%-8zu %13.0f %13.0f %13.0f %13.0f %11.1f %10s %8s %10s\n", size, br,
                  rate("raw-tcp"), rate("zmq-tcp"), rate("zmq-proxy"), br * static_cast<double>(size) / 1e6,
                  ratio(rate("raw-tcp")).c_str(), ratio(rate("zmq-tcp")).c_str(), ratio(rate("zmq-proxy")).c_str());
    out << line;
  }
  for (const auto& r : rows)
    for (const auto& e : r.errors) out << "failed: " << r.who << " " << r.size << " B: " << e << '\n';
}

}  // namespace ipcbus::bench
