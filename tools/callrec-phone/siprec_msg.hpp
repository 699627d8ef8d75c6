#pragma once
// What callrec-phone's SIPREC client mode sends as bodies: the SDP offer (two sendonly audio
// m-lines labelled 1 and 2, RFC 7866 8.1) and the RFC 7865 recording metadata (a session, two
// participants, two streams, who sends what), combined into one multipart/mixed body (RFC
// 7866 9.1). Pure text building, no I/O: tests/tools checks the bodies through the server's own
// parsers (control/sip).
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "fileio/record_format.hpp"
#include "fileio/srtp.hpp"

namespace callrec::phone::siprec {

/// The label of stream k (0, 1) in the SDP and the metadata.
inline constexpr std::array<const char*, 2> kLabels = {"1", "2"};

struct OfferParams {
  std::string address;  ///< our media address (c= and o=), IPv4 or IPv6 text
  fileio::Codec codec = fileio::Codec::kPcma;
  std::uint32_t ptime_ms = 20;
  std::array<std::uint16_t, 2> ports{};  ///< the ports the streams leave from (announced, not checked by SRSs)
  std::string_view direction = "sendonly";  ///< "sendonly" (recording) or "inactive" (paused)
  /// Non-null: RTP/SAVP with this a=crypto line for stream k; null: RTP/AVP.
  std::array<const fileio::SdesCrypto*, 2> crypto{};
  std::uint64_t session_id = 0;  ///< o= sess-id
  std::uint64_t version = 1;     ///< o= sess-version (incremented for every new offer)
};
std::string make_sdp_offer(const OfferParams& p);

/// Identifiers and names of one recorded call. number: the session's number (the participants
/// are sip:+1555000NNNN@example.com with NNNN = 2*number and 2*number+1, modulo 10,000).
struct MetadataParams {
  std::uint64_t number = 0;
  std::uint64_t id_seed = 0;  ///< makes the base64 ids unique per session and run
};
/// The complete document sent with the INVITE.
std::string make_metadata(const MetadataParams& p);
/// A partial update (RFC 7865 dataMode partial) that renames the second participant, as an SRC
/// sends after a transfer.
std::string make_metadata_update(const MetadataParams& p);
/// The participant's address of record ("sip:+15550000042@example.com"), k = 0 caller, 1 callee.
std::string participant_aor(std::uint64_t number, unsigned k);
std::string participant_name(std::uint64_t number, unsigned k, bool updated = false);

/// multipart/mixed with the SDP first and the metadata second (Content-Disposition
/// recording-session). The Content-Type header value is "multipart/mixed;boundary=" + boundary.
std::string make_multipart(std::string_view boundary, std::string_view sdp, std::string_view metadata);

std::string base64(const std::uint8_t* data, std::size_t n);
std::string xml_escape(std::string_view s);

}  // namespace callrec::phone::siprec
