// DpdkSource: see dataplane/dpdk_source.hpp for the contract, threads and spread.
//
// Per RX lcore, one poll iteration:
//   for each of its queues:      rte_eth_rx_burst(32) -> process(burst, received_here)
//   for each hand-off ring in:   rte_ring_sc_dequeue_burst   -> process(burst, !received_here)
//   lcore 0: flush host TX; every 100 us poll the exception TAP (kernel -> wire)
//   commands (rte_ring, drained after the packets so a remove follows what was received)
//   pending end marks; counters published every 100 ms; optional idle sleep
// process() is two passes over the burst (the VPP/l3fwd shape): pass 1 prefetches a few packets
// ahead, parses Ethernet/VLAN/IPv4/UDP and sorts packets into candidates (ours), hand-offs
// (another lcore owns them), host traffic and drops; the lookup stage maps candidates to flow
// slots and prefetches the flow entries; pass 2 checks the source and RTP v2, copies the UDP
// payload into ring(p, writer) and publishes each touched ring once; then mbufs are freed in
// one rte_pktmbuf_free_bulk. Measured figures: bench/RESULTS-dpdk.md (dpdk_pipeline_bench).
//
// Where an RX lcore's cycles go (2.1 GHz TSC, 2-vCPU VM, count consumer, stage timing on),
// per packet: rx_burst (net_pcap replay: alloc + copy) 80-90; classify (parse + lookup +
// prefetch) 19 with the flat table up to 18,000 streams, 41 at 100,000; deliver (source and RTP
// checks, copy into a 32 MiB PacketRing) 75-95; bulk free 9-15. Total 190-235 cycles: 8.8-10.8
// Mpps per lcore, against 22-25 Mpps for testpmd rxonly on the same vdev and file.
#include "dataplane/dpdk_source.hpp"

#include <arpa/inet.h>
#include <pthread.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <span>
#include <thread>
#include <utility>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wold-style-cast"
#pragma GCC diagnostic ignored "-Wcast-align"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <rte_common.h>
#include <rte_cycles.h>
#include <rte_dev.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_hash.h>
#include <rte_hash_crc.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_pause.h>
#include <rte_prefetch.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>
#include <rte_telemetry.h>
#pragma GCC diagnostic pop

#include "dataplane/end_marks.hpp"
#include "dataplane/flow_policer.hpp"
#include "fileio/rtp.hpp"

namespace callrec::dataplane {

namespace dpdk_detail {

constexpr std::size_t kCacheLine = 64;
constexpr unsigned kMaxBurst = 64;           ///< also RTE_HASH_LOOKUP_BULK_MAX
constexpr unsigned kPrefetchAhead = 3;       ///< packets prefetched ahead in pass 1
constexpr unsigned kCommandBatch = 64;       ///< commands applied per poll iteration at most
constexpr unsigned kMaxAddresses = 64;
constexpr unsigned kMaxAddresses6 = 16;
constexpr unsigned kMaxLcores = 64;
constexpr unsigned kAutoZeroCopyCredit = 8192;  ///< Options::zero_copy_credit = 0 picks at most this
constexpr std::uint8_t kAllAddresses = 0xFF;
constexpr std::uint64_t kPublishIntervalNs = 100'000'000;
constexpr std::uint64_t kTapPollIntervalNs = 100'000;
constexpr unsigned kIdlePollsBeforeSleep = 1024;
constexpr std::uint16_t kNoPort = 0xFFFF;
constexpr auto kCommandRingWait = std::chrono::seconds(1);


inline std::uint16_t rd16(const std::uint8_t* p) { return static_cast<std::uint16_t>((p[0] << 8) | p[1]); }
/// 32/16-bit field as stored (network byte order), for compares.
inline std::uint32_t raw32(const std::uint8_t* p) {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline std::uint16_t raw16(const std::uint8_t* p) {
  std::uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline void wr16(std::uint8_t* p, std::uint16_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}

/// RFC 1071 checksum of [p, p+len).
inline std::uint16_t inet_checksum(const std::uint8_t* p, std::size_t len) {
  std::uint32_t sum = 0;
  for (std::size_t i = 0; i + 1 < len; i += 2) sum += rd16(p + i);
  if ((len & 1) != 0) sum += static_cast<std::uint32_t>(p[len - 1]) << 8;
  while ((sum >> 16) != 0) sum = (sum & 0xFFFF) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum);
}

/// One's-complement sum of [p, p+len) as big-endian 16-bit words, not folded (len < 128 KiB).
inline std::uint32_t sum16(std::uint32_t sum, const std::uint8_t* p, std::size_t len) {
  for (std::size_t i = 0; i + 1 < len; i += 2) sum += rd16(p + i);
  if ((len & 1) != 0) sum += static_cast<std::uint32_t>(p[len - 1]) << 8;
  return sum;
}

/// ICMPv6 checksum (RFC 4443 2.3: IPv6 pseudo-header + message) of a message of `len` bytes.
/// Over a message that carries its checksum, 0 means valid.
inline std::uint16_t icmp6_checksum(const std::uint8_t* src, const std::uint8_t* dst, const std::uint8_t* icmp,
                                    std::uint32_t len) {
  std::uint32_t sum = sum16(0, src, 16);
  sum = sum16(sum, dst, 16);
  sum += (len >> 16) + (len & 0xFFFF) + IPPROTO_ICMPV6;
  sum = sum16(sum, icmp, len);
  while ((sum >> 16) != 0) sum = (sum & 0xFFFF) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum);
}

/// ff02::1:ff00:0/104, the solicited-node multicast prefix (RFC 4291 2.7.1).
inline bool solicited_node(const std::uint8_t* a) {
  static constexpr std::uint8_t kPrefix[13] = {0xFF, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xFF};
  return std::memcmp(a, kPrefix, sizeof kPrefix) == 0;
}

/// The lcore that owns UDP port `port` (of every address). Multiplicative hash: RTP ports are
/// even, so port % n alone would put everything on lcore 0 for n = 2.
inline unsigned owner_of(std::uint16_t port, unsigned n) {
  return n == 1 ? 0 : ((static_cast<std::uint32_t>(port) * 0x9E3779B1U) >> 16) % n;
}

inline std::uint8_t* mbuf_data(rte_mbuf* m) { return static_cast<std::uint8_t*>(m->buf_addr) + m->data_off; }

/// Counter indices (an array keeps publish/sum loops short).
enum Counter : unsigned {
  kRxPackets,
  kRxBytes,
  kDelivered,
  kRingFull,
  kUnknownFlow,
  kWrongSource,
  kNotRtp,
  kPoliced,
  kArpReplies,
  kIcmpReplies,
  kNdReplies,
  kIcmp6Replies,
  kExceptionPath,
  kForwarded,
  kHandoffFull,
  kDropped,
  kNotOurs,
  kIcmp6Invalid,
  kTxFailed,
  kExceptionRx,
  kRxErrors,
  kZeroCopy,
  kZeroCopyFallback,
  kZeroCopyHeld,  ///< a gauge, not a sum of events
  kBursts,
  kTimedPackets,
  kCyclesRx,
  kCyclesClassify,
  kCyclesDeliver,
  kCyclesFree,
  kCounterCount
};

struct Counters {
  std::array<std::uint64_t, kCounterCount> v{};
  std::uint64_t& operator[](Counter c) { return v[c]; }
};

/// The copy other threads read: written only by its lcore (relaxed stores every 100 ms).
struct alignas(kCacheLine) PublishedCounters {
  std::array<std::atomic<std::uint64_t>, kCounterCount> v{};
  void store(const Counters& c) {
    for (unsigned i = 0; i < kCounterCount; ++i) v[i].store(c.v[i], std::memory_order_relaxed);
  }
  [[nodiscard]] std::uint64_t get(Counter c) const { return v[c].load(std::memory_order_relaxed); }
};

enum Match : std::uint8_t { kAny, kAddr, kAddrPort };

/// One flow entry: one cache line, prefetched by the lookup stage. Written only by the owning
/// lcore; `packets`, `wrong_source` and `policed` are also read by control threads (relaxed).
struct alignas(kCacheLine) Flow {
  std::atomic<std::uint64_t> packets{0};
  std::atomic<std::uint64_t> wrong_source{0};
  std::atomic<std::uint64_t> policed{0};
  std::uint64_t policer_tat = 0;  ///< flow_policer.hpp state
  StreamId stream = 0;
  std::uint32_t expect_ip = 0;    ///< network order
  std::uint32_t latched_ip = 0;   ///< network order
  std::uint16_t expect_port = 0;  ///< network order
  std::uint16_t latched_port = 0; ///< network order
  std::uint16_t writer = 0;
  std::uint16_t port = 0;         ///< host order (to remove the keys)
  std::uint8_t address = 0;       ///< index or kAllAddresses
  std::uint8_t match = kAny;
  bool active = false;
  bool latch = false;
  bool latched = false;

  /// Latched: only the latched address:port. Otherwise the expected source (with latch, the
  /// control side made it kAddr: the phone's address, any port), or anyone.
  [[nodiscard]] bool accepts(std::uint32_t ip, std::uint16_t port_be) const {
    if (latched) return ip == latched_ip && port_be == latched_port;
    if (match == kAny) return true;
    return ip == expect_ip && (match == kAddr || port_be == expect_port);
  }
  static void bump(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);  // one writer
  }
};
static_assert(sizeof(Flow) == kCacheLine);

/// What pass 1 learned about a candidate packet.
struct Candidate {
  rte_mbuf* m;
  const std::uint8_t* payload;
  std::uint32_t key;     ///< address index << 16 | dst port
  std::uint32_t src_ip;  ///< network order
  std::uint32_t slot;    ///< 1 + flow slot; 0: no flow
  std::uint16_t src_port;  ///< network order
  std::uint16_t len;
};

enum class Kind : std::uint8_t { kCandidate, kHost, kNotOurs, kDrop, kNotRtp };

/// Parses Ethernet (up to two VLAN tags) / IPv4 / UDP. Never reads past `len`.
inline Kind classify(const std::uint8_t* d, std::uint32_t len, const std::uint32_t* addrs, unsigned n_addr,
                     Candidate& c) {
  if (len < 14) return Kind::kDrop;
  std::uint16_t et = rd16(d + 12);
  std::uint32_t l3 = 14;
  while ((et == 0x8100 || et == 0x88A8) && l3 < 22) {
    if (len < l3 + 4) return Kind::kDrop;
    et = rd16(d + l3 + 2);
    l3 += 4;
  }
  if (et != 0x0800) return Kind::kHost;  // ARP, IPv6, LLDP ...: the host stack decides
  if (len < l3 + 20) return Kind::kDrop;
  const std::uint8_t* ip = d + l3;
  const std::uint32_t ihl = (ip[0] & 0x0Fu) * 4;
  if ((ip[0] >> 4) != 4 || ihl < 20) return Kind::kDrop;
  const std::uint32_t tot = rd16(ip + 2);
  if (tot < ihl || l3 + tot > len) return Kind::kDrop;  // truncated (or multi-segment)
  const std::uint32_t dst = raw32(ip + 16);
  unsigned a = 0;
  while (a < n_addr && addrs[a] != dst) ++a;
  if (a == n_addr) {
    const std::uint8_t first = ip[16];
    return (first >= 224 || dst == 0xFFFFFFFFU) ? Kind::kHost : Kind::kNotOurs;
  }
  if (ip[9] != IPPROTO_UDP || (rd16(ip + 6) & 0x3FFF) != 0) return Kind::kHost;  // TCP, ICMP, fragments
  if (tot < ihl + 8) return Kind::kNotRtp;
  const std::uint8_t* udp = ip + ihl;
  const std::uint32_t ulen = rd16(udp + 4);
  if (ulen < 8 || ulen > tot - ihl) return Kind::kNotRtp;
  c.key = (a << 16) | rd16(udp + 2);
  c.src_ip = raw32(ip + 12);
  c.src_port = raw16(udp);
  c.payload = udp + 8;
  c.len = static_cast<std::uint16_t>(ulen - 8);
  return Kind::kCandidate;
}

/// EAL and the process-wide claims on lcores and ports.
struct Registry {
  std::mutex mu;
  bool attempted = false;
  Status result;
  std::vector<std::string> base_args;  ///< the first init's arguments without --vdev
  std::vector<std::string> argv_storage;
  std::vector<char*> argv;
  std::array<bool, RTE_MAX_LCORE> lcore_claimed{};
  std::array<bool, RTE_MAX_ETHPORTS> port_claimed{};
  unsigned next_instance = 0;
};

Registry& registry() {
  static Registry r;
  return r;
}

/// Splits EAL arguments into --vdev device strings and the rest.
void split_vdevs(const std::vector<std::string>& args, std::vector<std::string>& vdevs, std::vector<std::string>& rest) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--vdev=", 0) == 0) {
      vdevs.push_back(a.substr(7));
    } else if (a == "--vdev" && i + 1 < args.size()) {
      vdevs.push_back(args[++i]);
    } else {
      rest.push_back(a);
    }
  }
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) {
    if (!s.empty()) s += ' ';
    s += x;
  }
  return s;
}

