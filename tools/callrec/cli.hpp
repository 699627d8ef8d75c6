#pragma once
// The callrec command-line tool.
//
// Shape: one table of subcommands with their options (kCommands in main.cpp), one generic
// option parser and one usage() driven by that table (cli.cpp), one file per subcommand
// (cmd_*.cpp). Adding a subcommand is one table entry plus its handler.
//
// Output conventions: results go to stdout, diagnostics to stderr as
// "callrec CMD: FILE: problem". Exit codes are the Exit enum, documented in every --help.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fileio/status.hpp"

namespace callrec::cli {

/// Process exit codes. Numerically ordered by severity so that combining the outcomes of
/// several files is std::max (I/O error > usage error > file problems > ok).
enum class Exit : int {
  kOk = 0,        ///< everything as asked
  kProblems = 1,  ///< a file has problems (info verdict not ok, play/export partial ...)
  kUsage = 2,     ///< bad command line
  kIo = 3,        ///< a file or socket could not be opened, read or written
};
[[nodiscard]] constexpr int to_int(Exit e) { return static_cast<int>(e); }
[[nodiscard]] constexpr Exit worst(Exit a, Exit b) { return to_int(a) >= to_int(b) ? a : b; }

/// One option of a subcommand. Every subcommand also accepts -h/--help (added by the parser).
struct OptionSpec {
  std::string_view long_name;   ///< "output" for --output
  char short_name = 0;          ///< 'o' for -o; 0 for none
  std::string_view value_name;  ///< "OUT.wav"; empty for a flag
  std::string_view help;        ///< one line
  bool required = false;
};

/// The parsed command line of one subcommand.
struct ParsedArgs {
  std::vector<std::string> positionals;
  /// Values by long option name; flags map to one empty value.
  std::map<std::string, std::vector<std::string>, std::less<>> options;

  [[nodiscard]] bool flag(std::string_view long_name) const { return options.find(long_name) != options.end(); }
  /// Value of a (single-valued) option, nullopt when absent.
  [[nodiscard]] std::optional<std::string> value(std::string_view long_name) const;
};

struct CommandSpec;
using Handler = Exit (*)(const CommandSpec& cmd, const ParsedArgs& args);

/// One subcommand: everything usage() prints and the parser checks.
struct CommandSpec {
  std::string_view name;
  std::string_view synopsis;     ///< after "callrec NAME ", e.g. "[OPTIONS] FILE... -o OUT.wav"
  std::string_view summary;      ///< one line for the global command list
  std::string_view description;  ///< pre-wrapped paragraphs for `callrec help NAME`
  std::span<const OptionSpec> options;
  std::size_t min_positionals = 0;
  std::size_t max_positionals = SIZE_MAX;
  std::string_view positional_name;  ///< "FILE": used in "missing FILE"
  std::string_view exit_notes;       ///< what codes 1 and 3 mean for this subcommand
  Handler run = nullptr;             ///< nullptr: reserved name, not part of this build
};

/// The subcommand table (main.cpp).
std::span<const CommandSpec> commands();
const CommandSpec* find_command(std::string_view name);

/// Prints the global help (cmd == nullptr) or a subcommand's help.
void usage(std::FILE* out, const CommandSpec* cmd);

/// Parses argv (the arguments after the subcommand name) against cmd's options.
/// Returns an error message for the user on a usage error. Does not handle --help.
std::optional<std::string> parse_args(const CommandSpec& cmd, std::span<char* const> argv, ParsedArgs& out);
/// True when -h/--help appears before any "--".
bool wants_help(std::span<char* const> argv);

/// Prints "callrec CMD: message" and "Try 'callrec help CMD'." to stderr; returns Exit::kUsage.
Exit usage_error(const CommandSpec* cmd, std::string_view message);
/// Prints "callrec CMD: message" to stderr.
void report(const CommandSpec& cmd, std::string_view message);
/// "PATH: message", unless the message already names the path.
std::string about_file(const std::filesystem::path& path, const Status& st);
/// Exit code for a failed Status about a file: an errno (open/read/write failed) is kIo,
/// a logical error (bad format) is kProblems.
Exit exit_for(const Status& st);

// --- formatting helpers (format.cpp) ---
/// printf("%.*f") in the C locale.
std::string fixed(double v, int decimals);
/// "h:mm:ss.mmm".
std::string hms(double seconds);
/// Text safe for a terminal: non-printable bytes as \xNN.
std::string printable(std::string_view s);
/// A JSON string literal (with quotes). Valid UTF-8 passes through; control characters and
/// bytes that are not valid UTF-8 are escaped as \u00XX, so the output is always valid JSON.
std::string json_string(std::string_view s);

// --- network helpers (net.cpp) ---
struct HostPort {
  std::string host;  ///< name or IP literal, without IPv6 brackets
  std::string port;  ///< decimal, 1..65535
};
/// "1.2.3.4:5004", "[::1]:5004", "name:5004". A bare IPv6 address must be in brackets.
/// nullopt with a message for the user in err.
std::optional<HostPort> split_host_port(std::string_view s, std::string& err);

inline constexpr std::size_t kHttpMaxResponse = 16u << 20;
struct HttpResult {
  bool connected = false;  ///< the TCP connection was established
  bool timed_out = false;  ///< no (complete) answer within the timeout
  int status = 0;          ///< HTTP status code; 0: no HTTP response (see error)
  std::string body;
  std::string error;  ///< why there is no response ("cannot connect: Connection refused")
};
/// One blocking HTTP/1.1 GET (Connection: close); the whole exchange, name resolution aside,
/// is bounded by timeout.
HttpResult http_get(const HostPort& to, std::string_view path, std::chrono::milliseconds timeout);

// --- subcommand handlers (cmd_*.cpp) ---
Exit run_info(const CommandSpec& cmd, const ParsedArgs& args);
Exit run_export(const CommandSpec& cmd, const ParsedArgs& args);
Exit run_play(const CommandSpec& cmd, const ParsedArgs& args);
Exit run_repair(const CommandSpec& cmd, const ParsedArgs& args);
Exit run_list(const CommandSpec& cmd, const ParsedArgs& args);
/// --catalog, else the catalog of the daemon on the default metrics endpoint, else the default.
std::filesystem::path catalog_path(const ParsedArgs& args);
/// callrec export --call: one catalog recording (all its streams) to one WAV.
Exit run_export_call(const CommandSpec& cmd, const ParsedArgs& args, const std::string& call);
Exit run_status(const CommandSpec& cmd, const ParsedArgs& args);

}  // namespace callrec::cli
