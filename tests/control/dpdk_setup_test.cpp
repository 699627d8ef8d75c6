// The daemon's DPDK settings -> DpdkSource options (EAL arguments, lcores, port, addresses),
// and the validation of the combinations. No DPDK needed: the mapping is plain data.
#include "control/dpdk_setup.hpp"

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <vector>

namespace callrec::control {
namespace {

Status configure(DaemonConfig& cfg, std::initializer_list<const char*> args) {
  std::vector<const char*> argv = {"callrecd"};
  argv.insert(argv.end(), args.begin(), args.end());
  if (Status st = apply_flags(static_cast<int>(argv.size()), argv.data(), cfg); !st) return st;
  return validate(cfg);
}

// --source dpdk is refused at validate() by a build without DPDK.
#ifdef CALLREC_HAVE_DPDK
#define REQUIRE_DPDK() (void)0
#else
#define REQUIRE_DPDK() GTEST_SKIP() << "built without DPDK"
#endif

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& a : v) s += (s.empty() ? "" : " ") + a;
  return s;
}

TEST(CpuList, ParsesAndFormats) {
  std::vector<unsigned> v;
  ASSERT_TRUE(parse_cpu_list("1-3,7, 5", v));
  EXPECT_EQ(v, (std::vector<unsigned>{1, 2, 3, 5, 7}));
  EXPECT_EQ(format_cpu_list(v), "1-3,5,7");
  EXPECT_EQ(format_cpu_list({0}), "0");
  for (const char* bad : {"", "a-b", "3-1", "1-", "-1", "1@2", "2000"}) EXPECT_FALSE(parse_cpu_list(bad, v)) << bad;
}

TEST(DpdkSetup, VdevBecomesThePortAndTheEalGetsMainAndRxLcores) {
  REQUIRE_DPDK();
  DaemonConfig c;
  ASSERT_TRUE(configure(c, {"--source", "dpdk", "--dpdk-address", "10.199.1.2,10.199.1.5", "--dpdk-vdev",
                            "net_af_packet0,iface=veth0", "--dpdk-eal", "--no-huge  --no-pci -m 512",
                            "--dpdk-idle-sleep", "100", "--dpdk-tap", "cr0", "--dpdk-mempool", "4095"}));
  EXPECT_EQ(c.advertise, "10.199.1.2") << "server= is the first dataplane address";
  dataplane::DpdkSource::Options o;
  ASSERT_TRUE(make_dpdk_options(c, {0, 1, 2, 3}, o));
  EXPECT_EQ(joined(o.eal_args), "--no-huge --no-pci -m 512 -l 0-1 --main-lcore=0 --vdev=net_af_packet0,iface=veth0");
  EXPECT_EQ(o.port, "net_af_packet0");
  EXPECT_EQ(o.lcores, (std::vector<unsigned>{1}));
  EXPECT_EQ(o.rx_threads, 1u);
  EXPECT_EQ(o.rx_queues, 1u);
  EXPECT_EQ(o.mempool_mbufs, 4095u);
  EXPECT_EQ(o.addresses, (std::vector<std::string>{"10.199.1.2", "10.199.1.5"}));
  EXPECT_EQ(o.exception_tap, "cr0");
  EXPECT_EQ(o.idle_sleep.count(), 100);
  EXPECT_EQ(o.handoff, dataplane::DpdkSource::Handoff::kCopy) << "copy is the default hand-off";

  DaemonConfig z;
  ASSERT_TRUE(configure(z, {"--source", "dpdk", "--dpdk-address", "10.199.1.2", "--dpdk-handoff", "zerocopy",
                            "--dpdk-zero-copy-credit", "1024"}));
  dataplane::DpdkSource::Options zo;
  ASSERT_TRUE(make_dpdk_options(z, {0, 1}, zo));
  EXPECT_EQ(zo.handoff, dataplane::DpdkSource::Handoff::kZeroCopy);
  EXPECT_EQ(zo.zero_copy_credit, 1024u);
}

TEST(DpdkSetup, Ipv6AddressesReachTheSourceAndAreNotAdvertised) {
  REQUIRE_DPDK();
  DaemonConfig c;
  ASSERT_TRUE(configure(c, {"--source", "dpdk", "--dpdk-address", "10.199.1.2", "--dpdk-address6",
                            "fd00:199:1::2, fe80::2", "--dpdk-vdev", "net_null0"}));
  EXPECT_EQ(c.advertise, "10.199.1.2") << "phones are sent the IPv4 address; RTP is IPv4";
  dataplane::DpdkSource::Options o;
  ASSERT_TRUE(make_dpdk_options(c, {0, 1}, o));
  EXPECT_EQ(o.addresses6, (std::vector<std::string>{"fd00:199:1::2", "fe80::2"}));
  EXPECT_EQ(o.addresses, (std::vector<std::string>{"10.199.1.2"}));
  DaemonConfig none;
  ASSERT_TRUE(configure(none, {"--source", "dpdk", "--dpdk-address", "10.199.1.2"}));
  ASSERT_TRUE(make_dpdk_options(none, {0, 1}, o));
  EXPECT_TRUE(o.addresses6.empty());
}

