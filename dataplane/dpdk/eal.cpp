// DPDK's process-wide state: rte_eal_init (once per process; later sources hot-plug their
// vdevs), the registry of ports and lcores claimed by live sources (DpdkSource, the DPDK mirror
// capture), and rte_eal_cleanup.
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <string>
#include <vector>

#include "dataplane/dpdk/dpdk_internal.hpp"

namespace callrec::dataplane {

namespace dpdk_detail {

Registry& registry() {
  static Registry r;
  return r;
}

/// Splits EAL arguments into --vdev device strings and the rest.
void split_vdevs(const std::vector<std::string>& args, std::vector<std::string>& vdevs, std::vector<std::string>& rest) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--vdev=", 0) == 0) {
      vdevs.push_back(a.substr(7));
    } else if (a == "--vdev" && i + 1 < args.size()) {
      vdevs.push_back(args[++i]);
    } else {
      rest.push_back(a);
    }
  }
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) {
    if (!s.empty()) s += ' ';
    s += x;
  }
  return s;
}

std::string rte_error(int err) { return rte_strerror(err < 0 ? -err : err); }

Status ensure_eal_locked(const std::vector<std::string>& args, std::vector<std::string>& hotplugged) {
  Registry& r = registry();
  std::vector<std::string> vdevs;
  std::vector<std::string> rest;
  split_vdevs(args, vdevs, rest);
  if (!r.attempted) {
    r.attempted = true;
    r.argv_storage.clear();
    r.argv_storage.emplace_back("callrec");
    r.argv_storage.insert(r.argv_storage.end(), args.begin(), args.end());
    for (auto& s : r.argv_storage) r.argv.push_back(s.data());
    r.argv.push_back(nullptr);
    // rte_eal_init pins this thread to the main lcore; the control thread is not a poll loop
    // and threads it creates later must not inherit that pinning.
    cpu_set_t before;
    CPU_ZERO(&before);
    const bool have_before = pthread_getaffinity_np(pthread_self(), sizeof before, &before) == 0;
    const int rc = rte_eal_init(static_cast<int>(r.argv.size() - 1), r.argv.data());
    if (have_before) pthread_setaffinity_np(pthread_self(), sizeof before, &before);
    if (rc < 0) {
      r.result = Status(EINVAL, "dpdk: rte_eal_init failed: " + rte_error(rte_errno) + " (arguments: " + join(args) +
                                    "; EAL can be initialised only once per process)");
    } else {
      r.base_args = rest;
    }
    return r.result;
  }
  if (!r.result) return Status(r.result.code(), r.result.message() + " (earlier attempt in this process)");
  if (rest != r.base_args) {
    return Status(EINVAL, "dpdk: EAL is already initialised in this process with arguments '" + join(r.base_args) +
                              "'; rte_eal_init runs once per process, so a later source may only differ by --vdev "
                              "(got '" + join(rest) + "')");
  }
  for (const std::string& dev : vdevs) {
    const std::string name = dev.substr(0, dev.find(','));
    std::uint16_t pid = 0;
    if (rte_eth_dev_get_port_by_name(name.c_str(), &pid) == 0) continue;  // exists already
    const int rc = rte_dev_probe(dev.c_str());
    if (rc < 0) return Status(-rc, "dpdk: hot-plugging vdev '" + dev + "' failed: " + rte_error(rc));
    hotplugged.push_back(name);
  }
  return Status::ok();
}

}  // namespace dpdk_detail

Status dpdk_claim_port(const std::vector<std::string>& eal_args, const std::string& name, std::uint16_t& port_id) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  std::vector<std::string> hotplugged;
  if (Status st = ensure_eal_locked(eal_args, hotplugged); !st) return st;
  std::uint16_t pid = 0;
  if (rte_eth_dev_get_port_by_name(name.c_str(), &pid) != 0)
    return Status(ENODEV, "dpdk: no such port '" + name + "' (a PCI address, or a --vdev device name)");
  if (r.port_claimed[pid]) return Status(EBUSY, "dpdk: port '" + name + "' is already in use in this process");
  r.port_claimed[pid] = true;
  port_id = pid;
  return Status::ok();
}

void dpdk_release_port(std::uint16_t port_id) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  if (port_id < RTE_MAX_ETHPORTS) r.port_claimed[port_id] = false;
}

Status dpdk_eal_cleanup() {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  if (!r.attempted || !r.result) return Status::ok();
  if (std::any_of(r.port_claimed.begin(), r.port_claimed.end(), [](bool b) { return b; })) {
    return Status(EBUSY, "dpdk: EAL cleanup while a DpdkSource is alive");
  }
  for (std::uint16_t pid = 0; pid < RTE_MAX_ETHPORTS; ++pid) {
    if (rte_eth_dev_is_valid_port(pid) == 0) continue;
    (void)rte_eth_dev_close(pid);  // every DpdkSource stopped its ports when it was destroyed
  }
  // EAL cannot be initialised again: a later source fails with this message.
  r.result = Status(EALREADY, "dpdk: EAL was cleaned up (rte_eal_cleanup) in this process");
  if (const int rc = rte_eal_cleanup(); rc != 0) return Status(-rc, "dpdk: rte_eal_cleanup: " + rte_error(rc));
  return Status::ok();
}

}  // namespace callrec::dataplane
