#pragma once
// What the simulated phones play: a looped WAV file or a generated sine, encoded to G.711 once
// at start-up so that building a packet is a copy (no per-packet encoding or sin()).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fileio/record_format.hpp"

namespace callrec::phone {

/// One encoded loop. Read-only after construction; shared by all worker threads.
struct AudioLoop {
  std::vector<std::byte> encoded;  ///< G.711 bytes, one per sample; played cyclically
  double tone_hz = 0;              ///< 0 for a WAV
};

class AudioSource {
 public:
  /// Number of distinct tones when generating: phone i plays variant i % kToneVariants.
  static constexpr std::uint32_t kToneVariants = 8;
  static constexpr double kSampleRate = 8000.0;

  /// Loads a 16-bit PCM mono 8000 Hz WAV. Returns false with *error set on any other format.
  bool load_wav(const std::string& path, fileio::Codec codec, std::string* error);
  /// Generates sines of hz + k*spread_hz (k = 0..kToneVariants-1), amplitude -6 dBFS. Each loop
  /// is a whole number of periods long (1 s for integral frequencies, 10 s otherwise).
  void make_tones(double hz, double spread_hz, fileio::Codec codec);

  [[nodiscard]] const AudioLoop& loop_for_phone(std::uint32_t phone_index) const {
    return loops_[phone_index % loops_.size()];
  }

  /// Copies n bytes starting at sample position pos (mod loop length) into out.
  static void copy_frame(const AudioLoop& loop, std::uint64_t pos, std::byte* out, std::size_t n);

 private:
  std::vector<AudioLoop> loops_;
};

}  // namespace callrec::phone
