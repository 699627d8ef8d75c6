#include "control/config.hpp"

#include <sched.h>

#include <arpa/inet.h>
#include <net/if.h>
#include <netdb.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <vector>

namespace callrec::control {
namespace {

// ---- small parsers ---------------------------------------------------------------------------

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

/// Unsigned decimal into `out`; error text (without the option name) or "".
template <class T>
std::string parse_unsigned(std::string_view s, T& out) {
  if (s.empty()) return "missing number";
  if (!std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) return "not a number";
  T value{};
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec == std::errc::result_out_of_range) return "out of range";
  if (ec != std::errc() || end != s.data() + s.size()) return "not a number";
  out = value;
  return {};
}

std::string parse_bool(std::string_view s, bool& out) {
  const std::string v = lower(s);
  if (v == "1" || v == "true" || v == "yes" || v == "on") {
    out = true;
    return {};
  }
  if (v == "0" || v == "false" || v == "no" || v == "off") {
    out = false;
    return {};
  }
  return "expected true|false";
}

std::string range_check(std::uint64_t v, std::uint64_t lo, std::uint64_t hi) {
  if (v < lo || v > hi) return "must be " + std::to_string(lo) + ".." + std::to_string(hi);
  return {};
}

/// Quote a value for the config file when it would not read back as is.
std::string quote_if_needed(const std::string& v) {
  const bool needs = v.find('#') != std::string::npos || (!v.empty() && (trim(v).size() != v.size() || v.front() == '"'));
  return needs ? "\"" + v + "\"" : v;
}

/// The levels of control/log.hpp (LogLevel).
constexpr std::array<std::string_view, 4> kLogLevels = {"error", "warn", "info", "debug"};

bool valid_hostname(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  std::size_t label = 0;
  bool all_numeric = true;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
      continue;
    }
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    const bool digit = c >= '0' && c <= '9';
    if (!alpha && !digit && c != '-') return false;
    if (c == '-' && label == 0) return false;
    if (!digit) all_numeric = false;
    if (++label > 63) return false;
  }
  // "300.1.1.1" is a bad IPv4 address, not a host name.
  return label != 0 && !all_numeric;
}

bool is_unspecified(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) {
    return reinterpret_cast<const sockaddr_in&>(a).sin_addr.s_addr == htonl(INADDR_ANY);
  }
  if (a.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(a).sin6_addr;
    return std::memcmp(&in6, &in6addr_any, sizeof(in6)) == 0;
  }
  return false;
}

bool same_endpoint(const sockaddr_storage& a, const sockaddr_storage& b) {
  return a.ss_family == b.ss_family && format_endpoint(a) == format_endpoint(b);
}

// ---- the option table ------------------------------------------------------------------------

/// Errors are returned as text without the option name: "not a number". Empty text: fine.
using Setter = std::string (*)(DaemonConfig&, std::string_view);
using Getter = std::string (*)(const DaemonConfig&);
using Checker = std::string (*)(const DaemonConfig&);

struct Option {
  std::string_view flag;      ///< without "--"
  std::string_view key;       ///< config file key ("dpdk.eal" = key eal of [dpdk])
  std::string_view metavar;   ///< "" for a boolean flag
  std::string_view help;
  std::string_view default_note;  ///< shown instead of the default value when not empty
  Setter set;
  Getter get;
  Checker check;              ///< single-value check (validate() and right after setting)
};

std::string no_check(const DaemonConfig& /*cfg*/) { return {}; }

std::string check_endpoint(std::string_view text) {
  sockaddr_storage ss{};
  const Status st = parse_endpoint(text, ss);
  return st ? std::string() : st.message();
}

std::string check_listen(const DaemonConfig& c) { return check_endpoint(c.listen); }

std::string check_rtp_ports(const DaemonConfig& c) {
  if (c.rtp_port_lo == 0) return "port 0 is not a port";
  if (c.rtp_port_lo > c.rtp_port_hi) return "low port above high port";
  return {};
}

std::string check_advertise(const DaemonConfig& c) {
  if (c.advertise.empty()) return {};
  sockaddr_storage ss{};
  if (parse_ip(c.advertise, ss)) {
    if (is_unspecified(ss)) return "a wildcard address cannot be sent to phones";
    return {};
  }
  if (c.advertise.find(':') != std::string::npos) return "not a valid IPv6 address";
  if (!valid_hostname(c.advertise)) return "not an IP address or host name";
  return {};
}

