// fileio micro-benchmarks: StreamAssembler, RecordWriter, StreamRecorder (per-packet cost).
//
// Rerun:
//   cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release && cmake --build build-bench --target fileio_bench
//   build-bench/bench/fileio_bench                                   # all, console table
//   build-bench/bench/fileio_bench --benchmark_filter=Assembler      # a subset
//   build-bench/bench/fileio_bench --benchmark_format=json --benchmark_out=fileio_bench.json
// Writer benchmarks write to a temporary directory under /dev/shm (tmpfs: measures the writer's
// CPU cost and the write(2) path, not a disk); finished segments are unlinked as they close so a
// long run does not fill memory. Figures are ns per packet (Time column; items_per_second = pps).
// Packets are 172 bytes: 12-byte RTP header + 160 bytes of PCMA (20 ms).
#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <thread>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "bench/bench_util.hpp"
#include "fileio/record_writer.hpp"
#include "fileio/rtp.hpp"
#include "fileio/stream_assembler.hpp"
#include "fileio/stream_recorder.hpp"
#include "fileio/writer_pool.hpp"

namespace {

using callrec::fileio::AssemblerOptions;
using callrec::fileio::AssemblerSink;
using callrec::fileio::RecordWriter;
using callrec::fileio::SegmentFormat;
using callrec::fileio::SegmentInfo;
using callrec::fileio::StreamAssembler;
using callrec::fileio::StreamRecorder;
using callrec::fileio::WriterOptions;

constexpr std::size_t kPacketLen = 172;

class CountingSink final : public AssemblerSink {
 public:
  void on_segment(const SegmentFormat&) override { ++segments; }
  void on_packet(std::span<const std::byte> pkt) override {
    ++packets;
    bytes += pkt.size();
  }
  std::uint64_t segments = 0;
  std::uint64_t packets = 0;
  std::uint64_t bytes = 0;
};

/// One reusable packet; seq and timestamp are rewritten in place before each push (a packet in
/// cache, as it is when the dataplane hands it over).
struct PacketTemplate {
  explicit PacketTemplate(std::uint32_t ssrc) : bytes(kPacketLen) {
    callrec::fileio::write_rtp_header(bytes.data(), 8, false, 0, 0, ssrc);
    for (std::size_t i = 12; i < bytes.size(); ++i) bytes[i] = static_cast<std::byte>(i & 0x7F);
  }
  std::span<const std::byte> with(std::uint16_t seq, std::uint32_t ts) {
    callrec::fileio::store_be16(bytes.data() + 2, seq);
    callrec::fileio::store_be32(bytes.data() + 4, ts);
    return bytes;
  }
  std::vector<std::byte> bytes;
};

/// A temporary directory in /dev/shm (falls back to the system temp dir), removed at the end.
class ShmDir {
 public:
  ShmDir() {
    const std::filesystem::path base =
        std::filesystem::exists("/dev/shm") ? std::filesystem::path("/dev/shm") : std::filesystem::temp_directory_path();
    std::string tmpl = (base / "callrec_bench_XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    path_ = tmpl;
  }
  ~ShmDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ShmDir(const ShmDir&) = delete;
  ShmDir& operator=(const ShmDir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

WriterOptions writer_options(const std::filesystem::path& dir, std::size_t buffer_bytes) {
  WriterOptions o;
  o.directory = dir;
  o.reserve_bytes = 0;
  o.expected_file_bytes = 0;
  o.max_file_bytes = 16ull << 20;  // rotate every ~97k packets: rotation cost is included
  o.buffer_bytes = buffer_bytes;
  return o;
}

void unlink_closed_segments(RecordWriter& w) {
  w.on_segment_closed = [](const SegmentInfo& s) { ::unlink(s.path.c_str()); };
}

// ---- StreamAssembler ------------------------------------------------------------------------

/// Arrival time of packet n of a stream sent in real time (20 ms apart), CLOCK_MONOTONIC-like.
constexpr std::uint64_t arrival_ns(std::uint32_t n) { return 1'000'000'000ull + std::uint64_t{n} * 20'000'000ull; }

/// In-order packets, swept over the number of interleaved streams (cache footprint).
void BM_AssemblerInOrder(benchmark::State& state) {
  const auto streams = static_cast<std::size_t>(state.range(0));
  std::vector<StreamAssembler> asms(streams);
  std::vector<PacketTemplate> pkts;
  pkts.reserve(streams);
  for (std::size_t s = 0; s < streams; ++s) pkts.emplace_back(static_cast<std::uint32_t>(s + 1));
  CountingSink sink;
  std::uint32_t n = 0;
  std::size_t s = 0;
  for (auto _ : state) {
    asms[s].push(pkts[s].with(static_cast<std::uint16_t>(n), n * 160u), sink, arrival_ns(n));
    if (++s == streams) {
      s = 0;
      ++n;
    }
  }
  benchmark::DoNotOptimize(sink.packets);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kPacketLen));
}
BENCHMARK(BM_AssemblerInOrder)->Arg(1)->Arg(1000)->Arg(10000);

/// 1% of packets swapped with their successor (reordered by one), one stream; window swept.
void BM_AssemblerReorder1pct(benchmark::State& state) {
  AssemblerOptions o;
  o.reorder_window = static_cast<std::uint16_t>(state.range(0));
  StreamAssembler a(o);
  PacketTemplate pkt(1);
  CountingSink sink;
  // Offsets within a block of 100: positions 50 and 51 are swapped.
  std::uint32_t order[100];
  for (std::uint32_t i = 0; i < 100; ++i) order[i] = i;
  order[50] = 51;
  order[51] = 50;
  std::uint32_t base = 0;
  std::uint32_t i = 0;
  for (auto _ : state) {
    const std::uint32_t n = base + order[i];
    a.push(pkt.with(static_cast<std::uint16_t>(n), n * 160u), sink, arrival_ns(n));
    if (++i == 100) {
      i = 0;
      base += 100;
    }
  }
  if (state.iterations() >= 100 && (a.counters().reordered == 0 || a.counters().lost != 0)) {
    state.SkipWithError("unexpected counters");
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kPacketLen));
}
BENCHMARK(BM_AssemblerReorder1pct)->Arg(8)->Arg(64);

/// 1% loss (one packet in 100 never arrives): each gap waits for the window, then silence.
void BM_AssemblerLoss1pct(benchmark::State& state) {
  StreamAssembler a;
  PacketTemplate pkt(1);
  CountingSink sink;
  std::uint32_t n = 0;
  for (auto _ : state) {
    if (n % 100 == 37) ++n;
    a.push(pkt.with(static_cast<std::uint16_t>(n), n * 160u), sink, arrival_ns(n));
    ++n;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kPacketLen));
}
BENCHMARK(BM_AssemblerLoss1pct);

// ---- RecordWriter ---------------------------------------------------------------------------

/// append() of 172-byte packets into a tmpfs file, write buffer size swept.
void BM_WriterAppend(benchmark::State& state) {
  ShmDir dir;
  RecordWriter w(writer_options(dir.path(), static_cast<std::size_t>(state.range(0))));
  unlink_closed_segments(w);
  if (!w.set_format("PCMA", kPacketLen, 160)) state.SkipWithError("set_format");
  PacketTemplate pkt(1);
  std::uint32_t n = 0;
  for (auto _ : state) {
    if (!w.append(pkt.with(static_cast<std::uint16_t>(n), n * 160u))) {
      state.SkipWithError("append failed");
      break;
    }
    ++n;
  }
  if (!w.close()) state.SkipWithError("close failed");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kPacketLen));
}
BENCHMARK(BM_WriterAppend)->Arg(8192)->Arg(65536);

