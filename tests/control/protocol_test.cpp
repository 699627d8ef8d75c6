// Wire codec of the control protocol: the seed's messages, percent-encoding, typed validation
// and stream framing.
#include "control/protocol.hpp"

#include <gtest/gtest.h>

#include <cstddef>
#include <string>
#include <vector>

namespace callrec::control {
namespace {

using namespace std::string_literals;

// The seed's section 3.2 request, filled in the way a phone fills it.
constexpr std::string_view kStart =
    "cmd=RecordStartRequest&id=1804289383&device=00:0B:82:1A:2B:3C&remote_number=13800138000&"
    "remote_name=Alice&local_number=8001&local_name=Bob&dir=in&codec=PCMA";

std::vector<std::string> drain(FrameDecoder& d) {
  std::vector<std::string> out;
  while (auto m = d.next()) out.push_back(*m);
  return out;
}

Message must_parse(std::string_view line) {
  auto m = parse_message(line);
  EXPECT_TRUE(m.ok()) << line << ": " << (m.ok() ? "" : m.error().detail);
  return m.ok() ? *m : Message{};
}

// ---- the seed's messages ---------------------------------------------------------------------

TEST(ProtocolSpec, StartRequestAsThePhoneSendsIt) {
  const Message m = must_parse(kStart);
  EXPECT_EQ(m.cmd, "RecordStartRequest");
  ASSERT_EQ(m.fields.size(), 8u);
  EXPECT_EQ(m.fields[0], (Field{"id", "1804289383"}));
  EXPECT_EQ(m.fields[7], (Field{"codec", "PCMA"}));
  EXPECT_EQ(command_of(m.cmd), Command::kStartRequest);

  const auto r = parse_start_request(m);
  ASSERT_TRUE(r.ok()) << r.error().detail;
  EXPECT_EQ(r->id, "1804289383");
  EXPECT_EQ(r->device, "00:0b:82:1a:2b:3c");
  EXPECT_EQ(r->remote_number, "13800138000");
  EXPECT_EQ(r->remote_name, "Alice");
  EXPECT_EQ(r->local_number, "8001");
  EXPECT_EQ(r->local_name, "Bob");
  EXPECT_EQ(r->dir, Direction::kIn);
  EXPECT_EQ(r->codec, fileio::Codec::kPcma);
  EXPECT_TRUE(r->extras.empty());
}

TEST(ProtocolSpec, SeedTemplateLineVerbatimIsWellFormedButHasABadDir) {
  // The seed's template, placeholders and all: it parses, and the typed check names the field.
  const auto m = parse_message(
      "cmd=RecordStartRequest&id=xxx&device=xxx&remote_number=xxx&remote_name=xxx&local_number=xxx&"
      "local_name=xxx&dir=in|out&codec=xxx");
  ASSERT_TRUE(m.ok());
  const auto r = parse_start_request(*m);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().reason, reason::kBadDir);
}

TEST(ProtocolSpec, StartResponseSuccessExactBytes) {
  StartResponse r;
  r.id = "1804289383";
  r.success = true;
  r.server = "192.0.2.10";
  r.port = 40000;
  EXPECT_EQ(format_start_response(r),
            "cmd=RecordStartResponse&id=1804289383&result=success&reason=&server=192.0.2.10&port=40000\r\n");
}

TEST(ProtocolSpec, StartResponseFailedCarriesReasonAndEveryKeyInSeedOrder) {
  StartResponse r;
  r.id = "7";
  r.success = false;
  r.reason = std::string(reason::kNoPort);
  r.server = "ignored";
  r.port = 1234;
  EXPECT_EQ(format_start_response(r), "cmd=RecordStartResponse&id=7&result=failed&reason=no_port&server=&port=\r\n");
}

TEST(ProtocolSpec, StopRequestWithOnlyCmdAndId) {
  const auto r = parse_stop_request(must_parse("cmd=RecordStopRequest&id=1804289383"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->id, "1804289383");
  EXPECT_FALSE(r->remote_number);
  EXPECT_FALSE(r->remote_name);
  EXPECT_FALSE(r->local_number);
  EXPECT_FALSE(r->local_name);
  EXPECT_FALSE(r->reason);
  EXPECT_TRUE(r->extras.empty());
}

TEST(ProtocolSpec, StopRequestWithEveryField) {
  const auto r = parse_stop_request(
      must_parse("cmd=RecordStopRequest&id=9&remote_number=100&remote_name=Carol&local_number=200&"
                 "local_name=Dave&reason=hangup"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->remote_number, "100");
  EXPECT_EQ(r->remote_name, "Carol");
  EXPECT_EQ(r->local_number, "200");
  EXPECT_EQ(r->local_name, "Dave");
  EXPECT_EQ(r->reason, "hangup");
}

TEST(ProtocolSpec, StopResponseExactBytes) {
  StopResponse ok;
  ok.id = "1804289383";
  EXPECT_EQ(format_stop_response(ok), "cmd=RecordStopResponse&id=1804289383&result=success\r\n");
  StopResponse failed;
  failed.id = "5";
  failed.success = false;
  failed.reason = std::string(reason::kUnknownId);
  EXPECT_EQ(format_stop_response(failed), "cmd=RecordStopResponse&id=5&result=failed&reason=unknown_id\r\n");
}

TEST(ProtocolSpec, ServerSentStopRequestOnlySendsPresentFields) {
  StopRequest s;
  s.id = "42";
  s.reason = "no_space";
  EXPECT_EQ(format_stop_request(s), "cmd=RecordStopRequest&id=42&reason=no_space\r\n");
}

TEST(ProtocolSpec, StopOverridesReplaceStoredValues) {
  auto start = parse_start_request(must_parse(std::string(kStart) + "&x-trunk=A"));
  ASSERT_TRUE(start.ok());
  auto stop = parse_stop_request(must_parse("cmd=RecordStopRequest&id=1804289383&remote_name=Alice%20B&x-trunk=B&x-new=1"));
  ASSERT_TRUE(stop.ok());
  StartRequest meta = *start;
  apply_stop_overrides(meta, *stop);
  EXPECT_EQ(meta.remote_name, "Alice B");
  EXPECT_EQ(meta.remote_number, "13800138000");  // absent from the stop: kept
  EXPECT_EQ(meta.local_name, "Bob");
  EXPECT_EQ(meta.extras, (Fields{{"x-trunk", "B"}, {"x-new", "1"}}));
}

// ---- percent-encoding ------------------------------------------------------------------------

TEST(PercentCoding, DecodesEitherHexCaseAndKeepsPlus) {
  EXPECT_EQ(percent_decode("%41%62c"), "Abc");
  EXPECT_EQ(percent_decode("%e5%BC%a0"), "\xE5\xBC\xA0");
  EXPECT_EQ(percent_decode("+4930 123"), "+4930 123");
  EXPECT_EQ(percent_decode("%2B"), "+");
  EXPECT_EQ(percent_decode("%00"), "\0"s);
  EXPECT_EQ(percent_decode(""), "");
}

TEST(PercentCoding, RejectsMalformedEscapes) {
  for (const std::string_view bad : {"%", "%4", "a%", "%G1", "%1G", "%%", "100%", "%-1", "% 1"}) {
    EXPECT_FALSE(percent_decode(bad)) << bad;
  }
}

TEST(PercentCoding, EncodesOnlyWhatBreaksTheSyntax) {
  EXPECT_EQ(percent_encode("a&b=c%d"), "a%26b%3Dc%25d");
  EXPECT_EQ(percent_encode("l1\r\nl2\0"s), "l1%0D%0Al2%00");
  EXPECT_EQ(percent_encode("\t\x7F"), "%09%7F");
  // UTF-8, '+', blanks and other punctuation go out raw.
  EXPECT_EQ(percent_encode("张三 +86 (x)/y"), "张三 +86 (x)/y");
}

TEST(PercentCoding, EveryByteRoundTrips) {
  std::string all;
  for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
  const std::string enc = percent_encode(all);
  EXPECT_EQ(enc.find_first_of("&=\r\n\0"s), std::string::npos);
  EXPECT_EQ(percent_decode(enc), all);
}

TEST(PercentCoding, UnicodeAndSeparatorsRoundTripThroughMessages) {
  StartRequest r;
  r.id = "A1";
  r.device = "00:11:22:33:44:55";
  r.remote_number = "+8613800138000";
  r.remote_name = "张三 & 李四";
  r.local_number = "100=200";
  r.local_name = "Zoë 50% \"off\"\r\nline2";
  r.dir = Direction::kOut;
  r.codec = fileio::Codec::kPcmu;
  r.extras = {{"x=k&y", "v%&="}, {"note", "ünïcödé"}};
  const std::string wire = format_start_request(r);
  EXPECT_EQ(wire.find('\n'), wire.size() - 1);
  EXPECT_NE(wire.find("remote_name=张三 %26 李四"), std::string::npos);
  EXPECT_NE(wire.find("remote_number=+8613800138000"), std::string::npos);

  const auto back = parse_start_request(must_parse(wire));
  ASSERT_TRUE(back.ok()) << back.error().detail;
  EXPECT_EQ(back->id, r.id);
  EXPECT_EQ(back->device, r.device);
  EXPECT_EQ(back->remote_number, r.remote_number);
  EXPECT_EQ(back->remote_name, r.remote_name);
  EXPECT_EQ(back->local_number, r.local_number);
  EXPECT_EQ(back->local_name, r.local_name);
  EXPECT_EQ(back->dir, r.dir);
  EXPECT_EQ(back->codec, r.codec);
  EXPECT_EQ(back->extras, r.extras);
}

TEST(PercentCoding, TypedResponsesRoundTrip) {
  StartResponse s;
  s.id = "x&y";
  s.success = true;
  s.server = "2001:db8::1";
  s.port = 65534;
  s.extras = {{"ttl", "30"}};
  auto ps = parse_start_response(must_parse(format_start_response(s)));
  ASSERT_TRUE(ps.ok()) << ps.error().detail;
  EXPECT_EQ(ps->id, "x&y");
  EXPECT_TRUE(ps->success);
  EXPECT_EQ(ps->server, "2001:db8::1");
  EXPECT_EQ(ps->port, 65534);
  EXPECT_EQ(ps->extras, s.extras);

  StopResponse t;
  t.id = "z";
  t.success = false;
  t.reason = "unknown_id";
  auto pt = parse_stop_response(must_parse(format_stop_response(t)));
  ASSERT_TRUE(pt.ok());
  EXPECT_FALSE(pt->success);
  EXPECT_EQ(pt->reason, "unknown_id");

  StopRequest q;
  q.id = "z";
  q.local_name = "";  // present but empty: still sent, still an override
  q.reason = "disk full";
  auto pq = parse_stop_request(must_parse(format_stop_request(q)));
  ASSERT_TRUE(pq.ok());
  EXPECT_EQ(pq->local_name, "");
  EXPECT_FALSE(pq->local_number);
  EXPECT_EQ(pq->reason, "disk full");
}

// ---- message syntax --------------------------------------------------------------------------

TEST(ParseMessage, RepeatedKeyLastWinsButAllAreKept) {
  const Message m = must_parse("cmd=RecordStopRequest&id=1&reason=a&reason=b");
  EXPECT_EQ(m.get("reason"), "b");
  EXPECT_EQ(m.fields.size(), 3u);
  const auto stop = parse_stop_request(m);
  ASSERT_TRUE(stop.ok());
  EXPECT_EQ(stop->reason, "b");
}

TEST(ParseMessage, RepeatedCmdLastWins) {
  const Message m = must_parse("cmd=Foo&id=1&cmd=RecordStopRequest");
  EXPECT_EQ(m.cmd, "RecordStopRequest");
  EXPECT_FALSE(m.has("cmd"));
}

TEST(ParseMessage, UnknownKeysAreKeptAsExtrasDeduplicated) {
  const auto r = parse_start_request(must_parse(std::string(kStart) + "&trunk=1&vendor=acme&trunk=2"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->extras, (Fields{{"trunk", "2"}, {"vendor", "acme"}}));
}

TEST(ParseMessage, LiberalSyntax) {
  // Empty pairs and a trailing '&' are skipped; a key without '=' has an empty value; a value
  // may hold '='; terminators and leading blanks are ignored.
  const Message m = must_parse("  cmd=RecordStopRequest&&id=1&flag&name=a=b&\r\n");
  EXPECT_EQ(m.cmd, "RecordStopRequest");
  EXPECT_EQ(m.get("id"), "1");
  EXPECT_EQ(m.get("flag"), "");
  EXPECT_EQ(m.get("name"), "a=b");
  EXPECT_FALSE(m.get("missing"));
  EXPECT_EQ(m.fields.size(), 3u);
}

TEST(ParseMessage, PercentDecodesKeysAndValues) {
  const Message m = must_parse("cmd=RecordStopRequest&id=1&%72eason=a%26b%3Dc");
  EXPECT_EQ(m.get("reason"), "a&b=c");
  EXPECT_EQ(must_parse("%63md=X").cmd, "X");
}

TEST(ParseMessage, Errors) {
  struct Case {
    std::string_view line;
    std::string_view why;
  };
  const Case cases[] = {
      {"", "empty message"},
      {"\r\n", "empty message"},
      {"&&&", "no cmd"},
      {"cmd", "empty cmd"},
      {"cmd=", "empty cmd"},
      {"cmd=A&cmd=", "empty cmd"},
      {"id=1&cmd=RecordStopRequest", "does not start with cmd="},
      {"CMD=RecordStopRequest", "does not start with cmd="},
      {"GET / HTTP/1.1", "does not start with cmd="},
      {"cmd=RecordStopRequest&=x", "empty key"},
      {"cmd=RecordStopRequest&id=1&%=x", "bad percent escape in key"},
      {"cmd=RecordStopRequest&id=100%", "bad percent escape in id"},
      {"cmd=RecordStopRequest&id=%zz", "bad percent escape"},
      {"cmd=Rec%", "bad percent escape"},
  };
  for (const auto& c : cases) {
    const auto m = parse_message(c.line);
    ASSERT_FALSE(m.ok()) << c.line;
    EXPECT_EQ(m.error().reason, reason::kBadRequest) << c.line;
    EXPECT_NE(m.error().detail.find(c.why), std::string::npos) << c.line << " -> " << m.error().detail;
  }
}

TEST(ParseMessage, GarbageNeverCrashesAndDetailIsLogSafe) {
  std::string bin;
  for (int i = 0; i < 512; ++i) bin += static_cast<char>((i * 37 + 11) & 0xFF);
  for (const std::string& g : {bin, "\xFF\xFE\x00\x01"s, "cmd=\x01\x02&\xFF"s, std::string(5000, '&'),
                               "=" + std::string(100, '%'), std::string("cmd=") + std::string(3000, 'A') + "&=\x80"}) {
    const auto m = parse_message(g);
    if (!m.ok()) {
      for (const char c : m.error().detail) {
        const auto u = static_cast<unsigned char>(c);
        EXPECT_TRUE(u >= 0x20 && u < 0x7F) << "unescaped byte in detail";
      }
      EXPECT_LT(m.error().detail.size(), 200u);
    }
  }
}

TEST(FormatMessage, EncodesKeysAndValuesAndEndsWithCrlf) {
  EXPECT_EQ(format_message("RecordStopResponse", {{"id", "1"}, {"k&=", "v\n"}}),
            "cmd=RecordStopResponse&id=1&k%26%3D=v%0A\r\n");
  Message m;
  m.cmd = "X";
  m.fields = {{"a", ""}, {"a", "2"}};
  EXPECT_EQ(format_message(m), "cmd=X&a=&a=2\r\n");
  const Message back = must_parse(format_message(m));
  EXPECT_EQ(back.cmd, m.cmd);
  EXPECT_EQ(back.fields, m.fields);
}

// ---- typed validation ------------------------------------------------------------------------

std::string start_with(std::string_view replace_key, std::string_view line_value, bool drop = false) {
  Message m = must_parse(kStart);
  Fields f;
  for (auto& [k, v] : m.fields) {
    if (k == replace_key) {
      if (!drop) f.emplace_back(k, std::string(line_value));
    } else {
      f.emplace_back(k, v);
    }
  }
  return format_message(m.cmd, f);
}

TEST(StartRequestValidation, Id) {
  EXPECT_TRUE(parse_start_request(must_parse(start_with("id", std::string(64, '7')))).ok());
  EXPECT_TRUE(parse_start_request(must_parse(start_with("id", "a-b_c.d!~"))).ok());
  for (const auto& [value, drop] : std::vector<std::pair<std::string, bool>>{
           {"", true}, {"", false}, {std::string(65, '7'), false}, {"1 2", false}, {"1\t", false}, {"\xE4\xB8\x80", false}}) {
    const auto r = parse_start_request(must_parse(start_with("id", value, drop)));
    ASSERT_FALSE(r.ok()) << value;
    EXPECT_EQ(r.error().reason, reason::kBadRequest);
    EXPECT_NE(r.error().detail.find("id"), std::string::npos);
  }
}

TEST(StartRequestValidation, DeviceIsNormalizedOrRejected) {
  const std::pair<std::string_view, std::string_view> good[] = {
      {"00:0B:82:1A:2B:3C", "00:0b:82:1a:2b:3c"}, {"00-0b-82-1a-2b-3c", "00:0b:82:1a:2b:3c"},
      {"000B821A2B3C", "00:0b:82:1a:2b:3c"},      {"000b.821a.2b3c", "00:0b:82:1a:2b:3c"},
      {"phone-17_lobby", "phone-17_lobby"},       {"00:0b:82", "00:0b:82"},
      {"000b821a2b3c-2", "000b821a2b3c-2"},       {"00:0b:82-1a:2b:3c", "00:0b:82-1a:2b:3c"}};
  for (const auto& [in, want] : good) {
    const auto r = parse_start_request(must_parse(start_with("device", in)));
    ASSERT_TRUE(r.ok()) << in;
    EXPECT_EQ(r->device, want);
  }
  for (const std::string_view bad : {"", "../../etc", "a/b", ".hidden", "a b", "mac\\x", "张三",
                                     "0123456789012345678901234567890123456789012345678901234567890123456789"}) {
    const auto r = parse_start_request(must_parse(start_with("device", bad)));
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().reason, reason::kBadRequest);
    EXPECT_NE(r.error().detail.find("device"), std::string::npos);
  }
  const auto missing = parse_start_request(must_parse(start_with("device", "", true)));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().detail, "device missing");
}

TEST(StartRequestValidation, Dir) {
  const std::pair<std::string_view, Direction> good[] = {{"in", Direction::kIn},       {"OUT", Direction::kOut},
                                                        {"Incoming", Direction::kIn}, {"outbound", Direction::kOut},
                                                        {"", Direction::kUnknown}};
  for (const auto& [in, want] : good) {
    const auto r = parse_start_request(must_parse(start_with("dir", in)));
    ASSERT_TRUE(r.ok()) << in;
    EXPECT_EQ(r->dir, want);
  }
  const auto omitted = parse_start_request(must_parse(start_with("dir", "", true)));
  ASSERT_TRUE(omitted.ok());
  EXPECT_EQ(omitted->dir, Direction::kUnknown);
  for (const std::string_view bad : {"in|out", "sideways", "i", "in "}) {
    const auto r = parse_start_request(must_parse(start_with("dir", bad)));
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().reason, reason::kBadDir);
  }
}

TEST(StartRequestValidation, Codec) {
  const std::pair<std::string_view, fileio::Codec> good[] = {
      {"PCMA", fileio::Codec::kPcma},   {"pcmu", fileio::Codec::kPcmu},        {"G711A", fileio::Codec::kPcma},
      {"g.711u", fileio::Codec::kPcmu}, {"PCMA/8000", fileio::Codec::kPcma}};
  for (const auto& [in, want] : good) {
    const auto r = parse_start_request(must_parse(start_with("codec", in)));
    ASSERT_TRUE(r.ok()) << in;
    EXPECT_EQ(r->codec, want);
  }
  for (const std::string_view absent : {"", "<drop>"}) {
    const auto r = parse_start_request(must_parse(start_with("codec", "", absent == "<drop>")));
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(r->codec) << "omitted codec: detected from the RTP payload type";
  }
  for (const std::string_view bad : {"G729", "opus", "PCMA/16000", "PCM"}) {
    const auto r = parse_start_request(must_parse(start_with("codec", bad)));
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().reason, reason::kUnsupportedCodec);
  }
}

