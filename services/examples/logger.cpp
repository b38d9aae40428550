// ipcbus-example-logger — the end of the demo pipeline: counts and times everything.
//
//   ipcbus-example-logger --config demo.yaml --report report.json
//
// Subscribes to sensors/#, alerts/# and metrics/# (one typed subscriber per topic
// family) and keeps, per topic: messages delivered, messages lost (the gaps the
// bus reports in MessageInfo::lost_before — under drop_oldest these are the
// drops) and latency (receive time minus publish time). On SIGINT/SIGTERM it
// writes an ipcbus.demo.Summary as JSON to the report file and exits 0.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <vector>

#include <CLI/CLI.hpp>
#include <google/protobuf/util/json_util.h>

#include "demo.pb.h"
#include "ipcbus/bus.hpp"
#include "service_support.hpp"

namespace {

using ipcbus::examples::say;

std::int64_t realtime_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Latencies of one topic. Memory is bounded for a logger that runs for days:
// past `capacity` samples, reservoir sampling (algorithm R) keeps a uniform
// sample of everything seen, which is all percentiles need.
class latency_sample {
 public:
  void add(double micros) {
    ++seen_;
    if (values_.size() < capacity) {
      values_.push_back(micros);
    } else if (const auto slot = std::uniform_int_distribution<std::uint64_t>(0, seen_ - 1)(random_);
               slot < capacity) {
      values_[slot] = micros;
    }
  }
  // q in [0, 1]; nearest-rank percentile, 0 when empty.
  double percentile(double q) const {
    if (values_.empty()) return 0;
    std::vector<double> sorted = values_;
    std::sort(sorted.begin(), sorted.end());
    const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
    return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
  }

 private:
  static constexpr std::size_t capacity = 100000;
  std::vector<double> values_;
  std::uint64_t seen_ = 0;
  std::mt19937_64 random_{42};
};

struct topic_record {
  std::string transport;
  std::uint64_t delivered = 0;
  std::uint64_t lost = 0;
  latency_sample latency;
};

// Every callback runs on the bus's io thread, one at a time, and the report is
// written only after the bus has shut down (no callback runs after that), so
// this map needs no lock.
std::map<std::string, topic_record> records;

void record(const ipcbus::MessageInfo& info) {
  auto& r = records[info.topic];
  r.transport = info.transport;
  ++r.delivered;
  r.lost += info.lost_before;
  r.latency.add(static_cast<double>(info.age().count()) / 1000.0);
}

bool write_report(const std::string& file, std::int64_t started_ns) {
  ipcbus::demo::Summary summary;
  summary.set_started_ns(started_ns);
  summary.set_finished_ns(realtime_ns());
  for (const auto& [topic, r] : records) {
    auto* t = summary.add_topics();
    t->set_topic(topic);
    t->set_transport(r.transport);
    t->set_delivered(r.delivered);
    t->set_lost(r.lost);
    t->set_latency_p50_us(r.latency.percentile(0.50));
    t->set_latency_p90_us(r.latency.percentile(0.90));
    t->set_latency_p99_us(r.latency.percentile(0.99));
    t->set_latency_max_us(r.latency.percentile(1.0));
  }
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;  // a 0 is a result too
  options.preserve_proto_field_names = true;
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(summary, &json, options).ok()) return false;
  // Written next to the target and renamed: a reader never sees half a report.
  const std::string temporary = file + ".partial";
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << json;
    if (!out.flush()) return false;
  }
  return std::rename(temporary.c_str(), file.c_str()) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ipcbus demo logger: per-topic counts, losses and latency"};
  std::string config_file, report_file;
  app.add_option("--config", config_file, "bus configuration (YAML)")->check(CLI::ExistingFile);
  app.add_option("--report", report_file, "where to write the JSON report on exit")->required();
  if (const auto status = ipcbus::examples::parse_command_line(app, argc, argv)) return *status;
  const std::string who = "logger";

  try {
    const std::int64_t started_ns = realtime_ns();
    ipcbus::Bus bus(ipcbus::examples::options_from(config_file));
    // One typed subscriber per topic family: the type is part of the contract.
    auto readings = bus.subscribe<ipcbus::demo::Reading>(
        "sensors/#", [](const ipcbus::demo::Reading&, const ipcbus::MessageInfo& info) { record(info); });
    auto alerts = bus.subscribe<ipcbus::demo::Alert>(
        "alerts/#", [](const ipcbus::demo::Alert&, const ipcbus::MessageInfo& info) { record(info); });
    auto metrics = bus.subscribe<ipcbus::demo::Reading>(
        "metrics/#", [](const ipcbus::demo::Reading&, const ipcbus::MessageInfo& info) { record(info); });
    say(who, "subscribed to sensors/#, alerts/#, metrics/#");

    ipcbus::examples::notify_ready();
    bus.run_until_signal();  // returns after SIGINT/SIGTERM, subscribers closed

    if (!write_report(report_file, started_ns)) {
      say(who, "error: cannot write report " + report_file);
      return 1;
    }
    std::uint64_t total = 0;
    for (const auto& [topic, r] : records) total += r.delivered;
    say(who, "stopped: " + std::to_string(total) + " messages on " + std::to_string(records.size()) +
                 " topics, report in " + report_file);
    return 0;
  } catch (const std::exception& e) {
    say(who, std::string("error: ") + e.what());
    return 1;
  }
}
