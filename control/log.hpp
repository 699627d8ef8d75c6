#pragma once
// Control-plane logging: one line per event to stderr (journald adds the time stamp when run
// as a service; a local time stamp is added here when stderr is a terminal or a file).
// Never called from a per-packet path.
//
// A log line is always one line: control characters (CR, LF, ESC, every byte below 0x20 and
// DEL), the UTF-8 encoded C1 controls (U+0080..U+009F) and bytes that are not UTF-8 are written
// as \xNN, and a backslash as \\. So a name or number a peer sent cannot start a forged log
// line or drive the terminal, whatever field it reaches the log in.
#include <cstdarg>
#include <string>
#include <string_view>

namespace callrec::control {

enum class LogLevel : int { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };
void set_log_level(LogLevel l);
/// "error" | "warn" | "info" | "debug" ("trace" = debug; anything else: info).
LogLevel parse_log_level(std::string_view s);
LogLevel log_level();
void log_line(LogLevel l, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
/// The escaping log_line() applies to the formatted message (exposed for tests).
std::string log_escape(std::string_view s);

#define log_error(...) ::callrec::control::log_line(::callrec::control::LogLevel::kError, __VA_ARGS__)
#define log_warn(...) ::callrec::control::log_line(::callrec::control::LogLevel::kWarn, __VA_ARGS__)
#define log_info(...) ::callrec::control::log_line(::callrec::control::LogLevel::kInfo, __VA_ARGS__)
#define log_debug(...) ::callrec::control::log_line(::callrec::control::LogLevel::kDebug, __VA_ARGS__)

}  // namespace callrec::control