std::string rte_error(int err) { return rte_strerror(err < 0 ? -err : err); }

/// Runs rte_eal_init once per process; later calls hot-plug new vdevs (added to `hotplugged`).
/// Caller holds registry().mu.
Status ensure_eal_locked(const std::vector<std::string>& args, std::vector<std::string>& hotplugged) {
  Registry& r = registry();
  std::vector<std::string> vdevs;
  std::vector<std::string> rest;
  split_vdevs(args, vdevs, rest);
  if (!r.attempted) {
    r.attempted = true;
    r.argv_storage.clear();
    r.argv_storage.emplace_back("callrec");
    r.argv_storage.insert(r.argv_storage.end(), args.begin(), args.end());
    for (auto& s : r.argv_storage) r.argv.push_back(s.data());
    r.argv.push_back(nullptr);
    // rte_eal_init pins this thread to the main lcore; the control thread is not a poll loop
    // and threads it creates later must not inherit that pinning.
    cpu_set_t before;
    CPU_ZERO(&before);
    const bool have_before = pthread_getaffinity_np(pthread_self(), sizeof before, &before) == 0;
    const int rc = rte_eal_init(static_cast<int>(r.argv.size() - 1), r.argv.data());
    if (have_before) pthread_setaffinity_np(pthread_self(), sizeof before, &before);
    if (rc < 0) {
      r.result = Status(EINVAL, "dpdk: rte_eal_init failed: " + rte_error(rte_errno) + " (arguments: " + join(args) +
                                    "; EAL can be initialised only once per process)");
    } else {
      r.base_args = rest;
    }
    return r.result;
  }
  if (!r.result) return Status(r.result.code(), r.result.message() + " (earlier attempt in this process)");
  if (rest != r.base_args) {
    return Status(EINVAL, "dpdk: EAL is already initialised in this process with arguments '" + join(r.base_args) +
                              "'; rte_eal_init runs once per process, so a later source may only differ by --vdev "
                              "(got '" + join(rest) + "')");
  }
  for (const std::string& dev : vdevs) {
    const std::string name = dev.substr(0, dev.find(','));
    std::uint16_t pid = 0;
    if (rte_eth_dev_get_port_by_name(name.c_str(), &pid) == 0) continue;  // exists already
    const int rc = rte_dev_probe(dev.c_str());
    if (rc < 0) return Status(-rc, "dpdk: hot-plugging vdev '" + dev + "' failed: " + rte_error(rc));
    hotplugged.push_back(name);
  }
  return Status::ok();
}

std::string format_mac(const rte_ether_addr& a) {
  char buf[18];
  std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", a.addr_bytes[0], a.addr_bytes[1], a.addr_bytes[2],
                a.addr_bytes[3], a.addr_bytes[4], a.addr_bytes[5]);
  return buf;
}

}  // namespace dpdk_detail

using namespace dpdk_detail;  // NOLINT(google-build-using-namespace): this file's own details

// ---- control -> lcore message ------------------------------------------------------------------

struct DpdkSource::Command {
  enum : std::uint8_t { kAdd = 1, kRemove = 2 };
  std::uint8_t kind = 0;
  std::uint8_t address = 0;  ///< index or kAllAddresses
  std::uint8_t match = kAny;
  std::uint8_t latch = 0;
  std::uint16_t port = 0;         ///< host order
  std::uint16_t expect_port = 0;  ///< network order
  std::uint32_t slot = 0;
  StreamId stream = 0;
  std::uint32_t expect_ip = 0;    ///< network order
};

// ---- rte objects of one source -----------------------------------------------------------------

struct DpdkSource::Port {
  std::uint16_t port_id = kNoPort;
  std::uint16_t tap_port = kNoPort;
  bool port_claimed = false;
  bool port_hotplugged = false;  ///< the port is one of `hotplugged` (its pool can be freed)
  bool started = false;
  bool tap_started = false;
  bool keep_pool = false;  ///< a writer may still read mbufs handed over by reference
  rte_mempool* pool = nullptr;
  std::vector<std::string> hotplugged;  ///< vdev names this source added (removed at the end)
  std::vector<unsigned> claimed_lcores;
  std::vector<rte_ring*> rings;
  std::vector<rte_hash*> hashes;
  std::vector<rte_ring*> handoff;  ///< [from * n + to], nullptr on the diagonal
  unsigned n_lcores = 0;

  Port() = default;
  Port(const Port&) = delete;
  Port& operator=(const Port&) = delete;
  ~Port() {
    std::lock_guard lock(registry().mu);
    if (tap_started) rte_eth_dev_stop(tap_port);
    if (started) rte_eth_dev_stop(port_id);
    for (rte_ring* r : handoff) {
      if (r == nullptr) continue;
      void* objs[kMaxBurst];
      unsigned n = 0;
      while ((n = rte_ring_dequeue_burst(r, objs, kMaxBurst, nullptr)) != 0) {
        rte_pktmbuf_free_bulk(reinterpret_cast<rte_mbuf**>(objs), n);
      }
      rte_ring_free(r);
    }
    for (rte_ring* r : rings) rte_ring_free(r);
    for (rte_hash* h : hashes) rte_hash_free(h);
    bool removed_all = true;
    // Our hot-plugged devices are closed here (their queues give back their mbufs). A device
    // from the first EAL init stays; its queues may still reference the pool (net_pcap
    // infinite_rx holds the whole file in it), so that pool is kept for the process lifetime.
    for (const std::string& name : hotplugged) {
      if (rte_eal_hotplug_remove("vdev", name.c_str()) != 0) removed_all = false;
    }
    if (pool != nullptr && port_hotplugged && removed_all && !keep_pool) rte_mempool_free(pool);
    Registry& r = registry();
    for (unsigned l : claimed_lcores) r.lcore_claimed[l] = false;
    if (port_claimed) r.port_claimed[port_id] = false;
  }
};

// ---- per-lcore state ---------------------------------------------------------------------------

struct alignas(kCacheLine) DpdkSource::Lcore {
  // ---- owned by the lcore once it runs (prepared by the control thread before) --------------
  unsigned index = 0;
  unsigned lcore_id = 0;
  unsigned n_lcores = 1;
  std::uint16_t port_id = 0;
  std::uint16_t tap_port = kNoPort;
  bool has_tx = false;
  bool timing = false;
  unsigned burst = 32;
  PolicerConfig policer;  ///< per-flow rate policer (flow_policer.hpp)
  FlowTable table_kind = FlowTable::kFlat;
  std::vector<std::uint16_t> queues;
  const std::uint32_t* addresses = nullptr;
  unsigned n_addr = 0;
  std::array<std::uint8_t, 6> mac{};
  std::unique_ptr<std::uint32_t[]> flat;  ///< n_addr * 65536 entries: 1 + slot, 0 = none
  rte_hash* hash = nullptr;
  std::unique_ptr<Flow[]> flows;
  std::uint32_t max_flows = 0;
  fileio::RingMatrix* rings = nullptr;
  rte_ring* commands = nullptr;
  std::vector<rte_ring*> handoff_in;   ///< from lcore i (nullptr for self)
  std::vector<rte_ring*> handoff_out;  ///< to lcore i (nullptr for self)
  EndMarks end_marks;
  std::vector<std::array<rte_mbuf*, kMaxBurst>> fwd;  ///< per destination lcore, one burst
  std::vector<unsigned> fwd_n;
  /// Zero-copy: per writer, the mbufs its ring still references, in push order, each with
  /// the ring position its record ends at (a power-of-two circular buffer of zc_mask + 1).
  struct ZcHeld {
    std::uint64_t pos;
    rte_mbuf* m;
  };
  struct ZcFifo {
    std::unique_ptr<ZcHeld[]> e;
    std::uint64_t head = 0;  ///< next push
    std::uint64_t tail = 0;  ///< oldest held
  };
  std::vector<ZcFifo> zc;  ///< empty: copy hand-off
  std::uint64_t zc_mask = 0;
  unsigned zc_credit = 0;
  unsigned zc_held = 0;
  std::vector<std::uint8_t> dirty;     ///< per writer: ring pushed in this burst
  std::vector<std::uint16_t> dirty_list;
  Counters c;
  std::uint64_t base_tsc = 0;
  std::uint64_t base_ns = 0;
  double ns_per_tsc = 1.0;
  std::uint64_t publish_interval_tsc = 0;
  std::uint64_t next_publish_tsc = 0;
  std::uint64_t tap_interval_tsc = 0;
  std::uint64_t next_tap_tsc = 0;
  unsigned idle_sleep_us = 0;
  bool idle_pause = true;
  unsigned idle_polls = 0;
  // Optional RX rate limit (token bucket in packets; rate re-read at every publish).
  double tokens_per_tsc = 0;  ///< 0: unlimited
  double tokens = 0;
  std::uint64_t tokens_tsc = 0;
  std::chrono::milliseconds stop_drain_timeout{2000};
  std::atomic<std::uint64_t>* end_marks_lost = nullptr;
  std::atomic<std::uint64_t>* zero_copy_leaked = nullptr;
  // lcore 0: host TX batch (replies to the wire) and exception batch (to the kernel)
  std::array<rte_mbuf*, kMaxBurst> host_tx{};
  std::array<Counter, kMaxBurst> host_tx_kind{};
  unsigned host_tx_n = 0;
  std::array<rte_mbuf*, kMaxBurst> exc_tx{};
  unsigned exc_tx_n = 0;
  // lcore 0: IPv6 addresses answered for neighbour discovery and echo (DpdkSource::addresses6_)
  const in6_addr* addresses6 = nullptr;
  unsigned n_addr6 = 0;

  // ---- shared with control threads ------------------------------------------------------------
  alignas(kCacheLine) PublishedCounters published;
  alignas(kCacheLine) std::atomic<bool> stop_requested{false};
  std::atomic<double> rate_limit_pps{0};  ///< control -> lcore (relaxed; read every 100 ms)
  std::atomic<std::uint64_t> commands_done{0};  ///< release: pairs with reclaim's acquire
  bool launched = false;                         ///< control thread only

  Lcore() = default;
  Lcore(const Lcore&) = delete;
  Lcore& operator=(const Lcore&) = delete;

  static int entry(void* arg) {
    static_cast<Lcore*>(arg)->run();
    return 0;
  }
  void run();
  unsigned poll_once();
  void process(rte_mbuf** pkts, unsigned n, bool received_here);
  void lookup(Candidate* cand, unsigned n) const;
  void host(rte_mbuf* m);
  void host6(rte_mbuf* m, std::uint32_t l3);
  [[nodiscard]] bool ours6(const std::uint8_t* a) const {
    for (unsigned i = 0; i < n_addr6; ++i) {
      if (std::memcmp(a, addresses6[i].s6_addr, 16) == 0) return true;
    }
    return false;
  }
  void queue_host_tx(rte_mbuf* m, Counter kind);
  void queue_exception(rte_mbuf* m);
  void flush_host();
  void poll_tap();
  unsigned drain_commands();
  void apply(const Command& cmd);
  void set_key(std::uint32_t key, std::uint32_t value);
  void end_flow(Flow& f);
  void shutdown();
  void publish() {
    c[kZeroCopyHeld] = zc_held;
    published.store(c);
  }
  void zc_reclaim();
  [[nodiscard]] std::uint64_t now_ns(std::uint64_t tsc) const {
    return base_ns + static_cast<std::uint64_t>(static_cast<double>(tsc - base_tsc) * ns_per_tsc);
  }
  void rebase_clock() {
    base_tsc = rte_rdtsc();
    base_ns = mono_ns();
  }
};

