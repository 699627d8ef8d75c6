// The SIPREC recording server's secure and server-ended paths, end to end against the real
// callrecd: TLS (server authentication, mutual TLS, refused clients, half-open handshakes),
// SRTP (SDES keys, decryption on the writer threads, tampered packets dropped, unusable
// suites refused), and the BYEs the server sends itself (full disk, operator stop with UDP
// retransmissions, shutdown). Certificates are made by the test with /usr/bin/openssl.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <random>
#include <regex>

#include "fileio/srtp.hpp"
#include "harness.hpp"
#include "sip_client.hpp"

namespace callrec::e2e {
namespace {

namespace sip = control::sip;
using Packets = std::vector<std::vector<std::byte>>;

std::uint16_t random_sip_port() {
  static std::random_device rd;
  return static_cast<std::uint16_t>(15000 + rd() % 4900);
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
  RtpSender(const RtpSender&) = delete;
  RtpSender& operator=(const RtpSender&) = delete;
  void send_one(std::uint16_t port, const std::vector<std::byte>& p) {
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::sendto(fd_, p.data(), p.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
  }
  void send(std::uint16_t port, const Packets& pkts) {
    for (const auto& p : pkts) {
      send_one(port, p);
      std::this_thread::sleep_for(std::chrono::microseconds(300));
    }
  }

 private:
  int fd_ = -1;
};

std::vector<fileio::RecordingRow> all_rows(const fs::path& db) {
  fileio::Catalog c;
  std::vector<fileio::RecordingRow> rows;
  if (!c.open_read_only(db)) return rows;
  fileio::CatalogFilter f;
  f.limit = 0;
  (void)c.list(f, rows);
  return rows;
}

/// The catalog row of the SIPREC session with this SIP Call-ID (empty row when absent).
fileio::RecordingRow row_of(const fs::path& db, const std::string& sip_call_id) {
  for (auto& r : all_rows(db))
    if (auto it = r.extra.find("siprec_call_id"); it != r.extra.end() && it->second == sip_call_id) return r;
  return {};
}

bool stopped(const fs::path& db, const std::string& sip_call_id) { return row_of(db, sip_call_id).state == "stopped"; }

/// Every packet of one stream of a recording, in file order.
Packets stream_packets(const fileio::RecordingRow& row, std::uint32_t stream) {
  Packets out;
  for (const auto& s : row.segments)
    if (s.stream == stream)
      for (auto& p : read_packets(s.path)) out.push_back(std::move(p));
  return out;
}

std::uint16_t seq_of(const std::vector<std::byte>& p) {
  return p.size() < 4 ? 0 : static_cast<std::uint16_t>((std::to_integer<unsigned>(p[2]) << 8) | std::to_integer<unsigned>(p[3]));
}

/// got == want, or a failure that says which packets differ (by RTP sequence number) instead of
/// dumping the bytes.
::testing::AssertionResult same_packets(const Packets& got, const Packets& want) {
  if (got == want) return ::testing::AssertionSuccess();
  auto seqs = [](const Packets& v) {
    std::string s;
    for (const auto& p : v) s += std::to_string(seq_of(p)) + "(" + std::to_string(p.size()) + ") ";
    return s;
  };
  std::size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  return ::testing::AssertionFailure() << got.size() << " packets recorded, " << want.size() << " expected; first difference at #"
                                       << i << "\n  recorded: " << seqs(got) << "\n  expected: " << seqs(want);
}

const fileio::StreamRow* stream_with_label(const fileio::RecordingRow& row, const std::string& label) {
  for (const auto& s : row.streams)
    if (s.label == label) return &s;
  return nullptr;
}

struct Answer {
  sip::Sdp sdp;
  std::string text;
};

/// A response of ours to a request the server sent (its BYE): Vias, From, To, Call-ID, CSeq.
std::string response_to(const SipMsg& req, int code, const std::string& reason) {
  std::string r = "SIP/2.0 " + std::to_string(code) + " " + reason + "\r\n";
  sip::for_each_header(req.m, "Via", 'v', [&](std::string_view v) { r += "Via: " + std::string(v) + "\r\n"; });
  r += "From: " + std::string(req.m.from) + "\r\n";
  r += "To: " + std::string(req.m.to) + "\r\n";
  r += "Call-ID: " + std::string(req.m.call_id) + "\r\n";
  r += "CSeq: " + std::to_string(req.m.cseq) + " " + std::string(req.m.cseq_method) + "\r\n";
  r += "Content-Length: 0\r\n\r\n";
  return r;
}

/// The next request the server sends with this method (responses, e.g. 200 repeats, skipped).
std::optional<SipMsg> next_request(SipClient& c, std::string_view method, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    auto m = c.recv(left);
    if (!m) return std::nullopt;
    if (m->m.request && m->m.method == method) return m;
  }
}

/// INVITE (Require: siprec) with these m-lines and metadata; 200 expected, then ACK. nullopt
/// (with a test failure) otherwise.
std::optional<Answer> invite_and_ack(SipClient& c, SrcDialog& dlg, const std::vector<std::string>& mlines,
                                     const std::string& metadata, DaemonProcess& d) {
  auto [ct, body] = siprec_body(mlines, metadata);
  if (!c.send(dlg.request("INVITE", ct, body, "Require: siprec\r\n"))) {
    ADD_FAILURE() << "INVITE not sent";
    return std::nullopt;
  }
  auto ok = c.final_response();
  if (!ok || ok->status() != 200) {
    ADD_FAILURE() << "INVITE: " << (ok ? ok->raw : "no answer, closed=" + std::to_string(c.closed())) << "\n"
                  << d.log();
    return std::nullopt;
  }
  dlg.to_tag = ok->to_tag();
  Answer a;
  a.text = ok->body();
  if (!sip::parse_sdp(a.text, a.sdp)) {
    ADD_FAILURE() << "unparseable answer: " << ok->raw;
    return std::nullopt;
  }
  if (!c.send(dlg.request("ACK", "", "", "", dlg.cseq))) ADD_FAILURE() << "ACK not sent";
  return a;
}

/// BYE from the SRC; true when it is answered 200.
bool bye(SipClient& c, SrcDialog& dlg) {
  ++dlg.cseq;
  if (!c.send(dlg.request("BYE", "", ""))) return false;
  for (int i = 0; i < 5; ++i) {
    auto r = c.final_response();
    if (!r) return false;
    if (r->m.cseq_method == "BYE") return r->status() == 200;
  }
  return false;
}

/// n PCMA packets with 1400-byte payloads (175 ms each): fills a volume with few packets.
Packets make_big_rtp(std::size_t n, std::uint32_t ssrc) {
  Packets out;
  for (std::size_t k = 0; k < n; ++k) {
    std::vector<std::byte> p(12 + 1400, std::byte{0xD5});
    fileio::write_rtp_header(p.data(), 8, k == 0, static_cast<std::uint16_t>(100 + k),
                             static_cast<std::uint32_t>(1400 * k), ssrc);
    for (std::size_t i = 12; i < p.size(); i += 7) p[i] = static_cast<std::byte>(k + i);
    out.push_back(std::move(p));
  }
  return out;
}

// ---- fixture -----------------------------------------------------------------------------

class SiprecSecureE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(bin("callrecd"))) GTEST_SKIP() << "callrecd not built";
    // A TLS peer that closes under SSL_write must not kill the test with SIGPIPE.
    ::signal(SIGPIPE, SIG_IGN);
  }
  void TearDown() override {
    if (!mounted_.empty()) {
      auto r = run_cmd({"/usr/bin/umount", "-l", mounted_.string()}, 30s);
      if (r.exit_code != 0) ADD_FAILURE() << "umount " << mounted_ << ": " << r.err;
      mounted_.clear();
    }
  }

  /// Starts callrecd with UDP/TCP and/or TLS SIPREC listeners on random ports (retried when a
  /// port is taken by a parallel test).
  std::unique_ptr<DaemonProcess> start(std::vector<std::string> extra, bool udp_tcp, bool tls,
                                       const std::string& ca = "") {
    std::unique_ptr<DaemonProcess> d;
    for (int attempt = 0; attempt < 4; ++attempt) {
      std::vector<std::string> a = extra;
      if (udp_tcp) {
        sip_port_ = random_sip_port();
        a.insert(a.end(), {"--siprec-listen", "127.0.0.1:" + std::to_string(sip_port_)});
      }
      if (tls) {
        do tls_port_ = random_sip_port();
        while (tls_port_ == sip_port_);
        // Certificate and key before the listener: callrecd checks --siprec-tls-listen as soon as it
        // is parsed (see the report of this test's commit), so the order matters.
        a.insert(a.end(), {"--siprec-tls-cert", pem("server"), "--siprec-tls-key", key("server"),
                           "--siprec-tls-listen", "127.0.0.1:" + std::to_string(tls_port_)});
        if (!ca.empty()) a.insert(a.end(), {"--siprec-tls-ca", ca});
      }
      d.reset();
      d = std::make_unique<DaemonProcess>(dir_.path(), a);
      if (d->ready() || d->log().find("in use") == std::string::npos) break;
    }
    EXPECT_TRUE(d->ready()) << d->log();
    return d;
  }
  std::string metrics(DaemonProcess& d) { return http(d.metrics_port(), "GET", "/metrics"); }
  long long metric(DaemonProcess& d, const std::string& name) { return metric_value(metrics(d), name); }

  // PKI: a CA, a server certificate for 127.0.0.1 and a client certificate signed by it, and a
  // rogue CA with its own client certificate.
  std::string pem(const std::string& name) const { return (pki() / (name + ".pem")).string(); }
  std::string key(const std::string& name) const { return (pki() / (name + ".key")).string(); }
  fs::path pki() const { return dir_.path() / "pki"; }

  void openssl(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"/usr/bin/openssl"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = run_cmd(argv, 60s);
    ASSERT_EQ(r.exit_code, 0) << "openssl " << args[0] << ": " << r.err;
  }
  void make_ca(const std::string& name, const std::string& cn) {
    openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key(name),
             "-out", pem(name), "-days", "2", "-subj", "/CN=" + cn, "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"});
  }
  void issue(const std::string& name, const std::string& ca, const std::string& cn, const std::string& ext) {
    const fs::path extfile = pki() / (name + ".ext");
    std::ofstream(extfile) << ext << "\n";
    const fs::path csr = pki() / (name + ".csr");
    ASSERT_NO_FATAL_FAILURE(openssl({"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                                     "-keyout", key(name), "-out", csr.string(), "-subj", "/CN=" + cn}));
    ASSERT_NO_FATAL_FAILURE(openssl({"x509", "-req", "-in", csr.string(), "-CA", pem(ca), "-CAkey", key(ca), "-set_serial",
                                     std::to_string(++serial_), "-out", pem(name), "-days", "2", "-extfile",
                                     extfile.string()}));
  }
  void make_pki() {
    if (!fs::exists("/usr/bin/openssl")) GTEST_SKIP() << "/usr/bin/openssl is not installed";
    fs::create_directories(pki());
    ASSERT_NO_FATAL_FAILURE(make_ca("ca", "callrec test CA"));
    ASSERT_NO_FATAL_FAILURE(issue("server", "ca", "127.0.0.1",
                                  "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
                                  "keyUsage=critical,digitalSignature"));
    ASSERT_NO_FATAL_FAILURE(issue("client", "ca", "src.example.com",
                                  "subjectAltName=DNS:src.example.com\nextendedKeyUsage=clientAuth\n"
                                  "keyUsage=critical,digitalSignature"));
    ASSERT_NO_FATAL_FAILURE(make_ca("rogue-ca", "rogue CA"));
    ASSERT_NO_FATAL_FAILURE(issue("rogue", "rogue-ca", "src.example.com",
                                  "subjectAltName=DNS:src.example.com\nextendedKeyUsage=clientAuth\n"
                                  "keyUsage=critical,digitalSignature"));
  }

  /// A whole recording session on client c: INVITE with two labelled PCMA m-lines, 200, ACK,
  /// RTP to both answered ports, BYE 200; the record files hold every packet byte for byte.
  /// `midway` runs between the first and the second half of the RTP.
  void record_session(SipClient& c, DaemonProcess& d, const std::string& transport,
                      const std::function<void()>& midway = {}) {
    ASSERT_TRUE(c.ok()) << c.tls_error();
    SrcDialog dlg{c};
    auto ans = invite_and_ack(c, dlg, {pcma_mline(30000, "10"), pcma_mline(30002, "20")},
                              two_party_metadata("10", "20", false, "secure-" + dlg.call_id), d);
    ASSERT_TRUE(ans);
    ASSERT_EQ(ans->sdp.media.size(), 2u) << ans->text;
    for (const auto& m : ans->sdp.media) {
      EXPECT_NE(m.port, 0) << ans->text;
      EXPECT_EQ(m.dir, sip::Direction::kRecvOnly) << ans->text;
    }
    const auto a = make_rtp(40, fileio::Codec::kPcma, 100, 1000, 0xA11CE, 440);
    const auto b = make_rtp(40, fileio::Codec::kPcma, 7000, 9000, 0xB0B, 880);
    RtpSender ra, rb;
    ra.send(ans->sdp.media[0].port, {a.begin(), a.begin() + 20});
    rb.send(ans->sdp.media[1].port, {b.begin(), b.begin() + 20});
    if (midway) midway();
    ra.send(ans->sdp.media[0].port, {a.begin() + 20, a.end()});
    rb.send(ans->sdp.media[1].port, {b.begin() + 20, b.end()});
    std::this_thread::sleep_for(300ms);
    ASSERT_TRUE(bye(c, dlg)) << d.log();
    ASSERT_TRUE(wait_until([&] { return stopped(d.catalog(), dlg.call_id); })) << d.log();
    const auto row = row_of(d.catalog(), dlg.call_id);
    EXPECT_EQ(row.source, "siprec");
    EXPECT_EQ(row.stop_reason, "hangup") << "the SRC's BYE";
    EXPECT_EQ(row.extra.count("siprec_transport") ? row.extra.at("siprec_transport") : "", transport);
    const auto* sa = stream_with_label(row, "10");
    const auto* sb = stream_with_label(row, "20");
    ASSERT_TRUE(sa && sb);
    EXPECT_TRUE(same_packets(stream_packets(row, sa->stream), a));
    EXPECT_TRUE(same_packets(stream_packets(row, sb->stream), b));
  }

  TempDir dir_;
  fs::path mounted_;
  std::uint16_t sip_port_ = 0, tls_port_ = 0;
  unsigned serial_ = 1000;
};

// ---- TLS ---------------------------------------------------------------------------------

// Server authentication only: an SRC that verifies the server against the test CA records a
// whole session over TLS; an SRC that trusts another CA refuses the server.
TEST_F(SiprecSecureE2E, TlsSessionVerifiedAgainstTheCaRecordsByteExact) {
  ASSERT_NO_FATAL_FAILURE(make_pki());
  auto d = start({}, false, true);
  ASSERT_TRUE(d->ready());
  SipClient::TlsConfig verify{"", "", pem("ca")};
  SipClient c(SipTransport::kTls, tls_port_, &verify);
  ASSERT_TRUE(c.ok()) << "TLS handshake: " << c.tls_error() << "\n" << d->log();
  ASSERT_NO_FATAL_FAILURE(record_session(c, *d, "TLS"));

  // The client really verifies: trusting only the rogue CA, the handshake fails.
  SipClient::TlsConfig wrong{"", "", pem("rogue-ca")};
  SipClient bad(SipTransport::kTls, tls_port_, &wrong);
  EXPECT_FALSE(bad.ok()) << "a server certificate the rogue CA did not sign was accepted";
  EXPECT_NE(bad.tls_error().find("certificate verify failed"), std::string::npos) << bad.tls_error();

  const std::string mx = metrics(*d);
  EXPECT_EQ(metric_value(mx, "callrec_siprec_sessions_started_total"), 1);
  EXPECT_GE(metric_value(mx, "callrec_siprec_tls_accepted_total"), 2);
}

// Mutual TLS: the SRC with a certificate from the configured CA records; an SRC without a
// certificate and one with a certificate of another CA are refused before any SIP answer
// (TLS 1.3: the refusal shows on the first read), counted as handshake failures, and the
// recording in progress is undisturbed.
TEST_F(SiprecSecureE2E, MutualTlsRecordsWithTheCaCertificateAndRefusesOthers) {
  ASSERT_NO_FATAL_FAILURE(make_pki());
  auto d = start({}, false, true, pem("ca"));
  ASSERT_TRUE(d->ready());
  SipClient::TlsConfig good{pem("client"), key("client"), pem("ca")};
  SipClient c(SipTransport::kTls, tls_port_, &good);
  ASSERT_TRUE(c.ok()) << c.tls_error() << "\n" << d->log();

  auto refused = [&](const SipClient::TlsConfig& cfg, const char* what) {
    SCOPED_TRACE(what);
    SipClient x(SipTransport::kTls, tls_port_, &cfg);
    if (!x.ok()) return;  // refused in the handshake (TLS 1.2, or the alert came first)
    SrcDialog dl{x};
    (void)x.send(dl.request("OPTIONS", "", ""));
    std::optional<SipMsg> r = x.recv(3000ms);
    EXPECT_FALSE(r.has_value()) << what << " got an answer: " << r->raw;
    EXPECT_TRUE(x.closed()) << what << ": the connection was not closed";
  };
  ASSERT_NO_FATAL_FAILURE(record_session(c, *d, "TLS", [&] {
    refused({"", "", pem("ca")}, "no client certificate");
    refused({pem("rogue"), key("rogue"), pem("ca")}, "rogue client certificate");
  }));
  EXPECT_TRUE(wait_until([&] { return metric(*d, "callrec_siprec_tls_handshake_failures_total") >= 2; }, 5s))
      << metrics(*d);
  std::this_thread::sleep_for(200ms);
  const std::string mx = metrics(*d);
  EXPECT_EQ(metric_value(mx, "callrec_siprec_tls_handshake_failures_total"), 2) << mx;
  EXPECT_EQ(metric_value(mx, "callrec_siprec_sessions_started_total"), 1);
  EXPECT_EQ(metric_value(mx, "callrec_siprec_requests_total"), 3) << "INVITE, ACK, BYE: nothing from the refused";
  EXPECT_EQ(all_rows(d->catalog()).size(), 1u);
}

// A TCP connection to the TLS port that never starts its handshake is closed by the server
// after the handshake timeout (10 s), counted; a TLS session that runs meanwhile, before and
// after the close, is not disturbed.
TEST_F(SiprecSecureE2E, HalfOpenTlsHandshakeIsClosedAfterTheTimeoutWhileAGoodSessionRecords) {
  ASSERT_NO_FATAL_FAILURE(make_pki());
  auto d = start({}, false, true);
  ASSERT_TRUE(d->ready());
  const int half = connect_loopback(tls_port_);
  ASSERT_GE(half, 0);
  const auto t0 = std::chrono::steady_clock::now();
  SipClient::TlsConfig verify{"", "", pem("ca")};
  SipClient c(SipTransport::kTls, tls_port_, &verify);
  double closed_after = -1;
  ASSERT_NO_FATAL_FAILURE(record_session(c, *d, "TLS", [&] {
    // Mid-session: wait for the half-open connection to be closed.
    pollfd p{half, POLLIN, 0};
    const int rc = ::poll(&p, 1, 16000);
    ASSERT_EQ(rc, 1) << "the half-open connection is still open after 16 s";
    char buf[16];
    const ssize_t n = ::read(half, buf, sizeof buf);
    EXPECT_LE(n, 0) << "the server sent something to a client that never said hello";
    closed_after = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }));
  ::close(half);
  EXPECT_GE(closed_after, 9.5) << "closed before the handshake timeout";
  EXPECT_LE(closed_after, 13.0) << "closed long after the 10 s handshake timeout";
  const std::string mx = metrics(*d);
  EXPECT_EQ(metric_value(mx, "callrec_siprec_tls_handshake_timeouts_total"), 1) << mx;
  EXPECT_EQ(metric_value(mx, "callrec_siprec_tls_handshake_failures_total"), 0) << mx;
}

// ---- SRTP --------------------------------------------------------------------------------

/// A fresh random SDES key for the offer (tag, AES_CM_128_HMAC_SHA1_80).
fileio::SdesCrypto offer_key(unsigned tag) {
  fileio::SdesCrypto base;
  base.tag = tag;
  base.suite = fileio::SrtpSuite::kAesCm128HmacSha1_80;
  return fileio::make_sdes_answer(base);
}

std::string savp_mline(std::uint16_t port, const std::string& label, const std::string& crypto_value) {
  return "m=audio " + std::to_string(port) + " RTP/SAVP 8\r\na=rtpmap:8 PCMA/8000\r\na=crypto:" + crypto_value +
         "\r\na=label:" + label + "\r\na=sendonly\r\n";
}

Packets protect_all(const fileio::SdesCrypto& k, const Packets& plain) {
  std::string why;
  auto s = fileio::SrtpSender::create(k, &why);
  EXPECT_TRUE(s) << why;
  Packets out;
  if (!s) return out;
  for (const auto& p : plain) {
    std::vector<std::byte> b(p.size() + 16);
    std::memcpy(b.data(), p.data(), p.size());
    const std::size_t n = s->protect(reinterpret_cast<std::uint8_t*>(b.data()), p.size(), b.size());
    EXPECT_GT(n, p.size());
    b.resize(n);
    out.push_back(std::move(b));
  }
  return out;
}

// RTP/SAVP with SDES: the answer is RTP/SAVP with our own key for the same suite and tag,
// recvonly; the SRC's packets, encrypted with the offer's key, land decrypted in the record
// files byte for byte; tampered packets are dropped; the catalog says srtp.
TEST_F(SiprecSecureE2E, SrtpStreamsAreDecryptedAndStoredAsPlainRtp) {
  auto d = start({}, true, false);
  ASSERT_TRUE(d->ready());
  SipClient c(SipTransport::kUdp, sip_port_);
  SrcDialog dlg{c};
  const fileio::SdesCrypto ka = offer_key(1), kb = offer_key(2);
  auto ans = invite_and_ack(c, dlg, {savp_mline(30000, "10", fileio::format_sdes(ka)), savp_mline(30002, "20", fileio::format_sdes(kb))},
                            two_party_metadata("10", "20"), *d);
  ASSERT_TRUE(ans);
  ASSERT_EQ(ans->sdp.media.size(), 2u) << ans->text;
  const fileio::SdesCrypto* offered[2] = {&ka, &kb};
  for (std::size_t i = 0; i < 2; ++i) {
    const auto& m = ans->sdp.media[i];
    EXPECT_NE(m.port, 0) << ans->text;
    EXPECT_EQ(m.proto, "RTP/SAVP") << ans->text;
    EXPECT_EQ(m.dir, sip::Direction::kRecvOnly) << ans->text;
    ASSERT_EQ(m.crypto.size(), 1u) << ans->text;
    fileio::SdesCrypto mine;
    std::string why;
    ASSERT_TRUE(fileio::parse_sdes(m.crypto[0], mine, &why)) << why << ": " << ans->text;
    EXPECT_EQ(mine.tag, offered[i]->tag);
    EXPECT_EQ(mine.suite, offered[i]->suite);
    EXPECT_EQ(mine.key_salt.size(), offered[i]->key_salt.size());
    EXPECT_NE(mine.key_salt, offered[i]->key_salt) << "the answer must carry its own key, not echo the offer's";
  }
  EXPECT_NE(ans->sdp.media[0].crypto[0], ans->sdp.media[1].crypto[0]);

  const auto a = make_rtp(60, fileio::Codec::kPcma, 100, 1000, 0xA11CE, 440);
  const auto b = make_rtp(60, fileio::Codec::kPcma, 65500, 9000, 0xB0B, 880);  // seq wraps: ROC
  Packets sa = protect_all(ka, a), sb = protect_all(kb, b);
  ASSERT_EQ(sa.size(), a.size());
  ASSERT_EQ(sb.size(), b.size());
  // On the way, a few forged packets (a genuine one with a payload or tag byte flipped) come
  // just before the genuine packet of the same sequence number, and a few genuine packets are
  // replayed: the forgeries and replays must be dropped (the genuine packets recorded, once).
  // A forgery replacing a packet would leave a gap the assembler may fill with silence when the
  // arrival clock backs it; sent before the genuine one, the outcome is exact.
  const std::vector<std::size_t> forged = {7, 23, 41};
  const std::vector<std::size_t> replayed = {15, 50};
  // And one forgery in place of its genuine packet, which never comes: dropped. Its sequence
  // number is then a loss: absent, or silence when the arrival clock backs the gap (never the
  // forgery's bytes).
  const std::size_t lost = 55;
  auto without_lost = [&](const Packets& plain, bool filled) {
    Packets w = plain;
    if (!filled) {
      w.erase(w.begin() + static_cast<long>(lost));
    } else {
      std::fill(w[lost].begin() + 12, w[lost].end(), std::byte{0xD5});  // PCMA silence
      w[lost][1] &= std::byte{0x7F};                                        // no marker
    }
    return w;
  };
  RtpSender ra, rb;
  for (std::size_t i = 0; i < sa.size(); ++i) {
    if (std::find(forged.begin(), forged.end(), i) != forged.end()) {
      auto fa = sa[i], fb = sb[i];
      fa[40] ^= std::byte{0x01};             // payload
      fb[fb.size() - 1] ^= std::byte{0x80};  // authentication tag
      ra.send_one(ans->sdp.media[0].port, fa);
      rb.send_one(ans->sdp.media[1].port, fb);
    }
    if (i == lost) {
      auto fa = sa[i], fb = sb[i];
      fa[20] ^= std::byte{0x40};
      fb[fb.size() - 3] ^= std::byte{0x02};
      ra.send_one(ans->sdp.media[0].port, fa);
      rb.send_one(ans->sdp.media[1].port, fb);
      continue;
    }
    ra.send_one(ans->sdp.media[0].port, sa[i]);
    rb.send_one(ans->sdp.media[1].port, sb[i]);
    if (std::find(replayed.begin(), replayed.end(), i) != replayed.end()) {
      ra.send_one(ans->sdp.media[0].port, sa[i - 2]);
      rb.send_one(ans->sdp.media[1].port, sb[i - 2]);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(300));
  }
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(bye(c, dlg)) << d->log();
  ASSERT_TRUE(wait_until([&] { return stopped(d->catalog(), dlg.call_id); })) << d->log();
  const auto row = row_of(d->catalog(), dlg.call_id);
  const auto* s10 = stream_with_label(row, "10");
  const auto* s20 = stream_with_label(row, "20");
  ASSERT_TRUE(s10 && s20);
  EXPECT_NE(s10->flags.find("srtp"), std::string::npos) << s10->flags;
  EXPECT_NE(s20->flags.find("srtp"), std::string::npos) << s20->flags;
  for (const auto& [st, plain] : {std::pair{s10, &a}, std::pair{s20, &b}}) {
    SCOPED_TRACE("label " + st->label + (st == s20 ? " (sequence wraps)" : ""));
    const Packets got = stream_packets(row, st->stream);
    const Packets want = got.size() == plain->size() ? without_lost(*plain, true) : without_lost(*plain, false);
    EXPECT_TRUE(same_packets(got, want)) << "plain RTP, forgeries and replays dropped";
  }
  const std::string mx = metrics(*d);
  EXPECT_EQ(metric_value(mx, "callrec_siprec_srtp_streams_total"), 2);
  EXPECT_EQ(metric_value(mx, "callrec_assembler_dropped_total{cause=\"srtp\"}"),
            static_cast<long long>(2 * (forged.size() + replayed.size() + 1)))
      << "every forgery and replay counted as an SRTP failure";
  for (const auto* st : {s10, s20}) {
    EXPECT_EQ(st->packets, a.size() - 1) << "forgeries and replays are not received packets";
    EXPECT_EQ(st->lost, 1u) << "the forged-only sequence number";
  }
}

// An offer whose only crypto suites cannot be used (an unsupported suite, a malformed key) has
// that m-line rejected with port 0; when no m-line is left, the INVITE gets 488.
TEST_F(SiprecSecureE2E, UnusableCryptoRejectsTheMlineAnd488WhenNothingIsLeft) {
  auto d = start({}, true, false);
  ASSERT_TRUE(d->ready());
  SipClient c(SipTransport::kUdp, sip_port_);
  const fileio::SdesCrypto k = offer_key(1);
  const std::string f8 = "1 F8_128_HMAC_SHA1_80 inline:" + fileio::format_sdes(k).substr(fileio::format_sdes(k).find("inline:") + 7);
  const std::string short_key = "1 AES_CM_128_HMAC_SHA1_80 inline:QUJDREVGR0g=";
  const std::string bad_b64 = "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!not-base64!!!!not-base64!!!!not-base64!!";

  // A good SAVP m-line and an F8 one: 200, the F8 one with port 0.
  {
    SrcDialog dlg{c};
    auto ans = invite_and_ack(c, dlg, {savp_mline(30000, "10", fileio::format_sdes(k)), savp_mline(30002, "20", f8)},
                              two_party_metadata("10", "20"), *d);
    ASSERT_TRUE(ans);
    ASSERT_EQ(ans->sdp.media.size(), 2u) << ans->text;
    EXPECT_NE(ans->sdp.media[0].port, 0) << ans->text;
    EXPECT_EQ(ans->sdp.media[1].port, 0) << ans->text;
    EXPECT_TRUE(ans->sdp.media[1].crypto.empty()) << "no key for a rejected m-line: " << ans->text;
    EXPECT_EQ(ans->sdp.media[1].label, "20");
    ASSERT_TRUE(bye(c, dlg));
  }
  // Only unusable crypto: 488.
  for (const std::string& crypto : {f8, short_key, bad_b64}) {
    SCOPED_TRACE(crypto);
    SrcDialog dlg{c};
    auto [ct, body] = siprec_body({savp_mline(30000, "10", crypto)}, "");
    ASSERT_TRUE(c.send(dlg.request("INVITE", ct, body, "Require: siprec\r\n")));
    std::optional<SipMsg> r;
    do r = c.final_response(3000ms);
    while (r && r->m.call_id != dlg.call_id);
    ASSERT_TRUE(r) << d->log();
    EXPECT_EQ(r->status(), 488) << r->raw;
    // ACK of the non-2xx (same branch), so the 488 is not repeated.
    const std::string branch = dlg.last_branch;
    dlg.to_tag = r->to_tag();
    ASSERT_TRUE(c.send(dlg.request("ACK", "", "", "", 1, branch)));
  }
  // Savp without any a=crypto: rejected too.
  {
    SrcDialog dlg{c};
    auto [ct, body] = siprec_body({"m=audio 30000 RTP/SAVP 8\r\na=rtpmap:8 PCMA/8000\r\na=sendonly\r\n"}, "");
    ASSERT_TRUE(c.send(dlg.request("INVITE", ct, body, "Require: siprec\r\n")));
    std::optional<SipMsg> r;
    do r = c.final_response(3000ms);
    while (r && r->m.call_id != dlg.call_id);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status(), 488) << r->raw;
  }
  const std::string mx = metrics(*d);
  EXPECT_EQ(metric_value(mx, "callrec_siprec_sessions_started_total"), 1);
  EXPECT_GE(metric_value(mx, "callrec_siprec_streams_rejected_total"), 5);
  EXPECT_EQ(metric_value(mx, "callrec_siprec_refused_media_total"), 4);
  EXPECT_EQ(metric_value(mx, "callrec_siprec_srtp_streams_total"), 1);
}

// ---- BYEs from the server ----------------------------------------------------------------

// The storage volume fills up (--reserve-mb): the recording is stopped with no_space and the
// SRS ends the SIPREC dialog itself, with a BYE whose Reason says no_space.
TEST_F(SiprecSecureE2E, FullDiskStopsTheRecordingAndTheServerSendsByeWithNoSpace) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a small tmpfs";
  const fs::path vol = dir_.path() / "vol";
  fs::create_directories(vol);
  auto m = run_cmd({"/usr/bin/mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", vol.string()}, 30s);
  if (m.exit_code != 0) GTEST_SKIP() << "tmpfs mount failed: " << m.err;
  mounted_ = vol;
  // 4 MB volume, 2 MiB kept free: about 2 MB to record. The catalog is elsewhere.
  // T1 2 s: the BYE's first retransmission would come 2 s after it, so a client that is slow
  // to see the BYE on a loaded machine still answers it in time; a daemon that ignored the
  // 200 would still retransmit inside the 3 s window below.
  auto d = start({"--storage", (vol / "recordings").string(), "--reserve-mb", "2", "--flush-ms", "50",
                  "--siprec-t1-ms", "2000"},
                 true, false);
  ASSERT_TRUE(d->ready());
  SipClient c(SipTransport::kUdp, sip_port_);
  SrcDialog dlg{c};
  auto ans = invite_and_ack(c, dlg, {pcma_mline(30000, "10"), pcma_mline(30002, "20")}, two_party_metadata("10", "20"), *d);
  ASSERT_TRUE(ans);
  ASSERT_EQ(ans->sdp.media.size(), 2u);
  const std::uint16_t pa = ans->sdp.media[0].port, pb = ans->sdp.media[1].port;
  const Packets a = make_big_rtp(4000, 0xA), b = make_big_rtp(4000, 0xB);
  RtpSender ra, rb;
  std::optional<SipMsg> server_bye;
  std::size_t sent = 0;
  for (; sent < a.size() && !server_bye; ++sent) {
    ra.send_one(pa, a[sent]);
    rb.send_one(pb, b[sent]);
    // Looked for often (every ~30 ms): the BYE must be answered before its first retransmission
    // (T1). 5 ms, not 1: recv() rounds the time left down to whole milliseconds.
    if (sent % 8 == 7) server_bye = next_request(c, "BYE", 5ms);
    std::this_thread::sleep_for(2800us);  // ~300 packets/s per stream, ~0.8 MB/s in all
  }
  if (!server_bye) server_bye = next_request(c, "BYE", 5s);
  ASSERT_TRUE(server_bye) << "no BYE from the server after " << sent << " packets per stream\n" << d->log();
  EXPECT_EQ(std::string(server_bye->m.call_id), dlg.call_id);
  EXPECT_EQ(server_bye->to_tag(), dlg.from_tag) << "the BYE's To is our From";
  EXPECT_NE(server_bye->header("Reason").find("no_space"), std::string::npos) << server_bye->raw;
  const auto t_bye = std::chrono::steady_clock::now();
  ASSERT_TRUE(c.send(response_to(*server_bye, 200, "OK")));
  // Answered: no retransmission of it.
  {
    auto again = next_request(c, "BYE", 3000ms);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_bye).count();
    EXPECT_FALSE(again) << "the BYE was retransmitted " << dt << " s after its 200\n" << server_bye->raw << d->log();
  }

  ASSERT_TRUE(wait_until([&] { return stopped(d->catalog(), dlg.call_id); })) << d->log();
  const auto row = row_of(d->catalog(), dlg.call_id);
  EXPECT_EQ(row.stop_reason, "no_space") << d->log();
  // What was recorded is what was sent, in order, up to the stop.
  for (const auto& [label, pkts] : {std::pair{"10", &a}, std::pair{"20", &b}}) {
    const auto* s = stream_with_label(row, label);
    ASSERT_TRUE(s);
    const Packets got = stream_packets(row, s->stream);
    EXPECT_GT(got.size(), 100u) << label;
    ASSERT_LE(got.size(), pkts->size());
    EXPECT_TRUE(std::equal(got.begin(), got.end(), pkts->begin())) << "stream " << label << " is not a prefix of what was sent";
  }
  const std::string mx = metrics(*d);
  EXPECT_EQ(metric_value(mx, "callrec_siprec_byes_sent_total"), 1) << mx;
  EXPECT_EQ(metric_value(mx, "callrec_siprec_bye_unanswered_total"), 0);
  EXPECT_EQ(metric_value(mx, "callrec_siprec_responses_in_total"), 1);
  EXPECT_EQ(metric_value(mx, "callrec_siprec_sessions"), 0);
}

