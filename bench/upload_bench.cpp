// upload_bench: the whole system through the kernel path, on this machine, phones included.
//
// It starts the real `callrecd` and `callrec-phone` processes over loopback and measures
// (issue 3, "Benchmarks"):
//   streams  N concurrent G.711 streams (20 ms, 50 pps each) for a measured window: packets
//            sent by the phones, received by the daemon, consumed by its writers, and, after
//            the run, written into record files (catalog stream stats and the files' sizes);
//            loss by cause (socket buffer overflow, ring full, after the window); CPU of the
//            daemon (/proc/PID/stat, and per thread from schedstat) and of the phone
//            generator; daemon RSS at 0 and at N recordings -> KiB per recording.
//   bare     the same phone traffic, same N, into a bare receive loop in this process
//            (epoll + recvmmsg, burst 32, one socket per stream, no classification or copy),
//            answered by a minimal control server here: what the kernel itself delivers.
//   setup    start+stop pairs per second with S connected phones (each phone repeats
//            start -> stop with no RTP on its own connection; rate from the daemon's counters).
// Everything runs in a temporary directory (default under /dev/shm), on 127.0.0.1 with ports
// chosen by the kernel. Each run prints one table per measurement, one `RESULT {json}` line per
// step and the command that reruns it.
//
// Limits this machine sets (printed at start): RLIMIT_NOFILE (hard 20,000 without
// CAP_SYS_RESOURCE); the daemon holds one UDP socket and one record file per stream, so it
// needs 2 descriptors per stream plus one per control connection.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <arpa/inet.h>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdarg>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.hpp"
#include "control/protocol.hpp"
#include "fileio/catalog.hpp"
#include "fileio/record_format.hpp"

namespace {

using callrec::bench::join;
using callrec::bench::parse_list;
using callrec::bench::read_file;
using callrec::bench::threads_cpu_s;
using callrec::bench::udp_rcvbuf_errors;

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using callrec::control::FrameDecoder;

constexpr std::uint32_t kPktLen = 172;        // 12 B RTP header + 160 B G.711 (20 ms)
constexpr double kPpsPerStream = 50.0;        // 20 ms ptime
constexpr int kBareRcvbuf = 256 * 1024;       // = UdpSource's default SO_RCVBUF
constexpr unsigned kBareBurst = 32;           // = UdpSource's default recvmmsg vlen
constexpr const char* kRtpPorts = "10000-30999";  // 21,000 ports (all), below the ephemeral range

struct Config {
  std::vector<unsigned> streams{1000, 2000, 5000, 10000};
  std::vector<std::string> parts{"streams", "bare", "setup"};
  double seconds = 10.0;         ///< measured window per step
  unsigned per_phone = 10;       ///< concurrent recordings per phone connection (streams steps)
  double ramp = 2500;            ///< call starts per second while ramping up
  unsigned phone_threads = 0;    ///< 0: auto (1 up to 4,000 streams, else 2)
  unsigned udp_sockets = 4;      ///< callrec-phone --udp-sockets
  unsigned setup_phones = 10000;
  unsigned quarantine_s = 1;     ///< daemon --port-quarantine for the setup step
  std::string dir = "/dev/shm";
  std::string callrecd;          ///< default: <this dir>/../tools/callrecd
  std::string phone;             ///< default: <this dir>/../tools/callrec-phone
  std::string json;              ///< also append RESULT lines here
  std::string perf_prefix;       ///< non-empty: perf record -a -g during each window
  int nice = 0;                  ///< setpriority() of the bench and its children (root: may be < 0)
  bool keep = false;
};

void usage(const char* argv0) {
  std::printf(
      "usage: %s [options]\n"
      "  --streams LIST       concurrent streams per step (default 1000,2000,5000,10000)\n"
      "  --parts LIST         streams,bare,setup (default all)\n"
      "  --seconds S          measured window per step (default 10)\n"
      "  --per-phone M        concurrent recordings per phone connection in the streams steps (default 10)\n"
      "  --ramp RATE          call starts per second while ramping up (default 2500)\n"
      "  --phone-threads N    callrec-phone --threads (default 0 = 1 up to 4000 streams, else 2)\n"
      "  --udp-sockets N      callrec-phone --udp-sockets (default 4; 0 = one socket per phone)\n"
      "  --setup-phones S     connected phones in the setup step (default 10000, capped by fds)\n"
      "  --quarantine S       daemon --port-quarantine in the setup step (default 1)\n"
      "  --dir DIR            parent of the temporary directory (default /dev/shm)\n"
      "  --callrecd PATH      daemon binary (default: ../tools/callrecd next to this bench)\n"
      "  --phone PATH         callrec-phone binary (default: ../tools/callrec-phone)\n"
      "  --json FILE          append the RESULT json lines to FILE\n"
      "  --perf PREFIX        run `perf record -a -g` during each measured window -> PREFIX-<step>.data\n"
      "  --nice N             run the bench, daemon and phones at this nice value (negative: ahead of\n"
      "                       other work on a shared machine; needs root)\n"
      "  --keep               keep the temporary directory\n",
      argv0);
}

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
void sleep_s(double s) { std::this_thread::sleep_for(std::chrono::duration<double>(s)); }

// ---- child processes ------------------------------------------------------------------------

/// fork+exec with stdout/stderr to files; the child gets the (already raised) fd limit.
pid_t spawn(const std::vector<std::string>& args, const fs::path& out, const fs::path& err) {
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    std::perror("fork");
    std::exit(1);
  }
  if (pid == 0) {
    const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o >= 0) ::dup2(o, 1);
    if (e >= 0) ::dup2(e, 2);
    ::execv(argv[0], argv.data());
    std::_Exit(127);
  }
  return pid;
}

/// Waits up to timeout_s for pid to exit; returns its wait status or nullopt.
std::optional<int> wait_exit(pid_t pid, double timeout_s) {
  const auto t0 = Clock::now();
  for (;;) {
    int st = 0;
    const pid_t r = ::waitpid(pid, &st, WNOHANG);
    if (r == pid) return st;
    if (r < 0) return std::nullopt;
    if (since(t0) > timeout_s) return std::nullopt;
    sleep_s(0.02);
  }
}

void terminate(pid_t pid, double timeout_s) {
  if (pid <= 0) return;
  ::kill(pid, SIGTERM);
  if (!wait_exit(pid, timeout_s)) {
    ::kill(pid, SIGKILL);
    wait_exit(pid, 5);
  }
}

/// callrec-phone stops every call on SIGINT and writes its JSON report; killed after 60 s.
void stop_phone(pid_t phone) {
  ::kill(phone, SIGINT);
  if (!wait_exit(phone, 60)) {
    std::fprintf(stderr, "callrec-phone did not exit after SIGINT; killing it\n");
    ::kill(phone, SIGKILL);
    wait_exit(phone, 5);
  }
}

// ---- /proc --------------------------------------------------------------------------------------

