// ipcbus-example-filter — the middle of the demo pipeline.
//
//   ipcbus-example-filter --config demo.yaml --threshold 0.9 [--wait-subscribers 1]
//
// Subscribes to every sensor (sensors/*/reading). Each reading above the
// threshold becomes an Alert on alerts/high; every reading is also forwarded on
// metrics/filtered, so that one process both consumes and produces, over
// different transports and QoS (see demo.yaml).
#include <atomic>
#include <chrono>
#include <sstream>

#include <CLI/CLI.hpp>

#include "demo.pb.h"
#include "ipcbus/bus.hpp"
#include "service_support.hpp"

int main(int argc, char** argv) {
  using namespace std::chrono_literals;
  using ipcbus::examples::say;
  CLI::App app{"ipcbus demo filter: sensors/*/reading -> alerts/high + metrics/filtered"};
  std::string config_file;
  double threshold = 0.9;
  std::size_t wait_subscribers = 0;
  app.add_option("--config", config_file, "bus configuration (YAML)")->check(CLI::ExistingFile);
  app.add_option("--threshold", threshold, "readings above this raise an alert");
  app.add_option("--wait-subscribers", wait_subscribers,
                 "wait (up to 10 s) for this many subscribers on each output topic before subscribing");
  if (const auto status = ipcbus::examples::parse_command_line(app, argc, argv)) return *status;
  const std::string who = "filter";

  try {
    ipcbus::Bus bus(ipcbus::examples::options_from(config_file));
    auto alerts = bus.advertise<ipcbus::demo::Alert>("alerts/high");
    auto metrics = bus.advertise<ipcbus::demo::Reading>("metrics/filtered");
    // Outputs first, and wait for their readers: a reading consumed before the
    // logger listens would turn into an alert nobody sees.
    if (wait_subscribers > 0 && !(alerts.wait_for_subscribers(wait_subscribers, 10s) &&
                                  metrics.wait_for_subscribers(wait_subscribers, 10s))) {
      say(who, "gave up: fewer than " + std::to_string(wait_subscribers) + " subscribers after 10 s");
      return 1;
    }

    // The callback runs on the bus's io thread, one message at a time, so the
    // counters need no lock; they are atomics only because main() reads them.
    std::atomic<std::uint64_t> readings{0}, raised{0}, failed{0};
    ipcbus::demo::Alert alert;  // reused between calls, like the bus reuses the Reading
    auto sub = bus.subscribe<ipcbus::demo::Reading>(
        "sensors/*/reading", [&](const ipcbus::demo::Reading& r, const ipcbus::MessageInfo&) {
          ++readings;
          std::error_code ec;
          metrics.publish(r, ec);  // drop_oldest: never blocks this thread
          if (ec && ec != ipcbus::errc::closed) ++failed;
          if (r.value() > threshold) {
            alert.set_sensor(r.sensor());
            alert.set_value(r.value());
            std::ostringstream reason;
            reason << "reading #" << r.index() << " above threshold " << threshold;
            alert.set_reason(reason.str());
            alerts.publish(alert, ec);  // reliable: may wait for the logger, never loses
            if (!ec) ++raised;
            else if (ec != ipcbus::errc::closed) ++failed;
          }
        });
    std::ostringstream what;
    what << "forwarding sensors/*/reading to metrics/filtered, and values > " << threshold << " to alerts/high";
    say(who, what.str());

    ipcbus::examples::notify_ready();
    // On SIGTERM: drain both outputs to the logger, then stop reading sensors.
    bus.run_until_signal();
    say(who, "stopped: " + std::to_string(readings.load()) + " readings in, " + std::to_string(raised.load()) +
                 " alerts out" + (failed ? ", " + std::to_string(failed.load()) + " publishes failed" : std::string{}));
    return 0;
  } catch (const std::exception& e) {
    say(who, std::string("error: ") + e.what());
    return 1;
  }
}
