// End to end with the DPDK dataplane: the real callrecd with `--source dpdk` whose port is
// `net_af_packet` on the host end of a veth pair; the other end lives in a network namespace
// the test creates, where the phones are.
//
//   namespace callrec-PID-N                 root namespace
//   PEER 10.199.X.3 (phone), .4 (stray) <-> HOST 10.199.X.1: kernel, control TCP listener
//                                           + net_af_packet on HOST: dataplane 10.199.X.2
//   (IPv6 test: PEER fd00:199:X::3)              dataplane fd00:199:X::2 (ND + echo only)
//
// 10.199.X.2 is on no kernel interface: the phones' ARP for it is answered by the dataplane,
// and their RTP reaches it only through DPDK (the kernel of the root namespace drops it:
// forwarding is off on HOST). The control plane stays on the kernel (10.199.X.1), so the
// advertised server= (the dataplane address) differs from the control address, as on a real
// appliance whose capture port has its own address.
//
// Needs root and iproute2 (network namespaces, veth), DPDK built with net_af_packet; no
// hugepages (--no-huge --no-pci). Only private 10.199.0.0/16 addresses are used. Skips with a
// reason otherwise. Everything it creates is removed in teardown, also when a test fails.
#include <gtest/gtest.h>

#include <random>
#include <sched.h>
#include <sys/un.h>

#include <fstream>

#include "common/dpdk_telemetry_client.hpp"
#include "e2e/harness.hpp"
#include "fileio/catalog.hpp"
#include "fileio/record_reader.hpp"

namespace callrec::e2e {
namespace {


std::string find_program(std::initializer_list<const char*> candidates) {
  for (const char* c : candidates) {
    if (::access(c, X_OK) == 0) return c;
  }
  return {};
}

bool write_file(const std::string& path, const std::string& value) {
  std::ofstream f(path);
  f << value;
  return static_cast<bool>(f.flush());
}

/// A veth pair, one end in a network namespace of its own. Removed by the destructor.
class VethNamespace {
 public:
  /// Creates everything; on failure returns nullptr and the reason in *why.
  static std::unique_ptr<VethNamespace> create(std::string* why) {
    const std::string ip = find_program({"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"});
    if (ip.empty()) {
      *why = "iproute2 `ip` not found";
      return nullptr;
    }
    static unsigned counter = 0;
    const unsigned n = counter++;
    const auto pid = static_cast<unsigned>(::getpid());
    auto v = std::unique_ptr<VethNamespace>(new VethNamespace());
    v->ip_ = ip;
    char buf[32];
    std::snprintf(buf, sizeof buf, "crh%x%x", pid & 0xFFFFFFu, n & 0xFu);
    v->host_if_ = buf;
    std::snprintf(buf, sizeof buf, "crp%x%x", pid & 0xFFFFFFu, n & 0xFu);
    v->peer_if_ = buf;
    v->ns_ = "callrec-" + std::to_string(pid) + "-" + std::to_string(n);

    // A /24 of 10.199.0.0/16 that no interface of this namespace uses yet (tests run in parallel).
    const std::string used = run_cmd({ip, "-4", "-o", "addr", "show"}).out;
    unsigned subnet = 0;
    for (unsigned k = 0; k < 250; ++k) {
      const unsigned x = 1 + (pid * 7 + n * 13 + k) % 250;
      if (used.find("10.199." + std::to_string(x) + ".") == std::string::npos) {
        subnet = x;
        break;
      }
    }
    if (subnet == 0) {
      *why = "no free 10.199.X.0/24 subnet";
      return nullptr;
    }
    v->prefix_ = "10.199." + std::to_string(subnet) + ".";
    v->prefix6_ = "fd00:199:" + std::to_string(subnet) + "::";  // ULA; X's digits read as hex

    auto must = [&](std::vector<std::string> args) {
      args.insert(args.begin(), ip);
      const CmdResult r = run_cmd(args, 20s);
      if (r.exit_code != 0) {
        std::string cmd;
        for (const auto& a : args) cmd += a + " ";
        *why = cmd + "failed: " + r.err;
        return false;
      }
      return true;
    };
    if (!must({"netns", "add", v->ns_})) return nullptr;
    v->have_ns_ = true;
    // DPDK's af_packet PMD names its PACKET_FANOUT group (pid ^ ifindex) & 0xffff: pids and new
    // interfaces' indexes of tests started one after the other both step by one, so the ids
    // collide and the kernel refuses the second (EINVAL). A random index makes that 1 in 65,536.
    std::random_device rd;
    bool added = false;
    for (int attempt = 0; attempt < 8 && !added; ++attempt)
      added = must({"link", "add", v->host_if_, "index", std::to_string(1000 + rd() % 60000), "type", "veth", "peer",
                    "name", v->peer_if_});
    if (!added) return nullptr;
    v->have_link_ = true;
    if (!must({"link", "set", v->peer_if_, "netns", v->ns_})) return nullptr;
    // The root namespace must not route the dataplane's traffic (it shares HOST's MAC) or add
    // IPv6 chatter to the port.
    write_file("/proc/sys/net/ipv4/conf/" + v->host_if_ + "/forwarding", "0");
    write_file("/proc/sys/net/ipv6/conf/" + v->host_if_ + "/disable_ipv6", "1");
    if (!must({"addr", "add", v->host_address() + "/24", "dev", v->host_if_})) return nullptr;
    if (!must({"link", "set", v->host_if_, "up"})) return nullptr;
    if (!must({"-n", v->ns_, "link", "set", "lo", "up"})) return nullptr;
    if (!must({"-n", v->ns_, "addr", "add", v->phone_address() + "/24", "dev", v->peer_if_})) return nullptr;
    if (!must({"-n", v->ns_, "addr", "add", v->stray_address() + "/24", "dev", v->peer_if_})) return nullptr;
    if (!must({"-n", v->ns_, "link", "set", v->peer_if_, "up"})) return nullptr;
    v->ns_fd_ = ::open(("/var/run/netns/" + v->ns_).c_str(), O_RDONLY | O_CLOEXEC);
    if (v->ns_fd_ < 0) {
      *why = "open /var/run/netns/" + v->ns_ + ": " + std::strerror(errno);
      return nullptr;
    }
    // Both ends up (veth carries nothing before) and the host address usable (DAD is off for IPv4).
    if (!wait_until([&] {
          return run_cmd({ip, "-n", v->ns_, "-o", "link", "show", v->peer_if_}).out.find("LOWER_UP") != std::string::npos;
        })) {
      *why = "veth " + v->peer_if_ + " did not come up";
      return nullptr;
    }
    return v;
  }

