#pragma once
// SIPREC recording metadata (RFC 7865, carried as application/rs-metadata+xml by RFC 7866):
// who the participants of the recorded call are and which media stream (SDP a=label) each of
// them sends. Parsed with pugixml, which never expands entities (no XXE, no entity bombs); a
// document with a DOCTYPE is refused outright.
//
// Lenient the way real SRCs need (../shared/spec/siprec-srs.md "What real SRCs send"):
// - elements are matched by local name, and the namespace by URI whatever its prefix; the
//   namespaces urn:ietf:params:xml:ns:recording:1, urn:ietf:params:xml:ns:recording and none
//   at all are accepted;
// - elements in any order, unknown elements (vendor extension data) ignored except the caller
//   hints below; `dataMode` in any case; ids as base64 or free text; `aor` with or without a
//   scheme; times kept as text.
// Bounded: documents over kMaxMetadataBytes, more than kMaxParticipants participants or
// kMaxStreams streams are refused (the caller answers 4xx and counts it).
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace callrec::control::sip {

inline constexpr std::size_t kMaxMetadataBytes = 64 * 1024;
inline constexpr std::size_t kMaxParticipants = 64;
inline constexpr std::size_t kMaxStreams = 64;

struct RsParticipant {
  std::string id;                 ///< participant_id (RFC 7865) as sent
  std::string name;               ///< nameID/name (display name), XML escapes resolved
  std::string aor;                ///< nameID@aor, as sent ("sip:alice@example.com" or "1000@host")
  std::vector<std::string> send;  ///< stream ids this participant sends
  std::vector<std::string> recv;  ///< stream ids it receives
  /// Caller hint from the metadata: +1 the participant is the calling party (Acme/Oracle
  /// apkt:callingParty true or apkt:callerOrig true, <role>calling</role>, ...), -1 it is
  /// the called party (callingParty false, <role>called</role>), 0 no hint.
  int caller_hint = 0;
  /// The document said which streams it sends/receives (send/recv children or a
  /// participantstreamassoc, even an empty one): a partial update replaces the lists only then.
  bool streams_given = false;

  bool operator==(const RsParticipant&) const = default;
};

struct RsStream {
  std::string id;     ///< stream_id
  std::string label;  ///< the SDP a=label it describes

  bool operator==(const RsStream&) const = default;
};

struct RsMetadata {
  std::string data_mode;   ///< "complete" / "partial" (lower-cased; "" when absent)
  std::string session_id;  ///< recording session id (session@id)
  std::string group_id;    ///< group@id ("" when absent)
  /// The recorded call's SIP Call-ID: session/sipSessionID, or a vendor's extension data
  /// (Acme apkt:ucid / apkt:callid, BroadWorks ...); "" when the metadata does not carry it.
  std::string recorded_call_id;
  std::vector<RsParticipant> participants;  ///< in document order
  std::vector<RsStream> streams;            ///< in document order
  /// Participant-stream associations given as their own elements
  /// (<participantstreamassoc participant_id=..><send>..</send><recv>..</recv>) are folded
  /// into the participants' send/recv lists.

  /// The participant that sends the stream with this SDP label (nullptr when unknown).
  [[nodiscard]] const RsParticipant* sender_of_label(std::string_view label) const;
  /// The participant recorded as the caller: the one with caller_hint +1; else, when exactly
  /// one has -1 and there are two, the other; else the first participant in document order
  /// that sends a stream; else the first participant; nullptr when there is no participant.
  [[nodiscard]] const RsParticipant* caller() const;

  bool operator==(const RsMetadata&) const = default;
};

enum class MetadataError : unsigned char {
  kOk,
  kTooLarge,      ///< over kMaxMetadataBytes
  kDoctype,       ///< a DOCTYPE (DTD, entity declarations): refused, never parsed
  kMalformed,     ///< not well-formed XML (truncated ...)
  kNotRecording,  ///< well-formed, but the root is not a recording element
  kTooMany,       ///< over kMaxParticipants / kMaxStreams
};
const char* metadata_error_name(MetadataError e);

/// Parses one rs-metadata document into `out` (cleared first).
MetadataError parse_rs_metadata(std::string_view xml, RsMetadata& out);

/// Applies an update to the metadata of a running recording (re-INVITE, UPDATE): a complete
/// document (data_mode "complete" or absent) replaces `base`; a partial one merges by id
/// (participants and streams added or updated, their send/recv lists replaced when given).
void merge_rs_metadata(RsMetadata& base, const RsMetadata& update);

}  // namespace callrec::control::sip
