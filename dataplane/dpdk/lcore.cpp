// DpdkSource's RX lcores: the poll loop, the flow commands it applies, and its shutdown. See
// dataplane/dpdk_source.hpp for the contract, threads and spread; the state is Lcore (dpdk_internal.hpp).
//
// Per RX lcore, one poll iteration:
//   for each of its queues:      rte_eth_rx_burst(32) -> process(burst, received_here)
//   for each hand-off ring in:   rte_ring_sc_dequeue_burst   -> process(burst, !received_here)
//   lcore 0: flush host TX; every 100 us poll the exception TAP (kernel -> wire)
//   commands (rte_ring, drained after the packets so a remove follows what was received)
//   pending end marks; counters published every 100 ms; optional idle sleep
// process() is two passes over the burst (the VPP/l3fwd shape): pass 1 prefetches a few packets
// ahead, parses Ethernet/VLAN/IPv4/UDP and sorts packets into candidates (ours), hand-offs
// (another lcore owns them), host traffic and drops; the lookup stage maps candidates to flow
// slots and prefetches the flow entries; pass 2 checks the source and RTP v2, copies the UDP
// payload into ring(p, writer) and publishes each touched ring once; then mbufs are freed in
// one rte_pktmbuf_free_bulk. Measured figures: bench/RESULTS-dpdk.md (dpdk_pipeline_bench).
//
// Where an RX lcore's cycles go (2.1 GHz TSC, 2-vCPU VM, count consumer, stage timing on),
// per packet: rx_burst (net_pcap replay: alloc + copy) 80-90; classify (parse + lookup +
// prefetch) 19 with the flat table up to 18,000 streams, 41 at 100,000; deliver (source and RTP
// checks, copy into a 32 MiB PacketRing) 75-95; bulk free 9-15. Total 190-235 cycles: 8.8-10.8
// Mpps per lcore, against 22-25 Mpps for testpmd rxonly on the same vdev and file.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <span>

#include "dataplane/dpdk/dpdk_internal.hpp"

