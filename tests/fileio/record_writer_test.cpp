// RecordWriter: names, uniqueness, free-space refusal, rotation, buffering/flush, pause,
// write errors (RLIMIT_FSIZE in a child process) and a real full disk (tmpfs, root only).
// Files are checked from their raw bytes (76-byte little-endian header, then packets).
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <new>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "fileio/record_format.hpp"
#include "fileio/record_reader.hpp"
#include "fileio/record_writer.hpp"
#include "fileio/stream_recorder.hpp"

namespace callrec::fileio {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::byte>;

constexpr std::uint32_t kLen = 172;  // 12-byte RTP header + 160 bytes of PCMA (20 ms)

/// A packet whose every byte depends on (id, seq), so misplaced or mixed data is detected.
Bytes make_packet(std::uint32_t seq, std::uint32_t id = 0, std::size_t len = kLen) {
  Bytes p(len);
  p[0] = std::byte{0x80};
  p[1] = std::byte{8};
  p[2] = static_cast<std::byte>(seq >> 8);
  p[3] = static_cast<std::byte>(seq);
  for (std::size_t i = 4; i < 8; ++i) p[i] = static_cast<std::byte>(id >> (8 * (i - 4)));
  for (std::size_t i = 8; i < 12; ++i) p[i] = static_cast<std::byte>(seq >> (8 * (i - 8)));
  for (std::size_t i = 12; i < len; ++i) p[i] = static_cast<std::byte>((seq * 7 + id * 13 + i) & 0xFF);
  return p;
}

Bytes read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Bytes out(raw.size());
  if (!raw.empty()) std::memcpy(out.data(), raw.data(), raw.size());
  return out;
}

std::uint32_t le32(const Bytes& b, std::size_t off) {
  return std::to_integer<std::uint32_t>(b[off]) | (std::to_integer<std::uint32_t>(b[off + 1]) << 8) |
         (std::to_integer<std::uint32_t>(b[off + 2]) << 16) | (std::to_integer<std::uint32_t>(b[off + 3]) << 24);
}

struct RawRecord {
  std::string codec;
  std::uint32_t rtp_len = 0;
  std::uint32_t increment = 0;
  std::uint32_t data_size = 0;
  Bytes data;  ///< everything after the header
};

RawRecord parse_raw(const fs::path& p) {
  const Bytes b = read_file(p);
  RawRecord r;
  if (b.size() < kHeaderSize) {
    ADD_FAILURE() << p << " is shorter than a header: " << b.size() << " bytes";
    return r;
  }
  for (std::size_t i = 0; i < kCodecFieldSize && b[i] != std::byte{0}; ++i) {
    r.codec += static_cast<char>(std::to_integer<unsigned>(b[i]));
  }
  for (std::size_t i = r.codec.size(); i < kCodecFieldSize; ++i) EXPECT_EQ(b[i], std::byte{0}) << "NUL padding";
  r.rtp_len = le32(b, 64);
  r.increment = le32(b, 68);
  r.data_size = le32(b, 72);
  r.data.assign(b.begin() + kHeaderSize, b.end());
  return r;
}

/// The record files in dir, sorted by the writer's order (the per-process counter n, then name).
std::vector<fs::path> record_files(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".rec") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

Status plenty_of_space(const fs::path&, std::uint64_t& free_bytes) {
  free_bytes = 1ull << 40;
  return {};
}

class RecordWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "callrec_writer_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  WriterOptions options() const {
    WriterOptions o;
    o.directory = dir_;
    o.reserve_bytes = 0;
    o.expected_file_bytes = 0;
    o.free_space = plenty_of_space;
    return o;
  }
  fs::path dir_;
};

std::string utc_stamp_now() {
  const auto now = std::chrono::system_clock::now();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04d%02d%02dT%02d%02d%02d.%03d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return buf;
}

// ---- names ---------------------------------------------------------------------------------

TEST(SanitizeNamePart, HostileAndOddInputs) {
  EXPECT_EQ(sanitize_name_part("../../etc/passwd"), ".._.._etc_passwd");
  EXPECT_EQ(sanitize_name_part("a/b"), "a_b");
  EXPECT_EQ(sanitize_name_part(""), "");
  EXPECT_EQ(sanitize_name_part("."), "_");
  EXPECT_EQ(sanitize_name_part(".."), "__");
  EXPECT_EQ(sanitize_name_part("sip:alice@example.com"), "sip_alice_example.com");
  EXPECT_EQ(sanitize_name_part("Ok-Tag.42"), "Ok-Tag.42");
  EXPECT_EQ(sanitize_name_part("a b\tc\nd\\e"), "a_b_c_d_e");
  EXPECT_EQ(sanitize_name_part(std::string_view("a\0b", 3)), "a_b");
  // One '_' per UTF-8 character (not per byte): "h\u00e9llo", two CJK characters, an emoji.
  EXPECT_EQ(sanitize_name_part("h\xC3\xA9llo"), "h_llo");
  EXPECT_EQ(sanitize_name_part("\xE6\x97\xA5\xE6\x9C\xAC"), "__");
  EXPECT_EQ(sanitize_name_part("x\xF0\x9F\x98\x80y"), "x_y");
  EXPECT_EQ(sanitize_name_part(std::string(100, 'z')), std::string(48, 'z'));
  for (const char* s : {"../../etc/passwd", "/", "..", ".", "a/../b", "\xFF\xFE"}) {
    const std::string out = sanitize_name_part(s);
    EXPECT_EQ(out.find('/'), std::string::npos) << s;
    EXPECT_NE(out, ".");
    EXPECT_NE(out, "..");
  }
}

