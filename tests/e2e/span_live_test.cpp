// Passive capture, live: the real callrecd captures with libpcap (--span-interface) what real
// tools put on the wire, and must record the same calls and the same bytes as the offline run
// of the same traffic.
//
// - tcpreplay sends the shared captures onto a veth pair in a network namespace this test
//   creates (the daemon listens on the root-namespace end, as on a mirror port).
// - SIPp makes a real call on loopback (its uac_pcap scenario plays RTP and an RFC 2833 digit
//   against its uas); tshark extracts what SIPp sent, as the independent reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "harness.hpp"

namespace callrec::e2e {
namespace {

std::string find_program(std::initializer_list<const char*> candidates) {
  for (const char* c : candidates)
    if (::access(c, X_OK) == 0) return c;
  return {};
}

/// A veth pair: `host` in this namespace (the mirror port the daemon captures on), `peer` in a
/// namespace of its own (where tcpreplay sends). No addresses: a mirror port has none.
class Veth {
 public:
  static std::unique_ptr<Veth> create(std::string* why) {
    auto v = std::unique_ptr<Veth>(new Veth());
    v->ip_ = find_program({"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"});
    if (v->ip_.empty()) {
      *why = "iproute2 `ip` not found";
      return nullptr;
    }
    static unsigned counter = 0;
    const auto pid = static_cast<unsigned>(::getpid());
    char buf[32];
    std::snprintf(buf, sizeof buf, "csh%x%x", pid & 0xFFFFFFu, counter & 0xFu);
    v->host_ = buf;
    std::snprintf(buf, sizeof buf, "csp%x%x", pid & 0xFFFFFFu, counter & 0xFu);
    v->peer_ = buf;
    v->ns_ = "callrec-span-" + std::to_string(pid) + "-" + std::to_string(counter++);
    auto must = [&](std::vector<std::string> args) {
      args.insert(args.begin(), v->ip_);
      const CmdResult r = run_cmd(args, 20s);
      if (r.exit_code != 0) *why = args[1] + " " + args[2] + ": " + r.err;
      return r.exit_code == 0;
    };
    if (!must({"netns", "add", v->ns_})) return nullptr;
    v->have_ns_ = true;
    if (!must({"link", "add", v->host_, "type", "veth", "peer", "name", v->peer_})) return nullptr;
    v->have_link_ = true;
    if (!must({"link", "set", v->peer_, "netns", v->ns_})) return nullptr;
    // No IPv6 autoconfiguration chatter on the mirror port.
    if (FILE* f = std::fopen(("/proc/sys/net/ipv6/conf/" + v->host_ + "/disable_ipv6").c_str(), "w")) {
      std::fputs("1", f);
      std::fclose(f);
    }
    if (!must({"link", "set", v->host_, "up"})) return nullptr;
    if (!must({"-n", v->ns_, "link", "set", v->peer_, "up"})) return nullptr;
    return v;
  }
  ~Veth() {
    if (have_link_) run_cmd({ip_, "link", "del", host_}, 20s);
    if (have_ns_) run_cmd({ip_, "netns", "del", ns_}, 20s);
  }
  [[nodiscard]] const std::string& host() const { return host_; }
  /// Runs argv inside the namespace.
  CmdResult in_ns(std::vector<std::string> argv) const {
    argv.insert(argv.begin(), {ip_, "netns", "exec", ns_});
    return run_cmd(argv, 60s);
  }
  [[nodiscard]] const std::string& peer() const { return peer_; }