namespace callrec::dataplane {

namespace dpdk_detail {

enum class Kind : std::uint8_t { kCandidate, kHost, kNotOurs, kDrop, kNotRtp };

/// Parses Ethernet (up to two VLAN tags) / IPv4 / UDP. Never reads past `len`.
inline Kind classify(const std::uint8_t* d, std::uint32_t len, const std::uint32_t* addrs, unsigned n_addr,
                     Candidate& c) {
  if (len < 14) return Kind::kDrop;
  std::uint16_t et = load_be16(d + 12);
  std::uint32_t l3 = 14;
  while ((et == 0x8100 || et == 0x88A8) && l3 < 22) {
    if (len < l3 + 4) return Kind::kDrop;
    et = load_be16(d + l3 + 2);
    l3 += 4;
  }
  if (et != 0x0800) return Kind::kHost;  // ARP, IPv6, LLDP ...: the host stack decides
  if (len < l3 + 20) return Kind::kDrop;
  const std::uint8_t* ip = d + l3;
  const std::uint32_t ihl = (ip[0] & 0x0Fu) * 4;
  if ((ip[0] >> 4) != 4 || ihl < 20) return Kind::kDrop;
  const std::uint32_t tot = load_be16(ip + 2);
  if (tot < ihl || l3 + tot > len) return Kind::kDrop;  // truncated (or multi-segment)
  const std::uint32_t dst = raw32(ip + 16);
  unsigned a = 0;
  while (a < n_addr && addrs[a] != dst) ++a;
  if (a == n_addr) {
    const std::uint8_t first = ip[16];
    return (first >= 224 || dst == 0xFFFFFFFFU) ? Kind::kHost : Kind::kNotOurs;
  }
  if (ip[9] != IPPROTO_UDP || (load_be16(ip + 6) & 0x3FFF) != 0) return Kind::kHost;  // TCP, ICMP, fragments
  if (tot < ihl + 8) return Kind::kNotRtp;
  const std::uint8_t* udp = ip + ihl;
  const std::uint32_t ulen = load_be16(udp + 4);
  if (ulen < 8 || ulen > tot - ihl) return Kind::kNotRtp;
  c.key = (a << 16) | load_be16(udp + 2);
  c.src_ip = raw32(ip + 12);
  c.src_port = raw16(udp);
  c.payload = udp + 8;
  c.len = static_cast<std::uint16_t>(ulen - 8);
  return Kind::kCandidate;
}

}  // namespace dpdk_detail

void DpdkSource::Lcore::run() {
  rebase_clock();
  tokens_tsc = base_tsc;
  tokens_per_tsc = rate_limit_pps.load(std::memory_order_relaxed) * ns_per_tsc / 1e9;
  next_publish_tsc = base_tsc + publish_interval_tsc;
  next_tap_tsc = base_tsc;
  // acquire: pairs with stop()'s release; commands posted before it are seen by shutdown().
  while (!stop_requested.load(std::memory_order_acquire)) {
    const unsigned got = poll_once();
    drain_commands();
    if (!end_marks.empty()) end_marks.retry(*rings, index);
    const std::uint64_t now = rte_rdtsc();
    if (now >= next_publish_tsc) {
      publish();
      rebase_clock();
      next_publish_tsc = now + publish_interval_tsc;
      tokens_per_tsc = rate_limit_pps.load(std::memory_order_relaxed) * ns_per_tsc / 1e9;
    }
    if (got != 0) {
      idle_polls = 0;
    } else {
      // An empty poll: PAUSE lets the other hardware thread of this core (on a 2-vCPU machine,
      // the writer) use the execution units the spin would take.
      if (idle_pause) rte_pause();
      if (idle_sleep_us != 0 && ++idle_polls > kIdlePollsBeforeSleep) ::usleep(idle_sleep_us);
    }
  }
  shutdown();
}

unsigned DpdkSource::Lcore::poll_once() {
  std::array<rte_mbuf*, kMaxBurst> pkts;
  unsigned got = 0;
  unsigned budget = burst;
  if (tokens_per_tsc > 0) [[unlikely]] {
    const std::uint64_t now = rte_rdtsc();
    tokens = std::min(tokens + static_cast<double>(now - tokens_tsc) * tokens_per_tsc, 4.0 * burst);
    tokens_tsc = now;
    budget = tokens >= static_cast<double>(burst) ? burst : static_cast<unsigned>(tokens);
  }
  for (const std::uint16_t q : queues) {
    if (budget == 0) break;
    const std::uint64_t t0 = timing ? rte_rdtsc() : 0;
    const std::uint16_t n = rte_eth_rx_burst(port_id, q, pkts.data(), static_cast<std::uint16_t>(budget));
    if (tokens_per_tsc > 0) [[unlikely]] {
      tokens -= n;
      budget -= n;
    }
    if (n == 0) continue;
    if (timing) {
      c[kCyclesRx] += rte_rdtsc() - t0;
      ++c[kBursts];
      c[kTimedPackets] += n;
    }
    process(pkts.data(), n, true);
    got += n;
  }
  for (rte_ring* r : handoff_in) {
    if (r == nullptr) continue;
    const unsigned n = rte_ring_sc_dequeue_burst(r, reinterpret_cast<void**>(pkts.data()), burst, nullptr);
    if (n == 0) continue;
    process(pkts.data(), n, false);
    got += n;
  }
  if (zc_held != 0) zc_reclaim();
  if (tap_port != kNoPort || host_tx_n != 0 || exc_tx_n != 0) {
    flush_host();
    if (tap_port != kNoPort && rte_rdtsc() >= next_tap_tsc) {
      poll_tap();
      next_tap_tsc = rte_rdtsc() + tap_interval_tsc;
    }
  }
  return got;
}

// Flat table vs rte_hash (classify stage, cycles/packet, bench/RESULTS-dpdk.md): 19 vs 40-43 at
// 1,000-18,000 streams; 41 vs 80 at 100,000. Flat costs 256 KiB per address per lcore.
void DpdkSource::Lcore::lookup(Candidate* cand, unsigned n) const {
  if (table_kind == FlowTable::kFlat) {
    for (unsigned i = 0; i < n; ++i) {
      const std::uint32_t s = flat[cand[i].key];
      cand[i].slot = s;
      if (s != 0) rte_prefetch0(&flows[s - 1]);
    }
    return;
  }
  std::array<const void*, kMaxBurst> keys;
  std::array<void*, kMaxBurst> data;
  for (unsigned i = 0; i < n; ++i) keys[i] = &cand[i].key;
  std::uint64_t hits = 0;
  rte_hash_lookup_bulk_data(hash, keys.data(), n, &hits, data.data());
  for (unsigned i = 0; i < n; ++i) {
    const std::uint32_t s = ((hits >> i) & 1U) != 0 ? static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(data[i])) : 0;
    cand[i].slot = s;
    if (s != 0) rte_prefetch0(&flows[s - 1]);
  }
}

