#include "control/dpdk_setup.hpp"

#include <pthread.h>
#include <sched.h>

#include <algorithm>

namespace callrec::control {
namespace {

std::vector<std::string> split_blanks(const std::string& s) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    std::size_t j = i;
    while (j < s.size() && s[j] != ' ' && s[j] != '\t') ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

/// True when the EAL arguments choose the lcores themselves.
bool chooses_cores(const std::vector<std::string>& args) {
  return std::any_of(args.begin(), args.end(), [](const std::string& a) {
    return a.rfind("-l", 0) == 0 || a.rfind("-c", 0) == 0 || a.rfind("--lcores", 0) == 0;
  });
}

// glibc's CPU_SET/CPU_ISSET without their C casts (-Wold-style-cast).
constexpr unsigned kMaskBits = 8 * sizeof(cpu_set_t{}.__bits[0]);
bool cpu_isset(unsigned c, const cpu_set_t& set) { return ((set.__bits[c / kMaskBits] >> (c % kMaskBits)) & 1U) != 0; }
void cpu_set(unsigned c, cpu_set_t& set) { set.__bits[c / kMaskBits] |= __cpu_mask{1} << (c % kMaskBits); }

bool contains(const std::vector<unsigned>& v, unsigned x) { return std::find(v.begin(), v.end(), x) != v.end(); }

}  // namespace

std::string format_cpu_list(const std::vector<unsigned>& cpus) {
  std::string s;
  for (std::size_t i = 0; i < cpus.size();) {
    std::size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    if (!s.empty()) s += ',';
    s += std::to_string(cpus[i]);
    if (j > i) s += "-" + std::to_string(cpus[j]);
    i = j + 1;
  }
  return s;
}

std::vector<unsigned> allowed_cpus() {
  std::vector<unsigned> out;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (pthread_getaffinity_np(pthread_self(), sizeof set, &set) != 0) return out;
  for (unsigned c = 0; c < CPU_SETSIZE; ++c) {
    if (cpu_isset(c, set)) out.push_back(c);
  }
  return out;
}

std::vector<unsigned> keep_off_cpus(const std::vector<unsigned>& rx_cpus) {
  std::vector<unsigned> rest;
  for (const unsigned c : allowed_cpus()) {
    if (!contains(rx_cpus, c)) rest.push_back(c);
  }
  if (rest.empty()) return rest;
  cpu_set_t set;
  CPU_ZERO(&set);
  for (const unsigned c : rest) cpu_set(c, set);
  if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0) return {};
  return rest;
}

Status make_dpdk_options(const DaemonConfig& cfg, const std::vector<unsigned>& allowed,
                         dataplane::DpdkSource::Options& out) {
  const DpdkConfig& d = cfg.dpdk;
  out = {};
  out.eal_args = split_blanks(d.eal);
  std::vector<unsigned> rx;
  if (!d.lcores.empty()) {
    if (Status st = parse_cpu_list(d.lcores, rx); !st) return Status::error("--dpdk-lcores " + d.lcores + ": " + st.message());
  }
  if (!chooses_cores(out.eal_args)) {
    for (const unsigned l : rx) {
      if (!contains(allowed, l)) {
        return Status::error("--dpdk-lcores " + d.lcores + ": CPU " + std::to_string(l) +
                             " is not available to this process (CPUs: " + format_cpu_list(allowed) + ")");
      }
    }
    unsigned main_lcore = 0;
    bool have_main = false;
    for (const unsigned c : allowed) {
      if (!contains(rx, c)) {
        main_lcore = c;
        have_main = true;
        break;
      }
    }
    if (!have_main) {
      return Status::error("--dpdk-lcores " + d.lcores + ": leaves no CPU for the main lcore (CPUs: " +
                           format_cpu_list(allowed) + ")");
    }
    if (rx.empty()) {
      for (const unsigned c : allowed) {
        if (c > main_lcore && rx.size() < cfg.rx_threads) rx.push_back(c);
      }
      if (rx.size() < cfg.rx_threads) {
        return Status::error("--rx-threads " + std::to_string(cfg.rx_threads) + ": --source dpdk needs " +
                             std::to_string(cfg.rx_threads) + " RX lcore(s) plus a main lcore, but this process has CPUs " +
                             format_cpu_list(allowed) + " (give --dpdk-lcores, or -l/--lcores in --dpdk-eal)");
      }
    }
    std::vector<unsigned> all = rx;
    all.push_back(main_lcore);
    std::sort(all.begin(), all.end());
    out.eal_args.emplace_back("-l");
    out.eal_args.push_back(format_cpu_list(all));
    out.eal_args.push_back("--main-lcore=" + std::to_string(main_lcore));
  }
  out.lcores = rx;  // empty (EAL chose the cores): the first --rx-threads worker lcores
  out.rx_threads = cfg.rx_threads;
  if (!d.vdev.empty()) {
    out.eal_args.push_back("--vdev=" + d.vdev);
    out.port = d.vdev.substr(0, d.vdev.find(','));
  } else {
    out.port = std::to_string(d.port);
  }
  out.rx_queues = d.queues;
  out.mempool_mbufs = d.mempool;
  out.addresses = split_list(d.address);
  if (out.addresses.empty()) return Status::error("--dpdk-address: required with --source dpdk");
  out.addresses6 = split_list(d.address6);
  out.exception_tap = d.tap;
  out.idle_sleep = std::chrono::microseconds(d.idle_sleep_us);
  out.handoff = d.zero_copy ? dataplane::DpdkSource::Handoff::kZeroCopy : dataplane::DpdkSource::Handoff::kCopy;
  out.zero_copy_credit = d.zero_copy_credit;
  return Status::ok();
}

}  // namespace callrec::control