TEST_F(RecordWriterTest, NameHasUtcStampSanitizedTagAndCounter) {
  WriterOptions o = options();
  o.tag = "../../etc/passwd";
  RecordWriter w(o);
  ASSERT_TRUE(w.set_format("PCMA", kLen, 160));
  const std::string before = utc_stamp_now();
  ASSERT_TRUE(w.append(make_packet(1)));
  const std::string after = utc_stamp_now();
  ASSERT_EQ(w.segments().size(), 1u);
  const fs::path p = w.segments()[0].path;
  EXPECT_EQ(p.parent_path(), dir_) << "the tag must not move the file out of the directory";
  const std::string name = p.filename().string();
  std::smatch m;
  ASSERT_TRUE(std::regex_match(name, m, std::regex(R"(Record_(\d{8}T\d{6}\.\d{3})Z_\.\._\.\._etc_passwd_(\d+)\.rec)")))
      << name;
  EXPECT_LE(before, m[1].str());  // the stamp is the UTC time of creation (lexicographic order)
  EXPECT_GE(after, m[1].str());
  EXPECT_TRUE(fs::exists(p));

  WriterOptions o2 = options();  // no tag: no "_<tag>" part
  RecordWriter w2(o2);
  ASSERT_TRUE(w2.set_format("PCMA", kLen, 160));
  ASSERT_TRUE(w2.append(make_packet(1)));
  EXPECT_TRUE(std::regex_match(w2.segments()[0].path.filename().string(),
                               std::regex(R"(Record_\d{8}T\d{6}\.\d{3}Z_\d+\.rec)")))
      << w2.segments()[0].path;
}

TEST_F(RecordWriterTest, TwoHundredWritersInTheSameMillisecondGetDistinctFiles) {
  constexpr std::uint32_t kWriters = 200;
  std::vector<std::unique_ptr<RecordWriter>> ws;
  for (std::uint32_t i = 0; i < kWriters; ++i) {
    WriterOptions o = options();
    o.tag = "same";
    ws.push_back(std::make_unique<RecordWriter>(o));
    ASSERT_TRUE(ws.back()->set_format("PCMA", kLen, 160));
  }
  // Open all files back to back (well within a few milliseconds of each other).
  for (std::uint32_t i = 0; i < kWriters; ++i) ASSERT_TRUE(ws[i]->append(make_packet(1, i)));
  std::set<fs::path> paths;
  for (auto& w : ws) {
    ASSERT_TRUE(w->close());
    paths.insert(w->segments().at(0).path);
  }
  EXPECT_EQ(paths.size(), kWriters);
  EXPECT_EQ(record_files(dir_).size(), kWriters);
  for (std::uint32_t i = 0; i < kWriters; ++i) {
    const RawRecord r = parse_raw(ws[i]->segments()[0].path);
    EXPECT_EQ(r.data, make_packet(1, i)) << "writer " << i << " file holds someone else's data";
  }
}

