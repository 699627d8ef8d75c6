// callrec export --call: one recording of the catalog -> one WAV, placed on packet time: each
// segment at the capture time its catalog row gives (opened_at, ms), each packet at its RTP
// timestamp within the segment (so gaps nobody filled stay gaps), silence where a side sent
// nothing.
//
// Channels. The streams of a recording are those with a catalog row (StreamRow) or with record
// files. The rule depends only on the rows' roles, never on the order of the streams:
//  - one stream (an upload; a SIPREC "mixed" stream; any recording of a single stream): mono.
//  - two or more streams: stereo. Left is the stream whose role is "caller", right the one
//    whose role is "callee" (the first of each, in stream order). A side no role names falls
//    back to stream 0 for left and stream 1 for right (the other one of the two when the named
//    side already took it): without roles (older rows) that is stream 0 left and 1 right; a
//    caller on stream 1 alone puts stream 0 right. A side whose stream has no files is silent.
//  - streams on neither channel (SIPREC may offer 3+ m-lines) are left out: the report names
//    each (with its role and label) and the export counts as partial (exit 1).
// Only the exported streams must have a codec export decodes (PCMA, PCMU, G722).
#include <algorithm>
#include <charconv>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cli.hpp"
#include "fileio/catalog.hpp"
#include "fileio/g711.hpp"
#include "fileio/g722.hpp"
#include "fileio/record_format.hpp"
#include "fileio/record_reader.hpp"
#include "fileio/rtp.hpp"
#include "fileio/wav_writer.hpp"

