// SIP message, name-addr, SDP and multipart parser tests. Messages are written here in the shape
// real equipment sends (RFC 3261/4566/5621 examples, SBC and PBX habits); the SIPREC samples in
// the shared test data are read at run time when present.
#include <gtest/gtest.h>

#include <deque>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "control/sip/sdp.hpp"
#include "control/sip/sip_message.hpp"

namespace callrec::control::sip {
namespace {

using dataplane::decode::IpAddr;

/// Joins lines with CRLF (the last line gets one too).
std::string crlf(std::initializer_list<std::string_view> lines) {
  std::string s;
  for (std::string_view l : lines) {
    s.append(l);
    s.append("\r\n");
  }
  return s;
}
std::string to_lf(std::string s) {
  std::string r;
  for (char ch : s)
    if (ch != '\r') r.push_back(ch);
  return r;
}
IpAddr ip(std::string_view text) {
  IpAddr a;
  EXPECT_TRUE(dataplane::decode::parse_ip(text, a)) << text;
  return a;
}
/// A view inside `outer`?
bool within(std::string_view inner, std::string_view outer) {
  return inner.empty() || (inner.data() >= outer.data() && inner.data() + inner.size() <= outer.data() + outer.size());
}

/// Keeps a temporary text alive to the end of the program: the parsers return views into it.
std::string_view keep(std::string s) {
  static std::deque<std::string> texts;
  texts.push_back(std::move(s));
  return texts.back();
}

const std::string kSdp = crlf({
    "v=0",
    "o=alice 2890844526 2890844526 IN IP4 192.0.2.10",
    "s=-",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
    "m=audio 49170 RTP/AVP 8 0 101",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=sendrecv",
});

std::string invite(std::string_view body = kSdp) {
  return crlf({
             "INVITE sip:bob@biloxi.example.com SIP/2.0",
             "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
             "Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bK1",
             "Max-Forwards: 70",
             "To: Bob <sip:bob@biloxi.example.com>",
             "From: \"Alice\" <sip:alice@atlanta.example.com>;tag=1928301774",
             "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
             "CSeq: 314159 INVITE",
             "Contact: <sip:alice@192.0.2.10:5060>",
             "P-Asserted-Identity: \"Alice A\" <sip:+15551230000@atlanta.example.com>",
             "Remote-Party-ID: <sip:+15551230000@atlanta.example.com>;party=calling",
             "User-Agent: Grandstream GXP2170 1.0.11.3",
             "Content-Type: application/sdp",
             "Content-Length: " + std::to_string(body.size()),
             "",
         }) +
         std::string(body);
}

// ---- requests and responses ----------------------------------------------------------------

TEST(SipMessage, Request) {
  const std::string msg = invite();
  Message m;
  ASSERT_EQ(parse_message(msg, m, false), ParseResult::kOk);
  EXPECT_TRUE(m.request);
  EXPECT_EQ(m.method, "INVITE");
  EXPECT_EQ(m.request_uri, "sip:bob@biloxi.example.com");
  EXPECT_EQ(m.status, 0);
  EXPECT_EQ(m.via, "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds");  // the first
  EXPECT_EQ(m.to, "Bob <sip:bob@biloxi.example.com>");
  EXPECT_EQ(m.from, "\"Alice\" <sip:alice@atlanta.example.com>;tag=1928301774");
  EXPECT_EQ(m.call_id, "a84b4c76e66710@pc33.atlanta.example.com");
  EXPECT_EQ(m.cseq, 314159u);
  EXPECT_EQ(m.cseq_method, "INVITE");
  EXPECT_EQ(m.contact, "<sip:alice@192.0.2.10:5060>");
  EXPECT_EQ(m.pai, "\"Alice A\" <sip:+15551230000@atlanta.example.com>");
  EXPECT_EQ(m.rpid, "<sip:+15551230000@atlanta.example.com>;party=calling");
  EXPECT_EQ(m.user_agent, "Grandstream GXP2170 1.0.11.3");
  EXPECT_EQ(m.content_type, "application/sdp");
  EXPECT_TRUE(m.has_content_length);
  EXPECT_EQ(m.content_length, kSdp.size());
  EXPECT_EQ(m.body, kSdp);
  EXPECT_FALSE(m.body_truncated);
  EXPECT_EQ(m.size, msg.size());
  EXPECT_EQ(m.headers, 13u);
  // Zero-copy: the views point into the input.
  EXPECT_TRUE(within(m.call_id, msg));
  EXPECT_TRUE(within(m.body, msg));
  EXPECT_EQ(m.body.data(), msg.data() + msg.size() - kSdp.size());
  // The stream framing agrees on a complete message.
  Message s;
  ASSERT_EQ(parse_message(msg, s, true), ParseResult::kOk);
  EXPECT_EQ(s.size, msg.size());
  EXPECT_EQ(s.body, kSdp);
}

TEST(SipMessage, Responses) {
  const std::string msg = crlf({
      "SIP/2.0 180 Ringing",
      "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;received=192.0.2.1",
      "To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf",
      "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
      "Call-ID: a84b4c76e66710",
      "CSeq: 314159 INVITE",
      "Server: Asterisk PBX 18.9.0",
      "Reason: Q.850;cause=16;text=\"Normal call clearing\"",
      "Content-Length: 0",
      "",
  });
  Message m;
  ASSERT_EQ(parse_message(msg, m, true), ParseResult::kOk);
  EXPECT_FALSE(m.request);
  EXPECT_EQ(m.status, 180);
  EXPECT_EQ(m.reason, "Ringing");
  EXPECT_EQ(m.method, "INVITE");  // from CSeq
  EXPECT_EQ(m.user_agent, "Asterisk PBX 18.9.0");
  EXPECT_EQ(m.reason_hdr, "Q.850;cause=16;text=\"Normal call clearing\"");
  EXPECT_EQ(param(m.reason_hdr, "cause"), "16");
  EXPECT_EQ(param(m.reason_hdr, "text"), "Normal call clearing");
  EXPECT_TRUE(m.body.empty());
  EXPECT_EQ(m.size, msg.size());

  ASSERT_EQ(parse_message("SIP/2.0 200\r\nCSeq: 2 BYE\r\n\r\n", m, true), ParseResult::kOk);
  EXPECT_EQ(m.status, 200);
  EXPECT_TRUE(m.reason.empty());
  EXPECT_EQ(m.method, "BYE");
  ASSERT_EQ(parse_message("SIP/2.0 503 Service Unavailable\r\nCSeq: 7 OPTIONS\r\n\r\n", m, false), ParseResult::kOk);
  EXPECT_EQ(m.status, 503);
  EXPECT_EQ(m.reason, "Service Unavailable");
  EXPECT_EQ(m.cseq, 7u);
}

TEST(SipMessage, BadStartLines) {
  Message m;
  for (const char* first :
       {"SIP/2.0 99 Low", "SIP/2.0 700 High", "SIP/2.0 2000 OK", "SIP/2.0 20x OK", "SIP/2.0 20", "SIP/2.0 200OK",
        "SIP/3.0 200 OK", "HTTP/1.1 200 OK", "GET / HTTP/1.1", "INVITE sip:bob@b SIP/3.0", "INVITE sip:bob@b",
        "INVITE  SIP/2.0", "INV@TE sip:bob@b SIP/2.0", " INVITE sip:bob@b SIP/2.0", "INVITE", ""}) {
    const std::string msg = std::string(first) + "\r\nCall-ID: x\r\n\r\n";
    EXPECT_EQ(parse_message(msg, m, false), ParseResult::kBadStartLine) << '"' << first << '"';
  }
  // The version is compared without regard to case; methods are any token.
  EXPECT_EQ(parse_message("MESSAGE sip:bob@b sip/2.0\r\n\r\n", m, false), ParseResult::kOk);
  EXPECT_EQ(parse_message("X-VENDOR.1 sip:bob@b SIP/2.0\r\n\r\n", m, false), ParseResult::kOk);
  EXPECT_EQ(m.method, "X-VENDOR.1");
  // A datagram with no line end at all is no message.
  EXPECT_EQ(parse_message("INVITE sip:bob@b SIP/2.0", m, false), ParseResult::kBadStartLine);
}

TEST(SipMessage, CompactFormsAndCaseInsensitiveNames) {
  const std::string body = "v=0\r\n";
  const std::string msg = crlf({
                              "BYE sip:alice@192.0.2.10 SIP/2.0",
                              "v: SIP/2.0/TCP 192.0.2.20;branch=z9hG4bKnashds7",
                              "f: <sip:bob@biloxi.example.com>;tag=a6c85cf",
                              "t: <sip:alice@atlanta.example.com>;tag=1928301774",
                              "i: 12345@biloxi",
                              "m: <sip:bob@192.0.2.20>",
                              "c: application/sdp",
                              "l: 5",
                              "cSeQ: 231 BYE",
                              "",
                          }) +
                          body;
  Message m;
  ASSERT_EQ(parse_message(msg, m, true), ParseResult::kOk);
  EXPECT_EQ(m.via, "SIP/2.0/TCP 192.0.2.20;branch=z9hG4bKnashds7");
  EXPECT_EQ(m.from, "<sip:bob@biloxi.example.com>;tag=a6c85cf");
  EXPECT_EQ(m.to, "<sip:alice@atlanta.example.com>;tag=1928301774");
  EXPECT_EQ(m.call_id, "12345@biloxi");
  EXPECT_EQ(m.contact, "<sip:bob@192.0.2.20>");
  EXPECT_EQ(m.content_type, "application/sdp");
  EXPECT_EQ(m.content_length, 5u);
  EXPECT_EQ(m.body, body);
  EXPECT_EQ(m.cseq, 231u);
  // Upper-case compact forms, odd case in long names, spaces around the colon.
  const std::string m2 = crlf({"OPTIONS sip:x@y SIP/2.0", "I: abc", "CALL-ID: ignored-second", "FROM : <sip:a@b>",
                               "content-LENGTH:0", "P-ASSERTED-IDENTITY: <sip:c@d>", ""});
  ASSERT_EQ(parse_message(m2, m, true), ParseResult::kOk);
  EXPECT_EQ(m.call_id, "abc");  // the first Call-ID wins
  EXPECT_EQ(m.from, "<sip:a@b>");
  EXPECT_EQ(m.pai, "<sip:c@d>");
  EXPECT_TRUE(m.has_content_length);
  EXPECT_EQ(m.size, m2.size());
}

TEST(SipMessage, FoldedHeaders) {
  const std::string msg = crlf({
      "INVITE sip:bob@biloxi.example.com SIP/2.0",
      "Subject: I know you're there,",
      "   pick up the phone",
      "From: \"Alice\"",
      "\t<sip:alice@atlanta.example.com>",
      "  ;tag=1928301774",
      "Call-ID: f81d4fae-7dec",
      "Content-Length: 0",
      "",
  });
  Message m;
  ASSERT_EQ(parse_message(msg, m, true), ParseResult::kOk);
  EXPECT_EQ(m.headers, 4u);  // continuation lines are not headers
  EXPECT_EQ(m.call_id, "f81d4fae-7dec");
  EXPECT_TRUE(m.from.starts_with("\"Alice\""));
  EXPECT_TRUE(m.from.ends_with(";tag=1928301774"));
  const NameAddr na = parse_name_addr(m.from);
  EXPECT_EQ(na.display, "Alice");
  EXPECT_EQ(na.uri, "sip:alice@atlanta.example.com");
  EXPECT_EQ(na.user, "alice");
  EXPECT_EQ(na.tag, "1928301774");
  EXPECT_EQ(m.size, msg.size());
}

TEST(SipMessage, FoldedDuplicateHeaderLeavesTheFirstAlone) {
  // The first From and Call-ID win; a folded second one must not run into them.
  const std::string msg = crlf({
      "INVITE sip:bob@biloxi.example.com SIP/2.0",
      "From: <sip:alice@atlanta.example.com>;tag=1",
      "Call-ID: first-id",
      "From: <sip:mallory@evil.example.com>",
      " ;tag=2",
      "Call-ID: second-id",
      "\tcontinued",
      "Content-Length: 0",
      "",
  });
  Message m;
  ASSERT_EQ(parse_message(msg, m, true), ParseResult::kOk);
  EXPECT_EQ(m.from, "<sip:alice@atlanta.example.com>;tag=1");
  EXPECT_EQ(parse_name_addr(m.from).tag, "1");
  EXPECT_EQ(m.call_id, "first-id");
  EXPECT_EQ(m.size, msg.size());
}

TEST(SipMessage, BareLineFeeds) {
  const std::string msg = to_lf(invite());
  ASSERT_EQ(msg.find('\r'), std::string::npos);
  Message m;
  ASSERT_EQ(parse_message(msg, m, false), ParseResult::kOk);
  EXPECT_EQ(m.method, "INVITE");
  EXPECT_EQ(m.call_id, "a84b4c76e66710@pc33.atlanta.example.com");
  EXPECT_EQ(m.content_length, kSdp.size());  // CRLF-counted, so the LF body is shorter
  EXPECT_TRUE(m.body_truncated);
  EXPECT_EQ(m.body, to_lf(kSdp));
  EXPECT_EQ(parse_message(msg, m, true), ParseResult::kIncomplete);
  // With a Content-Length that fits the LF body:
  const std::string lf_sdp = to_lf(kSdp);
  std::string head = to_lf(invite(""));
  head.replace(head.find("Content-Length: 0"), 17, "Content-Length: " + std::to_string(lf_sdp.size()));
  const std::string msg2 = head + lf_sdp;
  ASSERT_EQ(parse_message(msg2, m, true), ParseResult::kOk);
  EXPECT_EQ(m.body, lf_sdp);
  EXPECT_EQ(m.size, msg2.size());
  // Mixed line ends in one message.
  ASSERT_EQ(parse_message("OPTIONS sip:a@b SIP/2.0\nCall-ID: mix\r\nl: 0\n\r\n", m, true), ParseResult::kOk);
  EXPECT_EQ(m.call_id, "mix");
}

TEST(SipMessage, KeepAlivesBeforeAMessage) {
  const std::string msg = "\r\n\r\n\r\n" + invite();
  Message m;
  ASSERT_EQ(parse_message(msg, m, true), ParseResult::kOk);
  EXPECT_EQ(m.method, "INVITE");
  EXPECT_EQ(m.size, msg.size());  // the keep-alives are consumed with the message
  EXPECT_EQ(parse_message("\r\n\r\n", m, true), ParseResult::kIncomplete);
  ASSERT_EQ(parse_message("\n\nSIP/2.0 100 Trying\n\n", m, false), ParseResult::kOk);
  EXPECT_EQ(m.status, 100);
}

// ---- stream framing ------------------------------------------------------------------------

TEST(SipStream, TwoMessagesBackToBack) {
  const std::string first = invite();
  const std::string second = crlf({"ACK sip:bob@biloxi.example.com SIP/2.0", "Call-ID: second", "CSeq: 314159 ACK",
                                   "Content-Length: 0", ""});
  const std::string buf = first + second + "INVITE sip:x";  // and the start of a third
  Message m;
  ASSERT_EQ(parse_message(buf, m, true), ParseResult::kOk);
  EXPECT_EQ(m.size, first.size());
  EXPECT_EQ(m.body, kSdp);
  std::string_view rest = std::string_view(buf).substr(m.size);
  ASSERT_EQ(parse_message(rest, m, true), ParseResult::kOk);
  EXPECT_EQ(m.method, "ACK");
  EXPECT_EQ(m.call_id, "second");
  EXPECT_EQ(m.size, second.size());
  rest = rest.substr(m.size);
  EXPECT_EQ(parse_message(rest, m, true), ParseResult::kIncomplete);
  // A datagram takes everything after the headers when Content-Length is larger (it is not).
  const std::string datagram = first + second;
  ASSERT_EQ(parse_message(datagram, m, false), ParseResult::kOk);
  EXPECT_EQ(m.body, kSdp);  // cut to Content-Length
}

TEST(SipStream, EveryPrefixIsIncomplete) {
  const std::string msg = invite();
  Message m;
  for (std::size_t n = 0; n < msg.size(); ++n) {
    ASSERT_EQ(parse_message(std::string_view(msg).substr(0, n), m, true), ParseResult::kIncomplete) << n;
  }
  ASSERT_EQ(parse_message(msg, m, true), ParseResult::kOk);
  EXPECT_EQ(m.size, msg.size());
  // Delivered in pieces of 7 bytes, as a TCP stream might: one kOk when the last byte lands.
  std::string buf;
  int ok = 0;
  for (std::size_t i = 0; i < msg.size(); i += 7) {
    buf.append(msg.substr(i, 7));
    const ParseResult r = parse_message(buf, m, true);
    if (r == ParseResult::kOk) {
      ++ok;
      EXPECT_EQ(buf.size(), msg.size());
    } else {
      EXPECT_EQ(r, ParseResult::kIncomplete);
    }
  }
  EXPECT_EQ(ok, 1);
}

TEST(SipStream, MissingContentLengthMeansNoBody) {
  const std::string first = crlf({"BYE sip:alice@192.0.2.10 SIP/2.0", "Call-ID: nocl", "CSeq: 2 BYE", ""});
  const std::string second = crlf({"SIP/2.0 200 OK", "Call-ID: nocl", "CSeq: 2 BYE", "Content-Length: 0", ""});
  const std::string buf = first + second;
  Message m;
  ASSERT_EQ(parse_message(buf, m, true), ParseResult::kOk);
  EXPECT_FALSE(m.has_content_length);
  EXPECT_TRUE(m.body.empty());
  EXPECT_EQ(m.size, first.size());
  ASSERT_EQ(parse_message(std::string_view(buf).substr(m.size), m, true), ParseResult::kOk);
  EXPECT_EQ(m.status, 200);
  // On a datagram the body is the rest of the datagram.
  const std::string datagram = first + "v=0\r\n";
  ASSERT_EQ(parse_message(datagram, m, false), ParseResult::kOk);
  EXPECT_EQ(m.body, "v=0\r\n");
  EXPECT_EQ(m.size, first.size() + 5);
}

TEST(SipStream, LongStartLineWithoutEnd) {
  Message m;
  const std::string line = "INVITE sip:" + std::string(2000, 'a');
  EXPECT_EQ(parse_message(line.substr(0, 1000), m, true), ParseResult::kIncomplete);
  EXPECT_EQ(parse_message(line, m, true), ParseResult::kBadStartLine);  // no line end in 1 KiB
  EXPECT_EQ(parse_message(std::string(70000, 'A'), m, true), ParseResult::kTooLarge);
}

// ---- Content-Length and bounds -------------------------------------------------------------

std::string with_headers(std::initializer_list<std::string_view> headers, std::string_view body = "") {
  std::string s = "MESSAGE sip:bob@biloxi.example.com SIP/2.0\r\nCall-ID: cl\r\n";
  for (std::string_view h : headers) {
    s.append(h);
    s.append("\r\n");
  }
  s.append("\r\n");
  s.append(body);
  return s;
}

TEST(SipMessage, BadContentLength) {
  Message m;
  for (const char* v : {"Content-Length: abc", "Content-Length: -1", "Content-Length: 12 34", "Content-Length:",
                        "Content-Length: 0x10", "l: 5;x", "Content-Length: 99999999999999999999999"}) {
    EXPECT_EQ(parse_message(with_headers({v}, "hello"), m, false), ParseResult::kBadContentLength) << v;
    EXPECT_EQ(parse_message(with_headers({v}, "hello"), m, true), ParseResult::kBadContentLength) << v;
  }
  EXPECT_EQ(parse_message(with_headers({"Content-Length: 65536"}), m, true), ParseResult::kTooLarge);
  // Spaces around the number are allowed.
  const std::string spaced = with_headers({"Content-Length:   5  "}, "hello");
  ASSERT_EQ(parse_message(spaced, m, true), ParseResult::kOk);
  EXPECT_EQ(m.body, "hello");
}

TEST(SipMessage, DuplicateContentLength) {
  Message m;
  ASSERT_EQ(parse_message(with_headers({"Content-Length: 5", "l: 5"}, "hello"), m, true), ParseResult::kOk);
  EXPECT_EQ(m.content_length, 5u);
  EXPECT_EQ(parse_message(with_headers({"Content-Length: 5", "Content-Length: 4"}, "hello"), m, true),
            ParseResult::kBadContentLength);
  EXPECT_EQ(parse_message(with_headers({"l: 0", "Content-Length: 5"}, "hello"), m, false),
            ParseResult::kBadContentLength);
}

TEST(SipMessage, DatagramBodyCutToContentLength) {
  Message m;
  const std::string msg = with_headers({"Content-Type: text/plain", "Content-Length: 5"}, "helloGARBAGE");
  ASSERT_EQ(parse_message(msg, m, false), ParseResult::kOk);
  EXPECT_EQ(m.body, "hello");
  EXPECT_FALSE(m.body_truncated);
  EXPECT_EQ(m.size, msg.size() - 7);
  const std::string cut = with_headers({"Content-Length: 50"}, "only twelve.");
  ASSERT_EQ(parse_message(cut, m, false), ParseResult::kOk);
  EXPECT_TRUE(m.body_truncated);
  EXPECT_EQ(m.body, "only twelve.");
  EXPECT_EQ(m.size, cut.size());
  // On a stream the same bytes wait for the rest.
  EXPECT_EQ(parse_message(cut, m, true), ParseResult::kIncomplete);
}

TEST(SipMessage, TooManyHeaders) {
  auto build = [](unsigned n) {
    std::string s = "OPTIONS sip:x@y SIP/2.0\r\n";
    for (unsigned i = 0; i + 1 < n; ++i) s += "X-H" + std::to_string(i) + ": v\r\n";
    s += "Content-Length: 0\r\n\r\n";
    return s;
  };
  Message m;
  ASSERT_EQ(parse_message(build(kMaxHeaders), m, true), ParseResult::kOk);
  EXPECT_EQ(m.headers, kMaxHeaders);
  EXPECT_EQ(parse_message(build(kMaxHeaders + 1), m, true), ParseResult::kTooManyHeaders);
  EXPECT_EQ(parse_message(build(kMaxHeaders + 1), m, false), ParseResult::kTooManyHeaders);
}

TEST(SipMessage, HeadersBeyondMaxMessage) {
  std::string s = "OPTIONS sip:x@y SIP/2.0\r\n";
  for (int i = 0; i < 70; ++i) s += "X-Big: " + std::string(1000, 'b') + "\r\n";
  s += "\r\n";
  Message m;
  EXPECT_EQ(parse_message(s, m, true), ParseResult::kTooLarge);
  EXPECT_EQ(parse_message(s, m, false), ParseResult::kTooLarge);
}

TEST(SipMessage, BadHeaderLines) {
  Message m;
  for (const char* h : {"NoColonHere", ": empty name", "Bad Name: x", "Bad\x01: x", "Via\"x: y"}) {
    EXPECT_EQ(parse_message(with_headers({h}), m, false), ParseResult::kBadHeader) << h;
  }
  // A datagram cut before the empty line is reported as incomplete, never as a message.
  EXPECT_EQ(parse_message("OPTIONS sip:x@y SIP/2.0\r\nCall-ID: x\r\n", m, false), ParseResult::kIncomplete);
  EXPECT_EQ(parse_message("OPTIONS sip:x@y SIP/2.0\r\nCall-ID: x", m, false), ParseResult::kIncomplete);
}

TEST(SipMessage, ResultNames) {
  std::set<std::string> names;
  for (ParseResult r : {ParseResult::kOk, ParseResult::kIncomplete, ParseResult::kBadStartLine, ParseResult::kBadHeader,
                        ParseResult::kTooManyHeaders, ParseResult::kTooLarge, ParseResult::kBadContentLength}) {
    const std::string n = parse_result_name(r);
    EXPECT_NE(n, "?");
    EXPECT_TRUE(names.insert(n).second) << n;
  }
}

// ---- name-addr -----------------------------------------------------------------------------

TEST(SipNameAddr, QuotedDisplayWithEscapedQuote) {
  const NameAddr na = parse_name_addr(R"("Bob \"The Builder\" Smith" <sip:bob@biloxi.example.com>;tag=a6c85cf)");
  EXPECT_EQ(na.display, R"(Bob \"The Builder\" Smith)");  // zero-copy: escapes kept
  EXPECT_EQ(na.uri, "sip:bob@biloxi.example.com");
  EXPECT_EQ(na.user, "bob");
  EXPECT_EQ(na.host, "biloxi.example.com");
  EXPECT_EQ(na.tag, "a6c85cf");
  // A display name holding '<', ',' and ';' and ending in an escaped backslash.
  const NameAddr n2 = parse_name_addr(R"("A <b>, c; d \\" <sip:x@y>;tag=9)");
  EXPECT_EQ(n2.display, R"(A <b>, c; d \\)");
  EXPECT_EQ(n2.uri, "sip:x@y");
  EXPECT_EQ(n2.tag, "9");
}

TEST(SipNameAddr, UnquotedDisplayAndUriParameters) {
  const NameAddr na =
      parse_name_addr("Alice Liddell <sips:alice@atlanta.example.com:5061;transport=tls>;tag=1928301774;x=y");
  EXPECT_EQ(na.display, "Alice Liddell");
  EXPECT_EQ(na.uri, "sips:alice@atlanta.example.com:5061;transport=tls");
  EXPECT_EQ(na.user, "alice");
  EXPECT_EQ(na.host, "atlanta.example.com:5061");
  EXPECT_EQ(na.tag, "1928301774");
  // A tag inside the URI is a URI parameter, not the header's tag.
  EXPECT_EQ(parse_name_addr("<sip:a@b;tag=inside>").tag, "");
  // Empty quoted display.
  const NameAddr anon = parse_name_addr(R"("" <sip:anonymous@anonymous.invalid>;tag=hyh8)");
  EXPECT_EQ(anon.display, "");
  EXPECT_EQ(anon.user, "anonymous");
  EXPECT_EQ(anon.host, "anonymous.invalid");
  EXPECT_EQ(anon.tag, "hyh8");
}

TEST(SipNameAddr, AddrSpec) {
  const NameAddr na = parse_name_addr("  sip:carol@chicago.example.com;tag=887s  ");
  EXPECT_EQ(na.display, "");
  EXPECT_EQ(na.uri, "sip:carol@chicago.example.com");
  EXPECT_EQ(na.user, "carol");
  EXPECT_EQ(na.host, "chicago.example.com");
  EXPECT_EQ(na.tag, "887s");
  const NameAddr first = parse_name_addr("sip:a@x.example, sip:b@y.example");
  EXPECT_EQ(first.uri, "sip:a@x.example");
  EXPECT_EQ(parse_name_addr("<sip:a@x.example>, <sip:b@y.example>").user, "a");
  const NameAddr host_only = parse_name_addr("<sip:192.0.2.1:5060>");
  EXPECT_EQ(host_only.user, "");
  EXPECT_EQ(host_only.host, "192.0.2.1:5060");
  EXPECT_EQ(parse_name_addr("<sip:alice@atlanta.example.com?subject=project>").host, "atlanta.example.com");
}

TEST(SipNameAddr, TelUri) {
  const NameAddr na = parse_name_addr("<tel:+14085551234;phone-context=example.com>;tag=77");
  EXPECT_EQ(na.uri, "tel:+14085551234;phone-context=example.com");
  EXPECT_EQ(na.user, "+14085551234");
  EXPECT_EQ(na.host, "");
  EXPECT_EQ(na.tag, "77");
  EXPECT_EQ(parse_name_addr("TEL:5551234").user, "5551234");
}

TEST(SipNameAddr, UserWithPasswordOrParameters) {
  EXPECT_EQ(parse_name_addr("<sip:alice:secretword@atlanta.example.com;transport=tcp>").user, "alice");
  EXPECT_EQ(parse_name_addr("<sip:alice:secretword@atlanta.example.com;transport=tcp>").host, "atlanta.example.com");
  const NameAddr np =
      parse_name_addr("\"Carrier\" <sip:+15551234567;npdi;rn=+15559990000@carrier.example.net;user=phone>;tag=3");
  EXPECT_EQ(np.display, "Carrier");
  EXPECT_EQ(np.user, "+15551234567");
  EXPECT_EQ(np.host, "carrier.example.net");
  EXPECT_EQ(np.tag, "3");
}

TEST(SipNameAddr, MalformedDoesNotEscape) {
  for (std::string_view v : {"", "\"", "\"unterminated <sip:x@y>", "<", ">", "<sip:", "sip:", "@", "\"\\", ";tag=",
                             "<sip:a@b", "\"x\"<", "::::", "<<>>;;;tag=="}) {
    const NameAddr na = parse_name_addr(v);
    EXPECT_TRUE(within(na.display, v)) << v;
    EXPECT_TRUE(within(na.uri, v)) << v;
    EXPECT_TRUE(within(na.user, v)) << v;
    EXPECT_TRUE(within(na.host, v)) << v;
    EXPECT_TRUE(within(na.tag, v)) << v;
  }
  EXPECT_EQ(parse_name_addr("<sip:a@b").uri, "sip:a@b");
}

TEST(SipParams, ParamAndTrimAndIequals) {
  EXPECT_EQ(param(";tag=abc;lr", "tag"), "abc");
  EXPECT_EQ(param(" ; TAG = abc ", "tag"), "abc");
  EXPECT_EQ(param("boundary=\"a b\"", "boundary"), "a b");
  EXPECT_EQ(param("a=1;b=2", "c"), "");
  EXPECT_EQ(param("lr;a=1", "lr"), "");
  EXPECT_EQ(param("", "x"), "");
  EXPECT_EQ(trim(" \t x y \r\n"), "x y");
  EXPECT_EQ(trim(" \r\n"), "");
  EXPECT_TRUE(iequals("Content-Length", "content-length"));
  EXPECT_FALSE(iequals("Content-Length", "content-lengt"));
  EXPECT_FALSE(iequals("a", "b"));
}

// ---- recognising SIP -----------------------------------------------------------------------

TEST(SipDetect, LooksLikeSip) {
  EXPECT_TRUE(looks_like_sip(invite()));
  EXPECT_TRUE(looks_like_sip("SIP/2.0 200 OK\r\n"));
  // A request line is recognised once its line end is there (the version closes the line).
  EXPECT_FALSE(looks_like_sip("OPTIONS sip:ping@192.0.2.1 SIP/2.0"));
  EXPECT_TRUE(looks_like_sip("OPTIONS sip:ping@192.0.2.1 SIP/2.0\n"));
  EXPECT_FALSE(looks_like_sip("OPTIONS sip:ping@192.0.2.1 SIP/2.0 trailing\r\n"));
  EXPECT_FALSE(looks_like_sip("OPTIONS sip:" + std::string(2100, 'a') + " SIP/2.0\r\n"));  // 2 KiB looked at
  EXPECT_TRUE(looks_like_sip(to_lf(invite())));
  EXPECT_TRUE(looks_like_sip("NOTIFY sip:x@y sip/2.0\r\n"));
  EXPECT_FALSE(looks_like_sip("SIP/2.0 700 Nope\r\n"));
  EXPECT_FALSE(looks_like_sip("SIP/2.0 1"));  // too short
  EXPECT_FALSE(looks_like_sip("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"));
  EXPECT_FALSE(looks_like_sip("HTTP/1.1 200 OK\r\n\r\n"));
  EXPECT_FALSE(looks_like_sip("invite sip:x@y SIP/2.0\r\n"));
  EXPECT_FALSE(looks_like_sip("INVITE sip:x@y\r\nVia: SIP/2.0/UDP h\r\n SIP/2.0"));
  EXPECT_FALSE(looks_like_sip("AB sip:x@y SIP/2.0\r\n"));  // methods are at least 3 letters
  EXPECT_FALSE(looks_like_sip(std::string(40, 'A') + " sip:x SIP/2.0\r\n"));
  // An RTP packet (V=2, PT 8, PCMA silence) and a STUN binding request.
  const unsigned char rtp[] = {0x80, 0x08, 0x12, 0x34, 0x00, 0x00, 0x01, 0x40, 0xDE, 0xAD, 0xBE, 0xEF,
                               0xD5, 0xD5, 0xD5, 0xD5, 0xD5, 0xD5, 0xD5, 0xD5, 0xD5, 0xD5};
  EXPECT_FALSE(looks_like_sip(std::string_view(reinterpret_cast<const char*>(rtp), sizeof rtp)));
  const unsigned char stun[] = {0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  EXPECT_FALSE(looks_like_sip(std::string_view(reinterpret_cast<const char*>(stun), sizeof stun)));
  EXPECT_FALSE(looks_like_sip(std::string(100, '\0')));
  EXPECT_FALSE(looks_like_sip(""));
  EXPECT_FALSE(looks_like_sip("\r\n\r\n\r\n\r\n\r\n\r\n"));
}

TEST(SipDetect, FindMessageStart) {
  const std::string msg = invite();
  EXPECT_EQ(find_message_start(msg), 0u);
  // The tail of a message whose head was lost, then the next message.
  const std::string tail = "a=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n";
  EXPECT_EQ(find_message_start(tail + msg), tail.size());
  // A start line only counts at the start of a line.
  const std::string mid = "xx INVITE sip:a@b SIP/2.0\r\n";
  EXPECT_EQ(find_message_start(mid + msg), mid.size());
  EXPECT_EQ(find_message_start(std::string("garbage\nSIP/2.0 486 Busy Here\r\n")), 8u);
  EXPECT_EQ(find_message_start(kSdp), std::string_view::npos);
  EXPECT_EQ(find_message_start(""), std::string_view::npos);
  EXPECT_EQ(find_message_start("no line end at all"), std::string_view::npos);
  // Resynchronise a stream and parse from there.
  const std::string buf = tail + msg;
  Message m;
  ASSERT_EQ(parse_message(std::string_view(buf).substr(find_message_start(buf)), m, true), ParseResult::kOk);
  EXPECT_EQ(m.method, "INVITE");
}

// ---- SDP -----------------------------------------------------------------------------------

TEST(Sdp, SessionAndMediaConnection) {
  const std::string sdp = crlf({
      "v=0",
      "o=- 20518 0 IN IP4 203.0.113.1",
      "s=SIPREC",
      "c=IN IP4 203.0.113.1",
      "t=0 0",
      "m=audio 54400 RTP/SAVP 0 96",
      "c=IN IP4 198.51.100.5",
      "a=rtpmap:96 opus/48000/2",
      "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:32",
      "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32",
      "a=ptime:30",
      "a=label:leg-a",
      "m=video 54402 RTP/AVP 96",
      "a=rtpmap:96 H264/90000",
      "m=audio 54404/2 RTP/AVP 8",
      "c=IN IP6 2001:db8::5",
      "a=rtcp:53021 IN IP4 126.16.64.4",
      "a=rtcp-mux",
  });
  Sdp s;
  ASSERT_TRUE(parse_sdp(sdp, s));
  EXPECT_TRUE(s.session_addr == ip("203.0.113.1"));
  ASSERT_EQ(s.media.size(), 3u);
  EXPECT_EQ(s.dropped_media, 0u);
  const SdpMedia& a = s.media[0];
  EXPECT_EQ(a.media, "audio");
  EXPECT_EQ(a.port, 54400);
  EXPECT_EQ(a.proto, "RTP/SAVP");
  EXPECT_EQ(a.formats, "0 96");
  EXPECT_TRUE(a.addr == ip("198.51.100.5"));
  EXPECT_EQ(a.first_pt(), 0);
  ASSERT_EQ(a.rtpmaps.size(), 1u);
  EXPECT_EQ(a.rtpmaps[0].pt, 96);
  EXPECT_EQ(a.rtpmaps[0].encoding, "opus");
  EXPECT_EQ(a.rtpmaps[0].clock, 48000u);
  EXPECT_EQ(a.rtpmaps[0].channels, 2);
  ASSERT_EQ(a.crypto.size(), 2u);
  EXPECT_TRUE(a.crypto[0].starts_with("1 AES_CM_128_HMAC_SHA1_80 inline:"));
  EXPECT_TRUE(a.crypto[1].starts_with("2 AES_CM_128_HMAC_SHA1_32"));
  EXPECT_EQ(a.ptime, 30u);
  EXPECT_EQ(a.label, "leg-a");
  EXPECT_EQ(a.rtcp_port, 0);
  EXPECT_FALSE(a.rtcp_mux);
  EXPECT_TRUE(a.receives());
  const SdpMedia& v = s.media[1];
  EXPECT_EQ(v.media, "video");
  EXPECT_TRUE(v.addr == ip("203.0.113.1"));  // the session's c=
  EXPECT_EQ(v.label, "");
  EXPECT_EQ(v.ptime, 0u);
  const SdpMedia& b = s.media[2];
  EXPECT_EQ(b.port, 54404);  // port/count
  EXPECT_TRUE(b.addr == ip("2001:db8::5"));
  EXPECT_EQ(b.rtcp_port, 53021);
  EXPECT_TRUE(b.rtcp_addr == ip("126.16.64.4"));
  EXPECT_TRUE(b.rtcp_mux);
  EXPECT_EQ(s.first_audio(), &s.media[0]);
  // Views into the body.
  EXPECT_TRUE(within(a.label, sdp));
  EXPECT_TRUE(within(a.rtpmaps[0].encoding, sdp));
}

TEST(Sdp, ConnectionAfterTheMediaAndNoneAtAll) {
  Sdp s;
  // A c= after an m= is that media's; an m-line with none, and no session c=, has no address.
  ASSERT_TRUE(parse_sdp("v=0\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 192.0.2.9\r\nm=audio 4002 RTP/AVP 0\r\n", s));
  ASSERT_EQ(s.media.size(), 2u);
  EXPECT_TRUE(s.media[0].addr == ip("192.0.2.9"));  // c= after an m= belongs to that m=
  EXPECT_EQ(s.media[1].addr.family, 0);
  EXPECT_FALSE(s.media[1].receives());  // nowhere to send
  ASSERT_TRUE(parse_sdp("v=0\r\nc=IN IP4 224.2.1.1/127/3\r\nm=audio 5000 RTP/AVP 0\r\n", s));
  EXPECT_TRUE(s.media[0].addr == ip("224.2.1.1"));  // TTL and count ignored
  ASSERT_TRUE(parse_sdp("v=0\r\nc=IN IP4 not-an-address\r\nm=audio 5000 RTP/AVP 0\r\n", s));
  EXPECT_EQ(s.media[0].addr.family, 0);
}

TEST(Sdp, Directions) {
  const std::string sdp = crlf({
      "v=0",
      "o=- 1 1 IN IP4 192.0.2.1",
      "s=-",
      "c=IN IP4 192.0.2.1",
      "t=0 0",
      "a=sendonly",
      "m=audio 4000 RTP/AVP 0",
      "m=audio 4002 RTP/AVP 0",
      "a=recvonly",
      "m=audio 4004 RTP/AVP 0",
      "a=inactive",
      "m=audio 4006 RTP/AVP 0",
      "a=sendrecv",
  });
  Sdp s;
  ASSERT_TRUE(parse_sdp(sdp, s));
  EXPECT_EQ(s.session_dir, Direction::kSendOnly);
  ASSERT_EQ(s.media.size(), 4u);
  EXPECT_EQ(s.media[0].dir, Direction::kSendOnly);
  EXPECT_FALSE(s.media[0].dir_set);
  EXPECT_FALSE(s.media[0].receives());
  EXPECT_EQ(s.media[1].dir, Direction::kRecvOnly);
  EXPECT_TRUE(s.media[1].dir_set);
  EXPECT_TRUE(s.media[1].receives());
  EXPECT_EQ(s.media[2].dir, Direction::kInactive);
  EXPECT_FALSE(s.media[2].receives());
  EXPECT_EQ(s.media[3].dir, Direction::kSendRecv);
  EXPECT_TRUE(s.media[3].receives());
  EXPECT_STREQ(direction_name(Direction::kSendRecv), "sendrecv");
  EXPECT_STREQ(direction_name(Direction::kSendOnly), "sendonly");
  EXPECT_STREQ(direction_name(Direction::kRecvOnly), "recvonly");
  EXPECT_STREQ(direction_name(Direction::kInactive), "inactive");
}

TEST(Sdp, HeldAndDisabledMedia) {
  Sdp s;
  ASSERT_TRUE(parse_sdp(keep(crlf({"v=0", "c=IN IP4 0.0.0.0", "m=audio 4000 RTP/AVP 0"})), s));
  EXPECT_TRUE(s.media[0].addr.is_unspecified());
  EXPECT_FALSE(s.media[0].receives());  // RFC 2543 hold
  ASSERT_TRUE(parse_sdp(keep(crlf({"v=0", "c=IN IP6 ::", "m=audio 4000 RTP/AVP 0"})), s));
  EXPECT_FALSE(s.media[0].receives());
  ASSERT_TRUE(parse_sdp(keep(crlf({"v=0", "c=IN IP4 192.0.2.1", "m=audio 0 RTP/AVP 0", "m=audio 4000 RTP/AVP 8"})), s));
  EXPECT_EQ(s.media[0].port, 0);
  EXPECT_FALSE(s.media[0].receives());  // rejected stream
  EXPECT_TRUE(s.media[1].receives());
  EXPECT_EQ(s.first_audio(), &s.media[1]);
  ASSERT_TRUE(parse_sdp(keep(crlf({"v=0", "c=IN IP4 192.0.2.1", "m=audio 0 RTP/AVP 0", "m=video 4000 RTP/AVP 96"})), s));
  EXPECT_EQ(s.first_audio(), nullptr);
  ASSERT_TRUE(parse_sdp(keep(crlf({"v=0", "c=IN IP4 192.0.2.1", "m=audio 70000 RTP/AVP 0"})), s));
  EXPECT_EQ(s.media[0].port, 0);  // out of range: not a port
}

TEST(Sdp, RtpmapsAndStaticPayloads) {
  const std::string sdp = crlf({
      "v=0",
      "c=IN IP4 192.0.2.1",
      "m=audio 4000 RTP/AVP 18 8 101 13 120",
      "a=rtpmap:101 telephone-event/8000",
      "a=rtpmap:8 PCMA/8000/1",
      "a=rtpmap:200 bogus/8000",
      "a=rtpmap:xx bogus/8000",
      "a=rtpmap:120",
      "a=rtpmap:121 L16/16000/300",
      "a=ptime:0",
  });
  Sdp s;
  ASSERT_TRUE(parse_sdp(sdp, s));
  const SdpMedia& m = s.media[0];
  EXPECT_EQ(m.first_pt(), 18);
  ASSERT_EQ(m.rtpmaps.size(), 3u);  // 101, 8, 121; the malformed ones are skipped
  RtpMap r;
  ASSERT_TRUE(m.lookup(101, r));
  EXPECT_EQ(r.encoding, "telephone-event");
  EXPECT_EQ(r.clock, 8000u);
  EXPECT_EQ(r.channels, 1);
  ASSERT_TRUE(m.lookup(18, r));  // static, RFC 3551
  EXPECT_EQ(r.encoding, "G729");
  EXPECT_EQ(r.clock, 8000u);
  ASSERT_TRUE(m.lookup(0, r));
  EXPECT_EQ(r.encoding, "PCMU");
  ASSERT_TRUE(m.lookup(9, r));
  EXPECT_EQ(r.encoding, "G722");
  EXPECT_EQ(r.clock, 8000u);  // RFC 3551's (wrong but fixed) clock for G.722
  ASSERT_TRUE(m.lookup(121, r));
  EXPECT_EQ(r.clock, 16000u);
  EXPECT_EQ(r.channels, 1);  // 300 channels is not a channel count
  EXPECT_FALSE(m.lookup(120, r));
  EXPECT_FALSE(m.lookup(96, r));
  EXPECT_FALSE(m.lookup(2, r));
  EXPECT_EQ(m.ptime, 0u);
  SdpMedia empty;
  EXPECT_EQ(empty.first_pt(), -1);
  empty.formats = "webrtc-datachannel";
  EXPECT_EQ(empty.first_pt(), -1);
  empty.formats = "200 0";
  EXPECT_EQ(empty.first_pt(), -1);
}

TEST(Sdp, RtcpForms) {
  Sdp s;
  ASSERT_TRUE(parse_sdp(keep(crlf({"v=0", "c=IN IP4 192.0.2.1", "m=audio 4000 RTP/AVP 0", "a=rtcp:4009",
                              "m=audio 4010 RTP/AVP 0", "a=rtcp:4011 IN IP6 2001:db8::9"})),
                        s));
  EXPECT_EQ(s.media[0].rtcp_port, 4009);
  EXPECT_EQ(s.media[0].rtcp_addr.family, 0);
  EXPECT_EQ(s.media[1].rtcp_port, 4011);
  EXPECT_TRUE(s.media[1].rtcp_addr == ip("2001:db8::9"));
}

TEST(Sdp, MoreThanMaxMedia) {
  std::string sdp = "v=0\r\nc=IN IP4 192.0.2.1\r\n";
  const unsigned n = kMaxMedia + 5;
  for (unsigned i = 0; i < n; ++i) {
    sdp += "m=audio " + std::to_string(10000 + 2 * i) + " RTP/AVP 0\r\n";
    sdp += "a=label:" + std::to_string(i) + "\r\n";
    sdp += "c=IN IP4 192.0.2." + std::to_string(i % 250 + 2) + "\r\n";
  }
  Sdp s;
  ASSERT_TRUE(parse_sdp(sdp, s));
  ASSERT_EQ(s.media.size(), kMaxMedia);
  EXPECT_EQ(s.dropped_media, 5u);
  // The attributes of dropped m-lines land nowhere: not on the last kept one, not on the session.
  EXPECT_EQ(s.media.back().label, std::to_string(kMaxMedia - 1));
  EXPECT_TRUE(s.media.back().addr == ip("192.0.2." + std::to_string((kMaxMedia - 1) % 250 + 2)));
  EXPECT_TRUE(s.session_addr == ip("192.0.2.1"));
}

TEST(Sdp, CrlfAndLfGiveTheSameResult) {
  Sdp a, b;
  ASSERT_TRUE(parse_sdp(kSdp, a));
  ASSERT_TRUE(parse_sdp(keep(to_lf(kSdp)), b));
  ASSERT_EQ(a.media.size(), 1u);
  ASSERT_EQ(b.media.size(), 1u);
  EXPECT_EQ(a.media[0].port, b.media[0].port);
  EXPECT_EQ(a.media[0].formats, b.media[0].formats);
  EXPECT_EQ(a.media[0].formats, "8 0 101");
  EXPECT_TRUE(a.media[0].addr == b.media[0].addr);
  EXPECT_EQ(a.media[0].ptime, 20u);
  EXPECT_EQ(b.media[0].ptime, 20u);
  ASSERT_EQ(b.media[0].rtpmaps.size(), 3u);
  EXPECT_EQ(b.media[0].rtpmaps[2].encoding, "telephone-event");
  // No line end after the last line.
  ASSERT_TRUE(parse_sdp("v=0\nc=IN IP4 192.0.2.1\nm=audio 1234 RTP/AVP 0\na=ptime:40", b));
  EXPECT_EQ(b.media[0].ptime, 40u);
}

TEST(Sdp, NotSdp) {
  Sdp s;
  EXPECT_FALSE(parse_sdp("", s));
  EXPECT_FALSE(parse_sdp("\r\n\r\n", s));
  EXPECT_FALSE(parse_sdp("o=- 1 1 IN IP4 192.0.2.1\r\nv=0\r\n", s));
  EXPECT_FALSE(parse_sdp("<?xml version=\"1.0\"?>", s));
  EXPECT_TRUE(parse_sdp("\r\n v=0\r\n", s));  // leading blank lines tolerated
  EXPECT_TRUE(s.media.empty());
  // Garbage lines and a malformed m-line are skipped, not fatal.
  ASSERT_TRUE(parse_sdp("v=0\r\nthis is not sdp\r\n=\r\nm=audio\r\nm=\r\nm=audio 99\r\n", s));
  ASSERT_EQ(s.media.size(), 3u);
  EXPECT_EQ(s.media[0].port, 0);
  EXPECT_EQ(s.media[2].port, 99);
  EXPECT_EQ(s.media[2].proto, "");
}

// ---- multipart -----------------------------------------------------------------------------

const std::string kMetadata =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<recording xmlns='urn:ietf:params:xml:ns:recording:1'>\r\n"
    "<datamode>complete</datamode>\r\n</recording>";

std::string siprec_body(std::string_view boundary) {
  const std::string b(boundary);
  return "--" + b + "\r\nContent-Type: application/sdp\r\n\r\n" + kSdp + "\r\n--" + b +
         "\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n" + kMetadata +
         "\r\n--" + b + "--\r\n";
}

TEST(Multipart, QuotedAndUnquotedBoundary) {
  for (const char* ct : {"multipart/mixed;boundary=\"unique-boundary-1\"", "multipart/mixed; boundary=unique-boundary-1",
                         "Multipart/Mixed ; charset=utf-8 ; BOUNDARY = unique-boundary-1"}) {
    SCOPED_TRACE(ct);
    const std::string body = siprec_body("unique-boundary-1");
    std::vector<BodyPart> parts;
    ASSERT_TRUE(split_multipart(ct, body, parts));
    ASSERT_EQ(parts.size(), 2u);
    EXPECT_EQ(parts[0].content_type, "application/sdp");
    EXPECT_EQ(parts[0].body, kSdp);
    EXPECT_EQ(parts[0].content_disposition, "");
    EXPECT_EQ(parts[1].content_type, "application/rs-metadata+xml");
    EXPECT_EQ(parts[1].content_disposition, "recording-session");
    EXPECT_EQ(parts[1].body, kMetadata);
    EXPECT_TRUE(within(parts[1].body, body));
    EXPECT_EQ(find_sdp(ct, body), kSdp);
  }
}

TEST(Multipart, LineFeedsOnly) {
  const std::string body = to_lf(siprec_body("OSS-unique-boundary-42"));
  std::vector<BodyPart> parts;
  ASSERT_TRUE(split_multipart("multipart/mixed;boundary=OSS-unique-boundary-42", body, parts));
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].body, to_lf(kSdp));
  EXPECT_EQ(parts[1].body, to_lf(kMetadata));
  Sdp s;
  ASSERT_TRUE(parse_sdp(find_sdp("multipart/mixed;boundary=OSS-unique-boundary-42", body), s));
  EXPECT_EQ(s.media[0].port, 49170);
}

TEST(Multipart, BoundaryFromTheBody) {
  // The boundary parameter is missing (a mangled Content-Type), the body starts with --token.
  const std::string body = "\r\n" + siprec_body("2CD2A2E9");
  std::vector<BodyPart> parts;
  ASSERT_TRUE(split_multipart("multipart/mixed", body, parts));
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].body, kSdp);
  EXPECT_EQ(find_sdp("multipart/mixed", body), kSdp);
  EXPECT_FALSE(split_multipart("multipart/mixed", "v=0\r\n", parts));
  EXPECT_FALSE(split_multipart("multipart/mixed", "--\r\nx", parts));
}