std::string check_storage(const DaemonConfig& c) { return c.storage.empty() ? "must not be empty" : ""; }
std::string check_rx_threads(const DaemonConfig& c) { return range_check(c.rx_threads, 1, 256); }
std::string check_writers(const DaemonConfig& c) { return range_check(c.writers, 0, 256); }
std::string check_rtp_timeout(const DaemonConfig& c) { return range_check(c.rtp_timeout_s, 1, 86400); }
std::string check_max_connections(const DaemonConfig& c) { return range_check(c.max_connections, 0, 1000000); }
std::string check_per_address(const DaemonConfig& c) { return range_check(c.max_connections_per_address, 0, 1000000); }
std::string check_recordings_per_address(const DaemonConfig& c) {
  return range_check(c.max_recordings_per_address, 0, 1000000);
}
std::string check_control_quiet(const DaemonConfig& c) { return range_check(c.control_quiet_ms, 100, 600000); }
std::string check_metrics_connections(const DaemonConfig& c) { return range_check(c.metrics_max_connections, 1, 1024); }
std::string check_max_message(const DaemonConfig& c) { return range_check(c.max_message, 256, 1u << 20); }
std::string check_reserve_mb(const DaemonConfig& c) { return range_check(c.reserve_mb, 0, 1ull << 30); }
std::string check_max_file_mb(const DaemonConfig& c) {
  if (c.max_file_mb > 4095) return "must be 0 (unlimited) or 1..4095: dataSize is 32 bits";
  return {};
}
std::string check_flush_ms(const DaemonConfig& c) { return range_check(c.flush_ms, 10, 60000); }
std::string check_reorder_window(const DaemonConfig& c) { return range_check(c.reorder_window, 1, 256); }
std::string check_max_gap_fill(const DaemonConfig& c) { return range_check(c.max_gap_fill, 0, 3000); }
std::string check_max_stream_pps(const DaemonConfig& c) { return range_check(c.max_stream_pps, 0, 1000000); }
std::string check_stream_burst(const DaemonConfig& c) { return range_check(c.stream_burst, 1, 1000000); }
std::string check_port_quarantine(const DaemonConfig& c) { return range_check(c.port_quarantine_s, 0, 3600); }
std::string check_metrics(const DaemonConfig& c) { return c.metrics.empty() ? "" : check_endpoint(c.metrics); }
std::string check_log_level(const DaemonConfig& c) {
  if (std::find(kLogLevels.begin(), kLogLevels.end(), c.log_level) == kLogLevels.end()) {
    return "expected error|warn|info|debug";
  }
  return {};
}
std::string check_source(const DaemonConfig& c) {
#ifndef CALLREC_HAVE_DPDK
  if (c.source == SourceKind::kDpdk) return "this build has no DPDK support (libdpdk was not found)";
#else
  (void)c;
#endif
  return {};
}
std::string check_dpdk_queues(const DaemonConfig& c) { return range_check(c.dpdk.queues, 0, 64); }
std::string check_dpdk_mempool(const DaemonConfig& c) { return range_check(c.dpdk.mempool, 1023, 1u << 24); }
std::string check_dpdk_zero_copy_credit(const DaemonConfig& c) {
  const std::uint32_t v = c.dpdk.zero_copy_credit;
  if (v == 0) return {};
  if (v < 64 || v > (1u << 20) || (v & (v - 1)) != 0) return "expected 0 (auto) or a power of two in 64..1048576";
  return {};
}
std::string check_dpdk_lcores(const DaemonConfig& c) {
  if (c.dpdk.lcores.empty()) return {};
  std::vector<unsigned> ids;
  if (!parse_cpu_list(c.dpdk.lcores, ids)) return "expected an lcore list such as 1-2 or 1,3";
  return {};
}
std::string check_dpdk_address(const DaemonConfig& c) {
  if (c.dpdk.address.empty()) return {};
  const std::vector<std::string> list = split_list(c.dpdk.address);
  if (list.empty()) return "not an IPv4 address";
  if (list.size() > 16) return "at most 16 addresses";
  std::vector<std::uint32_t> seen;
  for (const std::string& item : list) {
    in_addr a{};
    if (inet_pton(AF_INET, item.c_str(), &a) != 1) return list.size() == 1 ? "not an IPv4 address" : item + ": not an IPv4 address";
    if (a.s_addr == htonl(INADDR_ANY)) return "a wildcard address cannot be the dataplane's";
    if (std::find(seen.begin(), seen.end(), a.s_addr) != seen.end()) return item + " given twice";
    seen.push_back(a.s_addr);
  }
  return {};
}
std::string check_dpdk_address6(const DaemonConfig& c) {
  if (c.dpdk.address6.empty()) return {};
  const std::vector<std::string> list = split_list(c.dpdk.address6);
  if (list.empty()) return "not an IPv6 address";
  if (list.size() > 16) return "at most 16 addresses";
  std::vector<in6_addr> seen;
  for (const std::string& item : list) {
    const std::string what = list.size() == 1 ? std::string() : item + ": ";
    in6_addr a{};
    if (inet_pton(AF_INET6, item.c_str(), &a) != 1) {
      return what + (item.find('%') != std::string::npos ? "no zone index (%IFACE) on a dataplane address"
                                                         : "not an IPv6 address");
    }
    const std::uint8_t* b = a.s6_addr;
    const bool zero_prefix = std::all_of(b, b + 15, [](std::uint8_t x) { return x == 0; });
    if (b[0] == 0xFF) return what + "a multicast address cannot be the dataplane's";
    if (zero_prefix && b[15] == 0) return what + "a wildcard address cannot be the dataplane's";
    if (zero_prefix && b[15] == 1) return what + "the loopback address cannot be the dataplane's";
    if (std::all_of(b, b + 10, [](std::uint8_t x) { return x == 0; }) && b[10] == 0xFF && b[11] == 0xFF) {
      return what + "an IPv4-mapped address: give IPv4 addresses with --dpdk-address";
    }
    if (std::any_of(seen.begin(), seen.end(), [&a](const in6_addr& x) { return std::memcmp(&x, &a, sizeof a) == 0; })) {
      return item + " given twice";
    }
    seen.push_back(a);
  }
  return {};
}
std::string check_dpdk_vdev(const DaemonConfig& c) {
  if (c.dpdk.vdev.empty()) return {};
  const std::string name = c.dpdk.vdev.substr(0, c.dpdk.vdev.find(','));
  if (name.empty()) return "expected DRIVER[N][,ARG=VALUE...], e.g. net_af_packet0,iface=eth1";
  if (c.dpdk.vdev.find_first_of(" \t") != std::string::npos) return "no blanks in a device string";
  return {};
}
std::string check_dpdk_tap(const DaemonConfig& c) {
  if (c.dpdk.tap.empty()) return {};
  if (c.dpdk.tap.size() >= IFNAMSIZ) return "interface names are at most " + std::to_string(IFNAMSIZ - 1) + " characters";
  if (c.dpdk.tap.find_first_of(" \t,/=") != std::string::npos) return "not an interface name";
  return {};
}
std::string check_dpdk_idle_sleep(const DaemonConfig& c) { return range_check(c.dpdk.idle_sleep_us, 0, 100000); }

std::string join_list(const std::vector<std::string>& v) {
  std::string out;
  for (const std::string& s : v) out += (out.empty() ? "" : ",") + s;
  return out;
}
std::string check_span_interfaces(const DaemonConfig& c) {
  for (const std::string& i : c.span_interfaces)
    if (i.empty() || i.size() >= IFNAMSIZ || i.find_first_of(" \t/") != std::string::npos) return i + ": not an interface name";
  return {};
}

std::string check_siprec_endpoints(const DaemonConfig& c) {
  for (const auto* list : {&c.siprec_listen, &c.siprec_tls_listen})
    for (const std::string& e : *list) {
      sockaddr_storage a{};
      if (Status st = parse_endpoint(e, a); !st) return e + ": " + st.message();
    }
  return {};
}

std::string set_string(std::string& field, std::string_view v) {
  field.assign(v);
  return {};
}

