#include "control/siprec/sdp_answer.hpp"

#include <charconv>

#include "control/sip/sip_message.hpp"

namespace callrec::control::siprec {

namespace {

bool is_rtp_proto(std::string_view p, bool& secure) {
  secure = sip::iequals(p, "RTP/SAVP") || sip::iequals(p, "RTP/SAVPF");
  return secure || sip::iequals(p, "RTP/AVP") || sip::iequals(p, "RTP/AVPF");
}

bool is_g711(std::string_view n) { return sip::iequals(n, "PCMU") || sip::iequals(n, "PCMA"); }

/// The offer's format list as payload types (numbers only; bounded by the parser's line).
std::vector<std::uint8_t> offered_pts(std::string_view formats) {
  std::vector<std::uint8_t> out;
  while (!formats.empty() && out.size() < 64) {
    const std::size_t sp = formats.find(' ');
    const std::string_view tok = sip::trim(formats.substr(0, sp));
    unsigned v = 0;
    auto [p, ec] = std::from_chars(tok.data(), tok.data() + tok.size(), v);
    if (ec == std::errc{} && p == tok.data() + tok.size() && v < 128) out.push_back(static_cast<std::uint8_t>(v));
    if (sp == std::string_view::npos) break;
    formats.remove_prefix(sp + 1);
  }
  return out;
}

std::string rtpmap_line(const sip::RtpMap& m) {
  std::string s = "a=rtpmap:" + std::to_string(m.pt) + ' ' + std::string(m.encoding) + '/' + std::to_string(m.clock);
  if (m.channels > 1) s += '/' + std::to_string(m.channels);
  return s;
}

}  // namespace

MediaPlan plan_media(const sip::SdpMedia& m, const MediaPlan* previous) {
  MediaPlan p;
  p.media = std::string(m.media);
  p.proto = std::string(m.proto);
  p.formats = std::string(m.formats);
  p.label = std::string(m.label);
  p.ptime = m.ptime;
  p.source = m.addr;
  auto reject = [&](std::string why) {
    p.accepted = false;
    p.reject_reason = std::move(why);
    if (p.formats.empty()) p.formats = "0";
    return p;
  };
  if (!sip::iequals(m.media, "audio")) return reject("not audio (" + std::string(m.media) + ")");
  bool secure = false;
  if (!is_rtp_proto(m.proto, secure)) return reject("transport " + std::string(m.proto));
  if (m.port == 0) return reject("port 0 in the offer");

  const std::vector<std::uint8_t> pts = offered_pts(m.formats);
  auto map = std::make_shared<fileio::PayloadMap>(fileio::PayloadMap::g711());
  int chosen = -1;
  int first_named = -1;
  std::vector<std::uint8_t> extras;  // telephone-event, CN
  for (std::uint8_t pt : pts) {
    sip::RtpMap rm;
    if (!m.lookup(pt, rm) || rm.encoding.empty()) continue;
    map->set(pt, rm.encoding, rm.clock, m.ptime != 0 ? m.ptime : 20);
    if (sip::iequals(rm.encoding, "telephone-event") || sip::iequals(rm.encoding, "CN")) {
      extras.push_back(pt);
      continue;
    }
    if (chosen < 0 && is_g711(rm.encoding)) chosen = pt;
    if (first_named < 0) first_named = pt;
  }
  if (chosen < 0) chosen = first_named;
  if (chosen < 0) return reject("no usable codec");

  if (secure) {
    // The SRC encrypts with its own key (SDES: each side announces the key it sends with).
    std::string why;
    for (std::string_view c : m.crypto) {
      fileio::SdesCrypto sc;
      if (!fileio::parse_sdes(c, sc, &why)) continue;
      p.srtp_in = std::make_shared<const fileio::SdesCrypto>(sc);
      // Same offer line as before (a re-offer): keep our answer key stable.
      if (previous && previous->srtp_answer && previous->srtp_in && previous->srtp_in->tag == sc.tag &&
          previous->srtp_in->suite == sc.suite)
        p.srtp_answer = previous->srtp_answer;
      else
        p.srtp_answer = fileio::make_sdes_answer(sc);
      break;
    }
    if (!p.srtp_in) return reject(m.crypto.empty() ? "RTP/SAVP without a=crypto" : "no usable crypto suite (" + why + ")");
  }

  sip::RtpMap rm;
  (void)m.lookup(static_cast<std::uint8_t>(chosen), rm);
  p.codec = std::string(rm.encoding);
  p.formats = std::to_string(chosen);
  p.rtpmaps.push_back(rtpmap_line(rm));
  for (std::uint8_t pt : extras) {
    sip::RtpMap e;
    (void)m.lookup(pt, e);
    p.formats += ' ' + std::to_string(pt);
    p.rtpmaps.push_back(rtpmap_line(e));
    if (sip::iequals(e.encoding, "telephone-event")) p.rtpmaps.push_back("a=fmtp:" + std::to_string(pt) + " 0-16");
  }
  p.payloads = std::move(map);
  p.paused = m.dir == sip::Direction::kInactive || m.dir == sip::Direction::kRecvOnly ||
             (m.addr.family != 0 && m.addr.is_unspecified());
  p.accepted = true;
  return p;
}

std::string format_answer(const std::vector<MediaPlan>& plans, const std::string& addr, std::uint64_t session_id,
                          std::uint64_t version) {
  const char* ip = addr.find(':') != std::string::npos ? "IP6" : "IP4";
  std::string s;
  s.reserve(256 + plans.size() * 160);
  s += "v=0\r\no=callrec " + std::to_string(session_id) + ' ' + std::to_string(version) + " IN " + ip + ' ' + addr +
       "\r\ns=callrec SRS\r\nc=IN " + ip + ' ' + addr + "\r\nt=0 0\r\n";
  for (const MediaPlan& p : plans) {
    s += "m=" + p.media + ' ' + std::to_string(p.accepted ? p.port : 0) + ' ' +
         (p.proto.empty() ? std::string("RTP/AVP") : p.proto) + ' ' + p.formats + "\r\n";
    if (p.accepted) {
      for (const std::string& l : p.rtpmaps) s += l + "\r\n";
      if (p.ptime != 0) s += "a=ptime:" + std::to_string(p.ptime) + "\r\n";
      if (p.srtp_answer) s += "a=crypto:" + fileio::format_sdes(*p.srtp_answer) + "\r\n";
      s += p.paused ? "a=inactive\r\n" : "a=recvonly\r\n";
    }
    if (!p.label.empty()) s += "a=label:" + p.label + "\r\n";
  }
  return s;
}

}  // namespace callrec::control::siprec