// A server BYE (operator stop) that the SRC does not answer is retransmitted over UDP (T1 =
// 500 ms doubling): the same request again; a 200 ends the retransmissions.
TEST_F(SiprecSecureE2E, UnansweredServerByeIsRetransmittedOverUdpUntilAnswered) {
  auto d = start({}, true, false);
  ASSERT_TRUE(d->ready());
  SipClient c(SipTransport::kUdp, sip_port_);
  SrcDialog dlg{c};
  auto ans = invite_and_ack(c, dlg, {pcma_mline(30000, "10"), pcma_mline(30002, "20")}, two_party_metadata("10", "20"), *d);
  ASSERT_TRUE(ans);
  const auto pkts = make_rtp(20, fileio::Codec::kPcma);
  RtpSender r;
  r.send(ans->sdp.media[0].port, pkts);
  std::this_thread::sleep_for(200ms);
  const std::string status = http(d->metrics_port(), "GET", "/status");
  std::smatch mm;
  ASSERT_TRUE(std::regex_search(status, mm, std::regex("\"handle\":([0-9]+)"))) << status;
  int code = 0;
  http(d->metrics_port(), "POST", "/stop?handle=" + mm[1].str(), &code);
  ASSERT_EQ(code, 200);

  auto first = next_request(c, "BYE", 5s);
  ASSERT_TRUE(first) << d->log();
  EXPECT_NE(first->header("Reason").find("operator"), std::string::npos) << first->raw;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<SipMsg> again;
  while (std::chrono::steady_clock::now() - t0 < 3200ms) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(3200ms - (std::chrono::steady_clock::now() - t0));
    auto m = next_request(c, "BYE", left);
    if (m) again.push_back(std::move(*m));
  }
  // Sent at 0, 0.5 s and 1.5 s (3.5 s is outside the window, which leaves a late timer 1.7 s).
  ASSERT_GE(again.size(), 2u) << "the unanswered BYE was not retransmitted";
  EXPECT_LE(again.size(), 3u);
  for (const auto& m : again) {
    EXPECT_EQ(m.m.cseq, first->m.cseq);
    EXPECT_EQ(m.m.via, first->m.via) << "a retransmission is the same request (same branch)";
    EXPECT_EQ(m.raw, first->raw);
  }
  ASSERT_TRUE(c.send(response_to(again.back(), 200, "OK")));
  EXPECT_FALSE(next_request(c, "BYE", 3000ms)) << "BYE retransmitted after its 200";
  ASSERT_TRUE(wait_until([&] { return stopped(d->catalog(), dlg.call_id); })) << d->log();
  EXPECT_EQ(row_of(d->catalog(), dlg.call_id).stop_reason, "operator");
  const std::string mx = metrics(*d);
  EXPECT_EQ(metric_value(mx, "callrec_siprec_byes_sent_total"), 1);
  EXPECT_GE(metric_value(mx, "callrec_siprec_retransmits_sent_total"), 2);
  EXPECT_EQ(metric_value(mx, "callrec_siprec_bye_unanswered_total"), 0);
  EXPECT_EQ(metric_value(mx, "callrec_siprec_sessions"), 0);
}