const std::vector<Option>& options() {
  static const std::vector<Option> kOptions = {
      {"listen", "listen", "ADDR:PORT", "control TCP endpoint the phones connect to ([::]:PORT for IPv6)", "",
       [](DaemonConfig& c, std::string_view v) { return set_string(c.listen, v); },
       [](const DaemonConfig& c) { return c.listen; }, check_listen},
      {"rtp-ports", "rtp_ports", "LO-HI", "UDP ports handed out for RTP, inclusive", "",
       [](DaemonConfig& c, std::string_view v) -> std::string {
         const std::size_t dash = v.find('-');
         std::uint16_t lo = 0;
         std::uint16_t hi = 0;
         if (dash == std::string_view::npos) {
           if (auto e = parse_unsigned(v, lo); !e.empty()) return "expected LO-HI (" + e + ")";
           hi = lo;
         } else {
           if (auto e = parse_unsigned(trim(v.substr(0, dash)), lo); !e.empty()) return "expected LO-HI (" + e + ")";
           if (auto e = parse_unsigned(trim(v.substr(dash + 1)), hi); !e.empty()) return "expected LO-HI (" + e + ")";
         }
         c.rtp_port_lo = lo;
         c.rtp_port_hi = hi;
         return {};
       },
       [](const DaemonConfig& c) { return std::to_string(c.rtp_port_lo) + "-" + std::to_string(c.rtp_port_hi); },
       check_rtp_ports},
      {"rtp-all-ports", "rtp_all_ports", "", "hand out odd ports too (default: even ports only, RTP convention)", "",
       [](DaemonConfig& c, std::string_view v) { return parse_bool(v, c.rtp_all_ports); },
       [](const DaemonConfig& c) { return std::string(c.rtp_all_ports ? "true" : "false"); }, no_check},
      {"advertise", "advertise", "ADDR", "address sent to phones in server= (IP or host name)",
       "the local address of the phone's TCP connection (--source dpdk: --dpdk-address)",
       [](DaemonConfig& c, std::string_view v) { return set_string(c.advertise, v); },
       [](const DaemonConfig& c) { return c.advertise; }, check_advertise},
      {"storage", "storage", "DIR", "directory recordings are written to (filed by device)", "",
       [](DaemonConfig& c, std::string_view v) -> std::string {
         c.storage = std::filesystem::path(std::string(v));
         return {};
       },
       [](const DaemonConfig& c) { return c.storage.string(); }, check_storage},
      {"catalog", "catalog", "FILE", "SQLite catalog of recordings", "<storage>/../catalog.db",
       [](DaemonConfig& c, std::string_view v) -> std::string {
         c.catalog = std::filesystem::path(std::string(v));
         return {};
       },
       [](const DaemonConfig& c) { return c.catalog.string(); }, no_check},
      {"rx-threads", "rx_threads", "N", "packet receive threads (1..256)", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.rx_threads); },
       [](const DaemonConfig& c) { return std::to_string(c.rx_threads); }, check_rx_threads},
      {"writers", "writers", "N",
       "file writer threads (1..256; 0: auto, 1 for the daemon and 2 for --span-read on 2 or more CPUs)", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.writers); },
       [](const DaemonConfig& c) { return std::to_string(c.writers); }, check_writers},
      {"rtp-timeout", "rtp_timeout", "SECONDS", "no RTP for this long stops the recording (1..86400)", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.rtp_timeout_s); },
       [](const DaemonConfig& c) { return std::to_string(c.rtp_timeout_s); }, check_rtp_timeout},
      {"latch", "latch", "", "latch the first RTP source port seen from the phone's address (NAT rewrites ports)", "",
       [](DaemonConfig& c, std::string_view v) { return parse_bool(v, c.latch); },
       [](const DaemonConfig& c) { return std::string(c.latch ? "true" : "false"); }, no_check},
      {"span-read", "span_read", "FILE", "passive capture of a pcap/pcapng file: record every call in it, print a summary and exit (repeatable; files are read in order)", "",
       [](DaemonConfig& c, std::string_view v) -> std::string {
         for (const std::string& f : split_list(v)) c.span_read.push_back(f);
         return {};
       },
       [](const DaemonConfig& c) { return join_list(c.span_read); }, no_check},
      {"span-interface", "span_interface", "IFACE", "passive capture off a mirror interface with libpcap, promiscuous (repeatable)", "",
       [](DaemonConfig& c, std::string_view v) -> std::string {
         for (const std::string& f : split_list(v)) c.span_interfaces.push_back(f);
         return {};
       },
       [](const DaemonConfig& c) { return join_list(c.span_interfaces); }, check_span_interfaces},
      {"span-dpdk", "span_dpdk", "PORT", "passive capture off a DPDK port in promiscuous mode: a PCI address, or a virtual device (net_af_packet0,iface=eth1; net_pcap0,rx_pcap=FILE); EAL arguments from --dpdk-eal", "",
       [](DaemonConfig& c, std::string_view v) { return set_string(c.span_dpdk, v); },
       [](const DaemonConfig& c) { return c.span_dpdk; },
       [](const DaemonConfig& c) -> std::string {
         if (c.span_dpdk.find_first_of(" \t") != std::string::npos) return "no blanks in a port or device string";
#ifndef CALLREC_HAVE_DPDK
         if (!c.span_dpdk.empty()) return "this build has no DPDK support (libdpdk was not found)";
#endif
         if (!c.span_dpdk.empty() && !c.span_interfaces.empty())
           return "one mirror kind per daemon: --span-interface (libpcap) or --span-dpdk, not both";
         return {};
       }},
      {"span-lanes", "span_lanes", "N", "passive capture off --span-dpdk: poll-mode lanes, each a thread of its own; lane 0 reads the port and spreads the frames to the others by a symmetric hash of their address pair (1..64)", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.span_lanes); },
       [](const DaemonConfig& c) { return std::to_string(c.span_lanes); },
       [](const DaemonConfig& c) { return range_check(c.span_lanes, 1, 64); }},
      {"span-filter", "span_filter", "BPF", "capture filter for --span-interface (tcpdump syntax)", "everything",
       [](DaemonConfig& c, std::string_view v) { return set_string(c.span_filter, v); },
       [](const DaemonConfig& c) { return c.span_filter; }, no_check},
      {"span-buffer-mb", "span_buffer_mb", "MB", "kernel capture buffer per --span-interface (1..1024)", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.span_buffer_mb); },
       [](const DaemonConfig& c) { return std::to_string(c.span_buffer_mb); },
       [](const DaemonConfig& c) { return range_check(c.span_buffer_mb, 1, 1024); }},
      {"span-max-calls", "span_max_calls", "N", "passive capture: calls followed at once, oldest evicted beyond (16..10000000)", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.span_max_calls); },
       [](const DaemonConfig& c) { return std::to_string(c.span_max_calls); },
       [](const DaemonConfig& c) { return range_check(c.span_max_calls, 16, 10000000); }},
      {"span-max-pending", "span_max_pending", "N", "passive capture: unanswered INVITEs held, oldest evicted beyond (16..10000000)", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.span_max_pending); },
       [](const DaemonConfig& c) { return std::to_string(c.span_max_pending); },
       [](const DaemonConfig& c) { return range_check(c.span_max_pending, 16, 10000000); }},
      {"span-media-timeout", "span_media_timeout", "SECONDS", "passive capture: an answered call with neither RTP nor SIP this long ends with reason timeout (1..86400)", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.span_media_timeout_s); },
       [](const DaemonConfig& c) { return std::to_string(c.span_media_timeout_s); },
       [](const DaemonConfig& c) { return range_check(c.span_media_timeout_s, 1, 86400); }},
      {"span-max-fragments", "span_max_fragments", "N", "passive capture: incomplete IP datagrams held for reassembly (16..1000000)", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.span_max_fragments); },
       [](const DaemonConfig& c) { return std::to_string(c.span_max_fragments); },
       [](const DaemonConfig& c) { return range_check(c.span_max_fragments, 16, 1000000); }},
      {"span-max-tcp-streams", "span_max_tcp_streams", "N", "passive capture: SIP-over-TCP streams followed (16..1000000)", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.span_max_tcp_streams); },
       [](const DaemonConfig& c) { return std::to_string(c.span_max_tcp_streams); },
       [](const DaemonConfig& c) { return range_check(c.span_max_tcp_streams, 16, 1000000); }},
      {"siprec-listen", "siprec_listen", "ADDR:PORT", "SIPREC recording server on UDP and TCP (repeatable; [::]:5060 for IPv6)", "off",
       [](DaemonConfig& c, std::string_view v) -> std::string {
         for (const std::string& f : split_list(v)) c.siprec_listen.push_back(f);
         return {};
       },
       [](const DaemonConfig& c) { return join_list(c.siprec_listen); }, check_siprec_endpoints},
      {"siprec-tls-listen", "siprec_tls_listen", "ADDR:PORT", "SIPREC recording server on TLS (repeatable; needs --siprec-tls-cert and --siprec-tls-key)", "off",
       [](DaemonConfig& c, std::string_view v) -> std::string {
         for (const std::string& f : split_list(v)) c.siprec_tls_listen.push_back(f);
         return {};
       },
       [](const DaemonConfig& c) { return join_list(c.siprec_tls_listen); }, check_siprec_endpoints},
      {"siprec-tls-cert", "siprec_tls_cert", "FILE", "SIPREC TLS: certificate chain (PEM)", "",
       [](DaemonConfig& c, std::string_view v) { return set_string(c.siprec_tls_cert, v); },
       [](const DaemonConfig& c) { return c.siprec_tls_cert; }, no_check},
      {"siprec-tls-key", "siprec_tls_key", "FILE", "SIPREC TLS: private key (PEM)", "",
       [](DaemonConfig& c, std::string_view v) { return set_string(c.siprec_tls_key, v); },
       [](const DaemonConfig& c) { return c.siprec_tls_key; }, no_check},
      {"siprec-tls-ca", "siprec_tls_ca", "FILE", "SIPREC TLS: CA certificates (PEM); set: mutual TLS, SRCs must present a certificate it signed", "no client certificates",
       [](DaemonConfig& c, std::string_view v) { return set_string(c.siprec_tls_ca, v); },
       [](const DaemonConfig& c) { return c.siprec_tls_ca; }, no_check},
      {"siprec-max-sessions", "siprec_max_sessions", "N", "SIPREC sessions at once; beyond, INVITEs get 503 with Retry-After (0: no cap but ports, disk and descriptors)", "0",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.siprec_max_sessions); },
       [](const DaemonConfig& c) { return std::to_string(c.siprec_max_sessions); }, no_check},
      {"siprec-t1-ms", "siprec_t1_ms", "MS", "SIPREC: RFC 3261 timer T1 (50..5000): 2xx and BYE retransmissions start at T1, an unacknowledged 2xx ends the session after 64*T1", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.siprec_t1_ms); },
       [](const DaemonConfig& c) { return std::to_string(c.siprec_t1_ms); },
       [](const DaemonConfig& c) { return range_check(c.siprec_t1_ms, 50, 5000); }},
      {"siprec-media-address", "siprec_media_address", "ADDR", "address in the c= line of SIPREC answers", "the address the SRC reached",
       [](DaemonConfig& c, std::string_view v) { return set_string(c.siprec_media_address, v); },
       [](const DaemonConfig& c) { return c.siprec_media_address; },
       [](const DaemonConfig& c) -> std::string {
         if (c.siprec_media_address.empty()) return {};
         sockaddr_storage a{};
         if (!parse_ip(c.siprec_media_address, a)) return "expected an IP address";
         return {};
       }},
      {"latch-any", "latch_any", "", "with --latch, latch the first source from ANY address (weaker: a host that sprays the port before the phone's first packet takes the recording)", "",
       [](DaemonConfig& c, std::string_view v) { return parse_bool(v, c.latch_any); },
       [](const DaemonConfig& c) { return std::string(c.latch_any ? "true" : "false"); }, no_check},
      {"max-connections", "max_connections", "N",
       "control connections at most (0..1000000); at the cap, or out of descriptors, the connection idle "
       "longest that holds no recording is closed for a new one",
       "0: a third of the descriptor limit after a reserve of 64, so recordings always have room",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.max_connections); },
       [](const DaemonConfig& c) { return std::to_string(c.max_connections); }, check_max_connections},
      {"max-connections-per-address", "max_connections_per_address", "N",
       "control connections from one IP address at most (0: no limit)", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.max_connections_per_address); },
       [](const DaemonConfig& c) { return std::to_string(c.max_connections_per_address); }, check_per_address},
      {"max-recordings-per-address", "max_recordings_per_address", "N",
       "concurrent recordings started from one IP address at most; beyond: overloaded (0: no limit)", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.max_recordings_per_address); },
       [](const DaemonConfig& c) { return std::to_string(c.max_recordings_per_address); },
       check_recordings_per_address},
      {"control-quiet-ms", "control_quiet_ms", "MS",
       "an unterminated control message counts as complete after this much quiet, or at a half-close "
       "(100..600000); a request split by shorter pauses is read whole", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.control_quiet_ms); },
       [](const DaemonConfig& c) { return std::to_string(c.control_quiet_ms); }, check_control_quiet},
      {"max-message", "max_message", "BYTES", "longest control message; longer drops the peer (256..1048576)", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.max_message); },
       [](const DaemonConfig& c) { return std::to_string(c.max_message); }, check_max_message},
      {"reserve-mb", "reserve_mb", "MB", "free space kept on the storage volume; below it, starts fail with no_space", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.reserve_mb); },
       [](const DaemonConfig& c) { return std::to_string(c.reserve_mb); }, check_reserve_mb},
      {"max-file-mb", "max_file_mb", "MB", "start a new file at this size (0: unlimited, at most 4095)", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.max_file_mb); },
       [](const DaemonConfig& c) { return std::to_string(c.max_file_mb); }, check_max_file_mb},
      {"flush-ms", "flush_ms", "MS", "longest time data waits in a writer buffer (10..60000)", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.flush_ms); },
       [](const DaemonConfig& c) { return std::to_string(c.flush_ms); }, check_flush_ms},
      {"reorder-window", "reorder_window", "N", "RTP packets held to put reordered ones back (1..256)", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.reorder_window); },
       [](const DaemonConfig& c) { return std::to_string(c.reorder_window); }, check_reorder_window},
      {"max-gap-fill", "max_gap_fill", "N", "longest gap filled with silence, in packets (0..3000)", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.max_gap_fill); },
       [](const DaemonConfig& c) { return std::to_string(c.max_gap_fill); }, check_max_gap_fill},
      {"max-stream-pps", "max_stream_pps", "N",
       "RTP packets/s one recording's stream may send; more are dropped (counted policed) so one "
       "stream cannot take the writers from the others (0: off, at most 1000000)", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.max_stream_pps); },
       [](const DaemonConfig& c) { return std::to_string(c.max_stream_pps); }, check_max_stream_pps},
      {"stream-burst", "stream_burst", "N", "packets a stream may send at once beyond --max-stream-pps (1..1000000)", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.stream_burst); },
       [](const DaemonConfig& c) { return std::to_string(c.stream_burst); }, check_stream_burst},
      {"port-quarantine", "port_quarantine", "SECONDS", "a released RTP port is reused only after this (0..3600)", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.port_quarantine_s); },
       [](const DaemonConfig& c) { return std::to_string(c.port_quarantine_s); }, check_port_quarantine},
      {"metrics", "metrics", "ADDR:PORT", "Prometheus metrics endpoint (empty: off)", "",
       [](DaemonConfig& c, std::string_view v) { return set_string(c.metrics, v); },
       [](const DaemonConfig& c) { return c.metrics; }, check_metrics},
      {"metrics-max-connections", "metrics_max_connections", "N",
       "concurrent connections to the metrics endpoint (1..1024); a request head must arrive within 5 s "
       "and the answer be read within 10 s more", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.metrics_max_connections); },
       [](const DaemonConfig& c) { return std::to_string(c.metrics_max_connections); }, check_metrics_connections},
      {"log-level", "log_level", "LEVEL", "log verbosity: error|warn|info|debug", "",
       [](DaemonConfig& c, std::string_view v) -> std::string {
         c.log_level = lower(v);
         if (c.log_level == "warning") c.log_level = "warn";
         return {};
       },
       [](const DaemonConfig& c) { return c.log_level; }, check_log_level},
      {"source", "source", "kernel|dpdk", "packet source: kernel UDP sockets or a DPDK port", "",
       [](DaemonConfig& c, std::string_view v) -> std::string {
         const std::string s = lower(v);
         if (s == "kernel") {
           c.source = SourceKind::kKernel;
         } else if (s == "dpdk") {
           c.source = SourceKind::kDpdk;
         } else {
           return "expected kernel|dpdk";
         }
         return {};
       },
       [](const DaemonConfig& c) { return std::string(source_name(c.source)); }, check_source},
      {"dpdk-eal", "dpdk.eal", "ARGS", "extra EAL arguments, blank-separated (quote them)", "",
       [](DaemonConfig& c, std::string_view v) { return set_string(c.dpdk.eal, v); },
       [](const DaemonConfig& c) { return c.dpdk.eal; }, no_check},
      {"dpdk-port", "dpdk.port", "N", "DPDK ethdev port id", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.dpdk.port); },
       [](const DaemonConfig& c) { return std::to_string(c.dpdk.port); }, no_check},
      {"dpdk-vdev", "dpdk.vdev", "DEVARGS",
       "use a virtual device as the port (EAL --vdev), e.g. net_af_packet0,iface=eth1 or net_pcap0,rx_pcap=f.pcap",
       "none: the port is --dpdk-port",
       [](DaemonConfig& c, std::string_view v) { return set_string(c.dpdk.vdev, v); },
       [](const DaemonConfig& c) { return c.dpdk.vdev; }, check_dpdk_vdev},
      {"dpdk-queues", "dpdk.queues", "N", "RX queues (0..64)", "0: one per RX thread",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.dpdk.queues); },
       [](const DaemonConfig& c) { return std::to_string(c.dpdk.queues); }, check_dpdk_queues},
      {"dpdk-lcores", "dpdk.lcores", "LIST",
       "RX lcores, e.g. 1-2 (one poll loop each, --rx-threads = their count); writers run on the other CPUs",
       "the --rx-threads CPUs after the main lcore (or -l/--lcores in --dpdk-eal)",
       [](DaemonConfig& c, std::string_view v) { return set_string(c.dpdk.lcores, v); },
       [](const DaemonConfig& c) { return c.dpdk.lcores; }, check_dpdk_lcores},
      {"dpdk-mempool", "dpdk.mempool", "N", "mbufs in the packet pool (1023..16777216)", "",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.dpdk.mempool); },
       [](const DaemonConfig& c) { return std::to_string(c.dpdk.mempool); }, check_dpdk_mempool},
      {"dpdk-address", "dpdk.address", "IPV4[,IPV4...]",
       "the dataplane's own IPv4 address(es), on no kernel interface: it answers ARP and ICMP echo and "
       "receives RTP there; the first is server= (required with --source dpdk)",
       "none",
       [](DaemonConfig& c, std::string_view v) { return set_string(c.dpdk.address, v); },
       [](const DaemonConfig& c) { return c.dpdk.address; }, check_dpdk_address},
      {"dpdk-address6", "dpdk.address6", "IPV6[,IPV6...]",
       "the dataplane's own IPv6 address(es), global or link-local: it answers neighbour discovery "
       "(NS -> NA) and ICMPv6 echo there; RTP stays on --dpdk-address and phones are sent that",
       "none",
       [](DaemonConfig& c, std::string_view v) { return set_string(c.dpdk.address6, v); },
       [](const DaemonConfig& c) { return c.dpdk.address6; }, check_dpdk_address6},
      {"dpdk-tap", "dpdk.tap", "IFNAME",
       "kernel exception path: other traffic of the port goes to a TAP interface of this name (net_tap), "
       "and what the kernel sends there leaves through the port",
       "none: such traffic is dropped and counted",
       [](DaemonConfig& c, std::string_view v) { return set_string(c.dpdk.tap, v); },
       [](const DaemonConfig& c) { return c.dpdk.tap; }, check_dpdk_tap},
      {"dpdk-handoff", "dpdk.handoff", "copy|zerocopy",
       "how RTP reaches the writers: copy (the payload is copied into the writer's ring, the mbuf freed at "
       "once) or zerocopy (the writer reads the mbuf; at most --dpdk-zero-copy-credit mbufs per RX lcore are "
       "held, beyond that packets are copied and counted); see bench/RESULTS-dpdk.md",
       "copy",
       [](DaemonConfig& c, std::string_view v) -> std::string {
         if (v != "copy" && v != "zerocopy") return "expected copy or zerocopy";
         c.dpdk.zero_copy = v == "zerocopy";
         return {};
       },
       [](const DaemonConfig& c) { return std::string(c.dpdk.zero_copy ? "zerocopy" : "copy"); }, no_check},
      {"dpdk-zero-copy-credit", "dpdk.zero_copy_credit", "N",
       "zerocopy: mbufs each RX lcore may leave with lagging writers (power of two, 64..1048576); "
       "--dpdk-mempool must hold them on top of the RX descriptors",
       "0: auto, up to 8192 per RX lcore, at most half of the mempool's spare mbufs",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.dpdk.zero_copy_credit); },
       [](const DaemonConfig& c) { return std::to_string(c.dpdk.zero_copy_credit); }, check_dpdk_zero_copy_credit},
      {"dpdk-idle-sleep", "dpdk.idle_sleep", "USEC",
       "an RX lcore idle for 1024 polls sleeps this long between polls (0..100000; for shared CPUs and tests)",
       "0: busy poll",
       [](DaemonConfig& c, std::string_view v) { return parse_unsigned(v, c.dpdk.idle_sleep_us); },
       [](const DaemonConfig& c) { return std::to_string(c.dpdk.idle_sleep_us); }, check_dpdk_idle_sleep},
  };
  return kOptions;
}