  ~VethNamespace() {
    if (ns_fd_ >= 0) ::close(ns_fd_);
    // Deleting the namespace destroys the peer and so the pair; the explicit delete covers a
    // peer that never moved into it.
    if (have_link_) run_cmd({ip_, "link", "del", host_if_}, 20s);
    if (have_ns_) run_cmd({ip_, "netns", "del", ns_}, 20s);
  }
  VethNamespace(const VethNamespace&) = delete;
  VethNamespace& operator=(const VethNamespace&) = delete;

  [[nodiscard]] const std::string& ns() const { return ns_; }
  [[nodiscard]] const std::string& host_if() const { return host_if_; }
  [[nodiscard]] const std::string& ip() const { return ip_; }
  [[nodiscard]] std::string host_address() const { return prefix_ + "1"; }       ///< kernel, control
  [[nodiscard]] std::string dataplane_address() const { return prefix_ + "2"; }  ///< DPDK only
  [[nodiscard]] std::string phone_address() const { return prefix_ + "3"; }      ///< namespace, primary
  [[nodiscard]] std::string stray_address() const { return prefix_ + "4"; }      ///< namespace, secondary
  [[nodiscard]] std::string dataplane_address6() const { return prefix6_ + "2"; } ///< DPDK only
  [[nodiscard]] std::string phone_address6() const { return prefix6_ + "3"; }     ///< namespace

  /// Gives PEER phone_address6()/64 without duplicate address detection (usable at once);
  /// returns why not on failure. Deleting the namespace removes it.
  std::string add_phone_address6() const {
    // IPv6 may be off by default in a new namespace (net.ipv6.conf.default.disable_ipv6).
    run_cmd({ip_, "netns", "exec", ns_, "sh", "-c", "echo 0 > /proc/sys/net/ipv6/conf/" + peer_if_ + "/disable_ipv6"});
    const CmdResult r =
        run_cmd({ip_, "-n", ns_, "-6", "addr", "add", phone_address6() + "/64", "dev", peer_if_, "nodad"}, 20s);
    return r.exit_code == 0 ? std::string() : "ip -6 addr add " + phone_address6() + " failed: " + r.err;
  }

  /// socket(2) inside the namespace: the calling thread enters it for the call only.
  int socket_in_ns(int type, int protocol = 0, int family = AF_INET) const {
    const int self = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self < 0) return -1;
    int fd = -1;
    if (::setns(ns_fd_, CLONE_NEWNET) == 0) {
      fd = ::socket(family, type | SOCK_CLOEXEC, protocol);
      if (::setns(self, CLONE_NEWNET) != 0) std::abort();  // this thread must not stay in there
    }
    ::close(self);
    return fd;
  }

