#pragma once
// The control protocol's wire codec (../shared/spec/control-protocol.md): framing of the TCP
// byte stream, `key=value&...` messages with percent-encoding, and the typed view of the four
// commands. This file only parses and formats; what a command does lives in one action
// function per command, shared by the TCP server, the admin interface and the tests.
//
// Error policy: nothing here throws on bad input, asserts on it or reads out of bounds. Bad
// input yields a ProtocolError with a machine reason for the wire (`bad_request` ...) and a
// human detail for logs. Everything here is plain data, owned by the caller, and may be used
// from any thread as long as one object is not shared between threads.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "fileio/record_format.hpp"

namespace callrec::control {

/// Machine-readable reasons sent in `reason=` of a failed response (spec decision 3). Static
/// storage: a std::string_view to one of these stays valid for the whole program.
namespace reason {
inline constexpr std::string_view kBadRequest = "bad_request";
inline constexpr std::string_view kUnsupportedCodec = "unsupported_codec";
inline constexpr std::string_view kBadDir = "bad_dir";
inline constexpr std::string_view kDuplicateId = "duplicate_id";
inline constexpr std::string_view kUnknownId = "unknown_id";
inline constexpr std::string_view kNoSpace = "no_space";
inline constexpr std::string_view kNoPort = "no_port";
inline constexpr std::string_view kOverloaded = "overloaded";
}  // namespace reason

/// Command names, exactly as the seed spells them (and as we send them).
inline constexpr std::string_view kCmdStartRequest = "RecordStartRequest";
inline constexpr std::string_view kCmdStartResponse = "RecordStartResponse";
inline constexpr std::string_view kCmdStopRequest = "RecordStopRequest";
inline constexpr std::string_view kCmdStopResponse = "RecordStopResponse";

/// Default bound on one message, terminator excluded (spec decision 1).
inline constexpr std::size_t kDefaultMaxMessage = 4096;
/// Bounds of a valid `id`: 1..kMaxIdLength printable ASCII bytes (0x21..0x7E).
inline constexpr std::size_t kMaxIdLength = 64;
/// Bound of a valid `device`: 1..kMaxDeviceLength bytes of [A-Za-z0-9._:-].
inline constexpr std::size_t kMaxDeviceLength = 64;

/// Why something could not be parsed.
struct ProtocolError {
  std::string_view reason;  ///< one of control::reason::k*, for the wire
  std::string detail;       ///< human-readable, for logs ("id longer than 64 bytes")
};

/// A value or a ProtocolError (C++20 has no std::expected).
template <class T>
class Parsed {
 public:
  Parsed(T value) : v_(std::move(value)) {}                // NOLINT(google-explicit-constructor)
  Parsed(ProtocolError error) : v_(std::move(error)) {}    // NOLINT(google-explicit-constructor)

  [[nodiscard]] bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  /// Only when ok().
  [[nodiscard]] T& value() { return std::get<0>(v_); }
  [[nodiscard]] const T& value() const { return std::get<0>(v_); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  /// Only when !ok().
  [[nodiscard]] const ProtocolError& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, ProtocolError> v_;
};

using Field = std::pair<std::string, std::string>;
using Fields = std::vector<Field>;

/// One decoded message: `cmd` plus every other key=value pair in wire order (duplicates kept;
/// get() applies "the last one wins"). Keys and values are percent-decoded bytes.
struct Message {
  std::string cmd;
  Fields fields;  ///< everything but cmd, in wire order

