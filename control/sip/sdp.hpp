#pragma once
// SDP (RFC 4566/8866) as offer/answer (RFC 3264) uses it: what each party announces it receives
// on. Pure parsing into views of the caller's bytes plus small fixed fields; bounded (at most
// kMaxMedia m-lines and kMaxFormats rtpmaps per m-line are kept, the rest counted as dropped).
// Shared by passive capture and the SIPREC server (labels, crypto).
#include <cstdint>
#include <string_view>
#include <vector>

#include "dataplane/decode/decode.hpp"

namespace callrec::control::sip {

inline constexpr unsigned kMaxMedia = 64;
inline constexpr unsigned kMaxFormats = 32;

enum class Direction : std::uint8_t { kSendRecv, kSendOnly, kRecvOnly, kInactive };
const char* direction_name(Direction d);

struct RtpMap {
  std::uint8_t pt = 0;
  std::string_view encoding;  ///< "PCMA", "telephone-event", "opus" ...
  std::uint32_t clock = 0;
  std::uint8_t channels = 1;
};

struct SdpMedia {
  std::string_view media;   ///< "audio", "video", "application" ...
  std::uint16_t port = 0;
  std::string_view proto;   ///< "RTP/AVP", "RTP/SAVP" ...
  std::string_view formats; ///< the format list of the m-line ("8 0 101")
  dataplane::decode::IpAddr addr;  ///< c= of the media, else of the session (family 0: none)
  Direction dir = Direction::kSendRecv;
  bool dir_set = false;     ///< an a=sendrecv/sendonly/recvonly/inactive at media level
  std::uint16_t rtcp_port = 0;     ///< a=rtcp: (0: port + 1)
  dataplane::decode::IpAddr rtcp_addr;
  bool rtcp_mux = false;
  std::uint32_t ptime = 0;
  std::string_view label;   ///< a=label: (RFC 4574, SIPREC)
  std::vector<RtpMap> rtpmaps;
  std::vector<std::string_view> crypto;  ///< a=crypto: values (SDES, RFC 4568)
  /// The first payload type of the format list (what the answer picked), -1 when none.
  [[nodiscard]] int first_pt() const;
  /// The rtpmap of pt, or the static assignment of RFC 3551 (0 PCMU, 8 PCMA, 9 G722, 18 G729 ...).
  [[nodiscard]] bool lookup(std::uint8_t pt, RtpMap& out) const;
  /// Held (no media to the announcing party): port 0, c=0.0.0.0, sendonly or inactive.
  [[nodiscard]] bool receives() const;
};

struct Sdp {
  dataplane::decode::IpAddr session_addr;
  Direction session_dir = Direction::kSendRecv;
  std::vector<SdpMedia> media;
  unsigned dropped_media = 0;  ///< m-lines beyond kMaxMedia
  /// The first audio m-line with a non-zero port (nullptr: none).
  [[nodiscard]] const SdpMedia* first_audio() const;
};

/// Parses an SDP body. False when it is not SDP (no v= line first, or no line at all).
bool parse_sdp(std::string_view body, Sdp& out);

/// The SDP of a message body: the body itself for application/sdp, the application/sdp part of
/// a multipart body (RFC 5621; any boundary, per-part headers, CRLF or LF), "" when none.
std::string_view find_sdp(std::string_view content_type, std::string_view body);

/// Parts of a multipart body (RFC 2046): each part's Content-Type and bytes. Bounded to 16.
struct BodyPart {
  std::string_view content_type;
  std::string_view content_disposition;
  std::string_view body;
};
bool split_multipart(std::string_view content_type, std::string_view body, std::vector<BodyPart>& out);

}  // namespace callrec::control::sip