// Per-packet path: no allocation, no lock, no log. Cycle figures: bench/RESULTS-dpdk.md.
void DpdkSource::Lcore::process(rte_mbuf** pkts, unsigned n, bool received_here) {
  const std::uint64_t t0 = timing ? rte_rdtsc() : 0;
  std::array<Candidate, kMaxBurst> cand;
  std::array<rte_mbuf*, kMaxBurst> to_free;
  std::array<rte_mbuf*, kMaxBurst> host_pkts;
  unsigned nc = 0;
  unsigned nf = 0;
  unsigned nh = 0;
  std::uint64_t bytes = 0;

  // Pass 1: parse and sort. Host traffic belongs to lcore 0; a candidate to owner_of(port) --
  // except after a hand-off, where it is ours by construction (no ping-pong).
  for (unsigned i = 0; i < n; ++i) {
    if (i + kPrefetchAhead < n) rte_prefetch0(mbuf_data(pkts[i + kPrefetchAhead]));
    rte_mbuf* m = pkts[i];
    bytes += m->pkt_len;
    Candidate& cd = cand[nc];
    const Kind k = classify(mbuf_data(m), m->data_len, addresses, n_addr, cd);
    switch (k) {
      case Kind::kCandidate: {
        const unsigned owner = received_here ? owner_of(static_cast<std::uint16_t>(cd.key), n_lcores) : index;
        if (owner == index) {
          cd.m = m;
          ++nc;
        } else {
          fwd[owner][fwd_n[owner]++] = m;
        }
        break;
      }
      case Kind::kHost:
        if (index == 0) {
          host_pkts[nh++] = m;
        } else {
          fwd[0][fwd_n[0]++] = m;
        }
        break;
      case Kind::kNotOurs:
        ++c[kNotOurs];
        ++c[kDropped];
        to_free[nf++] = m;
        break;
      case Kind::kDrop:
        ++c[kDropped];
        to_free[nf++] = m;
        break;
      case Kind::kNotRtp:
        ++c[kNotRtp];
        to_free[nf++] = m;
        break;
    }
  }
  if (received_here) {
    c[kRxPackets] += n;
    c[kRxBytes] += bytes;
  }
  lookup(cand.data(), nc);
  const std::uint64_t t1 = timing ? rte_rdtsc() : 0;

  // Pass 2: source check, RTP check, copy into the writer's ring.
  const std::uint64_t now = now_ns(rte_rdtsc());
  std::uint64_t delivered = 0;
  for (unsigned i = 0; i < nc; ++i) {
    const Candidate& cd = cand[i];
    if (cd.slot == 0) [[unlikely]] {
      if (tap_port != kNoPort) {  // a UDP port nobody records: the kernel may want it (SIP ...)
        if (index == 0) {
          host_pkts[nh++] = cd.m;
        } else {
          fwd[0][fwd_n[0]++] = cd.m;
        }
        continue;
      }
      ++c[kUnknownFlow];
      to_free[nf++] = cd.m;
      continue;
    }
    Flow& f = flows[cd.slot - 1];
    if (!f.accepts(cd.src_ip, cd.src_port)) [[unlikely]] {
      ++c[kWrongSource];
      Flow::bump(f.wrong_source);
      to_free[nf++] = cd.m;
      continue;
    }
    const std::span<const std::byte> payload(reinterpret_cast<const std::byte*>(cd.payload), cd.len);
    if (!fileio::parse_rtp(payload)) [[unlikely]] {
      ++c[kNotRtp];
      to_free[nf++] = cd.m;
      continue;
    }
    if (!policer_admit(f.policer_tat, policer, now)) [[unlikely]] {
      ++c[kPoliced];  // over the flow's rate: it cannot take the writer from the other flows
      Flow::bump(f.policed);
      to_free[nf++] = cd.m;
      continue;
    }
    if (f.latch && !f.latched) [[unlikely]] {  // first RTP packet from an acceptable source
      f.latched = true;
      f.latched_ip = cd.src_ip;
      f.latched_port = cd.src_port;
    }
    Flow::bump(f.packets);
    fileio::PacketRing& ring = rings->ring(index, f.writer);
    bool pushed = false;
    if (!zc.empty() && zc_held < zc_credit) {
      // Zero-copy: the writer reads the payload in the mbuf; we free it once released.
      pushed = ring.push_ref(f.stream, now, payload.data(), cd.len);
      if (pushed) [[likely]] {
        ZcFifo& q = zc[f.writer];
        q.e[q.head++ & zc_mask] = {ring.position_after(), cd.m};
        ++zc_held;
        ++c[kZeroCopy];
      } else {
        to_free[nf++] = cd.m;
      }
    } else {
      pushed = ring.push(f.stream, fileio::RecordKind::kPacket, now, payload);
      if (!zc.empty() && pushed) ++c[kZeroCopyFallback];
      to_free[nf++] = cd.m;
    }
    if (pushed) [[likely]] {
      ++delivered;
      if (dirty[f.writer] == 0) {
        dirty[f.writer] = 1;
        dirty_list.push_back(f.writer);  // capacity reserved: no allocation
      }
    } else {
      ++c[kRingFull];
    }
  }
  c[kDelivered] += delivered;
  for (const std::uint16_t w : dirty_list) {  // one release store per touched ring per burst
    rings->ring(index, w).publish();
    dirty[w] = 0;
  }
  dirty_list.clear();
  const std::uint64_t t2 = timing ? rte_rdtsc() : 0;

  // Hand-offs to the owners, host traffic, then one bulk free.
  for (unsigned o = 0; o < n_lcores; ++o) {
    const unsigned k = fwd_n[o];
    if (k == 0) continue;
    fwd_n[o] = 0;
    rte_mbuf** list = fwd[o].data();
    const unsigned sent = rte_ring_sp_enqueue_burst(handoff_out[o], reinterpret_cast<void* const*>(list), k, nullptr);
    c[kForwarded] += sent;
    if (sent < k) {
      c[kHandoffFull] += k - sent;
      c[kRingFull] += k - sent;
      for (unsigned j = sent; j < k; ++j) to_free[nf++] = list[j];
    }
  }
  for (unsigned i = 0; i < nh; ++i) host(host_pkts[i]);
  if (nf != 0) rte_pktmbuf_free_bulk(to_free.data(), nf);
  if (timing) {
    const std::uint64_t t3 = rte_rdtsc();
    c[kCyclesClassify] += t1 - t0;
    c[kCyclesDeliver] += t2 - t1;
    c[kCyclesFree] += t3 - t2;
  }
}

