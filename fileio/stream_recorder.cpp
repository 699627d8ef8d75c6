// StreamRecorder: StreamAssembler -> RecordWriter for one RTP stream. See stream_recorder.hpp.
//
// The assembler calls back into this object (AssemblerSink); errors raised there cannot be
// returned through the callback, so the first one is kept in pending_ and handed to the caller
// of on_rtp / flush_if_due / close. After a write error the writer refuses further packets
// quickly (sticky error), so a stream on a full disk costs almost nothing per packet.
//
// While paused, packets do not enter the assembler (its sequence state was flushed at pause, so
// the paused time is not filled with silence on resume); they go to the paused writer, which
// only counts them (RecordWriter::packets_dropped_paused).
#include "fileio/stream_recorder.hpp"

#include <utility>

namespace callrec::fileio {

StreamRecorder::StreamRecorder(WriterOptions wopts, AssemblerOptions aopts)
    : asm_(aopts), writer_(std::move(wopts)) {}

Status StreamRecorder::on_rtp(std::span<const std::byte> pkt, std::uint64_t rx_ns) {
  writer_.set_packet_time(rx_ns);  // used only with WriterOptions::packet_clock
  if (paused_) [[unlikely]] {
    (void)writer_.append(pkt);  // counted as dropped while paused; cannot fail
  } else {
    asm_.push(pkt, *this, rx_ns);
  }
  if (!pending_.is_ok()) [[unlikely]] return std::exchange(pending_, Status());
  return {};
}

Status StreamRecorder::flush_if_due(std::chrono::steady_clock::time_point now) {
  Status st = writer_.flush_if_due(now);
  if (!pending_.is_ok()) return std::exchange(pending_, Status());
  return st;
}

void StreamRecorder::pause() {
  if (paused_) return;
  asm_.flush(*this);  // held packets belong to the recorded part; errors stay in pending_
  writer_.pause();
  paused_ = true;
}

void StreamRecorder::resume() {
  if (!paused_) return;
  asm_.flush(*this);  // forget the sequence: the first packet after resume starts afresh
  writer_.resume();
  paused_ = false;
}

Status StreamRecorder::close() {
  if (!paused_) asm_.flush(*this);
  Status st = writer_.close();
  if (!pending_.is_ok()) return std::exchange(pending_, Status());
  return st;
}

void StreamRecorder::on_segment(const SegmentFormat& fmt) {
  Status st = writer_.set_format(asm_.codec_name(fmt), fmt.rtp_len, fmt.increment);
  if (!st && pending_.is_ok()) pending_ = std::move(st);
}

void StreamRecorder::on_packet(std::span<const std::byte> pkt) {
  Status st = writer_.append(pkt);
  if (!st && pending_.is_ok()) [[unlikely]] pending_ = std::move(st);
}

}  // namespace callrec::fileio
