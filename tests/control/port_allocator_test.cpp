// RTP port allocator: ranges and parity, quarantine with injected time, LRU reuse, exhaustion,
// unusable ports, and a randomized comparison with a brute-force model.
#include "control/port_allocator.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <vector>

namespace callrec::control {
namespace {

using namespace std::chrono_literals;
using TimePoint = PortAllocator::TimePoint;

const TimePoint kT0 = TimePoint{} + 1000h;  // arbitrary injected clock origin

// The order-sensitive tests below use the deterministic order; the daemon's default (random)
// has its own tests at the end.
PortAllocatorOptions range(std::uint16_t lo, std::uint16_t hi, bool even_only = true,
                           PortOrder order = PortOrder::kLeastRecentlyUsed) {
  PortAllocatorOptions o;
  o.lo = lo;
  o.hi = hi;
  o.even_only = even_only;
  o.order = order;
  return o;
}

std::vector<std::uint16_t> allocate_all(PortAllocator& a, TimePoint now) {
  std::vector<std::uint16_t> out;
  while (auto p = a.allocate(now)) out.push_back(*p);
  return out;
}

TEST(PortAllocator, EvenPortsOnlyByDefaultInOrderThenExhausted) {
  PortAllocator a(range(40000, 40009));
  EXPECT_EQ(a.capacity(), 5u);
  EXPECT_EQ(allocate_all(a, kT0), (std::vector<std::uint16_t>{40000, 40002, 40004, 40006, 40008}));
  EXPECT_EQ(a.in_use(), 5u);
  EXPECT_EQ(a.available(kT0), 0u);
  EXPECT_FALSE(a.allocate(kT0 + 1h));
  EXPECT_EQ(a.stats().exhausted, 2u);  // the loop's last call and this one
  EXPECT_EQ(a.stats().allocations, 5u);
}

TEST(PortAllocator, OddBoundsAndAllPorts) {
  PortAllocator even(range(40001, 40005));
  EXPECT_EQ(allocate_all(even, kT0), (std::vector<std::uint16_t>{40002, 40004}));
  PortAllocator all(range(40001, 40005, false));
  EXPECT_EQ(allocate_all(all, kT0), (std::vector<std::uint16_t>{40001, 40002, 40003, 40004, 40005}));
  PortAllocator one(range(40000, 40000));
  EXPECT_EQ(allocate_all(one, kT0), (std::vector<std::uint16_t>{40000}));
}

TEST(PortAllocator, WholePortSpaceEachPortOnce) {
  PortAllocator a(range(1, 65535, false));
  ASSERT_EQ(a.capacity(), 65535u);
  const auto ports = allocate_all(a, kT0);
  ASSERT_EQ(ports.size(), 65535u);
  EXPECT_EQ(std::set<std::uint16_t>(ports.begin(), ports.end()).size(), 65535u);
  EXPECT_EQ(ports.front(), 1);
  EXPECT_EQ(ports.back(), 65535);
}

TEST(PortAllocator, ReleasedPortIsQuarantinedForTheConfiguredTime) {
  PortAllocatorOptions o = range(40000, 40003);  // two ports
  o.quarantine = 30s;
  PortAllocator a(o);
  const auto p1 = a.allocate(kT0);
  const auto p2 = a.allocate(kT0);
  ASSERT_TRUE(p1 && p2);
  ASSERT_TRUE(a.release(*p1, kT0 + 5s));
  EXPECT_FALSE(a.is_allocated(*p1));
  EXPECT_EQ(a.waiting(kT0 + 5s), 1u);
  EXPECT_EQ(a.available(kT0 + 5s), 0u);
  EXPECT_FALSE(a.allocate(kT0 + 5s));
  EXPECT_FALSE(a.allocate(kT0 + 35s - 1ns));
  EXPECT_EQ(a.available(kT0 + 35s), 1u);
  EXPECT_EQ(a.allocate(kT0 + 35s), p1);
  EXPECT_TRUE(a.is_allocated(*p1));
}

TEST(PortAllocator, ZeroQuarantineStillReusesLeastRecentlyUsedFirst) {
  PortAllocatorOptions o = range(40000, 40005);  // 40000, 40002, 40004
  o.quarantine = 0s;
  PortAllocator a(o);
  EXPECT_EQ(a.allocate(kT0), 40000);
  ASSERT_TRUE(a.release(40000, kT0));
  // 40000 is free again, yet the never-used ports come first.
  EXPECT_EQ(a.allocate(kT0), 40002);
  EXPECT_EQ(a.allocate(kT0), 40004);
  EXPECT_EQ(a.allocate(kT0), 40000);
}

TEST(PortAllocator, ReuseFollowsReleaseOrder) {
  PortAllocatorOptions o = range(40000, 40005);
  o.quarantine = 10s;
  PortAllocator a(o);
  ASSERT_EQ(allocate_all(a, kT0).size(), 3u);
  ASSERT_TRUE(a.release(40004, kT0 + 1s));
  ASSERT_TRUE(a.release(40000, kT0 + 2s));
  ASSERT_TRUE(a.release(40002, kT0 + 3s));
  EXPECT_EQ(allocate_all(a, kT0 + 1h), (std::vector<std::uint16_t>{40004, 40000, 40002}));
}

TEST(PortAllocator, PortsBecomeAvailableOneByOneAsTheirQuarantineEnds) {
  PortAllocatorOptions o = range(40000, 40005);
  o.quarantine = 10s;
  PortAllocator a(o);
  ASSERT_EQ(allocate_all(a, kT0).size(), 3u);
  ASSERT_TRUE(a.release(40000, kT0));
  ASSERT_TRUE(a.release(40002, kT0 + 4s));
  EXPECT_EQ(a.available(kT0 + 9s), 0u);
  EXPECT_EQ(a.available(kT0 + 10s), 1u);
  EXPECT_EQ(a.allocate(kT0 + 12s), 40000);
  EXPECT_FALSE(a.allocate(kT0 + 13s));
  EXPECT_EQ(a.allocate(kT0 + 14s), 40002);
}

TEST(PortAllocator, ClockGoingBackwardsNeverShortensAQuarantine) {
  PortAllocatorOptions o = range(40000, 40003);
  o.quarantine = 10s;
  PortAllocator a(o);
  ASSERT_EQ(allocate_all(a, kT0).size(), 2u);
  ASSERT_TRUE(a.release(40000, kT0 + 100s));
  ASSERT_TRUE(a.release(40002, kT0 + 50s));  // an earlier time point than the previous release
  EXPECT_FALSE(a.allocate(kT0 + 60s)) << "40002's quarantine must not end before 40000's";
  EXPECT_FALSE(a.allocate(kT0 + 109s));
  EXPECT_EQ(allocate_all(a, kT0 + 110s), (std::vector<std::uint16_t>{40000, 40002}));
}

TEST(PortAllocator, BadReleasesAreRefusedAndCounted) {
  PortAllocator a(range(40000, 40009));
  EXPECT_FALSE(a.release(40000, kT0)) << "never allocated";
  const auto p = a.allocate(kT0);
  ASSERT_TRUE(p);
  EXPECT_TRUE(a.release(*p, kT0));
  EXPECT_FALSE(a.release(*p, kT0)) << "double release";
  EXPECT_FALSE(a.release(40001, kT0)) << "odd port, not managed";
  EXPECT_FALSE(a.release(39998, kT0)) << "below the range";
  EXPECT_FALSE(a.release(40010, kT0)) << "above the range";
  EXPECT_FALSE(a.release(0, kT0));
  EXPECT_FALSE(a.mark_unusable(40002, kT0)) << "not allocated";
  EXPECT_EQ(a.stats().bad_releases, 7u);
  EXPECT_EQ(a.stats().releases, 1u);
  EXPECT_EQ(a.in_use(), 0u);
}

TEST(PortAllocator, UnusablePortIsRetriedLaterWithACounter) {
  PortAllocatorOptions o = range(40000, 40003);
  o.quarantine = 10s;
  o.unusable_retry = 60s;
  PortAllocator a(o);
  EXPECT_EQ(a.allocate(kT0), 40000);
  ASSERT_TRUE(a.mark_unusable(40000, kT0));  // bind() failed: EADDRINUSE
  EXPECT_EQ(a.unusable_count(40000), 1u);
  EXPECT_EQ(a.in_use(), 0u);
  EXPECT_EQ(a.allocate(kT0), 40002) << "the next port is offered at once";
  EXPECT_FALSE(a.allocate(kT0 + 59s));
  EXPECT_EQ(a.waiting(kT0 + 59s), 1u);
  EXPECT_EQ(a.allocate(kT0 + 60s), 40000);
  ASSERT_TRUE(a.mark_unusable(40000, kT0 + 60s));
  EXPECT_EQ(a.unusable_count(40000), 2u);
  EXPECT_EQ(a.stats().unusable_marks, 2u);
  EXPECT_EQ(a.unusable_count(40002), 0u);
  EXPECT_EQ(a.unusable_count(1), 0u);
}

TEST(PortAllocator, WhenBothQueuesAreReadyTheLongestWaitingPortGoesFirst) {
  PortAllocatorOptions o = range(40000, 40003);
  o.quarantine = 30s;
  o.unusable_retry = 10s;
  PortAllocator a(o);
  ASSERT_EQ(allocate_all(a, kT0).size(), 2u);
  ASSERT_TRUE(a.release(40000, kT0));            // ready at +30 s
  ASSERT_TRUE(a.mark_unusable(40002, kT0 + 5s)); // ready at +15 s
  EXPECT_EQ(allocate_all(a, kT0 + 1h), (std::vector<std::uint16_t>{40002, 40000}));
}

TEST(PortAllocator, InvalidOptions) {
  const auto msg = [](PortAllocatorOptions o) { return validate(o).message(); };
  EXPECT_TRUE(validate(PortAllocatorOptions{}));
  EXPECT_EQ(msg(range(5000, 4000)), "port range 5000-4000: low port above high port");
  EXPECT_NE(msg(range(0, 100)).find("port 0"), std::string::npos);
  EXPECT_NE(msg(range(40001, 40001)).find("no even port"), std::string::npos);
  EXPECT_TRUE(validate(range(40001, 40001, false)));
  PortAllocatorOptions neg;
  neg.quarantine = -1s;
  EXPECT_FALSE(validate(neg));

  PortAllocator broken(range(5000, 4000));
  EXPECT_EQ(broken.capacity(), 0u);
  EXPECT_FALSE(broken.allocate(kT0));
  EXPECT_FALSE(broken.release(4500, kT0));
}

// A brute-force model: per port a state and the time it became (or becomes) free; allocate
// picks, among free ports ready at `now`, the smallest ready time (ties: initial order / the
// order in which they were released).
class Model {
 public:
  explicit Model(const PortAllocatorOptions& o) : o_(o) {
    for (unsigned p = o.lo + ((o.even_only && o.lo % 2 != 0) ? 1 : 0); p <= o.hi; p += o.even_only ? 2 : 1) {
      free_.push_back({static_cast<std::uint16_t>(p), TimePoint::min(), seq_++});
    }
  }
  std::optional<std::uint16_t> allocate(TimePoint now) {
    auto best = free_.end();
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->ready > now) continue;
      if (best == free_.end() || it->ready < best->ready || (it->ready == best->ready && it->seq < best->seq)) best = it;
    }
    if (best == free_.end()) return std::nullopt;
    const auto p = best->port;
    free_.erase(best);
    used_.insert(p);
    return p;
  }
  bool release(std::uint16_t p, TimePoint now, bool unusable) {
    if (used_.erase(p) == 0) return false;
    free_.push_back({p, now + (unusable ? o_.unusable_retry : o_.quarantine), seq_++});
    return true;
  }

