// Daemon configuration: defaults, flags in both forms, the config file and its errors,
// validation messages that name the option, usage text, address helpers.
#include "control/config.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <vector>

namespace callrec::control {
namespace {

/// Runs apply_flags over {"callrecd", args...}.
Status flags(DaemonConfig& cfg, std::initializer_list<const char*> args) {
  std::vector<const char*> argv{"callrecd"};
  argv.insert(argv.end(), args.begin(), args.end());
  return apply_flags(static_cast<int>(argv.size()), argv.data(), cfg);
}

/// Flags then validate(): the daemon's sequence.
Status configure(DaemonConfig& cfg, std::initializer_list<const char*> args) {
  if (Status st = flags(cfg, args); !st) return st;
  return validate(cfg);
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "callrec-config-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data()) != nullptr ? tmpl : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] std::filesystem::path write(const std::string& name, const std::string& text) const {
    auto p = path_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

TEST(Config, DefaultsAreValidAndResolved) {
  DaemonConfig c;
  ASSERT_TRUE(validate(c)) << validate(c).message();
  EXPECT_EQ(c.listen, "0.0.0.0:7070");
  EXPECT_EQ(c.rtp_port_lo, 40000);
  EXPECT_EQ(c.rtp_port_hi, 49999);
  EXPECT_FALSE(c.rtp_all_ports);
  EXPECT_EQ(c.advertise, "");
  EXPECT_EQ(c.storage.string(), "/var/lib/callrec/recordings");
  EXPECT_EQ(c.catalog.string(), "/var/lib/callrec/catalog.db");
  EXPECT_EQ(c.rx_threads, 1u);
  EXPECT_EQ(c.writers, 0u);  // auto
  EXPECT_EQ(c.rtp_timeout_s, 30u);
  EXPECT_FALSE(c.latch);
  EXPECT_EQ(c.max_connections, 0u);  // auto: from the descriptor limit
  EXPECT_EQ(c.max_connections_per_address, 1024u);
  EXPECT_EQ(c.max_recordings_per_address, 4096u);
  EXPECT_EQ(c.control_quiet_ms, 5000u);
  EXPECT_EQ(c.max_message, 4096u);
  EXPECT_EQ(c.reserve_mb, 256u);
  EXPECT_EQ(c.max_file_mb, 0u);
  EXPECT_EQ(c.flush_ms, 1000u);
  EXPECT_EQ(c.reorder_window, 8u);
  EXPECT_EQ(c.max_gap_fill, 50u);
  EXPECT_EQ(c.port_quarantine_s, 30u);
  EXPECT_EQ(c.metrics, "127.0.0.1:9464");
  EXPECT_EQ(c.log_level, "info");
  EXPECT_EQ(c.source, SourceKind::kKernel);
}

TEST(Config, CatalogDefaultsNextToStorage) {
  for (const auto& [storage, catalog] : std::vector<std::pair<const char*, const char*>>{
           {"/srv/rec", "/srv/catalog.db"}, {"/srv/rec/", "/srv/catalog.db"}, {"var/recordings", "var/catalog.db"}}) {
    DaemonConfig c;
    ASSERT_TRUE(configure(c, {"--storage", storage}));
    EXPECT_EQ(c.catalog.string(), catalog) << storage;
  }
  DaemonConfig c;
  ASSERT_TRUE(configure(c, {"--storage", "/a/b", "--catalog", "/c/d.db"}));
  EXPECT_EQ(c.catalog.string(), "/c/d.db");
}

TEST(Config, EveryFlagInBothForms) {
  for (const bool inline_form : {false, true}) {
    const std::vector<std::pair<std::string, std::string>> set = {
        {"--listen", "127.0.0.1:0"},     {"--rtp-ports", "20000-20099"}, {"--advertise", "192.0.2.7"},
        {"--storage", "/tmp/rec"},       {"--catalog", "/tmp/cat.db"},   {"--rx-threads", "4"},
        {"--writers", "3"},              {"--rtp-timeout", "90"},        {"--max-connections", "500"},
        {"--max-message", "8192"},       {"--reserve-mb", "1024"},       {"--max-file-mb", "100"},
        {"--flush-ms", "250"},           {"--reorder-window", "16"},     {"--max-gap-fill", "0"},
        {"--port-quarantine", "5"},      {"--metrics", "[::1]:9000"},    {"--log-level", "DEBUG"},
        {"--source", "kernel"},          {"--dpdk-eal", "--no-huge -m 256"}, {"--dpdk-port", "1"},
        {"--dpdk-queues", "2"},          {"--dpdk-lcores", "1-2"},       {"--dpdk-mempool", "8191"},
        {"--dpdk-address", "198.51.100.2"}};
    std::vector<std::string> args;
    for (const auto& [f, v] : set) {
      if (inline_form) {
        args.push_back(f);
        args.back() += "=";
        args.back() += v;
      } else {
        args.push_back(f);
        args.push_back(v);
      }
    }
    args.push_back(inline_form ? "--latch=yes" : "--latch");
    args.push_back(inline_form ? "--rtp-all-ports=true" : "--rtp-all-ports");
    std::vector<const char*> argv{"callrecd"};
    for (const auto& a : args) argv.push_back(a.c_str());
    DaemonConfig c;
    const Status st = apply_flags(static_cast<int>(argv.size()), argv.data(), c);
    ASSERT_TRUE(st) << st.message();
    ASSERT_TRUE(validate(c)) << validate(c).message();
    EXPECT_EQ(c.listen, "127.0.0.1:0");
    EXPECT_EQ(c.rtp_port_lo, 20000);
    EXPECT_EQ(c.rtp_port_hi, 20099);
    EXPECT_TRUE(c.rtp_all_ports);
    EXPECT_EQ(c.advertise, "192.0.2.7");
    EXPECT_EQ(c.storage.string(), "/tmp/rec");
    EXPECT_EQ(c.catalog.string(), "/tmp/cat.db");
    EXPECT_EQ(c.rx_threads, 4u);
    EXPECT_EQ(c.writers, 3u);
    EXPECT_EQ(c.rtp_timeout_s, 90u);
    EXPECT_TRUE(c.latch);
    EXPECT_EQ(c.max_connections, 500u);
    EXPECT_EQ(c.max_message, 8192u);
    EXPECT_EQ(c.reserve_mb, 1024u);
    EXPECT_EQ(c.max_file_mb, 100u);
    EXPECT_EQ(c.flush_ms, 250u);
    EXPECT_EQ(c.reorder_window, 16u);
    EXPECT_EQ(c.max_gap_fill, 0u);
    EXPECT_EQ(c.port_quarantine_s, 5u);
    EXPECT_EQ(c.metrics, "[::1]:9000");
    EXPECT_EQ(c.log_level, "debug");
    EXPECT_EQ(c.dpdk.eal, "--no-huge -m 256");
    EXPECT_EQ(c.dpdk.port, 1);
    EXPECT_EQ(c.dpdk.queues, 2u);
    EXPECT_EQ(c.dpdk.lcores, "1-2");
    EXPECT_EQ(c.dpdk.mempool, 8191u);
    EXPECT_EQ(c.dpdk.address, "198.51.100.2");
  }
}

TEST(Config, BooleanFlagsTakeAnExplicitValueOnlyInline) {
  DaemonConfig c;
  {
    DaemonConfig a;
    EXPECT_FALSE(a.latch_any) << "latching any address is opt-in";
    ASSERT_TRUE(flags(a, {"--latch", "--latch-any"}));
    EXPECT_TRUE(a.latch);
    EXPECT_TRUE(a.latch_any);
  }
  ASSERT_TRUE(flags(c, {"--latch", "--latch=off"}));
  EXPECT_FALSE(c.latch);
  // "--latch false" would make "false" a stray argument, not the flag's value.
  DaemonConfig d;
  const Status st = flags(d, {"--latch", "false"});
  ASSERT_FALSE(st);
  EXPECT_NE(st.message().find("unexpected argument 'false'"), std::string::npos) << st.message();
}

TEST(Config, HelpAndVersionWinOverEverythingElse) {
  DaemonConfig c;
  ASSERT_TRUE(flags(c, {"--rx-threads", "0", "--help", "--bogus"}));
  EXPECT_TRUE(c.show_help);
  DaemonConfig h;
  ASSERT_TRUE(flags(h, {"-h"}));
  EXPECT_TRUE(h.show_help);
  DaemonConfig v;
  ASSERT_TRUE(flags(v, {"--version"}));
  EXPECT_TRUE(v.show_version);
  EXPECT_FALSE(v.show_help);
}

TEST(Config, CommandLineErrors) {
  const std::vector<std::pair<std::vector<const char*>, std::string>> cases = {
      {{"--bogus"}, "unknown option --bogus"},
      {{"--bogus=1"}, "unknown option --bogus"},
      {{"--listen"}, "--listen: missing ADDR:PORT"},
      {{"--config"}, "--config: missing FILE"},
      {{"stray"}, "unexpected argument 'stray'"},
      {{"-x"}, "unexpected argument '-x'"},
      {{"--"}, "unexpected argument '--'"},
      {{"--config", "/nonexistent/callrec.conf"}, "/nonexistent/callrec.conf"},
  };
  for (const auto& [args, want] : cases) {
    std::vector<const char*> argv{"callrecd"};
    argv.insert(argv.end(), args.begin(), args.end());
    DaemonConfig c;
    const Status st = apply_flags(static_cast<int>(argv.size()), argv.data(), c);
    ASSERT_FALSE(st) << want;
    EXPECT_NE(st.message().find(want), std::string::npos) << st.message();
  }
}

TEST(Config, BadValuesAreRejectedNamingTheOptionAndTheValue) {
  const std::vector<std::pair<std::vector<const char*>, std::string>> cases = {
      {{"--rtp-ports", "5000-4000"}, "--rtp-ports 5000-4000: low port above high port"},
      {{"--rtp-ports", "0-100"}, "--rtp-ports 0-100: port 0 is not a port"},
      {{"--rtp-ports", "abc"}, "--rtp-ports abc: expected LO-HI"},
      {{"--rtp-ports", "4000-70000"}, "--rtp-ports 4000-70000: expected LO-HI (out of range)"},
      {{"--rtp-ports", "40001-40001"}, "--rtp-ports 40001-40001: no even port"},
      {{"--listen", "1.2.3.4"}, "--listen 1.2.3.4: '1.2.3.4': expected ADDR:PORT"},
      {{"--listen", "::1:7070"}, "--listen ::1:7070: '::1:7070': an IPv6 address needs brackets"},
      {{"--listen", "[::1]:99999"}, "--listen [::1]:99999: '[::1]:99999': port must be 0..65535"},
      {{"--listen", "1.2.3:7070"}, "--listen 1.2.3:7070: '1.2.3:7070': '1.2.3' is not an IPv4 address"},
      {{"--listen", "host:7070"}, "--listen host:7070"},
      {{"--listen", ""}, "--listen: empty endpoint"},
      {{"--advertise", "0.0.0.0"}, "--advertise 0.0.0.0: a wildcard address cannot be sent to phones"},
      {{"--advertise", "300.1.1.1"}, "--advertise 300.1.1.1: not an IP address or host name"},
      {{"--advertise", "fe80::zz"}, "--advertise fe80::zz: not a valid IPv6 address"},
      {{"--advertise", "bad_host!"}, "--advertise bad_host!"},
      {{"--storage", ""}, "--storage: must not be empty"},
      {{"--rx-threads", "0"}, "--rx-threads 0: must be 1..256"},
      {{"--rx-threads", "abc"}, "--rx-threads abc: not a number"},
      {{"--rx-threads", "-1"}, "--rx-threads -1: not a number"},
      {{"--rx-threads", "99999999999"}, "--rx-threads 99999999999: out of range"},
      {{"--writers", "1000"}, "--writers 1000: must be 0..256"},
      {{"--rtp-timeout", "0"}, "--rtp-timeout 0: must be 1..86400"},
      {{"--latch=maybe"}, "--latch maybe: expected true|false"},
      {{"--max-connections", "1000001"}, "--max-connections 1000001: must be 0..1000000"},
      {{"--control-quiet-ms", "10"}, "--control-quiet-ms 10: must be 100..600000"},
      {{"--metrics-max-connections", "0"}, "--metrics-max-connections 0: must be 1..1024"},
      {{"--max-message", "10"}, "--max-message 10: must be 256..1048576"},
      {{"--max-file-mb", "5000"}, "--max-file-mb 5000: must be 0 (unlimited) or 1..4095"},
      {{"--flush-ms", "1"}, "--flush-ms 1: must be 10..60000"},
      {{"--reorder-window", "0"}, "--reorder-window 0: must be 1..256"},
      {{"--max-gap-fill", "99999"}, "--max-gap-fill 99999: must be 0..3000"},
      {{"--port-quarantine", "4000"}, "--port-quarantine 4000: must be 0..3600"},
      {{"--metrics", "nonsense"}, "--metrics nonsense"},
      {{"--metrics", "0.0.0.0:7070"}, "--metrics 0.0.0.0:7070: same endpoint as --listen"},
      {{"--log-level", "loud"}, "--log-level loud: expected error|warn|info|debug"},
      {{"--source", "pcap"}, "--source pcap: expected kernel|dpdk"},
      {{"--dpdk-port", "70000"}, "--dpdk-port 70000: out of range"},
      {{"--dpdk-queues", "65"}, "--dpdk-queues 65: must be 0..64"},
      {{"--dpdk-mempool", "5"}, "--dpdk-mempool 5: must be 1023..16777216"},
      {{"--dpdk-lcores", "a-b"}, "--dpdk-lcores a-b: expected an lcore list"},
      {{"--dpdk-address", "::1"}, "--dpdk-address ::1: not an IPv4 address"},
      {{"--dpdk-address", "0.0.0.0"}, "--dpdk-address 0.0.0.0: a wildcard address"},
  };
  for (const auto& [args, want] : cases) {
    std::vector<const char*> argv{"callrecd"};
    argv.insert(argv.end(), args.begin(), args.end());
    DaemonConfig c;
    Status st = apply_flags(static_cast<int>(argv.size()), argv.data(), c);
    if (st) st = validate(c);
    ASSERT_FALSE(st) << want;
    EXPECT_NE(st.message().find(want), std::string::npos) << "want: " << want << "\ngot:  " << st.message();
  }
}

TEST(Config, ValidateChecksProgrammaticConfigsToo) {
  DaemonConfig c;
  c.rtp_port_lo = 5000;
  c.rtp_port_hi = 4000;
  EXPECT_EQ(validate(c).message(), "--rtp-ports 5000-4000: low port above high port");
  DaemonConfig w;
  w.writers = 257;
  EXPECT_EQ(validate(w).message(), "--writers 257: must be 0..256");
  DaemonConfig l;
  l.log_level = "verbose";
  EXPECT_EQ(validate(l).message(), "--log-level verbose: expected error|warn|info|debug");
}

TEST(Config, GoodAddressForms) {
  for (const char* listen : {"0.0.0.0:7070", "[::]:7070", "[::1]:0", ":7070", "*:7070", "127.0.0.1:65535"}) {
    DaemonConfig c;
    EXPECT_TRUE(configure(c, {"--listen", listen})) << listen;
  }
  for (const char* adv : {"192.0.2.1", "2001:db8::1", "[2001:db8::1]", "rec.example.com", "recorder"}) {
    DaemonConfig c;
    EXPECT_TRUE(configure(c, {"--advertise", adv})) << adv;
  }
  DaemonConfig off;
  ASSERT_TRUE(configure(off, {"--metrics="}));
  EXPECT_EQ(off.metrics, "");
}

TEST(Config, DpdkSource) {
  DaemonConfig c;
  const Status st = configure(c, {"--source", "dpdk", "--rx-threads", "2"});
  ASSERT_FALSE(st);
#ifdef CALLREC_HAVE_DPDK
  EXPECT_EQ(st.message(), "--dpdk-address: required with --source dpdk");
  DaemonConfig d;
  ASSERT_TRUE(configure(d, {"--source", "dpdk", "--rx-threads", "2", "--dpdk-address", "198.51.100.2"}));
  EXPECT_EQ(d.source, SourceKind::kDpdk);
  EXPECT_EQ(d.dpdk.queues, 2u) << "0: one queue per RX thread";
  EXPECT_EQ(d.advertise, "198.51.100.2") << "phones must send RTP to the dataplane's address";
#else
  EXPECT_NE(st.message().find("--source dpdk: this build has no DPDK support"), std::string::npos) << st.message();
#endif
}

TEST(ConfigFile, KeysSectionsCommentsQuotes) {
  const std::string text =
      "# callrecd configuration\n"
      "\n"
      "listen = 127.0.0.1:7171   # inline comment\n"
      "rtp_ports=30000-30999\r\n"
      "  advertise =   rec.example.com  \n"
      "storage = \"/srv/rec # not a comment\"\n"
      "rx-threads = 2\n"
      "latch = on\n"
      "log_level = warning\n"
      "dpdk.port = 3\n"
      "\n"
      "[dpdk]\n"
      "eal = \"--no-huge -m 512\"  # quoted\n"
      "lcores = 2-3\n"
      "address = 198.51.100.9\n"
      "address6 = 2001:db8::9, fe80::9\n";
  DaemonConfig c;
  const Status st = load_config_text(text, "callrecd.conf", c);
  ASSERT_TRUE(st) << st.message();
  EXPECT_EQ(c.listen, "127.0.0.1:7171");
  EXPECT_EQ(c.rtp_port_lo, 30000);
  EXPECT_EQ(c.rtp_port_hi, 30999);
  EXPECT_EQ(c.advertise, "rec.example.com");
  EXPECT_EQ(c.storage.string(), "/srv/rec # not a comment");
  EXPECT_EQ(c.rx_threads, 2u);
  EXPECT_TRUE(c.latch);
  EXPECT_EQ(c.log_level, "warn");
  EXPECT_EQ(c.dpdk.port, 3);
  EXPECT_EQ(c.dpdk.eal, "--no-huge -m 512");
  EXPECT_EQ(c.dpdk.lcores, "2-3");
  EXPECT_EQ(c.dpdk.address, "198.51.100.9");
  EXPECT_EQ(c.dpdk.address6, "2001:db8::9, fe80::9");
}

TEST(ConfigFile, ErrorsNameFileLineAndKey) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"listen = 0.0.0.0:7070\nfrobnicate = 1\n", "site.conf:2: unknown key 'frobnicate'"},
      {"[dpdk]\nlisten = 0.0.0.0:1\n", "site.conf:2: unknown key 'dpdk.listen'"},
      {"[metrics]\nport = 1\n", "site.conf:2: unknown key 'metrics.port'"},
      {"\n\n\nrx_threads = many\n", "site.conf:4: rx_threads = many: not a number"},
      {"rtp_ports = 5000-4000\n", "site.conf:1: rtp_ports = 5000-4000: low port above high port"},
      {"writers = 300\n", "site.conf:1: writers = 300: must be 0..256"},
      {"latch =\n", "site.conf:1: latch: expected true|false"},
      {"# ok\nthis line has no equals sign\n", "site.conf:2: expected key = value"},
      {"[dpdk\n", "site.conf:1: expected [section]"},
      {"= 5\n", "site.conf:1: missing key"},
      {"storage = \"/unterminated\n", "site.conf:1: unterminated quote in storage"},
      {"storage = \"/a\" b\n", "site.conf:1: text after the closing quote of storage"},
  };
  for (const auto& [text, want] : cases) {
    DaemonConfig c;
    const Status st = load_config_text(text, "site.conf", c);
    ASSERT_FALSE(st) << want;
    EXPECT_NE(st.message().find(want), std::string::npos) << "want: " << want << "\ngot:  " << st.message();
  }
}