 private:
  Veth() = default;
  std::string ip_, host_, peer_, ns_;
  bool have_ns_ = false, have_link_ = false;
};

/// One stored packet: its sequence number and payload.
using Stored = std::vector<std::pair<std::uint16_t, std::string>>;

/// Per call: packets received per stream, what the record files hold, the digits.
struct CallMedia {
  std::map<std::string, std::vector<std::uint64_t>> packets;  // call_id -> per stream packets
  std::map<std::string, std::vector<Stored>> payloads;        // call_id -> per stream packets stored
  std::map<std::string, std::vector<std::string>> dtmf;       // call_id -> digits
};

void read_packets(const fs::path& file, Stored& out) {
  fileio::RecordReader r;
  if (!r.open(file)) return;
  while (const auto pkt = r.next()) {
    const auto v = fileio::parse_rtp(*pkt);
    if (!v) continue;
    out.emplace_back(v->sequence, std::string(reinterpret_cast<const char*>(pkt->data()) + v->header_len, v->payload_len));
  }
}

/// Live and offline store the same received packets; they may differ only in silence fill,
/// which the assembler adds where the *arrival clock* backs a gap: a replay at top speed
/// compresses time, so its gaps are not backed. Returns "" when `live` is `offline` with some
/// of offline's all-silence packets missing, else what differs.
std::string same_but_fill(const Stored& live, const Stored& offline) {
  std::size_t j = 0, skipped = 0;
  for (std::size_t i = 0; i < offline.size(); ++i) {
    if (j < live.size() && live[j] == offline[i]) {
      ++j;
      continue;
    }
    const std::string& pl = offline[i].second;
    const bool silence = !pl.empty() && (std::all_of(pl.begin(), pl.end(), [](char ch) { return ch == '\xD5'; }) ||
                                         std::all_of(pl.begin(), pl.end(), [](char ch) { return ch == '\xFF'; }));
    if (!silence) return "offline packet " + std::to_string(i) + " (seq " + std::to_string(offline[i].first) +
                         ") is audio and not in the live recording";
    ++skipped;
  }
  if (j != live.size()) return "live packet " + std::to_string(j) + " is not in the offline recording";
  return {};
}

CallMedia read_catalog(const fs::path& catalog) {
  CallMedia m;
  fileio::Catalog c;
  if (!c.open_read_only(catalog)) return m;
  fileio::CatalogFilter f;
  f.limit = 0;
  std::vector<fileio::RecordingRow> rows;
  if (!c.list(f, rows)) return m;
  for (const auto& row : rows) {
    auto& pk = m.packets[row.call_id];
    auto& pl = m.payloads[row.call_id];
    pk.assign(2, 0);
    pl.assign(2, Stored{});
    for (const auto& s : row.streams)
      if (s.stream < 2) pk[s.stream] = s.packets;
    for (const auto& g : row.segments)
      if (g.stream < 2) read_packets(g.path, pl[g.stream]);
    for (const auto& e : row.events)
      if (e.kind == "dtmf") m.dtmf[row.call_id].push_back(e.value);
  }
  return m;
}

/// The live run recorded what the offline run of the same capture recorded: the same calls,
/// packets per stream, stored packets (silence fill aside) and digits.
void expect_same_calls(const CallMedia& got, const CallMedia& want) {
  std::set<std::string> want_ids, got_ids;
  for (const auto& [id, pk] : want.packets) want_ids.insert(id);
  for (const auto& [id, pk] : got.packets) got_ids.insert(id);
  EXPECT_EQ(got_ids, want_ids);
  for (const auto& [id, pk] : want.packets) {
    if (!got.packets.contains(id)) continue;
    EXPECT_EQ(got.packets.at(id), pk) << id;
    for (unsigned s = 0; s < 2; ++s)
      EXPECT_EQ(same_but_fill(got.payloads.at(id)[s], want.payloads.at(id)[s]), "") << id << " stream " << s;
    EXPECT_EQ(got.dtmf.contains(id) ? got.dtmf.at(id) : std::vector<std::string>{},
              want.dtmf.contains(id) ? want.dtmf.at(id) : std::vector<std::string>{});
  }
}

/// The calls are the same and every RTP packet was recorded, but up to `slack` packets per
/// direction went to another call than offline: a full-speed replay (net_pcap) puts a packet
/// microseconds after the re-INVITE that hands its endpoint from one B2BUA leg to the other,
/// and lanes on threads of their own match it against the endpoints as the control thread had
/// set them a moment before (live traffic has milliseconds there).
void expect_same_calls_within(const CallMedia& got, const CallMedia& want, std::uint64_t slack) {
  std::set<std::string> want_ids, got_ids;
  std::uint64_t want_total = 0, got_total = 0;
  for (const auto& [id, pk] : want.packets) {
    want_ids.insert(id);
    for (auto n : pk) want_total += n;
  }
  for (const auto& [id, pk] : got.packets) {
    got_ids.insert(id);
    for (auto n : pk) got_total += n;
  }
  EXPECT_EQ(got_ids, want_ids);
  EXPECT_EQ(got_total, want_total);
  for (const auto& [id, pk] : want.packets) {
    if (!got.packets.contains(id)) continue;
    ASSERT_EQ(got.packets.at(id).size(), pk.size()) << id;
    for (std::size_t s = 0; s < pk.size(); ++s) {
      const auto a = got.packets.at(id)[s], b = pk[s];
      EXPECT_LE(a > b ? a - b : b - a, slack) << id << " stream " << s;
    }
  }
}

class SpanLive : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces, veth, promiscuous capture)";
    if (!fs::exists(bin("callrecd"))) GTEST_SKIP() << "callrecd not built";
  }
  static std::string metrics(DaemonProcess& d) { return http(d.metrics_port(), "GET", "/metrics"); }
};

