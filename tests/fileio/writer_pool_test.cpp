// WriterPool end to end with real rings, real writer threads and files in a temp directory:
// packets pushed by producer threads come back byte for byte from the record files; pause,
// ENOSPC, unknown streams, close_stream_now and stop() with open streams.
#include "fileio/writer_pool.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "fileio/record_reader.hpp"
#include "fileio/rtp.hpp"

namespace callrec::fileio {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Bytes = std::vector<std::byte>;

constexpr std::size_t kRtpLen = 172;  // 12-byte header + 160 bytes PCMA (20 ms)
constexpr std::uint32_t kIncrement = 160;
constexpr auto kDeadline = 30s;  // generous: the build machine is shared

/// Packet seq of stream s: RTP v2, PT 8 (PCMA), ts = seq * 160, a payload unique to (s, seq).
Bytes make_packet(StreamId s, std::uint16_t seq) {
  Bytes p(kRtpLen);
  write_rtp_header(p.data(), 8, seq == 0, seq, std::uint32_t{seq} * kIncrement, 0x10000u + s);
  for (std::size_t k = 12; k < kRtpLen; ++k) p[k] = static_cast<std::byte>((s * 31u + seq * 7u + k) & 0xFF);
  return p;
}

std::uint64_t rx_ns(std::uint16_t seq) { return 1'000'000'000ull + std::uint64_t{seq} * 20'000'000ull; }

std::uint32_t le32(const Bytes& b, std::size_t off) {
  return std::to_integer<std::uint32_t>(b[off]) | (std::to_integer<std::uint32_t>(b[off + 1]) << 8) |
         (std::to_integer<std::uint32_t>(b[off + 2]) << 16) | (std::to_integer<std::uint32_t>(b[off + 3]) << 24);
}

Bytes read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<char> c{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  Bytes b(c.size());
  std::memcpy(b.data(), c.data(), c.size());
  return b;
}

/// Checks a record file byte for byte: the 76-byte header (PCMA, 172, 160, dataSize) and the
/// expected packets back to back; and that the project's reader calls it healthy.
void expect_record_file(const fs::path& path, const std::vector<Bytes>& packets) {
  SCOPED_TRACE(path.string());
  const Bytes b = read_all(path);
  ASSERT_GE(b.size(), kHeaderSize);
  std::string codec(reinterpret_cast<const char*>(b.data()), kCodecFieldSize);
  codec.resize(std::strlen(codec.c_str()));
  EXPECT_EQ(codec, "PCMA");
  EXPECT_EQ(le32(b, 64), kRtpLen);
  EXPECT_EQ(le32(b, 68), kIncrement);
  EXPECT_EQ(le32(b, 72), packets.size() * kRtpLen) << "dataSize";
  ASSERT_EQ(b.size(), kHeaderSize + packets.size() * kRtpLen) << "file length";
  for (std::size_t i = 0; i < packets.size(); ++i) {
    ASSERT_TRUE(std::equal(packets[i].begin(), packets[i].end(),
                           b.begin() + static_cast<std::ptrdiff_t>(kHeaderSize + i * kRtpLen)))
        << "packet " << i << " differs";
  }
  RecordInfo info;
  ASSERT_TRUE(inspect_record(path, info));
  EXPECT_EQ(info.integrity, Integrity::kOk);
  EXPECT_EQ(info.whole_packets, packets.size());
}

/// Pushes one record, publishing and retrying while the ring is full (the writer drains it).
void push(PacketRing& ring, StreamId s, RecordKind kind, std::uint64_t ns, const Bytes& data) {
  while (!ring.push(s, kind, ns, data)) {
    ring.publish();
    std::this_thread::yield();
  }
}

class WriterPoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "callrec_wpool_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << "mkdtemp: " << std::strerror(errno);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }

  /// Options for stream s: its own directory, and free space that is always plenty (the test
  /// does not depend on the free space of /tmp).
  WriterOptions wopts(StreamId s) {
    WriterOptions o;
    o.directory = dir_ / ("s" + std::to_string(s));
    fs::create_directories(o.directory);
    o.tag = "s" + std::to_string(s);
    o.reserve_bytes = 0;
    o.free_space = [](const fs::path&, std::uint64_t& free_bytes) {
      free_bytes = 1ull << 40;
      return Status::ok();
    };
    return o;
  }

  /// Waits on the pool's eventfd and collects events until done(events) or the deadline.
  bool collect(WriterPool& pool, std::vector<WriterEvent>& events,
               const std::function<bool(const std::vector<WriterEvent>&)>& done) {
    const auto deadline = std::chrono::steady_clock::now() + kDeadline;
    while (!done(events)) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      pollfd pfd{pool.event_fd(), POLLIN, 0};
      const int rc = ::poll(&pfd, 1, 50);
      EXPECT_GE(rc, 0) << std::strerror(errno);
      pool.poll_events(events);  // also when poll timed out: the fd is only a wake-up hint
    }
    return true;
  }

