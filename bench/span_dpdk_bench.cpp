// Passive capture off a DPDK mirror port (issue 10): how fast the span lane decodes and
// classifies what net_pcap replays from memory (infinite_rx=1) of a capture of N concurrent SIP
// calls, against dpdk-testpmd --forward-mode=rxonly on the same file in the same run.
//
//   span_dpdk_bench [--calls N] [--call-seconds S] [--seconds T] [--huge|--no-huge]
//                   [--no-testpmd] [--keep]
//
// The capture is made by callrec-pcapgen's call generator (tools/callrec-pcapgen/calls_gen.hpp:
// INVITE/100/180/200/ACK/BYE with SDP, RTP both ways every 20 ms, 10% re-INVITEs moving media,
// 10% of INVITEs as two IPv4 fragments). The lane follows every call's endpoints (installed
// up front, as the tracker does from SDP), so every RTP packet is classified to its stream.
// One thread does what the daemon's mirror path does per burst, on the EAL main lcore:
//   DpdkCapture::next_burst (rte_eth_rx_burst, up to 32) -> SpanLane::on_burst (decode all,
//   prefetch endpoint slots and stream states, classify, IPv4 reassembly, copy RTP into the
//   writer ring) -> flush; SIP messages are parsed (control/sip: the message, and SDP when
//   there is a body), as the call tracker's first step.
// A second thread drains the ring and counts (the lane's ceiling; the writers' cost is
// bench/span_offline_bench.sh's). Figures: frames/s of the lane, cycles per frame in rx and
// in the lane, and the ratio to testpmd's rxonly rate. Results: bench/RESULTS.md.
//
// Replay repeats the file: the SIP of every call comes again each pass (the lane sends it to
// the parser each time) and RTP sequence numbers jump back; neither matters to classification.
#include <x86intrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.hpp"
#include "control/sip/sdp.hpp"
#include "control/sip/sip_message.hpp"
#include "dataplane/capture/capture.hpp"
#include "dataplane/dpdk_source.hpp"
#include "dataplane/span/lane_group.hpp"
#include "dataplane/span/span_lane.hpp"
#include "fileio/packet_ring.hpp"
#include "tools/callrec-pcapgen/calls_gen.hpp"

