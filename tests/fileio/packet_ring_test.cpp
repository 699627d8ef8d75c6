// PacketRing: single-producer/single-consumer ring of variable-length records.
// Single-threaded tests pin down the contract (publish visibility, full ring, wrap-around with
// the wrap marker, consume(max)); the stress test runs a real producer and consumer thread
// (run it under -DCALLREC_TSAN=ON too) plus a statistics thread reading used_approx().
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <deque>
#include <span>
#include <thread>
#include <vector>

#include "fileio/packet_ring.hpp"

namespace callrec::fileio {
namespace {

using Bytes = std::vector<std::byte>;

/// Record content derived from its sequence number: 8-byte counter, then a pattern.
Bytes payload(std::uint64_t seq, std::size_t len) {
  Bytes b(len);
  for (std::size_t i = 0; i < len; ++i) {
    b[i] = i < 8 ? static_cast<std::byte>(seq >> (8 * i)) : static_cast<std::byte>((seq * 31 + i) & 0xFF);
  }
  return b;
}

std::size_t size_for(std::uint64_t seq) { return static_cast<std::size_t>((seq * 2654435761u) % 1500); }

struct Got {
  RingRecordHeader h;
  Bytes data;
};

std::vector<Got> drain(PacketRing& r, std::size_t max = SIZE_MAX) {
  std::vector<Got> out;
  r.consume([&](const RingRecordHeader& h, std::span<const std::byte> d) { out.push_back(Got{h, Bytes(d.begin(), d.end())}); },
            max);
  return out;
}

TEST(PacketRing, CapacityIsAPowerOfTwoOfAtLeast4096) {
  EXPECT_EQ(PacketRing(1).capacity(), 4096u);
  EXPECT_EQ(PacketRing(4096).capacity(), 4096u);
  EXPECT_EQ(PacketRing(5000).capacity(), 8192u);
}

TEST(PacketRing, RecordsBecomeVisibleOnlyAtPublish) {
  PacketRing r(4096);
  ASSERT_TRUE(r.push(7, RecordKind::kPacket, 111, payload(1, 100)));
  ASSERT_TRUE(r.push(8, RecordKind::kEndOfStream, 222, {}));
  EXPECT_TRUE(drain(r).empty()) << "nothing published yet";
  EXPECT_EQ(r.used_approx(), 0u);
  r.publish();
  const auto got = drain(r);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].h.stream, 7u);
  EXPECT_EQ(got[0].h.kind, static_cast<std::uint16_t>(RecordKind::kPacket));
  EXPECT_EQ(got[0].h.len, 100u);
  EXPECT_EQ(got[0].h.rx_ns, 111u);
  EXPECT_EQ(got[0].data, payload(1, 100));
  EXPECT_EQ(got[1].h.stream, 8u);
  EXPECT_EQ(got[1].h.kind, static_cast<std::uint16_t>(RecordKind::kEndOfStream));
  EXPECT_TRUE(got[1].data.empty());
  EXPECT_TRUE(drain(r).empty());
  EXPECT_EQ(r.used_approx(), 0u);
}

TEST(PacketRing, FullRingRefusesUntilTheConsumerReleasesSpace) {
  PacketRing r(4096);
  // 1000 bytes + 16 header = 1016 per record: 4 fit (4064), a 5th does not.
  for (std::uint64_t i = 0; i < 4; ++i) ASSERT_TRUE(r.push(1, RecordKind::kPacket, i, payload(i, 1000))) << i;
  EXPECT_FALSE(r.push(1, RecordKind::kPacket, 4, payload(4, 1000)));
  r.publish();
  EXPECT_FALSE(r.push(1, RecordKind::kPacket, 4, payload(4, 1000))) << "published but not consumed";
  EXPECT_EQ(r.used_approx(), 4u * 1016);
  ASSERT_EQ(drain(r, 1).size(), 1u);
  EXPECT_TRUE(r.push(1, RecordKind::kPacket, 4, payload(4, 1000))) << "space released by consume";
  // Records larger than half the ring, or than a 16-bit length, are refused outright.
  PacketRing big(1 << 20);
  EXPECT_FALSE(r.push(1, RecordKind::kPacket, 0, payload(0, 2048)));
  EXPECT_FALSE(big.push(1, RecordKind::kPacket, 0, payload(0, 0x10000)));
  EXPECT_TRUE(big.push(1, RecordKind::kPacket, 0, payload(0, 0xFFFF)));
}

