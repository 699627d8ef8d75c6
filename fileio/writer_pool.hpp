#pragma once
// Writer threads. Each writer thread owns a set of streams (StreamRecorder: assembler + files),
// drains its PacketRings (one per dataplane producer), batches writes, flushes every stream on
// a bounded interval, and reports what happened to the control plane as events.
//
// Threads:
// - control thread: open_stream / pause_stream / resume_stream / abort_stream / poll_events.
//   Commands reach a writer through its own command queue (a mutex-protected vector swapped
//   once per loop: commands are rare, packets never take that lock).
// - producer p (an RX core): ring(p, w).push(...) then publish(). A stream is closed in-band:
//   its producer pushes RecordKind::kEndOfStream after the stream's last packet, so no packet
//   in flight is lost; the writer then finalizes the files and reports kStreamClosed.
// - writer thread w: everything else. No allocation per packet.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fileio/packet_ring.hpp"
#include "fileio/record_writer.hpp"
#include "fileio/stream_assembler.hpp"

namespace callrec::fileio {

struct WriterPoolOptions {
  unsigned writers = 1;
  unsigned producers = 1;
  std::size_t ring_bytes = 4u << 20;                 ///< per (producer, writer) ring
  std::chrono::milliseconds stats_interval{1000};    ///< kStats events per active stream
  std::vector<int> cpus;                             ///< optional pinning, one per writer
};

enum class WriterEventKind : std::uint8_t {
  kSegmentOpened,   ///< seg valid
  kSegmentClosed,   ///< seg valid (final packet count)
  kError,           ///< status valid; the stream stops taking packets (e.g. ENOSPC)
  kStats,           ///< counters + last_packet_ns, periodic per stream that had traffic
  kStreamClosed,    ///< final counters; the stream is gone from the writer
};

struct WriterEvent {
  WriterEventKind kind;
  StreamId stream = 0;
  SegmentInfo seg;
  Status status;
  AssemblerCounters counters;
  std::uint64_t last_packet_ns = 0;   ///< CLOCK_MONOTONIC of the newest packet (0: none yet)
  std::uint64_t bytes_written = 0;
};

struct WriterPoolStats {
  std::uint64_t packets = 0;          ///< records consumed
  std::uint64_t unknown_stream = 0;   ///< packets for a stream the writer does not own
  std::uint64_t write_errors = 0;
  std::uint64_t bytes_written = 0;
  std::uint64_t active_streams = 0;
  /// Assembler counters summed over every stream, open and closed, since start (only the
  /// fields below are published: drops by cause and what the arrival clock refused).
  AssemblerCounters assembler;  ///< invalid, other_payload, format_flaps, segment_limited,
                                ///< unbacked_jumps, segments, srtp_failed
};

class WriterPool {
 public:
  explicit WriterPool(WriterPoolOptions opts);
  ~WriterPool();  ///< stop()
  WriterPool(const WriterPool&) = delete;
  WriterPool& operator=(const WriterPool&) = delete;

  void start();
  /// Closes every stream (final flush), joins the threads. Idempotent.
  void stop();

  [[nodiscard]] unsigned writers() const;
  /// The producer -> writer rings (handed to the dataplane source).
  RingMatrix& rings();

  /// Control thread. The stream must be open before its first packet is pushed. end_marks:
  /// how many producers push an end mark for it (the stream is finished by the last one).
  void open_stream(StreamId id, WriterOptions wopts, AssemblerOptions aopts = {}, std::uint32_t end_marks = 1);
  void pause_stream(StreamId id);
  void resume_stream(StreamId id);
  /// Closes a stream without waiting for an in-band end mark (no producer owns it).
  void close_stream_now(StreamId id);

  /// Control thread: moves pending events into out; returns false when there were none.
  bool poll_events(std::vector<WriterEvent>& out);
  /// An eventfd that becomes readable when events are pending (for the control epoll loop).
  [[nodiscard]] int event_fd() const;
  /// Sums of the per-writer counters (published by each writer about every 100 ms).
  [[nodiscard]] WriterPoolStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace callrec::fileio