void DpdkSource::Lcore::run() {
  rebase_clock();
  tokens_tsc = base_tsc;
  tokens_per_tsc = rate_limit_pps.load(std::memory_order_relaxed) * ns_per_tsc / 1e9;
  next_publish_tsc = base_tsc + publish_interval_tsc;
  next_tap_tsc = base_tsc;
  // acquire: pairs with stop()'s release; commands posted before it are seen by shutdown().
  while (!stop_requested.load(std::memory_order_acquire)) {
    const unsigned got = poll_once();
    drain_commands();
    if (!end_marks.empty()) end_marks.retry(*rings, index);
    const std::uint64_t now = rte_rdtsc();
    if (now >= next_publish_tsc) {
      publish();
      rebase_clock();
      next_publish_tsc = now + publish_interval_tsc;
      tokens_per_tsc = rate_limit_pps.load(std::memory_order_relaxed) * ns_per_tsc / 1e9;
    }
    if (got != 0) {
      idle_polls = 0;
    } else {
      // An empty poll: PAUSE lets the other hardware thread of this core (on a 2-vCPU machine,
      // the writer) use the execution units the spin would take.
      if (idle_pause) rte_pause();
      if (idle_sleep_us != 0 && ++idle_polls > kIdlePollsBeforeSleep) ::usleep(idle_sleep_us);
    }
  }
  shutdown();
}

unsigned DpdkSource::Lcore::poll_once() {
  std::array<rte_mbuf*, kMaxBurst> pkts;
  unsigned got = 0;
  unsigned budget = burst;
  if (tokens_per_tsc > 0) [[unlikely]] {
    const std::uint64_t now = rte_rdtsc();
    tokens = std::min(tokens + static_cast<double>(now - tokens_tsc) * tokens_per_tsc, 4.0 * burst);
    tokens_tsc = now;
    budget = tokens >= static_cast<double>(burst) ? burst : static_cast<unsigned>(tokens);
  }
  for (const std::uint16_t q : queues) {
    if (budget == 0) break;
    const std::uint64_t t0 = timing ? rte_rdtsc() : 0;
    const std::uint16_t n = rte_eth_rx_burst(port_id, q, pkts.data(), static_cast<std::uint16_t>(budget));
    if (tokens_per_tsc > 0) [[unlikely]] {
      tokens -= n;
      budget -= n;
    }
    if (n == 0) continue;
    if (timing) {
      c[kCyclesRx] += rte_rdtsc() - t0;
      ++c[kBursts];
      c[kTimedPackets] += n;
    }
    process(pkts.data(), n, true);
    got += n;
  }
  for (rte_ring* r : handoff_in) {
    if (r == nullptr) continue;
    const unsigned n = rte_ring_sc_dequeue_burst(r, reinterpret_cast<void**>(pkts.data()), burst, nullptr);
    if (n == 0) continue;
    process(pkts.data(), n, false);
    got += n;
  }
  if (zc_held != 0) zc_reclaim();
  if (tap_port != kNoPort || host_tx_n != 0 || exc_tx_n != 0) {
    flush_host();
    if (tap_port != kNoPort && rte_rdtsc() >= next_tap_tsc) {
      poll_tap();
      next_tap_tsc = rte_rdtsc() + tap_interval_tsc;
    }
  }
  return got;
}

// Flat table vs rte_hash (classify stage, cycles/packet, bench/RESULTS-dpdk.md): 19 vs 40-43 at
// 1,000-18,000 streams; 41 vs 80 at 100,000. Flat costs 256 KiB per address per lcore.
void DpdkSource::Lcore::lookup(Candidate* cand, unsigned n) const {
  if (table_kind == FlowTable::kFlat) {
    for (unsigned i = 0; i < n; ++i) {
      const std::uint32_t s = flat[cand[i].key];
      cand[i].slot = s;
      if (s != 0) rte_prefetch0(&flows[s - 1]);
    }
    return;
  }
  std::array<const void*, kMaxBurst> keys;
  std::array<void*, kMaxBurst> data;
  for (unsigned i = 0; i < n; ++i) keys[i] = &cand[i].key;
  std::uint64_t hits = 0;
  rte_hash_lookup_bulk_data(hash, keys.data(), n, &hits, data.data());
  for (unsigned i = 0; i < n; ++i) {
    const std::uint32_t s = ((hits >> i) & 1U) != 0 ? static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(data[i])) : 0;
    cand[i].slot = s;
    if (s != 0) rte_prefetch0(&flows[s - 1]);
  }
}

// Per-packet path: no allocation, no lock, no log. Cycle figures: bench/RESULTS-dpdk.md.
void DpdkSource::Lcore::process(rte_mbuf** pkts, unsigned n, bool received_here) {
  const std::uint64_t t0 = timing ? rte_rdtsc() : 0;
  std::array<Candidate, kMaxBurst> cand;
  std::array<rte_mbuf*, kMaxBurst> to_free;
  std::array<rte_mbuf*, kMaxBurst> host_pkts;
  unsigned nc = 0;
  unsigned nf = 0;
  unsigned nh = 0;
  std::uint64_t bytes = 0;

  // Pass 1: parse and sort. Host traffic belongs to lcore 0; a candidate to owner_of(port) --
  // except after a hand-off, where it is ours by construction (no ping-pong).
  for (unsigned i = 0; i < n; ++i) {
    if (i + kPrefetchAhead < n) rte_prefetch0(mbuf_data(pkts[i + kPrefetchAhead]));
    rte_mbuf* m = pkts[i];
    bytes += m->pkt_len;
    Candidate& cd = cand[nc];
    const Kind k = classify(mbuf_data(m), m->data_len, addresses, n_addr, cd);
    switch (k) {
      case Kind::kCandidate: {
        const unsigned owner = received_here ? owner_of(static_cast<std::uint16_t>(cd.key), n_lcores) : index;
        if (owner == index) {
          cd.m = m;
          ++nc;
        } else {
          fwd[owner][fwd_n[owner]++] = m;
        }
        break;
      }
      case Kind::kHost:
        if (index == 0) {
          host_pkts[nh++] = m;
        } else {
          fwd[0][fwd_n[0]++] = m;
        }
        break;
      case Kind::kNotOurs:
        ++c[kNotOurs];
        ++c[kDropped];
        to_free[nf++] = m;
        break;
      case Kind::kDrop:
        ++c[kDropped];
        to_free[nf++] = m;
        break;
      case Kind::kNotRtp:
        ++c[kNotRtp];
        to_free[nf++] = m;
        break;
    }
  }
  if (received_here) {
    c[kRxPackets] += n;
    c[kRxBytes] += bytes;
  }
  lookup(cand.data(), nc);
  const std::uint64_t t1 = timing ? rte_rdtsc() : 0;

  // Pass 2: source check, RTP check, copy into the writer's ring.
  const std::uint64_t now = now_ns(rte_rdtsc());
  std::uint64_t delivered = 0;
  for (unsigned i = 0; i < nc; ++i) {
    const Candidate& cd = cand[i];
    if (cd.slot == 0) [[unlikely]] {
      if (tap_port != kNoPort) {  // a UDP port nobody records: the kernel may want it (SIP ...)
        if (index == 0) {
          host_pkts[nh++] = cd.m;
        } else {
          fwd[0][fwd_n[0]++] = cd.m;
        }
        continue;
      }
      ++c[kUnknownFlow];
      to_free[nf++] = cd.m;
      continue;
    }
    Flow& f = flows[cd.slot - 1];
    if (!f.accepts(cd.src_ip, cd.src_port)) [[unlikely]] {
      ++c[kWrongSource];
      Flow::bump(f.wrong_source);
      to_free[nf++] = cd.m;
      continue;
    }
    const std::span<const std::byte> payload(reinterpret_cast<const std::byte*>(cd.payload), cd.len);
    if (!fileio::parse_rtp(payload)) [[unlikely]] {
      ++c[kNotRtp];
      to_free[nf++] = cd.m;
      continue;
    }
    if (!policer_admit(f.policer_tat, policer, now)) [[unlikely]] {
      ++c[kPoliced];  // over the flow's rate: it cannot take the writer from the other flows
      Flow::bump(f.policed);
      to_free[nf++] = cd.m;
      continue;
    }
    if (f.latch && !f.latched) [[unlikely]] {  // first RTP packet from an acceptable source
      f.latched = true;
      f.latched_ip = cd.src_ip;
      f.latched_port = cd.src_port;
    }
    Flow::bump(f.packets);
    fileio::PacketRing& ring = rings->ring(index, f.writer);
    bool pushed = false;
    if (!zc.empty() && zc_held < zc_credit) {
      // Zero-copy: the writer reads the payload in the mbuf; we free it once released.
      pushed = ring.push_ref(f.stream, now, payload.data(), cd.len);
      if (pushed) [[likely]] {
        ZcFifo& q = zc[f.writer];
        q.e[q.head++ & zc_mask] = {ring.position_after(), cd.m};
        ++zc_held;
        ++c[kZeroCopy];
      } else {
        to_free[nf++] = cd.m;
      }
    } else {
      pushed = ring.push(f.stream, fileio::RecordKind::kPacket, now, payload);
      if (!zc.empty() && pushed) ++c[kZeroCopyFallback];
      to_free[nf++] = cd.m;
    }
    if (pushed) [[likely]] {
      ++delivered;
      if (dirty[f.writer] == 0) {
        dirty[f.writer] = 1;
        dirty_list.push_back(f.writer);  // capacity reserved: no allocation
      }
    } else {
      ++c[kRingFull];
    }
  }
  c[kDelivered] += delivered;
  for (const std::uint16_t w : dirty_list) {  // one release store per touched ring per burst
    rings->ring(index, w).publish();
    dirty[w] = 0;
  }
  dirty_list.clear();
  const std::uint64_t t2 = timing ? rte_rdtsc() : 0;

  // Hand-offs to the owners, host traffic, then one bulk free.
  for (unsigned o = 0; o < n_lcores; ++o) {
    const unsigned k = fwd_n[o];
    if (k == 0) continue;
    fwd_n[o] = 0;
    rte_mbuf** list = fwd[o].data();
    const unsigned sent = rte_ring_sp_enqueue_burst(handoff_out[o], reinterpret_cast<void* const*>(list), k, nullptr);
    c[kForwarded] += sent;
    if (sent < k) {
      c[kHandoffFull] += k - sent;
      c[kRingFull] += k - sent;
      for (unsigned j = sent; j < k; ++j) to_free[nf++] = list[j];
    }
  }
  for (unsigned i = 0; i < nh; ++i) host(host_pkts[i]);
  if (nf != 0) rte_pktmbuf_free_bulk(to_free.data(), nf);
  if (timing) {
    const std::uint64_t t3 = rte_rdtsc();
    c[kCyclesClassify] += t1 - t0;
    c[kCyclesDeliver] += t2 - t1;
    c[kCyclesFree] += t3 - t2;
  }
}

/// Frees, in bulk and with this lcore's mempool cache, the mbufs whose ring records the writers
/// have released. One acquire load of each non-empty ring's released position.
void DpdkSource::Lcore::zc_reclaim() {
  std::array<rte_mbuf*, kMaxBurst> done;
  unsigned nd = 0;
  for (std::size_t w = 0; w < zc.size(); ++w) {
    ZcFifo& q = zc[w];
    if (q.tail == q.head) continue;
    const std::uint64_t released = rings->ring(index, static_cast<unsigned>(w)).released_position();
    while (q.tail != q.head && q.e[q.tail & zc_mask].pos <= released) {
      done[nd++] = q.e[q.tail++ & zc_mask].m;
      if (nd == kMaxBurst) {
        rte_pktmbuf_free_bulk(done.data(), nd);
        zc_held -= nd;
        nd = 0;
      }
    }
  }
  if (nd != 0) {
    rte_pktmbuf_free_bulk(done.data(), nd);
    zc_held -= nd;
  }
}

// ---- host stack (lcore 0) ----------------------------------------------------------------------

void DpdkSource::Lcore::queue_host_tx(rte_mbuf* m, Counter kind) {
  if (!has_tx) {
    ++c[kDropped];
    ++c[kTxFailed];
    rte_pktmbuf_free(m);
    return;
  }
  if (host_tx_n == host_tx.size()) flush_host();
  host_tx_kind[host_tx_n] = kind;
  host_tx[host_tx_n++] = m;
}

void DpdkSource::Lcore::queue_exception(rte_mbuf* m) {
  if (tap_port == kNoPort) {
    ++c[kDropped];
    rte_pktmbuf_free(m);
    return;
  }
  if (exc_tx_n == exc_tx.size()) flush_host();
  exc_tx[exc_tx_n++] = m;
}