TEST(PacketRing, ConsumeHonoursMax) {
  PacketRing r(4096);
  for (std::uint64_t i = 0; i < 5; ++i) ASSERT_TRUE(r.push(1, RecordKind::kPacket, i, payload(i, 10)));
  r.publish();
  auto a = drain(r, 2);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[1].h.rx_ns, 1u);
  auto b = drain(r);
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b[0].h.rx_ns, 2u);
  EXPECT_EQ(drain(r, 0).size(), 0u);
}

// Zero-copy records: the consumer sees an ordinary packet whose bytes are the producer's, and
// the producer learns from released_position() exactly which referenced bytes it may reuse.
TEST(PacketRing, ReferenceRecordsReadAsPacketsAndReleaseInOrder) {
  PacketRing r(4096);
  const Bytes a = payload(1, 172);
  const Bytes b = payload(2, 60);
  ASSERT_TRUE(r.push_ref(5, 100, a.data(), static_cast<std::uint16_t>(a.size())));
  const std::uint64_t end_a = r.position_after();
  ASSERT_TRUE(r.push(6, RecordKind::kPacket, 101, payload(3, 40)));  // copies mix with refs
  ASSERT_TRUE(r.push_ref(7, 102, b.data(), static_cast<std::uint16_t>(b.size())));
  const std::uint64_t end_b = r.position_after();
  EXPECT_LT(end_a, end_b);
  r.publish();
  EXPECT_LT(r.released_position(), end_a) << "nothing consumed yet";

  std::vector<const std::byte*> ptrs;
  auto got = std::vector<Got>{};
  ASSERT_EQ(r.consume(
                [&](const RingRecordHeader& h, std::span<const std::byte> d) {
                  ptrs.push_back(d.data());
                  got.push_back(Got{h, Bytes(d.begin(), d.end())});
                },
                1),
            1u);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].h.kind, static_cast<std::uint16_t>(RecordKind::kPacket)) << "consumers never see kPacketRef";
  EXPECT_EQ(got[0].h.stream, 5u);
  EXPECT_EQ(got[0].h.rx_ns, 100u);
  EXPECT_EQ(got[0].h.len, 172u);
  EXPECT_EQ(ptrs[0], a.data()) << "the bytes were not copied";
  EXPECT_EQ(got[0].data, a);
  EXPECT_GE(r.released_position(), end_a);
  EXPECT_LT(r.released_position(), end_b) << "b is still referenced by an unconsumed record";

  std::array<RingRecord, 8> recs{};
  ASSERT_EQ(r.consume_bulk(recs, [&](std::span<const RingRecord> rs) {
    ASSERT_EQ(rs.size(), 2u);
    EXPECT_EQ(rs[0].h.stream, 6u);
    EXPECT_EQ(rs[0].h.len, 40u);
    EXPECT_EQ(Bytes(rs[0].bytes().begin(), rs[0].bytes().end()), payload(3, 40));
    EXPECT_EQ(rs[1].h.kind, static_cast<std::uint16_t>(RecordKind::kPacket));
    EXPECT_EQ(rs[1].h.stream, 7u);
    EXPECT_EQ(rs[1].data, b.data());
    EXPECT_EQ(rs[1].h.len, 60u);
    EXPECT_LT(r.released_position(), end_b) << "released only after the callback returns";
  }),
            2u);
  EXPECT_GE(r.released_position(), end_b);
  EXPECT_EQ(r.used_approx(), 0u);
}

