// End-to-end tests of callrec-phone's SIPREC client mode (--siprec) against the real callrecd
// SIPREC recording server (--siprec-listen): sessions over UDP, TCP and TLS (server
// verification, mutual TLS), the daemon's session cap (503), SRTP, pause/resume and metadata
// updates, a BYE from the server. What the daemon recorded is read back from its catalog
// (source "siprec": two streams per session, labels, participants, packet counts) and /metrics;
// what the phone did from its --json report.
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <future>
#include <random>
#include <string>
#include <vector>

#include "e2e/harness.hpp"

namespace {

namespace e2e = callrec::e2e;
namespace fileio = callrec::fileio;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

/// A port free for both UDP and TCP on 127.0.0.1, above the kernel's ephemeral range and the
/// harness's RTP ranges (the daemon's --siprec-listen takes both on the same number).
std::uint16_t free_sip_port() {
  std::random_device rd;
  for (int attempt = 0; attempt < 200; ++attempt) {
    const auto port = static_cast<std::uint16_t>(61000 + rd() % 4500);
    bool ok = true;
    for (const int type : {SOCK_DGRAM, SOCK_STREAM}) {
      const int fd = ::socket(AF_INET, type | SOCK_CLOEXEC, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(port);
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      ok = ok && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
      ::close(fd);
    }
    if (ok) return port;
  }
  return 0;
}

/// The number after "key": in a JSON text (first occurrence), -1 when absent.
double jnum(const std::string& j, const std::string& key) {
  const auto p = j.find("\"" + key + "\": ");
  if (p == std::string::npos) return -1;
  return std::strtod(j.c_str() + p + key.size() + 4, nullptr);
}

/// The raw object after "key": ("{}" when empty).
std::string jobj(const std::string& j, const std::string& key) {
  const auto p = j.find("\"" + key + "\": {");
  if (p == std::string::npos) return "";
  const auto e = j.find('}', p);
  return j.substr(p + key.size() + 4, e - (p + key.size() + 4) + 1);
}

struct PhoneRun {
  int exit_code = -1;
  std::string report;  ///< the JSON report (stdout)
  std::string err;
};

PhoneRun run_phone(const std::vector<std::string>& args, std::chrono::seconds timeout = 90s) {
  std::vector<std::string> argv = {e2e::bin("callrec-phone")};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.insert(argv.end(), {"--json", "--report-interval", "0"});
  const e2e::CmdResult r = e2e::run_cmd(argv, timeout);
  return {r.exit_code, r.out, r.err};
}

std::vector<fileio::RecordingRow> siprec_rows(const fs::path& db) {
  fileio::Catalog c;
  std::vector<fileio::RecordingRow> rows, out;
  if (!c.open_read_only(db)) return out;
  fileio::CatalogFilter f;
  f.limit = 0;
  if (!c.list(f, rows)) return out;
  for (auto& r : rows)
    if (r.source == "siprec") out.push_back(std::move(r));
  return out;
}

/// A daemon with a SIPREC listener on a free port.
struct Srs {
  e2e::TempDir dir;
  std::uint16_t port = free_sip_port();
  std::unique_ptr<e2e::DaemonProcess> d;
  explicit Srs(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--siprec-listen", "127.0.0.1:" + std::to_string(port)};
    args.insert(args.end(), extra.begin(), extra.end());
    d = std::make_unique<e2e::DaemonProcess>(dir.path(), args);
  }
  [[nodiscard]] std::string endpoint() const { return "127.0.0.1:" + std::to_string(port); }
  [[nodiscard]] std::string metrics() const { return e2e::http(d->metrics_port(), "GET", "/metrics"); }
  /// Stops the daemon (every row final) and returns its SIPREC catalog rows.
  std::vector<fileio::RecordingRow> stop_and_list() {
    d->signal(SIGTERM);
    EXPECT_EQ(d->wait_exit(), 0) << d->log();
    return siprec_rows(d->catalog());
  }
};

void expect_all_ok(const PhoneRun& r, unsigned sessions) {
  EXPECT_EQ(r.exit_code, 0) << r.report << r.err;
  EXPECT_EQ(jnum(r.report, "attempted"), sessions) << r.report;
  EXPECT_EQ(jnum(r.report, "established"), sessions) << r.report;
  EXPECT_EQ(jnum(r.report, "completed"), sessions) << r.report;
  EXPECT_EQ(jnum(r.report, "failed"), 0) << r.report;
  EXPECT_EQ(jobj(r.report, "failed_by_reason"), "{}") << r.report;
  EXPECT_EQ(jobj(r.report, "errors"), "{}") << r.report;
}

/// Every session a row with two streams (labels 1 and 2, caller and callee) of `packets` +-5
/// packets each, and the two participants of the metadata.
void expect_recordings(const std::vector<fileio::RecordingRow>& rows, unsigned sessions, double packets) {
  ASSERT_EQ(rows.size(), sessions);
  for (const auto& row : rows) {
    SCOPED_TRACE(row.call_id);
    EXPECT_EQ(row.state, "stopped");
    EXPECT_EQ(row.codec, "PCMA");
    ASSERT_EQ(row.streams.size(), 2U);
    for (unsigned k = 0; k < 2; ++k) {
      const auto& s = row.streams[k];
      EXPECT_EQ(s.label, k == 0 ? "1" : "2");
      EXPECT_EQ(s.role, k == 0 ? "caller" : "callee");
      EXPECT_NEAR(static_cast<double>(s.packets), packets, 5.0) << "stream " << k;
      EXPECT_EQ(s.lost, 0U) << "stream " << k;
    }
    ASSERT_EQ(row.participants.size(), 2U);
    EXPECT_EQ(row.participants[0].aor.rfind("sip:+1555000", 0), 0U) << row.participants[0].aor;
    EXPECT_NE(row.participants[0].aor.find("@example.com"), std::string::npos);
    EXPECT_EQ(row.participants[0].name.rfind("Caller ", 0), 0U);
    EXPECT_EQ(row.participants[1].name.rfind("Callee ", 0), 0U);
    EXPECT_EQ(row.local_number, row.participants[0].number);
    EXPECT_EQ(row.remote_number, row.participants[1].number);
  }
}

void twenty_sessions(const char* transport) {
  Srs srs;
  ASSERT_TRUE(srs.d->ready()) << srs.d->log();
  const PhoneRun r = run_phone({"--siprec", srs.endpoint(), "--transport", transport, "--calls", "20", "--duration",
                                "3", "--rate", "200"});
  expect_all_ok(r, 20);
  EXPECT_EQ(jnum(r.report, "packets_sent"), 20 * 2 * 150) << r.report;
  EXPECT_EQ(jnum(r.report, "count"), 20) << "setup latency samples: " << r.report;
  const std::string m = srs.metrics();
  EXPECT_EQ(e2e::metric_value(m, "callrec_siprec_sessions_started_total"), 20);
  EXPECT_EQ(e2e::metric_value(m, "callrec_siprec_byes_in_total"), 20);
  EXPECT_EQ(e2e::metric_value(m, "callrec_siprec_bad_requests_total"), 0);
  expect_recordings(srs.stop_and_list(), 20, 150);
}

TEST(CallrecPhoneSiprec, UdpTwentySessionsRecordedWithBothStreams) { twenty_sessions("udp"); }

TEST(CallrecPhoneSiprec, TcpTwentySessionsRecordedWithBothStreams) { twenty_sessions("tcp"); }

TEST(CallrecPhoneSiprec, SessionCapGives503) {
  Srs srs({"--siprec-max-sessions", "5"});
  ASSERT_TRUE(srs.d->ready()) << srs.d->log();
  // 10 sessions start within 50 ms and last 2 s: the first 5 hold the cap.
  const PhoneRun r = run_phone({"--siprec", srs.endpoint(), "--calls", "10", "--duration", "2", "--rate", "200"});
  EXPECT_EQ(r.exit_code, 1) << r.report << r.err;
  EXPECT_EQ(jnum(r.report, "attempted"), 10) << r.report;
  EXPECT_EQ(jnum(r.report, "established"), 5) << r.report;
  EXPECT_EQ(jnum(r.report, "completed"), 5) << r.report;
  EXPECT_EQ(jnum(r.report, "failed"), 5) << r.report;
  EXPECT_EQ(jobj(r.report, "failed_by_reason"), "{\"503\": 5}") << r.report;
  EXPECT_EQ(e2e::metric_value(srs.metrics(), "callrec_siprec_refused_busy_total"), 5);
  expect_recordings(srs.stop_and_list(), 5, 100);
}

TEST(CallrecPhoneSiprec, SrtpStreamsAreDecryptedAndRecorded) {
  Srs srs;
  ASSERT_TRUE(srs.d->ready()) << srs.d->log();
  const PhoneRun r =
      run_phone({"--siprec", srs.endpoint(), "--srtp", "--calls", "5", "--duration", "2", "--rate", "200"});
  expect_all_ok(r, 5);
  EXPECT_NE(r.report.find("\"srtp\": true"), std::string::npos);
  // SRTP packets are the RTP length + the 10-byte HMAC-SHA1-80 tag.
  EXPECT_EQ(jnum(r.report, "bytes_sent"), 5 * 2 * 100 * (172 + 10)) << r.report;
  const std::string m = srs.metrics();
  EXPECT_EQ(e2e::metric_value(m, "callrec_siprec_srtp_streams_total"), 10) << m;
  EXPECT_EQ(e2e::metric_value(m, "callrec_assembler_dropped_total{cause=\"srtp\"}"), 0);
  const auto rows = srs.stop_and_list();
  expect_recordings(rows, 5, 100);
  for (const auto& row : rows)
    for (const auto& s : row.streams) EXPECT_NE(s.flags.find("srtp"), std::string::npos) << s.flags;
}

TEST(CallrecPhoneSiprec, PauseResumeAndMetadataUpdate) {
  Srs srs;
  ASSERT_TRUE(srs.d->ready()) << srs.d->log();
  const PhoneRun r = run_phone({"--siprec", srs.endpoint(), "--calls", "5", "--duration", "3", "--rate", "200",
                                "--pause-resume", "--metadata-update"});
  expect_all_ok(r, 5);
  EXPECT_EQ(jnum(r.report, "reinvites"), 10) << r.report;
  EXPECT_EQ(jnum(r.report, "updates"), 5) << r.report;
  // Paused from 1/3 to 2/3 of the call: about 50 of the 150 packet times per stream go unsent.
  EXPECT_NEAR(jnum(r.report, "paused"), 5 * 2 * 50, 5 * 2 * 3) << r.report;
  const std::string m = srs.metrics();
  EXPECT_EQ(e2e::metric_value(m, "callrec_siprec_reinvites_total"), 10);
  EXPECT_EQ(e2e::metric_value(m, "callrec_siprec_paused_total"), 10);
  EXPECT_EQ(e2e::metric_value(m, "callrec_siprec_resumed_total"), 10);
  EXPECT_EQ(e2e::metric_value(m, "callrec_siprec_metadata_updates_total"), 5);
  const auto rows = srs.stop_and_list();
  expect_recordings(rows, 5, 100);
  for (const auto& row : rows) {
    ASSERT_EQ(row.participants.size(), 2U);
    EXPECT_NE(row.participants[1].name.find("(transferred)"), std::string::npos) << row.participants[1].name;
  }
}

TEST(CallrecPhoneSiprec, ServerByeIsAnsweredAndReported) {
  Srs srs;
  ASSERT_TRUE(srs.d->ready()) << srs.d->log();
  auto phone = std::async(std::launch::async, [&srs] {
    return run_phone({"--siprec", srs.endpoint(), "--calls", "1", "--duration", "10"});
  });
  // The operator stops the recording: the server sends BYE (Reason text "operator").
  std::string handle;
  ASSERT_TRUE(e2e::wait_until([&] {
    const std::string st = e2e::http(srs.d->metrics_port(), "GET", "/status");
    const auto p = st.find("\"handle\":");
    if (p == std::string::npos) return false;
    handle = st.substr(p + 9, st.find_first_of(",}", p) - p - 9);
    return true;
  }));
  int status = 0;
  e2e::http(srs.d->metrics_port(), "POST", "/stop?handle=" + handle, &status);
  EXPECT_EQ(status, 200);
  const PhoneRun r = phone.get();
  EXPECT_EQ(r.exit_code, 1) << r.report << r.err;
  EXPECT_EQ(jnum(r.report, "established"), 1) << r.report;
  EXPECT_EQ(jobj(r.report, "failed_by_reason"), "{\"server_bye\": 1}") << r.report;
  EXPECT_EQ(jobj(r.report, "server_byes_by_reason"), "{\"operator\": 1}") << r.report;
  EXPECT_LT(jnum(r.report, "elapsed_s"), 8) << "the session ended at the server's BYE";
  const std::string m = srs.metrics();
  EXPECT_EQ(e2e::metric_value(m, "callrec_siprec_byes_sent_total"), 1);
  EXPECT_EQ(e2e::metric_value(m, "callrec_siprec_bye_unanswered_total"), 0) << "the BYE was answered 200";
}

/// A self-signed certificate for 127.0.0.1 (its own CA) and its key, as PEM files.
bool make_cert(const fs::path& cert, const fs::path& key) {
  EVP_PKEY* pkey = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  X509* x = X509_new();
  if (pkey == nullptr || x == nullptr) return false;
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400);
  X509_set_pubkey(x, pkey);
  X509_NAME* name = X509_get_subject_name(x);
  const unsigned char cn[] = "127.0.0.1";
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, cn, -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, x, x, nullptr, nullptr, 0);
  for (const auto& [nid, value] : {std::pair{NID_subject_alt_name, "IP:127.0.0.1"},
                                   std::pair{NID_basic_constraints, "critical,CA:TRUE"}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    if (ext == nullptr) return false;
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
  }
  bool ok = X509_sign(x, pkey, EVP_sha256()) > 0;
  if (std::FILE* f = std::fopen(cert.c_str(), "w")) {
    ok = ok && PEM_write_X509(f, x) == 1;
    std::fclose(f);
  }
  if (std::FILE* f = std::fopen(key.c_str(), "w")) {
    ok = ok && PEM_write_PrivateKey(f, pkey, nullptr, nullptr, 0, nullptr, nullptr) == 1;
    std::fclose(f);
  }
  X509_free(x);
  EVP_PKEY_free(pkey);
  return ok;
}

TEST(CallrecPhoneSiprec, TlsVerifiedAndMutual) {
  e2e::TempDir certs;
  const fs::path cert = certs.path() / "cert.pem", key = certs.path() / "key.pem";
  ASSERT_TRUE(make_cert(cert, key));
  const std::uint16_t tls_port = free_sip_port();
  // Mutual TLS: the server wants a client certificate signed by `cert` (itself).
  Srs srs({"--siprec-tls-cert", cert.string(), "--siprec-tls-key", key.string(), "--siprec-tls-ca", cert.string(),
           "--siprec-tls-listen", "127.0.0.1:" + std::to_string(tls_port)});
  ASSERT_TRUE(srs.d->ready()) << srs.d->log();
  const std::string ep = "127.0.0.1:" + std::to_string(tls_port);
  const PhoneRun ok = run_phone({"--siprec", ep, "--transport", "tls", "--tls-ca", cert.string(), "--tls-cert",
                                 cert.string(), "--tls-key", key.string(), "--calls", "3", "--duration", "1"});
  expect_all_ok(ok, 3);
  EXPECT_NE(ok.report.find("\"transport\": \"tls\""), std::string::npos);
  // No client certificate: the server refuses the handshake.
  const PhoneRun anon = run_phone({"--siprec", ep, "--transport", "tls", "--calls", "1", "--duration", "1"});
  EXPECT_EQ(anon.exit_code, 1) << anon.report << anon.err;
  EXPECT_EQ(jnum(anon.report, "established"), 0) << anon.report;
  // A CA that did not sign the server's certificate: the phone refuses the server.
  e2e::TempDir other;
  ASSERT_TRUE(make_cert(other.path() / "cert.pem", other.path() / "key.pem"));
  const PhoneRun wrong = run_phone({"--siprec", ep, "--transport", "tls", "--tls-ca", (other.path() / "cert.pem").string(),
                                    "--tls-cert", cert.string(), "--tls-key", key.string(), "--calls", "1",
                                    "--duration", "1"});
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_EQ(jobj(wrong.report, "failed_by_reason"), "{\"tls_failed\": 1}") << wrong.report;
  EXPECT_NE(wrong.report.find("tls handshake: certificate"), std::string::npos) << wrong.report;
  expect_recordings(srs.stop_and_list(), 3, 50);
}

TEST(CallrecPhoneSiprec, NoServerTimesOutAndUsageErrors) {
  // Nothing listens: UDP INVITEs are retransmitted until --timeout, then the session fails.
  const std::uint16_t port = free_sip_port();
  const PhoneRun r = run_phone({"--siprec", "127.0.0.1:" + std::to_string(port), "--calls", "2", "--duration", "1",
                                "--timeout", "1.2", "--t1", "100"});
  EXPECT_EQ(r.exit_code, 1) << r.report << r.err;
  EXPECT_EQ(jobj(r.report, "failed_by_reason"), "{\"timeout\": 2}") << r.report;
  EXPECT_GE(jnum(r.report, "retransmissions"), 2 * 3) << r.report;  // at 100, 300, 700 ms (T1 doubling)
  // TCP: the connection is refused.
  const PhoneRun t = run_phone({"--siprec", "127.0.0.1:" + std::to_string(port), "--transport", "tcp", "--calls", "1"});
  EXPECT_EQ(jobj(t.report, "failed_by_reason"), "{\"connect_failed\": 1}") << t.report;

  const auto usage = [](std::vector<std::string> args) {
    std::vector<std::string> argv = {e2e::bin("callrec-phone")};
    argv.insert(argv.end(), args.begin(), args.end());
    return e2e::run_cmd(argv, 10s);
  };
  EXPECT_EQ(usage({"--siprec", "127.0.0.1:5060", "--phones", "2"}).exit_code, 2);
  EXPECT_EQ(usage({"--server", "127.0.0.1:7070", "--srtp"}).exit_code, 2);
  EXPECT_EQ(usage({"--siprec", "127.0.0.1:5060", "--server", "127.0.0.1:7070"}).exit_code, 2);
  EXPECT_EQ(usage({"--siprec", "127.0.0.1:5060", "--transport", "sctp"}).exit_code, 2);
  EXPECT_EQ(usage({"--siprec", "127.0.0.1:5060", "--tls-ca", "/x.pem"}).exit_code, 2);
  const e2e::CmdResult help = usage({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("--siprec HOST:PORT"), std::string::npos);
  EXPECT_NE(help.out.find("NOT verified"), std::string::npos);
}

}  // namespace
