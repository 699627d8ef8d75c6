// callrec-pcapgen's calls mode (tools/callrec-pcapgen/calls_gen.hpp): the capture is well formed
// (lengths, IPv4 checksums, times in order, fragments), and callrecd --span-read records every
// call with both directions and exactly the packets generated, re-INVITEs and fragmented INVITEs
// included.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "../e2e/harness.hpp"
#include "tools/callrec-pcapgen/calls_gen.hpp"
#include "tools/callrec/json_reader.hpp"

namespace {

namespace pg = callrec::pcapgen;
using callrec::cli::Json;
using callrec::cli::JsonParser;
using callrec::e2e::bin;
using callrec::e2e::run_cmd;
using callrec::e2e::TempDir;

std::uint16_t be16(const std::uint8_t* p) { return static_cast<std::uint16_t>((p[0] << 8) | p[1]); }

struct Generated {
  pg::CallsOptions opts;
  std::vector<pg::Call> calls;
  pg::CallsSummary sum;
};

Generated generate(const std::string& path, unsigned calls, unsigned seconds) {
  Generated g;
  g.opts.calls = calls;
  g.opts.seconds = seconds;
  EXPECT_EQ(pg::plan_calls(g.opts, g.calls, g.sum), "");
  EXPECT_EQ(pg::write_calls_pcap(path, g.opts, g.calls, g.sum), "");
  return g;
}

TEST(PcapgenCalls, PlanHasTheSharesAndAllCallsOverlap) {
  pg::CallsOptions o;
  o.calls = 1000;
  o.seconds = 10;
  std::vector<pg::Call> calls;
  pg::CallsSummary sum;
  ASSERT_EQ(pg::plan_calls(o, calls, sum), "");
  EXPECT_EQ(sum.reinvites, 100u);
  EXPECT_EQ(sum.fragmented, 100u);
  EXPECT_EQ(sum.peak_concurrent, 1000u);
  EXPECT_EQ(sum.packets_per_direction, 500u);
  std::set<std::uint32_t> ssrcs;
  std::set<std::uint32_t> callers;
  for (const pg::Call& c : calls) {
    ssrcs.insert(c.ssrc[0]);
    ssrcs.insert(c.ssrc[1]);
    callers.insert(c.caller_ip);
    EXPECT_EQ(c.caller_rtp % 2, 0);
    EXPECT_EQ(c.callee_rtp % 2, 0);
  }
  EXPECT_EQ(ssrcs.size(), 2000u);
  EXPECT_EQ(callers.size(), 1000u);
  o.reinvite_pct = 0;
  o.fragment_pct = 0;
  ASSERT_EQ(pg::plan_calls(o, calls, sum), "");
  EXPECT_EQ(sum.reinvites + sum.fragmented, 0u);
  o.calls = 0;
  EXPECT_NE(pg::plan_calls(o, calls, sum), "");
}

TEST(PcapgenCalls, CaptureIsWellFormed) {
  TempDir dir;
  const std::string pcap = (dir.path() / "calls.pcap").string();
  const Generated g = generate(pcap, 20, 2);
  std::ifstream in(pcap, std::ios::binary);
  const std::vector<std::uint8_t> b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_EQ(b.size(), g.sum.file_bytes);
  ASSERT_GE(b.size(), 24u);
  std::uint32_t magic = 0;
  std::memcpy(&magic, b.data(), 4);
  EXPECT_EQ(magic, 0xA1B2C3D4u);
  std::size_t off = 24;
  std::uint64_t frames = 0, rtp = 0, fragments = 0, last_us = 0;
  while (off + 16 <= b.size()) {
    std::uint32_t rec[4];
    std::memcpy(rec, b.data() + off, sizeof rec);
    ASSERT_EQ(rec[2], rec[3]);
    ASSERT_LE(off + 16 + rec[2], b.size());
    const std::uint64_t t_us = std::uint64_t{rec[0]} * 1'000'000 + rec[1];
    ASSERT_GE(t_us, last_us) << "frame " << frames;
    last_us = t_us;
    const std::uint8_t* f = b.data() + off + 16;
    ASSERT_EQ(be16(f + 12), 0x0800);
    const std::uint8_t* ip = f + 14;
    ASSERT_EQ(ip[0], 0x45);
    ASSERT_EQ(be16(ip + 2), rec[2] - 14) << "IPv4 total length, frame " << frames;
    ASSERT_LE(rec[2], 1514u);
    std::uint32_t s = 0;
    for (unsigned i = 0; i < 20; i += 2) s += be16(ip + i);
    while (s >> 16) s = (s & 0xFFFF) + (s >> 16);
    ASSERT_EQ(s, 0xFFFFu) << "IPv4 header checksum, frame " << frames;
    const bool fragment = (be16(ip + 6) & 0x3FFF) != 0;
    if (fragment) {
      ++fragments;
    } else if (be16(ip + 20 + 4) == 8 + 172 && ip[28] == 0x80) {
      ++rtp;
    }
    off += 16 + rec[2];
    ++frames;
  }
  EXPECT_EQ(off, b.size());
  EXPECT_EQ(frames, g.sum.frames);
  EXPECT_EQ(rtp, g.sum.rtp);
  EXPECT_EQ(rtp, 20u * 2 * 100);
  EXPECT_EQ(fragments, g.sum.fragments);
  EXPECT_EQ(fragments, 2u * g.sum.fragmented);
  EXPECT_EQ(g.sum.fragmented, 2u);
}

TEST(PcapgenCalls, SpanReadRecordsEveryCallBothWays) {
  TempDir dir;
  const std::string pcap = (dir.path() / "calls.pcap").string();
  const std::string catalog = (dir.path() / "catalog.db").string();
  const Generated g = generate(pcap, 50, 3);
  ASSERT_EQ(g.sum.packets_per_direction, 150u);
  ASSERT_EQ(g.sum.reinvites, 5u);
  ASSERT_EQ(g.sum.fragmented, 5u);

  const auto r = run_cmd({bin("callrecd"), "--span-read", pcap, "--storage", (dir.path() / "rec").string(), "--catalog",
                          catalog, "--log-level", "warn"},
                         std::chrono::seconds(120));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("frames/s"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("calls: 50 followed, 50 answered, 50 recorded (100 directions with RTP)"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("5 media moves"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("reassembled: 5 IP datagrams from fragments"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rtp: 15000 packets"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("rtp_unattributed"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("dropped: nothing"), std::string::npos) << r.out;

  const auto l = run_cmd({bin("callrec"), "list", "--catalog", catalog, "--json", "--limit", "0"});
  ASSERT_EQ(l.exit_code, 0) << l.out << l.err;
  JsonParser parser(l.out);
  const auto json = parser.parse();
  ASSERT_TRUE(json) << parser.error();
  ASSERT_EQ(json->items.size(), 50u);
  std::map<std::string, const pg::Call*> by_id;
  for (const pg::Call& c : g.calls) by_id[pg::call_id(c, g.opts.seed)] = &c;
  std::set<std::string> seen;
  for (const Json& row : json->items) {
    const std::string id = row.text("call_id");
    ASSERT_TRUE(by_id.contains(id)) << id;
    seen.insert(id);
    const pg::Call& c = *by_id[id];
    EXPECT_EQ(row.text("source"), "span");
    EXPECT_EQ(row.text("stop_reason"), "hangup");
    const Json* streams = row.get("streams");
    ASSERT_NE(streams, nullptr);
    ASSERT_EQ(streams->items.size(), 2u) << id;
    for (const Json& s : streams->items) {
      EXPECT_EQ(s.num("packets"), 150) << id << " " << s.text("role");
      EXPECT_EQ(s.num("lost"), 0) << id;
      EXPECT_EQ(s.text("codec"), "PCMA") << id;
      // The mover's own stream comes from two source ports.
      const bool mover_sends = c.moved_port != 0 && s.text("role") == (c.mover == 0 ? "caller" : "callee");
      EXPECT_EQ(s.text("flags").find("moved") != std::string::npos, mover_sends) << id << " " << s.text("role");
    }
  }
  EXPECT_EQ(seen.size(), 50u);
}

}  // namespace