TEST(ConfigFile, LoadedFirstThenFlagsOverrideWhateverTheirOrder) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const auto file = dir.write("callrecd.conf", "rx_threads = 3\nwriters = 2\nlisten = 127.0.0.1:7000\n");
  const std::string arg = "--config=" + file.string();
  DaemonConfig c;
  const Status st = configure(c, {"--writers", "5", arg.c_str()});
  ASSERT_TRUE(st) << st.message();
  EXPECT_EQ(c.rx_threads, 3u);  // from the file
  EXPECT_EQ(c.writers, 5u);     // the flag wins although it came first
  EXPECT_EQ(c.listen, "127.0.0.1:7000");

  const auto second = dir.write("override.conf", "rx_threads = 4\n");
  DaemonConfig d;
  ASSERT_TRUE(configure(d, {"--config", file.c_str(), "--config", second.c_str()}));
  EXPECT_EQ(d.rx_threads, 4u) << "later files override earlier ones";
}

TEST(ConfigFile, ErrorInAFileReachedThroughFlags) {
  TempDir dir;
  const auto file = dir.write("bad.conf", "# header\nrtp_timeout = 0\n");
  DaemonConfig c;
  const Status st = flags(c, {"--config", file.c_str()});
  ASSERT_FALSE(st);
  EXPECT_EQ(st.message(), file.string() + ":2: rtp_timeout = 0: must be 1..86400");
}

