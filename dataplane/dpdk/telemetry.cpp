// DPDK telemetry: the "/callrec/stats" command (dpdk-telemetry.py, or callrec's own client)
// and the path of the process's telemetry socket.
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <utility>
#include <vector>

#include "dataplane/dpdk/dpdk_internal.hpp"

namespace callrec::dataplane {

namespace dpdk_detail {

/// The live sources "/callrec/stats" reads (the command is registered once per process). The
/// callback runs on EAL's telemetry thread and reads only what any thread may: the counters the
/// lcores publish and the NIC's (dpdk_stats()). A source leaves the list, under the mutex,
/// before any of it is torn down; a failed construction never joins it.
struct Telemetry {
  std::mutex mu;
  std::vector<const DpdkSource*> live;
  bool registered = false;
};

Telemetry& telemetry() {
  static Telemetry t;
  return t;
}

/// {"sources": N, "rx_packets": ..., "<counter>": ...}: SourceStats and counters() (without the
/// "dpdk_" prefix), summed over the live sources. No source: an error (the client reads null).
int telemetry_stats(const char* /*cmd*/, const char* /*params*/, rte_tel_data* d) {
  Telemetry& t = telemetry();
  std::lock_guard lock(t.mu);
  if (t.live.empty()) return -ENODEV;
  std::vector<std::pair<std::string, std::uint64_t>> sum;
  for (const DpdkSource* src : t.live) {
    const SourceStats s = src->stats();
    std::vector<std::pair<std::string, std::uint64_t>> v = {
        {"rx_packets", s.rx_packets}, {"rx_bytes", s.rx_bytes},   {"delivered", s.delivered},
        {"not_rtp", s.not_rtp},       {"rx_errors", s.rx_errors},
    };
    for (const SourceCounter& c : src->counters()) {
      v.emplace_back(c.name.rfind("dpdk_", 0) == 0 ? c.name.substr(5) : c.name, c.value);
    }
    if (sum.empty()) {
      sum = std::move(v);
    } else {
      for (std::size_t i = 0; i < sum.size() && i < v.size(); ++i) sum[i].second += v[i].second;  // same names
    }
  }
  rte_tel_data_start_dict(d);
  rte_tel_data_add_dict_u64(d, "sources", t.live.size());
  for (const auto& [name, value] : sum) rte_tel_data_add_dict_u64(d, name.c_str(), value);
  return 0;
}

void telemetry_attach(const DpdkSource* s) {
  Telemetry& t = telemetry();
  std::lock_guard lock(t.mu);
  if (!t.registered) {
    t.registered = rte_telemetry_register_cmd("/callrec/stats", telemetry_stats,
                                              "callrec dataplane counters, summed over its DPDK sources. "
                                              "No parameters.") == 0;
  }
  t.live.push_back(s);
}

void telemetry_detach(const DpdkSource* s) {
  Telemetry& t = telemetry();
  std::lock_guard lock(t.mu);
  t.live.erase(std::remove(t.live.begin(), t.live.end(), s), t.live.end());
}

}  // namespace dpdk_detail

std::string dpdk_telemetry_socket() {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  if (!r.attempted || !r.result) return {};
  const std::string path = std::string(rte_eal_get_runtime_dir()) + "/dpdk_telemetry.v2";
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return {};
  return path;
}

}  // namespace callrec::dataplane
