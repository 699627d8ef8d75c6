// StreamAssembler: ordering, duplicates, late packets, silence fill, wrap-around, segments,
// re-synchronisation and foreign payload types, observed through a recording sink.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "fileio/record_format.hpp"
#include "fileio/rtp.hpp"
#include "fileio/stream_assembler.hpp"

namespace callrec::fileio {
namespace {

using Bytes = std::vector<std::byte>;
constexpr std::uint32_t kSsrc = 0x11223344;
constexpr std::uint8_t kPtPcmu = 0;
constexpr std::uint8_t kPtPcma = 8;

struct Pkt {
  std::uint16_t seq = 0;
  std::uint32_t ts = 0;
  std::uint8_t pt = kPtPcma;
  std::uint32_t ssrc = kSsrc;
  std::size_t payload = 160;
  bool marker = false;
};

/// An RTP packet with a payload that identifies it (byte i = seq + i), never the silence byte run.
Bytes rtp(const Pkt& p) {
  Bytes b(12 + p.payload);
  write_rtp_header(b.data(), p.pt, p.marker, p.seq, p.ts, p.ssrc);
  for (std::size_t i = 0; i < p.payload; ++i) b[12 + i] = static_cast<std::byte>((p.seq + i) & 0x7F);
  return b;
}

/// Shorthand: PCMA packet number n of a stream starting at seq0/ts0 (20 ms, ts step 160).
Bytes pcma(std::uint16_t seq, std::uint32_t ts) { return rtp(Pkt{seq, ts}); }

struct Out {
  bool segment = false;
  SegmentFormat fmt{Codec::kPcmu, 0, 0};
  Bytes pkt;
  [[nodiscard]] std::uint16_t seq() const { return load_be16(pkt.data() + 2); }
  [[nodiscard]] std::uint32_t ts() const { return load_be32(pkt.data() + 4); }
};

class RecordingSink : public AssemblerSink {
 public:
  void on_segment(const SegmentFormat& fmt) override { out.push_back(Out{true, fmt, {}}); }
  void on_packet(std::span<const std::byte> pkt) override { out.push_back(Out{false, {}, Bytes(pkt.begin(), pkt.end())}); }

