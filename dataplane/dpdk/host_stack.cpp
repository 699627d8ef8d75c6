// The host stack of lcore 0: what is addressed to the dataplane itself rather than to a recorded
// flow. ARP requests, ICMP echo, IPv6 neighbour solicitations and ICMPv6 echo for our addresses
// are answered in place (the mbuf becomes the reply) and sent in one TX burst per poll; the rest
// goes to the exception path (exception_path.cpp) or is dropped, and counted.
#include <algorithm>
#include <array>
#include <cstring>

#include "dataplane/decode/checksum.hpp"
#include "dataplane/dpdk/dpdk_internal.hpp"

namespace callrec::dataplane {

namespace dpdk_detail {

/// ff02::1:ff00:0/104, the solicited-node multicast prefix (RFC 4291 2.7.1).
inline bool solicited_node(const std::uint8_t* a) {
  static constexpr std::uint8_t kPrefix[13] = {0xFF, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xFF};
  return std::memcmp(a, kPrefix, sizeof kPrefix) == 0;
}

}  // namespace dpdk_detail

void DpdkSource::Lcore::queue_host_tx(rte_mbuf* m, Counter kind) {
  if (!has_tx) {
    ++c[kDropped];
    ++c[kTxFailed];
    rte_pktmbuf_free(m);
    return;
  }
  if (host_tx_n == host_tx.size()) flush_host();
  host_tx_kind[host_tx_n] = kind;
  host_tx[host_tx_n++] = m;
}

void DpdkSource::Lcore::flush_host() {
  if (host_tx_n != 0) {
    const std::uint16_t sent = rte_eth_tx_burst(port_id, 0, host_tx.data(), static_cast<std::uint16_t>(host_tx_n));
    for (unsigned i = 0; i < sent; ++i) ++c[host_tx_kind[i]];
    for (unsigned i = sent; i < host_tx_n; ++i) {
      ++c[kDropped];
      ++c[kTxFailed];
      rte_pktmbuf_free(host_tx[i]);
    }
    host_tx_n = 0;
  }
  if (exc_tx_n != 0) {
    const std::uint16_t sent = rte_eth_tx_burst(tap_port, 0, exc_tx.data(), static_cast<std::uint16_t>(exc_tx_n));
    c[kExceptionPath] += sent;
    for (unsigned i = sent; i < exc_tx_n; ++i) {
      ++c[kDropped];
      ++c[kTxFailed];
      rte_pktmbuf_free(exc_tx[i]);
    }
    exc_tx_n = 0;
  }
}

/// ARP requests and ICMP echo requests for our addresses are answered in place (the mbuf
/// becomes the reply), IPv6 is host6()'s; anything else goes to the kernel or is dropped.
void DpdkSource::Lcore::host(rte_mbuf* m) {
  std::uint8_t* d = mbuf_data(m);
  const std::uint32_t len = m->data_len;
  if (len < 14) {
    ++c[kDropped];
    rte_pktmbuf_free(m);
    return;
  }
  std::uint16_t et = load_be16(d + 12);
  std::uint32_t l3 = 14;
  while ((et == 0x8100 || et == 0x88A8) && l3 < 22 && len >= l3 + 4) {
    et = load_be16(d + l3 + 2);
    l3 += 4;
  }
  auto ours = [this](std::uint32_t ip) {
    for (unsigned a = 0; a < n_addr; ++a) {
      if (addresses[a] == ip) return true;
    }
    return false;
  };
  if (et == 0x0806 && len >= l3 + 28) {
    std::uint8_t* arp = d + l3;
    const bool ethernet_ipv4 = load_be16(arp) == 1 && load_be16(arp + 2) == 0x0800 && arp[4] == 6 && arp[5] == 4;
    const std::uint32_t tpa = raw32(arp + 24);
    if (ethernet_ipv4 && load_be16(arp + 6) == 1 && ours(tpa)) {
      std::memcpy(d, arp + 8, 6);            // eth dst = requester
      std::memcpy(d + 6, mac.data(), 6);     // eth src = us
      store_be16(arp + 6, 2);                 // op = reply
      std::memcpy(arp + 18, arp + 8, 10);    // tha, tpa = sha, spa
      std::memcpy(arp + 8, mac.data(), 6);   // sha = us
      std::memcpy(arp + 14, &tpa, 4);        // spa = the address asked for
      queue_host_tx(m, kArpReplies);
      return;
    }
    queue_exception(m);  // replies, gratuitous ARP: the kernel keeps its own neighbour table
    return;
  }
  if (et == 0x0800 && len >= l3 + 20) {
    std::uint8_t* ip = d + l3;
    const std::uint32_t ihl = (ip[0] & 0x0Fu) * 4;
    const std::uint32_t tot = load_be16(ip + 2);
    const std::uint32_t dst = raw32(ip + 16);
    if (ip[9] == IPPROTO_ICMP && ihl >= 20 && tot >= ihl + 8 && l3 + tot <= len && ours(dst) &&
        (load_be16(ip + 6) & 0x3FFF) == 0 && ip[ihl] == 8 && ip[ihl + 1] == 0) {
      std::uint8_t* icmp = ip + ihl;
      std::memcpy(d, d + 6, 6);
      std::memcpy(d + 6, mac.data(), 6);
      std::memcpy(ip + 16, ip + 12, 4);  // dst = the pinger
      std::memcpy(ip + 12, &dst, 4);     // src = the address pinged
      ip[8] = 64;                        // TTL
      store_be16(ip + 10, 0);
      store_be16(ip + 10, decode::inet_checksum(ip, ihl));
      icmp[0] = 0;  // echo reply
      store_be16(icmp + 2, 0);
      store_be16(icmp + 2, decode::inet_checksum(icmp, tot - ihl));
      queue_host_tx(m, kIcmpReplies);
      return;
    }
  }
  if (et == 0x86DD) {
    host6(m, l3);
    return;
  }
  queue_exception(m);
}

/// IPv6 (RFC 4861, RFC 4443): a neighbour solicitation for one of our addresses becomes the
/// advertisement, an echo request to one of them the reply, in place. What fails validation is
/// dropped (icmp6_invalid). The rest goes to the kernel; without an exception path it is dropped,
/// and unicast to another address (or a solicitation for another target) is also not_ours.
/// No extension headers: ND and echo come without them (what has them goes to the kernel).
void DpdkSource::Lcore::host6(rte_mbuf* m, std::uint32_t l3) {
  std::uint8_t* d = mbuf_data(m);
  const std::uint32_t len = m->data_len;
  if (len < l3 + 40 || (d[l3] >> 4) != 6) {
    ++c[kDropped];
    rte_pktmbuf_free(m);
    return;
  }
  std::uint8_t* ip = d + l3;
  const std::uint32_t plen = load_be16(ip + 4);
  const std::uint8_t* src = ip + 8;
  const std::uint8_t* dst = ip + 24;
  const bool to_us = ours6(dst);
  const bool multicast = dst[0] == 0xFF;
  bool not_ours = !to_us && !multicast;
  // One segment holding the whole payload: replies are written in place (Ethernet padding after
  // the payload is allowed and trimmed).
  if (n_addr6 != 0 && ip[6] == IPPROTO_ICMPV6 && (to_us || multicast) && m->nb_segs == 1 && l3 + 40 + plen <= len) {
    std::uint8_t* icmp = ip + 40;
    if (plen >= 1 && icmp[0] == 135) {  // neighbour solicitation; RFC 4861 7.1.1 validity
      const bool dad = std::all_of(src, src + 16, [](std::uint8_t b) { return b == 0; });
      bool valid = ip[7] == 255 && plen >= 24 && icmp[1] == 0 &&
                   decode::inet6_checksum(src, dst, IPPROTO_ICMPV6, icmp, plen) == 0 &&
                   icmp[8] != 0xFF;  // target not multicast
      const std::uint8_t* slla = nullptr;
      for (std::uint32_t off = 24; valid && off < plen;) {
        const std::uint32_t olen = plen - off >= 2 ? icmp[off + 1] * 8U : 0;
        if (olen == 0 || olen > plen - off) {
          valid = false;  // every option has a length, and fits
        } else if (icmp[off] == 1) {
          if (olen != 8) valid = false;  // source link-layer address: 6 bytes on Ethernet
          slla = icmp + off + 2;
        }
        off += olen;
      }
      // DAD probe: to the solicited-node group, without a source link-layer address.
      if (dad && (!solicited_node(dst) || slla != nullptr)) valid = false;
      if (!valid) {
        ++c[kIcmp6Invalid];
        ++c[kDropped];
        rte_pktmbuf_free(m);
        return;
      }
      std::array<std::uint8_t, 16> target;
      std::memcpy(target.data(), icmp + 8, 16);
      if (ours6(target.data())) {
        // Solicited + Override to the soliciter (its link-layer address option, else the frame's
        // source); a DAD probe gets Override only, to all-nodes (RFC 4861 7.2.4).
        static constexpr std::uint8_t kAllNodes[16] = {0xFF, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01};
        static constexpr std::uint8_t kAllNodesMac[6] = {0x33, 0x33, 0, 0, 0, 0x01};
        std::array<std::uint8_t, 6> to_mac;
        std::memcpy(to_mac.data(), dad ? kAllNodesMac : (slla != nullptr ? slla : d + 6), 6);
        std::array<std::uint8_t, 16> to_ip;
        std::memcpy(to_ip.data(), dad ? kAllNodes : src, 16);
        const std::uint32_t want = l3 + 40 + 32;  // NA: 24 bytes + target link-layer address option
        if (want > len && rte_pktmbuf_append(m, static_cast<std::uint16_t>(want - len)) == nullptr) {
          ++c[kDropped];
          ++c[kTxFailed];
          rte_pktmbuf_free(m);
          return;
        }
        if (want < len) rte_pktmbuf_trim(m, static_cast<std::uint16_t>(len - want));
        std::memcpy(d, to_mac.data(), 6);
        std::memcpy(d + 6, mac.data(), 6);
        ip[0] = 0x60;  // version 6, traffic class 0, flow label 0
        ip[1] = ip[2] = ip[3] = 0;
        store_be16(ip + 4, 32);
        ip[6] = IPPROTO_ICMPV6;
        ip[7] = 255;  // hop limit: ND must come from the link
        std::memcpy(ip + 8, target.data(), 16);
        std::memcpy(ip + 24, to_ip.data(), 16);
        icmp[0] = 136;
        icmp[1] = 0;
        store_be16(icmp + 2, 0);
        icmp[4] = dad ? 0x20 : 0x60;  // R=0, S, O=1
        icmp[5] = icmp[6] = icmp[7] = 0;
        std::memcpy(icmp + 8, target.data(), 16);
        icmp[24] = 2;  // target link-layer address option, 8 bytes
        icmp[25] = 1;
        std::memcpy(icmp + 26, mac.data(), 6);
        store_be16(icmp + 2, decode::inet6_checksum(ip + 8, ip + 24, IPPROTO_ICMPV6, icmp, 32));
        queue_host_tx(m, kNdReplies);
        return;
      }
      not_ours = true;  // a valid solicitation for someone else's address
    } else if (to_us && plen >= 1 && icmp[0] == 128) {  // echo request
      if (plen < 8 || icmp[1] != 0 || decode::inet6_checksum(src, dst, IPPROTO_ICMPV6, icmp, plen) != 0) {
        ++c[kIcmp6Invalid];
        ++c[kDropped];
        rte_pktmbuf_free(m);
        return;
      }
      if (l3 + 40 + plen < len) rte_pktmbuf_trim(m, static_cast<std::uint16_t>(len - (l3 + 40 + plen)));
      std::array<std::uint8_t, 16> pinged;
      std::memcpy(pinged.data(), dst, 16);
      std::memcpy(d, d + 6, 6);
      std::memcpy(d + 6, mac.data(), 6);
      std::memcpy(ip + 24, ip + 8, 16);         // dst = the pinger
      std::memcpy(ip + 8, pinged.data(), 16);   // src = the address pinged
      ip[7] = 64;
      icmp[0] = 129;  // echo reply: identifier, sequence number and data stay
      store_be16(icmp + 2, 0);
      store_be16(icmp + 2, decode::inet6_checksum(ip + 8, ip + 24, IPPROTO_ICMPV6, icmp, plen));
      queue_host_tx(m, kIcmp6Replies);
      return;
    }
  }
  if (tap_port == kNoPort && not_ours) ++c[kNotOurs];
  queue_exception(m);
}

}  // namespace callrec::dataplane