TEST(ConfigFile, MissingFileCarriesErrno) {
  DaemonConfig c;
  const Status st = load_config_file("/nonexistent/dir/callrecd.conf", c);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.code(), ENOENT);
  EXPECT_NE(st.message().find("/nonexistent/dir/callrecd.conf"), std::string::npos);
}

TEST(ConfigFile, DumpReadsBack) {
  DaemonConfig c;
  ASSERT_TRUE(flags(c, {"--storage", "/srv/rec #1", "--dpdk-eal", "--no-huge -m 64", "--latch", "--rtp-ports",
                        "20000-20010", "--advertise", "rec.example.com", "--metrics="}));
  DaemonConfig back;
  const Status st = load_config_text(to_config_text(c), "dump", back);
  ASSERT_TRUE(st) << st.message() << "\n" << to_config_text(c);
  EXPECT_EQ(to_config_text(back), to_config_text(c));
  EXPECT_EQ(back.storage.string(), "/srv/rec #1");
  EXPECT_EQ(back.dpdk.eal, "--no-huge -m 64");
  EXPECT_TRUE(back.latch);
  EXPECT_EQ(back.rtp_port_hi, 20010);
  EXPECT_EQ(back.metrics, "");
}

TEST(Usage, DocumentsEveryOptionWithItsDefault) {
  const std::string u = usage("callrecd");
  EXPECT_EQ(u.rfind("Usage: callrecd [OPTIONS]", 0), 0u);
  for (const char* flag : {"--config FILE", "--listen ADDR:PORT", "--rtp-ports LO-HI", "--rtp-all-ports", "--advertise",
                           "--storage DIR", "--catalog FILE", "--rx-threads N", "--writers N", "--rtp-timeout SECONDS",
                           "--latch", "--latch-any", "--max-connections", "--max-message", "--reserve-mb", "--max-file-mb",
                           "--flush-ms", "--reorder-window", "--max-gap-fill", "--port-quarantine", "--metrics",
                           "--log-level", "--source", "--dpdk-eal", "--dpdk-port", "--dpdk-queues", "--dpdk-lcores",
                           "--dpdk-mempool", "--dpdk-address", "--dpdk-address6 IPV6[,IPV6...]", "--help", "--version"}) {
    EXPECT_NE(u.find(flag), std::string::npos) << flag;
  }
  for (const char* def : {"default: 0.0.0.0:7070", "default: 40000-49999", "default: /var/lib/callrec/recordings",
                          "default: <storage>/../catalog.db", "default: 127.0.0.1:9464", "default: kernel",
                          "[rtp_timeout] default: 30", "[max_connections] default: 0", "[max_message] default: 4096",
                          "[reserve_mb] default: 256", "[max_file_mb] default: 0", "[flush_ms] default: 1000",
                          "[reorder_window] default: 8", "[max_gap_fill] default: 50", "[port_quarantine] default: 30",
                          "[latch] default: off", "[log_level] default: info", "[dpdk.eal] default: empty",
                          "the local address of the phone's TCP connection"}) {
    EXPECT_NE(u.find(def), std::string::npos) << def;
  }
}