TEST(Multipart, SdpAmongThreeParts) {
  const std::string body =
      "This is the preamble.\r\n"
      "--b1\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n" +
      kMetadata +
      "\r\n--b1\r\nContent-Type: application/sdp; charset=utf-8\r\nContent-Length: 9999\r\n\r\n" + kSdp +
      "\r\n--b1\r\nContent-Type: application/isup;version=itu-t92+\r\nContent-Disposition: signal;handling=optional\r\n\r\n"
      "\x01\x10\x60\x01\r\n--b1--\r\nepilogue\r\n";
  std::vector<BodyPart> parts;
  ASSERT_TRUE(split_multipart("multipart/mixed;boundary=b1", body, parts));
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0].content_type, "application/rs-metadata+xml");
  EXPECT_EQ(parts[1].content_type, "application/sdp; charset=utf-8");
  EXPECT_EQ(parts[2].content_type, "application/isup;version=itu-t92+");
  EXPECT_EQ(parts[2].content_disposition, "signal;handling=optional");
  EXPECT_EQ(parts[2].body, "\x01\x10\x60\x01");
  EXPECT_EQ(find_sdp("multipart/mixed;boundary=b1", body), kSdp);
  // The SDP part without a Content-Type is still found by its v= line.
  std::string untyped = body;
  const std::string typed_line = "Content-Type: application/sdp; charset=utf-8\r\n";
  untyped.replace(untyped.find(typed_line), typed_line.size(), "");
  EXPECT_EQ(find_sdp("multipart/mixed;boundary=b1", untyped), kSdp);
}