const Option* find_flag(std::string_view flag) {
  for (const auto& o : options()) {
    if (o.flag == flag) return &o;
  }
  return nullptr;
}

const Option* find_key(std::string_view key) {
  for (const auto& o : options()) {
    if (o.key == key) return &o;
  }
  return nullptr;
}

/// Sets an option and checks the value alone. Error text without the option name, or "".
std::string set_option(const Option& o, DaemonConfig& cfg, std::string_view value) {
  if (o.metavar.empty() && value.empty()) value = "true";  // a boolean flag without value
  if (auto e = o.set(cfg, value); !e.empty()) return e;
  return o.check(cfg);
}

std::string flag_error(const Option& o, std::string_view value, const std::string& why) {
  std::string m = "--" + std::string(o.flag);
  if (!value.empty()) m += " " + std::string(value);
  return m + ": " + why;
}

}  // namespace

Status parse_cpu_list(std::string_view text, std::vector<unsigned>& out) {
  out.clear();
  const auto bad = [&] { return Status::error("'" + std::string(text) + "': expected a list such as 1-2 or 1,3"); };
  if (trim(text).empty()) return bad();
  for (const std::string& item : split_list(text)) {
    const auto dash = item.find('-');
    unsigned lo = 0;
    unsigned hi = 0;
    if (!parse_unsigned(std::string_view(item).substr(0, dash), lo).empty()) return bad();
    hi = lo;
    if (dash != std::string::npos && !parse_unsigned(std::string_view(item).substr(dash + 1), hi).empty()) return bad();
    if (lo > hi || hi >= 1024) return bad();
    for (unsigned v = lo; v <= hi; ++v) out.push_back(v);
  }
  if (out.empty()) return bad();
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return Status::ok();
}