  /// Value of the last field named `key`, or nullopt. Valid while the Message lives unchanged.
  [[nodiscard]] std::optional<std::string_view> get(std::string_view key) const;
  [[nodiscard]] bool has(std::string_view key) const { return get(key).has_value(); }
};

// ---- percent-encoding ------------------------------------------------------------------------

/// Decodes %XX escapes (either hex case). '+' stays '+' (this is not form encoding). Returns
/// nullopt on a malformed escape ('%' not followed by two hex digits).
std::optional<std::string> percent_decode(std::string_view in);
/// Appends `in` to `out`, escaping as %XX (upper-case hex) the bytes that would break the
/// framing or the key=value syntax: '&', '=', '%', every byte below 0x20 (CR, LF, NUL ...) and
/// DEL. Everything else, UTF-8 and '+' included, is sent raw: phones that never decode still
/// show names and numbers ("+4930...") right, and our decoder keeps '+' as '+'.
void percent_encode_to(std::string_view in, std::string& out);
std::string percent_encode(std::string_view in);

// ---- messages --------------------------------------------------------------------------------

/// Parses one message (no terminator needed; a trailing CR/LF/NUL and leading blanks are
/// ignored). Rules: the first pair must be `cmd=<non-empty>`; pairs are split on '&', key and
/// value on the first '='; empty pairs ("a=1&&b=2", a trailing '&') are skipped; a pair without
/// '=' is a key with an empty value; an empty key is an error; a repeated key is kept and the
/// last one wins (a repeated `cmd` too). Errors carry reason::kBadRequest.
Parsed<Message> parse_message(std::string_view line);

/// The command and id of a line that parse_message() refused (a bad %-escape in some field, an
/// empty key ...), so that the request can still be answered with `bad_request` (spec decision
/// 3: errors get an answer). Only for RecordStartRequest / RecordStopRequest; the id is the
/// last `id=` (empty when that one is not a valid id). nullopt: not a request.
/// Formats `cmd=<cmd>&k1=v1&...\r\n`, percent-encoding keys and values as needed.
std::string format_message(std::string_view cmd, std::span<const Field> fields);
std::string format_message(std::string_view cmd,
                           std::initializer_list<std::pair<std::string_view, std::string_view>> fields);
std::string format_message(const Message& m);

// ---- typed commands --------------------------------------------------------------------------

enum class Command : std::uint8_t { kUnknown, kStartRequest, kStartResponse, kStopRequest, kStopResponse };

/// Command for a `cmd` value. Case-insensitive (phones have been seen to differ in case only).
Command command_of(std::string_view cmd);
/// Canonical wire name; "" for kUnknown.
std::string_view command_name(Command c);

/// The command and id of a line that parse_message() refused (a bad %-escape in some field, an
/// empty key ...), so that the request can still be answered with `bad_request` (spec decision
/// 3: errors get an answer). Only for RecordStartRequest / RecordStopRequest; the id is the
/// last `id=` (empty when that one is not a valid id). nullopt: not a request.
struct RequestIdentity {
  Command command;
  std::string id;
};
std::optional<RequestIdentity> request_identity(std::string_view line);

enum class Direction : std::uint8_t { kUnknown, kIn, kOut };
/// "in" / "out" (also "incoming"/"outgoing", "inbound"/"outbound"), case-insensitive.
std::optional<Direction> direction_from_name(std::string_view s);
/// "in", "out", "" for kUnknown.
std::string_view direction_name(Direction d);

/// Codec for a `codec=` value: PCMA/PCMU, G711A/G711U, G.711A/G.711U, any case, with an
/// optional "/8000" rate suffix. nullopt: not a codec the appliance records.
std::optional<fileio::Codec> codec_from_wire(std::string_view s);
/// "PCMA" / "PCMU".
std::string_view codec_wire_name(fileio::Codec c);

/// True for a valid `id`: 1..kMaxIdLength bytes, all printable ASCII (0x21..0x7E).
bool valid_id(std::string_view id);

/// Normalizes a `device` value. A MAC address (12 hex digits, optionally grouped by ':' '-'
/// or '.') becomes lower-case "aa:bb:cc:dd:ee:ff"; any other value made of [A-Za-z0-9._:-],
/// 1..kMaxDeviceLength bytes, not starting with '.', is kept as is (it names a directory).
/// nullopt: unusable (empty, too long, '/' or other bytes).
std::optional<std::string> normalize_device(std::string_view device);

/// cmd=RecordStartRequest. Unknown keys are kept in `extras` (deduplicated, last value wins,
/// first position kept).
struct StartRequest {
  std::string id;
  std::string device;  ///< normalized, see normalize_device()
  std::string remote_number;
  std::string remote_name;
  std::string local_number;
  std::string local_name;
  Direction dir = Direction::kUnknown;  ///< kUnknown when the phone omitted `dir`
  std::optional<fileio::Codec> codec;   ///< nullopt when omitted: take it from the RTP payload type
  Fields extras;
};

/// cmd=RecordStopRequest. Only `id` is required; every field present overrides the stored one.
/// Keys other than the four names and `reason` (device, dir, codec, custom) go to `extras`
/// verbatim: a stop must never fail over a metadata field.
struct StopRequest {
  std::string id;
  std::optional<std::string> remote_number;
  std::optional<std::string> remote_name;
  std::optional<std::string> local_number;
  std::optional<std::string> local_name;
  std::optional<std::string> reason;
  Fields extras;
};

/// cmd=RecordStartResponse.
struct StartResponse {
  std::string id;
  bool success = false;
  std::string reason;   ///< failed: a control::reason::k* value (free text accepted on input)
  std::string server;   ///< success: where to send RTP
  std::uint16_t port = 0;
  Fields extras;
};

/// cmd=RecordStopResponse.
struct StopResponse {
  std::string id;
  bool success = true;
  std::string reason;   ///< failed (e.g. unknown_id); omitted on the wire when empty
  Fields extras;
};

/// Validation of a request (`m.cmd` must be RecordStartRequest, any case):
/// - id missing or invalid (empty, > 64 bytes, not printable ASCII) -> bad_request
/// - device missing or unusable                                      -> bad_request
/// - dir present, not empty and not in/out                           -> bad_dir
/// - codec present, not empty and not PCMA/PCMU                      -> unsupported_codec
/// Names and numbers are optional (default "") and taken as sent.
Parsed<StartRequest> parse_start_request(const Message& m);
/// Only `id` is checked (bad_request when missing/invalid).
Parsed<StopRequest> parse_stop_request(const Message& m);
/// For the phone side (tools, tests): id required; `result` must be success|failed; on
/// success `server` must be non-empty and `port` 1..65535.
Parsed<StartResponse> parse_start_response(const Message& m);
/// For the phone side: id required; `result` must be success|failed.
Parsed<StopResponse> parse_stop_response(const Message& m);

/// Wire forms, "\r\n"-terminated. Fields in the seed's order, then extras.
/// StartResponse always carries id, result, reason, server and port (empty when not
/// applicable), in the seed's order, for phones that read fields by position.
std::string format_start_request(const StartRequest& r);
std::string format_start_response(const StartResponse& r);
/// Only present optional fields are sent.
std::string format_stop_request(const StopRequest& r);
/// `reason` only when non-empty.
std::string format_stop_response(const StopResponse& r);

/// Applies a stop's overrides to the metadata kept from the start (spec: a field present in
/// the stop replaces the stored value; extras are merged by key, last value wins).
void apply_stop_overrides(StartRequest& meta, const StopRequest& stop);

// ---- framing ---------------------------------------------------------------------------------

/// Splits a TCP byte stream into messages (spec decision 1). A message ends at "\n" or "\0";
/// one CR right before the terminator is dropped, so "\r\n" works even when the CR and the LF
/// arrive in different reads. Empty messages (blank lines, "\r\n\0") are skipped. A message
/// longer than max_message bytes (terminator excluded) puts the decoder in a sticky overflow
/// state: the bytes after it are discarded and the connection should drop the peer. Messages
/// completed before the overflow are still returned by next().
///
/// Owned by one connection, one thread. Memory: the pending partial message (<= max + 1 bytes)
/// plus the complete messages not yet taken by next().
class FrameDecoder {
 public:
  explicit FrameDecoder(std::size_t max_message = kDefaultMaxMessage);

  /// Appends received bytes. Ignored once overflow() is set.
  void feed(std::string_view bytes);
  void feed(std::span<const std::byte> bytes);
  /// Next complete message, terminator stripped; nullopt when none is complete.
  std::optional<std::string> next();
  /// Sticky: a message exceeded max_message.
  [[nodiscard]] bool overflow() const { return overflow_; }
  /// The bytes received after the last terminator, if they look like a complete message: at
  /// least "cmd=x" after optional blanks, and not ending inside a %XX escape. Then they are
  /// removed and returned (one trailing CR dropped). For a peer that half-closes or goes quiet
  /// without a terminator. Otherwise nullopt and the bytes stay pending.
  std::optional<std::string> take_unterminated();
  /// Bytes of the current partial message.
  [[nodiscard]] std::string_view pending() const { return pending_; }
  [[nodiscard]] std::size_t max_message() const { return max_; }
  /// Messages returned so far by next() and take_unterminated().
  [[nodiscard]] std::uint64_t messages() const { return messages_; }

 private:
  void complete_line();

  std::size_t max_;
  std::string pending_;
  std::deque<std::string> ready_;
  bool overflow_ = false;
  std::uint64_t messages_ = 0;
};

}  // namespace callrec::control