TEST_F(SpanLive, CapturesReplayedOntoAMirrorPortAreRecordedAsTheyAreOffline) {
  const fs::path captures = fs::path(CALLREC_SHARED_TESTDATA_DIR) / "captures";
  if (!fs::is_directory(captures)) GTEST_SKIP() << "shared test data absent: " << captures;
  const std::string tcpreplay = find_program({"/usr/bin/tcpreplay", "/usr/sbin/tcpreplay"});
  if (tcpreplay.empty()) GTEST_SKIP() << "tcpreplay not installed (Debian package tcpreplay)";
  std::string why;
  auto net = Veth::create(&why);
  if (!net) GTEST_SKIP() << "cannot create a veth pair in a network namespace: " << why;

  // SIP over UDP with RTCP, SIP over TCP with comfort noise, RFC 2833 digits with a delayed offer.
  for (const char* name : {"sip-udp-pcmu-ekiga-prack-rtcp.pcap", "sip-tcp-pcma-cn-rtcp.pcap",
                           "sip-udp-pcma-ptime30-dtmf2833-delayed-offer.cap"}) {
    SCOPED_TRACE(name);
    const fs::path cap = captures / name;
    TempDir off_dir, live_dir;
    const CmdResult off = run_cmd({bin("callrecd"), "--span-read", cap.string(), "--storage",
                                   (off_dir.path() / "rec").string(), "--catalog", (off_dir.path() / "cat.db").string(),
                                   "--log-level", "warn"});
    ASSERT_EQ(off.exit_code, 0) << off.err;
    const CallMedia want = read_catalog(off_dir.path() / "cat.db");
    ASSERT_FALSE(want.packets.empty());

    DaemonProcess d(live_dir.path(), {"--span-interface", net->host(), "--flush-ms", "100"});
    ASSERT_TRUE(d.ready()) << d.log();
    // --topspeed: the capture's 15-100 s go by in milliseconds; the kernel ring holds them.
    const CmdResult rep = net->in_ns({tcpreplay, "-q", "-i", net->peer(), "--topspeed", cap.string()});
    ASSERT_EQ(rep.exit_code, 0) << rep.out << rep.err;
    const long long frames = [&] {
      long long n = 0;
      const std::string out = rep.out + rep.err;
      const auto p = out.find("Actual: ");
      if (p != std::string::npos) n = std::stoll(out.substr(p + 8));
      return n;
    }();
    ASSERT_GT(frames, 0) << rep.out;
    ASSERT_TRUE(wait_until([&] { return metric_value(metrics(d), "callrec_span_decode_frames_total") >= frames; }, 20s))
        << "sent " << frames << ", decoded " << metric_value(metrics(d), "callrec_span_decode_frames_total")
        << ", kernel received " << metric_value(metrics(d), "callrec_span_kernel_received_total") << ", dropped "
        << metric_value(metrics(d), "callrec_span_kernel_dropped_total") << "\n" << d.log();
    EXPECT_EQ(metric_value(metrics(d), "callrec_span_kernel_dropped_total"), 0);
    d.signal(SIGTERM);  // calls still open end with reason shutdown, files are finalized
    ASSERT_EQ(d.wait_exit(), 0) << d.log();
    const CallMedia got = read_catalog(d.catalog());

    expect_same_calls(got, want);
  }
}

