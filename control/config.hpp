#pragma once
// The daemon's configuration: one struct with working defaults, a `key = value` file, command
// line flags that override it, and validation whose messages name the option and the value.
//
// Every option has one row in an option table (config.cpp): flag `--rtp-ports`, file key
// `rtp_ports` (flags `--dpdk-x` are keys `x` of section `[dpdk]`, also writable `dpdk.x`), a
// value syntax, a default and a help line. usage() is generated from that table.
//
// Order: defaults, then every `--config FILE` (in command-line order), then the other flags,
// then validate(). Plain data; no threads involved.
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "fileio/status.hpp"

namespace callrec::control {

enum class SourceKind : std::uint8_t { kKernel, kDpdk };

/// DPDK packet source settings; used only with source = dpdk.
struct DpdkConfig {
  std::string eal;                    ///< extra EAL arguments, split on blanks ("--no-huge -a 0000:03:00.0")
  std::uint16_t port = 0;             ///< ethdev port id (ignored with vdev)
  std::string vdev;                   ///< a virtual device as the port: EAL --vdev=VDEV, port = its name
                                      ///< ("net_af_packet0,iface=eth1"); empty: use `port`
  std::uint32_t queues = 0;           ///< RX queues; 0: one per RX thread (validate() resolves it)
  std::string lcores;                 ///< RX lcore ids ("1-2", "1,3"); empty: the next CPUs after the
                                      ///< main lcore (or the EAL's -l/--lcores in `eal`)
  std::uint32_t mempool = 16383;      ///< mbufs in the pool (2^n - 1 is best for rte_mempool)
  std::string address;                ///< IPv4 address(es), comma-separated, the dataplane answers ARP
                                      ///< and ICMP echo for and receives RTP on; the first is advertised
  std::string address6;               ///< IPv6 address(es), comma-separated, the dataplane answers
                                      ///< neighbour discovery and ICMPv6 echo for (no RTP, not advertised)
  std::string tap;                    ///< kernel exception path: TAP interface name; empty: drop
  std::uint32_t idle_sleep_us = 0;    ///< 0: busy poll; else sleep this long when idle (shared CPUs)
  bool zero_copy = false;             ///< hand-off to writers: false copy, true zero-copy (by reference)
  std::uint32_t zero_copy_credit = 0;  ///< zero-copy: mbufs each RX lcore may leave with writers; 0 auto
};

struct DaemonConfig {
  std::string listen = "0.0.0.0:7070";            ///< control TCP endpoint, ADDR:PORT (port 0: any)
  std::uint16_t rtp_port_lo = 40000;              ///< UDP ports for RTP, inclusive
  std::uint16_t rtp_port_hi = 49999;
  bool rtp_all_ports = false;                     ///< false: even ports only (RTP convention)
  std::string advertise;                          ///< address sent as server=; empty: the local
                                                  ///< address of the phone's TCP connection
  std::filesystem::path storage = "/var/lib/callrec/recordings";
  std::filesystem::path catalog;                  ///< empty: <storage>/../catalog.db (validate())
  std::uint32_t rx_threads = 1;
  std::uint32_t writers = 0;  ///< 0: auto (writer_threads())
  std::uint32_t rtp_timeout_s = 30;               ///< no RTP for this long ends the recording
  bool latch = false;                             ///< true: latch the first source (port) seen from the phone's address
  bool latch_any = false;                         ///< with latch: the first source from any address (weaker)
  std::uint32_t max_connections = 0;              ///< 0: derived from the descriptor limit at start
  std::uint32_t max_connections_per_address = 1024;  ///< 0: no limit
  std::uint32_t max_recordings_per_address = 4096;   ///< 0: no limit
  std::uint32_t control_quiet_ms = 5000;          ///< unterminated message complete after this quiet
  std::uint32_t max_message = 4096;               ///< bytes per control message
  std::uint64_t reserve_mb = 256;                 ///< free space kept on the storage volume
  std::uint64_t max_file_mb = 0;                  ///< rotate files at this size; 0: unlimited
  std::uint32_t flush_ms = 1000;
  std::uint32_t reorder_window = 8;               ///< RTP packets
  std::uint32_t max_gap_fill = 50;                ///< RTP packets of silence at most per gap
  std::uint32_t max_stream_pps = 400;             ///< per-flow RTP rate policer; 0: off
  std::uint32_t stream_burst = 500;               ///< packets a flow may send at once above it
  std::uint32_t port_quarantine_s = 30;
  std::string metrics = "127.0.0.1:9464";         ///< Prometheus endpoint; empty: off
  std::uint32_t metrics_max_connections = 16;
  std::string log_level = "info";                 ///< error|warn|info|debug (control/log.hpp levels)
  SourceKind source = SourceKind::kKernel;
  DpdkConfig dpdk;
  // Passive capture (control/span/, ../shared/spec/span-capture.md)
  std::vector<std::string> span_read;        ///< capture files: record every call in them, then exit
  std::vector<std::string> span_interfaces;  ///< live mirror interfaces (libpcap, promiscuous)
  std::string span_dpdk;                     ///< a DPDK port as the mirror port (EAL: --dpdk-eal)
  std::uint32_t span_lanes = 1;              ///< poll-mode lanes (threads) of the DPDK mirror
  std::string span_filter;                   ///< BPF for the live interfaces (empty: everything)
  std::uint32_t span_buffer_mb = 64;         ///< kernel capture ring per interface
  std::uint32_t span_max_calls = 200000;     ///< calls followed at once (oldest evicted)
  std::uint32_t span_max_pending = 50000;    ///< unanswered INVITEs held (oldest evicted)
  std::uint32_t span_media_timeout_s = 60;   ///< answered call without RTP or SIP this long ends
  std::uint32_t span_max_fragments = 4096;   ///< incomplete IP datagrams held
  std::uint32_t span_max_tcp_streams = 4096; ///< SIP-over-TCP streams followed
  // SIPREC recording server (control/siprec/, ../shared/spec/siprec-srs.md)
  std::vector<std::string> siprec_listen;      ///< ADDR:PORT, UDP and TCP (off when empty)
  std::vector<std::string> siprec_tls_listen;  ///< ADDR:PORT, TLS
  std::string siprec_tls_cert, siprec_tls_key, siprec_tls_ca;  ///< PEM files; ca: mutual TLS
  std::uint32_t siprec_max_sessions = 0;       ///< 0: no cap (ports, disk, descriptors still apply)
  std::string siprec_media_address;            ///< c= of SDP answers; empty: the address the SRC reached
  std::uint32_t siprec_t1_ms = 500;            ///< RFC 3261 T1 (retransmissions; 64*T1 transaction life)

