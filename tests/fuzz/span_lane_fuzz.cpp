// libFuzzer target for the span lane's burst path, differentially: the same frames go through
// one lane frame by frame (on_frame) and through another in bursts whose sizes the input picks
// (on_burst: decode all, prefetch, then classify in order). Endpoints are installed from the
// frames themselves, and a sink changes the endpoint table whenever a SIP message passes (adds
// one, clears one), so that the table changes in the middle of bursts. Both lanes must push
// the same records to the writer rings in the same order, report the same sink calls and end
// with the same counters; anything else aborts, as does any sanitizer report.
//
// A third lane holds RTP of no call (as the lanes of a DPDK mirror do while a call's SDP is on its
// way), in a hold small enough to wrap and overflow; endpoints are set as the frames go, held
// packets rescued after each frame and expired by packet time: its counters must balance (held =
// rescued + dropped + still held) and nothing may be held after the final expiry.
//
// Input: byte 0 picks the link type, byte 1 seeds the burst sizes, the rest is frames separated
// by the 4-byte marker F0 0D CA FE (decode_fuzz's format).
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "dataplane/capture/capture.hpp"
#include "dataplane/decode/decode.hpp"
#include "dataplane/span/span_lane.hpp"
#include "fileio/packet_ring.hpp"

namespace {

using namespace callrec;  // NOLINT(google-build-using-namespace): a fuzz target's own file
using dataplane::decode::Endpoint;

void check(bool ok) {
  if (!ok) std::abort();
}

constexpr std::uint32_t kLinks[] = {dataplane::decode::kLinkEthernet, dataplane::decode::kLinkRaw,
                                    dataplane::decode::kLinkSll, dataplane::decode::kLinkIpv4,
                                    dataplane::decode::kLinkIpv6, dataplane::decode::kLinkSll2};
constexpr std::byte kSep[] = {std::byte{0xF0}, std::byte{0x0D}, std::byte{0xCA}, std::byte{0xFE}};

/// Logs what the lane reports and moves endpoints on SIP, identically for both lanes.
class Sink final : public dataplane::SpanSink {
 public:
  dataplane::SpanLane* lane = nullptr;
  std::string log;
  void on_sip(std::string_view msg, const Endpoint& src, const Endpoint& dst, std::uint64_t ts) override {
    log += "sip " + std::to_string(msg.size()) + " " + std::to_string(ts) + "\n";
    if ((msg.size() & 1u) != 0)
      lane->set_endpoint(src, 2, 1, (msg.size() & 2u) != 0);
    else
      lane->clear_endpoint(dst, 1);
  }
  std::size_t on_sip_stream(std::string_view bytes, bool lost, const Endpoint&, const Endpoint&,
                            std::uint64_t ts) override {
    log += "tcp " + std::to_string(bytes.size()) + (lost ? " lost " : " ") + std::to_string(ts) + "\n";
    return bytes.size() / 2;  // keep some: the next segment sees them again
  }
  void on_dtmf(fileio::StreamId s, std::string_view digit, std::uint32_t ms, std::uint64_t ts) override {
    log += "dtmf " + std::to_string(s) + " " + std::string(digit) + " " + std::to_string(ms) + " " +
           std::to_string(ts) + "\n";
  }
};

dataplane::SpanLaneOptions holding() {
  dataplane::SpanLaneOptions o;
  o.hold_ns = 100'000'000;  // 5 frames of the fuzzer's packet clock
  o.hold_packets = 16;
  o.hold_bytes = 4096;      // datagrams over 1 KiB are not held; wraps every few packets
  o.track_updates = true;
  return o;
}

struct Lane {
  fileio::RingMatrix rings{1, 2, 256u << 10};  // small: a run allocates three of these
  dataplane::SpanLane lane;
  Sink sink;
  explicit Lane(dataplane::SpanLaneOptions o = {}) : lane(o) {
    sink.lane = &lane;
    lane.set_sink(&sink);
    check(lane.start(rings).is_ok());
    std::array<std::uint64_t, 2> dtmf{};
    dtmf[1] = std::uint64_t{1} << (101 - 64);
    for (fileio::StreamId s = 1; s <= 4; ++s) lane.add_stream(s, dtmf, 8000, s ^ 3u);
  }
  std::string drain() {
    lane.flush();
    std::string out;
    std::array<fileio::RingRecord, 64> recs{};
    for (unsigned w = 0; w < rings.writers(); ++w) {
      while (rings.ring(0, w).consume_bulk(recs, [&](std::span<const fileio::RingRecord> b) {
        for (const auto& r : b) {
          out += std::to_string(w) + ":" + std::to_string(r.h.stream) + ":" + std::to_string(r.h.kind) + ":" +
                 std::to_string(r.h.rx_ns) + ":";
          out.append(reinterpret_cast<const char*>(r.data), r.h.len);
          out += "\n";
        }
      }) != 0) {
      }
    }
    return out;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::uint32_t link = kLinks[data[0] % std::size(kLinks)];
  std::uint32_t seed = data[1];
  const std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data) + 2, size - 2);

