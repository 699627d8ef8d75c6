// The DPDK mirror port of passive capture (built only with DPDK; the rest of callrec sees
// capture.hpp). One RX queue in promiscuous mode, bursts of 32, mbufs freed one call later.
// With several lanes, lane 0 reads the queue and hands each other lane its frames (by a
// symmetric hash of the address pair) through an SP/SC rte_ring of mbufs; the RX time travels
// in the mbuf's timestamp field (DPDK's dynamic field for it).
#include <time.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <vector>

#include "dataplane/capture/capture.hpp"
#include "dataplane/decode/decode.hpp"
#include "dataplane/dpdk/rte.hpp"
#include "dataplane/dpdk_source.hpp"
#include "dataplane/span/spread.hpp"

namespace callrec::dataplane::capture {

struct DpdkCapture::Impl {
  std::uint16_t pid = 0;
  rte_mempool* pool = nullptr;
  bool started = false;
  std::array<rte_mbuf*, 32> burst{};
  unsigned n = 0, pos = 0;
  rte_mbuf* held = nullptr;  ///< the frame handed out by the last next()
  std::uint64_t ts_ns = 0;
  std::array<std::byte, 16384> linear{};  ///< a chained mbuf is copied here (next())
  /// One per lane, each touched by its lane's thread only (lane 0: the RX queue too).
  struct alignas(64) Lane {
    std::array<rte_mbuf*, 32> out{};  ///< mbufs handed out by the last lane_burst()
    unsigned held = 0;
    std::vector<std::byte> linear;    ///< chained mbufs of a burst, 16 KiB each
    rte_ring* ring = nullptr;         ///< lanes > 0: frames lane 0 spread to this lane
    std::atomic<std::uint64_t> dropped{0};  ///< lane 0 found the ring full (cannot happen: it waits)
    std::atomic<std::uint64_t> waits{0};    ///< lane 0 waited for room in this lane's ring
  };
  std::vector<std::unique_ptr<Lane>> lanes;
  int ts_offset = -1;  ///< the mbuf timestamp dynamic field (lanes > 1)
  decode::Counters spread_scratch;
  std::array<std::byte, 512> spread_head{};  ///< lane 0: the first bytes of a chained frame, to spread it
  void release(Lane& l) {
    if (l.held != 0) {
      rte_pktmbuf_free_bulk(l.out.data(), l.held);
      l.held = 0;
    }
  }
  /// Frees what the last next() or lane 0's lane_burst() handed out.
  void release() {
    if (held) {
      rte_pktmbuf_free(held);
      held = nullptr;
    }
    release(*lanes[0]);
  }
  unsigned frames(Lane& l, unsigned count, Frame* out, std::uint64_t ts_ns);
  /// Times for a burst of n frames just received: the host's clock, made strictly increasing
  /// frame by frame (base, base + 1 ns ...), so that packet time orders frames as they came
  /// even within a burst (the lanes match RTP held for a moment against the SIP before it).
  std::uint64_t stamp(unsigned frames_in_burst) {
    const std::uint64_t base = std::max(realtime_now(), last_stamp + 1);
    last_stamp = base + (frames_in_burst == 0 ? 0 : frames_in_burst - 1);
    return base;
  }
  std::uint64_t last_stamp = 0;
  static std::uint64_t realtime_now();
};

namespace {
std::uint64_t realtime_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}
std::string rte_err(int e) { return rte_strerror(e < 0 ? -e : e); }
}  // namespace

std::uint64_t DpdkCapture::Impl::realtime_now() { return realtime_ns(); }

