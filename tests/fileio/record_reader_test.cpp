// inspect_record / RecordReader / repair_record over files built byte by byte in the test
// (no dependency on RecordWriter or on encode_header).
#include "fileio/record_reader.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace callrec::fileio {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<unsigned char>;

constexpr std::uint32_t kRtp = 172;  // 12-byte RTP header + 160 bytes of G.711 (20 ms)
constexpr std::uint32_t kInc = 160;

void put32(Bytes& b, std::uint32_t v, bool big_endian) {
  for (int i = 0; i < 4; ++i) {
    const int shift = big_endian ? 8 * (3 - i) : 8 * i;
    b.push_back(static_cast<unsigned char>(v >> shift));
  }
}

Bytes header(const std::string& codec, std::uint32_t rtp_len, std::uint32_t increment, std::uint32_t data_size,
             bool big_endian = false) {
  Bytes b(codec.begin(), codec.end());
  b.resize(64, 0);
  put32(b, rtp_len, big_endian);
  put32(b, increment, big_endian);
  put32(b, data_size, big_endian);
  return b;
}

/// Packet i: an RTP header (v2, PT 8, seq i, ts i*160) and a payload pattern depending on i.
Bytes packet(std::uint32_t i, std::uint32_t len = kRtp) {
  Bytes p(len);
  if (len >= 12) {
    p[0] = 0x80;
    p[1] = 8;
    p[2] = static_cast<unsigned char>(i >> 8);
    p[3] = static_cast<unsigned char>(i);
    const std::uint32_t ts = i * kInc;
    for (int k = 0; k < 4; ++k) p[4 + k] = static_cast<unsigned char>(ts >> (24 - 8 * k));
    p[8] = 0x11;
    p[9] = 0x22;
    p[10] = 0x33;
    p[11] = 0x44;
  }
  for (std::size_t j = 12; j < len; ++j) p[j] = static_cast<unsigned char>(i * 7 + j);
  return p;
}

Bytes packets(std::uint32_t n, std::uint32_t len = kRtp) {
  Bytes b;
  for (std::uint32_t i = 0; i < n; ++i) {
    const Bytes p = packet(i, len);
    b.insert(b.end(), p.begin(), p.end());
  }
  return b;
}

Bytes cat(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x + " | ";
  return s;
}

bool mentions(const std::vector<std::string>& problems, const std::string& word) {
  return joined(problems).find(word) != std::string::npos;
}

class RecordReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "callrec_reader_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << "mkdtemp: " << std::strerror(errno);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }

  fs::path write(const std::string& name, const Bytes& bytes) {
    const fs::path p = dir_ / name;
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    f.close();
    EXPECT_TRUE(f.good()) << "cannot write " << p;
    return p;
  }

  static Bytes read_all(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }

  /// Reads every packet with a RecordReader; fails the test on any error.
  static std::vector<Bytes> read_packets(const fs::path& p) {
    RecordReader r;
    const Status st = r.open(p);
    EXPECT_TRUE(st) << st.message();
    std::vector<Bytes> out;
    Status err;
    while (auto pkt = r.next(&err)) {
      const auto* b = reinterpret_cast<const unsigned char*>(pkt->data());
      out.emplace_back(b, b + pkt->size());
    }
    EXPECT_TRUE(err) << err.message();
    EXPECT_EQ(out.size(), r.packet_count());
    EXPECT_FALSE(r.next(&err).has_value()) << "next() after the end stays at the end";
    return out;
  }

  RecordInfo inspect(const fs::path& p) {
    RecordInfo info;
    const Status st = inspect_record(p, info);
    EXPECT_TRUE(st) << st.message();
    return info;
  }

  fs::path dir_;
};

