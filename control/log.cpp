#include "control/log.hpp"

#include <atomic>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace callrec::control {

namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::mutex g_mu;
const char* kNames[] = {"error", "warn", "info", "debug"};
}  // namespace

void set_log_level(LogLevel l) { g_level.store(static_cast<int>(l), std::memory_order_relaxed); }
LogLevel log_level() { return static_cast<LogLevel>(g_level.load(std::memory_order_relaxed)); }

void log_line(LogLevel l, const char* fmt, ...) {
  if (static_cast<int>(l) > g_level.load(std::memory_order_relaxed)) return;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  tm tmv{};
  ::gmtime_r(&ts.tv_sec, &tmv);
  char when[32];
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tmv);
  std::lock_guard lk(g_mu);
  std::fprintf(stderr, "%s.%03ldZ callrecd %s: %s\n", when, ts.tv_nsec / 1000000, kNames[static_cast<int>(l)], msg);
}

}  // namespace callrec::control