// Two processes with the same name counter (fork copies it) start creating files in the same
// directory at the same instant (a spin barrier in shared memory): they try the same names in
// the same milliseconds, so O_EXCL + retry must give every writer its own file. (Without O_EXCL
// this test fails: files are shared and overwritten.)
TEST_F(RecordWriterTest, ConcurrentProcessesWithTheSameCounterNeverShareAFile) {
  constexpr std::uint32_t kPerProcess = 200;
  // One round: returns the number of O_EXCL collisions that were retried (see below).
  auto round = [&](const fs::path& dir) -> std::size_t {
    void* shm = ::mmap(nullptr, sizeof(std::atomic<int>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shm == MAP_FAILED) {
      ADD_FAILURE() << "mmap: " << std::strerror(errno);
      return 0;
    }
    auto* ready = new (shm) std::atomic<int>(0);
    auto run = [&](std::uint32_t proc) -> bool {
      std::vector<std::unique_ptr<RecordWriter>> ws;
      for (std::uint32_t i = 0; i < kPerProcess; ++i) {
        WriterOptions o = options();
        o.directory = dir;
        o.tag = "race";
        ws.push_back(std::make_unique<RecordWriter>(o));
        if (!ws.back()->set_format("PCMA", kLen, 160)) return false;
      }
      ready->fetch_add(1);
      while (ready->load() < 2) {
      }
      for (std::uint32_t i = 0; i < kPerProcess; ++i) {
        if (!ws[i]->append(make_packet(1, proc * 1000 + i))) return false;  // opens the file
      }
      for (auto& w : ws) {
        if (!w->close()) return false;
      }
      return true;
    };
    const pid_t pid = ::fork();
    if (pid < 0) {
      ADD_FAILURE() << "fork: " << std::strerror(errno);
      return 0;
    }
    if (pid == 0) ::_exit(run(1) ? 0 : 1);
    const bool parent_ok = run(0);
    int status = 0;
    EXPECT_EQ(::waitpid(pid, &status, 0), pid);
    ::munmap(shm, sizeof(std::atomic<int>));
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child writer failed";
    EXPECT_TRUE(parent_ok);

    std::set<std::uint32_t> ids;
    std::set<std::string> n_values;
    const auto files = record_files(dir);
    EXPECT_EQ(files.size(), 2 * kPerProcess);
    for (const auto& f : files) {
      const RawRecord r = parse_raw(f);
      EXPECT_EQ(r.data.size(), kLen) << f << ": two writers wrote into one file";
      EXPECT_EQ(r.data_size, kLen);
      if (r.data.size() != kLen) continue;
      const std::uint32_t id = le32(r.data, 4);
      EXPECT_EQ(r.data, make_packet(1, id)) << f;
      ids.insert(id);
      const std::string name = f.filename().string();
      n_values.insert(name.substr(name.rfind('_') + 1));
    }
    EXPECT_EQ(ids.size(), 2 * kPerProcess);
    // Both processes draw n from copies of one counter: without collisions each process uses the
    // same kPerProcess values; every O_EXCL retry makes the loser skip to a new number.
    return n_values.size() > kPerProcess ? n_values.size() - kPerProcess : 0;
  };
  // The processes meet in the same millisecond only when both have a core at the barrier;
  // repeat (bounded) until a round saw collisions. Not asserted: it depends on scheduling.
  std::size_t collisions = 0;
  int rounds = 0;
  while (collisions == 0 && rounds < 20 && !HasFailure()) {
    const fs::path d = dir_ / ("round" + std::to_string(rounds++));
    fs::create_directory(d);
    collisions = round(d);
  }
  std::printf("rounds: %d, name collisions retried in the last: %zu\n", rounds, collisions);
  RecordProperty("name_collisions_retried", static_cast<int>(collisions));
}

// ---- free space ----------------------------------------------------------------------------

TEST_F(RecordWriterTest, RefusesToCreateAFileWhenFreeSpaceIsShort) {
  int calls = 0;
  fs::path asked;
  WriterOptions o = options();
  o.reserve_bytes = 64ull << 20;
  o.expected_file_bytes = 1ull << 20;
  o.free_space = [&](const fs::path& d, std::uint64_t& free_bytes) {
    ++calls;
    asked = d;
    free_bytes = 1000;
    return Status();
  };
  RecordWriter w(o);
  ASSERT_TRUE(w.set_format("PCMA", kLen, 160));
  const Status st = w.append(make_packet(1));
  ASSERT_FALSE(st);
  EXPECT_EQ(st.code(), ENOSPC);
  EXPECT_NE(st.message().find(dir_.string()), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("1000 bytes free"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find(std::to_string((64ull << 20) + (1ull << 20))), std::string::npos) << st.message();
  EXPECT_EQ(asked, dir_);
  EXPECT_TRUE(record_files(dir_).empty());
  EXPECT_FALSE(w.segment_open());

  // Sticky: the next packets fail at once, without asking the volume again.
  for (int i = 0; i < 10; ++i) EXPECT_EQ(w.append(make_packet(2)).code(), ENOSPC);
  EXPECT_EQ(calls, 1);
  // close_segment() starts over: the next packet checks again.
  EXPECT_TRUE(w.close_segment());
  EXPECT_EQ(w.append(make_packet(3)).code(), ENOSPC);
  EXPECT_EQ(calls, 2);
}

TEST_F(RecordWriterTest, FreeSpaceBoundaryAndCheckErrors) {
  const std::uint64_t need = 5000 + 172 * 3 + kHeaderSize;  // reserve + min(expected, max_file)
  std::uint64_t free_now = need - 1;
  WriterOptions o = options();
  o.reserve_bytes = 5000;
  o.expected_file_bytes = 1ull << 20;
  o.max_file_bytes = 172 * 3 + kHeaderSize;  // a file never grows past this: ask only for it
  o.free_space = [&](const fs::path&, std::uint64_t& free_bytes) {
    free_bytes = free_now;
    return Status();
  };
  {
    RecordWriter w(o);
    ASSERT_TRUE(w.set_format("PCMA", kLen, 160));
    EXPECT_EQ(w.append(make_packet(1)).code(), ENOSPC);
  }
  free_now = need;
  {
    RecordWriter w(o);
    ASSERT_TRUE(w.set_format("PCMA", kLen, 160));
    EXPECT_TRUE(w.append(make_packet(1)));
  }
  o.free_space = [](const fs::path& d, std::uint64_t&) { return Status(EACCES, "statvfs " + d.string() + ": denied"); };
  {
    RecordWriter w(o);
    ASSERT_TRUE(w.set_format("PCMA", kLen, 160));
    EXPECT_EQ(w.append(make_packet(1)).code(), EACCES);
  }
  // The real statvfs check on an existing and a missing directory.
  std::uint64_t free_bytes = 0;
  EXPECT_TRUE(free_space_statvfs(dir_, free_bytes));
  EXPECT_GT(free_bytes, 0u);
  const Status st = free_space_statvfs(dir_ / "missing", free_bytes);
  EXPECT_EQ(st.code(), ENOENT);
  EXPECT_NE(st.message().find("missing"), std::string::npos);
}

// ---- rotation ------------------------------------------------------------------------------

TEST_F(RecordWriterTest, RotatesAtTheSizeLimitAndKeepsEveryFileValid) {
  WriterOptions o = options();
  o.max_file_bytes = kHeaderSize + 10 * kLen + 100;  // room for 10 packets, not 11
  o.buffer_bytes = 3 * kLen + 5;                     // several buffer writes per file
  std::vector<std::uint32_t> opened;
  std::vector<std::pair<std::uint32_t, std::uint64_t>> closed;
  RecordWriter w(o);
  w.on_segment_opened = [&](const SegmentInfo& s) { opened.push_back(s.index); };
  w.on_segment_closed = [&](const SegmentInfo& s) { closed.emplace_back(s.index, s.packets); };
  ASSERT_TRUE(w.set_format("PCMA", kLen, 160));
  Bytes all;
  for (std::uint32_t i = 0; i < 35; ++i) {
    const Bytes p = make_packet(i);
    all.insert(all.end(), p.begin(), p.end());
    ASSERT_TRUE(w.append(p)) << i;
  }
  ASSERT_TRUE(w.close());

  const auto& segs = w.segments();
  ASSERT_EQ(segs.size(), 4u);
  EXPECT_EQ(opened, (std::vector<std::uint32_t>{0, 1, 2, 3}));
  EXPECT_EQ(closed, (std::vector<std::pair<std::uint32_t, std::uint64_t>>{{0, 10}, {1, 10}, {2, 10}, {3, 5}}));
  EXPECT_EQ(record_files(dir_).size(), 4u);
  Bytes concat;
  for (std::size_t i = 0; i < segs.size(); ++i) {
    EXPECT_EQ(segs[i].index, i);
    EXPECT_LE(fs::file_size(segs[i].path), o.max_file_bytes) << segs[i].path;
    const RawRecord r = parse_raw(segs[i].path);
    EXPECT_EQ(r.codec, "PCMA");
    EXPECT_EQ(r.rtp_len, kLen);
    EXPECT_EQ(r.increment, 160u);
    EXPECT_EQ(r.data_size, r.data.size()) << segs[i].path;
    EXPECT_EQ(r.data_size, segs[i].packets * kLen);
    concat.insert(concat.end(), r.data.begin(), r.data.end());
    RecordInfo info;  // the other side of the format agrees
    ASSERT_TRUE(inspect_record(segs[i].path, info));
    EXPECT_EQ(info.integrity, Integrity::kOk) << segs[i].path;
    EXPECT_EQ(info.whole_packets, segs[i].packets);
  }
  EXPECT_EQ(concat, all);
  EXPECT_EQ(w.bytes_written(), 4 * kHeaderSize + all.size());
}

TEST_F(RecordWriterTest, LimitBelowHeaderPlusOnePacketStillStoresOnePacketPerFile) {
  WriterOptions o = options();
  o.max_file_bytes = 50;
  RecordWriter w(o);
  ASSERT_TRUE(w.set_format("PCMU", kLen, 160));
  for (std::uint32_t i = 0; i < 3; ++i) ASSERT_TRUE(w.append(make_packet(i)));
  ASSERT_TRUE(w.close());
  ASSERT_EQ(w.segments().size(), 3u);
  for (std::uint32_t i = 0; i < 3; ++i) {
    const RawRecord r = parse_raw(w.segments()[i].path);
    EXPECT_EQ(r.codec, "PCMU");
    EXPECT_EQ(r.data_size, kLen);
    EXPECT_EQ(r.data, make_packet(i));
  }
}

// Rotation before dataSize overflows 32 bits: the writer rotates when the next packet would take
// the segment past segment_data_limit(); check that limit's arithmetic where it matters
// (writing 4 GiB in a unit test is not an option).
TEST(SegmentDataLimit, StaysWithinThirtyTwoBitsInWholePackets) {
  // 65535-byte packets: 65537 of them make exactly 2^32 - 1 bytes.
  EXPECT_EQ(segment_data_limit(65535, 0), 65537ull * 65535ull);
  EXPECT_EQ(segment_data_limit(65535, 0), 0xFFFFFFFFull);
  for (const std::uint32_t len : {13u, 172u, 92u, 332u, 1000u, 65534u, 65535u}) {
    const std::uint64_t lim = segment_data_limit(len, 0);
    EXPECT_EQ(lim % len, 0u) << len;
    EXPECT_LE(lim, 0xFFFFFFFFull) << len;
    EXPECT_GT(lim + len, 0xFFFFFFFFull) << len << ": one more packet would overflow dataSize";
    EXPECT_EQ(lim, max_data_size(len));
    // A file limit above 4 GiB does not lift the 32-bit bound.
    EXPECT_EQ(segment_data_limit(len, 1ull << 40), lim) << len;
  }
  EXPECT_EQ(segment_data_limit(172, kHeaderSize + 10 * 172 + 100), 10u * 172);
  EXPECT_EQ(segment_data_limit(172, kHeaderSize + 10 * 172), 10u * 172);
  EXPECT_EQ(segment_data_limit(172, kHeaderSize + 10 * 172 - 1), 9u * 172);
  EXPECT_EQ(segment_data_limit(172, 50), 172u);  // at least one packet per file
  EXPECT_EQ(segment_data_limit(0, 0), 0u);
}

// ---- buffering, flush, pause, close --------------------------------------------------------

TEST_F(RecordWriterTest, FlushRewritesDataSizeWhileTheFileStaysOpen) {
  WriterOptions o = options();
  o.flush_interval = std::chrono::milliseconds(1000);
  RecordWriter w(o);
  ASSERT_TRUE(w.set_format("PCMA", kLen, 160));
  for (std::uint32_t i = 0; i < 5; ++i) ASSERT_TRUE(w.append(make_packet(i)));
  const fs::path p = w.segments().at(0).path;
  RawRecord r = parse_raw(p);
  EXPECT_EQ(r.data_size, 0u) << "header written at open with dataSize 0";
  EXPECT_TRUE(r.data.empty()) << "5 packets fit the 8 KiB buffer: nothing written yet";

  ASSERT_TRUE(w.flush());
  r = parse_raw(p);
  EXPECT_EQ(r.data_size, 5 * kLen);
  EXPECT_EQ(r.data.size(), 5 * kLen);
  EXPECT_EQ(w.segments()[0].packets, 5u);
  EXPECT_TRUE(w.segment_open());

  // flush_if_due with injected time.
  const auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  ASSERT_TRUE(w.flush_if_due(t0));  // first call: due
  ASSERT_TRUE(w.append(make_packet(5)));
  ASSERT_TRUE(w.flush_if_due(t0 + std::chrono::milliseconds(999)));
  EXPECT_EQ(parse_raw(p).data_size, 5 * kLen) << "not due yet: nothing written";
  ASSERT_TRUE(w.flush_if_due(t0 + std::chrono::milliseconds(1000)));
  r = parse_raw(p);
  EXPECT_EQ(r.data_size, 6 * kLen);
  EXPECT_EQ(r.data.size(), 6 * kLen);
}

TEST_F(RecordWriterTest, FullBufferIsWrittenWithoutAnExplicitFlush) {
  WriterOptions o = options();
  o.buffer_bytes = 4 * kLen + 10;  // holds 4 whole packets
  RecordWriter w(o);
  ASSERT_TRUE(w.set_format("PCMA", kLen, 160));
  for (std::uint32_t i = 0; i < 3; ++i) ASSERT_TRUE(w.append(make_packet(i)));
  const fs::path p = w.segments().at(0).path;
  EXPECT_EQ(fs::file_size(p), kHeaderSize);
  ASSERT_TRUE(w.append(make_packet(3)));
  EXPECT_EQ(fs::file_size(p), kHeaderSize + 4 * kLen);
  EXPECT_EQ(parse_raw(p).data_size, 0u) << "dataSize is rewritten at flush, not at every write";
}

TEST_F(RecordWriterTest, PausedPacketsAreDroppedAndCounted) {
  RecordWriter w(options());
  ASSERT_TRUE(w.set_format("PCMA", kLen, 160));
  Bytes expect;
  for (std::uint32_t i = 0; i < 5; ++i) {
    const Bytes p = make_packet(i);
    expect.insert(expect.end(), p.begin(), p.end());
    ASSERT_TRUE(w.append(p));
  }
  w.pause();
  EXPECT_TRUE(w.paused());
  for (std::uint32_t i = 5; i < 8; ++i) ASSERT_TRUE(w.append(make_packet(i)));
  EXPECT_EQ(w.packets_dropped_paused(), 3u);
  w.resume();
  for (std::uint32_t i = 8; i < 10; ++i) {
    const Bytes p = make_packet(i);
    expect.insert(expect.end(), p.begin(), p.end());
    ASSERT_TRUE(w.append(p));
  }
  ASSERT_TRUE(w.close());
  const RawRecord r = parse_raw(w.segments().at(0).path);
  EXPECT_EQ(r.data, expect);
  EXPECT_EQ(r.data_size, 7 * kLen);
}

TEST_F(RecordWriterTest, CloseIsIdempotentAndFinal) {
  int closed_calls = 0;
  auto w = std::make_unique<RecordWriter>(options());
  w->on_segment_closed = [&](const SegmentInfo&) { ++closed_calls; };
  ASSERT_TRUE(w->set_format("PCMA", kLen, 160));
  ASSERT_TRUE(w->append(make_packet(1)));
  EXPECT_TRUE(w->close());
  EXPECT_TRUE(w->close());
  EXPECT_FALSE(w->segment_open());
  EXPECT_EQ(w->append(make_packet(2)).code(), EBADF);
  EXPECT_EQ(w->set_format("PCMU", kLen, 160).code(), EBADF);
  const fs::path p = w->segments().at(0).path;
  w.reset();  // the destructor after close() does nothing more
  EXPECT_EQ(closed_calls, 1);
  const RawRecord r = parse_raw(p);
  EXPECT_EQ(r.data_size, kLen);
  EXPECT_EQ(r.data, make_packet(1));
}

TEST_F(RecordWriterTest, DestructorFinalizesTheFile) {
  fs::path p;
  {
    RecordWriter w(options());
    ASSERT_TRUE(w.set_format("PCMA", kLen, 160));
    for (std::uint32_t i = 0; i < 3; ++i) ASSERT_TRUE(w.append(make_packet(i)));
    p = w.segments().at(0).path;
  }
  const RawRecord r = parse_raw(p);
  EXPECT_EQ(r.data_size, 3 * kLen);
  EXPECT_EQ(r.data.size(), 3 * kLen);
}

TEST_F(RecordWriterTest, WrongPacketSizeAndBadFormatsAreRejected) {
  RecordWriter w(options());
  EXPECT_EQ(w.append(make_packet(1)).code(), EINVAL) << "no format declared yet";
  EXPECT_EQ(w.set_format("", kLen, 160).code(), EINVAL);
  EXPECT_EQ(w.set_format(std::string(64, 'X'), kLen, 160).code(), EINVAL);
  EXPECT_EQ(w.set_format("PCMA", 12, 160).code(), EINVAL);
  EXPECT_EQ(w.set_format("PCMA", 70000, 160).code(), EINVAL);
  EXPECT_EQ(w.set_format("PCMA", kLen, 0).code(), EINVAL);
  ASSERT_TRUE(w.set_format("PCMA", kLen, 160));
  EXPECT_EQ(w.append(make_packet(1, 0, kLen - 1)).code(), EINVAL);
  EXPECT_EQ(w.append(make_packet(1, 0, kLen + 1)).code(), EINVAL);
  EXPECT_TRUE(record_files(dir_).empty()) << "nothing written for a rejected packet";
  ASSERT_TRUE(w.append(make_packet(1)));
  ASSERT_TRUE(w.close());
  EXPECT_EQ(parse_raw(w.segments().at(0).path).data, make_packet(1));
}

TEST_F(RecordWriterTest, FormatChangeClosesTheSegmentAndTheNextOneHasTheNewHeader) {
  RecordWriter w(options());
  ASSERT_TRUE(w.set_format("PCMA", kLen, 160));
  for (std::uint32_t i = 0; i < 3; ++i) ASSERT_TRUE(w.append(make_packet(i)));
  ASSERT_TRUE(w.set_format("PCMA", kLen, 160));  // same format: same segment
  ASSERT_TRUE(w.set_format("PCMU", 92, 80));
  EXPECT_FALSE(w.segment_open()) << "the old segment is closed; the new one opens lazily";
  for (std::uint32_t i = 3; i < 5; ++i) ASSERT_TRUE(w.append(make_packet(i, 0, 92)));
  ASSERT_TRUE(w.close());
  ASSERT_EQ(w.segments().size(), 2u);
  const RawRecord a = parse_raw(w.segments()[0].path);
  const RawRecord b = parse_raw(w.segments()[1].path);
  EXPECT_EQ(a.codec, "PCMA");
  EXPECT_EQ(a.rtp_len, kLen);
  EXPECT_EQ(a.data_size, 3 * kLen);
  EXPECT_EQ(b.codec, "PCMU");
  EXPECT_EQ(b.rtp_len, 92u);
  EXPECT_EQ(b.increment, 80u);
  EXPECT_EQ(b.data_size, 2 * 92u);
  EXPECT_EQ(w.segments()[1].codec, "PCMU");
}

// ---- write errors --------------------------------------------------------------------------

// A real failing write without root: RLIMIT_FSIZE makes write(2) stop short at the limit and then
// fail with EFBIG -- in a child process, so the limit cannot touch the test runner's own files.
TEST_F(RecordWriterTest, WriteErrorTruncatesToWholePacketsAndIsSticky) {
  constexpr rlim_t kLimit = kHeaderSize + 1000;  // 5 whole packets and 140 bytes of a 6th
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(pipefd[0]);
    ::signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl {kLimit, kLimit};
    if (::setrlimit(RLIMIT_FSIZE, &rl) != 0) ::_exit(2);
    WriterOptions o = options();
    o.buffer_bytes = 8 * kLen;  // the first buffer write crosses the limit
    RecordWriter w(o);
    if (!w.set_format("PCMA", kLen, 160)) ::_exit(3);
    int code = 0;
    std::uint32_t ok = 0;
    std::string msg;
    for (std::uint32_t i = 0; i < 100 && code == 0; ++i) {
      const Status st = w.append(make_packet(i));
      if (st) {
        ++ok;
      } else {
        code = st.code();
        msg = st.message();
      }
    }
    const int again = w.append(make_packet(999)).code();  // sticky
    const bool open_after = w.segment_open();
    const std::string report = std::to_string(code) + " " + std::to_string(again) + " " + std::to_string(ok) +
                               " " + (open_after ? "1" : "0") + " " + w.segments().at(0).path.string() + "\n" + msg;
    if (::write(pipefd[1], report.data(), report.size()) < 0) ::_exit(4);
    ::_exit(0);
  }
  ::close(pipefd[1]);
  std::string report;
  char buf[4096];
  for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof buf)) > 0;) report.append(buf, static_cast<std::size_t>(n));
  ::close(pipefd[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0) << report;

  std::istringstream in(report);
  int code = 0, again = 0, open_after = 0;
  std::uint32_t ok = 0;
  std::string path;
  in >> code >> again >> ok >> open_after >> path;
  std::string msg;
  std::getline(in, msg);
  std::getline(in, msg);
  EXPECT_EQ(code, EFBIG);
  EXPECT_EQ(again, EFBIG);
  EXPECT_EQ(open_after, 0) << "the damaged segment is closed";
  EXPECT_EQ(ok, 7u) << "the 8th append fills the buffer and its write fails";
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  const RawRecord r = parse_raw(path);
  EXPECT_EQ(r.data.size(), 5 * kLen) << "truncated back to the last whole packet";
  EXPECT_EQ(r.data_size, 5 * kLen);
  Bytes expect;
  for (std::uint32_t i = 0; i < 5; ++i) {
    const Bytes p = make_packet(i);
    expect.insert(expect.end(), p.begin(), p.end());
  }
  EXPECT_EQ(r.data, expect);
}

