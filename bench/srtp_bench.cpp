// SRTP decryption cost on a writer thread (fileio/srtp.hpp, libsrtp2 as Debian 12 ships it,
// NSS backend): ns per packet to copy a 172-byte RTP packet's SRTP form (160 bytes of G.711 +
// 12-byte header + tag) into the writer's scratch buffer and unprotect it, next to the bare copy
// (the baseline the writer pays anyway), swept over the number of interleaved streams (1: the
// context stays in cache; 1000: each packet touches a cold libsrtp context, as a writer with many
// calls does; 5000: the per-packet cost of Debian's NSS-backed libsrtp grows with the number of
// keys open, see fileio/srtp.cpp). Also the cost of creating a receiver (once per stream, at open).
//
// Rerun:
//   cmake -S . -B build-srtp -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo && ninja -C build-srtp srtp_bench
//   build-srtp/bench/srtp_bench                                  # console table
//   build-srtp/bench/srtp_bench --benchmark_format=json --benchmark_out=srtp_bench.json
// Time column = ns per packet; items_per_second = packets/s on one core; the
// streams_per_core_50pps counter = items_per_second / 50 (a G.711 call direction at 20 ms ptime).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "fileio/rtp.hpp"
#include "fileio/srtp.hpp"

namespace {

using callrec::fileio::SdesCrypto;
using callrec::fileio::SrtpReceiver;
using callrec::fileio::SrtpSender;
using callrec::fileio::SrtpSuite;

constexpr std::size_t kRtpLen = 172;  // 12-byte header + 160 bytes of PCMA (20 ms)
constexpr std::size_t kSlot = 192;    // room for the longest tag (16), 64-byte aligned slots

constexpr SrtpSuite kSuites[] = {SrtpSuite::kAesCm128HmacSha1_80, SrtpSuite::kAesCm128HmacSha1_32,
                                 SrtpSuite::kAeadAes128Gcm, SrtpSuite::kAeadAes256Gcm};

SdesCrypto key_for(SrtpSuite suite) {
  SdesCrypto offer;
  offer.suite = suite;
  return callrec::fileio::make_sdes_answer(offer);  // a random key of the suite's length
}

/// `streams` streams, each with its key and `per_stream` consecutive SRTP packets, laid out in
/// the order a writer sees them: packet n of every stream, then packet n+1 ...
struct Traffic {
  Traffic(SrtpSuite suite, std::size_t streams, std::size_t per_stream)
      : n_streams(streams), packets(streams * per_stream), bytes(packets * kSlot), len(packets) {
    for (std::size_t s = 0; s < streams; ++s) {
      keys.push_back(key_for(suite));
      auto tx = SrtpSender::create(keys.back());
      if (!tx) std::abort();
      for (std::size_t n = 0; n < per_stream; ++n) {
        const std::size_t i = n * streams + s;
        auto* p = reinterpret_cast<std::byte*>(bytes.data() + i * kSlot);
        callrec::fileio::write_rtp_header(p, 8, false, static_cast<std::uint16_t>(n),
                                          static_cast<std::uint32_t>(n * 160), static_cast<std::uint32_t>(0x1000 + s));
        for (std::size_t k = 12; k < kRtpLen; ++k) p[k] = static_cast<std::byte>((k * 7 + n) & 0xFF);
        len[i] = tx->protect(bytes.data() + i * kSlot, kRtpLen, kSlot);
        if (len[i] == 0) std::abort();
      }
    }
  }
  /// Fresh receivers (a replay window that has seen none of the packets).
  void reset_receivers() {
    rx.clear();
    for (const SdesCrypto& k : keys) {
      rx.push_back(SrtpReceiver::create(k));
      if (!rx.back()) std::abort();
    }
  }
  std::size_t n_streams;
  std::size_t packets;
  std::vector<SdesCrypto> keys;
  std::vector<std::uint8_t> bytes;
  std::vector<std::size_t> len;
  std::vector<std::unique_ptr<SrtpReceiver>> rx;
};

/// Packets per stream in one pass (all streams' packets together: 3-16 MB, colder than the caches).
std::size_t per_stream_for(std::size_t streams) {
  return streams == 1 ? 16384 : std::max<std::size_t>(16, 64000 / streams);
}

void report(benchmark::State& state) {
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kRtpLen));
  state.counters["streams_per_core_50pps"] =
      benchmark::Counter(static_cast<double>(state.iterations()) / 50.0, benchmark::Counter::kIsRate);
}

/// Baseline: the copy into the scratch buffer alone (what the writer does before decrypting).
void BM_CopyOnly(benchmark::State& state) {
  const auto streams = static_cast<std::size_t>(state.range(0));
  Traffic t(SrtpSuite::kAesCm128HmacSha1_80, streams, per_stream_for(streams));
  alignas(64) static std::uint8_t scratch[65536];
  std::size_t i = 0;
  for (auto _ : state) {
    std::memcpy(scratch, t.bytes.data() + i * kSlot, t.len[i]);
    benchmark::ClobberMemory();
    if (++i == t.packets) i = 0;
  }
  report(state);
}
BENCHMARK(BM_CopyOnly)->ArgName("streams")->Arg(1)->Arg(1000)->Arg(5000);

/// Copy + unprotect, per suite (arg 0: index in kSuites) and stream count (arg 1). When every
/// packet has been seen, the receivers are recreated outside the timing (else: replays).
void BM_Unprotect(benchmark::State& state) {
  const SrtpSuite suite = kSuites[state.range(0)];
  const auto streams = static_cast<std::size_t>(state.range(1));
  state.SetLabel(callrec::fileio::srtp_suite_name(suite));
  Traffic t(suite, streams, per_stream_for(streams));
  t.reset_receivers();
  alignas(64) static std::uint8_t scratch[65536];
  std::size_t i = 0;
  std::uint64_t failed = 0;
  for (auto _ : state) {
    std::memcpy(scratch, t.bytes.data() + i * kSlot, t.len[i]);
    std::size_t out = 0;
    if (t.rx[i % streams]->unprotect(scratch, t.len[i], &out) != SrtpReceiver::Result::kOk) ++failed;
    benchmark::DoNotOptimize(out);
    if (++i == t.packets) {
      state.PauseTiming();
      t.reset_receivers();
      i = 0;
      state.ResumeTiming();
    }
  }
  if (failed != 0) state.SkipWithError("a packet failed to decrypt");
  report(state);
}
BENCHMARK(BM_Unprotect)
    ->ArgNames({"suite", "streams"})
    ->ArgsProduct({{0, 1, 2, 3}, {1, 1000, 2500, 5000}});

/// Creating one stream's receiver (srtp_create: key derivation, NSS contexts), at stream open.
void BM_CreateReceiver(benchmark::State& state) {
  const SdesCrypto k = key_for(kSuites[state.range(0)]);
  state.SetLabel(callrec::fileio::srtp_suite_name(k.suite));
  for (auto _ : state) {
    auto rx = SrtpReceiver::create(k);
    benchmark::DoNotOptimize(rx.get());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_CreateReceiver)->ArgName("suite")->DenseRange(0, 3);

}  // namespace

BENCHMARK_MAIN();
