// DpdkSource's control side: see dataplane/dpdk_source.hpp for the contract, threads and spread.
// Construction validates the options, claims lcores and the port, and builds the rte objects and
// per-lcore state; start/stop launch and join the poll loops (lcore.cpp); flows reach the lcores
// as Commands; stats, counters and flow_stats read what the lcores publish.
#include <arpa/inet.h>
#include <sched.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <utility>

#include "dataplane/dpdk/dpdk_internal.hpp"

namespace callrec::dataplane {

namespace dpdk_detail {

std::string format_mac(const rte_ether_addr& a) {
  char buf[18];
  std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", a.addr_bytes[0], a.addr_bytes[1], a.addr_bytes[2],
                a.addr_bytes[3], a.addr_bytes[4], a.addr_bytes[5]);
  return buf;
}

}  // namespace dpdk_detail

// ---- rte objects of one source -----------------------------------------------------------------

DpdkSource::Port::~Port() {
  std::lock_guard lock(registry().mu);
  if (tap_started) rte_eth_dev_stop(tap_port);
  if (started) rte_eth_dev_stop(port_id);
  for (rte_ring* r : handoff) {
    if (r == nullptr) continue;
    void* objs[kMaxBurst];
    unsigned n = 0;
    while ((n = rte_ring_dequeue_burst(r, objs, kMaxBurst, nullptr)) != 0) {
      rte_pktmbuf_free_bulk(reinterpret_cast<rte_mbuf**>(objs), n);
    }
    rte_ring_free(r);
  }
  for (rte_ring* r : rings) rte_ring_free(r);
  for (rte_hash* h : hashes) rte_hash_free(h);
  bool removed_all = true;
  // Our hot-plugged devices are closed here (their queues give back their mbufs). A device
  // from the first EAL init stays; its queues may still reference the pool (net_pcap
  // infinite_rx holds the whole file in it), so that pool is kept for the process lifetime.
  for (const std::string& name : hotplugged) {
    if (rte_eal_hotplug_remove("vdev", name.c_str()) != 0) removed_all = false;
  }
  if (pool != nullptr && port_hotplugged && removed_all && !keep_pool) rte_mempool_free(pool);
  Registry& r = registry();
  for (unsigned l : claimed_lcores) r.lcore_claimed[l] = false;
  if (port_claimed) r.port_claimed[port_id] = false;
}

// ---- control side ----------------------------------------------------------------------------------

DpdkSource::DpdkSource(Options options) : options_(std::move(options)), port_(std::make_unique<Port>()) {
  init_status_ = init();
  if (init_status_) telemetry_attach(this);
}

DpdkSource::~DpdkSource() {
  telemetry_detach(this);  // first: the telemetry thread may be reading our counters
  stop();
  if (zero_copy_leaked_.load(std::memory_order_relaxed) != 0) port_->keep_pool = true;
  lcores_.clear();
  port_.reset();
}