std::vector<std::string> split_list(std::string_view text) {
  std::vector<std::string> out;
  while (!text.empty()) {
    const auto comma = text.find(',');
    const std::string_view item = trim(text.substr(0, comma));
    if (!item.empty()) out.emplace_back(item);
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

unsigned writer_threads(const DaemonConfig& cfg, bool span_read) {
  if (cfg.writers != 0) return cfg.writers;
  if (!span_read) return 1;
  cpu_set_t set;
  CPU_ZERO(&set);
  const int cpus = ::sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
  return cpus >= 2 ? 2 : 1;
}

std::string_view source_name(SourceKind s) { return s == SourceKind::kDpdk ? "dpdk" : "kernel"; }

// ---- config file -----------------------------------------------------------------------------

Status load_config_text(std::string_view text, std::string_view name, DaemonConfig& cfg) {
  std::string section;
  std::size_t line_no = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    const std::string_view raw = text.substr(pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    // "FILE:LINE: " + parts (built only on error).
    auto fail = [&name, line_no](std::initializer_list<std::string_view> parts) {
      std::string m(name);
      m += ':';
      m += std::to_string(line_no);
      m += ": ";
      for (const auto part : parts) m += part;
      return Status::error(std::move(m));
    };

    const std::string_view line = trim(raw);
    if (line.empty() || line.front() == '#') continue;
    if (line.front() == '[') {
      if (line.back() != ']') return fail({"expected [section]"});
      section = lower(trim(line.substr(1, line.size() - 2)));
      continue;
    }
    const std::size_t eq = line.find('=');
    if (eq == std::string_view::npos) return fail({"expected key = value, got '", line, "'"});
    std::string key = lower(trim(line.substr(0, eq)));
    std::replace(key.begin(), key.end(), '-', '_');
    if (key.empty()) return fail({"missing key before '='"});
    if (!section.empty()) key.insert(0, section + ".");

    std::string_view value = trim(line.substr(eq + 1));
    if (!value.empty() && value.front() == '"') {
      const std::size_t close = value.find('"', 1);
      if (close == std::string_view::npos) return fail({"unterminated quote in ", key});
      const std::string_view rest = trim(value.substr(close + 1));
      if (!rest.empty() && rest.front() != '#') return fail({"text after the closing quote of ", key});
      value = value.substr(1, close - 1);
    } else {
      // An inline comment starts at a '#' that follows a blank.
      for (std::size_t i = 1; i < value.size(); ++i) {
        if (value[i] == '#' && (value[i - 1] == ' ' || value[i - 1] == '\t')) {
          value = trim(value.substr(0, i));
          break;
        }
      }
    }

    const Option* o = find_key(key);
    if (o == nullptr) return fail({"unknown key '", key, "'"});
    if (o->metavar.empty() && value.empty()) return fail({key, ": expected true|false"});
    if (auto e = set_option(*o, cfg, value); !e.empty()) {
      return fail({key, " = ", value, ": ", e});
    }
  }
  return Status::ok();
}

Status load_config_file(const std::filesystem::path& path, DaemonConfig& cfg) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    errno = errno == 0 ? ENOENT : errno;
    return Status::from_errno("cannot read config file " + path.string());
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return Status::from_errno("cannot read config file " + path.string());
  return load_config_text(ss.str(), path.string(), cfg);
}

// ---- flags -----------------------------------------------------------------------------------

Status apply_flags(int argc, const char* const* argv, DaemonConfig& cfg) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i] == nullptr ? "" : argv[i];
    if (a == "--help" || a == "-h") {
      cfg.show_help = true;
      return Status::ok();
    }
    if (a == "--version") {
      cfg.show_version = true;
      return Status::ok();
    }
  }

  struct Pending {
    const Option* option;  ///< nullptr: --config
    std::string value;
  };
  std::vector<std::string> configs;
  std::vector<Pending> flags;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i] == nullptr ? "" : argv[i];
    if (a.size() < 3 || a.substr(0, 2) != "--") {
      return Status::error("unexpected argument '" + std::string(a) + "' (options start with --; see --help)");
    }
    const std::size_t eq = a.find('=');
    const std::string_view name = a.substr(2, eq == std::string_view::npos ? std::string_view::npos : eq - 2);
    std::optional<std::string> value;
    if (eq != std::string_view::npos) value = std::string(a.substr(eq + 1));

    if (name == "config") {
      if (!value) {
        if (i + 1 >= argc || argv[i + 1] == nullptr) return Status::error("--config: missing FILE");
        value = argv[++i];
      }
      configs.push_back(*value);
      continue;
    }
    const Option* o = find_flag(name);
    if (o == nullptr) return Status::error("unknown option --" + std::string(name) + " (see --help)");
    if (!value && !o->metavar.empty()) {
      if (i + 1 >= argc || argv[i + 1] == nullptr) {
        return Status::error("--" + std::string(name) + ": missing " + std::string(o->metavar));
      }
      value = argv[++i];
    }
    flags.push_back(Pending{o, value.value_or("")});
  }

  for (const auto& file : configs) {
    if (Status st = load_config_file(file, cfg); !st) return st;
  }
  for (const auto& f : flags) {
    if (auto e = set_option(*f.option, cfg, f.value); !e.empty()) {
      return Status::error(flag_error(*f.option, f.value, e));
    }
  }
  return Status::ok();
}

