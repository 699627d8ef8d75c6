// WavWriter: the 44-byte header byte by byte, data layout, size rewrite at close, errors, and
// an independent reader (SoX) accepting the file.
#include "fileio/wav_writer.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern char** environ;

namespace callrec::fileio {
namespace {

namespace fs = std::filesystem;

bool in_path(const std::string& prog) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return false;
  const std::string p = path;
  std::size_t start = 0;
  while (start <= p.size()) {
    const std::size_t end = std::min(p.find(':', start), p.size());
    const fs::path dir = p.substr(start, end - start);
    if (!dir.empty() && ::access((dir / prog).c_str(), X_OK) == 0) return true;
    start = end + 1;
  }
  return false;
}

/// Runs argv without a shell, stdout to stdout_path (if not empty). Exit status, or -1.
int run(const std::vector<std::string>& argv, const fs::path& stdout_path = {}) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  if (::posix_spawn_file_actions_init(&fa) != 0) return -1;
  if (!stdout_path.empty()) {
    ::posix_spawn_file_actions_addopen(&fa, 1, stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  }
  pid_t pid = 0;
  const int rc = ::posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  ::posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "callrec_wav_XXXXXX").string();
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

std::string read_text(const fs::path& p) {
  const auto b = read_all(p);
  std::string s(b.begin(), b.end());
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

/// The canonical header for a mono 16-bit file, written out literally.
std::vector<unsigned char> expected_header(std::uint32_t rate, std::uint32_t data_bytes) {
  const std::uint32_t riff = 36 + data_bytes;
  const std::uint32_t byte_rate = rate * 2;
  auto le32 = [](std::uint32_t v) {
    return std::vector<unsigned char>{static_cast<unsigned char>(v), static_cast<unsigned char>(v >> 8),
                                      static_cast<unsigned char>(v >> 16), static_cast<unsigned char>(v >> 24)};
  };
  std::vector<unsigned char> h = {'R', 'I', 'F', 'F'};
  for (auto b : le32(riff)) h.push_back(b);
  for (unsigned char c : {'W', 'A', 'V', 'E', 'f', 'm', 't', ' '}) h.push_back(c);
  for (unsigned char c : {16, 0, 0, 0,   // fmt chunk size
                          1, 0,          // PCM
                          1, 0}) {       // mono
    h.push_back(c);
  }
  for (auto b : le32(rate)) h.push_back(b);
  for (auto b : le32(byte_rate)) h.push_back(b);
  for (unsigned char c : {2, 0,      // block align
                          16, 0}) {  // bits per sample
    h.push_back(c);
  }
  for (unsigned char c : {'d', 'a', 't', 'a'}) h.push_back(c);
  for (auto b : le32(data_bytes)) h.push_back(b);
  return h;
}

TEST(WavWriter, HeaderAndSamplesByteByByte) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const fs::path p = dir.path() / "a.wav";
  WavWriter w;
  ASSERT_TRUE(w.open(p, 8000)) << "open";
  const std::vector<std::int16_t> samples = {1, -2, 0x1234, -32768, 32767};
  Status st = w.write(samples);
  ASSERT_TRUE(st) << st.message();
  EXPECT_EQ(w.samples_written(), 5u);
  st = w.close();
  ASSERT_TRUE(st) << st.message();

  const auto bytes = read_all(p);
  ASSERT_EQ(bytes.size(), 44u + 10u);
  const std::vector<unsigned char> header_literal = {
      'R', 'I', 'F', 'F', 46, 0, 0, 0,           // RIFF size = 36 + 10
      'W', 'A', 'V', 'E', 'f', 'm', 't', ' ',    //
      16, 0, 0, 0, 1, 0, 1, 0,                   // fmt size, PCM, mono
      0x40, 0x1F, 0, 0,                          // 8000 Hz
      0x80, 0x3E, 0, 0,                          // 16000 bytes/s
      2, 0, 16, 0,                               // block align, bits
      'd', 'a', 't', 'a', 10, 0, 0, 0};          // data size
  for (std::size_t i = 0; i < 44; ++i) EXPECT_EQ(bytes[i], header_literal[i]) << "header byte " << i;
  const std::vector<unsigned char> data_literal = {0x01, 0x00, 0xFE, 0xFF, 0x34, 0x12, 0x00, 0x80, 0xFF, 0x7F};
  for (std::size_t i = 0; i < 10; ++i) EXPECT_EQ(bytes[44 + i], data_literal[i]) << "data byte " << i;
}

TEST(WavWriter, EmptyFileHasZeroDataSize) {
  TempDir dir;
  const fs::path p = dir.path() / "empty.wav";
  WavWriter w;
  ASSERT_TRUE(w.open(p, 16000));
  ASSERT_TRUE(w.close());
  EXPECT_EQ(read_all(p), expected_header(16000, 0));
}

TEST(WavWriter, ManyWritesAccumulateAndDestructorFinalizes) {
  TempDir dir;
  const fs::path p = dir.path() / "many.wav";
  std::vector<std::int16_t> all;
  {
    WavWriter w;
    ASSERT_TRUE(w.open(p, 8000));
    for (int chunk = 0; chunk < 100; ++chunk) {
      std::vector<std::int16_t> s(160 + chunk);  // odd sizes, some larger than one conversion chunk
      for (std::size_t i = 0; i < s.size(); ++i) s[i] = static_cast<std::int16_t>(chunk * 1000 - static_cast<int>(i));
      ASSERT_TRUE(w.write(s));
      all.insert(all.end(), s.begin(), s.end());
    }
    std::vector<std::int16_t> big(10000, -7);
    ASSERT_TRUE(w.write(big));
    all.insert(all.end(), big.begin(), big.end());
    EXPECT_EQ(w.samples_written(), all.size());
    // no close(): the destructor must finalize the sizes
  }
  const auto bytes = read_all(p);
  const auto data_bytes = static_cast<std::uint32_t>(all.size() * 2);
  ASSERT_EQ(bytes.size(), 44u + data_bytes);
  const auto hdr = expected_header(8000, data_bytes);
  EXPECT_TRUE(std::equal(hdr.begin(), hdr.end(), bytes.begin()));
  for (std::size_t i = 0; i < all.size(); ++i) {
    const auto v = static_cast<std::int16_t>(static_cast<std::uint16_t>(bytes[44 + 2 * i] | (bytes[45 + 2 * i] << 8)));
    ASSERT_EQ(v, all[i]) << "sample " << i;
  }
}

TEST(WavWriter, ErrorsNameTheFile) {
  TempDir dir;
  const fs::path p = dir.path() / "no-such-dir" / "x.wav";
  WavWriter w;
  Status st = w.open(p, 8000);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.code(), ENOENT);
  EXPECT_NE(st.message().find(p.string()), std::string::npos) << st.message();

