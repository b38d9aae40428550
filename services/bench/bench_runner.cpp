#include "bench_runner.hpp"

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <new>
#include <ostream>
#include <stdexcept>
#include <thread>

#include "bench_bus.hpp"
#include "bench_process.hpp"
#include "bench_raw.hpp"
#include "bench_report.hpp"
#include "bench_stats.hpp"
#include "bench_zmq.hpp"

namespace ipcbus::bench {
namespace {

using namespace std::chrono_literals;

constexpr auto measurement_timeout = 100s;  // longer than any child's own bounded waits

// One case of the plan and what it has gathered so far.
struct planned_case {
  record rec;
  const candidate* who = nullptr;
  int count = 0;                         // ping-pong round trips
  std::chrono::milliseconds duration{};  // throughput publishing time
  std::string skipped;                   // non-empty: cannot run here, and why
};

std::string key_text(const case_key& k) {
  return to_string(k.what) + "/" + k.transport + "/" + std::to_string(k.size) + "/" + to_string(k.mode) + "/" +
         std::to_string(k.subscribers) + "/" + to_string(k.payload);
}

int pingpong_count(std::size_t size, bool quick) {
  if (size <= 4096) return quick ? 1000 : 5000;
  if (size <= 65536) return quick ? 300 : 2000;
  return quick ? 40 : 300;
}

class runner {
 public:
  runner(const bench_options& o, std::ostream& progress) : o_(o), progress_(progress) {
    result_.candidates = select_candidates(o.transports, zmq_built());
    cpus_ = allowed_cpus();
    rounds_ = o.rounds > 0 ? o.rounds : (o.quick ? 3 : 5);
    tty_ = ::isatty(STDERR_FILENO);
  }

  run_result run() {
    describe_machine();
    plan();
    for (int round = 0; round < rounds_ && !result_.interrupted; ++round) {
      for (std::size_t i = 0; i < cases_.size() && !result_.interrupted; ++i) {
        auto& c = cases_[i];
        if (!c.skipped.empty()) continue;
        show_progress(round, i, c);
        measure(c);
        result_.interrupted = interrupted();
      }
    }
    if (tty_) progress_ << "\r\033[K";
    progress_.flush();
    for (auto& c : cases_) {
      if (!c.skipped.empty()) {
        result_.notes.push_back(c.rec.key.transport + " " + to_string(c.rec.key.what) + " " +
                                format_size(c.rec.key.size) + ": skipped, " + c.skipped);
        continue;
      }
      if (c.rec.rounds.empty() && c.rec.errors.empty()) continue;
      c.rec.median = median_figures(c.rec.rounds);
      result_.records.push_back(std::move(c.rec));
    }
    return std::move(result_);
  }

 private:
  void describe_machine() {
    auto& m = result_.machine;
    m.emplace_back("nproc", std::to_string(std::thread::hardware_concurrency()));
    std::ifstream cpuinfo("/proc/cpuinfo");
    for (std::string line; std::getline(cpuinfo, line);)
      if (line.rfind("model name", 0) == 0) {
        m.emplace_back("cpu", line.substr(line.find(':') + 2));
        break;
      }
    utsname u{};
    if (::uname(&u) == 0) m.emplace_back("kernel", std::string(u.sysname) + " " + u.release);
    m.emplace_back("zeromq", zmq_version());
    m.emplace_back("pinning", o_.pin && cpus_.size() >= 2 ? "on (peers on different CPUs)" : "off");
    m.emplace_back("rounds", std::to_string(rounds_));
    m.emplace_back("run", o_.quick ? "quick" : "full");
  }

  std::vector<std::size_t> sizes_for(workload w, const candidate& c) const {
    if (!o_.sizes.empty()) {
      if (w != workload::loaded) return o_.sizes;
      return {*std::min_element(o_.sizes.begin(), o_.sizes.end())};
    }
    switch (w) {
      case workload::pingpong: {
        std::vector<std::size_t> s = o_.quick ? std::vector<std::size_t>{64, 65536}
                                              : std::vector<std::size_t>{64, 1024, 65536, 1u << 20};
        // 4 KiB, a page, matters to the shared-memory ring and its baselines.
        if (c.family == "shm" || c.name == "zmq-ipc") s.insert(s.begin() + 1, 4096);
        return s;
      }
      case workload::throughput:
        return o_.quick ? std::vector<std::size_t>{64} : std::vector<std::size_t>{64, 65536};
      case workload::loaded:
        return {64};
    }
    return {};
  }

