// ipcbus-example-sensor — publishes a simulated sensor's readings.
//
//   ipcbus-example-sensor --config demo.yaml --name imu --rate 200 [--wait-subscribers 2]
//
// Publishes ipcbus.demo.Reading on sensors/<name>/reading at <rate> Hz from a
// worker thread until SIGINT/SIGTERM. The value is a slow sine wave (period 2 s)
// with a little noise, so that a threshold near the top (the filter's 0.9) is
// crossed now and then. Which transport carries the topic is the config's business.
#include <atomic>
#include <chrono>
#include <cmath>
#include <functional>
#include <numbers>
#include <random>
#include <sstream>
#include <thread>

#include <CLI/CLI.hpp>

#include "demo.pb.h"
#include "ipcbus/bus.hpp"
#include "service_support.hpp"

namespace {

using namespace std::chrono_literals;
using ipcbus::examples::say;

std::int64_t realtime_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ipcbus demo sensor: publishes Reading on sensors/<name>/reading"};
  std::string config_file, name;
  double rate = 10;
  std::size_t wait_subscribers = 0;
  app.add_option("--config", config_file, "bus configuration (YAML)")->check(CLI::ExistingFile);
  app.add_option("--name", name, "sensor name, one topic segment")->required();
  app.add_option("--rate", rate, "readings per second")->check(CLI::Range(0.1, 100000.0));
  app.add_option("--wait-subscribers", wait_subscribers,
                 "wait (up to 10 s) for this many subscribers before the first reading");
  if (const auto status = ipcbus::examples::parse_command_line(app, argc, argv)) return *status;
  const std::string who = "sensor " + name;

  try {
    ipcbus::Bus bus(ipcbus::examples::options_from(config_file));
    auto pub = bus.advertise<ipcbus::demo::Reading>("sensors/" + name + "/reading");
    // Subscribers find publishers (not the other way round), a few ms after we
    // advertise; without this wait the first readings would reach nobody.
    if (wait_subscribers > 0 && !pub.wait_for_subscribers(wait_subscribers, 10s)) {
      say(who, "gave up: fewer than " + std::to_string(wait_subscribers) + " subscribers after 10 s");
      return 1;
    }
    std::ostringstream what;
    what << "publishing " << pub.topic() << " at " << rate << " Hz";
    say(who, what.str());

    // The worker owns the cadence; the main thread only waits for the signal.
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> sent{0}, failed{0};
    std::thread worker([&] {
      std::mt19937_64 random(std::hash<std::string>{}(name));
      std::normal_distribution<double> noise(0.0, 0.02);
      const auto period = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::chrono::duration<double>(1.0 / rate));
      const auto start = std::chrono::steady_clock::now();
      auto next = start;
      ipcbus::demo::Reading reading;  // reused: publish() serializes it at once
      reading.set_sensor(name);
      for (std::uint64_t index = 1; !stop; ++index) {
        const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        reading.set_index(index);
        reading.set_value(std::sin(std::numbers::pi * t) + noise(random));
        reading.set_taken_ns(realtime_ns());
        std::error_code ec;
        pub.publish(reading, ec);  // error_code form: a slow subscriber must not end the sensor
        if (!ec) ++sent;
        else if (!stop && ec != ipcbus::errc::closed) ++failed;
        next += period;  // sleep_until keeps the rate exact even when a publish was slow
        std::this_thread::sleep_until(next);
      }
    });

    ipcbus::examples::notify_ready();
    // Blocks until SIGINT/SIGTERM, then drains what is queued for the subscribers
    // and unregisters; publishes the worker makes meanwhile fail with `closed`.
    bus.run_until_signal();
    stop = true;
    worker.join();
    say(who, "stopped: published " + std::to_string(sent.load()) + " readings" +
                 (failed ? ", " + std::to_string(failed.load()) + " publishes failed" : std::string{}));
    return 0;
  } catch (const std::exception& e) {
    say(who, std::string("error: ") + e.what());
    return 1;
  }
}
