#pragma once
// The passive-capture lane: one thread's worth of mirror traffic. Frames from any source
// (libpcap live, a capture file, a DPDK mirror port) go through the shared decoder
// (dataplane/decode), IP fragments and TCP streams are reassembled, and each datagram is
// classified by policy that lives here, not in the decoder:
//
//   destination endpoint announced by SDP  -> the stream the *other* party sends (its RTP)
//   else source endpoint announced by SDP  -> the stream the announcing party sends
//                                             (symmetric RTP: NAT, relays, wrong c= lines)
//   else it starts like a SIP message      -> SipSink (the call tracker, control side)
//   else                                   -> counted by kind and dropped
//
// RTP is pushed to the writer rings like the upload path's; RTCP beside a stream is counted;
// RFC 4733 telephone-events are taken out of the audio and reported as digits (they never
// reach the assembler, so they cannot split a segment).
//
// Endpoints are keyed by (family, address, port), in both directions; the newest announcement
// of an endpoint wins (ports are reused by later calls while an old call waits for its
// timeout). The lane is a dataplane::Source so the session manager stops its streams the same
// way as every other source's: remove_flow() pushes the end mark after the last packet.
//
// Thread: one thread calls everything (the control thread for libpcap and capture files; the
// tracker runs beside it and calls set_endpoint/add_stream synchronously, so a capture file
// processed at full speed is classified exactly as the same traffic live).
#include <cstdint>
#include <functional>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "dataplane/capture/capture.hpp"
#include "dataplane/decode/decode.hpp"
#include "dataplane/decode/reassembly.hpp"
#include "dataplane/source.hpp"
#include "dataplane/span/endpoint_table.hpp"
#include "dataplane/span/span_control.hpp"

namespace callrec::dataplane {

#define CALLREC_SPAN_LANE_COUNTERS(_)                                                          \
  _(rtp_delivered, "RTP packets of followed calls pushed to the writers")                     \
  _(rtp_by_source, "of which attributed by their source endpoint (NAT, relay, symmetric RTP)") \
  _(rtp_by_pair, "of which attributed as the reverse of the other direction's flow")          \
  _(rtcp, "RTCP packets beside followed streams (counted, not recorded)")                      \
  _(dtmf_packets, "RFC 4733 telephone-event packets (digits kept as catalog events)")          \
  _(not_rtp, "datagrams to a followed endpoint that are not RTP (keep-alives, STUN ...)")       \
  _(ring_full, "RTP dropped: writer ring full (live capture only; files wait)")                 \
  _(sip_udp, "SIP messages in UDP datagrams")                                                  \
  _(rtp_unattributed, "RTP-looking datagrams of no followed call")                             \
  _(rtp_held, "RTP of no call yet held for a moment (lanes on threads: its SDP may be on its way)") \
  _(rtp_rescued, "held RTP delivered once the SDP of its call reached the lane")               \
  _(udp_other, "other UDP datagrams (DNS, SNMP, MGCP ...)")                                    \
  _(tcp_other, "TCP segments that are not SIP")                                                \
  _(non_udp_tcp, "IP packets of other protocols, non-IP frames, undecodable frames")

enum SpanCounter : unsigned {
#define CALLREC_SPAN_ENUM(name, help) kS_##name,
  CALLREC_SPAN_LANE_COUNTERS(CALLREC_SPAN_ENUM)
#undef CALLREC_SPAN_ENUM
      kSpanCounterCount
};
inline constexpr std::array<decode::CounterInfo, kSpanCounterCount> kSpanCounterInfo = {{
#define CALLREC_SPAN_INFO(name, help) {#name, help},
    CALLREC_SPAN_LANE_COUNTERS(CALLREC_SPAN_INFO)
#undef CALLREC_SPAN_INFO
}};

struct SpanLaneOptions {
  unsigned producer = 0;  ///< this lane's producer index in the ring matrix
  bool lossless = false;  ///< capture files: wait for ring space instead of dropping
  decode::ReassemblyLimits limits;
  /// Lanes on threads of their own (SpanLaneGroup) learn of a call's SDP a moment after its
  /// RTP may have started: RTP-looking datagrams of no followed call are held this long (packet
  /// time), at most hold_packets of them in hold_bytes, and delivered by rescue_held() when
  /// an endpoint of theirs is set. 0: not held (the tracker runs on the lane's thread).
  std::uint64_t hold_ns = 0;
  std::size_t hold_packets = 16384;
  std::size_t hold_bytes = 4u << 20;
  /// Keep a list of the streams whose statistics changed (take_updates()).
  bool track_updates = false;
};

class SpanLane final : public SpanControl {
 public:
  explicit SpanLane(SpanLaneOptions o);
  ~SpanLane() override;