  [[nodiscard]] std::vector<const Out*> packets() const {
    std::vector<const Out*> v;
    for (const auto& o : out) {
      if (!o.segment) v.push_back(&o);
    }
    return v;
  }
  [[nodiscard]] std::vector<std::uint16_t> seqs() const {
    std::vector<std::uint16_t> v;
    for (const auto* o : packets()) v.push_back(o->seq());
    return v;
  }
  [[nodiscard]] std::vector<SegmentFormat> segments() const {
    std::vector<SegmentFormat> v;
    for (const auto& o : out) {
      if (o.segment) v.push_back(o.fmt);
    }
    return v;
  }
  std::vector<Out> out;
};

bool is_silence(const Out& o, std::uint8_t silence) {
  if (o.pkt.size() <= 12) return false;
  for (std::size_t i = 12; i < o.pkt.size(); ++i) {
    if (std::to_integer<std::uint8_t>(o.pkt[i]) != silence) return false;
  }
  return true;
}

std::vector<std::uint16_t> range(std::uint16_t first, std::size_t n) {
  std::vector<std::uint16_t> v;
  for (std::size_t i = 0; i < n; ++i) v.push_back(static_cast<std::uint16_t>(first + i));
  return v;
}

class AssemblerTest : public ::testing::Test {
 protected:
  void feed(std::uint16_t seq, std::uint32_t ts) { a_.push(pcma(seq, ts), sink_); }
  /// Feeds packets with seq0 + i and the matching timestamp ts0 + 160 i, for i in order.
  void feed_offsets(std::uint16_t seq0, std::uint32_t ts0, std::initializer_list<int> offs) {
    for (int i : offs) {
      feed(static_cast<std::uint16_t>(seq0 + i), ts0 + 160u * static_cast<std::uint32_t>(i));
    }
  }
  StreamAssembler a_;
  RecordingSink sink_;
};

// ---- ordering --------------------------------------------------------------------------------

TEST_F(AssemblerTest, InOrderPacketsPassThroughUnchanged) {
  std::vector<Bytes> sent;
  for (std::uint16_t i = 0; i < 20; ++i) {
    sent.push_back(pcma(static_cast<std::uint16_t>(100 + i), 1000u + 160u * i));
    a_.push(sent.back(), sink_);
  }
  ASSERT_EQ(sink_.out.size(), 21u);
  ASSERT_TRUE(sink_.out[0].segment);
  EXPECT_EQ(sink_.out[0].fmt.codec, Codec::kPcma);
  EXPECT_EQ(sink_.out[0].fmt.rtp_len, 172u);
  EXPECT_EQ(sink_.out[0].fmt.increment, 160u);
  for (std::size_t i = 0; i < sent.size(); ++i) EXPECT_EQ(sink_.out[i + 1].pkt, sent[i]) << i;
  const auto& c = a_.counters();
  EXPECT_EQ(c.received, 20u);
  EXPECT_EQ(c.written, 20u);
  EXPECT_EQ(c.segments, 1u);
  EXPECT_EQ(c.lost + c.filled + c.duplicate + c.reordered + c.late + c.invalid + c.other_payload + c.resyncs, 0u);
  ASSERT_TRUE(a_.format().has_value());
  EXPECT_EQ(a_.format()->rtp_len, 172u);
}

TEST_F(AssemblerTest, ReorderWithinTheWindowIsPutBackInOrder) {
  feed_offsets(10, 0, {0, 1, 3, 2, 4, 7, 5, 6, 8});
  EXPECT_EQ(sink_.seqs(), range(10, 9));
  const auto& c = a_.counters();
  EXPECT_EQ(c.reordered, 3u);  // 2 after 3; 5 and 6 after 7
  EXPECT_EQ(c.written, 9u);
  EXPECT_EQ(c.lost, 0u);
  EXPECT_EQ(c.filled, 0u);
  // The packets are the originals, not copies with altered bytes.
  EXPECT_EQ(sink_.packets()[2]->pkt, pcma(12, 2 * 160));
}

TEST_F(AssemblerTest, HeldPacketsWaitUntilTheWindowIsFullThenTheHoleBecomesSilence) {
  AssemblerOptions o;
  o.reorder_window = 4;
  StreamAssembler a(o);
  RecordingSink sink;
  a.push(pcma(0, 0), sink);
  for (std::uint16_t s = 2; s <= 5; ++s) a.push(pcma(s, 160u * s), sink);  // 1 missing, 4 held
  EXPECT_EQ(sink.seqs(), std::vector<std::uint16_t>{0}) << "the window holds 4 packets";
  a.push(pcma(6, 960), sink);  // a 5th: packet 1 is given up
  EXPECT_EQ(sink.seqs(), range(0, 7));
  const auto pk = sink.packets();
  EXPECT_TRUE(is_silence(*pk[1], 0xD5));
  EXPECT_EQ(a.counters().lost, 1u);
  EXPECT_EQ(a.counters().filled, 1u);
  a.push(pcma(1, 160), sink);  // too late now
  EXPECT_EQ(a.counters().late, 1u);
  EXPECT_EQ(sink.packets().size(), 7u);
}

// ---- duplicates and late packets -----------------------------------------------------------

TEST_F(AssemblerTest, DuplicatesAreDropped) {
  feed_offsets(500, 0, {0, 1, 1, 2, 4, 4, 3, 2, 0});
  EXPECT_EQ(sink_.seqs(), range(500, 5));
  const auto& c = a_.counters();
  EXPECT_EQ(c.duplicate, 4u);  // 1 again, 4 while held, 2 and 0 after emission
  EXPECT_EQ(c.late, 0u);
  EXPECT_EQ(c.written, 5u);
}

TEST_F(AssemblerTest, LatePacketIsDroppedAndToldApartFromADuplicate) {
  feed_offsets(0, 0, {0, 1});
  // 2 is lost; 3..11 arrive; with the default window of 8, 2 is given up at 11.
  for (int i = 3; i <= 11; ++i) feed(static_cast<std::uint16_t>(i), 160u * static_cast<std::uint32_t>(i));
  EXPECT_EQ(sink_.seqs(), range(0, 12));
  EXPECT_TRUE(is_silence(*sink_.packets()[2], 0xD5));
  feed(2, 320);  // its place was filled: late
  feed(5, 800);  // emitted long ago: duplicate
  const auto& c = a_.counters();
  EXPECT_EQ(c.late, 1u);
  EXPECT_EQ(c.duplicate, 1u);
  EXPECT_EQ(sink_.packets().size(), 12u);
}

// ---- gaps ----------------------------------------------------------------------------------

TEST_F(AssemblerTest, GapIsFilledWithSilenceBuiltFromThePreviousHeader) {
  Pkt first{1000, 5000, kPtPcma, kSsrc, 160, false};
  Bytes b = rtp(first);
  b[0] |= std::byte{0x20};   // padding bit with a valid pad count in the last byte
  b.back() = std::byte{1};
  AssemblerOptions o;
  o.reorder_window = 2;
  StreamAssembler a(o);
  RecordingSink sink;
  a.push(b, sink);
  Pkt later{1004, 5000 + 4 * 160, kPtPcma, kSsrc, 160, true};  // 1001..1003 lost
  // Keep the length: the first packet has 159 payload bytes + 1 pad byte (increment 159).
  Bytes lb = rtp(later);
  lb[0] |= std::byte{0x20};
  lb.back() = std::byte{1};
  a.push(lb, sink);
  Pkt p5{1005, 5000 + 5 * 160};
  Bytes b5 = rtp(p5);
  b5[0] |= std::byte{0x20};
  b5.back() = std::byte{1};
  a.push(b5, sink);
  Pkt p6{1006, 5000 + 6 * 160};
  Bytes b6 = rtp(p6);
  b6[0] |= std::byte{0x20};
  b6.back() = std::byte{1};
  a.push(b6, sink);  // 1004, 1005 held (window 2) -> 1006 forces the gap out
  const auto pk = sink.packets();
  ASSERT_EQ(pk.size(), 7u);
  EXPECT_EQ(sink.seqs(), range(1000, 7));
  ASSERT_EQ(sink.segments().size(), 1u);
  EXPECT_EQ(sink.segments()[0].increment, 159u) << "increment excludes RTP padding";
  for (int k = 1; k <= 3; ++k) {
    const Out& s = *pk[static_cast<std::size_t>(k)];
    EXPECT_EQ(s.pkt.size(), 172u);
    EXPECT_EQ(s.seq(), 1000 + k);
    EXPECT_EQ(s.ts(), 5000u + 159u * static_cast<std::uint32_t>(k)) << "ts = last ts + k * increment";
    EXPECT_EQ(std::to_integer<unsigned>(s.pkt[0]), 0x80u) << "version kept, padding bit cleared";
    EXPECT_EQ(std::to_integer<unsigned>(s.pkt[1]), 8u) << "payload type kept, marker cleared";
    EXPECT_EQ(load_be32(s.pkt.data() + 8), kSsrc);
    EXPECT_TRUE(is_silence(s, 0xD5)) << "PCMA silence, also in the former padding byte";
  }
  EXPECT_EQ(pk[4]->pkt, lb);
  const auto& c = a.counters();
  EXPECT_EQ(c.lost, 3u);
  EXPECT_EQ(c.filled, 3u);
  EXPECT_EQ(c.written, 4u);
}

TEST_F(AssemblerTest, PcmuSilenceIsFF) {
  a_.push(rtp(Pkt{1, 0, kPtPcmu}), sink_);
  for (std::uint16_t s = 3; s <= 11; ++s) a_.push(rtp(Pkt{s, 160u * (s - 1u), kPtPcmu}), sink_);
  ASSERT_GE(sink_.packets().size(), 2u);
  EXPECT_EQ(sink_.packets()[1]->seq(), 2);
  EXPECT_TRUE(is_silence(*sink_.packets()[1], 0xFF));
}

TEST_F(AssemblerTest, GapLongerThanTheBoundIsCountedButNotFilled) {
  AssemblerOptions o;
  o.max_gap_fill = 5;
  StreamAssembler a(o);
  RecordingSink sink;
  a.push(pcma(0, 0), sink);
  a.push(pcma(7, 7 * 160), sink);  // 6 missing > 5
  for (std::uint16_t s = 8; s < 8 + 8; ++s) a.push(pcma(s, 160u * s), sink);
  auto seqs = sink.seqs();
  ASSERT_FALSE(seqs.empty());
  EXPECT_EQ(seqs[0], 0);
  EXPECT_EQ(seqs[1], 7) << "no silence for a gap longer than max_gap_fill";
  EXPECT_EQ(a.counters().lost, 6u);
  EXPECT_EQ(a.counters().filled, 0u);

  // Exactly the bound: filled.
  StreamAssembler b(o);
  RecordingSink sink2;
  b.push(pcma(0, 0), sink2);
  for (std::uint16_t s = 6; s < 6 + 9; ++s) b.push(pcma(s, 160u * s), sink2);
  EXPECT_EQ(sink2.seqs(), range(0, 15));
  EXPECT_EQ(b.counters().lost, 5u);
  EXPECT_EQ(b.counters().filled, 5u);
}

// ---- wrap-around ---------------------------------------------------------------------------

TEST_F(AssemblerTest, SequenceWrapWithReorderAcrossIt) {
  // 65533 65534 0 65535 1 3 2 4
  const std::uint32_t ts0 = 100000;
  feed_offsets(65533, ts0, {0, 1, 3, 2, 4, 6, 5, 7});
  EXPECT_EQ(sink_.seqs(), (std::vector<std::uint16_t>{65533, 65534, 65535, 0, 1, 2, 3, 4}));
  EXPECT_EQ(a_.counters().reordered, 2u);
  EXPECT_EQ(a_.counters().lost, 0u);
  EXPECT_EQ(a_.counters().resyncs, 0u);
  // A duplicate of a pre-wrap packet is still recognised after the wrap.
  feed(65534, ts0 + 160);
  EXPECT_EQ(a_.counters().duplicate, 1u);
}

TEST_F(AssemblerTest, GapAcrossSequenceAndTimestampWrap) {
  AssemblerOptions o;
  o.reorder_window = 1;
  StreamAssembler a(o);
  RecordingSink sink;
  const std::uint32_t ts0 = 0xFFFFFFFFu - 159u - 160u;  // ts0 + 2*160 wraps to 0
  a.push(pcma(65534, ts0), sink);
  a.push(pcma(1, ts0 + 3 * 160), sink);  // 65535 and 0 missing
  a.push(pcma(2, ts0 + 4 * 160), sink);  // forces them out
  const auto pk = sink.packets();
  ASSERT_EQ(pk.size(), 5u);
  EXPECT_EQ(sink.seqs(), (std::vector<std::uint16_t>{65534, 65535, 0, 1, 2}));
  EXPECT_EQ(pk[1]->ts(), 0xFFFFFFFFu - 159u);
  EXPECT_EQ(pk[2]->ts(), 0u) << "silence timestamp wraps modulo 2^32";
  EXPECT_TRUE(is_silence(*pk[2], 0xD5));
  EXPECT_EQ(a.counters().filled, 2u);
}

// ---- segments ------------------------------------------------------------------------------

TEST_F(AssemblerTest, LengthChangeStartsANewSegment) {
  a_.push(rtp(Pkt{1, 0}), sink_);
  a_.push(rtp(Pkt{2, 160}), sink_);
  a_.push(rtp(Pkt{3, 320, kPtPcma, kSsrc, 240}), sink_);  // ptime 20 -> 30 ms
  a_.push(rtp(Pkt{4, 560, kPtPcma, kSsrc, 240}), sink_);
  const auto segs = sink_.segments();
  ASSERT_EQ(segs.size(), 2u);
  EXPECT_EQ(segs[1].rtp_len, 252u);
  EXPECT_EQ(segs[1].increment, 240u);
  ASSERT_EQ(sink_.out.size(), 6u);
  EXPECT_TRUE(sink_.out[3].segment) << "the segment mark precedes the first packet of the new length";
  EXPECT_EQ(sink_.out[4].seq(), 3);
  EXPECT_EQ(sink_.out[4].pkt.size(), 252u);
  EXPECT_EQ(a_.counters().segments, 2u);
  EXPECT_EQ(a_.counters().written, 4u);
}

TEST_F(AssemblerTest, PayloadTypeChangeStartsANewSegmentAndHeldPacketsStayInTheOld) {
  a_.push(rtp(Pkt{1, 0, kPtPcma}), sink_);
  a_.push(rtp(Pkt{3, 320, kPtPcma}), sink_);  // held: 2 missing
  a_.push(rtp(Pkt{4, 480, kPtPcmu}), sink_);  // PCMA -> PCMU
  a_.push(rtp(Pkt{5, 640, kPtPcmu}), sink_);
  ASSERT_EQ(sink_.out.size(), 7u);
  EXPECT_TRUE(sink_.out[0].segment);
  EXPECT_EQ(sink_.out[0].fmt.codec, Codec::kPcma);
  EXPECT_EQ(sink_.out[1].seq(), 1);
  EXPECT_EQ(sink_.out[2].seq(), 2);
  EXPECT_TRUE(is_silence(sink_.out[2], 0xD5)) << "the hole before the held packet: PCMA silence";
  EXPECT_EQ(sink_.out[3].seq(), 3) << "the held PCMA packet ends the PCMA segment";
  EXPECT_TRUE(sink_.out[4].segment);
  EXPECT_EQ(sink_.out[4].fmt.codec, Codec::kPcmu);
  EXPECT_EQ(sink_.out[5].seq(), 4);
  EXPECT_EQ(sink_.out[6].seq(), 5);
  EXPECT_EQ(std::to_integer<unsigned>(sink_.out[5].pkt[1]) & 0x7F, 0u);
  EXPECT_EQ(std::to_integer<unsigned>(sink_.out[6].pkt[1]) & 0x7F, 0u);
  // Nothing of the wrong format in a segment: every packet has its segment's length and PT.
  SegmentFormat cur{};
  for (const auto& o : sink_.out) {
    if (o.segment) {
      cur = o.fmt;
      continue;
    }
    EXPECT_EQ(o.pkt.size(), cur.rtp_len);
    EXPECT_EQ(std::to_integer<unsigned>(o.pkt[1]) & 0x7F, codec_info(cur.codec).payload_type);
  }
  EXPECT_EQ(a_.counters().segments, 2u);
}

// ---- resync --------------------------------------------------------------------------------

TEST_F(AssemblerTest, SsrcChangeResyncsAtOnce) {
  feed_offsets(10, 0, {0, 1, 3});  // 3 held
  a_.push(rtp(Pkt{40000, 777, kPtPcma, 0xABCDEF01}), sink_);
  a_.push(rtp(Pkt{40001, 937, kPtPcma, 0xABCDEF01}), sink_);
  EXPECT_EQ(sink_.seqs(), (std::vector<std::uint16_t>{10, 11, 12, 13, 40000, 40001}))
      << "the held packet is flushed, the hole before it filled; then the new source";
  EXPECT_EQ(a_.counters().resyncs, 1u);
  EXPECT_EQ(a_.counters().segments, 1u) << "same format: same segment";
  EXPECT_EQ(a_.counters().lost, 1u);   // 12, between held packets at the flush
  EXPECT_EQ(a_.counters().filled, 1u);
  EXPECT_TRUE(is_silence(*sink_.packets()[2], 0xD5));
}

TEST_F(AssemblerTest, BigForwardJumpNeedsTheNextPacketToConfirmIt) {
  feed_offsets(100, 0, {0, 1, 2});
  feed(20000, 999999);  // a stray packet far ahead
  feed(103, 3 * 160);   // the stream goes on: the stray one is dropped
  feed(104, 4 * 160);
  EXPECT_EQ(sink_.seqs(), range(100, 5));
  EXPECT_EQ(a_.counters().resyncs, 0u);
  EXPECT_EQ(a_.counters().invalid, 1u) << "an unconfirmed forward probe is counted invalid";

  feed(30000, 5000000);  // a real restart: confirmed by the next packet
  feed(30001, 5000160);
  feed(30002, 5000320);
  EXPECT_EQ(sink_.seqs(), (std::vector<std::uint16_t>{100, 101, 102, 103, 104, 30000, 30001, 30002}));
  EXPECT_EQ(a_.counters().resyncs, 1u);
  EXPECT_EQ(a_.counters().lost, 0u) << "no silence for a re-synchronisation";
  EXPECT_EQ(a_.counters().filled, 0u);
}

TEST_F(AssemblerTest, BigBackwardJumpNeedsConfirmationToo) {
  feed_offsets(5000, 0, {0, 1, 2});
  feed(1000, 42);  // far behind (beyond the 64-packet history): probation
  feed(5003, 3 * 160);
  EXPECT_EQ(a_.counters().late, 1u) << "an unconfirmed backward probe is late";
  feed(1000, 42);
  feed(1001, 202);
  EXPECT_EQ(sink_.seqs(), (std::vector<std::uint16_t>{5000, 5001, 5002, 5003, 1000, 1001}));
  EXPECT_EQ(a_.counters().resyncs, 1u);
}

TEST_F(AssemblerTest, ForwardJumpWithinResyncAfterIsAGapNotAResync) {
  AssemblerOptions o;
  o.max_gap_fill = 50;
  o.resync_after = 100;
  StreamAssembler a(o);
  RecordingSink sink;
  a.push(pcma(0, 0), sink);
  a.push(pcma(81, 81 * 160), sink);  // 80 missing: beyond the fill bound, within resync_after
  EXPECT_EQ(sink.seqs(), (std::vector<std::uint16_t>{0, 81}));
  EXPECT_EQ(a.counters().lost, 80u);
  EXPECT_EQ(a.counters().resyncs, 0u);
}

// ---- other payloads, invalid packets -------------------------------------------------------

TEST_F(AssemblerTest, ComfortNoiseAndTelephoneEventsAreDroppedAndTheirSeqsBecomeSilence) {
  feed_offsets(0, 0, {0, 1});
  a_.push(rtp(Pkt{2, 320, 13, kSsrc, 1}), sink_);    // CN
  a_.push(rtp(Pkt{3, 480, 101, kSsrc, 4}), sink_);   // telephone-event
  for (std::uint16_t s = 4; s < 13; ++s) feed(s, 160u * s);
  EXPECT_EQ(sink_.seqs(), range(0, 13));
  const auto pk = sink_.packets();
  EXPECT_TRUE(is_silence(*pk[2], 0xD5));
  EXPECT_TRUE(is_silence(*pk[3], 0xD5));
  EXPECT_EQ(pk[2]->ts(), 320u);
  EXPECT_EQ(pk[3]->ts(), 480u);
  const auto& c = a_.counters();
  EXPECT_EQ(c.other_payload, 2u);
  EXPECT_EQ(c.filled, 2u);
  EXPECT_EQ(c.segments, 1u) << "foreign payload types never start a segment";
}

TEST_F(AssemblerTest, InvalidPacketsAreCountedAndIgnored) {
  feed(1, 0);
  Bytes short_pkt(11, std::byte{0x80});
  a_.push(short_pkt, sink_);
  Bytes v1 = pcma(2, 160);
  v1[0] = std::byte{0x40};  // RTP version 1
  a_.push(v1, sink_);
  a_.push(rtp(Pkt{2, 160, kPtPcma, kSsrc, 0}), sink_);  // no payload
  Bytes bad_pad = pcma(2, 160);
  bad_pad[0] |= std::byte{0x20};
  bad_pad.back() = std::byte{200};  // more padding than payload
  a_.push(bad_pad, sink_);
  Bytes cc = pcma(2, 160);
  cc[0] |= std::byte{0x0F};  // 15 CSRCs announced, 160 bytes present: parses; 100 bytes: truncated
  cc.resize(40);
  a_.push(cc, sink_);
  a_.push({}, sink_);
  feed(2, 160);
  EXPECT_EQ(sink_.seqs(), (std::vector<std::uint16_t>{1, 2}));
  EXPECT_EQ(a_.counters().invalid, 6u);
  EXPECT_EQ(a_.counters().received, 8u);
}

// ---- flush ---------------------------------------------------------------------------------

TEST_F(AssemblerTest, FlushEmitsHeldPacketsFillingHolesAndForgetsTheSequence) {
  feed_offsets(0, 0, {0, 2, 4, 5});  // 1 and 3 missing; 2, 4, 5 held
  EXPECT_EQ(sink_.seqs(), std::vector<std::uint16_t>{0});
  a_.flush(sink_);
  EXPECT_EQ(sink_.seqs(), range(0, 6));
  EXPECT_TRUE(is_silence(*sink_.packets()[1], 0xD5));
  EXPECT_TRUE(is_silence(*sink_.packets()[3], 0xD5));
  EXPECT_EQ(a_.counters().filled, 2u);
  // After a flush (pause/resume) the next packet starts a new sequence: no fill for the jump.
  feed(1000, 999);
  feed(1001, 1159);
  EXPECT_EQ(sink_.seqs().back(), 1001);
  EXPECT_EQ(sink_.packets().size(), 8u);
  EXPECT_EQ(a_.counters().filled, 2u);
  EXPECT_EQ(a_.counters().resyncs, 0u);
  EXPECT_EQ(a_.counters().segments, 1u) << "same format after flush: same segment";
  // Flushing twice, or with nothing held, emits nothing.
  const auto n = sink_.out.size();
  a_.flush(sink_);
  a_.flush(sink_);
  EXPECT_EQ(sink_.out.size(), n);
}

TEST_F(AssemblerTest, CountersAddUp) {
  // Every received packet is accounted for once: written, duplicate, late, invalid, other, or held.
  std::uint32_t x = 12345;
  auto rnd = [&x] { return x = x * 1103515245u + 12345u, (x >> 16) & 0x7FFF; };
  for (std::uint16_t i = 0; i < 2000; ++i) {
    const auto r = rnd() % 100;
    std::uint16_t s = i;
    if (r < 3) continue;                                      // lost
    if (r < 6) {
      s = static_cast<std::uint16_t>(i + 3);  // early (and again later: a duplicate)
    } else if (r < 8) {
      s = static_cast<std::uint16_t>(i > 20 ? i - 20 : i);  // old
    }
    feed(s, 160u * s);
  }
  a_.flush(sink_);
  const auto& c = a_.counters();
  EXPECT_EQ(c.received, c.written + c.duplicate + c.late + c.invalid + c.other_payload);
  EXPECT_LE(c.filled, c.lost);
  EXPECT_EQ(sink_.packets().size(), c.written + c.filled);
  // Output sequence numbers strictly increase by one, except where a gap was not filled.
  const auto seqs = sink_.seqs();
  for (std::size_t i = 1; i < seqs.size(); ++i) EXPECT_EQ(static_cast<std::uint16_t>(seqs[i] - seqs[i - 1]), 1u) << i;
}


// Randomised network: jitter (reordering), duplicates and short losses, across the 16-bit seq
// wrap, for several window sizes. Properties: every emitted real packet is byte-identical to the
// one sent with that seq; emitted seqs step by exactly one (all gaps <= max_gap_fill); silence
// packets carry the right timestamp; every received packet is accounted for exactly once.
class AssemblerRandomTest : public ::testing::TestWithParam<std::uint16_t> {};

TEST_P(AssemblerRandomTest, NetworkImpairmentsNeverBreakTheOutput) {
  AssemblerOptions o;
  o.reorder_window = GetParam();
  StreamAssembler a(o);
  RecordingSink sink;
  constexpr std::uint32_t kN = 5000;
  constexpr std::uint16_t kSeq0 = 65000;  // wraps after 536 packets
  constexpr std::uint32_t kTs0 = 0xFFFF0000u;  // wraps too
  std::uint64_t x = 0x9E3779B97F4A7C15ull ^ GetParam();
  auto rnd = [&x](std::uint32_t mod) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return static_cast<std::uint32_t>(x % mod);
  };
  struct Arrival {
    double t;
    std::uint32_t i;
  };
  std::vector<Arrival> arrivals;
  for (std::uint32_t i = 0; i < kN; ++i) {
    if (i > 0 && rnd(100) < 3) continue;  // lost
    const double jitter = rnd(100) < 10 ? rnd(GetParam() + 3u) : 0;  // sometimes beyond the window
    arrivals.push_back({i + jitter + 0.5 * rnd(2), i});
    if (rnd(100) < 2) arrivals.push_back({i + 1.0 + rnd(20), i});  // duplicate, later
  }
  std::stable_sort(arrivals.begin(), arrivals.end(), [](const Arrival& l, const Arrival& r) { return l.t < r.t; });
  for (const auto& ar : arrivals) {
    a.push(pcma(static_cast<std::uint16_t>(kSeq0 + ar.i), kTs0 + 160u * ar.i), sink);
  }
  a.flush(sink);