Status DpdkSource::init() {
  Options& o = options_;
  if (o.burst < 1 || o.burst > kMaxBurst) return Status(EINVAL, "dpdk: burst must be 1.." + std::to_string(kMaxBurst));
  if (!std::has_single_bit(o.handoff_ring_size) || !std::has_single_bit(o.command_ring_size)) {
    return Status(EINVAL, "dpdk: handoff_ring_size and command_ring_size must be powers of two");
  }
  if (o.handoff == Handoff::kZeroCopy &&
      o.zero_copy_credit != 0 &&
      (!std::has_single_bit(o.zero_copy_credit) || o.zero_copy_credit < 64 || o.zero_copy_credit > (1U << 20))) {
    return Status(EINVAL, "dpdk: zero_copy_credit must be 0 (auto) or a power of two in 64..1048576");
  }
  if (o.addresses.empty()) return Status(EINVAL, "dpdk: at least one dataplane IPv4 address is required");
  if (o.addresses.size() > kMaxAddresses) {
    return Status(EINVAL, "dpdk: at most " + std::to_string(kMaxAddresses) + " addresses");
  }
  for (const std::string& a : o.addresses) {
    in_addr ia{};
    if (inet_pton(AF_INET, a.c_str(), &ia) != 1) return Status(EINVAL, "dpdk: '" + a + "' is not an IPv4 address");
    if (std::find(addresses_.begin(), addresses_.end(), ia.s_addr) != addresses_.end()) {
      return Status(EINVAL, "dpdk: address " + a + " given twice");
    }
    addresses_.push_back(ia.s_addr);
  }
  if (o.addresses6.size() > kMaxAddresses6) {
    return Status(EINVAL, "dpdk: at most " + std::to_string(kMaxAddresses6) + " IPv6 addresses");
  }
  for (const std::string& a : o.addresses6) {
    in6_addr a6{};
    if (inet_pton(AF_INET6, a.c_str(), &a6) != 1) return Status(EINVAL, "dpdk: '" + a + "' is not an IPv6 address");
    const std::uint8_t* b = a6.s6_addr;
    static constexpr std::uint8_t kV4Mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    const bool zero_prefix = std::all_of(b, b + 15, [](std::uint8_t x) { return x == 0; });
    if (b[0] == 0xFF) return Status(EINVAL, "dpdk: IPv6 address " + a + " is a multicast address");
    if (zero_prefix && (b[15] == 0 || b[15] == 1)) {
      return Status(EINVAL, "dpdk: IPv6 address " + a + " cannot be the dataplane's (unspecified or loopback)");
    }
    if (std::memcmp(b, kV4Mapped, sizeof kV4Mapped) == 0) {
      return Status(EINVAL, "dpdk: IPv6 address " + a + " is IPv4-mapped (give the IPv4 address in addresses)");
    }
    const auto same = [&a6](const in6_addr& x) { return std::memcmp(&x, &a6, sizeof a6) == 0; };
    if (std::any_of(addresses6_.begin(), addresses6_.end(), same)) {
      return Status(EINVAL, "dpdk: IPv6 address " + a + " given twice");
    }
    addresses6_.push_back(a6);
  }
  if (o.max_flows_per_lcore == 0 || o.max_flows_per_lcore > (1U << 24)) {
    return Status(EINVAL, "dpdk: max_flows_per_lcore must be 1..16777216");
  }
  if (!o.lcores.empty()) o.rx_threads = static_cast<unsigned>(o.lcores.size());
  if (o.rx_threads == 0 || o.rx_threads > kMaxLcores) {
    return Status(EINVAL, "dpdk: rx_threads must be 1.." + std::to_string(kMaxLcores));
  }

  Registry& reg = registry();
  std::lock_guard lock(reg.mu);
  if (Status s = ensure_eal_locked(o.eal_args, port_->hotplugged); !s) return s;
  const unsigned instance = reg.next_instance++;

  // RX lcores: EAL worker lcores, not claimed by another live source.
  std::string workers;
  unsigned lc = 0;
  RTE_LCORE_FOREACH_WORKER(lc) { workers += (workers.empty() ? "" : ",") + std::to_string(lc); }
  if (workers.empty()) workers = "none";
  std::vector<unsigned> chosen;
  if (o.lcores.empty()) {
    RTE_LCORE_FOREACH_WORKER(lc) {
      if (chosen.size() < o.rx_threads && !reg.lcore_claimed[lc]) chosen.push_back(lc);
    }
    if (chosen.size() < o.rx_threads) {
      return Status(EINVAL, "dpdk: " + std::to_string(o.rx_threads) + " RX lcores requested but only " +
                                std::to_string(chosen.size()) + " free EAL worker lcores (workers: " + workers +
                                "; the main lcore " + std::to_string(rte_get_main_lcore()) +
                                " is the control thread; give more with -l/--lcores)");
    }
  } else {
    for (const unsigned l : o.lcores) {
      if (l >= RTE_MAX_LCORE || !rte_lcore_is_enabled(l)) {
        return Status(EINVAL, "dpdk: lcore " + std::to_string(l) + " is not an EAL lcore (workers: " + workers + ")");
      }
      if (l == rte_get_main_lcore()) {
        return Status(EINVAL, "dpdk: lcore " + std::to_string(l) + " is the main lcore (the control thread), not an RX lcore");
      }
      if (std::find(chosen.begin(), chosen.end(), l) != chosen.end()) {
        return Status(EINVAL, "dpdk: lcore " + std::to_string(l) + " listed twice");
      }
      if (reg.lcore_claimed[l]) return Status(EBUSY, "dpdk: lcore " + std::to_string(l) + " is used by another DpdkSource");
      chosen.push_back(l);
    }
  }

  // Port: by id or by name.
  std::uint16_t pid = kNoPort;
  const bool numeric = !o.port.empty() && o.port.size() <= 5 && std::all_of(o.port.begin(), o.port.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
  if (numeric) {
    const unsigned long v = std::stoul(o.port);
    if (v < RTE_MAX_ETHPORTS) pid = static_cast<std::uint16_t>(v);
  } else if (rte_eth_dev_get_port_by_name(o.port.c_str(), &pid) != 0) {
    pid = kNoPort;
  }
  if (pid == kNoPort || !rte_eth_dev_is_valid_port(pid)) {
    std::string ports;
    for (std::uint16_t p = 0; p < RTE_MAX_ETHPORTS; ++p) {
      if (!rte_eth_dev_is_valid_port(p)) continue;
      char name[RTE_ETH_NAME_MAX_LEN] = {};
      rte_eth_dev_get_name_by_port(p, name);
      ports += (ports.empty() ? "" : ", ") + std::to_string(p) + "=" + name;
    }
    return Status(ENODEV, "dpdk: no such port '" + o.port + "' (ports: " + (ports.empty() ? "none" : ports) +
                              "; a vdev needs --vdev=... in eal_args)");
  }
  if (reg.port_claimed[pid]) return Status(EBUSY, "dpdk: port " + o.port + " is used by another DpdkSource");
  reg.port_claimed[pid] = true;
  port_->port_claimed = true;
  {
    char pname[RTE_ETH_NAME_MAX_LEN] = {};
    rte_eth_dev_get_name_by_port(pid, pname);
    port_->port_hotplugged = std::find(port_->hotplugged.begin(), port_->hotplugged.end(), std::string(pname)) !=
                             port_->hotplugged.end();
  }
  port_->port_id = pid;
  port_id_ = pid;
  for (const unsigned l : chosen) {
    reg.lcore_claimed[l] = true;
    port_->claimed_lcores.push_back(l);
  }

  rte_eth_dev_info info{};
  if (const int rc = rte_eth_dev_info_get(pid, &info); rc != 0) {
    return Status(-rc, "dpdk: port " + o.port + ": rte_eth_dev_info_get: " + rte_error(rc));
  }
  const unsigned n = o.rx_threads;
  unsigned nq = o.rx_queues;
  if (nq == 0) nq = info.max_rx_queues >= n ? n : 1;
  if (nq > info.max_rx_queues) {
    return Status(EINVAL, "dpdk: port " + o.port + " has at most " + std::to_string(info.max_rx_queues) + " RX queues (" +
                              std::to_string(nq) + " requested)");
  }
  const std::uint16_t ntx = info.max_tx_queues >= 1 ? 1 : 0;
  rte_eth_conf conf{};
  const std::uint64_t rss_hf = info.flow_type_rss_offloads & (RTE_ETH_RSS_IP | RTE_ETH_RSS_UDP);
  if (nq > 1 && rss_hf != 0) {
    conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
    conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
    rss_ = true;
  }
  rx_queues_ = nq;

  if (o.handoff == Handoff::kZeroCopy) {
    // Held by writers (credit per lcore) + filled RX rings + per-lcore caches + TX + TAP.
    const std::uint64_t fixed = std::uint64_t{o.rx_descriptors} * nq +
                                std::uint64_t{std::min(o.mempool_cache, 512U)} * (n + 1) + o.tx_descriptors +
                                (o.exception_tap.empty() ? 0 : 512);
    if (o.zero_copy_credit == 0) {
      // Auto: at most kAutoZeroCopyCredit, and no more than half of what the pool has left per
      // lcore, so RX keeps a margin even when every writer lags.
      const std::uint64_t spare = o.mempool_mbufs > fixed ? (o.mempool_mbufs - fixed) / (2 * std::uint64_t{n}) : 0;
      o.zero_copy_credit = static_cast<unsigned>(std::bit_floor(std::min<std::uint64_t>(spare, kAutoZeroCopyCredit)));
      if (o.zero_copy_credit < 64) {
        return Status(EINVAL, "dpdk: mempool of " + std::to_string(o.mempool_mbufs) +
                                  " mbufs leaves no room for a zero-copy credit of 64 per RX lcore (callrecd: raise "
                                  "--dpdk-mempool, or --dpdk-handoff copy)");
      }
    }
    const std::uint64_t need = std::uint64_t{o.zero_copy_credit} * n + fixed;
    if (o.mempool_mbufs < need) {
      return Status(EINVAL, "dpdk: zero-copy hand-off needs a mempool of at least " + std::to_string(need) +
                                " mbufs (credit " + std::to_string(o.zero_copy_credit) + " x " + std::to_string(n) +
                                " lcores + RX descriptors + caches); " + std::to_string(o.mempool_mbufs) +
                                " configured (callrecd: raise --dpdk-mempool or lower --dpdk-zero-copy-credit)");
    }
  }
  const int socket = rte_eth_dev_socket_id(pid) < 0 ? static_cast<int>(rte_socket_id()) : rte_eth_dev_socket_id(pid);
  const std::string pool_name = "crmp" + std::to_string(instance);
  port_->pool = rte_pktmbuf_pool_create(pool_name.c_str(), o.mempool_mbufs, std::min(o.mempool_cache, 512U), 0,
                                        static_cast<std::uint16_t>(std::min(o.mbuf_data_room, 65535U)), socket);
  if (port_->pool == nullptr) {
    return Status(ENOMEM, "dpdk: mempool of " + std::to_string(o.mempool_mbufs) + " mbufs (" +
                              std::to_string(o.mbuf_data_room) + " B data room): " + rte_error(rte_errno) +
                              " (raise -m, or use hugepages)");
  }
  if (const int rc = rte_eth_dev_configure(pid, static_cast<std::uint16_t>(nq), ntx, &conf); rc != 0) {
    return Status(-rc, "dpdk: port " + o.port + ": rte_eth_dev_configure(" + std::to_string(nq) + " rx, " +
                           std::to_string(ntx) + " tx): " + rte_error(rc));
  }
  std::uint16_t nrxd = static_cast<std::uint16_t>(std::min(o.rx_descriptors, 65535U));
  std::uint16_t ntxd = static_cast<std::uint16_t>(std::min(o.tx_descriptors, 65535U));
  rte_eth_dev_adjust_nb_rx_tx_desc(pid, &nrxd, &ntxd);
  for (unsigned q = 0; q < nq; ++q) {
    if (const int rc = rte_eth_rx_queue_setup(pid, static_cast<std::uint16_t>(q), nrxd, static_cast<unsigned>(socket), nullptr,
                                              port_->pool);
        rc != 0) {
      return Status(-rc, "dpdk: port " + o.port + ": rx queue " + std::to_string(q) + " setup: " + rte_error(rc) +
                             " (net_pcap with infinite_rx=1 keeps the whole file in the mempool: mempool_mbufs must "
                             "exceed its packet count)");
    }
  }
  if (ntx == 1) {
    if (const int rc = rte_eth_tx_queue_setup(pid, 0, ntxd, static_cast<unsigned>(socket), nullptr); rc != 0) {
      return Status(-rc, "dpdk: port " + o.port + ": tx queue setup: " + rte_error(rc));
    }
  }
  rte_ether_addr mac{};
  rte_eth_macaddr_get(pid, &mac);
  mac_ = format_mac(mac);
  if (o.promiscuous) rte_eth_promiscuous_enable(pid);
  // Neighbour solicitations go to the solicited-node group (33:33:ff:xx:xx:xx), which a NIC's
  // filter drops unless told. All-multicast is the portable switch (a multicast address list
  // would be narrower, but fewer PMDs have one); PMDs without the switch (net_ring, ...) deliver
  // everything anyway. The other multicast it lets in goes to the exception path or is dropped.
  if (!addresses6_.empty() && !o.promiscuous) {
    const int rc = rte_eth_allmulticast_enable(pid);
    if (rc == 0) {
      allmulticast_ = true;
    } else if (rc != -ENOTSUP) {
      return Status(-rc, "dpdk: port " + o.port + ": rte_eth_allmulticast_enable (for IPv6 neighbour solicitations): " +
                             rte_error(rc));
    }
  }

  // Exception path: a TAP with the port's MAC, one queue pair owned by lcore 0.
  if (!o.exception_tap.empty()) {
    const std::string vname = "net_tap_cr" + std::to_string(instance);
    const std::string devargs = vname + ",iface=" + o.exception_tap + ",mac=" + mac_;
    if (const int rc = rte_dev_probe(devargs.c_str()); rc < 0) {
      return Status(-rc, "dpdk: exception TAP '" + devargs + "': " + rte_error(rc));
    }
    port_->hotplugged.push_back(vname);
    std::uint16_t tp = 0;
    if (rte_eth_dev_get_port_by_name(vname.c_str(), &tp) != 0) return Status(ENODEV, "dpdk: TAP " + vname + " has no port");
    port_->tap_port = tp;
    rte_eth_conf tconf{};
    if (const int rc = rte_eth_dev_configure(tp, 1, 1, &tconf); rc != 0) {
      return Status(-rc, "dpdk: TAP configure: " + rte_error(rc));
    }
    if (const int rc = rte_eth_rx_queue_setup(tp, 0, 512, static_cast<unsigned>(socket), nullptr, port_->pool); rc != 0) {
      return Status(-rc, "dpdk: TAP rx queue: " + rte_error(rc));
    }
    if (const int rc = rte_eth_tx_queue_setup(tp, 0, 512, static_cast<unsigned>(socket), nullptr); rc != 0) {
      return Status(-rc, "dpdk: TAP tx queue: " + rte_error(rc));
    }
  }

  // Per-lcore state: tables, flows, command ring, hand-off rings.
  port_->n_lcores = n;
  port_->handoff.assign(std::size_t{n} * n, nullptr);
  if (n > 1) {
    for (unsigned from = 0; from < n; ++from) {
      for (unsigned to = 0; to < n; ++to) {
        if (from == to) continue;
        const std::string rn = "crh" + std::to_string(instance) + "_" + std::to_string(from) + "_" + std::to_string(to);
        rte_ring* r = rte_ring_create(rn.c_str(), o.handoff_ring_size, socket, RING_F_SP_ENQ | RING_F_SC_DEQ);
        if (r == nullptr) return Status(ENOMEM, "dpdk: hand-off ring " + rn + ": " + rte_error(rte_errno));
        port_->handoff[from * n + to] = r;
      }
    }
  }
  const double ns_per_tsc = 1e9 / static_cast<double>(rte_get_tsc_hz());
  for (unsigned i = 0; i < n; ++i) {
    auto lp = std::make_unique<Lcore>();
    Lcore& l = *lp;
    l.index = i;
    l.lcore_id = chosen[i];
    l.n_lcores = n;
    l.port_id = pid;
    l.has_tx = i == 0 && ntx == 1;
    l.tap_port = i == 0 ? port_->tap_port : kNoPort;
    l.timing = o.stage_timing;
    l.burst = o.burst;
    l.policer = PolicerConfig::make(o.max_stream_pps, o.stream_burst);
    l.table_kind = o.flow_table;
    for (unsigned q = i; q < nq; q += n) l.queues.push_back(static_cast<std::uint16_t>(q));
    l.addresses = addresses_.data();
    l.n_addr = static_cast<unsigned>(addresses_.size());
    l.addresses6 = addresses6_.data();
    l.n_addr6 = static_cast<unsigned>(addresses6_.size());
    std::memcpy(l.mac.data(), mac.addr_bytes, 6);
    l.max_flows = o.max_flows_per_lcore;
    l.flows = std::make_unique<Flow[]>(l.max_flows);
    if (o.flow_table == FlowTable::kFlat) {
      l.flat = std::make_unique<std::uint32_t[]>(std::size_t{l.n_addr} << 16);  // zeroed
    } else {
      const std::string hn = "crft" + std::to_string(instance) + "_" + std::to_string(i);
      rte_hash_parameters hp{};
      hp.name = hn.c_str();
      hp.entries = std::max(1024U, std::min(o.max_flows_per_lcore * l.n_addr, l.n_addr << 16));
      hp.key_len = sizeof(std::uint32_t);
      hp.hash_func = rte_hash_crc;
      hp.socket_id = socket;
      l.hash = rte_hash_create(&hp);
      if (l.hash == nullptr) return Status(ENOMEM, "dpdk: rte_hash " + hn + ": " + rte_error(rte_errno));
      port_->hashes.push_back(l.hash);
    }
    const std::string cn = "crc" + std::to_string(instance) + "_" + std::to_string(i);
    l.commands = rte_ring_create_elem(cn.c_str(), sizeof(Command), o.command_ring_size, socket, RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (l.commands == nullptr) return Status(ENOMEM, "dpdk: command ring " + cn + ": " + rte_error(rte_errno));
    port_->rings.push_back(l.commands);
    l.fwd.resize(n);
    l.fwd_n.assign(n, 0);
    l.handoff_in.assign(n, nullptr);
    l.handoff_out.assign(n, nullptr);
    for (unsigned j = 0; j < n; ++j) {
      if (j == i) continue;
      l.handoff_in[j] = port_->handoff[j * n + i];
      l.handoff_out[j] = port_->handoff[i * n + j];
    }
    l.ns_per_tsc = ns_per_tsc;
    l.publish_interval_tsc = static_cast<std::uint64_t>(static_cast<double>(kPublishIntervalNs) / ns_per_tsc);
    l.tap_interval_tsc = static_cast<std::uint64_t>(static_cast<double>(kTapPollIntervalNs) / ns_per_tsc);
    l.idle_sleep_us = static_cast<unsigned>(o.idle_sleep.count());
    l.idle_pause = o.idle_pause;
    l.rate_limit_pps.store(std::max(0.0, o.rx_rate_limit_pps), std::memory_order_relaxed);
    l.stop_drain_timeout = o.stop_drain_timeout;
    l.end_marks_lost = &end_marks_lost_;
    l.zero_copy_leaked = &zero_copy_leaked_;
    if (o.handoff == Handoff::kZeroCopy) {
      l.zc_credit = o.zero_copy_credit;
      l.zc_mask = o.zero_copy_credit - 1;  // every writer's FIFO can hold the whole credit
    }
    l.end_marks.reserve(l.max_flows);
    l.dirty_list.reserve(kMaxBurst);
    lcores_.push_back(std::move(lp));
  }
  flows_ = Flows(Flows::Options{n, o.max_flows_per_lcore, Flows::SlotReuse::kAcknowledged, kKeptRemovedFlows});
  commands_posted_.assign(n, 0);
  return Status::ok();
}

std::string DpdkSource::describe() const {
  std::string s = std::string(options_.flow_table == FlowTable::kFlat ? "flat" : "rte_hash") + " flow table, " +
                  std::to_string(rx_queues_) + " rx queue(s)" + (rss_ ? " with RSS" : "") + ", " +
                  std::to_string(lcores_.size()) + " RX lcore(s) [";
  for (std::size_t i = 0; i < lcores_.size(); ++i) s += (i != 0 ? "," : "") + std::to_string(lcores_[i]->lcore_id);
  s += "]";
  if (lcores_.size() > 1 && rx_queues_ < lcores_.size()) s += ", software spread from lcore 0";
  if (allmulticast_) s += ", all-multicast (IPv6 ND)";
  s += options_.handoff == Handoff::kZeroCopy
           ? ", zero-copy hand-off (credit " + std::to_string(options_.zero_copy_credit) + " mbufs per lcore)"
           : ", copy hand-off";
  return s;
}

Status DpdkSource::start(fileio::RingMatrix& rings) {
  std::unique_lock lock(control_mu_);
  if (!init_status_) return init_status_;
  if (state_ != State::kIdle) return Status::error("dpdk source: start() after start() or stop()");
  if (rings.producers() < lcores_.size()) {
    return Status::error("dpdk source: ring matrix has " + std::to_string(rings.producers()) + " producers for " +
                         std::to_string(lcores_.size()) + " RX lcores");
  }
  if (rings.writers() > 65535) return Status::error("dpdk source: at most 65535 writers");
  for (auto& lp : lcores_) {
    Lcore& l = *lp;
    l.rings = &rings;
    l.dirty.assign(rings.writers(), 0);
    l.zc.clear();
    if (options_.handoff == Handoff::kZeroCopy) {
      l.zc.resize(rings.writers());
      for (auto& q : l.zc) q.e = std::make_unique<Lcore::ZcHeld[]>(l.zc_mask + 1);
    }
    for (std::uint32_t s = 0; s < l.max_flows; ++s) {  // flows installed before start()
      if (l.flows[s].active) l.flows[s].writer = static_cast<std::uint16_t>(rings.writer_for(l.flows[s].stream));
    }
  }
  if (const int rc = rte_eth_dev_start(port_id_); rc != 0) {
    return Status(-rc, "dpdk: port " + options_.port + ": rte_eth_dev_start: " + rte_error(rc));
  }
  port_->started = true;
  if (port_->tap_port != kNoPort) {
    if (const int rc = rte_eth_dev_start(port_->tap_port); rc != 0) {
      return Status(-rc, "dpdk: exception TAP: rte_eth_dev_start: " + rte_error(rc));
    }
    port_->tap_started = true;
  }
  state_ = State::kRunning;
  Status result;
  for (auto& lp : lcores_) {
    const int rc = rte_eal_remote_launch(&Lcore::entry, lp.get(), lp->lcore_id);
    if (rc != 0) {
      result = Status(-rc, "dpdk: launching lcore " + std::to_string(lp->lcore_id) + ": " + rte_error(rc));
      break;
    }
    lp->launched = true;
  }
  if (!result) {
    lock.unlock();
    stop();
  }
  return result;
}

void DpdkSource::stop() {
  std::lock_guard lock(control_mu_);
  const State was = state_;
  state_ = State::kStopped;
  if (was != State::kRunning) return;
  for (auto& lp : lcores_) lp->stop_requested.store(true, std::memory_order_release);
  for (auto& lp : lcores_) {
    if (lp->launched) rte_eal_wait_lcore(lp->lcore_id);
    lp->launched = false;
  }
  // Hand-offs enqueued after their owner had stopped.
  std::uint64_t discarded = 0;
  for (rte_ring* r : port_->handoff) {
    if (r == nullptr) continue;
    void* objs[kMaxBurst];
    unsigned k = 0;
    while ((k = rte_ring_dequeue_burst(r, objs, kMaxBurst, nullptr)) != 0) {
      rte_pktmbuf_free_bulk(reinterpret_cast<rte_mbuf**>(objs), k);
      discarded += k;
    }
  }
  stop_discarded_.fetch_add(discarded, std::memory_order_relaxed);
  if (port_->tap_started) rte_eth_dev_stop(port_->tap_port);
  port_->tap_started = false;
  if (port_->started) rte_eth_dev_stop(port_id_);
  port_->started = false;
  // Every flow has its end mark (or was counted lost); keep final counters.
  flows_.forget_all([this](const Flows::Entry& e) { return slot_stats(e); });
}

FlowStats DpdkSource::slot_stats(const Flows::Entry& e) const {
  const Flow& f = lcores_[e.owner]->flows[e.slot];
  return {f.packets.load(std::memory_order_relaxed), f.wrong_source.load(std::memory_order_relaxed),
          f.policed.load(std::memory_order_relaxed)};
}

void DpdkSource::reclaim_locked(unsigned lcore) {
  // acquire: pairs with drain_commands()'s release; the slots' final counters are visible.
  const std::uint64_t done = lcores_[lcore]->commands_done.load(std::memory_order_acquire);
  flows_.reclaim(lcore, done, [this](const Flows::Entry& e) { return slot_stats(e); });
}

Status DpdkSource::post_locked(unsigned lcore, const Command& cmd) {
  Lcore& l = *lcores_[lcore];
  if (state_ == State::kIdle) {
    // The lcore is not running: the control thread owns its table and applies directly.
    l.apply(cmd);
    l.commands_done.fetch_add(1, std::memory_order_release);
    ++commands_posted_[lcore];
    return Status::ok();
  }
  Command copy = cmd;
  const auto deadline = std::chrono::steady_clock::now() + kCommandRingWait;
  while (rte_ring_sp_enqueue_elem(l.commands, &copy, sizeof copy) != 0) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return Status(EAGAIN, "dpdk: command ring of RX lcore " + std::to_string(l.lcore_id) + " stays full (lcore stalled?)");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  ++commands_posted_[lcore];
  return Status::ok();
}

Status DpdkSource::add_flow(const FlowSpec& flow) {
  std::lock_guard lock(control_mu_);
  return add_flow_locked(flow, kAllAddresses);
}

Status DpdkSource::add_flow_on(const FlowSpec& flow, unsigned address_index) {
  std::lock_guard lock(control_mu_);
  if (address_index >= addresses_.size()) {
    return Status(EINVAL, "dpdk: address index " + std::to_string(address_index) + " out of range (" +
                              std::to_string(addresses_.size()) + " addresses)");
  }
  return add_flow_locked(flow, address_index);
}

Status DpdkSource::add_flow_locked(const FlowSpec& spec, unsigned address_index) {
  if (!init_status_) return init_status_;
  const std::string what = "dpdk udp port " + std::to_string(spec.local_port);
  if (state_ == State::kStopped) return Status::error(what + ": dpdk source stopped");
  if (spec.local_port == 0) return Status(EINVAL, what + ": the dpdk source needs an explicit port");
  if (flows_.find(spec.stream) != nullptr) {
    return Status(EEXIST, what + ": stream " + std::to_string(spec.stream) + " already has a flow");
  }
  const auto n_addr = static_cast<unsigned>(addresses_.size());
  const unsigned a_lo = address_index == kAllAddresses ? 0 : address_index;
  const unsigned a_hi = address_index == kAllAddresses ? n_addr : address_index + 1;
  if (const auto user = flows_.port_user(spec.local_port, a_lo, a_hi)) {
    return Status(EADDRINUSE, what + ": already used by stream " + std::to_string(*user));
  }
  Command cmd;
  cmd.kind = Command::kAdd;
  cmd.address = static_cast<std::uint8_t>(address_index);
  cmd.port = spec.local_port;
  cmd.stream = spec.stream;
  cmd.latch = spec.latch ? 1 : 0;
  cmd.match = kAny;
  if (spec.expected.ss_family == AF_INET) {
    sockaddr_in sin{};
    std::memcpy(&sin, &spec.expected, sizeof sin);
    cmd.expect_ip = sin.sin_addr.s_addr;
    cmd.expect_port = sin.sin_port;
    cmd.match = sin.sin_port != 0 && !spec.latch ? kAddrPort : kAddr;
  } else if (spec.expected.ss_family == AF_INET6) {
    sockaddr_in6 s6{};
    std::memcpy(&s6, &spec.expected, sizeof s6);
    if (!IN6_IS_ADDR_V4MAPPED(&s6.sin6_addr)) {
      return Status(EAFNOSUPPORT, what + ": IPv6 expected source on an IPv4 dataplane");
    }
    std::memcpy(&cmd.expect_ip, &s6.sin6_addr.s6_addr[12], 4);
    cmd.expect_port = s6.sin6_port;
    cmd.match = s6.sin6_port != 0 && !spec.latch ? kAddrPort : kAddr;
  } else if (spec.expected.ss_family != AF_UNSPEC) {
    return Status(EAFNOSUPPORT, what + ": expected source is neither IPv4 nor IPv6");
  }
  const unsigned owner = owner_of(spec.local_port, static_cast<unsigned>(lcores_.size()));
  reclaim_locked(owner);
  const std::optional<std::uint32_t> slot = flows_.next_slot(owner);
  if (!slot) {
    return Status(ENOSPC, what + ": flow table of RX lcore " + std::to_string(lcores_[owner]->lcore_id) + " is full (" +
                              std::to_string(options_.max_flows_per_lcore) + " flows)");
  }
  cmd.slot = *slot;
  if (Status s = post_locked(owner, cmd); !s) return s;
  // A re-used stream id: the registry forgets its removed flow, flow_stats() now means this one.
  flows_.add(spec.stream, Flows::Entry{owner, cmd.slot, spec.local_port, static_cast<std::uint16_t>(a_lo),
                                       static_cast<std::uint16_t>(a_hi), {}});
  return Status::ok();
}

void DpdkSource::remove_flow(StreamId stream) {
  std::lock_guard lock(control_mu_);
  const Flows::Entry* e = flows_.find(stream);
  if (e == nullptr) return;
  const unsigned lcore = e->owner;
  Command cmd;
  cmd.kind = Command::kRemove;
  cmd.slot = e->slot;
  cmd.stream = stream;
  if (Status s = post_locked(lcore, cmd); !s) {
    // The lcore is stalled for a second: nothing sane is left to do but report it.
    std::fprintf(stderr, "callrec dpdk: remove_flow(%u): %s\n", stream, s.message().c_str());
    return;
  }
  // The keys are free at once; the slot once the lcore has applied the remove.
  flows_.remove(stream, commands_posted_[lcore]);
  reclaim_locked(lcore);
}

SourceStats DpdkSource::stats() const { return dpdk_stats().source; }

void DpdkSource::set_rx_rate_limit(double pps) {
  for (const auto& lp : lcores_) lp->rate_limit_pps.store(std::max(0.0, pps), std::memory_order_relaxed);
}

DpdkStats DpdkSource::dpdk_stats() const {
  DpdkStats d;
  SourceStats& s = d.source;
  for (const auto& lp : lcores_) {
    const PublishedCounters& p = lp->published;
    s.rx_packets += p.get(kRxPackets);
    s.rx_bytes += p.get(kRxBytes);
    s.delivered += p.get(kDelivered);
    s.ring_full += p.get(kRingFull);
    s.unknown_flow += p.get(kUnknownFlow);
    s.wrong_source += p.get(kWrongSource);
    s.not_rtp += p.get(kNotRtp);
    s.policed += p.get(kPoliced);
    s.rx_errors += p.get(kRxErrors);
    s.arp_replies += p.get(kArpReplies);
    s.icmp_replies += p.get(kIcmpReplies);
    s.nd_replies += p.get(kNdReplies);
    s.icmp6_replies += p.get(kIcmp6Replies);
    s.exception_path += p.get(kExceptionPath);
    d.forwarded += p.get(kForwarded);
    d.handoff_full += p.get(kHandoffFull);
    d.dropped += p.get(kDropped);
    d.not_ours += p.get(kNotOurs);
    d.icmp6_invalid += p.get(kIcmp6Invalid);
    d.tx_failed += p.get(kTxFailed);
    d.exception_rx += p.get(kExceptionRx);
    d.bursts += p.get(kBursts);
    d.timed_packets += p.get(kTimedPackets);
    d.cycles_rx += p.get(kCyclesRx);
    d.cycles_classify += p.get(kCyclesClassify);
    d.cycles_deliver += p.get(kCyclesDeliver);
    d.cycles_free += p.get(kCyclesFree);
    d.zero_copy += p.get(kZeroCopy);
    d.zero_copy_fallback += p.get(kZeroCopyFallback);
    d.zero_copy_held += p.get(kZeroCopyHeld);
  }
  d.zero_copy_leaked = zero_copy_leaked_.load(std::memory_order_relaxed);
  d.dropped += stop_discarded_.load(std::memory_order_relaxed);
  d.end_marks_lost = end_marks_lost_.load(std::memory_order_relaxed);
  if (init_status_ && port_id_ != kNoPort) {
    rte_eth_stats es{};
    if (rte_eth_stats_get(port_id_, &es) == 0) {
      s.nic_missed = es.imissed;
      s.nic_nombuf = es.rx_nombuf;
      d.nic_ipackets = es.ipackets;
      d.nic_ibytes = es.ibytes;
      d.nic_ierrors = es.ierrors;
    }
    d.tsc_hz = rte_get_tsc_hz();
  }
  return d;
}

std::vector<SourceCounter> DpdkSource::counters() const {
  const DpdkStats d = dpdk_stats();
  const SourceStats& s = d.source;
  return {
      {"dpdk_imissed", "Packets the NIC dropped because the RX queues were full (rte_eth_stats imissed).", s.nic_missed},
      {"dpdk_rx_nombuf", "RX mbuf allocation failures (rte_eth_stats rx_nombuf).", s.nic_nombuf},
      {"dpdk_ierrors", "Erroneous packets received by the NIC (rte_eth_stats ierrors).", d.nic_ierrors},
      {"dpdk_nic_ipackets", "Packets the NIC received (rte_eth_stats ipackets).", d.nic_ipackets},
      {"dpdk_ring_full", "RTP packets dropped because the writer's ring (or the owner lcore's hand-off ring) was full.", s.ring_full},
      {"dpdk_unknown_flow", "UDP packets to our address(es) for a port with no recording.", s.unknown_flow},
      {"dpdk_wrong_source", "RTP packets for a recording from another source than the phone (not written).", s.wrong_source},
      {"dpdk_policed", "RTP packets dropped because their flow was over its rate (--max-stream-pps).", s.policed},
      {"dpdk_arp_replies", "ARP requests for the dataplane address(es) answered.", s.arp_replies},
      {"dpdk_icmp_replies", "ICMP echo requests to the dataplane address(es) answered.", s.icmp_replies},
      {"dpdk_nd_replies", "IPv6 neighbour solicitations for the dataplane IPv6 address(es) answered.", s.nd_replies},
      {"dpdk_icmp6_replies", "ICMPv6 echo requests to the dataplane IPv6 address(es) answered.", s.icmp6_replies},
      {"dpdk_exception_path", "Packets handed to the kernel through the exception TAP.", s.exception_path},
      {"dpdk_exception_path_tx", "Packets the kernel sent through the exception TAP out of the port.", d.exception_rx},
      {"dpdk_forwarded", "Packets handed from the receiving RX lcore to the owner of their flow (software spread).", d.forwarded},
      {"dpdk_handoff_full", "Packets dropped because the owner lcore's hand-off ring was full (also in ring_full).", d.handoff_full},
      {"dpdk_dropped", "Other packets dropped (not for our addresses, no exception path, unsupported, TX refused).", d.dropped},
      {"dpdk_not_ours",
       "Unicast IPv4 packets to another address; without exception path also unicast IPv6 to another address "
       "and neighbour solicitations for another target (part of dropped).",
       d.not_ours},
      {"dpdk_icmp6_invalid",
       "ICMPv6 for the dataplane that failed validation: neighbour solicitations (RFC 4861 7.1.1), echo "
       "requests (part of dropped).",
       d.icmp6_invalid},
      {"dpdk_tx_failed", "Replies or exception packets the port refused to send (part of dropped).", d.tx_failed},
      {"dpdk_end_marks_lost", "End-of-stream marks stop() could not hand to a writer.", d.end_marks_lost},
      {"dpdk_zero_copy", "RTP packets handed to a writer by reference (zero-copy hand-off).", d.zero_copy},
      {"dpdk_zero_copy_fallback", "RTP packets copied because the zero-copy credit was used up (writer lagging).", d.zero_copy_fallback},
      {"dpdk_zero_copy_held", "mbufs writers hold now under the zero-copy hand-off.", d.zero_copy_held, true},
      {"dpdk_zero_copy_leaked", "mbufs still referenced by a writer when stop() gave up waiting.", d.zero_copy_leaked},
  };
}

std::vector<unsigned> DpdkSource::rx_cpus() const {
  std::vector<unsigned> cpus;
  if (!init_status_) return cpus;
  for (const auto& lp : lcores_) {
    const rte_cpuset_t set = rte_lcore_cpuset(lp->lcore_id);
    for (unsigned c = 0; c < CPU_SETSIZE; ++c) {
      // CPU_ISSET without its C casts (-Wold-style-cast).
      constexpr unsigned kBits = 8 * sizeof(set.__bits[0]);
      if (((set.__bits[c / kBits] >> (c % kBits)) & 1U) != 0) cpus.push_back(c);
    }
  }
  std::sort(cpus.begin(), cpus.end());
  cpus.erase(std::unique(cpus.begin(), cpus.end()), cpus.end());
  return cpus;
}

std::optional<FlowStats> DpdkSource::flow_stats(StreamId stream) const {
  std::lock_guard lock(control_mu_);
  // Installed, or removed with its slot not released yet: the slot's counters are the flow's.
  return flows_.flow_stats(stream, [this](const Flows::Entry& e) { return slot_stats(e); });
}

DpdkMemory DpdkSource::memory() const {
  DpdkMemory m;
  if (!init_status_) return m;
  if (port_->pool != nullptr) {
    const rte_mempool* p = port_->pool;
    m.mempool_bytes = static_cast<std::uint64_t>(p->size) * (p->header_size + p->elt_size + p->trailer_size);
  }
  const std::uint64_t n_addr = addresses_.size();
  for (const auto& lp : lcores_) {
    m.flow_entries_bytes += std::uint64_t{lp->max_flows} * sizeof(Flow);
    if (lp->flat) {
      m.flow_table_bytes += (n_addr << 16) * sizeof(std::uint32_t);
    } else if (lp->hash != nullptr) {
      // rte_hash: buckets of 8 (16-bit signature + key index) + key store (key + data pointer).
      const std::uint64_t entries = std::max<std::uint64_t>(1024, std::min<std::uint64_t>(std::uint64_t{lp->max_flows} * n_addr, n_addr << 16));
      m.flow_table_bytes += entries * (sizeof(std::uint32_t) + sizeof(void*)) + entries / 8 * 64;
    }
  }
  const std::uint64_t n = lcores_.size();
  m.rings_bytes = n * options_.command_ring_size * sizeof(Command) + n * (n - 1) * options_.handoff_ring_size * sizeof(void*);
  m.per_stream_bytes = sizeof(Flow) + (options_.flow_table == FlowTable::kFlat ? sizeof(std::uint32_t) : 16);
  return m;
}

}  // namespace callrec::dataplane
