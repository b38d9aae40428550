// The bus workloads: ping-pong, throughput and latency under load through the
// public API (Bus, Publisher<T>, Subscriber<T>), one process per participant.
//
// Every measurement runs in a private domain and runtime directory; which
// transport carries the bench topics comes from a config built in code
// (bench_config), exactly as a service would get it from YAML. The child bodies
// run in forked children (bench_process.hpp) and create their own Bus; every
// wait in them is bounded.
#pragma once

#include <atomic>
#include <filesystem>
#include <string>

#include "bench_channel.hpp"
#include "bench_options.hpp"
#include "ipcbus/config.hpp"

namespace ipcbus::bench {

// The settings the bench topics get on one transport in one wait mode. This is
// the one place where a transport+mode becomes configuration: spin mode makes
// the receivers busy-poll (busy_poll, honoured by shm://).
topic_settings bench_topic_settings(const std::string& transport, wait_mode mode);

// A config for the domain scratch_dir::domain() under `runtime_dir` with one
// rule, "bench/#", using bench_topic_settings.
config bench_config(const std::filesystem::path& runtime_dir, const std::string& transport, wait_mode mode);

struct bus_case {
  std::string transport;
  wait_mode mode = wait_mode::sleep;
  std::filesystem::path runtime_dir;
  // Ping-pong through loans: each side writes a 64-byte stamp into a loan of
  // the full size and publishes it, so nothing size-proportional is copied.
  bool loan = false;
};

// Shared (in a shared_block) between the ping side and the background publisher
// of the `loaded` workload.
struct load_control {
  std::atomic<int> running{0};  // the load publisher has a subscriber and publishes
  std::atomic<int> stop{0};     // the ping side is done
};

// Ping-pong over topics bench/ping and bench/pong with Bytes payloads. With
// `load`, the ping side starts once the load runs and stops it when done, and
// the pong side also subscribes to bench/load.
child_report run_bus_ping(const bus_case& c, const pingpong_plan& plan, load_control* load);
child_report run_bus_pong(const bus_case& c, const pingpong_plan& plan, bool with_load);

// Throughput on bench/data: the publisher publishes for plan.duration, then an
// end message; each subscriber counts until the end message.
child_report run_bus_publisher(const bus_case& c, const throughput_plan& plan, payload_kind payload);
child_report run_bus_subscriber(const bus_case& c, const throughput_plan& plan, payload_kind payload);

// The background publisher of `loaded`: Bytes of `size` on bench/load at
// `rate` messages per second until load.stop.
child_report run_bus_loader(const bus_case& c, std::size_t size, double rate, load_control& load);

}  // namespace ipcbus::bench
