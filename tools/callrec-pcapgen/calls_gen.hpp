#pragma once
// Calls mode of callrec-pcapgen: a capture of N concurrent SIP calls as a SPAN port would see
// them. Per call, over UDP (Ethernet/IPv4, SIP on port 5060 of each party's own address):
//
//   INVITE (SDP offer: PCMA 8 + telephone-event 101, c=/m= of the caller's RTP endpoint)
//   100 Trying, 180 Ringing, 200 OK (SDP answer: the callee's endpoint), ACK
//   RTP both ways every 20 ms (172-byte RTP packets: 12 + 160 bytes of PCMA, distinct SSRCs,
//     random first sequence numbers and timestamps, marker on the first packet)
//   [a re-INVITE mid-call that moves one party's media to a new port: the offer (caller moves)
//     or the answer (callee moves) carries it, and the RTP to and from that party uses the new
//     port from the message on]
//   BYE (from the caller or the callee) and its 200 OK
//
// A share of the INVITEs carries extra headers (History-Info, P-Charging-Vector, a routing
// trace) that take it beyond the 1500-byte MTU; those are sent as two IPv4 fragments (1480 +
// the rest), like a UDP stack without path MTU discovery does.
//
// Calls start spread evenly over the first `ramp_s` seconds (default half the call length), so
// with ramp < seconds every call is up at the same time for a while (peak = N).
//
// Streaming: memory is O(calls) (the plan, a heap of pending SIP messages and the RTP slots
// sorted by phase), never O(packets); frames are built straight into a 4 MiB output buffer.
// RTP and IPv4 checksums are incremental (payloads are a few precomputed 20 ms tones).
//
// Header-only (the tool and tests/tools share it); depends on pcap_gen.hpp's helpers.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <queue>
#include <string>
#include <vector>

#include "tools/callrec-pcapgen/pcap_gen.hpp"

