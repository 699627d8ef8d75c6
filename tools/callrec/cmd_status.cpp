// callrec status: what a running daemon is doing, from its operator interface (GET /status on
// the metrics endpoint, a JSON object; see control/daemon.cpp).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cli.hpp"
#include "json_reader.hpp"
#include "control/config.hpp"

namespace callrec::cli {
namespace {

using namespace std::chrono;

constexpr auto kTimeout = 5s;

std::string count(double v) { return std::to_string(static_cast<std::uint64_t>(v < 0 ? 0 : std::llround(v))); }

/// 1536 -> "1.5 KiB".
std::string bytes(double v) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? count(v) + " B" : fixed(v, 1) + " " + units[u];
}

std::string duration_text(double seconds) {
  auto s = static_cast<std::int64_t>(seconds < 0 ? 0 : seconds);
  const std::int64_t d = s / 86400;
  s %= 86400;
  char buf[64];
  if (d > 0) {
    std::snprintf(buf, sizeof buf, "%lldd %lld:%02lld:%02lld", static_cast<long long>(d),
                  static_cast<long long>(s / 3600), static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  }
  return buf;
}

std::string or_dash(const std::string& s) { return s.empty() ? "-" : printable(s); }

void put(const std::string& s) { std::fwrite(s.data(), 1, s.size(), stdout); }

/// The DPDK dataplane's counters ("dpdk_*" keys, --source dpdk): the drop and exception
/// counters an operator checks first are always listed, any other dpdk_* counter when nonzero.
void print_dpdk(std::string& o, const Json& j) {
  struct Known {
    std::string_view key;
    std::string_view label;
  };
  static constexpr Known kAlways[] = {
      {"dpdk_imissed", "imissed (NIC RX queues full)"},
      {"dpdk_rx_nombuf", "rx_nombuf (no mbuf for RX)"},
      {"dpdk_ierrors", "ierrors (NIC receive errors)"},
      {"dpdk_ring_full", "ring full (writer/hand-off ring)"},
      {"dpdk_unknown_flow", "unknown flow (no recording on the port)"},
      {"dpdk_wrong_source", "wrong source (not from the phone)"},
      {"dpdk_arp_replies", "arp replies"},
      {"dpdk_icmp_replies", "icmp echo replies"},
      {"dpdk_nd_replies", "ipv6 nd replies (NS -> NA)"},
      {"dpdk_icmp6_replies", "icmpv6 echo replies"},
      {"dpdk_exception_path", "exception path (to the kernel)"},
  };
  bool any = j.text("source") == "dpdk";
  for (const std::string& k : j.keys) any = any || k.starts_with("dpdk_");
  if (!any) return;
  std::vector<std::pair<std::string, std::string>> rows;
  for (const Known& k : kAlways) {
    const Json* v = j.get(k.key);
    rows.emplace_back(std::string(k.label), v != nullptr && v->kind == Json::Kind::kNumber ? count(v->number) : "-");
  }
  for (std::size_t i = 0; i < j.keys.size(); ++i) {
    const std::string& k = j.keys[i];
    if (!k.starts_with("dpdk_") || j.items[i].kind != Json::Kind::kNumber || j.items[i].number == 0) continue;
    if (std::any_of(std::begin(kAlways), std::end(kAlways), [&k](const Known& a) { return a.key == k; })) continue;
    std::string label = k.substr(5);
    std::replace(label.begin(), label.end(), '_', ' ');
    rows.emplace_back(printable(label), count(j.items[i].number));
  }
  std::size_t w = 0;
  for (const auto& r : rows) w = std::max(w, r.first.size());
  o += "dpdk:\n";
  for (const auto& [label, value] : rows) o += "  " + label + std::string(w - label.size() + 2, ' ') + value + "\n";
}

void print_human(const std::string& address, const Json& j) {
  std::string o;
  auto line = [&o](std::string_view label, const std::string& value) {
    std::string l(label);
    l.resize(13, ' ');
    o += l + value + "\n";
  };
  const std::string source = j.text("source");
  line("daemon", address + ", up " + duration_text(j.num("uptime_s")) +
                     (source.empty() ? "" : ", " + printable(source) + " packet source"));
  line("recordings", count(j.num("active_recordings")) + " active (" + count(j.num("started")) + " started, " +
                         count(j.num("stopped")) + " stopped, " + count(j.num("start_failed")) +
                         " refused since start)");
  line("connections", count(j.num("control_connections")) + " control");
  line("packets", count(j.num("rx_packets_per_s")) + "/s received (" + count(j.num("rx_packets")) + " in total)");
  line("bytes", bytes(j.num("write_bytes_per_s")) + "/s written (" + bytes(j.num("bytes_written")) + " in total)");
  line("drops", "ring_full " + count(j.num("drop_ring_full")) + ", unknown_flow " +
                    count(j.num("drop_unknown_flow")) + ", wrong_source " + count(j.num("drop_wrong_source")) +
                    ", not_rtp " + count(j.num("drop_not_rtp")) + "; write errors " + count(j.num("write_errors")));
  line("disk free", bytes(j.num("disk_free_bytes")));
  line("rtp ports", count(j.num("ports_in_use")) + " in use");
  print_dpdk(o, j);
  const Json* recs = j.get("recordings");
  if (recs != nullptr && recs->kind == Json::Kind::kArray && !recs->items.empty()) {
    const double now_ms = static_cast<double>(duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
    std::vector<std::vector<std::string>> t;
    t.push_back({"HANDLE", "DEVICE", "REMOTE", "LOCAL", "PEER", "PORT", "DURATION", "PACKETS", "BYTES", ""});
    for (const Json& r : recs->items) {
      t.push_back({count(r.num("handle")), or_dash(r.text("device")), or_dash(r.text("remote_number")),
                   or_dash(r.text("local_number")), or_dash(r.text("peer")), count(r.num("port")),
                   duration_text((now_ms - r.num("started_ms")) / 1000.0), count(r.num("packets")),
                   count(r.num("bytes")), r.flag("stopping") ? "stopping" : ""});
    }
    std::vector<std::size_t> w(t.front().size(), 0);
    for (const auto& row : t) {
      for (std::size_t c = 0; c < row.size(); ++c) w[c] = std::max(w[c], row[c].size());
    }
    o += '\n';
    for (const auto& row : t) {
      std::string l;
      for (std::size_t c = 0; c < row.size(); ++c) {
        const bool right = c == 0 || c == 5 || c == 7 || c == 8;
        const std::size_t pad = w[c] - row[c].size();
        if (right) l.append(pad, ' ');
        l += row[c];
        if (!right) l.append(pad, ' ');
        l += "  ";
      }
      while (!l.empty() && l.back() == ' ') l.pop_back();
      o += l + '\n';
    }
    const double active = j.num("active_recordings");
    if (active > static_cast<double>(recs->items.size())) {
      o += "(" + count(active - static_cast<double>(recs->items.size())) + " more not listed)\n";
    }
  }
  put(o);
}

}  // namespace

Exit run_status(const CommandSpec& cmd, const ParsedArgs& args) {
  std::string address;
  if (auto v = args.value("metrics")) {
    address = *v;
  } else {
    address = control::DaemonConfig{}.metrics;
  }
  std::string err;
  auto to = split_host_port(address, err);
  if (!to) return usage_error(&cmd, "--metrics " + printable(address) + ": " + err);

  const HttpResult r = http_get(*to, "/status", kTimeout);
  if (!r.connected || r.timed_out) {
    report(cmd, "daemon not reachable at " + printable(address) + ": " + r.error +
                    " (is callrecd running, with --metrics " + printable(address) + "?)");
    return Exit::kIo;
  }
  if (r.status == 0) {
    report(cmd, printable(address) + ": " + r.error + " (is this callrecd's metrics endpoint?)");
    return Exit::kProblems;
  }
  if (r.status != 200) {
    std::string body = r.body.substr(0, 200);
    while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
    report(cmd, printable(address) + ": GET /status answered HTTP " + std::to_string(r.status) +
                    (body.empty() ? "" : ": " + printable(body)));
    return Exit::kProblems;
  }
  JsonParser parser(r.body);
  const std::optional<Json> parsed = parser.parse();
  if (!parsed || parsed->kind != Json::Kind::kObject) {
    report(cmd, printable(address) + ": GET /status did not answer a JSON object" +
                    (parsed ? std::string() : " (" + parser.error() + ")"));
    return Exit::kProblems;
  }
  const Json& j = *parsed;
  if (args.flag("json")) {
    std::string body = r.body;
    if (body.empty() || body.back() != '\n') body += '\n';
    put(body);
  } else {
    print_human(printable(address), j);
  }
  return Exit::kOk;
}

}  // namespace callrec::cli
