// Issue 9, "one client must not hurt the others": the control connection and the operator
// endpoint attacked as a hostile phone or a careless client would, against the real daemon on
// loopback. Each test reproduces one attack and checks that only the attacker is degraded.
// Bounded: a few seconds and a few MB of traffic each.
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <thread>

#include "control/log.hpp"
#include "e2e/harness.hpp"

namespace callrec::e2e {
namespace {

/// Resident set size of a process, KiB (0 when unreadable).
long rss_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return 0;
}

/// True when the peer closed fd (read returns 0 or an error) within the timeout.
bool closed_by_peer(int fd, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  while (std::chrono::steady_clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN)) return true;
  }
  return false;
}

class HostileControl : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(bin("callrecd"))) GTEST_SKIP() << "callrecd not built";
  }
  std::unique_ptr<DaemonProcess> start_daemon(std::vector<std::string> extra = {}, rlim_t nofile = 0) {
    auto d = std::make_unique<DaemonProcess>(dir_.path(), std::move(extra), 0, 0, nofile);
    EXPECT_TRUE(d->ready()) << d->log();
    return d;
  }
  TempDir dir_;
};

// Item 1: a connection streaming valid lines without pause. Before: the read loop read while
// the socket stayed full and queued every message before handling any (hundreds of MB/s of
// growth), and the other phones waited.
TEST_F(HostileControl, FloodOfValidLinesNeitherGrowsTheDaemonNorStarvesOtherPhones) {
  auto d = start_daemon();
  ASSERT_TRUE(d->ready());
  Phone phone(d->control_port());
  ASSERT_TRUE(phone.start("warm")->success);
  ASSERT_TRUE(phone.stop("warm")->success);
  const long rss0 = rss_kib(d->pid());

  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> flood_bytes{0};
  // Two connections, each a blocking writer of 1 MiB chunks in a tight loop: the fastest a
  // loopback peer can push.
  auto flood = [&] {
    const int fd = connect_loopback(d->control_port());
    if (fd < 0) return;
    timeval tv{0, 200000};  // a blocked send wakes up to look at `stop`
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    std::string chunk;
    while (chunk.size() < (1u << 20)) chunk += "cmd=RecordStopResponse&id=1\n";
    const auto end = std::chrono::steady_clock::now() + 4s;
    while (!stop && std::chrono::steady_clock::now() < end) {
      const ssize_t n = ::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL);
      if (n > 0) flood_bytes += static_cast<std::uint64_t>(n);
      else if (n < 0 && errno != EAGAIN && errno != EINTR) break;
    }
    ::close(fd);
  };
  std::thread flooder(flood), flooder2(flood);
  std::this_thread::sleep_for(300ms);  // the flood is in full swing
  // The other phone: start/stop cycles while the flood runs; each answer within a second
  // (its usual latency is a millisecond; the bound is for a loaded CI machine).
  double worst_ms = 0;
  for (int i = 0; i < 20; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = phone.start("c" + std::to_string(i));
    ASSERT_TRUE(r.has_value()) << "start " << i << " unanswered during the flood\n" << d->log();
    EXPECT_TRUE(r->success) << r->reason;
    auto s = phone.stop("c" + std::to_string(i));
    ASSERT_TRUE(s.has_value()) << "stop " << i << " unanswered during the flood";
    worst_ms = std::max(worst_ms, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    std::this_thread::sleep_for(50ms);
  }
  const long rss1 = rss_kib(d->pid());
  stop = true;
  flooder.join();
  flooder2.join();
  std::printf("flood: %.1f MB sent, daemon RSS %ld -> %ld KiB, worst start+stop %.1f ms\n",
              static_cast<double>(flood_bytes.load()) / 1e6, rss0, rss1, worst_ms);
  // (Under ASan each catalog write and parse is several times slower: 3 s there. A request
  // served only once the flood stops is caught by the "unanswered" checks above either way.)
#ifdef CALLREC_SANITIZED
  constexpr double kWorstMs = 3000.0;
#else
  constexpr double kWorstMs = 1000.0;
#endif
  EXPECT_LT(worst_ms, kWorstMs) << "a phone's request waited behind the flood";
  EXPECT_GT(flood_bytes.load(), 1u << 20) << "the flood did not get going";
  // Memory per connection is bounded: what one flooder can add is a few of its buffers. Under
  // ASan, freed blocks stay resident in its quarantine (256 MiB by default) before reuse, so
  // the bound there is the quarantine plus the same margin.
#ifdef CALLREC_SANITIZED
  constexpr long kBoundKib = (256 + 32) * 1024;
#else
  constexpr long kBoundKib = 32 * 1024;
#endif
  EXPECT_LT(rss1 - rss0, kBoundKib) << "daemon grew from " << rss0 << " to " << rss1 << " KiB during the flood";
  const std::string m = http(d->metrics_port(), "GET", "/metrics");
  EXPECT_GT(metric_value(m, "callrec_control_messages_total"), 10000) << "the flooder's lines were handled too";
}

