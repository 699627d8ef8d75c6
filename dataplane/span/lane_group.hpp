#pragma once
// Passive-capture lanes on threads of their own (the DPDK mirror's poll-mode lanes).
//
// Each lane is a SpanLane on its own thread that polls its share of the mirror (an RSS queue,
// or what the software spread handed it: both directions and every fragment of an address pair
// on one lane, so the lane's IP and TCP reassembly and its pairing of the two directions of a
// call see all they need). The call tracker stays on the control thread:
//
//   lanes -> control: one SPSC event ring per lane: SIP datagrams, SIP bytes of TCP streams,
//                     digits, and every 100 ms the statistics of the streams that changed;
//                     poll_events() hands them to the tracker in packet-time order.
//   control -> lanes: one SPSC command ring per lane: every lane gets every add_stream /
//                     set_endpoint / clear_endpoint / remove_flow, in the tracker's order (a
//                     call's media may move to an address pair another lane carries). A full
//                     ring never blocks the control thread: the commands wait in a backlog
//                     on the control side, in order, and go at the next poll_events().
//
// RTP that reaches a lane before its call's SDP (a few microseconds: the 200 OK went through
// the control thread) is held for a moment (SpanLaneOptions::hold_ns) and delivered, oldest
// first, as soon as the endpoint is set. Every lane pushes an end mark for every removed
// stream: the writer finishes a stream at the last of them (end_marks_per_stream()).
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <thread>
#include <unordered_map>
#include <vector>

#include "dataplane/capture/capture.hpp"
#include "dataplane/span/span_control.hpp"
#include "dataplane/span/span_lane.hpp"
#include "fileio/packet_ring.hpp"

namespace callrec::dataplane {

struct LaneGroupOptions {
  unsigned lanes = 1;
  unsigned first_producer = 0;  ///< lane i is producer first_producer + i of the ring matrix
  /// Each lane's own options (reassembly limits, the hold of RTP of no call yet: 0.5 s of
  /// packet time by default); the group sets producer and track_updates itself.
  SpanLaneOptions lane = [] {
    SpanLaneOptions o;
    o.hold_ns = 500'000'000;
    return o;
  }();
  std::size_t command_ring_bytes = 1u << 20;
  std::size_t event_ring_bytes = 8u << 20;
  /// Statistics of the streams that changed, to the control thread this often. The tracker
  /// needs them for its timeouts (seconds) and the catalog row a BYE tail (2 s) after the
  /// last packet; every 5 ms cost the lanes 10% of their cycles at 10,000 calls.
  std::chrono::microseconds report_interval{100'000};
  unsigned idle_sleep_us = 0;  ///< an idle lane sleeps this long after 1024 empty polls (0: spins)
  /// TCP streams with a partial SIP message buffered on the control side (oldest dropped).
  std::size_t max_tcp_partial = 4096;
};

/// Frames for lane `lane`, at most `max`, valid until the same lane's next call; 0: none now.
/// Called on that lane's thread only.
using LanePoll = std::function<unsigned(unsigned lane, capture::Frame* out, unsigned max)>;
/// Called first on each lane's thread (DPDK: registers the thread as an lcore).
using LaneInit = std::function<void(unsigned lane)>;

#define CALLREC_LANE_GROUP_COUNTERS(_)                                                         \
  _(events_dropped, "lane -> control events dropped: the control thread fell behind")        \
  _(sip_truncated, "SIP messages longer than a lane event (64 KiB) handed on truncated")      \
  _(tcp_partial_dropped, "partial SIP messages of TCP streams dropped (over the cap)")       \
  _(command_waits, "commands queued on the control side: a lane's command ring was full")     \
  _(commands_dropped, "commands dropped: a million were queued for one lane already (a stuck lane)")

enum LaneGroupCounter : unsigned {
#define CALLREC_LG_ENUM(name, help) kLG_##name,
  CALLREC_LANE_GROUP_COUNTERS(CALLREC_LG_ENUM)
#undef CALLREC_LG_ENUM
      kLaneGroupCounterCount
};

class SpanLaneGroup final : public SpanControl {
 public:
  SpanLaneGroup(LaneGroupOptions o, LanePoll poll, LaneInit init = {});
  ~SpanLaneGroup() override;
  SpanLaneGroup(const SpanLaneGroup&) = delete;
  SpanLaneGroup& operator=(const SpanLaneGroup&) = delete;

