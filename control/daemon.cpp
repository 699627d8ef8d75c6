#include "control/daemon.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "control/dpdk_setup.hpp"
#include "control/event_loop.hpp"
#include "control/http_server.hpp"
#include "control/log.hpp"
#include "control/port_allocator.hpp"
#include "control/session_manager.hpp"
#include "control/upload_server.hpp"
#include "dataplane/dpdk_source.hpp"
#include "dataplane/udp_source.hpp"
#include "control/span/call_tracker.hpp"
#include "control/siprec/siprec_server.hpp"
#include "dataplane/capture/capture.hpp"
#include "dataplane/span/lane_group.hpp"
#include "dataplane/span/span_lane.hpp"
#include "fileio/catalog.hpp"
#include "fileio/writer_pool.hpp"

namespace callrec::control {

namespace {

void metric(std::string& out, const char* name, const char* type, const char* help, std::uint64_t v,
            const char* labels = nullptr) {
  if (type) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type;
    out += '\n';
  }
  out += name;
  if (labels) {
    out += '{';
    out += labels;
    out += '}';
  }
  out += ' ';
  out += std::to_string(v);
  out += '\n';
}

/// One daemon per storage and catalog: an exclusive open-file-description lock on `path`
/// (created), held as long as fd stays open (the process's life; released by the kernel when it
/// dies, even by SIGKILL). The holder's pid is written into the file so a refused start can name
/// it. OFD locks, not the catalog file itself: SQLite's own POSIX locks on the database would
/// conflict with an OFD lock on the same file.
Status take_instance_lock(const std::filesystem::path& path, int& fd) {
  fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Status::from_errno("lock " + path.string());
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  if (::fcntl(fd, F_OFD_SETLK, &fl) != 0) {
    const int e = errno;
    char buf[32] = {};
    const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    ::close(fd);
    fd = -1;
    if (e != EAGAIN && e != EACCES) return Status(e, "lock " + path.string() + ": " + std::strerror(e));
    std::string pid = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string("unknown");
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    if (pid.find_first_not_of("0123456789") != std::string::npos) pid = "unknown";
    return Status(EBUSY, "another callrecd (pid " + pid + ") is running on " + path.string() +
                             ": refusing to start (one daemon per storage and catalog)");
  }
  const std::string text = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size()))
    return Status::from_errno("lock " + path.string() + ": write pid");
  return Status::ok();
}

/// The kernel's UDP NoPorts counters: "Udp: ... NoPorts ..." (a header line, then a values
/// line) in /proc/net/snmp, "Udp6NoPorts N" in /proc/net/snmp6. False if neither is readable.
bool read_udp_noports(std::uint64_t& v4, std::uint64_t& v6) {
  bool any = false;
  if (std::FILE* f = std::fopen("/proc/net/snmp", "re")) {
    char head[1024];
    char vals[1024];
    while (std::fgets(head, sizeof head, f) != nullptr) {
      if (std::strncmp(head, "Udp: ", 5) != 0 || std::fgets(vals, sizeof vals, f) == nullptr) continue;
      // Same column in both lines.
      char* hs = nullptr;
      char* vs = nullptr;
      char* h = strtok_r(head, " \n", &hs);
      char* v = strtok_r(vals, " \n", &vs);
      while (h != nullptr && v != nullptr) {
        if (std::strcmp(h, "NoPorts") == 0) {
          v4 = std::strtoull(v, nullptr, 10);
          any = true;
        }
        h = strtok_r(nullptr, " \n", &hs);
        v = strtok_r(nullptr, " \n", &vs);
      }
      break;
    }
    std::fclose(f);
  }
  if (std::FILE* f = std::fopen("/proc/net/snmp6", "re")) {
    char line[256];
    while (std::fgets(line, sizeof line, f) != nullptr) {
      unsigned long long n = 0;
      if (std::sscanf(line, "Udp6NoPorts %llu", &n) == 1) {
        v6 = n;
        any = true;
        break;
      }
    }
    std::fclose(f);
  }
  return any;
}

}  // namespace

Status acquire_instance_lock(const std::filesystem::path& path, int& fd) { return take_instance_lock(path, fd); }

SessionConfig session_config(const DaemonConfig& cfg) {
  SessionConfig sc;
  sc.storage = cfg.storage;
  sc.rtp_timeout = std::chrono::seconds(cfg.rtp_timeout_s);
  sc.latch = cfg.latch;
  sc.latch_any = cfg.latch_any;
  sc.reserve_bytes = cfg.reserve_mb << 20;
  sc.max_file_bytes = cfg.max_file_mb << 20;
  sc.flush_interval = std::chrono::milliseconds(cfg.flush_ms);
  sc.assembler.reorder_window = static_cast<std::uint16_t>(cfg.reorder_window);
  sc.assembler.max_gap_fill = cfg.max_gap_fill;
  return sc;
}

span::TrackerOptions tracker_options(const DaemonConfig& cfg) {
  span::TrackerOptions to;
  to.max_calls = cfg.span_max_calls;
  to.max_pending = cfg.span_max_pending;
  to.media_timeout_ns = std::uint64_t{cfg.span_media_timeout_s} * 1'000'000'000ull;
  to.assembler = session_config(cfg).assembler;
  return to;
}

