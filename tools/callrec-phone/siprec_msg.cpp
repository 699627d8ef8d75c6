#include "siprec_msg.hpp"

#include <cstdio>

namespace callrec::phone::siprec {
namespace {

std::uint64_t mix(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/// A 16-byte id, base64 (RFC 7865 ids are base64 UUIDs): which = 0 session, 1-2 participants,
/// 3-4 streams.
std::string id_of(std::uint64_t seed, unsigned which) {
  std::uint8_t b[16];
  const std::uint64_t a = mix(seed * 8 + which);
  const std::uint64_t c = mix(a ^ 0x5851F42D4C957F2DULL);
  for (int i = 0; i < 8; ++i) {
    b[i] = static_cast<std::uint8_t>(a >> (8 * i));
    b[8 + i] = static_cast<std::uint8_t>(c >> (8 * i));
  }
  b[6] = static_cast<std::uint8_t>((b[6] & 0x0F) | 0x40);  // a version-4 UUID
  b[8] = static_cast<std::uint8_t>((b[8] & 0x3F) | 0x80);
  return base64(b, sizeof b);
}

}  // namespace

std::string base64(const std::uint8_t* data, std::size_t n) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < n; i += 3) {
    const std::uint32_t v = (std::uint32_t{data[i]} << 16) | (std::uint32_t{data[i + 1]} << 8) | data[i + 2];
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i < n) {
    std::uint32_t v = std::uint32_t{data[i]} << 16;
    if (i + 1 < n) v |= std::uint32_t{data[i + 1]} << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < n ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string xml_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string make_sdp_offer(const OfferParams& p) {
  const bool v6 = p.address.find(':') != std::string::npos;
  const char* ip = v6 ? "IP6" : "IP4";
  const auto& ci = fileio::codec_info(p.codec);
  std::string s;
  s.reserve(640);
  s += "v=0\r\n";
  s += "o=callrec-phone " + std::to_string(p.session_id) + ' ' + std::to_string(p.version) + " IN " + ip + ' ' +
       p.address + "\r\n";
  s += "s=SIPREC\r\n";
  s += "c=IN " + std::string(ip) + ' ' + p.address + "\r\n";
  s += "t=0 0\r\n";
  for (std::size_t k = 0; k < 2; ++k) {
    const unsigned pt = ci.payload_type;
    s += "m=audio " + std::to_string(p.ports[k]) + (p.crypto[k] != nullptr ? " RTP/SAVP " : " RTP/AVP ") +
         std::to_string(pt) + "\r\n";
    s += "a=rtpmap:" + std::to_string(pt) + ' ' + std::string(ci.name) + "/8000\r\n";
    s += "a=ptime:" + std::to_string(p.ptime_ms) + "\r\n";
    if (p.crypto[k] != nullptr) s += "a=crypto:" + fileio::format_sdes(*p.crypto[k]) + "\r\n";
    s += "a=label:" + std::string(kLabels[k]) + "\r\n";
    s += "a=";
    s.append(p.direction);
    s += "\r\n";
  }
  return s;
}

std::string participant_aor(std::uint64_t number, unsigned k) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "sip:+1555000%04llu@example.com",
                static_cast<unsigned long long>((number * 2 + k) % 10000));
  return buf;
}

std::string participant_name(std::uint64_t number, unsigned k, bool updated) {
  std::string n = (k == 0 ? "Caller " : "Callee ") + std::to_string(number);
  if (updated) n += " (transferred)";
  return n;
}

std::string make_metadata(const MetadataParams& p) {
  const std::string session = id_of(p.id_seed, 0);
  const std::string part[2] = {id_of(p.id_seed, 1), id_of(p.id_seed, 2)};
  const std::string stream[2] = {id_of(p.id_seed, 3), id_of(p.id_seed, 4)};
  std::string x;
  x.reserve(1400);
  x += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n";
  x += "<recording xmlns=\"urn:ietf:params:xml:ns:recording:1\">\r\n";
  x += "  <dataMode>complete</dataMode>\r\n";
  x += "  <session session_id=\"" + session + "\">\r\n";
  x += "  </session>\r\n";
  for (unsigned k = 0; k < 2; ++k) {
    x += "  <participant participant_id=\"" + part[k] + "\">\r\n";
    x += "    <nameID aor=\"" + xml_escape(participant_aor(p.number, k)) + "\">\r\n";
    x += "      <name xml:lang=\"en\">" + xml_escape(participant_name(p.number, k)) + "</name>\r\n";
    x += "    </nameID>\r\n";
    x += "  </participant>\r\n";
  }
  for (unsigned k = 0; k < 2; ++k) {
    x += "  <stream stream_id=\"" + stream[k] + "\" session_id=\"" + session + "\">\r\n";
    x += "    <label>" + std::string(kLabels[k]) + "</label>\r\n";
    x += "  </stream>\r\n";
  }
  for (unsigned k = 0; k < 2; ++k) {
    x += "  <participantstreamassoc participant_id=\"" + part[k] + "\">\r\n";
    x += "    <send>" + stream[k] + "</send>\r\n";
    x += "    <recv>" + stream[1 - k] + "</recv>\r\n";
    x += "  </participantstreamassoc>\r\n";
  }
  x += "</recording>\r\n";
  return x;
}

std::string make_metadata_update(const MetadataParams& p) {
  std::string x;
  x += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n";
  x += "<recording xmlns=\"urn:ietf:params:xml:ns:recording:1\">\r\n";
  x += "  <dataMode>partial</dataMode>\r\n";
  x += "  <participant participant_id=\"" + id_of(p.id_seed, 2) + "\">\r\n";
  x += "    <nameID aor=\"" + xml_escape(participant_aor(p.number, 1)) + "\">\r\n";
  x += "      <name xml:lang=\"en\">" + xml_escape(participant_name(p.number, 1, true)) + "</name>\r\n";
  x += "    </nameID>\r\n";
  x += "  </participant>\r\n";
  x += "</recording>\r\n";
  return x;
}

std::string make_multipart(std::string_view boundary, std::string_view sdp, std::string_view metadata) {
  std::string b;
  b.reserve(sdp.size() + metadata.size() + 256);
  b += "--";
  b.append(boundary);
  b += "\r\nContent-Type: application/sdp\r\n\r\n";
  b.append(sdp);
  b += "\r\n--";
  b.append(boundary);
  b += "\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n";
  b.append(metadata);
  b += "\r\n--";
  b.append(boundary);
  b += "--\r\n";
  return b;
}

}  // namespace callrec::phone::siprec
