#include "control/sip/sip_message.hpp"

#include <charconv>

#include "dataplane/decode/decode.hpp"

namespace callrec::control::sip {

namespace {

constexpr bool is_ws(char c) { return c == ' ' || c == '\t'; }

constexpr bool is_token_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '!' || c == '%' || c == '*' || c == '_' || c == '+' || c == '`' || c == '\'' || c == '~';
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

/// The end of the line starting at `pos` (index of '\n' or npos) and the line without CR.
std::string_view line_at(std::string_view d, std::size_t pos, std::size_t& next) {
  const std::size_t nl = d.find('\n', pos);
  if (nl == std::string_view::npos) {
    next = std::string_view::npos;
    return d.substr(pos);
  }
  next = nl + 1;
  std::size_t end = nl;
  if (end > pos && d[end - 1] == '\r') --end;
  return d.substr(pos, end - pos);
}

bool parse_start_line(std::string_view line, Message& m) {
  if (line.starts_with("SIP/2.0 ")) {
    std::string_view rest = line.substr(8);
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    if (rest.size() < 3) return false;
    int code = 0;
    auto [p, ec] = std::from_chars(rest.data(), rest.data() + 3, code);
    if (ec != std::errc{} || p != rest.data() + 3 || code < 100 || code > 699) return false;
    if (rest.size() > 3 && rest[3] != ' ') return false;
    m.request = false;
    m.status = code;
    m.reason = rest.size() > 4 ? rest.substr(4) : std::string_view{};
    return true;
  }
  const std::size_t sp1 = line.find(' ');
  if (sp1 == 0 || sp1 == std::string_view::npos) return false;
  for (std::size_t i = 0; i < sp1; ++i)
    if (!is_token_char(line[i])) return false;
  const std::size_t sp2 = line.rfind(' ');
  if (sp2 <= sp1) return false;
  const std::string_view ver = line.substr(sp2 + 1);
  if (!(ver.size() == 7 && iequals(ver, "SIP/2.0"))) return false;
  m.request = true;
  m.method = line.substr(0, sp1);
  m.request_uri = trim(line.substr(sp1 + 1, sp2 - sp1 - 1));
  return !m.request_uri.empty();
}

enum class Hdr : std::uint8_t {
  kOther, kCallId, kFrom, kTo, kCseq, kContentLength, kContentType, kPai, kRpid, kUserAgent, kServer, kContact,
  kReason, kVia
};

Hdr classify(std::string_view n) {
  if (n.size() == 1) {
    switch (lower(n[0])) {
      case 'i': return Hdr::kCallId;
      case 'f': return Hdr::kFrom;
      case 't': return Hdr::kTo;
      case 'l': return Hdr::kContentLength;
      case 'c': return Hdr::kContentType;
      case 'm': return Hdr::kContact;
      case 'v': return Hdr::kVia;
      default: return Hdr::kOther;
    }
  }
  switch (n.size()) {
    case 3: return iequals(n, "Via") ? Hdr::kVia : Hdr::kOther;
    case 4:
      if (iequals(n, "From")) return Hdr::kFrom;
      if (iequals(n, "CSeq")) return Hdr::kCseq;
      return Hdr::kOther;
    case 2: return iequals(n, "To") ? Hdr::kTo : Hdr::kOther;
    case 6:
      if (iequals(n, "Server")) return Hdr::kServer;
      if (iequals(n, "Reason")) return Hdr::kReason;
      return Hdr::kOther;
    case 7:
      if (iequals(n, "Call-ID")) return Hdr::kCallId;
      if (iequals(n, "Contact")) return Hdr::kContact;
      return Hdr::kOther;
    case 10: return iequals(n, "User-Agent") ? Hdr::kUserAgent : Hdr::kOther;
    case 12: return iequals(n, "Content-Type") ? Hdr::kContentType : Hdr::kOther;
    case 14: return iequals(n, "Content-Length") ? Hdr::kContentLength : Hdr::kOther;
    case 15: return iequals(n, "Remote-Party-ID") ? Hdr::kRpid : Hdr::kOther;
    case 19: return iequals(n, "P-Asserted-Identity") ? Hdr::kPai : Hdr::kOther;
    default: return Hdr::kOther;
  }
}

/// Keeps the first value of a header; true when this one was taken (only then may a folded
/// continuation extend it: extending the kept first value would swallow the lines between).
bool set_first(std::string_view& field, std::string_view v) {
  if (!field.empty()) return false;
  field = v;
  return true;
}

}  // namespace

const char* parse_result_name(ParseResult r) {
  switch (r) {
    case ParseResult::kOk: return "ok";
    case ParseResult::kIncomplete: return "incomplete";
    case ParseResult::kBadStartLine: return "bad_start_line";
    case ParseResult::kBadHeader: return "bad_header";
    case ParseResult::kTooManyHeaders: return "too_many_headers";
    case ParseResult::kTooLarge: return "too_large";
    case ParseResult::kBadContentLength: return "bad_content_length";
  }
  return "?";
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (is_ws(s.front()) || s.front() == '\r' || s.front() == '\n')) s.remove_prefix(1);
  while (!s.empty() && (is_ws(s.back()) || s.back() == '\r' || s.back() == '\n')) s.remove_suffix(1);
  return s;
}

