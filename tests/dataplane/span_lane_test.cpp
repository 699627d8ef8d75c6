// The span lane's burst path (on_burst: decode all, prefetch, then classify in order) against
// its frame-at-a-time path (on_frame) on the same traffic: the same records in the writer
// rings, the same counters, the same per-stream statistics and the same calls into the sink,
// including an endpoint the sink moves in the middle of a burst (a SIP message seen by the
// packets after it).
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "dataplane/span/span_lane.hpp"
#include "span_frames.hpp"
#include "fileio/packet_ring.hpp"

namespace callrec::dataplane {
namespace {

using namespace test;  // NOLINT(google-build-using-namespace): the shared frame builders

Bytes rtp(unsigned pt, unsigned seq, std::size_t payload_len, std::uint8_t fill) {
  Bytes b(12 + payload_len, std::byte{fill});
  b[0] = std::byte{0x80};
  b[1] = std::byte(pt);
  put16(b, 2, seq);
  b[8] = std::byte{0x11};
  return b;
}

/// Records what the lane reports; at the SIP message "MOVE" it points a new endpoint at stream
/// 1 (as the tracker does when a re-INVITE moves the media).
class Sink final : public SpanSink {
 public:
  SpanLane* lane = nullptr;
  std::vector<std::string> log;
  void on_sip(std::string_view msg, const decode::Endpoint&, const decode::Endpoint& dst, std::uint64_t ts) override {
    log.push_back("sip " + std::string(msg.substr(0, msg.find(' '))) + " " + std::to_string(dst.port) + " " +
                  std::to_string(ts));
    if (msg.rfind("UPDATE", 0) == 0) lane->set_endpoint(ep4(0x0A000003, 7000), 1, 0, false);
  }
  std::size_t on_sip_stream(std::string_view bytes, bool, const decode::Endpoint&, const decode::Endpoint&,
                            std::uint64_t) override {
    return bytes.size();
  }
  void on_dtmf(StreamId s, std::string_view digit, std::uint32_t ms, std::uint64_t ts) override {
    log.push_back("dtmf " + std::to_string(s) + " " + std::string(digit) + " " + std::to_string(ms) + " " +
                  std::to_string(ts));
  }
};

struct LaneRun {
  fileio::RingMatrix rings{1, 2, 1u << 20};
  SpanLane lane{SpanLaneOptions{}};
  Sink sink;
  LaneRun() {
    sink.lane = &lane;
    lane.set_sink(&sink);
    EXPECT_TRUE(lane.start(rings).is_ok());
    std::array<std::uint64_t, 2> dtmf{};
    dtmf[1] = std::uint64_t{1} << (101 - 64);
    lane.add_stream(1, dtmf, 8000, 2);
    lane.add_stream(2, dtmf, 8000, 1);
    lane.set_endpoint(ep4(0x0A000001, 4000), 1, 2, false);  // A: to A is stream 1, from A stream 2
    lane.set_endpoint(ep4(0x0A000001, 4001), 1, 2, true);   // A's RTCP
  }
  /// Every record of every ring, in ring order, as text.
  std::vector<std::string> drain() {
    std::vector<std::string> out;
    std::array<fileio::RingRecord, 64> recs{};
    for (unsigned w = 0; w < rings.writers(); ++w) {
      while (rings.ring(0, w).consume_bulk(recs, [&](std::span<const fileio::RingRecord> b) {
        for (const auto& r : b) {
          std::string s = std::to_string(w) + ":" + std::to_string(r.h.stream) + ":" + std::to_string(r.h.kind) +
                          ":" + std::to_string(r.h.rx_ns) + ":";
          for (std::byte x : r.bytes()) s += std::to_string(std::to_integer<unsigned>(x)) + ",";
          out.push_back(s);
        }
      }) != 0) {
      }
    }
    return out;
  }
};

std::vector<Bytes> traffic() {
  std::mt19937 rng(7);
  std::vector<Bytes> frames;
  const std::uint32_t a = 0x0A000001, b = 0x0A000002, c = 0x0A000003, x = 0x0A0000FE;
  for (unsigned i = 0; i < 400; ++i) {
    if (i % 50 == 7) {  // SIP, at fixed places: the UPDATE moves media to C mid-burst
      frames.push_back(udp_frame(x, 5060, b, 5060, text(std::string(i == 107 ? "UPDATE" : "OPTIONS") +
                                                         " sip:b@example.com SIP/2.0\r\nCall-ID: 1\r\n\r\n")));
      continue;
    }
    switch (rng() % 9) {
      case 0: frames.push_back(udp_frame(b, 5000, a, 4000, rtp(8, i, 160, 0xD5))); break;   // to A
      case 1: frames.push_back(udp_frame(a, 4000, b, 5000, rtp(8, i, 160, 0x55))); break;   // from A
      case 2: frames.push_back(udp_frame(b, 5000, c, 7000, rtp(0, i, 160, 0xFF))); break;   // to C (moved in)
      case 3: frames.push_back(udp_frame(x, 9, b, 53, text("noise"))); break;
      case 4: frames.push_back(udp_frame(b, 5001, a, 4001, rtp(200, i, 20, 0))); break;     // RTCP
      case 5: frames.push_back(udp_frame(x, 1234, b, 6000, rtp(8, i, 160, 1))); break;      // no call
      case 6: {
        Bytes ev = rtp(101, i, 4, 0);
        ev[12] = std::byte{5};
        ev[13] = (i & 1) != 0 ? std::byte{0x80} : std::byte{0};
        put16(ev, 14, 800);
        ev[4] = std::byte(i >> 3);  // timestamp changes every 8 packets
        frames.push_back(udp_frame(b, 5000, a, 4000, ev));
        break;
      }
      case 7: frames.push_back(udp_frame(b, 5000, a, 4000, text("x"))); break;  // not RTP
      default: frames.push_back(Bytes(5, std::byte{0})); break;  // too short to decode
    }
  }
  return frames;
}

TEST(SpanLane, BurstsClassifyExactlyAsFramesOneAtATime) {
  const std::vector<Bytes> frames = traffic();
  LaneRun one, burst;
  for (std::size_t i = 0; i < frames.size(); ++i) one.lane.on_frame(1, frames[i], 1'000'000 * (i + 1));
  one.lane.flush();
  // Bursts of every size from 1 to 45 (more than one FrameBurst: on_burst splits them).
  std::vector<capture::Frame> fs;
  for (std::size_t i = 0; i < frames.size(); ++i)
    fs.push_back(capture::Frame{frames[i], 1, 1'000'000 * (i + 1), static_cast<std::uint32_t>(frames[i].size())});
  std::size_t at = 0;
  for (std::size_t n = 1; at < fs.size(); n = n % 45 + 1) {
    const std::size_t k = std::min(n, fs.size() - at);
    burst.lane.on_burst({fs.data() + at, k});
    at += k;
  }
  burst.lane.flush();

  const auto recs = one.drain();
  EXPECT_GT(recs.size(), 50u);
  EXPECT_EQ(recs, burst.drain());
  EXPECT_EQ(one.sink.log, burst.sink.log);
  EXPECT_FALSE(one.sink.log.empty());
  const auto ca = one.lane.counters(), cb = burst.lane.counters();
  ASSERT_EQ(ca.size(), cb.size());
  for (std::size_t i = 0; i < ca.size(); ++i) EXPECT_EQ(ca[i].value, cb[i].value) << ca[i].name;
  EXPECT_GT(one.lane.counter(kS_rtcp), 0u);
  EXPECT_GT(one.lane.counter(kS_dtmf_packets), 0u);
  EXPECT_GT(one.lane.counter(kS_rtp_by_source), 0u);
  for (StreamId s : {StreamId{1}, StreamId{2}}) {
    const SpanStreamStats* a = one.lane.stream_stats(s);
    const SpanStreamStats* b = burst.lane.stream_stats(s);
    ASSERT_NE(a, nullptr);
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(a->packets, b->packets);
    EXPECT_EQ(a->rtcp, b->rtcp);
    EXPECT_EQ(a->dtmf, b->dtmf);
    EXPECT_EQ(a->first_ns, b->first_ns);
    EXPECT_EQ(a->last_ns, b->last_ns);
    EXPECT_TRUE(a->src == b->src);
    EXPECT_EQ(a->moved, b->moved);
  }
  // The endpoint the sink added mid-stream took the packets after it (PT 0 goes only to C).
  EXPECT_NE(std::find(one.sink.log.begin(), one.sink.log.end(), "sip UPDATE 5060 108000000"), one.sink.log.end());
  EXPECT_TRUE(std::any_of(recs.begin(), recs.end(),
                          [](const std::string& r) { return r.find(":128,0,") != std::string::npos; }));
}

TEST(FrameBurst, CopiesFramesAndRefusesWhatDoesNotFit) {
  capture::FrameBurst b(1024);
  Bytes big(600, std::byte{7}), small(100, std::byte{9});
  EXPECT_TRUE(b.add(capture::Frame{big, 1, 5, 600}));
  EXPECT_FALSE(b.add(capture::Frame{big, 1, 6, 600}));  // the arena is full
  EXPECT_TRUE(b.add(capture::Frame{small, 1, 7, 100}));
  big.assign(big.size(), std::byte{0});  // the burst holds copies
  ASSERT_EQ(b.frames().size(), 2u);
  EXPECT_EQ(b.frames()[0].data.size(), 600u);
  EXPECT_EQ(std::to_integer<int>(b.frames()[0].data[599]), 7);
  EXPECT_EQ(b.frames()[1].ts_ns, 7u);
  b.clear();
  EXPECT_TRUE(b.empty());
  Bytes huge(2000);
  EXPECT_FALSE(b.add(capture::Frame{huge, 1, 8, 2000}));  // larger than the arena: never fits
  for (unsigned i = 0; i < capture::FrameBurst::kMax; ++i) EXPECT_TRUE(b.add(capture::Frame{{}, 1, i, 0}));
  EXPECT_TRUE(b.full());
  EXPECT_FALSE(b.add(capture::Frame{{}, 1, 99, 0}));
}

}  // namespace
}  // namespace callrec::dataplane