  void set_sink(SpanSink* sink) { sink_ = sink; }

  // ---- Source ---------------------------------------------------------------------------
  Status start(fileio::RingMatrix& rings) override;
  void stop() override;
  /// Not used by passive capture (streams are added with add_stream); returns an error.
  Status add_flow(const FlowSpec& flow) override;
  void remove_flow(StreamId stream) override;
  [[nodiscard]] SourceStats stats() const override;
  [[nodiscard]] std::vector<SourceCounter> counters() const override;
  /// The values of counters(), in its order, without building names (a lane thread publishes them).
  void counter_values(std::vector<std::uint64_t>& out) const;
  [[nodiscard]] std::optional<FlowStats> flow_stats(StreamId stream) const override;
  [[nodiscard]] unsigned rx_threads() const override { return 1; }
  [[nodiscard]] std::string name() const override { return "span"; }

  // ---- the tracker's side (same thread) ----------------------------------------------------
  /// A stream to follow; `dtmf_pts`: payload types that are telephone-events (bit per pt),
  /// `dtmf_clock` their RTP clock (durations in ms).
  /// `sibling`: the other direction of the same call (0: none). A flow attributed to a stream
  /// that already carries another flow, when it is the reverse of that flow (it goes to the
  /// address the first one comes from) and the sibling has nothing yet, is the sibling's: SDP
  /// c= lines that name a relay or a gateway instead of the party make both flows of a call
  /// match one party's endpoint, and the pair tells them apart.
  void add_stream(StreamId s, const std::array<std::uint64_t, 2>& dtmf_pts, std::uint32_t dtmf_clock = 8000,
                  StreamId sibling = 0) override;
  /// Packets to `ep` belong to `to_stream`, packets from `ep` to `from_stream` (0: none).
  /// rtcp: the endpoint is an RTCP port (packets counted on the stream, not recorded).
  void set_endpoint(const decode::Endpoint& ep, StreamId to_stream, StreamId from_stream, bool rtcp) override;
  /// Forgets `ep` if it still points at `stream` (to or from).
  void clear_endpoint(const decode::Endpoint& ep, StreamId stream) override;
  [[nodiscard]] const SpanStreamStats* stream_stats(StreamId s) const;
  [[nodiscard]] std::optional<SpanStreamStats> stats_of(StreamId s) const override;
  /// Delivers the held datagrams (SpanLaneOptions::hold_ns) that the endpoints set since the
  /// last call attribute to a stream, oldest first (call after a batch of set_endpoint()).
  /// `before`: only those captured before this packet time (call it with the time of the SIP
  /// message behind a change of the endpoints before applying the change: held packets older
  /// than that message are matched as they would have been, had its SDP come in time).
  void rescue_held(std::uint64_t before = ~std::uint64_t{0});
  /// Appends the streams whose statistics changed since the last call (track_updates).
  void take_updates(std::vector<std::pair<StreamId, SpanStreamStats>>& out);
  [[nodiscard]] bool has_updates() const { return !updated_.empty(); }
  [[nodiscard]] std::size_t held() const { return hold_live_; }

  // ---- input ---------------------------------------------------------------------------
  /// One captured frame. ts_ns: capture time, Unix ns (the packet clock of everything).
  void on_frame(std::uint32_t link, std::span<const std::byte> frame, std::uint64_t ts_ns);
  /// A burst of frames (up to capture::FrameBurst::kMax), with the same result as on_frame()
  /// for each in turn: all are decoded first, then the endpoint-table slots of their
  /// destinations are prefetched, then the states of the streams they hit, then each is
  /// classified and delivered in order (a SIP message in the burst that moves an endpoint is
  /// seen by the packets after it: the prefetches are only hints).
  void on_burst(std::span<const capture::Frame> frames);
  /// Gathers `f` into `burst` (a copy), handing the burst over first when it has no room, and
  /// `f` alone when it is larger than the whole arena. The caller runs run_burst() when the
  /// burst is full and whenever it must see the frames processed (a tick, the end of input).
  void gather(capture::FrameBurst& burst, const capture::Frame& f);
  /// on_burst() of what `burst` holds, then clears it and flushes the rings.
  void run_burst(capture::FrameBurst& burst);
  /// Makes pushed packets visible to the writers (call after each burst).
  void flush();
  /// Expires reassembly state and held datagrams by packet time (about once a second of
  /// packet time; lanes that hold datagrams: every few milliseconds).
  void expire(std::uint64_t now_ns);