namespace {

using namespace callrec;  // NOLINT(google-build-using-namespace): a benchmark's main file
using Clock = std::chrono::steady_clock;

struct Args {
  unsigned calls = 10000;
  unsigned call_seconds = 1;
  unsigned seconds = 5;
  int huge = -1;  ///< -1: when the host has free hugepages
  bool testpmd = true;
  bool keep = false;
  bool inline_sip = true;  ///< --handoff-only: skip the SIP-inline measurement (profiling)
  unsigned lanes = 0;      ///< --lanes N: the daemon's SpanLaneGroup on N lanes instead of the bare lane
};

dataplane::decode::Endpoint ep(std::uint32_t ip, std::uint16_t port) {
  dataplane::decode::Endpoint e;
  e.addr.family = 4;
  for (int i = 0; i < 4; ++i) e.addr.b[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(ip >> (24 - 8 * i));
  e.port = port;
  return e;
}

/// What the call tracker does first with every SIP message: parse it, and its SDP when it
/// has one. Counted by the thread that does it.
struct SipParse {
  std::uint64_t messages = 0, bad = 0, sdp = 0;
  void operator()(std::string_view msg) {
    ++messages;
    control::sip::Message m;
    if (control::sip::parse_message(msg, m, false) != control::sip::ParseResult::kOk) {
      ++bad;
      return;
    }
    if (!m.body.empty()) {
      control::sip::Sdp s;
      if (control::sip::parse_sdp(m.body, s)) ++sdp;
    }
  }
};

/// The lane's sink. inline: SIP is parsed on the lane's thread (the daemon today: the tracker
/// runs beside the lane). handoff: each message is copied into a ring for the signalling
/// thread, which parses it (a lane on its own core, SIP handed to the signalling side).
class SipSink final : public dataplane::SpanSink {
 public:
  explicit SipSink(fileio::PacketRing* handoff) : ring_(handoff) {}
  SipParse parse;
  std::uint64_t handed = 0, handoff_full = 0;
  void on_sip(std::string_view msg, const dataplane::decode::Endpoint&, const dataplane::decode::Endpoint&,
              std::uint64_t ts) override {
    if (ring_ == nullptr) {
      parse(msg);
      return;
    }
    if (ring_->push(0, fileio::RecordKind::kPacket, ts, {reinterpret_cast<const std::byte*>(msg.data()), msg.size()})) {
      ++handed;
      ring_->publish();
    } else {
      ++handoff_full;
    }
  }
  std::size_t on_sip_stream(std::string_view bytes, bool, const dataplane::decode::Endpoint&,
                            const dataplane::decode::Endpoint&, std::uint64_t) override {
    return bytes.size();
  }
  void on_dtmf(fileio::StreamId, std::string_view, std::uint32_t, std::uint64_t) override {}

 private:
  fileio::PacketRing* ring_;
};

bool hugepages_free() {
  const std::string s = bench::read_file("/proc/meminfo");
  const auto p = s.find("HugePages_Free:");
  return p != std::string::npos && std::strtoull(s.c_str() + p + 15, nullptr, 10) > 0;
}

void usage() {
  std::fprintf(stderr,
               "usage: span_dpdk_bench [--calls N] [--call-seconds S] [--seconds T] [--huge|--no-huge]\n"
               "                       [--no-testpmd] [--handoff-only] [--lanes N] [--keep]\n");
}

/// --lanes N: the daemon's DPDK mirror path, SpanLaneGroup on N lane threads (lane i on CPU
/// (i + 1) mod CPUs; lane 0 reads the port and spreads by address pair), this thread as the
/// control thread: SIP of every lane parsed here (poll_events), the writer rings drained here.
int run_lanes(const Args& a, std::unique_ptr<dataplane::capture::DpdkCapture>& owned, const std::vector<pcapgen::Call>& calls,
              const std::string& pcap, unsigned mbufs, unsigned room, bool huge, const pcapgen::CallsSummary& sum,
              const std::string& dir) {
  dataplane::capture::DpdkCapture& cap = *owned;
  const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  fileio::RingMatrix rings(a.lanes, 1, 32u << 20);
  dataplane::LaneGroupOptions go;
  go.lanes = a.lanes;
  dataplane::SpanLaneGroup g(
      go, [&cap](unsigned l, dataplane::capture::Frame* out, unsigned max) { return cap.lane_burst(l, out, max); },
      [&cap, cpus](unsigned l) {
        cap.register_lane_thread();
        bench::pin_self(static_cast<int>((l + 1) % cpus));
      });
  SipSink sink(nullptr);
  if (Status st = g.start(rings); !st) {
    std::fprintf(stderr, "span_dpdk_bench: %s\n", st.message().c_str());
    return 1;
  }
  // Every call's endpoints, as the tracker installs them from SDP (through the command rings).
  fileio::StreamId next = 1;
  for (const auto& c : calls) {
    const fileio::StreamId up = next++, down = next++;
    g.add_stream(up, {}, 8000, down);
    g.add_stream(down, {}, 8000, up);
    g.set_endpoint(ep(c.callee_ip, c.callee_rtp), up, down, false);
    g.set_endpoint(ep(c.caller_ip, c.caller_rtp), down, up, false);
    if (c.moved_port != 0) {
      if (c.mover == 0)
        g.set_endpoint(ep(c.caller_ip, c.moved_port), down, up, false);
      else
        g.set_endpoint(ep(c.callee_ip, c.moved_port), up, down, false);
    }
  }

  std::array<fileio::RingRecord, 256> recs{};
  auto counter = [&](const char* name) {
    for (const auto& c : g.counters())
      if (c.name == name) return c.value;
    return std::uint64_t{0};
  };
  auto control_for = [&](double seconds) {
    const auto end = Clock::now() + std::chrono::duration<double>(seconds);
    while (Clock::now() < end) {
      std::size_t k = 0;
      for (unsigned p = 0; p < a.lanes; ++p)
        k += rings.ring(p, 0).consume_bulk(recs, [](std::span<const fileio::RingRecord>) {});
      k += g.poll_events(sink);
      if (k == 0) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  };
  control_for(1.0);  // warm-up
  const std::uint64_t f0 = g.frames(), d0 = counter("span_rtp_delivered"), w0 = cap.spread_waits();
  const auto t0 = Clock::now();
  control_for(a.seconds);
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  const std::uint64_t frames = g.frames() - f0, delivered = counter("span_rtp_delivered") - d0;
  const std::uint64_t waits = cap.spread_waits() - w0;
  (void)g.quiesce(sink, std::chrono::seconds(2));
  g.stop();
  std::vector<std::uint64_t> per_lane;
  for (unsigned l = 0; l < a.lanes; ++l) per_lane.push_back(counter(("span_lane" + std::to_string(l) + "_frames").c_str()));
  const double fps = static_cast<double>(frames) / wall;
  std::printf("%u lanes (SpanLaneGroup, SIP parsed on the control thread): %.2f M frames/s; %llu RTP delivered, "
              "%llu unattributed, %llu SIP parsed (bad %llu); lane 0 waited for a lane's ring %llu times; frames by lane:",
              a.lanes, fps / 1e6, static_cast<unsigned long long>(delivered),
              static_cast<unsigned long long>(counter("span_rtp_unattributed")),
              static_cast<unsigned long long>(sink.parse.messages), static_cast<unsigned long long>(sink.parse.bad),
              static_cast<unsigned long long>(waits));
  for (std::uint64_t n : per_lane) std::printf(" %llu", static_cast<unsigned long long>(n));
  std::printf("\n");
  owned.reset();  // the port is closed before testpmd runs
  double tp = 0, load = 0;
  if (a.testpmd) {
    tp = bench::testpmd_rxonly_pps(pcap, mbufs, room, huge, a.seconds, false, load);
    std::printf("testpmd rxonly: %.2f M frames/s (load %.1f); %u lanes / testpmd: %.3f\n", tp / 1e6, load, a.lanes,
                tp > 0 ? fps / tp : 0.0);
  }
  std::printf("RESULT {\"bench\":\"span_dpdk_lanes\",\"lanes\":%u,\"calls\":%u,\"frames_in_file\":%llu,\"huge\":%s,"
              "\"lanes_fps\":%.0f,\"testpmd_fps\":%.0f,\"lanes_over_testpmd\":%.3f}\n",
              a.lanes, a.calls, static_cast<unsigned long long>(sum.frames), huge ? "true" : "false", fps, tp,
              tp > 0 ? fps / tp : 0.0);
  std::printf("rerun: build/bench/span_dpdk_bench --lanes %u --calls %u --call-seconds %u --seconds %u%s\n", a.lanes,
              a.calls, a.call_seconds, a.seconds, huge ? " --huge" : " --no-huge");
  (void)dataplane::dpdk_eal_cleanup();
  if (!a.keep) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto val = [&]() -> unsigned {
      if (i + 1 >= argc) {
        usage();
        std::exit(2);
      }
      return static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10));
    };
    if (k == "--calls") a.calls = val();
    else if (k == "--call-seconds") a.call_seconds = val();
    else if (k == "--seconds") a.seconds = val();
    else if (k == "--huge") a.huge = 1;
    else if (k == "--no-huge") a.huge = 0;
    else if (k == "--no-testpmd") a.testpmd = false;
    else if (k == "--keep") a.keep = true;
    else if (k == "--handoff-only") a.inline_sip = false;
    else if (k == "--lanes") a.lanes = std::clamp(val(), 1u, 64u);
    else {
      usage();
      return 2;
    }
  }
  const bool huge = a.huge < 0 ? hugepages_free() : a.huge == 1;