// ---- validation ------------------------------------------------------------------------------

Status validate(DaemonConfig& cfg) {
  for (const auto& o : options()) {
    if (auto e = o.check(cfg); !e.empty()) return Status::error(flag_error(o, o.get(cfg), e));
  }
  if (!cfg.rtp_all_ports && cfg.rtp_port_lo == cfg.rtp_port_hi && cfg.rtp_port_lo % 2 != 0) {
    return Status::error("--rtp-ports " + find_flag("rtp-ports")->get(cfg) +
                         ": no even port in the range (or give --rtp-all-ports)");
  }
  // Across flags, whatever their order on the command line.
  if (!cfg.siprec_tls_listen.empty() && (cfg.siprec_tls_cert.empty() || cfg.siprec_tls_key.empty()))
    return Status::error("--siprec-tls-listen " + join_list(cfg.siprec_tls_listen) +
                         ": TLS needs --siprec-tls-cert and --siprec-tls-key");
  if (!cfg.metrics.empty()) {
    sockaddr_storage l{};
    sockaddr_storage m{};
    if (parse_endpoint(cfg.listen, l) && parse_endpoint(cfg.metrics, m) && endpoint_port(m) != 0 &&
        same_endpoint(l, m)) {
      return Status::error("--metrics " + cfg.metrics + ": same endpoint as --listen");
    }
  }
  if (cfg.source == SourceKind::kDpdk) {
    if (cfg.dpdk.address.empty()) return Status::error("--dpdk-address: required with --source dpdk");
    if (!cfg.dpdk.vdev.empty() && cfg.dpdk.port != 0) {
      return Status::error("--dpdk-port " + std::to_string(cfg.dpdk.port) + ": conflicts with --dpdk-vdev " +
                           cfg.dpdk.vdev + " (the vdev is the port)");
    }
    if (!cfg.dpdk.lcores.empty()) {
      std::vector<unsigned> ids;
      (void)parse_cpu_list(cfg.dpdk.lcores, ids);  // checked above
      if (cfg.rx_threads != 1 && cfg.rx_threads != ids.size()) {
        return Status::error("--dpdk-lcores " + cfg.dpdk.lcores + ": " + std::to_string(ids.size()) +
                             " RX lcore(s), but --rx-threads " + std::to_string(cfg.rx_threads) +
                             " (give one of them, or the same count)");
      }
      cfg.rx_threads = static_cast<std::uint32_t>(ids.size());
    }
    if (cfg.advertise.empty()) cfg.advertise = split_list(cfg.dpdk.address).front();
    if (cfg.dpdk.queues == 0) cfg.dpdk.queues = cfg.rx_threads;
  }
  if (cfg.catalog.empty()) {
    std::filesystem::path storage = cfg.storage;
    if (!storage.has_filename()) storage = storage.parent_path();  // "/x/rec/" -> "/x/rec"
    cfg.catalog = (storage / "..").lexically_normal() / "catalog.db";
  }
  return Status::ok();
}

