// G.711 codec tests: all 256 codes of each law against SoX as an independent decoder, plus
// encode/decode properties over every 16-bit input.
#include "fileio/g711.hpp"

#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <vector>

extern char** environ;

namespace callrec::fileio {
namespace {

namespace fs = std::filesystem;

bool in_path(const std::string& prog) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return false;
  std::string p = path;
  std::size_t start = 0;
  while (start <= p.size()) {
    const std::size_t end = std::min(p.find(':', start), p.size());
    const fs::path dir = p.substr(start, end - start);
    if (!dir.empty() && ::access((dir / prog).c_str(), X_OK) == 0) return true;
    start = end + 1;
  }
  return false;
}

/// Runs argv (no shell), returns the exit status (-1 when it could not run or was signalled).
int run(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  if (::posix_spawnp(&pid, args[0], nullptr, nullptr, args.data(), environ) != 0) return -1;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "callrec_g711_XXXXXX").string();
    if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::vector<unsigned char> read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// Decodes all 256 codes with sox and returns its 16-bit samples (empty on failure).
std::vector<std::int16_t> sox_decode_all_codes(const char* encoding, const fs::path& dir) {
  const fs::path in = dir / (std::string(encoding) + ".in.raw");
  const fs::path out = dir / (std::string(encoding) + ".out.raw");
  {
    std::ofstream f(in, std::ios::binary);
    for (int c = 0; c < 256; ++c) f.put(static_cast<char>(c));
    if (!f) return {};
  }
  // The brief's command, plus -D: SoX must not dither (it would not here anyway, since the
  // output has more bits than the 13/14-bit G.711 input, but -D makes that explicit).
  const int rc = run({"sox", "-D", "-t", "raw", "-r", "8000", "-e", encoding, "-b", "8", "-c", "1", in.string(),
                      "-t", "raw", "-e", "signed-integer", "-b", "16", "-L", out.string()});
  if (rc != 0) {
    ADD_FAILURE() << "sox exited with " << rc << " decoding " << encoding;
    return {};
  }
  const auto bytes = read_all(out);
  std::vector<std::int16_t> samples;
  for (std::size_t i = 0; i + 1 < bytes.size(); i += 2) {
    samples.push_back(static_cast<std::int16_t>(static_cast<std::uint16_t>(bytes[i] | (bytes[i + 1] << 8))));
  }
  return samples;
}

// SoX's G.711 tables are the classic Sun/ITU expansion on the 16-bit scale (A-law 13-bit << 3,
// mu-law 14-bit << 2), exactly the scaling of our tables: no conversion is needed, the
// comparison is sample-for-sample equality.
TEST(G711, AlawDecodeMatchesSoxForAll256Codes) {
  if (!in_path("sox")) GTEST_SKIP() << "sox is not installed";
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const auto sox = sox_decode_all_codes("a-law", dir.path());
  ASSERT_EQ(sox.size(), 256u);
  for (unsigned c = 0; c < 256; ++c) {
    EXPECT_EQ(alaw_to_linear(static_cast<std::uint8_t>(c)), sox[c]) << "A-law code 0x" << std::hex << c;
  }
}

TEST(G711, UlawDecodeMatchesSoxForAll256Codes) {
  if (!in_path("sox")) GTEST_SKIP() << "sox is not installed";
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const auto sox = sox_decode_all_codes("mu-law", dir.path());
  ASSERT_EQ(sox.size(), 256u);
  for (unsigned c = 0; c < 256; ++c) {
    EXPECT_EQ(ulaw_to_linear(static_cast<std::uint8_t>(c)), sox[c]) << "mu-law code 0x" << std::hex << c;
  }
}

// Known values from G.711 (16-bit scale); ties the codec table's silence bytes to the law.
TEST(G711, KnownCodes) {
  EXPECT_EQ(alaw_to_linear(0xD5), 8);
  EXPECT_EQ(alaw_to_linear(0x55), -8);
  EXPECT_EQ(alaw_to_linear(0xAA), 32256);
  EXPECT_EQ(alaw_to_linear(0x2A), -32256);
  EXPECT_EQ(ulaw_to_linear(0xFF), 0);
  EXPECT_EQ(ulaw_to_linear(0x7F), 0);
  EXPECT_EQ(ulaw_to_linear(0x80), 32124);
  EXPECT_EQ(ulaw_to_linear(0x00), -32124);
  EXPECT_EQ(linear_to_alaw(0), 0xD5);
  EXPECT_EQ(linear_to_ulaw(0), 0xFF);
  EXPECT_EQ(linear_to_alaw(0), codec_info(Codec::kPcma).silence);
  EXPECT_EQ(linear_to_ulaw(0), codec_info(Codec::kPcmu).silence);
  EXPECT_EQ(linear_to_alaw(32767), 0xAA);
  EXPECT_EQ(linear_to_alaw(-32768), 0x2A);
  EXPECT_EQ(linear_to_ulaw(32767), 0x80);
  EXPECT_EQ(linear_to_ulaw(-32768), 0x00);
}

TEST(G711, AlawEncodeOfDecodeIsIdentityForAllCodes) {
  for (unsigned c = 0; c < 256; ++c) {
    const auto code = static_cast<std::uint8_t>(c);
    EXPECT_EQ(linear_to_alaw(alaw_to_linear(code)), code) << "A-law code 0x" << std::hex << c;
  }
}

// mu-law has two zeros: 0xFF (+0) and 0x7F (-0) both decode to 0, and 0 encodes to 0xFF.
// Every other code survives decode -> encode.
TEST(G711, UlawEncodeOfDecodeIsIdentityExceptNegativeZero) {
  for (unsigned c = 0; c < 256; ++c) {
    const auto code = static_cast<std::uint8_t>(c);
    const std::uint8_t expected = code == 0x7F ? 0xFF : code;
    EXPECT_EQ(linear_to_ulaw(ulaw_to_linear(code)), expected) << "mu-law code 0x" << std::hex << c;
  }
}

/// Error bound for decode(encode(x)): half a quantization step of x's segment, plus 1 (A-law)
/// or 4 (mu-law): mu-law's first shift (>> 2) floors, so negative inputs lose up to 3 more units;
/// A-law's one's complement (-v - 1) keeps its >> 3 symmetric.
/// A-law: steps are 16 in segments 0-1 and double per segment, so half a step <= max(8, |x|/32).
/// mu-law: steps are 8 << seg over the biased magnitude |x| + 132, half a step <= (|x|+132)/32.
/// Inputs beyond the largest code (A-law 32256, mu-law 32124) clip to it.
/// (SoX's own encoder rounds instead of flooring, so its codes differ from the G.711 reference
/// at segment-step boundaries: the encoder is checked by these properties, not against SoX.)
TEST(G711, DecodeOfEncodeIsCloseAndMonotonicForAll16BitInputs) {
  int prev_a = -40000;
  int prev_u = -40000;
  for (int x = -32768; x <= 32767; ++x) {
    const auto pcm = static_cast<std::int16_t>(x);
    const int a = alaw_to_linear(linear_to_alaw(pcm));
    const int u = ulaw_to_linear(linear_to_ulaw(pcm));
    const int mag = std::abs(x);
    const int clip_a = std::clamp(x, -32256, 32256);
    const int clip_u = std::clamp(x, -32124, 32124);
    EXPECT_LE(std::abs(a - clip_a), std::max(8, mag / 32) + 1) << "A-law x=" << x << " -> " << a;
    EXPECT_LE(std::abs(u - clip_u), (mag + 132) / 32 + 4) << "mu-law x=" << x << " -> " << u;
    EXPECT_GE(a, prev_a) << "A-law not monotonic at x=" << x;
    EXPECT_GE(u, prev_u) << "mu-law not monotonic at x=" << x;
    EXPECT_EQ((a >= 0), (x >= 0)) << "A-law sign at x=" << x;  // A-law has no zero code
    prev_a = a;
    prev_u = u;
  }
}

TEST(G711, SpanFunctionsMatchScalarFunctions) {
  std::vector<std::byte> codes(256);
  for (unsigned c = 0; c < 256; ++c) codes[c] = static_cast<std::byte>(c);
  for (const Codec codec : {Codec::kPcma, Codec::kPcmu}) {
    std::vector<std::int16_t> pcm(256);
    g711_decode(codec, codes, pcm);
    for (unsigned c = 0; c < 256; ++c) {
      const auto code = static_cast<std::uint8_t>(c);
      EXPECT_EQ(pcm[c], codec == Codec::kPcma ? alaw_to_linear(code) : ulaw_to_linear(code));
    }
    std::vector<std::byte> back(256);
    g711_encode(codec, pcm, back);
    for (unsigned c = 0; c < 256; ++c) {
      EXPECT_EQ(std::to_integer<unsigned>(back[c]),
                codec == Codec::kPcma ? linear_to_alaw(pcm[c]) : linear_to_ulaw(pcm[c]));
    }
  }
}

// A too-short output span is a contract violation; the functions must still stay inside it.
TEST(G711, ShortOutputSpanIsNotOverrun) {
  std::array<std::byte, 8> in{};
  in.fill(std::byte{0x00});
  std::array<std::int16_t, 8> out{};
  out.fill(12345);
  g711_decode(Codec::kPcmu, in, std::span<std::int16_t>(out.data(), 4));
  EXPECT_EQ(out[3], -32124);
  EXPECT_EQ(out[4], 12345);

  std::array<std::int16_t, 8> pcm{};
  std::array<std::byte, 8> enc{};
  enc.fill(std::byte{0x11});
  g711_encode(Codec::kPcma, pcm, std::span<std::byte>(enc.data(), 3));
  EXPECT_EQ(enc[2], std::byte{0xD5});
  EXPECT_EQ(enc[3], std::byte{0x11});
}

}  // namespace
}  // namespace callrec::fileio
