// The publish path's mutexes (bus/include/ipcbus/detail/light_mutex.hpp):
// mutual exclusion under contention, sleepers woken, recursion by the owner only.
#define BOOST_TEST_MODULE light_mutex
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "ipcbus/detail/light_mutex.hpp"

using ipcbus::detail::light_mutex;
using ipcbus::detail::light_recursive_mutex;

namespace {

// Threads add to a plain counter under the lock, with a read-modify-write
// split by a yield now and then so that an unprotected section would lose
// updates; also counts how many are inside at once.
template <typename Mutex>
void hammer(Mutex& m, int threads, int rounds, long& counter, int& most_inside) {
  std::atomic<int> inside{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (int i = 0; i < rounds; ++i) {
        std::lock_guard lock(m);
        const int now = inside.fetch_add(1) + 1;
        if (now > most_inside) most_inside = now;
        const long seen = counter;
        if (i % 64 == 0) std::this_thread::yield();  // holders that sleep make waiters sleep too
        counter = seen + 1;
        inside.fetch_sub(1);
      }
    });
  }
  for (auto& th : pool) th.join();
}

}  // namespace

using both_mutexes = boost::mpl::list<light_mutex, light_recursive_mutex>;

BOOST_AUTO_TEST_CASE_TEMPLATE(only_one_thread_holds_it_and_no_update_is_lost, Mutex, both_mutexes) {
  Mutex m;
  long counter = 0;
  int most_inside = 0;
  hammer(m, 4, 20000, counter, most_inside);
  BOOST_TEST(counter == 4 * 20000);
  BOOST_TEST(most_inside == 1);
}

BOOST_AUTO_TEST_CASE(a_sleeping_waiter_is_woken_by_unlock) {
  light_mutex m;
  m.lock();
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    std::lock_guard lock(m);
    got = true;
  });
  // Long past the spin phase: the waiter sleeps in the futex by now.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  BOOST_TEST(!got.load());
  m.unlock();
  waiter.join();
  BOOST_TEST(got.load());
  BOOST_TEST(m.try_lock());  // and it was left free
  m.unlock();
}

BOOST_AUTO_TEST_CASE(try_lock_fails_while_another_thread_holds_it) {
  light_mutex m;
  std::lock_guard lock(m);
  bool other = true;
  std::thread([&] { other = m.try_lock(); }).join();
  BOOST_TEST(!other);
}

BOOST_AUTO_TEST_CASE(the_owner_takes_the_recursive_one_again_and_others_wait_for_the_last_unlock) {
  light_recursive_mutex m;
  m.lock();
  m.lock();
  BOOST_TEST(m.try_lock());
  bool other = true;
  std::thread([&] { other = m.try_lock(); }).join();
  BOOST_TEST(!other);
  m.unlock();
  m.unlock();
  std::thread([&] { other = m.try_lock(); }).join();
  BOOST_TEST(!other);  // still held once
  m.unlock();
  std::thread([&] {
    other = m.try_lock();
    if (other) m.unlock();
  }).join();
  BOOST_TEST(other);
}

BOOST_AUTO_TEST_CASE(a_condition_variable_any_waits_on_the_recursive_one) {
  light_recursive_mutex m;
  std::condition_variable_any cv;
  bool ready = false;
  std::thread signaller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    {
      std::lock_guard lock(m);
      ready = true;
    }
    cv.notify_one();
  });
  std::unique_lock lock(m);
  BOOST_TEST(cv.wait_for(lock, std::chrono::seconds(10), [&] { return ready; }));
  lock.unlock();
  signaller.join();
}