  static bool wait_stats(WriterPool& pool, const std::function<bool(const WriterPoolStats&)>& done) {
    const auto deadline = std::chrono::steady_clock::now() + kDeadline;
    while (!done(pool.stats())) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(5ms);
    }
    return true;
  }

  static std::size_t count(const std::vector<WriterEvent>& ev, WriterEventKind kind, StreamId s = 0) {
    return static_cast<std::size_t>(std::count_if(
        ev.begin(), ev.end(), [&](const WriterEvent& e) { return e.kind == kind && (s == 0 || e.stream == s); }));
  }
  static const WriterEvent* find(const std::vector<WriterEvent>& ev, WriterEventKind kind, StreamId s) {
    for (const auto& e : ev) {
      if (e.kind == kind && e.stream == s) return &e;
    }
    return nullptr;
  }
  /// The first event of that kind for stream s; a test failure (and an empty event) if none.
  static const WriterEvent& get(const std::vector<WriterEvent>& ev, WriterEventKind kind, StreamId s) {
    if (const WriterEvent* e = find(ev, kind, s)) return *e;
    ADD_FAILURE() << "no event of kind " << static_cast<int>(kind) << " for stream " << s;
    static const WriterEvent kNone{};
    return kNone;
  }
  static std::function<bool(const std::vector<WriterEvent>&)> closed(std::size_t n) {
    return [n](const std::vector<WriterEvent>& ev) { return count(ev, WriterEventKind::kStreamClosed) >= n; };
  }

  fs::path dir_;
};