TEST_F(RecordReaderTest, HealthyFileRoundTripsPackets) {
  const fs::path p = write("ok.rec", cat(header("PCMA", kRtp, kInc, 20 * kRtp), packets(20)));
  const RecordInfo info = inspect(p);
  EXPECT_EQ(info.integrity, Integrity::kOk) << joined(info.problems);
  EXPECT_TRUE(info.problems.empty()) << joined(info.problems);
  EXPECT_EQ(info.path, p);
  EXPECT_EQ(info.codec, Codec::kPcma);
  EXPECT_EQ(info.decoded.order, ByteOrder::kLittle);
  EXPECT_EQ(info.file_size, 76u + 20 * kRtp);
  EXPECT_EQ(info.bytes_on_disk, 20u * kRtp);
  EXPECT_EQ(info.whole_packets, 20u);
  EXPECT_EQ(info.declared_packets, 20u);
  EXPECT_EQ(info.trailing_bytes, 0u);
  EXPECT_EQ(info.clock_rate, 8000u);
  EXPECT_DOUBLE_EQ(info.period_s, 0.02);        // 160 / 8000
  EXPECT_DOUBLE_EQ(info.duration_s, 0.4);       // 20 * 160 / 8000
  EXPECT_STREQ(integrity_name(info.integrity), "ok");

  const auto got = read_packets(p);
  ASSERT_EQ(got.size(), 20u);
  for (std::uint32_t i = 0; i < 20; ++i) EXPECT_EQ(got[i], packet(i)) << "packet " << i;
}

TEST_F(RecordReaderTest, ManyPacketsAcrossReadAheadRefills) {
  // 3000 x 172 bytes = 516 KB: several refills of the read-ahead buffer. Also an odd rtpLen (13)
  // that does not divide the buffer size, and the largest rtpLen.
  struct Case {
    std::uint32_t rtp;
    std::uint32_t n;
  };
  for (const Case c : {Case{kRtp, 3000}, Case{13, 20000}, Case{65535, 3}}) {
    const fs::path p = write("many.rec", cat(header("PCMU", c.rtp, kInc, c.n * c.rtp), packets(c.n, c.rtp)));
    const RecordInfo info = inspect(p);
    EXPECT_EQ(info.integrity, Integrity::kOk) << joined(info.problems);
    EXPECT_DOUBLE_EQ(info.duration_s, c.n * 0.02);
    const auto got = read_packets(p);
    ASSERT_EQ(got.size(), c.n) << "rtpLen " << c.rtp;
    for (std::uint32_t i = 0; i < c.n; ++i) ASSERT_EQ(got[i], packet(i, c.rtp)) << "rtpLen " << c.rtp << " packet " << i;
  }
}

TEST_F(RecordReaderTest, EmptyDataIsOk) {
  const fs::path p = write("empty.rec", header("PCMU", kRtp, kInc, 0));
  const RecordInfo info = inspect(p);
  EXPECT_EQ(info.integrity, Integrity::kOk) << joined(info.problems);
  EXPECT_EQ(info.whole_packets, 0u);
  EXPECT_DOUBLE_EQ(info.duration_s, 0.0);
  EXPECT_DOUBLE_EQ(info.period_s, 0.02);
  EXPECT_TRUE(read_packets(p).empty());
}

TEST_F(RecordReaderTest, BigEndianHeader) {
  const fs::path p = write("be.rec", cat(header("PCMA", kRtp, kInc, 5 * kRtp, true), packets(5)));
  const RecordInfo info = inspect(p);
  EXPECT_EQ(info.integrity, Integrity::kOk) << joined(info.problems);
  EXPECT_EQ(info.decoded.order, ByteOrder::kBig);
  EXPECT_EQ(info.decoded.header.rtp_len, 172);
  EXPECT_EQ(info.decoded.header.data_size, 5 * kRtp);
  EXPECT_DOUBLE_EQ(info.duration_s, 0.1);
  const auto got = read_packets(p);
  ASSERT_EQ(got.size(), 5u);
  EXPECT_EQ(got[4], packet(4));
}

TEST_F(RecordReaderTest, LowercaseCodecIsRecognized) {
  const RecordInfo info = inspect(write("lc.rec", cat(header("pcmu", kRtp, kInc, kRtp), packets(1))));
  EXPECT_EQ(info.integrity, Integrity::kOk);
  EXPECT_EQ(info.codec, Codec::kPcmu);
  EXPECT_EQ(info.decoded.header.codec, "pcmu");  // as stored
}

// Decision: an unknown codec name in an otherwise sound header is readable (the packets are
// fine), but the clock is unknown: no period/duration, and the problem is listed.
TEST_F(RecordReaderTest, UnknownCodecIsReadableWithoutDuration) {
  const fs::path p = write("x.rec", cat(header("XCODEC", 32, 80, 3 * 32), packets(3, 32)));
  const RecordInfo info = inspect(p);
  EXPECT_EQ(info.integrity, Integrity::kOk);
  EXPECT_FALSE(info.codec.has_value());
  EXPECT_EQ(info.clock_rate, 0u);
  EXPECT_DOUBLE_EQ(info.period_s, 0.0);
  EXPECT_DOUBLE_EQ(info.duration_s, 0.0);
  EXPECT_TRUE(mentions(info.problems, "XCODEC")) << joined(info.problems);
  EXPECT_EQ(read_packets(p).size(), 3u);
}

