#pragma once
// The DPDK poll-mode packet source: dedicated RX lcores poll a DPDK port, classify RTP by UDP
// destination port through a per-lcore flow table, copy each accepted packet into the writer's
// fileio::PacketRing and free the mbufs in bulk. The port is a host on its network: lcore 0
// answers ARP and ICMP echo for the configured IPv4 address(es), and IPv6 neighbour discovery
// (NS -> NA, RFC 4861) and ICMPv6 echo for the optional IPv6 address(es); other host traffic goes
// to a kernel TAP (exception path) when one is configured, else it is dropped and counted. RTP
// is IPv4 only.
//
// Telemetry: the DPDK telemetry socket (<runtime dir>/dpdk_telemetry.v2, see
// dpdk_telemetry_socket()) answers "/callrec/stats" with the DpdkStats counters of the live
// sources, summed (usertools/dpdk-telemetry.py, or any SOCK_SEQPACKET client).
//
// No DPDK header is included here: everything rte_* lives in dataplane/dpdk/ (dpdk_internal.hpp).
//
// EAL, once per process
// - rte_eal_init() can run only once in a process (DPDK cannot re-initialise after
//   rte_eal_cleanup). The first DpdkSource constructed runs it with Options::eal_args; every
//   later DpdkSource in the same process shares that EAL. For a later source, `--vdev`
//   arguments naming a device that does not exist yet are hot-plugged (rte_dev_probe) and
//   removed again when that source is destroyed; any other argument must equal the first
//   source's, or the constructor fails with a message saying so. Tests therefore share one EAL
//   per process (each test brings its own uniquely named vdev) or fork per test.
// - --no-huge implies legacy memory, which DPDK refuses with --in-memory: pass --no-shconf and
//   a unique --file-prefix so that parallel processes do not fight over /var/run/dpdk/rte.
// - rte_eal_init pins the calling thread to the main lcore; the constructor restores the
//   caller's previous CPU affinity afterwards (the control thread is not a poll loop, and threads
//   it creates later -- writers -- must not inherit the main lcore's CPU).
//
// Threads and ownership
// - Control thread(s): constructor, start/stop, add_flow/remove_flow, stats/flow_stats
//   (serialized internally by one mutex that no lcore ever takes).
// - RX lcore p (EAL worker lcore Options::lcores[p], producer p of the RingMatrix): owns its
//   flow table (flat array indexed by (address, port), or rte_hash), its flow entries, its
//   counters, its queues. It learns about flows only through its command ring (rte_ring, single
//   producer = control under the mutex, single consumer = the lcore), drained once per poll
//   iteration. Before start() (lcores not running) the control thread applies commands
//   directly to the tables.
//
// Spread (one stream = one lcore)
// - The owner of UDP port P is lcore hash(P) % rx_threads: every address's port P, and so every
//   packet of a flow, belongs to one lcore whatever queue it arrived on. Host traffic (ARP,
//   ICMP, exception path) is owned by lcore 0, which owns the single TX queue.
// - Queue q is polled by lcore q % rx_threads. With one queue per lcore and RSS (when the PMD
//   supports it) the NIC spreads the load; with a single-queue PMD (net_pcap, net_af_packet
//   without qpairs) lcore 0 receives everything. Either way a packet received by an lcore that
//   does not own it is handed to its owner through a single-producer/single-consumer rte_ring
//   of mbuf pointers (a software spread; counted as `forwarded`). See bench/RESULTS-dpdk.md
//   for what that costs.
//
// Hand-off to the writer (Options::handoff), both measured in bench/RESULTS-dpdk.md:
// - copy (default): an accepted RTP packet (its UDP payload) is copied into the writer's
//   PacketRing and the mbuf is freed at once. A lagging writer then fills only its own ring
//   (counted ring_full), never the mempool that every stream and the host stack share.
// - zero-copy: the ring carries a pointer into the mbuf (PacketRing::push_ref); the RX lcore
//   keeps the mbuf in a per-writer FIFO and frees it (with its mempool cache) once the ring's
//   released position shows the writer is done with it. At most zero_copy_credit mbufs per
//   lcore are held this way; past that, packets are copied (counted zero_copy_fallback), so a
//   lagging writer can hold only that many mbufs of the pool, and RX never starves.
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "dataplane/flow_registry.hpp"
#include "dataplane/source.hpp"