  void plan() {
    std::vector<workload> ws = o_.workloads;
    if (ws.empty()) ws = {workload::pingpong, workload::throughput, workload::loaded};
    const std::vector<int> subscriber_counts = {1, 2, 4};
    auto add = [&](workload w, const candidate& c, std::size_t size, int subs, payload_kind p) {
      planned_case pc;
      pc.rec.key = {w, c.name, size, c.mode, subs, p};
      pc.who = &c;
      pc.count = pingpong_count(size, o_.quick);
      pc.duration = o_.quick ? 150ms : 400ms;
      cases_.push_back(std::move(pc));
    };
    for (auto w : {workload::pingpong, workload::throughput, workload::loaded}) {
      if (std::find(ws.begin(), ws.end(), w) == ws.end()) continue;
      std::vector<std::size_t> all_sizes;
      for (const auto& c : result_.candidates)
        for (auto s : sizes_for(w, c)) all_sizes.push_back(s);
      std::sort(all_sizes.begin(), all_sizes.end());
      all_sizes.erase(std::unique(all_sizes.begin(), all_sizes.end()), all_sizes.end());
      // Size-major, candidate-minor: the candidates of one case run back to back,
      // and the table groups them.
      for (auto size : all_sizes)
        for (int subs : w == workload::throughput ? subscriber_counts : std::vector<int>{1})
          for (auto payload : {payload_kind::bytes, payload_kind::protobuf, payload_kind::bytes_batch,
                               payload_kind::protobuf_batch, payload_kind::loan})
            for (const auto& c : result_.candidates) {
              const auto mine = sizes_for(w, c);
              if (std::find(mine.begin(), mine.end(), size) == mine.end()) continue;
              // Busy-polling receivers take a core each: beyond one (plus the
              // sender) they only measure how a 2-core machine time-slices.
              if (c.kind == candidate_kind::bus && c.mode == wait_mode::spin &&
                  (subs > 1 || w == workload::loaded))
                continue;
              if (payload == payload_kind::loan) {
                // Zero copy end to end: what a large message costs on the shm ring itself.
                if (w == workload::pingpong && c.kind == candidate_kind::bus && c.family == "shm")
                  add(w, c, size, subs, payload);
                continue;
              }
              if (is_batch(payload)) {
                // What a burst costs per message when published in one call.
                if (w == workload::throughput && c.kind == candidate_kind::bus && subs == 1 &&
                    size == all_sizes.front())
                  add(w, c, size, subs, payload);
                continue;
              }
              if (payload == payload_kind::protobuf) {
                // Protobuf against Bytes at the smallest size: what encoding costs per message.
                if (w == workload::throughput && c.kind == candidate_kind::bus && size == all_sizes.front())
                  add(w, c, size, subs, payload);
                continue;
              }
              if (w == workload::loaded && c.kind != candidate_kind::bus) continue;
              add(w, c, size, subs, payload);
            }
    }
  }

  void show_progress(int round, std::size_t index, const planned_case& c) {
    const auto& k = c.rec.key;
    std::string line = "round " + std::to_string(round + 1) + "/" + std::to_string(rounds_) + "  case " +
                       std::to_string(index + 1) + "/" + std::to_string(cases_.size()) + "  " + to_string(k.what) +
                       " " + format_size(k.size) + " " + k.transport;
    if (k.payload == payload_kind::loan) line += " loan";
    if (k.what == workload::throughput)
      line += " 1->" + std::to_string(k.subscribers) + " " + to_string(k.payload);
    if (tty_)
      progress_ << "\r\033[K" << line << std::flush;
    else if (index == 0)
      progress_ << "ipcbus bench: round " << round + 1 << "/" << rounds_ << " (" << cases_.size() << " cases)\n"
                << std::flush;
  }

  int cpu(int participant) const {
    if (!o_.pin || cpus_.size() < 2) return -1;
    return cpus_[static_cast<std::size_t>(participant) % cpus_.size()];
  }

