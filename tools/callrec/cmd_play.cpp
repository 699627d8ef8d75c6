// callrec play: the seed's player (3.3). Sends each stored packet by UDP, one per period =
// increment / clock, paced against absolute deadlines so that no delay ever accumulates.
#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "cli.hpp"
#include "fileio/record_reader.hpp"

namespace callrec::cli {
namespace {

constexpr double kMinSpeed = 0.01;
constexpr double kMaxSpeed = 1000.0;
constexpr std::int64_t kNsPerS = 1'000'000'000;

volatile std::sig_atomic_t g_stop_signal = 0;

void on_stop_signal(int sig) { g_stop_signal = sig; }

/// SIGINT/SIGTERM set g_stop_signal and interrupt the sleep (no SA_RESTART).
void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

std::int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * kNsPerS + ts.tv_nsec;
}

/// Sleeps until the absolute CLOCK_MONOTONIC time t_ns. Returns early only on a stop signal.
void sleep_until(std::int64_t t_ns) {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(t_ns / kNsPerS);
  ts.tv_nsec = static_cast<long>(t_ns % kNsPerS);
  while (g_stop_signal == 0) {
    const int rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr);
    if (rc != EINTR) return;  // 0: reached; other errors cannot happen with valid arguments
  }
}

std::optional<double> parse_speed(const std::string& s) {
  double v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || !std::isfinite(v) || v < kMinSpeed || v > kMaxSpeed) {
    return std::nullopt;
  }
  return v;
}

class Socket {
 public:
  Socket() = default;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  [[nodiscard]] int fd() const { return fd_; }
  void reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

/// Errors of one send that do not end the play: the receiver may be absent for a while
/// (ICMP port unreachable is reported on the next send of a connected socket), a queue full.
bool transient_send_error(int e) {
  return e == ECONNREFUSED || e == EHOSTUNREACH || e == ENETUNREACH || e == ENOBUFS || e == EAGAIN ||
         e == EWOULDBLOCK || e == EINTR || e == EPERM || e == EHOSTDOWN || e == ENETDOWN;
}

struct PlayStats {
  std::uint64_t sent = 0;           ///< datagrams handed to the kernel
  std::uint64_t attempted = 0;      ///< packets whose deadline came (sent or failed)
  std::uint64_t failed = 0;         ///< transient send failures
  int first_failure = 0;            ///< errno of the first failure
  std::uint64_t passes = 0;         ///< whole passes over the file
  std::int64_t max_late_ns = 0;     ///< worst wake-up after a deadline
  std::int64_t start_ns = 0;
  std::int64_t end_ns = 0;
};

void progress_line(const std::string& file, const PlayStats& st, std::uint64_t per_pass, double pass_s,
                   std::int64_t now, bool loop) {
  const double elapsed = st.attempted == 0 ? 0.0 : static_cast<double>(now - st.start_ns) / 1e9;
  std::string s = "\r" + file + ": " + hms(elapsed) + " / " + hms(loop ? pass_s * static_cast<double>(st.passes + 1) : pass_s) +
                  ", " + std::to_string(st.sent) + "/" +
                  std::to_string(loop ? per_pass * (st.passes + 1) : per_pass) + " packets sent";
  if (loop) s += " (pass " + std::to_string(st.passes + 1) + ")";
  if (st.failed != 0) s += ", " + std::to_string(st.failed) + " failed";
  s += "\x1b[K";
  std::fputs(s.c_str(), stderr);
}

}  // namespace

