#include "bench_json.hpp"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <system_error>

namespace ipcbus::bench {
namespace {

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

// Nanoseconds and KiB as integers, rates with one decimal.
std::string number(double v, bool integral) {
  if (!std::isfinite(v)) return "0";
  char buf[64];
  if (integral)
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(std::llround(v)));
  else
    std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

void add_figures(std::ostringstream& out, const figures& f) {
  auto field = [&](const char* key, const std::optional<double>& v, bool integral) {
    if (v) out << ", " << quoted(key) << ": " << number(*v, integral);
  };
  field("p50_ns", f.p50_ns, true);
  field("p99_ns", f.p99_ns, true);
  field("p999_ns", f.p999_ns, true);
  field("max_ns", f.max_ns, true);
  field("msgs_per_s", f.msgs_per_s, false);
  field("bytes_per_s", f.bytes_per_s, false);
  field("cpu_ns_per_msg", f.cpu_ns_per_msg, true);
  field("rss_kib", f.rss_kib, true);
}

void add_key(std::ostringstream& out, const case_key& k) {
  out << "\"transport\": " << quoted(k.transport) << ", \"workload\": " << quoted(to_string(k.what))
      << ", \"size\": " << k.size << ", \"mode\": " << quoted(to_string(k.mode))
      << ", \"subscribers\": " << k.subscribers << ", \"payload\": " << quoted(to_string(k.payload));
}

void write_file(const std::filesystem::path& file, const std::string& text) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw std::system_error(errno ? errno : EIO, std::generic_category(), "cannot write " + file.string());
}

}  // namespace

void write_json(const std::filesystem::path& file, const run_result& run) {
  std::ostringstream out;
  out << "[";
  bool first = true;
  for (const auto& r : run.records) {
    if (r.rounds.empty()) continue;  // every round failed: nothing to report
    out << (first ? "\n  {" : ",\n  {");
    first = false;
    add_key(out, r.key);
    add_figures(out, r.median);
    out << ", \"rounds\": " << r.rounds.size() << "}";
  }
  out << "\n]\n";
  write_file(file, out.str());
}

void write_samples(const std::filesystem::path& file, const run_result& run) {
  std::ostringstream out;
  out << "{\n  \"machine\": {";
  for (std::size_t i = 0; i < run.machine.size(); ++i)
    out << (i ? ", " : "") << quoted(run.machine[i].first) << ": " << quoted(run.machine[i].second);
  out << "},\n  \"records\": [";
  for (std::size_t i = 0; i < run.records.size(); ++i) {
    const auto& r = run.records[i];
    out << (i ? ",\n" : "\n") << "    {";
    add_key(out, r.key);
    out << ",\n     \"median\": {\"rounds\": " << r.rounds.size();
    add_figures(out, r.median);
    out << "},\n     \"per_round\": [";
    for (std::size_t j = 0; j < r.rounds.size(); ++j) {
      out << (j ? ", " : "") << "{\"round\": " << j + 1;
      add_figures(out, r.rounds[j]);
      out << "}";
    }
    out << "],\n     \"errors\": [";
    for (std::size_t j = 0; j < r.errors.size(); ++j) out << (j ? ", " : "") << quoted(r.errors[j]);
    out << "]}";
  }
  out << "\n  ]\n}\n";
  write_file(file, out.str());
}

}  // namespace ipcbus::bench