 private:
  VethNamespace() = default;
  std::string ip_, ns_, host_if_, peer_if_, prefix_, prefix6_;
  bool have_ns_ = false, have_link_ = false;
  int ns_fd_ = -1;
};

sockaddr_in ipv4(const std::string& addr, std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  ::inet_pton(AF_INET, addr.c_str(), &a.sin_addr);
  return a;
}

/// A phone in the namespace: TCP control to the host address, RTP from `rtp_from`; the
/// harness's Phone on sockets made inside the namespace.
class NsPhone : public Phone {
 public:
  NsPhone(const VethNamespace& net, std::uint16_t control_port, const std::string& rtp_from)
      : Phone(net.socket_in_ns(SOCK_STREAM), net.socket_in_ns(SOCK_DGRAM)) {
    connect_control(ipv4(net.host_address(), control_port));
    const sockaddr_in l = ipv4(rtp_from, 0);
    if (udp_fd() >= 0) ::bind(udp_fd(), reinterpret_cast<const sockaddr*>(&l), sizeof l);
  }
  /// Sends every packet to addr:port, pacing a little so that no queue on the way overflows.
  void send_rtp(const std::string& addr, std::uint16_t port, const std::vector<std::vector<std::byte>>& pkts) {
    const sockaddr_in a = ipv4(addr, port);
    for (std::size_t i = 0; i < pkts.size(); ++i) {
      ::sendto(udp_fd(), pkts[i].data(), pkts[i].size(), 0, reinterpret_cast<const sockaddr*>(&a), sizeof a);
      if (i % 20 == 19) std::this_thread::sleep_for(2ms);
    }
  }
};

/// One ICMP echo from the namespace to `addr` (raw socket): true when the reply came back.
bool ping_from_ns(const VethNamespace& net, const std::string& addr, std::uint16_t seq) {
  const int fd = net.socket_in_ns(SOCK_RAW, IPPROTO_ICMP);
  if (fd < 0) return false;
  std::uint8_t req[8 + 32] = {8, 0, 0, 0, 0x43, 0x52, static_cast<std::uint8_t>(seq >> 8), static_cast<std::uint8_t>(seq)};
  for (std::size_t i = 8; i < sizeof req; ++i) req[i] = static_cast<std::uint8_t>(i);
  std::uint32_t sum = 0;
  for (std::size_t i = 0; i < sizeof req; i += 2) sum += static_cast<std::uint32_t>(req[i] << 8 | req[i + 1]);
  while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
  req[2] = static_cast<std::uint8_t>(~sum >> 8);
  req[3] = static_cast<std::uint8_t>(~sum);
  const sockaddr_in to = ipv4(addr, 0);
  bool ok = false;
  if (::sendto(fd, req, sizeof req, 0, reinterpret_cast<const sockaddr*>(&to), sizeof to) == static_cast<ssize_t>(sizeof req)) {
    const auto end = std::chrono::steady_clock::now() + 3s;
    while (!ok && std::chrono::steady_clock::now() < end) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      std::uint8_t buf[1500];
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n < 20) continue;
      const std::size_t ihl = (buf[0] & 0x0Fu) * 4u;
      if (static_cast<std::size_t>(n) < ihl + sizeof req) continue;
      const std::uint8_t* icmp = buf + ihl;
      ok = icmp[0] == 0 && icmp[4] == 0x43 && icmp[5] == 0x52 && icmp[6] == req[6] && icmp[7] == req[7] &&
           std::memcmp(icmp + 8, req + 8, sizeof req - 8) == 0;
    }
  }
  ::close(fd);
  return ok;
}

/// One ICMPv6 echo from the namespace to `addr` (raw socket; the kernel computes the checksum
/// and resolves `addr` with neighbour discovery first): true when the reply came back.
bool ping6_from_ns(const VethNamespace& net, const std::string& addr, std::uint16_t seq) {
  const int fd = net.socket_in_ns(SOCK_RAW, IPPROTO_ICMPV6, AF_INET6);
  if (fd < 0) return false;
  std::uint8_t req[8 + 32] = {128,  0,    0, 0, 0x43, 0x36, static_cast<std::uint8_t>(seq >> 8),
                              static_cast<std::uint8_t>(seq)};
  for (std::size_t i = 8; i < sizeof req; ++i) req[i] = static_cast<std::uint8_t>(i * 3);
  sockaddr_in6 to{};
  to.sin6_family = AF_INET6;
  ::inet_pton(AF_INET6, addr.c_str(), &to.sin6_addr);
  bool ok = false;
  const ssize_t sent = ::sendto(fd, req, sizeof req, 0, reinterpret_cast<const sockaddr*>(&to), sizeof to);
  if (sent == static_cast<ssize_t>(sizeof req)) {
    const auto end = std::chrono::steady_clock::now() + 4s;  // ND gives up after 3 solicitations, 1 s apart
    while (!ok && std::chrono::steady_clock::now() < end) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      std::uint8_t buf[1500];
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);  // the ICMPv6 message, no IPv6 header
      ok = n == static_cast<ssize_t>(sizeof req) && buf[0] == 129 && buf[1] == 0 &&
           std::memcmp(buf + 4, req + 4, sizeof req - 4) == 0;
    }
  }
  ::close(fd);
  return ok;
}