// A REAL full disk: a 256 KiB tmpfs filled by the writer.
class RecordWriterFullDiskTest : public RecordWriterTest {
 protected:
  void SetUp() override {
    RecordWriterTest::SetUp();
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a small tmpfs";
    mnt_ = dir_ / "mnt";
    fs::create_directory(mnt_);
    if (::mount("tmpfs", mnt_.c_str(), "tmpfs", 0, "size=256k") != 0) {
      GTEST_SKIP() << "mount -t tmpfs -o size=256k failed: " << std::strerror(errno);
    }
    mounted_ = true;
  }
  void TearDown() override {
    if (mounted_) ::umount2(mnt_.c_str(), MNT_DETACH);
    RecordWriterTest::TearDown();
  }
  fs::path mnt_;
  bool mounted_ = false;
};

TEST_F(RecordWriterFullDiskTest, EnospcLeavesAValidFileWithWholePackets) {
  WriterOptions o = options();
  o.directory = mnt_;
  o.free_space = {};  // the real statvfs check: 256 KiB free, nothing reserved
  RecordWriter w(o);
  ASSERT_TRUE(w.set_format("PCMA", kLen, 160));
  Status st;
  std::uint32_t ok = 0;
  Bytes all;
  for (std::uint32_t i = 0; i < 100000; ++i) {
    const Bytes p = make_packet(i);
    st = w.append(p);
    if (!st) break;
    all.insert(all.end(), p.begin(), p.end());
    ++ok;
  }
  ASSERT_FALSE(st) << "a 256 KiB volume never filled up";
  EXPECT_EQ(st.code(), ENOSPC) << st.message();
  const fs::path p = w.segments().at(0).path;
  EXPECT_NE(st.message().find(p.string()), std::string::npos) << st.message();
  EXPECT_GT(ok, 1000u) << "~256 KiB of 172-byte packets";

  const Bytes raw = read_file(p);
  ASSERT_GE(raw.size(), kHeaderSize);
  EXPECT_EQ((raw.size() - kHeaderSize) % kLen, 0u) << "no partial packet on disk";
  const RawRecord r = parse_raw(p);
  EXPECT_EQ(r.codec, "PCMA");
  EXPECT_EQ(r.rtp_len, kLen);
  EXPECT_EQ(r.data_size, r.data.size()) << "dataSize equals the whole packets on disk";
  ASSERT_LE(r.data.size(), all.size());
  EXPECT_TRUE(std::equal(r.data.begin(), r.data.end(), all.begin())) << "on disk: a prefix of what was sent";
  EXPECT_EQ(w.segments()[0].packets * kLen, r.data.size());
  RecordInfo info;
  ASSERT_TRUE(inspect_record(p, info));
  EXPECT_EQ(info.integrity, Integrity::kOk) << p;
  EXPECT_EQ(info.declared_packets, info.whole_packets);
  EXPECT_EQ(info.trailing_bytes, 0u);

  // Further packets fail at once and touch nothing.
  const auto size_before = fs::file_size(p);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(w.append(make_packet(1)).code(), ENOSPC);
  EXPECT_EQ(fs::file_size(p), size_before);
  EXPECT_TRUE(w.close());

  // Starting over on the full volume: the free-space check refuses before creating a file.
  WriterOptions o2 = o;
  o2.expected_file_bytes = 64 << 10;
  RecordWriter w2(o2);
  ASSERT_TRUE(w2.set_format("PCMA", kLen, 160));
  const Status st2 = w2.append(make_packet(1));
  EXPECT_EQ(st2.code(), ENOSPC);
  EXPECT_NE(st2.message().find(mnt_.string()), std::string::npos) << st2.message();
  EXPECT_EQ(record_files(mnt_).size(), 1u);
}