TEST(StartRequestValidation, IdIsCheckedBeforeOtherFieldsSoTheAnswerCanName) {
  const auto r = parse_start_request(must_parse("cmd=RecordStartRequest&dir=up&codec=G729"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().reason, reason::kBadRequest);
  EXPECT_EQ(r.error().detail, "id missing");
}

TEST(StartRequestValidation, NamesAreOptional) {
  const auto r = parse_start_request(must_parse("cmd=RecordStartRequest&id=1&device=000b821a2b3c"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->remote_number, "");
  EXPECT_EQ(r->local_name, "");
  EXPECT_EQ(r->dir, Direction::kUnknown);
  EXPECT_FALSE(r->codec);
}

TEST(StartRequestValidation, WrongCommandIsABadRequest) {
  const auto r = parse_start_request(must_parse("cmd=RecordStopRequest&id=1&device=x"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().reason, reason::kBadRequest);
}

TEST(StopRequestValidation, OnlyIdCanFail) {
  const auto r = parse_stop_request(must_parse("cmd=RecordStopRequest&id=1&dir=sideways&codec=G729&device=/etc"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->extras, (Fields{{"dir", "sideways"}, {"codec", "G729"}, {"device", "/etc"}}));
  for (const std::string_view bad : {"cmd=RecordStopRequest", "cmd=RecordStopRequest&id=", "cmd=RecordStopRequest&id=a%20b"}) {
    const auto e = parse_stop_request(must_parse(bad));
    ASSERT_FALSE(e.ok()) << bad;
    EXPECT_EQ(e.error().reason, reason::kBadRequest);
  }
}

TEST(ResponseValidation, PhoneSideChecks) {
  for (const std::string_view bad : {
           "cmd=RecordStartResponse&id=1&result=success&server=a",           // no port
           "cmd=RecordStartResponse&id=1&result=success&server=a&port=0",    // port 0
           "cmd=RecordStartResponse&id=1&result=success&server=a&port=65536",
           "cmd=RecordStartResponse&id=1&result=success&server=a&port=12x",
           "cmd=RecordStartResponse&id=1&result=success&port=4000",          // no server
           "cmd=RecordStartResponse&id=1&result=maybe&server=a&port=4000",
           "cmd=RecordStartResponse&result=success&server=a&port=4000",      // no id
       }) {
    EXPECT_FALSE(parse_start_response(must_parse(bad)).ok()) << bad;
  }
  const auto failed = parse_start_response(must_parse("cmd=RecordStartResponse&id=1&result=failed&reason=no_space&server=&port="));
  ASSERT_TRUE(failed.ok());
  EXPECT_FALSE(failed->success);
  EXPECT_EQ(failed->reason, "no_space");
  EXPECT_FALSE(parse_stop_response(must_parse("cmd=RecordStopResponse&id=1")).ok());
  EXPECT_TRUE(parse_stop_response(must_parse("cmd=RecordStopResponse&id=1&result=SUCCESS")).ok());
}

TEST(Commands, NamesAndCase) {
  EXPECT_EQ(command_of("RecordStartRequest"), Command::kStartRequest);
  EXPECT_EQ(command_of("recordstoprequest"), Command::kStopRequest);
  EXPECT_EQ(command_of("RecordStartResponse"), Command::kStartResponse);
  EXPECT_EQ(command_of("RecordStopResponse"), Command::kStopResponse);
  EXPECT_EQ(command_of("RecordPauseRequest"), Command::kUnknown);
  EXPECT_EQ(command_of(""), Command::kUnknown);
  for (const Command c : {Command::kStartRequest, Command::kStartResponse, Command::kStopRequest, Command::kStopResponse}) {
    EXPECT_EQ(command_of(command_name(c)), c);
  }
  EXPECT_EQ(command_name(Command::kUnknown), "");
  EXPECT_EQ(direction_name(Direction::kIn), "in");
  EXPECT_EQ(direction_name(Direction::kOut), "out");
  EXPECT_EQ(codec_wire_name(fileio::Codec::kPcma), "PCMA");
  EXPECT_EQ(codec_wire_name(fileio::Codec::kPcmu), "PCMU");
}

// ---- framing ---------------------------------------------------------------------------------

TEST(FrameDecoder, EveryTerminator) {
  for (const std::string& term : {"\r\n"s, "\n"s, "\0"s}) {
    FrameDecoder d;
    d.feed(std::string(kStart) + term);
    EXPECT_EQ(drain(d), std::vector<std::string>{std::string(kStart)}) << "terminator size " << term.size();
    EXPECT_TRUE(d.pending().empty());
  }
}

TEST(FrameDecoder, MixedTerminatorsAndBlankLinesInOneRead) {
  FrameDecoder d;
  d.feed("cmd=A\r\n\r\ncmd=B\n\ncmd=C\0\0cmd=D\r\n\0cmd=E"s);
  EXPECT_EQ(drain(d), (std::vector<std::string>{"cmd=A", "cmd=B", "cmd=C", "cmd=D"}));
  EXPECT_EQ(d.pending(), "cmd=E");
  EXPECT_EQ(d.messages(), 4u);
}

TEST(FrameDecoder, CrLfSplitAcrossReadsGivesNoEmptyMessage) {
  FrameDecoder d;
  d.feed("cmd=A\r");
  EXPECT_FALSE(d.next());
  d.feed("\ncmd=B\r");
  EXPECT_EQ(drain(d), std::vector<std::string>{"cmd=A"});
  d.feed("\n");
  EXPECT_EQ(drain(d), std::vector<std::string>{"cmd=B"});
  EXPECT_FALSE(d.next());
}

TEST(FrameDecoder, LoneCrInsideAMessageStays) {
  FrameDecoder d;
  d.feed("cmd=A\rB\n");
  EXPECT_EQ(drain(d), std::vector<std::string>{"cmd=A\rB"});
}

TEST(FrameDecoder, ByteByByteAndEverySplitPointMatchOneRead) {
  const std::string stream = std::string(kStart) + "\r\n" + "cmd=RecordStopRequest&id=1\n\r\n" +
                             "cmd=RecordStopRequest&id=2" + "\0"s + "\0"s + "cmd=X&y=%41\r\n" + "cmd=tail";
  FrameDecoder whole;
  whole.feed(stream);
  const auto want = drain(whole);
  ASSERT_EQ(want.size(), 4u);

  FrameDecoder bytes;
  std::vector<std::string> got;
  for (const char c : stream) {
    bytes.feed(std::string_view(&c, 1));
    for (auto m = bytes.next(); m; m = bytes.next()) got.push_back(*m);
  }
  EXPECT_EQ(got, want);
  EXPECT_EQ(bytes.pending(), "cmd=tail");

  for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
    FrameDecoder d;
    d.feed(std::string_view(stream).substr(0, cut));
    auto part = drain(d);
    d.feed(std::string_view(stream).substr(cut));
    const auto rest = drain(d);
    part.insert(part.end(), rest.begin(), rest.end());
    EXPECT_EQ(part, want) << "split at " << cut;
  }
}

TEST(FrameDecoder, AcceptsBytes) {
  FrameDecoder d;
  const std::string s = "cmd=A\n";
  d.feed(std::as_bytes(std::span<const char>(s.data(), s.size())));
  EXPECT_EQ(drain(d), std::vector<std::string>{"cmd=A"});
}

TEST(FrameDecoder, MessageOfExactlyMaxIsAcceptedWithEveryTerminator) {
  constexpr std::size_t kMax = 64;
  const std::string body = "cmd=" + std::string(kMax - 4, 'x');
  for (const std::string& term : {"\r\n"s, "\n"s, "\0"s}) {
    FrameDecoder whole(kMax);
    whole.feed(body + term);
    EXPECT_FALSE(whole.overflow());
    EXPECT_EQ(drain(whole), std::vector<std::string>{body});

    FrameDecoder bytes(kMax);
    for (const char c : body + term) bytes.feed(std::string_view(&c, 1));
    EXPECT_FALSE(bytes.overflow());
    EXPECT_EQ(drain(bytes), std::vector<std::string>{body});
  }
}

TEST(FrameDecoder, OverflowIsStickyAndKeepsEarlierMessages) {
  constexpr std::size_t kMax = 64;
  FrameDecoder d(kMax);
  d.feed("cmd=ok\n" + std::string(kMax + 1, 'x') + "\ncmd=after\n");
  EXPECT_TRUE(d.overflow());
  EXPECT_EQ(drain(d), std::vector<std::string>{"cmd=ok"});
  d.feed("cmd=more\n");
  EXPECT_TRUE(d.overflow());
  EXPECT_FALSE(d.next());
  EXPECT_FALSE(d.take_unterminated());
  EXPECT_TRUE(d.pending().empty());
}

TEST(FrameDecoder, OverflowWithoutTerminatorBoundsMemory) {
  constexpr std::size_t kMax = 100;
  FrameDecoder d(kMax);
  for (int i = 0; i < 1000 && !d.overflow(); ++i) {
    d.feed("cmd=");
    EXPECT_LE(d.pending().size(), kMax + 1);
  }
  EXPECT_TRUE(d.overflow());
  EXPECT_TRUE(d.pending().empty());
}

TEST(FrameDecoder, OverflowByteByByteMatchesOneRead) {
  constexpr std::size_t kMax = 16;
  const std::string line = std::string(kMax + 1, 'y') + "\n";
  FrameDecoder bytes(kMax);
  for (const char c : line) bytes.feed(std::string_view(&c, 1));
  FrameDecoder whole(kMax);
  whole.feed(line);
  EXPECT_TRUE(bytes.overflow());
  EXPECT_TRUE(whole.overflow());
  // max + CR + LF is not an overflow; max + 2 CRs is (only one CR belongs to the terminator).
  FrameDecoder crlf(kMax);
  crlf.feed(std::string(kMax, 'z') + "\r\n");
  EXPECT_FALSE(crlf.overflow());
  FrameDecoder two_cr(kMax);
  two_cr.feed(std::string(kMax, 'z') + "\r\r\n");
  EXPECT_TRUE(two_cr.overflow());
}

TEST(FrameDecoder, TakeUnterminatedForAQuietOrHalfClosedPeer) {
  FrameDecoder d;
  d.feed("cmd=RecordStopRequest&id=1\r");
  EXPECT_FALSE(d.next());
  EXPECT_EQ(d.take_unterminated(), "cmd=RecordStopRequest&id=1");
  EXPECT_TRUE(d.pending().empty());
  EXPECT_FALSE(d.take_unterminated());
  EXPECT_EQ(d.messages(), 1u);
}

TEST(FrameDecoder, TakeUnterminatedLeavesIncompleteLookingBytes) {
  for (const std::string_view partial : {"", "\r", "cm", "cmd=", "cmd=&id=1", "GET /", "cmd=X&name=%", "cmd=X&name=%4"}) {
    FrameDecoder d;
    d.feed(partial);
    EXPECT_FALSE(d.take_unterminated()) << partial;
    EXPECT_EQ(d.pending(), partial);
  }
  FrameDecoder d;
  d.feed("cmd=X&name=%4");
  EXPECT_FALSE(d.take_unterminated());
  d.feed("1");
  EXPECT_EQ(d.take_unterminated(), "cmd=X&name=%41");
}

TEST(RequestIdentity, ARefusedRequestStillNamesItsCommandAndId) {
  auto r = request_identity("cmd=RecordStartRequest&id=A1&remote_name=%zz&device=x");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->command, Command::kStartRequest);
  EXPECT_EQ(r->id, "A1");
  r = request_identity("  cmd=recordstoprequest&n=%4&id=B%202\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->command, Command::kStopRequest);
  EXPECT_EQ(r->id, "") << "an id with a blank is not a valid id";
  r = request_identity("cmd=RecordStopRequest&%zz=1&id=C3");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->id, "C3");
  EXPECT_FALSE(request_identity("cmd=RecordStopResponse&id=1&x=%"));
  EXPECT_FALSE(request_identity("hello=%zz"));
  EXPECT_FALSE(request_identity(""));
  EXPECT_FALSE(request_identity("cmd=RecordStartRequest&cmd")) << "the last cmd wins, as in parse_message";
}

}  // namespace
}  // namespace callrec::control