// Passive capture and SIPREC store other codecs by their SDP name: their RTP clock is known
// (RFC 3551 and the codecs' RTP payload formats), so period and duration are too.
TEST_F(RecordReaderTest, SdpCodecNamesHaveTheirRtpClock) {
  const fs::path p = write("g729.rec", cat(header("G729", 32, 80, 3 * 32), packets(3, 32)));
  const RecordInfo info = inspect(p);
  EXPECT_EQ(info.integrity, Integrity::kOk);
  EXPECT_FALSE(info.codec.has_value()) << "not G.711: export cannot decode it as such";
  EXPECT_EQ(info.clock_rate, 8000u);
  EXPECT_DOUBLE_EQ(info.period_s, 0.01);
  EXPECT_NEAR(info.duration_s, 0.03, 1e-9);
  EXPECT_TRUE(info.problems.empty()) << joined(info.problems);
  EXPECT_EQ(callrec::fileio::rtp_clock_for_name("opus"), 48000u);
  EXPECT_EQ(callrec::fileio::rtp_clock_for_name("g722"), 8000u);
  EXPECT_EQ(callrec::fileio::rtp_clock_for_name("AMR-WB"), 16000u);
  EXPECT_EQ(callrec::fileio::rtp_clock_for_name("nope"), 0u);
}

TEST_F(RecordReaderTest, TruncatedHeaderIsBroken) {
  const Bytes full = cat(header("PCMA", kRtp, kInc, 0), {});
  for (std::size_t len : {0u, 1u, 40u, 75u}) {
    const fs::path p = write("short.rec", Bytes(full.begin(), full.begin() + static_cast<long>(len)));
    const RecordInfo info = inspect(p);
    EXPECT_EQ(info.integrity, Integrity::kBroken) << len;
    EXPECT_EQ(info.file_size, len);
    EXPECT_TRUE(mentions(info.problems, "76-byte header")) << joined(info.problems);
    RecordReader r;
    const Status st = r.open(p);
    EXPECT_FALSE(st);
    EXPECT_NE(st.message().find(p.string()), std::string::npos) << st.message();
  }
}

TEST_F(RecordReaderTest, GarbageFileIsBrokenAndNamed) {
  Bytes garbage(4096);
  std::uint32_t x = 12345;
  for (auto& b : garbage) {
    x = x * 1103515245u + 12345u;
    b = static_cast<unsigned char>(x >> 16);
  }
  const fs::path p = write("garbage.bin", garbage);
  const RecordInfo info = inspect(p);
  EXPECT_EQ(info.integrity, Integrity::kBroken);
  EXPECT_FALSE(info.decoded.plausible);
  EXPECT_FALSE(info.problems.empty());
  EXPECT_EQ(info.whole_packets, 0u);
  EXPECT_DOUBLE_EQ(info.duration_s, 0.0);
  RecordReader r;
  const Status st = r.open(p);
  ASSERT_FALSE(st);
  EXPECT_NE(st.message().find(p.string()), std::string::npos) << st.message();
  EXPECT_FALSE(r.next().has_value());
}

TEST_F(RecordReaderTest, ImplausibleRtpLenIsBroken) {
  const RecordInfo info = inspect(write("zero.rec", cat(header("PCMA", 0, kInc, 0), packets(2))));
  EXPECT_EQ(info.integrity, Integrity::kBroken);
  EXPECT_TRUE(mentions(info.problems, "rtpLen 0")) << joined(info.problems);
}

TEST_F(RecordReaderTest, MissingFileAndDirectoryFail) {
  RecordInfo info;
  const fs::path missing = dir_ / "missing.rec";
  Status st = inspect_record(missing, info);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.code(), ENOENT);
  EXPECT_NE(st.message().find(missing.string()), std::string::npos) << st.message();

  st = inspect_record(dir_, info);
  ASSERT_FALSE(st);
  EXPECT_NE(st.message().find(dir_.string()), std::string::npos) << st.message();

  RecordReader r;
  EXPECT_EQ(r.open(missing).code(), ENOENT);
}