std::string_view param(std::string_view params, std::string_view name) {
  while (!params.empty()) {
    const std::size_t semi = params.find(';');
    std::string_view p = trim(params.substr(0, semi));
    params = semi == std::string_view::npos ? std::string_view{} : params.substr(semi + 1);
    const std::size_t eq = p.find('=');
    const std::string_view k = trim(p.substr(0, eq));
    if (!iequals(k, name)) continue;
    if (eq == std::string_view::npos) return {};
    std::string_view v = trim(p.substr(eq + 1));
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    return v;
  }
  return {};
}

NameAddr parse_name_addr(std::string_view v) {
  NameAddr na;
  v = trim(v);
  std::string_view header_params;
  if (!v.empty() && v.front() == '"') {
    // quoted display name (with \" escapes)
    std::size_t i = 1;
    while (i < v.size() && v[i] != '"') i += (v[i] == '\\' && i + 1 < v.size()) ? 2 : 1;
    na.display = v.substr(1, std::min(i, v.size()) - 1);
    v = i < v.size() ? v.substr(i + 1) : std::string_view{};
  }
  const std::size_t lt = v.find('<');
  if (lt != std::string_view::npos) {
    if (na.display.empty()) na.display = trim(v.substr(0, lt));
    const std::size_t gt = v.find('>', lt);
    na.uri = trim(v.substr(lt + 1, gt == std::string_view::npos ? std::string_view::npos : gt - lt - 1));
    header_params = gt == std::string_view::npos ? std::string_view{} : v.substr(gt + 1);
  } else {
    // addr-spec: parameters after the URI are header parameters (RFC 3261 20.10)
    const std::size_t comma = v.find(',');
    v = trim(v.substr(0, comma));
    const std::size_t semi = v.find(';');
    na.uri = trim(v.substr(0, semi));
    header_params = semi == std::string_view::npos ? std::string_view{} : v.substr(semi);
  }
  na.tag = param(header_params, "tag");
  // user and host
  std::string_view u = na.uri;
  const std::size_t colon = u.find(':');
  if (colon != std::string_view::npos) {
    const std::string_view scheme = u.substr(0, colon);
    u = u.substr(colon + 1);
    if (iequals(scheme, "tel")) {
      na.user = u.substr(0, u.find(';'));
      return na;
    }
  }
  const std::size_t at = u.find('@');
  std::string_view hostpart = u;
  if (at != std::string_view::npos) {
    na.user = u.substr(0, at);
    const std::size_t semi = na.user.find(';');  // user parameters (RFC 4694 ;npdi)
    na.user = na.user.substr(0, semi);
    const std::size_t pw = na.user.find(':');
    na.user = na.user.substr(0, pw);
    hostpart = u.substr(at + 1);
  }
  na.host = hostpart.substr(0, hostpart.find_first_of(";?>"));
  return na;
}

