// Passive capture, where the time goes: the cost per packet of each stage of the span path.
//
//   BM_DecodeRtpFrame      decode: Ethernet/IPv4/UDP frame of one RTP packet -> Packet view
//   BM_DecodeVxlanFrame    the same inside VXLAN (a remote mirror)
//   BM_LaneRtp/<calls>     lane: decode + endpoint lookup among 2 x calls endpoints + ring push,
//                          the whole per-RTP-packet cost of the reading thread (the ring is
//                          drained in the same thread every 32 packets: a second thread on this
//                          2-core machine made the figure depend on the scheduler)
//   BM_LaneNoise           lane: a UDP datagram of no call (lookup miss + SIP sniff + count)
//   BM_SipParseInvite      SIP: parse a 900-byte INVITE (datagram framing, all headers)
//   BM_SdpParse            SDP: parse the INVITE's offer
//   BM_ReadCapture/0|1     reading a capture file into bursts for the lane: 0 = callrec's reader
//                          (read_burst, frames in its buffer), 1 = libpcap + a copy of each frame
//                          into the burst (how --span-read read classic pcap before); 100 calls x
//                          60 s generated into /dev/shm (~300,000 frames, page cache warm)
//
// Rerun:
//   cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release && cmake --build build-bench --target span_bench
//   build-bench/bench/span_bench
// Figures are ns per packet (Time column; items_per_second = packets/s of one core). Results
// and the machine: bench/RESULTS.md ("Passive capture: where the time goes").
#include <benchmark/benchmark.h>

#include <unistd.h>

#include <array>
#include <cstdlib>
#include <atomic>
#include <span>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "control/sip/sdp.hpp"
#include "dataplane/capture/capture.hpp"
#include "tools/callrec-pcapgen/calls_gen.hpp"
#include "control/sip/sip_message.hpp"
#include "dataplane/decode/decode.hpp"
#include "dataplane/span/span_lane.hpp"
#include "fileio/packet_ring.hpp"