namespace callrec::pcapgen {

struct CallsOptions {
  unsigned calls = 100;
  unsigned seconds = 10;        ///< RTP of each direction: seconds * 50 packets
  double ramp_s = -1;           ///< calls start over [0, ramp_s); < 0: seconds / 2
  unsigned reinvite_pct = 10;   ///< share of calls with a media-moving re-INVITE
  unsigned fragment_pct = 10;   ///< share of INVITEs sent as two IPv4 fragments
  std::uint64_t seed = 1;
  std::array<std::uint8_t, 6> dst_mac{0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
  std::array<std::uint8_t, 6> src_mac{0x02, 0x00, 0x00, 0x00, 0x00, 0x02};
  std::uint16_t vlan = 0;
};

/// One planned call (host-order addresses).
struct Call {
  std::uint32_t id = 0;  ///< 1-based
  std::uint32_t caller_ip = 0, callee_ip = 0;
  std::uint16_t caller_rtp = 0, callee_rtp = 0;
  std::uint16_t moved_port = 0;  ///< the mover's new RTP port (0: no re-INVITE)
  std::uint8_t mover = 0;        ///< 0 caller, 1 callee (when moved_port != 0)
  bool fragmented = false;       ///< INVITE sent as two fragments
  bool bye_by_callee = false;
  std::uint64_t invite_us = 0;   ///< offset from the capture start
  std::uint64_t answer_us = 0, ack_us = 0, reinvite_us = 0, bye_us = 0;
  std::uint64_t switch_us = 0;   ///< RTP after this time uses moved_port
  std::uint32_t ssrc[2] = {};    ///< 0: caller -> callee, 1: callee -> caller
  std::uint16_t seq0[2] = {};
  std::uint32_t ts0[2] = {};
  std::uint32_t phase_us[2] = {};
  std::uint64_t first_tick[2] = {};  ///< 20 ms tick of the first RTP packet of each direction
  std::uint8_t tone[2] = {};
  std::uint8_t sip_step = 0;     ///< next SIP message (index into the call's script)
};

struct CallsSummary {
  std::uint64_t frames = 0, rtp = 0, sip = 0, fragments = 0, file_bytes = 0;
  std::uint64_t reinvites = 0, fragmented = 0;
  std::uint64_t packets_per_direction = 0;
  std::uint64_t peak_concurrent = 0;  ///< calls between INVITE and BYE at the same time
  double span_s = 0;                  ///< first to last frame
};

namespace calls_detail {

inline constexpr std::uint64_t kPtimeUs = 20'000;
inline constexpr unsigned kPayload = 160;
inline constexpr unsigned kTones = 8;
inline constexpr std::uint64_t kT0Us = 1'700'000'000ULL * 1'000'000ULL;

/// murmur3's 32-bit finalizer: a bijection, so distinct inputs give distinct SSRCs.
inline std::uint32_t fmix32(std::uint32_t h) {
  h ^= h >> 16;
  h *= 0x85EBCA6BU;
  h ^= h >> 13;
  h *= 0xC2B2AE35U;
  h ^= h >> 16;
  return h;
}

/// G.711 A-law of a 16-bit linear sample (ITU-T G.711).
inline std::uint8_t alaw(int pcm) {
  int mask = 0xD5;
  if (pcm < 0) {
    mask = 0x55;
    pcm = -pcm - 1;
  }
  pcm = std::min(pcm, 32767);
  static constexpr int kSeg[8] = {0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF};
  int seg = 0;
  while (seg < 8 && pcm > kSeg[seg]) ++seg;
  int a = 0;
  if (seg >= 8) a = 0x7F;
  else a = (seg << 4) | ((pcm >> (seg < 2 ? 4 : seg + 3)) & 0x0F);
  return static_cast<std::uint8_t>(a ^ mask);
}

/// A host of the plan: calls use 10.64.0.0/10 (callers) and 10.128.0.0/10 (callees), .1-.250.
inline std::uint32_t host(std::uint32_t base, std::uint32_t i) { return base + ((i / 250U) << 8) + (i % 250U) + 1U; }

/// Exactly floor(n * pct / 100) of n items are picked, spread evenly.
inline bool pick(std::uint32_t i, unsigned pct, std::uint32_t salt) {
  const std::uint64_t j = i + salt;
  return (j + 1) * pct / 100 > j * pct / 100;
}

struct Out {
  int fd = -1;
  std::vector<std::uint8_t> buf;
  std::size_t used = 0;
  bool ok = true;
  int err = 0;
  std::uint64_t bytes = 0;
  void flush() {
    std::size_t off = 0;
    while (ok && off < used) {
      const ssize_t n = ::write(fd, buf.data() + off, used - off);
      if (n < 0) {
        if (errno == EINTR) continue;
        ok = false;
        err = errno;
        break;
      }
      off += static_cast<std::size_t>(n);
    }
    used = 0;
  }
  std::uint8_t* reserve(std::size_t n) {
    if (used + n > buf.size()) flush();
    return buf.data() + used;
  }
  void commit(std::size_t n) {
    used += n;
    bytes += n;
  }
};

/// Hex of a 64-bit value, 16 digits.
inline std::string hex64(std::uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

}  // namespace calls_detail

/// Plans the calls (addresses, ports, times, SSRCs). Returns an error message, empty when fine.
inline std::string plan_calls(const CallsOptions& o, std::vector<Call>& out, CallsSummary& sum) {
  using namespace calls_detail;
  out.clear();
  sum = CallsSummary{};
  if (o.calls == 0) return "--calls must be at least 1";
  if (o.calls > 1'000'000) return "--calls is at most 1000000";
  if (o.seconds == 0) return "--seconds must be at least 1";
  if (o.reinvite_pct > 100 || o.fragment_pct > 100) return "percentages are 0..100";
  const double ramp = o.ramp_s >= 0 ? o.ramp_s : o.seconds / 2.0;
  const auto ramp_us = static_cast<std::uint64_t>(ramp * 1e6);
  const std::uint64_t k = std::uint64_t{o.seconds} * 1'000'000 / kPtimeUs;
  sum.packets_per_direction = k;
  Rng rng{o.seed};
  const std::uint32_t ssrc_key = static_cast<std::uint32_t>(rng.next());
  out.resize(o.calls);
  for (std::uint32_t i = 0; i < o.calls; ++i) {
    Call& c = out[i];
    c.id = i + 1;
    c.caller_ip = host(0x0A400000U, i);  // 10.64.0.0
    c.callee_ip = host(0x0A800000U, i);  // 10.128.0.0
    c.caller_rtp = static_cast<std::uint16_t>(16384 + 2 * (rng.next() % 8000));
    c.callee_rtp = static_cast<std::uint16_t>(32768 + 2 * (rng.next() % 8000));
    c.fragmented = pick(i, o.fragment_pct, 0);
    c.bye_by_callee = (rng.next() & 1) != 0;
    c.invite_us = o.calls > 1 ? ramp_us * i / o.calls : 0;
    c.invite_us += rng.next() % 1000;  // jitter within a millisecond
    const std::uint64_t ring_us = 200'000 + rng.next() % 800'000;
    c.answer_us = c.invite_us + ring_us;
    c.ack_us = c.answer_us + 2'000 + rng.next() % 3'000;
    for (unsigned d = 0; d < 2; ++d) {
      c.ssrc[d] = fmix32((2 * i + d) ^ ssrc_key) ^ 0x5bd1e995U;  // fmix32(x) ^ const: still distinct
      c.seq0[d] = static_cast<std::uint16_t>(rng.next());
      c.ts0[d] = static_cast<std::uint32_t>(rng.next());
      c.phase_us[d] = static_cast<std::uint32_t>(rng.next() % kPtimeUs);
      c.tone[d] = static_cast<std::uint8_t>(rng.next() % kTones);
      // The first grid instant (tick * 20 ms + phase) after the ACK (+ 1 ms).
      const std::uint64_t after = c.ack_us + 1'000;
      c.first_tick[d] = after <= c.phase_us[d] ? 0 : (after - c.phase_us[d] + kPtimeUs - 1) / kPtimeUs;
    }
    const std::uint64_t last0 = (c.first_tick[0] + k - 1) * kPtimeUs + c.phase_us[0];
    const std::uint64_t last1 = (c.first_tick[1] + k - 1) * kPtimeUs + c.phase_us[1];
    c.bye_us = std::max(last0, last1) + 5'000 + rng.next() % 20'000;
    if (pick(i, o.reinvite_pct, 5) && k >= 4) {  // salt 5: not the fragmented ones at 10%
      c.mover = static_cast<std::uint8_t>(rng.next() & 1);
      const std::uint16_t old = c.mover == 0 ? c.caller_rtp : c.callee_rtp;
      c.moved_port = static_cast<std::uint16_t>(old + 2000);
      // Mid-call, between two packets of direction 0.
      c.reinvite_us = (c.first_tick[0] + k / 2) * kPtimeUs + c.phase_us[0] + 3'000;
      // The new endpoint is announced by the re-INVITE (caller moves) or its 200 (callee).
      c.switch_us = c.reinvite_us + (c.mover == 0 ? 0 : 15'000) + 500;
      ++sum.reinvites;
    }
    if (c.fragmented) ++sum.fragmented;
  }
  // Peak concurrency: sweep INVITE (+1) and BYE (-1) instants.
  std::vector<std::pair<std::uint64_t, int>> ev;
  ev.reserve(2 * out.size());
  for (const Call& c : out) {
    ev.emplace_back(c.invite_us, +1);
    ev.emplace_back(c.bye_us, -1);
  }
  std::sort(ev.begin(), ev.end());
  std::int64_t cur = 0, peak = 0;
  for (const auto& e : ev) peak = std::max(peak, cur += e.second);
  sum.peak_concurrent = static_cast<std::uint64_t>(peak);
  return {};
}

/// The call's Call-ID (also in the call list).
inline std::string call_id(const Call& c, std::uint64_t seed) {
  return calls_detail::hex64(calls_detail::fmix32(c.id) * 0x9E3779B97F4A7C15ULL ^ seed) + "@" + ip_to_string(c.caller_ip);
}

namespace calls_detail {

/// The time of step s of the call's script (UINT64_MAX: the script is over). The script:
/// 0 INVITE, 1 100, 2 180, 3 200, 4 ACK, [5 re-INVITE, 6 200, 7 ACK], 8 BYE, 9 200.
inline std::uint64_t sip_time(const Call& c, unsigned s) {
  switch (s) {
    case 0: return c.invite_us;
    case 1: return c.invite_us + 1'500;
    case 2: return c.invite_us + 40'000;
    case 3: return c.answer_us;
    case 4: return c.ack_us;
    case 5: return c.reinvite_us;
    case 6: return c.reinvite_us + 15'000;
    case 7: return c.reinvite_us + 17'000;
    case 8: return c.bye_us;
    case 9: return c.bye_us + 3'000;
    default: return UINT64_MAX;
  }
}

/// The step after s (steps 5-7 only with a re-INVITE).
inline unsigned next_step(const Call& c, unsigned s) { return s == 4 && c.moved_port == 0 ? 8 : s + 1; }

/// Writes one SIP message of call c (step s of its script) into `msg`; returns the sender
/// (0 caller, 1 callee) and sets `at` to its time, or returns -1 when the script is over.
inline int sip_message(const Call& c, unsigned s, std::uint64_t seed, std::string& msg, std::uint64_t& at) {
  const bool re = c.moved_port != 0;
  if (s > 9 || (!re && s >= 5 && s <= 7)) return -1;
  at = sip_time(c, s);
  const std::string a_ip = ip_to_string(c.caller_ip), b_ip = ip_to_string(c.callee_ip);
  char a_num[32], b_num[32];
  std::snprintf(a_num, sizeof a_num, "+4940%07u", c.id);
  std::snprintf(b_num, sizeof b_num, "+4930%07u", 5'000'000U + c.id);
  const std::string cid = call_id(c, seed);
  const std::string a_tag = hex64(fmix32(c.id ^ 0xA5A5A5A5U) ^ seed).substr(4);
  const std::string b_tag = hex64(fmix32(c.id ^ 0x5A5A5A5AU) + seed * 3).substr(6);
  const std::string branch0 = "z9hG4bK" + hex64(fmix32(c.id * 7U + 1U) ^ seed).substr(2);
  const std::string branch_re = "z9hG4bK" + hex64(fmix32(c.id * 7U + 2U) ^ seed).substr(2);
  const std::string branch_bye = "z9hG4bK" + hex64(fmix32(c.id * 7U + 3U) ^ seed).substr(2);
  const std::string branch_ack = "z9hG4bK" + hex64(fmix32(c.id * 7U + 4U) ^ seed).substr(2);
  const std::string branch_ack2 = "z9hG4bK" + hex64(fmix32(c.id * 7U + 5U) ^ seed).substr(2);

  auto sdp = [&](unsigned who, unsigned version) {
    const bool moved = re && c.mover == who && version > 1;
    const std::uint16_t port = moved ? c.moved_port : (who == 0 ? c.caller_rtp : c.callee_rtp);
    const std::string& ip = who == 0 ? a_ip : b_ip;
    const std::uint64_t sess = fmix32(c.id * 2U + who) + 1'000'000ULL;
    std::string b = "v=0\r\no=- " + std::to_string(sess) + " " + std::to_string(version) + " IN IP4 " + ip +
                    "\r\ns=" + (who == 0 ? "callrec-pcapgen caller" : "callrec-pcapgen callee") + "\r\nc=IN IP4 " + ip +
                    "\r\nt=0 0\r\nm=audio " + std::to_string(port) +
                    " RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
                    "a=fmtp:101 0-16\r\na=ptime:20\r\na=maxptime:40\r\na=sendrecv\r\n";
    return b;
  };
  const std::string from = "\"Caller " + std::to_string(c.id) + "\" <sip:" + a_num + "@" + a_ip + ">;tag=" + a_tag;
  const std::string to0 = "<sip:" + std::string(b_num) + "@" + b_ip + ">";
  const std::string to = to0 + ";tag=" + b_tag;
  const std::string a_contact = "<sip:" + std::string(a_num) + "@" + a_ip + ":5060>";
  const std::string b_contact = "<sip:" + std::string(b_num) + "@" + b_ip + ":5060>";
  const std::string via_a = "SIP/2.0/UDP " + a_ip + ":5060;branch=";
  const std::string via_b = "SIP/2.0/UDP " + b_ip + ":5060;branch=";
  auto finish = [&](std::string head, const std::string& body) {
    if (!body.empty()) head += "Content-Type: application/sdp\r\n";
    head += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
    head += body;
    msg = std::move(head);
  };
  auto request = [&](const char* method, unsigned cseq, const char* cseq_method, bool from_callee,
                     const std::string& branch, const std::string& body, bool extra) {
    const std::string ruri =
        from_callee ? "sip:" + std::string(a_num) + "@" + a_ip + ":5060" : "sip:" + std::string(b_num) + "@" + b_ip + ":5060";
    std::string h = std::string(method) + " " + ruri + " SIP/2.0\r\n";
    h += "Via: " + (from_callee ? via_b : via_a) + branch + "\r\n";
    h += "Max-Forwards: 70\r\n";
    if (from_callee) {  // the callee's request: From and To swap (RFC 3261 12.2.1.1)
      h += "From: " + to + "\r\nTo: " + from + "\r\n";
    } else {
      h += "From: " + from + "\r\nTo: " + (s == 0 ? to0 : to) + "\r\n";
    }
    h += "Call-ID: " + cid + "\r\n";
    h += "CSeq: " + std::to_string(cseq) + " " + cseq_method + "\r\n";
    if (std::strcmp(method, "INVITE") == 0) {
      h += "Contact: " + (from_callee ? b_contact : a_contact) + "\r\n";
      h += "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, PRACK, REFER, NOTIFY\r\n";
      h += "Supported: replaces, timer, 100rel\r\nSession-Expires: 1800;refresher=uac\r\nMin-SE: 90\r\n";
      h += "User-Agent: callrec-pcapgen caller/1.0\r\n";
    }
    if (extra) {
      // What a carrier's INVITE carries after a few hops: routing history and charging data.
      h += "P-Asserted-Identity: \"Caller " + std::to_string(c.id) + "\" <sip:" + a_num + "@carrier.example.net;user=phone>\r\n";
      h += "P-Charging-Vector: icid-value=" + hex64(fmix32(c.id) * 0x2545F4914F6CDD1DULL) +
           hex64(seed ^ c.id) + ";icid-generated-at=" + a_ip + ";orig-ioi=carrier.example.net\r\n";
      for (unsigned hop = 1; hop <= 6; ++hop) {
        h += "History-Info: <sip:" + std::string(b_num) + "@edge" + std::to_string(hop) +
             ".carrier.example.net;user=phone?Reason=SIP%3Bcause%3D302%3Btext%3D%22Moved%20Temporarily%22>;index=1." +
             std::to_string(hop) + "\r\n";
      }
      for (unsigned hop = 1; hop <= 6; ++hop) {
        h += "X-Route-Trace: hop=" + std::to_string(hop) + ";node=sbc" + std::to_string(hop) +
             ".core.carrier.example.net;in=" + hex64(fmix32(c.id + hop)) + ";policy=default-voice-routing-table\r\n";
      }
    }
    finish(std::move(h), body);
  };
  auto response = [&](int code, const char* reason, unsigned cseq, const char* cseq_method, bool from_caller,
                      const std::string& branch, const std::string& body, bool with_to_tag) {
    std::string h = "SIP/2.0 " + std::to_string(code) + " " + reason + "\r\n";
    h += "Via: " + (from_caller ? via_b : via_a) + branch + "\r\n";
    if (from_caller) h += "From: " + to + "\r\nTo: " + from + "\r\n";
    else h += "From: " + from + "\r\nTo: " + (with_to_tag ? to : to0) + "\r\n";
    h += "Call-ID: " + cid + "\r\n";
    h += "CSeq: " + std::to_string(cseq) + " " + cseq_method + "\r\n";
    if (code >= 180 && std::strcmp(cseq_method, "INVITE") == 0) {
      h += "Contact: " + (from_caller ? a_contact : b_contact) + "\r\n";
      h += "User-Agent: callrec-pcapgen callee/1.0\r\n";
    }
    finish(std::move(h), body);
  };
  switch (s) {
    case 0:
      request("INVITE", 1, "INVITE", false, branch0, sdp(0, 1), c.fragmented);
      return 0;
    case 1:
      response(100, "Trying", 1, "INVITE", false, branch0, "", false);
      return 1;
    case 2:
      response(180, "Ringing", 1, "INVITE", false, branch0, "", true);
      return 1;
    case 3:
      response(200, "OK", 1, "INVITE", false, branch0, sdp(1, 1), true);
      return 1;
    case 4:
      request("ACK", 1, "ACK", false, branch_ack, "", false);
      return 0;
    case 5:
      request("INVITE", 2, "INVITE", false, branch_re, sdp(0, c.mover == 0 ? 2 : 1), false);
      return 0;
    case 6:
      response(200, "OK", 2, "INVITE", false, branch_re, sdp(1, c.mover == 1 ? 2 : 1), true);
      return 1;
    case 7:
      request("ACK", 2, "ACK", false, branch_ack2, "", false);
      return 0;
    case 8:
      if (c.bye_by_callee) request("BYE", 1, "BYE", true, branch_bye, "", false);
      else request("BYE", 3, "BYE", false, branch_bye, "", false);
      return c.bye_by_callee ? 1 : 0;
    default:
      if (c.bye_by_callee) response(200, "OK", 1, "BYE", true, branch_bye, "", true);
      else response(200, "OK", 3, "BYE", false, branch_bye, "", true);
      return c.bye_by_callee ? 0 : 1;
  }
}

}  // namespace calls_detail

/// Writes the capture (streamed). progress(frames) about every million frames.
/// Returns an error message, empty when fine.
inline std::string write_calls_pcap(const std::string& path, const CallsOptions& o, std::vector<Call>& calls,
                                    CallsSummary& sum, const std::function<void(std::uint64_t)>& progress = {}) {
  using namespace calls_detail;
  const std::uint64_t k_packets = sum.packets_per_direction;
  Out out;
  out.fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out.fd < 0) return path + ": " + std::strerror(errno);
  out.buf.resize(4 << 20);

  struct {
    std::uint32_t magic = 0xA1B2C3D4;
    std::uint16_t major = 2;
    std::uint16_t minor = 4;
    std::int32_t zone = 0;
    std::uint32_t sigfigs = 0;
    std::uint32_t snaplen = 65535;
    std::uint32_t linktype = 1;  // Ethernet
  } hdr;
  std::memcpy(out.reserve(sizeof hdr), &hdr, sizeof hdr);
  out.commit(sizeof hdr);

  // 20 ms tones in A-law (periods 8 ... 40 samples divide 160: every packet is the same), and
  // their one's-complement sums for the UDP checksum.
  std::array<std::array<std::uint8_t, kPayload>, kTones> tone{};
  std::array<std::uint32_t, kTones> tone_sum{};
  static constexpr unsigned kPeriods[kTones] = {8, 10, 16, 20, 32, 40, 80, 160};
  for (unsigned t = 0; t < kTones; ++t) {
    for (unsigned j = 0; j < kPayload; ++j) {
      const double v = 8000.0 * std::sin(2 * M_PI * j / kPeriods[t]);
      tone[t][j] = alaw(static_cast<int>(std::lround(v)));
    }
    tone_sum[t] = detail::inet_sum(0, tone[t].data(), kPayload);
  }

  const std::size_t l2 = o.vlan != 0 ? 18 : 14;
  std::uint16_t ip_id = 1;
  std::uint64_t next_progress = 1'000'000;
  std::uint64_t first_us = UINT64_MAX, last_us = 0;

  auto l2_header = [&](std::uint8_t* f) {
    std::memcpy(f, o.dst_mac.data(), 6);
    std::memcpy(f + 6, o.src_mac.data(), 6);
    if (o.vlan != 0) {
      detail::store_be16(f + 12, 0x8100);
      detail::store_be16(f + 14, o.vlan);
    }
    detail::store_be16(f + l2 - 2, 0x0800);
  };
  auto record = [&](std::uint8_t* rec, std::uint64_t t_us, std::size_t len) {
    const std::uint64_t abs = kT0Us + t_us;
    const std::uint32_t r[4] = {static_cast<std::uint32_t>(abs / 1'000'000), static_cast<std::uint32_t>(abs % 1'000'000),
                                static_cast<std::uint32_t>(len), static_cast<std::uint32_t>(len)};
    std::memcpy(rec, r, sizeof r);
    first_us = std::min(first_us, t_us);
    last_us = std::max(last_us, t_us);
    ++sum.frames;
    if (progress && sum.frames >= next_progress) {
      progress(sum.frames);
      next_progress += 1'000'000;
    }
  };
  // IPv4 header at ip: total length, id, flags/offset, protocol UDP, addresses, checksum.
  auto ipv4 = [&](std::uint8_t* ip, std::uint8_t tos, std::size_t total, std::uint16_t id, std::uint16_t frag,
                  std::uint32_t src, std::uint32_t dst) {
    ip[0] = 0x45;
    ip[1] = tos;
    detail::store_be16(ip + 2, static_cast<std::uint16_t>(total));
    detail::store_be16(ip + 4, id);
    detail::store_be16(ip + 6, frag);
    ip[8] = 64;
    ip[9] = 17;
    detail::store_be16(ip + 10, 0);
    detail::store_be32(ip + 12, src);
    detail::store_be32(ip + 16, dst);
    detail::store_be16(ip + 10, detail::inet_checksum(ip, 20));
  };

  // A SIP datagram, fragmented when it does not fit a 1500-byte MTU.
  std::string msg;
  std::vector<std::uint8_t> dgram;
  auto emit_sip = [&](const Call& c, int sender, std::uint64_t t_us) {
    const std::uint32_t src = sender == 0 ? c.caller_ip : c.callee_ip;
    const std::uint32_t dst = sender == 0 ? c.callee_ip : c.caller_ip;
    const std::size_t udp_len = 8 + msg.size();
    dgram.resize(udp_len);
    detail::store_be16(dgram.data(), 5060);
    detail::store_be16(dgram.data() + 2, 5060);
    detail::store_be16(dgram.data() + 4, static_cast<std::uint16_t>(udp_len));
    detail::store_be16(dgram.data() + 6, 0);
    std::memcpy(dgram.data() + 8, msg.data(), msg.size());
    std::uint32_t s = detail::inet_sum(0, reinterpret_cast<const std::uint8_t*>(&dgram[0]), udp_len);
    std::uint8_t pseudo[8];
    detail::store_be32(pseudo, src);
    detail::store_be32(pseudo + 4, dst);
    s = detail::inet_sum(s, pseudo, 8) + 17U + static_cast<std::uint32_t>(udp_len);
    const std::uint16_t ck = detail::inet_checksum(s);
    detail::store_be16(dgram.data() + 6, ck == 0 ? 0xFFFF : ck);
    const std::uint16_t id = ip_id++;
    constexpr std::size_t kMaxIpPayload = 1480;  // 1500 - 20, a multiple of 8
    std::size_t off = 0;
    while (off < udp_len) {
      const std::size_t n = std::min(kMaxIpPayload, udp_len - off);
      const bool more = off + n < udp_len;
      const std::size_t len = l2 + 20 + n;
      std::uint8_t* rec = out.reserve(16 + len);
      std::uint8_t* f = rec + 16;
      l2_header(f);
      const bool whole = off == 0 && !more;
      const auto frag = static_cast<std::uint16_t>((whole ? 0x4000 : 0) | (more ? 0x2000 : 0) | (off / 8));
      ipv4(f + l2, 0x60, 20 + n, id, frag, src, dst);  // DSCP CS3 for signalling
      std::memcpy(f + l2 + 20, dgram.data() + off, n);
      record(rec, t_us, len);
      out.commit(16 + len);
      if (!whole) ++sum.fragments;
      off += n;
    }
    ++sum.sip;
  };

  // SIP messages pending, earliest first: (time, call index); each call has one entry at a time.
  using Pending = std::pair<std::uint64_t, std::uint32_t>;
  std::priority_queue<Pending, std::vector<Pending>, std::greater<>> heap;
  for (std::uint32_t i = 0; i < calls.size(); ++i) heap.emplace(calls[i].invite_us, i);
  auto drain_sip = [&](std::uint64_t until_us) {
    while (!heap.empty() && heap.top().first <= until_us) {
      const std::uint32_t i = heap.top().second;
      heap.pop();
      Call& c = calls[i];
      std::uint64_t at = 0;
      const int sender = sip_message(c, c.sip_step, o.seed, msg, at);
      if (sender < 0) continue;
      emit_sip(c, sender, at);
      c.sip_step = static_cast<std::uint8_t>(next_step(c, c.sip_step));
      if (const std::uint64_t next_at = sip_time(c, c.sip_step); next_at != UINT64_MAX) heap.emplace(next_at, i);
    }
  };

  // RTP slots (call, direction), in phase order within the 20 ms tick.
  struct Slot {
    std::uint32_t call;
    std::uint32_t phase_us;
    std::uint8_t dir;
  };
  std::vector<Slot> slots;
  slots.reserve(calls.size() * 2);
  std::uint64_t last_tick = 0;
  for (std::uint32_t i = 0; i < calls.size(); ++i) {
    for (std::uint8_t d = 0; d < 2; ++d) {
      slots.push_back({i, calls[i].phase_us[d], d});
      last_tick = std::max(last_tick, calls[i].first_tick[d] + k_packets);
    }
  }
  std::sort(slots.begin(), slots.end(), [](const Slot& a, const Slot& b) {
    return a.phase_us != b.phase_us ? a.phase_us < b.phase_us : a.call != b.call ? a.call < b.call : a.dir < b.dir;
  });

  constexpr std::size_t kRtpLen = 12 + kPayload;
  constexpr std::size_t kUdpLen = 8 + kRtpLen;
  const std::size_t frame_len = l2 + 20 + kUdpLen;
  for (std::uint64_t tick = 0; tick < last_tick && out.ok; ++tick) {
    const std::uint64_t base = tick * kPtimeUs;
    for (const Slot& sl : slots) {
      const Call& c = calls[sl.call];
      const unsigned d = sl.dir;
      if (tick < c.first_tick[d] || tick >= c.first_tick[d] + k_packets) continue;
      const std::uint64_t t_us = base + sl.phase_us;
      drain_sip(t_us);
      const std::uint64_t n = tick - c.first_tick[d];
      const bool moved = c.moved_port != 0 && t_us > c.switch_us;
      // Direction 0: caller -> callee; 1: callee -> caller.
      std::uint16_t caller_port = c.caller_rtp, callee_port = c.callee_rtp;
      if (moved) (c.mover == 0 ? caller_port : callee_port) = c.moved_port;
      const std::uint32_t src = d == 0 ? c.caller_ip : c.callee_ip;
      const std::uint32_t dst = d == 0 ? c.callee_ip : c.caller_ip;
      const std::uint16_t sport = d == 0 ? caller_port : callee_port;
      const std::uint16_t dport = d == 0 ? callee_port : caller_port;
      std::uint8_t* rec = out.reserve(16 + frame_len);
      std::uint8_t* f = rec + 16;
      l2_header(f);
      std::uint8_t* ip = f + l2;
      ipv4(ip, 0xB8, 20 + kUdpLen, ip_id++, 0x4000, src, dst);  // DSCP EF
      std::uint8_t* udp = ip + 20;
      detail::store_be16(udp, sport);
      detail::store_be16(udp + 2, dport);
      detail::store_be16(udp + 4, static_cast<std::uint16_t>(kUdpLen));
      detail::store_be16(udp + 6, 0);
      std::uint8_t* rtp = udp + 8;
      rtp[0] = 0x80;
      rtp[1] = static_cast<std::uint8_t>((n == 0 ? 0x80 : 0) | 8);
      detail::store_be16(rtp + 2, static_cast<std::uint16_t>(c.seq0[d] + n));
      detail::store_be32(rtp + 4, static_cast<std::uint32_t>(c.ts0[d] + n * kPayload));
      detail::store_be32(rtp + 8, c.ssrc[d]);
      std::memcpy(rtp + 12, tone[c.tone[d]].data(), kPayload);
      std::uint32_t s = tone_sum[c.tone[d]];
      s = detail::inet_sum(s, udp, 8 + 12);  // UDP header (checksum 0) + RTP header
      s = detail::inet_sum(s, ip + 12, 8) + 17U + static_cast<std::uint32_t>(kUdpLen);
      const std::uint16_t ck = detail::inet_checksum(s);
      detail::store_be16(udp + 6, ck == 0 ? 0xFFFF : ck);
      record(rec, t_us, frame_len);
      out.commit(16 + frame_len);
      ++sum.rtp;
    }
  }
  drain_sip(UINT64_MAX);
  out.flush();
  sum.file_bytes = out.bytes;
  sum.span_s = last_us >= first_us ? static_cast<double>(last_us - first_us) / 1e6 : 0.0;
  const bool ok = out.ok;
  const int err = out.err;
  if (::close(out.fd) != 0 && ok) return path + ": close failed: " + std::strerror(errno);
  if (!ok) return path + ": write failed: " + std::strerror(err);
  return {};
}

/// The call list: a summary comment line, then one call per line.
inline void print_call_list(std::FILE* f, const CallsOptions& o, const std::vector<Call>& calls,
                            const CallsSummary& sum) {
  std::fprintf(f,
               "# callrec-pcapgen calls: calls=%zu seconds=%u frames=%llu rtp=%llu sip=%llu fragments=%llu "
               "reinvites=%llu fragmented=%llu packets_per_direction=%llu peak_concurrent=%llu span_s=%.3f\n",
               calls.size(), o.seconds, static_cast<unsigned long long>(sum.frames),
               static_cast<unsigned long long>(sum.rtp), static_cast<unsigned long long>(sum.sip),
               static_cast<unsigned long long>(sum.fragments), static_cast<unsigned long long>(sum.reinvites),
               static_cast<unsigned long long>(sum.fragmented), static_cast<unsigned long long>(sum.packets_per_direction),
               static_cast<unsigned long long>(sum.peak_concurrent), sum.span_s);
  std::fprintf(f, "# id call_id caller_sip callee_sip caller_rtp callee_rtp moved(-|caller:port|callee:port) "
                  "fragmented ssrc_caller ssrc_callee packets_each_way\n");
  for (const Call& c : calls) {
    char moved[32] = "-";
    if (c.moved_port != 0) std::snprintf(moved, sizeof moved, "%s:%u", c.mover == 0 ? "caller" : "callee", c.moved_port);
    std::fprintf(f, "%u %s %s:5060 %s:5060 %u %u %s %d 0x%08x 0x%08x %llu\n", c.id, call_id(c, o.seed).c_str(),
                 ip_to_string(c.caller_ip).c_str(), ip_to_string(c.callee_ip).c_str(), c.caller_rtp, c.callee_rtp, moved,
                 c.fragmented ? 1 : 0, c.ssrc[0], c.ssrc[1], static_cast<unsigned long long>(sum.packets_per_direction));
  }
}

/// The sidecar call list (print_call_list into a file).
inline std::string write_call_list(const std::string& path, const CallsOptions& o, const std::vector<Call>& calls,
                                   const CallsSummary& sum) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return path + ": " + std::strerror(errno);
  print_call_list(f, o, calls, sum);
  const bool ok = std::ferror(f) == 0;
  if (std::fclose(f) != 0 || !ok) return path + ": write failed";
  return {};
}

}  // namespace callrec::pcapgen