/// utime + stime of a process (all threads, /proc/PID/stat), seconds.
double proc_cpu_s(pid_t pid) {
  const std::string s = read_file("/proc/" + std::to_string(pid) + "/stat");
  const auto rp = s.rfind(')');
  if (rp == std::string::npos) return 0;
  std::istringstream is(s.substr(rp + 2));
  std::string f;
  unsigned long long ut = 0;
  unsigned long long st = 0;
  for (int i = 3; i <= 15 && is >> f; ++i) {  // field 3 = state
    if (i == 14) ut = std::stoull(f);
    if (i == 15) st = std::stoull(f);
  }
  return static_cast<double>(ut + st) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

/// On-CPU seconds per thread group of a process (schedstat, ns): "rx", "writer", "control"
/// (the main thread) and "other", classified by the thread name.
std::map<std::string, double> thread_cpu_s(pid_t pid) {
  std::map<std::string, double> out;
  std::error_code ec;
  for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::string comm;
    std::getline(std::ifstream(task.path() / "comm"), comm);
    std::uint64_t ns = 0;
    std::ifstream(task.path() / "schedstat") >> ns;
    std::string group = "other";
    if (comm.rfind("callrec-rx", 0) == 0) {
      group = "rx";
    } else if (comm.rfind("callrec-wr", 0) == 0) {
      group = "writer";
    } else if (task.path().filename() == std::to_string(pid)) {
      group = "control";
    }
    out[group] += static_cast<double>(ns) * 1e-9;
  }
  return out;
}

long rss_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

long fd_count(pid_t pid) {
  long n = 0;
  std::error_code ec;
  for (auto it = fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    ++n;
  }
  return n;
}

/// Kernel memory of all UDP sockets (/proc/net/sockstat "UDP: inuse N mem PAGES"), KiB.
long udp_kernel_kib() {
  std::ifstream f("/proc/net/sockstat");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("UDP:", 0) != 0) continue;
    const auto p = line.find("mem ");
    if (p != std::string::npos) return std::stol(line.substr(p + 4)) * (::sysconf(_SC_PAGESIZE) / 1024);
  }
  return -1;
}

/// Busy and total jiffies of the whole machine (/proc/stat "cpu").
std::pair<double, double> system_jiffies() {
  std::ifstream f("/proc/stat");
  std::string cpu;
  f >> cpu;
  double busy = 0;
  double total = 0;
  for (int i = 0; i < 8; ++i) {
    double v = 0;
    f >> v;
    total += v;
    if (i != 3 && i != 4) busy += v;  // idle, iowait
  }
  return {busy, total};
}

// ---- the daemon's metrics endpoint ----------------------------------------------------------