TEST_F(WriterPoolTest, FiftyStreamsTwoWritersTwoProducersRoundTrip) {
  constexpr unsigned kStreams = 50;
  constexpr std::uint16_t kPackets = 200;
  WriterPoolOptions po;
  po.writers = 2;
  po.producers = 2;
  po.ring_bytes = 64 << 10;  // small: wrap-around and ring-full back-pressure are exercised
  WriterPool pool(po);
  ASSERT_EQ(pool.writers(), 2u);
  pool.start();
  for (StreamId s = 1; s <= kStreams; ++s) pool.open_stream(s, wopts(s));

  // Producer p pushes the streams s with s % 2 == p, interleaved, publishing in bursts of 32.
  std::vector<std::thread> producers;
  for (unsigned p = 0; p < 2; ++p) {
    producers.emplace_back([&pool, p] {
      RingMatrix& rings = pool.rings();
      unsigned since_publish = 0;
      for (std::uint16_t seq = 0; seq < kPackets; ++seq) {
        for (StreamId s = 1; s <= kStreams; ++s) {
          if (s % 2 != p) continue;
          PacketRing& ring = rings.ring(p, rings.writer_for(s));
          push(ring, s, RecordKind::kPacket, rx_ns(seq), make_packet(s, seq));
          if (++since_publish == 32) {
            for (unsigned w = 0; w < rings.writers(); ++w) rings.ring(p, w).publish();
            since_publish = 0;
          }
        }
      }
      for (StreamId s = 1; s <= kStreams; ++s) {
        if (s % 2 == p) push(rings.ring(p, rings.writer_for(s)), s, RecordKind::kEndOfStream, 0, {});
      }
      for (unsigned w = 0; w < rings.writers(); ++w) rings.ring(p, w).publish();
    });
  }
  for (auto& t : producers) t.join();

  std::vector<WriterEvent> ev;
  ASSERT_TRUE(collect(pool, ev, closed(kStreams))) << count(ev, WriterEventKind::kStreamClosed) << " closed";
  EXPECT_EQ(count(ev, WriterEventKind::kError), 0u);
  for (StreamId s = 1; s <= kStreams; ++s) {
    SCOPED_TRACE("stream " + std::to_string(s));
    EXPECT_EQ(count(ev, WriterEventKind::kSegmentOpened, s), 1u);
    ASSERT_EQ(count(ev, WriterEventKind::kSegmentClosed, s), 1u);
    ASSERT_EQ(count(ev, WriterEventKind::kStreamClosed, s), 1u);
    // Per stream, events come in order: opened, closed, stream closed.
    std::vector<WriterEventKind> order;
    for (const auto& e : ev) {
      if (e.stream == s && e.kind != WriterEventKind::kStats) order.push_back(e.kind);
    }
    EXPECT_EQ(order, (std::vector<WriterEventKind>{WriterEventKind::kSegmentOpened, WriterEventKind::kSegmentClosed,
                                                   WriterEventKind::kStreamClosed}));
    const WriterEvent& sc = get(ev, WriterEventKind::kStreamClosed, s);
    EXPECT_EQ(sc.counters.received, kPackets);
    EXPECT_EQ(sc.counters.written, kPackets);
    EXPECT_EQ(sc.counters.lost, 0u);
    EXPECT_EQ(sc.counters.filled, 0u);
    EXPECT_EQ(sc.last_packet_ns, rx_ns(kPackets - 1));
    EXPECT_GE(sc.bytes_written, std::uint64_t{kPackets} * kRtpLen);
    const WriterEvent& seg = get(ev, WriterEventKind::kSegmentClosed, s);
    EXPECT_EQ(seg.seg.packets, kPackets);
    EXPECT_EQ(seg.seg.rtp_len, kRtpLen);
    EXPECT_EQ(seg.seg.increment, kIncrement);
    EXPECT_EQ(seg.seg.path.parent_path(), dir_ / ("s" + std::to_string(s)));
    std::vector<Bytes> expect;
    for (std::uint16_t q = 0; q < kPackets; ++q) expect.push_back(make_packet(s, q));
    expect_record_file(seg.seg.path, expect);
  }
  ASSERT_TRUE(wait_stats(
      pool,
      [](const WriterPoolStats& st) { return st.packets == kStreams * (kPackets + 1u) && st.active_streams == 0; }))
      << "packets " << pool.stats().packets;
  const WriterPoolStats st = pool.stats();
  EXPECT_EQ(st.unknown_stream, 0u);
  EXPECT_EQ(st.write_errors, 0u);
  EXPECT_GE(st.bytes_written, std::uint64_t{kStreams} * kPackets * kRtpLen);
  pool.stop();
  pool.stop();  // idempotent
}

