// The publish-time clock (bus/src/wall_clock.cpp) against CLOCK_REALTIME.
#define BOOST_TEST_MODULE wall_clock
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <thread>
#include <vector>

#include "ipcbus/detail/wall_clock.hpp"

using ipcbus::detail::wall_clock_ns;
using ipcbus::detail::wall_clock_ns_exact;

namespace {

// Reads the clock between two real reads for `span`; returns how far the
// furthest read fell outside its bracket, in ns (0: every read within).
std::int64_t worst_outside(std::chrono::milliseconds span) {
  std::int64_t worst = 0;
  const auto end = std::chrono::steady_clock::now() + span;
  while (std::chrono::steady_clock::now() < end) {
    for (int i = 0; i < 1000; ++i) {
      const std::int64_t before = wall_clock_ns_exact();
      const std::int64_t t = wall_clock_ns();
      const std::int64_t after = wall_clock_ns_exact();
      worst = std::max({worst, before - t, t - after});
    }
  }
  return worst;
}

}  // namespace

BOOST_AUTO_TEST_CASE(stays_within_a_few_microseconds_of_the_real_clock) {
  BOOST_TEST_MESSAGE("extrapolates with the TSC: " << (ipcbus::detail::wall_clock_uses_tsc() ? "yes" : "no"));
  // Long enough to measure the rate (20 ms) and to extrapolate across many resyncs.
  const std::int64_t worst = worst_outside(std::chrono::milliseconds(300));
  BOOST_TEST_MESSAGE("furthest outside its bracket: " << worst << " ns");
  BOOST_TEST(worst <= 5'000, "a read fell " << worst << " ns outside the real clock around it");
}

BOOST_AUTO_TEST_CASE(every_thread_keeps_its_own_extrapolation) {
  std::vector<std::int64_t> worst(2, 0);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < worst.size(); ++i)
    threads.emplace_back([&, i] { worst[i] = worst_outside(std::chrono::milliseconds(150)); });
  for (auto& t : threads) t.join();
  for (const auto w : worst) BOOST_TEST(w <= 5'000, "a read fell " << w << " ns outside the real clock around it");
}
