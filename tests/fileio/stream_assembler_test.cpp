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
  /// A realistic arrival clock for a sender in real time: a packet arrives when its RTP
  /// timestamp says (8 kHz), never earlier than the newest packet so far (a reordered or late
  /// packet arrives "now"). Non-RTP input arrives "now" too.
  std::uint64_t at(std::span<const std::byte> pkt) {
    if (pkt.size() >= 12) {
      const std::uint32_t ts = load_be32(pkt.data() + 4);
      if (!clock_started_) {
        clock_started_ = true;
        newest_ts_ = ts;
      }
      const auto ahead = static_cast<std::int32_t>(ts - newest_ts_);
      if (ahead > 0) {
        now_ns_ += static_cast<std::uint64_t>(ahead) * 125'000u;
        newest_ts_ = ts;
      }
    }
    return now_ns_;
  }

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

 private:
  bool clock_started_ = false;
  std::uint32_t newest_ts_ = 0;
  std::uint64_t now_ns_ = 1'000'000'000;
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
  void feed(std::uint16_t seq, std::uint32_t ts) { put(pcma(seq, ts)); }
  /// Pushes b into a_ at its realistic arrival time.
  void put(const Bytes& b) { a_.push(b, sink_, sink_.at(b)); }
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
    a_.push(sent.back(), sink_, sink_.at(sent.back()));
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
  a.push(pcma(0, 0), sink, sink.at(pcma(0, 0)));
  for (std::uint16_t s = 2; s <= 5; ++s) a.push(pcma(s, 160u * s), sink, sink.at(pcma(s, 160u * s)));  // 1 missing, 4 held
  EXPECT_EQ(sink.seqs(), std::vector<std::uint16_t>{0}) << "the window holds 4 packets";
  a.push(pcma(6, 960), sink, sink.at(pcma(6, 960)));  // a 5th: packet 1 is given up
  EXPECT_EQ(sink.seqs(), range(0, 7));
  const auto pk = sink.packets();
  EXPECT_TRUE(is_silence(*pk[1], 0xD5));
  EXPECT_EQ(a.counters().lost, 1u);
  EXPECT_EQ(a.counters().filled, 1u);
  a.push(pcma(1, 160), sink, sink.at(pcma(1, 160)));  // too late now
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
  a.push(b, sink, sink.at(b));
  Pkt later{1004, 5000 + 4 * 160, kPtPcma, kSsrc, 160, true};  // 1001..1003 lost
  // Keep the length: the first packet has 159 payload bytes + 1 pad byte (increment 159).
  Bytes lb = rtp(later);
  lb[0] |= std::byte{0x20};
  lb.back() = std::byte{1};
  a.push(lb, sink, sink.at(lb));
  Pkt p5{1005, 5000 + 5 * 160};
  Bytes b5 = rtp(p5);
  b5[0] |= std::byte{0x20};
  b5.back() = std::byte{1};
  a.push(b5, sink, sink.at(b5));
  Pkt p6{1006, 5000 + 6 * 160};
  Bytes b6 = rtp(p6);
  b6[0] |= std::byte{0x20};
  b6.back() = std::byte{1};
  a.push(b6, sink, sink.at(b6));  // 1004, 1005 held (window 2) -> 1006 forces the gap out
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
  a_.push(rtp(Pkt{1, 0, kPtPcmu}), sink_, sink_.at(rtp(Pkt{1, 0, kPtPcmu})));
  for (std::uint16_t s = 3; s <= 11; ++s) a_.push(rtp(Pkt{s, 160u * (s - 1u), kPtPcmu}), sink_, sink_.at(rtp(Pkt{s, 160u * (s - 1u), kPtPcmu})));
  ASSERT_GE(sink_.packets().size(), 2u);
  EXPECT_EQ(sink_.packets()[1]->seq(), 2);
  EXPECT_TRUE(is_silence(*sink_.packets()[1], 0xFF));
}

