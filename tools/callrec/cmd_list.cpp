// callrec list: query the recordings catalog (the daemon's SQLite database), read-only.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "cli.hpp"
#include "json_reader.hpp"
#include "control/config.hpp"
#include "fileio/catalog.hpp"

namespace callrec::cli {
namespace {

using namespace std::chrono;

constexpr std::int64_t kDayMs = 86'400'000;

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

/// Reads exactly n digits at s[i] (advancing i).
bool digits(std::string_view s, std::size_t& i, std::size_t n, int& out) {
  if (i + n > s.size()) return false;
  out = 0;
  for (std::size_t k = 0; k < n; ++k) {
    const char c = s[i + k];
    if (c < '0' || c > '9') return false;
    out = out * 10 + (c - '0');
  }
  i += n;
  return true;
}

/// A point in time for --since/--until, in unix ms. Accepts unix seconds ("1795975200"),
/// a date ("2026-11-29", UTC midnight; `end_of_day` gives the next midnight, so --until DATE
/// includes that day) and ISO-8601 "2026-11-29T18:00[:00[.250]]" with "Z" or "+HH:MM" /
/// "-HH:MM" / "+HHMM" (no suffix: UTC). A blank instead of "T" is accepted too.
std::optional<std::int64_t> parse_time(std::string_view s, bool end_of_day) {
  if (all_digits(s)) {
    std::int64_t v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || end != s.data() + s.size() || v > INT64_MAX / 1000) return std::nullopt;
    return v * 1000;
  }
  std::size_t i = 0;
  int y = 0, mo = 0, d = 0;
  if (!digits(s, i, 4, y) || i >= s.size() || s[i++] != '-' || !digits(s, i, 2, mo) || i >= s.size() ||
      s[i++] != '-' || !digits(s, i, 2, d)) {
    return std::nullopt;
  }
  const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)}, day{static_cast<unsigned>(d)}};
  if (!ymd.ok()) return std::nullopt;
  std::int64_t ms = duration_cast<milliseconds>(sys_days(ymd).time_since_epoch()).count();
  if (i == s.size()) return end_of_day ? ms + kDayMs : ms;
  if (s[i] != 'T' && s[i] != 't' && s[i] != ' ') return std::nullopt;
  ++i;
  int h = 0, mi = 0, sec = 0, frac_ms = 0;
  if (!digits(s, i, 2, h) || i >= s.size() || s[i++] != ':' || !digits(s, i, 2, mi)) return std::nullopt;
  if (i < s.size() && s[i] == ':') {
    ++i;
    if (!digits(s, i, 2, sec)) return std::nullopt;
    if (i < s.size() && s[i] == '.') {
      ++i;
      const std::size_t start = i;
      int scale = 100;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
        frac_ms += (s[i] - '0') * scale;
        scale /= 10;
        ++i;
      }
      if (i == start) return std::nullopt;
    }
  }
  if (h > 23 || mi > 59 || sec > 60) return std::nullopt;
  ms += ((h * 60LL + mi) * 60LL + sec) * 1000LL + frac_ms;
  if (i == s.size()) return ms;
  if ((s[i] == 'Z' || s[i] == 'z') && i + 1 == s.size()) return ms;
  if (s[i] != '+' && s[i] != '-') return std::nullopt;
  const int sign = s[i++] == '+' ? 1 : -1;
  int oh = 0, om = 0;
  if (!digits(s, i, 2, oh)) return std::nullopt;
  if (i < s.size() && s[i] == ':') ++i;
  if (!digits(s, i, 2, om) || i != s.size() || oh > 23 || om > 59) return std::nullopt;
  return ms - sign * (oh * 60LL + om) * 60'000LL;
}

/// "2026-11-29 18:00:00" (UTC).
std::string utc(std::int64_t unix_ms) {
  const sys_time<milliseconds> t{milliseconds(unix_ms)};
  const auto dp = floor<days>(t);
  const year_month_day ymd{dp};
  const hh_mm_ss<milliseconds> tod{t - dp};
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02u %02lld:%02lld:%02lld", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<long long>(tod.hours().count()), static_cast<long long>(tod.minutes().count()),
                static_cast<long long>(tod.seconds().count()));
  return buf;
}

/// "1:02:03" (hours not padded).
std::string duration_text(std::int64_t ms) {
  if (ms < 0) ms = 0;
  const std::int64_t s = ms / 1000;
  char buf[48];
  std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  return buf;
}

std::string or_dash(const std::string& s) { return s.empty() ? "-" : printable(s); }

/// Display width of a UTF-8 string (code points; good enough for names and numbers).
std::size_t width(std::string_view s) {
  return static_cast<std::size_t>(std::count_if(s.begin(), s.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  }));
}

void print_table(const std::vector<std::vector<std::string>>& rows, const std::vector<bool>& right) {
  std::vector<std::size_t> w(rows.front().size(), 0);
  for (const auto& r : rows) {
    for (std::size_t c = 0; c < r.size(); ++c) w[c] = std::max(w[c], width(r[c]));
  }
  std::string out;
  for (const auto& r : rows) {
    std::string line;
    for (std::size_t c = 0; c < r.size(); ++c) {
      const std::size_t pad = w[c] - width(r[c]);
      const bool last = c + 1 == r.size();
      if (right[c]) line.append(pad, ' ');
      line += r[c];
      if (!right[c] && !last) line.append(pad, ' ');
      if (!last) line += "  ";
    }
    out += line;
    out += '\n';
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
}

}  // namespace

