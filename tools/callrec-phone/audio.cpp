#include "audio.hpp"

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <numbers>
#include <system_error>

#include "fileio/g711.hpp"

namespace callrec::phone {
namespace {

std::uint32_t le32(const unsigned char* p) {
  return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
         (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}
std::uint16_t le16(const unsigned char* p) {
  return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}

constexpr std::uint16_t kWaveFormatPcm = 1;
constexpr std::uint16_t kWaveFormatExtensible = 0xFFFE;

}  // namespace

bool AudioSource::load_wav(const std::string& path, fileio::Codec codec, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = "cannot open WAV '" + path + "': " + std::system_category().message(errno);
    return false;
  }
  std::vector<unsigned char> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (data.size() < 12 || std::memcmp(data.data(), "RIFF", 4) != 0 || std::memcmp(data.data() + 8, "WAVE", 4) != 0) {
    *error = "'" + path + "' is not a RIFF/WAVE file";
    return false;
  }
  bool have_fmt = false;
  const unsigned char* samples = nullptr;
  std::size_t sample_bytes = 0;
  std::size_t off = 12;
  while (off + 8 <= data.size()) {
    const unsigned char* ck = data.data() + off;
    const std::uint32_t ck_size = le32(ck + 4);
    const std::size_t body = off + 8;
    const std::size_t avail = data.size() - body;
    if (std::memcmp(ck, "fmt ", 4) == 0) {
      if (ck_size < 16 || avail < 16) {
        *error = "'" + path + "': truncated fmt chunk";
        return false;
      }
      const unsigned char* f = data.data() + body;
      std::uint16_t format = le16(f);
      if (format == kWaveFormatExtensible && ck_size >= 40 && avail >= 40) format = le16(f + 24);
      const std::uint16_t channels = le16(f + 2);
      const std::uint32_t rate = le32(f + 4);
      const std::uint16_t bits = le16(f + 14);
      if (format != kWaveFormatPcm || channels != 1 || rate != 8000 || bits != 16) {
        *error = "'" + path + "': need 16-bit PCM mono 8000 Hz, found format " + std::to_string(format) + ", " +
                 std::to_string(channels) + " channel(s), " + std::to_string(rate) + " Hz, " + std::to_string(bits) +
                 " bits (convert with: sox IN -r 8000 -c 1 -b 16 -e signed-integer OUT.wav)";
        return false;
      }
      have_fmt = true;
    } else if (std::memcmp(ck, "data", 4) == 0) {
      samples = data.data() + body;
      sample_bytes = std::min<std::size_t>(ck_size, avail);  // tolerate a truncated data chunk
    }
    off = body + ck_size + (ck_size & 1U);
  }
  if (!have_fmt || samples == nullptr) {
    *error = "'" + path + "': missing fmt or data chunk";
    return false;
  }
  const std::size_t n = sample_bytes / 2;
  if (n == 0) {
    *error = "'" + path + "': no samples";
    return false;
  }
  std::vector<std::int16_t> pcm(n);
  for (std::size_t i = 0; i < n; ++i) pcm[i] = static_cast<std::int16_t>(le16(samples + 2 * i));
  AudioLoop loop;
  loop.encoded.resize(n);
  fileio::g711_encode(codec, pcm, loop.encoded);
  loops_.clear();
  loops_.push_back(std::move(loop));
  return true;
}

void AudioSource::make_tones(double hz, double spread_hz, fileio::Codec codec) {
  loops_.clear();
  const std::uint32_t variants = spread_hz > 0 ? kToneVariants : 1;
  for (std::uint32_t k = 0; k < variants; ++k) {
    double f = hz + spread_hz * k;
    if (f >= kSampleRate / 2) f = hz;  // stay below Nyquist
    // A loop of L samples is seamless when f * L / 8000 is whole: L = 8000 for integral f,
    // else f is rounded to 0.1 Hz and L = 80000.
    std::size_t len = 8000;
    if (f != std::floor(f)) {
      f = std::round(f * 10.0) / 10.0;
      len = 80000;
    }
    std::vector<std::int16_t> pcm(len);
    constexpr double kAmplitude = 16384.0;  // -6 dBFS
    for (std::size_t i = 0; i < len; ++i) {
      const double phase = 2.0 * std::numbers::pi * f * static_cast<double>(i) / kSampleRate;
      pcm[i] = static_cast<std::int16_t>(std::lround(kAmplitude * std::sin(phase)));
    }
    AudioLoop loop;
    loop.tone_hz = f;
    loop.encoded.resize(len);
    fileio::g711_encode(codec, pcm, loop.encoded);
    loops_.push_back(std::move(loop));
  }
}

void AudioSource::copy_frame(const AudioLoop& loop, std::uint64_t pos, std::byte* out, std::size_t n) {
  const std::size_t len = loop.encoded.size();
  std::size_t at = static_cast<std::size_t>(pos % len);
  while (n > 0) {
    const std::size_t chunk = std::min(n, len - at);
    std::memcpy(out, loop.encoded.data() + at, chunk);
    out += chunk;
    n -= chunk;
    at = 0;
  }
}

}  // namespace callrec::phone