// A DPDK port in promiscuous mode as the mirror port: net_pcap replays a capture into it (as a
// NIC would deliver a mirror, at full speed: a call's RTP follows its 200 OK by microseconds),
// the daemon's poll-mode lanes take it (one lane, and two: lane 0 spreads to lane 1 by the
// address pair, the SIP goes to the control thread through the lanes' event rings), and the
// calls and bytes are the offline run's.
TEST_F(SpanLive, ADpdkMirrorPortRecordsWhatTheOfflineRunRecords) {
#ifndef CALLREC_HAVE_DPDK
  GTEST_SKIP() << "built without DPDK (libdpdk not found)";
#endif
  const fs::path captures = fs::path(CALLREC_SHARED_TESTDATA_DIR) / "captures";
  if (!fs::is_directory(captures)) GTEST_SKIP() << "shared test data absent: " << captures;
  // Every Ethernet capture (net_pcap hands frames over as Ethernet) on two lanes, two on one.
  std::vector<std::pair<std::string, const char*>> runs;
  for (const auto& e : fs::directory_iterator(captures)) {
    const std::string name = e.path().filename().string();
    if (name.find("sll") != std::string::npos || name.find("ipv6") != std::string::npos) continue;  // Linux cooked
    runs.emplace_back(name, "2");
  }
  std::sort(runs.begin(), runs.end());
  runs.emplace_back("sip-udp-pcma-ekiga-prack-rtcp.pcap", "1");
  runs.emplace_back("sip-tcp-pcma-cn-rtcp.pcap", "1");
  for (const auto& [name, lanes] : runs) {
    SCOPED_TRACE(std::string(name) + ", lanes " + lanes);
    const fs::path cap = captures / name;
    TempDir off_dir, live_dir;
    const CmdResult off = run_cmd({bin("callrecd"), "--span-read", cap.string(), "--storage",
                                   (off_dir.path() / "rec").string(), "--catalog", (off_dir.path() / "cat.db").string(),
                                   "--log-level", "warn"});
    ASSERT_EQ(off.exit_code, 0) << off.err;
    const auto p = off.out.find(" frames, ");
    ASSERT_NE(p, std::string::npos) << off.out;
    const long long frames = std::stoll(off.out.substr(off.out.rfind(' ', p - 1) + 1));
    const CallMedia want = read_catalog(off_dir.path() / "cat.db");

    const std::string prefix =
        "callrec-span-dpdk-" + std::to_string(::getpid()) + "-" + std::to_string(frames) + "-" + lanes;
    DaemonProcess d(live_dir.path(), {"--span-dpdk", "net_pcap_span0,rx_pcap=" + cap.string(), "--span-lanes", lanes,
                                      "--dpdk-idle-sleep", "100", "--dpdk-eal",
                                      "--no-huge --no-pci -m 256 --no-shconf --file-prefix=" + prefix, "--flush-ms",
                                      "100"});
    ASSERT_TRUE(d.ready()) << d.log();
    ASSERT_TRUE(wait_until([&] { return metric_value(metrics(d), "callrec_span_decode_frames_total") >= frames; }, 20s))
        << "decoded " << metric_value(metrics(d), "callrec_span_decode_frames_total") << " of " << frames << "\n"
        << d.log();
    EXPECT_EQ(metric_value(metrics(d), "callrec_span_dpdk_imissed_total"), 0);
    EXPECT_EQ(metric_value(metrics(d), "callrec_span_dpdk_spread_dropped_total"), 0);
    EXPECT_EQ(metric_value(metrics(d), "callrec_span_lanes_events_dropped_total"), 0);
    d.signal(SIGTERM);
    ASSERT_EQ(d.wait_exit(), 0) << d.log();
    std::error_code ec;
    fs::remove_all(fs::path("/var/run/dpdk") / prefix, ec);
    const CallMedia got = read_catalog(d.catalog());
    if (name.find("direct-media") != std::string::npos)
      expect_same_calls_within(got, want, 2);
    else
      expect_same_calls(got, want);
  }
}