struct Daemon::Impl {
  DaemonConfig cfg;
  EventLoop loop;
  fileio::Catalog catalog;
  std::unique_ptr<fileio::WriterPool> writers;
  std::unique_ptr<dataplane::Source> source;
  std::unique_ptr<PortAllocator> ports;
  std::unique_ptr<SessionManager> sessions;
  std::unique_ptr<UploadServer> upload;
  std::unique_ptr<siprec::SiprecServer> siprec;  ///< --siprec-listen / --siprec-tls-listen
  std::unique_ptr<HttpServer> http;
  // Passive capture. Off mirror interfaces (--span-interface): one lane on the control thread,
  // fed by libpcap, its own producer in the writers' ring matrix. Off a DPDK port
  // (--span-dpdk): --span-lanes poll-mode lanes on threads of their own (SpanLaneGroup), each
  // its own producer; the tracker on the control thread takes their SIP every millisecond.
  std::unique_ptr<dataplane::SpanLane> span_lane;
  std::unique_ptr<dataplane::capture::DpdkCapture> span_dpdk;  ///< --span-dpdk (its lanes poll it)
  std::unique_ptr<dataplane::SpanLaneGroup> span_group;        ///< --span-dpdk's lanes
  std::unique_ptr<span::CallTracker> span_tracker;
  std::vector<std::unique_ptr<dataplane::capture::LiveCapture>> span_caps;
  dataplane::capture::FrameBurst span_burst;  ///< frames gathered for SpanLane::on_burst
  void span_drain(dataplane::capture::FrameSource& c);
  int sigfd = -1;
  int storage_lock = -1, catalog_lock = -1;  ///< instance locks, held for the process's life
  bool shutting_down = false;
  std::uint64_t nofile = 0;  ///< RLIMIT_NOFILE soft limit after raising it
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  std::vector<fileio::WriterEvent> events;
  // rates for /status, computed once a second
  std::uint64_t last_rx_packets = 0, last_bytes = 0;
  double rx_pps = 0, write_bps = 0;

  explicit Impl(DaemonConfig c) : cfg(std::move(c)) {}
  Status init();
  Status make_source(const sockaddr_storage& listen_addr);
  void release_source();
  void shutdown();
  void on_tick();
  std::uint64_t disk_free() const;
  HttpResponse metrics() const;
  /// Passive capture's counters (lane, tracker, kernel capture drops); empty without it.
  std::vector<dataplane::SourceCounter> span_counters() const;
  HttpResponse status() const;
  HttpResponse operator_stop(const HttpRequest& r);
};

Daemon::Daemon(DaemonConfig cfg) : impl_(std::make_unique<Impl>(std::move(cfg))) {}
Daemon::~Daemon() = default;

void Daemon::request_stop() {
  Impl* p = impl_.get();
  p->loop.post([p] { p->shutdown(); });
}

std::uint64_t Daemon::Impl::disk_free() const {
  std::uint64_t f = 0;
  if (!fileio::free_space_statvfs(cfg.storage, f)) return 0;
  return f;
}