  void fail(planned_case& c, const std::string& why) {
    ++result_.failures;
    c.rec.errors.push_back(why);
    if (tty_) progress_ << "\r\033[K";
    progress_ << "ipcbus bench: " << key_text(c.rec.key) << ": " << why << '\n' << std::flush;
  }

  void measure(planned_case& c) {
    figures f;
    std::string error;
    try {
      switch (c.rec.key.what) {
        case workload::pingpong: error = pingpong(c, f, nullptr); break;
        case workload::throughput: error = throughput(c, c.rec.key.subscribers, c.rec.key.payload, f); break;
        case workload::loaded: error = loaded(c, f); break;
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (!c.skipped.empty()) return;
    if (!error.empty()) return fail(c, error);
    c.rec.rounds.push_back(f);
  }

  // Ping-pong: ping on one CPU, pong on another. With `load` the background publisher joins.
  std::string pingpong(planned_case& c, figures& f, const double* load_rate) {
    const auto& k = c.rec.key;
    pingpong_plan p{k.size, std::max(20, std::min(200, c.count / 10)), c.count};
    scratch_dir dir;
    std::vector<child_spec> specs;
    std::unique_ptr<pair_channel> channel;
    std::unique_ptr<shared_block> shared;
    load_control* load = nullptr;
    if (c.who->kind == candidate_kind::bus) {
      const bus_case bc{k.transport, k.mode, dir.path(), k.payload == payload_kind::loan};
      if (load_rate) {
        shared = std::make_unique<shared_block>(sizeof(load_control));
        load = new (shared->data()) load_control;
      }
      specs.push_back({"ping", cpu(0), [=] { return run_bus_ping(bc, p, load); }});
      specs.push_back({"pong", cpu(1), [=] { return run_bus_pong(bc, p, load != nullptr); }});
      if (load)
        specs.push_back({"load", cpu(0), [=, rate = *load_rate] { return run_bus_loader(bc, k.size, rate, *load); }});
    } else {
      channel = c.who->kind == candidate_kind::raw ? make_raw_pair(k.transport, k.size, c.skipped)
                                                   : make_zmq_pair(k.transport, dir.path());
      if (!channel) return {};
      auto* ch = channel.get();
      specs.push_back({"ping", cpu(0), [=] { return run_channel_ping(*ch, p); }});
      specs.push_back({"pong", cpu(1), [=] { return run_channel_pong(*ch, p); }});
    }
    std::vector<child_report> reports;
    std::string error;
    if (!run_children(specs, measurement_timeout, reports, error)) return error;
    if (reports[0].samples_ns.empty()) return "no samples";
    latency_figures(reports[0].samples_ns, f);
    f.cpu_ns_per_msg = static_cast<double>(reports[0].cpu_ns + reports[1].cpu_ns) /
                       (2.0 * static_cast<double>(std::max<std::uint64_t>(reports[0].messages, 1)));
    f.rss_kib = peak_of(reports);
    return {};
  }

  // One publisher (CPU 0), subscribers spread over the other CPUs first.
  std::string throughput(planned_case& c, int subs, payload_kind payload, figures& f) {
    const auto& k = c.rec.key;
    throughput_plan p{k.size, subs, c.duration};
    scratch_dir dir;
    std::vector<child_spec> specs;
    std::unique_ptr<fanout_channel> channel;
    if (c.who->kind == candidate_kind::bus) {
      const bus_case bc{k.transport, k.mode, dir.path()};
      specs.push_back({"publisher", cpu(0), [=] { return run_bus_publisher(bc, p, payload); }});
      for (int i = 0; i < subs; ++i)
        specs.push_back({"subscriber" + std::to_string(i + 1), cpu(i + 1),
                         [=] { return run_bus_subscriber(bc, p, payload); }});
    } else {
      channel = c.who->kind == candidate_kind::raw ? make_raw_fanout(k.transport, k.size, subs, c.skipped)
                                                   : make_zmq_fanout(k.transport, dir.path(), subs);
      if (!channel) return {};
      auto* ch = channel.get();
      specs.push_back({"publisher", cpu(0), [=] { return run_channel_publisher(*ch, p); }});
      for (int i = 0; i < subs; ++i)
        specs.push_back({"subscriber" + std::to_string(i + 1), cpu(i + 1),
                         [=] { return run_channel_subscriber(*ch, i, p); }});
    }
    std::vector<child_report> reports;
    std::string error;
    if (!run_children(specs, measurement_timeout, reports, error)) return error;
    // The slowest subscriber sets the rate at which everyone got everything.
    double rate = 0;
    std::int64_t cpu_total = 0;
    for (std::size_t i = 0; i < reports.size(); ++i) {
      cpu_total += reports[i].cpu_ns;
      if (i == 0) continue;
      const auto& r = reports[i];
      if (r.messages < 2 || r.last_ns <= r.first_ns)
        return specs[i].role + " counted " + std::to_string(r.messages) + " messages";
      if (r.messages != reports[0].messages)
        return specs[i].role + " counted " + std::to_string(r.messages) + " of " +
               std::to_string(reports[0].messages) + " messages";
      // From the first message to the end marker: `messages` arrivals after the first.
      const double mine = static_cast<double>(r.messages) * 1e9 / static_cast<double>(r.last_ns - r.first_ns);
      rate = i == 1 ? mine : std::min(rate, mine);
    }
    f.msgs_per_s = rate;
    f.bytes_per_s = rate * static_cast<double>(k.size);
    f.cpu_ns_per_msg = static_cast<double>(cpu_total) / static_cast<double>(std::max<std::uint64_t>(reports[0].messages, 1));
    f.rss_kib = peak_of(reports);
    return {};
  }

  // Ping-pong while a background publisher sends to the pong side at about half
  // of what this transport carried 1->1 in this run.
  std::string loaded(planned_case& c, figures& f) {
    const double rate = 0.5 * capacity(c);
    if (rate <= 0) return "no capacity figure to pace the load";
    return pingpong(c, f, &rate);
  }

  double capacity(planned_case& c) {
    const auto& k = c.rec.key;
    for (const auto& other : cases_) {
      const auto& ok = other.rec.key;
      if (ok.what == workload::throughput && ok.transport == k.transport && ok.mode == k.mode && ok.size == k.size &&
          ok.subscribers == 1 && ok.payload == payload_kind::bytes && !other.rec.rounds.empty()) {
        std::vector<std::optional<double>> v;
        for (const auto& r : other.rec.rounds) v.push_back(r.msgs_per_s);
        return median(v).value_or(0);
      }
    }
    // Throughput was not part of this run: measure it once, unreported.
    auto& known = capacities_[k.transport + "/" + to_string(k.mode) + "/" + std::to_string(k.size)];
    if (known > 0) return known;
    planned_case probe = c;
    figures f;
    if (throughput(probe, 1, payload_kind::bytes, f).empty() && f.msgs_per_s) known = *f.msgs_per_s;
    return known;
  }

  static double peak_of(const std::vector<child_report>& reports) {
    std::int64_t m = 0;
    for (const auto& r : reports) m = std::max(m, r.hwm_kib);
    return static_cast<double>(m);
  }

  const bench_options& o_;
  std::ostream& progress_;
  run_result result_;
  std::vector<planned_case> cases_;
  std::vector<int> cpus_;
  std::map<std::string, double> capacities_;
  int rounds_ = 5;
  bool tty_ = false;
};

}  // namespace

std::vector<candidate> select_candidates(const std::vector<std::string>& names, bool have_zmq) {
  const auto all = all_candidates(have_zmq);
  if (names.empty()) return all;
  std::vector<std::string> wanted;
  for (const auto& n : names) {
    auto it = std::find_if(all.begin(), all.end(), [&](const candidate& c) { return c.name == n; });
    if (it == all.end()) {
      std::string known;
      for (const auto& c : all) known += (known.empty() ? "" : ", ") + c.name;
      throw std::invalid_argument("unknown transport '" + n + "'; this build has " + known);
    }
    wanted.push_back(n);
    if (it->kind == candidate_kind::bus) {
      wanted.push_back(it->baseline);
      wanted.push_back(it->peer);
      if (it->family == "shm") wanted.push_back("raw-spin");  // the floor of a busy-polling reader
    }
  }
  std::vector<candidate> out;
  for (const auto& c : all)
    if (std::find(wanted.begin(), wanted.end(), c.name) != wanted.end()) out.push_back(c);
  return out;
}

run_result run_bench(const bench_options& options, std::ostream& progress) {
  return runner(options, progress).run();
}

}  // namespace ipcbus::bench