namespace {

using namespace callrec;
using dataplane::decode::Endpoint;
using dataplane::decode::IpAddr;

/// A frame built in place (fixed storage: GCC 12 sees phantom null vectors at -O2).
struct Frame {
  std::array<std::byte, 320> b{};  // a 172-byte RTP frame fits, VXLAN too; small keeps the set warm
  std::size_t n = 0;
  [[nodiscard]] std::span<const std::byte> bytes() const { return {b.data(), n}; }
  operator std::span<const std::byte>() const { return bytes(); }  // NOLINT: a view, as vector
  void put16(std::size_t at, unsigned v) {
    b[at] = static_cast<std::byte>(v >> 8);
    b[at + 1] = static_cast<std::byte>(v);
  }
};

/// Ethernet + IPv4 + UDP around a payload of payload_len bytes, src:sport -> dst:dport.
Frame udp_frame(std::uint32_t src, std::uint16_t sport, std::uint32_t dst, std::uint16_t dport,
                std::size_t payload_len, std::uint8_t first = 0x80) {
  Frame f;
  f.n = 14 + 20 + 8 + payload_len;
  f.put16(12, 0x0800);
  f.b[14] = std::byte{0x45};
  f.put16(16, static_cast<unsigned>(20 + 8 + payload_len));
  f.b[22] = std::byte{64};
  f.b[23] = std::byte{17};
  for (std::size_t i = 0; i < 4; ++i) {
    f.b[26 + i] = static_cast<std::byte>(src >> (24 - 8 * i));
    f.b[30 + i] = static_cast<std::byte>(dst >> (24 - 8 * i));
  }
  f.put16(34, sport);
  f.put16(36, dport);
  f.put16(38, static_cast<unsigned>(8 + payload_len));
  f.b[42] = static_cast<std::byte>(first);
  f.b[43] = std::byte{8};  // PCMA
  return f;
}

void BM_DecodeRtpFrame(benchmark::State& state) {
  const auto f = udp_frame(0x0A000001, 40000, 0x0A000002, 50000, 172);
  dataplane::decode::Counters c;
  dataplane::decode::Packet p;
  for (auto _ : state) {
    benchmark::DoNotOptimize(dataplane::decode::decode_frame(dataplane::decode::kLinkEthernet, f, p, c));
    benchmark::DoNotOptimize(p.payload.data());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_DecodeRtpFrame);

void BM_DecodeVxlanFrame(benchmark::State& state) {
  const auto inner = udp_frame(0x0A000001, 40000, 0x0A000002, 50000, 172);
  auto f = udp_frame(0xC0000201, 12345, 0xC0000202, 4789, 8 + inner.n, 0x08);
  std::memcpy(f.b.data() + 42 + 8, inner.b.data(), inner.n);
  f.b[43] = std::byte{0};
  dataplane::decode::Counters c;
  dataplane::decode::Packet p;
  for (auto _ : state) {
    benchmark::DoNotOptimize(dataplane::decode::decode_frame(dataplane::decode::kLinkEthernet, f, p, c));
    benchmark::DoNotOptimize(p.payload.data());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_DecodeVxlanFrame);

/// A lane following `calls` calls (two endpoints each), one writer thread draining its ring.
struct LaneFixture {
  explicit LaneFixture(unsigned calls) : rings(1, 1, 32u << 20), lane(dataplane::SpanLaneOptions{}) {
    (void)lane.start(rings);
    for (unsigned i = 0; i < calls; ++i) {
      const auto a = static_cast<fileio::StreamId>(2 * i + 1), b = static_cast<fileio::StreamId>(2 * i + 2);
      lane.add_stream(a, {}, 8000, b);
      lane.add_stream(b, {}, 8000, a);
      lane.set_endpoint(ep(0x0A000000 + i, 40000), b, a, false);
      lane.set_endpoint(ep(0x0B000000 + i, 50000), a, b, false);
    }
  }
  void drain() {
    rings.ring(0, 0).consume([](const fileio::RingRecordHeader&, std::span<const std::byte>) {});
  }
  static Endpoint ep(std::uint32_t a, std::uint16_t port) {
    Endpoint e;
    e.addr.family = 4;
    for (int i = 0; i < 4; ++i) e.addr.b[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(a >> (24 - 8 * i));
    e.port = port;
    return e;
  }
  fileio::RingMatrix rings;
  dataplane::SpanLane lane;
};

/// One frame per call direction (up to 4,096), in a scattered order (as the wire interleaves calls).
std::vector<Frame> scattered_frames(unsigned calls) {
  std::vector<Frame> frames;
  for (unsigned i = 0; i < std::min(calls, 4096u); ++i) {
    const unsigned k = (i * 2654435761u) % calls;
    frames.push_back(udp_frame(0x0A000000 + k, 40000, 0x0B000000 + k, 50000, 172));
  }
  return frames;
}

void BM_LaneRtp(benchmark::State& state) {
  const auto calls = static_cast<unsigned>(state.range(0));
  LaneFixture fx(calls);
  const std::vector<Frame> frames = scattered_frames(calls);
  std::uint64_t ts = 1'700'000'000'000'000'000ull, n = 0;
  for (auto _ : state) {
    const auto& f = frames[n % frames.size()];
    fx.lane.on_frame(dataplane::decode::kLinkEthernet, f, ts);
    ts += 1000;
    if ((++n & 31) == 0) {
      fx.lane.flush();
      fx.drain();
    }
  }
  fx.lane.flush();
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.counters["ring_full"] = static_cast<double>(fx.lane.counter(dataplane::kS_ring_full));
}
BENCHMARK(BM_LaneRtp)->Arg(100)->Arg(10000)->Arg(100000);

/// The same traffic through the burst path that capture files and live captures take: 32
/// frames copied into a FrameBurst, then SpanLane::on_burst (decode all, prefetch the endpoint
/// slots, then the stream states, then classify and deliver).
void BM_LaneRtpBurst(benchmark::State& state) {
  const auto calls = static_cast<unsigned>(state.range(0));
  LaneFixture fx(calls);
  const std::vector<Frame> frames = scattered_frames(calls);
  dataplane::capture::FrameBurst burst;
  std::uint64_t ts = 1'700'000'000'000'000'000ull, n = 0;
  for (auto _ : state) {
    for (unsigned i = 0; i < dataplane::capture::FrameBurst::kMax; ++i) {
      const auto& f = frames[n++ % frames.size()];
      (void)burst.add(dataplane::capture::Frame{f.bytes(), dataplane::decode::kLinkEthernet, ts, static_cast<std::uint32_t>(f.n)});
      ts += 1000;
    }
    fx.lane.on_burst(burst.frames());
    burst.clear();
    fx.lane.flush();
    fx.drain();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * dataplane::capture::FrameBurst::kMax);
  state.counters["ring_full"] = static_cast<double>(fx.lane.counter(dataplane::kS_ring_full));
}
BENCHMARK(BM_LaneRtpBurst)->Arg(100)->Arg(10000)->Arg(100000);

void BM_LaneNoise(benchmark::State& state) {
  LaneFixture fx(10000);
  const auto f = udp_frame(0x0C000001, 161, 0x0C000002, 162, 100, 0x30);  // SNMP-ish
  std::uint64_t ts = 1'700'000'000'000'000'000ull;
  for (auto _ : state) fx.lane.on_frame(dataplane::decode::kLinkEthernet, f, ts++);
  fx.drain();
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_LaneNoise);

const std::string kInvite =
    "INVITE sip:+4930123456@carrier.example.net;user=phone SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: \"Alice Example\" <sip:+4940987654@pbx.example.com>;tag=1928301774\r\n"
    "To: <sip:+4930123456@carrier.example.net;user=phone>\r\n"
    "Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:alice@192.0.2.10:5060>\r\n"
    "P-Asserted-Identity: \"Alice Example\" <sip:+4940987654@pbx.example.com>\r\n"
    "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE, INFO, REFER, NOTIFY\r\n"
    "Supported: 100rel, timer, replaces\r\n"
    "Session-Expires: 1800\r\n"
    "User-Agent: ExamplePBX 12.3\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 253\r\n"
    "\r\n"
    "v=0\r\n"
    "o=- 3724394400 3724394400 IN IP4 192.0.2.10\r\n"
    "s=-\r\n"
    "c=IN IP4 192.0.2.20\r\n"
    "t=0 0\r\n"
    "m=audio 40000 RTP/AVP 8 0 9 101\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\n"
    "a=ptime:20\r\n"
    "a=sendrecv\r\n";

void BM_SipParseInvite(benchmark::State& state) {
  control::sip::Message m;
  for (auto _ : state) {
    benchmark::DoNotOptimize(control::sip::parse_message(kInvite, m, false));
    benchmark::DoNotOptimize(m.body.data());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kInvite.size()));
}
BENCHMARK(BM_SipParseInvite);

void BM_SdpParse(benchmark::State& state) {
  control::sip::Message m;
  (void)control::sip::parse_message(kInvite, m, false);
  control::sip::Sdp sdp;
  for (auto _ : state) {
    benchmark::DoNotOptimize(control::sip::parse_sdp(m.body, sdp));
    benchmark::DoNotOptimize(sdp.media.data());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_SdpParse);

void BM_ReadCapture(benchmark::State& state) {
  static const std::string path = [] {
    const std::string p = "/dev/shm/callrec-span-bench-" + std::to_string(::getpid()) + ".pcap";
    pcapgen::CallsOptions o;
    o.calls = 100;
    o.seconds = 60;
    std::vector<pcapgen::Call> calls;
    pcapgen::CallsSummary sum;
    if (!pcapgen::plan_calls(o, calls, sum).empty() || !pcapgen::write_calls_pcap(p, o, calls, sum).empty()) std::abort();
    std::atexit([] { ::unlink(("/dev/shm/callrec-span-bench-" + std::to_string(::getpid()) + ".pcap").c_str()); });
    return p;
  }();
  const bool libpcap = state.range(0) == 1;
  std::uint64_t frames = 0, sink = 0;
  for (auto _ : state) {
    Status st;
    auto src = libpcap ? dataplane::capture::open_with_libpcap(path, st) : dataplane::capture::open_file(path, st);
    if (!src) std::abort();
    std::array<dataplane::capture::Frame, 32> out;
    if (libpcap) {
      dataplane::capture::FrameBurst burst;
      dataplane::capture::Frame f;
      while (src->next(f) == 1) {
        if (!burst.add(f)) {
          for (const auto& x : burst.frames()) sink += std::to_integer<unsigned>(x.data[x.data.size() / 2]);
          frames += burst.frames().size();
          burst.clear();
          (void)burst.add(f);
        }
      }
      for (const auto& x : burst.frames()) sink += std::to_integer<unsigned>(x.data[x.data.size() / 2]);
      frames += burst.frames().size();
    } else {
      for (int n; (n = src->read_burst(out.data(), 32)) > 0;) {
        for (int i = 0; i < n; ++i) sink += std::to_integer<unsigned>(out[static_cast<std::size_t>(i)].data[out[static_cast<std::size_t>(i)].data.size() / 2]);
        frames += static_cast<std::uint64_t>(n);
      }
    }
  }
  benchmark::DoNotOptimize(sink);
  state.SetItemsProcessed(static_cast<std::int64_t>(frames));
}
BENCHMARK(BM_ReadCapture)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