// SIGTERM with a live SIPREC session: the SRC gets a BYE with reason shutdown before the
// daemon exits 0, and the recording is complete in the catalog.
class SiprecShutdownE2E : public SiprecSecureE2E, public ::testing::WithParamInterface<SipTransport> {};

TEST_P(SiprecShutdownE2E, SigtermSendsByeWithReasonShutdownThenExitsZero) {
  auto d = start({}, true, false);
  ASSERT_TRUE(d->ready());
  SipClient c(GetParam(), sip_port_);
  ASSERT_TRUE(c.ok());
  SrcDialog dlg{c};
  auto ans = invite_and_ack(c, dlg, {pcma_mline(30000, "10"), pcma_mline(30002, "20")}, two_party_metadata("10", "20"), *d);
  ASSERT_TRUE(ans);
  const auto a = make_rtp(30, fileio::Codec::kPcma, 100, 1000, 0xA);
  const auto b = make_rtp(30, fileio::Codec::kPcma, 200, 2000, 0xB);
  RtpSender ra, rb;
  ra.send(ans->sdp.media[0].port, a);
  rb.send(ans->sdp.media[1].port, b);
  std::this_thread::sleep_for(300ms);
  d->signal(SIGTERM);
  auto byemsg = next_request(c, "BYE", 10s);
  ASSERT_TRUE(byemsg) << "no BYE before the daemon went away\n" << d->log();
  EXPECT_NE(byemsg->header("Reason").find("shutdown"), std::string::npos) << byemsg->raw;
  EXPECT_EQ(std::string(byemsg->m.call_id), dlg.call_id);
  (void)c.send(response_to(*byemsg, 200, "OK"));  // the daemon may already be gone
  EXPECT_EQ(d->wait_exit(), 0) << d->log();
  const auto row = row_of(d->catalog(), dlg.call_id);
  EXPECT_EQ(row.state, "stopped");
  EXPECT_EQ(row.stop_reason, "shutdown");
  const auto* s10 = stream_with_label(row, "10");
  const auto* s20 = stream_with_label(row, "20");
  ASSERT_TRUE(s10 && s20);
  EXPECT_TRUE(same_packets(stream_packets(row, s10->stream), a));
  EXPECT_TRUE(same_packets(stream_packets(row, s20->stream), b));
}

INSTANTIATE_TEST_SUITE_P(Transports, SiprecShutdownE2E, ::testing::Values(SipTransport::kUdp, SipTransport::kTcp),
                         [](const auto& i) { return i.param == SipTransport::kUdp ? "Udp" : "Tcp"; });

}  // namespace
}  // namespace callrec::e2e