// Item 2: 2,000 pipelined requests in one write, and a peer that reads its answers only later.
// Before: the replies were held to the end of the batch, the 64 KiB output cap was hit and the
// connection closed with no answer at all.
TEST_F(HostileControl, PipelinedRequestsAreAllAnsweredInOrderWithFlowControl) {
  auto d = start_daemon();
  const int fd = connect_loopback(d->control_port());
  ASSERT_GE(fd, 0);
  std::string burst;
  constexpr int kN = 2000;
  for (int i = 0; i < kN; ++i) burst += "cmd=RecordStopRequest&id=pipelined-request-" + std::to_string(i) + "\r\n";
  std::thread writer([&] {
    std::size_t off = 0;
    while (off < burst.size()) {
      const ssize_t n = ::send(fd, burst.data() + off, burst.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;
      off += static_cast<std::size_t>(n);
    }
  });
  std::this_thread::sleep_for(1s);  // not reading: the daemon must push back, not give up
  control::FrameDecoder dec;
  int answered = 0;
  bool in_order = true;
  const auto end = std::chrono::steady_clock::now() + 20s;
  char buf[65536];
  while (answered < kN && std::chrono::steady_clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    dec.feed(std::string_view(buf, static_cast<std::size_t>(n)));
    while (auto line = dec.next()) {
      auto m = control::parse_message(*line);
      ASSERT_TRUE(m) << *line;
      auto r = control::parse_stop_response(*m);
      ASSERT_TRUE(r) << *line;
      EXPECT_EQ(r->reason, "unknown_id");
      if (r->id != "pipelined-request-" + std::to_string(answered)) in_order = false;
      ++answered;
    }
  }
  writer.join();
  ::close(fd);
  EXPECT_EQ(answered, kN) << d->log();
  EXPECT_TRUE(in_order);
  const std::string m = http(d->metrics_port(), "GET", "/metrics");
  EXPECT_GE(metric_value(m, "callrec_control_backpressure_total"), 1) << m;
  EXPECT_EQ(metric_value(m, "callrec_control_dropped_connections_total"), 0) << m;
}

// Item 2, second half: a request with a malformed %-escape still gets its response.
TEST_F(HostileControl, RequestWithABadPercentEscapeIsAnsweredBadRequest) {
  auto d = start_daemon();
  Phone phone(d->control_port());
  phone.send_raw("cmd=RecordStartRequest&id=esc1&device=00:11:22:33:44:55&remote_name=%zz&codec=PCMA\r\n");
  auto m = phone.recv();
  ASSERT_TRUE(m.has_value()) << "no answer\n" << d->log();
  auto r = control::parse_start_response(*m);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->id, "esc1");
  EXPECT_FALSE(r->success);
  EXPECT_EQ(r->reason, "bad_request");
  phone.send_raw("cmd=RecordStopRequest&id=esc2&remote_number=1%4\r\n");
  m = phone.recv();
  ASSERT_TRUE(m.has_value());
  auto s = control::parse_stop_response(*m);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->id, "esc2");
  EXPECT_FALSE(s->success);
  EXPECT_EQ(s->reason, "bad_request");
  // Answered requests are not garbage: the connection lives on.
  for (int i = 0; i < 5; ++i) phone.send_raw("cmd=RecordStopRequest&id=x&n=%g0\r\n");
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(phone.recv().has_value()) << i;
  EXPECT_TRUE(phone.start("after")->success);
}

// Item 9: a request in parts with pauses. Before: the 300 ms quiet timer cut it at the first
// pause and stored remote_number=12.
TEST_F(HostileControl, RequestSplitByPausesIsReadWhole) {
  auto d = start_daemon();
  Phone phone(d->control_port());
  phone.send_raw("cmd=RecordStartRequest&id=split1&device=00:11:22:33:44:55&dir=in&codec=PCMA&remote_number=12");
  std::this_thread::sleep_for(500ms);
  phone.send_raw("345");
  std::this_thread::sleep_for(2s);
  phone.send_raw("67\r\n");
  auto r = phone.recv();
  ASSERT_TRUE(r.has_value()) << d->log();
  auto sr = control::parse_start_response(*r);
  ASSERT_TRUE(sr && sr->success) << control::format_message(*r);
  EXPECT_EQ(sr->id, "split1");
  ASSERT_TRUE(phone.stop("split1")->success);
  ASSERT_TRUE(d->wait_log("recording stop:"));
  EXPECT_EQ(catalog_row(d->catalog(), "split1").remote_number, "1234567");
  EXPECT_EQ(metric_value(http(d->metrics_port(), "GET", "/metrics"), "callrec_control_garbage_total"), 0);
}