TEST_F(RecordReaderTest, FifoIsRefusedWithoutBlocking) {
  const fs::path p = dir_ / "fifo";
  ASSERT_EQ(::mkfifo(p.c_str(), 0600), 0) << std::strerror(errno);
  RecordInfo info;
  const Status st = inspect_record(p, info);  // must not wait for a writer
  EXPECT_FALSE(st);
  EXPECT_NE(st.message().find("regular file"), std::string::npos) << st.message();
  RepairResult rr;
  EXPECT_FALSE(repair_record(p, rr));
}

TEST_F(RecordReaderTest, DataSizeLargerThanDisk) {
  const fs::path p = write("more.rec", cat(header("PCMA", kRtp, kInc, 30 * kRtp), packets(20)));
  const RecordInfo info = inspect(p);
  EXPECT_EQ(info.integrity, Integrity::kRepairable);
  EXPECT_EQ(info.declared_packets, 30u);
  EXPECT_EQ(info.whole_packets, 20u);
  EXPECT_TRUE(mentions(info.problems, "dataSize 5160")) << joined(info.problems);
  EXPECT_DOUBLE_EQ(info.duration_s, 0.4);  // readable packets: min(30, 20)
  EXPECT_EQ(read_packets(p).size(), 20u);
}

TEST_F(RecordReaderTest, DataSizeSmallerThanDiskTrustsTheHeader) {
  const fs::path p = write("less.rec", cat(header("PCMA", kRtp, kInc, 10 * kRtp), packets(20)));
  const RecordInfo info = inspect(p);
  EXPECT_EQ(info.integrity, Integrity::kRepairable);
  EXPECT_EQ(info.declared_packets, 10u);
  EXPECT_EQ(info.whole_packets, 20u);
  EXPECT_TRUE(mentions(info.problems, "dataSize 1720")) << joined(info.problems);
  EXPECT_DOUBLE_EQ(info.duration_s, 0.2);  // min(10, 20) packets
  const auto got = read_packets(p);
  ASSERT_EQ(got.size(), 10u);
  EXPECT_EQ(got[9], packet(9));
}

TEST_F(RecordReaderTest, DataSizeNotAMultipleUsesWholePackets) {
  const fs::path p = write("odd.rec", cat(header("PCMA", kRtp, kInc, 1000), packets(20)));
  const RecordInfo info = inspect(p);
  EXPECT_EQ(info.integrity, Integrity::kRepairable);
  EXPECT_TRUE(mentions(info.problems, "not a whole multiple")) << joined(info.problems);
  EXPECT_DOUBLE_EQ(info.duration_s, 0.4);
  EXPECT_EQ(read_packets(p).size(), 20u);
}

TEST_F(RecordReaderTest, PartialTrailingPacket) {
  const Bytes next = packet(20);
  const Bytes partial(next.begin(), next.begin() + 50);
  const fs::path p = write("partial.rec", cat(cat(header("PCMA", kRtp, kInc, 20 * kRtp), packets(20)), partial));
  const RecordInfo info = inspect(p);
  EXPECT_EQ(info.integrity, Integrity::kRepairable);
  EXPECT_EQ(info.whole_packets, 20u);
  EXPECT_EQ(info.trailing_bytes, 50u);
  EXPECT_TRUE(mentions(info.problems, "partial trailing packet")) << joined(info.problems);
  EXPECT_TRUE(mentions(info.problems, "dataSize 3440")) << joined(info.problems);  // disagrees with 3490
  EXPECT_EQ(read_packets(p).size(), 20u);
}

TEST_F(RecordReaderTest, FileShrinkingWhileReadingReportsAnError) {
  const fs::path p = write("shrink.rec", cat(header("PCMA", kRtp, kInc, 2000 * kRtp), packets(2000)));
  RecordReader r;
  ASSERT_TRUE(r.open(p));
  ASSERT_EQ(r.packet_count(), 2000u);
  Status err;
  ASSERT_TRUE(r.next(&err).has_value());
  ASSERT_EQ(::truncate(p.c_str(), 76 + 500 * kRtp), 0) << std::strerror(errno);
  std::uint64_t n = 1;
  while (r.next(&err)) ++n;
  EXPECT_EQ(n, 500u);
  EXPECT_FALSE(err);
  EXPECT_NE(err.message().find(p.string()), std::string::npos) << err.message();
  EXPECT_FALSE(r.next(&err).has_value());
}