std::unique_ptr<DpdkCapture> DpdkCapture::open(const DpdkCaptureOptions& o, Status& st) {
  std::vector<std::string> args = o.eal_args;
  std::string name = o.port;
  if (o.port.find(',') != std::string::npos || o.port.rfind("net_", 0) == 0) {
    args.push_back("--vdev=" + o.port);
    name = o.port.substr(0, o.port.find(','));
  }
  std::unique_ptr<DpdkCapture> c(new DpdkCapture());
  c->impl_ = std::make_unique<Impl>();
  c->name_ = name;
  Impl& m = *c->impl_;
  if (st = dpdk_claim_port(args, name, m.pid); !st) {
    st = Status(st.code(), "--span-dpdk " + o.port + ": " + st.message());
    return nullptr;
  }
  auto fail = [&](const std::string& what, int rc) {
    st = Status(rc < 0 ? -rc : EIO, "--span-dpdk " + o.port + ": " + what + ": " + rte_err(rc));
    return nullptr;
  };
  static std::atomic<unsigned> instance{0};
  const std::string pool_name = "span_cap" + std::to_string(instance.fetch_add(1));
  const int socket = rte_eth_dev_socket_id(m.pid);
  const auto room = static_cast<std::uint16_t>(o.mbuf_data_room != 0 ? o.mbuf_data_room : RTE_MBUF_DEFAULT_BUF_SIZE);
  // Enough mbufs for the NIC ring, every lane's ring and burst, and the per-lcore caches.
  const unsigned lanes_wanted = std::clamp(o.lanes, 1u, 64u);
  const unsigned mbufs = std::max(o.mbufs, 2048 + (lanes_wanted - 1) * std::max(64u, rte_align32pow2(o.lane_ring)) +
                                               lanes_wanted * (32 + 256));
  m.pool = rte_pktmbuf_pool_create(pool_name.c_str(), mbufs, 256, 0, room,
                                   socket < 0 ? static_cast<int>(SOCKET_ID_ANY) : socket);
  if (m.pool == nullptr) return fail("mbuf pool", -rte_errno);
  rte_eth_conf conf{};
  if (const int rc = rte_eth_dev_configure(m.pid, 1, 1, &conf); rc != 0) return fail("configure", rc);
  std::uint16_t nrx = 1024, ntx = 256;
  (void)rte_eth_dev_adjust_nb_rx_tx_desc(m.pid, &nrx, &ntx);
  const unsigned sock = socket < 0 ? 0u : static_cast<unsigned>(socket);
  if (const int rc = rte_eth_rx_queue_setup(m.pid, 0, nrx, sock, nullptr, m.pool); rc != 0) return fail("rx queue", rc);
  if (const int rc = rte_eth_tx_queue_setup(m.pid, 0, ntx, sock, nullptr); rc != 0) return fail("tx queue", rc);
  if (const int rc = rte_eth_dev_start(m.pid); rc != 0) return fail("start", rc);
  m.started = true;
  (void)rte_eth_promiscuous_enable(m.pid);
  const unsigned lanes = std::clamp(o.lanes, 1u, 64u);
  for (unsigned i = 0; i < lanes; ++i) {
    m.lanes.push_back(std::make_unique<Impl::Lane>());
    if (i == 0) continue;
    const std::string rn = pool_name + "_l" + std::to_string(i);
    m.lanes[i]->ring = rte_ring_create(rn.c_str(), std::max(64u, rte_align32pow2(o.lane_ring)),
                                       socket < 0 ? static_cast<int>(SOCKET_ID_ANY) : socket,
                                       RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (m.lanes[i]->ring == nullptr) return fail("lane ring", -rte_errno);
  }
  if (lanes > 1) {  // the RX time travels with the mbuf to the lane that takes it
    std::uint64_t flag = 0;
    if (rte_mbuf_dyn_rx_timestamp_register(&m.ts_offset, &flag) != 0)
      return fail("--span-lanes " + std::to_string(lanes) + ": no mbuf timestamp field", -rte_errno);
  }  // a mirror port sees frames for every MAC (PMDs without it: all)
  st = Status::ok();
  return c;
}

DpdkCapture::~DpdkCapture() {
  if (!impl_) return;
  Impl& m = *impl_;
  if (!m.lanes.empty()) m.release();
  for (auto& l : m.lanes) {
    m.release(*l);
    if (l->ring == nullptr) continue;
    rte_mbuf* mb = nullptr;
    while (rte_ring_sc_dequeue(l->ring, reinterpret_cast<void**>(&mb)) == 0) rte_pktmbuf_free(mb);
    rte_ring_free(l->ring);
  }
  for (unsigned i = m.pos; i < m.n; ++i) rte_pktmbuf_free(m.burst[i]);
  if (m.started) {
    (void)rte_eth_dev_stop(m.pid);
    (void)rte_eth_dev_close(m.pid);
  }
  if (m.pool) rte_mempool_free(m.pool);
  dpdk_release_port(m.pid);
}

/// Frames of the first n mbufs of l.out (their bytes in place; a chained mbuf is copied).
unsigned DpdkCapture::Impl::frames(Lane& l, unsigned count, Frame* out, std::uint64_t ts) {
  l.held = count;
  for (unsigned i = 0; i < count; ++i) {
    rte_mbuf* mb = l.out[i];
    const std::uint32_t len = rte_pktmbuf_pkt_len(mb);
    if (mb->nb_segs == 1) [[likely]] {
      out[i].data = {rte_pktmbuf_mtod(mb, const std::byte*), rte_pktmbuf_data_len(mb)};
    } else {
      constexpr std::size_t kSlot = 16384;
      if (l.linear.empty()) l.linear.resize(kSlot * l.out.size());
      const std::uint32_t c = std::min<std::uint32_t>(len, static_cast<std::uint32_t>(kSlot));
      const void* p = rte_pktmbuf_read(mb, 0, c, l.linear.data() + kSlot * i);
      out[i].data = {static_cast<const std::byte*>(p), c};
    }
    out[i].link = decode::kLinkEthernet;
    out[i].ts_ns = ts_offset >= 0 && ts == 0 ? *RTE_MBUF_DYNFIELD(mb, ts_offset, rte_mbuf_timestamp_t*) : ts + i;
    out[i].orig_len = len;
  }
  return count;
}

unsigned DpdkCapture::lane_burst(unsigned lane, Frame* out, unsigned max) {
  Impl& m = *impl_;
  if (lane >= m.lanes.size()) return 0;
  Impl::Lane& l = *m.lanes[lane];
  max = std::min<unsigned>(max, static_cast<unsigned>(l.out.size()));
  if (lane != 0) {  // what lane 0 spread to this lane
    m.release(l);
    const unsigned n = rte_ring_sc_dequeue_burst(l.ring, reinterpret_cast<void**>(l.out.data()), max, nullptr);
    if (n == 0) return 0;
    return m.frames(l, n, out, 0);  // the times lane 0 gave them
  }
  m.release();
  if (m.pos < m.n) {  // frames left by next() calls go first, in order
    const unsigned n = std::min(max, m.n - m.pos);
    std::copy_n(m.burst.data() + m.pos, n, l.out.data());
    m.pos += n;
    return m.frames(l, n, out, m.ts_ns + (m.pos - n));
  }
  const unsigned lanes = static_cast<unsigned>(m.lanes.size());
  if (lanes == 1) {
    const unsigned n = rte_eth_rx_burst(m.pid, 0, l.out.data(), static_cast<std::uint16_t>(max));
    if (n == 0) return 0;
    return m.frames(l, n, out, m.stamp(n));
  }
  // A lane that fell behind stops the reading (its ring has no room for a whole burst): the
  // frames wait in the NIC's ring, and what it cannot hold is the NIC's imissed, the one count
  // of frames lost to speed (a replayed capture, net_pcap, then loses nothing).
  for (unsigned t = 1; t < lanes; ++t)
    if (rte_ring_free_count(m.lanes[t]->ring) < max) {
      m.lanes[t]->waits.fetch_add(1, std::memory_order_relaxed);
      return 0;
    }
  std::array<rte_mbuf*, 32> rx;
  const unsigned n = rte_eth_rx_burst(m.pid, 0, rx.data(), static_cast<std::uint16_t>(max));
  if (n == 0) return 0;
  const std::uint64_t base = m.stamp(n);
  // Spread: this lane keeps its share, the others get theirs in one enqueue each.
  static thread_local std::array<std::array<rte_mbuf*, 32>, 64> stage;  // lane 0's thread
  std::array<unsigned, 64> staged{};
  unsigned own = 0;
  for (unsigned i = 0; i < n; ++i) {
    rte_mbuf* mb = rx[i];
    if (m.ts_offset >= 0) *RTE_MBUF_DYNFIELD(mb, m.ts_offset, rte_mbuf_timestamp_t*) = base + i;
    std::span<const std::byte> head{rte_pktmbuf_mtod(mb, const std::byte*), rte_pktmbuf_data_len(mb)};
    if (mb->nb_segs != 1) [[unlikely]] {  // chained (jumbo): its headers, linear, to hash on
      const std::uint32_t c = std::min<std::uint32_t>(rte_pktmbuf_pkt_len(mb), static_cast<std::uint32_t>(m.spread_head.size()));
      head = {static_cast<const std::byte*>(rte_pktmbuf_read(mb, 0, c, m.spread_head.data())), c};
    }
    const unsigned t = spread_lane(decode::kLinkEthernet, head, lanes, m.spread_scratch);
    if (t == 0) l.out[own++] = mb;
    else stage[t][staged[t]++] = mb;
  }
  for (unsigned t = 1; t < lanes; ++t) {
    if (staged[t] == 0) continue;
    Impl::Lane& dst = *m.lanes[t];
    const unsigned sent =
        rte_ring_sp_enqueue_burst(dst.ring, reinterpret_cast<void* const*>(stage[t].data()), staged[t], nullptr);
    if (sent < staged[t]) {
      rte_pktmbuf_free_bulk(stage[t].data() + sent, staged[t] - sent);
      dst.dropped.fetch_add(staged[t] - sent, std::memory_order_relaxed);
    }
  }
  if (own == 0) return 0;
  return m.frames(l, own, out, 0);  // their times are in the mbufs
}

void DpdkCapture::register_lane_thread() {
  if (rte_lcore_id() == LCORE_ID_ANY) (void)rte_thread_register();
}

unsigned DpdkCapture::lanes() const { return static_cast<unsigned>(impl_->lanes.size()); }

std::uint64_t DpdkCapture::spread_dropped() const {
  std::uint64_t n = 0;
  for (const auto& l : impl_->lanes) n += l->dropped.load(std::memory_order_relaxed);
  return n;
}

std::uint64_t DpdkCapture::spread_waits() const {
  std::uint64_t n = 0;
  for (const auto& l : impl_->lanes) n += l->waits.load(std::memory_order_relaxed);
  return n;
}

int DpdkCapture::next(Frame& f) {
  Impl& m = *impl_;
  m.release();
  if (m.pos == m.n) {
    m.n = rte_eth_rx_burst(m.pid, 0, m.burst.data(), static_cast<std::uint16_t>(m.burst.size()));
    m.pos = 0;
    if (m.n == 0) return 0;
    m.ts_ns = m.stamp(m.n);
  }
  rte_mbuf* mb = m.burst[m.pos++];
  m.held = mb;
  const std::uint32_t len = rte_pktmbuf_pkt_len(mb);
  if (mb->nb_segs == 1) {
    f.data = {rte_pktmbuf_mtod(mb, const std::byte*), rte_pktmbuf_data_len(mb)};
  } else {
    const std::uint32_t n = std::min<std::uint32_t>(len, static_cast<std::uint32_t>(m.linear.size()));
    const void* p = rte_pktmbuf_read(mb, 0, n, m.linear.data());
    f.data = {static_cast<const std::byte*>(p), n};
  }
  f.link = decode::kLinkEthernet;
  f.ts_ns = m.ts_ns + (m.pos - 1);
  f.orig_len = len;
  return 1;
}

void DpdkCapture::nic_stats(std::uint64_t& missed, std::uint64_t& nombuf) const {
  rte_eth_stats s{};
  missed = nombuf = 0;
  if (rte_eth_stats_get(impl_->pid, &s) != 0) return;
  missed = s.imissed;
  nombuf = s.rx_nombuf;
}

}  // namespace callrec::dataplane::capture
