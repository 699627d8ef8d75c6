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

  /// Feeds one received RTP packet. Returns the first write error since the last call
  /// (ENOSPC, EIO ...); data already written stays valid on disk.
  Status on_rtp(std::span<const std::byte> pkt);
  Status flush_if_due(std::chrono::steady_clock::time_point now);
  /// Pause: held packets are written, later packets dropped until resume().
  void pause();
  void resume();
  /// Emits held packets, closes the writer. Idempotent.
  Status close();

  [[nodiscard]] const AssemblerCounters& counters() const { return asm_.counters(); }
  [[nodiscard]] RecordWriter& writer() { return writer_; }
  [[nodiscard]] const RecordWriter& writer() const { return writer_; }

 private:
  void on_segment(const SegmentFormat& fmt) override;
  void on_packet(std::span<const std::byte> pkt) override;

  StreamAssembler asm_;
  RecordWriter writer_;
  Status pending_;   ///< first error raised inside a sink callback
  bool paused_ = false;
};

}  // namespace callrec::fileio