void DpdkSource::Lcore::flush_host() {
  if (host_tx_n != 0) {
    const std::uint16_t sent = rte_eth_tx_burst(port_id, 0, host_tx.data(), static_cast<std::uint16_t>(host_tx_n));
    for (unsigned i = 0; i < sent; ++i) ++c[host_tx_kind[i]];
    for (unsigned i = sent; i < host_tx_n; ++i) {
      ++c[kDropped];
      ++c[kTxFailed];
      rte_pktmbuf_free(host_tx[i]);
    }
    host_tx_n = 0;
  }
  if (exc_tx_n != 0) {
    const std::uint16_t sent = rte_eth_tx_burst(tap_port, 0, exc_tx.data(), static_cast<std::uint16_t>(exc_tx_n));
    c[kExceptionPath] += sent;
    for (unsigned i = sent; i < exc_tx_n; ++i) {
      ++c[kDropped];
      ++c[kTxFailed];
      rte_pktmbuf_free(exc_tx[i]);
    }
    exc_tx_n = 0;
  }
}

void DpdkSource::Lcore::poll_tap() {
  std::array<rte_mbuf*, kMaxBurst> pkts;
  const std::uint16_t n = rte_eth_rx_burst(tap_port, 0, pkts.data(), static_cast<std::uint16_t>(burst));
  if (n == 0) return;
  const std::uint16_t sent = has_tx ? rte_eth_tx_burst(port_id, 0, pkts.data(), n) : 0;
  c[kExceptionRx] += sent;
  if (sent < n) {
    c[kTxFailed] += n - sent;
    rte_pktmbuf_free_bulk(pkts.data() + sent, n - sent);
  }
}

/// ARP requests and ICMP echo requests for our addresses are answered in place (the mbuf
/// becomes the reply), IPv6 is host6()'s; anything else goes to the kernel or is dropped.
void DpdkSource::Lcore::host(rte_mbuf* m) {
  std::uint8_t* d = mbuf_data(m);
  const std::uint32_t len = m->data_len;
  if (len < 14) {
    ++c[kDropped];
    rte_pktmbuf_free(m);
    return;
  }
  std::uint16_t et = rd16(d + 12);
  std::uint32_t l3 = 14;
  while ((et == 0x8100 || et == 0x88A8) && l3 < 22 && len >= l3 + 4) {
    et = rd16(d + l3 + 2);
    l3 += 4;
  }
  auto ours = [this](std::uint32_t ip) {
    for (unsigned a = 0; a < n_addr; ++a) {
      if (addresses[a] == ip) return true;
    }
    return false;
  };
  if (et == 0x0806 && len >= l3 + 28) {
    std::uint8_t* arp = d + l3;
    const bool ethernet_ipv4 = rd16(arp) == 1 && rd16(arp + 2) == 0x0800 && arp[4] == 6 && arp[5] == 4;
    const std::uint32_t tpa = raw32(arp + 24);
    if (ethernet_ipv4 && rd16(arp + 6) == 1 && ours(tpa)) {
      std::memcpy(d, arp + 8, 6);            // eth dst = requester
      std::memcpy(d + 6, mac.data(), 6);     // eth src = us
      wr16(arp + 6, 2);                      // op = reply
      std::memcpy(arp + 18, arp + 8, 10);    // tha, tpa = sha, spa
      std::memcpy(arp + 8, mac.data(), 6);   // sha = us
      std::memcpy(arp + 14, &tpa, 4);        // spa = the address asked for
      queue_host_tx(m, kArpReplies);
      return;
    }
    queue_exception(m);  // replies, gratuitous ARP: the kernel keeps its own neighbour table
    return;
  }
  if (et == 0x0800 && len >= l3 + 20) {
    std::uint8_t* ip = d + l3;
    const std::uint32_t ihl = (ip[0] & 0x0Fu) * 4;
    const std::uint32_t tot = rd16(ip + 2);
    const std::uint32_t dst = raw32(ip + 16);
    if (ip[9] == IPPROTO_ICMP && ihl >= 20 && tot >= ihl + 8 && l3 + tot <= len && ours(dst) &&
        (rd16(ip + 6) & 0x3FFF) == 0 && ip[ihl] == 8 && ip[ihl + 1] == 0) {
      std::uint8_t* icmp = ip + ihl;
      std::memcpy(d, d + 6, 6);
      std::memcpy(d + 6, mac.data(), 6);
      std::memcpy(ip + 16, ip + 12, 4);  // dst = the pinger
      std::memcpy(ip + 12, &dst, 4);     // src = the address pinged
      ip[8] = 64;                        // TTL
      wr16(ip + 10, 0);
      wr16(ip + 10, inet_checksum(ip, ihl));
      icmp[0] = 0;  // echo reply
      wr16(icmp + 2, 0);
      wr16(icmp + 2, inet_checksum(icmp, tot - ihl));
      queue_host_tx(m, kIcmpReplies);
      return;
    }
  }
  if (et == 0x86DD) {
    host6(m, l3);
    return;
  }
  queue_exception(m);
}

/// IPv6 (RFC 4861, RFC 4443): a neighbour solicitation for one of our addresses becomes the
/// advertisement, an echo request to one of them the reply, in place. What fails validation is
/// dropped (icmp6_invalid). The rest goes to the kernel; without an exception path it is dropped,
/// and unicast to another address (or a solicitation for another target) is also not_ours.
/// No extension headers: ND and echo come without them (what has them goes to the kernel).
void DpdkSource::Lcore::host6(rte_mbuf* m, std::uint32_t l3) {
  std::uint8_t* d = mbuf_data(m);
  const std::uint32_t len = m->data_len;
  if (len < l3 + 40 || (d[l3] >> 4) != 6) {
    ++c[kDropped];
    rte_pktmbuf_free(m);
    return;
  }
  std::uint8_t* ip = d + l3;
  const std::uint32_t plen = rd16(ip + 4);
  const std::uint8_t* src = ip + 8;
  const std::uint8_t* dst = ip + 24;
  const bool to_us = ours6(dst);
  const bool multicast = dst[0] == 0xFF;
  bool not_ours = !to_us && !multicast;
  // One segment holding the whole payload: replies are written in place (Ethernet padding after
  // the payload is allowed and trimmed).
  if (n_addr6 != 0 && ip[6] == IPPROTO_ICMPV6 && (to_us || multicast) && m->nb_segs == 1 && l3 + 40 + plen <= len) {
    std::uint8_t* icmp = ip + 40;
    if (plen >= 1 && icmp[0] == 135) {  // neighbour solicitation; RFC 4861 7.1.1 validity
      const bool dad = std::all_of(src, src + 16, [](std::uint8_t b) { return b == 0; });
      bool valid = ip[7] == 255 && plen >= 24 && icmp[1] == 0 && icmp6_checksum(src, dst, icmp, plen) == 0 &&
                   icmp[8] != 0xFF;  // target not multicast
      const std::uint8_t* slla = nullptr;
      for (std::uint32_t off = 24; valid && off < plen;) {
        const std::uint32_t olen = plen - off >= 2 ? icmp[off + 1] * 8U : 0;
        if (olen == 0 || olen > plen - off) {
          valid = false;  // every option has a length, and fits
        } else if (icmp[off] == 1) {
          if (olen != 8) valid = false;  // source link-layer address: 6 bytes on Ethernet
          slla = icmp + off + 2;
        }
        off += olen;
      }
      // DAD probe: to the solicited-node group, without a source link-layer address.
      if (dad && (!solicited_node(dst) || slla != nullptr)) valid = false;
      if (!valid) {
        ++c[kIcmp6Invalid];
        ++c[kDropped];
        rte_pktmbuf_free(m);
        return;
      }
      std::array<std::uint8_t, 16> target;
      std::memcpy(target.data(), icmp + 8, 16);
      if (ours6(target.data())) {
        // Solicited + Override to the soliciter (its link-layer address option, else the frame's
        // source); a DAD probe gets Override only, to all-nodes (RFC 4861 7.2.4).
        static constexpr std::uint8_t kAllNodes[16] = {0xFF, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01};
        static constexpr std::uint8_t kAllNodesMac[6] = {0x33, 0x33, 0, 0, 0, 0x01};
        std::array<std::uint8_t, 6> to_mac;
        std::memcpy(to_mac.data(), dad ? kAllNodesMac : (slla != nullptr ? slla : d + 6), 6);
        std::array<std::uint8_t, 16> to_ip;
        std::memcpy(to_ip.data(), dad ? kAllNodes : src, 16);
        const std::uint32_t want = l3 + 40 + 32;  // NA: 24 bytes + target link-layer address option
        if (want > len && rte_pktmbuf_append(m, static_cast<std::uint16_t>(want - len)) == nullptr) {
          ++c[kDropped];
          ++c[kTxFailed];
          rte_pktmbuf_free(m);
          return;
        }
        if (want < len) rte_pktmbuf_trim(m, static_cast<std::uint16_t>(len - want));
        std::memcpy(d, to_mac.data(), 6);
        std::memcpy(d + 6, mac.data(), 6);
        ip[0] = 0x60;  // version 6, traffic class 0, flow label 0
        ip[1] = ip[2] = ip[3] = 0;
        wr16(ip + 4, 32);
        ip[6] = IPPROTO_ICMPV6;
        ip[7] = 255;  // hop limit: ND must come from the link
        std::memcpy(ip + 8, target.data(), 16);
        std::memcpy(ip + 24, to_ip.data(), 16);
        icmp[0] = 136;
        icmp[1] = 0;
        wr16(icmp + 2, 0);
        icmp[4] = dad ? 0x20 : 0x60;  // R=0, S, O=1
        icmp[5] = icmp[6] = icmp[7] = 0;
        std::memcpy(icmp + 8, target.data(), 16);
        icmp[24] = 2;  // target link-layer address option, 8 bytes
        icmp[25] = 1;
        std::memcpy(icmp + 26, mac.data(), 6);
        wr16(icmp + 2, icmp6_checksum(ip + 8, ip + 24, icmp, 32));
        queue_host_tx(m, kNdReplies);
        return;
      }
      not_ours = true;  // a valid solicitation for someone else's address
    } else if (to_us && plen >= 1 && icmp[0] == 128) {  // echo request
      if (plen < 8 || icmp[1] != 0 || icmp6_checksum(src, dst, icmp, plen) != 0) {
        ++c[kIcmp6Invalid];
        ++c[kDropped];
        rte_pktmbuf_free(m);
        return;
      }
      if (l3 + 40 + plen < len) rte_pktmbuf_trim(m, static_cast<std::uint16_t>(len - (l3 + 40 + plen)));
      std::array<std::uint8_t, 16> pinged;
      std::memcpy(pinged.data(), dst, 16);
      std::memcpy(d, d + 6, 6);
      std::memcpy(d + 6, mac.data(), 6);
      std::memcpy(ip + 24, ip + 8, 16);         // dst = the pinger
      std::memcpy(ip + 8, pinged.data(), 16);   // src = the address pinged
      ip[7] = 64;
      icmp[0] = 129;  // echo reply: identifier, sequence number and data stay
      wr16(icmp + 2, 0);
      wr16(icmp + 2, icmp6_checksum(ip + 8, ip + 24, icmp, plen));
      queue_host_tx(m, kIcmp6Replies);
      return;
    }
  }
  if (tap_port == kNoPort && not_ours) ++c[kNotOurs];
  queue_exception(m);
}

// ---- commands ------------------------------------------------------------------------------------

void DpdkSource::Lcore::set_key(std::uint32_t key, std::uint32_t value) {
  if (table_kind == FlowTable::kFlat) {
    flat[key] = value;
    return;
  }
  if (value == 0) {
    rte_hash_del_key(hash, &key);
  } else if (rte_hash_add_key_data(hash, &key, reinterpret_cast<void*>(static_cast<std::uintptr_t>(value))) != 0) {
    ++c[kRxErrors];  // table full: the flow is not reachable on this key (counted)
  }
}

unsigned DpdkSource::Lcore::drain_commands() {
  static_assert(sizeof(Command) % 4 == 0, "rte_ring element size must be a multiple of 4");
  std::array<Command, kCommandBatch> batch;
  const unsigned n = rte_ring_sc_dequeue_burst_elem(commands, batch.data(), sizeof(Command), kCommandBatch, nullptr);
  if (n == 0) return 0;
  for (unsigned i = 0; i < n; ++i) apply(batch[i]);
  // release: pairs with reclaim_locked()'s acquire; removed slots' final counters are written.
  commands_done.fetch_add(n, std::memory_order_release);
  return n;
}

