// libFuzzer target for the packet decoder and the reassemblers. The first byte picks a link type
// among those decode_frame() supports; the rest is one frame, or several frames separated by the
// 4-byte marker F0 0D CA FE (so fragments and TCP segments can meet in one input). Fragments go
// to an IpReassembler, TCP segments to a TcpReassembler, both with small limits so that eviction,
// the caps and the timeouts are reached. Checked on every frame:
// - the result's spans lie inside the frame (or inside the reassembled datagram);
// - sizes agree: the UDP/TCP payload lies inside the L4 bytes after its header;
// - exactly one rejection counter moves when the result is kBad, none otherwise;
// - the reassemblers stay within their caps and empty out when everything has expired.
// Any violated property aborts (a finding), as does any sanitizer report.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "dataplane/decode/decode.hpp"
#include "dataplane/decode/reassembly.hpp"

namespace {

using namespace callrec::dataplane::decode;

void check(bool ok) {
  if (!ok) std::abort();
}

bool within(std::span<const std::byte> inner, std::span<const std::byte> outer) {
  if (inner.empty()) return true;
  return inner.data() >= outer.data() && inner.data() + inner.size() <= outer.data() + outer.size();
}

constexpr std::uint32_t kLinks[] = {kLinkNull, kLinkEthernet, kLinkRaw,  kLinkRawDlt12, kLinkRawDlt14,
                                    kLinkLoop, kLinkSll,      kLinkIpv4, kLinkIpv6,     kLinkSll2};
constexpr std::byte kSep[] = {std::byte{0xF0}, std::byte{0x0D}, std::byte{0xCA}, std::byte{0xFE}};

constexpr Counter kBadCounters[] = {kC_link_unknown, kC_link_truncated, kC_vlan_too_deep, kC_tunnel_bad,
                                    kC_tunnel_too_deep, kC_ip_bad, kC_ipv6_ext_bad, kC_l4_bad};

void check_packet(Result r, const Packet& p, std::span<const std::byte> frame) {
  check(p.tunnels <= kMaxDepth);
  switch (r) {
    case Result::kUdp:
    case Result::kTcp: {
      check(p.src.family == 4 || p.src.family == 6);
      check(p.dst.family == p.src.family);
      check(p.proto == (r == Result::kUdp ? 17 : 6));
      check(within(p.l4, frame));
      check(within(p.payload, p.l4));
      const std::size_t header = r == Result::kUdp ? 8 : 20;
      check(p.l4.size() >= header && p.payload.size() <= p.l4.size() - header);
      if (!p.payload.empty()) check(p.payload.data() >= p.l4.data() + header);
      break;
    }
    case Result::kFragment:
      check(p.src.family == 4 || p.src.family == 6);
      check(p.dst.family == p.src.family);
      check(within(p.l4, frame));
      check(p.frag_more || p.frag_offset != 0);
      break;
    case Result::kOtherL4:
      check(p.src.family == 4 || p.src.family == 6);
      check(within(p.l4, frame));
      break;
    case Result::kNotIp:
    case Result::kBad: break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint32_t link = kLinks[data[0] % std::size(kLinks)];
  std::span<const std::byte> rest(reinterpret_cast<const std::byte*>(data) + 1, size - 1);

  ReassemblyLimits lim;
  lim.max_datagrams = 4;
  lim.max_fragment_bytes = 8192;
  lim.fragment_timeout_ns = 1000;
  lim.max_tcp_streams = 4;
  lim.max_tcp_buffer = 512;
  lim.tcp_timeout_ns = 1000;
  ReassemblyCounters rc;
  IpReassembler ip(lim, rc);
  TcpReassembler tcp(lim, rc);
  Counters total;
  std::uint64_t now = 0;

  for (unsigned n = 0; n < 64; ++n) {
    std::size_t cut = rest.size();
    for (std::size_t i = 0; i + sizeof kSep <= rest.size(); ++i) {
      if (rest[i] == kSep[0] && rest[i + 1] == kSep[1] && rest[i + 2] == kSep[2] && rest[i + 3] == kSep[3]) {
        cut = i;
        break;
      }
    }
    // A private copy of exactly the frame's bytes, so that ASan sees any read past its end.
    const std::vector<std::byte> frame(rest.begin(), rest.begin() + static_cast<std::ptrdiff_t>(cut));
    Packet p;
    Counters c;
    const Result r = decode_frame(link, frame, p, c);
    check(c[kC_frames] == 1);
    std::uint64_t bad = 0;
    for (Counter k : kBadCounters) bad += c[k];
    check(bad == (r == Result::kBad ? 1u : 0u));
    check((c[kC_not_ip] == 1) == (r == Result::kNotIp));
    check_packet(r, p, frame);
    total += c;

    now += frame.empty() ? 1 : std::to_integer<unsigned>(frame.back()) * 8;
    if (r == Result::kFragment) {
      const std::span<const std::byte> whole = ip.add(p, now);
      if (!whole.empty()) {
        check(whole.size() <= 65535);
        Packet inner = p;
        Counters ic;
        const Result ir = decode_l4(whole, inner, ic, p.tunnels);
        check(within(inner.l4, whole));
        check(within(inner.payload, whole));
        if (ir == Result::kUdp) check(inner.payload.size() + 8 <= inner.l4.size());
      }
      check(ip.pending() <= lim.max_datagrams);
      check(ip.bytes() <= lim.max_fragment_bytes);
    } else if (r == Result::kTcp) {
      TcpReassembler::Stream* s = tcp.add(p, now, (p.tcp_seq & 1) == 0 || p.payload.size() > 4);
      if (s != nullptr) {
        check(s->buf.size() <= lim.max_tcp_buffer);
        TcpReassembler::consume(*s, p.payload.size() / 2);
      }
      check(tcp.streams() <= lim.max_tcp_streams);
    }
    if ((now & 0xFF) == 0) {
      ip.expire(now);
      tcp.expire(now);
    }
    if (cut == rest.size()) break;
    rest = rest.subspan(cut + sizeof kSep);
  }
  check(total[kC_frames] >= 1);
  ip.expire(now + lim.fragment_timeout_ns);
  tcp.expire(now + lim.tcp_timeout_ns);
  check(ip.pending() == 0 && ip.bytes() == 0);
  check(tcp.streams() == 0);
  return 0;
}
