#include "ipcbus/detail/wall_clock.hpp"

#include <chrono>
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

namespace ipcbus::detail {
namespace {

// How often a thread reads the real clock again, and over how long a span it
// measures the TSC's rate before it extrapolates at all.
constexpr std::int64_t resync_ns = 1'000'000;
constexpr std::int64_t measure_ns = 20'000'000;
// A rate that moved by more than this since the last read: the system clock
// was stepped (or the TSC is not what it claims). Measured again from there.
constexpr double rate_tolerance = 1e-3;

#if defined(__x86_64__)
bool has_word(const std::string& line, const std::string& word) {
  std::istringstream in(line);
  for (std::string w; in >> w;)
    if (w == word) return true;
  return false;
}

bool read_tsc_usable() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  bool flags_ok = false;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    flags_ok = has_word(line, "constant_tsc") && has_word(line, "nonstop_tsc");
    break;
  }
  if (!flags_ok) return false;
  std::ifstream source("/sys/devices/system/clocksource/clocksource0/current_clocksource");
  std::string name;
  source >> name;
  // The kernel keeps time with the TSC itself (directly or through kvm-clock):
  // it found the TSC stable. Any other source means it did not.
  return name == "tsc" || name == "kvm-clock";
}

bool tsc_usable() {
  static const bool usable = read_tsc_usable();
  return usable;
}

struct tsc_extrapolation {
  std::uint64_t anchor_tsc = 0;  // the last real read
  std::int64_t anchor_ns = 0;
  std::uint64_t base_tsc = 0;    // where the rate is measured from
  std::int64_t base_ns = 0;
  double ns_per_tick = 0;        // 0: not measured yet
  std::uint64_t resync_ticks = 0;
};
thread_local tsc_extrapolation state;

// A real read between two TSC reads; the TSC that goes with it is their
// middle. False when the two are far apart (the thread was preempted between
// them): the pair would be off by up to that much.
bool sample(std::uint64_t& tsc, std::int64_t& ns) {
  constexpr std::uint64_t widest = 6'000;  // ticks: 1.5-6 us at 1-4 GHz; a real read takes a few hundred
  for (int attempt = 0; attempt < 3; ++attempt) {
    const std::uint64_t before = __rdtsc();
    ns = wall_clock_ns_exact();
    const std::uint64_t after = __rdtsc();
    if (after >= before && after - before <= widest) {
      tsc = before + (after - before) / 2;
      return true;
    }
  }
  return false;
}

std::int64_t resync(tsc_extrapolation& s) {
  std::uint64_t tsc = 0;
  std::int64_t ns = 0;
  if (!sample(tsc, ns)) return ns;  // the real time, without learning from it
  const auto restart = [&] {
    s.base_tsc = tsc;
    s.base_ns = ns;
    s.ns_per_tick = 0;
  };
  if (s.base_ns == 0 || ns <= s.base_ns || tsc <= s.base_tsc) {
    restart();
  } else if (ns - s.base_ns >= measure_ns) {
    const double rate = static_cast<double>(ns - s.base_ns) / static_cast<double>(tsc - s.base_tsc);
    if (s.ns_per_tick > 0 && std::abs(rate / s.ns_per_tick - 1) > rate_tolerance) {
      restart();
    } else {
      s.ns_per_tick = rate;
      s.resync_ticks = static_cast<std::uint64_t>(static_cast<double>(resync_ns) / rate);
    }
  }
  s.anchor_tsc = tsc;
  s.anchor_ns = ns;
  return ns;
}
#endif

}  // namespace

std::int64_t wall_clock_ns_exact() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool wall_clock_uses_tsc() {
#if defined(__x86_64__)
  return tsc_usable();
#else
  return false;
#endif
}

std::int64_t wall_clock_ns() {
#if defined(__x86_64__)
  if (!tsc_usable()) return wall_clock_ns_exact();
  tsc_extrapolation& s = state;
  const std::uint64_t since = __rdtsc() - s.anchor_tsc;  // a TSC behind the anchor wraps: a real read
  if (s.ns_per_tick > 0 && since < s.resync_ticks)
    return s.anchor_ns + static_cast<std::int64_t>(static_cast<double>(since) * s.ns_per_tick);
  return resync(s);
#else
  return wall_clock_ns_exact();
#endif
}

}  // namespace ipcbus::detail
