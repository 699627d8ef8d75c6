#pragma once
// The control-side flow registry of a packet source: what the control thread knows about the
// flows it handed to the RX threads (kernel source) or RX lcores (DPDK source). One class for
// both sources; no sockets, no DPDK.
//
// - stream -> entry: the owner (RX thread / lcore index), the slot in the owner's flow table,
//   the local UDP port, the local addresses the flow holds that port on, and a source-specific
//   payload (the kernel source: the flow's published counters).
// - Duplicate detection: a stream has at most one installed flow (find()); a port is held on
//   each of the flow's local addresses by at most one flow (port_user()).
// - Slots: per owner, a free list (slot 0 is handed out first). A removed flow's slot is free
//   again either at once (SlotReuse::kImmediate: the owner applies its commands in order, so an
//   add to the slot is queued behind the remove) or only once the owner acknowledged the remove
//   (SlotReuse::kAcknowledged: the slot still holds the removed flow's live counters until
//   then; the DPDK source).
// - Removal is acknowledged by sequence number: remove() takes the number of commands posted to
//   the owner including the remove; reclaim() takes the number the owner has applied. Until the
//   acknowledgement the flow is "removing" (its counters are still live, read through the
//   source's callback); after it, the flow's final FlowStats are kept for the last
//   `kept_removed` removed flows (oldest forgotten first), so flow_stats() still answers.
//
// Threads: none of its own, no locking. The owning source guards it with its control mutex;
// RX threads and lcores never touch it.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "dataplane/source.hpp"

namespace callrec::dataplane {

/// Removed flows whose final counters a source keeps (flow_stats() after remove_flow()).
inline constexpr std::size_t kKeptRemovedFlows = 4096;

/// The payload of a source that keeps nothing beyond owner, slot and port.
struct NoFlowPayload {};

template <class Payload = NoFlowPayload>
class FlowRegistry {
 public:
  enum class SlotReuse : std::uint8_t {
    kImmediate,     ///< a removed flow's slot is free at once
    kAcknowledged,  ///< a removed flow's slot is free once its owner acknowledged the remove
  };

  struct Options {
    unsigned owners = 0;                 ///< RX threads / lcores
    std::uint32_t slots_per_owner = 0;   ///< size of each owner's flow table
    SlotReuse slot_reuse = SlotReuse::kImmediate;
    std::size_t kept_removed = kKeptRemovedFlows;  ///< final stats of this many removed flows
  };

  struct Entry {
    unsigned owner = 0;             ///< RX thread / lcore index
    std::uint32_t slot = 0;         ///< index in the owner's flow table
    std::uint16_t local_port = 0;
    /// The flow holds local_port on the local addresses [first_address, end_address) (an index
    /// into the source's own address list; a source with one address uses [0, 1)).
    std::uint16_t first_address = 0;
    std::uint16_t end_address = 1;
    Payload payload{};
  };

  FlowRegistry() = default;
  explicit FlowRegistry(const Options& o) : options_(o), free_(o.owners), pending_(o.owners) {
    for (auto& f : free_) {
      f.reserve(o.slots_per_owner);
      for (std::uint32_t s = o.slots_per_owner; s > 0; --s) f.push_back(s - 1);
    }
  }

  /// The installed flow of `stream`; nullptr when none (unknown, or removed).
  [[nodiscard]] const Entry* find(StreamId stream) const {
    const auto it = installed_.find(stream);
    return it == installed_.end() ? nullptr : &it->second;
  }
  /// The removed flow of `stream` whose owner has not acknowledged the remove yet.
  [[nodiscard]] const Entry* find_removing(StreamId stream) const {
    const auto it = removing_.find(stream);
    return it == removing_.end() ? nullptr : &it->second.entry;
  }
  [[nodiscard]] std::size_t installed() const { return installed_.size(); }

  /// The stream of an installed flow holding `port` on one of the addresses [first, end)
  /// (the first such address); nullopt when the port is free on all of them.
  [[nodiscard]] std::optional<StreamId> port_user(std::uint16_t port, unsigned first_address = 0,
                                                  unsigned end_address = 1) const {
    for (unsigned a = first_address; a < end_address; ++a) {
      if (const auto it = keys_.find(key(a, port)); it != keys_.end()) return it->second;
    }
    return std::nullopt;
  }

  /// Free slots of `owner` (with kAcknowledged: as of the last reclaim()).
  [[nodiscard]] std::size_t free_slots(unsigned owner) const { return free_[owner].size(); }
  /// The slot the next add() on `owner` takes; nullopt: the owner's table is full.
  [[nodiscard]] std::optional<std::uint32_t> next_slot(unsigned owner) const {
    const auto& f = free_[owner];
    if (f.empty()) return std::nullopt;
    return f.back();
  }

  /// Installs `stream` in slot e.slot (normally next_slot(e.owner)) of e.owner. Refused
  /// (nullptr) when `stream` already has an installed flow or the slot is not free. The caller
  /// checks port_user() first (and words the errors); add() itself does not refuse a port in
  /// use, it takes it on e's addresses (the kernel source registers the port its bind got). A
  /// removed flow of the same stream is forgotten: from now on the stream's counters are the new
  /// flow's.
  const Entry* add(StreamId stream, Entry e) {
    if (installed_.contains(stream)) return nullptr;
    auto& f = free_[e.owner];
    if (!f.empty() && f.back() == e.slot) {
      f.pop_back();
    } else if (const auto it = std::find(f.begin(), f.end(), e.slot); it != f.end()) {
      f.erase(it);
    } else {
      return nullptr;
    }
    removing_.erase(stream);
    removed_.erase(stream);  // its element of removed_order_ is stale now (see remember())
    for (unsigned a = e.first_address; a < e.end_address; ++a) keys_[key(a, e.local_port)] = stream;
    return &installed_.emplace(stream, std::move(e)).first->second;
  }