using test_support::telemetry_request;

using test_support::json_number;

class DpdkE2E : public ::testing::Test {
 protected:
  void SetUp() override {
#ifndef CALLREC_HAVE_DPDK
    GTEST_SKIP() << "built without DPDK (libdpdk not found)";
#endif
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces, veth, af_packet)";
    if (!fs::exists(bin("callrecd"))) GTEST_SKIP() << "callrecd not built";
    std::string why;
    net_ = VethNamespace::create(&why);
    if (!net_) GTEST_SKIP() << "cannot create a veth pair in a network namespace: " << why;
  }
  void TearDown() override {
    daemon_.reset();  // before the interface goes away
    net_.reset();
    // EAL leaves its runtime directory (telemetry socket) behind, even with --no-shconf.
    std::error_code ec;
    for (const auto& prefix : prefixes_) fs::remove_all(fs::path("/var/run/dpdk") / prefix, ec);
  }
  /// A unique EAL --file-prefix, removed from /var/run/dpdk in teardown.
  std::string file_prefix(const std::string& what) {
    static unsigned n = 0;
    prefixes_.push_back("callrec-e2e-" + what + std::to_string(::getpid()) + "_" + std::to_string(n++));
    return prefixes_.back();
  }

  DaemonProcess& start_daemon(std::vector<std::string> extra = {}) {
    // DPDK's af_packet PMD derives its PACKET_FANOUT group id from the pid and the interface
    // index; the kernel refuses (EINVAL) a group id another process (a parallel test) holds with
    // other settings. Seen once in CI; a second start has another pid, so another id.
    for (int attempt = 0;; ++attempt) {
      const std::string tag = file_prefix("d");
      std::vector<std::string> args = {
          "--listen", net_->host_address() + ":0", "--source", "dpdk",
          "--dpdk-vdev", "net_af_packet_" + tag.substr(12) + ",iface=" + net_->host_if(),
          "--dpdk-address", net_->dataplane_address(),
          "--dpdk-eal", "--no-huge --no-pci -m 512 --no-shconf --file-prefix=" + tag,
          "--dpdk-mempool", "4095", "--dpdk-idle-sleep", "200", "--flush-ms", "100", "--writers", "1"};
      for (const auto& e : extra) args.push_back(e);
      daemon_ = std::make_unique<DaemonProcess>(dir_.path(), std::move(args));
      if (daemon_->ready() || attempt >= 2 || daemon_->log().find("PACKET_FANOUT") == std::string::npos) break;
      daemon_->wait_exit(10s);
    }
    return *daemon_;
  }
  std::string metrics() { return http(daemon_->metrics_port(), "GET", "/metrics"); }
  long long metric(const std::string& name) { return metric_value(metrics(), name); }
  std::string one_call(std::vector<std::string> extra = {});

  TempDir dir_;
  std::unique_ptr<VethNamespace> net_;
  std::unique_ptr<DaemonProcess> daemon_;
  std::vector<std::string> prefixes_;
};