TEST_F(WriterPoolTest, PauseDropsPacketsUntilResume) {
  WriterPoolOptions po;  // 1 writer, 1 producer
  WriterPool pool(po);
  pool.start();
  constexpr StreamId kS = 7;
  pool.open_stream(kS, wopts(kS));
  PacketRing& ring = pool.rings().ring(0, 0);
  std::vector<Bytes> expect;
  auto send = [&](std::uint16_t from, std::uint16_t to, bool kept) {
    for (std::uint16_t q = from; q < to; ++q) {
      push(ring, kS, RecordKind::kPacket, rx_ns(q), make_packet(kS, q));
      if (kept) expect.push_back(make_packet(kS, q));
    }
    ring.publish();
  };
  // A command applies to every packet pushed after it returned (the writer checks its command
  // queue before each record); packets pushed before it may still be in the ring, so the test
  // waits until the writer has consumed them (no fixed sleeps).
  auto consumed = [&pool](std::uint64_t n) {
    return wait_stats(pool, [n](const WriterPoolStats& st) { return st.packets == n; });
  };
  send(0, 10, true);
  ASSERT_TRUE(consumed(10));
  pool.pause_stream(kS);
  send(10, 20, false);
  ASSERT_TRUE(consumed(20));
  pool.resume_stream(kS);
  send(20, 30, true);
  push(ring, kS, RecordKind::kEndOfStream, 0, {});
  ring.publish();

  std::vector<WriterEvent> ev;
  ASSERT_TRUE(collect(pool, ev, closed(1)));
  EXPECT_EQ(count(ev, WriterEventKind::kError), 0u);
  ASSERT_EQ(count(ev, WriterEventKind::kSegmentClosed, kS), 1u);
  const WriterEvent& seg = get(ev, WriterEventKind::kSegmentClosed, kS);
  EXPECT_EQ(seg.seg.packets, 20u);
  const WriterEvent& sc = get(ev, WriterEventKind::kStreamClosed, kS);
  EXPECT_EQ(sc.counters.filled, 0u) << "the paused time is not filled with silence";
  expect_record_file(seg.seg.path, expect);
}

TEST_F(WriterPoolTest, NoSpaceGivesOneErrorAndAValidFile) {
  WriterPoolOptions po;
  WriterPool pool(po);
  pool.start();
  constexpr StreamId kS = 3;
  constexpr std::uint16_t kPerFile = 10;
  WriterOptions o = wopts(kS);
  o.max_file_bytes = kHeaderSize + kPerFile * kRtpLen;  // rotation after 10 packets
  o.expected_file_bytes = 4096;
  // Plenty of space until the first file exists, then none: the rotation to the second file
  // is refused with ENOSPC.
  o.free_space = [](const fs::path& d, std::uint64_t& free_bytes) {
    std::error_code ec;
    free_bytes = fs::directory_iterator(d, ec) == fs::directory_iterator() ? (1ull << 40) : 0;
    return Status::ok();
  };
  pool.open_stream(kS, std::move(o));
  PacketRing& ring = pool.rings().ring(0, 0);
  std::vector<Bytes> expect;
  for (std::uint16_t q = 0; q < 3 * kPerFile; ++q) {
    push(ring, kS, RecordKind::kPacket, rx_ns(q), make_packet(kS, q));
    if (q < kPerFile) expect.push_back(make_packet(kS, q));
  }
  push(ring, kS, RecordKind::kEndOfStream, 0, {});
  ring.publish();

  std::vector<WriterEvent> ev;
  ASSERT_TRUE(collect(pool, ev, closed(1)));
  ASSERT_EQ(count(ev, WriterEventKind::kError, kS), 1u) << "exactly one kError per stream";
  const WriterEvent& err = get(ev, WriterEventKind::kError, kS);
  EXPECT_EQ(err.status.code(), ENOSPC) << err.status.message();
  EXPECT_FALSE(err.status.message().empty());
  ASSERT_EQ(count(ev, WriterEventKind::kSegmentClosed, kS), 1u);
  const WriterEvent& seg = get(ev, WriterEventKind::kSegmentClosed, kS);
  EXPECT_EQ(seg.seg.packets, kPerFile);
  expect_record_file(seg.seg.path, expect);
  EXPECT_EQ(std::distance(fs::directory_iterator(seg.seg.path.parent_path()), fs::directory_iterator()), 1)
      << "no second file was created";
  ASSERT_TRUE(wait_stats(pool, [](const WriterPoolStats& st) { return st.write_errors >= 1; }));
}

