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
// Losses. The filter also says how many of an origin publisher's frames this
// bus will never get, so that its republisher can show them to subscribers as
// a gap. A sequence is counted lost at the moment the filter commits to
// refusing it, never earlier: a frame counted lost is never delivered later,
// and one delivered is never counted lost. When an origin's frames have come
// by one peer only, each link carries them in order, so a jump in sequence is
// a loss at once: the missing sequences are counted and marked given up (a
// copy that turns up after all is refused as late). Once its frames have come
// by two peers (a cycle of links), a missing sequence may still come by the
// other path: it is counted only when it leaves the window unseen, since the
// filter refuses it from then on anyway. The first frame seen from a
// publisher is the baseline: what it sent before is not this bus's loss.
//
// Thread-safety: none; the bridge uses it on its io thread only.
#pragma once

#include <algorithm>
#include <array>
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

  enum class verdict {
    first,       // never seen: deliver here and pass on
    fewer_hops,  // seen, but this copy came by fewer hops than any before: pass on only
    copy,        // seen with as few hops or fewer: drop
  };

  // What to do with this copy of the frame, which came `hops` hops from its
  // origin through the peer bus `via`. With `lost`, the caller counts losses
  // (see Losses above) and vouches that each peer delivers an origin's frames
  // in order, as the bridge's links do: it gets how many of this publisher's
  // frames before this one were given up just now (non-zero only with
  // verdict::first). Without it frames may come in any order within the window.
  verdict offer(std::uint64_t origin_bus, std::uint64_t publisher, std::uint64_t sequence, std::uint64_t hops,
                std::uint64_t via = 0, std::uint64_t* lost = nullptr) {
    if (lost) *lost = 0;
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
      h.base = sequence;
      h.via = via;
      h.age = std::prev(by_age_.end());
      it = origins_.emplace(key, h).first;
      it->second.marks[sequence % window] = mark;
      return verdict::first;
    }
    history& h = it->second;
    by_age_.splice(by_age_.end(), by_age_, h.age);  // seen now: the last to be forgotten
    if (via != h.via) h.shared = true;  // for good: a second path may come back at any time
    if (sequence > h.highest) {
      const std::uint64_t n = advance(h, sequence, lost != nullptr && !h.shared);
      if (lost) *lost = n;
    } else if (h.highest - sequence >= window) {
      return verdict::copy;
    }
    std::uint8_t& seen = h.marks[sequence % window];
    if (seen == 0) {
      seen = mark;
      return verdict::first;
    }
    if (h.given_up[sequence % window] || mark >= seen) return verdict::copy;
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
    std::uint64_t base = 0;    // the first sequence seen: nothing before it is a loss here
    std::uint64_t via = 0;     // the peer the last copy came through
    bool shared = false;       // copies have come through more than one peer
    // Per sequence s in (highest - window, highest], at s % window: 0 when
    // not seen, else 1 + the fewest hops a copy came with; and whether it was
    // counted lost (its mark is then not 0 either: any copy is refused).
    std::array<std::uint8_t, window> marks{};
    std::bitset<window> given_up;
    std::list<origin>::iterator age;
  };

  // Moves the window up to `sequence` (> h.highest) and returns how many
  // sequences were given up on the way: those that leave the window unseen,
  // and with `skipped_are_lost` (one path, in order) also those skipped now.
  static std::uint64_t advance(history& h, std::uint64_t sequence, bool skipped_are_lost) {
    std::uint64_t lost = 0;
    const std::uint64_t old = h.highest;
    const auto counts = [&](std::uint64_t s) { return s >= h.base && s > 0; };
    if (sequence - old >= window) {
      for (std::uint64_t s = old >= window ? old - window + 1 : 0; s <= old; ++s)
        lost += counts(s) && h.marks[s % window] == 0;
      lost += sequence - old - window;  // (old, sequence - window]: never even in the window
      h.marks.fill(0);
      h.given_up.reset();
    } else {
      // The sequences that leave the window give their slots to those that enter it.
      for (std::uint64_t s = old + 1; s <= sequence; ++s) {
        std::uint8_t& slot = h.marks[s % window];
        lost += s >= window && counts(s - window) && slot == 0;
        slot = 0;
        h.given_up[s % window] = false;
      }
    }
    h.highest = sequence;
    if (skipped_are_lost) {
      // One path, in order: what it skipped will not come.
      for (std::uint64_t s = std::max(old + 1, sequence >= window ? sequence - window + 1 : 0); s < sequence; ++s) {
        h.marks[s % window] = 255;
        h.given_up[s % window] = true;
        ++lost;
      }
    }
    return lost;
  }
  std::size_t max_origins_;
  std::unordered_map<origin, history, origin_hash> origins_;
  std::list<origin> by_age_;  // front: seen least recently
};

}  // namespace ipcbus::bridge