// ---- StreamRecorder (assembler + writer) ----------------------------------------------------

/// End to end: on_rtp() of in-order packets, streams interleaved (each its own files).
void BM_StreamRecorder(benchmark::State& state) {
  const auto streams = static_cast<std::size_t>(state.range(0));
  ShmDir dir;
  std::vector<std::unique_ptr<StreamRecorder>> recs;
  std::vector<PacketTemplate> pkts;
  pkts.reserve(streams);
  for (std::size_t s = 0; s < streams; ++s) {
    recs.push_back(std::make_unique<StreamRecorder>(writer_options(dir.path(), 8192)));
    unlink_closed_segments(recs.back()->writer());
    pkts.emplace_back(static_cast<std::uint32_t>(s + 1));
  }
  std::uint32_t n = 0;
  std::size_t s = 0;
  for (auto _ : state) {
    if (!recs[s]->on_rtp(pkts[s].with(static_cast<std::uint16_t>(n), n * 160u), arrival_ns(n))) {
      state.SkipWithError("on_rtp failed");
      break;
    }
    if (++s == streams) {
      s = 0;
      ++n;
    }
  }
  for (auto& r : recs) {
    if (!r->close()) state.SkipWithError("close failed");
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kPacketLen));
}
BENCHMARK(BM_StreamRecorder)->Arg(1)->Arg(100)->Arg(1000);

// ---- WriterPool (ring -> writer thread -> files) --------------------------------------------

/// On-CPU nanoseconds of this process's writer threads ("callrec-wr*"), from schedstat.
double writer_cpu_ns() {
  double total = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    char comm[32] = {};
    if (std::FILE* f = std::fopen((e.path() / "comm").c_str(), "r")) {
      if (std::fgets(comm, sizeof comm, f) == nullptr) comm[0] = 0;
      std::fclose(f);
    }
    if (std::string(comm).rfind("callrec-wr", 0) != 0) continue;
    if (std::FILE* f = std::fopen((e.path() / "schedstat").c_str(), "r")) {
      unsigned long long ns = 0;
      if (std::fscanf(f, "%llu", &ns) == 1) total += static_cast<double>(ns);
      std::fclose(f);
    }
  }
  return total;
}

