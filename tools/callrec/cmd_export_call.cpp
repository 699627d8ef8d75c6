// callrec export --call: one recording of the catalog -> one WAV. Two streams (passive capture,
// SIPREC) give a stereo WAV, stream 0 (the caller) left and stream 1 (the callee) right, placed
// on packet time: each segment at the capture time its catalog row gives (opened_at, ms), each
// packet at its RTP timestamp within the segment (so gaps nobody filled stay gaps), silence
// where a side sent nothing.
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

  // Streams and their segments, in order.
  std::map<std::uint32_t, std::vector<Seg>> streams;
  bool wide = false;
  for (const fileio::SegmentRow& g : row.segments) {
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
      std::string role = "stream " + std::to_string(g.stream);
      for (const auto& st : row.streams)
        if (st.stream == g.stream && !st.role.empty()) role += " (" + st.role + ")";
      report(cmd, "recording " + std::to_string(row.id) + ": " + role + " is " + printable(c) +
                      ": export decodes PCMA, PCMU and G722; nothing written");
      return Exit::kProblems;
    }
    streams[g.stream].push_back(std::move(s));
  }
  if (streams.empty()) {
    report(cmd, "recording " + std::to_string(row.id) + " has no record files (no media was recorded); nothing written");
    return Exit::kProblems;
  }
  const unsigned channels = row.streams.size() >= 2 || streams.size() >= 2 ? 2 : 1;
  const std::uint32_t rate = wide ? 16000 : 8000;
  const std::uint32_t per_tick = rate / 8000;  // output samples per RTP timestamp unit (8 kHz clock)
  std::int64_t origin = INT64_MAX;
  for (const auto& [n, segs] : streams)
    for (const Seg& s : segs) origin = std::min(origin, s.opened_at);

  std::vector<std::int16_t> ch[2];
  Exit result = Exit::kOk;
  std::vector<std::int16_t> pcm, wide_pcm;
  for (const auto& [n, segs] : streams) {
    if (n > 1) {
      report(cmd, "recording " + std::to_string(row.id) + ": stream " + std::to_string(n) + " ignored (two channels)");
      result = worst(result, Exit::kProblems);
      continue;
    }
    std::vector<std::int16_t>& out = ch[channels == 2 ? n : 0];
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
              channels == 2 ? "stereo (caller left, callee right)" : "mono", frames,
              hms(static_cast<double>(frames) / rate).c_str(), static_cast<long long>(row.id),
              row.call_id.empty() ? "" : ", Call-ID ", printable(row.call_id).c_str());
  return result;
}

}  // namespace callrec::cli