  // ---- the capture ---------------------------------------------------------------------------
  const std::string dir = "/dev/shm/span-dpdk-bench." + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  const std::string pcap = dir + "/calls.pcap";
  pcapgen::CallsOptions co;
  co.calls = a.calls;
  co.seconds = a.call_seconds;
  co.ramp_s = 0.5;
  std::vector<pcapgen::Call> calls;
  pcapgen::CallsSummary sum;
  std::string err = pcapgen::plan_calls(co, calls, sum);
  if (err.empty()) err = pcapgen::write_calls_pcap(pcap, co, calls, sum);
  if (!err.empty()) {
    std::fprintf(stderr, "span_dpdk_bench: %s\n", err.c_str());
    return 1;
  }
  std::printf("capture: %u calls x %u s: %llu frames (%llu RTP, %llu SIP, %llu fragments), %llu bytes\n", a.calls,
              a.call_seconds, static_cast<unsigned long long>(sum.frames), static_cast<unsigned long long>(sum.rtp),
              static_cast<unsigned long long>(sum.sip), static_cast<unsigned long long>(sum.fragments),
              static_cast<unsigned long long>(sum.file_bytes));

  // ---- the mirror port and the lane ------------------------------------------------------------
  const unsigned mbufs = static_cast<unsigned>(sum.frames + 65536);
  constexpr unsigned kMbufRoom = 1536 + 128;  // headroom + the largest frame (1,514-byte fragments)
  const unsigned mem_mb = static_cast<unsigned>(static_cast<double>(mbufs) * (kMbufRoom + 384) / 1e6) + 1024;
  dataplane::capture::DpdkCaptureOptions o;
  o.eal_args = {"--no-pci", "--no-shconf", "--file-prefix=span-dpdk-bench-" + std::to_string(::getpid()), "-l", "0-1"};
  if (huge) {
    o.eal_args.insert(o.eal_args.begin(), "--in-memory");
  } else {
    o.eal_args.insert(o.eal_args.begin(), {"--no-huge", "-m", std::to_string(mem_mb)});
  }
  o.port = "net_pcap_span0,rx_pcap=" + pcap + ",infinite_rx=1";
  o.mbufs = mbufs;
  o.mbuf_data_room = kMbufRoom;
  o.lanes = std::max(1u, a.lanes);
  Status st;
  auto cap = dataplane::capture::DpdkCapture::open(o, st);
  if (!cap) {
    std::fprintf(stderr, "span_dpdk_bench: %s\n", st.message().c_str());
    return 1;
  }
  if (a.lanes >= 1) return run_lanes(a, cap, calls, pcap, mbufs, kMbufRoom, huge, sum, dir);
  bench::pin_self(1);  // the lane's core (CPU 1; the ring consumer and testpmd's main on CPU 0)