// ---- addresses -------------------------------------------------------------------------------

TEST(Address, Endpoints) {
  sockaddr_storage ss{};
  ASSERT_TRUE(parse_endpoint("192.0.2.1:7070", ss));
  EXPECT_EQ(ss.ss_family, AF_INET);
  EXPECT_EQ(endpoint_port(ss), 7070);
  EXPECT_EQ(sockaddr_length(ss), sizeof(sockaddr_in));
  EXPECT_EQ(format_endpoint(ss), "192.0.2.1:7070");
  EXPECT_EQ(format_ip(ss), "192.0.2.1");

  ASSERT_TRUE(parse_endpoint("[2001:DB8::1]:5060", ss));
  EXPECT_EQ(ss.ss_family, AF_INET6);
  EXPECT_EQ(endpoint_port(ss), 5060);
  EXPECT_EQ(sockaddr_length(ss), sizeof(sockaddr_in6));
  EXPECT_EQ(format_endpoint(ss), "[2001:db8::1]:5060");

  ASSERT_TRUE(parse_endpoint("[fe80::1%1]:9", ss));
  EXPECT_EQ(reinterpret_cast<const sockaddr_in6&>(ss).sin6_scope_id, 1u);
  EXPECT_EQ(format_endpoint(ss), "[fe80::1%1]:9");

  ASSERT_TRUE(parse_endpoint(":7070", ss));
  EXPECT_EQ(format_endpoint(ss), "0.0.0.0:7070");
  ASSERT_TRUE(parse_endpoint("*:0", ss));
  EXPECT_EQ(format_endpoint(ss), "0.0.0.0:0");

  for (const char* bad : {"", "7070", "1.2.3.4", "1.2.3.4:", "1.2.3.4:x", "1.2.3.4:65536", "::1:80", "[::1]", "[::1]80",
                          "[]:80", "127.1:80", "localhost:80", "1.2.3.4:-1", "1.2.3.4:+80"}) {
    EXPECT_FALSE(parse_endpoint(bad, ss)) << bad;
  }
}