Exit run_play(const CommandSpec& cmd, const ParsedArgs& args) {
  const std::string file = args.positionals.front();
  const std::string to = *args.value("to");
  std::string err;
  const auto dest = split_host_port(to, err);
  if (!dest) return usage_error(&cmd, "--to: " + err);
  double speed = 1.0;
  if (const auto s = args.value("speed")) {
    const auto v = parse_speed(*s);
    if (!v) return usage_error(&cmd, "--speed: expected a number from 0.01 to 1000, got '" + printable(*s) + "'");
    speed = *v;
  }
  const bool loop = args.flag("loop");
  const bool show_progress = !args.flag("quiet") && isatty(STDERR_FILENO) == 1;

  // Inspect first: an uninterpretable file is a file problem (1), not an I/O error (3).
  fileio::RecordInfo checked;
  if (const Status st = fileio::inspect_record(file, checked); !st) {
    report(cmd, about_file(file, st));
    return exit_for(st);
  }
  if (checked.integrity == fileio::Integrity::kBroken) {
    std::string msg = file + ": not a record file that can be played";
    for (const std::string& p : checked.problems) msg += "; " + p;
    report(cmd, msg);
    return Exit::kProblems;
  }
  std::optional<fileio::RecordReader> reader;
  reader.emplace();
  if (const Status st = reader->open(file); !st) {
    report(cmd, about_file(file, st));
    return exit_for(st);
  }
  const fileio::RecordInfo info = reader->info();  // a copy: --loop reopens the reader
  if (!info.codec || info.clock_rate == 0 || info.decoded.header.increment <= 0) {
    report(cmd, file + ": unknown codec '" + printable(info.decoded.header.codec) +
                    "': the send period cannot be derived");
    return Exit::kProblems;
  }
  Exit result = Exit::kOk;
  if (info.integrity != fileio::Integrity::kOk) {
    std::string msg = file + ": damaged, playing its " + std::to_string(reader->packet_count()) + " readable packets";
    for (const std::string& p : info.problems) msg += "; " + p;
    report(cmd, msg);
    result = Exit::kProblems;
  }
  const std::uint64_t per_pass = reader->packet_count();
  if (per_pass == 0) {
    report(cmd, file + ": no packets to play");
    return result;
  }
  const auto increment = static_cast<std::uint32_t>(info.decoded.header.increment);
  const std::uint32_t clock = info.clock_rate;
  // period in ns at this speed; long double keeps k * period exact enough for years of --loop.
  const long double period_ns = static_cast<long double>(increment) * 1e9L / clock / static_cast<long double>(speed);
  const double pass_s = static_cast<double>(static_cast<long double>(per_pass) * period_ns / 1e9L);

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (const int rc = getaddrinfo(dest->host.c_str(), dest->port.c_str(), &hints, &res); rc != 0) {
    report(cmd, "--to " + to + ": cannot resolve '" + printable(dest->host) + "': " +
                    (rc == EAI_SYSTEM ? std::strerror(errno) : gai_strerror(rc)));
    return rc == EAI_NONAME ? Exit::kUsage : Exit::kIo;
  }
  Socket sock;
  int connect_errno = 0;
  for (const addrinfo* ai = res; ai != nullptr && sock.fd() < 0; ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      connect_errno = errno;
      continue;
    }
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      connect_errno = errno;
      ::close(fd);
      continue;
    }
    sock.reset(fd);
  }
  freeaddrinfo(res);
  if (sock.fd() < 0) {
    report(cmd, "cannot set up a UDP socket to " + to + ": " + std::strerror(connect_errno));
    return Exit::kIo;
  }

  install_stop_handlers();
  PlayStats st;
  std::int64_t next_progress = 0;
  Status read_err;
  int fatal_errno = 0;
  bool whole_pass = false;
  for (;;) {
    std::uint64_t in_pass = 0;
    while (g_stop_signal == 0) {
      const auto pkt = reader->next(&read_err);
      if (!pkt) break;
      // Time zero is taken right after the first packet left, so packet k is never sent
      // before (first packet's departure + k * period): receivers can rely on that.
      std::int64_t deadline = 0;
      if (st.attempted != 0) {
        deadline = st.start_ns + static_cast<std::int64_t>(std::llroundl(static_cast<long double>(st.attempted) * period_ns));
        sleep_until(deadline);
        if (g_stop_signal != 0) break;
      }
      const std::int64_t woke = now_ns();
      if (st.attempted != 0) st.max_late_ns = std::max(st.max_late_ns, woke - deadline);
      const ssize_t n = ::send(sock.fd(), pkt->data(), pkt->size(), 0);
      if (n < 0) {
        const int e = errno;
        if (!transient_send_error(e)) {
          fatal_errno = e;
          break;
        }
        if (st.failed++ == 0) st.first_failure = e;
      } else {
        ++st.sent;
      }
      if (st.attempted == 0) st.start_ns = now_ns();
      ++st.attempted;
      ++in_pass;
      if (show_progress) {
        const std::int64_t now = now_ns();
        if (now >= next_progress) {
          progress_line(file, st, per_pass, pass_s, now, loop);
          next_progress = now + kNsPerS;
        }
      }
    }
    if (in_pass == per_pass) {
      whole_pass = true;
      ++st.passes;
    }
    if (!read_err || fatal_errno != 0 || g_stop_signal != 0 || !loop) break;
    reader.emplace();
    if (const Status s = reader->open(file); !s) {
      read_err = s;
      break;
    }
    if (reader->packet_count() == 0) break;
  }
  st.end_ns = now_ns();
  if (show_progress) std::fputs("\n", stderr);

  // One summary line.
  std::string summary = file + " -> " + to + ": sent " + std::to_string(st.sent);
  if (!loop) {
    summary += "/" + std::to_string(per_pass) + " packets";
  } else {
    summary += " packets (" + std::to_string(st.passes) + (st.passes == 1 ? " whole pass" : " whole passes") +
               " of " + std::to_string(per_pass) + ")";
  }
  const double elapsed = st.attempted == 0 ? 0.0 : static_cast<double>(st.end_ns - st.start_ns) / 1e9;
  summary += " in " + fixed(elapsed, 3) + " s, period " + fixed(static_cast<double>(period_ns) / 1e6, 3) + " ms";
  if (speed != 1.0) summary += " (speed " + fixed(speed, 2) + ")";
  summary += ", max late " + fixed(static_cast<double>(st.max_late_ns) / 1e6, 3) + " ms";
  if (st.failed != 0) {
    summary += "; " + std::to_string(st.failed) + " sends failed (" + std::strerror(st.first_failure) + ")";
    result = worst(result, Exit::kProblems);
  }
  if (g_stop_signal != 0) {
    summary += std::string("; stopped by ") + (g_stop_signal == SIGINT ? "SIGINT" : "SIGTERM");
  }
  if (!whole_pass) result = worst(result, Exit::kProblems);
  report(cmd, summary);
  if (fatal_errno != 0) {
    report(cmd, "send to " + to + " failed: " + std::strerror(fatal_errno));
    return Exit::kIo;
  }
  if (!read_err) {
    report(cmd, about_file(file, read_err));
    return Exit::kIo;
  }
  return result;
}

}  // namespace callrec::cli