// Many calls on several lanes: 40 generated calls (re-INVITEs that move media, fragmented
// INVITEs) spread over three lanes by their address pairs, replayed at full speed, so every RTP
// packet reaches its lane before the control thread has seen its call's 200 OK: the lanes hold
// it and deliver it once the endpoint is set. Every call, every packet and every byte is the
// offline run's, and nothing was lost between lane 0 and the others.
TEST_F(SpanLive, ThreeDpdkLanesRecordWhatTheOfflineRunRecords) {
#ifndef CALLREC_HAVE_DPDK
  GTEST_SKIP() << "built without DPDK (libdpdk not found)";
#endif
  TempDir dir, off_dir, live_dir;
  const fs::path cap = dir.path() / "calls.pcap";
  const CmdResult gen = run_cmd({bin("callrec-pcapgen"), "--calls", "40", "--seconds", "3", "--out", cap.string()});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  const CmdResult off = run_cmd({bin("callrecd"), "--span-read", cap.string(), "--storage", (off_dir.path() / "rec").string(),
                                 "--catalog", (off_dir.path() / "cat.db").string(), "--log-level", "warn"});
  ASSERT_EQ(off.exit_code, 0) << off.err;
  const CallMedia want = read_catalog(off_dir.path() / "cat.db");
  ASSERT_EQ(want.packets.size(), 40u) << off.out;

  const std::string prefix = "callrec-span-lanes-" + std::to_string(::getpid());
  DaemonProcess d(live_dir.path(), {"--span-dpdk", "net_pcap_lanes0,rx_pcap=" + cap.string(), "--span-lanes", "3",
                                    "--dpdk-idle-sleep", "100", "--dpdk-eal",
                                    "--no-huge --no-pci -m 256 --no-shconf --file-prefix=" + prefix, "--flush-ms", "100"});
  ASSERT_TRUE(d.ready()) << d.log();
  ASSERT_TRUE(wait_until([&] { return metric_value(metrics(d), "callrec_span_calls_hangup_total") >= 40; }, 30s))
      << metrics(d) << d.log();
  const std::string m = metrics(d);
  // The spread used every lane, and lost nothing on the way.
  for (const char* lane : {"callrec_span_lane0_frames_total", "callrec_span_lane1_frames_total",
                           "callrec_span_lane2_frames_total"})
    EXPECT_GT(metric_value(m, lane), 0) << lane;
  EXPECT_EQ(metric_value(m, "callrec_span_lane0_frames_total") + metric_value(m, "callrec_span_lane1_frames_total") +
                metric_value(m, "callrec_span_lane2_frames_total"),
            metric_value(m, "callrec_span_decode_frames_total"));
  EXPECT_EQ(metric_value(m, "callrec_span_dpdk_spread_dropped_total"), 0);
  EXPECT_EQ(metric_value(m, "callrec_span_dpdk_imissed_total"), 0);
  EXPECT_EQ(metric_value(m, "callrec_span_lanes_events_dropped_total"), 0);
  EXPECT_EQ(metric_value(m, "callrec_span_rtp_unattributed_total"), 0);
  EXPECT_GT(metric_value(m, "callrec_span_rtp_rescued_total"), 0);  // the race this test is about happened
  d.signal(SIGTERM);
  ASSERT_EQ(d.wait_exit(), 0) << d.log();
  std::error_code ec;
  fs::remove_all(fs::path("/var/run/dpdk") / prefix, ec);
  expect_same_calls(read_catalog(d.catalog()), want);
}