std::string http_get(std::uint16_t port, const char* path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return {};
  timeval tv{15, 0};  // a saturated control thread answers late (setup step)
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string body;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0) {
    const std::string req = std::string("GET ") + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      std::array<char, 16384> buf{};
      ssize_t n = 0;
      while ((n = ::recv(fd, buf.data(), buf.size(), 0)) > 0) body.append(buf.data(), static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  const auto p = body.find("\r\n\r\n");
  return p == std::string::npos ? std::string{} : body.substr(p + 4);
}

/// Prometheus text -> {"name{labels}": value}.
using Metrics = std::map<std::string, double>;
Metrics get_metrics(std::uint16_t port) {
  Metrics m;
  std::istringstream is(http_get(port, "/metrics"));
  std::string line;
  while (std::getline(is, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto sp = line.rfind(' ');
    if (sp == std::string::npos) continue;
    m[line.substr(0, sp)] = std::strtod(line.c_str() + sp + 1, nullptr);
  }
  return m;
}

double mget(const Metrics& m, const std::string& key) {
  const auto it = m.find(key);
  return it == m.end() ? 0 : it->second;
}

// ---- the phone's JSON report ------------------------------------------------------------------

/// Number after `"key": ` (searched from the first occurrence of `anchor`, if given).
double jnum(const std::string& j, const std::string& key, const std::string& anchor = {}) {
  std::size_t from = 0;
  if (!anchor.empty()) {
    from = j.find("\"" + anchor + "\"");
    if (from == std::string::npos) return 0;
  }
  const auto p = j.find("\"" + key + "\": ", from);
  if (p == std::string::npos) return 0;
  return std::strtod(j.c_str() + p + key.size() + 4, nullptr);
}

/// The raw JSON object after `"key": ` (for failure maps), or "{}".
std::string jobj(const std::string& j, const std::string& key) {
  const auto p = j.find("\"" + key + "\": {");
  if (p == std::string::npos) return "{}";
  const auto e = j.find('}', p);
  return j.substr(p + key.size() + 4, e - p - key.size() - 3);
}

// ---- the daemon -------------------------------------------------------------------------------

struct Daemon {
  pid_t pid = -1;
  std::uint16_t control_port = 0;
  std::uint16_t metrics_port = 0;
  fs::path dir;
  fs::path log;
};

std::uint16_t port_after(const std::string& s, const std::string& key) {
  const auto p = s.find(key);
  if (p == std::string::npos) return 0;
  const auto colon = s.find(':', p + key.size());
  return static_cast<std::uint16_t>(std::strtoul(s.c_str() + colon + 1, nullptr, 10));
}

/// The bench's phones all connect from 127.0.0.1 and need up to 10,000 connections: a daemon
/// that has the per-address and connection caps (issue 9) gets them lifted; an older binary
/// (for before/after comparisons, --callrecd) has none and gets no such flag.
std::vector<std::string> uncap_flags(const std::string& callrecd) {
  FILE* p = ::popen((callrecd + " --help 2>&1").c_str(), "r");
  std::string out;
  if (p != nullptr) {
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    ::pclose(p);
  }
  std::vector<std::string> flags;
  if (out.find("--max-connections-per-address") != std::string::npos)
    flags.insert(flags.end(), {"--max-connections-per-address", "0", "--max-recordings-per-address", "0",
                               "--max-connections", "20000"});
  return flags;
}

Daemon start_daemon(const Config& cfg, const fs::path& dir, const std::vector<std::string>& extra) {
  Daemon d;
  d.dir = dir;
  d.log = dir / "callrecd.log";
  fs::create_directories(dir / "rec");
  std::vector<std::string> args{cfg.callrecd,         "--listen",  "127.0.0.1:0",
                                "--metrics",          "127.0.0.1:0", "--rtp-ports",
                                kRtpPorts,            "--rtp-all-ports", "--storage",
                                (dir / "rec").string(), "--catalog", (dir / "catalog.db").string()};
  static const std::vector<std::string> uncap = uncap_flags(cfg.callrecd);
  args.insert(args.end(), uncap.begin(), uncap.end());
  args.insert(args.end(), extra.begin(), extra.end());
  d.pid = spawn(args, dir / "callrecd.out", d.log);
  const auto t0 = Clock::now();
  while (since(t0) < 20) {
    const std::string log = read_file(d.log);
    const auto p = log.find("ready: ");
    if (p != std::string::npos) {
      const std::string line = log.substr(p, log.find('\n', p) - p);
      d.control_port = port_after(line, "control=");
      d.metrics_port = port_after(line, "metrics=");
      return d;
    }
    int st = 0;
    if (::waitpid(d.pid, &st, WNOHANG) == d.pid) break;
    sleep_s(0.05);
  }
  std::fprintf(stderr, "callrecd did not start; its log (%s):\n%s\n", d.log.c_str(), read_file(d.log).c_str());
  std::exit(1);
}

/// Polls the daemon's metrics until pred() holds or timeout_s passes; returns the last sample.
template <typename Pred>
Metrics wait_metrics(const Daemon& d, double timeout_s, Pred pred) {
  const auto t0 = Clock::now();
  Metrics m = get_metrics(d.metrics_port);
  while (!pred(m) && since(t0) < timeout_s) {
    sleep_s(0.1);
    m = get_metrics(d.metrics_port);
  }
  return m;
}

// ---- the phones -------------------------------------------------------------------------------

unsigned phone_threads_for(const Config& cfg, unsigned streams) {
  if (cfg.phone_threads != 0) return cfg.phone_threads;
  return streams <= 4000 ? 1 : 2;
}

/// callrec-phone for `streams` concurrent calls that last until it is interrupted.
std::vector<std::string> phone_args(const Config& cfg, std::uint16_t port, unsigned streams) {
  const unsigned per = std::max(1u, std::min(cfg.per_phone, streams));
  const unsigned phones = (streams + per - 1) / per;
  return {cfg.phone,
          "--server", "127.0.0.1:" + std::to_string(port),
          "--phones", std::to_string(phones),
          "--concurrent-per-phone", std::to_string(per),
          "--calls-per-phone", std::to_string(per),
          "--duration", "3600",
          "--ramp", std::to_string(static_cast<unsigned>(cfg.ramp)),
          "--threads", std::to_string(phone_threads_for(cfg, streams)),
          "--udp-sockets", std::to_string(cfg.udp_sockets),
          "--timeout", "30",
          "--seed", "1",
          "--report-interval", "0",
          "--json"};
}

std::string quote_args(const std::vector<std::string>& a) {
  std::string s;
  for (const auto& x : a) s += (s.empty() ? "" : " ") + x;
  return s;
}

/// perf record -a -g for `seconds` (when --perf is set).
pid_t start_perf(const Config& cfg, const std::string& step, double seconds, const fs::path& dir) {
  if (cfg.perf_prefix.empty()) return -1;
  const std::string out = cfg.perf_prefix + "-" + step + ".data";
  return spawn({"/usr/bin/perf", "record", "-a", "-g", "-F", "499", "-o", out, "--", "/bin/sleep",
                std::to_string(seconds)},
               dir / ("perf-" + step + ".out"), dir / ("perf-" + step + ".err"));
}

// ---- measurement snapshots --------------------------------------------------------------------

struct Snap {
  Clock::time_point t;
  double daemon_cpu = 0;
  std::map<std::string, double> threads;
  double phone_cpu = 0;
  std::pair<double, double> sys{};
  long long rcvbuf_errors = 0;
  Metrics m;
  double bare_rx = 0;      ///< bare mode: packets received
  double bare_rx_cpu = 0;  ///< bare mode: receive thread CPU
};

Snap snap(pid_t daemon, pid_t phone, std::uint16_t metrics_port) {
  Snap s;
  s.t = Clock::now();
  if (daemon > 0) {
    s.daemon_cpu = proc_cpu_s(daemon);
    s.threads = thread_cpu_s(daemon);
  }
  s.phone_cpu = proc_cpu_s(phone);
  s.sys = system_jiffies();
  s.rcvbuf_errors = udp_rcvbuf_errors();
  if (metrics_port != 0) {
    s.m = get_metrics(metrics_port);
    s.t = Clock::now();  // counters are as of the answer (late when the control thread is busy)
  }
  return s;
}

double sys_busy_pct(const Snap& a, const Snap& b) {
  const double tot = b.sys.second - a.sys.second;
  return tot > 0 ? 100.0 * (b.sys.first - a.sys.first) / tot * std::thread::hardware_concurrency() : 0;
}

// ---- (a) streams through the daemon -----------------------------------------------------------

struct StreamsResult {
  unsigned streams = 0;
  unsigned phones = 0;
  unsigned phone_threads = 0;
  bool reached = false;          ///< every stream was started before the window
  double active = 0;             ///< recordings active at the window start
  double window_s = 0;
  double rx_pps = 0;             ///< daemon: received by the RX threads
  double writer_pps = 0;         ///< daemon: consumed by the writers
  double window_rcvbuf_drops = 0;
  double window_ring_full = 0;
  double daemon_cpu_pct = 0;     ///< % of one core over the window
  double rx_cpu_pct = 0, writer_cpu_pct = 0, control_cpu_pct = 0;
  double phone_cpu_pct = 0;
  double sys_cpu_pct = 0;        ///< both cores: up to 200%
  long rss0_kib = 0, rssn_kib = 0;
  long udp_kib0 = 0, udp_kibn = 0;
  long fds = 0;
  // Totals over the whole run.
  double sent = 0;
  double start_failed = 0;
  std::string failed_by_reason;
  double late_sends = 0, max_late_ms = 0;
  double rx_total = 0, writer_total = 0, ring_full_total = 0, rcvbuf_total = 0;
  std::uint64_t cat_recordings = 0, cat_received = 0, cat_lost = 0, cat_filled = 0, cat_dup = 0, cat_late = 0;
  std::uint64_t cat_seg_packets = 0;
  std::uint64_t files = 0, file_bytes = 0, file_packets = 0;
  std::map<std::string, unsigned> stop_reasons;
  std::string perf_file;
};

/// Record files under dir: count, bytes, and whole packets ((size - header) / packet length).
void scan_files(const fs::path& dir, StreamsResult& r) {
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (!it->is_regular_file() || it->path().extension() != ".rec") continue;
    const std::uint64_t size = it->file_size();
    ++r.files;
    r.file_bytes += size;
    if (size > callrec::fileio::kHeaderSize) r.file_packets += (size - callrec::fileio::kHeaderSize) / kPktLen;
  }
}

StreamsResult run_streams(const Config& cfg, const fs::path& base, unsigned n) {
  StreamsResult r;
  r.streams = n;
  r.phone_threads = phone_threads_for(cfg, n);
  const fs::path dir = base / ("streams-" + std::to_string(n));
  Daemon d = start_daemon(cfg, dir, {});
  sleep_s(0.5);
  r.rss0_kib = rss_kib(d.pid);
  r.udp_kib0 = udp_kernel_kib();
  const long long rcvbuf0 = udp_rcvbuf_errors();
  const auto args = phone_args(cfg, d.control_port, n);
  r.phones = static_cast<unsigned>(std::stoul(args[4]));
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  const std::uint64_t fds_needed = 2ULL * n + r.phones + 64;  // socket + file per stream, connections
  if (fds_needed > rl.rlim_cur) {
    std::printf("        note: %u streams need ~%" PRIu64 " daemon descriptors (one UDP socket and one record file "
                "per stream, one per phone connection), the limit is %llu: expect failures once every stream "
                "has its file open\n",
                n, fds_needed, static_cast<unsigned long long>(rl.rlim_cur));
  }
  std::printf("        phone: %s\n", quote_args(args).c_str());
  std::fflush(stdout);
  const pid_t phone = spawn(args, dir / "phone.json", dir / "phone.err");
  // All calls up (or refused), then one second of steady state before the window.
  const double ramp_s = n / cfg.ramp;
  Metrics m = wait_metrics(d, ramp_s * 3 + 20, [&](const Metrics& x) {
    return mget(x, "callrec_recordings_active") + mget(x, "callrec_recordings_start_failed_total") >= n;
  });
  r.reached = mget(m, "callrec_recordings_active") >= n;
  sleep_s(1.0);
  const Snap a = snap(d.pid, phone, d.metrics_port);
  r.active = mget(a.m, "callrec_recordings_active");
  const pid_t perf = start_perf(cfg, "streams-" + std::to_string(n), cfg.seconds, dir);
  if (perf > 0) r.perf_file = cfg.perf_prefix + "-streams-" + std::to_string(n) + ".data";
  sleep_s(cfg.seconds);
  const Snap b = snap(d.pid, phone, d.metrics_port);
  r.rssn_kib = rss_kib(d.pid);
  r.udp_kibn = udp_kernel_kib();
  r.fds = fd_count(d.pid);
  if (perf > 0) wait_exit(perf, 30);
  r.window_s = std::chrono::duration<double>(b.t - a.t).count();
  auto delta = [&](const char* key) { return mget(b.m, key) - mget(a.m, key); };
  r.rx_pps = delta("callrec_rx_packets_total") / r.window_s;
  r.writer_pps = delta("callrec_writer_packets_total") / r.window_s;
  r.window_ring_full = delta("callrec_rx_dropped_total{cause=\"ring_full\"}");
  r.window_rcvbuf_drops = static_cast<double>(b.rcvbuf_errors - a.rcvbuf_errors);
  auto pct = [&](double x) { return 100.0 * x / r.window_s; };
  r.daemon_cpu_pct = pct(b.daemon_cpu - a.daemon_cpu);
  r.rx_cpu_pct = pct(b.threads.at("rx") - a.threads.at("rx"));
  r.writer_cpu_pct = pct(b.threads.at("writer") - a.threads.at("writer"));
  r.control_cpu_pct = pct(b.threads.at("control") - a.threads.at("control"));
  r.phone_cpu_pct = pct(b.phone_cpu - a.phone_cpu);
  r.sys_cpu_pct = sys_busy_pct(a, b);

  // Stop the phones (graceful: every call is stopped), then let the daemon finish writing.
  stop_phone(phone);
  const std::string pj = read_file(dir / "phone.json");
  r.sent = jnum(pj, "packets_sent");
  r.late_sends = jnum(pj, "late_sends");
  r.max_late_ms = jnum(pj, "max_late_ms");
  r.failed_by_reason = jobj(pj, "failed_by_reason");
  m = wait_metrics(d, 30, [](const Metrics& x) { return mget(x, "callrec_recordings_active") == 0; });
  sleep_s(0.3);
  m = get_metrics(d.metrics_port);
  r.start_failed = mget(m, "callrec_recordings_start_failed_total");
  r.rx_total = mget(m, "callrec_rx_packets_total");
  r.writer_total = mget(m, "callrec_writer_packets_total");
  r.ring_full_total = mget(m, "callrec_rx_dropped_total{cause=\"ring_full\"}");
  r.rcvbuf_total = static_cast<double>(udp_rcvbuf_errors() - rcvbuf0);
  terminate(d.pid, 60);

  callrec::fileio::Catalog cat;
  if (const auto st = cat.open_read_only(dir / "catalog.db"); st) {
    callrec::fileio::CatalogFilter f;
    f.limit = 0;
    std::vector<callrec::fileio::RecordingRow> rows;
    if (cat.list(f, rows)) {
      for (const auto& row : rows) {
        ++r.cat_recordings;
        r.cat_received += row.stats.received;
        r.cat_lost += row.stats.lost;
        r.cat_filled += row.stats.filled;
        r.cat_dup += row.stats.duplicate;
        r.cat_late += row.stats.late;
        for (const auto& s : row.segments) r.cat_seg_packets += s.packets;
        ++r.stop_reasons[row.stop_reason.empty() ? row.state : row.stop_reason];
      }
    }
  } else {
    std::fprintf(stderr, "catalog: %s\n", st.message().c_str());
  }
  scan_files(dir / "rec", r);
  if (!cfg.keep) fs::remove_all(dir);
  return r;
}

// ---- (b) the bare receive loop, fed by the same phones ------------------------------------------

/// A minimal control server for callrec-phone: every RecordStartRequest gets the next of
/// `ports` (127.0.0.1), every RecordStopRequest a success. One epoll thread.
class FakeServer {
 public:
  explicit FakeServer(std::vector<std::uint16_t> ports) : ports_(std::move(ports)) {
    lfd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const int one = 1;
    ::setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(lfd_, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0 || ::listen(lfd_, 4096) != 0) {
      std::perror("fake server");
      std::exit(1);
    }
    socklen_t len = sizeof a;
    ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { loop(); });
  }
  ~FakeServer() {
    stop_.store(true);
    thread_.join();
    for (auto& [fd, c] : conns_) ::close(fd);
    ::close(lfd_);
  }
  FakeServer(const FakeServer&) = delete;
  FakeServer& operator=(const FakeServer&) = delete;
  [[nodiscard]] std::uint16_t port() const { return port_; }
  [[nodiscard]] std::uint64_t starts() const { return starts_.load(); }

 private:
  struct Conn {
    FrameDecoder dec{4096};
    std::string out;
  };

  void loop() {
    pthread_setname_np(pthread_self(), "bare-ctl");
    const int ep = ::epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = lfd_;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, lfd_, &ev);
    std::array<epoll_event, 256> evs{};
    std::array<char, 65536> buf{};
    while (!stop_.load()) {
      const int n = ::epoll_wait(ep, evs.data(), static_cast<int>(evs.size()), 20);
      for (int i = 0; i < n; ++i) {
        const int fd = evs[static_cast<std::size_t>(i)].data.fd;
        if (fd == lfd_) {
          int c = -1;
          while ((c = ::accept4(lfd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
            const int one = 1;
            ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            epoll_event cev{};
            cev.events = EPOLLIN;
            cev.data.fd = c;
            ::epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
            conns_.emplace(c, std::make_unique<Conn>());
          }
          continue;
        }
        auto it = conns_.find(fd);
        if (it == conns_.end()) continue;
        Conn& c = *it->second;
        const ssize_t got = ::recv(fd, buf.data(), buf.size(), 0);
        if (got <= 0) {
          if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
          ::epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
          ::close(fd);
          conns_.erase(it);
          continue;
        }
        c.dec.feed(std::string_view(buf.data(), static_cast<std::size_t>(got)));
        while (auto line = c.dec.next()) answer(c, *line);
        if (!c.out.empty()) {  // small answers on loopback: a blocking-style send suffices
          std::size_t off = 0;
          while (off < c.out.size()) {
            const ssize_t w = ::send(fd, c.out.data() + off, c.out.size() - off, MSG_NOSIGNAL);
            if (w < 0 && errno == EAGAIN) {
              sleep_s(0.0005);
              continue;
            }
            if (w <= 0) break;
            off += static_cast<std::size_t>(w);
          }
          c.out.clear();
        }
      }
    }
    ::close(ep);
  }

  void answer(Conn& c, const std::string& line) {
    auto msg = callrec::control::parse_message(line);
    if (!msg) return;
    const auto cmd = callrec::control::command_of(msg->cmd);
    if (cmd == callrec::control::Command::kStartRequest) {
      auto req = callrec::control::parse_start_request(*msg);
      if (!req) return;
      callrec::control::StartResponse res;
      res.id = req->id;
      res.success = true;
      res.server = "127.0.0.1";
      res.port = ports_[next_++ % ports_.size()];
      c.out += callrec::control::format_start_response(res);
      starts_.fetch_add(1);
    } else if (cmd == callrec::control::Command::kStopRequest) {
      auto req = callrec::control::parse_stop_request(*msg);
      if (!req) return;
      callrec::control::StopResponse res;
      res.id = req->id;
      c.out += callrec::control::format_stop_response(res);
    }
  }

  std::vector<std::uint16_t> ports_;
  std::size_t next_ = 0;
  int lfd_ = -1;
  std::uint16_t port_ = 0;
  std::map<int, std::unique_ptr<Conn>> conns_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> starts_{0};
  std::thread thread_;
};

struct BareResult {
  unsigned streams = 0;
  bool reached = false;
  double window_s = 0;
  double rx_pps = 0;
  double window_rcvbuf_drops = 0;
  double rx_cpu_pct = 0;
  double phone_cpu_pct = 0;
  double sys_cpu_pct = 0;
  double sent = 0;
  double received = 0;
  double rcvbuf_total = 0;
  std::string failed_by_reason;
};

BareResult run_bare(const Config& cfg, const fs::path& base, unsigned n) {
  BareResult r;
  r.streams = n;
  const fs::path dir = base / ("bare-" + std::to_string(n));
  fs::create_directories(dir);
  std::vector<int> fds;
  std::vector<std::uint16_t> ports;
  for (unsigned i = 0; i < n; ++i) {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &kBareRcvbuf, sizeof kBareRcvbuf);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || ::bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
      std::fprintf(stderr, "bare socket %u: %s\n", i, std::strerror(errno));
      std::exit(1);
    }
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    fds.push_back(fd);
    ports.push_back(ntohs(a.sin_port));
  }
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> received{0};
  std::thread rx([&] {
    pthread_setname_np(pthread_self(), "bare-rx");
    const int ep = ::epoll_create1(EPOLL_CLOEXEC);
    for (std::size_t i = 0; i < fds.size(); ++i) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = i;
      ::epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    constexpr std::size_t kDgram = 2048;
    std::vector<std::byte> buf(std::size_t{kBareBurst} * kDgram);
    std::array<iovec, kBareBurst> iov{};
    std::array<mmsghdr, kBareBurst> msgs{};
    std::array<sockaddr_storage, kBareBurst> names{};
    for (unsigned i = 0; i < kBareBurst; ++i) {
      iov[i] = iovec{buf.data() + std::size_t{i} * kDgram, kDgram};
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_name = &names[i];
    }
    std::array<epoll_event, 256> evs{};
    std::uint64_t count = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      const int ne = ::epoll_wait(ep, evs.data(), static_cast<int>(evs.size()), 10);
      for (int e = 0; e < ne; ++e) {
        const int fd = fds[evs[static_cast<std::size_t>(e)].data.u64];
        for (unsigned b = 0; b < 4; ++b) {  // the same per-socket cap as UdpSource
          for (auto& m : msgs) m.msg_hdr.msg_namelen = sizeof(sockaddr_storage);
          const int got = ::recvmmsg(fd, msgs.data(), kBareBurst, MSG_DONTWAIT, nullptr);
          if (got <= 0) break;
          count += static_cast<unsigned>(got);
          if (static_cast<unsigned>(got) < kBareBurst) break;
        }
      }
      received.store(count, std::memory_order_relaxed);
    }
    ::close(ep);
  });
  const long long rcvbuf0 = udp_rcvbuf_errors();
  {
    FakeServer srv(ports);
    const auto args = phone_args(cfg, srv.port(), n);
    const pid_t phone = spawn(args, dir / "phone.json", dir / "phone.err");
    const auto t0 = Clock::now();
    while (srv.starts() < n && since(t0) < n / cfg.ramp * 3 + 20) sleep_s(0.1);
    r.reached = srv.starts() >= n;
    sleep_s(1.0);
    Snap a = snap(-1, phone, 0);
    a.bare_rx = static_cast<double>(received.load());
    a.bare_rx_cpu = threads_cpu_s("bare-rx");
    sleep_s(cfg.seconds);
    Snap b = snap(-1, phone, 0);
    b.bare_rx = static_cast<double>(received.load());
    b.bare_rx_cpu = threads_cpu_s("bare-rx");
    r.window_s = std::chrono::duration<double>(b.t - a.t).count();
    r.rx_pps = (b.bare_rx - a.bare_rx) / r.window_s;
    r.window_rcvbuf_drops = static_cast<double>(b.rcvbuf_errors - a.rcvbuf_errors);
    r.rx_cpu_pct = 100.0 * (b.bare_rx_cpu - a.bare_rx_cpu) / r.window_s;
    r.phone_cpu_pct = 100.0 * (b.phone_cpu - a.phone_cpu) / r.window_s;
    r.sys_cpu_pct = sys_busy_pct(a, b);
    stop_phone(phone);
    // Let the receiver drain what is still queued.
    std::uint64_t last = received.load();
    for (int i = 0; i < 20; ++i) {
      sleep_s(0.05);
      if (received.load() == last && i > 3) break;
      last = received.load();
    }
  }
  stop.store(true);
  rx.join();
  for (const int fd : fds) ::close(fd);
  const std::string pj = read_file(dir / "phone.json");
  r.sent = jnum(pj, "packets_sent");
  r.failed_by_reason = jobj(pj, "failed_by_reason");
  r.received = static_cast<double>(received.load());
  r.rcvbuf_total = static_cast<double>(udp_rcvbuf_errors() - rcvbuf0);
  if (!cfg.keep) fs::remove_all(dir);
  return r;
}

