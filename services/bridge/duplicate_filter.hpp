// ipcbus::bridge::duplicate_filter — tells whether a frame that arrived from a
// peer was seen before.
//
// With transit forwarding, a frame can reach a bus by two paths (a triangle,
// any cycle of links). Each frame keeps the id of its origin bus, the id of the
// publisher there and that publisher's sequence number across every hop, so
// the three together name it. Per origin publisher the filter keeps the highest
// sequence seen and a bitmap of the `window` sequences below it; a frame older
// than that window counts as seen (its copy by the faster path came long ago).
// At most `max_origins` publishers are tracked: the one seen least recently is
// forgotten first, so memory stays bounded whatever peers send (a forgotten
// publisher's next frame is taken as new).
//
// Thread-safety: none; the bridge uses it on its io thread only.
#pragma once

#include <bitset>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <list>
#include <unordered_map>

namespace ipcbus::bridge {

class duplicate_filter {
 public:
  static constexpr std::uint64_t window = 256;

  explicit duplicate_filter(std::size_t max_origins = 4096) : max_origins_(max_origins == 0 ? 1 : max_origins) {}

  // True the first time this frame is offered, false for every later copy.
  bool first_time(std::uint64_t origin_bus, std::uint64_t publisher, std::uint64_t sequence) {
    const origin key{origin_bus, publisher};
    auto it = origins_.find(key);
    if (it == origins_.end()) {
      if (origins_.size() >= max_origins_) {
        origins_.erase(by_age_.front());
        by_age_.pop_front();
      }
      by_age_.push_back(key);
      history h;
      h.highest = sequence;
      h.seen.set(0);
      h.age = std::prev(by_age_.end());
      origins_.emplace(key, h);
      return true;
    }
    history& h = it->second;
    by_age_.splice(by_age_.end(), by_age_, h.age);  // seen now: the last to be forgotten
    if (sequence > h.highest) {
      const std::uint64_t ahead = sequence - h.highest;
      if (ahead >= window)
        h.seen.reset();
      else
        h.seen <<= ahead;
      h.seen.set(0);
      h.highest = sequence;
      return true;
    }
    const std::uint64_t behind = h.highest - sequence;
    if (behind >= window || h.seen.test(behind)) return false;
    h.seen.set(behind);
    return true;
  }

  std::size_t tracked() const { return origins_.size(); }

 private:
  struct origin {
    std::uint64_t bus, publisher;
    bool operator==(const origin&) const = default;
  };
  struct origin_hash {
    std::size_t operator()(const origin& o) const noexcept {
      return std::hash<std::uint64_t>{}(o.bus ^ (o.publisher * 0x9e3779b97f4a7c15ull));
    }
  };
  struct history {
    std::uint64_t highest = 0;
    std::bitset<window> seen;  // bit i: sequence highest - i was seen
    std::list<origin>::iterator age;
  };
  std::size_t max_origins_;
  std::unordered_map<origin, history, origin_hash> origins_;
  std::list<origin> by_age_;  // front: seen least recently
};

}  // namespace ipcbus::bridge
