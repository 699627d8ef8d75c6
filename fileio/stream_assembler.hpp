#pragma once
// Per-stream RTP assembly in front of the writer (spec decision 2):
// - puts packets back in sequence order inside a small reorder window;
// - drops duplicates (and packets too late to be placed), counting each;
// - fills sequence gaps with codec silence (PCMA 0xD5, PCMU 0xFF) up to max_gap_fill packets,
//   built from the previous packet's header with the missing seq and timestamp;
// - begins a new segment when the packet length or the payload type changes;
// - handles 16-bit sequence and 32-bit timestamp wrap-around, and re-synchronises on an SSRC
//   change or a sequence jump that two consecutive packets confirm.
// Packets whose payload type is not G.711 (comfort noise, telephone-event ...) are not stored:
// they are counted as `other_payload` and their sequence numbers become silence.
//
// Owned by one thread. No allocation per packet once the first packet sized the window.
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "fileio/record_format.hpp"

namespace callrec::fileio {

struct AssemblerOptions {
  std::uint16_t reorder_window = 8;   ///< packets held while waiting for a missing one (1..256)
  std::uint32_t max_gap_fill = 50;    ///< longest gap filled with silence (packets); longer: not filled
  std::uint32_t resync_after = 3000;  ///< a forward jump beyond this (packets) is a new stream
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
  std::uint64_t resyncs = 0;       ///< sequence re-synchronisations (SSRC change, big jump)
};

/// The format of a segment: every packet of it has exactly rtp_len bytes.
struct SegmentFormat {
  Codec codec;
  std::uint32_t rtp_len;
  std::uint32_t increment;  ///< timestamp step per packet (G.711: payload bytes)
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

  /// Feeds one received RTP packet (copied if it must wait). May emit zero or more packets.
  void push(std::span<const std::byte> pkt, AssemblerSink& sink);
  /// Emits every held packet (filling holes between them) and forgets the sequence state:
  /// call at stop, and on pause (so a resume does not fill the paused time).
  void flush(AssemblerSink& sink);

  [[nodiscard]] const AssemblerCounters& counters() const { return c_; }
  [[nodiscard]] std::optional<SegmentFormat> format() const { return fmt_; }
  /// Hints for a caller that batches packets of many streams (no effect on behaviour): the
  /// lines of this object every packet touches, then the heap line they point to.
  void prefetch_state() const {
    __builtin_prefetch(&have_seq_);
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
  void flush_held(AssemblerSink& sink);
  void drop_probe();

  // Hot: what an in-order packet reads or writes, kept together (with c_'s first fields about
  // two cache lines). A writer thread touches it for a different stream at nearly every packet.
  bool have_seq_ = false;
  std::uint32_t held_ = 0;            ///< packets waiting in slots_
  std::uint32_t ssrc_ = 0;
  std::uint32_t next_ = 0;            ///< extended sequence number expected next
  std::uint32_t last_ts_ = 0;
  std::uint64_t seen_bits_ = 0;       ///< bit i: next_-1-i was received (duplicate vs late)
  AssemblerOptions opts_;
  std::optional<SegmentFormat> fmt_;
  std::vector<std::byte> last_;       ///< header template of the last emitted packet
  std::vector<std::byte> probe_;      ///< a packet that may start a new sequence
  AssemblerCounters c_;
  // Cold: reordering, gap fill.
  std::vector<std::byte> slots_;      ///< (reorder_window + 1) * rtp_len bytes
  std::vector<std::uint8_t> filled_;  ///< slot occupied
  std::vector<std::byte> silence_;    ///< scratch for a silence packet
};

}  // namespace callrec::fileio