  const auto pk = sink.packets();
  ASSERT_FALSE(pk.empty());
  EXPECT_EQ(sink.segments().size(), 1u);
  std::uint64_t silence = 0;
  for (std::size_t k = 0; k < pk.size(); ++k) {
    const Out& o2 = *pk[k];
    const auto i = static_cast<std::uint32_t>(static_cast<std::uint16_t>(o2.seq() - kSeq0));
    ASSERT_EQ(o2.pkt.size(), 172u);
    if (k > 0) {
      ASSERT_EQ(static_cast<std::uint16_t>(o2.seq() - pk[k - 1]->seq()), 1u) << "at output " << k;
    }
    EXPECT_EQ(o2.ts(), kTs0 + 160u * i) << "seq index " << i;
    if (is_silence(o2, 0xD5)) {
      ++silence;
    } else {
      ASSERT_EQ(o2.pkt, pcma(static_cast<std::uint16_t>(kSeq0 + i), kTs0 + 160u * i)) << "seq index " << i;
    }
  }
  const auto& c = a.counters();
  EXPECT_EQ(c.received, arrivals.size());
  EXPECT_EQ(c.received, c.written + c.duplicate + c.late + c.invalid + c.other_payload);
  EXPECT_EQ(c.filled, silence);
  EXPECT_EQ(c.filled, c.lost) << "all gaps were short enough to fill";
  EXPECT_EQ(pk.size(), c.written + c.filled);
  EXPECT_EQ(c.resyncs, 0u);
  EXPECT_GT(c.reordered, 0u);
  EXPECT_GT(c.duplicate + c.late, 0u);
}

INSTANTIATE_TEST_SUITE_P(Windows, AssemblerRandomTest, ::testing::Values(1, 2, 8, 64, 256));

}  // namespace
}  // namespace callrec::fileio