/// One phone, one call of 250 packets through the dataplane; returns the daemon's metrics text.
std::string DpdkE2E::one_call(std::vector<std::string> extra) {
  DaemonProcess& d = start_daemon(std::move(extra));
  [&] {
  ASSERT_TRUE(d.ready()) << d.log();
  EXPECT_NE(d.log().find("source=dpdk"), std::string::npos) << d.log();

  NsPhone phone(*net_, d.control_port(), net_->phone_address());
  ASSERT_TRUE(phone.connected());
  auto st = phone.start("2001");
  ASSERT_TRUE(st.has_value());
  ASSERT_TRUE(st->success) << st->reason;
  EXPECT_EQ(st->server, net_->dataplane_address()) << "server= is the dataplane's own address";
  ASSERT_NE(st->port, 0);

  // Resolve the dataplane's address first (an ICMP echo): packets the kernel queues while ARP
  // is pending are dropped oldest-first once its small queue fills, which under a loaded CI run
  // cost this test its first RTP packets. Losses on the way in are not what it checks.
  ASSERT_TRUE(wait_until([&] { return ping_from_ns(*net_, st->server, 1); }, 10s)) << metrics() << d.log();
  ASSERT_TRUE(wait_until([&] { return metric("callrec_dpdk_arp_replies_total") >= 1; }))
      << "the phone's ARP for the dataplane address was answered by DPDK\n" << metrics() << d.log();
  const auto sent = make_rtp(250, fileio::Codec::kPcma);
  phone.send_rtp(st->server, st->port, sent);
  ASSERT_TRUE(wait_until([&] { return metric("callrec_writer_packets_total") >= 250; }, 15s)) << metrics() << d.log();
  auto sp = phone.stop("2001");
  ASSERT_TRUE(sp.has_value());
  EXPECT_TRUE(sp->success);
  ASSERT_TRUE(d.wait_log("recording stop: rec=1 ")) << d.log();

  const auto files = record_files(d.storage());
  ASSERT_EQ(files.size(), 1u);
  const auto got = read_packets(files[0]);
  ASSERT_EQ(got.size(), sent.size()) << metrics() << d.log() << "first packet seq "
                                     << (got.empty() ? -1 : (static_cast<int>(got[0][2]) << 8 | static_cast<int>(got[0][3])));
  for (std::size_t i = 0; i < sent.size(); ++i) ASSERT_EQ(got[i], sent[i]) << "packet " << i;

  const auto row = catalog_row(d.catalog(), "2001");
  EXPECT_EQ(row.state, "stopped");
  EXPECT_EQ(row.stop_reason, "phone");
  EXPECT_EQ(row.stats.received, 250u);
  EXPECT_EQ(row.stats.lost, 0u);

  // The lcore publishes its counters every 100 ms: wait for a publish after the last packet.
  EXPECT_TRUE(wait_until([&] { return metric("callrec_rx_packets_total") >= 250; }, 5s)) << metrics();
  const std::string m = metrics();
  EXPECT_EQ(metric_value(m, "callrec_rx_dropped_total{cause=\"ring_full\"}"), 0) << m;
  EXPECT_EQ(metric_value(m, "callrec_dpdk_wrong_source_total"), 0) << m;
  // The kernel never saw the RTP: 10.199.X.2 is on no kernel interface, and the kernel path
  // has no socket for it either. Everything recorded came through DPDK.
  }();
  return metrics();
}

TEST_F(DpdkE2E, OneCallThroughTheDataplaneRecordsExactlyWhatThePhoneSent) {
  const std::string m = one_call();
  EXPECT_EQ(metric_value(m, "callrec_dpdk_zero_copy_total"), 0) << "copy is the default hand-off\n" << m;
}

// The same call with the zero-copy hand-off: the writer reads the payload in the mbufs, which
// the RX lcore frees once the writer has released them.
TEST_F(DpdkE2E, OneCallWithTheZeroCopyHandoffRecordsExactlyWhatThePhoneSent) {
  std::string m = one_call({"--dpdk-handoff", "zerocopy", "--dpdk-zero-copy-credit", "1024"});
  // (one_call returned the daemon's metrics after the call; the lcore publishes them every
  // 100 ms and frees released mbufs as it polls: let one more publish happen if need be.)
  for (int i = 0; i < 50 && (metric_value(m, "callrec_dpdk_zero_copy_total") != 250 ||
                             metric_value(m, "callrec_dpdk_zero_copy_held") != 0); ++i) {
    std::this_thread::sleep_for(100ms);
    m = metrics();
  }
  EXPECT_EQ(metric_value(m, "callrec_dpdk_zero_copy_total"), 250) << m;
  EXPECT_EQ(metric_value(m, "callrec_dpdk_zero_copy_fallback_total"), 0) << m;
  EXPECT_EQ(metric_value(m, "callrec_dpdk_zero_copy_held"), 0) << "every mbuf went back to the pool\n" << m;
  EXPECT_EQ(metric_value(m, "callrec_dpdk_rx_nombuf_total"), 0) << m;
}

