// FlowRegistry, the control-side flow bookkeeping of the kernel and DPDK sources: duplicate
// streams, ports per address, slot free lists (immediate and acknowledged reuse), the final
// counters of removed flows (bounded, oldest forgotten) and stop (forget_all).
#include "dataplane/flow_registry.hpp"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <optional>

namespace callrec::dataplane {
namespace {

/// Payload: the flow's live packet count, as the owner would publish it.
using Registry = FlowRegistry<std::uint64_t>;
using Entry = Registry::Entry;

/// Live counters: what the owner publishes now (payload); final counters: payload + 1000, so
/// that a test sees which of the two it got.
FlowStats live(const Entry& e) { return FlowStats{e.payload, 0, 0}; }
FlowStats final_counters(const Entry& e) { return FlowStats{e.payload + 1000, 1, 2}; }

Registry make(unsigned owners, std::uint32_t slots, Registry::SlotReuse reuse, std::size_t kept = kKeptRemovedFlows) {
  return Registry(Registry::Options{owners, slots, reuse, kept});
}

/// The installed entry of `stream`, or one with owner ~0 (the checks then fail, nothing crashes).
Entry installed(const Registry& r, StreamId stream) {
  const Entry* e = r.find(stream);
  return e != nullptr ? *e : Entry{~0U, ~0U, 0, 0, 0, ~std::uint64_t{0}};
}

/// Adds `stream` on `port` of address 0 in the next free slot of `owner`.
const Entry* add(Registry& r, StreamId stream, unsigned owner, std::uint16_t port, std::uint64_t packets = 0) {
  const std::optional<std::uint32_t> slot = r.next_slot(owner);
  if (!slot) return nullptr;
  return r.add(stream, Entry{owner, *slot, port, 0, 1, packets});
}

TEST(FlowRegistry, ADuplicateStreamIsRefused) {
  Registry r = make(2, 4, Registry::SlotReuse::kImmediate);
  ASSERT_NE(add(r, 7, 0, 5000, 11), nullptr);
  EXPECT_EQ(installed(r, 7).owner, 0U);
  EXPECT_EQ(installed(r, 7).slot, 0U);
  EXPECT_EQ(installed(r, 7).local_port, 5000);
  EXPECT_EQ(add(r, 7, 1, 5002), nullptr) << "one installed flow per stream";
  EXPECT_EQ(r.installed(), 1U);
  EXPECT_EQ(r.free_slots(1), 4U) << "the refused add took no slot";
  EXPECT_EQ(installed(r, 7).local_port, 5000);
  EXPECT_EQ(installed(r, 7).payload, 11U);
  EXPECT_EQ(r.find(8), nullptr);
  // A slot that is not free is refused too.
  EXPECT_EQ(r.add(9, Entry{0, 0, 5004, 0, 1, 0}), nullptr);
  EXPECT_EQ(r.find(9), nullptr);
}

TEST(FlowRegistry, APortIsInUseOnEachAddressOfItsFlowUntilRemoved) {
  Registry r = make(1, 8, Registry::SlotReuse::kAcknowledged);
  EXPECT_FALSE(r.port_user(5000, 0, 3));
  ASSERT_NE(r.add(1, Entry{0, *r.next_slot(0), 5000, 0, 3, 0}), nullptr);  // all three addresses
  ASSERT_NE(r.add(2, Entry{0, *r.next_slot(0), 6000, 1, 2, 0}), nullptr);  // address 1 only
  EXPECT_EQ(r.port_user(5000, 0, 1), std::optional<StreamId>(1));
  EXPECT_EQ(r.port_user(5000, 2, 3), std::optional<StreamId>(1));
  EXPECT_FALSE(r.port_user(5000, 3, 4));
  EXPECT_FALSE(r.port_user(5002, 0, 3));
  EXPECT_EQ(r.port_user(6000, 0, 3), std::optional<StreamId>(2));
  EXPECT_FALSE(r.port_user(6000, 0, 1));
  EXPECT_FALSE(r.port_user(6000, 2, 3));
  // Removed: the port is free at once, even before the owner acknowledged (and the slot is not).
  ASSERT_TRUE(r.remove(1, 3));
  EXPECT_FALSE(r.port_user(5000, 0, 3));
  EXPECT_EQ(r.port_user(6000), std::nullopt);
  EXPECT_EQ(r.port_user(6000, 1, 2), std::optional<StreamId>(2));
  EXPECT_FALSE(r.remove(1, 4)) << "not installed any more";
  EXPECT_FALSE(r.remove(99, 4));
}

TEST(FlowRegistry, SlotsAreHandedOutPerOwnerLowestFirstAndReusedAtOnce) {
  Registry r = make(2, 2, Registry::SlotReuse::kImmediate);
  EXPECT_EQ(r.next_slot(0), std::optional<std::uint32_t>(0));
  ASSERT_NE(add(r, 1, 0, 5000), nullptr);
  EXPECT_EQ(r.next_slot(0), std::optional<std::uint32_t>(1));
  ASSERT_NE(add(r, 2, 0, 5002), nullptr);
  EXPECT_EQ(r.next_slot(0), std::nullopt) << "owner 0 is full";
  EXPECT_EQ(add(r, 3, 0, 5004), nullptr);
  EXPECT_EQ(r.free_slots(0), 0U);
  EXPECT_EQ(r.free_slots(1), 2U);
  ASSERT_NE(add(r, 3, 1, 5004), nullptr);
  EXPECT_EQ(installed(r, 3).slot, 0U) << "owner 1 has its own slots";

  ASSERT_TRUE(r.remove(1, 3));  // not acknowledged: with kImmediate the slot is free anyway
  EXPECT_EQ(r.free_slots(0), 1U);
  EXPECT_EQ(r.next_slot(0), std::optional<std::uint32_t>(0));
  ASSERT_NE(add(r, 4, 0, 5006), nullptr);
  EXPECT_EQ(installed(r, 4).slot, 0U);
}

TEST(FlowRegistry, DeferredReuseWaitsUntilTheOwnerAcknowledgedTheRemove) {
  Registry r = make(1, 3, Registry::SlotReuse::kAcknowledged);
  ASSERT_NE(add(r, 1, 0, 5000, 10), nullptr);  // command 1, slot 0
  ASSERT_NE(add(r, 2, 0, 5002, 20), nullptr);  // command 2, slot 1
  ASSERT_NE(add(r, 3, 0, 5004, 30), nullptr);  // command 3, slot 2
  ASSERT_TRUE(r.remove(1, 4));                 // command 4
  ASSERT_TRUE(r.remove(2, 5));                 // command 5
  EXPECT_EQ(r.next_slot(0), std::nullopt) << "the slots still hold the removed flows' counters";
  r.reclaim(0, 3, final_counters);
  EXPECT_EQ(r.next_slot(0), std::nullopt);
  ASSERT_NE(r.find_removing(1), nullptr);
  EXPECT_EQ(r.find(1), nullptr);
  // Removing: the counters are still live.
  EXPECT_EQ(r.flow_stats(1, live)->packets, 10U);
  EXPECT_EQ(r.flow_stats(2, live)->packets, 20U);

  r.reclaim(0, 4, final_counters);  // the remove of stream 1, not yet the one of stream 2
  EXPECT_EQ(r.free_slots(0), 1U);
  EXPECT_EQ(r.next_slot(0), std::optional<std::uint32_t>(0));
  EXPECT_EQ(r.find_removing(1), nullptr);
  ASSERT_TRUE(r.flow_stats(1, live));
  EXPECT_EQ(r.flow_stats(1, live)->packets, 1010U) << "the final counters, taken at the acknowledgement";
  EXPECT_EQ(r.flow_stats(1, live)->wrong_source, 1U);
  EXPECT_EQ(r.flow_stats(1, live)->policed, 2U);
  EXPECT_EQ(r.flow_stats(2, live)->packets, 20U) << "stream 2 is still removing";

  r.reclaim(0, 100, final_counters);
  EXPECT_EQ(r.free_slots(0), 2U);
  EXPECT_EQ(r.flow_stats(2, live)->packets, 1020U);
  EXPECT_EQ(r.flow_stats(3, live)->packets, 30U) << "installed: live";
  EXPECT_EQ(r.flow_stats(4, live), std::nullopt) << "unknown";
  EXPECT_EQ(r.removed_kept(), 2U);
}

TEST(FlowRegistry, AStreamAddedAgainIsTheNewFlowAndItsEarlierRemoveIsNotItsFinalCounters) {
  // kAcknowledged: the new flow gets another slot while the old one is pending.
  Registry r = make(1, 4, Registry::SlotReuse::kAcknowledged);
  ASSERT_NE(add(r, 1, 0, 5000, 10), nullptr);
  ASSERT_TRUE(r.remove(1, 2));
  ASSERT_NE(add(r, 1, 0, 5000, 50), nullptr);
  EXPECT_EQ(installed(r, 1).slot, 1U);
  EXPECT_EQ(r.find_removing(1), nullptr);
  r.reclaim(0, 3, final_counters);  // acknowledges the old remove only
  EXPECT_EQ(r.flow_stats(1, live)->packets, 50U) << "the installed flow, not the old one's final counters";
  EXPECT_EQ(r.removed_kept(), 0U);
  EXPECT_EQ(r.free_slots(0), 3U) << "the old slot is free again";

  // kImmediate: the new flow may get the very same slot; only the remove posted last is final.
  Registry u = make(1, 4, Registry::SlotReuse::kImmediate);
  ASSERT_NE(add(u, 1, 0, 5000, 10), nullptr);  // slot 0
  ASSERT_TRUE(u.remove(1, 2));
  ASSERT_NE(add(u, 1, 0, 5000, 70), nullptr);
  EXPECT_EQ(installed(u, 1).slot, 0U);
  ASSERT_TRUE(u.remove(1, 4));
  u.reclaim(0, 2, final_counters);
  ASSERT_NE(u.find_removing(1), nullptr) << "the second remove is not acknowledged yet";
  EXPECT_EQ(u.flow_stats(1, live)->packets, 70U);
  u.reclaim(0, 4, final_counters);
  EXPECT_EQ(u.flow_stats(1, live)->packets, 1070U);

  // Kept final counters are forgotten when the stream is added again.
  ASSERT_NE(add(u, 1, 0, 5000, 90), nullptr);
  EXPECT_EQ(u.flow_stats(1, live)->packets, 90U);
  EXPECT_EQ(u.removed_kept(), 0U);
}

TEST(FlowRegistry, RemovedCountersAreBoundedAndTheOldestAreForgotten) {
  Registry r = make(1, 16, Registry::SlotReuse::kImmediate, 3);
  std::uint64_t seq = 0;
  for (StreamId s = 1; s <= 5; ++s) {
    ASSERT_NE(add(r, s, 0, static_cast<std::uint16_t>(5000 + 2 * s), s), nullptr);
    ++seq;
    ASSERT_TRUE(r.remove(s, ++seq));
    r.reclaim(0, seq, final_counters);
  }
  EXPECT_EQ(r.removed_kept(), 3U);
  EXPECT_EQ(r.flow_stats(1, live), std::nullopt);
  EXPECT_EQ(r.flow_stats(2, live), std::nullopt);
  for (StreamId s = 3; s <= 5; ++s) {
    ASSERT_TRUE(r.flow_stats(s, live)) << s;
    EXPECT_EQ(r.flow_stats(s, live)->packets, 1000U + s);
  }

  // A stream removed, added again and removed again counts once, as the newest.
  ASSERT_NE(add(r, 3, 0, 5100, 3), nullptr);
  ASSERT_TRUE(r.remove(3, ++seq));
  r.reclaim(0, seq, final_counters);  // kept now: 4, 5, 3 (3 newest)
  ASSERT_NE(add(r, 6, 0, 5102, 6), nullptr);
  ASSERT_TRUE(r.remove(6, ++seq));
  r.reclaim(0, seq, final_counters);  // 4 forgotten
  EXPECT_EQ(r.removed_kept(), 3U);
  EXPECT_EQ(r.flow_stats(4, live), std::nullopt);
  EXPECT_TRUE(r.flow_stats(5, live));
  EXPECT_TRUE(r.flow_stats(3, live));
  EXPECT_TRUE(r.flow_stats(6, live));

  // Many re-added streams: the memory stays bounded to the last 3.
  for (int round = 0; round < 1000; ++round) {
    const StreamId s = 100 + static_cast<StreamId>(round % 5);
    ASSERT_NE(add(r, s, 0, 6000, 1), nullptr);
    ASSERT_TRUE(r.remove(s, ++seq));
    r.reclaim(0, seq, final_counters);
    ASSERT_LE(r.removed_kept(), 3U);
  }
  EXPECT_TRUE(r.flow_stats(104, live));  // rounds 997, 998, 999: streams 102, 103, 104
  EXPECT_TRUE(r.flow_stats(103, live));
  EXPECT_TRUE(r.flow_stats(102, live));
  EXPECT_FALSE(r.flow_stats(101, live));

  Registry none = make(1, 2, Registry::SlotReuse::kImmediate, 0);
  ASSERT_NE(add(none, 1, 0, 5000), nullptr);
  ASSERT_TRUE(none.remove(1, 2));
  none.reclaim(0, 2, final_counters);
  EXPECT_EQ(none.flow_stats(1, live), std::nullopt) << "kept_removed 0 keeps nothing";
}

TEST(FlowRegistry, ForgetAllKeepsTheFinalCountersAndFreesEverySlotAndPort) {
  Registry r = make(2, 2, Registry::SlotReuse::kAcknowledged);
  ASSERT_NE(add(r, 1, 0, 5000, 10), nullptr);
  ASSERT_NE(add(r, 2, 1, 5002, 20), nullptr);
  ASSERT_NE(add(r, 3, 1, 5004, 30), nullptr);
  ASSERT_TRUE(r.remove(3, 3));  // never acknowledged
  r.forget_all(final_counters);
  EXPECT_EQ(r.installed(), 0U);
  EXPECT_EQ(r.find(1), nullptr);
  EXPECT_EQ(r.find_removing(3), nullptr);
  EXPECT_EQ(r.free_slots(0), 2U);
  EXPECT_EQ(r.free_slots(1), 2U);
  EXPECT_FALSE(r.port_user(5000));
  EXPECT_FALSE(r.port_user(5002));
  EXPECT_EQ(r.flow_stats(1, live)->packets, 1010U);
  EXPECT_EQ(r.flow_stats(2, live)->packets, 1020U);
  EXPECT_EQ(r.flow_stats(3, live)->packets, 1030U);
  EXPECT_EQ(r.removed_kept(), 3U);
}

}  // namespace
}  // namespace callrec::dataplane