// Item 9: an unterminated message is complete at a half-close (at once) or after the quiet
// period (--control-quiet-ms).
TEST_F(HostileControl, UnterminatedRequestIsTakenAtHalfCloseOrAfterTheQuietPeriod) {
  auto d = start_daemon({"--control-quiet-ms", "1500"});
  {
    const int fd = connect_loopback(d->control_port());
    ASSERT_GE(fd, 0);
    const std::string req = "cmd=RecordStopRequest&id=halfclosed";
    ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
    ::shutdown(fd, SHUT_WR);
    control::FrameDecoder dec;
    char buf[512];
    pollfd p{fd, POLLIN, 0};
    ASSERT_GT(::poll(&p, 1, 1000), 0) << "no answer at the half-close";
    const ssize_t n = ::read(fd, buf, sizeof buf);
    ASSERT_GT(n, 0);
    dec.feed(std::string_view(buf, static_cast<std::size_t>(n)));
    auto line = dec.next();
    ASSERT_TRUE(line.has_value());
    EXPECT_NE(line->find("id=halfclosed"), std::string::npos) << *line;
    ::close(fd);
  }
  Phone phone(d->control_port());
  const auto t0 = std::chrono::steady_clock::now();
  phone.send_raw("cmd=RecordStopRequest&id=quiet");
  auto m = phone.recv(5s);
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->get("id").value_or(""), "quiet");
  EXPECT_GE(waited, 1.4) << "taken before the quiet period ended";
}

// Item 5: idle connections and slow HTTP clients that would hold every descriptor. Before: new
// phones were reset, a connected phone got `overloaded` and /metrics was unreachable.
TEST_F(HostileControl, IdleConnectionsAndSlowHttpClientsCannotTakeTheDescriptors) {
  constexpr rlim_t kLimit = 256;
  auto d = start_daemon({}, kLimit);
  ASSERT_TRUE(d->ready());
  Phone early(d->control_port());  // a phone connected (and heard from) before the attack
  ASSERT_TRUE(early.connected());
  ASSERT_TRUE(early.stop("nothing-yet").has_value());
  std::vector<int> idle;
  for (int i = 0; i < 400; ++i) {
    const int fd = connect_loopback(d->control_port());
    if (fd >= 0) idle.push_back(fd);
  }
  std::vector<int> slow_http;
  for (int i = 0; i < 40; ++i) {
    const int fd = connect_loopback(d->metrics_port());
    if (fd >= 0) {
      ::send(fd, "GET /metr", 9, MSG_NOSIGNAL);  // a request head that never completes
      slow_http.push_back(fd);
    }
  }
  std::this_thread::sleep_for(300ms);
  // The operator still gets the metrics.
  int status = 0;
  const std::string m = http(d->metrics_port(), "GET", "/metrics", &status);
  EXPECT_EQ(status, 200) << d->log();
  EXPECT_GT(metric_value(m, "callrec_control_evicted_idle_total"), 0) << m;
  // A new phone is accepted and records; the phone that was there already records too.
  Phone fresh(d->control_port());
  auto r = fresh.start("fresh");
  ASSERT_TRUE(r.has_value()) << "the new phone got no answer\n" << d->log();
  EXPECT_TRUE(r->success) << r->reason;
  auto e = early.start("early");
  ASSERT_TRUE(e.has_value()) << d->log();
  EXPECT_TRUE(e->success) << e->reason;
  EXPECT_TRUE(fresh.stop("fresh")->success);
  EXPECT_TRUE(early.stop("early")->success);
  // The slow HTTP clients are closed by the header timeout (5 s).
  std::size_t closed = 0;
  for (int fd : slow_http) closed += closed_by_peer(fd, 7s) ? 1 : 0;
  EXPECT_EQ(closed, slow_http.size());
  for (int fd : idle) ::close(fd);
  for (int fd : slow_http) ::close(fd);
}

