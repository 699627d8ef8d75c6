// The DPDK mirror port of passive capture (built only with DPDK; the rest of callrec sees
// capture.hpp). One RX queue in promiscuous mode, bursts of 32, mbufs freed one call later.
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
  std::array<rte_mbuf*, 32> out{};          ///< mbufs handed out by the last next_burst()
  unsigned burst_held = 0;
  std::vector<std::byte> linear_burst;      ///< chained mbufs of a burst, 16 KiB each
  void release();
};

/// Frees what the last next() or next_burst() handed out.
void DpdkCapture::Impl::release() {
  if (held) {
    rte_pktmbuf_free(held);
    held = nullptr;
  }
  if (burst_held != 0) {
    rte_pktmbuf_free_bulk(out.data(), burst_held);
    burst_held = 0;
  }
}

namespace {
std::uint64_t realtime_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}
std::string rte_err(int e) { return rte_strerror(e < 0 ? -e : e); }
}  // namespace

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
  m.pool = rte_pktmbuf_pool_create(pool_name.c_str(), o.mbufs, 256, 0, room,
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
  (void)rte_eth_promiscuous_enable(m.pid);  // a mirror port sees frames for every MAC (PMDs without it: all)
  st = Status::ok();
  return c;
}

DpdkCapture::~DpdkCapture() {
  if (!impl_) return;
  Impl& m = *impl_;
  m.release();
  for (unsigned i = m.pos; i < m.n; ++i) rte_pktmbuf_free(m.burst[i]);
  if (m.started) {
    (void)rte_eth_dev_stop(m.pid);
    (void)rte_eth_dev_close(m.pid);
  }
  if (m.pool) rte_mempool_free(m.pool);
  dpdk_release_port(m.pid);
}

unsigned DpdkCapture::next_burst(Frame* out, unsigned max) {
  Impl& m = *impl_;
  m.release();
  max = std::min<unsigned>(max, static_cast<unsigned>(m.out.size()));
  unsigned n = 0;
  if (m.pos < m.n) {  // frames left by next() calls go first, in order
    n = std::min(max, m.n - m.pos);
    std::copy_n(m.burst.data() + m.pos, n, m.out.data());
    m.pos += n;
  } else {
    n = rte_eth_rx_burst(m.pid, 0, m.out.data(), static_cast<std::uint16_t>(max));
    if (n == 0) return 0;
    m.ts_ns = realtime_ns();
  }
  m.burst_held = n;
  for (unsigned i = 0; i < n; ++i) {
    rte_mbuf* mb = m.out[i];
    const std::uint32_t len = rte_pktmbuf_pkt_len(mb);
    if (mb->nb_segs == 1) [[likely]] {
      out[i].data = {rte_pktmbuf_mtod(mb, const std::byte*), rte_pktmbuf_data_len(mb)};
    } else {
      constexpr std::size_t kSlot = 16384;
      if (m.linear_burst.empty()) m.linear_burst.resize(kSlot * m.out.size());
      const std::uint32_t c = std::min<std::uint32_t>(len, static_cast<std::uint32_t>(kSlot));
      const void* p = rte_pktmbuf_read(mb, 0, c, m.linear_burst.data() + kSlot * i);
      out[i].data = {static_cast<const std::byte*>(p), c};
    }
    out[i].link = decode::kLinkEthernet;
    out[i].ts_ns = m.ts_ns;
    out[i].orig_len = len;
  }
  return n;
}

int DpdkCapture::next(Frame& f) {
  Impl& m = *impl_;
  m.release();
  if (m.pos == m.n) {
    m.n = rte_eth_rx_burst(m.pid, 0, m.burst.data(), static_cast<std::uint16_t>(m.burst.size()));
    m.pos = 0;
    if (m.n == 0) return 0;
    m.ts_ns = realtime_ns();
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
  f.ts_ns = m.ts_ns;
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