TEST(DpdkSetup, ExplicitLcoresSetTheRxThreadsAndTheMainLcoreIsAnotherCpu) {
  REQUIRE_DPDK();
  DaemonConfig c;
  ASSERT_TRUE(configure(c, {"--source", "dpdk", "--dpdk-address", "10.199.1.2", "--dpdk-lcores", "0,2", "--dpdk-port", "1"}));
  EXPECT_EQ(c.rx_threads, 2u);
  dataplane::DpdkSource::Options o;
  ASSERT_TRUE(make_dpdk_options(c, {0, 1, 2, 3}, o));
  EXPECT_EQ(joined(o.eal_args), "-l 0-2 --main-lcore=1");
  EXPECT_EQ(o.lcores, (std::vector<unsigned>{0, 2}));
  EXPECT_EQ(o.port, "1");

  const Status st = make_dpdk_options(c, {0, 1}, o);
  EXPECT_FALSE(st);
  EXPECT_EQ(st.message(), "--dpdk-lcores 0,2: CPU 2 is not available to this process (CPUs: 0-1)");
}

TEST(DpdkSetup, EalCoreOptionsAreLeftAlone) {
  REQUIRE_DPDK();
  DaemonConfig c;
  ASSERT_TRUE(configure(c, {"--source", "dpdk", "--dpdk-address", "10.199.1.2", "--dpdk-eal", "--lcores=(0-2)@(0-1)"}));
  dataplane::DpdkSource::Options o;
  ASSERT_TRUE(make_dpdk_options(c, {0, 1}, o));
  EXPECT_EQ(joined(o.eal_args), "--lcores=(0-2)@(0-1)");
  EXPECT_TRUE(o.lcores.empty()) << "DpdkSource takes the first worker lcores";
}

TEST(DpdkSetup, ErrorsNameTheFlag) {
  REQUIRE_DPDK();
  {
    DaemonConfig c;
    ASSERT_TRUE(configure(c, {"--source", "dpdk", "--dpdk-address", "10.199.1.2", "--rx-threads", "2"}));
    dataplane::DpdkSource::Options o;
    const Status st = make_dpdk_options(c, {0, 1}, o);
    EXPECT_FALSE(st);
    EXPECT_EQ(st.message().rfind("--rx-threads 2: --source dpdk needs 2 RX lcore(s) plus a main lcore", 0), 0u)
        << st.message();
  }
  struct Case {
    std::vector<const char*> args;
    const char* error;
  };
  const Case cases[] = {
      {{"--dpdk-vdev", "net_null0", "--dpdk-port", "2"},
       "--dpdk-port 2: conflicts with --dpdk-vdev net_null0 (the vdev is the port)"},
      {{"--dpdk-lcores", "1-2", "--rx-threads", "3"},
       "--dpdk-lcores 1-2: 2 RX lcore(s), but --rx-threads 3 (give one of them, or the same count)"},
      {{"--dpdk-address", "10.199.1.2,10.199.1.2"}, "--dpdk-address 10.199.1.2,10.199.1.2: 10.199.1.2 given twice"},
      {{"--dpdk-address", "10.199.1.2,x"}, "--dpdk-address 10.199.1.2,x: x: not an IPv4 address"},
      {{"--dpdk-vdev", ",iface=x"}, "--dpdk-vdev ,iface=x: expected DRIVER[N][,ARG=VALUE...]"},
      {{"--dpdk-tap", "a-very-long-interface-name"}, "--dpdk-tap a-very-long-interface-name: interface names are at most"},
      {{"--dpdk-idle-sleep", "200000"}, "--dpdk-idle-sleep 200000: must be 0..100000"},
      {{"--dpdk-address6", "10.199.1.2"}, "--dpdk-address6 10.199.1.2: not an IPv6 address"},
      {{"--dpdk-address6", "fd00::2,fd00::x"}, "--dpdk-address6 fd00::2,fd00::x: fd00::x: not an IPv6 address"},
      {{"--dpdk-address6", "fe80::2%eth0"}, "--dpdk-address6 fe80::2%eth0: no zone index (%IFACE)"},
      {{"--dpdk-address6", "ff02::1"}, "--dpdk-address6 ff02::1: a multicast address cannot be the dataplane's"},
      {{"--dpdk-address6", "::"}, "--dpdk-address6 ::: a wildcard address cannot be the dataplane's"},
      {{"--dpdk-address6", "::1"}, "--dpdk-address6 ::1: the loopback address cannot be the dataplane's"},
      {{"--dpdk-address6", "::ffff:10.1.1.1"}, "--dpdk-address6 ::ffff:10.1.1.1: an IPv4-mapped address"},
      {{"--dpdk-address6", "fd00::2,FD00:0::2"}, "--dpdk-address6 fd00::2,FD00:0::2: FD00:0::2 given twice"},
      {{"--dpdk-handoff", "mmap"}, "--dpdk-handoff mmap: expected copy or zerocopy"},
      {{"--dpdk-zero-copy-credit", "1000"}, "--dpdk-zero-copy-credit 1000: expected 0 (auto) or a power of two in 64..1048576"},
  };
  for (const auto& k : cases) {
    DaemonConfig c;
    std::vector<const char*> argv = {"callrecd", "--source", "dpdk"};
    if (std::string(k.args[0]) != "--dpdk-address") {
      argv.push_back("--dpdk-address");
      argv.push_back("10.199.1.2");
    }
    argv.insert(argv.end(), k.args.begin(), k.args.end());
    Status st = apply_flags(static_cast<int>(argv.size()), argv.data(), c);
    if (st) st = validate(c);
    EXPECT_FALSE(st) << k.error;
    EXPECT_EQ(st.message().rfind(k.error, 0), 0u) << st.message();
  }
}

}  // namespace
}  // namespace callrec::control
