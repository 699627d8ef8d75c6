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
//
// SRTP streams (AssemblerOptions::srtp): each packet is copied into the scratch buffer (the
// ring's bytes, or a zero-copy producer's, are read-only to us), decrypted in place by the
// stream's SrtpReceiver and only then enters the assembler; the assembler copies what it holds,
// so the scratch is free again when on_rtp returns and one buffer serves a writer's streams.
// Cost (bench/srtp_bench.cpp, bench/RESULTS.md "SRTP decryption cost"): ~3 us per packet for
// AES_CM_128_HMAC_SHA1_80 and ~1 us for AEAD_AES_128_GCM with one stream, ~9 us and ~2 us at
// 1,000 streams (libsrtp's NSS backend); the copy is ~5 ns of it.
#include "fileio/stream_recorder.hpp"

#include <cstring>
#include <utility>

namespace callrec::fileio {

StreamRecorder::StreamRecorder(WriterOptions wopts, AssemblerOptions aopts, std::span<std::byte> srtp_scratch)
    : srtp_on_(aopts.srtp != nullptr), asm_(aopts), writer_(std::move(wopts)) {
  if (!srtp_on_) return;
  srtp_ = SrtpReceiver::create(*aopts.srtp, &srtp_error_);
  if (srtp_ == nullptr && srtp_error_.empty()) srtp_error_ = "SRTP receiver not created";
  if (srtp_scratch.empty()) {
    own_scratch_.resize(kSrtpScratchBytes);
    scratch_ = own_scratch_;
  } else {
    scratch_ = srtp_scratch;
  }
}

StreamRecorder::~StreamRecorder() = default;

bool StreamRecorder::decrypt(std::span<const std::byte>& pkt) {
  if (srtp_ == nullptr || pkt.size() > scratch_.size()) return false;
  std::memcpy(scratch_.data(), pkt.data(), pkt.size());
  std::size_t len = 0;
  if (srtp_->unprotect(reinterpret_cast<std::uint8_t*>(scratch_.data()), pkt.size(), &len) !=
      SrtpReceiver::Result::kOk) {
    return false;
  }
  pkt = std::span<const std::byte>(scratch_.data(), len);
  return true;
}

Status StreamRecorder::on_rtp(std::span<const std::byte> pkt, std::uint64_t rx_ns) {
  if (srtp_on_ && !decrypt(pkt)) [[unlikely]] {
    ++srtp_failed_;
    return {};  // nothing reached the writer: no new error
  }
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