Status Daemon::Impl::init() {
  set_log_level(parse_log_level(cfg.log_level));
  // Every recording holds a UDP socket and a file, every phone a TCP connection: a 1,024
  // soft limit would cap the daemon near 500 phones. Take what the hard limit allows.
  if (rlimit rl{}; ::getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    if (rl.rlim_cur < rl.rlim_max) {
      rlimit up = rl;
      up.rlim_cur = rl.rlim_max;
      if (::setrlimit(RLIMIT_NOFILE, &up) == 0) rl = up;
    }
    nofile = rl.rlim_cur;
    // Record files keep their descriptor while a quarter of the limit lasts; beyond that they
    // are reopened per write (fileio/record_writer.hpp), so recordings never run out of them.
    fileio::set_record_fd_budget(static_cast<std::int64_t>(std::max<rlim_t>(64, rl.rlim_cur / 4)));
    log_info("descriptors: %llu (about %llu recordings with their phones); raise LimitNOFILE for more",
             static_cast<unsigned long long>(rl.rlim_cur), static_cast<unsigned long long>(rl.rlim_cur / 3));
  }
  std::error_code ec;
  std::filesystem::create_directories(cfg.storage, ec);
  if (ec) return Status(ec.value(), "storage " + cfg.storage.string() + ": " + ec.message());
  if (!cfg.catalog.parent_path().empty()) std::filesystem::create_directories(cfg.catalog.parent_path(), ec);
  // Before the catalog is opened or recovery touches a file: a second daemon on the same
  // storage or catalog would mark the first's live recordings recovered and repair their files.
  if (Status st = take_instance_lock(cfg.storage / ".callrecd.lock", storage_lock); !st) return st;
  if (Status st = take_instance_lock(cfg.catalog.string() + ".lock", catalog_lock); !st) return st;
  if (Status st = catalog.open(cfg.catalog); !st) return st;
  std::string report;
  if (const std::size_t n = SessionManager::recover(catalog, cfg.storage, &report); n > 0)
    log_info("recovered %zu recording(s) left open by an earlier run", n);

  sockaddr_storage listen_addr{};
  if (Status st = parse_endpoint(cfg.listen, listen_addr); !st) return st;
  if (Status st = make_source(listen_addr); !st) return st;

  const bool span_pcap = !cfg.span_interfaces.empty(), span_mirror = !cfg.span_dpdk.empty();
  const bool span = span_pcap || span_mirror;
  fileio::WriterPoolOptions wo;
  wo.writers = writer_threads(cfg, false);
  // several sources feed one writer pool, each on producers of its own
  wo.producers = source->rx_threads() + (span_pcap ? 1 : 0) + (span_mirror ? cfg.span_lanes : 0);
  writers = std::make_unique<fileio::WriterPool>(wo);
  writers->start();
  if (Status st = source->start(writers->rings()); !st) {
    return cfg.source == SourceKind::kDpdk ? Status(st.code(), "--source dpdk: " + st.message()) : st;
  }
  if (span_pcap) {
    dataplane::SpanLaneOptions lo;
    lo.producer = source->rx_threads();
    lo.lossless = false;  // live: a full ring drops (counted) rather than stall the control thread
    lo.limits.max_datagrams = cfg.span_max_fragments;
    lo.limits.max_tcp_streams = cfg.span_max_tcp_streams;
    span_lane = std::make_unique<dataplane::SpanLane>(lo);
    if (Status st = span_lane->start(writers->rings()); !st) return st;
  }
  if (span_mirror) {
    dataplane::capture::DpdkCaptureOptions dopts;
    std::string word;
    for (char ch : cfg.dpdk.eal + " ") {
      if (ch == ' ' || ch == '\t') {
        if (!word.empty()) dopts.eal_args.push_back(word);
        word.clear();
      } else {
        word += ch;
      }
    }
    dopts.port = cfg.span_dpdk;
    dopts.lanes = cfg.span_lanes;
    Status st;
    span_dpdk = dataplane::capture::DpdkCapture::open(dopts, st);
    if (!span_dpdk) return st;
    dataplane::LaneGroupOptions go;
    go.lanes = cfg.span_lanes;
    go.first_producer = source->rx_threads();
    go.lane.limits.max_datagrams = cfg.span_max_fragments;
    go.lane.limits.max_tcp_streams = cfg.span_max_tcp_streams;
    go.idle_sleep_us = cfg.dpdk.idle_sleep_us;
    dataplane::capture::DpdkCapture* cap = span_dpdk.get();
    span_group = std::make_unique<dataplane::SpanLaneGroup>(
        go, [cap](unsigned lane, dataplane::capture::Frame* out, unsigned max) { return cap->lane_burst(lane, out, max); },
        [cap](unsigned) { cap->register_lane_thread(); });
    if (Status gst = span_group->start(writers->rings()); !gst) return gst;
    log_info("span: capturing on DPDK port %s, %u lane(s)", span_dpdk->port().c_str(), cfg.span_lanes);
  }

  PortAllocatorOptions po;
  po.lo = cfg.rtp_port_lo;
  po.hi = cfg.rtp_port_hi;
  po.even_only = !cfg.rtp_all_ports;
  po.quarantine = std::chrono::seconds(cfg.port_quarantine_s);
  ports = std::make_unique<PortAllocator>(po);

  sessions = std::make_unique<SessionManager>(session_config(cfg), catalog, *writers, *source, *ports);
  if (span) {
    dataplane::SpanControl& lanes = span_group ? static_cast<dataplane::SpanControl&>(*span_group) : *span_lane;
    span_tracker = std::make_unique<span::CallTracker>(tracker_options(cfg), *sessions, lanes);
    if (span_lane) span_lane->set_sink(span_tracker.get());
    for (const std::string& iface : cfg.span_interfaces) {
      dataplane::capture::LiveOptions lo;
      lo.interface = iface;
      lo.filter = cfg.span_filter;
      lo.buffer_bytes = std::size_t{cfg.span_buffer_mb} << 20;
      Status st;
      auto cap = dataplane::capture::LiveCapture::open(lo, st);
      if (!cap) return st;
      dataplane::capture::LiveCapture* c = cap.get();
      if (Status ast = loop.add_fd(c->fd(), EPOLLIN, [this, c](std::uint32_t) { span_drain(*c); }); !ast) return ast;
      log_info("span: capturing on %s%s%s", iface.c_str(), cfg.span_filter.empty() ? "" : " filter ",
               cfg.span_filter.c_str());
      span_caps.push_back(std::move(cap));
    }
    if (span_group)  // the lanes' SIP, digits and stream statistics, every millisecond
      loop.add_timer(std::chrono::milliseconds(1), [this] { span_group->poll_events(*span_tracker); }, true);

  }

  if (Status st = loop.add_fd(writers->event_fd(), EPOLLIN, [this](std::uint32_t) {
        events.clear();
        while (writers->poll_events(events)) {
          sessions->on_writer_events(events);
          events.clear();
        }
        if (shutting_down && sessions->idle()) loop.stop();
      });
      !st)
    return st;
  loop.add_timer(std::chrono::seconds(1), [this] { on_tick(); }, true);

  UploadServerOptions uo;
  uo.listen = listen_addr;
  uo.advertise = cfg.advertise;
  uo.max_connections = cfg.max_connections;
  if (uo.max_connections == 0) {
    // Auto: keep 64 descriptors for the daemon itself and the operator's endpoint, and give
    // phones' connections at most a third of the rest, so that the recordings those phones ask
    // for (a socket and a file each with the kernel source) still find descriptors.
    const std::uint64_t usable = nofile > 64 + 48 ? nofile - 64 : 48;
    uo.max_connections = static_cast<std::size_t>(std::max<std::uint64_t>(16, usable / 3));
  }
  log_info("control: at most %zu connections (%u per address), %u recordings per address",
           uo.max_connections, cfg.max_connections_per_address, cfg.max_recordings_per_address);
  uo.max_per_address = cfg.max_connections_per_address;
  uo.max_recordings_per_address = cfg.max_recordings_per_address;
  uo.quiet_flush = std::chrono::milliseconds(cfg.control_quiet_ms);
  uo.max_message = cfg.max_message;
  // Group commit: catalog writes of one event-loop iteration share one transaction, committed
  // before that iteration's responses go out (an answered start is always in the catalog).
  uo.defer_flush = true;
  upload = std::make_unique<UploadServer>(loop, *sessions, uo);
  if (Status st = upload->listen(); !st) return st;
  if (!cfg.siprec_listen.empty() || !cfg.siprec_tls_listen.empty()) {
    siprec::SiprecOptions so;
    for (const std::string& e : cfg.siprec_listen) {
      sockaddr_storage a{};
      if (Status st = parse_endpoint(e, a); !st) return st;
      so.listen.push_back(a);
    }
    for (const std::string& e : cfg.siprec_tls_listen) {
      sockaddr_storage a{};
      if (Status st = parse_endpoint(e, a); !st) return st;
      so.tls_listen.push_back(a);
    }
    so.tls.cert = cfg.siprec_tls_cert;
    so.tls.key = cfg.siprec_tls_key;
    so.tls.ca = cfg.siprec_tls_ca;
    so.max_sessions = cfg.siprec_max_sessions;
    so.t1 = std::chrono::milliseconds(cfg.siprec_t1_ms);
    so.t2 = std::max(so.t2, 8 * so.t1);
    so.media_address = cfg.siprec_media_address.empty() && !cfg.advertise.empty() ? cfg.advertise
                                                                                   : cfg.siprec_media_address;
    // SIPREC connections share the descriptor budget with phones' connections.
    so.transport.max_connections = std::max<std::size_t>(16, uo.max_connections / 4);
    so.defer_flush = true;  // the answer leaves after the catalog commit, like uploads'
    siprec = std::make_unique<siprec::SiprecServer>(loop, *sessions, *ports, so);
    if (Status st = siprec->start(); !st) return st;
    std::string where;
    for (const std::string& e : cfg.siprec_listen) where += (where.empty() ? "" : ", ") + e + " (UDP, TCP)";
    for (const std::string& e : cfg.siprec_tls_listen) where += (where.empty() ? "" : ", ") + e + " (TLS" +
                                                            (cfg.siprec_tls_ca.empty() ? ")" : ", mutual)");
    log_info("siprec: recording server on %s", where.c_str());
  }
  catalog.set_group_commit(true);
  loop.set_after_batch([this] {
    if (Status st = catalog.commit_batch(); !st) log_error("catalog: %s", st.message().c_str());
    upload->flush_pending();
    if (siprec) siprec->flush_pending();
  });

  if (!cfg.metrics.empty()) {
    sockaddr_storage ma{};
    if (Status st = parse_endpoint(cfg.metrics, ma); !st) return st;
    HttpServerOptions ho;
    ho.max_connections = cfg.metrics_max_connections;
    http = std::make_unique<HttpServer>(loop, ho);
    if (Status st = http->listen(ma); !st) return st;
    http->route("/metrics", [this](const HttpRequest&) { return metrics(); });
    http->route("/status", [this](const HttpRequest&) { return status(); });
    http->route("/stop", [this](const HttpRequest& r) { return operator_stop(r); });
  }

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigfd = ::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sigfd < 0) return Status::from_errno("signalfd");
  loop.add_fd(sigfd, EPOLLIN, [this](std::uint32_t) {
    signalfd_siginfo si{};
    while (::read(sigfd, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
      log_info("signal %s: shutting down", strsignal(static_cast<int>(si.ssi_signo)));
      shutdown();
    }
  });

  const std::string control_ep =
      format_ip(listen_addr).find(':') != std::string::npos
          ? "[" + format_ip(listen_addr) + "]:" + std::to_string(upload->local_port())
          : format_ip(listen_addr) + ":" + std::to_string(upload->local_port());
  log_info("ready: control=%s rtp=%u-%u metrics=%s source=%s rx_threads=%u writers=%u storage=%s catalog=%s",
           control_ep.c_str(), cfg.rtp_port_lo, cfg.rtp_port_hi,
           http ? http->local_endpoint().c_str() : "off",
           std::string(source_name(cfg.source)).c_str(), source->rx_threads(), writers->writers(),
           cfg.storage.c_str(), cfg.catalog.c_str());
  return {};
}

