#pragma once
// The kernel-socket packet source: one UDP socket per recorded flow, served by N RX threads.
//
// Threads and ownership
// - Control thread(s): add_flow / remove_flow / flow_stats / local_port / stats. add_flow opens
//   and binds the flow's socket synchronously (so "port in use" is returned to the caller), then
//   hands {fd, flow} to one RX thread as a message. The control side never touches an RX
//   thread's flow table; it only keeps its own bookkeeping (dataplane/flow_registry.hpp:
//   stream -> thread, slot, port, counters; final counters of recently removed flows).
// - RX thread p (producer p of the RingMatrix): owns an epoll set, a preallocated flow table
//   indexed by slot, its receive buffers and its counters. Loop: commands (once per
//   iteration, only when flagged) -> epoll_wait (10 ms) -> recvmmsg bursts per ready socket
//   -> source check (spec control-protocol point 5) -> RTP v2 check -> per-flow rate policer
//   (flow_policer.hpp) -> push to
//   ring(p, writer_for(stream)) -> publish once per burst. Counters are published every 100 ms.
//
// Why no SO_REUSEADDR by default: on Linux, a UDP socket with SO_REUSEADDR lets a *second*
// socket with SO_REUSEADDR bind the same address:port, and unicast datagrams then go to the
// last one bound. A stray process (or a bug allocating a port twice) would silently steal a
// recording's RTP instead of failing with EADDRINUSE. UDP has no TIME_WAIT, so the option buys
// nothing here; it is available as Options::reuse_address for deployments that need it.
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
#include <unordered_map>
#include <vector>

#include "dataplane/flow_registry.hpp"
#include "dataplane/source.hpp"

namespace callrec::dataplane {

class UdpSource final : public Source {
 public:
  enum class Placement : std::uint8_t {
    kLeastLoaded,   ///< the RX thread with the fewest flows (ties: stream % N)
    kStreamModulo,  ///< stream % N
  };

  struct Options {
    unsigned rx_threads = 1;
    /// Local address every flow socket binds (with the flow's port). AF_UNSPEC = 0.0.0.0.
    /// An AF_INET6 address binds dual-stack (IPV6_V6ONLY off); IPv4 peers then appear as
    /// v4-mapped addresses, and AF_INET expected sources are matched accordingly.
    sockaddr_storage bind_address{};
    int rcvbuf_bytes = 256 * 1024;  ///< SO_RCVBUF per socket (the kernel caps at rmem_max)
    unsigned burst = 32;            ///< recvmmsg vlen (1..256)
    /// Bursts read from one socket per epoll round before moving to the next ready socket
    /// (fairness; a socket with more data stays ready and is served next round).
    unsigned bursts_per_socket = 4;
    std::vector<int> cpus;  ///< RX thread i is pinned to cpus[i % size]; empty: not pinned
    unsigned max_flows_per_thread = 16384;  ///< size of each RX thread's preallocated table
    Placement placement = Placement::kLeastLoaded;
    bool reuse_address = false;  ///< SO_REUSEADDR (see the header comment before enabling)
    /// Per-flow packet-rate policer (flow_policer.hpp): packets a flow sends beyond
    /// max_stream_pps sustained / stream_burst at once are dropped and counted (policed).
    /// 0: off (the library default; callrecd sets --max-stream-pps).
    std::uint32_t max_stream_pps = 0;
    std::uint32_t stream_burst = 500;
    /// How long stop() keeps retrying end marks into full rings before giving up on them.
    std::chrono::milliseconds stop_drain_timeout{2000};
  };

  /// Datagrams larger than this are truncated by the kernel and counted as not_rtp.
  static constexpr std::size_t kMaxDatagram = 2048;

  explicit UdpSource(Options options);
  ~UdpSource() override;
  UdpSource(const UdpSource&) = delete;
  UdpSource& operator=(const UdpSource&) = delete;

  /// Starts the RX threads; `rings` must outlive stop() and have producers() == rx_threads().
  Status start(fileio::RingMatrix& rings) override;
  /// Pushes end marks for every installed flow, joins the RX threads, closes the sockets.
  /// Idempotent; also run by the destructor.
  void stop() override;
  /// Any non-RX thread (serialized internally). Opens a UDP socket bound to
  /// bind_address:flow.local_port (port 0: a kernel-chosen port, see local_port()). Errors:
  /// stream already installed, port already used by this source, table full, or a failed
  /// system call (message names the port; EADDRINUSE from bind is returned as such).
  Status add_flow(const FlowSpec& flow) override;
  /// Any non-RX thread. Unknown streams are ignored. The owning RX thread reads the socket
  /// one last time, closes it, and pushes exactly one kEndOfStream after the last packet.
  void remove_flow(StreamId stream) override;
  [[nodiscard]] SourceStats stats() const override;
  [[nodiscard]] unsigned rx_threads() const override { return static_cast<unsigned>(threads_.size()); }
  [[nodiscard]] std::string name() const override { return "udp"; }

  /// Counters of a flow, as last published by its RX thread (after each service of its
  /// socket). packets = RTP packets accepted from the right source (delivered, or dropped
  /// because the ring was full); wrong_source = strays dropped; policed = over the rate. Live
  /// while installed, final once removed or stopped (kept for the last kKeptRemovedFlows
  /// removed flows, per the Source contract). nullopt: unknown stream.
  [[nodiscard]] std::optional<FlowStats> flow_stats(StreamId stream) const override;
  /// The local UDP port of an installed flow (useful when FlowSpec::local_port was 0); 0 if
  /// the stream is not installed.
  [[nodiscard]] std::uint16_t local_port(StreamId stream) const;
  /// End marks stop() could not push before stop_drain_timeout (writer not consuming).
  [[nodiscard]] std::uint64_t end_marks_lost() const { return end_marks_lost_.load(std::memory_order_relaxed); }

  struct RxThread;      // per-thread state (defined in udp_source.cpp)
  struct FlowCounters;  // per-flow published counters

 private:
  enum class State : std::uint8_t { kIdle, kRunning, kStopped };
  /// Owner = RX thread; payload = the flow's published counters (shared with the RX thread).
  using Flows = FlowRegistry<std::shared_ptr<FlowCounters>>;

  /// A port whose socket the RX thread has not closed yet (its remove command is queued).
  struct ClosingPort {
    unsigned thread = 0;
    std::uint64_t seq = 0;  ///< done when the thread's commands_done reaches seq
  };

  struct Command;  // control -> RX thread message (defined in udp_source.cpp)
  void post_command_locked(unsigned thread, Command&& cmd);
  Status wait_port_closed_locked(std::uint16_t port);
  unsigned pick_thread_locked(StreamId stream) const;
  void reclaim_locked(unsigned thread);

  Options options_;
  Status init_status_;
  std::vector<std::unique_ptr<RxThread>> threads_;
  std::atomic<std::uint64_t> end_marks_lost_{0};

  // Control-side bookkeeping, guarded by control_mu_ (never taken by RX threads).
  mutable std::mutex control_mu_;
  State state_ = State::kIdle;
  /// Slots are reusable at once: an add to the slot is queued behind the remove.
  Flows flows_;
  std::unordered_map<std::uint16_t, ClosingPort> closing_ports_;
  std::vector<std::uint64_t> commands_posted_;  ///< per thread
};

}  // namespace callrec::dataplane