// ---- (c) setup rate ------------------------------------------------------------------------------

struct SetupResult {
  unsigned phones = 0;
  double connections = 0;       ///< control connections open at the window start
  double window_s = 0;
  double starts_per_s = 0;
  double stops_per_s = 0;
  double daemon_cpu_pct = 0;
  double control_cpu_pct = 0;
  double phone_cpu_pct = 0;
  double sys_cpu_pct = 0;
  double attempted = 0, succeeded = 0, failed = 0;
  double phone_elapsed_s = 0;   ///< the whole phone run: connects, window, graceful stop
  std::string failed_by_reason;
  double setup_p50 = 0, setup_p99 = 0, stop_p50 = 0, stop_p99 = 0;
  long rss_kib = 0;
};

SetupResult run_setup(const Config& cfg, const fs::path& base, unsigned phones) {
  SetupResult r;
  r.phones = phones;
  const fs::path dir = base / "setup";
  Daemon d = start_daemon(cfg, dir, {"--port-quarantine", std::to_string(cfg.quarantine_s)});
  const std::vector<std::string> args{cfg.phone,
                                      "--server", "127.0.0.1:" + std::to_string(d.control_port),
                                      "--phones", std::to_string(phones),
                                      "--calls-per-phone", "100000000",
                                      "--duration", "0",
                                      "--ramp", "0",
                                      "--threads", "1",
                                      "--udp-sockets", "4",
                                      "--timeout", "30",
                                      "--seed", "1",
                                      "--report-interval", "0",
                                      "--json"};
  const pid_t phone = spawn(args, dir / "phone.json", dir / "phone.err");
  wait_metrics(d, 60, [&](const Metrics& x) { return mget(x, "callrec_control_connections") >= phones; });
  sleep_s(1.0);
  const Snap a = snap(d.pid, phone, d.metrics_port);
  r.connections = mget(a.m, "callrec_control_connections");
  sleep_s(cfg.seconds);
  const Snap b = snap(d.pid, phone, d.metrics_port);
  r.rss_kib = rss_kib(d.pid);
  r.window_s = std::chrono::duration<double>(b.t - a.t).count();
  auto stopped = [](const Metrics& m) {
    double s = 0;
    for (const auto& [k, v] : m) {
      if (k.rfind("callrec_recordings_stopped_total", 0) == 0) s += v;
    }
    return s;
  };
  r.starts_per_s =
      (mget(b.m, "callrec_recordings_started_total") - mget(a.m, "callrec_recordings_started_total")) / r.window_s;
  r.stops_per_s = (stopped(b.m) - stopped(a.m)) / r.window_s;
  r.daemon_cpu_pct = 100.0 * (b.daemon_cpu - a.daemon_cpu) / r.window_s;
  r.control_cpu_pct = 100.0 * (b.threads.at("control") - a.threads.at("control")) / r.window_s;
  r.phone_cpu_pct = 100.0 * (b.phone_cpu - a.phone_cpu) / r.window_s;
  r.sys_cpu_pct = sys_busy_pct(a, b);
  stop_phone(phone);
  const std::string pj = read_file(dir / "phone.json");
  r.phone_elapsed_s = jnum(pj, "elapsed_s");
  r.attempted = jnum(pj, "attempted");
  r.succeeded = jnum(pj, "succeeded");
  r.failed = jnum(pj, "failed");
  r.failed_by_reason = jobj(pj, "failed_by_reason");
  r.setup_p50 = jnum(pj, "p50", "setup_latency_ms");
  r.setup_p99 = jnum(pj, "p99", "setup_latency_ms");
  r.stop_p50 = jnum(pj, "p50", "stop_latency_ms");
  r.stop_p99 = jnum(pj, "p99", "stop_latency_ms");
  terminate(d.pid, 60);
  if (!cfg.keep) fs::remove_all(dir);
  return r;
}