  std::vector<std::span<const std::byte>> frames;
  for (std::size_t at = 0; at <= in.size();) {
    std::size_t end = at;
    while (end + sizeof kSep <= in.size() && std::memcmp(in.data() + end, kSep, sizeof kSep) != 0) ++end;
    if (end + sizeof kSep > in.size()) end = in.size();
    frames.push_back(in.subspan(at, end - at));
    at = end + sizeof kSep;
    if (frames.size() >= 256) break;
  }

  Lane one, burst;
  // Every third frame's destination and source become followed endpoints, in both lanes alike.
  for (std::size_t i = 0; i < frames.size(); i += 3) {
    dataplane::decode::Packet p;
    dataplane::decode::Counters c;
    if (dataplane::decode::decode_frame(link, frames[i], p, c) != dataplane::decode::Result::kUdp) continue;
    const auto s = static_cast<fileio::StreamId>(i % 4 + 1);
    for (Lane* l : {&one, &burst}) {
      l->lane.set_endpoint(Endpoint{p.dst, p.dport}, s, 0, (i & 4u) != 0);
      l->lane.set_endpoint(Endpoint{p.src, p.sport}, 0, s ^ 3u, false);
    }
  }

  std::vector<dataplane::capture::Frame> fs;
  for (std::size_t i = 0; i < frames.size(); ++i) {
    const std::uint64_t ts = 1'000'000'000ull + 20'000'000ull * i;
    one.lane.on_frame(link, frames[i], ts);
    fs.push_back(dataplane::capture::Frame{frames[i], link, ts, static_cast<std::uint32_t>(frames[i].size())});
  }
  for (std::size_t at = 0; at < fs.size();) {
    seed = seed * 1103515245u + 12345u;
    const std::size_t n = std::min<std::size_t>(fs.size() - at, 1 + (seed >> 16) % 40);
    burst.lane.on_burst({fs.data() + at, n});
    at += n;
  }

  // The holding lane: frame at a time, the endpoints of every fifth frame set only after it
  // passed (its RTP came before its SDP), a rescue after each frame, expiry by packet time.
  Lane held(holding());
  std::vector<std::pair<Endpoint, fileio::StreamId>> late;
  auto balanced = [&] {
    const auto h = held.lane.counter(dataplane::kS_rtp_held), r = held.lane.counter(dataplane::kS_rtp_rescued);
    check(held.lane.held() <= 16);
    check(h >= r + held.lane.held());
    check(h - r - held.lane.held() <= held.lane.counter(dataplane::kS_rtp_unattributed));
  };
  for (std::size_t i = 0; i < frames.size(); ++i) {
    const std::uint64_t ts = 1'000'000'000ull + 20'000'000ull * i;
    held.lane.on_frame(link, frames[i], ts);
    dataplane::decode::Packet p;
    dataplane::decode::Counters c;
    if (i % 5 == 0 && dataplane::decode::decode_frame(link, frames[i], p, c) == dataplane::decode::Result::kUdp)
      held.lane.set_endpoint(Endpoint{p.dst, p.dport}, static_cast<fileio::StreamId>(i % 4 + 1), 0, false);
    held.lane.rescue_held();
    if (i % 7 == 6) held.lane.expire(ts);
    balanced();
    (void)held.drain();
    std::vector<std::pair<fileio::StreamId, dataplane::SpanStreamStats>> updates;
    held.lane.take_updates(updates);
    for (const auto& [s, st] : updates) check(s >= 1 && s <= 4 && st.packets + st.rtcp + st.dtmf > 0);
  }
  held.lane.expire(~std::uint64_t{0} >> 1);
  check(held.lane.held() == 0);
  balanced();

  check(one.drain() == burst.drain());
  check(one.sink.log == burst.sink.log);
  const auto a = one.lane.counters(), b = burst.lane.counters();
  check(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) check(a[i].value == b[i].value);
  for (fileio::StreamId s = 1; s <= 4; ++s) {
    const auto* x = one.lane.stream_stats(s);
    const auto* y = burst.lane.stream_stats(s);
    check(x != nullptr && y != nullptr);
    check(x->packets == y->packets && x->rtcp == y->rtcp && x->dtmf == y->dtmf && x->last_ns == y->last_ns);
  }
  return 0;
}
