// The SIPREC recording server end to end: the real callrecd, driven over real sockets by a
// hand-built SRC (tests/e2e/sip_client.hpp) and by SIPp playing the shared SRC scenarios; RTP
// checked byte for byte in the record files, metadata in the catalog.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <random>
#include <regex>
#include <sstream>

#include "harness.hpp"
#include "sip_client.hpp"

namespace callrec::e2e {
namespace {

namespace sip = control::sip;

std::uint16_t random_sip_port() {
  std::random_device rd;
  return static_cast<std::uint16_t>(15000 + rd() % 4900);
}

fs::path shared_dir() { return fs::path(CALLREC_SHARED_TESTDATA_DIR); }

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// A UDP socket on 127.0.0.1 that sends RTP to a port of the daemon.
class RtpSender {
 public:
  RtpSender() {
    fd_ = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
  }
  ~RtpSender() { ::close(fd_); }
  void send(std::uint16_t port, const std::vector<std::vector<std::byte>>& pkts, bool pace = true) {
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (const auto& p : pkts) {
      ::sendto(fd_, p.data(), p.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
      if (pace) std::this_thread::sleep_for(std::chrono::microseconds(300));
    }
  }

 private:
  int fd_ = -1;
};

/// Every packet of one stream of a recording, in file order.
std::vector<std::vector<std::byte>> stream_packets(const fileio::RecordingRow& row, std::uint32_t stream) {
  std::vector<std::vector<std::byte>> out;
  for (const auto& s : row.segments)
    if (s.stream == stream)
      for (auto& p : read_packets(s.path)) out.push_back(std::move(p));
  return out;
}

const fileio::StreamRow* stream_with_label(const fileio::RecordingRow& row, const std::string& label) {
  for (const auto& s : row.streams)
    if (s.label == label) return &s;
  return nullptr;
}

/// The catalog row of the only (or the newest) SIPREC recording.
fileio::RecordingRow siprec_row(const fs::path& db) {
  fileio::Catalog c;
  fileio::RecordingRow row;
  if (!c.open(db)) return row;
  std::vector<fileio::RecordingRow> rows;
  fileio::CatalogFilter f;
  if (c.list(f, rows))
    for (auto& r : rows)
      if (r.source == "siprec") return r;
  return row;
}

std::vector<fileio::RecordingRow> all_rows(const fs::path& db) {
  fileio::Catalog c;
  std::vector<fileio::RecordingRow> rows;
  if (!c.open(db)) return rows;
  fileio::CatalogFilter f;
  (void)c.list(f, rows);
  return rows;
}

struct Answer {
  sip::Sdp sdp;
  std::string text;
};
std::optional<Answer> parse_answer(const SipMsg& m) {
  Answer a;
  a.text = m.body();
  if (!sip::parse_sdp(a.text, a.sdp)) return std::nullopt;
  return a;
}

class SiprecE2E : public ::testing::Test {
 protected:
  std::unique_ptr<DaemonProcess> start(std::vector<std::string> extra = {}) {
    std::unique_ptr<DaemonProcess> d;
    for (int attempt = 0; attempt < 5; ++attempt) {  // a parallel test may hold the random port
      sip_port_ = random_sip_port();
      std::vector<std::string> a = extra;
      a.push_back("--siprec-listen");
      a.push_back("127.0.0.1:" + std::to_string(sip_port_));
      d.reset();
      d = std::make_unique<DaemonProcess>(dir_.path(), a);
      if (d->ready() || d->log().find("in use") == std::string::npos) break;
    }
    EXPECT_TRUE(d->ready()) << d->log();
    return d;
  }
  std::string metrics(DaemonProcess& d) { return http(d.metrics_port(), "GET", "/metrics"); }