  [[nodiscard]] const decode::Counters& decode_counters() const { return dc_; }
  [[nodiscard]] const decode::ReassemblyCounters& reassembly_counters() const { return rc_; }
  [[nodiscard]] std::uint64_t counter(SpanCounter c) const { return sc_[c]; }
  [[nodiscard]] std::uint64_t frames() const { return frames_; }
  [[nodiscard]] std::uint64_t bytes() const { return bytes_; }
  [[nodiscard]] std::size_t endpoints() const { return eps_.size(); }
  [[nodiscard]] std::size_t fragments_pending() const { return ip_.pending(); }
  [[nodiscard]] std::size_t tcp_streams() const { return tcp_.streams(); }

 private:
  struct StreamState;
  struct EpEntry {
    StreamId to = 0, from = 0;
    bool rtcp = false;
    StreamState* to_st = nullptr;    ///< cached: streams_ nodes are stable, and an endpoint is
    StreamState* from_st = nullptr;  ///< cleared before its stream is erased (remove_flow)
  };
  struct StreamState {
    SpanStreamStats st;
    std::array<std::uint64_t, 2> dtmf_pts{};
    std::uint32_t dtmf_clock = 8000;
    StreamId sibling = 0;
    bool in_event = false;
    std::uint32_t event_ts = 0;  ///< RTP timestamp of the event being reported (dedup of E retransmits)
    bool event_done = false;
    bool updated = false;  ///< listed in updated_ (track_updates)
    std::vector<decode::Endpoint> eps;  ///< endpoints pointing at this stream (for removal)
  };
  static void prefetch_state(const StreamState* st);
  void on_decoded(decode::Packet& p, decode::Result r, std::uint64_t ts_ns);
  void on_datagram(const decode::Packet& p, std::uint64_t ts_ns);
  /// Delivers (or counts as RTCP) a datagram of a followed endpoint; false: no followed endpoint.
  bool attribute(const decode::Packet& p, std::uint64_t ts_ns);
  void hold(const decode::Packet& p, std::uint64_t ts_ns);
  void drop_held_front();
  void touch(StreamId s, StreamState& ss) {
    if (opts_.track_updates && !ss.updated) {
      ss.updated = true;
      updated_.push_back(s);
    }
  }
  void on_tcp(const decode::Packet& p, std::uint64_t ts_ns);
  void deliver(StreamId s, StreamState& ss, const decode::Packet& p, bool by_source, std::uint64_t ts_ns);
  void dtmf(StreamId s, StreamState& ss, std::span<const std::byte> rtp, std::uint64_t ts_ns);
  bool push(StreamId s, fileio::RecordKind kind, std::uint64_t ts_ns, std::span<const std::byte> data);

  SpanLaneOptions opts_;
  SpanSink* sink_ = nullptr;
  fileio::RingMatrix* rings_ = nullptr;
  decode::Counters dc_;
  decode::ReassemblyCounters rc_;
  std::array<std::uint64_t, kSpanCounterCount> sc_{};
  decode::IpReassembler ip_;
  decode::TcpReassembler tcp_;
  EndpointTable<EpEntry> eps_;
  std::unordered_map<StreamId, StreamState> streams_;
  std::uint64_t frames_ = 0, bytes_ = 0;
  bool dirty_ = false;
  std::vector<StreamId> updated_;  ///< streams whose stats changed (track_updates)
  /// Held datagrams: a ring of entries over a ring of bytes (each datagram contiguous).
  struct Held {
    std::uint64_t ts_ns = 0;
    decode::Endpoint src, dst;
    std::size_t off = 0;
    std::uint32_t len = 0;
    bool live = false;
  };
  std::vector<Held> hold_;
  std::vector<std::byte> hold_bytes_;
  std::size_t hold_head_ = 0, hold_count_ = 0, hold_live_ = 0;  ///< oldest entry, entries, live ones
  std::size_t hold_wr_ = 0;  ///< byte ring: where the next datagram goes
  std::vector<decode::Endpoint> rescue_eps_;  ///< endpoints set since the last full rescue_held()
};

}  // namespace callrec::dataplane