// ---- usage and dump --------------------------------------------------------------------------

std::string usage(std::string_view program) {
  const DaemonConfig defaults;
  std::string out;
  out += "Usage: " + std::string(program) + " [OPTIONS]\n\n";
  out += "Call-recording server: phones ask for a recording over TCP (control protocol) and\n";
  out += "send the call's RTP by UDP to a port allocated for it; recordings are filed by device.\n\n";
  out += "Options (a flag overrides the config file; the file key is in brackets):\n";

  auto row = [&out](const std::string& left, std::string_view help, const std::string& tail) {
    constexpr std::size_t kColumn = 30;
    std::string line = "  " + left;
    if (line.size() + 1 >= kColumn) {
      out += line + "\n";
      line.assign(kColumn, ' ');
    } else {
      line.resize(kColumn, ' ');
    }
    out += line + std::string(help) + "\n";
    if (!tail.empty()) out += std::string(kColumn, ' ') + tail + "\n";
  };

  row("--config FILE", "read options from FILE first (key = value lines, # comments, [dpdk] section)", "");
  for (const auto& o : options()) {
    std::string left = "--" + std::string(o.flag);
    left += o.metavar.empty() ? "[=BOOL]" : " " + std::string(o.metavar);
    std::string def;
    if (!o.default_note.empty()) {
      def = std::string(o.default_note);
    } else {
      def = o.get(defaults);
      if (def.empty()) def = "empty";
      if (o.metavar.empty()) def = def == "true" ? "on" : "off";
    }
    row(left, o.help, "[" + std::string(o.key) + "] default: " + def);
  }
  row("-h, --help", "print this text and exit", "");
  row("--version", "print the version and exit", "");
  return out;
}