TEST_F(DpdkE2E, RtpFromAnotherAddressIsCountedAndNotWritten) {
  DaemonProcess& d = start_daemon();
  ASSERT_TRUE(d.ready()) << d.log();
  NsPhone phone(*net_, d.control_port(), net_->phone_address());
  NsPhone stray(*net_, d.control_port(), net_->stray_address());
  ASSERT_TRUE(phone.connected());
  auto st = phone.start("2002");
  ASSERT_TRUE(st.has_value());
  ASSERT_TRUE(st->success) << st->reason;

  // 40 forged packets (same SSRC and sequence numbers as the real ones) from the phone's
  // neighbour, then the real stream.
  auto forged = make_rtp(40, fileio::Codec::kPcma);
  for (auto& p : forged) std::fill(p.begin() + 12, p.end(), std::byte{0x55});
  stray.send_rtp(st->server, st->port, forged);
  ASSERT_TRUE(wait_until([&] { return metric("callrec_dpdk_wrong_source_total") == 40; }, 15s)) << metrics() << d.log();
  const auto sent = make_rtp(100, fileio::Codec::kPcma);
  phone.send_rtp(st->server, st->port, sent);
  ASSERT_TRUE(wait_until([&] { return metric("callrec_writer_packets_total") >= 100; }, 15s)) << metrics();
  auto sp = phone.stop("2002");
  ASSERT_TRUE(sp.has_value());
  ASSERT_TRUE(d.wait_log("recording stop: rec=1 ")) << d.log();

  const auto files = record_files(d.storage());
  ASSERT_EQ(files.size(), 1u);
  const auto got = read_packets(files[0]);
  ASSERT_EQ(got.size(), sent.size());
  for (std::size_t i = 0; i < sent.size(); ++i) ASSERT_EQ(got[i], sent[i]) << "packet " << i;
  const std::string m = metrics();
  EXPECT_EQ(metric_value(m, "callrec_rx_dropped_total{cause=\"wrong_source\"}"), 40) << m;
  EXPECT_EQ(catalog_row(d.catalog(), "2002").stats.received, 100u);
}

TEST_F(DpdkE2E, DpdkCountersAppearInMetricsAndStatus) {
  DaemonProcess& d = start_daemon();
  ASSERT_TRUE(d.ready()) << d.log();
  NsPhone phone(*net_, d.control_port(), net_->phone_address());
  ASSERT_TRUE(phone.connected());
  // A UDP packet to a port with no recording: counted as unknown_flow (and it makes the phone ARP).
  auto st = phone.start("2003");
  ASSERT_TRUE(st.has_value());
  ASSERT_TRUE(st->success) << st->reason;
  phone.send_rtp(net_->dataplane_address(), static_cast<std::uint16_t>(st->port + 1), make_rtp(3, fileio::Codec::kPcma));
  ASSERT_TRUE(wait_until([&] { return metric("callrec_dpdk_unknown_flow_total") == 3; }, 15s)) << metrics() << d.log();

  EXPECT_TRUE(ping_from_ns(*net_, net_->dataplane_address(), 1)) << "the dataplane answers ICMP echo";
  EXPECT_TRUE(ping_from_ns(*net_, net_->dataplane_address(), 2));
  EXPECT_TRUE(wait_until([&] { return metric("callrec_dpdk_icmp_replies_total") == 2; }, 5s)) << metrics();

  const std::string m = metrics();
  for (const char* name : {"callrec_dpdk_imissed_total", "callrec_dpdk_rx_nombuf_total", "callrec_dpdk_ierrors_total",
                           "callrec_dpdk_ring_full_total", "callrec_dpdk_unknown_flow_total",
                           "callrec_dpdk_wrong_source_total", "callrec_dpdk_arp_replies_total",
                           "callrec_dpdk_icmp_replies_total", "callrec_dpdk_exception_path_total",
                           "callrec_dpdk_dropped_total", "callrec_dpdk_forwarded_total"}) {
    EXPECT_GE(metric_value(m, name), 0) << name << " missing\n" << m;
    EXPECT_NE(m.find(std::string("# TYPE ") + name + " counter"), std::string::npos) << name;
  }
  EXPECT_GE(metric_value(m, "callrec_dpdk_arp_replies_total"), 1) << m;
  EXPECT_EQ(metric_value(m, "callrec_rx_dropped_total{cause=\"unknown_flow\"}"), 3) << m;

  const std::string s = http(d.metrics_port(), "GET", "/status");
  for (const char* key : {"\"source\":\"dpdk\"", "\"dpdk_imissed\":", "\"dpdk_rx_nombuf\":", "\"dpdk_ierrors\":",
                          "\"dpdk_arp_replies\":", "\"dpdk_icmp_replies\":", "\"dpdk_exception_path\":",
                          "\"dpdk_unknown_flow\":3", "\"drop_unknown_flow\":3"}) {
    EXPECT_NE(s.find(key), std::string::npos) << key << "\n" << s;
  }
}