/// Creates (does not start) the packet source. With DPDK this initialises EAL and the port, and
/// moves the control thread -- and so the writer threads it creates next -- off the RX lcores'
/// CPUs.
Status Daemon::Impl::make_source(const sockaddr_storage& listen_addr) {
  if (cfg.source == SourceKind::kDpdk) {
#ifdef CALLREC_HAVE_DPDK
    dataplane::DpdkSource::Options o;
    if (Status st = make_dpdk_options(cfg, allowed_cpus(), o); !st) return st;
    o.max_stream_pps = cfg.max_stream_pps;
    o.stream_burst = cfg.stream_burst;
    std::string eal;
    for (const auto& a : o.eal_args) eal += (eal.empty() ? "" : " ") + a;
    log_info("dpdk: EAL arguments: %s", eal.c_str());
    auto dp = std::make_unique<dataplane::DpdkSource>(std::move(o));
    if (!dp->status()) {
      const Status st = dp->status();
      dp.reset();
      const std::string port = cfg.dpdk.vdev.empty() ? "--dpdk-port " + std::to_string(cfg.dpdk.port)
                                                     : "--dpdk-vdev " + cfg.dpdk.vdev;
      return Status(st.code(), "--source dpdk: " + st.message() + " [" + port + ", --dpdk-eal '" + cfg.dpdk.eal +
                                   "'; EAL's own messages above say more]");
    }
    const std::vector<unsigned> rx_cpus = dp->rx_cpus();
    const std::vector<unsigned> rest = keep_off_cpus(rx_cpus);
    if (rest.empty()) {
      log_warn("dpdk: no CPU left besides the RX lcores' (%s): writer threads share them",
               format_cpu_list(rx_cpus).c_str());
    } else {
      log_info("dpdk: RX lcores on CPU(s) %s; control and writer threads on CPU(s) %s",
               format_cpu_list(rx_cpus).c_str(), format_cpu_list(rest).c_str());
    }
    log_info("dpdk: port %s (id %u, mac %s), %s, address(es) %s, advertised server=%s", cfg.dpdk.vdev.empty() ? std::to_string(cfg.dpdk.port).c_str() : cfg.dpdk.vdev.c_str(),
             static_cast<unsigned>(dp->port_id()), dp->mac_address().c_str(), dp->describe().c_str(),
             cfg.dpdk.address.c_str(), cfg.advertise.c_str());
    if (!cfg.dpdk.address6.empty()) {
      log_info("dpdk: IPv6 address(es) %s (neighbour discovery and ICMPv6 echo only)", cfg.dpdk.address6.c_str());
    }
    // EAL serves its telemetry socket unless --dpdk-eal has --no-telemetry (--no-shconf and
    // --in-memory keep it); "/callrec/stats" there has the dataplane counters.
    if (const std::string tel = dataplane::dpdk_telemetry_socket(); tel.empty()) {
      log_info("dpdk: telemetry off (no socket in the EAL runtime directory)");
    } else {
      log_info("dpdk: telemetry socket %s (dpdk-telemetry.py; command /callrec/stats)", tel.c_str());
    }
    source = std::move(dp);
    return Status::ok();
#else
    (void)listen_addr;
    return Status::error("--source dpdk: this build has no DPDK support (libdpdk was not found)");
#endif
  }
  dataplane::UdpSource::Options so;
  so.rx_threads = cfg.rx_threads;
  so.max_stream_pps = cfg.max_stream_pps;
  so.stream_burst = cfg.stream_burst;
  // RTP sockets bind the same address family and address as the control listener.
  so.bind_address = listen_addr;
  if (so.bind_address.ss_family == AF_INET) reinterpret_cast<sockaddr_in*>(&so.bind_address)->sin_port = 0;
  else reinterpret_cast<sockaddr_in6*>(&so.bind_address)->sin6_port = 0;
  source = std::make_unique<dataplane::UdpSource>(so);
  return Status::ok();
}

