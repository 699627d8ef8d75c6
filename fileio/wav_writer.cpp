// Streaming 16-bit mono PCM WAV writer (canonical 44-byte RIFF/WAVE header).
// Samples go through stdio's buffer (few large write(2) calls); the RIFF and data sizes are
// written as 0 at open and rewritten at close().
#include "fileio/wav_writer.hpp"

#include <array>
#include <cerrno>
#include <cstring>
#include <string>

namespace callrec::fileio {
namespace {

constexpr std::size_t kWavHeaderSize = 44;
constexpr std::uint16_t kFormatPcm = 1;
constexpr std::uint16_t kBitsPerSample = 16;
constexpr std::uint16_t kBlockAlign = kBitsPerSample / 8;  ///< per sample value (one channel)
/// The RIFF size field (36 + data bytes) must fit in 32 bits.
constexpr std::uint64_t kMaxDataBytes = 0xFFFFFFFFull - (kWavHeaderSize - 8);
constexpr std::uint64_t kMaxSamples = kMaxDataBytes / kBlockAlign;
constexpr std::size_t kChunkSamples = 4096;  // conversion chunk for write()

void put_le16(std::byte* p, std::uint16_t v) {
  p[0] = static_cast<std::byte>(v & 0xFF);
  p[1] = static_cast<std::byte>(v >> 8);
}
void put_le32(std::byte* p, std::uint32_t v) {
  for (std::size_t i = 0; i < 4; ++i) p[i] = static_cast<std::byte>((v >> (8 * i)) & 0xFF);
}
void put_tag(std::byte* p, const char (&tag)[5]) {
  for (std::size_t i = 0; i < 4; ++i) p[i] = static_cast<std::byte>(tag[i]);
}

std::array<std::byte, kWavHeaderSize> make_header(std::uint32_t sample_rate, std::uint32_t data_bytes,
                                                  std::uint16_t channels) {
  std::array<std::byte, kWavHeaderSize> h{};
  put_tag(h.data(), "RIFF");
  put_le32(h.data() + 4, static_cast<std::uint32_t>(kWavHeaderSize - 8) + data_bytes);
  put_tag(h.data() + 8, "WAVE");
  put_tag(h.data() + 12, "fmt ");
  put_le32(h.data() + 16, 16);  // fmt chunk size (PCM)
  put_le16(h.data() + 20, kFormatPcm);
  put_le16(h.data() + 22, channels);
  put_le32(h.data() + 24, sample_rate);
  put_le32(h.data() + 28, sample_rate * kBlockAlign * channels);  // byte rate
  put_le16(h.data() + 32, static_cast<std::uint16_t>(kBlockAlign * channels));
  put_le16(h.data() + 34, kBitsPerSample);
  put_tag(h.data() + 36, "data");
  put_le32(h.data() + 40, data_bytes);
  return h;
}

}  // namespace

WavWriter::~WavWriter() {
  if (f_ != nullptr) (void)close();
}

Status WavWriter::open(const std::filesystem::path& path, std::uint32_t sample_rate, std::uint16_t channels) {
  if (f_ != nullptr) return Status(EBUSY, path.string() + ": WAV writer already has " + path_.string() + " open");
  if (path.empty() || path == "-") return Status(EINVAL, "WAV output path '" + path.string() + "' is not supported");
  if (channels == 0 || channels > 8) return Status(EINVAL, path.string() + ": invalid WAV channel count");
  if (sample_rate == 0 || sample_rate > 0xFFFFFFFFu / (kBlockAlign * channels)) {
    return Status(EINVAL, path.string() + ": invalid WAV sample rate " + std::to_string(sample_rate));
  }
  std::FILE* f = std::fopen(path.c_str(), "wbe");  // 'e': O_CLOEXEC (glibc)
  if (f == nullptr) return Status::from_errno(path.string() + ": cannot create WAV file");
  const auto header = make_header(sample_rate, 0, channels);
  if (std::fwrite(header.data(), 1, header.size(), f) != header.size()) {
    Status st = Status::from_errno(path.string() + ": cannot write WAV header");
    (void)std::fclose(f);
    return st;
  }
  f_ = f;
  path_ = path;
  samples_ = 0;
  return Status::ok();
}

Status WavWriter::write(std::span<const std::int16_t> samples) {
  if (f_ == nullptr) return Status(EBADF, "WAV writer: write() without an open file");
  if (samples.size() > kMaxSamples - samples_) {
    return Status(EFBIG, path_.string() + ": WAV data would exceed the 4 GiB RIFF limit");
  }
  std::array<std::byte, kChunkSamples * 2> chunk;
  std::size_t done = 0;
  while (done < samples.size()) {
    const std::size_t n = std::min(kChunkSamples, samples.size() - done);
    for (std::size_t i = 0; i < n; ++i) put_le16(chunk.data() + 2 * i, static_cast<std::uint16_t>(samples[done + i]));
    const std::size_t wrote = std::fwrite(chunk.data(), 2, n, f_);
    samples_ += wrote;
    if (wrote != n) return Status::from_errno(path_.string() + ": cannot write WAV samples");
    done += n;
  }
  return Status::ok();
}

Status WavWriter::close() {
  if (f_ == nullptr) return Status::ok();  // idempotent
  std::FILE* f = f_;
  f_ = nullptr;
  Status st;
  const std::uint64_t data_bytes = samples_ * kBlockAlign;
  if (data_bytes > kMaxDataBytes) {
    st = Status(EFBIG, path_.string() + ": WAV data exceeds the 4 GiB RIFF limit");
  } else {
    // Only the two size fields change: RIFF size at offset 4, data size at offset 40.
    std::array<std::byte, 4> riff_size{};
    std::array<std::byte, 4> data_size{};
    put_le32(riff_size.data(), static_cast<std::uint32_t>(kWavHeaderSize - 8 + data_bytes));
    put_le32(data_size.data(), static_cast<std::uint32_t>(data_bytes));
    if (std::fflush(f) != 0) {
      st = Status::from_errno(path_.string() + ": cannot write WAV samples");
    } else if (std::fseek(f, 4, SEEK_SET) != 0 || std::fwrite(riff_size.data(), 1, 4, f) != 4 ||
               std::fseek(f, 40, SEEK_SET) != 0 || std::fwrite(data_size.data(), 1, 4, f) != 4 ||
               std::fflush(f) != 0) {
      st = Status::from_errno(path_.string() + ": cannot rewrite the WAV header sizes");
    }
  }
  if (std::fclose(f) != 0 && st.is_ok()) st = Status::from_errno(path_.string() + ": cannot close WAV file");
  return st;
}

}  // namespace callrec::fileio