// Item 5: per-address limits on connections and on concurrent recordings.
TEST_F(HostileControl, PerAddressLimitsOnConnectionsAndRecordings) {
  auto d = start_daemon({"--max-connections-per-address", "4", "--max-recordings-per-address", "3"});
  std::vector<std::unique_ptr<Phone>> phones;
  for (int i = 0; i < 4; ++i) phones.push_back(std::make_unique<Phone>(d->control_port()));
  Phone fifth(d->control_port());
  EXPECT_TRUE(fifth.wait_closed(3s)) << "a fifth connection from 127.0.0.1 was kept";
  ASSERT_TRUE(phones[0]->start("a1")->success);
  ASSERT_TRUE(phones[0]->start("a2")->success);
  ASSERT_TRUE(phones[1]->start("b1")->success);
  auto r = phones[2]->start("c1");
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->success);
  EXPECT_EQ(r->reason, "overloaded");
  ASSERT_TRUE(phones[0]->stop("a1")->success);
  EXPECT_TRUE(phones[2]->start("c2")->success) << "a stopped recording frees its place";
  const std::string m = http(d->metrics_port(), "GET", "/metrics");
  EXPECT_EQ(metric_value(m, "callrec_control_refused_total{limit=\"connections_per_address\"}"), 1) << m;
  EXPECT_EQ(metric_value(m, "callrec_control_refused_total{limit=\"recordings_per_address\"}"), 1) << m;
}

// Item 5: the default connection cap leaves room under the descriptor limit it meets.
TEST_F(HostileControl, DefaultConnectionCapLeavesRoomUnderTheDescriptorLimit) {
  auto d = start_daemon({}, 1024);
  const std::string m = http(d->metrics_port(), "GET", "/metrics");
  const long long cap = metric_value(m, "callrec_control_max_connections");
  EXPECT_GT(cap, 16);
  EXPECT_LE(cap, (1024 - 64) / 3) << "phones' connections alone could take the descriptors recordings need";
}

// Item 6: with --latch, a host at another address sprays the recording's port before the
// phone's first packet. Before: the spray latched the port, the attacker's packets were written
// and every packet of the phone was discarded as stray. Now the port latches only to the phone's
// own address (any port of it: NAT rewrites ports); --latch-any restores the weaker behaviour.
TEST_F(HostileControl, LatchHijackFromAnotherAddressIsStrayAndThePhoneIsRecorded) {
  auto d = start_daemon({"--latch"});
  Phone phone(d->control_port());                // control and RTP from 127.0.0.1
  Phone attacker(d->control_port(), "127.0.0.2");  // only its UDP socket is used
  auto st = phone.start("L1");
  ASSERT_TRUE(st && st->success);
  const auto spray = make_rtp(60, fileio::Codec::kPcma, 7000, 0, 0x66666666);
  for (const auto& p : spray) attacker.send_rtp(st->port, p);
  std::this_thread::sleep_for(100ms);
  const auto good = make_rtp(50, fileio::Codec::kPcma, 100, 0, 0x1111);
  for (std::size_t i = 0; i < good.size(); ++i) {
    phone.send_rtp(st->port, good[i]);
    if (i % 25 == 24) std::this_thread::sleep_for(2ms);
  }
  ASSERT_TRUE(wait_until([&] {
    return metric_value(http(d->metrics_port(), "GET", "/metrics"), "callrec_rx_packets_total") >= 110;
  })) << d->log();
  ASSERT_TRUE(phone.stop("L1")->success);
  ASSERT_TRUE(d->wait_log("recording stop:"));
  const auto row = catalog_row(d->catalog(), "L1");
  EXPECT_EQ(row.stats.stray, spray.size());
  ASSERT_EQ(row.segments.size(), 1u);
  EXPECT_EQ(read_packets(row.segments[0].path), good) << "the recording holds what the phone sent, nothing else";
}

TEST_F(HostileControl, LatchAnyIsTheExplicitWeakerMode) {
  auto d = start_daemon({"--latch", "--latch-any"});
  Phone phone(d->control_port());
  Phone relay(d->control_port(), "127.0.0.2");  // e.g. a media relay at another address
  auto st = phone.start("L2");
  ASSERT_TRUE(st && st->success);
  const auto pkts = make_rtp(30, fileio::Codec::kPcma, 100, 0, 0x2222);
  for (const auto& p : pkts) relay.send_rtp(st->port, p);
  ASSERT_TRUE(wait_until([&] {
    return metric_value(http(d->metrics_port(), "GET", "/metrics"), "callrec_rx_packets_total") >= 30;
  }));
  ASSERT_TRUE(phone.stop("L2")->success);
  ASSERT_TRUE(d->wait_log("recording stop:"));
  const auto row = catalog_row(d->catalog(), "L2");
  ASSERT_EQ(row.segments.size(), 1u);
  EXPECT_EQ(read_packets(row.segments[0].path), pkts);
}