/// The writer thread at saturation, without DPDK: this (benchmark) thread is the producer,
/// pinned to CPU 1, and pushes 172-byte packets of N streams in a shuffled round-robin order
/// (every stream once per round, random phases as in the pcaps of dpdk_pipeline_bench) into a
/// 1 MiB ring; the writer (pinned to CPU 0) assembles and writes them to 1 MiB segments on tmpfs
/// (unlinked once closed; the ShmDir goes at the end). Once the ring is full the producer waits for space, so
/// items_per_second is the writer's sustained rate. Args: streams, write buffer KiB per stream.
/// 4 M packets per run (400 per stream at 10,000: segments never reach 1 MiB, rotation excluded).
void BM_WriterPool(benchmark::State& state) {
  const auto streams = static_cast<std::uint32_t>(state.range(0));
  const auto buffer = static_cast<std::size_t>(state.range(1)) << 10;
  ShmDir dir;
  callrec::fileio::WriterPoolOptions po;
  po.ring_bytes = 1u << 20;
  po.stats_interval = std::chrono::hours(1);
  po.cpus = {0};
  callrec::fileio::WriterPool pool(po);
  for (std::uint32_t s = 0; s < streams; ++s) {
    WriterOptions w = writer_options(dir.path(), buffer);
    w.max_file_bytes = 1u << 20;
    AssemblerOptions ao;
    ao.max_gap_fill = 0;
    pool.open_stream(s + 1, w, ao);
  }
  pool.start();
  callrec::bench::pin_self(1);
  std::vector<std::uint32_t> order(streams);
  for (std::uint32_t s = 0; s < streams; ++s) order[s] = s;
  std::shuffle(order.begin(), order.end(), std::mt19937(42));
  std::vector<std::byte> pkt(kPacketLen);
  for (std::size_t i = 12; i < pkt.size(); ++i) pkt[i] = static_cast<std::byte>(i & 0x7F);
  callrec::fileio::PacketRing& ring = pool.rings().ring(0, 0);
  std::vector<callrec::fileio::WriterEvent> ev;
  std::uint32_t round = 0;
  std::uint32_t i = 0;
  std::uint64_t pushed = 0;
  auto push_one = [&] {
    const std::uint32_t s = order[i];
    callrec::fileio::write_rtp_header(pkt.data(), 8, false, static_cast<std::uint16_t>(round), round * 160u, s + 1);
    while (!ring.push(s + 1, callrec::fileio::RecordKind::kPacket, 0, pkt)) {
      ring.publish();
      __builtin_ia32_pause();
    }
    if ((++pushed & 31) == 0) ring.publish();
    if ((pushed & 0xFFFF) == 0 && pool.poll_events(ev)) {
      for (const auto& e : ev) {
        // Closed segments go (a long run must not fill memory). Not opened ones: a stream
        // beyond the descriptor budget reopens its file by path at each write, and an unlinked
        // file made every such write fail ("writer error" at 10,000 streams).
        if (e.kind == callrec::fileio::WriterEventKind::kSegmentClosed) ::unlink(e.seg.path.c_str());
        if (e.kind == callrec::fileio::WriterEventKind::kError) state.SkipWithError("writer error");
      }
      ev.clear();
    }
    if (++i == streams) {
      i = 0;
      ++round;
    }
  };
  // Untimed warm-up: two rounds, so every stream has its file open before the clock starts.
  for (std::uint32_t k = 0; k < 2 * streams; ++k) push_one();
  ring.publish();
  while (pool.stats().packets < pushed) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const double cpu0 = writer_cpu_ns();
  const std::uint64_t before = pushed;
  for (auto _ : state) push_one();
  ring.publish();
  // The writer's own CPU time per packet: on a shared 2-vCPU machine the wall time mostly says
  // how often the writer was descheduled; this says what a packet costs it.
  while (pool.stats().packets < pushed) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  state.counters["writer_cpu_ns"] = (writer_cpu_ns() - cpu0) / static_cast<double>(pushed - before);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kPacketLen));
  pool.stop();
  if (pool.stats().write_errors != 0) state.SkipWithError("write errors");
}
BENCHMARK(BM_WriterPool)
    ->Args({1000, 8})
    ->Args({10000, 8})
    ->Args({10000, 16})
    ->Args({10000, 24})
    ->UseRealTime()
    ->Iterations(4000000)
    ->Unit(benchmark::kNanosecond);

}  // namespace

BENCHMARK_MAIN();
