// callrec export: G.711 record files (segments of one recording) -> one 16-bit PCM mono WAV.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "cli.hpp"
#include "fileio/g711.hpp"
#include "fileio/record_format.hpp"
#include "fileio/record_reader.hpp"
#include "fileio/rtp.hpp"
#include "fileio/wav_writer.hpp"

namespace callrec::cli {
namespace {

namespace fs = std::filesystem;
using fileio::Codec;

/// A checked input: what export needs to know before creating the output.
struct Input {
  fs::path path;
  Codec codec{};
  std::uint32_t clock_rate = 0;
  std::uint32_t rtp_len = 0;
};

bool same_file(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  return fs::exists(a, ec) && fs::equivalent(a, b, ec);
}

}  // namespace

Exit run_export(const CommandSpec& cmd, const ParsedArgs& args) {
  const fs::path out_path = *args.value("output");
  if (out_path == "-") return usage_error(&cmd, "-o -: writing the WAV to stdout is not supported");
  if (auto call = args.value("call")) {
    if (!args.positionals.empty()) return usage_error(&cmd, "--call exports a catalog recording: no FILE with it");
    return run_export_call(cmd, args, *call);
  }
  if (args.value("catalog")) return usage_error(&cmd, "--catalog goes with --call");
  if (args.positionals.empty()) return usage_error(&cmd, "expected FILE... or --call ID");
  std::vector<fs::path> files(args.positionals.begin(), args.positionals.end());
  if (args.flag("sort")) {
    std::stable_sort(files.begin(), files.end(), [](const fs::path& a, const fs::path& b) {
      return a.filename() != b.filename() ? a.filename() < b.filename() : a < b;
    });
  }

  // Check every input before creating the output: nothing is written for an impossible export.
  std::vector<Input> inputs;
  Exit result = Exit::kOk;
  for (const fs::path& f : files) {
    if (same_file(out_path, f)) return usage_error(&cmd, "OUT.wav '" + out_path.string() + "' is one of the FILEs");
    fileio::RecordInfo info;
    if (const Status st = fileio::inspect_record(f, info); !st) {
      report(cmd, about_file(f, st));
      result = worst(result, exit_for(st));
      continue;
    }
    if (info.integrity == fileio::Integrity::kBroken) {
      std::string msg = f.string() + ": not a record file that can be interpreted";
      for (const std::string& p : info.problems) msg += "; " + p;
      report(cmd, msg);
      result = worst(result, Exit::kProblems);
      continue;
    }
    if (!info.codec) {
      report(cmd, f.string() + ": unknown codec '" + printable(info.decoded.header.codec) +
                      "' (export decodes PCMA and PCMU)");
      result = worst(result, Exit::kProblems);
      continue;
    }
    inputs.push_back({f, *info.codec, info.clock_rate, static_cast<std::uint32_t>(info.decoded.header.rtp_len)});
  }
  if (result != Exit::kOk) {
    report(cmd, "nothing written");
    return result;
  }
  for (const Input& in : inputs) {
    if (in.clock_rate != inputs.front().clock_rate) {
      return usage_error(&cmd, "mixed clock rates: " + inputs.front().path.string() + " is " +
                                   std::to_string(inputs.front().clock_rate) + " Hz, " + in.path.string() + " is " +
                                   std::to_string(in.clock_rate) + " Hz");
    }
  }

  const std::uint32_t rate = inputs.front().clock_rate;
  fileio::WavWriter wav;
  if (const Status st = wav.open(out_path, rate); !st) {
    report(cmd, about_file(out_path, st));
    return Exit::kIo;
  }
  auto fail_io = [&](const std::string& msg) {
    report(cmd, msg);
    (void)wav.close();
    std::error_code ec;
    fs::remove(out_path, ec);
    report(cmd, "removed the incomplete " + out_path.string());
    return Exit::kIo;
  };

  std::vector<std::int16_t> pcm;
  for (const Input& in : inputs) {
    fileio::RecordReader reader;
    if (const Status st = reader.open(in.path); !st) {
      // The file changed since it was checked.
      if (exit_for(st) == Exit::kIo) return fail_io(about_file(in.path, st));
      report(cmd, about_file(in.path, st) + " (skipped)");
      result = worst(result, Exit::kProblems);
      continue;
    }
    const fileio::RecordInfo& info = reader.info();
    if (info.integrity != fileio::Integrity::kOk) {
      std::string msg = in.path.string() + ": damaged, exporting its " + std::to_string(reader.packet_count()) +
                        " readable packets";
      for (const std::string& p : info.problems) msg += "; " + p;
      report(cmd, msg);
      result = worst(result, Exit::kProblems);
    }
    const std::size_t silence_len = in.rtp_len > fileio::kRtpHeaderMin ? in.rtp_len - fileio::kRtpHeaderMin : 0;
    std::uint64_t bad_packets = 0;
    std::uint64_t index = 0;
    Status read_err;
    while (const auto pkt = reader.next(&read_err)) {
      const auto payload = fileio::rtp_payload(*pkt);
      if (payload) {
        pcm.resize(payload->size());
        fileio::g711_decode(in.codec, *payload, pcm);
      } else {
        // Keep the timing: a packet's worth of silence (what a plain 12-byte header would carry).
        if (bad_packets == 0) {
          report(cmd, in.path.string() + ": packet " + std::to_string(index) +
                          " is not an RTP v2 packet (or has bad padding); exported as silence");
        }
        ++bad_packets;
        pcm.assign(silence_len, 0);
      }
      if (const Status st = wav.write(pcm); !st) return fail_io(about_file(out_path, st));
      ++index;
    }
    if (!read_err) return fail_io(about_file(in.path, read_err));
    if (bad_packets != 0) {
      report(cmd, in.path.string() + ": " + std::to_string(bad_packets) + " of " + std::to_string(index) +
                      " packets were not RTP and became silence");
      result = worst(result, Exit::kProblems);
    }
  }
  const std::uint64_t samples = wav.samples_written();
  if (const Status st = wav.close(); !st) return fail_io(about_file(out_path, st));

  std::string summary = out_path.string() + ": " + std::to_string(rate) + " Hz 16-bit mono, " +
                        std::to_string(samples) + " samples (" +
                        hms(static_cast<double>(samples) / static_cast<double>(rate)) + ") from " +
                        std::to_string(inputs.size()) + (inputs.size() == 1 ? " file" : " files") +
                        (result == Exit::kOk ? "" : " (partial, see above)") + "\n";
  std::fputs(summary.c_str(), stdout);
  return result;
}

}  // namespace callrec::cli
