#include "control/sip/sdp.hpp"

#include <charconv>
#include <string>

#include "control/sip/sip_message.hpp"

namespace callrec::control::sip {

using dataplane::decode::IpAddr;

namespace {

template <typename T>
bool to_num(std::string_view s, T& out) {
  s = trim(s);
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && p == s.data() + s.size();
}

/// "IN IP4 192.0.2.1" (a TTL or count suffix after '/' is ignored).
bool parse_conn(std::string_view v, IpAddr& out) {
  const std::size_t s1 = v.find(' ');
  if (s1 == std::string_view::npos) return false;
  const std::size_t s2 = v.find(' ', s1 + 1);
  if (s2 == std::string_view::npos) return false;
  std::string_view addr = trim(v.substr(s2 + 1));
  addr = addr.substr(0, addr.find('/'));
  return dataplane::decode::parse_ip(addr, out);
}

bool parse_direction(std::string_view a, Direction& d) {
  if (a == "sendrecv") d = Direction::kSendRecv;
  else if (a == "sendonly") d = Direction::kSendOnly;
  else if (a == "recvonly") d = Direction::kRecvOnly;
  else if (a == "inactive") d = Direction::kInactive;
  else return false;
  return true;
}

struct Static {
  std::uint8_t pt;
  const char* name;
  std::uint32_t clock;
};
constexpr Static kStatic[] = {{0, "PCMU", 8000},  {3, "GSM", 8000},   {4, "G723", 8000}, {5, "DVI4", 8000},
                              {6, "DVI4", 16000}, {7, "LPC", 8000},   {8, "PCMA", 8000}, {9, "G722", 8000},
                              {10, "L16", 44100}, {11, "L16", 44100}, {12, "QCELP", 8000}, {13, "CN", 8000},
                              {14, "MPA", 90000}, {15, "G728", 8000}, {16, "DVI4", 11025}, {17, "DVI4", 22050},
                              {18, "G729", 8000}};

}  // namespace

const char* direction_name(Direction d) {
  switch (d) {
    case Direction::kSendRecv: return "sendrecv";
    case Direction::kSendOnly: return "sendonly";
    case Direction::kRecvOnly: return "recvonly";
    case Direction::kInactive: return "inactive";
  }
  return "?";
}

int SdpMedia::first_pt() const {
  std::string_view f = trim(formats);
  const std::size_t sp = f.find(' ');
  int pt = -1;
  if (!to_num(f.substr(0, sp), pt) || pt < 0 || pt > 127) return -1;
  return pt;
}

bool SdpMedia::lookup(std::uint8_t pt, RtpMap& out) const {
  for (const RtpMap& m : rtpmaps)
    if (m.pt == pt) {
      out = m;
      return true;
    }
  for (const Static& s : kStatic)
    if (s.pt == pt) {
      out = RtpMap{pt, s.name, s.clock, 1};
      return true;
    }
  return false;
}

bool SdpMedia::receives() const {
  return port != 0 && addr.family != 0 && !addr.is_unspecified() && dir != Direction::kSendOnly &&
         dir != Direction::kInactive;
}

const SdpMedia* Sdp::first_audio() const {
  for (const SdpMedia& m : media)
    if (m.media == "audio" && m.port != 0) return &m;
  return nullptr;
}

bool parse_sdp(std::string_view body, Sdp& out) {
  out = Sdp{};
  std::size_t pos = 0;
  while (pos < body.size() && (body[pos] == '\r' || body[pos] == '\n' || body[pos] == ' ')) ++pos;
  if (body.substr(pos, 2) != "v=") return false;
  SdpMedia* cur = nullptr;
  bool skipping = false;  // m-lines beyond the cap
  while (pos < body.size()) {
    std::size_t nl = body.find('\n', pos);
    if (nl == std::string_view::npos) nl = body.size();
    std::string_view line = body.substr(pos, nl - pos);
    pos = nl + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() < 2 || line[1] != '=') continue;  // lenient: skip what is not a type=value line
    const char type = line[0];
    const std::string_view v = line.substr(2);
    if (type == 'm') {
      if (out.media.size() >= kMaxMedia) {
        ++out.dropped_media;
        skipping = true;
        cur = nullptr;
        continue;
      }
      skipping = false;
      SdpMedia m;
      m.addr = out.session_addr;
      m.dir = out.session_dir;
      const std::size_t s1 = v.find(' ');
      m.media = v.substr(0, s1);
      if (s1 != std::string_view::npos) {
        std::string_view rest = v.substr(s1 + 1);
        const std::size_t s2 = rest.find(' ');
        std::string_view port = rest.substr(0, s2);
        port = port.substr(0, port.find('/'));  // port/count
        unsigned p = 0;
        if (to_num(port, p) && p <= 65535) m.port = static_cast<std::uint16_t>(p);
        if (s2 != std::string_view::npos) {
          rest = rest.substr(s2 + 1);
          const std::size_t s3 = rest.find(' ');
          m.proto = rest.substr(0, s3);
          m.formats = s3 == std::string_view::npos ? std::string_view{} : trim(rest.substr(s3 + 1));
        }
      }
      out.media.push_back(m);
      cur = &out.media.back();
      continue;
    }
    if (skipping) continue;
    if (type == 'c') {
      IpAddr a;
      if (!parse_conn(v, a)) continue;
      if (cur) {
        cur->addr = a;
      } else {
        out.session_addr = a;
      }
      continue;
    }
    if (type != 'a') continue;
    const std::size_t colon = v.find(':');
    const std::string_view name = v.substr(0, colon);
    const std::string_view val = colon == std::string_view::npos ? std::string_view{} : v.substr(colon + 1);
    Direction d;
    if (parse_direction(name, d)) {
      if (cur) {
        cur->dir = d;
        cur->dir_set = true;
      } else {
        out.session_dir = d;
      }
      continue;
    }
    if (!cur) continue;
    if (name == "rtpmap") {
      // "<pt> <encoding>/<clock>[/<channels>]"
      const std::size_t sp = val.find(' ');
      unsigned pt = 0;
      if (sp == std::string_view::npos || !to_num(val.substr(0, sp), pt) || pt > 127) continue;
      std::string_view enc = trim(val.substr(sp + 1));
      RtpMap r;
      r.pt = static_cast<std::uint8_t>(pt);
      const std::size_t sl = enc.find('/');
      r.encoding = enc.substr(0, sl);
      if (sl != std::string_view::npos) {
        std::string_view rest = enc.substr(sl + 1);
        const std::size_t sl2 = rest.find('/');
        (void)to_num(rest.substr(0, sl2), r.clock);
        unsigned ch = 1;
        if (sl2 != std::string_view::npos && to_num(rest.substr(sl2 + 1), ch) && ch < 256)
          r.channels = static_cast<std::uint8_t>(ch);
      }
      if (cur->rtpmaps.size() < kMaxFormats) cur->rtpmaps.push_back(r);
    } else if (name == "ptime") {
      unsigned pt = 0;
      if (to_num(val, pt) && pt > 0 && pt <= 1000) cur->ptime = pt;
    } else if (name == "rtcp") {
      // "<port> [IN IP4 <addr>]"
      const std::size_t sp = val.find(' ');
      unsigned p = 0;
      if (to_num(val.substr(0, sp), p) && p <= 65535) cur->rtcp_port = static_cast<std::uint16_t>(p);
      if (sp != std::string_view::npos) (void)parse_conn(val.substr(sp + 1), cur->rtcp_addr);
    } else if (name == "rtcp-mux") {
      cur->rtcp_mux = true;
    } else if (name == "label") {
      cur->label = trim(val);
    } else if (name == "crypto") {
      if (cur->crypto.size() < 16) cur->crypto.push_back(trim(val));
    }
  }
  // A media-level direction overrides the session's; one not set inherits it (done at m=). A
  // session-level line after the first m= is not SDP's order: applied to media without their own.
  for (SdpMedia& m : out.media) {
    if (!m.dir_set) m.dir = out.session_dir;
    if (m.addr.family == 0) m.addr = out.session_addr;
  }
  return true;
}

