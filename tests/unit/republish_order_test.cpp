// The bridge's republish_order (services/bridge/republish_order.hpp): workers
// on several threads take their turns in the order the places were taken,
// whatever order they get there in, and a stopped wait does not hold up the
// places after it.
#define BOOST_TEST_MODULE republish_order
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "republish_order.hpp"

using ipcbus::bridge::republish_order;
using namespace std::chrono_literals;

BOOST_AUTO_TEST_CASE(places_are_served_in_the_order_taken_across_threads) {
  republish_order order;
  constexpr int workers = 4, per_worker = 200;
  // Places dealt round the workers in a shuffled pattern, as frames of one
  // topic come in over several links; each worker takes its own in order.
  std::vector<std::vector<std::uint64_t>> queues(workers);
  std::mt19937 rng(11);
  for (int i = 0; i < workers * per_worker; ++i) queues[rng() % workers].push_back(order.take());
  std::mutex mutex;
  std::vector<std::uint64_t> served;
  std::atomic<int> refused{0};  // Boost.Test's assertions are for the main thread only
  // Broken ordering shows as a failure, not as a test that never ends.
  const auto give_up_at = std::chrono::steady_clock::now() + 20s;
  const auto too_long = [&] { return std::chrono::steady_clock::now() > give_up_at; };
  std::vector<std::thread> threads;
  for (int w = 0; w < workers; ++w)
    threads.emplace_back([&, w] {
      for (const auto place : queues[w]) {
        if (!order.wait_turn(place, too_long)) ++refused;
        {
          std::lock_guard lock(mutex);
          served.push_back(place);
        }
        order.done(place);
      }
    });
  for (auto& t : threads) t.join();
  BOOST_TEST(refused.load() == 0);
  std::vector<std::uint64_t> expected(workers * per_worker);
  std::iota(expected.begin(), expected.end(), 0);
  BOOST_TEST(served == expected, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(a_stopped_wait_returns_and_its_place_done_early_lets_the_others_go) {
  republish_order order;
  const auto first = order.take(), second = order.take(), third = order.take();
  // `second` gives up (its worker is stopping) while `first` is still out.
  std::atomic<bool> stop{false};
  std::atomic<int> second_result{-1};
  std::thread waiter([&] {
    second_result = order.wait_turn(second, [&] { return stop.load(); }) ? 1 : 0;
    order.done(second);  // out of turn: kept until `first` is done
  });
  std::this_thread::sleep_for(50ms);
  BOOST_TEST(second_result.load() == -1);  // still waiting: `first` is not done
  stop = true;
  waiter.join();
  BOOST_TEST(second_result.load() == 0);
  // `third` must wait for `first` only; `second` is done already.
  std::atomic<bool> third_served{false};
  const auto give_up_at = std::chrono::steady_clock::now() + 20s;
  std::thread last([&] {
    if (order.wait_turn(third, [&] { return std::chrono::steady_clock::now() > give_up_at; })) third_served = true;
    order.done(third);
  });
  std::this_thread::sleep_for(50ms);
  BOOST_TEST(!third_served.load());
  BOOST_TEST(order.wait_turn(first, nullptr));
  order.done(first);
  last.join();
  BOOST_TEST(third_served.load());
}

// The frame a place belongs to may be republished, dropped or lost to an
// exception: a place object gives its turn up whichever way it goes.
BOOST_AUTO_TEST_CASE(a_place_gives_its_turn_up_when_it_goes) {
  auto order = std::make_shared<republish_order>();
  std::atomic<bool> third_served{false};
  std::thread waiter;
  {
    republish_order::place first(order), second(order);
    republish_order::place moved = std::move(second);  // the moved-from one gives up nothing
    republish_order::place third(order);
    const auto give_up_at = std::chrono::steady_clock::now() + 20s;
    waiter = std::thread([&third_served, give_up_at, t = std::move(third)]() mutable {
      if (t.wait_turn([&] { return std::chrono::steady_clock::now() > give_up_at; })) third_served = true;
    });
    BOOST_TEST(first.wait_turn(nullptr));
    first.release();
    std::this_thread::sleep_for(50ms);
    BOOST_TEST(!third_served.load());  // `moved` still holds the second place
  }  // `moved` goes here without ever being waited for: the third place's turn comes
  waiter.join();
  BOOST_TEST(third_served.load());
}
