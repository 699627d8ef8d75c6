#pragma once
// Per-stream RTP assembly in front of the writer (spec decision 2):
// - puts packets back in sequence order inside a small reorder window;
// - drops duplicates (and packets too late to be placed), counting each;
// - fills sequence gaps with codec silence (PCMA 0xD5, PCMU 0xFF) up to max_gap_fill packets,
//   built from the previous packet's header with the missing seq and timestamp;
// - fills a gap only when the packets' arrival times back it (media-time credit, below): a
//   sequence jump the clock does not back is skipped (counted lost, `unbacked_jumps`, `resyncs`);
// - begins a new segment only for a *lasting* format change (packet length or payload type):
//   a new format is adopted after `format_confirm` (default 4, i.e. 80 ms at 20 ms ptime)
//   consecutive in-sequence packets of one SSRC carry it. Those candidate packets are held and
//   written once the change is confirmed, so a real change loses nothing. If the old format
//   comes back first, the candidates are dropped (counted `format_flaps`) and their sequence
//   positions become ordinary losses (silence in the old format). Candidates still pending at
//   flush() (stop, pause) are dropped the same way;
// - caps segment changes over time: a token bucket on arrival time allows `segment_burst`
//   (default 4) changes at once, then one per `segment_interval_ms` (default 10 s); a confirmed
//   change beyond that is refused and its packets dropped (counted `segment_limited`);
// - handles 16-bit sequence and 32-bit timestamp wrap-around, and re-synchronises on an SSRC
//   change or a sequence jump that two consecutive packets confirm.
// Packets whose payload type is not G.711 (comfort noise, telephone-event ...) are not stored:
// they are counted as `other_payload` and their sequence numbers become silence.
//
// Media-time credit (gap fill amplification, issue 9 item 4). push() takes each packet's
// arrival time (CLOCK_MONOTONIC ns). credit += time elapsed since the previous push; every
// emitted packet, real or silence, costs one ptime (increment / 8000 s). A gap of g packets is
// filled only if credit >= g * ptime - 1.5 ptime (jitter tolerance: the packet after the gap may
// arrive up to 30 ms early at 20 ms ptime). Before time is added the credit is raised to at
// least -2 ptime (a sender faster than real time builds no lasting debt: its real packets are
// written 1:1 anyway) and it never exceeds (max_gap_fill + reorder_window + 2) ptime. The
// tolerance is below the debt floor, so silence can never be made for free: over any run the
// silence written is at most the arrival time not covered by real packets plus that cap. A
// sender at 50 pps that jumps the sequence by 51 per packet is written about 1:1; a real loss
// burst (the packet after it arrives late by the burst's length) is filled. flush() (stop,
// pause) has no new arrival: holes between held packets (at most reorder_window - 1) are
// filled on the same rule with the credit the held packets brought; then the credit is reset.
//
// Owned by one thread. No allocation per packet once the first packet sized the window (the
// candidate buffer grows geometrically when a larger candidate format is seen: a few times per
// stream at most).
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "fileio/record_format.hpp"

