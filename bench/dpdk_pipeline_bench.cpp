// End-to-end benchmark of the DPDK dataplane (issue 4): pcaps of N concurrent G.711 streams are
// replayed from memory by net_pcap (infinite_rx=1), flows pre-installed, RX lcore -> classify ->
// PacketRing -> consumer. Two consumers:
//   count   a counting thread (the dataplane's ceiling: RX + classify + copy into the ring)
//   writer  fileio::WriterPool writing record files on tmpfs (the real end-to-end path)
// plus dpdk-testpmd --forward-mode=rxonly on the same vdev and file (the I/O ceiling).
//
// Plain main (not Google Benchmark): each figure needs its own EAL port, a 5 s window and a
// second process. Prints a table, a machine-readable JSON line per run, and the command that
// reproduces it. Results: bench/RESULTS-dpdk.md.
//
// Replay and the assembler: each stream's packets repeat every pass of the file, so its
// sequence numbers jump back by K-1 at every wrap. With K >= 66 that jump exceeds the
// assembler's 64-packet duplicate history and is a confirmed re-sync (no packet lost, every
// packet written); with fewer packets per stream the writer would drop replays as duplicates
// and write nothing after the first pass. Hence K = 66 at 100,000 streams.
#include <arpa/inet.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.hpp"
#include "dataplane/dpdk_source.hpp"
#include "fileio/packet_ring.hpp"
#include "fileio/writer_pool.hpp"
#include "tools/callrec-pcapgen/pcap_gen.hpp"

namespace {

using callrec::bench::loadavg1;
using callrec::bench::pin_self;
using callrec::bench::read_file;
using callrec::bench::threads_cpu_s;

using callrec::dataplane::DpdkMemory;
using callrec::dataplane::DpdkSource;
using callrec::dataplane::DpdkStats;
using callrec::dataplane::FlowSpec;
using Clock = std::chrono::steady_clock;

struct Args {
  std::vector<unsigned> streams{1000, 10000, 100000};
  double seconds = 5.0;
  std::string dir = "/dev/shm/callrec-dpdk-bench";
  std::string modes = "count,writer";
  std::string tables = "flat";  ///< "flat", "hash" or "flat,hash"
  std::string handoffs = "copy";  ///< "copy", "zerocopy" or "copy,zerocopy"
  bool idle_pause = true;         ///< DpdkSource::Options::idle_pause
  unsigned zc_credit = 65536;     ///< DpdkSource::Options::zero_copy_credit
  unsigned writers = 1;
  /// Per (RX lcore, consumer) PacketRing. Large on purpose: on this shared 2-vCPU machine the
  /// consumer is descheduled for milliseconds at a time; 32 MiB holds ~30 ms at 6 Mpps.
  std::size_t ring_bytes = 32u << 20;
  std::size_t writer_buffer = 8192;  ///< WriterOptions::buffer_bytes per stream
  bool testpmd = true;
  bool keep = false;
  bool timing_all = false;  ///< stage timing in writer runs too
  std::string cmdline;
};

unsigned packets_per_stream(unsigned n) {
  if (n <= 1000) return 500;
  if (n <= 10000) return 100;
  return 66;  // see the file comment: the smallest K the writer replays without duplicates
}

double now_s() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }

std::uint64_t meminfo_kb(const std::string& key) {
  const std::string s = read_file("/proc/meminfo");
  const auto p = s.find(key + ":");
  if (p == std::string::npos) return 0;
  return std::strtoull(s.c_str() + p + key.size() + 1, nullptr, 10);
}

std::uint64_t rss_kb() {
  const std::string s = read_file("/proc/self/status");
  const auto p = s.find("VmRSS:");
  return p == std::string::npos ? 0 : std::strtoull(s.c_str() + p + 6, nullptr, 10);
}


std::uint64_t dir_bytes(const std::string& dir) {
  std::uint64_t b = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir, ec)) {
    if (e.is_regular_file(ec)) b += e.file_size(ec);
  }
  return b;
}

struct Generated {
  std::string pcap;
  std::vector<callrec::pcapgen::Stream> streams;
  callrec::pcapgen::Summary sum;
  std::vector<std::string> addresses;
};

