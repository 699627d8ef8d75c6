// callrec repair: recompute dataSize from the whole packets on disk and cut a partial
// trailing packet (spec decision 3), or with --dry-run say what that would change.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>

#include "cli.hpp"
#include "fileio/record_format.hpp"
#include "fileio/record_reader.hpp"

namespace callrec::cli {
namespace {

using fileio::Integrity;

std::string plural(std::uint64_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

/// "dataSize 17200 -> 8600 (50 packets of 172 bytes), N trailing bytes removed".
std::string describe_change(std::uint32_t old_size, std::uint32_t new_size, std::uint64_t cut, std::uint32_t rtp_len,
                            const char* cut_verb) {
  std::string s;
  if (old_size != new_size) {
    s = "dataSize " + std::to_string(old_size) + " -> " + std::to_string(new_size);
    if (rtp_len != 0) {
      s += " (" + plural(new_size / rtp_len, "whole packet", "whole packets") + " of " + std::to_string(rtp_len) +
           " bytes)";
    }
  }
  if (cut != 0) {
    if (!s.empty()) s += ", ";
    s += plural(cut, "byte", "bytes") + " of a partial trailing packet " + cut_verb;
  }
  return s;
}

/// One line of result on stdout, flushed so that it interleaves with stderr in order.
void say(const std::string& line) {
  std::fputs(line.c_str(), stdout);
  std::fflush(stdout);
}

}  // namespace

Exit run_repair(const CommandSpec& cmd, const ParsedArgs& args) {
  const bool dry_run = args.flag("dry-run");
  Exit result = Exit::kOk;
  for (const std::string& file : args.positionals) {
    fileio::RecordInfo info;
    if (const Status st = fileio::inspect_record(file, info); !st) {
      report(cmd, about_file(file, st));
      result = worst(result, exit_for(st) == Exit::kIo ? Exit::kIo : Exit::kProblems);
      continue;
    }
    if (info.integrity == Integrity::kBroken) {
      std::string msg = file + ": cannot repair, the header cannot be interpreted";
      for (const std::string& p : info.problems) msg += "; " + p;
      report(cmd, msg);
      result = worst(result, Exit::kProblems);
      continue;
    }
    const auto rtp_len = static_cast<std::uint32_t>(std::max(info.decoded.header.rtp_len, 0));
    if (dry_run) {
      if (info.integrity == Integrity::kOk) {
        say(file + ": ok, nothing to change\n");
        continue;
      }
      const std::uint64_t whole_bytes = info.whole_packets * rtp_len;
      const auto new_size = static_cast<std::uint32_t>(std::min(whole_bytes, fileio::max_data_size(rtp_len)));
      std::string change = describe_change(info.decoded.header.data_size, new_size, info.trailing_bytes, rtp_len,
                                           "would be removed");
      if (change.empty()) change = "would be rewritten";  // repairable for a reason not about sizes
      say(file + ": would repair: " + change + " (dry run, nothing changed)\n");
      for (const std::string& p : info.problems) say("  problem: " + p + "\n");
      result = worst(result, Exit::kProblems);
      continue;
    }
    fileio::RepairResult r;
    if (const Status st = fileio::repair_record(file, r); !st) {
      report(cmd, "cannot repair " + about_file(file, st));
      result = worst(result, exit_for(st));
      continue;
    }
    if (!r.changed) {
      say(file + ": ok, nothing to change\n");
      continue;
    }
    std::string change = describe_change(r.old_data_size, r.new_data_size, r.truncated_bytes, rtp_len, "removed");
    if (change.empty()) change = r.summary;
    say(file + ": repaired: " + change + "\n");
  }
  return result;
}

}  // namespace callrec::cli