  bool show_help = false;     ///< --help was given: print usage() and exit 0
  bool show_version = false;  ///< --version was given
};

/// Reads `key = value` lines: '#' starts a comment (at line start, or after a blank outside
/// quotes), blank lines are ignored, a value may be "quoted", `[section]` prefixes the keys
/// after it with "section.". Unknown key or bad value: an error "FILE:LINE: ...". Later lines
/// override earlier ones.
Status load_config_file(const std::filesystem::path& path, DaemonConfig& cfg);
/// The same from text in memory; `name` stands for the file name in messages.
Status load_config_text(std::string_view text, std::string_view name, DaemonConfig& cfg);

/// Applies command-line flags (argv[0] is the program). `--opt VALUE` and `--opt=VALUE`;
/// boolean flags take no value (`--latch`) or an explicit `--latch=false`. Every `--config
/// FILE` is loaded first, then the other flags override it. `--help`/`-h` and `--version` set
/// show_help / show_version and stop there. Does not call validate().
Status apply_flags(int argc, const char* const* argv, DaemonConfig& cfg);

/// Checks every value and the combinations, and resolves derived defaults (catalog path,
/// dpdk.queues, advertise with DPDK). Messages name the flag and the value:
/// "--rtp-ports 5000-4000: low port above high port".
Status validate(DaemonConfig& cfg);

/// Help text: every flag, its value syntax, meaning and default. `program` heads the text.
std::string usage(std::string_view program = "callrecd");

/// The configuration as a config file that load_config_text() reads back (for --print-config
/// and logs).
std::string to_config_text(const DaemonConfig& cfg);

std::string_view source_name(SourceKind s);

/// Writer threads to start: --writers, or with 0 (auto) 1 for the daemon and, for --span-read
/// (a reading thread that never waits on the network, so the writers are the limit), 2 when
/// the process may run on 2 or more CPUs (bench/RESULTS.md: 10,000 calls read 1.1-1.3x faster).
unsigned writer_threads(const DaemonConfig& cfg, bool span_read);

/// Parses a CPU / lcore list such as "1-2,4" into sorted unique ids (each < 1024).
Status parse_cpu_list(std::string_view text, std::vector<unsigned>& out);
/// Splits "a,b , c" on commas, trimming blanks; empty items are dropped.
std::vector<std::string> split_list(std::string_view text);

// ---- addresses (shared with the daemon and tools) ---------------------------------------------

/// Parses an IP literal: "192.0.2.1", "::1", "[::1]", "fe80::1%eth0". Port is 0. No DNS.
Status parse_ip(std::string_view text, sockaddr_storage& out);
/// Parses "ADDR:PORT": "0.0.0.0:7070", "[::1]:7070", ":7070" and "*:7070" (IPv4 any). Port
/// 0..65535. IPv6 needs the brackets.
Status parse_endpoint(std::string_view text, sockaddr_storage& out);
/// sizeof(sockaddr_in) / sizeof(sockaddr_in6) by family; 0 for others.
socklen_t sockaddr_length(const sockaddr_storage& addr);
/// "192.0.2.1" / "::1" ("" for other families).
std::string format_ip(const sockaddr_storage& addr);
/// "192.0.2.1:7070" / "[::1]:7070".
std::string format_endpoint(const sockaddr_storage& addr);
/// Port in host order (0 for other families).
std::uint16_t endpoint_port(const sockaddr_storage& addr);
/// An IPv4-mapped IPv6 address (a dual-stack socket's IPv4 peer) as plain IPv4, port kept;
/// any other address unchanged.
sockaddr_storage unmap_v4(const sockaddr_storage& addr);

}  // namespace callrec::control