bool generate(const Args& a, unsigned n, Generated& g) {
  callrec::pcapgen::Options o;
  o.streams = n;
  o.packets_per_stream = packets_per_stream(n);
  o.port_lo = 16384;
  o.port_hi = 65534;
  o.port_step = 2;
  g.pcap = a.dir + "/streams-" + std::to_string(n) + ".pcap";
  if (std::string err = callrec::pcapgen::plan(o, g.streams); !err.empty()) {
    std::fprintf(stderr, "plan: %s\n", err.c_str());
    return false;
  }
  const double t0 = now_s();
  if (std::string err = callrec::pcapgen::write_pcap(g.pcap, o, g.streams, g.sum); !err.empty()) {
    std::fprintf(stderr, "pcap: %s\n", err.c_str());
    return false;
  }
  unsigned n_addr = 0;
  for (const auto& s : g.streams) n_addr = std::max(n_addr, s.dst_index + 1);
  for (unsigned i = 0; i < n_addr; ++i) g.addresses.push_back(callrec::pcapgen::ip_to_string(o.dst_ip + i));
  std::printf("  generated %s: %u streams x %u packets = %" PRIu64 " frames, %.0f MB, %zu dst addresses (%.1f s)\n",
              g.pcap.c_str(), n, o.packets_per_stream, g.sum.frames, static_cast<double>(g.sum.file_bytes) / 1e6,
              g.addresses.size(), now_s() - t0);
  return true;
}

struct Result {
  std::string mode;
  std::string table;
  std::string handoff = "copy";
  double zc_share = 0;     ///< of delivered: handed over by reference
  double zc_fallback = 0;  ///< of delivered: copied because the credit was used up
  unsigned streams = 0;
  double window_s = 0;
  double rx_pps = 0;
  double delivered_pps = 0;
  double consumed_pps = 0;  ///< records taken from the rings by the consumer (not yet on disk)
  double written_mbps = 0;  ///< writer: bytes written into record files per second
  double ring_full_pps = 0;
  double nombuf = 0;
  double cyc_rx = 0;
  double cyc_classify = 0;
  double cyc_deliver = 0;
  double cyc_free = 0;
  double rx_lcore_cycles_per_pkt = 0;  ///< wall TSC of the lcore / packets received
  double writer_cpu_ns_per_pkt = 0;
  // writer mode: the highest paced rate with zero ring_full over a window (0: none found)
  double lossless_pps = 0;
  double lossless_written_mbps = 0;
  double lossless_writer_ns = 0;
  std::string search_log;
  double tsc_hz = 0;
  double setup_s = 0;
  double warmup_s = 0;
  double load = 0;
  std::uint64_t file_bytes = 0;
  DpdkMemory mem;
  std::uint64_t writer_rss_kb = 0;
  std::uint64_t write_errors = 0;
  std::uint64_t error_events = 0;
  std::string first_error;
  std::uint64_t segments = 0;
  std::string describe;
};

