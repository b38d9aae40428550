// A mutex for the publish path: one atomic instruction to lock and one to
// unlock when nobody else wants it, spinning briefly and then sleeping on a
// (process-private) futex when somebody does.
//
// Why not std::mutex: every publish takes two locks (the publisher's and its
// endpoint's), nearly always uncontended, and glibc's pthread_mutex_lock and
// unlock cost about 30 and 25 instructions each for the mutex kinds, robust
// and priority flags it checks first (callgrind, 64 B shm publish: 110 of
// ~1 000 instructions). This is the three-state futex mutex: 0 free, 1 held,
// 2 held and somebody may sleep on it.
//
// light_recursive_mutex is the same, taken again by the thread that holds it
// (a subscriber's handler may close its own subscriber): std::recursive_mutex
// cost 90 instructions per delivered message.
//
// Meets Lockable (lock, try_lock, unlock): std::unique_lock and
// std::lock_guard take it; a condition variable needs std::condition_variable_any.
// Neither is robust: for threads of one process only, never in shared memory.
// light_mutex is not recursive: its holder locking it again deadlocks.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <thread>

#include "ipcbus/detail/cpu_relax.hpp"

namespace ipcbus::detail {

class light_mutex {
 public:
  light_mutex() = default;
  light_mutex(const light_mutex&) = delete;
  light_mutex& operator=(const light_mutex&) = delete;

  void lock() {
    std::uint32_t expected = free;
    if (state_.compare_exchange_strong(expected, held, std::memory_order_acquire, std::memory_order_relaxed)) return;
    lock_contended();
  }

  bool try_lock() {
    std::uint32_t expected = free;
    return state_.compare_exchange_strong(expected, held, std::memory_order_acquire, std::memory_order_relaxed);
  }

  void unlock() {
    if (state_.exchange(free, std::memory_order_release) == contended) wake_one();
  }

  // Hints, read without ordering. has_sleepers: somebody may sleep waiting for
  // it (also true, once, after the holder itself took it contended).
  bool has_sleepers() const { return state_.load(std::memory_order_relaxed) == contended; }
  bool is_locked() const { return state_.load(std::memory_order_relaxed) != free; }

 private:
  static constexpr std::uint32_t free = 0;
  static constexpr std::uint32_t held = 1;
  static constexpr std::uint32_t contended = 2;
  // Critical sections on the publish path last well under a microsecond:
  // a holder on another core is usually gone within this many pauses.
  static constexpr int spins = 100;

  void lock_contended() {
    for (int i = 0; i < spins; ++i) {
      cpu_relax();
      std::uint32_t expected = free;
      if (state_.load(std::memory_order_relaxed) == free &&
          state_.compare_exchange_weak(expected, held, std::memory_order_acquire, std::memory_order_relaxed))
        return;
    }
    // From here on the lock is taken as `contended`, so that our unlock wakes
    // whoever else went to sleep meanwhile.
    while (state_.exchange(contended, std::memory_order_acquire) != free)
      (void)::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&state_), FUTEX_WAIT_PRIVATE, contended,
                      nullptr, nullptr, 0);
  }

  void wake_one() {
    (void)::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&state_), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr,
                    0);
  }

  static_assert(sizeof(std::atomic<std::uint32_t>) == 4, "futex words must be plain 32-bit");
  std::atomic<std::uint32_t> state_{free};
};

// The owner is kept beside the mutex: a thread only ever finds its own id
// there if it stored it itself, so a relaxed load is enough to tell.
class light_recursive_mutex {
 public:
  light_recursive_mutex() = default;
  light_recursive_mutex(const light_recursive_mutex&) = delete;
  light_recursive_mutex& operator=(const light_recursive_mutex&) = delete;

  void lock() {
    if (owned()) {
      ++depth_;
      return;
    }
    mutex_.lock();
    take();
  }

  bool try_lock() {
    if (owned()) {
      ++depth_;
      return true;
    }
    if (!mutex_.try_lock()) return false;
    take();
    return true;
  }

  void unlock() {
    if (--depth_ > 0) return;
    owner_.store(std::thread::id{}, std::memory_order_relaxed);  // the id of no thread
    mutex_.unlock();
  }

 private:
  bool owned() const { return owner_.load(std::memory_order_relaxed) == std::this_thread::get_id(); }
  void take() {
    owner_.store(std::this_thread::get_id(), std::memory_order_relaxed);
    depth_ = 1;
  }

  light_mutex mutex_;
  std::atomic<std::thread::id> owner_{};
  unsigned depth_ = 0;  // only the owner touches it
};

}  // namespace ipcbus::detail