// ---- output -----------------------------------------------------------------------------------

std::FILE* g_json = nullptr;

void result_line(const std::string& json) {
  std::printf("RESULT %s\n", json.c_str());
  if (g_json != nullptr) std::fprintf(g_json, "%s\n", json.c_str());
  std::fflush(stdout);
}

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  std::array<char, 4096> buf{};
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf.data(), buf.size(), f, ap);
  va_end(ap);
  return buf.data();
}

/// Packets that really reached record files (received minus duplicates and late drops).
double written_real(const StreamsResult& r) {
  return static_cast<double>(r.cat_received) - static_cast<double>(r.cat_dup) - static_cast<double>(r.cat_late);
}

void print_streams(const StreamsResult& r) {
  const double target = r.streams * kPpsPerStream;
  const double written = written_real(r);
  const double loss = r.sent - written;
  const double k_per_rec = r.active > 0 ? static_cast<double>(r.rssn_kib - r.rss0_kib) / r.active : 0;
  const double udp_per_rec = r.active > 0 ? static_cast<double>(r.udp_kibn - r.udp_kib0) / r.active : 0;
  const double cpu_per_k = r.active > 0 ? r.daemon_cpu_pct / (r.active / 1000.0) : 0;
  std::printf("%7u %7.0f %9.0f %9.0f %9.0f %8.0f %8.0f | %11.0f %11.0f %9.0f %8.4f%% | %6.1f%% %6.1f%% %6.1f%% %6.1f%% %6.1f%% "
              "%6.1f%% %6.2f%% | %7ld %7ld %6.1f %6.1f %s\n",
              r.streams, r.active, target, r.rx_pps, r.writer_pps, r.window_rcvbuf_drops, r.window_ring_full, r.sent,
              written, loss, r.sent > 0 ? 100.0 * loss / r.sent : 0, r.daemon_cpu_pct, r.rx_cpu_pct, r.writer_cpu_pct,
              r.control_cpu_pct, r.phone_cpu_pct, r.sys_cpu_pct - r.daemon_cpu_pct - r.phone_cpu_pct, cpu_per_k, r.rss0_kib, r.rssn_kib, k_per_rec,
              udp_per_rec, r.reached ? "" : "(not all streams started)");
  std::string reasons = "{";
  for (const auto& [k, v] : r.stop_reasons) reasons += fmt("%s\"%s\":%u", reasons.size() > 1 ? "," : "", k.c_str(), v);
  reasons += "}";
  result_line(fmt(
      "{\"bench\":\"upload\",\"part\":\"streams\",\"streams\":%u,\"phones\":%u,\"phone_threads\":%u,\"reached\":%s,"
      "\"active\":%.0f,\"window_s\":%.2f,\"target_pps\":%.0f,\"rx_pps\":%.0f,\"writer_pps\":%.0f,"
      "\"window_rcvbuf_drops\":%.0f,\"window_ring_full\":%.0f,\"daemon_cpu_pct\":%.1f,\"rx_cpu_pct\":%.1f,"
      "\"writer_cpu_pct\":%.1f,\"control_cpu_pct\":%.1f,\"phone_cpu_pct\":%.1f,\"sys_cpu_pct\":%.1f,"
      "\"daemon_cpu_pct_per_1000_streams\":%.2f,\"rss0_kib\":%ld,\"rssn_kib\":%ld,\"rss_kib_per_recording\":%.2f,"
      "\"udp_kernel_kib_per_recording\":%.2f,\"daemon_fds\":%ld,\"sent\":%.0f,\"start_failed\":%.0f,"
      "\"failed_by_reason\":%s,\"late_sends\":%.0f,\"max_late_ms\":%.1f,\"rx_total\":%.0f,\"writer_total\":%.0f,"
      "\"ring_full_total\":%.0f,\"rcvbuf_drops_total\":%.0f,\"catalog_recordings\":%" PRIu64
      ",\"catalog_received\":%" PRIu64 ",\"catalog_lost\":%" PRIu64 ",\"catalog_filled\":%" PRIu64
      ",\"catalog_duplicate\":%" PRIu64 ",\"catalog_late\":%" PRIu64 ",\"segment_packets\":%" PRIu64
      ",\"files\":%" PRIu64 ",\"file_bytes\":%" PRIu64 ",\"file_packets\":%" PRIu64
      ",\"written\":%.0f,\"loss\":%.0f,\"stop_reasons\":%s}",
      r.streams, r.phones, r.phone_threads, r.reached ? "true" : "false", r.active, r.window_s, target, r.rx_pps,
      r.writer_pps, r.window_rcvbuf_drops, r.window_ring_full, r.daemon_cpu_pct, r.rx_cpu_pct, r.writer_cpu_pct,
      r.control_cpu_pct, r.phone_cpu_pct, r.sys_cpu_pct, cpu_per_k, r.rss0_kib, r.rssn_kib, k_per_rec, udp_per_rec,
      r.fds, r.sent, r.start_failed, r.failed_by_reason.c_str(), r.late_sends, r.max_late_ms, r.rx_total,
      r.writer_total, r.ring_full_total, r.rcvbuf_total, r.cat_recordings, r.cat_received, r.cat_lost, r.cat_filled,
      r.cat_dup, r.cat_late, r.cat_seg_packets, r.files, r.file_bytes, r.file_packets, written, loss,
      reasons.c_str()));
  std::printf("        totals: rx %.0f, writers %.0f, ring_full %.0f, socket-buffer drops %.0f; catalog: %" PRIu64
              " recordings, received %" PRIu64 " lost %" PRIu64 " filled %" PRIu64 " dup %" PRIu64
              "; files %" PRIu64 " holding %" PRIu64 " packets (segments say %" PRIu64 "); start failures %.0f %s;"
              " late sends %.0f (max %.1f ms); daemon fds %ld\n",
              r.rx_total, r.writer_total, r.ring_full_total, r.rcvbuf_total, r.cat_recordings, r.cat_received,
              r.cat_lost, r.cat_filled, r.cat_dup, r.files, r.file_packets, r.cat_seg_packets, r.start_failed,
              r.failed_by_reason.c_str(), r.late_sends, r.max_late_ms, r.fds);
  std::fflush(stdout);
}

