#include "control/log.hpp"

#include <algorithm>
#include <atomic>
#include <cstdint>
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

namespace {
/// Length of the valid UTF-8 sequence at s[i] that is not a C1 control, or 0.
std::size_t utf8_printable(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  std::size_t n = 0;
  std::uint32_t cp = 0;
  if (c >= 0xC2 && c <= 0xDF) { n = 2; cp = c & 0x1Fu; }
  else if (c >= 0xE0 && c <= 0xEF) { n = 3; cp = c & 0x0Fu; }
  else if (c >= 0xF0 && c <= 0xF4) { n = 4; cp = c & 0x07u; }
  else return 0;
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3Fu);
  }
  const std::uint32_t min = n == 2 ? 0x80 : n == 3 ? 0x800 : 0x10000;
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  if (cp >= 0x80 && cp <= 0x9F) return 0;  // C1 controls (CSI is U+009B)
  return n;
}
}  // namespace

std::string log_escape(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7F) {
      if (c == '\\') out += '\\';
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    if (c >= 0x80) {
      if (const std::size_t n = utf8_printable(s, i); n > 0) {
        out.append(s.substr(i, n));
        i += n;
        continue;
      }
    }
    out += "\\x";
    out += kHex[c >> 4];
    out += kHex[c & 15];
    ++i;
  }
  return out;
}

void log_line(LogLevel l, const char* fmt, ...) {
  if (static_cast<int>(l) > g_level.load(std::memory_order_relaxed)) return;
  char raw[2048];
  va_list ap;
  va_start(ap, fmt);
  const int len = std::vsnprintf(raw, sizeof raw, fmt, ap);
  va_end(ap);
  const std::string msg =
      log_escape(std::string_view(raw, len < 0 ? 0 : std::min<std::size_t>(static_cast<std::size_t>(len), sizeof raw - 1)));
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  tm tmv{};
  ::gmtime_r(&ts.tv_sec, &tmv);
  char when[32];
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tmv);
  std::lock_guard lk(g_mu);
  std::fprintf(stderr, "%s.%03ldZ callrecd %s: %s\n", when, ts.tv_nsec / 1000000, kNames[static_cast<int>(l)], msg.c_str());
}

LogLevel parse_log_level(std::string_view s) {
  if (s == "error") return LogLevel::kError;
  if (s == "warn") return LogLevel::kWarn;
  if (s == "debug" || s == "trace") return LogLevel::kDebug;
  return LogLevel::kInfo;
}

}  // namespace callrec::control
