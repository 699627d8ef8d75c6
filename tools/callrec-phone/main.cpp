// callrec-phone: phone simulator and load generator for recording servers that speak the
// control protocol (../shared/spec/control-protocol.md), or with --siprec a SIPREC recording
// client (RFC 7866, siprec.hpp). The main thread parses options, starts the workers
// (worker.hpp) and in SIPREC mode the signalling thread, prints progress and the final report;
// signals are taken here with sigtimedwait (the other threads never see them).
#include <netdb.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "control/config.hpp"
#include "options.hpp"
#include "siprec.hpp"
#include "stats.hpp"
#include "worker.hpp"

namespace {

using callrec::phone::kExitCallsFailed;
using callrec::phone::kExitOk;
using callrec::phone::kExitUsage;

/// "HOST:PORT": an IP literal first (no DNS), else a host name resolved once here.
bool resolve_server(const std::string& text, sockaddr_storage& out, std::string* error,
                    const char* flag = "--server") {
  if (callrec::control::parse_endpoint(text, out).is_ok()) {
    if (callrec::control::endpoint_port(out) == 0) {
      *error = std::string(flag) + " " + text + ": port 0";
      return false;
    }
    return true;
  }
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    *error = std::string(flag) + " " + text + ": expected HOST:PORT";
    return false;
  }
  std::string host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string port = text.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0 || res == nullptr) {
    *error = std::string(flag) + " " + text + ": " + ::gai_strerror(rc);
    return false;
  }
  std::memset(&out, 0, sizeof out);
  std::memcpy(&out, res->ai_addr, res->ai_addrlen);
  ::freeaddrinfo(res);
  return true;
}

/// Raises the descriptor limit to the hard limit; returns the soft limit now in force.
rlim_t raise_fd_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
    ::getrlimit(RLIMIT_NOFILE, &rl);
  }
  return rl.rlim_cur;
}