  TempDir dir_;
  std::uint16_t sip_port_ = 0;
};

class SiprecTransportE2E : public SiprecE2E, public ::testing::WithParamInterface<SipTransport> {};

// The whole life of a session: INVITE with two labelled streams and metadata (the callee's
// participant listed first, m-lines in the callee-first order too), 200 with a recvonly answer,
// RTP of both labels byte-exact in their own files, a pause (inactive) whose packets are not
// recorded, a resume, BYE; the catalog knows who sent what.
TEST_P(SiprecTransportE2E, RecordsEachLabelByteExactWithPauseResumeAndMetadata) {
  auto d = start();
  SipClient c(GetParam(), sip_port_);
  ASSERT_TRUE(c.ok());
  SrcDialog dlg{c};
  // m-line 0 is Bob's (label 20), m-line 1 Alice's (label 10); Alice is the calling party.
  auto [ct, body] = siprec_body({pcma_mline(30000, "20"), pcma_mline(30002, "10")},
                                two_party_metadata("10", "20", /*bob_first=*/true));
  ASSERT_TRUE(c.send(dlg.request("INVITE", ct, body, "Require: siprec\r\n")));
  auto ok = c.final_response();
  ASSERT_TRUE(ok) << d->log();
  ASSERT_EQ(ok->status(), 200) << ok->raw;
  EXPECT_NE(ok->header("Contact").find("+sip.srs"), std::string::npos) << ok->raw;
  EXPECT_EQ(ok->header("Content-Type"), "application/sdp");
  dlg.to_tag = ok->to_tag();
  ASSERT_FALSE(dlg.to_tag.empty());
  auto ans = parse_answer(*ok);
  ASSERT_TRUE(ans) << ok->raw;
  ASSERT_EQ(ans->sdp.media.size(), 2u) << ans->text;
  EXPECT_EQ(ans->sdp.media[0].label, "20");
  EXPECT_EQ(ans->sdp.media[1].label, "10");
  for (const auto& m : ans->sdp.media) {
    EXPECT_NE(m.port, 0);
    EXPECT_EQ(m.dir, sip::Direction::kRecvOnly) << ans->text;
    EXPECT_EQ(m.first_pt(), 8) << ans->text;
  }
  ASSERT_TRUE(c.send(dlg.request("ACK", "", "", "", 1)));
  const std::uint16_t port_bob = ans->sdp.media[0].port, port_alice = ans->sdp.media[1].port;

  RtpSender ra, rb;
  const auto alice = make_rtp(60, fileio::Codec::kPcma, 100, 1000, 0xA11CE, 440);
  const auto bob = make_rtp(60, fileio::Codec::kPcma, 5000, 9000, 0xB0B, 880);
  std::vector<std::vector<std::byte>> alice1(alice.begin(), alice.begin() + 30), alice2(alice.begin() + 40, alice.end());
  std::vector<std::vector<std::byte>> bob1(bob.begin(), bob.begin() + 30), bob2(bob.begin() + 40, bob.end());
  std::vector<std::vector<std::byte>> alice_paused(alice.begin() + 30, alice.begin() + 40),
      bob_paused(bob.begin() + 30, bob.begin() + 40);
  ra.send(port_alice, alice1);
  rb.send(port_bob, bob1);
  // A pause takes effect when the writer sees it: let the writer take these 60 first (the
  // counter counts every record a writer consumed).
  ASSERT_TRUE(wait_until([&] { return metric_value(metrics(*d), "callrec_writer_packets_total") >= 60; }))
      << metrics(*d);

  // Pause: both m-lines inactive (complete metadata snapshot again, as OpenSIPS sends).
  ++dlg.cseq;
  std::tie(ct, body) = siprec_body({pcma_mline(30000, "20", "inactive"), pcma_mline(30002, "10", "inactive")},
                                   two_party_metadata("10", "20", true));
  ASSERT_TRUE(c.send(dlg.request("INVITE", ct, body)));
  auto p = c.final_response();
  ASSERT_TRUE(p && p->status() == 200) << (p ? p->raw : d->log());
  auto pans = parse_answer(*p);
  ASSERT_TRUE(pans);
  ASSERT_EQ(pans->sdp.media.size(), 2u);
  EXPECT_EQ(pans->sdp.media[0].dir, sip::Direction::kInactive) << pans->text;
  EXPECT_EQ(pans->sdp.media[0].port, port_bob) << "a paused stream keeps its port";
  ASSERT_TRUE(c.send(dlg.request("ACK", "", "", "", dlg.cseq)));
  std::this_thread::sleep_for(200ms);
  ra.send(port_alice, alice_paused);
  rb.send(port_bob, bob_paused);
  // ... and these 20 paused ones before the resume.
  ASSERT_TRUE(wait_until([&] { return metric_value(metrics(*d), "callrec_writer_packets_total") >= 80; }))
      << metrics(*d);

  // Resume.
  ++dlg.cseq;
  std::tie(ct, body) = siprec_body({pcma_mline(30000, "20"), pcma_mline(30002, "10")}, "");
  ASSERT_TRUE(c.send(dlg.request("INVITE", ct, body)));
  auto r = c.final_response();
  ASSERT_TRUE(r && r->status() == 200) << (r ? r->raw : d->log());
  auto rans = parse_answer(*r);
  ASSERT_TRUE(rans);
  EXPECT_EQ(rans->sdp.media[1].dir, sip::Direction::kRecvOnly);
  EXPECT_EQ(rans->sdp.media[1].port, port_alice);
  ASSERT_TRUE(c.send(dlg.request("ACK", "", "", "", dlg.cseq)));
  std::this_thread::sleep_for(200ms);
  ra.send(port_alice, alice2);
  rb.send(port_bob, bob2);
  std::this_thread::sleep_for(300ms);

  ++dlg.cseq;
  ASSERT_TRUE(c.send(dlg.request("BYE", "", "")));
  auto b = c.final_response();
  ASSERT_TRUE(b && b->status() == 200);
  ASSERT_TRUE(d->wait_log("recording stop:")) << d->log();
  ASSERT_TRUE(wait_until([&] { return siprec_row(d->catalog()).state == "stopped"; })) << d->log();

  const auto row = siprec_row(d->catalog());
  EXPECT_EQ(row.source, "siprec");
  EXPECT_EQ(row.call_id, "recorded-call-1") << "the recorded call's Call-ID (sipSessionID)";
  EXPECT_EQ(row.local_number, "+15550001") << "the caller";
  EXPECT_EQ(row.local_name, "Alice");
  EXPECT_EQ(row.remote_number, "+15550002");
  EXPECT_EQ(row.extra.at("siprec_call_id"), dlg.call_id);
  EXPECT_EQ(row.extra.at("siprec_session_id"), "S1");
  ASSERT_EQ(row.participants.size(), 2u);
  std::map<std::string, std::string> role_of;
  for (const auto& pt : row.participants) role_of[pt.number] = pt.role;
  EXPECT_EQ(role_of["+15550001"], "caller");
  EXPECT_EQ(role_of["+15550002"], "callee");
  const auto* sa = stream_with_label(row, "10");
  const auto* sb = stream_with_label(row, "20");
  ASSERT_TRUE(sa && sb);
  EXPECT_EQ(sa->role, "caller");
  EXPECT_EQ(sb->role, "callee");
  EXPECT_EQ(sa->participant, "pA");
  std::vector<std::vector<std::byte>> want_a = alice1, want_b = bob1;
  want_a.insert(want_a.end(), alice2.begin(), alice2.end());
  want_b.insert(want_b.end(), bob2.begin(), bob2.end());
  EXPECT_EQ(stream_packets(row, sa->stream), want_a) << "Alice's stream: every packet but the paused ones";
  EXPECT_EQ(stream_packets(row, sb->stream), want_b);
  const std::string mx = metrics(*d);
  EXPECT_EQ(metric_value(mx, "callrec_siprec_paused_total"), 2);
  EXPECT_EQ(metric_value(mx, "callrec_siprec_resumed_total"), 2);
  EXPECT_EQ(metric_value(mx, "callrec_siprec_sessions_started_total"), 1);

  // The list filter finds it by a participant's number and by the recorded call's Call-ID.
  auto l = run_cmd({bin("callrec"), "list", "--catalog", d->catalog().string(), "--number", "+15550002", "--json"});
  EXPECT_EQ(l.exit_code, 0) << l.err;
  EXPECT_NE(l.out.find("recorded-call-1"), std::string::npos) << l.out;
  // Export: caller (Alice, 440 Hz) left, callee (Bob, 880 Hz) right, whatever the m-line order.
  const fs::path wav = dir_.path() / "call.wav";
  auto ex = run_cmd({bin("callrec"), "export", "--catalog", d->catalog().string(), "--call", "recorded-call-1", "-o",
                     wav.string()});
  ASSERT_EQ(ex.exit_code, 0) << ex.out << ex.err;
  // sox as the independent decoder: the left channel alone must be Alice's 440 Hz.
  auto left = run_cmd({"/usr/bin/sox", wav.string(), "-n", "remix", "1", "stat", "-freq"}, 30s);
  auto right = run_cmd({"/usr/bin/sox", wav.string(), "-n", "remix", "2", "stat", "-freq"}, 30s);
  auto dominant = [](const std::string& text) {
    // "stat -freq" prints "freq  power" lines; the strongest bin is the tone.
    double best_f = 0, best_p = -1;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      double f = 0, pw = 0;
      if (std::sscanf(line.c_str(), "%lf %lf", &f, &pw) == 2 && pw > best_p && f > 50) {
        best_p = pw;
        best_f = f;
      }
    }
    return best_f;
  };
  EXPECT_NEAR(dominant(left.err), 440, 40) << left.err.substr(0, 200);
  EXPECT_NEAR(dominant(right.err), 880, 40);
}

INSTANTIATE_TEST_SUITE_P(Transports, SiprecTransportE2E, ::testing::Values(SipTransport::kUdp, SipTransport::kTcp),
                         [](const auto& i) { return i.param == SipTransport::kUdp ? "Udp" : "Tcp"; });

// Updates while recording: a re-INVITE adds a third m-line (a new port, recorded in its own
// stream) and removes the first (port 0: its stream ends, the recording goes on); an UPDATE
// carrying only a partial metadata update renames a participant in the catalog.
TEST_F(SiprecE2E, ReInviteAddsAndRemovesStreamsAndUpdateChangesMetadata) {
  auto d = start();
  SipClient c(SipTransport::kUdp, sip_port_);
  SrcDialog dlg{c};
  auto [ct, body] = siprec_body({pcma_mline(30000, "1"), pcma_mline(30002, "2")}, two_party_metadata("1", "2"));
  ASSERT_TRUE(c.send(dlg.request("INVITE", ct, body, "Require: siprec\r\n")));
  auto a = c.final_response();
  ASSERT_TRUE(a && a->status() == 200);
  dlg.to_tag = a->to_tag();
  ASSERT_TRUE(c.send(dlg.request("ACK", "", "", "", 1)));
  auto ans = parse_answer(*a);
  ASSERT_TRUE(ans);
  const std::uint16_t p0 = ans->sdp.media[0].port, p1 = ans->sdp.media[1].port;
  RtpSender s0, s1, s2;
  const auto first = make_rtp(20, fileio::Codec::kPcma, 100, 0, 0x100);
  s0.send(p0, first);
  std::this_thread::sleep_for(150ms);

  // m-line 0 removed (port 0), m-line 2 added.
  ++dlg.cseq;
  std::tie(ct, body) = siprec_body({"m=audio 0 RTP/AVP 8\r\na=label:1\r\n", pcma_mline(30002, "2"), pcma_mline(30004, "3")}, "");
  ASSERT_TRUE(c.send(dlg.request("INVITE", ct, body)));
  std::optional<SipMsg> r;
  do r = c.final_response();
  while (r && r->m.cseq != dlg.cseq);
  ASSERT_TRUE(r && r->status() == 200) << (r ? r->raw : d->log());
  ASSERT_TRUE(c.send(dlg.request("ACK", "", "", "", dlg.cseq)));
  auto ans2 = parse_answer(*r);
  ASSERT_TRUE(ans2);
  ASSERT_EQ(ans2->sdp.media.size(), 3u) << ans2->text;
  EXPECT_EQ(ans2->sdp.media[0].port, 0) << "removed";
  EXPECT_EQ(ans2->sdp.media[1].port, p1) << "kept its port";
  const std::uint16_t p2 = ans2->sdp.media[2].port;
  ASSERT_NE(p2, 0) << ans2->text;
  EXPECT_EQ(ans2->sdp.media[2].label, "3");
  // The removed stream's end mark has reached its writer (20 packets + the mark): the
  // dataplane no longer follows the old port.
  ASSERT_TRUE(wait_until([&] { return metric_value(metrics(*d), "callrec_writer_packets_total") >= 21; }))
      << metrics(*d);
  const auto late = make_rtp(10, fileio::Codec::kPcma, 120, 20 * 160, 0x100);
  const auto third = make_rtp(20, fileio::Codec::kPcma, 7000, 0, 0x300);
  const auto second = make_rtp(20, fileio::Codec::kPcma, 4000, 0, 0x200);
  s0.send(p0, late);  // to the removed stream's old port: not recorded
  s1.send(p1, second);
  s2.send(p2, third);
  std::this_thread::sleep_for(200ms);

  // Metadata-only UPDATE: a partial update renaming participant pB.
  ++dlg.cseq;
  const std::string partial =
      "<?xml version=\"1.0\"?><recording xmlns=\"urn:ietf:params:xml:ns:recording:1\"><datamode>partial</datamode>"
      "<participant participant_id=\"pB\"><nameID aor=\"sip:+15550002@example.com\"><name>Bob Transferred</name></nameID>"
      "</participant></recording>";
  ASSERT_TRUE(c.send(dlg.request("UPDATE", "application/rs-metadata+xml", partial)));
  do r = c.final_response();
  while (r && r->m.cseq != dlg.cseq);
  ASSERT_TRUE(r && r->status() == 200) << (r ? r->raw : d->log());
  EXPECT_TRUE(r->body().empty()) << "no SDP in, no SDP out";

  ++dlg.cseq;
  ASSERT_TRUE(c.send(dlg.request("BYE", "", "")));
  do r = c.final_response();
  while (r && r->m.cseq != dlg.cseq);
  ASSERT_TRUE(r && r->status() == 200);
  ASSERT_TRUE(wait_until([&] { return siprec_row(d->catalog()).state == "stopped"; })) << d->log();
  const auto row = siprec_row(d->catalog());
  ASSERT_EQ(row.streams.size(), 3u);
  EXPECT_EQ(stream_packets(row, 0), first) << "the removed stream kept what came before its removal";
  EXPECT_EQ(stream_packets(row, 1), second);
  EXPECT_EQ(stream_packets(row, 2), third) << "the added stream";
  EXPECT_EQ(stream_with_label(row, "3")->stream, 2u);
  EXPECT_EQ(row.remote_name, "Bob Transferred") << "partial metadata update applied";
  bool renamed = false;
  for (const auto& p : row.participants) renamed = renamed || p.name == "Bob Transferred";
  EXPECT_TRUE(renamed);
  const std::string mx = metrics(*d);
  EXPECT_EQ(metric_value(mx, "callrec_siprec_streams_added_total"), 1);
  EXPECT_EQ(metric_value(mx, "callrec_siprec_streams_removed_total"), 1);
  EXPECT_EQ(metric_value(mx, "callrec_siprec_metadata_updates_total"), 1);
}

// A retransmitted INVITE is answered from its transaction (one session, the same 200), and the
// 200 is retransmitted over UDP until the ACK.
TEST_F(SiprecE2E, RetransmittedInviteIsAnsweredFromItsTransactionAnd200RepeatsUntilAck) {
  auto d = start();
  SipClient c(SipTransport::kUdp, sip_port_);
  SrcDialog dlg{c};
  auto [ct, body] = siprec_body({pcma_mline(30000, "1"), pcma_mline(30002, "2")}, two_party_metadata("1", "2"));
  const std::string invite = dlg.request("INVITE", ct, body, "Require: siprec\r\n");
  ASSERT_TRUE(c.send(invite));
  auto a = c.final_response();
  ASSERT_TRUE(a && a->status() == 200);
  ASSERT_TRUE(c.send(invite));  // as if our first INVITE's 200 was lost
  auto b = c.final_response();
  ASSERT_TRUE(b && b->status() == 200);
  EXPECT_EQ(a->to_tag(), b->to_tag());
  EXPECT_EQ(a->body(), b->body()) << "the same answer, not a second session";
  // No ACK yet: the 200 comes again (T1 = 500 ms, then 1 s).
  auto again = c.final_response(2500ms);
  ASSERT_TRUE(again && again->status() == 200) << "2xx retransmitted until the ACK";
  dlg.to_tag = a->to_tag();
  ASSERT_TRUE(c.send(dlg.request("ACK", "", "", "", 1)));
  std::this_thread::sleep_for(100ms);
  while (c.recv(100ms)) {
  }
  EXPECT_FALSE(c.final_response(2500ms)) << "no 200 after the ACK";
  const std::string mx = metrics(*d);
  EXPECT_EQ(metric_value(mx, "callrec_siprec_sessions_started_total"), 1);
  EXPECT_GE(metric_value(mx, "callrec_siprec_retransmissions_total"), 1);
  EXPECT_GE(metric_value(mx, "callrec_siprec_retransmits_sent_total"), 1);
  EXPECT_EQ(all_rows(d->catalog()).size(), 1u);
}

// A 2xx never acknowledged (the ACK lost for good): after 64*T1 the SRS ends the session with a
// BYE naming the cause, and the recording stops with it.
TEST_F(SiprecE2E, A2xxNeverAcknowledgedEndsTheSessionWithABye) {
  auto d = start({"--siprec-t1-ms", "50"});  // 64*T1 = 3.2 s
  SipClient c(SipTransport::kUdp, sip_port_);
  SrcDialog dlg{c};
  auto [ct, body] = siprec_body({pcma_mline(30000, "1"), pcma_mline(30002, "2")}, two_party_metadata("1", "2"));
  ASSERT_TRUE(c.send(dlg.request("INVITE", ct, body, "Require: siprec\r\n")));
  unsigned oks = 0;
  std::optional<SipMsg> bye;
  const auto end = std::chrono::steady_clock::now() + 8s;
  while (!bye && std::chrono::steady_clock::now() < end) {
    auto m = c.recv(500ms);
    if (!m) continue;
    if (!m->m.request && m->status() == 200) ++oks;
    if (m->m.request && m->m.method == "BYE") bye = m;
  }
  EXPECT_GE(oks, 4u) << "the 200 was retransmitted while no ACK came";
  ASSERT_TRUE(bye) << d->log();
  EXPECT_NE(bye->header("Reason").find("ack_timeout"), std::string::npos) << bye->raw;
  EXPECT_EQ(bye->m.call_id, dlg.call_id);
  ASSERT_TRUE(wait_until([&] { return siprec_row(d->catalog()).state == "stopped"; })) << d->log();
  EXPECT_EQ(siprec_row(d->catalog()).stop_reason, "ack_timeout");
  EXPECT_EQ(metric_value(metrics(*d), "callrec_siprec_ack_timeouts_total"), 1);
  EXPECT_EQ(metric_value(metrics(*d), "callrec_siprec_byes_sent_total"), 1);
}

// CANCEL before the answer went out (same TCP segment as the INVITE): 200 to the CANCEL, 487
// to the INVITE, no session. CANCEL of nothing: 481.
TEST_F(SiprecE2E, CancelBeforeTheAnswerGives487AndUnknownCancelGives481) {
  auto d = start();
  SipClient c(SipTransport::kTcp, sip_port_);
  SrcDialog dlg{c};
  auto [ct, body] = siprec_body({pcma_mline(30000, "1"), pcma_mline(30002, "2")}, two_party_metadata("1", "2"));
  std::string both = dlg.request("INVITE", ct, body, "Require: siprec\r\n");
  const std::string branch = dlg.last_branch;
  both += dlg.request("CANCEL", "", "", "", 1, branch);
  ASSERT_TRUE(c.send(both));
  std::map<std::string, int> got;  // CSeq method -> final status
  for (int i = 0; i < 2; ++i) {
    auto r = c.final_response();
    ASSERT_TRUE(r) << d->log();
    got[std::string(r->m.cseq_method)] = r->status();
  }
  EXPECT_EQ(got["CANCEL"], 200);
  EXPECT_EQ(got["INVITE"], 487);
  ASSERT_TRUE(wait_until([&] { return siprec_row(d->catalog()).state == "stopped"; })) << d->log();
  EXPECT_EQ(metric_value(metrics(*d), "callrec_siprec_cancelled_total"), 1);
  EXPECT_EQ(metric_value(metrics(*d), "callrec_siprec_sessions"), 0);
  SrcDialog other{c};
  ASSERT_TRUE(c.send(other.request("CANCEL", "", "")));
  auto r = c.final_response();
  ASSERT_TRUE(r) << "closed=" << c.closed() << " " << d->log();
  EXPECT_EQ(r->status(), 481);
}

// An INVITE in the dialog while our 200 to the previous one awaits its ACK: 491. After the ACK
// the same re-INVITE succeeds.
TEST_F(SiprecE2E, ReInviteBeforeTheAckIsGlare491) {
  auto d = start();
  SipClient c(SipTransport::kUdp, sip_port_);
  SrcDialog dlg{c};
  auto [ct, body] = siprec_body({pcma_mline(30000, "1"), pcma_mline(30002, "2")}, two_party_metadata("1", "2"));
  ASSERT_TRUE(c.send(dlg.request("INVITE", ct, body, "Require: siprec\r\n")));
  auto a = c.final_response();
  ASSERT_TRUE(a && a->status() == 200);
  dlg.to_tag = a->to_tag();
  ++dlg.cseq;
  ASSERT_TRUE(c.send(dlg.request("INVITE", ct, body)));
  std::optional<SipMsg> g;
  for (int i = 0; i < 5 && (!g || g->status() == 200); ++i) g = c.final_response();  // skip the 200 repeats
  ASSERT_TRUE(g);
  EXPECT_EQ(g->status(), 491);
  ASSERT_TRUE(c.send(dlg.request("ACK", "", "", "", 1)));
  ++dlg.cseq;
  ASSERT_TRUE(c.send(dlg.request("INVITE", ct, body)));
  std::optional<SipMsg> ok;
  for (int i = 0; i < 5 && (!ok || ok->m.cseq != dlg.cseq); ++i) ok = c.final_response();
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status(), 200);
  EXPECT_EQ(metric_value(metrics(*d), "callrec_siprec_glare_total"), 1);
}

// At the configured session cap an INVITE gets 503 with Retry-After (the SRC fails over).
TEST_F(SiprecE2E, SessionCapAnswers503WithRetryAfter) {
  auto d = start({"--siprec-max-sessions", "1"});
  SipClient c(SipTransport::kUdp, sip_port_);
  SrcDialog one{c}, two{c};
  auto [ct, body] = siprec_body({pcma_mline(30000, "1"), pcma_mline(30002, "2")}, two_party_metadata("1", "2"));
  ASSERT_TRUE(c.send(one.request("INVITE", ct, body, "Require: siprec\r\n")));
  auto a = c.final_response();
  ASSERT_TRUE(a && a->status() == 200);
  one.to_tag = a->to_tag();
  ASSERT_TRUE(c.send(one.request("ACK", "", "", "", 1)));
  ASSERT_TRUE(c.send(two.request("INVITE", ct, body, "Require: siprec\r\n")));
  auto b = c.final_response();
  ASSERT_TRUE(b);
  EXPECT_EQ(b->status(), 503);
  EXPECT_EQ(b->header("Retry-After"), "10");
  EXPECT_EQ(metric_value(metrics(*d), "callrec_siprec_refused_busy_total"), 1);
  // The first session still records.
  RtpSender s;
  const auto pkts = make_rtp(20, fileio::Codec::kPcma);
  auto ans = parse_answer(*a);
  ASSERT_TRUE(ans);
  s.send(ans->sdp.media[0].port, pkts);
  ++one.cseq;
  std::this_thread::sleep_for(200ms);
  ASSERT_TRUE(c.send(one.request("BYE", "", "")));
  ASSERT_TRUE(d->wait_log("recording stop:"));
  ASSERT_TRUE(wait_until([&] { return siprec_row(d->catalog()).state == "stopped"; }));
  const auto row = siprec_row(d->catalog());
  EXPECT_EQ(stream_packets(row, 0), pkts);
}

// Malformed and unwanted requests get their 4xx (or nothing, when there is nobody to answer),
// are counted, and neither crash the server nor disturb a running recording.
TEST_F(SiprecE2E, BadRequestsGetTheirStatusAndRunningRecordingsAreUndisturbed) {
  auto d = start();
  SipClient c(SipTransport::kUdp, sip_port_);
  SrcDialog live{c};
  auto [ct, body] = siprec_body({pcma_mline(30000, "1"), pcma_mline(30002, "2")}, two_party_metadata("1", "2"));
  ASSERT_TRUE(c.send(live.request("INVITE", ct, body, "Require: siprec\r\n")));
  auto a = c.final_response();
  ASSERT_TRUE(a && a->status() == 200);
  live.to_tag = a->to_tag();
  ASSERT_TRUE(c.send(live.request("ACK", "", "", "", 1)));
  auto ans = parse_answer(*a);
  ASSERT_TRUE(ans);
  RtpSender rtp;
  const auto pkts = make_rtp(80, fileio::Codec::kPcma);
  rtp.send(ans->sdp.media[0].port, {pkts.begin(), pkts.begin() + 40});

  auto expect_status = [&](const std::string& msg, int want, const char* what) {
    ASSERT_TRUE(c.send(msg));
    std::optional<SipMsg> r;
    do r = c.final_response(3000ms);
    while (r && r->m.call_id == live.call_id);  // 200 repeats of the live session
    ASSERT_TRUE(r) << what << ": no answer";
    EXPECT_EQ(r->status(), want) << what << ": " << r->raw.substr(0, r->raw.find("\r\n"));
  };
  auto req = [&](const std::string& ctype, const std::string& b, const std::string& extra = "Require: siprec\r\n") {
    SrcDialog dl{c};
    return dl.request("INVITE", ctype, b, extra);
  };
  // Garbage: no answer at all.
  ASSERT_TRUE(c.send(std::string("\x16\x03\x01 garbage that is not SIP\r\n\r\n")));
  EXPECT_FALSE(c.final_response(300ms));
  // Missing Call-ID.
  {
    std::string m = req(ct, body);
    const auto p = m.find("Call-ID:");
    m.erase(p, m.find("\r\n", p) + 2 - p);
    expect_status(m, 400, "no Call-ID");
  }
  // Content-Length larger than the datagram.
  {
    std::string m = req(ct, body);
    m = std::regex_replace(m, std::regex("Content-Length: [0-9]+"), "Content-Length: 60000");
    expect_status(m, 400, "Content-Length lies");
  }
  // Metadata with a DOCTYPE (entity expansion attack) and truncated metadata.
  {
    const std::string bomb =
        "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;\">]>"
        "<recording xmlns=\"urn:ietf:params:xml:ns:recording:1\"><participant>&b;</participant></recording>";
    auto [c1, b1] = siprec_body({pcma_mline(30000, "1")}, bomb);
    expect_status(req(c1, b1), 400, "DOCTYPE");
    auto [c2, b2] = siprec_body({pcma_mline(30000, "1")}, "<?xml version=\"1.0\"?><recording xmlns=\"urn:ietf:params:xml:ns:recording:1\"><participant");
    expect_status(req(c2, b2), 400, "truncated XML");
  }
  // Not a recording session: plain SDP, no Require, no +sip.src.
  {
    SrcDialog dl{c};
    std::string m = dl.request("INVITE", "application/sdp",
                               "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
                                   pcma_mline(30000, "1", "sendrecv"));
    m = std::regex_replace(m, std::regex(";\\+sip\\.src"), "");
    expect_status(m, 488, "not SIPREC");
  }
  expect_status(req(ct, body, "Require: siprec, 100rel-bogus\r\n"), 420, "unknown Require");
  expect_status(req("text/plain", "hello"), 415, "unknown body type");
  {
    std::vector<std::string> many;
    for (int i = 0; i < 70; ++i) many.push_back(pcma_mline(static_cast<std::uint16_t>(30000 + 2 * i), std::to_string(i)));
    auto [c3, b3] = siprec_body(many, "");
    expect_status(req(c3, b3), 488, "70 m-lines");
  }
  {
    auto [c4, b4] = siprec_body({"m=video 30000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=sendonly\r\n"}, "");
    expect_status(req(c4, b4), 488, "no audio");
  }
  {
    SrcDialog dl{c};
    dl.to_tag = "nosuchdialog";
    expect_status(dl.request("BYE", "", ""), 481, "BYE of no dialog");
    expect_status(dl.request("OPTIONS", "", ""), 200, "OPTIONS");
  }
  // Half-open TCP and a TCP message whose Content-Length promises more than ever comes.
  int half = connect_loopback(sip_port_);
  ASSERT_GE(half, 0);
  {
    SipClient t(SipTransport::kTcp, sip_port_);
    SrcDialog dl{t};
    std::string m = dl.request("INVITE", ct, body, "Require: siprec\r\n");
    m = std::regex_replace(m, std::regex("Content-Length: [0-9]+"), "Content-Length: 9000");
    ASSERT_TRUE(t.send(m));
    EXPECT_FALSE(t.final_response(300ms)) << "an incomplete message is not answered";
  }
  // The live session is undisturbed: the rest of its RTP is recorded, BYE works.
  rtp.send(ans->sdp.media[0].port, {pkts.begin() + 40, pkts.end()});
  std::this_thread::sleep_for(300ms);
  ++live.cseq;
  ASSERT_TRUE(c.send(live.request("BYE", "", "")));
  std::optional<SipMsg> b;
  do b = c.final_response();
  while (b && b->m.cseq_method != "BYE");
  ASSERT_TRUE(b && b->status() == 200);
  ASSERT_TRUE(wait_until([&] { return siprec_row(d->catalog()).state == "stopped"; })) << d->log();
  EXPECT_EQ(stream_packets(siprec_row(d->catalog()), 0), pkts);
  const std::string mx = metrics(*d);
  EXPECT_GE(metric_value(mx, "callrec_siprec_garbage_total"), 1);
  EXPECT_GE(metric_value(mx, "callrec_siprec_bad_requests_total"), 4);
  EXPECT_GE(metric_value(mx, "callrec_siprec_bad_metadata_total"), 2);
  EXPECT_EQ(metric_value(mx, "callrec_siprec_refused_not_siprec_total"), 1);
  ::close(half);
}

// Every vendor body of the shared folder, sent in an INVITE over TCP: the answer has one m-line
// per offered m-line with its label, and RTP to each accepted stream lands byte-exact in its
// own record file.
TEST_F(SiprecE2E, EveryVendorOfferIsAnsweredAndEachLabelRecordedByteExact) {
  const fs::path dir = shared_dir() / "siprec";
  if (!fs::exists(dir)) GTEST_SKIP() << "shared test data absent: " << dir;
  auto d = start();
  unsigned files = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("siprec-msg-", 0) != 0) continue;
    SCOPED_TRACE(name);
    ++files;
    std::string text = read_file(e.path());
    // Real SIP uses CRLF; the files keep their sources' LF. Media addresses are the vendors'
    // (and placeholders): the test's RTP comes from 127.0.0.1.
    text = std::regex_replace(text, std::regex("\r?\n"), "\r\n");
    text = std::regex_replace(text, std::regex("IN IP4 [0-9A-Za-z.]+"), "IN IP4 127.0.0.1");
    std::string body, ctype, extra = "Require: siprec\r\n";
    if (name.find("full-invite") != std::string::npos) {
      const auto hdr_end = text.find("\r\n\r\n");
      const std::string head = text.substr(0, hdr_end);
      body = text.substr(hdr_end + 4);
      std::smatch mm;
      ASSERT_TRUE(std::regex_search(head, mm, std::regex("Content-Type: ([^\r]+)")));
      ctype = mm[1];
    } else {
      const auto b0 = text.find("--");
      const auto eol = text.find("\r\n", b0);
      const std::string boundary = text.substr(b0 + 2, eol - b0 - 2);
      body = text;
      ctype = "multipart/mixed;boundary=" + boundary;
    }
    SipClient c(SipTransport::kTcp, sip_port_);
    SrcDialog dlg{c};
    ASSERT_TRUE(c.send(dlg.request("INVITE", ctype, body, extra)));
    auto ok = c.final_response();
    ASSERT_TRUE(ok) << d->log();
    ASSERT_EQ(ok->status(), 200) << ok->raw;
    dlg.to_tag = ok->to_tag();
    ASSERT_TRUE(c.send(dlg.request("ACK", "", "", "", 1)));
    sip::Sdp offer;
    ASSERT_TRUE(sip::parse_sdp(sip::find_sdp(ctype, body), offer));
    auto ans = parse_answer(*ok);
    ASSERT_TRUE(ans);
    ASSERT_EQ(ans->sdp.media.size(), offer.media.size()) << ans->text;
    std::map<std::uint16_t, std::vector<std::vector<std::byte>>> sent;  // port -> packets
    RtpSender s;
    for (std::size_t i = 0; i < offer.media.size(); ++i) {
      const auto& om = offer.media[i];
      const auto& am = ans->sdp.media[i];
      EXPECT_EQ(am.label, om.label);
      if (om.dir == sip::Direction::kInactive) {
        EXPECT_EQ(am.dir, sip::Direction::kInactive) << ans->text;
        continue;
      }
      ASSERT_NE(am.port, 0) << ans->text;
      EXPECT_EQ(am.dir, sip::Direction::kRecvOnly);
      const int pt = am.first_pt();
      ASSERT_TRUE(pt == 0 || pt == 8) << "G.711 preferred: " << ans->text;
      auto pkts = make_rtp(25, pt == 8 ? fileio::Codec::kPcma : fileio::Codec::kPcmu, static_cast<std::uint16_t>(100 * i),
                           0, 0x5000 + static_cast<std::uint32_t>(i));
      s.send(am.port, pkts);
      sent[am.port] = std::move(pkts);
    }
    std::this_thread::sleep_for(300ms);
    ++dlg.cseq;
    ASSERT_TRUE(c.send(dlg.request("BYE", "", "")));
    auto b = c.final_response();
    ASSERT_TRUE(b && b->status() == 200);
    ASSERT_TRUE(wait_until([&] {
      for (const auto& r : all_rows(d->catalog()))
        if (r.extra.count("siprec_call_id") && r.extra.at("siprec_call_id") == dlg.call_id && r.state == "stopped") return true;
      return false;
    })) << d->log();
    fileio::RecordingRow row;
    for (auto& r : all_rows(d->catalog()))
      if (r.extra.count("siprec_call_id") && r.extra.at("siprec_call_id") == dlg.call_id) row = r;
    // Streams in order of the accepted m-lines: match them by label, else by order.
    std::size_t k = 0;
    for (std::size_t i = 0; i < offer.media.size(); ++i) {
      const auto& am = ans->sdp.media[i];
      if (offer.media[i].dir == sip::Direction::kInactive || am.port == 0) continue;
      EXPECT_EQ(stream_packets(row, static_cast<std::uint32_t>(k)), sent[am.port]) << "m-line " << i;
      ++k;
    }
    // The calling party as the metadata marks it (Acme/Oracle apkt:callingParty).
    if (name == "siprec-msg-acme-sbc-offer-body.txt") {
      EXPECT_EQ(row.participants.size(), 2u);
      EXPECT_EQ(row.local_number, "9000");
      EXPECT_EQ(row.remote_number, "1002");
    }
    if (name == "siprec-msg-avaya-via-acme-sbc-offer-body.txt") {
      EXPECT_EQ(row.local_number, "31624895902");
      EXPECT_EQ(row.remote_number, "33187164021");
    }
  }
  EXPECT_GE(files, 8u);
}