 private:
  struct E {
    std::uint16_t port;
    TimePoint ready;
    std::uint64_t seq;
  };
  PortAllocatorOptions o_;
  std::vector<E> free_;
  std::set<std::uint16_t> used_;
  std::uint64_t seq_ = 0;
};

TEST(PortAllocator, RandomChurnMatchesBruteForceModel) {
  PortAllocatorOptions o = range(40000, 40063);  // 32 ports: exhaustion happens often
  o.quarantine = 30s;
  o.unusable_retry = 30s;  // same delay: both queues order like one, as the model does
  PortAllocator a(o);
  Model m(o);
  std::mt19937 rng(12345);
  TimePoint now = kT0;
  std::vector<std::uint16_t> held;
  for (int step = 0; step < 20000; ++step) {
    now += std::chrono::milliseconds(1 + rng() % 3000);  // strictly increasing: no ties
    const unsigned op = rng() % 10;
    if (op < 5) {
      const auto got = a.allocate(now);
      ASSERT_EQ(got, m.allocate(now)) << "step " << step;
      if (got) held.push_back(*got);
    } else if (!held.empty()) {
      const std::size_t i = rng() % held.size();
      const std::uint16_t p = held[i];
      held.erase(held.begin() + static_cast<std::ptrdiff_t>(i));
      const bool unusable = op == 9;
      ASSERT_TRUE(unusable ? a.mark_unusable(p, now) : a.release(p, now));
      ASSERT_TRUE(m.release(p, now, unusable));
    }
    ASSERT_EQ(a.in_use(), held.size());
    ASSERT_EQ(a.in_use() + a.available(now) + a.waiting(now), a.capacity());
  }
  EXPECT_GT(a.stats().exhausted, 0u);
  EXPECT_GT(a.stats().unusable_marks, 0u);
}