TEST_F(RecordReaderTest, ReaderCanBeReopened) {
  const fs::path a = write("a.rec", cat(header("PCMA", kRtp, kInc, 2 * kRtp), packets(2)));
  const fs::path b = write("b.rec", cat(header("PCMU", 32, kInc, 3 * 32), packets(3, 32)));
  RecordReader r;
  ASSERT_TRUE(r.open(a));
  ASSERT_TRUE(r.next().has_value());
  ASSERT_TRUE(r.open(b));
  EXPECT_EQ(r.packet_count(), 3u);
  auto first = r.next();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->size(), 32u);
  EXPECT_EQ(std::to_integer<unsigned>((*first)[3]), 0u);  // seq 0 of b, not packet 1 of a
}

// ---- repair -----------------------------------------------------------------------------------

TEST_F(RecordReaderTest, RepairFixesDataSizeAndTrailingPacket) {
  const Bytes next = packet(20);
  const Bytes partial(next.begin(), next.begin() + 50);
  const Bytes original = cat(cat(header("PCMA", kRtp, kInc, 10 * kRtp), packets(20)), partial);
  const fs::path p = write("crash.rec", original);
  RepairResult rr;
  const Status st = repair_record(p, rr);
  ASSERT_TRUE(st) << st.message();
  EXPECT_TRUE(rr.changed);
  EXPECT_EQ(rr.old_data_size, 1720u);
  EXPECT_EQ(rr.new_data_size, 3440u);
  EXPECT_EQ(rr.truncated_bytes, 50u);
  EXPECT_NE(rr.summary.find("1720 -> 3440"), std::string::npos) << rr.summary;
  EXPECT_NE(rr.summary.find("partial trailing packet (50 bytes)"), std::string::npos) << rr.summary;

  const Bytes now = read_all(p);
  ASSERT_EQ(now.size(), 76u + 3440u);
  // Only dataSize changed in the header (LE 3440 = 70 0D 00 00); the packets are untouched.
  Bytes expect = cat(header("PCMA", kRtp, kInc, 3440), packets(20));
  EXPECT_EQ(now, expect);
  const RecordInfo info = inspect(p);
  EXPECT_EQ(info.integrity, Integrity::kOk) << joined(info.problems);
  EXPECT_DOUBLE_EQ(info.duration_s, 0.4);
}

TEST_F(RecordReaderTest, RepairIsIdempotent) {
  const fs::path p = write("idem.rec", cat(cat(header("PCMU", kRtp, kInc, 0), packets(7)), Bytes(3, 0xAB)));
  RepairResult first;
  ASSERT_TRUE(repair_record(p, first));
  EXPECT_TRUE(first.changed);
  const Bytes after_first = read_all(p);
  RepairResult second;
  const Status st = repair_record(p, second);
  ASSERT_TRUE(st) << st.message();
  EXPECT_FALSE(second.changed);
  EXPECT_EQ(second.old_data_size, 7 * kRtp);
  EXPECT_EQ(second.new_data_size, 7 * kRtp);
  EXPECT_EQ(second.truncated_bytes, 0u);
  EXPECT_FALSE(second.summary.empty());
  EXPECT_EQ(read_all(p), after_first);
}

TEST_F(RecordReaderTest, RepairLeavesHealthyFileUnchanged) {
  const Bytes original = cat(header("PCMA", kRtp, kInc, 4 * kRtp), packets(4));
  const fs::path p = write("healthy.rec", original);
  struct stat before {};
  ASSERT_EQ(::stat(p.c_str(), &before), 0);
  RepairResult rr;
  ASSERT_TRUE(repair_record(p, rr));
  EXPECT_FALSE(rr.changed);
  EXPECT_EQ(rr.truncated_bytes, 0u);
  EXPECT_NE(rr.summary.find("nothing to repair"), std::string::npos) << rr.summary;
  EXPECT_EQ(read_all(p), original);
  struct stat after {};
  ASSERT_EQ(::stat(p.c_str(), &after), 0);
  EXPECT_EQ(after.st_mtim.tv_sec, before.st_mtim.tv_sec);
  EXPECT_EQ(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);
}