TEST_F(WriterPoolTest, UnknownStreamIsCountedAndCloseNowFinalizes) {
  WriterPoolOptions po;
  po.writers = 2;
  WriterPool pool(po);
  pool.start();
  RingMatrix& rings = pool.rings();
  constexpr StreamId kUnknown = 999;
  PacketRing& unknown_ring = rings.ring(0, rings.writer_for(kUnknown));
  for (std::uint16_t q = 0; q < 5; ++q)
    push(unknown_ring, kUnknown, RecordKind::kPacket, rx_ns(q), make_packet(kUnknown, q));
  push(unknown_ring, kUnknown, RecordKind::kEndOfStream, 0, {});  // an end mark is not a packet
  unknown_ring.publish();
  ASSERT_TRUE(wait_stats(pool, [](const WriterPoolStats& st) { return st.unknown_stream == 5 && st.packets == 6; }))
      << "unknown " << pool.stats().unknown_stream;

  // close_stream_now: no end mark needed; later packets for the id are unknown.
  constexpr StreamId kS = 4;
  pool.open_stream(kS, wopts(kS));
  PacketRing& ring = rings.ring(0, rings.writer_for(kS));
  std::vector<Bytes> expect;
  for (std::uint16_t q = 0; q < 5; ++q) {
    push(ring, kS, RecordKind::kPacket, rx_ns(q), make_packet(kS, q));
    expect.push_back(make_packet(kS, q));
  }
  ring.publish();
  ASSERT_TRUE(wait_stats(pool, [](const WriterPoolStats& st) { return st.packets == 11; }));
  pool.close_stream_now(kS);
  std::vector<WriterEvent> ev;
  ASSERT_TRUE(collect(pool, ev, closed(1)));
  const WriterEvent* seg = find(ev, WriterEventKind::kSegmentClosed, kS);
  ASSERT_NE(seg, nullptr);
  expect_record_file(seg->seg.path, expect);
  push(ring, kS, RecordKind::kPacket, rx_ns(5), make_packet(kS, 5));
  ring.publish();
  ASSERT_TRUE(wait_stats(pool, [](const WriterPoolStats& st) { return st.unknown_stream == 6; }));
}

// A stream that several producers feed (the lanes of a DPDK mirror: its media may move to an
// address pair another lane carries) ends at the last of their end marks: packets a second
// producer pushes after the first producer's mark are still recorded.
TEST_F(WriterPoolTest, AStreamOfSeveralProducersEndsAtTheirLastEndMark) {
  WriterPoolOptions po;
  po.writers = 1;
  po.producers = 3;
  WriterPool pool(po);
  pool.start();
  RingMatrix& rings = pool.rings();
  constexpr StreamId kS = 21;
  pool.open_stream(kS, wopts(kS), {}, 3);
  std::vector<Bytes> expect;
  std::uint16_t q = 0;
  for (unsigned p = 0; p < 3; ++p) {
    PacketRing& ring = rings.ring(p, rings.writer_for(kS));
    for (int k = 0; k < 4; ++k, ++q) {
      push(ring, kS, RecordKind::kPacket, rx_ns(q), make_packet(kS, q));
      expect.push_back(make_packet(kS, q));
    }
    push(ring, kS, RecordKind::kEndOfStream, 0, {});
    ring.publish();
    // Not closed before the last producer's mark (each producer's records are in before the next
    // producer starts: the writer has taken them when its packet count says so).
    ASSERT_TRUE(wait_stats(pool, [&](const WriterPoolStats& st) { return st.packets == (p + 1) * 5; }));
    std::vector<WriterEvent> ev;
    pool.poll_events(ev);
    if (p < 2) {
      EXPECT_EQ(count(ev, WriterEventKind::kStreamClosed, kS), 0u) << "closed after producer " << p;
    }
    if (p == 2) {
      ASSERT_TRUE(collect(pool, ev, closed(1)));
      const WriterEvent* seg = find(ev, WriterEventKind::kSegmentClosed, kS);
      ASSERT_NE(seg, nullptr);
      expect_record_file(seg->seg.path, expect);
    }
  }
  EXPECT_EQ(pool.stats().unknown_stream, 0u);
}

