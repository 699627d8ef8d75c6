#pragma once
// The two sides of a passive-capture lane as the call tracker sees them, whatever runs the
// lanes: one lane on the tracker's own thread (capture files, libpcap; SpanLane) or several
// poll-mode lanes on threads of their own (a DPDK mirror; SpanLaneGroup).
//
//   lanes -> tracker: SpanSink (SIP datagrams, SIP bytes of TCP streams, digits)
//   tracker -> lanes: SpanControl (streams to follow, the endpoints that lead to them)
#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

#include "dataplane/decode/decode.hpp"
#include "dataplane/source.hpp"

namespace callrec::dataplane {

/// Where SIP and in-call events go (the call tracker). Called on the tracker's thread.
class SpanSink {
 public:
  virtual ~SpanSink() = default;
  /// One UDP datagram that starts like a SIP message.
  virtual void on_sip(std::string_view msg, const decode::Endpoint& src, const decode::Endpoint& dst,
                      std::uint64_t ts_ns) = 0;
  /// New in-order bytes of a followed TCP stream (SIP over TCP): the sink frames messages from
  /// the front and returns how many bytes it consumed (complete messages and skipped garbage).
  /// lost: bytes were skipped before `bytes` (the sink resynchronises on a start line).
  virtual std::size_t on_sip_stream(std::string_view bytes, bool lost, const decode::Endpoint& src,
                                    const decode::Endpoint& dst, std::uint64_t ts_ns) = 0;
  /// A telephone-event ended (digit '0'-'9', '*', '#', 'A'-'D', or "E<n>" for others).
  virtual void on_dtmf(StreamId stream, std::string_view digit, std::uint32_t duration_ms, std::uint64_t ts_ns) = 0;
};

/// What the lanes know of one followed stream (the catalog's streams row is made from it).
struct SpanStreamStats {
  std::uint64_t packets = 0;  ///< RTP pushed to the writer
  std::uint64_t rtcp = 0;
  std::uint64_t dtmf = 0;     ///< digits
  std::uint64_t first_ns = 0, last_ns = 0;  ///< packet time (Unix ns) of first/last RTP
  decode::Endpoint src;       ///< source of the latest RTP packet
  decode::Endpoint dst;       ///< destination of the first RTP packet
  bool by_source = false;     ///< some packets were attributed by their source endpoint
  bool moved = false;         ///< packets came from more than one source
};

/// Adds what another lane saw of the same stream (its media moved to an address pair that
/// another lane carries): counts add up, the first packet is the earlier one, the source the
/// latest one; two lanes with packets from different sources mean the media moved.
inline void merge_stream_stats(SpanStreamStats& into, const SpanStreamStats& from) {
  into.rtcp += from.rtcp;
  into.dtmf += from.dtmf;
  into.by_source = into.by_source || from.by_source;
  into.moved = into.moved || from.moved;
  if (from.packets == 0) return;
  if (into.packets == 0) {
    const std::uint64_t rtcp = into.rtcp, dtmf = into.dtmf;
    const bool by_source = into.by_source, moved = into.moved;
    into = from;
    into.rtcp = rtcp;
    into.dtmf = dtmf;
    into.by_source = by_source;
    into.moved = moved;
    return;
  }
  if (!(into.src == from.src)) into.moved = true;
  into.packets += from.packets;
  if (from.first_ns < into.first_ns) {
    into.first_ns = from.first_ns;
    into.dst = from.dst;
  }
  if (from.last_ns > into.last_ns) {
    into.last_ns = from.last_ns;
    into.src = from.src;
  }
}

/// The tracker's hold on the lanes. Control thread. Source: the session manager ends a
/// stream with remove_flow() (every lane pushes its end mark after its last packet of it).
class SpanControl : public Source {
 public:
  /// A stream to follow; `dtmf_pts`: payload types that are telephone-events (bit per pt),
  /// `dtmf_clock` their RTP clock (durations in ms). `sibling`: the other direction of the same
  /// call (0: none); see SpanLane::add_stream.
  virtual void add_stream(StreamId s, const std::array<std::uint64_t, 2>& dtmf_pts, std::uint32_t dtmf_clock,
                          StreamId sibling) = 0;
  /// Packets to `ep` belong to `to_stream`, packets from `ep` to `from_stream` (0: none).
  /// rtcp: the endpoint is an RTCP port (packets counted on the stream, not recorded).
  virtual void set_endpoint(const decode::Endpoint& ep, StreamId to_stream, StreamId from_stream, bool rtcp) = 0;
  /// Forgets `ep` if it still points at `stream` (to or from).
  virtual void clear_endpoint(const decode::Endpoint& ep, StreamId stream) = 0;
  /// What the lanes have seen of a followed stream (lanes on threads of their own report every
  /// 100 ms: the figures may lag the wire by that much). nullopt: not followed.
  [[nodiscard]] virtual std::optional<SpanStreamStats> stats_of(StreamId s) const = 0;
};

}  // namespace callrec::dataplane
