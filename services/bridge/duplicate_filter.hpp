// ipcbus::bridge::duplicate_filter — tells whether a frame that arrived from a
// peer was seen before.
//
// With transit forwarding, a frame can reach a bus by two paths (a triangle,
// any cycle of links). Each frame keeps the id of its origin bus, the id of the
// publisher there and that publisher's sequence number across every hop, so
// the three together name it. Per origin publisher the filter keeps the highest
// sequence seen and, for each of the `window` sequences up to it, the fewest
// hops a copy of it came with; a frame older than that window counts as seen
// (its copy by the faster path came long ago). The hops matter when the hop
// limit is shorter than a cycle: the copy that came the long way may arrive
// first and be too far gone to be passed on, while the copy that came the
// short way could still reach buses further off. So a later copy with fewer
// hops is passed on (not delivered here again); any other later copy is dropped.
// Hop counts from 254 up are taken as 254 (far beyond any hop limit in use).
// At most `max_origins` publishers are tracked: the one seen least recently is
// forgotten first, so memory stays bounded whatever peers send (a forgotten
// publisher's next frame is taken as new).
//
// Thread-safety: none; the bridge uses it on its io thread only.
#pragma once

#include <algorithm>
#include <array>
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

  enum class verdict {
    first,       // never seen: deliver here and pass on
    fewer_hops,  // seen, but this copy came by fewer hops than any before: pass on only
    copy,        // seen with as few hops or fewer: drop
  };

  // What to do with this copy of the frame, which came `hops` hops from its origin.
  verdict offer(std::uint64_t origin_bus, std::uint64_t publisher, std::uint64_t sequence, std::uint64_t hops) {
    const std::uint8_t mark = static_cast<std::uint8_t>(std::min<std::uint64_t>(hops, 254) + 1);  // 0: not seen
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
      h.age = std::prev(by_age_.end());
      it = origins_.emplace(key, h).first;
      it->second.marks[sequence % window] = mark;
      return verdict::first;
    }
    history& h = it->second;
    by_age_.splice(by_age_.end(), by_age_, h.age);  // seen now: the last to be forgotten
    if (sequence > h.highest) {
      // The sequences that leave the window give their slots to those that enter it.
      if (sequence - h.highest >= window)
        h.marks.fill(0);
      else
        for (std::uint64_t s = h.highest + 1; s <= sequence; ++s) h.marks[s % window] = 0;
      h.highest = sequence;
    } else if (h.highest - sequence >= window) {
      return verdict::copy;
    }
    std::uint8_t& seen = h.marks[sequence % window];
    if (seen == 0) {
      seen = mark;
      return verdict::first;
    }
    if (mark >= seen) return verdict::copy;
    seen = mark;
    return verdict::fewer_hops;
  }

  // True the first time this frame is offered, false for every later copy:
  // offer() for copies that all came the same number of hops.
  bool first_time(std::uint64_t origin_bus, std::uint64_t publisher, std::uint64_t sequence) {
    return offer(origin_bus, publisher, sequence, 0) == verdict::first;
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
    // Per sequence s in (highest - window, highest], at s % window: 0 when
    // not seen, else 1 + the fewest hops a copy came with.
    std::array<std::uint8_t, window> marks{};
    std::list<origin>::iterator age;
  };
  std::size_t max_origins_;
  std::unordered_map<origin, history, origin_hash> origins_;
  std::list<origin> by_age_;  // front: seen least recently
};

}  // namespace ipcbus::bridge