TEST_F(WriterPoolTest, StatsEventsForActiveStreams) {
  WriterPoolOptions po;
  po.stats_interval = 50ms;
  WriterPool pool(po);
  pool.start();
  constexpr StreamId kActive = 1;
  constexpr StreamId kIdle = 2;
  pool.open_stream(kActive, wopts(kActive));
  pool.open_stream(kIdle, wopts(kIdle));
  PacketRing& ring = pool.rings().ring(0, 0);
  for (std::uint16_t q = 0; q < 25; ++q) push(ring, kActive, RecordKind::kPacket, rx_ns(q), make_packet(kActive, q));
  ring.publish();
  std::vector<WriterEvent> ev;
  ASSERT_TRUE(collect(pool, ev, [](const std::vector<WriterEvent>& e) {
    for (const auto& x : e) {
      if (x.kind == WriterEventKind::kStats && x.counters.received == 25) return true;
    }
    return false;
  }));
  const WriterEvent* st = nullptr;
  for (const auto& x : ev) {
    if (x.kind == WriterEventKind::kStats && x.counters.received == 25) st = &x;
  }
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(st->stream, kActive);
  EXPECT_EQ(st->last_packet_ns, rx_ns(24));
  EXPECT_EQ(count(ev, WriterEventKind::kStats, kIdle), 0u) << "no traffic, no kStats";
  // The periodic flush has rewritten dataSize (default flush interval 1 s) without a close:
  // what a crash would leave behind is a valid file.
  const WriterEvent* opened = find(ev, WriterEventKind::kSegmentOpened, kActive);
  ASSERT_NE(opened, nullptr);
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  while (read_all(opened->seg.path).size() < kHeaderSize + 25 * kRtpLen ||
         le32(read_all(opened->seg.path), 72) != 25 * kRtpLen) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "dataSize never flushed";
    std::this_thread::sleep_for(20ms);
  }
  pool.stop();
}

TEST_F(WriterPoolTest, StopFinalizesOpenStreams) {
  constexpr unsigned kStreams = 4;
  constexpr std::uint16_t kPackets = 40;
  std::vector<WriterEvent> ev;
  {
    WriterPoolOptions po;
    po.writers = 2;
    WriterPool pool(po);
    pool.start();
    for (StreamId s = 1; s <= kStreams; ++s) pool.open_stream(s, wopts(s));
    RingMatrix& rings = pool.rings();
    for (std::uint16_t q = 0; q < kPackets; ++q) {
      for (StreamId s = 1; s <= kStreams; ++s) {
        push(rings.ring(0, rings.writer_for(s)), s, RecordKind::kPacket, rx_ns(q), make_packet(s, q));
      }
    }
    for (unsigned w = 0; w < rings.writers(); ++w) rings.ring(0, w).publish();
    // No end marks, no waiting: stop() drains the rings, then closes every stream.
    pool.stop();
    EXPECT_EQ(pool.stats().active_streams, 0u);
    EXPECT_EQ(pool.stats().packets, kStreams * kPackets);
    pool.poll_events(ev);
  }
  EXPECT_EQ(count(ev, WriterEventKind::kStreamClosed), kStreams);
  for (StreamId s = 1; s <= kStreams; ++s) {
    const WriterEvent* seg = find(ev, WriterEventKind::kSegmentClosed, s);
    ASSERT_NE(seg, nullptr) << "stream " << s;
    std::vector<Bytes> expect;
    for (std::uint16_t q = 0; q < kPackets; ++q) expect.push_back(make_packet(s, q));
    expect_record_file(seg->seg.path, expect);
  }
}

TEST_F(WriterPoolTest, PinningFailureIsNotFatal) {
  WriterPoolOptions po;
  po.cpus = {100000};  // no such cpu: logged, the writer runs unpinned
  WriterPool pool(po);
  pool.start();
  pool.open_stream(1, wopts(1));
  PacketRing& ring = pool.rings().ring(0, 0);
  push(ring, 1, RecordKind::kPacket, rx_ns(0), make_packet(1, 0));
  push(ring, 1, RecordKind::kEndOfStream, 0, {});
  ring.publish();
  std::vector<WriterEvent> ev;
  ASSERT_TRUE(collect(pool, ev, closed(1)));
}

}  // namespace
}  // namespace callrec::fileio
