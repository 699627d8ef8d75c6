// The exception path (lcore 0): packets the dataplane does not handle itself (SIP on a port
// nobody records, ARP replies, TCP ...) go to the kernel through a TAP with the port's MAC, and
// what the kernel sends on the TAP goes out of the port. Flushed with the host TX batch
// (flush_host, host_stack.cpp); the TAP is polled every 100 us.
#include <array>

#include "dataplane/dpdk/dpdk_internal.hpp"

namespace callrec::dataplane {

void DpdkSource::Lcore::queue_exception(rte_mbuf* m) {
  if (tap_port == kNoPort) {
    ++c[kDropped];
    rte_pktmbuf_free(m);
    return;
  }
  if (exc_tx_n == exc_tx.size()) flush_host();
  exc_tx[exc_tx_n++] = m;
}

void DpdkSource::Lcore::poll_tap() {
  std::array<rte_mbuf*, kMaxBurst> pkts;
  const std::uint16_t n = rte_eth_rx_burst(tap_port, 0, pkts.data(), static_cast<std::uint16_t>(burst));
  if (n == 0) return;
  const std::uint16_t sent = has_tx ? rte_eth_tx_burst(port_id, 0, pkts.data(), n) : 0;
  c[kExceptionRx] += sent;
  if (sent < n) {
    c[kTxFailed] += n - sent;
    rte_pktmbuf_free_bulk(pkts.data() + sent, n - sent);
  }
}

}  // namespace callrec::dataplane