// ---- StreamRecorder: assembler -> writer ---------------------------------------------------

Bytes rtp_packet(std::uint16_t seq, std::uint32_t ts, std::uint8_t pt = 8, std::size_t payload = 160) {
  Bytes b(12 + payload);
  b[0] = std::byte{0x80};
  b[1] = static_cast<std::byte>(pt);
  b[2] = static_cast<std::byte>(seq >> 8);
  b[3] = static_cast<std::byte>(seq);
  for (int i = 0; i < 4; ++i) b[4 + static_cast<std::size_t>(i)] = static_cast<std::byte>(ts >> (24 - 8 * i));
  b[8] = std::byte{0x12};
  for (std::size_t i = 12; i < b.size(); ++i) b[i] = static_cast<std::byte>((seq + i) & 0x7F);
  return b;
}

/// Arrival time of packet `seq` from a sender in real time (20 ms apart).
std::uint64_t arrival(std::uint16_t seq) { return 1'000'000'000ull + std::uint64_t{seq} * 20'000'000ull; }

std::uint16_t seq_of(const Bytes& data, std::size_t k, std::size_t len) {
  return static_cast<std::uint16_t>((std::to_integer<unsigned>(data[k * len + 2]) << 8) |
                                    std::to_integer<unsigned>(data[k * len + 3]));
}

TEST_F(RecordWriterTest, StreamRecorderWritesOrderedFilledSegments) {
  StreamRecorder rec(options());
  // 0 1 3 2 (reordered) 5..13 (4 lost), then PCMU with another ptime: 4 packets, so the change
  // lasts (format_confirm) and they are all written in the new segment.
  for (std::uint16_t s : {0, 1, 3, 2}) ASSERT_TRUE(rec.on_rtp(rtp_packet(s, 160u * s), arrival(s)));
  for (std::uint16_t s = 5; s <= 13; ++s) ASSERT_TRUE(rec.on_rtp(rtp_packet(s, 160u * s), arrival(s)));
  for (std::uint16_t s = 14; s <= 17; ++s) ASSERT_TRUE(rec.on_rtp(rtp_packet(s, 160u * s, 0, 240), arrival(s)));
  ASSERT_TRUE(rec.close());
  EXPECT_TRUE(rec.close()) << "idempotent";

  const auto& segs = rec.writer().segments();
  ASSERT_EQ(segs.size(), 2u);
  const RawRecord a = parse_raw(segs[0].path);
  EXPECT_EQ(a.codec, "PCMA");
  EXPECT_EQ(a.rtp_len, 172u);
  EXPECT_EQ(a.increment, 160u);
  ASSERT_EQ(a.data_size, 14u * 172) << "0..13 with 4 filled";
  for (std::size_t k = 0; k < 14; ++k) EXPECT_EQ(seq_of(a.data, k, 172), k);
  EXPECT_TRUE(std::all_of(a.data.begin() + 4 * 172 + 12, a.data.begin() + 5 * 172,
                          [](std::byte b) { return b == std::byte{0xD5}; }))
      << "seq 4 is PCMA silence";
  const RawRecord b = parse_raw(segs[1].path);
  EXPECT_EQ(b.codec, "PCMU");
  EXPECT_EQ(b.rtp_len, 252u);
  EXPECT_EQ(b.increment, 240u);
  EXPECT_EQ(b.data_size, 4u * 252);
  EXPECT_EQ(rec.counters().reordered, 1u);
  EXPECT_EQ(rec.counters().filled, 1u);
  EXPECT_EQ(rec.counters().segments, 2u);
}

TEST_F(RecordWriterTest, StreamRecorderPauseWritesHeldPacketsAndDoesNotFillThePause) {
  StreamRecorder rec(options());
  for (std::uint16_t s : {0, 1, 3}) ASSERT_TRUE(rec.on_rtp(rtp_packet(s, 160u * s), arrival(s)));  // 3 held
  rec.pause();
  for (std::uint16_t s = 4; s < 54; ++s) ASSERT_TRUE(rec.on_rtp(rtp_packet(s, 160u * s), arrival(s)));
  EXPECT_EQ(rec.writer().packets_dropped_paused(), 50u);
  rec.resume();
  for (std::uint16_t s = 54; s < 57; ++s) ASSERT_TRUE(rec.on_rtp(rtp_packet(s, 160u * s), arrival(s)));
  ASSERT_TRUE(rec.close());
  const RawRecord r = parse_raw(rec.writer().segments().at(0).path);
  ASSERT_EQ(r.data_size, 7u * 172);
  const std::vector<std::uint16_t> want{0, 1, 2, 3, 54, 55, 56};
  for (std::size_t k = 0; k < want.size(); ++k) EXPECT_EQ(seq_of(r.data, k, 172), want[k]) << k;
  EXPECT_EQ(rec.counters().filled, 1u) << "only the hole before the held packet, not the pause";
}

TEST_F(RecordWriterTest, StreamRecorderReturnsWriteErrors) {
  WriterOptions o = options();
  o.free_space = [](const fs::path&, std::uint64_t& free_bytes) {
    free_bytes = 0;
    return Status();
  };
  o.reserve_bytes = 1;
  StreamRecorder rec(o);
  const Status st = rec.on_rtp(rtp_packet(0, 0), arrival(0));
  EXPECT_EQ(st.code(), ENOSPC) << st.message();
  EXPECT_EQ(rec.on_rtp(rtp_packet(1, 160), arrival(1)).code(), ENOSPC) << "the writer keeps refusing";
  EXPECT_EQ(rec.counters().written, 2u) << "the assembler itself is unaffected";
  EXPECT_TRUE(rec.close());
  EXPECT_TRUE(record_files(dir_).empty());
}

}  // namespace
}  // namespace callrec::fileio