namespace callrec::dataplane {

/// Counters of a DpdkSource beyond SourceStats. Every received packet ends in exactly one of
/// delivered, ring_full, unknown_flow, wrong_source, not_rtp, arp_replies, icmp_replies,
/// nd_replies, icmp6_replies, exception_path, dropped (once stopped: rx_packets equals their sum).
struct DpdkStats {
  SourceStats source;               ///< what stats() returns
  std::uint64_t forwarded = 0;      ///< handed from the receiving lcore to the owner lcore
  std::uint64_t handoff_full = 0;   ///< dropped: owner's hand-off ring full (also in ring_full)
  std::uint64_t dropped = 0;        ///< other traffic dropped: not for our addresses, no
                                    ///< exception path, unsupported (multi-segment), TX failed
  std::uint64_t not_ours = 0;       ///< of `dropped`: unicast IPv4 to another address; without
                                    ///< exception path also unicast IPv6 to another address and
                                    ///< neighbour solicitations for another target
  std::uint64_t icmp6_invalid = 0;  ///< of `dropped`: ICMPv6 for us that failed validation
                                    ///< (NS: RFC 4861 7.1.1; echo: checksum, code)
  std::uint64_t tx_failed = 0;      ///< of `dropped`: replies/exception packets the TX refused
  std::uint64_t exception_rx = 0;   ///< kernel (TAP) -> wire packets sent
  std::uint64_t end_marks_lost = 0; ///< end marks stop() could not push (writer not consuming)
  // Zero-copy hand-off (Options::Handoff::kZeroCopy; all 0 with copy)
  std::uint64_t zero_copy = 0;          ///< of `delivered`: handed over by reference (no copy)
  std::uint64_t zero_copy_fallback = 0; ///< of `delivered`: copied because the credit was used up
  std::uint64_t zero_copy_held = 0;     ///< gauge: mbufs writers hold now (<= credit per lcore)
  std::uint64_t zero_copy_leaked = 0;   ///< mbufs still referenced when stop() gave up waiting;
                                        ///< the mempool is then kept until the process exits
  // NIC (rte_eth_stats_get, read by the calling thread)
  std::uint64_t nic_ipackets = 0;
  std::uint64_t nic_ibytes = 0;
  std::uint64_t nic_ierrors = 0;
  // Poll loop (only with Options::stage_timing; TSC cycles summed over the RX lcores)
  std::uint64_t bursts = 0;          ///< non-empty rx bursts
  std::uint64_t timed_packets = 0;   ///< packets of those bursts
  std::uint64_t cycles_rx = 0;       ///< rte_eth_rx_burst
  std::uint64_t cycles_classify = 0; ///< parse Ethernet/VLAN/IPv4/UDP + flow lookup + prefetch
  std::uint64_t cycles_deliver = 0;  ///< source/RTP checks + copy into the ring + publish
  std::uint64_t cycles_free = 0;     ///< rte_pktmbuf_free_bulk + host/hand-off work
  std::uint64_t tsc_hz = 0;
};

/// Memory the source holds (for sizing; computed from the configuration, not sampled).
struct DpdkMemory {
  std::uint64_t mempool_bytes = 0;      ///< mbufs: count * (header + mbuf + data room + trailer)
  std::uint64_t flow_table_bytes = 0;   ///< per-lcore key -> slot tables (flat or rte_hash)
  std::uint64_t flow_entries_bytes = 0; ///< per-lcore flow entries (64 B each)
  std::uint64_t rings_bytes = 0;        ///< command + hand-off rte_rings
  std::uint64_t per_stream_bytes = 0;   ///< flow entry + table share of one installed stream
};

/// The DPDK telemetry socket of this process ("<EAL runtime dir>/dpdk_telemetry.v2"), where
/// "/callrec/stats" is served; empty when EAL is not initialised or telemetry is off (EAL
/// --no-telemetry). --no-shconf and --in-memory leave it on. Any thread.
std::string dpdk_telemetry_socket();

/// Initialises EAL with `eal_args` (once per process; a later call may only add --vdev devices,
/// which are hot-plugged) and finds the ethdev port `name`, claiming it for the caller (the
/// passive-capture mirror port, dataplane/capture/). Control thread.
Status dpdk_claim_port(const std::vector<std::string>& eal_args, const std::string& name, std::uint16_t& port_id);
/// Gives a port claimed with dpdk_claim_port back (after the caller stopped and closed it).
void dpdk_release_port(std::uint16_t port_id);

/// Closes every ethdev port and runs rte_eal_cleanup(), once, at the end of a process that
/// used DpdkSource. Call it after the last DpdkSource is destroyed; EAL cannot be initialised
/// again afterwards. No-op (ok) when EAL was never initialised; an error when a source is alive.
Status dpdk_eal_cleanup();

class DpdkSource final : public Source {
 public:
  enum class Handoff : std::uint8_t {
    kCopy,      ///< copy the RTP payload into the writer's ring, free the mbuf at once
    kZeroCopy,  ///< hand the writer a pointer into the mbuf, free it once consumed (bounded)
  };

