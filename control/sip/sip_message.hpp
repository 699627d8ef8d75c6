#pragma once
// SIP message parsing (RFC 3261 section 7 and 20): pure parsing, no I/O, no allocation. The
// message is a view into the caller's bytes: every field below is a string_view into them.
// Shared by passive capture (control/span/) and the SIPREC server.
//
// Lenient where real equipment is sloppy (bare LF line ends, folded headers, any case in header
// names, compact forms, missing Content-Length on UDP, spaces around ':'), exact where framing
// depends on it (a stream transport needs Content-Length; a Content-Length that is not a number
// or that is larger than a datagram's bytes is reported). Bounded: at most kMaxHeaders header
// lines and kMaxMessage bytes are looked at.
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace callrec::control::sip {

inline constexpr std::size_t kMaxMessage = 65535;
inline constexpr unsigned kMaxHeaders = 256;

enum class ParseResult : std::uint8_t {
  kOk,
  kIncomplete,      ///< stream: more bytes needed (no end of headers yet, or body incomplete)
  kBadStartLine,    ///< neither a request line nor a status line
  kBadHeader,       ///< a header line without a name or ':' (counted, message refused)
  kTooManyHeaders,
  kTooLarge,        ///< headers or Content-Length beyond kMaxMessage
  kBadContentLength,
};
const char* parse_result_name(ParseResult r);

/// name-addr / addr-spec of From, To, P-Asserted-Identity, Remote-Party-ID, Contact.
struct NameAddr {
  std::string_view display;  ///< unquoted display name ("" when none)
  std::string_view uri;      ///< "sip:alice@example.com" (no <>, no header params)
  std::string_view user;     ///< "alice" (sip/sips user part, tel: number)
  std::string_view host;     ///< "example.com" (host[:port] of a sip URI)
  std::string_view tag;      ///< ;tag= header parameter
};
/// Parses one name-addr value (the first of a comma list).
NameAddr parse_name_addr(std::string_view value);

struct Message {
  bool request = false;
  std::string_view method;       ///< request method ("INVITE")
  std::string_view request_uri;
  int status = 0;                ///< response status code
  std::string_view reason;       ///< response reason phrase
  std::string_view call_id;
  std::string_view from, to;     ///< raw header values (parse_name_addr for the parts)
  std::string_view pai, rpid;    ///< P-Asserted-Identity, Remote-Party-ID (first)
  std::string_view contact;
  std::string_view user_agent;   ///< User-Agent (requests) or Server (responses)
  std::string_view content_type; ///< media type with its parameters
  std::string_view reason_hdr;   ///< Reason: (Q.850 cause of a BYE/CANCEL)
  std::string_view via;          ///< first Via value
  std::uint32_t cseq = 0;
  std::string_view cseq_method;
  bool has_content_length = false;
  std::size_t content_length = 0;
  std::string_view body;
  bool body_truncated = false;   ///< datagram: Content-Length said more than the bytes present
  std::size_t size = 0;          ///< bytes of the message (headers + body) in the input
  unsigned headers = 0;
  std::string_view head;         ///< the header lines (after the start line, before the blank line)
};

/// Calls fn(value) for every value of header `name` (or its compact form `compact`, 0: none),
/// in order, each line's value trimmed (folded lines joined as sent; a comma list is one value).
/// Returns how many were seen. For the headers Message does not keep: every Via, Record-Route,
/// Require, Supported ...
template <typename Fn>
unsigned for_each_header(const Message& m, std::string_view name, char compact, Fn&& fn);
/// True when the comma-separated header values of `name` (Require, Supported ...) contain `token`.
bool header_has_token(const Message& m, std::string_view name, char compact, std::string_view token);
/// The first value of header `name` ("" when absent).
std::string_view header_value(const Message& m, std::string_view name, char compact = 0);

/// Parses one message from the front of `data`. stream == true (TCP, TLS): the message ends
/// where Content-Length says (0 when absent), kIncomplete when bytes are missing, and `size`
/// tells where the next message starts. stream == false (a UDP datagram): the body is the rest
/// of the datagram, cut to Content-Length when that is shorter.
ParseResult parse_message(std::string_view data, Message& out, bool stream);

/// A cheap test that the bytes start like a SIP message (a status line, or METHOD SP ... SIP/2.0
/// on the first line): the lane uses it to tell SIP from RTP and noise on any port.
bool looks_like_sip(std::string_view data);
/// Stream resynchronisation: the offset of the next line that looks like a start line (npos).
std::size_t find_message_start(std::string_view data);

/// Case-insensitive ASCII comparison.
bool iequals(std::string_view a, std::string_view b);
/// The value of parameter `name` in a ';'-separated parameter list ("" when absent).
std::string_view param(std::string_view params, std::string_view name);
std::string_view trim(std::string_view s);

namespace detail {
/// One header line of `head` from `pos`: its name and (trimmed, folded) value; false at the end.
bool next_header(std::string_view head, std::size_t& pos, std::string_view& name, std::string_view& value);
}  // namespace detail

template <typename Fn>
unsigned for_each_header(const Message& m, std::string_view name, char compact, Fn&& fn) {
  unsigned n = 0;
  std::size_t pos = 0;
  std::string_view hn, hv;
  while (detail::next_header(m.head, pos, hn, hv)) {
    const bool match = iequals(hn, name) || (compact != 0 && hn.size() == 1 && (hn[0] | 0x20) == compact);
    if (!match) continue;
    ++n;
    fn(hv);
  }
  return n;
}

}  // namespace callrec::control::sip