// Item 10: a %0A in a name forges a log line; terminal escapes reach the log raw.
TEST_F(HostileControl, LogLinesCannotBeForgedOrCarryTerminalEscapes) {
  auto d = start_daemon();
  Phone phone(d->control_port());
  const std::string forged = "2026-01-01T00:00:00.000Z callrecd info: recording stop: rec=1 forged";
  auto r = phone.start("log1", "PCMA", "&remote_number=1%0A" + control::percent_encode(forged) + "%1B%5B31m%0D");
  ASSERT_TRUE(r && r->success);
  ASSERT_TRUE(phone.stop("log1")->success);
  ASSERT_TRUE(d->wait_log("recording stop: rec="));
  const std::string log = d->log();
  std::istringstream lines(log);
  std::string line;
  while (std::getline(lines, line)) {
    EXPECT_NE(line.rfind("2026-01-01T00:00:00.000Z", 0), 0u) << "forged line: " << line;
    EXPECT_EQ(line.find('\x1b'), std::string::npos) << "raw ESC in: " << line;
    EXPECT_EQ(line.find('\r'), std::string::npos) << "raw CR in: " << line;
  }
  EXPECT_NE(log.find("remote=1\\x0a2026-01-01T00:00:00.000Z"), std::string::npos) << log;
  EXPECT_NE(log.find("\\x1b[31m"), std::string::npos);
}

TEST(LogEscape, ControlsAndInvalidUtf8AreEscapedUtf8Kept) {
  EXPECT_EQ(control::log_escape("plain text 123"), "plain text 123");
  EXPECT_EQ(control::log_escape("a\nb\rc\td"), "a\\x0ab\\x0dc\\x09d");
  EXPECT_EQ(control::log_escape("\x1b[2J"), "\\x1b[2J");
  EXPECT_EQ(control::log_escape(std::string_view("\0x", 2)), "\\x00x");
  EXPECT_EQ(control::log_escape("back\\slash"), "back\\\\slash");
  EXPECT_EQ(control::log_escape("J\xc3\xbcrgen \xe6\x9d\xb1"), "J\xc3\xbcrgen \xe6\x9d\xb1");  // UTF-8 kept
  EXPECT_EQ(control::log_escape("\xc2\x9b"), "\\xc2\\x9b");  // C1 CSI
  EXPECT_EQ(control::log_escape("\xff\xc3"), "\\xff\\xc3");  // not UTF-8
  EXPECT_EQ(control::log_escape("\x7f"), "\\x7f");
}

// Item 13: operator-endpoint details.
TEST_F(HostileControl, OperatorStopRefusesHandlesThatAreNotPlainNumbers) {
  auto d = start_daemon();
  Phone phone(d->control_port());
  ASSERT_TRUE(phone.start("h1")->success);
  for (const char* bad : {"-1", "1%00zz", "+1", "%201", "1x", "", "99999999999999999999999"}) {
    int status = 0;
    http(d->metrics_port(), "POST", std::string("/stop?handle=") + bad, &status);
    EXPECT_EQ(status, 400) << "handle=" << bad;
  }
  EXPECT_EQ(d->count_log("operator stop"), 0u) << "a malformed handle stopped a recording";
  EXPECT_TRUE(phone.stop("h1")->success);
}

TEST_F(HostileControl, NotFoundPageDoesNotEchoTheRequest) {
  auto d = start_daemon();
  int status = 0;
  const std::string body = http(d->metrics_port(), "GET", "/%1b%5b2J<script>x</script>", &status);
  EXPECT_EQ(status, 404);
  EXPECT_EQ(body.find("script"), std::string::npos) << body;
  EXPECT_EQ(body.find('\x1b'), std::string::npos) << body;
}

TEST_F(HostileControl, MetricsOnTheWildcardAddressIsLoggedAsBound) {
  // The harness passes --metrics 127.0.0.1:0 first; a later flag overrides it.
  auto d = start_daemon({"--metrics", "0.0.0.0:0"});
  const std::string log = d->log();
  const auto r = log.find("ready:");
  ASSERT_NE(r, std::string::npos);
  EXPECT_NE(log.find("metrics=0.0.0.0:", r), std::string::npos) << log.substr(r, 200);
}

}  // namespace
}  // namespace callrec::e2e