void DpdkSource::Lcore::apply(const Command& cmd) {
  Flow& f = flows[cmd.slot];
  const auto for_keys = [&](std::uint8_t address, std::uint16_t port, std::uint32_t value) {
    if (address == kAllAddresses) {
      for (unsigned a = 0; a < n_addr; ++a) set_key((a << 16) | port, value);
    } else {
      set_key((static_cast<std::uint32_t>(address) << 16) | port, value);
    }
  };
  if (cmd.kind == Command::kAdd) {
    f.packets.store(0, std::memory_order_relaxed);
    f.wrong_source.store(0, std::memory_order_relaxed);
    f.policed.store(0, std::memory_order_relaxed);
    f.policer_tat = 0;
    f.stream = cmd.stream;
    f.expect_ip = cmd.expect_ip;
    f.expect_port = cmd.expect_port;
    f.match = cmd.match;
    f.latch = cmd.latch != 0;
    f.latched = false;
    f.latched_ip = 0;
    f.latched_port = 0;
    f.port = cmd.port;
    f.address = cmd.address;
    f.writer = rings != nullptr ? static_cast<std::uint16_t>(rings->writer_for(cmd.stream)) : 0;
    f.active = true;
    for_keys(cmd.address, cmd.port, cmd.slot + 1);
    return;
  }
  if (f.active) end_flow(f);
}

void DpdkSource::Lcore::end_flow(Flow& f) {
  const auto port = f.port;
  if (f.address == kAllAddresses) {
    for (unsigned a = 0; a < n_addr; ++a) set_key((a << 16) | port, 0);
  } else {
    set_key((static_cast<std::uint32_t>(f.address) << 16) | port, 0);
  }
  f.active = false;
  if (rings != nullptr) end_marks.push(*rings, index, f.stream, f.writer);
}

void DpdkSource::Lcore::shutdown() {
  while (drain_commands() != 0) {
  }
  // Packets other lcores handed over before they stopped (they may still be stopping: what
  // arrives later is freed by stop() and counted there).
  std::array<rte_mbuf*, kMaxBurst> pkts;
  for (rte_ring* r : handoff_in) {
    if (r == nullptr) continue;
    unsigned n = 0;
    while ((n = rte_ring_sc_dequeue_burst(r, reinterpret_cast<void**>(pkts.data()), burst, nullptr)) != 0) {
      process(pkts.data(), n, false);
    }
  }
  flush_host();
  for (std::uint32_t s = 0; s < max_flows; ++s) {
    if (flows[s].active) end_flow(flows[s]);
  }
  if (const std::size_t lost = end_marks.drain(*rings, index, stop_drain_timeout); lost != 0)
    end_marks_lost->fetch_add(lost, std::memory_order_relaxed);
  // Zero-copy: the writers still read the mbufs they were handed; wait for them (bounded).
  // What they never release stays allocated (counted): reading freed mbufs would corrupt files.
  const auto deadline = std::chrono::steady_clock::now() + stop_drain_timeout;
  while (zc_held != 0) {
    zc_reclaim();
    if (zc_held == 0 || std::chrono::steady_clock::now() >= deadline) break;
    ::usleep(100);
  }
  if (zc_held != 0) zero_copy_leaked->fetch_add(zc_held, std::memory_order_relaxed);
  publish();
}

// ---- telemetry ---------------------------------------------------------------------------------

namespace dpdk_detail {

/// The live sources "/callrec/stats" reads (the command is registered once per process). The
/// callback runs on EAL's telemetry thread and reads only what any thread may: the counters the
/// lcores publish and the NIC's (dpdk_stats()). A source leaves the list, under the mutex,
/// before any of it is torn down; a failed construction never joins it.
struct Telemetry {
  std::mutex mu;
  std::vector<const DpdkSource*> live;
  bool registered = false;
};

Telemetry& telemetry() {
  static Telemetry t;
  return t;
}

/// {"sources": N, "rx_packets": ..., "<counter>": ...}: SourceStats and counters() (without the
/// "dpdk_" prefix), summed over the live sources. No source: an error (the client reads null).
int telemetry_stats(const char* /*cmd*/, const char* /*params*/, rte_tel_data* d) {
  Telemetry& t = telemetry();
  std::lock_guard lock(t.mu);
  if (t.live.empty()) return -ENODEV;
  std::vector<std::pair<std::string, std::uint64_t>> sum;
  for (const DpdkSource* src : t.live) {
    const SourceStats s = src->stats();
    std::vector<std::pair<std::string, std::uint64_t>> v = {
        {"rx_packets", s.rx_packets}, {"rx_bytes", s.rx_bytes},   {"delivered", s.delivered},
        {"not_rtp", s.not_rtp},       {"rx_errors", s.rx_errors},
    };
    for (const SourceCounter& c : src->counters()) {
      v.emplace_back(c.name.rfind("dpdk_", 0) == 0 ? c.name.substr(5) : c.name, c.value);
    }
    if (sum.empty()) {
      sum = std::move(v);
    } else {
      for (std::size_t i = 0; i < sum.size() && i < v.size(); ++i) sum[i].second += v[i].second;  // same names
    }
  }
  rte_tel_data_start_dict(d);
  rte_tel_data_add_dict_u64(d, "sources", t.live.size());
  for (const auto& [name, value] : sum) rte_tel_data_add_dict_u64(d, name.c_str(), value);
  return 0;
}

void telemetry_attach(const DpdkSource* s) {
  Telemetry& t = telemetry();
  std::lock_guard lock(t.mu);
  if (!t.registered) {
    t.registered = rte_telemetry_register_cmd("/callrec/stats", telemetry_stats,
                                              "callrec dataplane counters, summed over its DPDK sources. "
                                              "No parameters.") == 0;
  }
  t.live.push_back(s);
}

void telemetry_detach(const DpdkSource* s) {
  Telemetry& t = telemetry();
  std::lock_guard lock(t.mu);
  t.live.erase(std::remove(t.live.begin(), t.live.end(), s), t.live.end());
}

}  // namespace dpdk_detail

std::string dpdk_telemetry_socket() {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  if (!r.attempted || !r.result) return {};
  const std::string path = std::string(rte_eal_get_runtime_dir()) + "/dpdk_telemetry.v2";
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return {};
  return path;
}

Status dpdk_claim_port(const std::vector<std::string>& eal_args, const std::string& name, std::uint16_t& port_id) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  std::vector<std::string> hotplugged;
  if (Status st = ensure_eal_locked(eal_args, hotplugged); !st) return st;
  std::uint16_t pid = 0;
  if (rte_eth_dev_get_port_by_name(name.c_str(), &pid) != 0)
    return Status(ENODEV, "dpdk: no such port '" + name + "' (a PCI address, or a --vdev device name)");
  if (r.port_claimed[pid]) return Status(EBUSY, "dpdk: port '" + name + "' is already in use in this process");
  r.port_claimed[pid] = true;
  port_id = pid;
  return Status::ok();
}

void dpdk_release_port(std::uint16_t port_id) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  if (port_id < RTE_MAX_ETHPORTS) r.port_claimed[port_id] = false;
}

// ---- control side ----------------------------------------------------------------------------------

DpdkSource::DpdkSource(Options options) : options_(std::move(options)), port_(std::make_unique<Port>()) {
  init_status_ = init();
  if (init_status_) telemetry_attach(this);
}

DpdkSource::~DpdkSource() {
  telemetry_detach(this);  // first: the telemetry thread may be reading our counters
  stop();
  if (zero_copy_leaked_.load(std::memory_order_relaxed) != 0) port_->keep_pool = true;
  lcores_.clear();
  port_.reset();
}