  fileio::RingMatrix rings(1, 1, 32u << 20);
  fileio::PacketRing sip_ring(32u << 20);
  dataplane::SpanLane lane{dataplane::SpanLaneOptions{}};
  SipSink inline_sink(nullptr), handoff_sink(&sip_ring);
  (void)lane.start(rings);
  fileio::StreamId next = 1;
  for (const auto& c : calls) {
    const fileio::StreamId up = next++, down = next++;  // caller -> callee, callee -> caller
    lane.add_stream(up, {}, 8000, down);
    lane.add_stream(down, {}, 8000, up);
    lane.set_endpoint(ep(c.callee_ip, c.callee_rtp), up, down, false);
    lane.set_endpoint(ep(c.caller_ip, c.caller_rtp), down, up, false);
    if (c.moved_port != 0) {
      if (c.mover == 0)
        lane.set_endpoint(ep(c.caller_ip, c.moved_port), down, up, false);
      else
        lane.set_endpoint(ep(c.callee_ip, c.moved_port), up, down, false);
    }
  }

  // The other core: drains the writer ring (counts) and parses the SIP handed off.
  std::atomic<bool> stop{false};
  SipParse signalling;
  std::thread consumer([&] {
    bench::pin_self(0);
    std::array<fileio::RingRecord, 256> recs{};
    auto drain = [&] {
      std::size_t k = rings.ring(0, 0).consume_bulk(recs, [](std::span<const fileio::RingRecord>) {});
      k += sip_ring.consume([&](const fileio::RingRecordHeader&, std::span<const std::byte> d) {
        signalling(std::string_view(reinterpret_cast<const char*>(d.data()), d.size()));
      });
      return k;
    };
    while (!stop.load(std::memory_order_relaxed)) {
      if (drain() == 0) _mm_pause();
    }
    while (drain() != 0) {
    }
  });