TEST(Multipart, PartsWithoutHeadersAndBound) {
  std::vector<BodyPart> parts;
  ASSERT_TRUE(split_multipart("multipart/alternative;boundary=x", "--x\r\n\r\nplain\r\n--x--", parts));
  ASSERT_EQ(parts.size(), 1u);
  EXPECT_EQ(parts[0].content_type, "");
  EXPECT_EQ(parts[0].body, "plain");
  // A last part without the close delimiter runs to the end.
  ASSERT_TRUE(split_multipart("multipart/mixed;boundary=x", "--x\r\nc: text/plain\r\n\r\nopen ended", parts));
  EXPECT_EQ(parts[0].content_type, "text/plain");
  EXPECT_EQ(parts[0].body, "open ended");
  // At most 16 parts.
  std::string many;
  for (int i = 0; i < 20; ++i) many += "--q\r\nContent-Type: text/plain\r\n\r\npart" + std::to_string(i) + "\r\n";
  many += "--q--\r\n";
  ASSERT_TRUE(split_multipart("multipart/mixed;boundary=q", many, parts));
  EXPECT_EQ(parts.size(), 16u);
  EXPECT_EQ(parts[15].body, "part15");
}

TEST(Multipart, NotMultipart) {
  std::vector<BodyPart> parts;
  EXPECT_FALSE(split_multipart("application/sdp", kSdp, parts));
  EXPECT_FALSE(split_multipart("", kSdp, parts));
  EXPECT_FALSE(split_multipart("multipart/mixed;boundary=zz", "no delimiter here", parts));
  EXPECT_TRUE(parts.empty());
  EXPECT_EQ(find_sdp("application/sdp", kSdp), kSdp);
  EXPECT_EQ(find_sdp("Application/SDP; charset=utf-8", kSdp), kSdp);
  EXPECT_EQ(find_sdp("", "\r\n" + kSdp), "\r\n" + kSdp);  // no Content-Type, but it is SDP
  EXPECT_EQ(find_sdp("", "hello"), "");
  EXPECT_EQ(find_sdp("application/sdp", "<xml/>"), "");
  EXPECT_EQ(find_sdp("text/plain", kSdp), "");
  EXPECT_EQ(find_sdp("multipart/mixed;boundary=b", "--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--"), "");
}