/// Stops and destroys the source after everything that refers to it, then (DPDK) closes the
/// ports and releases EAL's memory with rte_eal_cleanup().
void Daemon::Impl::release_source() {
  if (source) source->stop();
  http.reset();
  upload.reset();
  siprec.reset();
  sessions.reset();
  source.reset();
#ifdef CALLREC_HAVE_DPDK
  if (cfg.source == SourceKind::kDpdk) {
    if (Status st = dataplane::dpdk_eal_cleanup(); !st) log_error("%s", st.message().c_str());
  }
#endif
}

void Daemon::Impl::span_drain(dataplane::capture::FrameSource& c) {
  // A bounded batch per event-loop pass: the control protocol is served between batches. The
  // lane takes the frames in bursts, as it does from capture files.
  dataplane::capture::Frame f;
  for (unsigned i = 0; i < 8192; ++i) {
    const int rc = c.next(f);
    if (rc == 0) break;
    if (rc < 0) {
      log_error("span: capture: %s", c.error().c_str());
      break;
    }
    span_lane->gather(span_burst, f);
    if (span_burst.full()) span_lane->run_burst(span_burst);
  }
  span_lane->run_burst(span_burst);
}

void Daemon::Impl::on_tick() {
  if (span_tracker) {
    // Live: packet time is the capture clock, which is this host's real-time clock.
    const auto now_ns = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
    for (auto& c : span_caps) span_drain(*c);
    if (span_group) span_group->poll_events(*span_tracker);
    span_tracker->tick(now_ns);
    if (span_lane) {
      span_lane->expire(now_ns);
      span_lane->flush();
    }
  }
  sessions->tick(std::chrono::steady_clock::now());
  // Writes a full disk kept from the catalog are retried; its reserve file comes back with space.
  if (Status st = catalog.maintain(); !st) log_error("catalog: %s", st.message().c_str());
  const auto ss = source->stats();
  const auto ws = writers->stats();
  rx_pps = static_cast<double>(ss.rx_packets - last_rx_packets);
  write_bps = static_cast<double>(ws.bytes_written - last_bytes);
  last_rx_packets = ss.rx_packets;
  last_bytes = ws.bytes_written;
}

void Daemon::Impl::shutdown() {
  if (shutting_down) return;
  shutting_down = true;
  if (upload) upload->stop_listening();
  if (span_tracker) {
    // The lanes stop reading and report every stream first: the catalog rows are complete.
    if (span_group && !span_group->quiesce(*span_tracker, std::chrono::seconds(2)))
      log_error("span: a lane did not answer within 2 s; its last statistics may be missing");
    span_tracker->end_all("shutdown", static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count()));
    if (span_lane) span_lane->flush();
  }
  if (sessions) {
    sessions->stop_all("shutdown");
    if (sessions->idle()) loop.stop();
  } else {
    loop.stop();
  }
  // Bounded: a writer stuck on a dead disk must not keep the daemon from exiting.
  loop.add_timer(std::chrono::seconds(15), [this] {
    log_error("shutdown: %zu recording(s) did not finish in 15 s; exiting anyway", sessions->active());
    loop.stop();
  });
}

std::vector<dataplane::SourceCounter> Daemon::Impl::span_counters() const {
  std::vector<dataplane::SourceCounter> out;
  if (!span_tracker) return out;
  out = span_group ? span_group->counters() : span_lane->counters();
  for (unsigned i = 0; i < span::kTrackerCounterCount; ++i)
    out.push_back({"span_" + std::string(span::kTrackerCounterInfo[i].name), std::string(span::kTrackerCounterInfo[i].help),
                   span_tracker->counter(static_cast<span::TrackerCounter>(i)), false});
  out.push_back({"span_calls_active", "calls followed now (answered or ringing)", span_tracker->calls(), true});
  out.push_back({"span_invites_pending", "INVITEs without a response held now", span_tracker->pending(), true});
  std::uint64_t recv = 0, drop = 0, ifdrop = 0;
  for (const auto& c : span_caps) {
    std::uint64_t r = 0, d = 0, i = 0;
    if (c->kernel_stats(r, d, i)) {
      recv += r;
      drop += d;
      ifdrop += i;
    }
  }
  if (span_dpdk) {
    std::uint64_t missed = 0, nombuf = 0;
    span_dpdk->nic_stats(missed, nombuf);
    out.push_back({"span_dpdk_imissed", "frames the --span-dpdk NIC dropped: its RX ring was full", missed, false});
    out.push_back({"span_dpdk_rx_nombuf", "frames the --span-dpdk port dropped: no mbuf", nombuf, false});
    out.push_back({"span_dpdk_spread_dropped", "frames lane 0 could not hand to another lane: its ring was full",
                   span_dpdk->spread_dropped(), false});
    out.push_back({"span_dpdk_spread_waits", "times lane 0 left the port unread: another lane's ring was full",
                   span_dpdk->spread_waits(), false});
  }
  out.push_back({"span_kernel_received", "frames the kernel captured for --span-interface (pcap_stats)", recv, false});
  out.push_back({"span_kernel_dropped", "frames the kernel dropped: capture buffer full (pcap_stats)", drop, false});
  out.push_back({"span_interface_dropped", "frames the interface dropped (pcap_stats)", ifdrop, false});
  return out;
}

