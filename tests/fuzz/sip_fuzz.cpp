// libFuzzer target for the SIP message parser: the input is a stream buffer and a datagram.
// Checked on everything that parses:
// - every view lies inside the input, and the body ends where `size` says the message ends;
// - stream framing: the body is exactly Content-Length bytes, every shorter prefix of a framed
//   message is kIncomplete, the same bytes as a datagram give the same message, and the framer
//   makes progress over back-to-back messages;
// - parse_name_addr() parts lie inside the header value;
// - find_message_start() points at the start of a line that looks_like_sip().
// Any violated property aborts (a finding), as does any sanitizer report.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "control/sip/sip_message.hpp"

namespace {

using namespace callrec::control::sip;

void check(bool ok) {
  if (!ok) std::abort();
}

bool within(std::string_view inner, std::string_view outer) {
  if (inner.empty()) return true;
  return inner.data() >= outer.data() && inner.data() + inner.size() <= outer.data() + outer.size();
}

void check_name_addr(std::string_view value) {
  const NameAddr na = parse_name_addr(value);
  check(within(na.display, value));
  check(within(na.uri, value));
  check(within(na.user, value));
  check(within(na.host, value));
  check(within(na.tag, value));
}

void check_message(const Message& m, std::string_view d, bool stream) {
  check(m.size <= d.size());
  for (std::string_view v : {m.method, m.request_uri, m.reason, m.call_id, m.from, m.to, m.pai, m.rpid, m.contact,
                             m.user_agent, m.content_type, m.reason_hdr, m.via, m.cseq_method, m.body})
    check(within(v, d));
  check(m.body.data() + m.body.size() == d.data() + m.size);
  check(m.headers <= kMaxHeaders);
  if (m.request) {
    check(!m.method.empty() && !m.request_uri.empty());
  } else {
    check(m.status >= 100 && m.status <= 699);
  }
  if (m.has_content_length) check(m.content_length <= kMaxMessage);
  if (stream) {
    check(m.body.size() == (m.has_content_length ? m.content_length : 0));
    check(!m.body_truncated);
  } else {
    if (m.has_content_length) check(m.body.size() <= m.content_length);
    check(m.body_truncated == (m.has_content_length && m.body.size() < m.content_length));
  }
  for (std::string_view v : {m.from, m.to, m.pai, m.rpid, m.contact}) check_name_addr(v);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view d(reinterpret_cast<const char*>(data), size);

  Message m;
  if (parse_message(d, m, false) == ParseResult::kOk) check_message(m, d, false);

  // A stream: parse messages back to back until the buffer runs out or stops parsing.
  std::string_view rest = d;
  for (unsigned n = 0; n < 16 && !rest.empty(); ++n) {
    const ParseResult r = parse_message(rest, m, true);
    if (r != ParseResult::kOk) break;
    check_message(m, rest, true);
    check(m.size > 0);
    const std::string_view framed = rest.substr(0, m.size);
    Message again;
    check(parse_message(framed.substr(0, framed.size() - 1), again, true) == ParseResult::kIncomplete);
    check(parse_message(framed, again, true) == ParseResult::kOk);
    check(again.size == m.size && again.call_id == m.call_id && again.body == m.body);
    check(parse_message(framed, again, false) == ParseResult::kOk);
    check(again.size == m.size && again.body == m.body && again.status == m.status && again.method == m.method);
    rest = rest.substr(m.size);
  }

  const bool sip = looks_like_sip(d);
  if (sip) check(d.size() >= 12);
  const std::size_t start = find_message_start(d);
  if (start != std::string_view::npos) {
    check(start < d.size());
    check(start == 0 || d[start - 1] == '\n');
    check(looks_like_sip(d.substr(start)));
    if (sip) check(start == 0);
  } else {
    check(!sip);
  }
  check_name_addr(d);
  (void)param(d, "tag");
  return 0;
}
