#pragma once
// A packet source: RX threads that classify RTP packets to recordings and hand them to the
// writer threads through fileio::PacketRing. The kernel-socket source (UdpSource) is the
// default; the DPDK source implements the same interface. Control-plane calls reach RX
// threads as messages (never by writing an RX thread's flow table under its feet).
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fileio/packet_ring.hpp"
#include "fileio/status.hpp"

namespace callrec::dataplane {

using fileio::StreamId;

/// One recorded RTP flow: packets to local_port are for `stream`.
struct FlowSpec {
  StreamId stream = 0;
  std::uint16_t local_port = 0;
  /// Expected source. ss_family == AF_UNSPEC: accept any source. Port 0: any port from that
  /// address.
  sockaddr_storage expected{};
  /// Latch (NAT): the source (address and port) of the first RTP packet accepted becomes the
  /// only one. With an expected address, only a packet from that *address* (any port: NAT may
  /// change it) can latch the flow; packets from other addresses before and after are strays
  /// (wrong_source), so a host that sprays the port range cannot take the recording. With
  /// expected AF_UNSPEC, the first packet from anywhere latches it (weaker: an explicit option).
  bool latch = false;
};

/// Counters of a source, summed over its RX threads (published about every 100 ms).
struct SourceStats {
  std::uint64_t rx_packets = 0;
  std::uint64_t rx_bytes = 0;
  std::uint64_t delivered = 0;      ///< pushed to a writer ring
  std::uint64_t ring_full = 0;      ///< dropped: writer ring full
  std::uint64_t unknown_flow = 0;   ///< dropped: no flow for the port
  std::uint64_t wrong_source = 0;   ///< dropped: not from the expected source (stray)
  std::uint64_t not_rtp = 0;        ///< dropped: not RTP v2 / too short / too long
  std::uint64_t policed = 0;        ///< dropped: the flow's packet rate was over its policer
  std::uint64_t rx_errors = 0;      ///< receive system-call errors
  std::uint64_t nic_missed = 0;     ///< DPDK imissed
  std::uint64_t nic_nombuf = 0;     ///< DPDK rx_nombuf
  std::uint64_t arp_replies = 0;    ///< DPDK host stack: ARP requests answered
  std::uint64_t icmp_replies = 0;   ///< DPDK host stack: ICMP echo requests answered
  std::uint64_t nd_replies = 0;     ///< DPDK host stack: IPv6 neighbour solicitations answered
  std::uint64_t icmp6_replies = 0;  ///< DPDK host stack: ICMPv6 echo requests answered
  std::uint64_t exception_path = 0; ///< DPDK: sent to the kernel (TAP)
};

/// A counter specific to one kind of source (DPDK NIC and host-stack counters ...), published
/// by the daemon as the Prometheus counter `callrec_<name>_total` and as `"<name>"` in /status.
struct SourceCounter {
  std::string name;  ///< snake_case, prefixed with the source kind: "dpdk_imissed"
  std::string help;  ///< one line for # HELP
  std::uint64_t value = 0;
  bool gauge = false;  ///< a level (exported without _total), not a count of events
};

/// Per-stream counters kept by the RX side (stray packets belong to no writer).
struct FlowStats {
  std::uint64_t packets = 0;       ///< accepted (delivered, or dropped because the ring was full)
  std::uint64_t wrong_source = 0;
  std::uint64_t policed = 0;       ///< dropped by the per-flow rate policer (flow_policer.hpp)
};

class Source {
 public:
  virtual ~Source() = default;
  /// Starts the RX threads. RX thread p is producer p of `rings` (rings.producers() must be at
  /// least rx_threads(): several sources may feed one writer pool, each on its own producers);
  /// a packet of stream s goes to ring(p, rings.writer_for(s)).
  virtual Status start(fileio::RingMatrix& rings) = 0;
  /// Stops the RX threads (after pushing end marks for every flow still installed).
  virtual void stop() = 0;
  /// Control thread. Opens/binds what the flow needs (kernel: the UDP socket) synchronously so
  /// that errors (port in use) come back here, then hands the flow to its RX thread.
  virtual Status add_flow(const FlowSpec& flow) = 0;
  /// Control thread. The owning RX thread drops the flow and pushes kEndOfStream for it into
  /// the writer's ring after the flow's last packet.
  virtual void remove_flow(StreamId stream) = 0;
  [[nodiscard]] virtual SourceStats stats() const = 0;
  /// Control thread. Counters beyond SourceStats that only this kind of source has (the kernel
  /// source has none). Names are stable: they are metric names.
  [[nodiscard]] virtual std::vector<SourceCounter> counters() const { return {}; }
  /// Control thread. Counters of a flow: live while installed; once removed (remove_flow() or
  /// stop()), its final counters while the source still remembers it (the kernel and DPDK
  /// sources keep the last kKeptRemovedFlows = 4096 removed flows, dataplane/flow_registry.hpp);
  /// nullopt for an unknown or forgotten stream.
  [[nodiscard]] virtual std::optional<FlowStats> flow_stats(StreamId stream) const = 0;
  /// Number of RX threads (= producers of the writer pool).
  [[nodiscard]] virtual unsigned rx_threads() const = 0;
  /// End marks each stream of this source gets (one per RX thread that may carry it: the lanes
  /// of a passive mirror each push one; a flow of the upload sources lives on one thread).
  [[nodiscard]] virtual unsigned end_marks_per_stream() const { return 1; }
  [[nodiscard]] virtual std::string name() const = 0;
};

}  // namespace callrec::dataplane