  enum class FlowTable : std::uint8_t {
    kFlat,     ///< uint32 slot per (address, port): 256 KiB per address per lcore, one load
    kRteHash,  ///< rte_hash keyed by (address, port), rte_hash_lookup_bulk_data per burst
  };

  struct Options {
    /// EAL arguments (program name is added). Used by the first DpdkSource of the process;
    /// see the header comment for later ones. Example:
    /// {"--no-huge","--no-pci","-m","512","--no-shconf","--file-prefix=callrec",
    ///  "--vdev=net_pcap0,rx_pcap=x.pcap"}.
    std::vector<std::string> eal_args;
    /// Port id ("0") or ethdev name ("net_pcap0", as given in --vdev).
    std::string port = "0";
    /// RX lcores = producers of the RingMatrix. Ignored when `lcores` is given.
    unsigned rx_threads = 1;
    /// EAL worker lcore ids for the RX loops; empty: the first rx_threads worker lcores.
    std::vector<unsigned> lcores;
    /// RX queues; 0: rx_threads when the PMD has that many (RSS if it supports it), else 1.
    unsigned rx_queues = 0;
    unsigned rx_descriptors = 1024;
    unsigned tx_descriptors = 512;
    /// mbufs in the pool. net_pcap with infinite_rx=1 keeps the whole file in it: give it more
    /// than the file's packet count.
    unsigned mempool_mbufs = 16383;
    unsigned mempool_cache = 256;
    unsigned mbuf_data_room = 2048 + 128;  ///< RTE_MBUF_DEFAULT_BUF_SIZE (incl. headroom)
    /// The dataplane's own IPv4 addresses (dotted quad): answered for ARP/ICMP echo; RTP is
    /// received on them. At least one; flows added with add_flow() listen on all of them.
    std::vector<std::string> addresses;
    /// The dataplane's own IPv6 addresses (optional; global or link-local, no multicast): lcore
    /// 0 answers neighbour solicitations (unicast or to the solicited-node group; the port is
    /// put in all-multicast mode where the PMD supports it) and ICMPv6 echo for them. No RTP is
    /// received on them.
    std::vector<std::string> addresses6;
    /// Kernel exception path: a TAP interface of this name (net_tap, with the port's MAC) gets
    /// the host traffic the dataplane does not handle; what the kernel sends on it goes out of
    /// the port. Empty: such traffic is dropped (counted).
    std::string exception_tap;
    unsigned max_flows_per_lcore = 131072;
    /// Per-flow packet-rate policer (flow_policer.hpp): packets a flow sends beyond
    /// max_stream_pps sustained / stream_burst at once are dropped and counted (policed).
    /// 0: off (the library default; callrecd sets --max-stream-pps).
    std::uint32_t max_stream_pps = 0;
    std::uint32_t stream_burst = 500;
    unsigned burst = 32;                 ///< 1..64
    unsigned handoff_ring_size = 4096;   ///< per (lcore, lcore) pair, power of two
    unsigned command_ring_size = 16384;  ///< per lcore, power of two
    FlowTable flow_table = FlowTable::kFlat;
    Handoff handoff = Handoff::kCopy;
    /// Zero-copy only: mbufs each RX lcore may leave with its writers (power of two, 64 ..
    /// 1048576). The mempool must hold them on top of the RX descriptors and caches. 0: auto,
    /// the largest power of two <= 8192 that leaves half the pool's spare mbufs to RX.
    unsigned zero_copy_credit = 0;
    bool promiscuous = false;
    bool stage_timing = false;           ///< rte_rdtsc around the stages (see DpdkStats)
    /// Packets per second each RX lcore takes from its queues (token bucket, 4 bursts deep);
    /// 0: unlimited. For benchmarks (finding the highest loss-free rate) and shaping; what is
    /// not taken waits in the NIC queue (and is counted by the NIC as imissed if it overflows).
    double rx_rate_limit_pps = 0;
    /// 0: poll without pause (production). Otherwise an lcore that found nothing for 1024
    /// polls in a row sleeps this long between polls (shared machines, tests).
    std::chrono::microseconds idle_sleep{0};
    /// An empty poll ends with a PAUSE instruction (rte_pause), which leaves the core's
    /// execution units to its SMT sibling for a few dozen cycles. false: spin flat out (for
    /// measuring what the pause buys; bench/RESULTS-dpdk.md).
    bool idle_pause = true;
    /// How long stop() keeps retrying end marks into full rings before giving up on them.
    std::chrono::milliseconds stop_drain_timeout{2000};
  };