Status DpdkSource::init() {
  Options& o = options_;
  if (o.burst < 1 || o.burst > kMaxBurst) return Status(EINVAL, "dpdk: burst must be 1.." + std::to_string(kMaxBurst));
  if (!std::has_single_bit(o.handoff_ring_size) || !std::has_single_bit(o.command_ring_size)) {
    return Status(EINVAL, "dpdk: handoff_ring_size and command_ring_size must be powers of two");
  }
  if (o.handoff == Handoff::kZeroCopy &&
      o.zero_copy_credit != 0 &&
      (!std::has_single_bit(o.zero_copy_credit) || o.zero_copy_credit < 64 || o.zero_copy_credit > (1U << 20))) {
    return Status(EINVAL, "dpdk: zero_copy_credit must be 0 (auto) or a power of two in 64..1048576");
  }
  if (o.addresses.empty()) return Status(EINVAL, "dpdk: at least one dataplane IPv4 address is required");
  if (o.addresses.size() > kMaxAddresses) {
    return Status(EINVAL, "dpdk: at most " + std::to_string(kMaxAddresses) + " addresses");
  }
  for (const std::string& a : o.addresses) {
    in_addr ia{};
    if (inet_pton(AF_INET, a.c_str(), &ia) != 1) return Status(EINVAL, "dpdk: '" + a + "' is not an IPv4 address");
    if (std::find(addresses_.begin(), addresses_.end(), ia.s_addr) != addresses_.end()) {
      return Status(EINVAL, "dpdk: address " + a + " given twice");
    }
    addresses_.push_back(ia.s_addr);
  }
  if (o.addresses6.size() > kMaxAddresses6) {
    return Status(EINVAL, "dpdk: at most " + std::to_string(kMaxAddresses6) + " IPv6 addresses");
  }
  for (const std::string& a : o.addresses6) {
    in6_addr a6{};
    if (inet_pton(AF_INET6, a.c_str(), &a6) != 1) return Status(EINVAL, "dpdk: '" + a + "' is not an IPv6 address");
    const std::uint8_t* b = a6.s6_addr;
    static constexpr std::uint8_t kV4Mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    const bool zero_prefix = std::all_of(b, b + 15, [](std::uint8_t x) { return x == 0; });
    if (b[0] == 0xFF) return Status(EINVAL, "dpdk: IPv6 address " + a + " is a multicast address");
    if (zero_prefix && (b[15] == 0 || b[15] == 1)) {
      return Status(EINVAL, "dpdk: IPv6 address " + a + " cannot be the dataplane's (unspecified or loopback)");
    }
    if (std::memcmp(b, kV4Mapped, sizeof kV4Mapped) == 0) {
      return Status(EINVAL, "dpdk: IPv6 address " + a + " is IPv4-mapped (give the IPv4 address in addresses)");
    }
    const auto same = [&a6](const in6_addr& x) { return std::memcmp(&x, &a6, sizeof a6) == 0; };
    if (std::any_of(addresses6_.begin(), addresses6_.end(), same)) {
      return Status(EINVAL, "dpdk: IPv6 address " + a + " given twice");
    }
    addresses6_.push_back(a6);
  }
  if (o.max_flows_per_lcore == 0 || o.max_flows_per_lcore > (1U << 24)) {
    return Status(EINVAL, "dpdk: max_flows_per_lcore must be 1..16777216");
  }
  if (!o.lcores.empty()) o.rx_threads = static_cast<unsigned>(o.lcores.size());
  if (o.rx_threads == 0 || o.rx_threads > kMaxLcores) {
    return Status(EINVAL, "dpdk: rx_threads must be 1.." + std::to_string(kMaxLcores));
  }

  Registry& reg = registry();
  std::lock_guard lock(reg.mu);
  if (Status s = ensure_eal_locked(o.eal_args, port_->hotplugged); !s) return s;
  const unsigned instance = reg.next_instance++;

  // RX lcores: EAL worker lcores, not claimed by another live source.
  std::string workers;
  unsigned lc = 0;
  RTE_LCORE_FOREACH_WORKER(lc) { workers += (workers.empty() ? "" : ",") + std::to_string(lc); }
  if (workers.empty()) workers = "none";
  std::vector<unsigned> chosen;
  if (o.lcores.empty()) {
    RTE_LCORE_FOREACH_WORKER(lc) {
      if (chosen.size() < o.rx_threads && !reg.lcore_claimed[lc]) chosen.push_back(lc);
    }
    if (chosen.size() < o.rx_threads) {
      return Status(EINVAL, "dpdk: " + std::to_string(o.rx_threads) + " RX lcores requested but only " +
                                std::to_string(chosen.size()) + " free EAL worker lcores (workers: " + workers +
                                "; the main lcore " + std::to_string(rte_get_main_lcore()) +
                                " is the control thread; give more with -l/--lcores)");
    }
  } else {
    for (const unsigned l : o.lcores) {
      if (l >= RTE_MAX_LCORE || !rte_lcore_is_enabled(l)) {
        return Status(EINVAL, "dpdk: lcore " + std::to_string(l) + " is not an EAL lcore (workers: " + workers + ")");
      }
      if (l == rte_get_main_lcore()) {
        return Status(EINVAL, "dpdk: lcore " + std::to_string(l) + " is the main lcore (the control thread), not an RX lcore");
      }
      if (std::find(chosen.begin(), chosen.end(), l) != chosen.end()) {
        return Status(EINVAL, "dpdk: lcore " + std::to_string(l) + " listed twice");
      }
      if (reg.lcore_claimed[l]) return Status(EBUSY, "dpdk: lcore " + std::to_string(l) + " is used by another DpdkSource");
      chosen.push_back(l);
    }
  }

  // Port: by id or by name.
  std::uint16_t pid = kNoPort;
  const bool numeric = !o.port.empty() && o.port.size() <= 5 && std::all_of(o.port.begin(), o.port.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
  if (numeric) {
    const unsigned long v = std::stoul(o.port);
    if (v < RTE_MAX_ETHPORTS) pid = static_cast<std::uint16_t>(v);
  } else if (rte_eth_dev_get_port_by_name(o.port.c_str(), &pid) != 0) {
    pid = kNoPort;
  }
  if (pid == kNoPort || !rte_eth_dev_is_valid_port(pid)) {
    std::string ports;
    for (std::uint16_t p = 0; p < RTE_MAX_ETHPORTS; ++p) {
      if (!rte_eth_dev_is_valid_port(p)) continue;
      char name[RTE_ETH_NAME_MAX_LEN] = {};
      rte_eth_dev_get_name_by_port(p, name);
      ports += (ports.empty() ? "" : ", ") + std::to_string(p) + "=" + name;
    }
    return Status(ENODEV, "dpdk: no such port '" + o.port + "' (ports: " + (ports.empty() ? "none" : ports) +
                              "; a vdev needs --vdev=... in eal_args)");
  }
  if (reg.port_claimed[pid]) return Status(EBUSY, "dpdk: port " + o.port + " is used by another DpdkSource");
  reg.port_claimed[pid] = true;
  port_->port_claimed = true;
  {
    char pname[RTE_ETH_NAME_MAX_LEN] = {};
    rte_eth_dev_get_name_by_port(pid, pname);
    port_->port_hotplugged = std::find(port_->hotplugged.begin(), port_->hotplugged.end(), std::string(pname)) !=
                             port_->hotplugged.end();
  }
  port_->port_id = pid;
  port_id_ = pid;
  for (const unsigned l : chosen) {
    reg.lcore_claimed[l] = true;
    port_->claimed_lcores.push_back(l);
  }

  rte_eth_dev_info info{};
  if (const int rc = rte_eth_dev_info_get(pid, &info); rc != 0) {
    return Status(-rc, "dpdk: port " + o.port + ": rte_eth_dev_info_get: " + rte_error(rc));
  }
  const unsigned n = o.rx_threads;
  unsigned nq = o.rx_queues;
  if (nq == 0) nq = info.max_rx_queues >= n ? n : 1;
  if (nq > info.max_rx_queues) {
    return Status(EINVAL, "dpdk: port " + o.port + " has at most " + std::to_string(info.max_rx_queues) + " RX queues (" +
                              std::to_string(nq) + " requested)");
  }
  const std::uint16_t ntx = info.max_tx_queues >= 1 ? 1 : 0;
  rte_eth_conf conf{};
  const std::uint64_t rss_hf = info.flow_type_rss_offloads & (RTE_ETH_RSS_IP | RTE_ETH_RSS_UDP);
  if (nq > 1 && rss_hf != 0) {
    conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
    conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
    rss_ = true;
  }
  rx_queues_ = nq;

  if (o.handoff == Handoff::kZeroCopy) {
    // Held by writers (credit per lcore) + filled RX rings + per-lcore caches + TX + TAP.
    const std::uint64_t fixed = std::uint64_t{o.rx_descriptors} * nq +
                                std::uint64_t{std::min(o.mempool_cache, 512U)} * (n + 1) + o.tx_descriptors +
                                (o.exception_tap.empty() ? 0 : 512);
    if (o.zero_copy_credit == 0) {
      // Auto: at most kAutoZeroCopyCredit, and no more than half of what the pool has left per
      // lcore, so RX keeps a margin even when every writer lags.
      const std::uint64_t spare = o.mempool_mbufs > fixed ? (o.mempool_mbufs - fixed) / (2 * std::uint64_t{n}) : 0;
      o.zero_copy_credit = static_cast<unsigned>(std::bit_floor(std::min<std::uint64_t>(spare, kAutoZeroCopyCredit)));
      if (o.zero_copy_credit < 64) {
        return Status(EINVAL, "dpdk: mempool of " + std::to_string(o.mempool_mbufs) +
                                  " mbufs leaves no room for a zero-copy credit of 64 per RX lcore (callrecd: raise "
                                  "--dpdk-mempool, or --dpdk-handoff copy)");
      }
    }
    const std::uint64_t need = std::uint64_t{o.zero_copy_credit} * n + fixed;
    if (o.mempool_mbufs < need) {
      return Status(EINVAL, "dpdk: zero-copy hand-off needs a mempool of at least " + std::to_string(need) +
                                " mbufs (credit " + std::to_string(o.zero_copy_credit) + " x " + std::to_string(n) +
                                " lcores + RX descriptors + caches); " + std::to_string(o.mempool_mbufs) +
                                " configured (callrecd: raise --dpdk-mempool or lower --dpdk-zero-copy-credit)");
    }
  }
  const int socket = rte_eth_dev_socket_id(pid) < 0 ? static_cast<int>(rte_socket_id()) : rte_eth_dev_socket_id(pid);
  const std::string pool_name = "crmp" + std::to_string(instance);
  port_->pool = rte_pktmbuf_pool_create(pool_name.c_str(), o.mempool_mbufs, std::min(o.mempool_cache, 512U), 0,
                                        static_cast<std::uint16_t>(std::min(o.mbuf_data_room, 65535U)), socket);
  if (port_->pool == nullptr) {
    return Status(ENOMEM, "dpdk: mempool of " + std::to_string(o.mempool_mbufs) + " mbufs (" +
                              std::to_string(o.mbuf_data_room) + " B data room): " + rte_error(rte_errno) +
                              " (raise -m, or use hugepages)");
  }
  if (const int rc = rte_eth_dev_configure(pid, static_cast<std::uint16_t>(nq), ntx, &conf); rc != 0) {
    return Status(-rc, "dpdk: port " + o.port + ": rte_eth_dev_configure(" + std::to_string(nq) + " rx, " +
                           std::to_string(ntx) + " tx): " + rte_error(rc));
  }
  std::uint16_t nrxd = static_cast<std::uint16_t>(std::min(o.rx_descriptors, 65535U));
  std::uint16_t ntxd = static_cast<std::uint16_t>(std::min(o.tx_descriptors, 65535U));
  rte_eth_dev_adjust_nb_rx_tx_desc(pid, &nrxd, &ntxd);
  for (unsigned q = 0; q < nq; ++q) {
    if (const int rc = rte_eth_rx_queue_setup(pid, static_cast<std::uint16_t>(q), nrxd, static_cast<unsigned>(socket), nullptr,
                                              port_->pool);
        rc != 0) {
      return Status(-rc, "dpdk: port " + o.port + ": rx queue " + std::to_string(q) + " setup: " + rte_error(rc) +
                             " (net_pcap with infinite_rx=1 keeps the whole file in the mempool: mempool_mbufs must "
                             "exceed its packet count)");
    }
  }
  if (ntx == 1) {
    if (const int rc = rte_eth_tx_queue_setup(pid, 0, ntxd, static_cast<unsigned>(socket), nullptr); rc != 0) {
      return Status(-rc, "dpdk: port " + o.port + ": tx queue setup: " + rte_error(rc));
    }
  }
  rte_ether_addr mac{};
  rte_eth_macaddr_get(pid, &mac);
  mac_ = format_mac(mac);
  if (o.promiscuous) rte_eth_promiscuous_enable(pid);
  // Neighbour solicitations go to the solicited-node group (33:33:ff:xx:xx:xx), which a NIC's
  // filter drops unless told. All-multicast is the portable switch (a multicast address list
  // would be narrower, but fewer PMDs have one); PMDs without the switch (net_ring, ...) deliver
  // everything anyway. The other multicast it lets in goes to the exception path or is dropped.
  if (!addresses6_.empty() && !o.promiscuous) {
    const int rc = rte_eth_allmulticast_enable(pid);
    if (rc == 0) {
      allmulticast_ = true;
    } else if (rc != -ENOTSUP) {
      return Status(-rc, "dpdk: port " + o.port + ": rte_eth_allmulticast_enable (for IPv6 neighbour solicitations): " +
                             rte_error(rc));
    }
  }

  // Exception path: a TAP with the port's MAC, one queue pair owned by lcore 0.
  if (!o.exception_tap.empty()) {
    const std::string vname = "net_tap_cr" + std::to_string(instance);
    const std::string devargs = vname + ",iface=" + o.exception_tap + ",mac=" + mac_;
    if (const int rc = rte_dev_probe(devargs.c_str()); rc < 0) {
      return Status(-rc, "dpdk: exception TAP '" + devargs + "': " + rte_error(rc));
    }
    port_->hotplugged.push_back(vname);
    std::uint16_t tp = 0;
    if (rte_eth_dev_get_port_by_name(vname.c_str(), &tp) != 0) return Status(ENODEV, "dpdk: TAP " + vname + " has no port");
    port_->tap_port = tp;
    rte_eth_conf tconf{};
    if (const int rc = rte_eth_dev_configure(tp, 1, 1, &tconf); rc != 0) {
      return Status(-rc, "dpdk: TAP configure: " + rte_error(rc));
    }
    if (const int rc = rte_eth_rx_queue_setup(tp, 0, 512, static_cast<unsigned>(socket), nullptr, port_->pool); rc != 0) {
      return Status(-rc, "dpdk: TAP rx queue: " + rte_error(rc));
    }
    if (const int rc = rte_eth_tx_queue_setup(tp, 0, 512, static_cast<unsigned>(socket), nullptr); rc != 0) {
      return Status(-rc, "dpdk: TAP tx queue: " + rte_error(rc));
    }
  }

  // Per-lcore state: tables, flows, command ring, hand-off rings.
  port_->n_lcores = n;
  port_->handoff.assign(std::size_t{n} * n, nullptr);
  if (n > 1) {
    for (unsigned from = 0; from < n; ++from) {
      for (unsigned to = 0; to < n; ++to) {
        if (from == to) continue;
        const std::string rn = "crh" + std::to_string(instance) + "_" + std::to_string(from) + "_" + std::to_string(to);
        rte_ring* r = rte_ring_create(rn.c_str(), o.handoff_ring_size, socket, RING_F_SP_ENQ | RING_F_SC_DEQ);
        if (r == nullptr) return Status(ENOMEM, "dpdk: hand-off ring " + rn + ": " + rte_error(rte_errno));
        port_->handoff[from * n + to] = r;
      }
    }
  }
  const double ns_per_tsc = 1e9 / static_cast<double>(rte_get_tsc_hz());
  for (unsigned i = 0; i < n; ++i) {
    auto lp = std::make_unique<Lcore>();
    Lcore& l = *lp;
    l.index = i;
    l.lcore_id = chosen[i];
    l.n_lcores = n;
    l.port_id = pid;
    l.has_tx = i == 0 && ntx == 1;
    l.tap_port = i == 0 ? port_->tap_port : kNoPort;
    l.timing = o.stage_timing;
    l.burst = o.burst;
    l.policer = PolicerConfig::make(o.max_stream_pps, o.stream_burst);
    l.table_kind = o.flow_table;
    for (unsigned q = i; q < nq; q += n) l.queues.push_back(static_cast<std::uint16_t>(q));
    l.addresses = addresses_.data();
    l.n_addr = static_cast<unsigned>(addresses_.size());
    l.addresses6 = addresses6_.data();
    l.n_addr6 = static_cast<unsigned>(addresses6_.size());
    std::memcpy(l.mac.data(), mac.addr_bytes, 6);
    l.max_flows = o.max_flows_per_lcore;
    l.flows = std::make_unique<Flow[]>(l.max_flows);
    if (o.flow_table == FlowTable::kFlat) {
      l.flat = std::make_unique<std::uint32_t[]>(std::size_t{l.n_addr} << 16);  // zeroed
    } else {
      const std::string hn = "crft" + std::to_string(instance) + "_" + std::to_string(i);
      rte_hash_parameters hp{};
      hp.name = hn.c_str();
      hp.entries = std::max(1024U, std::min(o.max_flows_per_lcore * l.n_addr, l.n_addr << 16));
      hp.key_len = sizeof(std::uint32_t);
      hp.hash_func = rte_hash_crc;
      hp.socket_id = socket;
      l.hash = rte_hash_create(&hp);
      if (l.hash == nullptr) return Status(ENOMEM, "dpdk: rte_hash " + hn + ": " + rte_error(rte_errno));
      port_->hashes.push_back(l.hash);
    }
    const std::string cn = "crc" + std::to_string(instance) + "_" + std::to_string(i);
    l.commands = rte_ring_create_elem(cn.c_str(), sizeof(Command), o.command_ring_size, socket, RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (l.commands == nullptr) return Status(ENOMEM, "dpdk: command ring " + cn + ": " + rte_error(rte_errno));
    port_->rings.push_back(l.commands);
    l.fwd.resize(n);
    l.fwd_n.assign(n, 0);
    l.handoff_in.assign(n, nullptr);
    l.handoff_out.assign(n, nullptr);
    for (unsigned j = 0; j < n; ++j) {
      if (j == i) continue;
      l.handoff_in[j] = port_->handoff[j * n + i];
      l.handoff_out[j] = port_->handoff[i * n + j];
    }
    l.ns_per_tsc = ns_per_tsc;
    l.publish_interval_tsc = static_cast<std::uint64_t>(static_cast<double>(kPublishIntervalNs) / ns_per_tsc);
    l.tap_interval_tsc = static_cast<std::uint64_t>(static_cast<double>(kTapPollIntervalNs) / ns_per_tsc);
    l.idle_sleep_us = static_cast<unsigned>(o.idle_sleep.count());
    l.idle_pause = o.idle_pause;
    l.rate_limit_pps.store(std::max(0.0, o.rx_rate_limit_pps), std::memory_order_relaxed);
    l.stop_drain_timeout = o.stop_drain_timeout;
    l.end_marks_lost = &end_marks_lost_;
    l.zero_copy_leaked = &zero_copy_leaked_;
    if (o.handoff == Handoff::kZeroCopy) {
      l.zc_credit = o.zero_copy_credit;
      l.zc_mask = o.zero_copy_credit - 1;  // every writer's FIFO can hold the whole credit
    }
    l.end_marks.reserve(l.max_flows);
    l.dirty_list.reserve(kMaxBurst);
    lcores_.push_back(std::move(lp));
  }
  free_slots_.resize(n);
  pending_free_.resize(n);
  commands_posted_.assign(n, 0);
  for (unsigned i = 0; i < n; ++i) {
    free_slots_[i].reserve(o.max_flows_per_lcore);
    for (std::uint32_t s = o.max_flows_per_lcore; s > 0; --s) free_slots_[i].push_back(s - 1);
  }
  return Status::ok();
}

std::string DpdkSource::describe() const {
  std::string s = std::string(options_.flow_table == FlowTable::kFlat ? "flat" : "rte_hash") + " flow table, " +
                  std::to_string(rx_queues_) + " rx queue(s)" + (rss_ ? " with RSS" : "") + ", " +
                  std::to_string(lcores_.size()) + " RX lcore(s) [";
  for (std::size_t i = 0; i < lcores_.size(); ++i) s += (i != 0 ? "," : "") + std::to_string(lcores_[i]->lcore_id);
  s += "]";
  if (lcores_.size() > 1 && rx_queues_ < lcores_.size()) s += ", software spread from lcore 0";
  if (allmulticast_) s += ", all-multicast (IPv6 ND)";
  s += options_.handoff == Handoff::kZeroCopy
           ? ", zero-copy hand-off (credit " + std::to_string(options_.zero_copy_credit) + " mbufs per lcore)"
           : ", copy hand-off";
  return s;
}

Status DpdkSource::start(fileio::RingMatrix& rings) {
  std::unique_lock lock(control_mu_);
  if (!init_status_) return init_status_;
  if (state_ != State::kIdle) return Status::error("dpdk source: start() after start() or stop()");
  if (rings.producers() < lcores_.size()) {
    return Status::error("dpdk source: ring matrix has " + std::to_string(rings.producers()) + " producers for " +
                         std::to_string(lcores_.size()) + " RX lcores");
  }
  if (rings.writers() > 65535) return Status::error("dpdk source: at most 65535 writers");
  for (auto& lp : lcores_) {
    Lcore& l = *lp;
    l.rings = &rings;
    l.dirty.assign(rings.writers(), 0);
    l.zc.clear();
    if (options_.handoff == Handoff::kZeroCopy) {
      l.zc.resize(rings.writers());
      for (auto& q : l.zc) q.e = std::make_unique<Lcore::ZcHeld[]>(l.zc_mask + 1);
    }
    for (std::uint32_t s = 0; s < l.max_flows; ++s) {  // flows installed before start()
      if (l.flows[s].active) l.flows[s].writer = static_cast<std::uint16_t>(rings.writer_for(l.flows[s].stream));
    }
  }
  if (const int rc = rte_eth_dev_start(port_id_); rc != 0) {
    return Status(-rc, "dpdk: port " + options_.port + ": rte_eth_dev_start: " + rte_error(rc));
  }
  port_->started = true;
  if (port_->tap_port != kNoPort) {
    if (const int rc = rte_eth_dev_start(port_->tap_port); rc != 0) {
      return Status(-rc, "dpdk: exception TAP: rte_eth_dev_start: " + rte_error(rc));
    }
    port_->tap_started = true;
  }
  state_ = State::kRunning;
  Status result;
  for (auto& lp : lcores_) {
    const int rc = rte_eal_remote_launch(&Lcore::entry, lp.get(), lp->lcore_id);
    if (rc != 0) {
      result = Status(-rc, "dpdk: launching lcore " + std::to_string(lp->lcore_id) + ": " + rte_error(rc));
      break;
    }
    lp->launched = true;
  }
  if (!result) {
    lock.unlock();
    stop();
  }
  return result;
}

void DpdkSource::stop() {
  std::lock_guard lock(control_mu_);
  const State was = state_;
  state_ = State::kStopped;
  if (was != State::kRunning) return;
  for (auto& lp : lcores_) lp->stop_requested.store(true, std::memory_order_release);
  for (auto& lp : lcores_) {
    if (lp->launched) rte_eal_wait_lcore(lp->lcore_id);
    lp->launched = false;
  }
  // Hand-offs enqueued after their owner had stopped.
  std::uint64_t discarded = 0;
  for (rte_ring* r : port_->handoff) {
    if (r == nullptr) continue;
    void* objs[kMaxBurst];
    unsigned k = 0;
    while ((k = rte_ring_dequeue_burst(r, objs, kMaxBurst, nullptr)) != 0) {
      rte_pktmbuf_free_bulk(reinterpret_cast<rte_mbuf**>(objs), k);
      discarded += k;
    }
  }
  stop_discarded_.fetch_add(discarded, std::memory_order_relaxed);
  if (port_->tap_started) rte_eth_dev_stop(port_->tap_port);
  port_->tap_started = false;
  if (port_->started) rte_eth_dev_stop(port_id_);
  port_->started = false;
  // Every flow has its end mark (or was counted lost); keep final counters.
  for (auto& [stream, e] : removing_) {
    const Flow& f = lcores_[e.lcore]->flows[e.slot];
    remember_removed_locked(stream, {f.packets.load(std::memory_order_relaxed), f.wrong_source.load(std::memory_order_relaxed), f.policed.load(std::memory_order_relaxed)});
  }
  for (auto& [stream, e] : flows_) {
    const Flow& f = lcores_[e.lcore]->flows[e.slot];
    remember_removed_locked(stream, {f.packets.load(std::memory_order_relaxed), f.wrong_source.load(std::memory_order_relaxed), f.policed.load(std::memory_order_relaxed)});
  }
  removing_.clear();
  flows_.clear();
  keys_.clear();
  for (auto& q : pending_free_) q.clear();
}

void DpdkSource::remember_removed_locked(StreamId stream, FlowStats stats) {
  if (removed_.insert_or_assign(stream, stats).second) removed_order_.push_back(stream);
  while (removed_order_.size() > kKeptRemovedFlows) {
    removed_.erase(removed_order_.front());
    removed_order_.pop_front();
  }
}

void DpdkSource::reclaim_locked(unsigned lcore) {
  auto& q = pending_free_[lcore];
  if (q.empty()) return;
  Lcore& l = *lcores_[lcore];
  // acquire: pairs with drain_commands()'s release; the slot's final counters are visible.
  const std::uint64_t done = l.commands_done.load(std::memory_order_acquire);
  while (!q.empty() && q.front().seq <= done) {
    const PendingFree pf = q.front();
    q.pop_front();
    if (const auto it = removing_.find(pf.stream); it != removing_.end() && it->second.lcore == lcore && it->second.slot == pf.slot) {
      const Flow& f = l.flows[pf.slot];
      remember_removed_locked(pf.stream, {f.packets.load(std::memory_order_relaxed), f.wrong_source.load(std::memory_order_relaxed), f.policed.load(std::memory_order_relaxed)});
      removing_.erase(it);
    }
    free_slots_[lcore].push_back(pf.slot);
  }
}

Status DpdkSource::post_locked(unsigned lcore, const Command& cmd) {
  Lcore& l = *lcores_[lcore];
  if (state_ == State::kIdle) {
    // The lcore is not running: the control thread owns its table and applies directly.
    l.apply(cmd);
    l.commands_done.fetch_add(1, std::memory_order_release);
    ++commands_posted_[lcore];
    return Status::ok();
  }
  Command copy = cmd;
  const auto deadline = std::chrono::steady_clock::now() + kCommandRingWait;
  while (rte_ring_sp_enqueue_elem(l.commands, &copy, sizeof copy) != 0) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return Status(EAGAIN, "dpdk: command ring of RX lcore " + std::to_string(l.lcore_id) + " stays full (lcore stalled?)");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  ++commands_posted_[lcore];
  return Status::ok();
}

Status DpdkSource::add_flow(const FlowSpec& flow) {
  std::lock_guard lock(control_mu_);
  return add_flow_locked(flow, kAllAddresses);
}

Status DpdkSource::add_flow_on(const FlowSpec& flow, unsigned address_index) {
  std::lock_guard lock(control_mu_);
  if (address_index >= addresses_.size()) {
    return Status(EINVAL, "dpdk: address index " + std::to_string(address_index) + " out of range (" +
                              std::to_string(addresses_.size()) + " addresses)");
  }
  return add_flow_locked(flow, address_index);
}

Status DpdkSource::add_flow_locked(const FlowSpec& spec, unsigned address_index) {
  if (!init_status_) return init_status_;
  const std::string what = "dpdk udp port " + std::to_string(spec.local_port);
  if (state_ == State::kStopped) return Status::error(what + ": dpdk source stopped");
  if (spec.local_port == 0) return Status(EINVAL, what + ": the dpdk source needs an explicit port");
  if (flows_.contains(spec.stream)) {
    return Status(EEXIST, what + ": stream " + std::to_string(spec.stream) + " already has a flow");
  }
  const auto n_addr = static_cast<unsigned>(addresses_.size());
  const unsigned a_lo = address_index == kAllAddresses ? 0 : address_index;
  const unsigned a_hi = address_index == kAllAddresses ? n_addr : address_index + 1;
  for (unsigned a = a_lo; a < a_hi; ++a) {
    if (const auto it = keys_.find((a << 16) | spec.local_port); it != keys_.end()) {
      return Status(EADDRINUSE, what + ": already used by stream " + std::to_string(it->second));
    }
  }
  Command cmd;
  cmd.kind = Command::kAdd;
  cmd.address = static_cast<std::uint8_t>(address_index);
  cmd.port = spec.local_port;
  cmd.stream = spec.stream;
  cmd.latch = spec.latch ? 1 : 0;
  cmd.match = kAny;
  if (spec.expected.ss_family == AF_INET) {
    sockaddr_in sin{};
    std::memcpy(&sin, &spec.expected, sizeof sin);
    cmd.expect_ip = sin.sin_addr.s_addr;
    cmd.expect_port = sin.sin_port;
    cmd.match = sin.sin_port != 0 && !spec.latch ? kAddrPort : kAddr;
  } else if (spec.expected.ss_family == AF_INET6) {
    sockaddr_in6 s6{};
    std::memcpy(&s6, &spec.expected, sizeof s6);
    if (!IN6_IS_ADDR_V4MAPPED(&s6.sin6_addr)) {
      return Status(EAFNOSUPPORT, what + ": IPv6 expected source on an IPv4 dataplane");
    }
    std::memcpy(&cmd.expect_ip, &s6.sin6_addr.s6_addr[12], 4);
    cmd.expect_port = s6.sin6_port;
    cmd.match = s6.sin6_port != 0 && !spec.latch ? kAddrPort : kAddr;
  } else if (spec.expected.ss_family != AF_UNSPEC) {
    return Status(EAFNOSUPPORT, what + ": expected source is neither IPv4 nor IPv6");
  }
  const unsigned owner = owner_of(spec.local_port, static_cast<unsigned>(lcores_.size()));
  reclaim_locked(owner);
  if (free_slots_[owner].empty()) {
    return Status(ENOSPC, what + ": flow table of RX lcore " + std::to_string(lcores_[owner]->lcore_id) + " is full (" +
                              std::to_string(options_.max_flows_per_lcore) + " flows)");
  }
  cmd.slot = free_slots_[owner].back();
  if (Status s = post_locked(owner, cmd); !s) return s;
  free_slots_[owner].pop_back();
  flows_.emplace(spec.stream, FlowEntry{owner, cmd.slot, spec.local_port, cmd.address});
  removing_.erase(spec.stream);  // a re-used stream id: flow_stats() now means the new flow
  removed_.erase(spec.stream);
  for (unsigned a = a_lo; a < a_hi; ++a) keys_[(a << 16) | spec.local_port] = spec.stream;
  return Status::ok();
}

void DpdkSource::remove_flow(StreamId stream) {
  std::lock_guard lock(control_mu_);
  const auto it = flows_.find(stream);
  if (it == flows_.end()) return;
  const FlowEntry e = it->second;
  Command cmd;
  cmd.kind = Command::kRemove;
  cmd.slot = e.slot;
  cmd.stream = stream;
  if (Status s = post_locked(e.lcore, cmd); !s) {
    // The lcore is stalled for a second: nothing sane is left to do but report it.
    std::fprintf(stderr, "callrec dpdk: remove_flow(%u): %s\n", stream, s.message().c_str());
    return;
  }
  const auto n_addr = static_cast<unsigned>(addresses_.size());
  const unsigned a_lo = e.address == kAllAddresses ? 0 : e.address;
  const unsigned a_hi = e.address == kAllAddresses ? n_addr : e.address + 1U;
  for (unsigned a = a_lo; a < a_hi; ++a) keys_.erase((a << 16) | e.port);
  pending_free_[e.lcore].push_back({commands_posted_[e.lcore], e.slot, stream});
  removing_[stream] = e;
  flows_.erase(it);
  reclaim_locked(e.lcore);
}

SourceStats DpdkSource::stats() const { return dpdk_stats().source; }

void DpdkSource::set_rx_rate_limit(double pps) {
  for (const auto& lp : lcores_) lp->rate_limit_pps.store(std::max(0.0, pps), std::memory_order_relaxed);
}

DpdkStats DpdkSource::dpdk_stats() const {
  DpdkStats d;
  SourceStats& s = d.source;
  for (const auto& lp : lcores_) {
    const PublishedCounters& p = lp->published;
    s.rx_packets += p.get(kRxPackets);
    s.rx_bytes += p.get(kRxBytes);
    s.delivered += p.get(kDelivered);
    s.ring_full += p.get(kRingFull);
    s.unknown_flow += p.get(kUnknownFlow);
    s.wrong_source += p.get(kWrongSource);
    s.not_rtp += p.get(kNotRtp);
    s.policed += p.get(kPoliced);
    s.rx_errors += p.get(kRxErrors);
    s.arp_replies += p.get(kArpReplies);
    s.icmp_replies += p.get(kIcmpReplies);
    s.nd_replies += p.get(kNdReplies);
    s.icmp6_replies += p.get(kIcmp6Replies);
    s.exception_path += p.get(kExceptionPath);
    d.forwarded += p.get(kForwarded);
    d.handoff_full += p.get(kHandoffFull);
    d.dropped += p.get(kDropped);
    d.not_ours += p.get(kNotOurs);
    d.icmp6_invalid += p.get(kIcmp6Invalid);
    d.tx_failed += p.get(kTxFailed);
    d.exception_rx += p.get(kExceptionRx);
    d.bursts += p.get(kBursts);
    d.timed_packets += p.get(kTimedPackets);
    d.cycles_rx += p.get(kCyclesRx);
    d.cycles_classify += p.get(kCyclesClassify);
    d.cycles_deliver += p.get(kCyclesDeliver);
    d.cycles_free += p.get(kCyclesFree);
    d.zero_copy += p.get(kZeroCopy);
    d.zero_copy_fallback += p.get(kZeroCopyFallback);
    d.zero_copy_held += p.get(kZeroCopyHeld);
  }
  d.zero_copy_leaked = zero_copy_leaked_.load(std::memory_order_relaxed);
  d.dropped += stop_discarded_.load(std::memory_order_relaxed);
  d.end_marks_lost = end_marks_lost_.load(std::memory_order_relaxed);
  if (init_status_ && port_id_ != kNoPort) {
    rte_eth_stats es{};
    if (rte_eth_stats_get(port_id_, &es) == 0) {
      s.nic_missed = es.imissed;
      s.nic_nombuf = es.rx_nombuf;
      d.nic_ipackets = es.ipackets;
      d.nic_ibytes = es.ibytes;
      d.nic_ierrors = es.ierrors;
    }
    d.tsc_hz = rte_get_tsc_hz();
  }
  return d;
}

std::vector<SourceCounter> DpdkSource::counters() const {
  const DpdkStats d = dpdk_stats();
  const SourceStats& s = d.source;
  return {
      {"dpdk_imissed", "Packets the NIC dropped because the RX queues were full (rte_eth_stats imissed).", s.nic_missed},
      {"dpdk_rx_nombuf", "RX mbuf allocation failures (rte_eth_stats rx_nombuf).", s.nic_nombuf},
      {"dpdk_ierrors", "Erroneous packets received by the NIC (rte_eth_stats ierrors).", d.nic_ierrors},
      {"dpdk_nic_ipackets", "Packets the NIC received (rte_eth_stats ipackets).", d.nic_ipackets},
      {"dpdk_ring_full", "RTP packets dropped because the writer's ring (or the owner lcore's hand-off ring) was full.", s.ring_full},
      {"dpdk_unknown_flow", "UDP packets to our address(es) for a port with no recording.", s.unknown_flow},
      {"dpdk_wrong_source", "RTP packets for a recording from another source than the phone (not written).", s.wrong_source},
      {"dpdk_policed", "RTP packets dropped because their flow was over its rate (--max-stream-pps).", s.policed},
      {"dpdk_arp_replies", "ARP requests for the dataplane address(es) answered.", s.arp_replies},
      {"dpdk_icmp_replies", "ICMP echo requests to the dataplane address(es) answered.", s.icmp_replies},
      {"dpdk_nd_replies", "IPv6 neighbour solicitations for the dataplane IPv6 address(es) answered.", s.nd_replies},
      {"dpdk_icmp6_replies", "ICMPv6 echo requests to the dataplane IPv6 address(es) answered.", s.icmp6_replies},
      {"dpdk_exception_path", "Packets handed to the kernel through the exception TAP.", s.exception_path},
      {"dpdk_exception_path_tx", "Packets the kernel sent through the exception TAP out of the port.", d.exception_rx},
      {"dpdk_forwarded", "Packets handed from the receiving RX lcore to the owner of their flow (software spread).", d.forwarded},
      {"dpdk_handoff_full", "Packets dropped because the owner lcore's hand-off ring was full (also in ring_full).", d.handoff_full},
      {"dpdk_dropped", "Other packets dropped (not for our addresses, no exception path, unsupported, TX refused).", d.dropped},
      {"dpdk_not_ours",
       "Unicast IPv4 packets to another address; without exception path also unicast IPv6 to another address "
       "and neighbour solicitations for another target (part of dropped).",
       d.not_ours},
      {"dpdk_icmp6_invalid",
       "ICMPv6 for the dataplane that failed validation: neighbour solicitations (RFC 4861 7.1.1), echo "
       "requests (part of dropped).",
       d.icmp6_invalid},
      {"dpdk_tx_failed", "Replies or exception packets the port refused to send (part of dropped).", d.tx_failed},
      {"dpdk_end_marks_lost", "End-of-stream marks stop() could not hand to a writer.", d.end_marks_lost},
      {"dpdk_zero_copy", "RTP packets handed to a writer by reference (zero-copy hand-off).", d.zero_copy},
      {"dpdk_zero_copy_fallback", "RTP packets copied because the zero-copy credit was used up (writer lagging).", d.zero_copy_fallback},
      {"dpdk_zero_copy_held", "mbufs writers hold now under the zero-copy hand-off.", d.zero_copy_held, true},
      {"dpdk_zero_copy_leaked", "mbufs still referenced by a writer when stop() gave up waiting.", d.zero_copy_leaked},
  };
}

std::vector<unsigned> DpdkSource::rx_cpus() const {
  std::vector<unsigned> cpus;
  if (!init_status_) return cpus;
  for (const auto& lp : lcores_) {
    const rte_cpuset_t set = rte_lcore_cpuset(lp->lcore_id);
    for (unsigned c = 0; c < CPU_SETSIZE; ++c) {
      // CPU_ISSET without its C casts (-Wold-style-cast).
      constexpr unsigned kBits = 8 * sizeof(set.__bits[0]);
      if (((set.__bits[c / kBits] >> (c % kBits)) & 1U) != 0) cpus.push_back(c);
    }
  }
  std::sort(cpus.begin(), cpus.end());
  cpus.erase(std::unique(cpus.begin(), cpus.end()), cpus.end());
  return cpus;
}

Status dpdk_eal_cleanup() {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  if (!r.attempted || !r.result) return Status::ok();
  if (std::any_of(r.port_claimed.begin(), r.port_claimed.end(), [](bool b) { return b; })) {
    return Status(EBUSY, "dpdk: EAL cleanup while a DpdkSource is alive");
  }
  for (std::uint16_t pid = 0; pid < RTE_MAX_ETHPORTS; ++pid) {
    if (rte_eth_dev_is_valid_port(pid) == 0) continue;
    (void)rte_eth_dev_close(pid);  // every DpdkSource stopped its ports when it was destroyed
  }
  // EAL cannot be initialised again: a later source fails with this message.
  r.result = Status(EALREADY, "dpdk: EAL was cleaned up (rte_eal_cleanup) in this process");
  if (const int rc = rte_eal_cleanup(); rc != 0) return Status(-rc, "dpdk: rte_eal_cleanup: " + rte_error(rc));
  return Status::ok();
}

std::optional<FlowStats> DpdkSource::flow_stats(StreamId stream) const {
  std::lock_guard lock(control_mu_);
  const FlowEntry* e = nullptr;
  if (const auto it = flows_.find(stream); it != flows_.end()) {
    e = &it->second;
  } else if (const auto rit = removing_.find(stream); rit != removing_.end()) {
    e = &rit->second;  // slot not released yet: its counters are the flow's
  }
  if (e != nullptr) {
    const Flow& f = lcores_[e->lcore]->flows[e->slot];
    return FlowStats{f.packets.load(std::memory_order_relaxed), f.wrong_source.load(std::memory_order_relaxed), f.policed.load(std::memory_order_relaxed)};
  }
  if (const auto it = removed_.find(stream); it != removed_.end()) return it->second;
  return std::nullopt;
}

DpdkMemory DpdkSource::memory() const {
  DpdkMemory m;
  if (!init_status_) return m;
  if (port_->pool != nullptr) {
    const rte_mempool* p = port_->pool;
    m.mempool_bytes = static_cast<std::uint64_t>(p->size) * (p->header_size + p->elt_size + p->trailer_size);
  }
  const std::uint64_t n_addr = addresses_.size();
  for (const auto& lp : lcores_) {
    m.flow_entries_bytes += std::uint64_t{lp->max_flows} * sizeof(Flow);
    if (lp->flat) {
      m.flow_table_bytes += (n_addr << 16) * sizeof(std::uint32_t);
    } else if (lp->hash != nullptr) {
      // rte_hash: buckets of 8 (16-bit signature + key index) + key store (key + data pointer).
      const std::uint64_t entries = std::max<std::uint64_t>(1024, std::min<std::uint64_t>(std::uint64_t{lp->max_flows} * n_addr, n_addr << 16));
      m.flow_table_bytes += entries * (sizeof(std::uint32_t) + sizeof(void*)) + entries / 8 * 64;
    }
  }
  const std::uint64_t n = lcores_.size();
  m.rings_bytes = n * options_.command_ring_size * sizeof(Command) + n * (n - 1) * options_.handoff_ring_size * sizeof(void*);
  m.per_stream_bytes = sizeof(Flow) + (options_.flow_table == FlowTable::kFlat ? sizeof(std::uint32_t) : 16);
  return m;
}

}  // namespace callrec::dataplane