namespace callrec::fileio {

/// What each RTP payload type of a stream is (passive capture and SIPREC: from the SDP). Without
/// one, the static G.711 types (0 PCMU, 8 PCMA) are audio and every other type is dropped.
struct PayloadMap {
  enum class Kind : std::uint8_t { kUnknown, kAudio, kTelephoneEvent, kComfortNoise };
  struct Entry {
    Kind kind = Kind::kUnknown;
    char name[24] = {};            ///< SDP encoding name as stored in the record header ("G722")
    std::uint32_t clock = 8000;    ///< RTP clock rate, Hz
    /// Timestamp step per payload byte (G.711 and G.722: 1, G.729: 8); 0: the step is
    /// `fixed_increment` whatever the size (frame codecs).
    std::uint32_t ts_per_byte = 1;
    std::uint32_t fixed_increment = 0;
    bool has_silence = false;      ///< gaps may be filled with `silence` bytes (G.711 only)
    std::uint8_t silence = 0;
  };
  Entry entries[128];
  /// Sets pt from an SDP encoding name and clock (ptime_ms for frame codecs). Known names get
  /// their properties (PCMA/PCMU silence, G722/G729 steps, telephone-event, CN).
  void set(std::uint8_t pt, std::string_view encoding, std::uint32_t clock, std::uint32_t ptime_ms = 20);
  /// The map of the static types a G.711-only stream uses (0, 8, 13 as CN).
  static PayloadMap g711();
};

struct SdesCrypto;  // fileio/srtp.hpp

struct AssemblerOptions {
  std::uint16_t reorder_window = 8;   ///< packets held while waiting for a missing one (1..256)
  std::uint32_t max_gap_fill = 50;    ///< longest gap filled with silence (packets); longer: not filled
  std::uint32_t resync_after = 3000;  ///< a forward jump beyond this (packets) is a new stream
  std::uint32_t format_confirm = 4;   ///< packets of a new format that make a change lasting (1..16)
  std::uint32_t segment_burst = 4;    ///< format changes allowed at once (>= 1)
  std::uint32_t segment_interval_ms = 10000;  ///< then one change per this long; 0: no cap
  std::shared_ptr<const PayloadMap> payloads;  ///< null: G.711 static types only
  /// Non-null: the stream arrives as SRTP with this key (the sender's a=crypto); the writer
  /// thread decrypts each packet before assembly (fileio/srtp.hpp) and counts what fails.
  std::shared_ptr<const SdesCrypto> srtp;
};

struct AssemblerCounters {
  std::uint64_t received = 0;      ///< packets given to push()
  std::uint64_t written = 0;       ///< real packets emitted
  std::uint64_t lost = 0;          ///< sequence numbers never received
  std::uint64_t filled = 0;        ///< silence packets emitted (<= lost)
  std::uint64_t duplicate = 0;     ///< dropped: already received
  std::uint64_t reordered = 0;     ///< received out of order and put back in place
  std::uint64_t late = 0;          ///< dropped: arrived after its place was filled/passed
  std::uint64_t invalid = 0;       ///< dropped: not RTP v2, or empty payload
  std::uint64_t other_payload = 0; ///< dropped: payload type not PCMU/PCMA
  std::uint64_t segments = 0;      ///< segments begun (format changes + the first)
  std::uint64_t resyncs = 0;       ///< sequence re-synchronisations (SSRC change, big jump,
                                   ///< a jump the arrival clock does not back)
  std::uint64_t unbacked_jumps = 0;   ///< gaps not filled: arrival time did not back them
  std::uint64_t format_flaps = 0;     ///< dropped: packets of a format change that did not last
  std::uint64_t segment_limited = 0;  ///< dropped: a confirmed format change over the segment cap
  std::uint64_t srtp_failed = 0;      ///< dropped: SRTP authentication failed, replayed, or no key
};

/// The format of a segment: every packet of it has exactly rtp_len bytes.
struct SegmentFormat {
  Codec codec;              ///< G.711 codecs; other codecs: kPcmu with pt naming them in the map
  std::uint32_t rtp_len;
  std::uint32_t increment;  ///< timestamp step per packet (G.711: payload bytes)
  std::uint8_t pt = 0;      ///< the payload type
};

/// Receives the assembler's output, in playout order.
class AssemblerSink {
 public:
  virtual ~AssemblerSink() = default;
  /// A new segment begins; the packets after it have this format.
  virtual void on_segment(const SegmentFormat& fmt) = 0;
  virtual void on_packet(std::span<const std::byte> pkt) = 0;
};

class StreamAssembler {
 public:
  explicit StreamAssembler(AssemblerOptions opts = {});

  /// Feeds one received RTP packet (copied if it must wait) that arrived at rx_ns
  /// (CLOCK_MONOTONIC ns, non-decreasing per stream; an earlier value counts as no time
  /// elapsed). May emit zero or more packets.
  void push(std::span<const std::byte> pkt, AssemblerSink& sink, std::uint64_t rx_ns);
  /// Emits every held packet (filling holes between them) and forgets the sequence state:
  /// call at stop, and on pause (so a resume does not fill the paused time).
  void flush(AssemblerSink& sink);