  /// Initialises EAL (once per process), configures the port, queues, mempool, tables and the
  /// exception TAP. Errors (bad EAL arguments, no such port, bad lcores, no memory ...) are
  /// reported by status() and by start(); the object is then inert.
  explicit DpdkSource(Options options);
  ~DpdkSource() override;
  DpdkSource(const DpdkSource&) = delete;
  DpdkSource& operator=(const DpdkSource&) = delete;

  /// Result of the construction.
  [[nodiscard]] const Status& status() const { return init_status_; }

  /// Starts the port and launches the RX lcores; `rings` must outlive stop() and have
  /// producers() == rx_threads().
  Status start(fileio::RingMatrix& rings) override;
  /// Pushes end marks for every installed flow, waits for the lcores, stops the port.
  /// Idempotent; also run by the destructor.
  void stop() override;
  /// Any non-RX thread. The flow listens on flow.local_port (must not be 0) of every
  /// configured address. Errors: stream already installed, port used, table full, IPv6
  /// expected source, command ring full.
  Status add_flow(const FlowSpec& flow) override;
  /// Like add_flow, on one address only (Options::addresses[address_index]): more than 65535
  /// streams need several addresses.
  Status add_flow_on(const FlowSpec& flow, unsigned address_index);
  /// Any non-RX thread. The owning lcore drops the flow and pushes exactly one kEndOfStream
  /// after the last packet it accepted for it. Unknown streams are ignored.
  void remove_flow(StreamId stream) override;
  [[nodiscard]] SourceStats stats() const override;
  [[nodiscard]] DpdkStats dpdk_stats() const;
  /// Any thread (they read only published counters and the NIC's; the telemetry thread calls
  /// them too). NIC, host-stack and pipeline counters as named counters ("dpdk_imissed",
  /// "dpdk_rx_nombuf", "dpdk_ierrors", "dpdk_arp_replies", "dpdk_nd_replies" ...) for the
  /// daemon's metrics and "/callrec/stats".
  [[nodiscard]] std::vector<SourceCounter> counters() const override;
  /// The CPUs the RX lcores run on (their EAL cpusets, sorted, unique): the daemon keeps its
  /// writer and control threads off them. Empty when construction failed.
  [[nodiscard]] std::vector<unsigned> rx_cpus() const;
  /// Any thread. Changes Options::rx_rate_limit_pps; the lcores apply it within ~100 ms.
  void set_rx_rate_limit(double pps);
  /// packets = RTP packets accepted from the right source (delivered or ring_full);
  /// wrong_source = strays. Live while installed, final once removed (kept for the last
  /// kKeptRemovedFlows removed flows). nullopt: unknown stream.
  [[nodiscard]] std::optional<FlowStats> flow_stats(StreamId stream) const override;
  [[nodiscard]] unsigned rx_threads() const override { return static_cast<unsigned>(lcores_.size()); }
  [[nodiscard]] std::string name() const override { return "dpdk"; }

