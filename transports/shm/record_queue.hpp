// A FIFO in a power-of-two array, for ring_publisher's index of the records
// in its ring (shm_publisher.hpp).
//
// Thread-safety: none; the publisher uses it under its lock.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <vector>

namespace ipcbus::transport::shm {

// The records a publisher keeps track of, oldest first: a queue in a
// power-of-two array. std::deque did the same job at about 40 instructions per
// publish (its size() and back() walk node pointers); here each is a mask and
// an add. It grows by doubling and gives memory back once mostly empty.
template <typename T>
class record_queue {
 public:
  bool empty() const { return count_ == 0; }
  std::size_t size() const { return count_; }
  std::size_t capacity() const { return items_.size(); }
  T& operator[](std::size_t i) { return items_[(first_ + i) & mask_]; }
  const T& operator[](std::size_t i) const { return items_[(first_ + i) & mask_]; }
  T& front() { return (*this)[0]; }
  const T& front() const { return (*this)[0]; }
  T& back() { return (*this)[count_ - 1]; }
  // Makes room for one more item now, so that the next push_back neither
  // allocates nor throws. Throws std::bad_alloc as push_back would.
  void reserve_one() {
    if (count_ == items_.size()) resize(std::max<std::size_t>(initial, 2 * items_.size()));
  }
  void push_back(const T& item) {
    reserve_one();
    items_[(first_ + count_) & mask_] = item;
    ++count_;
  }
  void pop_front() {
    first_ = (first_ + 1) & mask_;
    --count_;
  }
  // The first index whose item is not `less` than `key`, as std::lower_bound.
  template <typename K, typename Less>
  std::size_t lower_bound(const K& key, Less less) const {
    std::size_t lo = 0, n = count_;
    while (n > 0) {
      const std::size_t half = n / 2;
      if (less((*this)[lo + half], key)) {
        lo += half + 1;
        n -= half + 1;
      } else {
        n = half;
      }
    }
    return lo;
  }
  // Gives back most of a large array when an eighth of it is in use. Arrays
  // of up to kept_size items stay: a publisher's index swings between a few
  // and a few hundred records from one trim to the next, and shrinking on
  // every swing cost a reallocation each time.
  void shrink() {
    if (items_.size() > kept_size && count_ < items_.size() / 8)
      resize(std::bit_ceil(std::max<std::size_t>(kept_size, 2 * count_)));
  }

 private:
  static constexpr std::size_t initial = 64;
  static constexpr std::size_t kept_size = 4096;
  void resize(std::size_t capacity) {  // a power of two, at least count_
    std::vector<T> items(capacity);
    for (std::size_t i = 0; i < count_; ++i) items[i] = (*this)[i];
    items_ = std::move(items);
    first_ = 0;
    mask_ = capacity - 1;
  }
  std::vector<T> items_;
  std::size_t first_ = 0;
  std::size_t count_ = 0;
  std::size_t mask_ = 0;
};

}  // namespace ipcbus::transport::shm