TEST_F(RecordReaderTest, RepairKeepsBigEndianOrder) {
  const fs::path p = write("be_crash.rec", cat(header("PCMA", kRtp, kInc, kRtp, true), packets(3)));
  RepairResult rr;
  ASSERT_TRUE(repair_record(p, rr));
  EXPECT_TRUE(rr.changed);
  EXPECT_EQ(rr.new_data_size, 3 * kRtp);
  EXPECT_EQ(read_all(p), cat(header("PCMA", kRtp, kInc, 3 * kRtp, true), packets(3)));  // 00 00 02 04
  const RecordInfo info = inspect(p);
  EXPECT_EQ(info.integrity, Integrity::kOk) << joined(info.problems);
  EXPECT_EQ(info.decoded.order, ByteOrder::kBig);
}

TEST_F(RecordReaderTest, RepairLowersDataSizeLargerThanDisk) {
  const fs::path p = write("lower.rec", cat(header("PCMA", kRtp, kInc, 30 * kRtp), packets(20)));
  RepairResult rr;
  ASSERT_TRUE(repair_record(p, rr));
  EXPECT_TRUE(rr.changed);
  EXPECT_EQ(rr.old_data_size, 30 * kRtp);
  EXPECT_EQ(rr.new_data_size, 20 * kRtp);
  EXPECT_EQ(inspect(p).integrity, Integrity::kOk);
}

TEST_F(RecordReaderTest, RepairRefusesBrokenFiles) {
  Bytes garbage(300, 0xEE);
  const fs::path p = write("broken.rec", garbage);
  RepairResult rr;
  Status st = repair_record(p, rr);
  ASSERT_FALSE(st);
  EXPECT_NE(st.message().find(p.string()), std::string::npos) << st.message();
  EXPECT_FALSE(rr.changed);
  EXPECT_EQ(read_all(p), garbage);

  const fs::path shorty = write("short.rec", Bytes(10, 0));
  EXPECT_FALSE(repair_record(shorty, rr));
  EXPECT_EQ(read_all(shorty).size(), 10u);

  EXPECT_EQ(repair_record(dir_ / "missing.rec", rr).code(), ENOENT);
}

// A sparse file with more than 4 GiB of data: dataSize cannot describe it. inspect says so,
// repair caps dataSize at max_data_size(rtpLen) (never truncating whole packets), stays
// idempotent, and the reader serves the declared packets.
TEST_F(RecordReaderTest, DataBeyond4GiBIsCappedNotTruncated) {
  const fs::path p = write("huge.rec", header("PCMA", kRtp, kInc, 0));
  const std::uint64_t whole = (5ull << 30) / kRtp;
  const std::uint64_t size = 76 + whole * kRtp + 7;  // 7-byte partial trailing packet
  if (::truncate(p.c_str(), static_cast<off_t>(size)) != 0) {
    GTEST_SKIP() << "cannot create a sparse " << size << "-byte file: " << std::strerror(errno);
  }
  RecordInfo info = inspect(p);
  EXPECT_EQ(info.integrity, Integrity::kRepairable);
  EXPECT_EQ(info.whole_packets, whole);
  EXPECT_EQ(info.trailing_bytes, 7u);

  RepairResult rr;
  Status st = repair_record(p, rr);
  ASSERT_TRUE(st) << st.message();
  const std::uint64_t cap = max_data_size(kRtp);
  EXPECT_TRUE(rr.changed);
  EXPECT_EQ(rr.new_data_size, cap);
  EXPECT_EQ(rr.truncated_bytes, 7u);
  EXPECT_NE(rr.summary.find("32-bit"), std::string::npos) << rr.summary;
  EXPECT_EQ(fs::file_size(p), 76 + whole * kRtp);

  info = inspect(p);
  EXPECT_EQ(info.integrity, Integrity::kRepairable);  // disk still holds more than dataSize can say
  EXPECT_TRUE(mentions(info.problems, "largest dataSize")) << joined(info.problems);
  EXPECT_EQ(info.declared_packets, cap / kRtp);
  EXPECT_DOUBLE_EQ(info.duration_s, static_cast<double>(cap / kRtp * kInc) / 8000.0);

  RepairResult again;
  ASSERT_TRUE(repair_record(p, again));
  EXPECT_FALSE(again.changed);
  EXPECT_EQ(fs::file_size(p), 76 + whole * kRtp);

  RecordReader r;
  ASSERT_TRUE(r.open(p));
  EXPECT_EQ(r.packet_count(), cap / kRtp);
  auto first = r.next();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->size(), kRtp);
}

}  // namespace
}  // namespace callrec::fileio
