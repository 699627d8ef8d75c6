// The table-driven parts of the callrec tool: usage() and the option parser.
#include <algorithm>
#include <cstdio>
#include <string>
#include <string_view>

#include "cli.hpp"

namespace callrec::cli {
namespace {

constexpr std::string_view kExitCodes =
    "Exit codes:\n"
    "  0  ok\n"
    "  1  a file has problems (info verdict not ok, play or export partial, repair impossible)\n"
    "  2  usage error (unknown command or option, missing or bad argument)\n"
    "  3  I/O error (a file cannot be opened, read or written; a socket cannot be set up;\n"
    "     the daemon is not reachable)\n";

constexpr OptionSpec kHelpOption{"help", 'h', "", "show this help"};
constexpr std::size_t kOptionColumn = 24;

void put(std::FILE* out, std::string_view s) { std::fwrite(s.data(), 1, s.size(), out); }

std::string option_label(const OptionSpec& o) {
  std::string s = "  ";
  if (o.short_name != 0) {
    s += '-';
    s += o.short_name;
    s += ", ";
  } else {
    s += "    ";
  }
  s += "--";
  s += o.long_name;
  if (!o.value_name.empty()) {
    s += ' ';
    s += o.value_name;
  }
  return s;
}

void put_option(std::FILE* out, const OptionSpec& o) {
  std::string line = option_label(o);
  if (line.size() + 2 > kOptionColumn) {
    line += '\n';
    line.append(kOptionColumn, ' ');
  } else {
    line.append(kOptionColumn - line.size(), ' ');
  }
  line += o.help;
  if (o.required) line += " (required)";
  line += '\n';
  put(out, line);
}

/// Indents every line of text by `indent` spaces.
std::string indented(std::string_view text, std::size_t indent) {
  std::string out;
  bool at_line_start = true;
  for (char c : text) {
    if (at_line_start && c != '\n') out.append(indent, ' ');
    out += c;
    at_line_start = c == '\n';
  }
  if (!out.empty() && out.back() != '\n') out += '\n';
  return out;
}

const OptionSpec* find_long(const CommandSpec& cmd, std::string_view name) {
  for (const OptionSpec& o : cmd.options) {
    if (o.long_name == name) return &o;
  }
  return nullptr;
}

const OptionSpec* find_short(const CommandSpec& cmd, char c) {
  for (const OptionSpec& o : cmd.options) {
    if (o.short_name != 0 && o.short_name == c) return &o;
  }
  return nullptr;
}

std::string spelled(const OptionSpec& o) {
  std::string s;
  if (o.short_name != 0) {
    s += '-';
    s += o.short_name;
    s += '/';
  }
  s += "--";
  s += o.long_name;
  return s;
}

}  // namespace

std::optional<std::string> ParsedArgs::value(std::string_view long_name) const {
  const auto it = options.find(long_name);
  if (it == options.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

void usage(std::FILE* out, const CommandSpec* cmd) {
  if (cmd == nullptr) {
    put(out,
        "callrec - inspect, export, play and repair call-recording files; list the catalog\n"
        "          of recordings and show what a running daemon (callrecd) is doing\n"
        "\n"
        "Usage: callrec COMMAND [OPTIONS] [ARGS]\n"
        "       callrec help COMMAND      (or: callrec COMMAND --help)\n"
        "\n"
        "Commands:\n");
    for (const CommandSpec& c : commands()) {
      std::string line = "  ";
      line += c.name;
      line.append(c.name.size() < 9 ? 9 - c.name.size() : 1, ' ');
      line += c.summary;
      line += '\n';
      put(out, line);
    }
    put(out,
        "\n"
        "A record file is a 76-byte header (codec, rtpLen, increment, dataSize) followed by\n"
        "RTP packets of rtpLen bytes each, as phones write them (spec/record-format.md).\n"
        "\n");
    put(out, kExitCodes);
    return;
  }
  std::string head = "Usage: callrec ";
  head += cmd->name;
  if (!cmd->synopsis.empty()) {
    head += ' ';
    head += cmd->synopsis;
  }
  head += "\n\n";
  put(out, head);
  if (cmd->run == nullptr) {
    put(out, std::string(cmd->name) + ": " + std::string(cmd->summary) + ".\n");
    return;
  }
  std::string summary(cmd->summary);
  if (!summary.empty() && summary[0] >= 'a' && summary[0] <= 'z') summary[0] = static_cast<char>(summary[0] - 'a' + 'A');
  put(out, summary + ".\n\n");
  put(out, cmd->description);
  put(out, "\nOptions:\n");
  for (const OptionSpec& o : cmd->options) put_option(out, o);
  put_option(out, kHelpOption);
  put(out, "\n");
  put(out, kExitCodes);
  if (!cmd->exit_notes.empty()) {
    put(out, "\nFor ");
    put(out, cmd->name);
    put(out, ":\n");
    put(out, indented(cmd->exit_notes, 2));
  }
}

bool wants_help(std::span<char* const> argv) {
  for (const char* a : argv) {
    const std::string_view s = a;
    if (s == "--") return false;
    if (s == "-h" || s == "--help") return true;
  }
  return false;
}

std::optional<std::string> parse_args(const CommandSpec& cmd, std::span<char* const> argv, ParsedArgs& out) {
  bool options_done = false;
  for (std::size_t i = 0; i < argv.size(); ++i) {
    const std::string_view arg = argv[i];
    if (options_done || arg.size() < 2 || arg[0] != '-') {
      out.positionals.emplace_back(arg);
      continue;
    }
    if (arg == "--") {
      options_done = true;
      continue;
    }
    const OptionSpec* opt = nullptr;
    std::optional<std::string> attached;  // --name=value, -oVALUE
    if (arg.starts_with("--")) {
      std::string_view name = arg.substr(2);
      if (const auto eq = name.find('='); eq != std::string_view::npos) {
        attached = std::string(name.substr(eq + 1));
        name = name.substr(0, eq);
      }
      opt = find_long(cmd, name);
      if (opt == nullptr) return "unknown option '--" + printable(name) + "'";
    } else {
      opt = find_short(cmd, arg[1]);
      if (opt == nullptr) return "unknown option '" + printable(arg.substr(0, 2)) + "'";
      if (arg.size() > 2) {
        if (opt->value_name.empty()) return "option -" + std::string(1, arg[1]) + " takes no value (in '" + printable(arg) + "')";
        attached = std::string(arg.substr(2));
      }
    }
    auto& values = out.options[std::string(opt->long_name)];
    if (opt->value_name.empty()) {
      if (attached) return "option --" + std::string(opt->long_name) + " takes no value";
      if (values.empty()) values.emplace_back();
      continue;
    }
    if (!values.empty()) return "option " + spelled(*opt) + " given twice";
    if (attached) {
      values.push_back(*attached);
    } else if (i + 1 < argv.size()) {
      values.emplace_back(argv[++i]);
    } else {
      return "option " + spelled(*opt) + " needs a value (" + std::string(opt->value_name) + ")";
    }
  }
  for (const OptionSpec& o : cmd.options) {
    if (o.required && !out.flag(o.long_name)) {
      return "missing " + spelled(o) + " " + std::string(o.value_name);
    }
  }
  if (out.positionals.size() < cmd.min_positionals) return "missing " + std::string(cmd.positional_name);
  if (out.positionals.size() > cmd.max_positionals) {
    return "too many arguments (unexpected '" + printable(out.positionals[cmd.max_positionals]) + "')";
  }
  return std::nullopt;
}

Exit usage_error(const CommandSpec* cmd, std::string_view message) {
  std::string s = "callrec";
  if (cmd != nullptr) {
    s += ' ';
    s += cmd->name;
  }
  s += ": ";
  s += message;
  s += "\nTry 'callrec ";
  if (cmd != nullptr) {
    s += "help ";
    s += cmd->name;
  } else {
    s += "--help";
  }
  s += "'.\n";
  put(stderr, s);
  return Exit::kUsage;
}

void report(const CommandSpec& cmd, std::string_view message) {
  std::string s = "callrec ";
  s += cmd.name;
  s += ": ";
  s += message;
  s += '\n';
  put(stderr, s);
}

std::string about_file(const std::filesystem::path& path, const Status& st) {
  const std::string p = path.string();
  if (st.message().find(p) != std::string::npos) return st.message();
  return p + ": " + st.message();
}

Exit exit_for(const Status& st) {
  if (st.is_ok()) return Exit::kOk;
  return st.code() > 0 ? Exit::kIo : Exit::kProblems;
}

}  // namespace callrec::cli