TEST(SipEndToEnd, InviteWithMultipartBody) {
  const std::string body = siprec_body("foobar");
  std::string msg = invite(body);
  msg.replace(msg.find("Content-Type: application/sdp"), 29, "Content-Type: multipart/mixed;boundary=foobar");
  Message m;
  ASSERT_EQ(parse_message(msg, m, true), ParseResult::kOk);
  EXPECT_EQ(m.body, body);
  const std::string_view sdp = find_sdp(m.content_type, m.body);
  EXPECT_EQ(sdp, kSdp);
  Sdp s;
  ASSERT_TRUE(parse_sdp(sdp, s));
  ASSERT_NE(s.first_audio(), nullptr);
  EXPECT_EQ(s.first_audio()->port, 49170);
  EXPECT_TRUE(s.first_audio()->addr == ip("192.0.2.10"));
}

// ---- the shared SIPREC samples (third-party, read in place) --------------------------------

std::filesystem::path shared_dir() { return std::filesystem::path(CALLREC_SHARED_TESTDATA_DIR) / "siprec"; }

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(SipSharedSamples, OfferBodies) {
  if (!std::filesystem::is_directory(shared_dir()))
    GTEST_SKIP() << "shared SIPREC samples not found at " << shared_dir() << " (CALLREC_SHARED_TESTDATA_DIR)";
  unsigned files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(shared_dir())) {
    const std::string name = entry.path().filename().string();
    if (name.find("offer-body") == std::string::npos || !name.ends_with(".txt")) continue;
    SCOPED_TRACE(name);
    ++files;
    const std::string body = slurp(entry.path());
    // The bodies carry no Content-Type: the boundary comes from their first delimiter line.
    const std::string_view sdp = find_sdp("multipart/mixed", body);
    ASSERT_FALSE(sdp.empty());
    Sdp s;
    ASSERT_TRUE(parse_sdp(sdp, s));
    std::size_t audio_lines = 0;
    for (std::size_t p = body.find("\nm=audio "); p != std::string::npos; p = body.find("\nm=audio ", p + 1))
      ++audio_lines;
    std::size_t audio = 0;
    for (const SdpMedia& m : s.media) audio += m.media == "audio" ? 1 : 0;
    EXPECT_EQ(audio, audio_lines);
    ASSERT_NE(s.first_audio(), nullptr);
    EXPECT_NE(s.first_audio()->port, 0);
    // (No address check: some samples are anonymised, "c=IN IP4 X.X.X.X", or carry no c=.)
  }
  EXPECT_GT(files, 0u);
}

