#pragma once
// One recorded RTP stream: StreamAssembler -> RecordWriter. This is what writer threads own
// per stream and what tools use to turn packets into files.
#include <cstdint>
#include <span>

#include "fileio/record_writer.hpp"
#include "fileio/stream_assembler.hpp"

namespace callrec::fileio {

class StreamRecorder final : private AssemblerSink {
 public:
  StreamRecorder(WriterOptions wopts, AssemblerOptions aopts = {});

  /// Feeds one received RTP packet that arrived at rx_ns (CLOCK_MONOTONIC ns: the ring
  /// record's rx_ns; the assembler fills only gaps that elapsed arrival time backs). Returns the
  /// first write error since the last call (ENOSPC, EIO ...); data already written stays valid.
  Status on_rtp(std::span<const std::byte> pkt, std::uint64_t rx_ns);
  Status flush_if_due(std::chrono::steady_clock::time_point now);
  /// Pause: held packets are written, later packets dropped until resume().
  void pause();
  void resume();
  /// Emits held packets, closes the writer. Idempotent.
  Status close();

  [[nodiscard]] const AssemblerCounters& counters() const { return asm_.counters(); }
  [[nodiscard]] RecordWriter& writer() { return writer_; }
  [[nodiscard]] const RecordWriter& writer() const { return writer_; }
  /// Prefetch hints for a writer thread that batches records of many streams (no effect on
  /// behaviour): first the state every packet touches, then (once that has arrived) the
  /// buffer lines it points to.
  void prefetch_state() const {
    __builtin_prefetch(this);
    asm_.prefetch_state();
    writer_.prefetch_state();
  }
  void prefetch_buffers() const {
    asm_.prefetch_buffers();
    writer_.prefetch_buffers();
  }

 private:
  void on_segment(const SegmentFormat& fmt) override;
  void on_packet(std::span<const std::byte> pkt) override;

  // paused_ and pending_ (checked by every packet) first, next to the assembler's hot state.
  bool paused_ = false;
  Status pending_;   ///< first error raised inside a sink callback
  StreamAssembler asm_;
  RecordWriter writer_;
};

}  // namespace callrec::fileio