/// Frees, in bulk and with this lcore's mempool cache, the mbufs whose ring records the writers
/// have released. One acquire load of each non-empty ring's released position.
void DpdkSource::Lcore::zc_reclaim() {
  std::array<rte_mbuf*, kMaxBurst> done;
  unsigned nd = 0;
  for (std::size_t w = 0; w < zc.size(); ++w) {
    ZcFifo& q = zc[w];
    if (q.tail == q.head) continue;
    const std::uint64_t released = rings->ring(index, static_cast<unsigned>(w)).released_position();
    while (q.tail != q.head && q.e[q.tail & zc_mask].pos <= released) {
      done[nd++] = q.e[q.tail++ & zc_mask].m;
      if (nd == kMaxBurst) {
        rte_pktmbuf_free_bulk(done.data(), nd);
        zc_held -= nd;
        nd = 0;
      }
    }
  }
  if (nd != 0) {
    rte_pktmbuf_free_bulk(done.data(), nd);
    zc_held -= nd;
  }
}

// ---- commands ------------------------------------------------------------------------------------

void DpdkSource::Lcore::set_key(std::uint32_t key, std::uint32_t value) {
  if (table_kind == FlowTable::kFlat) {
    flat[key] = value;
    return;
  }
  if (value == 0) {
    rte_hash_del_key(hash, &key);
  } else if (rte_hash_add_key_data(hash, &key, reinterpret_cast<void*>(static_cast<std::uintptr_t>(value))) != 0) {
    ++c[kRxErrors];  // table full: the flow is not reachable on this key (counted)
  }
}

