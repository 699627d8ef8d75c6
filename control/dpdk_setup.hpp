#pragma once
// From the daemon's configuration to the DPDK packet source: the EAL arguments, lcores, port
// and addresses of dataplane::DpdkSource::Options, and the CPU split between the RX lcores
// (poll loops, one CPU each) and everything else (control and writer threads).
//
// Plain functions of the control thread; nothing here includes DPDK headers (the options struct
// is plain data), so the mapping is built and tested with or without DPDK.
#include <string>
#include <vector>

#include "control/config.hpp"
#include "dataplane/dpdk_source.hpp"
#include "fileio/status.hpp"

namespace callrec::control {

/// Maps cfg.dpdk (after validate()) to DpdkSource options. `allowed_cpus`: the CPUs this
/// process may run on (sorted; see allowed_cpus()).
///
/// Unless `--dpdk-eal` already chooses cores (-l, -c, --lcores), the EAL gets
/// `-l MAIN,RX... --main-lcore MAIN`: the RX lcores are `--dpdk-lcores`, or else the first
/// `--rx-threads` allowed CPUs after the main lcore; the main lcore is the lowest allowed CPU
/// that is not an RX lcore (the control thread; it is not pinned there afterwards). With
/// `--dpdk-vdev D` the EAL gets `--vdev=D` and the port is D's name. Errors name the flag.
Status make_dpdk_options(const DaemonConfig& cfg, const std::vector<unsigned>& allowed_cpus,
                         dataplane::DpdkSource::Options& out);

/// The CPUs the calling thread may run on (sched_getaffinity), sorted.
std::vector<unsigned> allowed_cpus();

/// "0-2,5" for {0,1,2,5}.
std::string format_cpu_list(const std::vector<unsigned>& cpus);

/// Restricts the calling thread (and so every thread it creates later: the writers) to its
/// allowed CPUs minus `rx_cpus`. Returns the CPUs it kept; empty (and the affinity unchanged)
/// when nothing would be left, i.e. the writers have to share CPUs with the RX lcores.
std::vector<unsigned> keep_off_cpus(const std::vector<unsigned>& rx_cpus);

}  // namespace callrec::control