  // ---- Source (control thread) ------------------------------------------------------------
  Status start(fileio::RingMatrix& rings) override;
  /// Stops the lanes after they applied every command sent (end marks of removed streams are
  /// in), pushes end marks for the streams still followed, joins the threads.
  void stop() override;
  Status add_flow(const FlowSpec& flow) override;
  void remove_flow(StreamId stream) override;
  [[nodiscard]] SourceStats stats() const override;
  /// The lanes' counters summed (published by each lane every 100 ms), and the group's own.
  [[nodiscard]] std::vector<SourceCounter> counters() const override;
  [[nodiscard]] std::optional<FlowStats> flow_stats(StreamId stream) const override;
  [[nodiscard]] unsigned rx_threads() const override { return o_.lanes; }
  [[nodiscard]] unsigned end_marks_per_stream() const override { return o_.lanes; }
  [[nodiscard]] std::string name() const override { return "span-lanes"; }

  // ---- SpanControl (control thread) ----------------------------------------------------------
  void add_stream(StreamId s, const std::array<std::uint64_t, 2>& dtmf_pts, std::uint32_t dtmf_clock,
                  StreamId sibling) override;
  void set_endpoint(const decode::Endpoint& ep, StreamId to_stream, StreamId from_stream, bool rtcp) override;
  void clear_endpoint(const decode::Endpoint& ep, StreamId stream) override;
  [[nodiscard]] std::optional<SpanStreamStats> stats_of(StreamId s) const override;

  /// Control thread: hands what the lanes found since the last call to `sink` (SIP, TCP bytes,
  /// digits; sorted by packet time across lanes) and takes their statistics reports. Returns
  /// the number of events.
  std::size_t poll_events(SpanSink& sink);
  /// Control thread, at shutdown: the lanes stop reading input, report the statistics of every
  /// stream, and their last events are handed to `sink` (so the calls ended next are complete).
  /// Returns false if a lane did not answer within `timeout`.
  bool quiesce(SpanSink& sink, std::chrono::milliseconds timeout);

  [[nodiscard]] std::uint64_t frames() const;  ///< frames the lanes decoded (published)
  [[nodiscard]] std::uint64_t counter(LaneGroupCounter c) const { return c_[c]; }

 private:
  struct Lane;
  void run(unsigned i);
  void command(std::span<const std::byte> cmd, StreamId stream);
  /// Moves what the backlogs hold into the command rings and publishes them.
  void publish_commands();
  void apply(Lane& l, std::span<const std::byte> cmd, StreamId stream);
  void report(Lane& l);
  void publish_counters(Lane& l);

  LaneGroupOptions o_;
  LanePoll poll_;
  LaneInit init_;
  std::vector<std::unique_ptr<Lane>> lanes_;
  std::vector<SourceCounter> names_;  ///< a lane's counters (names, help, kind)
  std::atomic<bool> stop_{false};
  bool started_ = false;
  // control side
  std::array<std::uint64_t, kLaneGroupCounterCount> c_{};
  /// Packet time of the event the sink is handling (commands carry it); none outside poll_events.
  std::uint64_t event_ts_ = ~std::uint64_t{0};
  std::unordered_map<StreamId, std::vector<SpanStreamStats>> stats_;  ///< per stream, per lane
  std::map<StreamId, FlowStats> removed_;                             ///< last removed streams
  std::list<StreamId> removed_order_;
  struct TcpPartial {
    std::string bytes;
    unsigned lane = 0;
    std::list<std::pair<decode::Endpoint, decode::Endpoint>>::iterator age;
  };
  struct PairHash {
    std::size_t operator()(const std::pair<decode::Endpoint, decode::Endpoint>& p) const noexcept {
      return decode::EndpointHash{}(p.first) * 31 + decode::EndpointHash{}(p.second);
    }
  };
  std::unordered_map<std::pair<decode::Endpoint, decode::Endpoint>, TcpPartial, PairHash> tcp_;
  std::list<std::pair<decode::Endpoint, decode::Endpoint>> tcp_age_;
};

}  // namespace callrec::dataplane