// SIPp as the SRC, playing the shared scenarios over UDP and TCP: every scenario completes
// (SIPp exits 0) and the catalog holds the session with its metadata.
TEST_F(SiprecE2E, SippPlaysTheSharedSrcScenarios) {
  const fs::path dir = shared_dir() / "siprec";
  if (!fs::exists(dir)) GTEST_SKIP() << "shared test data absent: " << dir;
  if (!fs::exists("/usr/bin/sipp")) GTEST_SKIP() << "sipp (Debian sip-tester) is not installed";
  if (!fs::exists("/usr/bin/sox")) GTEST_SKIP() << "sox is not installed";
  auto d = start();
  const fs::path work = dir_.path() / "sipp";
  fs::create_directories(work);
  // The scenarios' media: the shared RTP capture, and a WAV that sox makes.
  const fs::path pcap = shared_dir() / "captures" / "rtp-only-pcma-ptime30-sipp.pcap";
  auto sx = run_cmd({"/usr/bin/sox", "-n", "-r", "8000", "-c", "1", "-e", "a-law", (work / "audio_alaw.wav").string(), "synth",
                     "3", "sine", "440"});
  ASSERT_EQ(sx.exit_code, 0) << sx.err;
  struct Case {
    std::string file;
    std::string transport;  // u1 / t1
  };
  const std::vector<Case> cases = {{"siprec-sipp-drachtio-uac-pcap.xml", "u1"},
                                   {"siprec-sipp-drachtio-uac-pcap.xml", "t1"},
                                   {"siprec-sipp-avaya-sbce-invite-update.xml", "u1"},
                                   {"siprec-sipp-broadworks-pause-resume.xml", "t1"}};
  std::size_t before = 0;
  for (const auto& cs : cases) {
    SCOPED_TRACE(cs.file + " " + cs.transport);
    std::string xml = read_file(dir / cs.file);
    xml = std::regex_replace(xml, std::regex("/tmp/pcap/g711a\\.pcap"), pcap.string());
    xml = std::regex_replace(xml, std::regex("audio_alaw\\.wav"), (work / "audio_alaw.wav").string());
    const fs::path scen = work / cs.file;
    std::ofstream(scen) << xml;
    // SIPp's own port: below the SIP (15000-19900) and RTP (20000-39999) ranges the tests draw
    // from; a port in use (exit 254, "binding a socket") is retried on another.
    CmdResult r;
    for (int attempt = 0; attempt < 3; ++attempt) {
      r = run_cmd({"/usr/bin/sipp", "-sf", scen.string(), "127.0.0.1:" + std::to_string(sip_port_), "-m", "1", "-i",
                      "127.0.0.1", "-p", std::to_string(10000 + std::random_device{}() % 2400), "-mp",
                  std::to_string(12400 + 2 * (std::random_device{}() % 1200)), "-t", cs.transport, "-nostdin",
                      "-timeout", "60", "-trace_err", "-error_file", (work / "err.log").string()},
                     90s);
      if (r.exit_code != 254) break;
    }
    EXPECT_EQ(r.exit_code, 0) << r.out.substr(r.out.size() > 3000 ? r.out.size() - 3000 : 0) << "\n"
                              << read_file(work / "err.log") << d->log();
    ASSERT_TRUE(wait_until([&] {
      const auto rows = all_rows(d->catalog());
      return rows.size() > before && rows.front().state == "stopped";
    })) << d->log();
    const auto rows = all_rows(d->catalog());
    before = rows.size();
    const auto& row = rows.front();
    EXPECT_EQ(row.source, "siprec");
    EXPECT_FALSE(row.streams.empty());
    if (cs.file.find("drachtio") != std::string::npos) {
      EXPECT_EQ(row.call_id, "hvij5wK4Wx") << "sipSessionID";
      EXPECT_EQ(row.participants.size(), 2u);
    }
  }
  EXPECT_EQ(metric_value(metrics(*d), "callrec_siprec_sessions_started_total"), static_cast<long long>(cases.size()));
}

}  // namespace
}  // namespace callrec::e2e