TEST_F(AssemblerTest, GapLongerThanTheBoundIsCountedButNotFilled) {
  AssemblerOptions o;
  o.max_gap_fill = 5;
  StreamAssembler a(o);
  RecordingSink sink;
  a.push(pcma(0, 0), sink, sink.at(pcma(0, 0)));
  a.push(pcma(7, 7 * 160), sink, sink.at(pcma(7, 7 * 160)));  // 6 missing > 5
  for (std::uint16_t s = 8; s < 8 + 8; ++s) a.push(pcma(s, 160u * s), sink, sink.at(pcma(s, 160u * s)));
  auto seqs = sink.seqs();
  ASSERT_FALSE(seqs.empty());
  EXPECT_EQ(seqs[0], 0);
  EXPECT_EQ(seqs[1], 7) << "no silence for a gap longer than max_gap_fill";
  EXPECT_EQ(a.counters().lost, 6u);
  EXPECT_EQ(a.counters().filled, 0u);

  // Exactly the bound: filled.
  StreamAssembler b(o);
  RecordingSink sink2;
  b.push(pcma(0, 0), sink2, sink2.at(pcma(0, 0)));
  for (std::uint16_t s = 6; s < 6 + 9; ++s) b.push(pcma(s, 160u * s), sink2, sink2.at(pcma(s, 160u * s)));
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
  a.push(pcma(65534, ts0), sink, sink.at(pcma(65534, ts0)));
  a.push(pcma(1, ts0 + 3 * 160), sink, sink.at(pcma(1, ts0 + 3 * 160)));  // 65535 and 0 missing
  a.push(pcma(2, ts0 + 4 * 160), sink, sink.at(pcma(2, ts0 + 4 * 160)));  // forces them out
  const auto pk = sink.packets();
  ASSERT_EQ(pk.size(), 5u);
  EXPECT_EQ(sink.seqs(), (std::vector<std::uint16_t>{65534, 65535, 0, 1, 2}));
  EXPECT_EQ(pk[1]->ts(), 0xFFFFFFFFu - 159u);
  EXPECT_EQ(pk[2]->ts(), 0u) << "silence timestamp wraps modulo 2^32";
  EXPECT_TRUE(is_silence(*pk[2], 0xD5));
  EXPECT_EQ(a.counters().filled, 2u);
}

// ---- segments ------------------------------------------------------------------------------

TEST_F(AssemblerTest, LengthChangeStartsANewSegmentOnceItLasts) {
  put(rtp(Pkt{1, 0}));
  put(rtp(Pkt{2, 160}));
  // ptime 20 -> 30 ms: format_confirm (4) packets of the new length make the change lasting.
  for (std::uint16_t s = 3; s <= 6; ++s) {
    put(rtp(Pkt{s, 320u + 240u * (s - 3u), kPtPcma, kSsrc, 240}));
    if (s < 6) {
      EXPECT_EQ(sink_.segments().size(), 1u) << "not confirmed yet at " << s;
    }
  }
  const auto segs = sink_.segments();
  ASSERT_EQ(segs.size(), 2u);
  EXPECT_EQ(segs[1].rtp_len, 252u);
  EXPECT_EQ(segs[1].increment, 240u);
  ASSERT_EQ(sink_.out.size(), 8u);
  EXPECT_TRUE(sink_.out[3].segment) << "the segment mark precedes the first packet of the new length";
  EXPECT_EQ(sink_.out[4].seq(), 3) << "the held candidates are written: a lasting change loses nothing";
  EXPECT_EQ(sink_.out[7].seq(), 6);
  EXPECT_EQ(sink_.out[4].pkt.size(), 252u);
  EXPECT_EQ(sink_.out[4].pkt, rtp(Pkt{3, 320, kPtPcma, kSsrc, 240}));
  EXPECT_EQ(a_.counters().segments, 2u);
  EXPECT_EQ(a_.counters().written, 6u);
  EXPECT_EQ(a_.counters().format_flaps, 0u);
  // The new segment goes on normally.
  put(rtp(Pkt{7, 320u + 4 * 240u, kPtPcma, kSsrc, 240}));
  EXPECT_EQ(sink_.seqs().back(), 7);
}

