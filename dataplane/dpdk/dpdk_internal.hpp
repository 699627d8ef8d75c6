#pragma once
// The DPDK source's own details, shared by the files of dataplane/dpdk/ and included by nothing
// else: the constants, counters and flow entry of the per-lcore state, the control -> lcore
// Command, the rte objects of one source (Port), the per-lcore state itself (Lcore), and the
// process-wide EAL registry. Where each part is implemented:
//   eal.cpp             EAL init and hot-plug, the process-wide claims on ports and lcores
//   lcore.cpp           the poll loop: RX, classify, lookup, deliver, zero-copy reclaim, commands
//   host_stack.cpp      ARP, ICMP echo, IPv6 ND and ICMPv6 echo answered on lcore 0; host TX
//   exception_path.cpp  the TAP to the kernel (lcore 0)
//   telemetry.cpp       the "/callrec/stats" telemetry command
//   source.cpp          DpdkSource's control side: init, start/stop, flows, stats, memory
#include <netinet/in.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dataplane/decode/checksum.hpp"
#include "dataplane/dpdk/rte.hpp"
#include "dataplane/dpdk_source.hpp"
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

// Byte order: fileio/rtp.hpp's, the project's one copy (in the std::uint8_t form of checksum.hpp).
using decode::load_be16;
using decode::store_be16;

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

Registry& registry();
std::string rte_error(int err);
/// Runs rte_eal_init once per process; later calls hot-plug new vdevs (added to `hotplugged`).
/// Caller holds registry().mu.
Status ensure_eal_locked(const std::vector<std::string>& args, std::vector<std::string>& hotplugged);

/// A source joins the telemetry command's list once constructed, and leaves it first when destroyed.
void telemetry_attach(const DpdkSource* s);
void telemetry_detach(const DpdkSource* s);

}  // namespace dpdk_detail

using namespace dpdk_detail;  // NOLINT(google-build-using-namespace): dataplane/dpdk/'s own details

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
  ~Port();  // source.cpp
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

}  // namespace callrec::dataplane
