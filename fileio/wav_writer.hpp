#pragma once
// Streaming 16-bit PCM WAV writer (mono, or interleaved channels). The RIFF sizes are
// rewritten on close().
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <span>

#include "fileio/status.hpp"

namespace callrec::fileio {

class WavWriter {
 public:
  WavWriter() = default;
  WavWriter(const WavWriter&) = delete;
  WavWriter& operator=(const WavWriter&) = delete;
  ~WavWriter();  ///< closes (finalizing sizes) if still open; errors are lost: call close().

  /// Creates/truncates path ("-" is not supported) and writes a provisional header.
  /// channels > 1: write() takes interleaved frames (left, right, left ...).
  Status open(const std::filesystem::path& path, std::uint32_t sample_rate, std::uint16_t channels = 1);
  Status write(std::span<const std::int16_t> samples);
  /// Rewrites the RIFF and data chunk sizes, closes. Fails if data exceeds 4 GiB.
  Status close();
  /// Sample values written (frames * channels).
  [[nodiscard]] std::uint64_t samples_written() const { return samples_; }

 private:
  std::FILE* f_ = nullptr;
  std::filesystem::path path_;
  std::uint64_t samples_ = 0;
};

}  // namespace callrec::fileio