// Many trips around a small ring with sizes 0..1499: the wrap marker, records ending exactly at
// the end, and 8-byte tails must all round-trip in order.
TEST(PacketRing, WrapAroundWithVariableSizesKeepsOrderAndContent) {
  PacketRing r(4096);
  std::deque<std::uint64_t> in_flight;
  std::uint64_t next_push = 0;
  std::uint64_t next_pop = 0;
  std::uint64_t refused = 0;
  std::uint64_t x = 1;
  while (next_pop < 20000) {
    // Push a random number of records (until full), publish, consume a random number.
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    const int pushes = static_cast<int>((x >> 33) % 6);
    for (int i = 0; i < pushes; ++i) {
      if (!r.push(static_cast<StreamId>(next_push), RecordKind::kPacket, next_push,
                  payload(next_push, size_for(next_push)))) {
        ++refused;
        break;
      }
      in_flight.push_back(next_push++);
    }
    r.publish();
    EXPECT_LE(r.used_approx(), r.capacity());
    const std::size_t max = static_cast<std::size_t>((x >> 40) % 4) + 1;
    for (const auto& g : drain(r, max)) {
      ASSERT_FALSE(in_flight.empty());
      const std::uint64_t want = in_flight.front();
      in_flight.pop_front();
      ASSERT_EQ(g.h.rx_ns, want);
      ASSERT_EQ(g.h.stream, static_cast<StreamId>(want));
      ASSERT_EQ(g.data, payload(want, size_for(want))) << "record " << want;
      ++next_pop;
    }
  }
  EXPECT_GT(refused, 0u) << "the test should also have filled the ring";
  EXPECT_GT(next_pop * 16, 50u * r.capacity()) << "many trips around the ring";
}

TEST(PacketRing, RecordEndingExactlyAtTheBufferEndAndEightByteTail) {
  PacketRing r(4096);
  // First fill up to 4096 - 8 = 4088 bytes so the next record must wrap with only 8 bytes left.
  ASSERT_TRUE(r.push(1, RecordKind::kPacket, 1, payload(1, 2048 - 16)));   // 2048
  ASSERT_TRUE(r.push(1, RecordKind::kPacket, 2, payload(2, 2040 - 16)));   // 2040 -> at 4088
  r.publish();
  ASSERT_EQ(drain(r).size(), 2u);
  ASSERT_TRUE(r.push(1, RecordKind::kPacket, 3, payload(3, 100)));  // wraps: marker in 8 bytes
  ASSERT_TRUE(r.push(1, RecordKind::kPacket, 4, payload(4, 1000)));
  r.publish();
  auto got = drain(r);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].data, payload(3, 100));
  EXPECT_EQ(got[1].data, payload(4, 1000));
  // Now a record that ends exactly at the end of the buffer, then one at offset 0.
  PacketRing e(4096);
  ASSERT_TRUE(e.push(1, RecordKind::kPacket, 1, payload(1, 2048 - 16)));
  ASSERT_TRUE(e.push(1, RecordKind::kPacket, 2, payload(2, 2048 - 16)));  // ends at 4096
  e.publish();
  ASSERT_EQ(drain(e, 1).size(), 1u);
  ASSERT_TRUE(e.push(1, RecordKind::kPacket, 3, payload(3, 500)));
  e.publish();
  // The consumer re-reads head only when its cached view is empty (packet_ring.hpp): this call
  // sees record 2 (cached), the next one record 3.
  got = drain(e);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].data, payload(2, 2048 - 16));
  got = drain(e);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].data, payload(3, 500));
  EXPECT_EQ(e.used_approx(), 0u);
}