  const std::int16_t one = 1;
  st = w.write(std::span<const std::int16_t>(&one, 1));
  EXPECT_FALSE(st) << "write without open must fail";
  EXPECT_TRUE(w.close()) << "close of a writer that is not open is a no-op";

  EXPECT_FALSE(w.open(dir.path() / "r.wav", 0)) << "sample rate 0 is refused";
  EXPECT_FALSE(w.open("-", 8000)) << "'-' is not supported";

  ASSERT_TRUE(w.open(dir.path() / "ok.wav", 8000));
  st = w.open(dir.path() / "second.wav", 8000);
  EXPECT_FALSE(st) << "open while open must fail";
  EXPECT_TRUE(w.close());
}

TEST(WavWriter, WriteErrorIsReported) {
  if (::access("/dev/full", W_OK) != 0) GTEST_SKIP() << "/dev/full is not available";
  WavWriter w;
  Status st = w.open("/dev/full", 8000);  // the header fits in stdio's buffer: open succeeds
  if (!st) GTEST_SKIP() << st.message();
  std::vector<std::int16_t> s(100000, 1);
  st = w.write(s);  // larger than the stdio buffer: reaches write(2) -> ENOSPC
  Status closed = w.close();
  EXPECT_TRUE(!st || !closed) << "writing to /dev/full must fail somewhere";
  const Status& failed = !st ? st : closed;
  EXPECT_EQ(failed.code(), ENOSPC) << failed.message();
  EXPECT_NE(failed.message().find("/dev/full"), std::string::npos) << failed.message();
}

TEST(WavWriter, SoxReadsTheFile) {
  if (!in_path("soxi") || !in_path("sox")) GTEST_SKIP() << "sox/soxi is not installed";
  TempDir dir;
  const fs::path p = dir.path() / "sox.wav";
  std::vector<std::int16_t> samples(8000);
  for (std::size_t i = 0; i < samples.size(); ++i) samples[i] = static_cast<std::int16_t>((i * 37) % 65536 - 32768);
  {
    WavWriter w;
    ASSERT_TRUE(w.open(p, 8000));
    ASSERT_TRUE(w.write(samples));
    ASSERT_TRUE(w.close());
  }
  const fs::path out = dir.path() / "soxi.txt";
  ASSERT_EQ(run({"soxi", "-r", p.string()}, out), 0);
  EXPECT_EQ(read_text(out), "8000");
  ASSERT_EQ(run({"soxi", "-c", p.string()}, out), 0);
  EXPECT_EQ(read_text(out), "1");
  ASSERT_EQ(run({"soxi", "-b", p.string()}, out), 0);
  EXPECT_EQ(read_text(out), "16");
  ASSERT_EQ(run({"soxi", "-s", p.string()}, out), 0);
  EXPECT_EQ(read_text(out), "8000");
  ASSERT_EQ(run({"soxi", "-e", p.string()}, out), 0);
  EXPECT_EQ(read_text(out), "Signed Integer PCM");

  // And sox decodes the very samples we wrote.
  const fs::path raw = dir.path() / "back.raw";
  ASSERT_EQ(run({"sox", "-D", p.string(), "-t", "raw", "-e", "signed-integer", "-b", "16", "-L", raw.string()}), 0);
  const auto back = read_all(raw);
  ASSERT_EQ(back.size(), samples.size() * 2);
  for (std::size_t i = 0; i < samples.size(); ++i) {
    const auto v = static_cast<std::int16_t>(static_cast<std::uint16_t>(back[2 * i] | (back[2 * i + 1] << 8)));
    ASSERT_EQ(v, samples[i]) << "sample " << i;
  }
}

}  // namespace
}  // namespace callrec::fileio
