#include "bench_report.hpp"

#include <algorithm>
#include <cstdio>
#include <ostream>
#include <vector>

namespace ipcbus::bench {
namespace {

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

const candidate* find_candidate(const run_result& run, const std::string& name) {
  for (const auto& c : run.candidates)
    if (c.name == name) return &c;
  return nullptr;
}

std::string ratio_text(const run_result& run, const record& r, const std::string& other) {
  if (other.empty() || r.key.what == workload::loaded) return "";
  const record* o = counterpart(run, r, other);
  const auto mine = headline(r);
  const auto theirs = o ? headline(*o) : std::nullopt;
  if (!mine || !theirs || *theirs <= 0) return "";
  return fixed(*mine / *theirs, 2) + "x";
}

void print_rows(std::ostream& out, const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (const auto& row : rows)
    for (std::size_t i = 0; i < row.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], row[i].size());
    }
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      // Names left-aligned, numbers right-aligned.
      const std::string pad(width[i] - row[i].size(), ' ');
      line += i < 2 ? row[i] + pad : pad + row[i];
      if (i + 1 < row.size()) line += "  ";
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out << line << '\n';
  }
}

std::string group_title(const case_key& k) {
  std::string t = to_string(k.what) + ", " + format_size(k.size);
  if (k.what == workload::throughput) t += ", 1->" + std::to_string(k.subscribers) + ", " + to_string(k.payload);
  if (is_batch(k.payload)) t += " (publish_batch, " + std::to_string(batch_size) + " a call)";
  if (k.what == workload::pingpong && k.payload == payload_kind::loan) t += ", through loans (shm)";
  if (k.what == workload::loaded) t += ", background publisher at ~50% of 1->1 capacity";
  return t;
}

}  // namespace

std::string baseline_of(const candidate& c, wait_mode mode) {
  if (c.kind != candidate_kind::bus) return "";
  if (c.family == "shm") return mode == wait_mode::spin ? "raw-spin" : "raw-futex";
  return c.baseline;
}

std::string zmq_peer_of(const candidate& c) { return c.kind == candidate_kind::bus ? c.peer : ""; }

std::optional<double> headline(const record& r) {
  return r.key.what == workload::throughput ? r.median.msgs_per_s : r.median.p50_ns;
}

const record* counterpart(const run_result& run, const record& r, const std::string& transport) {
  for (const auto& o : run.records)
    if (o.key.transport == transport && o.key.what == r.key.what && o.key.size == r.key.size &&
        o.key.subscribers == r.key.subscribers && o.key.payload == payload_kind::bytes)
      return &o;
  return nullptr;
}

std::string format_ns(double ns) {
  if (ns < 1e3) return fixed(ns, 0) + " ns";
  if (ns < 1e6) return fixed(ns / 1e3, ns < 1e4 ? 2 : 1) + " us";
  return fixed(ns / 1e6, 2) + " ms";
}

std::string format_rate(double per_s) {
  if (per_s >= 1e6) return fixed(per_s / 1e6, 2) + " M";
  if (per_s >= 1e3) return fixed(per_s / 1e3, 1) + " k";
  return fixed(per_s, 0);
}

std::string format_size(std::size_t bytes) {
  if (bytes >= (1u << 20) && bytes % (1u << 20) == 0) return std::to_string(bytes >> 20) + " MiB";
  if (bytes >= 1024 && bytes % 1024 == 0) return std::to_string(bytes >> 10) + " KiB";
  return std::to_string(bytes) + " B";
}

void print_report(std::ostream& out, const run_result& run) {
  out << "ipcbus bench";
  for (const auto& [k, v] : run.machine) out << (k == "nproc" ? ": " : ", ") << k << " " << v;
  out << "\n";
  std::vector<std::vector<std::string>> rows;
  std::string current;
  auto opt = [](const std::optional<double>& v, auto fmt) { return v ? fmt(*v) : std::string("-"); };
  for (const auto& r : run.records) {
    const std::string title = group_title(r.key);
    if (title != current) {
      if (!rows.empty()) {
        print_rows(out, rows);
        rows.clear();
      }
      out << "\n" << title << "\n";
      rows.push_back({"transport", "mode", "p50", "p99", "p99.9", "max", "msgs/s", "MiB/s", "vs raw", "vs zmq",
                      "cpu/msg", "rss KiB"});
      current = title;
    }
    const candidate* c = find_candidate(run, r.key.transport);
    const auto& m = r.median;
    rows.push_back({r.key.transport + (r.errors.empty() ? "" : " (" + std::to_string(r.errors.size()) + " failed)"),
                    to_string(r.key.mode), opt(m.p50_ns, format_ns), opt(m.p99_ns, format_ns),
                    opt(m.p999_ns, format_ns), opt(m.max_ns, format_ns), opt(m.msgs_per_s, format_rate),
                    opt(m.bytes_per_s, [](double v) { return fixed(v / (1 << 20), 1); }),
                    c ? ratio_text(run, r, baseline_of(*c, r.key.mode)) : "",
                    c ? ratio_text(run, r, zmq_peer_of(*c)) : "", opt(m.cpu_ns_per_msg, format_ns),
                    opt(m.rss_kib, [](double v) { return fixed(v, 0); })});
  }
  if (!rows.empty()) print_rows(out, rows);
  out << "\nLatency is one-way (round trip / 2, two processes); each figure is the median over rounds.\n"
         "vs raw / vs zmq: p50 latency ratio (above 1: slower) or msgs/s ratio (below 1: fewer) against the\n"
         "raw mechanism under the transport and against ZeroMQ (zmq-ipc for local transports, zmq-tcp for tcp).\n"
         "Throughput: messages every subscriber received per second (the slowest one). cpu/msg: CPU time of\n"
         "all participants per message; rss: the largest VmHWM of the participants.\n";
  for (const auto& n : run.notes) out << "note: " << n << '\n';
  if (run.failures) out << "failed measurements: " << run.failures << " (see the messages above)\n";
  if (run.interrupted) out << "interrupted: the figures above are from the rounds that completed\n";
}

}  // namespace ipcbus::bench