// IPv6 host presence: the namespace's kernel resolves the dataplane's IPv6 address with real
// neighbour discovery (multicast solicitation to the solicited-node group, our advertisement
// back) and pings it. The root namespace has IPv6 off on HOST: only DPDK can answer.
TEST_F(DpdkE2E, Ipv6NeighbourDiscoveryAndPingAreAnsweredByTheDataplane) {
  if (!fs::exists("/proc/sys/net/ipv6")) GTEST_SKIP() << "the kernel has no IPv6";
  const std::string why = net_->add_phone_address6();
  ASSERT_TRUE(why.empty()) << why;
  DaemonProcess& d = start_daemon({"--dpdk-address6", net_->dataplane_address6()});
  ASSERT_TRUE(d.ready()) << d.log();
  EXPECT_NE(d.log().find("IPv6 address(es) " + net_->dataplane_address6()), std::string::npos) << d.log();

  // The first echo waits for address resolution (the kernel queues it meanwhile).
  unsigned replies = 0;
  for (std::uint16_t seq = 1; seq <= 3; ++seq) replies += ping6_from_ns(*net_, net_->dataplane_address6(), seq) ? 1 : 0;
  EXPECT_EQ(replies, 3u) << metrics() << d.log();
  const std::string ping = find_program({"/usr/bin/ping", "/bin/ping"});
  if (!ping.empty()) {  // iputils, when installed (not a dependency): the same through ping -6
    const CmdResult r = run_cmd({net_->ip(), "netns", "exec", net_->ns(), ping, "-6", "-c", "3", "-W", "2",
                                 net_->dataplane_address6()}, 30s);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    replies += 3;
  }

  // The namespace learned the port's MAC from our advertisement's target link-layer option.
  std::string mac;
  std::ifstream("/sys/class/net/" + net_->host_if() + "/address") >> mac;
  const CmdResult neigh = run_cmd({net_->ip(), "-n", net_->ns(), "-6", "neigh", "show", net_->dataplane_address6()});
  EXPECT_NE(neigh.out.find("lladdr " + mac), std::string::npos) << neigh.out << " vs " << mac;

  ASSERT_TRUE(wait_until([&] { return metric("callrec_dpdk_icmp6_replies_total") >= replies; }, 5s)) << metrics();
  const std::string m = metrics();
  EXPECT_GE(metric_value(m, "callrec_dpdk_nd_replies_total"), 1) << m;
  EXPECT_GE(metric_value(m, "callrec_dpdk_icmp6_replies_total"), 3) << m;
  EXPECT_EQ(metric_value(m, "callrec_dpdk_icmp6_invalid_total"), 0) << m;
  const std::string s = http(d.metrics_port(), "GET", "/status");
  for (const char* key : {"\"dpdk_nd_replies\":", "\"dpdk_icmp6_replies\":", "\"dpdk_icmp6_invalid\":0"}) {
    EXPECT_NE(s.find(key), std::string::npos) << key << "\n" << s;
  }

  // The same counters on EAL's telemetry socket: on with the daemon's EAL arguments
  // (--no-huge --no-shconf --file-prefix), in the runtime directory of the file prefix.
  const std::string socket = "/var/run/dpdk/" + prefixes_.back() + "/dpdk_telemetry.v2";
  ASSERT_NE(d.log().find("dpdk: telemetry socket " + socket), std::string::npos) << d.log();
  const std::string stats = telemetry_request(socket, "/callrec/stats");
  EXPECT_GE(json_number(stats, "nd_replies"), 1) << stats;
  EXPECT_GE(json_number(stats, "icmp6_replies"), static_cast<long long>(replies)) << stats;
  EXPECT_EQ(json_number(stats, "sources"), 1) << stats;
}

TEST_F(DpdkE2E, CallrecPhoneInTheNamespaceRecordsThroughTheDataplane) {
  if (!fs::exists(bin("callrec-phone"))) GTEST_SKIP() << "callrec-phone not built";
  DaemonProcess& d = start_daemon();
  ASSERT_TRUE(d.ready()) << d.log();
  const int phones = 4;
  const auto r = run_cmd({net_->ip(), "netns", "exec", net_->ns(), bin("callrec-phone"), "--server",
                          net_->host_address() + ":" + std::to_string(d.control_port()), "--phones",
                          std::to_string(phones), "--duration", "1", "--ramp", "100", "--report-interval", "0", "--json"},
                         60s);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << d.log();
  ASSERT_TRUE(wait_until([&] { return d.count_log("recording stop:") == phones; }, 15s)) << d.log();
  fileio::Catalog c;
  ASSERT_TRUE(c.open(d.catalog()));
  std::vector<fileio::RecordingRow> rows;
  fileio::CatalogFilter f;
  f.limit = 0;
  ASSERT_TRUE(c.list(f, rows));
  ASSERT_EQ(rows.size(), static_cast<std::size_t>(phones));
  for (const auto& row : rows) {
    EXPECT_EQ(row.state, "stopped");
    EXPECT_GE(row.stats.received, 40u) << row.call_id;  // ~50 packets in 1 s
    EXPECT_EQ(row.stats.lost, 0u) << row.call_id;
  }
}