TEST(Address, IpLiterals) {
  sockaddr_storage ss{};
  ASSERT_TRUE(parse_ip("10.1.2.3", ss));
  EXPECT_EQ(format_ip(ss), "10.1.2.3");
  EXPECT_EQ(endpoint_port(ss), 0);
  ASSERT_TRUE(parse_ip("::1", ss));
  EXPECT_EQ(format_ip(ss), "::1");
  ASSERT_TRUE(parse_ip("[::ffff:192.0.2.1]", ss));
  EXPECT_EQ(ss.ss_family, AF_INET6);
  for (const char* bad : {"", "[]", "1.2.3", "1.2.3.4.5", "256.0.0.1", "example.com", ":::", "1.2.3.4 ", " 1.2.3.4"}) {
    EXPECT_FALSE(parse_ip(bad, ss)) << bad;
  }
  sockaddr_storage none{};
  EXPECT_EQ(sockaddr_length(none), 0u);
  EXPECT_EQ(format_endpoint(none), "");
}

}  // namespace
}  // namespace callrec::control

namespace callrec::control {
namespace {

// SIPREC flags: the TLS listener needs its certificate and key whatever the order of the flags;
// endpoints and the media address are checked; repeated listeners add up.
TEST(Config, SiprecFlagsInAnyOrder) {
  {
    DaemonConfig c;
    const char* argv[] = {"callrecd", "--siprec-tls-listen", "127.0.0.1:5061", "--siprec-tls-cert", "/c.pem",
                          "--siprec-tls-key", "/k.pem", "--siprec-listen", "127.0.0.1:5060", "--siprec-listen",
                          "[::1]:5060"};
    ASSERT_TRUE(apply_flags(11, argv, c));
    const Status st = validate(c);
    EXPECT_TRUE(st) << st.message();
    EXPECT_EQ(c.siprec_listen.size(), 2u);
    EXPECT_EQ(c.siprec_t1_ms, 500u);
  }
  {
    DaemonConfig c;
    const char* argv[] = {"callrecd", "--siprec-tls-listen", "127.0.0.1:5061", "--siprec-tls-key", "/k.pem"};
    ASSERT_TRUE(apply_flags(5, argv, c));
    const Status st = validate(c);
    EXPECT_FALSE(st);
    EXPECT_NE(st.message().find("--siprec-tls-cert"), std::string::npos) << st.message();
  }
  {
    DaemonConfig c;
    const char* argv[] = {"callrecd", "--siprec-listen", "127.0.0.1:70000"};
    const Status a = apply_flags(3, argv, c);
    EXPECT_FALSE(a && validate(c)) << "a port over 65535 is refused";
  }
  {
    DaemonConfig c;
    const char* argv[] = {"callrecd", "--siprec-media-address", "not-an-ip", "--siprec-t1-ms", "10"};
    const Status a = apply_flags(5, argv, c);
    EXPECT_FALSE(a && validate(c));
  }
}

}  // namespace
}  // namespace callrec::control