HttpResponse Daemon::Impl::metrics() const {
  std::string o;
  const auto& sc = sessions->counters();
  const auto& uc = upload->counters();
  const auto ss = source->stats();
  const auto ws = writers->stats();
  metric(o, "callrec_recordings_active", "gauge", "Recordings in progress.", sessions->active());
  metric(o, "callrec_recordings_started_total", "counter", "Recordings started.", sc.started);
  metric(o, "callrec_recordings_start_failed_total", "counter", "Start requests refused.", uc.start_failed);
  metric(o, "callrec_recordings_start_refused_total", "counter", "Starts refused by the session manager, by cause.", sc.no_port, "cause=\"no_port\"");
  metric(o, "callrec_recordings_start_refused_total", nullptr, nullptr, sc.overloaded, "cause=\"overloaded\"");
  metric(o, "callrec_control_rejected_connections_total", "counter", "Connections closed at accept: --max-connections reached or no descriptor left.", uc.rejected);
  metric(o, "callrec_recordings_stopped_total", "counter", "Recordings finished, by stop reason.", sc.stop_by_peer, "reason=\"phone\"");
  metric(o, "callrec_recordings_stopped_total", nullptr, nullptr, sc.stop_no_space, "reason=\"no_space\"");
  metric(o, "callrec_recordings_stopped_total", nullptr, nullptr, sc.stop_rtp_timeout, "reason=\"rtp_timeout\"");
  metric(o, "callrec_recordings_stopped_total", nullptr, nullptr, sc.stop_shutdown, "reason=\"shutdown\"");
  metric(o, "callrec_recordings_stopped_total", nullptr, nullptr, sc.stop_operator, "reason=\"operator\"");
  metric(o, "callrec_recordings_stopped_total", nullptr, nullptr, sc.stop_disconnect, "reason=\"disconnect\"");
  metric(o, "callrec_recordings_stopped_total", nullptr, nullptr, sc.stop_error, "reason=\"error\"");
  metric(o, "callrec_recordings_stopped_total", nullptr, nullptr, sc.stop_storage_lost, "reason=\"storage_lost\"");
  const auto cs = catalog.stats();
  metric(o, "callrec_catalog_commit_failures_total", "counter", "Catalog batches that could not be committed (disk full, I/O error); their writes are kept and retried.", cs.commit_failures);
  metric(o, "callrec_catalog_pending_writes", "gauge", "Catalog writes kept after a failed commit, not in the database yet.", cs.pending_writes);
  metric(o, "callrec_catalog_replayed_writes_total", "counter", "Kept catalog writes committed by a retry.", cs.replayed_writes);
  metric(o, "callrec_catalog_dropped_writes_total", "counter", "Kept catalog writes that could no longer apply.", cs.dropped_writes);
  metric(o, "callrec_catalog_reserve_releases_total", "counter", "Times the catalog's reserve file was given up so a commit could succeed on a full volume.", cs.ballast_releases);
  metric(o, "callrec_catalog_reserve_present", "gauge", "1 when the catalog's reserve file is in place.", cs.ballast_present ? 1 : 0);
  metric(o, "callrec_reserve_stops_total", "counter", "Recordings stopped with no_space because free space fell below --reserve-mb.", sc.reserve_stops);
  metric(o, "callrec_storage_lost_total", "counter", "Times the storage or a device directory was found removed or replaced while recording.", sc.storage_lost);
  metric(o, "callrec_control_stalls_total", "counter", "Stalls of the daemon itself (ticks far apart) that restarted the RTP timeouts.", sc.stalls);
  metric(o, "callrec_stop_overrides_ignored_total", "counter", "Stop-request fields naming server-owned values (device, codec, peer, dir ...), ignored.", sc.stop_overrides_ignored);
  metric(o, "callrec_control_connections", "gauge", "Open control connections.", upload->connections());
  if (siprec) {
    metric(o, "callrec_siprec_sessions", "gauge", "SIPREC recording sessions (dialogs) now.", siprec->sessions());
    metric(o, "callrec_siprec_connections", "gauge", "SIPREC TCP/TLS connections now.", siprec->connections());
    metric(o, "callrec_siprec_transactions", "gauge", "SIPREC server transactions held now.", siprec->transactions());
#define CALLREC_X(name, help) \
  metric(o, "callrec_siprec_" #name "_total", "counter", "SIPREC: " help ".", siprec->counters().name);
    CALLREC_SIPREC_COUNTERS(CALLREC_X)
#undef CALLREC_X
    const auto& t = siprec->transport_counters();
    const std::pair<const char*, std::uint64_t> tc[] = {
        {"callrec_siprec_udp_datagrams_total", t.udp_datagrams}, {"callrec_siprec_udp_oversize_total", t.udp_oversize},
        {"callrec_siprec_tcp_accepted_total", t.tcp_accepted},   {"callrec_siprec_tls_accepted_total", t.tls_accepted},
        {"callrec_siprec_conn_refused_total", t.conn_refused},   {"callrec_siprec_conn_closed_total", t.conn_closed},
        {"callrec_siprec_framing_errors_total", t.framing_errors},
        {"callrec_siprec_input_overflow_total", t.input_overflow},
        {"callrec_siprec_output_overflow_total", t.output_overflow},
        {"callrec_siprec_tls_handshake_failures_total", t.handshake_failures},
        {"callrec_siprec_tls_handshake_timeouts_total", t.handshake_timeouts},
        {"callrec_siprec_idle_closed_total", t.idle_closed},     {"callrec_siprec_send_failures_total", t.send_failures},
        {"callrec_siprec_keepalives_total", t.keepalives}};
    for (const auto& [n, v] : tc) metric(o, n, "counter", "SIPREC transport counter (control/siprec/sip_transport.hpp).", v);
  }
  metric(o, "callrec_control_messages_total", "counter", "Control messages received.", uc.messages);
  metric(o, "callrec_control_garbage_total", "counter", "Control messages that were not requests.", uc.garbage);
  metric(o, "callrec_control_bad_requests_total", "counter", "Requests refused as malformed.", uc.bad_request);
  metric(o, "callrec_control_dropped_connections_total", "counter", "Connections dropped for oversized messages or unread output.", uc.overflow + uc.output_overflow);
  metric(o, "callrec_control_backpressure_total", "counter", "Times a connection stopped being read until its peer read its responses.", uc.backpressure);
  metric(o, "callrec_control_evicted_idle_total", "counter", "Idle connections without a recording closed to free a descriptor.", uc.evicted_idle);
  metric(o, "callrec_control_refused_total", "counter", "Connections and starts refused by per-address limits.", uc.per_address_rejected, "limit=\"connections_per_address\"");
  metric(o, "callrec_control_refused_total", nullptr, nullptr, uc.per_address_recordings_refused, "limit=\"recordings_per_address\"");
  metric(o, "callrec_control_max_connections", "gauge", "The control connection cap in force.", upload->options().max_connections);
  if (http) {
    const auto& hc = http->counters();
    metric(o, "callrec_http_connections", "gauge", "Open connections to this endpoint.", http->connections());
    metric(o, "callrec_http_closed_total", "counter", "Operator-endpoint connections closed early, by cause.", hc.timeouts, "cause=\"timeout\"");
    metric(o, "callrec_http_closed_total", nullptr, nullptr, hc.replaced, "cause=\"replaced\"");
    metric(o, "callrec_http_closed_total", nullptr, nullptr, hc.shed, "cause=\"no_descriptor\"");
    metric(o, "callrec_http_reserved_descriptor_total", "counter", "Requests served on a descriptor kept in reserve.", hc.reserved_used);
  }
  metric(o, "callrec_rx_packets_total", "counter", "Packets received by the dataplane.", ss.rx_packets);
  metric(o, "callrec_rx_bytes_total", "counter", "Bytes received by the dataplane.", ss.rx_bytes);
  metric(o, "callrec_rx_dropped_total", "counter", "Packets dropped by the dataplane, by cause.", ss.ring_full, "cause=\"ring_full\"");
  metric(o, "callrec_rx_dropped_total", nullptr, nullptr, ss.unknown_flow, "cause=\"unknown_flow\"");
  metric(o, "callrec_rx_dropped_total", nullptr, nullptr, ss.wrong_source, "cause=\"wrong_source\"");
  metric(o, "callrec_rx_dropped_total", nullptr, nullptr, ss.not_rtp, "cause=\"not_rtp\"");
  metric(o, "callrec_rx_dropped_total", nullptr, nullptr, ss.policed, "cause=\"policed\"");
  metric(o, "callrec_rx_errors_total", "counter", "Receive system-call errors.", ss.rx_errors);
  for (const auto& c : source->counters()) {
    const std::string name = "callrec_" + c.name + (c.gauge ? "" : "_total");
    metric(o, name.c_str(), c.gauge ? "gauge" : "counter", c.help.c_str(), c.value);
  }
  for (const auto& c : span_counters()) {
    const std::string name = "callrec_" + c.name + (c.gauge ? "" : "_total");
    metric(o, name.c_str(), c.gauge ? "gauge" : "counter", c.help.c_str(), c.value);
  }
  metric(o, "callrec_writer_packets_total", "counter", "Packets consumed by writer threads.", ws.packets);
  metric(o, "callrec_writer_bytes_total", "counter", "Bytes written to record files.", ws.bytes_written);
  metric(o, "callrec_writer_errors_total", "counter", "Write errors.", ws.write_errors);
  metric(o, "callrec_writer_unknown_stream_total", "counter", "Packets for streams no writer owns.", ws.unknown_stream);
  metric(o, "callrec_assembler_dropped_total", "counter",
         "RTP packets the writers' assemblers dropped, by cause: invalid (not RTP v2, bogus padding, empty "
         "payload), other_payload (not PCMU/PCMA), format_flap (a format change that did not last), "
         "segment_limit (a format change over the per-stream segment cap), srtp (SRTP authentication or "
         "replay check failed, or no key).",
         ws.assembler.invalid, "cause=\"invalid\"");
  metric(o, "callrec_assembler_dropped_total", nullptr, nullptr, ws.assembler.other_payload, "cause=\"other_payload\"");
  metric(o, "callrec_assembler_dropped_total", nullptr, nullptr, ws.assembler.format_flaps, "cause=\"format_flap\"");
  metric(o, "callrec_assembler_dropped_total", nullptr, nullptr, ws.assembler.segment_limited, "cause=\"segment_limit\"");
  metric(o, "callrec_assembler_dropped_total", nullptr, nullptr, ws.assembler.srtp_failed, "cause=\"srtp\"");
  metric(o, "callrec_assembler_unbacked_jumps_total", "counter",
         "Sequence gaps not filled with silence because the packets' arrival times did not back them.",
         ws.assembler.unbacked_jumps);
  metric(o, "callrec_assembler_segments_total", "counter", "Record file segments begun by format (first + changes).",
         ws.assembler.segments);
  if (cfg.source == SourceKind::kKernel) {
    // A port no recording holds has no socket with the kernel source, so its packets never
    // reach us; the kernel counts them (system-wide, every UDP port of the host).
    std::uint64_t v4 = 0;
    std::uint64_t v6 = 0;
    if (read_udp_noports(v4, v6)) {
      metric(o, "callrec_host_udp_noports_total", "counter",
             "Host-wide UDP datagrams to a port with no socket (kernel Udp: NoPorts, /proc/net/snmp[6]): "
             "includes RTP to ports no recording holds, and any other port of the host.",
             v4, "family=\"ipv4\"");
      metric(o, "callrec_host_udp_noports_total", nullptr, nullptr, v6, "family=\"ipv6\"");
    }
  }
  metric(o, "callrec_ports_in_use", "gauge", "RTP ports allocated.", ports->in_use());
  metric(o, "callrec_ports_available", "gauge", "RTP ports free to allocate now.", ports->available(std::chrono::steady_clock::now()));
  metric(o, "callrec_disk_free_bytes", "gauge", "Free bytes on the storage volume.", disk_free());
  return {200, "text/plain; version=0.0.4", o};
}

HttpResponse Daemon::Impl::status() const {
  const auto ss = source->stats();
  const auto ws = writers->stats();
  const auto& sc = sessions->counters();
  std::string o = "{\"source\":\"" + std::string(source_name(cfg.source)) + "\",";
  auto kv = [&](const char* k, std::uint64_t v) {
    o += '"';
    o += k;
    o += "\":";
    o += std::to_string(v);
    o += ',';
  };
  kv("uptime_s", static_cast<std::uint64_t>(
                     std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started).count()));
  kv("active_recordings", sessions->active());
  kv("control_connections", upload->connections());
  if (siprec) {
    kv("siprec_sessions", siprec->sessions());
    kv("siprec_connections", siprec->connections());
#define CALLREC_X(name, help) kv("siprec_" #name, siprec->counters().name);
    CALLREC_SIPREC_COUNTERS(CALLREC_X)
#undef CALLREC_X
  }
  kv("started", sc.started);
  kv("start_failed", upload->counters().start_failed);
  kv("stopped", sc.stopped);
  kv("rx_packets", ss.rx_packets);
  kv("rx_packets_per_s", static_cast<std::uint64_t>(rx_pps));
  kv("write_bytes_per_s", static_cast<std::uint64_t>(write_bps));
  kv("bytes_written", ws.bytes_written);
  kv("drop_ring_full", ss.ring_full);
  kv("drop_unknown_flow", ss.unknown_flow);
  kv("drop_wrong_source", ss.wrong_source);
  kv("drop_not_rtp", ss.not_rtp);
  kv("drop_policed", ss.policed);
  for (const auto& c : source->counters()) kv(c.name.c_str(), c.value);
  for (const auto& c : span_counters()) kv(c.name.c_str(), c.value);
  kv("write_errors", ws.write_errors);
  kv("disk_free_bytes", disk_free());
  kv("ports_in_use", ports->in_use());
  {
    std::error_code ec;
    const auto abs = std::filesystem::absolute(cfg.catalog, ec);
    o += "\"catalog\":\"" + fileio::json_escape((ec ? cfg.catalog : abs).string()) + "\",";
  }
  o += "\"recordings\":[";
  bool first = true;
  std::size_t n = 0;
  for (const auto& r : sessions->list()) {
    if (++n > 1000) break;
    if (!first) o += ',';
    first = false;
    o += "{\"handle\":" + std::to_string(r.handle) + ",\"kind\":\"" + ingest_name(r.kind) + "\",\"call_id\":\"" +
         fileio::json_escape(r.meta.call_id) + "\",\"device\":\"" + fileio::json_escape(r.meta.device) +
         "\",\"peer\":\"" + fileio::json_escape(r.peer) + "\",\"remote_number\":\"" +
         fileio::json_escape(r.meta.remote_number) + "\",\"local_number\":\"" +
         fileio::json_escape(r.meta.local_number) + "\",\"port\":" + std::to_string(r.ports.empty() ? 0 : r.ports[0]) +
         ",\"started_ms\":" + std::to_string(r.started_ms) + ",\"packets\":" + std::to_string(r.packets) +
         ",\"bytes\":" + std::to_string(r.bytes) + ",\"stopping\":" + (r.stopping ? "true" : "false") + "}";
  }
  o += "]}\n";
  return {200, "application/json", o};
}