unsigned DpdkSource::Lcore::drain_commands() {
  static_assert(sizeof(Command) % 4 == 0, "rte_ring element size must be a multiple of 4");
  std::array<Command, kCommandBatch> batch;
  const unsigned n = rte_ring_sc_dequeue_burst_elem(commands, batch.data(), sizeof(Command), kCommandBatch, nullptr);
  if (n == 0) return 0;
  for (unsigned i = 0; i < n; ++i) apply(batch[i]);
  // release: pairs with reclaim_locked()'s acquire; removed slots' final counters are written.
  commands_done.fetch_add(n, std::memory_order_release);
  return n;
}

void DpdkSource::Lcore::apply(const Command& cmd) {
  Flow& f = flows[cmd.slot];
  const auto for_keys = [&](std::uint8_t address, std::uint16_t port, std::uint32_t value) {
    if (address == kAllAddresses) {
      for (unsigned a = 0; a < n_addr; ++a) set_key((a << 16) | port, value);
    } else {
      set_key((static_cast<std::uint32_t>(address) << 16) | port, value);
    }
  };
  if (cmd.kind == Command::kAdd) {
    f.packets.store(0, std::memory_order_relaxed);
    f.wrong_source.store(0, std::memory_order_relaxed);
    f.policed.store(0, std::memory_order_relaxed);
    f.policer_tat = 0;
    f.stream = cmd.stream;
    f.expect_ip = cmd.expect_ip;
    f.expect_port = cmd.expect_port;
    f.match = cmd.match;
    f.latch = cmd.latch != 0;
    f.latched = false;
    f.latched_ip = 0;
    f.latched_port = 0;
    f.port = cmd.port;
    f.address = cmd.address;
    f.writer = rings != nullptr ? static_cast<std::uint16_t>(rings->writer_for(cmd.stream)) : 0;
    f.active = true;
    for_keys(cmd.address, cmd.port, cmd.slot + 1);
    return;
  }
  if (f.active) end_flow(f);
}

void DpdkSource::Lcore::end_flow(Flow& f) {
  const auto port = f.port;
  if (f.address == kAllAddresses) {
    for (unsigned a = 0; a < n_addr; ++a) set_key((a << 16) | port, 0);
  } else {
    set_key((static_cast<std::uint32_t>(f.address) << 16) | port, 0);
  }
  f.active = false;
  if (rings != nullptr) end_marks.push(*rings, index, f.stream, f.writer);
}

void DpdkSource::Lcore::shutdown() {
  while (drain_commands() != 0) {
  }
  // Packets other lcores handed over before they stopped (they may still be stopping: what
  // arrives later is freed by stop() and counted there).
  std::array<rte_mbuf*, kMaxBurst> pkts;
  for (rte_ring* r : handoff_in) {
    if (r == nullptr) continue;
    unsigned n = 0;
    while ((n = rte_ring_sc_dequeue_burst(r, reinterpret_cast<void**>(pkts.data()), burst, nullptr)) != 0) {
      process(pkts.data(), n, false);
    }
  }
  flush_host();
  for (std::uint32_t s = 0; s < max_flows; ++s) {
    if (flows[s].active) end_flow(flows[s]);
  }
  if (const std::size_t lost = end_marks.drain(*rings, index, stop_drain_timeout); lost != 0)
    end_marks_lost->fetch_add(lost, std::memory_order_relaxed);
  // Zero-copy: the writers still read the mbufs they were handed; wait for them (bounded).
  // What they never release stays allocated (counted): reading freed mbufs would corrupt files.
  const auto deadline = std::chrono::steady_clock::now() + stop_drain_timeout;
  while (zc_held != 0) {
    zc_reclaim();
    if (zc_held == 0 || std::chrono::steady_clock::now() >= deadline) break;
    ::usleep(100);
  }
  if (zc_held != 0) zero_copy_leaked->fetch_add(zc_held, std::memory_order_relaxed);
  publish();
}

}  // namespace callrec::dataplane