  [[nodiscard]] const AssemblerCounters& counters() const { return c_; }
  [[nodiscard]] std::optional<SegmentFormat> format() const { return fmt_; }
  /// The name stored in record headers for a format ("PCMA", or the SDP name of another codec).
  [[nodiscard]] std::string_view codec_name(const SegmentFormat& f) const;
  /// Hints for a caller that batches packets of many streams (no effect on behaviour): the
  /// lines of this object every packet touches, then the heap line they point to.
  void prefetch_state() const {
    __builtin_prefetch(&have_seq_);
    __builtin_prefetch(&fmt_);
    __builtin_prefetch(&probe_);
    __builtin_prefetch(&c_.written);
  }
  void prefetch_buffers() const { __builtin_prefetch(last_.data(), 1); }

 private:
  void emit_slot(std::uint32_t ext_seq, AssemblerSink& sink);
  void emit_silence(std::uint16_t seq, std::uint32_t ts, AssemblerSink& sink);
  void advance_to(std::uint32_t ext_seq, AssemblerSink& sink);
  void begin_segment(const SegmentFormat& fmt, AssemblerSink& sink);
  void restart(std::span<const std::byte> pkt, AssemblerSink& sink);
  void emit_packet(std::span<const std::byte> pkt, std::size_t header_len, std::uint32_t ts,
                   AssemblerSink& sink);
  void skip_or_fill(std::uint32_t count, bool fill, AssemblerSink& sink);
  /// The decision for a missing run of `run` packets: fill it (bounded and backed by credit)?
  /// Counts an unbacked jump when only the clock says no.
  bool should_fill(std::uint32_t run);
  void flush_held(AssemblerSink& sink);
  void drop_probe();
  void offer_candidate(std::span<const std::byte> pkt, const SegmentFormat& fmt, std::uint16_t seq,
                       std::uint32_t ssrc, std::uint64_t rx_ns, AssemblerSink& sink);
  void adopt_candidates(AssemblerSink& sink);
  void drop_candidates();
  bool segment_allowed(std::uint64_t rx_ns);

  // Hot: what an in-order packet reads or writes, kept together (with c_'s first fields about
  // three cache lines: the clock and credit fill the first, opts_/fmt_/last_ the second). A writer thread touches it for a different stream at nearly every packet.
  bool have_seq_ = false;
  std::uint32_t held_ = 0;            ///< packets waiting in slots_
  std::uint32_t ssrc_ = 0;
  std::uint32_t next_ = 0;            ///< extended sequence number expected next
  std::uint32_t last_ts_ = 0;
  std::uint32_t cand_n_ = 0;          ///< candidate packets of a new format held in cand_buf_
  std::uint64_t seen_bits_ = 0;       ///< bit i: next_-1-i was received (duplicate vs late)
  std::int64_t credit_ns_ = 0;        ///< media-time credit (see the header comment)
  std::uint64_t last_rx_ns_ = 0;      ///< newest arrival time seen (0: none since the flush)
  std::int64_t ptime_ns_ = 0;         ///< the segment's packet duration
  std::int64_t credit_cap_ns_ = 0;
  bool fill_ok_ = true;               ///< the segment's codec has a silence to fill gaps with
  AssemblerOptions opts_;
  std::optional<SegmentFormat> fmt_;
  std::vector<std::byte> last_;       ///< header template of the last emitted packet
  std::vector<std::byte> probe_;      ///< a packet that may start a new sequence
  AssemblerCounters c_;
  // Cold: reordering, gap fill.
  std::vector<std::byte> slots_;      ///< (reorder_window + 1) * rtp_len bytes
  std::vector<std::uint8_t> filled_;  ///< slot occupied
  std::vector<std::byte> silence_;    ///< scratch for a silence packet
  // Cold: format change candidates, segment rate cap.
  SegmentFormat cand_fmt_{Codec::kPcmu, 0, 0};
  std::uint32_t cand_ssrc_ = 0;
  std::uint16_t cand_seq0_ = 0;
  std::vector<std::byte> cand_buf_;   ///< cand_n_ packets of cand_fmt_.rtp_len bytes
  std::uint64_t seg_tat_ns_ = 0;      ///< segment cap: GCRA theoretical arrival time
};

}  // namespace callrec::fileio