ParseResult parse_message(std::string_view d, Message& m, bool stream) {
  m = Message{};
  // Leading CRLFs are keep-alives on streams (RFC 5626); skip them.
  std::size_t pos = 0;
  while (pos < d.size() && (d[pos] == '\r' || d[pos] == '\n')) ++pos;
  std::size_t next = 0;
  const std::string_view start = line_at(d, pos, next);
  if (next == std::string_view::npos) {
    if (stream && d.size() - pos < 1024) return ParseResult::kIncomplete;
    return start.size() > kMaxMessage ? ParseResult::kTooLarge : ParseResult::kBadStartLine;
  }
  if (!parse_start_line(start, m)) return ParseResult::kBadStartLine;
  pos = next;
  const std::size_t head_start = pos;
  std::string_view* last = nullptr;  // the value a folded continuation line extends
  for (;;) {
    if (pos >= d.size()) return stream ? ParseResult::kIncomplete : ParseResult::kIncomplete;
    if (pos > kMaxMessage) return ParseResult::kTooLarge;
    const std::size_t line_start = pos;
    const std::string_view line = line_at(d, pos, next);
    if (next == std::string_view::npos) return ParseResult::kIncomplete;
    pos = next;
    if (line.empty()) {  // end of headers
      m.head = d.substr(head_start, line_start - head_start);
      break;
    }
    if (is_ws(line.front())) {  // folded continuation (RFC 3261 7.3.1)
      if (last != nullptr) *last = std::string_view(last->data(), line.data() + line.size() - last->data());
      continue;
    }
    if (++m.headers > kMaxHeaders) return ParseResult::kTooManyHeaders;
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) return ParseResult::kBadHeader;
    const std::string_view name = trim(line.substr(0, colon));
    if (name.empty()) return ParseResult::kBadHeader;
    for (char ch : name)
      if (!is_token_char(ch)) return ParseResult::kBadHeader;
    const std::string_view value = trim(line.substr(colon + 1));
    (void)line_start;
    last = nullptr;
    switch (classify(name)) {
      case Hdr::kCallId: if (set_first(m.call_id, value)) last = &m.call_id; break;
      case Hdr::kFrom: if (set_first(m.from, value)) last = &m.from; break;
      case Hdr::kTo: if (set_first(m.to, value)) last = &m.to; break;
      case Hdr::kPai: (void)set_first(m.pai, value); break;
      case Hdr::kRpid: (void)set_first(m.rpid, value); break;
      case Hdr::kContact: (void)set_first(m.contact, value); break;
      case Hdr::kUserAgent:
      case Hdr::kServer: (void)set_first(m.user_agent, value); break;
      case Hdr::kReason: (void)set_first(m.reason_hdr, value); break;
      case Hdr::kVia: (void)set_first(m.via, value); break;
      case Hdr::kContentType: if (set_first(m.content_type, value)) last = &m.content_type; break;
      case Hdr::kCseq: {
        const std::size_t sp = value.find_first_of(" \t");
        std::uint32_t n = 0;
        auto [p, ec] = std::from_chars(value.data(), value.data() + (sp == std::string_view::npos ? value.size() : sp), n);
        if (ec == std::errc{}) m.cseq = n;
        if (sp != std::string_view::npos) m.cseq_method = trim(value.substr(sp));
        break;
      }
      case Hdr::kContentLength: {
        std::size_t n = 0;
        auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
        if (ec != std::errc{} || p != value.data() + value.size()) return ParseResult::kBadContentLength;
        if (n > kMaxMessage) return ParseResult::kTooLarge;
        if (m.has_content_length && n != m.content_length) return ParseResult::kBadContentLength;
        m.has_content_length = true;
        m.content_length = n;
        break;
      }
      case Hdr::kOther: break;
    }
  }
  if (!m.request && m.method.empty()) m.method = m.cseq_method;
  const std::size_t avail = d.size() - pos;
  if (stream) {
    const std::size_t len = m.has_content_length ? m.content_length : 0;
    if (avail < len) return ParseResult::kIncomplete;
    m.body = d.substr(pos, len);
    m.size = pos + len;
  } else {
    std::size_t len = avail;
    if (m.has_content_length && m.content_length < avail) len = m.content_length;
    if (m.has_content_length && m.content_length > avail) m.body_truncated = true;
    m.body = d.substr(pos, len);
    m.size = pos + len;
  }
  return ParseResult::kOk;
}

bool looks_like_sip(std::string_view d) { return dataplane::decode::looks_like_sip(d); }

namespace detail {
bool next_header(std::string_view head, std::size_t& pos, std::string_view& name, std::string_view& value) {
  while (pos < head.size()) {
    std::size_t next = 0;
    const std::string_view line = line_at(head, pos, next);
    const std::size_t end = next == std::string_view::npos ? head.size() : next;
    pos = end;
    if (line.empty() || is_ws(line.front())) continue;  // continuation lines are read with their header
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    name = trim(line.substr(0, colon));
    // Folded continuation lines extend the value (as sent, line breaks included).
    std::size_t vend = line.data() + line.size() - head.data();
    while (pos < head.size() && is_ws(head[pos])) {
      std::size_t n2 = 0;
      const std::string_view cont = line_at(head, pos, n2);
      vend = cont.data() + cont.size() - head.data();
      pos = n2 == std::string_view::npos ? head.size() : n2;
    }
    const std::size_t vstart = line.data() + colon + 1 - head.data();
    value = trim(head.substr(vstart, vend - vstart));
    return true;
  }
  return false;
}
}  // namespace detail

bool header_has_token(const Message& m, std::string_view name, char compact, std::string_view token) {
  bool found = false;
  for_each_header(m, name, compact, [&](std::string_view v) {
    while (!v.empty() && !found) {
      const std::size_t comma = v.find(',');
      const std::string_view t = trim(v.substr(0, comma));
      if (iequals(t, token)) found = true;
      if (comma == std::string_view::npos) break;
      v.remove_prefix(comma + 1);
    }
  });
  return found;
}

std::string_view header_value(const Message& m, std::string_view name, char compact) {
  std::string_view out;
  bool got = false;
  for_each_header(m, name, compact, [&](std::string_view v) {
    if (!got) out = v;
    got = true;
  });
  return out;
}

std::size_t find_message_start(std::string_view d) {
  std::size_t pos = 0;
  while (pos < d.size()) {
    if (looks_like_sip(d.substr(pos))) return pos;
    const std::size_t nl = d.find('\n', pos);
    if (nl == std::string_view::npos) return std::string_view::npos;
    pos = nl + 1;
  }
  return std::string_view::npos;
}

}  // namespace callrec::control::sip