  struct Figures {
    double fps = 0, cyc_rx = 0, cyc_lane = 0;
    std::uint64_t delivered = 0, unattributed = 0, sip = 0;
  };
  std::array<dataplane::capture::Frame, dataplane::capture::FrameBurst::kMax> fs;
  double tsc_hz = 0;
  // One measurement: warm-up 1 s, then T s of rx_burst -> on_burst -> flush on this core.
  auto measure = [&](SipSink& sink) {
    lane.set_sink(&sink);
    std::uint64_t frames = 0, cyc_rx = 0, cyc_lane = 0;
    auto run_for = [&](double seconds, bool count) {
      const auto end = Clock::now() + std::chrono::duration<double>(seconds);
      for (unsigned k = 1;; ++k) {
        const std::uint64_t t0 = __rdtsc();
        const unsigned n = cap->next_burst(fs.data(), static_cast<unsigned>(fs.size()));
        const std::uint64_t t1 = __rdtsc();
        if (n != 0) {
          lane.on_burst({fs.data(), n});
          lane.flush();
        }
        const std::uint64_t t2 = __rdtsc();
        if (count) {
          frames += n;
          cyc_rx += t1 - t0;
          cyc_lane += t2 - t1;
        }
        if ((k & 255) == 0 && Clock::now() >= end) break;
      }
    };
    run_for(1.0, false);
    const auto d0 = lane.counter(dataplane::kS_rtp_delivered);
    const auto u0 = lane.counter(dataplane::kS_rtp_unattributed);
    const auto s0 = lane.counter(dataplane::kS_sip_udp);
    const std::uint64_t tsc0 = __rdtsc();
    const auto w0 = Clock::now();
    run_for(a.seconds, true);
    const double wall = std::chrono::duration<double>(Clock::now() - w0).count();
    tsc_hz = static_cast<double>(__rdtsc() - tsc0) / wall;
    Figures f;
    const double per = frames == 0 ? 0 : 1.0 / static_cast<double>(frames);
    f.fps = static_cast<double>(frames) / wall;
    f.cyc_rx = static_cast<double>(cyc_rx) * per;
    f.cyc_lane = static_cast<double>(cyc_lane) * per;
    f.delivered = lane.counter(dataplane::kS_rtp_delivered) - d0;
    f.unattributed = lane.counter(dataplane::kS_rtp_unattributed) - u0;
    f.sip = lane.counter(dataplane::kS_sip_udp) - s0;
    return f;
  };
  const Figures fi = a.inline_sip ? measure(inline_sink) : Figures{};
  const Figures fh = measure(handoff_sink);
  stop = true;
  consumer.join();
  std::uint64_t missed = 0, nombuf = 0;
  cap->nic_stats(missed, nombuf);
  auto show = [&](const char* label, const Figures& f) {
    std::printf("%s: %.2f M frames/s; %.0f cycles/frame rx + %.0f lane (TSC %.2f GHz); %llu RTP delivered, %llu "
                "unattributed, %llu SIP messages\n",
                label, f.fps / 1e6, f.cyc_rx, f.cyc_lane, tsc_hz / 1e9, static_cast<unsigned long long>(f.delivered),
                static_cast<unsigned long long>(f.unattributed), static_cast<unsigned long long>(f.sip));
  };
  show("lane, SIP parsed on the lane's core (the daemon today)", fi);
  show("lane, SIP handed to the other core through a ring    ", fh);
  std::printf("SIP parsed inline %llu (bad %llu), handed off %llu (ring full %llu), parsed by the other core %llu "
              "(bad %llu); writer ring full %llu; NIC imissed %llu, rx_nombuf %llu\n",
              static_cast<unsigned long long>(inline_sink.parse.messages),
              static_cast<unsigned long long>(inline_sink.parse.bad), static_cast<unsigned long long>(handoff_sink.handed),
              static_cast<unsigned long long>(handoff_sink.handoff_full),
              static_cast<unsigned long long>(signalling.messages), static_cast<unsigned long long>(signalling.bad),
              static_cast<unsigned long long>(lane.counter(dataplane::kS_ring_full)),
              static_cast<unsigned long long>(missed), static_cast<unsigned long long>(nombuf));
  cap.reset();
  double tp = 0, load = 0;
  if (a.testpmd) {
    tp = bench::testpmd_rxonly_pps(pcap, mbufs, kMbufRoom, huge, a.seconds, false, load);
    std::printf("testpmd rxonly: %.2f M frames/s (load %.1f); lane / testpmd: %.3f (SIP inline), %.3f (SIP handed off)\n",
                tp / 1e6, load, tp > 0 ? fi.fps / tp : 0.0, tp > 0 ? fh.fps / tp : 0.0);
  }
  std::printf("RESULT {\"bench\":\"span_dpdk\",\"calls\":%u,\"call_seconds\":%u,\"frames_in_file\":%llu,\"huge\":%s,"
              "\"lane_fps_sip_inline\":%.0f,\"lane_fps_sip_handoff\":%.0f,\"cycles_rx\":%.0f,"
              "\"cycles_lane_sip_inline\":%.0f,\"cycles_lane_sip_handoff\":%.0f,\"testpmd_fps\":%.0f,"
              "\"inline_over_testpmd\":%.3f,\"handoff_over_testpmd\":%.3f,\"unattributed\":%llu,\"ring_full\":%llu}\n",
              a.calls, a.call_seconds, static_cast<unsigned long long>(sum.frames), huge ? "true" : "false", fi.fps,
              fh.fps, fh.cyc_rx, fi.cyc_lane, fh.cyc_lane, tp, tp > 0 ? fi.fps / tp : 0.0, tp > 0 ? fh.fps / tp : 0.0,
              static_cast<unsigned long long>(fi.unattributed + fh.unattributed),
              static_cast<unsigned long long>(lane.counter(dataplane::kS_ring_full)));
  std::printf("rerun: build/bench/span_dpdk_bench --calls %u --call-seconds %u --seconds %u%s\n", a.calls,
              a.call_seconds, a.seconds, huge ? " --huge" : " --no-huge");
  (void)dataplane::dpdk_eal_cleanup();
  if (!a.keep) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  return 0;
}