std::string to_config_text(const DaemonConfig& cfg) {
  std::string top;
  std::string dpdk;
  for (const auto& o : options()) {
    const std::string v = quote_if_needed(o.get(cfg));
    if (o.key.substr(0, 5) == "dpdk.") {
      dpdk += std::string(o.key.substr(5)) + " = " + v + "\n";
    } else {
      top += std::string(o.key) + " = " + v + "\n";
    }
  }
  return top + "\n[dpdk]\n" + dpdk;
}

// ---- addresses -------------------------------------------------------------------------------

Status parse_ip(std::string_view text, sockaddr_storage& out) {
  std::string_view t = text;
  if (t.size() >= 2 && t.front() == '[' && t.back() == ']') t = t.substr(1, t.size() - 2);
  if (t.empty()) return Status::error("empty address");
  if (t.size() > 64 || t.find('\0') != std::string_view::npos) {
    return Status::error("'" + std::string(text.substr(0, 64)) + "' is not an IP address");
  }
  const std::string s(t);
  sockaddr_storage ss{};
  if (s.find(':') == std::string::npos) {
    auto& in4 = reinterpret_cast<sockaddr_in&>(ss);
    if (inet_pton(AF_INET, s.c_str(), &in4.sin_addr) != 1) {
      return Status::error("'" + std::string(text) + "' is not an IPv4 address");
    }
    in4.sin_family = AF_INET;
  } else {
    addrinfo hints{};
    hints.ai_family = AF_INET6;
    hints.ai_flags = AI_NUMERICHOST;
    addrinfo* res = nullptr;
    const int rc = getaddrinfo(s.c_str(), nullptr, &hints, &res);
    if (rc != 0 || res == nullptr || res->ai_addrlen > sizeof(ss)) {
      if (res != nullptr) freeaddrinfo(res);
      return Status::error("'" + std::string(text) + "' is not an IPv6 address");
    }
    std::memcpy(&ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    reinterpret_cast<sockaddr_in6&>(ss).sin6_port = 0;
  }
  out = ss;
  return Status::ok();
}

Status parse_endpoint(std::string_view text, sockaddr_storage& out) {
  if (text.empty()) return Status::error("empty endpoint, expected ADDR:PORT");
  std::string_view host;
  std::string_view port;
  if (text.front() == '[') {
    const std::size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return Status::error("'" + std::string(text) + "': expected [IPV6]:PORT");
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    if (host.empty()) return Status::error("'" + std::string(text) + "': empty address");
  } else {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return Status::error("'" + std::string(text) + "': expected ADDR:PORT");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return Status::error("'" + std::string(text) + "': an IPv6 address needs brackets, [ADDR]:PORT");
    }
    if (host.empty() || host == "*") host = "0.0.0.0";
  }
  std::uint16_t p = 0;
  if (auto e = parse_unsigned(port, p); !e.empty()) {
    return Status::error("'" + std::string(text) + "': port " + (e == "out of range" ? "must be 0..65535" : e));
  }
  sockaddr_storage ss{};
  if (Status st = parse_ip(host, ss); !st) return Status::error("'" + std::string(text) + "': " + st.message());
  if (ss.ss_family == AF_INET) {
    reinterpret_cast<sockaddr_in&>(ss).sin_port = htons(p);
  } else {
    reinterpret_cast<sockaddr_in6&>(ss).sin6_port = htons(p);
  }
  out = ss;
  return Status::ok();
}

socklen_t sockaddr_length(const sockaddr_storage& addr) {
  if (addr.ss_family == AF_INET) return sizeof(sockaddr_in);
  if (addr.ss_family == AF_INET6) return sizeof(sockaddr_in6);
  return 0;
}

std::string format_ip(const sockaddr_storage& addr) {
  char buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 2] = {};
  if (addr.ss_family == AF_INET) {
    const auto& in4 = reinterpret_cast<const sockaddr_in&>(addr);
    if (inet_ntop(AF_INET, &in4.sin_addr, buf, sizeof(buf)) == nullptr) return {};
    return buf;
  }
  if (addr.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(addr);
    if (inet_ntop(AF_INET6, &in6.sin6_addr, buf, sizeof(buf)) == nullptr) return {};
    std::string s = buf;
    if (in6.sin6_scope_id != 0) s += "%" + std::to_string(in6.sin6_scope_id);
    return s;
  }
  return {};
}

std::uint16_t endpoint_port(const sockaddr_storage& addr) {
  if (addr.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(addr).sin_port);
  if (addr.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(addr).sin6_port);
  return 0;
}

sockaddr_storage unmap_v4(const sockaddr_storage& a) {
  if (a.ss_family != AF_INET6) return a;
  const auto* s6 = reinterpret_cast<const sockaddr_in6*>(&a);
  if (!IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) return a;
  sockaddr_storage out{};
  auto* s4 = reinterpret_cast<sockaddr_in*>(&out);
  s4->sin_family = AF_INET;
  s4->sin_port = s6->sin6_port;
  std::memcpy(&s4->sin_addr, &s6->sin6_addr.s6_addr[12], 4);
  return out;
}

std::string format_endpoint(const sockaddr_storage& addr) {
  if (addr.ss_family == AF_INET) return format_ip(addr) + ":" + std::to_string(endpoint_port(addr));
  if (addr.ss_family == AF_INET6) return "[" + format_ip(addr) + "]:" + std::to_string(endpoint_port(addr));
  return {};
}

}  // namespace callrec::control
