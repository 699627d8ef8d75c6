// End-to-end tests of the callrec command-line tool: they run the real binary
// (CALLREC_BIN_DIR "/callrec") on files made in a temporary directory and check its output,
// its exit codes, the WAV it writes (against sox as an independent G.711 decoder) and the UDP
// packets it plays (bytes and pacing).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <cmath>
#include <stdexcept>
#include <thread>

#include "../e2e/harness.hpp"
#include "fileio/catalog.hpp"
#include "fileio/record_writer.hpp"
#include "tools/callrec/json_reader.hpp"

namespace {

namespace fs = std::filesystem;
namespace fileio = callrec::fileio;
using callrec::Status;
using callrec::cli::Json;
using callrec::cli::JsonParser;
using Bytes = std::vector<std::uint8_t>;

const std::string kCallrec = CALLREC_BIN_DIR "/callrec";

// ---------------------------------------------------------------------------------------------
// Running the binary

struct RunResult {
  int exit_code = -1;  ///< exit status, or 128 + signal
  std::string out;
  std::string err;
};

/// A started child with its stdout/stderr pipes.
struct Child {
  pid_t pid = -1;
  int out_fd = -1;
  int err_fd = -1;
};

Child spawn(const std::string& program, const std::vector<std::string>& args) {
  int out_pipe[2];
  int err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe2: " << std::strerror(errno);
    return {};
  }
  std::vector<std::string> argv_s;
  argv_s.push_back(program);
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(out_pipe[1], STDOUT_FILENO);
    dup2(err_pipe[1], STDERR_FILENO);
    const int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (pid < 0) {
    ADD_FAILURE() << "fork: " << std::strerror(errno);
    close(out_pipe[0]);
    close(err_pipe[0]);
    return {};
  }
  return {pid, out_pipe[0], err_pipe[0]};
}

