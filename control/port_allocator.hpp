#pragma once
// UDP port allocator for recordings: hands out ports of [lo, hi] (even ports only by default,
// the RTP convention that leaves port+1 to RTCP), O(1) allocate and release.
//
// - A released port is quarantined: it is handed out again only once `quarantine` has passed,
//   so late RTP of a finished call never lands in the next call's recording.
// - Order: by default a port is drawn uniformly at random from the ports free at that moment
//   (kernel randomness, getrandom(2), read in blocks): a host that sprays the range cannot
//   predict the next recording's port. kLeastRecentlyUsed hands them out in a fixed order
//   instead, every port reused as late as possible (deterministic: tests, reproducible runs).
// - A port the OS refused to bind is marked unusable and retried after `unusable_retry`
//   (another program may hold it for a while); a counter per port and in total say how often.
//
// Time is passed in (steady_clock time points), never read here: tests inject it.
// Not thread-safe: owned by the control thread.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <vector>

#include "fileio/status.hpp"

namespace callrec::control {

enum class PortOrder : std::uint8_t { kRandom, kLeastRecentlyUsed };

struct PortAllocatorOptions {
  std::uint16_t lo = 40000;
  std::uint16_t hi = 49999;
  bool even_only = true;  ///< false: every port of [lo, hi]
  std::chrono::steady_clock::duration quarantine = std::chrono::seconds(30);
  std::chrono::steady_clock::duration unusable_retry = std::chrono::seconds(60);
  PortOrder order = PortOrder::kRandom;
};

/// ok, or why the options cannot work ("port range 5000-4000: low port above high port").
Status validate(const PortAllocatorOptions& opts);

struct PortAllocatorStats {
  std::uint64_t allocations = 0;
  std::uint64_t releases = 0;
  std::uint64_t exhausted = 0;        ///< allocate() found nothing free (answered no_port)
  std::uint64_t bad_releases = 0;     ///< release()/mark_unusable() of a port not allocated
  std::uint64_t unusable_marks = 0;   ///< mark_unusable() calls accepted
};

class PortAllocator {
 public:
  using Clock = std::chrono::steady_clock;
  using TimePoint = Clock::time_point;

  /// Every port of the range starts free. Options that fail validate() give an allocator
  /// with no port (allocate() always fails); check validate() first.
  explicit PortAllocator(PortAllocatorOptions opts = {});

  /// A port free at `now` (random, or the least recently used one: options().order); nullopt
  /// when none is (the caller answers reason `no_port`). O(1) amortized.
  std::optional<std::uint16_t> allocate(TimePoint now);
  /// Returns an allocated port; it becomes free at now + quarantine. false (and counted) for a
  /// port that is not allocated (double release, out of range). O(1).
  bool release(std::uint16_t port, TimePoint now);
  /// The OS refused to bind an allocated port: it is taken back and offered again from
  /// now + unusable_retry. false for a port that is not allocated.
  bool mark_unusable(std::uint16_t port, TimePoint now);

  [[nodiscard]] bool is_allocated(std::uint16_t port) const;
  /// How many times this port was marked unusable.
  [[nodiscard]] std::uint32_t unusable_count(std::uint16_t port) const;
  /// Ports managed (eligible ports of the range).
  [[nodiscard]] std::size_t capacity() const { return capacity_; }
  [[nodiscard]] std::size_t in_use() const { return in_use_; }
  /// Ports released and still waiting out their quarantine at `now`, or unusable.
  [[nodiscard]] std::size_t waiting(TimePoint now) const;
  /// Ports allocate() could hand out at `now`.
  [[nodiscard]] std::size_t available(TimePoint now) const { return capacity_ - in_use_ - waiting(now); }
  [[nodiscard]] const PortAllocatorStats& stats() const { return stats_; }
  [[nodiscard]] const PortAllocatorOptions& options() const { return opts_; }

 private:
  enum class State : std::uint8_t { kFree, kInUse, kUnusable };
  struct Entry {
    std::uint16_t port;
    TimePoint ready;  ///< may be handed out from this time on
  };

  /// Index into the per-port arrays; nullopt when the port is not managed.
  [[nodiscard]] std::optional<std::size_t> index_of(std::uint16_t port) const;
  static void push(std::deque<Entry>& q, Entry e);
  static std::size_t count_waiting(const std::deque<Entry>& q, TimePoint now);
  std::optional<std::uint16_t> allocate_random(TimePoint now);
  std::uint32_t random32();

  PortAllocatorOptions opts_;
  std::size_t capacity_ = 0;
  std::size_t in_use_ = 0;
  unsigned step_ = 2;
  std::uint16_t first_ = 0;
  std::vector<State> state_;
  std::vector<std::uint32_t> unusable_count_;
  // Ready times never decrease along a queue (push() clamps), so only fronts are examined.
  std::deque<Entry> free_;      ///< free and quarantined ports, least recently released first
  std::deque<Entry> unusable_;  ///< ports the OS refused, oldest first
  // kRandom: ports whose wait is over, in no order (drawn by index, removed by swap-and-pop).
  std::vector<std::uint16_t> ready_;
  std::vector<std::uint32_t> random_;  ///< a block of getrandom(2) output, consumed from the back
  PortAllocatorStats stats_;
};

}  // namespace callrec::control