TEST(SipSharedSamples, FullInvite) {
  const auto path = shared_dir() / "siprec-msg-intrado-viper-full-invite.txt";
  if (!std::filesystem::exists(path))
    GTEST_SKIP() << "shared SIPREC sample not found: " << path << " (CALLREC_SHARED_TESTDATA_DIR)";
  const std::string msg = slurp(path);
  Message m;
  ASSERT_EQ(parse_message(msg, m, false), ParseResult::kOk);
  EXPECT_EQ(m.method, "INVITE");
  EXPECT_EQ(m.call_id, "6c953981285cde0446619ca30087d35a@10.106.2.10:5060");
  EXPECT_EQ(m.user_agent, "VIPER");
  EXPECT_EQ(m.cseq, 102u);
  const NameAddr from = parse_name_addr(m.from);
  EXPECT_EQ(from.display, "NOCALLERID");
  EXPECT_EQ(from.user, "NOCALLERID");
  EXPECT_EQ(from.host, "10.106.2.10");
  EXPECT_EQ(from.tag, "as13e1f4e1");
  EXPECT_EQ(parse_name_addr(m.to).host, "20.107.248.114:5060");
  EXPECT_TRUE(m.content_type.starts_with("multipart/mixed"));
  Sdp s;
  ASSERT_TRUE(parse_sdp(find_sdp(m.content_type, m.body), s));
  ASSERT_NE(s.first_audio(), nullptr);
  EXPECT_EQ(s.first_audio()->port, 11854);
  EXPECT_EQ(s.first_audio()->dir, Direction::kSendOnly);
  EXPECT_EQ(s.first_audio()->label, "1");
  EXPECT_TRUE(s.first_audio()->addr == ip("10.106.2.10"));
}

}  // namespace
}  // namespace callrec::control::sip