callrec::phone::Stats merge_all(const std::vector<std::unique_ptr<callrec::phone::Worker>>& workers) {
  callrec::phone::Stats s;
  for (const auto& w : workers) s.merge(w->snapshot());
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace callrec::phone;  // NOLINT(google-build-using-namespace)
  std::string error;
  bool help = false;
  auto parsed = parse_options(argc, argv, &error, &help);
  if (help) {
    std::fputs(usage().c_str(), stdout);
    return kExitOk;
  }
  if (!parsed) {
    std::fprintf(stderr, "callrec-phone: %s\nTry 'callrec-phone --help'.\n", error.c_str());
    return kExitUsage;
  }

  auto cfg = std::make_unique<RunConfig>();
  cfg->opt = std::move(*parsed);
  const Options& opt = cfg->opt;
  if (!resolve_server(opt.siprec_mode() ? opt.siprec : opt.server, cfg->server, &error,
                      opt.siprec_mode() ? "--siprec" : "--server")) {
    std::fprintf(stderr, "callrec-phone: %s\n", error.c_str());
    return kExitUsage;
  }
  if (!opt.wav_path.empty()) {
    if (!cfg->audio.load_wav(opt.wav_path, opt.codec, &error)) {
      std::fprintf(stderr, "callrec-phone: %s\n", error.c_str());
      return kExitUsage;
    }
  } else {
    cfg->audio.make_tones(opt.tone_hz, opt.tone_spread_hz, opt.codec);
  }
  if (opt.seed) {
    cfg->seed = *opt.seed;
  } else {
    std::random_device rd;
    cfg->seed = (static_cast<std::uint64_t>(rd()) << 32) ^ rd() ^
                static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }
  if (!opt.save_sent_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(opt.save_sent_dir, ec);
    if (ec) {
      std::fprintf(stderr, "callrec-phone: --save-sent %s: %s\n", opt.save_sent_dir.c_str(), ec.message().c_str());
      return kExitUsage;
    }
  }

  const rlim_t fd_limit = raise_fd_limit();
  const std::uint64_t fds_needed =
      opt.siprec_mode()
          ? static_cast<std::uint64_t>(opt.sessions) * (opt.udp_sockets == 0 ? 2 : 0) + opt.connections +
                static_cast<std::uint64_t>(opt.udp_sockets) * opt.threads + 4ULL * opt.threads + 20
          : static_cast<std::uint64_t>(opt.phones) * (opt.udp_sockets == 0 ? 2 : 1) +
                static_cast<std::uint64_t>(opt.udp_sockets) * opt.threads + 4ULL * opt.threads + 16 +
                (opt.save_sent_dir.empty() ? 0 : static_cast<std::uint64_t>(opt.phones) * opt.concurrent_per_phone);
  if (fds_needed > fd_limit) {
    std::fprintf(stderr,
                 "callrec-phone: warning: may need %llu file descriptors, the limit is %llu (raise it with "
                 "ulimit -n, or use --udp-sockets N to share RTP sockets)\n",
                 static_cast<unsigned long long>(fds_needed), static_cast<unsigned long long>(fd_limit));
  }

  // Signals: blocked in every thread (the workers inherit the mask), taken by sigtimedwait.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  StopLevel stop{0};
  std::vector<std::unique_ptr<Worker>> workers;
  std::vector<std::thread> threads;
  threads.reserve(opt.threads + 1);
  for (std::uint32_t t = 0; t < opt.threads; ++t) workers.push_back(std::make_unique<Worker>(*cfg, t, &stop));
  std::unique_ptr<SipClient> sip;
  if (opt.siprec_mode()) {
    std::vector<Worker*> ws;
    for (auto& w : workers) ws.push_back(w.get());
    sip = std::make_unique<SipClient>(*cfg, cfg->server, ws, &stop);
    if (!sip->init(&error)) {
      std::fprintf(stderr, "callrec-phone: %s\n", error.c_str());
      return kExitUsage;
    }
  }
  const auto t_start = std::chrono::steady_clock::now();
  for (auto& w : workers) threads.emplace_back([&w] { w->run(); });
  if (sip) threads.emplace_back([&sip] { sip->run(); });
  const auto merged = [&workers, &sip] {
    Stats s = merge_all(workers);
    if (sip) s.merge(sip->snapshot());
    return s;
  };

  auto elapsed = [&t_start] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  };
  double next_report = opt.report_interval_s;
  std::uint64_t rtp_at_last_report = 0;
  double last_report_t = 0;
  bool interrupted = false;
  while (true) {
    bool all_done = !sip || sip->finished();
    for (const auto& w : workers) all_done = all_done && w->finished();
    if (all_done) break;
    timespec wait{0, 100'000'000};
    const int sig = sigtimedwait(&sigs, nullptr, &wait);
    if (sig > 0) {
      interrupted = true;
      const int level = stop.load() + 1;
      stop.store(level, std::memory_order_release);
      if (level == 1) {
        std::fprintf(stderr, "callrec-phone: %s: stopping the calls in progress (again to abort)\n",
                     sig == SIGINT ? "SIGINT" : "SIGTERM");
      }
    }
    const double now = elapsed();
    if (opt.report_interval_s > 0 && now >= next_report) {
      const Stats s = merged();
      std::fprintf(stderr, "%s\n", format_progress(s, now, rtp_at_last_report, now - last_report_t).c_str());
      rtp_at_last_report = s.rtp_sent;
      last_report_t = now;
      next_report += opt.report_interval_s;
      if (next_report < now) next_report = now + opt.report_interval_s;
    }
  }
  for (auto& t : threads) t.join();

  const Stats total = merged();
  RunInfo info;
  info.elapsed_s = elapsed();
  info.seed = cfg->seed;
  info.phones = opt.phones;
  info.threads = opt.threads;
  info.server = opt.server;
  info.codec = std::string(callrec::fileio::codec_info(opt.codec).name);
  info.interrupted = interrupted;
  rusage ru{};
  if (::getrusage(RUSAGE_SELF, &ru) == 0) {
    info.cpu_user_s = static_cast<double>(ru.ru_utime.tv_sec) + static_cast<double>(ru.ru_utime.tv_usec) / 1e6;
    info.cpu_sys_s = static_cast<double>(ru.ru_stime.tv_sec) + static_cast<double>(ru.ru_stime.tv_usec) / 1e6;
  }
  if (opt.siprec_mode()) {
    info.server = opt.siprec;
    SiprecInfo si;
    si.transport = sip_transport_name(opt.transport);
    si.srtp = opt.srtp;
    si.sessions = opt.sessions;
    si.repeat = opt.repeat;
    const std::string report =
        opt.json ? format_siprec_report_json(total, info, si) : format_siprec_report_text(total, info, si);
    std::fputs(report.c_str(), stdout);
    std::fflush(stdout);
    const std::uint64_t expected = static_cast<std::uint64_t>(opt.sessions) * opt.repeat;
    bool ok = total.calls_failed == 0 && total.calls_active == 0;
    if (!interrupted && total.calls_attempted < expected) ok = false;
    return ok ? kExitOk : kExitCallsFailed;
  }
  const std::string report = opt.json ? format_report_json(total, info) : format_report_text(total, info);
  std::fputs(report.c_str(), stdout);
  std::fflush(stdout);

  const std::uint64_t expected = static_cast<std::uint64_t>(opt.phones) * opt.calls_per_phone;
  bool ok = total.calls_failed == 0 && total.calls_active == 0;
  if (!interrupted && total.calls_attempted < expected) ok = false;  // a worker could not run
  return ok ? kExitOk : kExitCallsFailed;
}