  /// Removes the installed flow of `stream` (false: none). Its port is free at once; it stays
  /// "removing" until reclaim() sees its owner's acknowledged count reach `acknowledged_at`
  /// (the number of commands posted to the owner, the remove included).
  bool remove(StreamId stream, std::uint64_t acknowledged_at) {
    const auto it = installed_.find(stream);
    if (it == installed_.end()) return false;
    Entry& e = it->second;
    for (unsigned a = e.first_address; a < e.end_address; ++a) keys_.erase(key(a, e.local_port));
    if (options_.slot_reuse == SlotReuse::kImmediate) free_[e.owner].push_back(e.slot);
    pending_[e.owner].push_back(Pending{acknowledged_at, e.slot, stream});
    removing_.insert_or_assign(stream, Removing{std::move(e), acknowledged_at});
    installed_.erase(it);
    return true;
  }

  /// `owner` has applied `done` commands: its removes up to that count are final. Their final
  /// counters (`final_stats(const Entry&) -> FlowStats`) are kept; with kAcknowledged their
  /// slots are free again.
  template <class FinalStats>
  void reclaim(unsigned owner, std::uint64_t done, FinalStats&& final_stats) {
    auto& q = pending_[owner];
    while (!q.empty() && q.front().seq <= done) {
      const Pending p = q.front();
      q.pop_front();
      // The stream may have been added again (and maybe removed again) since: only the remove
      // posted at this sequence number is final now.
      if (const auto it = removing_.find(p.stream);
          it != removing_.end() && it->second.entry.owner == owner && it->second.seq == p.seq) {
        remember(p.stream, final_stats(std::as_const(it->second.entry)));
        removing_.erase(it);
      }
      if (options_.slot_reuse == SlotReuse::kAcknowledged) free_[owner].push_back(p.slot);
    }
  }

  /// Installed or removing: `live(const Entry&) -> FlowStats`; removed and still kept: the
  /// final counters; otherwise nullopt.
  template <class LiveStats>
  [[nodiscard]] std::optional<FlowStats> flow_stats(StreamId stream, LiveStats&& live) const {
    if (const Entry* e = find(stream)) return live(*e);
    if (const Entry* e = find_removing(stream)) return live(*e);
    if (const auto it = removed_.find(stream); it != removed_.end()) return it->second.stats;
    return std::nullopt;
  }

  /// Every owner has stopped: the final counters of every removing and installed flow (in that
  /// order) are kept, and nothing is installed any more (every slot and port is free).
  template <class FinalStats>
  void forget_all(FinalStats&& final_stats) {
    for (auto& [stream, r] : removing_) remember(stream, final_stats(std::as_const(r.entry)));
    for (auto& [stream, e] : installed_) remember(stream, final_stats(std::as_const(e)));
    for (const auto& kv : installed_) free_[kv.second.owner].push_back(kv.second.slot);
    for (unsigned o = 0; o < pending_.size(); ++o) {
      if (options_.slot_reuse == SlotReuse::kAcknowledged) {
        for (const Pending& p : pending_[o]) free_[o].push_back(p.slot);
      }
      pending_[o].clear();
    }
    removing_.clear();
    installed_.clear();
    keys_.clear();
  }

  /// Removed flows whose final counters are kept now (at most Options::kept_removed).
  [[nodiscard]] std::size_t removed_kept() const { return removed_.size(); }

 private:
  struct Pending {
    std::uint64_t seq = 0;  ///< acknowledged once the owner's applied count reaches seq
    std::uint32_t slot = 0;
    StreamId stream = 0;
  };
  struct Removing {
    Entry entry;
    std::uint64_t seq = 0;  ///< of its Pending
  };
  struct Removed {
    FlowStats stats;
    std::uint64_t generation = 0;  ///< of its removed_order_ element
  };

  static std::uint32_t key(unsigned address, std::uint16_t port) { return (address << 16) | port; }

  void remember(StreamId stream, const FlowStats& stats) {
    const std::uint64_t g = ++generation_;
    removed_.insert_or_assign(stream, Removed{stats, g});
    removed_order_.emplace_back(stream, g);
    while (removed_.size() > options_.kept_removed) {  // forget the oldest
      const auto [s, gen] = removed_order_.front();
      removed_order_.pop_front();
      if (const auto it = removed_.find(s); it != removed_.end() && it->second.generation == gen) removed_.erase(it);
    }
    // Streams forgotten by add() (or remembered again) leave stale elements behind: drop them
    // once they are as many as the live ones, so the order stays O(kept_removed).
    if (removed_order_.size() > 2 * options_.kept_removed + 64) {
      std::erase_if(removed_order_, [this](const auto& o) {
        const auto it = removed_.find(o.first);
        return it == removed_.end() || it->second.generation != o.second;
      });
    }
  }

  Options options_;
  std::unordered_map<StreamId, Entry> installed_;
  std::unordered_map<StreamId, Removing> removing_;  ///< removed, not acknowledged yet
  std::unordered_map<std::uint32_t, StreamId> keys_;  ///< (address << 16 | port) -> stream
  std::vector<std::vector<std::uint32_t>> free_;      ///< per owner
  std::vector<std::deque<Pending>> pending_;          ///< per owner, in seq order
  std::unordered_map<StreamId, Removed> removed_;     ///< final counters of removed flows
  std::deque<std::pair<StreamId, std::uint64_t>> removed_order_;  ///< (stream, generation), oldest first
  std::uint64_t generation_ = 0;
};

}  // namespace callrec::dataplane