namespace callrec::cli {
namespace {

namespace fs = std::filesystem;

enum class Dec : std::uint8_t { kPcma, kPcmu, kG722 };

struct Seg {
  fs::path path;
  std::int64_t opened_at = 0;  ///< unix ms
  Dec dec = Dec::kPcma;
};

/// At most 12 hours of 16 kHz stereo are assembled in memory (~2.7 GB would be the cap).
constexpr std::uint64_t kMaxFrames = 12ull * 3600 * 16000;

}  // namespace

Exit run_export_call(const CommandSpec& cmd, const ParsedArgs& args, const std::string& call) {
  const fs::path out_path = *args.value("output");
  const fs::path cat_path = catalog_path(args);
  fileio::Catalog catalog;
  if (Status st = catalog.open_read_only(cat_path); !st) {
    report(cmd, st.message());
    return Exit::kIo;
  }
  fileio::CatalogFilter f;
  f.limit = 0;
  std::int64_t id = 0;
  const auto [end, perr] = std::from_chars(call.data(), call.data() + call.size(), id);
  if (!call.empty() && perr == std::errc{} && end == call.data() + call.size() && id > 0) f.id = id;
  else f.call_id = call;
  std::vector<fileio::RecordingRow> rows;
  if (Status st = catalog.list(f, rows); !st) {
    report(cmd, st.message());
    return Exit::kIo;
  }
  if (rows.empty()) {
    report(cmd, "--call " + printable(call) + ": no such recording in " + cat_path.string());
    return Exit::kProblems;
  }
  if (rows.size() > 1) {
    std::string ids;
    for (const auto& r : rows) ids += (ids.empty() ? "" : ", ") + std::to_string(r.id);
    report(cmd, "--call " + printable(call) + ": " + std::to_string(rows.size()) +
                    " recordings have this Call-ID (catalog ids " + ids + "; the legs of a B2BUA): give one id");
    return Exit::kUsage;
  }
  const fileio::RecordingRow& row = rows.front();
  if (row.state == "recording") report(cmd, "recording " + std::to_string(row.id) + " is still running: exporting what is on disk");

  if (row.segments.empty()) {
    report(cmd, "recording " + std::to_string(row.id) + " has no record files (no media was recorded); nothing written");
    return Exit::kProblems;
  }
  // Every stream of the recording: with a catalog row, or only record files (row nullptr).
  std::map<std::uint32_t, const fileio::StreamRow*> known;
  for (const fileio::StreamRow& t : row.streams) known.emplace(t.stream, &t);
  for (const fileio::SegmentRow& g : row.segments) known.emplace(g.stream, nullptr);
  auto describe_stream = [&known](std::uint32_t n) {
    std::string d = "stream " + std::to_string(n);
    const auto it = known.find(n);
    if (it == known.end() || it->second == nullptr) return d;
    const fileio::StreamRow& t = *it->second;
    std::string more;
    if (!t.role.empty()) more = printable(t.role);
    if (!t.label.empty()) more += (more.empty() ? "label " : ", label ") + printable(t.label);
    return more.empty() ? d : d + " (" + more + ")";
  };

  // Which stream goes to which channel (see the header comment): chosen[c] feeds channel c.
  std::vector<std::uint32_t> chosen;
  if (known.size() == 1) {
    chosen.push_back(known.begin()->first);
  } else {
    std::optional<std::uint32_t> left, right;
    for (const auto& [n, t] : known) {
      if (t == nullptr) continue;
      if (!left && t->role == "caller") left = n;
      if (!right && t->role == "callee") right = n;
    }
    if (!left) left = right == 0u ? 1u : 0u;
    if (!right) right = left == 1u ? 0u : 1u;
    chosen = {*left, *right};
  }
  const auto channels = static_cast<unsigned>(chosen.size());
  Exit result = Exit::kOk;
  std::string left_out;
  for (const auto& [n, t] : known) {
    if (std::find(chosen.begin(), chosen.end(), n) != chosen.end()) continue;
    left_out += (left_out.empty() ? "" : ", ") + describe_stream(n);
  }
  if (!left_out.empty()) {
    report(cmd, "recording " + std::to_string(row.id) + ": " + std::to_string(known.size()) +
                    " streams and a WAV has two channels; left out: " + left_out);
    result = Exit::kProblems;
  }

  // The segments of the chosen streams, per channel, in order.
  std::vector<Seg> streams[2];
  bool wide = false;
  for (const fileio::SegmentRow& g : row.segments) {
    const auto at = std::find(chosen.begin(), chosen.end(), g.stream);
    if (at == chosen.end()) continue;
    Seg s;
    s.path = g.path;
    s.opened_at = g.opened_at;
    const std::string& c = g.codec;
    auto is = [&c](std::string_view n) {
      return c.size() == n.size() && std::equal(c.begin(), c.end(), n.begin(), [](char a, char b) {
               return std::toupper(static_cast<unsigned char>(a)) == std::toupper(static_cast<unsigned char>(b));
             });
    };
    if (is("PCMA")) s.dec = Dec::kPcma;
    else if (is("PCMU")) s.dec = Dec::kPcmu;
    else if (is("G722")) s.dec = Dec::kG722, wide = true;
    else {
      report(cmd, "recording " + std::to_string(row.id) + ": " + describe_stream(g.stream) + " is " + printable(c) +
                      ": export decodes PCMA, PCMU and G722; nothing written");
      return Exit::kProblems;
    }
    streams[static_cast<std::size_t>(at - chosen.begin())].push_back(std::move(s));
  }
  std::string layout = "mono (" + describe_stream(chosen[0]) + ")";
  if (channels == 2) layout = "stereo (left: " + describe_stream(chosen[0]) + ", right: " + describe_stream(chosen[1]) + ")";
  if (streams[0].empty() && streams[1].empty()) {
    report(cmd, "recording " + std::to_string(row.id) + ": no record files for " + layout + "; nothing written");
    return Exit::kProblems;
  }
  const std::uint32_t rate = wide ? 16000 : 8000;
  const std::uint32_t per_tick = rate / 8000;  // output samples per RTP timestamp unit (8 kHz clock)
  std::int64_t origin = INT64_MAX;
  for (const auto& segs : streams)
    for (const Seg& s : segs) origin = std::min(origin, s.opened_at);

  std::vector<std::int16_t> ch[2];
  std::vector<std::int16_t> pcm, wide_pcm;
  for (unsigned c = 0; c < channels; ++c) {
    const std::vector<Seg>& segs = streams[c];
    std::vector<std::int16_t>& out = ch[c];
    fileio::G722Decoder g722;
    for (const Seg& s : segs) {
      fileio::RecordReader reader;
      if (Status st = reader.open(s.path); !st) {
        report(cmd, about_file(s.path, st) + " (skipped)");
        result = worst(result, Exit::kProblems);
        continue;
      }
      const std::uint64_t seg_start = static_cast<std::uint64_t>(s.opened_at - origin) * rate / 1000;
      std::optional<std::uint32_t> ts0;
      std::uint64_t pos = seg_start;  // where the next packet goes when timestamps cannot tell
      Status read_err;
      g722.reset();
      while (const auto pkt = reader.next(&read_err)) {
        const auto v = fileio::parse_rtp(*pkt);
        const auto pl = fileio::rtp_payload(*pkt);
        if (!v || !pl) continue;
        if (!ts0) ts0 = v->timestamp;
        const auto delta = static_cast<std::int64_t>(static_cast<std::int32_t>(v->timestamp - *ts0));
        // A timestamp within a day ahead of the segment start places the packet; anything
        // else (a resync the assembler let through) continues where the previous one ended.
        std::uint64_t at = pos;
        if (delta >= 0 && delta < 86400ll * 8000) at = seg_start + static_cast<std::uint64_t>(delta) * per_tick;
        pcm.clear();
        if (s.dec == Dec::kG722) {
          g722.decode(*pl, pcm);
        } else {
          pcm.resize(pl->size());
          fileio::g711_decode(s.dec == Dec::kPcma ? fileio::Codec::kPcma : fileio::Codec::kPcmu, *pl, pcm);
          if (per_tick == 2) {  // 8 -> 16 kHz, linear interpolation
            wide_pcm.resize(pcm.size() * 2);
            for (std::size_t i = 0; i < pcm.size(); ++i) {
              const std::int32_t a = pcm[i], b = i + 1 < pcm.size() ? pcm[i + 1] : pcm[i];
              wide_pcm[2 * i] = pcm[i];
              wide_pcm[2 * i + 1] = static_cast<std::int16_t>((a + b) / 2);
            }
            pcm.swap(wide_pcm);
          }
        }
        if (at + pcm.size() > kMaxFrames) {
          report(cmd, "recording " + std::to_string(row.id) + ": longer than 12 hours; the rest is not exported");
          result = worst(result, Exit::kProblems);
          break;
        }
        if (out.size() < at + pcm.size()) out.resize(at + pcm.size(), 0);
        std::copy(pcm.begin(), pcm.end(), out.begin() + static_cast<std::ptrdiff_t>(at));
        pos = at + pcm.size();
      }
      if (!read_err) {
        report(cmd, about_file(s.path, read_err));
        result = worst(result, Exit::kProblems);
      }
    }
  }
  const std::size_t frames = std::max(ch[0].size(), ch[1].size());
  ch[0].resize(frames, 0);
  if (channels == 2) ch[1].resize(frames, 0);
  fileio::WavWriter wav;
  if (Status st = wav.open(out_path, rate, static_cast<std::uint16_t>(channels)); !st) {
    report(cmd, about_file(out_path, st));
    return Exit::kIo;
  }
  Status st;
  if (channels == 1) {
    st = wav.write(ch[0]);
  } else {
    std::vector<std::int16_t> inter;
    inter.reserve(8192);
    for (std::size_t i = 0; i < frames && st; i += 4096) {
      inter.clear();
      for (std::size_t k = i; k < std::min(frames, i + 4096); ++k) {
        inter.push_back(ch[0][k]);
        inter.push_back(ch[1][k]);
      }
      st = wav.write(inter);
    }
  }
  if (st) st = wav.close();
  if (!st) {
    report(cmd, about_file(out_path, st));
    std::error_code ec;
    fs::remove(out_path, ec);
    return Exit::kIo;
  }
  std::printf("%s: %u Hz 16-bit %s, %zu frames (%s) of recording %lld%s%s\n", out_path.c_str(), rate,
              layout.c_str(), frames,
              hms(static_cast<double>(frames) / rate).c_str(), static_cast<long long>(row.id),
              row.call_id.empty() ? "" : ", Call-ID ", printable(row.call_id).c_str());
  return result;
}

}  // namespace callrec::cli
