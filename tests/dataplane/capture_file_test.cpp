// The capture file readers (dataplane/capture): classic pcap and pcapng read into one buffer
// and handed out in bursts without a copy. libpcap is the reference: every frame of a file
// must come out of both with the same bytes, link type, time and wire length, and a burst's
// frames must still hold their bytes after the reader refilled its buffer for the next one.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "dataplane/capture/capture.hpp"
#include "tools/callrec-pcapgen/calls_gen.hpp"

namespace fs = std::filesystem;
using namespace callrec;
using namespace callrec::dataplane::capture;

namespace {

struct Got {
  std::vector<std::byte> data;
  std::uint32_t link = 0, orig_len = 0;
  std::uint64_t ts_ns = 0;
  bool operator==(const Got&) const = default;
};

struct Read {
  std::vector<Got> frames;
  int last_rc = 0;
  std::string error;
};

/// Every frame of `src` through read_burst(max): each burst's frames are copied out only after
/// the call returned, so a frame a refill had overwritten would show.
Read read_all(FrameSource& src, unsigned max) {
  Read r;
  std::vector<Frame> out(max);
  for (;;) {
    const int rc = src.read_burst(out.data(), max);
    r.last_rc = rc;
    if (rc <= 0) break;
    for (int i = 0; i < rc; ++i) {
      const Frame& f = out[static_cast<std::size_t>(i)];
      // libpcap names LINKTYPE_RAW (101) by its DLT_RAW (12); the decoder takes both
      r.frames.push_back({{f.data.begin(), f.data.end()}, f.link == 101 ? 12u : f.link, f.orig_len, f.ts_ns});
    }
  }
  r.error = src.error();
  return r;
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/callrec-capture-file-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  [[nodiscard]] fs::path operator/(const std::string& n) const { return path_ / n; }

 private:
  fs::path path_;
};

void put(std::vector<std::byte>& b, const void* p, std::size_t n) {
  const auto* c = static_cast<const std::byte*>(p);
  b.insert(b.end(), c, c + n);
}
template <typename T>
void put_int(std::vector<std::byte>& b, T v, bool swap) {
  if (swap) {
    if constexpr (sizeof(T) == 2) v = static_cast<T>(__builtin_bswap16(v));
    if constexpr (sizeof(T) == 4) v = static_cast<T>(__builtin_bswap32(v));
  }
  put(b, &v, sizeof v);
}

struct Rec {
  std::uint32_t sec, frac, orig;
  std::vector<std::byte> data;
};

/// A classic pcap file, in either byte order, microsecond or nanosecond times.
std::vector<std::byte> classic(const std::vector<Rec>& recs, bool swap, bool nanos, std::uint32_t link = 1) {
  std::vector<std::byte> b;
  put_int<std::uint32_t>(b, nanos ? 0xA1B23C4D : 0xA1B2C3D4, swap);
  put_int<std::uint16_t>(b, 2, swap);
  put_int<std::uint16_t>(b, 4, swap);
  put_int<std::uint32_t>(b, 0, swap);
  put_int<std::uint32_t>(b, 0, swap);
  put_int<std::uint32_t>(b, 262144, swap);
  put_int<std::uint32_t>(b, link, swap);
  for (const Rec& r : recs) {
    put_int<std::uint32_t>(b, r.sec, swap);
    put_int<std::uint32_t>(b, r.frac, swap);
    put_int<std::uint32_t>(b, static_cast<std::uint32_t>(r.data.size()), swap);
    put_int<std::uint32_t>(b, r.orig, swap);
    put(b, r.data.data(), r.data.size());
  }
  return b;
}

/// Records of sizes from 1 byte to 200 KiB, so that records straddle the 2 MiB read buffer's
/// end at every kind of offset; their bytes say which record they are.
std::vector<Rec> varied_records(std::size_t count, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<Rec> recs;
  for (std::size_t i = 0; i < count; ++i) {
    std::size_t len = rng() % 4 == 0 ? 1 + rng() % (200u << 10) : 1 + rng() % 1600;
    Rec r{static_cast<std::uint32_t>(1'700'000'000 + i), static_cast<std::uint32_t>(rng() % 1'000'000),
          static_cast<std::uint32_t>(len + rng() % 3), {}};
    r.data.resize(len);
    for (std::size_t k = 0; k < len; ++k) r.data[k] = static_cast<std::byte>((i * 131 + k * 7) & 0xFF);
    recs.push_back(std::move(r));
  }
  return recs;
}

void write_file(const fs::path& p, const std::vector<std::byte>& b) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

Read read_file(const fs::path& p, bool libpcap, unsigned max = 32) {
  Status st;
  auto src = libpcap ? open_with_libpcap(p.string(), st) : open_file(p.string(), st);
  if (!src) {
    ADD_FAILURE() << p << ": " << st.message();
    return {};
  }
  return read_all(*src, max);
}

}  // namespace

// Both byte orders, both time resolutions, records straddling the buffer: the same frames as
// libpcap's, whatever the burst size.
TEST(CaptureFile, ClassicPcapGivesLibpcapsFramesInEveryFormAndBurstSize) {
  TempDir dir;
  const auto recs = varied_records(200, 7);
  for (const bool swap : {false, true}) {
    for (const bool nanos : {false, true}) {
      const fs::path p = dir / ("f" + std::to_string(swap) + std::to_string(nanos) + ".pcap");
      write_file(p, classic(recs, swap, nanos));
      const Read ref = read_file(p, true, 1);
      ASSERT_EQ(ref.frames.size(), recs.size()) << ref.error;
      EXPECT_EQ(ref.frames[5].ts_ns, recs[5].sec * 1'000'000'000ull + recs[5].frac * (nanos ? 1 : 1000));
      for (const unsigned max : {1u, 7u, 32u}) {
        const Read got = read_file(p, false, max);
        EXPECT_EQ(got.last_rc, 0) << got.error;
        EXPECT_TRUE(got.error.empty()) << got.error;
        ASSERT_EQ(got.frames.size(), ref.frames.size()) << "swap " << swap << " nanos " << nanos << " max " << max;
        for (std::size_t i = 0; i < got.frames.size(); ++i)
          ASSERT_EQ(got.frames[i], ref.frames[i]) << "frame " << i << " swap " << swap << " nanos " << nanos << " max " << max;
      }
    }
  }
}

// A capture cut short (tcpdump killed) ends inside a record: the frames before the cut, then
// an error that says "truncated" (the offline run reads up to there), as libpcap says it.
TEST(CaptureFile, ACutInAHeaderOrInARecordEndsWithTruncatedAfterTheFramesBeforeIt) {
  TempDir dir;
  const auto recs = varied_records(30, 11);
  const auto whole = classic(recs, false, false);
  std::size_t end_of_10 = 24;
  for (int i = 0; i < 10; ++i) end_of_10 += 16 + recs[static_cast<std::size_t>(i)].data.size();
  for (const std::size_t cut : {end_of_10 + 7, end_of_10 + 16 + 1}) {  // in the header, in the data
    const fs::path p = dir / ("cut" + std::to_string(cut) + ".pcap");
    write_file(p, {whole.begin(), whole.begin() + static_cast<std::ptrdiff_t>(cut)});
    const Read ref = read_file(p, true);
    const Read got = read_file(p, false);
    ASSERT_EQ(got.frames.size(), 10u);
    EXPECT_EQ(got.frames, ref.frames);
    EXPECT_EQ(got.last_rc, -1);
    EXPECT_NE(got.error.find("truncated"), std::string::npos) << got.error;
    EXPECT_NE(ref.error.find("truncated"), std::string::npos) << ref.error;
  }
  // Cut exactly between records: a clean end.
  const fs::path p = dir / "clean.pcap";
  write_file(p, {whole.begin(), whole.begin() + static_cast<std::ptrdiff_t>(end_of_10)});
  const Read got = read_file(p, false);
  EXPECT_EQ(got.frames.size(), 10u);
  EXPECT_EQ(got.last_rc, 0);
  EXPECT_TRUE(got.error.empty()) << got.error;
}

// A damaged record length (over libpcap's 256 KiB) ends the read with an error that names it,
// after the frames before it; it is never read as a 4 GiB frame.
TEST(CaptureFile, ABogusRecordLengthEndsTheReadWithAnError) {
  auto recs = varied_records(5, 3);
  auto bytes = classic(recs, false, false);
  std::vector<std::byte> bad(16);
  const std::uint32_t huge = 0x7FFFFFF0;
  std::memcpy(bad.data() + 8, &huge, 4);
  bytes.insert(bytes.end(), bad.begin(), bad.end());
  auto src = capture_from_memory(bytes);
  ASSERT_TRUE(src);
  const Read got = read_all(*src, 32);
  EXPECT_EQ(got.frames.size(), 5u);
  EXPECT_EQ(got.last_rc, -1);
  EXPECT_NE(got.error.find("invalid packet capture length"), std::string::npos) << got.error;
}

// What the readers here do not take goes to libpcap: the "modified" pcap of old Red Hat
// patches, a major version other than 2, and bytes that are no capture at all.
TEST(CaptureFile, OtherFormsAreLeftToLibpcap) {
  auto bytes = classic(varied_records(2, 1), false, false);
  const std::uint32_t modified = 0xA1B2CD34;
  std::memcpy(bytes.data(), &modified, 4);
  EXPECT_FALSE(capture_from_memory(bytes));
  bytes = classic(varied_records(2, 1), false, false);
  bytes[4] = std::byte{3};
  EXPECT_FALSE(capture_from_memory(bytes));
  const std::string text = "this is not a capture file at all";
  EXPECT_FALSE(capture_from_memory(std::as_bytes(std::span(text))));
  EXPECT_FALSE(capture_from_memory({}));
  TempDir dir;
  const fs::path p = dir / "text.pcap";
  write_file(p, {reinterpret_cast<const std::byte*>(text.data()), reinterpret_cast<const std::byte*>(text.data()) + text.size()});
  Status st;
  EXPECT_FALSE(open_file(p.string(), st));
  EXPECT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find(p.string()), std::string::npos) << st.message();
}

namespace {

void block(std::vector<std::byte>& b, std::uint32_t type, const std::vector<std::byte>& body) {
  const auto len = static_cast<std::uint32_t>(12 + ((body.size() + 3) & ~std::size_t{3}));
  put_int(b, type, false);
  put_int(b, len, false);
  put(b, body.data(), body.size());
  b.resize(b.size() + (((body.size() + 3) & ~std::size_t{3}) - body.size()));
  put_int(b, len, false);
}

std::vector<std::byte> shb() {
  std::vector<std::byte> body;
  put_int<std::uint32_t>(body, 0x1A2B3C4D, false);
  put_int<std::uint16_t>(body, 1, false);
  put_int<std::uint16_t>(body, 0, false);
  put_int<std::uint64_t>(body, ~std::uint64_t{0}, false);
  std::vector<std::byte> b;
  block(b, 0x0A0D0D0A, body);
  return b;
}

void idb(std::vector<std::byte>& b, std::uint16_t link) {
  std::vector<std::byte> body;
  put_int<std::uint16_t>(body, link, false);
  put_int<std::uint16_t>(body, 0, false);
  put_int<std::uint32_t>(body, 262144, false);
  block(b, 1, body);
}

void epb(std::vector<std::byte>& b, std::uint32_t ifid, std::uint64_t ts_us, const std::vector<std::byte>& data) {
  std::vector<std::byte> body;
  put_int<std::uint32_t>(body, ifid, false);
  put_int<std::uint32_t>(body, static_cast<std::uint32_t>(ts_us >> 32), false);
  put_int<std::uint32_t>(body, static_cast<std::uint32_t>(ts_us), false);
  put_int<std::uint32_t>(body, static_cast<std::uint32_t>(data.size()), false);
  put_int<std::uint32_t>(body, static_cast<std::uint32_t>(data.size()), false);
  put(body, data.data(), data.size());
  block(b, 6, body);
}

}  // namespace

// pcapng with two link types (libpcap 1.10 stops at the second), blocks larger than the read
// buffer between packets, and packets straddling it: every frame, intact after its burst.
TEST(CaptureFile, PcapngOfTwoLinkTypesAndBlocksLargerThanTheBufferGivesEveryFrame) {
  TempDir dir;
  std::vector<std::byte> b = shb();
  idb(b, 1);    // Ethernet
  idb(b, 113);  // Linux cooked
  const auto recs = varied_records(120, 5);
  std::vector<Got> want;
  for (std::size_t i = 0; i < recs.size(); ++i) {
    const std::uint32_t ifid = static_cast<std::uint32_t>(i % 2);
    const std::uint64_t us = 1'700'000'000'000'000ull + i * 20'000;
    epb(b, ifid, us, recs[i].data);
    want.push_back({recs[i].data, ifid == 0 ? 1u : 113u, static_cast<std::uint32_t>(recs[i].data.size()), us * 1000});
    if (i == 40 || i == 41) block(b, 0xBAD, std::vector<std::byte>(3u << 20, std::byte{0x5A}));  // custom, 3 MiB
  }
  const fs::path p = dir / "two.pcapng";
  write_file(p, b);
  for (const unsigned max : {1u, 32u}) {
    const Read got = read_file(p, false, max);
    EXPECT_EQ(got.last_rc, 0) << got.error;
    ASSERT_EQ(got.frames.size(), want.size());
    for (std::size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got.frames[i], want[i]) << "frame " << i << " max " << max;
  }
  // The same from memory (what the fuzz target reads).
  auto src = pcapng_from_memory(b);
  EXPECT_EQ(read_all(*src, 32).frames, want);
  // Cut in the middle of a block: the frames before it, then a clean end.
  const fs::path cut = dir / "cut.pcapng";
  write_file(cut, {b.begin(), b.begin() + static_cast<std::ptrdiff_t>(b.size() - 10)});
  const Read c = read_file(cut, false);
  EXPECT_EQ(c.frames.size(), want.size() - 1);
  EXPECT_EQ(c.last_rc, 0);
}

// A generated call capture and every classic pcap among the shared real captures: the same
// frames as libpcap's (pcapng: as far as libpcap reads them).
TEST(CaptureFile, CallCapturesGiveLibpcapsFrames) {
  TempDir dir;
  pcapgen::CallsOptions o;
  o.calls = 40;
  o.seconds = 3;
  std::vector<pcapgen::Call> calls;
  pcapgen::CallsSummary sum;
  ASSERT_EQ(pcapgen::plan_calls(o, calls, sum), "");
  const fs::path gen = dir / "calls.pcap";
  ASSERT_EQ(pcapgen::write_calls_pcap(gen.string(), o, calls, sum), "");
  std::vector<fs::path> files{gen};
  const fs::path shared = fs::path(CALLREC_SHARED_TESTDATA_DIR) / "captures";
  if (fs::is_directory(shared))
    for (const auto& e : fs::directory_iterator(shared)) files.push_back(e.path());
  else
    std::cout << "[ NOTE ] " << shared << " absent: the generated capture only\n";
  for (const fs::path& p : files) {
    const Read ref = read_file(p, true);
    Read got = read_file(p, false);
    if (!ref.error.empty()) {  // libpcap stopped (a pcapng of several link types): up to there
      ASSERT_GE(got.frames.size(), ref.frames.size()) << p;
      got.frames.resize(ref.frames.size());
    } else {
      EXPECT_TRUE(got.error.empty()) << p << ": " << got.error;
    }
    ASSERT_FALSE(ref.frames.empty()) << p;
    ASSERT_EQ(got.frames.size(), ref.frames.size()) << p;
    for (std::size_t i = 0; i < got.frames.size(); ++i) ASSERT_EQ(got.frames[i], ref.frames[i]) << p << " frame " << i;
  }
}
