// Passive capture on lanes with threads of their own (SpanLaneGroup), driven by a fake port:
// the software spread's hash, the hold of RTP that comes before its call's SDP, every command
// reaching every lane, SIP handed to the control thread, statistics merged across lanes, and an
// end mark per lane for a removed stream. Real threads, real rings.
#include <gtest/gtest.h>

#include <chrono>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/span/lane_group.hpp"
#include "dataplane/span/span_lane.hpp"
#include "dataplane/span/spread.hpp"
#include "fileio/packet_ring.hpp"
#include "span_frames.hpp"

namespace callrec::dataplane {
namespace {

using namespace std::chrono_literals;
using namespace test;  // NOLINT(google-build-using-namespace): the shared frame builders

/// Ethernet / IPv4 / TCP (ACK|PSH) around `payload`.
Bytes tcp_frame(std::uint32_t src, std::uint16_t sport, std::uint32_t dst, std::uint16_t dport, std::uint32_t seq,
                const std::string& payload) {
  Bytes f(14 + 20 + 20 + payload.size());
  f[12] = std::byte{0x08};
  f[14] = std::byte{0x45};
  put16(f, 16, static_cast<unsigned>(40 + payload.size()));
  f[22] = std::byte{64};
  f[23] = std::byte{6};
  for (int i = 0; i < 4; ++i) {
    f[26 + static_cast<std::size_t>(i)] = std::byte((src >> (24 - 8 * i)) & 0xFF);
    f[30 + static_cast<std::size_t>(i)] = std::byte((dst >> (24 - 8 * i)) & 0xFF);
  }
  put16(f, 34, sport);
  put16(f, 36, dport);
  for (int i = 0; i < 4; ++i) f[38 + static_cast<std::size_t>(i)] = std::byte((seq >> (24 - 8 * i)) & 0xFF);
  f[46] = std::byte{0x50};  // data offset 5 words
  f[47] = std::byte{0x18};  // ACK | PSH
  put16(f, 48, 65535);
  std::memcpy(f.data() + 54, payload.data(), payload.size());
  return f;
}

Bytes rtp(unsigned seq, std::uint8_t fill) {
  Bytes b(12 + 160, std::byte{fill});
  b[0] = std::byte{0x80};
  b[1] = std::byte{8};
  put16(b, 2, seq);
  return b;
}

TEST(Spread, TheHashIsSymmetricAndUsesEveryLane) {
  std::mt19937 rng(7);
  std::map<unsigned, unsigned> per_lane;
  for (int i = 0; i < 4000; ++i) {
    const decode::Endpoint a = ep4(rng(), 1), b = ep4(rng(), 2);
    const unsigned l = spread_lane_of(a.addr, b.addr, 4);
    ASSERT_LT(l, 4u);
    EXPECT_EQ(l, spread_lane_of(b.addr, a.addr, 4));
    ++per_lane[l];
  }
  for (unsigned l = 0; l < 4; ++l) EXPECT_GT(per_lane[l], 700u) << "lane " << l;  // about 1000 each
  EXPECT_EQ(spread_lane_of(ep4(1, 0).addr, ep4(2, 0).addr, 1), 0u);
}

TEST(Spread, BothDirectionsOfAPairGoToOneLaneAndSipAndFragmentsToLaneZero) {
  decode::Counters c;
  std::set<unsigned> per_pair;
  for (std::uint32_t k = 0; k < 200; ++k) {
    const std::uint32_t a = 0x0A000001 + k * 7, b = 0xC0A80001 + k * 13;
    const Bytes fwd = udp_frame(a, 4000, b, 5000, rtp(1, 1));
    const unsigned lane = spread_lane(decode::kLinkEthernet, fwd, 8, c);
    EXPECT_EQ(spread_lane(decode::kLinkEthernet, udp_frame(b, 5000, a, 4000, rtp(1, 2)), 8, c), lane);
    EXPECT_EQ(spread_lane(decode::kLinkEthernet, udp_frame(a, 4001, b, 5061, rtp(7, 3)), 8, c), lane);
    EXPECT_EQ(spread_lane(decode::kLinkEthernet, udp_frame(a, 5060, b, 5060, text("hello")), 8, c), lane);
    // SIP and every fragment (they carry no ports) go to lane 0, whatever the pair: the tracker
    // gets all UDP signalling from one lane, in wire order
    EXPECT_EQ(spread_lane(decode::kLinkEthernet, udp_frame(a, 4001, b, 5060, text("INVITE x SIP/2.0\r\n")), 8, c), 0u);
    EXPECT_EQ(spread_lane(decode::kLinkEthernet, udp_frame(b, 5060, a, 4001, text("SIP/2.0 200 OK\r\n")), 8, c), 0u);
    EXPECT_EQ(spread_lane(decode::kLinkEthernet, udp_frame(a, 0, b, 0, Bytes(64, std::byte{9}), 1480, false), 8, c),
              0u);
    EXPECT_EQ(spread_lane(decode::kLinkEthernet, udp_frame(a, 4000, b, 5000, rtp(1, 1), 0, true), 8, c), 0u);
    per_pair.insert(lane);
  }
  EXPECT_EQ(per_pair.size(), 8u);  // 200 pairs use every lane
  const Bytes arp(60, std::byte{0});  // not IP: lane 0
  EXPECT_EQ(spread_lane(decode::kLinkEthernet, arp, 8, c), 0u);
}

TEST(SpanStreamStats, LanesMergeIntoOneStream) {
  SpanStreamStats a, b;
  a.packets = 10;
  a.first_ns = 100;
  a.last_ns = 200;
  a.src = ep4(1, 10);
  a.dst = ep4(2, 20);
  a.rtcp = 1;
  b.packets = 5;
  b.first_ns = 150;
  b.last_ns = 300;
  b.src = ep4(3, 30);
  b.dst = ep4(2, 20);
  b.dtmf = 2;
  b.by_source = true;
  SpanStreamStats m;
  merge_stream_stats(m, a);
  merge_stream_stats(m, b);
  EXPECT_EQ(m.packets, 15u);
  EXPECT_EQ(m.first_ns, 100u);
  EXPECT_EQ(m.last_ns, 300u);
  EXPECT_EQ(m.src, ep4(3, 30));  // the latest source
  EXPECT_TRUE(m.moved);          // two lanes saw two sources
  EXPECT_TRUE(m.by_source);
  EXPECT_EQ(m.rtcp, 1u);
  EXPECT_EQ(m.dtmf, 2u);
  SpanStreamStats only_rtcp;
  only_rtcp.rtcp = 3;
  SpanStreamStats n;
  merge_stream_stats(n, only_rtcp);
  merge_stream_stats(n, a);
  EXPECT_EQ(n.packets, 10u);
  EXPECT_EQ(n.rtcp, 4u);
  EXPECT_FALSE(n.moved);
}

/// Every record in the ring matrix, by producer: (stream, kind, first payload byte).
struct Drained {
  struct Rec {
    StreamId stream;
    fileio::RecordKind kind;
    std::uint16_t seq;
  };
  std::map<unsigned, std::vector<Rec>> by_producer;
  void drain(fileio::RingMatrix& rings) {
    for (unsigned p = 0; p < rings.producers(); ++p)
      for (unsigned w = 0; w < rings.writers(); ++w)
        rings.ring(p, w).consume([&](const fileio::RingRecordHeader& h, std::span<const std::byte> b) {
          const std::uint16_t seq = b.size() >= 4 ? static_cast<std::uint16_t>(std::to_integer<unsigned>(b[2]) << 8 |
                                                                                 std::to_integer<unsigned>(b[3]))
                                                  : 0;
          by_producer[p].push_back({h.stream, static_cast<fileio::RecordKind>(h.kind), seq});
        });
  }
  std::size_t count(StreamId s, fileio::RecordKind k) const {
    std::size_t n = 0;
    for (const auto& [p, v] : by_producer)
      for (const Rec& r : v) n += r.stream == s && r.kind == k;
    return n;
  }
};

TEST(SpanLane, RtpBeforeItsEndpointIsHeldThenDeliveredInOrder) {
  SpanLaneOptions o;
  o.hold_ns = 1'000'000'000;
  o.hold_packets = 64;
  SpanLane lane(o);
  fileio::RingMatrix rings(1, 1, 1 << 16);
  ASSERT_TRUE(lane.start(rings).is_ok());
  const decode::Endpoint media = ep4(0xC0A80002, 40000);
  const std::uint64_t t0 = 1'700'000'000'000'000'000ull;
  for (unsigned q = 0; q < 5; ++q)
    lane.on_frame(decode::kLinkEthernet, udp_frame(0x0A000001, 30000, 0xC0A80002, 40000, rtp(q, 1)), t0 + q * 20'000'000);
  EXPECT_EQ(lane.counter(kS_rtp_held), 5u);
  EXPECT_EQ(lane.held(), 5u);
  lane.add_stream(7, {});
  lane.set_endpoint(media, 7, 0, false);
  lane.on_frame(decode::kLinkEthernet, udp_frame(0x0A000001, 30000, 0xC0A80002, 40000, rtp(5, 1)), t0 + 5 * 20'000'000);
  // Not rescued yet: the lane group calls rescue_held() right after the commands, before any
  // new frame; this lane got one frame first, so that one came first.
  lane.rescue_held();
  lane.flush();
  Drained d;
  d.drain(rings);
  ASSERT_EQ(d.by_producer[0].size(), 6u);
  EXPECT_EQ(d.by_producer[0][0].seq, 5u);
  for (unsigned q = 0; q < 5; ++q) EXPECT_EQ(d.by_producer[0][q + 1].seq, q);
  EXPECT_EQ(lane.counter(kS_rtp_rescued), 5u);
  EXPECT_EQ(lane.held(), 0u);
  EXPECT_EQ(lane.stream_stats(7)->packets, 6u);

  // Held RTP of no call expires by packet time and is then counted as unattributed.
  for (unsigned q = 0; q < 3; ++q)
    lane.on_frame(decode::kLinkEthernet, udp_frame(0x0A000009, 30000, 0xC0A80009, 40000, rtp(q, 2)), t0 + q);
  EXPECT_EQ(lane.held(), 3u);
  lane.expire(t0 + 500'000'000);
  EXPECT_EQ(lane.held(), 3u);
  lane.expire(t0 + 2'000'000'000);
  EXPECT_EQ(lane.held(), 0u);
  EXPECT_EQ(lane.counter(kS_rtp_unattributed), 3u);
  // A full hold drops its oldest (counted), never more than hold_packets.
  for (unsigned q = 0; q < 100; ++q)
    lane.on_frame(decode::kLinkEthernet, udp_frame(0x0A000009, 30000, 0xC0A80009, 40000, rtp(q, 3)), t0 + 3e9);
  EXPECT_EQ(lane.held(), 64u);
  EXPECT_EQ(lane.counter(kS_rtp_unattributed), 3u + 36u);
}

// A held packet goes to the stream its endpoint led to at the packet's own time, even when the
// endpoint changed hands again before the lane heard of either change (a re-INVITE moving a
// port from one dialog to another): each change first matches what was held before it.
TEST(SpanLane, HeldRtpGoesWhereItsEndpointLedAtItsOwnTime) {
  SpanLaneOptions o;
  o.hold_ns = 1'000'000'000;
  SpanLane lane(o);
  fileio::RingMatrix rings(1, 1, 1 << 16);
  ASSERT_TRUE(lane.start(rings).is_ok());
  const decode::Endpoint e = ep4(0xC0A80002, 40000);
  const std::uint64_t t0 = 1'700'000'000'000'000'000ull;
  lane.add_stream(1, {});
  lane.add_stream(2, {});
  // Packets at t0+10 and t0+30; SDP gave e to stream 1 at t0+5 and to stream 2 at t0+20.
  lane.on_frame(decode::kLinkEthernet, udp_frame(0x0A000001, 30000, 0xC0A80002, 40000, rtp(1, 1)), t0 + 10);
  lane.on_frame(decode::kLinkEthernet, udp_frame(0x0A000001, 30000, 0xC0A80002, 40000, rtp(2, 1)), t0 + 30);
  ASSERT_EQ(lane.held(), 2u);
  lane.rescue_held(t0 + 5);
  lane.set_endpoint(e, 1, 0, false);
  lane.rescue_held(t0 + 20);  // before the second change: what was held from before t0+20
  lane.set_endpoint(e, 2, 0, false);
  lane.rescue_held();  // after the batch
  EXPECT_EQ(lane.held(), 0u);
  EXPECT_EQ(lane.stream_stats(1)->packets, 1u);
  EXPECT_EQ(lane.stream_stats(1)->first_ns, t0 + 10);
  EXPECT_EQ(lane.stream_stats(2)->packets, 1u);
  EXPECT_EQ(lane.stream_stats(2)->first_ns, t0 + 30);
  // A held packet of an endpoint nobody set stays held through the passes.
  lane.on_frame(decode::kLinkEthernet, udp_frame(0x0A000001, 30000, 0xC0A80009, 40000, rtp(3, 1)), t0 + 40);
  lane.set_endpoint(e, 1, 0, false);
  lane.rescue_held();
  EXPECT_EQ(lane.held(), 1u);
  EXPECT_EQ(lane.counter(kS_rtp_rescued), 2u);
}

/// A fake mirror port: frames queued per lane, handed out by the lane's poll.
class FakePort {
 public:
  explicit FakePort(unsigned lanes) : q_(lanes), out_(lanes) {}
  void add(unsigned lane, Bytes frame, std::uint64_t ts) {
    std::lock_guard lock(mu_);
    q_[lane].push_back({std::move(frame), ts});
  }
  unsigned poll(unsigned lane, capture::Frame* out, unsigned max) {
    std::lock_guard lock(mu_);
    auto& held = out_[lane];
    held.clear();
    while (!q_[lane].empty() && held.size() < max) {
      held.push_back(std::move(q_[lane].front()));
      q_[lane].pop_front();
    }
    for (std::size_t i = 0; i < held.size(); ++i) {
      out[i].link = decode::kLinkEthernet;
      out[i].data = held[i].first;
      out[i].ts_ns = held[i].second;
      out[i].orig_len = static_cast<std::uint32_t>(held[i].first.size());
    }
    return static_cast<unsigned>(held.size());
  }

 private:
  std::mutex mu_;
  std::vector<std::deque<std::pair<Bytes, std::uint64_t>>> q_;
  std::vector<std::vector<std::pair<Bytes, std::uint64_t>>> out_;  ///< valid until the next poll
};

struct RecordingSink : SpanSink {
  std::vector<std::string> sip;
  std::vector<std::uint64_t> sip_ts;
  void on_sip(std::string_view msg, const decode::Endpoint&, const decode::Endpoint&, std::uint64_t ts) override {
    sip.emplace_back(msg);
    sip_ts.push_back(ts);
  }
  std::size_t on_sip_stream(std::string_view b, bool, const decode::Endpoint&, const decode::Endpoint&,
                            std::uint64_t) override {
    return b.size();
  }
  void on_dtmf(StreamId, std::string_view, std::uint32_t, std::uint64_t) override {}
};

template <typename F>
bool wait_for(F&& done, std::chrono::milliseconds limit = 10s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

TEST(SpanLaneGroup, LanesFollowTheTrackersCommandsAndHandItTheirSip) {
  constexpr unsigned kLanes = 2;
  FakePort port(kLanes);
  LaneGroupOptions o;
  o.lanes = kLanes;
  o.first_producer = 1;  // producer 0 is another source's
  o.idle_sleep_us = 100;
  o.report_interval = 1ms;
  SpanLaneGroup g(o, [&](unsigned l, capture::Frame* out, unsigned max) { return port.poll(l, out, max); });
  EXPECT_EQ(g.rx_threads(), kLanes);
  EXPECT_EQ(g.end_marks_per_stream(), kLanes);
  fileio::RingMatrix rings(1 + kLanes, 1, 1 << 20);
  ASSERT_TRUE(g.start(rings).is_ok());
  RecordingSink sink;
  const std::uint64_t t0 = 1'700'000'000'000'000'000ull;

  // SIP from both lanes reaches the sink in packet-time order, whatever lane was first.
  port.add(1, udp_frame(0x0A000002, 5060, 0x0A000003, 5060, text("SIP/2.0 200 OK\r\n\r\n")), t0 + 2);
  ASSERT_TRUE(wait_for([&] { return g.frames() >= 1; }));
  port.add(0, udp_frame(0x0A000001, 5060, 0x0A000002, 5060, text("INVITE sip:b@x SIP/2.0\r\n\r\n")), t0 + 1);
  ASSERT_TRUE(wait_for([&] {
    g.poll_events(sink);
    return sink.sip.size() >= 2;
  }));
  // (Both may have been taken in one poll; if not, the 200 OK came first. Only one order is
  // possible when they were taken together.)
  if (sink.sip_ts[0] == t0 + 1) {
    EXPECT_EQ(sink.sip[0].substr(0, 6), "INVITE");
  }

  // A stream whose RTP arrives on both lanes (its source moved to a pair the other lane has),
  // part of it before its endpoint was set.
  const decode::Endpoint media = ep4(0xC0A80002, 40000);
  port.add(0, udp_frame(0x0A000001, 30000, 0xC0A80002, 40000, rtp(0, 1)), t0 + 10);
  ASSERT_TRUE(wait_for([&] { return g.frames() >= 3; }));
  g.add_stream(7, {}, 8000, 0);
  g.set_endpoint(media, 7, 0, false);
  for (unsigned q = 1; q < 4; ++q) port.add(0, udp_frame(0x0A000001, 30000, 0xC0A80002, 40000, rtp(q, 1)), t0 + 10 + q);
  for (unsigned q = 4; q < 6; ++q) port.add(1, udp_frame(0x0A000005, 30000, 0xC0A80002, 40000, rtp(q, 1)), t0 + 10 + q);
  ASSERT_TRUE(wait_for([&] {
    g.poll_events(sink);
    const auto st = g.stats_of(7);
    return st && st->packets == 6;
  })) << (g.stats_of(7) ? g.stats_of(7)->packets : 0);
  const auto st = g.stats_of(7);
  EXPECT_TRUE(st->moved);
  EXPECT_EQ(st->first_ns, t0 + 10);
  EXPECT_EQ(st->last_ns, t0 + 15);
  EXPECT_EQ(st->src, ep4(0x0A000005, 30000));

  // Removed: every lane pushes its end mark after its packets of the stream.
  g.remove_flow(7);
  Drained d;
  ASSERT_TRUE(wait_for([&] {
    d.drain(rings);
    return d.count(7, fileio::RecordKind::kEndOfStream) == kLanes;
  }));
  EXPECT_EQ(d.count(7, fileio::RecordKind::kPacket), 6u);
  for (unsigned p = 1; p <= kLanes; ++p) {
    const auto& v = d.by_producer[p];
    ASSERT_FALSE(v.empty()) << "producer " << p;
    EXPECT_EQ(v.back().kind, fileio::RecordKind::kEndOfStream) << "producer " << p;
  }
  // lane 0 delivered the held packet 0 first, then 1..3 in order
  std::vector<std::uint16_t> lane0;
  for (const auto& r : d.by_producer[1])
    if (r.kind == fileio::RecordKind::kPacket) lane0.push_back(r.seq);
  EXPECT_EQ(lane0, (std::vector<std::uint16_t>{0, 1, 2, 3}));
  EXPECT_FALSE(g.stats_of(7).has_value());
  ASSERT_TRUE(g.flow_stats(7).has_value());  // the final figures are remembered
  EXPECT_EQ(g.flow_stats(7)->packets, 6u);

  // Counters: summed over lanes (published every 100 ms). Packet 0 was certainly held; 1..5
  // were too if their lane took them before it took the commands (published at the next
  // poll_events, taken by each lane between its bursts), so the count is 1..6, and every held
  // datagram was rescued: none expired, none was lost.
  auto counter_of = [&](std::string_view name) -> std::uint64_t {
    for (const SourceCounter& c : g.counters())
      if (c.name == name) return c.value;
    return 0;
  };
  ASSERT_TRUE(wait_for([&] {
    const std::uint64_t held = counter_of("span_rtp_held");
    return held >= 1 && counter_of("span_rtp_rescued") == held;
  })) << "held " << counter_of("span_rtp_held") << " rescued " << counter_of("span_rtp_rescued");
  EXPECT_LE(counter_of("span_rtp_held"), 6u);
  ASSERT_TRUE(g.quiesce(sink, 5s));
  g.stop();
  EXPECT_EQ(g.counter(kLG_tcp_partial_dropped), 0u);
}

/// Frames SIP over TCP as the call tracker does: whole messages (headers end, no body here)
/// are consumed, a partial one is left for the next bytes.
struct FramingSink : SpanSink {
  std::vector<std::string> messages;
  std::size_t calls = 0;
  void on_sip(std::string_view, const decode::Endpoint&, const decode::Endpoint&, std::uint64_t) override {}
  std::size_t on_sip_stream(std::string_view b, bool, const decode::Endpoint&, const decode::Endpoint&,
                            std::uint64_t) override {
    ++calls;
    std::size_t used = 0;
    for (;;) {
      const std::size_t end = b.find("\r\n\r\n", used);
      if (end == std::string_view::npos) return used;
      messages.emplace_back(b.substr(used, end + 4 - used));
      used = end + 4;
    }
  }
  void on_dtmf(StreamId, std::string_view, std::uint32_t, std::uint64_t) override {}
};

// SIP over TCP on a lane thread: the lane hands every in-order byte to the control thread,
// which keeps the partial message of each stream until its end arrives in a later segment.
TEST(SpanLaneGroup, SipOverTcpSplitAcrossSegmentsIsFramedOnTheControlSide) {
  FakePort port(1);
  LaneGroupOptions o;
  o.lanes = 1;
  o.idle_sleep_us = 100;
  SpanLaneGroup g(o, [&](unsigned l, capture::Frame* out, unsigned max) { return port.poll(l, out, max); });
  fileio::RingMatrix rings(1, 1, 1 << 16);
  ASSERT_TRUE(g.start(rings).is_ok());
  FramingSink sink;
  const std::string m1 = "INVITE sip:b@example.com SIP/2.0\r\nCall-ID: one\r\nContent-Length: 0\r\n\r\n";
  const std::string m2 = "BYE sip:b@example.com SIP/2.0\r\nCall-ID: one\r\nContent-Length: 0\r\n\r\n";
  const std::uint64_t t0 = 1'700'000'000'000'000'000ull;
  std::uint32_t seq = 1000;
  // m1 over three segments (the first has its whole request line: that is how the lane knows
  // a SIP stream), the third also carries all of m2.
  const std::string a = m1.substr(0, 40), b = m1.substr(40, 20), c = m1.substr(60) + m2;
  for (const std::string* part : {&a, &b, &c}) {
    port.add(0, tcp_frame(0x0A000001, 40000, 0x0A000002, 5060, seq, *part), t0 + seq);
    seq += static_cast<std::uint32_t>(part->size());
    const std::size_t want = part == &c ? 2 : 0;
    ASSERT_TRUE(wait_for([&] {
      g.poll_events(sink);
      return sink.calls >= static_cast<std::size_t>(part == &a ? 1 : part == &b ? 2 : 3);
    })) << sink.calls;
    EXPECT_EQ(sink.messages.size(), want);
  }
  ASSERT_EQ(sink.messages.size(), 2u);
  EXPECT_EQ(sink.messages[0], m1);
  EXPECT_EQ(sink.messages[1], m2);
  g.stop();
  EXPECT_EQ(g.counter(kLG_tcp_partial_dropped), 0u);
}

}  // namespace
}  // namespace callrec::dataplane