/// Reads both pipes to EOF and reaps the child; kills it after `timeout`.
RunResult finish(Child c, std::chrono::seconds timeout = std::chrono::seconds(60)) {
  RunResult r;
  if (c.pid < 0) return r;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool out_open = true;
  bool err_open = true;
  bool killed = false;
  while (out_open || err_open) {
    pollfd fds[2] = {{out_open ? c.out_fd : -1, POLLIN, 0}, {err_open ? c.err_fd : -1, POLLIN, 0}};
    const int rc = poll(fds, 2, 100);
    if (rc < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      char buf[4096];
      const ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        (i == 0 ? r.out : r.err).append(buf, static_cast<std::size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        (i == 0 ? out_open : err_open) = false;
      }
    }
    if (!killed && std::chrono::steady_clock::now() > deadline) {
      ADD_FAILURE() << "callrec did not finish in time; killing it";
      kill(c.pid, SIGKILL);
      killed = true;
    }
  }
  close(c.out_fd);
  close(c.err_fd);
  int status = 0;
  while (waitpid(c.pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

RunResult run(const std::string& program, const std::vector<std::string>& args) {
  return finish(spawn(program, args));
}

RunResult callrec(const std::vector<std::string>& args) { return run(kCallrec, args); }

/// gtest prints this on failure: the command's whole output.
std::string describe(const RunResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\n--- stdout ---\n" + r.out + "--- stderr ---\n" + r.err;
}

bool contains(std::string_view hay, std::string_view needle) { return hay.find(needle) != std::string_view::npos; }

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// ---------------------------------------------------------------------------------------------
// Record files, built byte by byte (independent of the library under test)

void put_le32(Bytes& b, std::size_t at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v >> (8 * i));
}
void put_be32(Bytes& b, std::size_t at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v >> (24 - 8 * i));
}

Bytes header(std::string_view codec, std::uint32_t rtp_len, std::uint32_t increment, std::uint32_t data_size,
             bool big_endian = false) {
  Bytes h(76, 0);
  std::copy(codec.begin(), codec.end(), h.begin());
  auto put = big_endian ? put_be32 : put_le32;
  put(h, 64, rtp_len);
  put(h, 68, increment);
  put(h, 72, data_size);
  return h;
}

/// One stored RTP packet of exactly rtp_len bytes and the G.711 payload a decoder must use.
struct Packet {
  Bytes bytes;
  Bytes payload;
};

enum class Shape { kPlain, kCsrc, kExtension, kPadding };

Packet make_packet(std::uint8_t pt, std::uint16_t seq, std::uint32_t ts, std::size_t rtp_len, Shape shape,
                   std::mt19937& rng) {
  Packet p;
  Bytes& b = p.bytes;
  const std::size_t csrc = shape == Shape::kCsrc ? 2 : 0;
  b.push_back(static_cast<std::uint8_t>(0x80 | (shape == Shape::kPadding ? 0x20 : 0) |
                                        (shape == Shape::kExtension ? 0x10 : 0) | csrc));
  b.push_back(pt);
  b.push_back(static_cast<std::uint8_t>(seq >> 8));
  b.push_back(static_cast<std::uint8_t>(seq));
  for (int i = 3; i >= 0; --i) b.push_back(static_cast<std::uint8_t>(ts >> (8 * i)));
  for (std::uint8_t v : {0x12, 0x34, 0x56, 0x78}) b.push_back(v);  // SSRC
  for (std::size_t i = 0; i < csrc * 4; ++i) b.push_back(static_cast<std::uint8_t>(0xC0 + i));
  if (shape == Shape::kExtension) {
    for (std::uint8_t v : {0xBE, 0xDE, 0x00, 0x01, 0x10, 0xAA, 0x00, 0x00}) b.push_back(v);  // 1 word
  }
  const std::size_t padding = shape == Shape::kPadding ? 4 : 0;
  const std::size_t payload_len = rtp_len - b.size() - padding;
  for (std::size_t i = 0; i < payload_len; ++i) {
    const auto v = static_cast<std::uint8_t>(rng());
    b.push_back(v);
    p.payload.push_back(v);
  }
  for (std::size_t i = 0; i < padding; ++i) b.push_back(i + 1 == padding ? static_cast<std::uint8_t>(padding) : 0);
  return p;
}

/// n packets of 20 ms PCMA/PCMU (160 payload bytes when plain); every 7th packet has a CSRC
/// list, an extension or padding, in turn, when `mixed_shapes`.
std::vector<Packet> make_packets(std::size_t n, std::uint8_t pt, std::uint32_t seed, bool mixed_shapes = false,
                                 std::size_t rtp_len = 172) {
  std::mt19937 rng(seed);
  std::vector<Packet> v;
  const Shape shapes[] = {Shape::kCsrc, Shape::kExtension, Shape::kPadding};
  for (std::size_t i = 0; i < n; ++i) {
    const Shape s = mixed_shapes && i % 7 == 3 ? shapes[(i / 7) % 3] : Shape::kPlain;
    v.push_back(make_packet(pt, static_cast<std::uint16_t>(1000 + i), static_cast<std::uint32_t>(160 * i), rtp_len, s,
                            rng));
  }
  return v;
}

Bytes record_bytes(std::string_view codec, const std::vector<Packet>& pkts, std::size_t rtp_len = 172,
                   std::optional<std::uint32_t> data_size = std::nullopt, bool big_endian = false) {
  const auto size = static_cast<std::uint32_t>(pkts.size() * rtp_len);
  Bytes b = header(codec, static_cast<std::uint32_t>(rtp_len), 160, data_size.value_or(size), big_endian);
  for (const Packet& p : pkts) b.insert(b.end(), p.bytes.begin(), p.bytes.end());
  return b;
}

void write_file(const fs::path& p, const Bytes& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  ASSERT_TRUE(f.good()) << p;
}

Bytes read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

Bytes concat_payloads(const std::vector<Packet>& pkts) {
  Bytes out;
  for (const Packet& p : pkts) out.insert(out.end(), p.payload.begin(), p.payload.end());
  return out;
}

// ---------------------------------------------------------------------------------------------
// WAV

struct Wav {
  std::uint16_t format = 0;
  std::uint16_t channels = 0;
  std::uint32_t rate = 0;
  std::uint32_t byte_rate = 0;
  std::uint16_t block_align = 0;
  std::uint16_t bits = 0;
  std::vector<std::int16_t> samples;
};

std::uint32_t le32(const Bytes& b, std::size_t at) {
  return static_cast<std::uint32_t>(b[at]) | static_cast<std::uint32_t>(b[at + 1]) << 8 |
         static_cast<std::uint32_t>(b[at + 2]) << 16 | static_cast<std::uint32_t>(b[at + 3]) << 24;
}
std::uint16_t le16(const Bytes& b, std::size_t at) {
  return static_cast<std::uint16_t>(b[at] | b[at + 1] << 8);
}

std::vector<std::int16_t> samples_le16(const Bytes& b, std::size_t from, std::size_t bytes) {
  std::vector<std::int16_t> s;
  const std::size_t end = std::min(b.size(), from + bytes);
  for (std::size_t i = from; i + 2 <= end; i += 2) s.push_back(static_cast<std::int16_t>(le16(b, i)));
  return s;
}

/// Parses a RIFF/WAVE file; fails the test on a malformed one.
std::optional<Wav> read_wav(const fs::path& p) {
  const Bytes b = read_file(p);
  if (b.size() < 12 || std::memcmp(b.data(), "RIFF", 4) != 0 || std::memcmp(b.data() + 8, "WAVE", 4) != 0) {
    ADD_FAILURE() << p << ": not a RIFF/WAVE file";
    return std::nullopt;
  }
  EXPECT_EQ(le32(b, 4), b.size() - 8) << "RIFF size";
  Wav w;
  bool have_fmt = false;
  for (std::size_t at = 12; at + 8 <= b.size();) {
    const std::string id(reinterpret_cast<const char*>(b.data() + at), 4);
    const std::uint32_t size = le32(b, at + 4);
    const std::size_t body = at + 8;
    if (body + size > b.size()) {
      ADD_FAILURE() << p << ": chunk " << id << " runs past the end";
      return std::nullopt;
    }
    if (id == "fmt ") {
      w.format = le16(b, body);
      w.channels = le16(b, body + 2);
      w.rate = le32(b, body + 4);
      w.byte_rate = le32(b, body + 8);
      w.block_align = le16(b, body + 12);
      w.bits = le16(b, body + 14);
      have_fmt = true;
    } else if (id == "data") {
      if (!have_fmt) ADD_FAILURE() << "data before fmt";
      w.samples = samples_le16(b, body, size);
      return w;
    }
    at = body + size + (size & 1);
  }
  ADD_FAILURE() << p << ": no data chunk";
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Fixture

class CallrecCli : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "callrec_cli_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
    dir_ = tmpl;
    ASSERT_TRUE(fs::exists(kCallrec)) << kCallrec << " not built";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  fs::path path(const std::string& name) const { return dir_ / name; }
  /// Writes a record file and returns its path as a string.
  std::string record(const std::string& name, const Bytes& b) const {
    write_file(path(name), b);
    return path(name).string();
  }

  static bool have_sox() { return run("sox", {"--version"}).exit_code == 0; }

  /// Decodes G.711 bytes with sox: the reference decoder.
  std::vector<std::int16_t> sox_decode(const Bytes& g711, const char* encoding) {
    const fs::path in = path(std::string("ref_") + encoding + ".raw");
    const fs::path out = path(std::string("ref_") + encoding + ".pcm");
    write_file(in, g711);
    const RunResult r = run("sox", {"-t", "raw", "-r", "8000", "-e", encoding, "-b", "8", "-c", "1", in.string(), "-t",
                                    "raw", "-e", "signed-integer", "-b", "16", "-L", out.string()});
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    const Bytes pcm = read_file(out);
    return samples_le16(pcm, 0, pcm.size());
  }

  fs::path dir_;
};

// ---------------------------------------------------------------------------------------------
// help and usage

TEST_F(CallrecCli, HelpListsEverySubcommandAndExitCodes) {
  for (const std::vector<std::string>& args : {std::vector<std::string>{"--help"}, {"-h"}, {"help"}}) {
    const RunResult r = callrec(args);
    ASSERT_EQ(r.exit_code, 0) << describe(r);
    for (const char* word : {"info", "export", "play", "repair", "list", "status", "help", "Exit codes"}) {
      EXPECT_TRUE(contains(r.out, word)) << word << " missing from\n" << r.out;
    }
    for (const char* code : {"  0  ", "  1  ", "  2  ", "  3  "}) EXPECT_TRUE(contains(r.out, code)) << r.out;
    EXPECT_TRUE(r.err.empty()) << r.err;
  }
}

TEST_F(CallrecCli, SubcommandHelpBothSpellings) {
  const RunResult a = callrec({"help", "export"});
  const RunResult b = callrec({"export", "--help"});
  ASSERT_EQ(a.exit_code, 0) << describe(a);
  ASSERT_EQ(b.exit_code, 0) << describe(b);
  EXPECT_EQ(a.out, b.out);
  for (const char* word : {"Usage: callrec export", "--output", "-o", "--sort", "Exit codes"}) {
    EXPECT_TRUE(contains(a.out, word)) << word << "\n" << a.out;
  }
  for (const char* cmd : {"info", "play", "repair"}) {
    const RunResult r = callrec({cmd, "-h"});
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    EXPECT_TRUE(contains(r.out, std::string("Usage: callrec ") + cmd)) << r.out;
  }
  const RunResult play = callrec({"help", "play"});
  for (const char* word : {"--to", "--speed", "--loop", "--quiet"}) EXPECT_TRUE(contains(play.out, word)) << play.out;
}

TEST_F(CallrecCli, UsageErrorsExit2) {
  const std::string good = record("good.rec", record_bytes("PCMA", make_packets(3, 8, 1)));
  const std::vector<std::vector<std::string>> cases = {
      {},                                            // no command
      {"bogus"},                                     // unknown command
      {"--bogus"},                                   // option before a command
      {"info"},                                      // no FILE
      {"info", "--nope", good},                      // unknown option
      {"info", "--json=yes", good},                  // flag with a value
      {"export", good},                              // no -o
      {"export", good, "-o"},                        // -o without value
      {"export", good, "-o", "a.wav", "-o", "b.wav"},  // -o twice
      {"export", good, "-o", "-"},                   // stdout is not supported
      {"play", good},                                // no --to
      {"play", good, good, "--to", "127.0.0.1:9"},   // two FILEs
      {"play", good, "--to", "127.0.0.1"},           // no port
      {"play", good, "--to", "127.0.0.1:0"},         // port 0
      {"play", good, "--to", "127.0.0.1:70000"},     // port too large
      {"play", good, "--to", "::1:5004"},            // IPv6 without brackets
      {"play", good, "--to", "127.0.0.1:9", "--speed", "0"},
      {"play", good, "--to", "127.0.0.1:9", "--speed", "fast"},
      {"help", "bogus"},
      {"list", "--since", "yesterday"},
      {"list", "extra"},
      {"status", "--metrics", "localhost"},
      {"status", "extra"},
  };
  for (const auto& args : cases) {
    const RunResult r = callrec(args);
    std::string cmdline;
    for (const auto& a : args) cmdline += a + " ";
    EXPECT_EQ(r.exit_code, 2) << cmdline << "\n" << describe(r);
    EXPECT_FALSE(r.err.empty()) << cmdline;
    EXPECT_TRUE(r.out.empty()) << cmdline << "\n" << r.out;
  }
  const RunResult unknown = callrec({"info", "--nope", good});
  EXPECT_TRUE(contains(unknown.err, "--nope")) << unknown.err;
}

// ---------------------------------------------------------------------------------------------
// info

TEST_F(CallrecCli, InfoGoodFile) {
  const std::string f = record("good.rec", record_bytes("PCMA", make_packets(50, 8, 2)));
  const RunResult r = callrec({"info", f});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  for (const char* s : {"'PCMA' (8000 Hz)", "172 bytes", "increment   160", "8600 bytes", "50 declared, 50 on disk",
                        "20.000 ms", "1.000 s (0:00:01.000)", "little-endian", "integrity   ok", "problems    none"}) {
    EXPECT_TRUE(contains(r.out, s)) << "missing '" << s << "' in\n" << r.out;
  }
  EXPECT_TRUE(contains(r.out, f));
}

TEST_F(CallrecCli, InfoBigEndianHeaderAndLongDuration) {
  // 4000 packets of 20 ms = 80 s; header written big-endian.
  const std::string f = record("be.rec", record_bytes("pcmu", make_packets(4000, 0, 3), 172, std::nullopt, true));
  const RunResult r = callrec({"info", f});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(contains(r.out, "big-endian")) << r.out;
  EXPECT_TRUE(contains(r.out, "80.000 s (0:01:20.000)")) << r.out;
  EXPECT_TRUE(contains(r.out, "4000 declared, 4000 on disk")) << r.out;
}

TEST_F(CallrecCli, InfoOfRecordWriterOutput) {
  fileio::WriterOptions opts;
  opts.directory = dir_;
  opts.reserve_bytes = 0;
  opts.free_space = [](const fs::path&, std::uint64_t& free_bytes) {
    free_bytes = 1ull << 40;
    return Status::ok();
  };
  fs::path written;
  {
    fileio::RecordWriter w(opts);
    ASSERT_TRUE(w.set_format("PCMU", 172, 160).is_ok());
    for (const Packet& p : make_packets(25, 0, 4)) {
      const auto* data = reinterpret_cast<const std::byte*>(p.bytes.data());
      ASSERT_TRUE(w.append(std::span<const std::byte>(data, p.bytes.size())).is_ok());
    }
    ASSERT_TRUE(w.close().is_ok());
    ASSERT_EQ(w.segments().size(), 1u);
    written = w.segments().front().path;
  }
  const RunResult r = callrec({"info", "--json", written.string()});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  JsonParser parser(r.out);
  const auto json = parser.parse();
  ASSERT_TRUE(json) << parser.error() << "\n" << r.out;
  ASSERT_EQ(json->items.size(), 1u);
  const Json& o = json->items[0];
  EXPECT_EQ(o.get("codec")->str, "PCMU");
  EXPECT_EQ(o.get("packets_on_disk")->number, 25);
  EXPECT_EQ(o.get("data_size")->number, 25 * 172);
  EXPECT_TRUE(o.get("ok")->boolean);
}

TEST_F(CallrecCli, InfoJsonIsOneArrayWithStableKeys) {
  const std::string good = record("good \"quoted\"\\name.rec", record_bytes("PCMA", make_packets(50, 8, 5)));
  Bytes damaged_bytes = record_bytes("PCMA", make_packets(50, 8, 6));
  damaged_bytes.resize(damaged_bytes.size() - 135);  // 49 whole packets + 37 bytes
  const std::string damaged = record("damaged.rec", damaged_bytes);
  const RunResult r = callrec({"info", "--json", good, damaged});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  JsonParser parser(r.out);
  const auto json = parser.parse();
  ASSERT_TRUE(json) << parser.error() << "\n" << r.out;
  ASSERT_EQ(json->kind, Json::Kind::kArray);
  ASSERT_EQ(json->items.size(), 2u);
  const std::vector<std::string> keys = {"path", "ok", "integrity", "codec", "codec_known", "clock_rate", "rtp_len",
                                         "increment", "data_size", "file_size", "data_bytes_on_disk",
                                         "packets_declared", "packets_on_disk", "trailing_bytes", "period_ms",
                                         "duration_s", "duration", "byte_order", "problems"};
  for (const Json& o : json->items) {
    ASSERT_EQ(o.kind, Json::Kind::kObject);
    EXPECT_EQ(o.keys, keys);
  }
  const Json& g = json->items[0];
  EXPECT_EQ(g.get("path")->str, good);  // escaped and unescaped correctly
  EXPECT_TRUE(g.get("ok")->boolean);
  EXPECT_EQ(g.get("integrity")->str, "ok");
  EXPECT_EQ(g.get("codec")->str, "PCMA");
  EXPECT_EQ(g.get("clock_rate")->number, 8000);
  EXPECT_EQ(g.get("rtp_len")->number, 172);
  EXPECT_EQ(g.get("increment")->number, 160);
  EXPECT_EQ(g.get("data_size")->number, 8600);
  EXPECT_EQ(g.get("packets_declared")->number, 50);
  EXPECT_EQ(g.get("packets_on_disk")->number, 50);
  EXPECT_EQ(g.get("period_ms")->number, 20);
  EXPECT_EQ(g.get("duration_s")->number, 1);
  EXPECT_EQ(g.get("duration")->str, "0:00:01.000");
  EXPECT_EQ(g.get("byte_order")->str, "little");
  EXPECT_TRUE(g.get("problems")->items.empty());

  const Json& d = json->items[1];
  EXPECT_FALSE(d.get("ok")->boolean);
  EXPECT_EQ(d.get("integrity")->str, "repairable");
  EXPECT_EQ(d.get("packets_declared")->number, 50);
  EXPECT_EQ(d.get("packets_on_disk")->number, 49);
  EXPECT_EQ(d.get("trailing_bytes")->number, 37);
  ASSERT_FALSE(d.get("problems")->items.empty());
}

TEST_F(CallrecCli, InfoTruncatedFileNamesTheProblem) {
  Bytes b = record_bytes("PCMA", make_packets(50, 8, 7));
  b.resize(b.size() - 135);  // 49 whole packets + 37 bytes of the 50th; dataSize still says 50
  const std::string f = record("truncated.rec", b);
  const RunResult r = callrec({"info", f});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  const std::string out = lower(r.out);
  EXPECT_TRUE(contains(out, "repairable")) << r.out;
  EXPECT_TRUE(contains(out, "partial") || contains(out, "trailing")) << r.out;
  EXPECT_TRUE(contains(out, "datasize")) << r.out;
  EXPECT_TRUE(contains(r.out, "49 on disk")) << r.out;
}

TEST_F(CallrecCli, InfoWrongDataSize) {
  const std::string f = record("wrongsize.rec", record_bytes("PCMU", make_packets(20, 0, 8), 172, 172u * 5));
  const RunResult r = callrec({"info", f});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_TRUE(contains(lower(r.out), "datasize 860")) << r.out;
  EXPECT_TRUE(contains(r.out, "5 declared, 20 on disk")) << r.out;
  EXPECT_TRUE(contains(r.out, "NOT OK")) << r.out;
}

TEST_F(CallrecCli, InfoGarbageAndShortFilesAreBroken) {
  std::mt19937 rng(9);
  Bytes garbage(500);
  for (auto& c : garbage) c = static_cast<std::uint8_t>(rng());
  const std::string g = record("garbage.rec", garbage);
  const std::string s = record("short.rec", Bytes{'P', 'C', 'M', 'A'});
  for (const std::string& f : {g, s}) {
    const RunResult r = callrec({"info", f});
    EXPECT_EQ(r.exit_code, 1) << describe(r);
    EXPECT_TRUE(contains(r.out, "broken")) << r.out;
    EXPECT_TRUE(contains(r.out, "problem ")) << r.out;
  }
  const RunResult r = callrec({"info", s});
  EXPECT_TRUE(contains(r.out, "shorter than")) << r.out;
  // Garbage in the codec field stays printable in text and valid in JSON.
  const RunResult j = callrec({"info", "--json", g});
  JsonParser parser(j.out);
  ASSERT_TRUE(parser.parse()) << parser.error() << "\n" << j.out;
}

TEST_F(CallrecCli, InfoUnknownCodec) {
  const std::string f = record("g722.rec", record_bytes("G722", make_packets(10, 9, 10)));
  const RunResult r = callrec({"info", f});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_TRUE(contains(r.out, "G722")) << r.out;
  EXPECT_TRUE(contains(lower(r.out), "unknown codec")) << r.out;
}

TEST_F(CallrecCli, InfoMissingFileExit3NamesIt) {
  const std::string good = record("good.rec", record_bytes("PCMA", make_packets(5, 8, 11)));
  const std::string missing = path("no-such-file.rec").string();
  const RunResult r = callrec({"info", missing});
  EXPECT_EQ(r.exit_code, 3) << describe(r);
  EXPECT_TRUE(contains(r.err, missing)) << r.err;
  EXPECT_TRUE(contains(r.err, "No such file")) << r.err;
  // The other files are still reported.
  const RunResult both = callrec({"info", good, missing});
  EXPECT_EQ(both.exit_code, 3) << describe(both);
  EXPECT_TRUE(contains(both.out, good)) << both.out;
  const RunResult json = callrec({"info", "--json", missing, good});
  EXPECT_EQ(json.exit_code, 3);
  JsonParser parser(json.out);
  const auto v = parser.parse();
  ASSERT_TRUE(v) << parser.error() << "\n" << json.out;
  ASSERT_EQ(v->items.size(), 2u);
  EXPECT_EQ(v->items[0].get("path")->str, missing);
  EXPECT_FALSE(v->items[0].get("ok")->boolean);
  EXPECT_NE(v->items[0].get("error"), nullptr);
  EXPECT_TRUE(v->items[1].get("ok")->boolean);
}

// ---------------------------------------------------------------------------------------------
// export

TEST_F(CallrecCli, ExportPcmaMatchesSox) {
  if (!have_sox()) GTEST_SKIP() << "sox is not installed: no independent G.711 decoder to compare with";
  const auto pkts = make_packets(60, 8, 12, /*mixed_shapes=*/true);
  const std::string f = record("a.rec", record_bytes("PCMA", pkts));
  const std::string out = path("a.wav").string();
  const RunResult r = callrec({"export", f, "-o", out});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const auto wav = read_wav(out);
  ASSERT_TRUE(wav);
  EXPECT_EQ(wav->format, 1);
  EXPECT_EQ(wav->channels, 1);
  EXPECT_EQ(wav->rate, 8000u);
  EXPECT_EQ(wav->byte_rate, 16000u);
  EXPECT_EQ(wav->block_align, 2);
  EXPECT_EQ(wav->bits, 16);
  const auto ref = sox_decode(concat_payloads(pkts), "a-law");
  ASSERT_EQ(wav->samples.size(), ref.size());
  EXPECT_LT(ref.size(), 60u * 160u);  // headers with CSRC/extension and padding were skipped
  for (std::size_t i = 0; i < ref.size(); ++i) ASSERT_EQ(wav->samples[i], ref[i]) << "sample " << i;
}

TEST_F(CallrecCli, ExportPcmuMatchesSoxAndCoversEveryByte) {
  if (!have_sox()) GTEST_SKIP() << "sox is not installed: no independent G.711 decoder to compare with";
  // One packet per 160 consecutive byte values, so all 256 codes are decoded.
  auto pkts = make_packets(4, 0, 13);
  for (std::size_t k = 0; k < pkts.size(); ++k) {
    for (std::size_t i = 0; i < 160; ++i) {
      const auto v = static_cast<std::uint8_t>(k * 160 + i);
      pkts[k].bytes[12 + i] = v;
      pkts[k].payload[i] = v;
    }
  }
  const std::string f = record("u.rec", record_bytes("PCMU", pkts));
  const std::string out = path("u.wav").string();
  const RunResult r = callrec({"export", f, "--output", out});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const auto wav = read_wav(out);
  ASSERT_TRUE(wav);
  const auto ref = sox_decode(concat_payloads(pkts), "u-law");
  ASSERT_EQ(wav->samples.size(), 640u);
  ASSERT_EQ(wav->samples.size(), ref.size());
  for (std::size_t i = 0; i < ref.size(); ++i) ASSERT_EQ(wav->samples[i], ref[i]) << "code " << i % 256;
}

TEST_F(CallrecCli, ExportJoinsSegmentsInOrderAndSorted) {
  if (!have_sox()) GTEST_SKIP() << "sox is not installed: no independent G.711 decoder to compare with";
  const auto first = make_packets(30, 8, 14);
  const auto second = make_packets(20, 8, 15, true);
  const std::string a = record("Record_20240101T100000.000Z_0.rec", record_bytes("PCMA", first));
  const std::string b = record("Record_20240101T100010.000Z_1.rec", record_bytes("PCMA", second));
  Bytes joined = concat_payloads(first);
  const Bytes tail = concat_payloads(second);
  joined.insert(joined.end(), tail.begin(), tail.end());
  const auto ref = sox_decode(joined, "a-law");

  // In the order given.
  const std::string out1 = path("joined.wav").string();
  RunResult r = callrec({"export", a, b, "-o", out1});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(contains(r.out, "2 files")) << r.out;
  auto wav = read_wav(out1);
  ASSERT_TRUE(wav);
  EXPECT_EQ(wav->samples, ref);

  // Given in reverse: joined reversed without --sort, in name order with --sort.
  const std::string out2 = path("reversed.wav").string();
  r = callrec({"export", b, a, "-o", out2});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  wav = read_wav(out2);
  ASSERT_TRUE(wav);
  EXPECT_NE(wav->samples, ref);
  const std::string out3 = path("sorted.wav").string();
  r = callrec({"export", "--sort", b, a, "-o", out3});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  wav = read_wav(out3);
  ASSERT_TRUE(wav);
  EXPECT_EQ(wav->samples, ref);
}

TEST_F(CallrecCli, ExportDamagedFileIsPartial) {
  if (!have_sox()) GTEST_SKIP() << "sox is not installed: no independent G.711 decoder to compare with";
  auto pkts = make_packets(10, 8, 16);
  Bytes b = record_bytes("PCMA", pkts);
  b.resize(b.size() - 100);  // 9 whole packets + 72 bytes
  const std::string f = record("damaged.rec", b);
  const std::string out = path("damaged.wav").string();
  const RunResult r = callrec({"export", f, "-o", out});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_TRUE(contains(r.err, f)) << r.err;
  pkts.pop_back();
  const auto wav = read_wav(out);
  ASSERT_TRUE(wav);
  EXPECT_EQ(wav->samples, sox_decode(concat_payloads(pkts), "a-law"));
}

TEST_F(CallrecCli, ExportRefusals) {
  const std::string good = record("good.rec", record_bytes("PCMA", make_packets(5, 8, 17)));
  const std::string g722 = record("g722.rec", record_bytes("G722", make_packets(5, 9, 18)));
  const std::string out = path("out.wav").string();

  RunResult r = callrec({"export", good, g722, "-o", out});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_TRUE(contains(r.err, g722)) << r.err;
  EXPECT_TRUE(contains(r.err, "G722")) << r.err;
  EXPECT_FALSE(fs::exists(out)) << "nothing may be written for an impossible export";

  const std::string missing = path("missing.rec").string();
  r = callrec({"export", good, missing, "-o", out});
  EXPECT_EQ(r.exit_code, 3) << describe(r);
  EXPECT_TRUE(contains(r.err, missing)) << r.err;
  EXPECT_FALSE(fs::exists(out));

  r = callrec({"export", good, "-o", good});  // would destroy the input
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_EQ(read_file(good).size(), 76u + 5 * 172);

  r = callrec({"export", good, "-o", path("no-such-dir/out.wav").string()});
  EXPECT_EQ(r.exit_code, 3) << describe(r);
  EXPECT_TRUE(contains(r.err, "no-such-dir")) << r.err;
}

// ---------------------------------------------------------------------------------------------
// play

/// A UDP receiver on loopback that records kernel receive timestamps (SO_TIMESTAMPNS): the
/// stamp is taken when the sender's datagram enters the loopback device, so it does not
/// depend on when this (possibly descheduled) test thread gets to read it.
class UdpReceiver {
 public:
  explicit UdpReceiver(int family) {
    fd_ = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return;
    const int one = 1;
    setsockopt(fd_, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    const int rcvbuf = 4 << 20;
    setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_storage ss{};
    socklen_t len = 0;
    if (family == AF_INET) {
      auto* a = reinterpret_cast<sockaddr_in*>(&ss);
      a->sin_family = AF_INET;
      a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      len = sizeof(sockaddr_in);
    } else {
      auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
      a->sin6_family = AF_INET6;
      a->sin6_addr = in6addr_loopback;
      len = sizeof(sockaddr_in6);
    }
    if (bind(fd_, reinterpret_cast<sockaddr*>(&ss), len) != 0 ||
        getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
      close(fd_);
      fd_ = -1;
      return;
    }
    port_ = ntohs(family == AF_INET ? reinterpret_cast<sockaddr_in*>(&ss)->sin_port
                                    : reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  }
  UdpReceiver(const UdpReceiver&) = delete;
  UdpReceiver& operator=(const UdpReceiver&) = delete;
  ~UdpReceiver() {
    if (fd_ >= 0) close(fd_);
  }
  [[nodiscard]] bool ok() const { return fd_ >= 0; }
  [[nodiscard]] std::uint16_t port() const { return port_; }

  struct Datagram {
    Bytes bytes;
    std::int64_t t_ns = 0;  ///< kernel receive time (CLOCK_REALTIME), 0 when not available
  };

  /// Receives until `n` datagrams arrived or nothing came for `idle`.
  std::vector<Datagram> receive(std::size_t n, std::chrono::milliseconds idle) {
    std::vector<Datagram> got;
    while (got.size() < n) {
      pollfd p{fd_, POLLIN, 0};
      const int rc = poll(&p, 1, static_cast<int>(idle.count()));
      if (rc < 0 && errno == EINTR) continue;
      if (rc <= 0) break;
      Datagram d;
      d.bytes.resize(65536);
      iovec iov{d.bytes.data(), d.bytes.size()};
      alignas(cmsghdr) char control[256];
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      const ssize_t len = recvmsg(fd_, &msg, 0);
      if (len < 0) break;
      d.bytes.resize(static_cast<std::size_t>(len));
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
          timespec ts{};
          std::memcpy(&ts, CMSG_DATA(c), sizeof ts);
          d.t_ns = static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
        }
      }
      got.push_back(std::move(d));
    }
    return got;
  }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

/// Bytes and order exactly as stored; pacing never early: packet k arrives no earlier than
/// first + k * period (minus 2 ms for clock-rate differences), and the whole play takes at
/// least 95% of (n-1) periods. No tight upper bound: a loaded machine may be late, never early.
void expect_played(const std::vector<UdpReceiver::Datagram>& got, const std::vector<Packet>& pkts, double period_ms) {
  ASSERT_EQ(got.size(), pkts.size());
  for (std::size_t i = 0; i < pkts.size(); ++i) ASSERT_EQ(got[i].bytes, pkts[i].bytes) << "packet " << i;
  if (std::any_of(got.begin(), got.end(), [](const auto& d) { return d.t_ns == 0; })) {
    ADD_FAILURE() << "no SO_TIMESTAMPNS receive timestamps: pacing not checked";
    return;
  }
  const auto period_ns = static_cast<std::int64_t>(period_ms * 1e6);
  constexpr std::int64_t kEarlyToleranceNs = 2'000'000;
  const std::int64_t t0 = got.front().t_ns;
  for (std::size_t k = 1; k < got.size(); ++k) {
    const std::int64_t deadline = t0 + static_cast<std::int64_t>(k) * period_ns;
    EXPECT_GE(got[k].t_ns, deadline - kEarlyToleranceNs)
        << "packet " << k << " early by " << static_cast<double>(deadline - got[k].t_ns) / 1e6 << " ms";
  }
  const double elapsed_ms = static_cast<double>(got.back().t_ns - t0) / 1e6;
  const double nominal_ms = static_cast<double>(got.size() - 1) * period_ms;
  EXPECT_GE(elapsed_ms, nominal_ms * 0.95);
  EXPECT_LT(elapsed_ms, nominal_ms * 2 + 5000) << "absurdly slow: pacing broken?";
}

TEST_F(CallrecCli, PlaySendsEveryPacketPacedIPv4) {
  UdpReceiver rx(AF_INET);
  ASSERT_TRUE(rx.ok()) << std::strerror(errno);
  const auto pkts = make_packets(50, 8, 19, true);
  const std::string f = record("play.rec", record_bytes("PCMA", pkts));
  Child c = spawn(kCallrec, {"play", f, "--to", "127.0.0.1:" + std::to_string(rx.port()), "--quiet"});
  const auto got = rx.receive(pkts.size(), std::chrono::seconds(10));
  const RunResult r = finish(c);
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  expect_played(got, pkts, 20.0);
  // Only a summary line on stderr (quiet, and stderr is not a tty anyway).
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_TRUE(contains(r.err, "sent 50/50 packets")) << r.err;
  EXPECT_EQ(r.err.find('\r'), std::string::npos) << "progress line on a pipe";
}

TEST_F(CallrecCli, PlayWithSpeedIPv6) {
  UdpReceiver rx(AF_INET6);
  if (!rx.ok()) GTEST_SKIP() << "no IPv6 loopback here: " << std::strerror(errno);
  const auto pkts = make_packets(80, 0, 20);
  const std::string f = record("play6.rec", record_bytes("PCMU", pkts));
  Child c = spawn(kCallrec, {"play", f, "--to", "[::1]:" + std::to_string(rx.port()), "--speed", "4"});
  const auto got = rx.receive(pkts.size(), std::chrono::seconds(10));
  const RunResult r = finish(c);
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  expect_played(got, pkts, 5.0);  // 20 ms / 4
  EXPECT_TRUE(contains(r.err, "sent 80/80 packets")) << r.err;
}

TEST_F(CallrecCli, PlayLoopStopsCleanlyOnSigint) {
  UdpReceiver rx(AF_INET);
  ASSERT_TRUE(rx.ok());
  const auto pkts = make_packets(10, 8, 21);
  const std::string f = record("loop.rec", record_bytes("PCMA", pkts));
  Child c = spawn(kCallrec, {"play", f, "--to", "127.0.0.1:" + std::to_string(rx.port()), "--loop", "--speed", "10",
                             "--quiet"});
  const auto got = rx.receive(25, std::chrono::seconds(10));  // 2.5 passes
  kill(c.pid, SIGINT);
  const RunResult r = finish(c);
  ASSERT_EQ(got.size(), 25u);
  for (std::size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i].bytes, pkts[i % pkts.size()].bytes) << i;
  EXPECT_EQ(r.exit_code, 0) << "stopping a --loop after whole passes is the normal end\n" << describe(r);
  EXPECT_TRUE(contains(r.err, "stopped by SIGINT")) << r.err;
  EXPECT_TRUE(contains(r.err, "whole passes of 10")) << r.err;
}

TEST_F(CallrecCli, PlayInterruptedIsPartial) {
  UdpReceiver rx(AF_INET);
  ASSERT_TRUE(rx.ok());
  const auto pkts = make_packets(500, 8, 22);  // 10 s
  const std::string f = record("long.rec", record_bytes("PCMA", pkts));
  Child c = spawn(kCallrec, {"play", f, "--to", "127.0.0.1:" + std::to_string(rx.port())});
  const auto got = rx.receive(5, std::chrono::seconds(10));
  ASSERT_EQ(got.size(), 5u);
  kill(c.pid, SIGINT);
  const RunResult r = finish(c, std::chrono::seconds(5));
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_TRUE(contains(r.err, "stopped by SIGINT")) << r.err;
  EXPECT_TRUE(contains(r.err, "/500 packets")) << r.err;
}

TEST_F(CallrecCli, PlayErrors) {
  const auto pkts = make_packets(5, 8, 23);
  const std::string good = record("good.rec", record_bytes("PCMA", pkts));
  const std::string missing = path("missing.rec").string();
  RunResult r = callrec({"play", missing, "--to", "127.0.0.1:9"});
  EXPECT_EQ(r.exit_code, 3) << describe(r);
  EXPECT_TRUE(contains(r.err, missing)) << r.err;

  std::mt19937 rng(24);
  Bytes garbage(300);
  for (auto& c : garbage) c = static_cast<std::uint8_t>(rng());
  const std::string broken = record("garbage.rec", garbage);
  r = callrec({"play", broken, "--to", "127.0.0.1:9"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_TRUE(contains(r.err, broken)) << r.err;

  // Nobody listens: ICMP port unreachable makes sends fail (ECONNREFUSED): partial.
  std::uint16_t closed_port = 0;
  {
    UdpReceiver tmp(AF_INET);
    closed_port = tmp.port();
  }
  r = callrec({"play", good, "--to", "127.0.0.1:" + std::to_string(closed_port), "--speed", "10", "--quiet"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_TRUE(contains(r.err, "sends failed")) << r.err;
}

// ---------------------------------------------------------------------------------------------
// repair

TEST_F(CallrecCli, RepairFixesThenNothingToChange) {
  Bytes b = record_bytes("PCMA", make_packets(50, 8, 25), 172, 172u * 60);  // dataSize says 60
  b.resize(b.size() - 135);                                                // 49 whole + 37 bytes
  const std::string f = record("crashed.rec", b);

  // --dry-run: reports, changes nothing.
  RunResult r = callrec({"repair", "--dry-run", f});
  EXPECT_EQ(r.exit_code, 1) << "a file needing repair is a file with problems\n" << describe(r);
  EXPECT_TRUE(contains(r.out, "dataSize 10320 -> 8428")) << r.out;
  EXPECT_TRUE(contains(r.out, "37 bytes")) << r.out;
  EXPECT_TRUE(contains(r.out, "dry run")) << r.out;
  EXPECT_EQ(read_file(f), b) << "--dry-run changed the file";

  r = callrec({"repair", f});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(contains(r.out, "repaired")) << r.out;
  EXPECT_TRUE(contains(r.out, "dataSize 10320 -> 8428")) << r.out;
  EXPECT_TRUE(contains(r.out, "37 bytes")) << r.out;
  const Bytes fixed = read_file(f);
  ASSERT_EQ(fixed.size(), 76u + 49 * 172);
  EXPECT_EQ(le32(fixed, 72), 49u * 172);
  // Nothing but dataSize and the length changed.
  EXPECT_TRUE(std::equal(fixed.begin(), fixed.begin() + 72, b.begin()));
  EXPECT_TRUE(std::equal(fixed.begin() + 76, fixed.end(), b.begin() + 76));

  r = callrec({"repair", f});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(contains(r.out, "ok, nothing to change")) << r.out;
  r = callrec({"repair", "--dry-run", f});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(contains(r.out, "ok, nothing to change")) << r.out;
  r = callrec({"info", f});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
}

TEST_F(CallrecCli, RepairRefusesBrokenAndMissing) {
  std::mt19937 rng(26);
  Bytes garbage(400);
  for (auto& c : garbage) c = static_cast<std::uint8_t>(rng());
  const std::string broken = record("garbage.rec", garbage);
  RunResult r = callrec({"repair", broken});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_TRUE(contains(r.err, broken)) << r.err;
  EXPECT_EQ(read_file(broken), garbage);

  const std::string missing = path("missing.rec").string();
  r = callrec({"repair", missing});
  EXPECT_EQ(r.exit_code, 3) << describe(r);
  EXPECT_TRUE(contains(r.err, missing)) << r.err;
}

// ---------------------------------------------------------------------------------------------
// list

/// Unix ms of 2026-11-29 at h:m (UTC).
std::int64_t nov29(int h, int m) {
  using namespace std::chrono;
  const auto t = sys_days{year{2026} / 11 / 29} + hours(h) + minutes(m);
  return duration_cast<milliseconds>(t.time_since_epoch()).count();
}

/// o[key], or a null value when absent (never a null pointer).
const Json& at(const Json& o, std::string_view key) {
  static const Json kNull;
  const Json* v = o.get(key);
  return v != nullptr ? *v : kNull;
}

class CallrecList : public CallrecCli {
 protected:
  void SetUp() override {
    CallrecCli::SetUp();
    db_ = path("catalog.db").string();
    fileio::Catalog c;
    ASSERT_TRUE(c.open(db_));
    // a: dev1, 100 -> 555, stopped by the phone, two files
    a_ = add(c, "call-a", "00:00:5e:00:53:01", "555", "100", "out", nov29(17, 0));
    fileio::SegmentInfo seg;
    seg.path = "/rec/a0.rec";
    seg.codec = "PCMA";
    seg.rtp_len = 172;
    seg.increment = 160;
    seg.index = 0;
    ASSERT_TRUE(c.add_segment(a_, seg));
    seg.path = "/rec/a1.rec";
    seg.index = 1;
    ASSERT_TRUE(c.add_segment(a_, seg));
    fileio::RecordingStats st;
    st.received = 3000;
    st.lost = 7;
    ASSERT_TRUE(c.finish_recording(a_, nov29(17, 1) + 5000, "phone", st));  // 0:01:05
    // b: dev1, 666 <- 200, recovered after a crash
    b_ = add(c, "call-b", "00:00:5e:00:53:01", "666", "200", "in", nov29(18, 30));
    ASSERT_TRUE(c.mark_recovered(b_, nov29(18, 40)));
    // d: dev2, 100 is the remote number here, still recording
    d_ = add(c, "call-d", "00:00:5e:00:53:02", "100", "300", "in", nov29(19, 0));
    // e: dev2, another day
    e_ = add(c, "call-e", "00:00:5e:00:53:02", "777", "301", "out", nov29(12, 0) + 86'400'000LL);
    ASSERT_TRUE(c.finish_recording(e_, nov29(12, 1) + 86'400'000LL, "rtp_timeout", {}));
  }

  static std::int64_t add(fileio::Catalog& c, const std::string& call_id, const std::string& device,
                          const std::string& remote, const std::string& local, const std::string& dir,
                          std::int64_t started) {
    fileio::RecordingRow r;
    r.call_id = call_id;
    r.source = "upload";
    r.device = device;
    r.remote_number = remote;
    r.remote_name = "Remote \"R\"";
    r.local_number = local;
    r.local_name = "Local";
    r.direction = dir;
    r.codec = "PCMA";
    r.started_at = started;
    r.peer = "192.0.2.7:5060";
    std::int64_t id = 0;
    const Status st = c.insert_recording(r, id);
    EXPECT_TRUE(st) << st.message();
    return id;
  }

  /// Runs `callrec list --catalog DB --json ARGS...` and returns the ids, in output order.
  std::vector<std::int64_t> ids(std::vector<std::string> args) {
    args.insert(args.begin(), {"list", "--catalog", db_, "--json"});
    const RunResult r = callrec(args);
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    JsonParser parser(r.out);
    const auto json = parser.parse();
    EXPECT_TRUE(json) << parser.error() << "\n" << r.out;
    std::vector<std::int64_t> out;
    if (!json || json->kind != Json::Kind::kArray) return out;
    for (const Json& o : json->items) {
      const Json& id = at(o, "id");
      EXPECT_EQ(id.kind, Json::Kind::kNumber) << r.out;
      out.push_back(static_cast<std::int64_t>(id.number));
    }
    return out;
  }

  std::string db_;
  std::int64_t a_ = 0, b_ = 0, d_ = 0, e_ = 0;
};

using Ids = std::vector<std::int64_t>;

TEST_F(CallrecList, Filters) {
  EXPECT_EQ(ids({}), (Ids{e_, d_, b_, a_})) << "newest first";
  EXPECT_EQ(ids({"--device", "00:00:5e:00:53:01"}), (Ids{b_, a_}));
  EXPECT_EQ(ids({"-d", "00:00:5e:00:53:02"}), (Ids{e_, d_}));
  EXPECT_EQ(ids({"--device", "00:00:5e:00:53:09"}), Ids{});
  EXPECT_EQ(ids({"--number", "100"}), (Ids{d_, a_})) << "local number of a, remote number of d";
  EXPECT_EQ(ids({"--number", "666"}), (Ids{b_}));
  EXPECT_EQ(ids({"--id", std::to_string(b_)}), (Ids{b_}));
  EXPECT_EQ(ids({"--call-id", "call-d"}), (Ids{d_}));
  EXPECT_EQ(ids({"--state", "recording"}), (Ids{d_}));
  EXPECT_EQ(ids({"--state", "recovered"}), (Ids{b_}));
  EXPECT_EQ(ids({"--state", "stopped"}), (Ids{e_, a_}));
  // time ranges: since inclusive, until exclusive; a date alone as --until includes that day
  EXPECT_EQ(ids({"--since", "2026-11-29T18:00:00Z", "--until", "2026-11-29T19:00:00Z"}), (Ids{b_}));
  EXPECT_EQ(ids({"--since", "2026-11-29T18:30:00Z", "--until", "2026-11-29T19:00:00.001Z"}), (Ids{d_, b_}));
  EXPECT_EQ(ids({"--since", "2026-11-29", "--until", "2026-11-29"}), (Ids{d_, b_, a_}));
  EXPECT_EQ(ids({"--since", "2026-11-30"}), (Ids{e_}));
  EXPECT_EQ(ids({"--until", "2026-11-29T18:30:00+01:00"}), (Ids{a_})) << "17:30 UTC";
  EXPECT_EQ(ids({"--since", std::to_string(nov29(18, 30) / 1000)}), (Ids{e_, d_, b_})) << "unix seconds";
  // filters combine
  EXPECT_EQ(ids({"--device", "00:00:5e:00:53:02", "--number", "100"}), (Ids{d_}));
  EXPECT_EQ(ids({"--device", "00:00:5e:00:53:01", "--since", "2026-11-29T18:00:00Z"}), (Ids{b_}));
  EXPECT_EQ(ids({"--limit", "2"}), (Ids{e_, d_}));
  EXPECT_EQ(ids({"--limit", "0"}), (Ids{e_, d_, b_, a_}));
}

TEST_F(CallrecList, JsonCarriesEveryField) {
  const RunResult r = callrec({"list", "--catalog", db_, "--json", "--id", std::to_string(a_)});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  JsonParser parser(r.out);
  const auto json = parser.parse();
  ASSERT_TRUE(json) << parser.error() << "\n" << r.out;
  ASSERT_EQ(json->kind, Json::Kind::kArray);
  ASSERT_EQ(json->items.size(), 1u);
  const Json& o = json->items[0];
  auto str = [&o](const char* k) { return at(o, k).str; };
  EXPECT_EQ(str("call_id"), "call-a");
  EXPECT_EQ(str("device"), "00:00:5e:00:53:01");
  EXPECT_EQ(str("remote_number"), "555");
  EXPECT_EQ(str("remote_name"), "Remote \"R\"");
  EXPECT_EQ(str("local_number"), "100");
  EXPECT_EQ(str("direction"), "out");
  EXPECT_EQ(str("state"), "stopped");
  EXPECT_EQ(str("stop_reason"), "phone");
  EXPECT_EQ(static_cast<std::int64_t>(at(o, "started_at").number), nov29(17, 0));
  const Json& stats = at(o, "stats");
  EXPECT_EQ(at(stats, "received").number, 3000);
  EXPECT_EQ(at(stats, "lost").number, 7);
  const Json& segs = at(o, "segments");
  ASSERT_EQ(segs.items.size(), 2u);
  EXPECT_EQ(at(segs.items[1], "path").str, "/rec/a1.rec");

  // No match: an empty array, exit 0.
  const RunResult none = callrec({"list", "--catalog", db_, "--json", "--number", "nobody"});
  EXPECT_EQ(none.exit_code, 0) << describe(none);
  EXPECT_EQ(none.out, "[]\n");
}

TEST_F(CallrecList, Table) {
  const RunResult r = callrec({"list", "--catalog", db_});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  std::vector<std::string> lines;
  for (std::size_t at = 0, nl; (nl = r.out.find('\n', at)) != std::string::npos; at = nl + 1) {
    lines.push_back(r.out.substr(at, nl - at));
  }
  ASSERT_EQ(lines.size(), 5u) << r.out;
  for (const char* h : {"ID", "DEVICE", "REMOTE", "LOCAL", "DIR", "CODEC", "START (UTC)", "DURATION", "STATE",
                        "PACKETS", "LOST", "FILES"}) {
    EXPECT_TRUE(contains(lines[0], h)) << h << "\n" << r.out;
  }
  // Newest first: e, d, b, a. The start column is aligned under its header.
  const std::size_t start_col = lines[0].find("START (UTC)");
  EXPECT_EQ(lines[4].find("2026-11-29 17:00:00"), start_col) << r.out;
  EXPECT_EQ(lines[2].find("2026-11-29 19:00:00"), start_col) << r.out;
  EXPECT_EQ(lines[1].find("2026-11-30 12:00:00"), start_col) << r.out;
  const std::string& a = lines[4];
  for (const char* s : {"00:00:5e:00:53:01", "555", "100", "out", "PCMA", "0:01:05", "stopped (phone)", "3000", " 7",
                        " 2"}) {
    EXPECT_TRUE(contains(a, s)) << s << " missing in\n" << a;
  }
  EXPECT_TRUE(contains(lines[3], "recovered (crash)")) << lines[3];
  EXPECT_TRUE(contains(lines[3], "0:10:00")) << lines[3];
  EXPECT_TRUE(contains(lines[2], "recording")) << lines[2];
  EXPECT_TRUE(contains(lines[1], "stopped (rtp_timeout)")) << lines[1];
  EXPECT_TRUE(r.err.empty()) << r.err;

  // --limit reached: a note on stderr, the table unchanged on stdout.
  const RunResult lim = callrec({"list", "--catalog", db_, "--limit", "1"});
  EXPECT_EQ(lim.exit_code, 0) << describe(lim);
  EXPECT_EQ(std::count(lim.out.begin(), lim.out.end(), '\n'), 2) << lim.out;
  EXPECT_TRUE(contains(lim.err, "--limit 0")) << lim.err;

  // No match: nothing on stdout, a note on stderr, exit 0.
  const RunResult none = callrec({"list", "--catalog", db_, "--device", "nobody"});
  EXPECT_EQ(none.exit_code, 0) << describe(none);
  EXPECT_TRUE(none.out.empty()) << none.out;
  EXPECT_TRUE(contains(none.err, "no recordings")) << none.err;
}

TEST_F(CallrecList, BadValuesNameTheFlag) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--since", "yesterday"}, "--since"},
      {{"--since", "2026-11-31"}, "--since"},  // no such day
      {{"--until", "2026-11-29T25:00:00Z"}, "--until"},
      {{"--until", "2026-11-29T18:00:00Q"}, "--until"},
      {{"--since", "2026-11-30", "--until", "2026-11-29T12:00:00Z"}, "--since"},  // empty range
      {{"--id", "abc"}, "--id"},
      {{"--id", "0"}, "--id"},
      {{"--state", "done"}, "--state"},
      {{"--limit", "-1"}, "--limit"},
      {{"--limit", "ten"}, "--limit"},
      {{"--device"}, "--device"},
      {{"--bogus"}, "--bogus"},
  };
  for (const auto& [extra, flag] : cases) {
    std::vector<std::string> args = {"list", "--catalog", db_};
    args.insert(args.end(), extra.begin(), extra.end());
    const RunResult r = callrec(args);
    EXPECT_EQ(r.exit_code, 2) << flag << "\n" << describe(r);
    EXPECT_TRUE(contains(r.err, flag)) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
}

TEST_F(CallrecList, MissingOrBadCatalogIsAnIoError) {
  const std::string missing = path("nothing-here.db").string();
  RunResult r = callrec({"list", "--catalog", missing});
  EXPECT_EQ(r.exit_code, 3) << describe(r);
  EXPECT_TRUE(contains(r.err, missing)) << r.err;
  EXPECT_FALSE(fs::exists(missing)) << "list must not create a catalog";

  const std::string text = record("text.db", Bytes(4096, 'x'));
  r = callrec({"list", "--catalog", text, "--json"});
  EXPECT_EQ(r.exit_code, 3) << describe(r);
  EXPECT_TRUE(contains(r.err, text)) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

TEST_F(CallrecList, HelpDocumentsFiltersAndDefaultCatalog) {
  const RunResult r = callrec({"list", "--help"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  for (const char* s : {"Usage: callrec list", "--catalog", "--device", "--number", "--id", "--since", "--until",
                        "--state", "--limit", "--json", "2026-11-29T18:00:00Z", "Exit codes"}) {
    EXPECT_TRUE(contains(r.out, s)) << s << "\n" << r.out;
  }
  // The default catalog is the daemon's (control::DaemonConfig: <storage>/../catalog.db).
  const std::string def = "/var/lib/callrec/catalog.db";
  EXPECT_TRUE(contains(r.out, def)) << r.out;
  if (!fs::exists(def)) {
    const RunResult l = callrec({"list"});
    EXPECT_EQ(l.exit_code, 3) << describe(l);
    EXPECT_TRUE(contains(l.err, def)) << l.err;
    EXPECT_FALSE(fs::exists(def)) << "list must not create the default catalog";
  }
}

TEST_F(CallrecList, SiprecParticipantsInJsonAndNumberFilter) {
  std::int64_t s = 0;
  {
    fileio::Catalog c;
    ASSERT_TRUE(c.open(db_));
    s = add(c, "siprec-call", "srs", "", "", "in", nov29(20, 0));
    fileio::StreamRow t;
    t.stream = 0;
    t.role = "caller";
    t.label = "leg-a";
    t.participant = "p-alice";
    ASSERT_TRUE(c.set_stream(s, t));
    t.stream = 1;
    t.role = "callee";
    t.label = "leg-b";
    t.participant = "p-bob";
    ASSERT_TRUE(c.set_stream(s, t));
    std::vector<fileio::ParticipantRow> parts(2);
    parts[0] = {0, "p-alice", "Alice", "sip:+15551230001@example.com", "+15551230001", "caller", "0"};
    parts[1] = {1, "p-bob", "Bob", "sip:100@example.com", "100", "callee", "1"};
    ASSERT_TRUE(c.set_participants(s, parts));
  }
  EXPECT_EQ(ids({"--number", "+15551230001"}), (Ids{s})) << "a participant's number";
  EXPECT_EQ(ids({"--number", "100"}), (Ids{s, d_, a_})) << "participant of s, remote of d, local of a";
  EXPECT_EQ(ids({"--number", "sip:100@example.com"}), Ids{}) << "the number, not the aor";

  const RunResult r = callrec({"list", "--catalog", db_, "--json", "--id", std::to_string(s)});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  JsonParser parser(r.out);
  const auto json = parser.parse();
  ASSERT_TRUE(json) << parser.error() << "\n" << r.out;
  ASSERT_EQ(json->items.size(), 1u) << r.out;
  const Json& o = json->items[0];
  const Json& parts = at(o, "participants");
  ASSERT_EQ(parts.kind, Json::Kind::kArray) << r.out;
  ASSERT_EQ(parts.items.size(), 2u) << r.out;
  EXPECT_EQ(at(parts.items[0], "idx").number, 0);
  EXPECT_EQ(at(parts.items[0], "participant_id").str, "p-alice");
  EXPECT_EQ(at(parts.items[0], "name").str, "Alice");
  EXPECT_EQ(at(parts.items[0], "aor").str, "sip:+15551230001@example.com");
  EXPECT_EQ(at(parts.items[0], "number").str, "+15551230001");
  EXPECT_EQ(at(parts.items[0], "role").str, "caller");
  EXPECT_EQ(at(parts.items[0], "sends").str, "0");
  EXPECT_EQ(at(parts.items[1], "idx").number, 1);
  EXPECT_EQ(at(parts.items[1], "participant_id").str, "p-bob");
  EXPECT_EQ(at(parts.items[1], "sends").str, "1");
  const Json& streams = at(o, "streams");
  ASSERT_EQ(streams.items.size(), 2u) << r.out;
  EXPECT_EQ(at(streams.items[1], "label").str, "leg-b");
  EXPECT_EQ(at(streams.items[1], "participant").str, "p-bob");
  EXPECT_EQ(at(streams.items[1], "role").str, "callee");
}

// ---------------------------------------------------------------------------------------------
// export --call: which stream goes to which channel

class CallrecExportCall : public CallrecCli {
 protected:
  struct StreamSpec {
    std::uint32_t stream = 0;
    std::string role;
    std::string label;
    std::size_t packets = 0;
    bool row = true;  ///< a catalog stream row (false: only its record file, as an upload)
  };

  /// A stopped recording with one PCMA record file per stream (all opened at the same time, so
  /// the channels line up at sample 0) and the given stream rows; returns its catalog id.
  std::int64_t make_call(const std::vector<StreamSpec>& specs) {
    db_ = path("catalog.db").string();
    fileio::Catalog c;
    EXPECT_TRUE(c.open(db_));
    fileio::RecordingRow r;
    r.call_id = "call-" + std::to_string(++calls_);
    r.source = "siprec";
    r.started_at = 1'795'975'200'000;
    std::int64_t id = 0;
    const Status st = c.insert_recording(r, id);
    EXPECT_TRUE(st) << st.message();
    for (std::size_t i = 0; i < specs.size(); ++i) {
      const StreamSpec& sp = specs[i];
      const auto pkts = make_packets(sp.packets, 8, static_cast<std::uint32_t>(100 * calls_ + sp.stream));
      const std::string name = r.call_id + "_s" + std::to_string(sp.stream) + ".rec";
      fileio::SegmentInfo seg;
      seg.index = static_cast<std::uint32_t>(i);
      seg.path = record(name, record_bytes("PCMA", pkts));
      seg.codec = "PCMA";
      seg.rtp_len = 172;
      seg.increment = 160;
      seg.packets = pkts.size();
      seg.opened = std::chrono::system_clock::time_point(std::chrono::milliseconds(r.started_at));
      seg.closed = seg.opened + std::chrono::milliseconds(20 * sp.packets);
      EXPECT_TRUE(c.add_segment(id, seg, sp.stream));
      if (sp.row) {
        fileio::StreamRow t;
        t.stream = sp.stream;
        t.role = sp.role;
        t.label = sp.label;
        t.codec = "PCMA";
        t.packets = pkts.size();
        EXPECT_TRUE(c.set_stream(id, t));
      }
      ref_[sp.stream] = sox_decode(concat_payloads(pkts), "a-law");
    }
    EXPECT_TRUE(c.finish_recording(id, r.started_at + 2000, "bye", {}));
    return id;
  }

  RunResult export_call(std::int64_t id, const std::string& out) {
    return callrec({"export", "--call", std::to_string(id), "--catalog", db_, "-o", out});
  }

  /// Channel c (0 left, 1 right) of an interleaved stereo WAV.
  static std::vector<std::int16_t> channel(const Wav& w, std::size_t c) {
    std::vector<std::int16_t> v;
    for (std::size_t i = c; i < w.samples.size(); i += 2) v.push_back(w.samples[i]);
    return v;
  }

  /// The decoded stream, padded with silence to `frames`.
  std::vector<std::int16_t> expected(std::uint32_t stream, std::size_t frames) {
    std::vector<std::int16_t> v = ref_[stream];
    v.resize(frames, 0);
    return v;
  }

  std::string db_;
  int calls_ = 0;
  std::map<std::uint32_t, std::vector<std::int16_t>> ref_;  ///< sox's decoding of each stream
};

TEST_F(CallrecExportCall, CallerLeftWhateverTheStreamOrder) {
  if (!have_sox()) GTEST_SKIP() << "sox is not installed: no independent G.711 decoder to compare with";
  // Stream 0 was sent by the callee, stream 1 by the caller (a SIPREC SRC's m-line order).
  const std::int64_t id = make_call({{0, "callee", "leg-b", 40}, {1, "caller", "leg-a", 50}});
  const std::string out = path("swapped.wav").string();
  const RunResult r = export_call(id, out);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(contains(r.out, "left: stream 1 (caller, label leg-a), right: stream 0 (callee, label leg-b)")) << r.out;
  const auto wav = read_wav(out);
  ASSERT_TRUE(wav);
  EXPECT_EQ(wav->channels, 2);
  EXPECT_EQ(wav->rate, 8000u);
  ASSERT_EQ(wav->samples.size(), 2u * 50u * 160u) << "as long as the longer (caller) stream";
  EXPECT_TRUE(channel(*wav, 0) == expected(1, 50 * 160)) << "left is the caller's stream 1";
  EXPECT_TRUE(channel(*wav, 1) == expected(0, 50 * 160)) << "right is the callee's stream 0, then silence";
  EXPECT_FALSE(channel(*wav, 0) == expected(0, 50 * 160));
}

TEST_F(CallrecExportCall, WithoutRolesStreamZeroIsLeft) {
  if (!have_sox()) GTEST_SKIP() << "sox is not installed: no independent G.711 decoder to compare with";
  // Older rows (no role) and a recording with record files only: stream 0 left, 1 right.
  for (const bool rows : {true, false}) {
    const std::int64_t id = make_call({{0, "", "", 30, rows}, {1, "", "", 20, rows}});
    const std::string out = path("plain" + std::to_string(id) + ".wav").string();
    const RunResult r = export_call(id, out);
    ASSERT_EQ(r.exit_code, 0) << describe(r);
    const auto wav = read_wav(out);
    ASSERT_TRUE(wav);
    ASSERT_EQ(wav->channels, 2) << "rows " << rows;
    EXPECT_TRUE(channel(*wav, 0) == expected(0, 30 * 160)) << "rows " << rows;
    EXPECT_TRUE(channel(*wav, 1) == expected(1, 30 * 160)) << "rows " << rows;
  }
  // Only the caller named, on stream 1: stream 0 goes right.
  const std::int64_t id = make_call({{0, "", "", 30}, {1, "caller", "", 20}});
  const std::string out = path("half.wav").string();
  const RunResult r = export_call(id, out);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const auto wav = read_wav(out);
  ASSERT_TRUE(wav);
  EXPECT_TRUE(channel(*wav, 0) == expected(1, 30 * 160));
  EXPECT_TRUE(channel(*wav, 1) == expected(0, 30 * 160));
}

TEST_F(CallrecExportCall, MoreThanTwoStreamsExportCallerAndCalleeAndNameTheRest) {
  if (!have_sox()) GTEST_SKIP() << "sox is not installed: no independent G.711 decoder to compare with";
  const std::int64_t id =
      make_call({{0, "", "leg-c", 10}, {1, "callee", "leg-b", 20}, {2, "caller", "leg-a", 30}});
  const std::string out = path("three.wav").string();
  const RunResult r = export_call(id, out);
  EXPECT_EQ(r.exit_code, 1) << "partial: a stream is not in the WAV\n" << describe(r);
  EXPECT_TRUE(contains(r.err, "left out: stream 0 (label leg-c)")) << r.err;
  const auto wav = read_wav(out);
  ASSERT_TRUE(wav);
  ASSERT_EQ(wav->channels, 2);
  EXPECT_TRUE(channel(*wav, 0) == expected(2, 30 * 160)) << "left: the caller's stream 2";
  EXPECT_TRUE(channel(*wav, 1) == expected(1, 30 * 160)) << "right: the callee's stream 1";
}

TEST_F(CallrecExportCall, OneMixedStreamIsMono) {
  if (!have_sox()) GTEST_SKIP() << "sox is not installed: no independent G.711 decoder to compare with";
  const std::int64_t id = make_call({{0, "mixed", "mix", 25}});
  const std::string out = path("mixed.wav").string();
  const RunResult r = export_call(id, out);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(contains(r.out, "mono")) << r.out;
  const auto wav = read_wav(out);
  ASSERT_TRUE(wav);
  EXPECT_EQ(wav->channels, 1);
  EXPECT_TRUE(wav->samples == expected(0, 25 * 160));
}

// ---------------------------------------------------------------------------------------------
// status

/// `callrec status --metrics 127.0.0.1:PORT --json`, parsed.
std::optional<Json> status_json(std::uint16_t port) {
  const RunResult r = callrec({"status", "--metrics", "127.0.0.1:" + std::to_string(port), "--json"});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  JsonParser parser(r.out);
  auto json = parser.parse();
  EXPECT_TRUE(json) << parser.error() << "\n" << r.out;
  if (json && json->kind != Json::Kind::kObject) return std::nullopt;
  return json;
}

double field(const std::optional<Json>& j, const char* key) {
  if (!j || j->get(key) == nullptr) return -1;
  return at(*j, key).number;
}

TEST_F(CallrecCli, StatusOfARunningDaemon) {
  callrec::e2e::DaemonProcess daemon(dir_, {});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  ASSERT_NE(daemon.metrics_port(), 0) << daemon.log();
  const std::string addr = "127.0.0.1:" + std::to_string(daemon.metrics_port());

  auto j = status_json(daemon.metrics_port());
  EXPECT_EQ(field(j, "active_recordings"), 0);
  EXPECT_GE(field(j, "disk_free_bytes"), 1);
  RunResult h = callrec({"status", "--metrics", addr});
  ASSERT_EQ(h.exit_code, 0) << describe(h);
  for (const char* s : {"0 active", "/s received", "/s written", "wrong_source", "ring_full", "disk free", "up "}) {
    EXPECT_TRUE(contains(h.out, s)) << s << "\n" << h.out;
  }
  EXPECT_TRUE(contains(h.out, addr)) << h.out;

  callrec::e2e::Phone phone(daemon.control_port());
  ASSERT_TRUE(phone.connected());
  const auto started = phone.start("4711");
  ASSERT_TRUE(started) << daemon.log();
  j = status_json(daemon.metrics_port());
  EXPECT_EQ(field(j, "active_recordings"), 1);
  h = callrec({"status", "-m", addr});
  ASSERT_EQ(h.exit_code, 0) << describe(h);
  EXPECT_TRUE(contains(h.out, "1 active")) << h.out;
  EXPECT_TRUE(contains(h.out, "00:11:22:33:44:55")) << h.out;  // the recording's line
  EXPECT_TRUE(contains(h.out, "HANDLE")) << h.out;

  ASSERT_TRUE(phone.stop("4711")) << daemon.log();
  EXPECT_TRUE(callrec::e2e::wait_until([&] { return field(status_json(daemon.metrics_port()), "active_recordings") == 0; }))
      << daemon.log();

  // The catalog the daemon writes is what list reads, even while the daemon runs.
  const RunResult l = callrec({"list", "--catalog", daemon.catalog().string(), "--json"});
  ASSERT_EQ(l.exit_code, 0) << describe(l);
  JsonParser lp(l.out);
  const auto rows = lp.parse();
  ASSERT_TRUE(rows) << lp.error() << "\n" << l.out;
  ASSERT_EQ(rows->items.size(), 1u) << l.out;
  EXPECT_EQ(at(rows->items[0], "call_id").str, "4711");
  EXPECT_EQ(at(rows->items[0], "device").str, "00:11:22:33:44:55");
}

TEST_F(CallrecCli, StatusDaemonNotReachable) {
  // A port nobody listens on: bound, then closed.
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  close(fd);
  const std::string addr = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  for (const bool json : {false, true}) {
    std::vector<std::string> args = {"status", "--metrics", addr};
    if (json) args.emplace_back("--json");
    const RunResult r = callrec(args);
    EXPECT_EQ(r.exit_code, 3) << describe(r);
    EXPECT_TRUE(contains(r.err, addr)) << r.err;
    EXPECT_TRUE(contains(r.err, "not reachable")) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
}

TEST_F(CallrecCli, StatusFromSomethingElseIsAProblem) {
  // Something that answers, but not HTTP (another service on the port): exit 1, not 3.
  const int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(lfd, 4), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  std::thread server([lfd] {
    for (const char* answer : {"SSH-2.0-OpenSSH_9.2\r\n", "HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\n\r\nnot found\n"}) {
      const int c = accept(lfd, nullptr, nullptr);
      if (c < 0) return;
      char buf[1024];
      [[maybe_unused]] const ssize_t n = read(c, buf, sizeof buf);
      [[maybe_unused]] const ssize_t w = write(c, answer, std::strlen(answer));
      close(c);
    }
  });
  const std::string addr = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  const RunResult ssh = callrec({"status", "--metrics", addr});
  const RunResult http404 = callrec({"status", "--metrics", addr, "--json"});
  server.join();
  close(lfd);
  EXPECT_EQ(ssh.exit_code, 1) << describe(ssh);
  EXPECT_TRUE(contains(ssh.err, addr)) << ssh.err;
  EXPECT_EQ(http404.exit_code, 1) << describe(http404);
  EXPECT_TRUE(contains(http404.err, "404")) << http404.err;
  EXPECT_TRUE(http404.out.empty()) << http404.out;
}

TEST_F(CallrecCli, StatusShowsTheDpdkCounters) {
  // A daemon with --source dpdk needs a DPDK port; its /status is canned here (the keys are
  // those of control/daemon.cpp status() and DpdkSource::counters()), answered once.
  const std::string body =
      "{\"source\":\"dpdk\",\"uptime_s\":42,\"active_recordings\":0,\"control_connections\":1,\"started\":5,"
      "\"start_failed\":0,\"stopped\":5,\"rx_packets\":1000,\"rx_packets_per_s\":50,\"write_bytes_per_s\":8000,"
      "\"bytes_written\":160000,\"drop_ring_full\":3,\"drop_unknown_flow\":7,\"drop_wrong_source\":2,"
      "\"drop_not_rtp\":0,\"dpdk_imissed\":1234,\"dpdk_rx_nombuf\":0,\"dpdk_ierrors\":9,"
      "\"dpdk_nic_ipackets\":1300,\"dpdk_ring_full\":3,\"dpdk_unknown_flow\":7,\"dpdk_wrong_source\":2,"
      "\"dpdk_arp_replies\":4,\"dpdk_icmp_replies\":0,\"dpdk_nd_replies\":8,\"dpdk_icmp6_replies\":0,"
      "\"dpdk_icmp6_invalid\":2,\"dpdk_exception_path\":11,\"dpdk_exception_path_tx\":0,"
      "\"dpdk_forwarded\":0,\"dpdk_handoff_full\":0,\"dpdk_dropped\":6,\"dpdk_not_ours\":5,\"dpdk_tx_failed\":0,"
      "\"dpdk_end_marks_lost\":0,\"write_errors\":0,\"disk_free_bytes\":1073741824,\"ports_in_use\":0,"
      "\"recordings\":[]}\n";
  const int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(lfd, 4), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  std::string request;
  std::thread server([lfd, &body, &request] {
    const int c = accept(lfd, nullptr, nullptr);
    if (c < 0) return;
    char buf[2048];
    while (request.find("\r\n\r\n") == std::string::npos) {
      const ssize_t n = read(c, buf, sizeof buf);
      if (n <= 0) break;
      request.append(buf, static_cast<std::size_t>(n));
    }
    const std::string answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                               std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
    [[maybe_unused]] const ssize_t w = write(c, answer.data(), answer.size());
    close(c);
  });
  const std::string addr = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  const RunResult r = callrec({"status", "--metrics", addr});
  server.join();
  close(lfd);
  EXPECT_TRUE(request.starts_with("GET /status ")) << request;
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(contains(r.out, "dpdk packet source")) << r.out;
  EXPECT_TRUE(contains(r.out, "\ndpdk:\n")) << r.out;
  // The line of a counter: its label, then only spaces, then the value.
  auto has_row = [&r](std::string_view label, std::string_view value) {
    for (std::size_t at = r.out.find(label); at != std::string::npos; at = r.out.find(label, at + 1)) {
      const std::size_t eol = r.out.find('\n', at);
      std::string rest = r.out.substr(at + label.size(), eol - at - label.size());
      const std::size_t v = rest.find_first_not_of(' ');
      if (v != std::string::npos && v > 0 && rest.substr(v) == value) return true;
    }
    return false;
  };
  EXPECT_TRUE(has_row("imissed (NIC RX queues full)", "1234")) << r.out;
  EXPECT_TRUE(has_row("rx_nombuf (no mbuf for RX)", "0")) << r.out;  // important: shown even when 0
  EXPECT_TRUE(has_row("ierrors (NIC receive errors)", "9")) << r.out;
  EXPECT_TRUE(has_row("ring full (writer/hand-off ring)", "3")) << r.out;
  EXPECT_TRUE(has_row("unknown flow (no recording on the port)", "7")) << r.out;
  EXPECT_TRUE(has_row("wrong source (not from the phone)", "2")) << r.out;
  EXPECT_TRUE(has_row("arp replies", "4")) << r.out;
  EXPECT_TRUE(has_row("icmp echo replies", "0")) << r.out;
  EXPECT_TRUE(has_row("ipv6 nd replies (NS -> NA)", "8")) << r.out;
  EXPECT_TRUE(has_row("icmpv6 echo replies", "0")) << r.out;
  EXPECT_TRUE(has_row("icmp6 invalid", "2")) << r.out;  // nonzero: listed
  EXPECT_TRUE(has_row("exception path (to the kernel)", "11")) << r.out;
  // Other dpdk_* counters only when nonzero.
  EXPECT_TRUE(has_row("nic ipackets", "1300")) << r.out;
  EXPECT_TRUE(has_row("dropped", "6")) << r.out;
  EXPECT_TRUE(has_row("not ours", "5")) << r.out;
  EXPECT_FALSE(contains(r.out, "tx failed")) << r.out;
  EXPECT_FALSE(contains(r.out, "end marks lost")) << r.out;
  EXPECT_FALSE(contains(r.out, "forwarded")) << r.out;
}

TEST_F(CallrecCli, StatusOfAKernelSourceHasNoDpdkSection) {
  callrec::e2e::DaemonProcess daemon(dir_, {});
  ASSERT_TRUE(daemon.ready()) << daemon.log();
  const RunResult h = callrec({"status", "--metrics", "127.0.0.1:" + std::to_string(daemon.metrics_port())});
  ASSERT_EQ(h.exit_code, 0) << describe(h);
  EXPECT_FALSE(contains(h.out, "dpdk")) << h.out;
}

TEST_F(CallrecCli, StatusHelp) {
  const RunResult r = callrec({"help", "status"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  for (const char* s : {"Usage: callrec status", "--metrics", "--json", "127.0.0.1:9464", "not reachable"}) {
    EXPECT_TRUE(contains(r.out, s)) << s << "\n" << r.out;
  }
}

}  // namespace