bool split_multipart(std::string_view content_type, std::string_view body, std::vector<BodyPart>& out) {
  out.clear();
  const std::size_t semi = content_type.find(';');
  if (!iequals(trim(content_type.substr(0, semi)).substr(0, 10), "multipart/")) return false;
  std::string_view boundary =
      semi == std::string_view::npos ? std::string_view{} : param(content_type.substr(semi + 1), "boundary");
  if (boundary.empty()) {
    // Lenient: a body that starts with "--token" tells its own boundary (a mangled Content-Type).
    std::string_view b = trim(body);
    if (!b.starts_with("--")) return false;
    const std::size_t eol = b.find_first_of("\r\n");
    boundary = trim(b.substr(2, eol == std::string_view::npos ? std::string_view::npos : eol - 2));
    if (boundary.empty()) return false;
  }
  std::string delim = "--";
  delim.append(boundary);
  std::size_t pos = body.find(delim);
  while (pos != std::string_view::npos && out.size() < 16) {
    pos += delim.size();
    if (body.substr(pos, 2) == "--") break;  // close delimiter
    // rest of the delimiter line
    const std::size_t eol = body.find('\n', pos);
    if (eol == std::string_view::npos) break;
    const std::size_t part_start = eol + 1;
    std::size_t next = body.find(delim, part_start);
    const bool last = next == std::string_view::npos;
    std::string_view part = body.substr(part_start, last ? std::string_view::npos : next - part_start);
    // the CRLF before the delimiter belongs to it
    if (part.ends_with("\r\n")) part.remove_suffix(2);
    else if (part.ends_with("\n")) part.remove_suffix(1);
    BodyPart bp;
    // part headers up to an empty line
    std::size_t p = 0;
    for (;;) {
      const std::size_t nl = part.find('\n', p);
      std::string_view line = part.substr(p, nl == std::string_view::npos ? std::string_view::npos : nl - p);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (nl == std::string_view::npos) {
        p = part.size();
        break;
      }
      p = nl + 1;
      if (line.empty()) break;
      const std::size_t c = line.find(':');
      if (c == std::string_view::npos) continue;
      const std::string_view n = trim(line.substr(0, c));
      if (iequals(n, "Content-Type") || iequals(n, "c")) bp.content_type = trim(line.substr(c + 1));
      else if (iequals(n, "Content-Disposition")) bp.content_disposition = trim(line.substr(c + 1));
    }
    bp.body = part.substr(p);
    out.push_back(bp);
    if (last) break;
    pos = next;
  }
  return !out.empty();
}

std::string_view find_sdp(std::string_view content_type, std::string_view body) {
  const std::string_view mt = trim(content_type.substr(0, content_type.find(';')));
  if (mt.empty() || iequals(mt, "application/sdp")) {
    // no Content-Type on a body that is SDP: accept it when it looks like SDP
    std::string_view b = trim(body);
    return b.starts_with("v=") ? body : std::string_view{};
  }
  std::vector<BodyPart> parts;
  if (!split_multipart(content_type, body, parts)) return {};
  for (const BodyPart& p : parts)
    if (iequals(trim(p.content_type.substr(0, p.content_type.find(';'))), "application/sdp")) return p.body;
  for (const BodyPart& p : parts)
    if (trim(p.body).starts_with("v=")) return p.body;
  return {};
}

}  // namespace callrec::control::sip