TEST_F(SpanLive, ARealSippCallOnLoopbackIsRecordedByteForByte) {
  const std::string sipp = find_program({"/usr/bin/sipp"});
  const std::string tshark = find_program({"/usr/bin/tshark"});
  const fs::path g711 = "/usr/share/sip-tester/g711a.pcap", digit = "/usr/share/sip-tester/dtmf_2833_1.pcap";
  if (sipp.empty() || !fs::exists(g711) || !fs::exists(digit))
    GTEST_SKIP() << "SIPp with its pcaps is not installed (Debian package sip-tester)";
  if (tshark.empty()) GTEST_SKIP() << "tshark not installed (the independent reference)";
  TempDir dir;
  // SIPp's own uac_pcap scenario, with the paths of Debian's pcaps.
  CmdResult sd = run_cmd({sipp, "-sd", "uac_pcap"});  // prints the scenario (and exits 99)
  ASSERT_NE(sd.out.find("<scenario"), std::string::npos) << sd.out << sd.err;
  std::string xml = sd.out;
  for (const auto& [from, to] : {std::pair<std::string, std::string>{"pcap/g711a.pcap", g711.string()},
                                 {"pcap/dtmf_2833_1.pcap", digit.string()}}) {
    const auto p = xml.find(from);
    ASSERT_NE(p, std::string::npos) << from;
    xml.replace(p, from.size(), to);
  }
  const fs::path scen = dir.path() / "uac.xml";
  {
    FILE* f = std::fopen(scen.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fwrite(xml.data(), 1, xml.size(), f);
    std::fclose(f);
  }
  // Ports of our own so parallel tests and other SIP software do not meet this call.
  std::random_device rd;
  const RtpRangeLock ports(1);  // 400 ports no parallel test's daemon is given
  const unsigned base = ports.lo() + (rd() % 4) * 100;
  const std::string uas_port = std::to_string(base), uac_port = std::to_string(base + 1);
  const std::string uac_media = std::to_string(base + 10), uas_media = std::to_string(base + 50);
  DaemonProcess d(dir.path() / "d",
                  {"--span-interface", "lo", "--span-filter",
                   "udp and (port " + uas_port + " or port " + uac_port + " or portrange " + uac_media + "-" +
                       std::to_string(base + 99) + ")",
                   "--flush-ms", "100"});
  ASSERT_TRUE(d.ready()) << d.log();
  const pid_t uas = ::fork();
  if (uas == 0) {
    ::execl(sipp.c_str(), sipp.c_str(), "-sn", "uas", "-i", "127.0.0.1", "-p", uas_port.c_str(), "-mp",
            uas_media.c_str(), "-nostdin", "-m", "1", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // The uas is up once its SIP port is taken (binding it here fails).
  auto port_taken = [](std::uint16_t port) {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool taken = ::bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0 && errno == EADDRINUSE;
    ::close(fd);
    return taken;
  };
  EXPECT_TRUE(wait_until([&] { return port_taken(static_cast<std::uint16_t>(base)); }, 10s)) << "sipp uas did not bind";
  const CmdResult uac = run_cmd({sipp, "-sf", scen.string(), "127.0.0.1:" + uas_port, "-i", "127.0.0.1", "-p", uac_port,
                                 "-mp", uac_media, "-m", "1", "-nostdin", "-timeout", "30s"},
                                40s);
  ::kill(uas, SIGTERM);
  ::waitpid(uas, nullptr, 0);
  ASSERT_EQ(uac.exit_code, 0) << uac.out << uac.err;
  ASSERT_TRUE(wait_until([&] { return metric_value(metrics(d), "callrec_span_calls_hangup_total") >= 1; }, 10s))
      << metrics(d);
  d.signal(SIGTERM);
  ASSERT_EQ(d.wait_exit(), 0) << d.log();

  const CallMedia got = read_catalog(d.catalog());
  ASSERT_EQ(got.packets.size(), 1u);
  const auto& [call_id, packets] = *got.packets.begin();
  // What SIPp played, by tshark: g711a.pcap's RTP payloads (the digit's packets are events).
  const CmdResult ref = run_cmd({tshark, "-r", g711.string(), "-o", "rtp.heuristic_rtp:TRUE", "-Y", "rtp", "-T", "fields",
                                 "-e", "rtp.payload"});
  ASSERT_EQ(ref.exit_code, 0) << ref.err;
  std::string want;
  std::size_t ref_packets = 0;
  for (std::size_t pos = 0; pos < ref.out.size();) {
    std::size_t nl = ref.out.find('\n', pos);
    if (nl == std::string::npos) nl = ref.out.size();
    std::string hex = ref.out.substr(pos, nl - pos);
    pos = nl + 1;
    std::erase(hex, ':');
    if (hex.empty()) continue;
    ++ref_packets;
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
      want.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  ASSERT_GT(ref_packets, 100u);
  EXPECT_EQ(packets[0], ref_packets) << "the caller's direction holds every packet SIPp played";
  std::string stored;
  for (const auto& [seq, pl] : got.payloads.at(call_id)[0]) stored += pl;
  EXPECT_TRUE(stored == want) << stored.size() << " vs " << want.size() << " bytes";
  EXPECT_EQ(packets[1], 0u) << "SIPp's uas sends no RTP";
  ASSERT_TRUE(got.dtmf.contains(call_id)) << "the RFC 2833 digit SIPp played";
  EXPECT_EQ(got.dtmf.at(call_id), std::vector<std::string>{"1"});
}

}  // namespace
}  // namespace callrec::e2e