// ---- random order (the default: a sprayer of the port range cannot guess the next port) ----

TEST(PortAllocator, DefaultOrderIsRandom) { EXPECT_EQ(PortAllocatorOptions{}.order, PortOrder::kRandom); }

TEST(PortAllocator, RandomOrderHandsOutEveryPortOnceInAnUnpredictableOrder) {
  PortAllocator a(range(40000, 49999, true, PortOrder::kRandom));
  PortAllocator b(range(40000, 49999, true, PortOrder::kRandom));
  const auto pa = allocate_all(a, kT0);
  const auto pb = allocate_all(b, kT0);
  ASSERT_EQ(pa.size(), 5000u);
  ASSERT_EQ(std::set<std::uint16_t>(pa.begin(), pa.end()).size(), 5000u);
  for (auto p : pa) EXPECT_TRUE(p >= 40000 && p <= 49999 && p % 2 == 0) << p;
  // Not the range order, and two allocators do not agree (5000! orders: a collision of the
  // first 20 ports by chance has probability ~ 5000^-20).
  std::vector<std::uint16_t> sorted = pa;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_NE(pa, sorted);
  EXPECT_FALSE(std::equal(pa.begin(), pa.begin() + 20, pb.begin()));
  // Successive ports are not neighbours: an attacker who saw one port learns nothing of the
  // next. With 5000 ports a random draw lands within +-8 of the previous one ~0.3% of the time.
  std::size_t close = 0;
  for (std::size_t i = 1; i < pa.size(); ++i) close += std::abs(int(pa[i]) - int(pa[i - 1])) <= 16 ? 1 : 0;
  EXPECT_LT(close, 100u);
}

