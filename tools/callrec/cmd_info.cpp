// callrec info: what a player derives from a record file (seed 3.3) and what is wrong with it.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <string>
#include <vector>

#include "cli.hpp"
#include "fileio/record_reader.hpp"

namespace callrec::cli {
namespace {

using fileio::Integrity;
using fileio::RecordInfo;

bool mentions_codec(const std::vector<std::string>& problems) {
  return std::any_of(problems.begin(), problems.end(), [](const std::string& p) {
    std::string lower(p);
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return lower.find("codec") != std::string::npos;
  });
}

/// The library's findings plus the tool's verdict: a file is ok when its integrity is ok and
/// its codec is known (otherwise period and duration are unknown and it cannot be played).
struct Verdict {
  bool ok = false;
  std::vector<std::string> problems;
};

Verdict judge(const RecordInfo& info) {
  Verdict v;
  v.problems = info.problems;
  if (!info.codec && info.integrity != Integrity::kBroken && !mentions_codec(v.problems)) {
    v.problems.push_back("unknown codec '" + printable(info.decoded.header.codec) +
                         "': clock rate, period and duration cannot be derived");
  }
  v.ok = info.integrity == Integrity::kOk && info.codec.has_value();
  return v;
}

const char* byte_order_name(fileio::ByteOrder o) {
  return o == fileio::ByteOrder::kBig ? "big-endian" : "little-endian";
}

std::string text_report(const RecordInfo& info, const Verdict& v) {
  const auto& h = info.decoded.header;
  auto row = [](std::string& s, const char* key, const std::string& value) {
    s += "  ";
    s += key;
    s.append(12 - std::string_view(key).size(), ' ');
    s += value;
    s += '\n';
  };
  std::string s = info.path.string() + "\n";
  std::string codec = "'" + printable(h.codec) + "'";
  codec += info.codec ? " (" + std::to_string(info.clock_rate) + " Hz)" : " (unknown codec)";
  row(s, "codec", codec);
  row(s, "rtpLen", std::to_string(h.rtp_len) + " bytes");
  row(s, "increment", std::to_string(h.increment));
  row(s, "dataSize", std::to_string(h.data_size) + " bytes (" + std::to_string(info.bytes_on_disk) +
                         " bytes of data on disk, file " + std::to_string(info.file_size) + " bytes)");
  std::string packets = std::to_string(info.declared_packets) + " declared, " +
                        std::to_string(info.whole_packets) + " on disk";
  if (info.trailing_bytes != 0) packets += " + " + std::to_string(info.trailing_bytes) + " bytes of a partial packet";
  row(s, "packets", packets);
  if (info.codec) {
    row(s, "period", fixed(info.period_s * 1000.0, 3) + " ms");
    row(s, "duration", fixed(info.duration_s, 3) + " s (" + hms(info.duration_s) + ")");
  } else {
    row(s, "period", "unknown");
    row(s, "duration", "unknown");
  }
  row(s, "byte order", byte_order_name(info.decoded.order));
  row(s, "integrity", std::string(fileio::integrity_name(info.integrity)) + (v.ok ? "" : " (NOT OK)"));
  if (v.problems.empty()) {
    row(s, "problems", "none");
  } else {
    for (const std::string& p : v.problems) row(s, "problem", p);
  }
  return s;
}

std::string json_report(const RecordInfo& info, const Verdict& v) {
  const auto& h = info.decoded.header;
  std::string s = "{";
  auto key = [&s](const char* k) {
    if (s.size() > 1) s += ", ";
    s += '"';
    s += k;
    s += "\": ";
  };
  auto num = [&](const char* k, auto value) {
    key(k);
    s += std::to_string(value);
  };
  key("path");
  s += json_string(info.path.string());
  key("ok");
  s += v.ok ? "true" : "false";
  key("integrity");
  s += json_string(fileio::integrity_name(info.integrity));
  key("codec");
  s += json_string(h.codec);
  key("codec_known");
  s += info.codec ? "true" : "false";
  num("clock_rate", info.clock_rate);
  num("rtp_len", h.rtp_len);
  num("increment", h.increment);
  num("data_size", h.data_size);
  num("file_size", info.file_size);
  num("data_bytes_on_disk", info.bytes_on_disk);
  num("packets_declared", info.declared_packets);
  num("packets_on_disk", info.whole_packets);
  num("trailing_bytes", info.trailing_bytes);
  key("period_ms");
  s += fixed(info.codec ? info.period_s * 1000.0 : 0.0, 3);
  key("duration_s");
  s += fixed(info.codec ? info.duration_s : 0.0, 3);
  key("duration");
  s += json_string(hms(info.codec ? info.duration_s : 0.0));
  key("byte_order");
  s += json_string(info.decoded.order == fileio::ByteOrder::kBig ? "big" : "little");
  key("problems");
  s += '[';
  for (std::size_t i = 0; i < v.problems.size(); ++i) {
    if (i != 0) s += ", ";
    s += json_string(v.problems[i]);
  }
  s += "]}";
  return s;
}

}  // namespace

Exit run_info(const CommandSpec& cmd, const ParsedArgs& args) {
  const bool json = args.flag("json");
  Exit result = Exit::kOk;
  std::string out = json ? "[" : "";
  bool first = true;
  for (const std::string& file : args.positionals) {
    RecordInfo info;
    const Status st = fileio::inspect_record(file, info);
    std::string item;
    if (!st) {
      const std::string msg = about_file(file, st);
      report(cmd, msg);
      result = worst(result, exit_for(st) == Exit::kIo ? Exit::kIo : Exit::kProblems);
      if (json) {
        item = "{\"path\": " + json_string(file) + ", \"ok\": false, \"error\": " + json_string(st.message()) + "}";
      }
    } else {
      const Verdict v = judge(info);
      if (!v.ok) result = worst(result, Exit::kProblems);
      item = json ? json_report(info, v) : text_report(info, v);
    }
    if (item.empty()) continue;
    if (json) {
      out += first ? "\n  " : ",\n  ";
    } else if (!first) {
      out += '\n';
    }
    out += item;
    first = false;
  }
  if (json) out += first ? "]\n" : "\n]\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  if (std::fflush(stdout) != 0) {
    report(cmd, "cannot write to stdout");
    return Exit::kIo;
  }
  return result;
}

}  // namespace callrec::cli