// SIPREC through the DPDK dataplane: signalling on the kernel (the host address), the answers'
// c= is the dataplane's address, so both streams of every session arrive only through DPDK.
TEST_F(DpdkE2E, SiprecSessionsRecordTheirStreamsThroughTheDataplane) {
  if (!fs::exists(bin("callrec-phone"))) GTEST_SKIP() << "callrec-phone not built";
  std::random_device rd;
  const std::string sip = net_->host_address() + ":" + std::to_string(15000 + rd() % 4900);
  DaemonProcess& d = start_daemon({"--siprec-listen", sip});
  ASSERT_TRUE(d.ready()) << d.log();
  // The namespace resolves the dataplane address before the sessions start (see one_call()).
  ASSERT_TRUE(wait_until([&] { return ping_from_ns(*net_, net_->dataplane_address(), 1); }, 10s)) << d.log();
  const int sessions = 3;
  const auto r = run_cmd({net_->ip(), "netns", "exec", net_->ns(), bin("callrec-phone"), "--siprec", sip, "--calls",
                          std::to_string(sessions), "--duration", "1", "--rate", "100"},
                         60s);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << d.log();
  ASSERT_TRUE(wait_until([&] { return d.count_log("recording stop:") == sessions; }, 15s)) << d.log();
  fileio::Catalog c;
  ASSERT_TRUE(c.open(d.catalog()));
  std::vector<fileio::RecordingRow> rows;
  fileio::CatalogFilter f;
  f.limit = 0;
  ASSERT_TRUE(c.list(f, rows));
  ASSERT_EQ(rows.size(), static_cast<std::size_t>(sessions));
  for (const auto& row : rows) {
    EXPECT_EQ(row.source, "siprec");
    ASSERT_EQ(row.streams.size(), 2u) << row.call_id;
    for (const auto& st : row.streams) {
      EXPECT_GE(st.packets, 40u) << row.call_id << " stream " << st.stream;  // ~50 packets in 1 s
      EXPECT_EQ(st.lost, 0u) << row.call_id;
    }
  }
  EXPECT_GE(metric("callrec_rx_packets_total"), 2 * 40 * sessions) << "RTP counted by the DPDK source\n" << metrics();
}

TEST_F(DpdkE2E, SigtermDuringACallFinishesTheRecordingAndExitsZero) {
  DaemonProcess& d = start_daemon();
  ASSERT_TRUE(d.ready()) << d.log();
  NsPhone phone(*net_, d.control_port(), net_->phone_address());
  ASSERT_TRUE(phone.connected());
  auto st = phone.start("2004");
  ASSERT_TRUE(st.has_value());
  ASSERT_TRUE(st->success) << st->reason;
  phone.send_rtp(st->server, st->port, make_rtp(50, fileio::Codec::kPcma));
  ASSERT_TRUE(wait_until([&] { return metric("callrec_writer_packets_total") >= 50; }, 15s)) << metrics() << d.log();

  d.signal(SIGTERM);
  // The phone is told its recording stopped before the connection closes.
  auto m = phone.recv(10s);
  ASSERT_TRUE(m.has_value()) << d.log();
  EXPECT_EQ(m->cmd, "RecordStopRequest") << d.log();
  EXPECT_EQ(m->get("reason").value_or(""), "shutdown");
  EXPECT_EQ(d.wait_exit(), 0) << d.log();
  EXPECT_NE(d.log().find("stopped: 1 recording(s)"), std::string::npos) << d.log();
  const auto row = catalog_row(d.catalog(), "2004");
  EXPECT_EQ(row.state, "stopped");
  EXPECT_EQ(row.stop_reason, "shutdown");
  EXPECT_EQ(row.stats.received, 50u);
}

TEST_F(DpdkE2E, BadDpdkSettingsFailAtStartWithAClearError) {
  // No such interface behind the vdev: the daemon refuses to start, and says why.
  const auto r = run_cmd({bin("callrecd"), "--listen", net_->host_address() + ":0", "--metrics", "",
                          "--storage", (dir_.path() / "rec").string(), "--source", "dpdk", "--dpdk-vdev",
                          "net_af_packet_bad" + std::to_string(::getpid()) + ",iface=crnosuchif0", "--dpdk-address",
                          net_->dataplane_address(), "--dpdk-eal",
                          "--no-huge --no-pci -m 256 --no-shconf --file-prefix=" + file_prefix("bad")},
                         60s);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("--source dpdk: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--dpdk-vdev net_af_packet_bad"), std::string::npos) << "the message names the flag\n" << r.err;
}

}  // namespace
}  // namespace callrec::e2e