namespace callrec::fileio {
namespace {

std::size_t open_descriptors() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

/// Beyond the descriptor budget a writer reopens its file for each write and closes it again:
/// 300 recordings hold no descriptor between writes, and their files are exactly what a writer
/// that kept its descriptor writes.
TEST_F(RecordWriterTest, WritersBeyondTheDescriptorBudgetHoldNone) {
  const std::int64_t saved = record_fd_budget_left();
  set_record_fd_budget(2);  // two writers keep theirs
  {
    std::vector<std::unique_ptr<RecordWriter>> ws;
    const std::size_t before = open_descriptors();
    for (std::uint32_t id = 0; id < 300; ++id) {
      WriterOptions o = options();
      o.tag = "w" + std::to_string(id);
      ws.push_back(std::make_unique<RecordWriter>(o));
      ASSERT_TRUE(ws.back()->set_format("PCMA", kLen, 160));
    }
    for (std::uint32_t seq = 0; seq < 120; ++seq)  // crosses the 8 KiB buffer (47 packets) twice
      for (std::uint32_t id = 0; id < 300; ++id) ASSERT_TRUE(ws[id]->append(make_packet(seq, id))) << id;
    for (auto& w : ws) ASSERT_TRUE(w->flush());
    EXPECT_LE(open_descriptors(), before + 2) << "only the budget's writers keep a descriptor";
    EXPECT_EQ(record_fd_budget_left(), 0);
    for (auto& w : ws) ASSERT_TRUE(w->close());
    EXPECT_EQ(record_fd_budget_left(), 2) << "closing gives the slots back";
  }
  set_record_fd_budget(saved);
  const auto files = record_files(dir_);
  ASSERT_EQ(files.size(), 300u);
  for (const auto& f : files) {
    const RawRecord r = parse_raw(f);
    ASSERT_EQ(r.data_size, 120u * kLen) << f;
    ASSERT_EQ(r.data.size(), 120u * kLen) << f;
    const std::string name = f.filename().string();
    const auto w = name.find("_w");
    const auto id = static_cast<std::uint32_t>(std::stoul(name.substr(w + 2)));
    for (std::uint32_t seq = 0; seq < 120; ++seq) {
      const Bytes want = make_packet(seq, id);
      ASSERT_EQ(std::memcmp(r.data.data() + seq * kLen, want.data(), kLen), 0) << f << " packet " << seq;
    }
  }
}

}  // namespace
}  // namespace callrec::fileio