  /// The port's MAC address as "aa:bb:cc:dd:ee:ff" (empty before a successful construction).
  [[nodiscard]] std::string mac_address() const { return mac_; }
  /// DPDK port id in use (valid when status() is ok).
  [[nodiscard]] std::uint16_t port_id() const { return port_id_; }
  [[nodiscard]] unsigned rx_queues() const { return rx_queues_; }
  [[nodiscard]] DpdkMemory memory() const;
  /// "flat" / "rte_hash", "rss" / "single-queue" ... for reports.
  [[nodiscard]] std::string describe() const;
  /// The zero-copy credit in force (after auto sizing); 0 with the copy hand-off.
  [[nodiscard]] unsigned zero_copy_credit() const {
    return options_.handoff == Handoff::kZeroCopy ? options_.zero_copy_credit : 0;
  }

  static constexpr std::size_t kKeptRemovedFlows = dataplane::kKeptRemovedFlows;

  struct Lcore;   // per-RX-lcore state (dataplane/dpdk/dpdk_internal.hpp)
  struct Port;    // rte objects owned by this source (dataplane/dpdk/dpdk_internal.hpp)

 private:
  enum class State : std::uint8_t { kIdle, kRunning, kStopped };
  /// Owner = RX lcore index; a flow holds its port on one address or on all of them.
  using Flows = FlowRegistry<>;
  struct Command;

  Status init();
  Status add_flow_locked(const FlowSpec& spec, unsigned address_index);
  Status post_locked(unsigned lcore, const Command& cmd);
  void reclaim_locked(unsigned lcore);
  /// The counters of the flow in `e`'s slot (live until the lcore released the slot).
  [[nodiscard]] FlowStats slot_stats(const Flows::Entry& e) const;

  Options options_;
  Status init_status_;
  std::unique_ptr<Port> port_;
  std::vector<std::unique_ptr<Lcore>> lcores_;
  std::vector<std::uint32_t> addresses_;  ///< network byte order
  std::vector<in6_addr> addresses6_;
  bool allmulticast_ = false;             ///< enabled for IPv6 neighbour discovery
  std::uint16_t port_id_ = 0;
  unsigned rx_queues_ = 0;
  bool rss_ = false;
  std::string mac_;

  // Control-side bookkeeping, guarded by control_mu_ (never taken by an lcore).
  mutable std::mutex control_mu_;
  State state_ = State::kIdle;
  /// A removed flow's slot is reusable once its lcore acknowledged the remove (until then the
  /// slot holds the flow's live counters, which flow_stats() reads).
  Flows flows_;
  std::vector<std::uint64_t> commands_posted_;  ///< per lcore
  std::atomic<std::uint64_t> end_marks_lost_{0};
  std::atomic<std::uint64_t> zero_copy_leaked_{0};
  std::atomic<std::uint64_t> stop_discarded_{0};
};

}  // namespace callrec::dataplane