TEST_F(AssemblerTest, PayloadTypeChangeStartsANewSegmentAndHeldPacketsStayInTheOld) {
  put(rtp(Pkt{1, 0, kPtPcma}));
  put(rtp(Pkt{3, 320, kPtPcma}));  // held: 2 missing
  for (std::uint16_t s = 4; s <= 7; ++s) put(rtp(Pkt{s, 160u * (s - 1u), kPtPcmu}));  // PCMA -> PCMU
  ASSERT_EQ(sink_.out.size(), 9u);
  EXPECT_TRUE(sink_.out[0].segment);
  EXPECT_EQ(sink_.out[0].fmt.codec, Codec::kPcma);
  EXPECT_EQ(sink_.out[1].seq(), 1);
  EXPECT_EQ(sink_.out[2].seq(), 2);
  EXPECT_TRUE(is_silence(sink_.out[2], 0xD5)) << "the hole before the held packet: PCMA silence";
  EXPECT_EQ(sink_.out[3].seq(), 3) << "the held PCMA packet ends the PCMA segment";
  EXPECT_TRUE(sink_.out[4].segment);
  EXPECT_EQ(sink_.out[4].fmt.codec, Codec::kPcmu);
  for (std::size_t k = 5; k < 9; ++k) {
    EXPECT_EQ(sink_.out[k].seq(), k - 1);
    EXPECT_EQ(std::to_integer<unsigned>(sink_.out[k].pkt[1]) & 0x7F, 0u);
  }
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

/// Every packet has its segment's length and payload type.
void expect_formats_consistent(const RecordingSink& sink) {
  SegmentFormat cur{};
  bool have = false;
  for (const auto& o : sink.out) {
    if (o.segment) {
      cur = o.fmt;
      have = true;
      continue;
    }
    ASSERT_TRUE(have) << "a packet before any segment";
    ASSERT_EQ(o.pkt.size(), cur.rtp_len);
    ASSERT_EQ(std::to_integer<unsigned>(o.pkt[1]) & 0x7F, codec_info(cur.codec).payload_type);
  }
}

TEST_F(AssemblerTest, PayloadTypeFlippingEveryPacketMakesOneSegment) {
  // The attack of issue 9 item 3: PCMA, PCMU, PCMA, PCMU ... at 50 pps.
  constexpr std::uint16_t kN = 200;
  for (std::uint16_t s = 0; s < kN; ++s) put(rtp(Pkt{s, 160u * s, (s % 2) != 0 ? kPtPcmu : kPtPcma}));
  a_.flush(sink_);
  const auto& c = a_.counters();
  EXPECT_EQ(c.segments, 1u);
  EXPECT_EQ(sink_.segments().size(), 1u);
  EXPECT_EQ(c.format_flaps, kN / 2) << "every odd packet is an isolated flap, dropped";
  EXPECT_EQ(c.written, kN / 2);
  // Their positions are ordinary losses: PCMA silence, so the recording keeps its timing.
  EXPECT_EQ(sink_.seqs(), range(0, kN - 1));
  EXPECT_EQ(c.filled, kN / 2 - 1);
  EXPECT_TRUE(is_silence(*sink_.packets()[1], 0xD5));
  expect_formats_consistent(sink_);
  EXPECT_EQ(c.received, c.written + c.duplicate + c.late + c.invalid + c.other_payload + c.format_flaps +
                            c.segment_limited);
}

TEST_F(AssemblerTest, LengthFlippingEveryPacketMakesOneSegment) {
  constexpr std::uint16_t kN = 200;
  for (std::uint16_t s = 0; s < kN; ++s) put(rtp(Pkt{s, 160u * s, kPtPcma, kSsrc, 160u + (s % 7)}));
  a_.flush(sink_);
  EXPECT_EQ(a_.counters().segments, 1u);
  EXPECT_GT(a_.counters().format_flaps, kN / 2u);
  expect_formats_consistent(sink_);
}

TEST_F(AssemblerTest, FewerThanConfirmPacketsOfANewFormatAreDroppedAndBecomeSilence) {
  feed_offsets(0, 0, {0, 1, 2});
  for (std::uint16_t s = 3; s < 6; ++s) put(rtp(Pkt{s, 160u * s, kPtPcmu}));  // 3 < format_confirm
  for (std::uint16_t s = 6; s < 20; ++s) feed(s, 160u * s);                    // the old format resumes
  EXPECT_EQ(sink_.seqs(), range(0, 20));
  for (std::size_t k = 3; k < 6; ++k) EXPECT_TRUE(is_silence(*sink_.packets()[k], 0xD5)) << k;
  EXPECT_EQ(a_.counters().format_flaps, 3u);
  EXPECT_EQ(a_.counters().segments, 1u);
  EXPECT_EQ(a_.counters().lost, 3u);
  EXPECT_EQ(a_.counters().filled, 3u);
}

TEST_F(AssemblerTest, AnOldPacketReorderedAcrossTheChangeDoesNotCancelIt) {
  feed_offsets(0, 0, {0, 1, 2, 3});
  put(rtp(Pkt{5, 800, kPtPcmu}));
  feed(4, 640);  // the last PCMA packet, late: from before the change
  for (std::uint16_t s = 6; s <= 8; ++s) put(rtp(Pkt{s, 160u * s, kPtPcmu}));
  EXPECT_EQ(a_.counters().segments, 2u);
  EXPECT_EQ(a_.counters().format_flaps, 0u);
  EXPECT_EQ(sink_.seqs(), range(0, 9));
  expect_formats_consistent(sink_);
}

TEST_F(AssemblerTest, FormatChangesAreCappedOverTime) {
  AssemblerOptions o;
  o.segment_burst = 2;
  o.segment_interval_ms = 10'000;
  StreamAssembler a(o);
  RecordingSink sink;
  std::uint64_t t = 1'000'000'000;
  std::uint16_t seq = 0;
  // Runs of 10 packets alternating PCMA / PCMU: each run is a lasting change.
  auto run = [&](std::uint8_t pt) {
    for (int i = 0; i < 10; ++i, ++seq, t += 20'000'000) a.push(rtp(Pkt{seq, 160u * seq, pt}), sink, t);
  };
  run(kPtPcma);  // the first segment: free
  run(kPtPcmu);  // change 1 (burst)
  run(kPtPcma);  // change 2 (burst)
  EXPECT_EQ(a.counters().segments, 3u);
  run(kPtPcmu);  // change 3: over the cap, refused
  EXPECT_EQ(a.counters().segments, 3u);
  EXPECT_EQ(a.counters().segment_limited, 8u) << "two refused confirmations of 4 packets";
  EXPECT_EQ(a.counters().format_flaps, 0u);
  run(kPtPcma);  // the current format again: written
  EXPECT_EQ(a.counters().format_flaps, 2u) << "the last 2 packets of the run were pending, then PCMA resumed";
  EXPECT_EQ(a.counters().written, 10u + 10u + 10u + 10u);
  t += 10'000'000'000ull;  // 10 s later: one more change is allowed
  run(kPtPcmu);
  EXPECT_EQ(a.counters().segments, 4u);
  expect_formats_consistent(sink);
}

TEST_F(AssemblerTest, PendingCandidatesAtFlushAreDroppedAndCounted) {
  feed_offsets(0, 0, {0, 1});
  put(rtp(Pkt{2, 320, kPtPcmu}));
  put(rtp(Pkt{3, 480, kPtPcmu}));
  a_.flush(sink_);
  EXPECT_EQ(a_.counters().format_flaps, 2u);
  EXPECT_EQ(a_.counters().segments, 1u);
  const auto& c = a_.counters();
  EXPECT_EQ(c.received, c.written + c.format_flaps);
}

TEST_F(AssemblerTest, AnSsrcChangeWithANewFormatNeedsConfirmationToo) {
  feed_offsets(0, 0, {0, 1, 2});
  // Every packet a new SSRC and a new payload type: no segment, no resync storm.
  for (std::uint16_t s = 3; s < 40; ++s) {
    put(rtp(Pkt{s, 160u * s, (s % 2) != 0 ? kPtPcmu : kPtPcma, 0x1000u + s}));
  }
  EXPECT_EQ(a_.counters().segments, 1u);
  // A real switch to a new source with a new format: confirmed after 4 packets.
  for (std::uint16_t s = 0; s < 4; ++s) put(rtp(Pkt{static_cast<std::uint16_t>(9000 + s), 80000u + 160u * s, kPtPcmu, 0xBEEF}));
  EXPECT_EQ(a_.counters().segments, 2u);
  EXPECT_EQ(sink_.seqs().back(), 9003);
  expect_formats_consistent(sink_);
}

// ---- gap fill backed by arrival time --------------------------------------------------------

TEST_F(AssemblerTest, ASenderJumpingTheSequenceBy51EveryPacketIsNotAmplified) {
  // Issue 9 item 4: 17 KB sent became 869 KB on disk. Now about 1:1.
  StreamAssembler a;
  RecordingSink sink;
  constexpr std::uint32_t kN = 500;
  for (std::uint32_t i = 0; i < kN; ++i) {
    a.push(pcma(static_cast<std::uint16_t>(51 * i), 160u * 51 * i), sink, 1'000'000'000ull + i * 20'000'000ull);
  }
  a.flush(sink);
  const auto& c = a.counters();
  EXPECT_EQ(c.written, kN);
  EXPECT_LE(c.filled, 3u) << "the clock backs about one ptime per packet, and real packets use it";
  EXPECT_GE(c.unbacked_jumps, kN - 10);
  EXPECT_GE(c.resyncs, c.unbacked_jumps);
  EXPECT_EQ(c.lost, 50u * (kN - 1)) << "still counted as lost";
}

TEST_F(AssemblerTest, ASenderSkippingOneSeqEveryPacketIsNotAmplified) {
  // Gaps of 1 are inside the reorder window: packets wait there, and the time they waited backs
  // a few fills at the start; after that the credit is spent. The silence does not grow with
  // the length of the stream.
  for (const std::uint32_t n : {500u, 5000u}) {
    StreamAssembler a;
    RecordingSink sink;
    for (std::uint32_t i = 0; i < n; ++i) {
      a.push(pcma(static_cast<std::uint16_t>(2 * i), 320u * i), sink, 1'000'000'000ull + i * 20'000'000ull);
    }
    a.flush(sink);
    EXPECT_LE(a.counters().filled, 8u) << n;
    EXPECT_EQ(a.counters().written, n);
  }
}

TEST_F(AssemblerTest, ASlowSenderWithMatchingGapsIsFilledTheClockBacksIt) {
  // 25 packets/s, every other seq missing: the elapsed time covers the missing packets.
  StreamAssembler a;
  RecordingSink sink;
  for (std::uint32_t i = 0; i < 200; ++i) {
    a.push(pcma(static_cast<std::uint16_t>(2 * i), 320u * i), sink, 1'000'000'000ull + i * 40'000'000ull);
  }
  a.flush(sink);
  EXPECT_EQ(a.counters().filled, 199u);
  EXPECT_EQ(a.counters().unbacked_jumps, 0u);
}

TEST_F(AssemblerTest, ARealLossBurstIsFilledEvenWithJitter) {
  StreamAssembler a;
  RecordingSink sink;
  std::uint64_t x = 42;
  auto jitter = [&x] {  // -10..+10 ms
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<std::int64_t>((x >> 33) % 21) - 10;
  };
  for (std::uint32_t i = 0; i < 400; ++i) {
    if (i >= 100 && i < 110) continue;             // a 10-packet loss burst
    if (i >= 200 && i < 250) continue;             // a 50-packet one (max_gap_fill)
    std::int64_t ms = 1000 + 20 * static_cast<std::int64_t>(i) + jitter();
    if (i == 110 || i == 250) ms -= 25;            // the packet after the burst even 25 ms early
    a.push(pcma(static_cast<std::uint16_t>(i), 160u * i), sink, static_cast<std::uint64_t>(ms) * 1'000'000ull);
  }
  a.flush(sink);
  EXPECT_EQ(a.counters().lost, 60u);
  EXPECT_EQ(a.counters().filled, 60u);
  EXPECT_EQ(a.counters().unbacked_jumps, 0u);
  EXPECT_EQ(sink.seqs(), range(0, 400));
}

TEST_F(AssemblerTest, AFastBurstBuildsNoLastingDebt) {
  StreamAssembler a;
  RecordingSink sink;
  std::uint64_t t = 1'000'000'000;
  std::uint16_t s = 0;
  for (; s < 100; ++s, t += 1'000'000) a.push(pcma(s, 160u * s), sink, t);  // 1 ms apart (a backlog)
  for (; s < 110; ++s, t += 20'000'000) a.push(pcma(s, 160u * s), sink, t);
  t += 5 * 20'000'000;  // 5 lost
  s = static_cast<std::uint16_t>(s + 5);
  for (std::uint16_t k = 0; k < 20; ++k, ++s, t += 20'000'000) a.push(pcma(s, 160u * s), sink, t);
  a.flush(sink);
  EXPECT_EQ(a.counters().filled, 5u);
}

TEST_F(AssemblerTest, SilenceIsBoundedByElapsedTimeWhateverTheSenderDoes) {
  // Adversarial: random sequence jumps (within max_gap_fill), random arrival gaps, random
  // reordering. Silence written never exceeds the elapsed arrival time plus the credit cap.
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    StreamAssembler a;
    RecordingSink sink;
    std::uint64_t x = seed * 0x9E3779B97F4A7C15ull;
    auto rnd = [&x](std::uint32_t mod) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      return static_cast<std::uint32_t>(x % mod);
    };
    std::uint64_t t = 1'000'000'000;
    const std::uint64_t t0 = t;
    std::uint16_t seq = 0;
    for (int i = 0; i < 3000; ++i) {
      seq = static_cast<std::uint16_t>(seq + (rnd(4) == 0 ? rnd(60) : 1));
      const std::uint16_t sent = rnd(10) == 0 ? static_cast<std::uint16_t>(seq - rnd(8)) : seq;
      a.push(pcma(sent, 160u * sent), sink, t);
      t += std::uint64_t{rnd(4) == 0 ? rnd(60) : 0} * 1'000'000ull;
    }
    a.flush(sink);
    const auto& c = a.counters();
    const std::uint64_t cap_ns = (50 + 8 + 2 + 2) * 20'000'000ull;
    EXPECT_LE(c.filled * 20'000'000ull, (t - t0) + cap_ns) << "seed " << seed;
    EXPECT_LE(c.filled, c.lost);
    EXPECT_EQ(c.received, c.written + c.duplicate + c.late + c.invalid + c.other_payload + c.format_flaps +
                              c.segment_limited);
  }
}

// ---- resync --------------------------------------------------------------------------------

TEST_F(AssemblerTest, SsrcChangeResyncsAtOnce) {
  feed_offsets(10, 0, {0, 1, 3});  // 3 held
  a_.push(rtp(Pkt{40000, 777, kPtPcma, 0xABCDEF01}), sink_, sink_.at(rtp(Pkt{40000, 777, kPtPcma, 0xABCDEF01})));
  a_.push(rtp(Pkt{40001, 937, kPtPcma, 0xABCDEF01}), sink_, sink_.at(rtp(Pkt{40001, 937, kPtPcma, 0xABCDEF01})));
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
  a.push(pcma(0, 0), sink, sink.at(pcma(0, 0)));
  a.push(pcma(81, 81 * 160), sink, sink.at(pcma(81, 81 * 160)));  // 80 missing: beyond the fill bound, within resync_after
  EXPECT_EQ(sink.seqs(), (std::vector<std::uint16_t>{0, 81}));
  EXPECT_EQ(a.counters().lost, 80u);
  EXPECT_EQ(a.counters().resyncs, 0u);
}

// ---- other payloads, invalid packets -------------------------------------------------------

TEST_F(AssemblerTest, ComfortNoiseAndTelephoneEventsAreDroppedAndTheirSeqsBecomeSilence) {
  feed_offsets(0, 0, {0, 1});
  a_.push(rtp(Pkt{2, 320, 13, kSsrc, 1}), sink_, sink_.at(rtp(Pkt{2, 320, 13, kSsrc, 1})));    // CN
  a_.push(rtp(Pkt{3, 480, 101, kSsrc, 4}), sink_, sink_.at(rtp(Pkt{3, 480, 101, kSsrc, 4})));   // telephone-event
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
  a_.push(short_pkt, sink_, sink_.at(short_pkt));
  Bytes v1 = pcma(2, 160);
  v1[0] = std::byte{0x40};  // RTP version 1
  a_.push(v1, sink_, sink_.at(v1));
  a_.push(rtp(Pkt{2, 160, kPtPcma, kSsrc, 0}), sink_, sink_.at(rtp(Pkt{2, 160, kPtPcma, kSsrc, 0})));  // no payload
  Bytes bad_pad = pcma(2, 160);
  bad_pad[0] |= std::byte{0x20};
  bad_pad.back() = std::byte{200};  // more padding than payload
  a_.push(bad_pad, sink_, sink_.at(bad_pad));
  Bytes cc = pcma(2, 160);
  cc[0] |= std::byte{0x0F};  // 15 CSRCs announced, 160 bytes present: parses; 100 bytes: truncated
  cc.resize(40);
  a_.push(cc, sink_, sink_.at(cc));
  a_.push({}, sink_, sink_.at({}));
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
    // Arrival time: the packet's place in the randomised network schedule, 20 ms per step.
    a.push(pcma(static_cast<std::uint16_t>(kSeq0 + ar.i), kTs0 + 160u * ar.i), sink,
           1'000'000'000ull + static_cast<std::uint64_t>(ar.t * 20e6));
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
