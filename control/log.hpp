#pragma once
// Control-plane logging: one line per event to stderr (journald adds the time stamp when run
// as a service; a local time stamp is added here when stderr is a terminal or a file).
// Never called from a per-packet path.
#include <cstdarg>

namespace callrec::control {

enum class LogLevel : int { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };
void set_log_level(LogLevel l);
LogLevel log_level();
void log_line(LogLevel l, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) ::callrec::control::log_line(::callrec::control::LogLevel::kError, __VA_ARGS__)
#define log_warn(...) ::callrec::control::log_line(::callrec::control::LogLevel::kWarn, __VA_ARGS__)
#define log_info(...) ::callrec::control::log_line(::callrec::control::LogLevel::kInfo, __VA_ARGS__)
#define log_debug(...) ::callrec::control::log_line(::callrec::control::LogLevel::kDebug, __VA_ARGS__)

}  // namespace callrec::control
