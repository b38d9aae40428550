// The shm publisher's record index (transports/shm/record_queue.hpp) against
// std::deque: the same answers through growth, wrap-around and shrinking.
#define BOOST_TEST_MODULE record_queue
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <random>

#include "record_queue.hpp"

using ipcbus::transport::shm::record_queue;

namespace {

bool same(const record_queue<std::uint64_t>& q, const std::deque<std::uint64_t>& d) {
  if (q.size() != d.size() || q.empty() != d.empty()) return false;
  for (std::size_t i = 0; i < d.size(); ++i)
    if (q[i] != d[i]) return false;
  return true;
}

}  // namespace

BOOST_AUTO_TEST_CASE(it_behaves_as_a_deque_through_growth_wrap_and_shrink) {
  record_queue<std::uint64_t> q;
  std::deque<std::uint64_t> d;
  std::mt19937_64 rng(7);
  std::uint64_t next = 0;
  // Phases: grow to thousands, churn around a steady size (the index wraps
  // many times), drain to a few (it shrinks), grow again.
  const struct {
    int steps;
    int push_percent;
  } phases[] = {{5000, 90}, {20000, 50}, {6000, 5}, {3000, 80}};
  for (const auto& phase : phases) {
    for (int step = 0; step < phase.steps; ++step) {
      if (d.empty() || static_cast<int>(rng() % 100) < phase.push_percent) {
        next += 1 + rng() % 3;  // increasing, as record positions are
        q.push_back(next);
        d.push_back(next);
      } else {
        q.pop_front();
        d.pop_front();
      }
      if (step % 97 == 0) q.shrink();
    }
    BOOST_TEST_REQUIRE(same(q, d));
    if (!d.empty()) {
      BOOST_TEST(q.front() == d.front());
      BOOST_TEST(q.back() == d.back());
    }
  }
}

BOOST_AUTO_TEST_CASE(lower_bound_finds_what_std_lower_bound_finds) {
  record_queue<std::uint64_t> q;
  std::deque<std::uint64_t> d;
  const auto less = [](std::uint64_t a, std::uint64_t b) { return a < b; };
  BOOST_TEST(q.lower_bound(5, less) == 0u);  // empty
  // Wrapped: pushed and popped past the array's end first.
  for (std::uint64_t v = 0; v < 100; ++v) q.push_back(v * 10), d.push_back(v * 10);
  for (int i = 0; i < 60; ++i) q.pop_front(), d.pop_front();
  for (std::uint64_t v = 100; v < 130; ++v) q.push_back(v * 10), d.push_back(v * 10);
  for (std::uint64_t key = 0; key <= 1400; ++key) {
    const auto expect = static_cast<std::size_t>(std::lower_bound(d.begin(), d.end(), key) - d.begin());
    BOOST_TEST_REQUIRE(q.lower_bound(key, less) == expect);
  }
}

BOOST_AUTO_TEST_CASE(it_shrinks_to_a_power_of_two_and_keeps_its_order) {
  // 65 536 slots with 3 000 in use, wrapped: shrinking must not pick 6 000 slots.
  record_queue<std::uint64_t> q;
  std::deque<std::uint64_t> d;
  for (std::uint64_t v = 0; v < 65536; ++v) q.push_back(v), d.push_back(v);
  for (int i = 0; i < 63536; ++i) q.pop_front(), d.pop_front();
  for (std::uint64_t v = 65536; v < 66536; ++v) q.push_back(v), d.push_back(v);
  BOOST_TEST_REQUIRE(q.capacity() == 65536u);
  q.shrink();
  BOOST_TEST(q.capacity() == 8192u);
  BOOST_TEST(same(q, d));
  for (std::uint64_t v = 66536; v < 80000; ++v) q.push_back(v), d.push_back(v);  // grows again from there
  BOOST_TEST(same(q, d));
  // Small arrays are kept whatever is in use.
  while (q.size() > 1) q.pop_front(), d.pop_front();
  q.shrink();
  const std::size_t small = q.capacity();
  BOOST_TEST(small == 4096u);
  q.shrink();
  BOOST_TEST(q.capacity() == small);
}

BOOST_AUTO_TEST_CASE(a_mostly_empty_queue_gives_its_memory_back) {
  record_queue<std::uint64_t> q;
  for (std::uint64_t v = 0; v < 100000; ++v) q.push_back(v);
  const std::size_t grown = q.capacity();
  BOOST_TEST(grown >= 100000u);
  while (q.size() > 10) q.pop_front();
  q.shrink();
  BOOST_TEST(q.capacity() <= 4096u);
  BOOST_TEST(q.front() == 99990u);
  BOOST_TEST(q.back() == 99999u);
}

// The shm publisher makes room before a record becomes visible to readers, so
// that recording it afterwards cannot fail: after reserve_one, push_back
// must not reallocate.
BOOST_AUTO_TEST_CASE(after_reserve_one_a_push_does_not_reallocate) {
  record_queue<std::uint64_t> q;
  for (std::uint64_t i = 0; i < 1000; ++i) {
    q.reserve_one();
    BOOST_TEST_REQUIRE(q.capacity() > q.size());
    const std::size_t capacity = q.capacity();
    const std::uint64_t* first = q.empty() ? nullptr : &q.front();
    q.push_back(i);
    BOOST_TEST_REQUIRE(q.capacity() == capacity);
    if (first) BOOST_TEST_REQUIRE(&q.front() == first);
    if (i % 3 == 0) q.pop_front();  // wraps around as well as filling up
  }
}