/// --nice: with sched_autogroup on (Debian's default), nice only orders processes within one
/// session; sessions share the CPUs equally. So the bench moves itself into a session of its
/// own (forking when it leads a process group) and gives that session's autogroup the nice
/// value too. Children (daemon, phones, perf) inherit both.
bool raise_priority(int nice) {
  if (::setsid() < 0) {
    const pid_t child = ::fork();
    if (child < 0) {
      std::perror("fork");
      return false;
    }
    if (child > 0) {  // the parent only relays the exit status
      int st = 0;
      while (::waitpid(child, &st, 0) < 0 && errno == EINTR) {
      }
      std::exit(WIFEXITED(st) ? WEXITSTATUS(st) : 1);
    }
    if (::setsid() < 0) {
      std::perror("setsid");
      return false;
    }
  }
  if (::setpriority(PRIO_PROCESS, 0, nice) != 0) {
    std::fprintf(stderr, "--nice %d: setpriority: %s\n", nice, std::strerror(errno));
    return false;
  }
  if (std::FILE* f = std::fopen("/proc/self/autogroup", "w")) {
    std::fprintf(f, "%d", nice);
    if (std::fclose(f) != 0) std::fprintf(stderr, "--nice %d: /proc/self/autogroup: %s\n", nice, std::strerror(errno));
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        usage(argv[0]);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      usage(argv[0]);
      return 0;
    } else if (a == "--streams") {
      cfg.streams = parse_list<unsigned>(value());
    } else if (a == "--parts") {
      cfg.parts = parse_list<std::string>(value());
    } else if (a == "--seconds") {
      cfg.seconds = std::stod(value());
    } else if (a == "--per-phone") {
      cfg.per_phone = static_cast<unsigned>(std::stoul(value()));
    } else if (a == "--ramp") {
      cfg.ramp = std::stod(value());
    } else if (a == "--phone-threads") {
      cfg.phone_threads = static_cast<unsigned>(std::stoul(value()));
    } else if (a == "--udp-sockets") {
      cfg.udp_sockets = static_cast<unsigned>(std::stoul(value()));
    } else if (a == "--setup-phones") {
      cfg.setup_phones = static_cast<unsigned>(std::stoul(value()));
    } else if (a == "--quarantine") {
      cfg.quarantine_s = static_cast<unsigned>(std::stoul(value()));
    } else if (a == "--dir") {
      cfg.dir = value();
    } else if (a == "--callrecd") {
      cfg.callrecd = value();
    } else if (a == "--phone") {
      cfg.phone = value();
    } else if (a == "--json") {
      cfg.json = value();
    } else if (a == "--perf") {
      cfg.perf_prefix = value();
    } else if (a == "--nice") {
      cfg.nice = std::stoi(value());
    } else if (a == "--keep") {
      cfg.keep = true;
    } else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      usage(argv[0]);
      return 2;
    }
  }
  auto has_part = [&](const char* p) { return std::find(cfg.parts.begin(), cfg.parts.end(), p) != cfg.parts.end(); };
  for (const auto& p : cfg.parts) {
    if (p != "streams" && p != "bare" && p != "setup") {
      std::fprintf(stderr, "unknown part %s\n", p.c_str());
      return 2;
    }
  }
  if (cfg.seconds <= 0 || cfg.ramp <= 0) {
    std::fprintf(stderr, "--seconds and --ramp must be > 0\n");
    return 2;
  }
  char exe[4096] = {};
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  const fs::path self = n > 0 ? fs::path(exe) : fs::path(argv[0]);
  if (cfg.callrecd.empty()) cfg.callrecd = (self.parent_path().parent_path() / "tools" / "callrecd").string();
  if (cfg.phone.empty()) cfg.phone = (self.parent_path().parent_path() / "tools" / "callrec-phone").string();
  for (const auto& b : {cfg.callrecd, cfg.phone}) {
    if (::access(b.c_str(), X_OK) != 0) {
      std::fprintf(stderr, "%s: not executable (build it, or pass --callrecd / --phone)\n", b.c_str());
      return 2;
    }
  }
  // Children inherit the raised limit.
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &rl);
  ::signal(SIGPIPE, SIG_IGN);
  if (cfg.nice != 0 && !raise_priority(cfg.nice)) return 2;

  const std::string rerun = self.string() + " --streams " + join(cfg.streams) + " --parts " + join(cfg.parts) +
                            " --seconds " + fmt("%g", cfg.seconds) + " --per-phone " + std::to_string(cfg.per_phone) +
                            " --ramp " + fmt("%g", cfg.ramp) + " --phone-threads " +
                            std::to_string(cfg.phone_threads) + " --udp-sockets " + std::to_string(cfg.udp_sockets) +
                            " --setup-phones " + std::to_string(cfg.setup_phones) + " --quarantine " +
                            std::to_string(cfg.quarantine_s) + " --dir " + cfg.dir +
                            (cfg.nice != 0 ? " --nice " + std::to_string(cfg.nice) : "");
  std::string loadavg;
  std::getline(std::ifstream("/proc/loadavg"), loadavg);
  std::printf("upload_bench: callrecd + callrec-phone over loopback, %u cpus online, loadavg %s\n"
              "RLIMIT_NOFILE %llu (hard %llu): the daemon needs ~2 per stream + 1 per phone connection\n"
              "daemon: %s\nphone:  %s\nrerun:  %s\n\n",
              std::thread::hardware_concurrency(), loadavg.c_str(), static_cast<unsigned long long>(rl.rlim_cur),
              static_cast<unsigned long long>(rl.rlim_max), cfg.callrecd.c_str(), cfg.phone.c_str(), rerun.c_str());
  if (!cfg.json.empty()) g_json = std::fopen(cfg.json.c_str(), "a");

  fs::path base = fs::path(cfg.dir) / ("upload_bench." + std::to_string(::getpid()));
  fs::create_directories(base);
  const auto t_start = Clock::now();

  std::vector<StreamsResult> sr;
  std::vector<BareResult> br;
  for (const unsigned streams : cfg.streams) {
    if (has_part("streams")) {
      if (sr.empty()) {
        std::printf("(a) streams through callrecd: %g s window after ramp-up; pps in the window, totals over the run\n",
                    cfg.seconds);
        std::printf("%7s %7s %9s %9s %9s %8s %8s | %11s %11s %9s %9s | %7s %7s %7s %7s %7s %7s %7s | %7s %7s %6s %6s\n",
                    "streams", "active", "target", "rx_pps", "wr_pps", "sockdrop", "ringfull", "sent", "written",
                    "loss", "loss%", "daemon", "rx", "writer", "control", "phone", "others", "cpu/1k", "rss0",
                    "rssN", "KiB/rec", "kUDP/r");
      }
      sr.push_back(run_streams(cfg, base, streams));
      print_streams(sr.back());
    }
    if (has_part("bare")) {
      br.push_back(run_bare(cfg, base, streams));
      const BareResult& b = br.back();
      const double loss = b.sent - b.received;
      std::printf("   bare %7u: rx_pps %.0f, sockdrop %.0f in window; sent %.0f received %.0f loss %.0f (%.4f%%); "
                  "rx thread %.1f%%, phone %.1f%%, others %.1f%% %s%s\n",
                  b.streams, b.rx_pps, b.window_rcvbuf_drops, b.sent, b.received, loss,
                  b.sent > 0 ? 100.0 * loss / b.sent : 0, b.rx_cpu_pct, b.phone_cpu_pct,
                  b.sys_cpu_pct - b.rx_cpu_pct - b.phone_cpu_pct,
                  b.reached ? "" : "(not all streams started) ", b.failed_by_reason.c_str());
      std::string ratio;
      if (!sr.empty() && sr.back().streams == streams && b.rx_pps > 0) {
        const StreamsResult& s = sr.back();
        const double d_ns = s.writer_pps > 0 ? s.daemon_cpu_pct * 1e7 / s.writer_pps : 0;
        const double b_ns = b.rx_cpu_pct * 1e7 / b.rx_pps;
        ratio = fmt(",\"daemon_over_bare_pps\":%.4f,\"daemon_ns_per_pkt\":%.0f,\"bare_ns_per_pkt\":%.0f",
                    s.writer_pps / b.rx_pps, d_ns, b_ns);
        std::printf("   ratio %7u: daemon written/bare received pps %.3f; CPU per packet daemon %.0f ns vs bare %.0f ns\n",
                    streams, s.writer_pps / b.rx_pps, d_ns, b_ns);
      }
      result_line(fmt("{\"bench\":\"upload\",\"part\":\"bare\",\"streams\":%u,\"reached\":%s,\"window_s\":%.2f,"
                      "\"rx_pps\":%.0f,\"window_rcvbuf_drops\":%.0f,\"rx_cpu_pct\":%.1f,\"phone_cpu_pct\":%.1f,"
                      "\"sys_cpu_pct\":%.1f,\"sent\":%.0f,\"received\":%.0f,\"loss\":%.0f,\"rcvbuf_drops_total\":%.0f,"
                      "\"failed_by_reason\":%s%s}",
                      b.streams, b.reached ? "true" : "false", b.window_s, b.rx_pps, b.window_rcvbuf_drops,
                      b.rx_cpu_pct, b.phone_cpu_pct, b.sys_cpu_pct, b.sent, b.received, loss, b.rcvbuf_total,
                      b.failed_by_reason.c_str(), ratio.c_str()));
    }
  }

  if (has_part("setup")) {
    // The phone needs one descriptor per phone (+ a few); the daemon one per phone + 2 per
    // recording in flight.
    const unsigned cap = static_cast<unsigned>(std::min<rlim_t>(rl.rlim_cur, 1u << 30)) - 2000;
    const unsigned phones = std::min(cfg.setup_phones, cap);
    std::printf("\n(c) setup rate: %u phones (asked %u, fd cap %u), each repeating start -> stop (no RTP), "
                "port quarantine %u s\n",
                phones, cfg.setup_phones, cap, cfg.quarantine_s);
    const SetupResult s = run_setup(cfg, base, phones);
    std::printf("   connected %.0f: %.0f starts/s, %.0f stops/s; daemon CPU %.1f%% (control thread %.1f%%), phone %.1f%%, "
                "system %.1f%%; setup latency p50 %.2f ms p99 %.2f ms, stop p50 %.2f p99 %.2f; calls %.0f ok %.0f "
                "failed %.0f %s (%.0f pairs/s over the phone's whole %.1f s run); daemon RSS %ld KiB\n",
                s.connections, s.starts_per_s, s.stops_per_s, s.daemon_cpu_pct, s.control_cpu_pct, s.phone_cpu_pct,
                s.sys_cpu_pct, s.setup_p50, s.setup_p99, s.stop_p50, s.stop_p99, s.attempted, s.succeeded, s.failed,
                s.failed_by_reason.c_str(), s.phone_elapsed_s > 0 ? s.succeeded / s.phone_elapsed_s : 0,
                s.phone_elapsed_s, s.rss_kib);
    result_line(fmt("{\"bench\":\"upload\",\"part\":\"setup\",\"phones\":%u,\"connected\":%.0f,\"window_s\":%.2f,"
                    "\"starts_per_s\":%.0f,\"stops_per_s\":%.0f,\"daemon_cpu_pct\":%.1f,\"control_cpu_pct\":%.1f,"
                    "\"phone_cpu_pct\":%.1f,\"sys_cpu_pct\":%.1f,\"setup_p50_ms\":%.3f,\"setup_p99_ms\":%.3f,"
                    "\"stop_p50_ms\":%.3f,\"stop_p99_ms\":%.3f,\"attempted\":%.0f,\"succeeded\":%.0f,"
                    "\"failed\":%.0f,\"failed_by_reason\":%s,\"phone_elapsed_s\":%.2f,\"rss_kib\":%ld,\"quarantine_s\":%u}",
                    s.phones, s.connections, s.window_s, s.starts_per_s, s.stops_per_s, s.daemon_cpu_pct,
                    s.control_cpu_pct, s.phone_cpu_pct, s.sys_cpu_pct, s.setup_p50, s.setup_p99, s.stop_p50,
                    s.stop_p99, s.attempted, s.succeeded, s.failed, s.failed_by_reason.c_str(), s.phone_elapsed_s,
                    s.rss_kib,
                    cfg.quarantine_s));
  }
  if (!cfg.keep) fs::remove_all(base);
  if (g_json != nullptr) std::fclose(g_json);
  std::printf("\nColumns: rx_pps/wr_pps = daemon RX threads / writers in the window; sockdrop = UDP RcvbufErrors\n"
              "(system-wide) in the window; written = catalog received - duplicate - late (packets in record\n"
              "files, gap fill excluded); loss = phone packets_sent - written over the whole run. CPU in %% of one\n"
              "core over the window (others: the rest of the machine, e.g. neighbours' builds; both cores = 200%%); cpu/1k = daemon CPU %% per 1,000 streams;\n"
              "KiB/rec = (daemon RSS at N - RSS at 0) / N; kUDP/r = kernel UDP socket memory per recording.\n"
              "total time %.0f s\nrerun: %s\n",
              since(t_start), rerun.c_str());
  return 0;
}
