#pragma once
// The SRS's side of SDP offer/answer (RFC 3264, RFC 7866 section 8): what to do with each
// offered m-line, and the answer text. Pure: no ports are allocated here (the server fills
// them in), no I/O.
//
// Per offered m-line, in order:
// - audio over RTP/AVP(F) or RTP/SAVP(F) with a port: accepted, answered recvonly (inactive when
//   the offer is inactive, recvonly, or on hold with c=0.0.0.0: the stream is paused), label
//   echoed;
// - the codec: PCMU or PCMA when offered (the first of them in the offer's order), else the
//   first offered format with a name (rtpmap or static type): it is recorded under that name.
//   telephone-event and CN formats are kept in the answer too;
// - SAVP: the first a=crypto line with a suite we can decrypt is taken, and the answer carries
//   our own key for it; none usable -> rejected (port 0), never recorded as noise;
// - anything else (video, no known format, a port of 0, over the stream cap): rejected with
//   port 0 and the offer's format list (RFC 3264 6: a rejected stream still lists a format).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "control/sip/sdp.hpp"
#include "fileio/srtp.hpp"
#include "fileio/stream_assembler.hpp"

namespace callrec::control::siprec {

struct MediaPlan {
  bool accepted = false;
  std::string reject_reason;       ///< why port 0 ("video", "no usable codec", "srtp suite" ...)
  std::string media = "audio";     ///< m= media of the offer (echoed)
  std::string proto;               ///< the offer's proto, echoed
  std::string formats;             ///< the answer's format list ("8 101")
  std::vector<std::string> rtpmaps;  ///< "a=rtpmap:..." / "a=fmtp:..." lines of those formats
  std::string codec;               ///< the chosen codec's name ("PCMA")
  std::string label;               ///< a=label, echoed ("" none)
  bool paused = false;             ///< offer inactive / recvonly / c=0.0.0.0: answer inactive
  std::uint32_t ptime = 0;
  std::shared_ptr<const fileio::PayloadMap> payloads;  ///< every format the offer names
  std::shared_ptr<const fileio::SdesCrypto> srtp_in;   ///< the SRC's key (decrypts its stream)
  std::optional<fileio::SdesCrypto> srtp_answer;       ///< our key in the answer
  dataplane::decode::IpAddr source;  ///< the offer's c= address of the m-line (family 0: none/hold)
  std::uint16_t port = 0;          ///< our port (set by the server; 0: rejected)
};

/// Decides one offered m-line. `srtp_answer` is reused when the same crypto line was already
/// answered (re-offer with the same key): pass the previous plan to keep our key stable.
MediaPlan plan_media(const sip::SdpMedia& m, const MediaPlan* previous = nullptr);

/// The answer: one m-line per plan, in order. `addr` is our media address (IPv4 or IPv6 text),
/// session_id/version the o= line's (version incremented by the caller on every new answer).
std::string format_answer(const std::vector<MediaPlan>& plans, const std::string& addr, std::uint64_t session_id,
                          std::uint64_t version);

}  // namespace callrec::control::siprec