HttpResponse Daemon::Impl::operator_stop(const HttpRequest& r) {
  if (r.method != "POST") return {405, "text/plain", "use POST /stop?handle=N\n"};
  auto it = r.query.find("handle");
  if (it == r.query.end()) return {400, "text/plain", "missing handle\n"};
  // Decimal digits only: strtoull would take "-1" (as 2^64-1), "+1", " 1" and stop at a
  // decoded NUL ("1%00zz").
  const std::string& text = it->second;
  unsigned long long h = 0;
  bool valid = !text.empty() && text.size() <= 19;
  for (const char ch : text) {
    if (ch < '0' || ch > '9') valid = false;
    else h = h * 10 + static_cast<unsigned>(ch - '0');
  }
  if (!valid || h == 0) return {400, "text/plain", "bad handle: expected a decimal recording handle\n"};
  if (!sessions->stop(h, {}, "operator", true)) return {404, "text/plain", "no such active recording\n"};
  log_info("operator stop: handle=%llu", h);
  return {200, "text/plain", "stopping\n"};
}

int Daemon::run() {
  Impl& d = *impl_;
  ::signal(SIGPIPE, SIG_IGN);
  // Block the shutdown signals before any thread starts (threads inherit the mask), so they
  // are only ever read from the signalfd on the control thread.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  if (Status st = d.init(); !st) {
    log_error("%s", st.message().c_str());
    if (d.source) d.source->stop();
    if (d.span_group) d.span_group->stop();
    if (d.writers) d.writers->stop();
    d.span_dpdk.reset();
    d.release_source();
    return 1;
  }
  const Status st = d.loop.run();
  if (!st) log_error("event loop: %s", st.message().c_str());
  // Phones get their RecordStopRequest before the connections close.
  if (Status cs = d.catalog.retry_pending(); !cs) log_error("catalog: %s", cs.message().c_str());
  d.upload->flush_pending();
  d.upload->close_all();
  if (d.siprec) {
    d.siprec->flush_pending();
    d.siprec->stop();
  }
  d.source->stop();   // end marks for anything still installed
  if (d.span_lane) d.span_lane->stop();
  // The lanes' end marks, then their threads end. The group itself stays: the writers' last
  // events (below) reach SessionManager::finish, which asks a recording's source for its flow
  // statistics.
  if (d.span_group) d.span_group->stop();
  d.span_dpdk.reset();  // port stopped and closed before EAL goes (the lanes are joined)
  d.writers->stop();  // final flush of every file
  d.events.clear();
  while (d.writers->poll_events(d.events)) {
    d.sessions->on_writer_events(d.events);
    d.events.clear();
  }
  if (d.http) d.http->close();
  const std::uint64_t recorded = d.sessions->counters().stopped;
  d.release_source();  // DPDK: ports closed, rte_eal_cleanup()
  // The final states of the recordings that ended during shutdown; kept writes retried.
  if (Status cs = d.catalog.retry_pending(); !cs)
    log_error("catalog: %s; the next start recovers the recordings left open", cs.message().c_str());
  d.catalog.close();
  if (d.sigfd >= 0) ::close(d.sigfd);
  for (const int fd : {d.storage_lock, d.catalog_lock})
    if (fd >= 0) ::close(fd);
  log_info("stopped: %" PRIu64 " recording(s) recorded in this run", recorded);
  return st ? 0 : 1;
}

}  // namespace callrec::control