TEST(PortAllocator, RandomOrderKeepsTheQuarantine) {
  PortAllocatorOptions o = range(40000, 40007, true, PortOrder::kRandom);  // 4 ports
  o.quarantine = 30s;
  PortAllocator a(o);
  auto all = allocate_all(a, kT0);
  ASSERT_EQ(all.size(), 4u);
  ASSERT_TRUE(a.release(all[2], kT0 + 1s));
  EXPECT_EQ(a.waiting(kT0 + 1s), 1u);
  EXPECT_FALSE(a.allocate(kT0 + 31s - 1ns));
  EXPECT_EQ(a.available(kT0 + 31s), 1u);
  EXPECT_EQ(a.allocate(kT0 + 31s), all[2]);
  ASSERT_TRUE(a.mark_unusable(all[0], kT0 + 40s));
  EXPECT_FALSE(a.allocate(kT0 + 99s));
  EXPECT_EQ(a.allocate(kT0 + 100s), all[0]);  // unusable_retry 60 s
}

TEST(PortAllocator, RandomOrderChurnKeepsTheInvariants) {
  PortAllocatorOptions o = range(40000, 40063, true, PortOrder::kRandom);
  o.quarantine = 30s;
  o.unusable_retry = 20s;
  PortAllocator a(o);
  std::mt19937 rng(777);
  TimePoint now = kT0;
  std::map<std::uint16_t, TimePoint> ready_at;  // released ports: when they may come back
  std::set<std::uint16_t> held;
  for (int step = 0; step < 20000; ++step) {
    now += std::chrono::milliseconds(1 + rng() % 3000);
    if (rng() % 2 == 0) {
      const std::size_t expect_free = a.available(now);
      const auto got = a.allocate(now);
      ASSERT_EQ(got.has_value(), expect_free > 0) << "step " << step;
      if (!got) continue;
      ASSERT_TRUE(held.insert(*got).second) << "port handed out twice: " << *got;
      if (auto it = ready_at.find(*got); it != ready_at.end()) {
        ASSERT_LE(it->second, now) << "port " << *got << " reused inside its quarantine";
        ready_at.erase(it);
      }
    } else if (!held.empty()) {
      auto it = held.begin();
      std::advance(it, static_cast<long>(rng() % held.size()));
      const std::uint16_t p = *it;
      held.erase(it);
      const bool unusable = rng() % 5 == 0;
      ASSERT_TRUE(unusable ? a.mark_unusable(p, now) : a.release(p, now));
      ready_at[p] = now + (unusable ? o.unusable_retry : o.quarantine);
    }
    ASSERT_EQ(a.in_use(), held.size());
    ASSERT_EQ(a.in_use() + a.available(now) + a.waiting(now), a.capacity());
  }
  EXPECT_GT(a.stats().exhausted, 0u);
}

}  // namespace
}  // namespace callrec::control