namespace callrec::control {
namespace {
TEST(Config, SpanLanesAndOneMirrorKind) {
  {
    DaemonConfig c;
    EXPECT_EQ(c.span_lanes, 1u);
    std::vector<const char*> argv{"callrecd", "--span-lanes", "4"};
    ASSERT_TRUE(apply_flags(static_cast<int>(argv.size()), argv.data(), c));
    EXPECT_EQ(c.span_lanes, 4u);
    EXPECT_TRUE(validate(c)) << validate(c).message();
  }
  for (const char* bad : {"0", "65"}) {
    DaemonConfig c;
    std::vector<const char*> argv{"callrecd", "--span-lanes", bad};
    const Status st = apply_flags(static_cast<int>(argv.size()), argv.data(), c);
    const Status v = st ? validate(c) : st;
    ASSERT_FALSE(v) << bad;
    EXPECT_NE(v.message().find("--span-lanes"), std::string::npos) << v.message();
  }
#ifdef CALLREC_HAVE_DPDK
  DaemonConfig c;
  std::vector<const char*> argv{"callrecd", "--span-interface", "eth1", "--span-dpdk", "net_null0"};
  const Status st = apply_flags(static_cast<int>(argv.size()), argv.data(), c);
  const Status v = st ? validate(c) : st;
  ASSERT_FALSE(v);
  EXPECT_NE(v.message().find("one mirror kind per daemon"), std::string::npos) << v.message();
#endif
}

TEST(Config, WriterThreadsAutoIsOneForTheDaemonAndTwoForSpanReadOnTwoCpus) {
  DaemonConfig c;
  EXPECT_EQ(writer_threads(c, false), 1u);
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(::sched_getaffinity(0, sizeof set, &set), 0);
  EXPECT_EQ(writer_threads(c, true), CPU_COUNT(&set) >= 2 ? 2u : 1u);
  c.writers = 3;  // an explicit count always wins
  EXPECT_EQ(writer_threads(c, false), 3u);
  EXPECT_EQ(writer_threads(c, true), 3u);
}
}  // namespace
}  // namespace callrec::control