// One producer, one consumer, one statistics reader. The consumer checks every record's order
// and content; the statistics thread checks used_approx() never exceeds the capacity.
TEST(PacketRing, TwoThreadStress) {
#if defined(__SANITIZE_THREAD__)
  constexpr std::uint64_t kRecords = 100000;
#else
  constexpr std::uint64_t kRecords = 1000000;
#endif
  constexpr std::size_t kBurst = 32;
  PacketRing r(16384);
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> bad_stats{0};
  std::uint64_t full_spins = 0;

  std::thread producer([&] {
    std::vector<std::byte> buf(400);
    std::uint64_t seq = 0;
    while (seq < kRecords) {
      std::size_t n = 0;
      while (n < kBurst && seq < kRecords) {
        const std::size_t len = 8 + size_for(seq) % 300;
        for (std::size_t i = 0; i < len; ++i) {
          buf[i] = i < 8 ? static_cast<std::byte>(seq >> (8 * i)) : static_cast<std::byte>((seq * 31 + i) & 0xFF);
        }
        if (!r.push(static_cast<StreamId>(seq & 0xFFFF), RecordKind::kPacket, seq, std::span(buf.data(), len))) break;
        ++seq;
        ++n;
      }
      r.publish();
      if (n == 0) {
        ++full_spins;
        std::this_thread::yield();
      }
    }
  });
  std::thread stats([&] {
    while (!done.load(std::memory_order_relaxed)) {
      for (int i = 0; i < 64; ++i) {
        if (r.used_approx() > r.capacity()) bad_stats.fetch_add(1, std::memory_order_relaxed);
      }
      std::this_thread::yield();  // 2 shared cores: let producer and consumer run
    }
  });

  std::uint64_t expect = 0;
  std::uint64_t errors = 0;
  while (expect < kRecords) {
    const std::size_t got = r.consume(
        [&](const RingRecordHeader& h, std::span<const std::byte> d) {
          std::uint64_t counter = 0;
          if (d.size() >= 8) std::memcpy(&counter, d.data(), 8);
          const std::size_t len = 8 + size_for(expect) % 300;
          bool ok = h.rx_ns == expect && counter == expect && d.size() == len &&
                    h.stream == static_cast<StreamId>(expect & 0xFFFF);
          for (std::size_t i = 8; ok && i < d.size(); ++i) {
            ok = d[i] == static_cast<std::byte>((expect * 31 + i) & 0xFF);
          }
          if (!ok) ++errors;
          ++expect;
        },
        64);
    if (got == 0) std::this_thread::yield();
    if (errors > 0) break;
  }
  done.store(true);
  producer.join();
  stats.join();
  EXPECT_EQ(errors, 0u) << "first bad record near " << expect;
  EXPECT_EQ(expect, kRecords);
  EXPECT_EQ(bad_stats.load(), 0u) << "used_approx() exceeded the capacity";
  EXPECT_EQ(r.used_approx(), 0u);
  RecordProperty("producer_full_spins", static_cast<int>(full_spins));
}

TEST(RingMatrix, OneRingPerProducerWriterPair) {
  RingMatrix m(2, 3, 4096);
  EXPECT_EQ(m.producers(), 2u);
  EXPECT_EQ(m.writers(), 3u);
  EXPECT_EQ(m.writer_for(7), 1u);
  EXPECT_NE(&m.ring(0, 0), &m.ring(1, 0));
  EXPECT_NE(&m.ring(0, 1), &m.ring(0, 2));
  ASSERT_TRUE(m.ring(1, 2).push(5, RecordKind::kPacket, 1, payload(1, 10)));
  m.ring(1, 2).publish();
  EXPECT_EQ(drain(m.ring(1, 2)).size(), 1u);
  EXPECT_EQ(drain(m.ring(0, 2)).size(), 0u);
  RingMatrix z(0, 0, 4096);  // clamped to 1 x 1
  EXPECT_EQ(z.producers(), 1u);
  EXPECT_EQ(z.writers(), 1u);
}

}  // namespace
}  // namespace callrec::fileio
