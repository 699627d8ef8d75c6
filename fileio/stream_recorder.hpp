#pragma once
// One recorded RTP stream: [SrtpReceiver ->] StreamAssembler -> RecordWriter. This is what
// writer threads own per stream and what tools use to turn packets into files.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "fileio/record_writer.hpp"
#include "fileio/srtp.hpp"
#include "fileio/stream_assembler.hpp"

namespace callrec::fileio {

class StreamRecorder final : private AssemblerSink {
 public:
  /// Largest packet an SRTP stream decrypts (a ring record's length is 16 bits).
  static constexpr std::size_t kSrtpScratchBytes = 65536;

  /// With aopts.srtp, packets are SRTP: the SrtpReceiver is created here (so on the thread
  /// that constructs the recorder, the writer thread), and each packet is copied into
  /// `srtp_scratch`, decrypted there and handed on as plain RTP. srtp_scratch belongs to the
  /// caller (a writer thread shares one among its streams: its bytes are dead once on_rtp
  /// returns), must outlive the recorder and hold kSrtpScratchBytes; empty: the recorder
  /// allocates its own. Ignored without aopts.srtp.
  StreamRecorder(WriterOptions wopts, AssemblerOptions aopts = {}, std::span<std::byte> srtp_scratch = {});
  ~StreamRecorder() override;
  StreamRecorder(const StreamRecorder&) = delete;
  StreamRecorder& operator=(const StreamRecorder&) = delete;

  /// Feeds one received RTP packet that arrived at rx_ns (CLOCK_MONOTONIC ns: the ring
  /// record's rx_ns; the assembler fills only gaps that elapsed arrival time backs). Returns the
  /// first write error since the last call (ENOSPC, EIO ...); data already written stays valid.
  /// An SRTP stream decrypts first (also while paused, so that libsrtp's rollover-counter
  /// estimate follows the sequence across a long pause); a packet that fails (authentication,
  /// replay, no receiver, too large) is dropped and counted in srtp_failed, not in received.
  Status on_rtp(std::span<const std::byte> pkt, std::uint64_t rx_ns);
  Status flush_if_due(std::chrono::steady_clock::time_point now);
  /// Pause: held packets are written, later packets dropped until resume().
  void pause();
  void resume();
  /// Emits held packets, closes the writer. Idempotent.
  Status close();

  /// The assembler's counters, with srtp_failed from the decryption in front of it.
  [[nodiscard]] AssemblerCounters counters() const {
    AssemblerCounters c = asm_.counters();
    c.srtp_failed = srtp_failed_;
    return c;
  }
  /// Why an SRTP stream has no receiver (libsrtp refused the key): every packet then counts as
  /// srtp_failed. Empty otherwise.
  [[nodiscard]] const std::string& srtp_error() const { return srtp_error_; }
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
  /// Decrypts pkt into the scratch buffer and points pkt at the plain RTP; false: drop it.
  bool decrypt(std::span<const std::byte>& pkt);

  // paused_, srtp_on_ and pending_ (checked by every packet) first, next to the assembler's
  // hot state.
  bool paused_ = false;
  bool srtp_on_ = false;  ///< the stream is SRTP (aopts.srtp): every packet goes through decrypt()
  Status pending_;   ///< first error raised inside a sink callback
  StreamAssembler asm_;
  RecordWriter writer_;
  // SRTP streams only.
  std::unique_ptr<SrtpReceiver> srtp_;     ///< null on a plain stream, or when creation failed
  std::span<std::byte> scratch_;           ///< where packets are decrypted
  std::vector<std::byte> own_scratch_;     ///< scratch_ when the caller gave none
  std::uint64_t srtp_failed_ = 0;
  std::string srtp_error_;
};

}  // namespace callrec::fileio