/// One run: a DpdkSource on a freshly hot-plugged net_pcap vdev, a consumer, a timed window.
bool run(const Args& a, const std::vector<std::string>& base_eal, const Generated& g, const std::string& mode,
         const std::string& table, const std::string& handoff, unsigned run_id, Result& r) {
  r.mode = mode;
  r.table = table;
  r.handoff = handoff;
  r.streams = static_cast<unsigned>(g.streams.size());
  const std::string vdev = "net_pcap_b" + std::to_string(run_id);
  DpdkSource::Options o;
  o.eal_args = base_eal;
  o.eal_args.push_back("--vdev=" + vdev + ",rx_pcap=" + g.pcap + ",infinite_rx=1");
  o.port = vdev;
  o.addresses = g.addresses;
  o.lcores = {1};
  o.mempool_mbufs = static_cast<unsigned>(g.sum.frames + 32768);
  o.idle_pause = a.idle_pause;
  if (handoff == "zerocopy") {
    o.handoff = DpdkSource::Handoff::kZeroCopy;
    o.zero_copy_credit = a.zc_credit;
    o.mempool_mbufs += a.zc_credit;
  }
  o.mempool_cache = 512;
  o.mbuf_data_room = 128 + 256;  // headroom + a 214-byte frame: 6.6M replay mbufs at 100k streams
  o.flow_table = table == "hash" ? DpdkSource::FlowTable::kRteHash : DpdkSource::FlowTable::kFlat;
  o.max_flows_per_lcore = std::max<unsigned>(1024, r.streams);
  o.stage_timing = mode == "count" || a.timing_all;
  double t0 = now_s();
  auto src = std::make_unique<DpdkSource>(o);
  if (!src->status()) {
    std::fprintf(stderr, "  dpdk source: %s\n", src->status().message().c_str());
    return false;
  }
  r.describe = src->describe();
  for (const auto& s : g.streams) {
    FlowSpec f;
    f.stream = s.id;
    f.local_port = s.dst_port;
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(s.src_ip);
    sin.sin_port = htons(s.src_port);
    std::memcpy(&f.expected, &sin, sizeof sin);
    if (auto st = src->add_flow_on(f, s.dst_index); !st) {
      std::fprintf(stderr, "  add_flow %u: %s\n", s.id, st.message().c_str());
      return false;
    }
  }
  r.mem = src->memory();

  std::unique_ptr<callrec::fileio::RingMatrix> own_rings;
  std::unique_ptr<callrec::fileio::WriterPool> pool;
  std::atomic<bool> stop_consumer{false};
  std::atomic<std::uint64_t> consumed{0};
  std::thread consumer;
  std::thread janitor;
  std::atomic<bool> stop_janitor{false};
  std::uint64_t segments = 0;
  const std::string rec_dir = a.dir + "/rec-" + std::to_string(run_id);
  const std::uint64_t rss_before = rss_kb();
  if (mode == "writer") {
    std::filesystem::create_directories(rec_dir);
    callrec::fileio::WriterPoolOptions wo;
    wo.writers = a.writers;
    wo.producers = 1;
    wo.ring_bytes = a.ring_bytes;
    wo.stats_interval = std::chrono::hours(1);  // no per-stream kStats flood during the run
    for (unsigned w = 0; w < a.writers; ++w) wo.cpus.push_back(0);  // off the RX lcore's CPU 1
    pool = std::make_unique<callrec::fileio::WriterPool>(wo);
    for (const auto& s : g.streams) {
      callrec::fileio::WriterOptions w;
      w.directory = rec_dir;
      w.tag = "s" + std::to_string(s.id);
      w.reserve_bytes = 256ull << 20;
      w.expected_file_bytes = 64 << 10;
      w.buffer_bytes = a.writer_buffer;
      w.max_file_bytes = 1u << 20;  // rotate at 1 MiB: the janitor below bounds tmpfs use
      callrec::fileio::AssemblerOptions ao;
      // Saturated runs drop at ring_full; silence-filling those gaps would make the writer write
      // ~10 packets per packet it receives. Off, the writer's work per record is one packet.
      ao.max_gap_fill = 0;
      pool->open_stream(s.id, w, ao);
    }
    pool->start();
    // Janitor: a record file is unlinked as soon as the writer announces it. The writer's system
    // calls are unchanged (open, write, pwrite of dataSize, close); tmpfs only holds the open
    // segments instead of every byte of the run (GBs on a 24 GB machine shared with others).
    janitor = std::thread([&] {
      std::vector<callrec::fileio::WriterEvent> ev;
      while (!stop_janitor.load(std::memory_order_relaxed)) {
        if (!pool->poll_events(ev)) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
          continue;
        }
        for (const auto& e : ev) {
          if (e.kind == callrec::fileio::WriterEventKind::kSegmentOpened) {
            ::unlink(e.seg.path.c_str());
            ++segments;
          } else if (e.kind == callrec::fileio::WriterEventKind::kError) {
            if (r.error_events++ == 0) r.first_error = e.status.message();
          }
        }
        ev.clear();
      }
    });
    if (auto st = src->start(pool->rings()); !st) {
      std::fprintf(stderr, "  start: %s\n", st.message().c_str());
      return false;
    }
  } else {
    own_rings = std::make_unique<callrec::fileio::RingMatrix>(1, 1, a.ring_bytes);
    consumer = std::thread([&] {
      pin_self(0);
      pthread_setname_np(pthread_self(), "callrec-count");
      std::uint64_t n = 0;
      std::uint64_t sink = 0;
      callrec::fileio::PacketRing& ring = own_rings->ring(0, 0);
      while (!stop_consumer.load(std::memory_order_relaxed)) {
        // Reads each packet's RTP header, as a writer would: with zero-copy the bytes are in the
        // mbuf, with copy in the ring; either way the first touch is a miss on this CPU.
        const std::size_t k = ring.consume(
            [&](const callrec::fileio::RingRecordHeader&, std::span<const std::byte> d) {
              std::uint64_t v = 0;
              std::memcpy(&v, d.data(), d.size() < sizeof v ? d.size() : sizeof v);
              sink += v;
            },
            4096);
        n += k;
        if ((n & 0xFFF) < k || k == 0) consumed.store(n, std::memory_order_relaxed);
        if (k == 0) std::this_thread::yield();
      }
      consumed.store(n, std::memory_order_relaxed);
      volatile std::uint64_t keep = sink;  // the reads above are not optimised away
      (void)keep;
    });
    if (auto st = src->start(*own_rings); !st) {
      std::fprintf(stderr, "  start: %s\n", st.message().c_str());
      stop_consumer = true;
      consumer.join();
      return false;
    }
  }
  r.setup_s = now_s() - t0;

  auto consumed_now = [&]() -> std::uint64_t {
    return pool ? pool->stats().packets : consumed.load(std::memory_order_relaxed);
  };
  // Warm-up: one full pass of the file through the consumer (every stream seen, every record
  // file created), at least 1 s, at most 60 s.
  t0 = now_s();
  while (now_s() - t0 < 60 && (consumed_now() < g.sum.frames || now_s() - t0 < 1.0)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  r.warmup_s = now_s() - t0;
  std::this_thread::sleep_for(std::chrono::milliseconds(150));  // counters published

  const DpdkStats s0 = src->dpdk_stats();
  const std::uint64_t c0 = consumed_now();
  const std::uint64_t w0 = pool ? pool->stats().bytes_written : 0;
  const double wcpu0 = threads_cpu_s("callrec-wr");
  const double l0 = loadavg1();
  const double ts0 = now_s();
  std::this_thread::sleep_for(std::chrono::duration<double>(a.seconds));
  const DpdkStats s1 = src->dpdk_stats();
  const std::uint64_t c1 = consumed_now();
  const std::uint64_t w1 = pool ? pool->stats().bytes_written : 0;
  const double wcpu1 = threads_cpu_s("callrec-wr");
  const double ts1 = now_s();
  r.load = (l0 + loadavg1()) / 2;
  r.window_s = ts1 - ts0;
  const double rx = static_cast<double>(s1.source.rx_packets - s0.source.rx_packets);
  r.rx_pps = rx / r.window_s;
  r.delivered_pps = static_cast<double>(s1.source.delivered - s0.source.delivered) / r.window_s;
  r.ring_full_pps = static_cast<double>(s1.source.ring_full - s0.source.ring_full) / r.window_s;
  r.nombuf = static_cast<double>(s1.source.nic_nombuf - s0.source.nic_nombuf);
  if (s1.source.delivered > s0.source.delivered) {
    const double dl = static_cast<double>(s1.source.delivered - s0.source.delivered);
    r.zc_share = static_cast<double>(s1.zero_copy - s0.zero_copy) / dl;
    r.zc_fallback = static_cast<double>(s1.zero_copy_fallback - s0.zero_copy_fallback) / dl;
  }
  r.consumed_pps = static_cast<double>(c1 - c0) / r.window_s;
  r.written_mbps = static_cast<double>(w1 - w0) / r.window_s / 1e6;
  const double tp = static_cast<double>(s1.timed_packets - s0.timed_packets);
  if (tp > 0) {
    r.cyc_rx = static_cast<double>(s1.cycles_rx - s0.cycles_rx) / tp;
    r.cyc_classify = static_cast<double>(s1.cycles_classify - s0.cycles_classify) / tp;
    r.cyc_deliver = static_cast<double>(s1.cycles_deliver - s0.cycles_deliver) / tp;
    r.cyc_free = static_cast<double>(s1.cycles_free - s0.cycles_free) / tp;
  }
  r.tsc_hz = static_cast<double>(s1.tsc_hz);
  if (rx > 0) r.rx_lcore_cycles_per_pkt = static_cast<double>(s1.tsc_hz) * r.window_s / rx;
  if (c1 > c0 && pool) r.writer_cpu_ns_per_pkt = (wcpu1 - wcpu0) * 1e9 / static_cast<double>(c1 - c0);

  if (pool) {
    // Loss-free search: pace the RX lcore (token bucket) and bisect on "a window without a
    // single ring_full drop": lo = highest rate seen loss-free, hi = lowest rate seen lossy.
    // Starts at half the saturated consumption; stops when hi/lo < 1.08 or after 9 windows.
    double lo = 0;
    double hi = 0;
    double rate = std::max(100000.0, 0.5 * r.consumed_pps);
    for (int step = 0; step < 9 && (hi == 0 || lo == 0 || hi / lo >= 1.08); ++step) {
      src->set_rx_rate_limit(rate);
      std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // backlog drains, counters publish
      const DpdkStats p0 = src->dpdk_stats();
      const std::uint64_t pc0 = consumed_now();
      const std::uint64_t pw0 = pool->stats().bytes_written;
      const double pcpu0 = threads_cpu_s("callrec-wr");
      const double pt0 = now_s();
      std::this_thread::sleep_for(std::chrono::duration<double>(std::min(a.seconds, 4.0)));
      const DpdkStats p1 = src->dpdk_stats();
      const std::uint64_t pc1 = consumed_now();
      const std::uint64_t pw1 = pool->stats().bytes_written;
      const double pcpu1 = threads_cpu_s("callrec-wr");
      const double dt = now_s() - pt0;
      const std::uint64_t lost = p1.source.ring_full - p0.source.ring_full;
      const double got = static_cast<double>(p1.source.rx_packets - p0.source.rx_packets) / dt;
      char buf[160];
      std::snprintf(buf, sizeof buf, "%s%.2f->%.2f Mpps %s", r.search_log.empty() ? "" : ", ", rate / 1e6, got / 1e6,
                    lost == 0 ? "ok" : ("lost " + std::to_string(lost)).c_str());
      r.search_log += buf;
      // lost == 0 but got well below rate: the paced RX lcore itself could not reach the rate
      // (descheduled by neighbours: its token bucket does not bank the time it lost). The rate
      // achieved was still loss-free, so it counts, and the search does not go higher.
      if (lost == 0 && got > 0) {
        lo = std::max(lo, std::min(rate, got));
        if (got < 0.9 * rate) hi = hi == 0 ? rate : std::min(hi, rate);
        if (got > r.lossless_pps) {
          r.lossless_pps = got;
          r.lossless_written_mbps = static_cast<double>(pw1 - pw0) / dt / 1e6;
          if (pc1 > pc0) r.lossless_writer_ns = (pcpu1 - pcpu0) * 1e9 / static_cast<double>(pc1 - pc0);
        }
      } else {
        hi = rate;
      }
      rate = hi == 0 ? rate * 1.3 : lo == 0 ? rate * 0.75 : (lo + hi) / 2;
    }
  }

  src->stop();
  if (pool) {
    pool->stop();
    stop_janitor = true;
    janitor.join();
    r.write_errors = pool->stats().write_errors;
    r.segments = segments;
    std::vector<callrec::fileio::WriterEvent> ev;
    while (pool->poll_events(ev)) {
      for (const auto& e : ev) {
        if (e.kind == callrec::fileio::WriterEventKind::kSegmentOpened) ::unlink(e.seg.path.c_str());
        if (e.kind != callrec::fileio::WriterEventKind::kError) continue;
        if (r.error_events++ == 0) r.first_error = e.status.message();
      }
      ev.clear();
    }
    r.writer_rss_kb = rss_kb() > rss_before ? rss_kb() - rss_before : 0;
    r.file_bytes = dir_bytes(rec_dir);
    pool.reset();
    if (!a.keep) {
      std::error_code ec;
      std::filesystem::remove_all(rec_dir, ec);
    }
  } else {
    stop_consumer = true;
    consumer.join();
  }
  src.reset();  // hot-plugged vdev removed, its (replay-sized) mempool freed
  return true;
}