std::filesystem::path catalog_path(const ParsedArgs& args) {
  std::filesystem::path path;
  if (auto v = args.value("catalog")) {
    path = *v;
  } else {
    // A daemon running with the default metrics endpoint says where its catalog is (callrecd
    // started by `tools/dev.sh run` keeps it in var/); otherwise the daemon's default path.
    control::DaemonConfig defaults;  // the daemon's default catalog: <storage>/../catalog.db
    (void)control::validate(defaults);
    path = defaults.catalog;
    std::string err;
    if (auto to = split_host_port(defaults.metrics, err)) {
      const HttpResult r = http_get(*to, "/status", std::chrono::milliseconds(500));
      if (r.connected && !r.timed_out && r.status == 200) {
        JsonParser parser(r.body);
        if (const std::optional<Json> j = parser.parse(); j && j->kind == Json::Kind::kObject) {
          if (const std::string c = j->text("catalog"); !c.empty()) path = c;
        }
      }
    }
  }
  return path;
}

Exit run_list(const CommandSpec& cmd, const ParsedArgs& args) {
  fileio::CatalogFilter f;
  if (auto v = args.value("device")) f.device = *v;
  if (auto v = args.value("number")) f.number = *v;
  if (auto v = args.value("call-id")) f.call_id = *v;
  if (auto v = args.value("id")) {
    std::int64_t id = 0;
    const auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), id);
    if (v->empty() || ec != std::errc{} || end != v->data() + v->size() || id <= 0) {
      return usage_error(&cmd, "--id " + printable(*v) + ": expected a catalog id (a positive number)");
    }
    f.id = id;
  }
  if (auto v = args.value("state")) {
    if (*v != "recording" && *v != "stopped" && *v != "recovered") {
      return usage_error(&cmd, "--state " + printable(*v) + ": expected recording, stopped or recovered");
    }
    f.state = *v;
  }
  constexpr std::string_view kTimeForms = "expected YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ (UTC) or unix seconds";
  if (auto v = args.value("since")) {
    f.from = parse_time(*v, false);
    if (!f.from) return usage_error(&cmd, "--since " + printable(*v) + ": " + std::string(kTimeForms));
  }
  if (auto v = args.value("until")) {
    f.to = parse_time(*v, true);
    if (!f.to) return usage_error(&cmd, "--until " + printable(*v) + ": " + std::string(kTimeForms));
  }
  if (f.from && f.to && *f.from >= *f.to) {
    return usage_error(&cmd, "--since " + *args.value("since") + " is not before --until " + *args.value("until"));
  }
  if (auto v = args.value("limit")) {
    std::size_t n = 0;
    const auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
    if (v->empty() || ec != std::errc{} || end != v->data() + v->size()) {
      return usage_error(&cmd, "--limit " + printable(*v) + ": expected a number (0: no limit)");
    }
    f.limit = n;
  }

  const std::filesystem::path path = catalog_path(args);
  fileio::Catalog catalog;
  if (Status st = catalog.open_read_only(path); !st) {
    report(cmd, st.message() + (args.flag("catalog") ? "" : " (the daemon's default; see --catalog)"));
    return Exit::kIo;
  }
  std::vector<fileio::RecordingRow> rows;
  if (Status st = catalog.list(f, rows); !st) {
    report(cmd, st.message());
    return Exit::kIo;
  }

  if (args.flag("json")) {
    std::string out = fileio::to_json(rows);
    out += '\n';
    std::fwrite(out.data(), 1, out.size(), stdout);
  } else if (rows.empty()) {
    report(cmd, "no recordings match");
  } else {
    const std::int64_t now = fileio::to_unix_ms(system_clock::now());
    std::vector<std::vector<std::string>> table;
    table.push_back({"ID", "DEVICE", "REMOTE", "LOCAL", "DIR", "CODEC", "START (UTC)", "DURATION", "STATE",
                     "PACKETS", "LOST", "FILES"});
    for (const fileio::RecordingRow& r : rows) {
      std::string state = printable(r.state);
      if (!r.stop_reason.empty()) state += " (" + printable(r.stop_reason) + ")";
      std::uint64_t packets = r.stats.received;
      if (r.state != "stopped") {  // counters are final only when stopped: use the files' packets
        std::uint64_t on_disk = 0;
        for (const auto& g : r.segments) on_disk += g.packets;
        packets = std::max(packets, on_disk);
      }
      table.push_back({std::to_string(r.id), or_dash(r.device), or_dash(r.remote_number), or_dash(r.local_number),
                       or_dash(r.direction), or_dash(r.codec), utc(r.started_at),
                       duration_text(r.stopped_at.value_or(now) - r.started_at), state, std::to_string(packets),
                       std::to_string(r.stats.lost), std::to_string(r.segments.size())});
    }
    print_table(table, {true, false, false, false, false, false, false, true, false, true, true, true});
  }
  if (f.limit != 0 && rows.size() >= f.limit) {
    report(cmd, "showing the newest " + std::to_string(f.limit) + "; more may match (--limit 0 shows all)");
  }
  return Exit::kOk;
}

}  // namespace callrec::cli
