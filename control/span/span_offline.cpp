#include "control/span/span_offline.hpp"

#include <poll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <memory>

#include "control/daemon.hpp"
#include "control/log.hpp"
#include "control/port_allocator.hpp"
#include "control/session_manager.hpp"
#include "control/span/call_tracker.hpp"
#include "dataplane/capture/capture.hpp"
#include "dataplane/span/span_lane.hpp"
#include "fileio/catalog.hpp"
#include "fileio/record_writer.hpp"
#include "fileio/writer_pool.hpp"

namespace callrec::control::span {

namespace {

void print_summary(std::FILE* out, const dataplane::SpanLane& lane, const CallTracker& t, std::uint64_t first_ns,
                   std::uint64_t last_ns, double wall_s, unsigned files, unsigned bad_files,
                   const fileio::WriterPoolStats& ws) {
  const double span_s = last_ns > first_ns ? static_cast<double>(last_ns - first_ns) / 1e9 : 0.0;
  const double pps = wall_s > 0 ? static_cast<double>(lane.frames()) / wall_s : 0.0;
  std::fprintf(out, "callrecd --span-read: %u file(s)%s, %llu frames, %.1f MB, %.1f s of traffic read in %.2f s (%.0f frames/s)\n",
               files, bad_files ? " (some unreadable)" : "", static_cast<unsigned long long>(lane.frames()),
               static_cast<double>(lane.bytes()) / 1e6, span_s, wall_s, pps);
  auto T = [&t](TrackerCounter c) { return static_cast<unsigned long long>(t.counter(c)); };
  auto S = [&lane](dataplane::SpanCounter c) { return static_cast<unsigned long long>(lane.counter(c)); };
  std::fprintf(out, "calls: %llu followed, %llu answered, %llu recorded (%llu directions with RTP), %llu answered without media\n",
               T(kT_calls), T(kT_calls_answered), T(kT_calls_recorded), T(kT_directions_recorded), T(kT_calls_no_media));
  std::fprintf(out, "ended: %llu hangup, %llu rejected, %llu cancelled, %llu timeout, %llu capture_end, %llu evicted; %llu INVITEs unanswered\n",
               T(kT_calls_hangup), T(kT_calls_failed), T(kT_calls_cancelled), T(kT_calls_timeout), T(kT_calls_capture_end),
               T(kT_calls_evicted), T(kT_invites_unanswered));
  std::fprintf(out, "sip: %llu requests, %llu responses (%llu over TCP), %llu INVITE, %llu BYE, %llu SDP bodies, %llu media moves, %llu DTMF digits\n",
               T(kT_sip_requests), T(kT_sip_responses), T(kT_sip_tcp), T(kT_sip_invite), T(kT_sip_bye), T(kT_sdp),
               T(kT_media_moved), T(kT_dtmf));
  std::fprintf(out, "rtp: %llu packets to the writers (%llu attributed by source endpoint, %llu as the reverse flow), %llu RTCP, %llu telephone-event\n",
               S(dataplane::kS_rtp_delivered), S(dataplane::kS_rtp_by_source), S(dataplane::kS_rtp_by_pair),
               S(dataplane::kS_rtcp), S(dataplane::kS_dtmf_packets));
  // Everything dropped, by cause (only causes that happened).
  std::string drops;
  auto add = [&drops](std::string_view name, std::uint64_t v) {
    if (v == 0) return;
    drops += drops.empty() ? "" : ", ";
    drops += std::string(name) + "=" + std::to_string(v);
  };
  add("rtp_unattributed", lane.counter(dataplane::kS_rtp_unattributed));
  add("udp_other", lane.counter(dataplane::kS_udp_other));
  add("tcp_other", lane.counter(dataplane::kS_tcp_other));
  add("not_rtp", lane.counter(dataplane::kS_not_rtp));
  add("non_udp_tcp", lane.counter(dataplane::kS_non_udp_tcp));
  add("sip_bad", t.counter(kT_sip_bad));
  add("sip_stray", t.counter(kT_sip_stray));
  add("sdp_bad", t.counter(kT_sdp_bad));
  add("pending_evicted", t.counter(kT_pending_evicted));
  add("record_refused", t.counter(kT_record_refused));
  using dataplane::decode::Counter;
  for (Counter c : {dataplane::decode::kC_link_unknown, dataplane::decode::kC_link_truncated,
                    dataplane::decode::kC_vlan_too_deep, dataplane::decode::kC_not_ip, dataplane::decode::kC_tunnel_bad,
                    dataplane::decode::kC_tunnel_too_deep, dataplane::decode::kC_ip_bad,
                    dataplane::decode::kC_ipv6_ext_bad, dataplane::decode::kC_l4_bad, dataplane::decode::kC_l4_other})
    add(dataplane::decode::kCounterInfo[c].name, lane.decode_counters()[c]);
  for (unsigned i = 0; i < dataplane::decode::kReassemblyCounterCount; ++i) {
    const auto c = static_cast<dataplane::decode::ReassemblyCounter>(i);
    if (c == dataplane::decode::kR_frag_reassembled || c == dataplane::decode::kR_tcp_streams) continue;
    add(dataplane::decode::kReassemblyCounterInfo[i].name, lane.reassembly_counters()[c]);
  }
  add("assembler_invalid", ws.assembler.invalid);
  add("assembler_other_payload", ws.assembler.other_payload);
  add("assembler_format_flap", ws.assembler.format_flaps);
  add("write_errors", ws.write_errors);
  std::fprintf(out, "reassembled: %llu IP datagrams from fragments, %llu TCP streams\n",
               static_cast<unsigned long long>(lane.reassembly_counters()[dataplane::decode::kR_frag_reassembled]),
               static_cast<unsigned long long>(lane.reassembly_counters()[dataplane::decode::kR_tcp_streams]));
  std::fprintf(out, "dropped: %s\n", drops.empty() ? "nothing" : drops.c_str());
}

}  // namespace

int run_span_read(const DaemonConfig& cfg, std::FILE* summary) {
  set_log_level(parse_log_level(cfg.log_level));
  std::error_code ec;
  std::filesystem::create_directories(cfg.storage, ec);
  if (ec) {
    log_error("storage %s: %s", cfg.storage.c_str(), ec.message().c_str());
    return 1;
  }
  if (!cfg.catalog.parent_path().empty()) std::filesystem::create_directories(cfg.catalog.parent_path(), ec);
  int storage_lock = -1, catalog_lock = -1;
  if (Status st = acquire_instance_lock(cfg.storage / ".callrecd.lock", storage_lock); !st) {
    log_error("%s", st.message().c_str());
    return 1;
  }
  if (Status st = acquire_instance_lock(cfg.catalog.string() + ".lock", catalog_lock); !st) {
    log_error("%s", st.message().c_str());
    return 1;
  }
  // Two record files per call: keep descriptors for a quarter of the limit, reopen per write
  // beyond (fileio/record_writer.hpp), so a capture of any number of calls is recorded.
  if (rlimit rl{}; ::getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    if (rl.rlim_cur < rl.rlim_max) {
      rlimit up = rl;
      up.rlim_cur = rl.rlim_max;
      if (::setrlimit(RLIMIT_NOFILE, &up) == 0) rl = up;
    }
    // No sockets and no connections here: every descriptor but a reserve can hold a file.
    fileio::set_record_fd_budget(static_cast<std::int64_t>(rl.rlim_cur > 512 ? rl.rlim_cur - 256 : 64));
  }
  fileio::Catalog catalog;
  if (Status st = catalog.open(cfg.catalog); !st) {
    log_error("%s", st.message().c_str());
    return 1;
  }
  if (const std::size_t n = SessionManager::recover(catalog, cfg.storage); n > 0)
    log_info("recovered %zu recording(s) left open by an earlier run", n);

  fileio::WriterPoolOptions wo;
  wo.writers = writer_threads(cfg, true);
  wo.producers = 1;
  fileio::WriterPool writers(wo);
  writers.start();
  dataplane::SpanLaneOptions lo;
  lo.producer = 0;
  lo.lossless = true;  // a file waits for its writers
  lo.limits.max_datagrams = cfg.span_max_fragments;
  lo.limits.max_tcp_streams = cfg.span_max_tcp_streams;
  dataplane::SpanLane lane(lo);
  if (Status st = lane.start(writers.rings()); !st) {
    log_error("%s", st.message().c_str());
    return 1;
  }
  PortAllocatorOptions po;  // observed streams take no port; the manager wants an allocator
  po.lo = 1;
  po.hi = 1;
  PortAllocator ports(po);
  SessionManager sessions(session_config(cfg), catalog, writers, lane, ports);
  CallTracker tracker(tracker_options(cfg), sessions, lane);
  lane.set_sink(&tracker);
  catalog.set_group_commit(true);

  std::vector<fileio::WriterEvent> events;
  auto pump = [&] {
    events.clear();
    while (writers.poll_events(events)) {
      sessions.on_writer_events(events);
      events.clear();
    }
    if (Status st = catalog.commit_batch(); !st) log_error("catalog: %s", st.message().c_str());
  };

  const auto wall0 = std::chrono::steady_clock::now();
  auto last_wall_tick = wall0;
  std::uint64_t first_ns = 0, now_ns = 0, next_tick_ns = 0;
  unsigned bad_files = 0;
  std::uint64_t n = 0;
  for (const std::string& path : cfg.span_read) {
    Status st;
    std::unique_ptr<dataplane::capture::FrameSource> src = dataplane::capture::open_file(path, st);
    if (!src) {
      log_error("--span-read %s", st.message().c_str());
      ++bad_files;
      continue;
    }
    log_info("span: reading %s", path.c_str());
    // The readers hand out up to a burst of frames in their read buffer (no copy); the burst
    // is cut at every tick, so that timeouts fire at the same packet as live.
    std::array<dataplane::capture::Frame, dataplane::capture::FrameBurst::kMax> frames;
    for (;;) {
      const int rc = src->read_burst(frames.data(), static_cast<unsigned>(frames.size()));
      if (rc == 0) break;
      if (rc < 0) {
        // A capture cut short (tcpdump killed, a disk that filled) ends inside its last record:
        // everything before it is good, so that is the end of the file, not a failure.
        if (src->error().find("truncated") != std::string::npos) {
          log_warn("--span-read %s: %s: read up to there", path.c_str(), src->error().c_str());
          break;
        }
        log_error("--span-read %s: %s (the frames before it were processed)", path.c_str(), src->error().c_str());
        ++bad_files;
        break;
      }
      const auto count = static_cast<std::size_t>(rc);
      std::size_t from = 0;  // the first frame not yet given to the lane
      for (std::size_t i = 0; i < count; ++i) {
        dataplane::capture::Frame& f = frames[i];
        // Packet time only moves forward (captures merged from several interfaces jitter).
        if (f.ts_ns > now_ns) now_ns = f.ts_ns;
        if (first_ns == 0) first_ns = now_ns;
        f.ts_ns = now_ns;
        ++n;
        if (now_ns >= next_tick_ns) {
          // The frame that reaches a tick is processed before it, as one frame at a time would be.
          lane.on_burst({frames.data() + from, i + 1 - from});
          lane.flush();
          from = i + 1;
          tracker.tick(now_ns);
          lane.expire(now_ns);
          next_tick_ns = now_ns + 1'000'000'000ull;
          lane.flush();
          pump();
        }
        if ((n & 4095) == 0) {
          const auto w = std::chrono::steady_clock::now();
          if (w - last_wall_tick >= std::chrono::seconds(1)) {
            last_wall_tick = w;
            sessions.tick(w);  // storage and reserve checks, as in the daemon
            pump();
          }
        }
      }
      if (from < count) {
        lane.on_burst({frames.data() + from, count - from});
        lane.flush();
      }
    }
  }
  tracker.end_all("capture_end", now_ns);
  lane.flush();
  // Wait for the writers to close every stream (their end marks are in the rings).
  while (!sessions.idle()) {
    pollfd pfd{writers.event_fd(), POLLIN, 0};
    (void)::poll(&pfd, 1, 100);
    pump();
    sessions.tick(std::chrono::steady_clock::now());
    lane.flush();  // a stop in pump() or tick() (a writer error, no_space) pushed an end mark
  }
  pump();
  const double wall_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  lane.stop();
  writers.stop();
  const fileio::WriterPoolStats ws = writers.stats();
  if (Status st = catalog.commit_batch(); !st) log_error("catalog: %s", st.message().c_str());
  catalog.close();
  print_summary(summary, lane, tracker, first_ns, now_ns, wall_s, static_cast<unsigned>(cfg.span_read.size()),
                bad_files, ws);
  ::close(storage_lock);
  ::close(catalog_lock);
  // Calls the storage could not take (no space, write errors, the storage removed): the run
  // did not record everything, and says so in its exit code.
  const SessionCounters& sc = sessions.counters();
  const std::uint64_t refused = tracker.counter(kT_record_refused);
  const std::uint64_t cut = sc.stop_no_space + sc.stop_storage_lost;
  if (refused != 0 || cut != 0 || ws.write_errors != 0) {
    std::fprintf(summary, "incomplete: %llu call(s) not recorded, %llu recording(s) ended early (no space, storage "
                          "lost), %llu write error(s): see the log\n",
                 static_cast<unsigned long long>(refused), static_cast<unsigned long long>(cut),
                 static_cast<unsigned long long>(ws.write_errors));
    return 1;
  }
  return bad_files == cfg.span_read.size() ? 1 : 0;
}

}  // namespace callrec::control::span