/// dpdk-testpmd rxonly on the same file (bench_util.hpp).
double run_testpmd(const Args& a, const Generated& g, bool huge, bool busy_sibling, double& load) {
  return callrec::bench::testpmd_rxonly_pps(g.pcap, static_cast<unsigned>(g.sum.frames + 65536), 384, huge,
                                            a.seconds, busy_sibling, load);
}

std::vector<unsigned> parse_list(const char* s) {
  std::vector<unsigned> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) v.push_back(static_cast<unsigned>(std::strtoul(item.c_str(), nullptr, 10)));
  return v;
}

void usage() {
  std::printf(
      "usage: dpdk_pipeline_bench [--streams 1000,10000,100000] [--seconds 5] [--dir /dev/shm/...]\n"
      "                           [--modes count,writer] [--tables flat|hash|flat,hash] [--writers 1]\n"
      "                           [--ring-kb 32768] [--writer-buffer-kb 8]\n"
      "                           [--handoff copy|zerocopy|copy,zerocopy] [--zc-credit 65536] [--no-idle-pause]\n"
      "                           [--no-testpmd] [--timing-all] [--keep]\n"
      "Needs root (EAL), 2+ CPUs (main lcore 0, RX lcore 1; consumers pinned to CPU 0) and RAM for\n"
      "the replayed pcap in the mempool (about 600 B per frame: 4 GB at 100,000 streams).\n");
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 0; i < argc; ++i) a.cmdline += std::string(i ? " " : "") + argv[i];
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto val = [&]() -> const char* {
      if (i + 1 >= argc) {
        usage();
        std::exit(2);
      }
      return argv[++i];
    };
    if (k == "--streams") {
      a.streams = parse_list(val());
    } else if (k == "--seconds") {
      a.seconds = std::strtod(val(), nullptr);
    } else if (k == "--dir") {
      a.dir = val();
    } else if (k == "--modes") {
      a.modes = val();
    } else if (k == "--tables") {
      a.tables = val();
    } else if (k == "--no-idle-pause") {
      a.idle_pause = false;
    } else if (k == "--handoff") {
      a.handoffs = val();
    } else if (k == "--zc-credit") {
      a.zc_credit = static_cast<unsigned>(std::strtoul(val(), nullptr, 10));
    } else if (k == "--writers") {
      a.writers = static_cast<unsigned>(std::strtoul(val(), nullptr, 10));
    } else if (k == "--ring-kb") {
      a.ring_bytes = std::size_t{std::strtoul(val(), nullptr, 10)} << 10;
    } else if (k == "--writer-buffer-kb") {
      a.writer_buffer = std::size_t{std::strtoul(val(), nullptr, 10)} << 10;
    } else if (k == "--no-testpmd") {
      a.testpmd = false;
    } else if (k == "--timing-all") {
      a.timing_all = true;
    } else if (k == "--keep") {
      a.keep = true;
    } else {
      usage();
      return k == "--help" ? 0 : 2;
    }
  }
  std::filesystem::create_directories(a.dir);
  rlimit rl{};
  rl.rlim_cur = rl.rlim_max = 1u << 20;  // 100,000 record files open at once
  if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) {
    rl.rlim_cur = rl.rlim_max = 200000;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }

  // Memory: the largest replay mempool plus slack. Hugepages when enough are free.
  unsigned max_n = 0;
  for (unsigned n : a.streams) max_n = std::max(max_n, n);
  const std::uint64_t need_mb = static_cast<std::uint64_t>(max_n) * packets_per_stream(max_n) * 640 / 1000000 + 1024;
  const std::uint64_t huge_free_mb = meminfo_kb("HugePages_Free") * meminfo_kb("Hugepagesize") / 1024;
  const bool huge = huge_free_mb >= need_mb;
  std::vector<std::string> eal = {"--no-pci", "-l", "0-1", "--no-shconf",
                                  "--file-prefix=callrec-bench-" + std::to_string(::getpid())};
  if (huge) {
    eal.insert(eal.begin(), "--in-memory");
  } else {
    eal.insert(eal.begin(), {"--no-huge", "-m", std::to_string(need_mb + 1024)});
  }
  std::printf("dpdk_pipeline_bench: %u CPUs, %s, memory: %s (HugePages_Free %" PRIu64 " MB, need %" PRIu64 " MB)\n",
              std::thread::hardware_concurrency(), a.cmdline.c_str(), huge ? "hugepages" : "--no-huge (4 KiB pages)",
              huge_free_mb, need_mb);
  // EAL is initialised once per process: a throwaway source on net_null does it, so every pcap
  // port below is hot-plugged and its replay-sized mempool freed when its run ends.
  {
    DpdkSource::Options o;
    o.eal_args = eal;
    o.eal_args.push_back("--vdev=net_null_bench0");
    o.port = "net_null_bench0";
    o.addresses = {"10.0.0.1"};
    o.mempool_mbufs = 2047;
    DpdkSource init(o);
    if (!init.status()) {
      std::fprintf(stderr, "EAL: %s\n", init.status().message().c_str());
      return 1;
    }
  }

  std::vector<Result> results;
  unsigned run_id = 0;
  for (const unsigned n : a.streams) {
    std::printf("\n== %u streams ==\n", n);
    Generated g;
    if (!generate(a, n, g)) return 1;
    std::vector<std::string> tables;
    std::stringstream ts(a.tables);
    for (std::string t; std::getline(ts, t, ',');) tables.push_back(t);
    std::vector<std::string> handoffs;
    std::stringstream hs(a.handoffs);
    for (std::string h; std::getline(hs, h, ',');) handoffs.push_back(h);
    std::stringstream ms(a.modes);
    for (std::string mode; std::getline(ms, mode, ',');) {
      for (const auto& table : tables) {
       for (const auto& handoff : handoffs) {
        if (mode == "writer" && table != tables.front()) continue;  // the table is a dataplane question
        rlimit cur{};
        ::getrlimit(RLIMIT_NOFILE, &cur);
        if (mode == "writer" && n + 1024 > cur.rlim_cur) {
          std::printf("  run writer SKIPPED: the writer keeps one record file open per stream and RLIMIT_NOFILE is %llu "
                      "(raising it needs CAP_SYS_RESOURCE, which this process lacks)\n",
                      static_cast<unsigned long long>(cur.rlim_cur));
          continue;
        }
        Result r;
        std::printf("  run %s/%s/%s ...\n", mode.c_str(), table.c_str(), handoff.c_str());
        std::fflush(stdout);
        if (!run(a, eal, g, mode, table, handoff, run_id++, r)) return 1;
        results.push_back(r);
        std::printf(
            "  %-6s %-5s rx %6.2f Mpps  delivered %6.2f  consumed %6.2f Mpps  ring_full %5.2f Mpps  "
            "written %6.1f MB/s  nombuf %.0f  load %.1f\n",
            mode.c_str(), table.c_str(), r.rx_pps / 1e6, r.delivered_pps / 1e6, r.consumed_pps / 1e6,
            r.ring_full_pps / 1e6, r.written_mbps, r.nombuf, r.load);
        if (handoff == "zerocopy") {
          std::printf("         zero-copy hand-off (credit %u mbufs): %.1f%% of delivered by reference, %.1f%% copied "
                      "(credit used up)\n",
                      a.zc_credit, 100 * r.zc_share, 100 * r.zc_fallback);
        }
        if (r.cyc_rx > 0) {
          std::printf("         cycles/pkt: rx_burst %.1f  classify %.1f  deliver %.1f  free+handoff %.1f  (sum %.1f); "
                      "lcore wall %.1f cycles/pkt (TSC %.2f GHz)\n",
                      r.cyc_rx, r.cyc_classify, r.cyc_deliver, r.cyc_free, r.cyc_rx + r.cyc_classify + r.cyc_deliver + r.cyc_free,
                      r.rx_lcore_cycles_per_pkt, r.tsc_hz / 1e9);
        }
        if (r.writer_cpu_ns_per_pkt > 0) {
          std::printf("         writer CPU %.0f ns/pkt, writer+streams RSS %.0f MB (%.0f B/stream), %" PRIu64
                      " record files (1 MiB segments, unlinked once announced)\n",
                      r.writer_cpu_ns_per_pkt, static_cast<double>(r.writer_rss_kb) / 1024,
                      static_cast<double>(r.writer_rss_kb) * 1024 / n, r.segments);
        }
        if (r.mode == "writer") {
          std::printf("         loss-free end-to-end: %.2f Mpps (written %.1f MB/s = %.2f Mpkt/s of 172 B, writer CPU %.0f ns/pkt); "
                      "search: %s\n",
                      r.lossless_pps / 1e6, r.lossless_written_mbps, r.lossless_written_mbps / 172.0, r.lossless_writer_ns,
                      r.search_log.c_str());
        }
        if (r.write_errors != 0 || r.error_events != 0) {
          std::printf("         WRITER ERRORS: %" PRIu64 " write errors, %" PRIu64 " streams failed; first: %s\n",
                      r.write_errors, r.error_events, r.first_error.c_str());
        }
        std::printf("         setup %.1f s, warm-up %.1f s; %s\n", r.setup_s, r.warmup_s, r.describe.c_str());
        std::printf("         memory: mempool %.0f MB (replay-sized), flow table %.1f MB, flow entries %.1f MB, rings %.1f MB, "
                    "%" PRIu64 " B/stream in the dataplane\n",
                    static_cast<double>(r.mem.mempool_bytes) / 1e6, static_cast<double>(r.mem.flow_table_bytes) / 1e6,
                    static_cast<double>(r.mem.flow_entries_bytes) / 1e6, static_cast<double>(r.mem.rings_bytes) / 1e6,
                    r.mem.per_stream_bytes);
        std::printf("JSON {\"streams\":%u,\"mode\":\"%s\",\"table\":\"%s\",\"handoff\":\"%s\",\"zc_share\":%.3f,\"rx_pps\":%.0f,\"delivered_pps\":%.0f,"
                    "\"consumed_pps\":%.0f,\"ring_full_pps\":%.0f,\"written_MBps\":%.1f,\"cyc_rx\":%.1f,\"cyc_classify\":%.1f,"
                    "\"cyc_deliver\":%.1f,\"cyc_free\":%.1f,\"writer_ns_per_pkt\":%.0f,\"lossless_e2e_pps\":%.0f,"
                    "\"load\":%.2f,\"huge\":%s,\"idle_pause\":%s}\n",
                    n, mode.c_str(), table.c_str(), handoff.c_str(), r.zc_share, r.rx_pps, r.delivered_pps, r.consumed_pps, r.ring_full_pps,
                    r.written_mbps, r.cyc_rx, r.cyc_classify, r.cyc_deliver, r.cyc_free, r.writer_cpu_ns_per_pkt,
                    r.lossless_pps, r.load,
                    huge ? "true" : "false", a.idle_pause ? "true" : "false");
        std::fflush(stdout);
       }
      }
    }
    if (a.testpmd) {
      double load = 0;
      double load_busy = 0;
      const double tp = run_testpmd(a, g, huge, false, load);
      const double tp_busy = run_testpmd(a, g, huge, true, load_busy);
      double best_count = 0;
      double best_writer = 0;
      for (const auto& r : results) {
        if (r.streams != n) continue;
        if (r.mode == "count") best_count = std::max(best_count, r.consumed_pps);
        if (r.mode == "writer") best_writer = std::max(best_writer, r.lossless_pps);
      }
      std::printf("  testpmd rxonly %.2f Mpps, CPU 0 idle (load %.1f): dataplane/testpmd %.2f, loss-free end-to-end/testpmd %.2f\n",
                  tp / 1e6, load, tp > 0 ? best_count / tp : 0, tp > 0 ? best_writer / tp : 0);
      std::printf("  testpmd rxonly %.2f Mpps, CPU 0 busy (load %.1f): dataplane/testpmd %.2f, loss-free end-to-end/testpmd %.2f\n",
                  tp_busy / 1e6, load_busy, tp_busy > 0 ? best_count / tp_busy : 0, tp_busy > 0 ? best_writer / tp_busy : 0);
      std::printf("JSON {\"streams\":%u,\"mode\":\"testpmd\",\"rx_pps\":%.0f,\"rx_pps_busy_sibling\":%.0f,\"load\":%.2f}\n",
                  n, tp, tp_busy, load);
    }
    if (!a.keep) {
      std::error_code ec;
      std::filesystem::remove(g.pcap, ec);
    }
  }
  std::printf("\nrerun: sudo %s\n", a.cmdline.c_str());
  return 0;
}
