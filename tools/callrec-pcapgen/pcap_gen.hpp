#pragma once
// Generates a pcap of N concurrent G.711 RTP streams (one packet per stream every ptime,
// 214-byte frames for 160-byte payloads: Ethernet 14 + IPv4 20 + UDP 8 + RTP 12 + 160), in the
// order they would arrive on the wire: every stream has a random phase within the ptime, and
// each 20 ms tick emits the streams in phase order. Optional noise: copies from a wrong source
// (strays) and packets to a port no stream uses (unknown).
//
// Header-only so that tools/callrec-pcapgen, tests/dataplane and bench/ share one generator
// without a library of its own; it depends on the standard library, POSIX and the header-only
// dataplane/decode/checksum.hpp (the Internet checksum and byte order).
// Single-threaded; no global state.
#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "dataplane/decode/checksum.hpp"

namespace callrec::pcapgen {

struct Options {
  unsigned streams = 1000;
  unsigned packets_per_stream = 100;
  std::uint32_t dst_ip = 0x0A000001;    ///< host order; first destination address (10.0.0.1)
  unsigned dst_ips = 0;                 ///< addresses used (dst_ip, dst_ip+1 ...); 0: as needed
  std::uint16_t port_lo = 16384;        ///< first destination port
  std::uint16_t port_hi = 65534;        ///< last usable destination port
  std::uint16_t port_step = 2;          ///< RTP ports are even
  std::uint32_t src_ip = 0xAC100001;    ///< host order; stream i sends from src_ip + i (172.16.0.1)
  std::uint16_t src_port_lo = 20000;    ///< stream i sends from src_port_lo + 2 * (i % 20000)
  std::array<std::uint8_t, 6> dst_mac{0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
  std::array<std::uint8_t, 6> src_mac{0x02, 0x00, 0x00, 0x00, 0x00, 0x02};
  std::uint8_t payload_type = 8;        ///< 8 = PCMA, 0 = PCMU
  unsigned payload_bytes = 160;
  unsigned ptime_ms = 20;
  std::uint16_t vlan = 0;               ///< 802.1Q tag when != 0
  unsigned stray_every = 0;             ///< after every Nth RTP packet, one from a wrong source
  unsigned unknown_every = 0;           ///< after every Nth RTP packet, one to unknown_port
  std::uint16_t unknown_port = 9;
  std::uint64_t seed = 1;
};

struct Stream {
  std::uint32_t id = 0;                 ///< 1-based stream id
  std::uint32_t dst_ip = 0;             ///< host order
  unsigned dst_index = 0;               ///< dst_ip - Options::dst_ip
  std::uint16_t dst_port = 0;
  std::uint32_t src_ip = 0;             ///< host order
  std::uint16_t src_port = 0;
  std::uint32_t ssrc = 0;
  std::uint16_t first_seq = 0;
  std::uint32_t first_ts = 0;
  std::uint32_t phase_us = 0;
  std::uint64_t packets = 0;            ///< RTP packets of this stream in the file
  std::uint64_t payload_bytes = 0;      ///< UDP payload (RTP header + payload) bytes
};

struct Summary {
  std::uint64_t frames = 0;
  std::uint64_t rtp = 0;
  std::uint64_t stray = 0;
  std::uint64_t unknown = 0;
  std::uint64_t file_bytes = 0;
};

/// splitmix64: deterministic, seedable, good enough for phases and SSRCs.
struct Rng {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
};

inline std::string ip_to_string(std::uint32_t host_order) {
  in_addr a{};
  a.s_addr = htonl(host_order);
  char buf[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

inline bool parse_ip(const std::string& s, std::uint32_t& host_order) {
  in_addr a{};
  if (inet_pton(AF_INET, s.c_str(), &a) != 1) return false;
  host_order = ntohl(a.s_addr);
  return true;
}

/// Payload byte j of packet `seq` of stream `id` (a pattern the tests can recompute).
inline std::uint8_t payload_byte(std::uint32_t id, std::uint16_t seq, unsigned j) {
  return static_cast<std::uint8_t>((id * 31U + seq * 7U + j) & 0xFFU);
}

/// Assigns addresses, ports, SSRCs and phases. Returns an error message, empty when fine.
inline std::string plan(const Options& o, std::vector<Stream>& out) {
  out.clear();
  if (o.streams == 0) return "--streams must be at least 1";
  if (o.packets_per_stream == 0) return "--packets-per-stream must be at least 1";
  if (o.port_step == 0 || o.port_hi < o.port_lo) return "bad port range";
  if (o.payload_bytes == 0 || o.payload_bytes > 1400) return "--payload-bytes must be 1..1400";
  if (o.ptime_ms == 0) return "--ptime must be at least 1 ms";
  const unsigned per_ip = (o.port_hi - o.port_lo) / o.port_step + 1U;
  const unsigned need = (o.streams + per_ip - 1) / per_ip;
  if (o.dst_ips != 0 && o.dst_ips < need) {
    return std::to_string(o.streams) + " streams need " + std::to_string(need) + " destination addresses with " +
           std::to_string(per_ip) + " ports each";
  }
  if (o.unknown_every != 0 && o.unknown_port >= o.port_lo && o.unknown_port <= o.port_hi &&
      (o.unknown_port - o.port_lo) % o.port_step == 0) {
    return "--unknown-port lies in the streams' port range";
  }
  Rng rng{o.seed};
  out.resize(o.streams);
  for (unsigned i = 0; i < o.streams; ++i) {
    Stream& s = out[i];
    s.id = i + 1;
    s.dst_index = i / per_ip;
    s.dst_ip = o.dst_ip + s.dst_index;
    s.dst_port = static_cast<std::uint16_t>(o.port_lo + (i % per_ip) * o.port_step);
    s.src_ip = o.src_ip + i;
    s.src_port = static_cast<std::uint16_t>(o.src_port_lo + 2U * (i % 20000U));
    s.ssrc = static_cast<std::uint32_t>(rng.next());
    s.first_seq = static_cast<std::uint16_t>(rng.next());
    s.first_ts = static_cast<std::uint32_t>(rng.next());
    s.phase_us = static_cast<std::uint32_t>(rng.next() % (o.ptime_ms * 1000ULL));
    s.packets = o.packets_per_stream;
    s.payload_bytes = std::uint64_t{o.packets_per_stream} * (12U + o.payload_bytes);
  }
  return {};
}

namespace detail {

using dataplane::decode::inet_checksum;
using dataplane::decode::inet_sum;
using dataplane::decode::store_be16;
using dataplane::decode::store_be32;

/// Builds one Ethernet/[VLAN]/IPv4/UDP frame around `udp_payload` into f; returns its length.
inline std::size_t build_frame(const Options& o, std::uint32_t src_ip, std::uint16_t src_port, std::uint32_t dst_ip,
                               std::uint16_t dst_port, const std::uint8_t* udp_payload, std::size_t plen,
                               std::uint16_t ip_id, std::uint8_t* f) {
  std::size_t off = 0;
  std::memcpy(f, o.dst_mac.data(), 6);
  std::memcpy(f + 6, o.src_mac.data(), 6);
  off = 12;
  if (o.vlan != 0) {
    store_be16(f + off, 0x8100);
    store_be16(f + off + 2, o.vlan);
    off += 4;
  }
  store_be16(f + off, 0x0800);
  off += 2;
  std::uint8_t* ip = f + off;
  const std::size_t udp_len = 8 + plen;
  ip[0] = 0x45;
  ip[1] = 0xB8;  // DSCP EF, as phones mark RTP
  store_be16(ip + 2, static_cast<std::uint16_t>(20 + udp_len));
  store_be16(ip + 4, ip_id);
  store_be16(ip + 6, 0x4000);  // DF
  ip[8] = 64;
  ip[9] = 17;
  store_be16(ip + 10, 0);
  store_be32(ip + 12, src_ip);
  store_be32(ip + 16, dst_ip);
  store_be16(ip + 10, inet_checksum(ip, 20));
  std::uint8_t* udp = ip + 20;
  store_be16(udp, src_port);
  store_be16(udp + 2, dst_port);
  store_be16(udp + 4, static_cast<std::uint16_t>(udp_len));
  store_be16(udp + 6, 0);
  std::memcpy(udp + 8, udp_payload, plen);
  std::uint32_t sum = inet_sum(0, ip + 12, 8) + 17U + static_cast<std::uint32_t>(udp_len);
  sum = inet_sum(sum, udp, udp_len);
  std::uint16_t c = inet_checksum(sum);
  store_be16(udp + 6, c == 0 ? 0xFFFF : c);
  return off + 20 + udp_len;
}

}  // namespace detail

/// Writes the pcap. progress(frames_written) is called about every million frames.
/// Returns an error message, empty when fine.
inline std::string write_pcap(const std::string& path, const Options& o, const std::vector<Stream>& streams,
                              Summary& sum, const std::function<void(std::uint64_t)>& progress = {}) {
  sum = Summary{};
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return path + ": " + std::strerror(errno);
  std::vector<char> iobuf(4 << 20);
  std::setvbuf(f, iobuf.data(), _IOFBF, iobuf.size());
  bool ok = true;
  auto put = [&](const void* p, std::size_t n) {
    if (ok && std::fwrite(p, 1, n, f) != n) ok = false;
    sum.file_bytes += n;
  };
  struct {
    std::uint32_t magic = 0xA1B2C3D4;
    std::uint16_t major = 2;
    std::uint16_t minor = 4;
    std::int32_t zone = 0;
    std::uint32_t sigfigs = 0;
    std::uint32_t snaplen = 65535;
    std::uint32_t linktype = 1;  // Ethernet
  } hdr;
  put(&hdr, sizeof hdr);

  std::vector<std::uint32_t> order(streams.size());
  std::iota(order.begin(), order.end(), 0U);
  std::sort(order.begin(), order.end(),
            [&](std::uint32_t a, std::uint32_t b) { return streams[a].phase_us < streams[b].phase_us; });
  std::vector<std::uint8_t> rtp(12 + o.payload_bytes);
  std::array<std::uint8_t, 2048> frame{};
  const std::uint64_t t0_us = 1'700'000'000ULL * 1'000'000ULL;
  std::uint16_t ip_id = 0;
  std::uint64_t next_progress = 1'000'000;
  auto emit = [&](std::uint64_t t_us, std::size_t len) {
    const std::uint32_t rec[4] = {static_cast<std::uint32_t>(t_us / 1'000'000), static_cast<std::uint32_t>(t_us % 1'000'000),
                                  static_cast<std::uint32_t>(len), static_cast<std::uint32_t>(len)};
    put(rec, sizeof rec);
    put(frame.data(), len);
    ++sum.frames;
    if (progress && sum.frames >= next_progress) {
      progress(sum.frames);
      next_progress += 1'000'000;
    }
  };
  for (unsigned k = 0; k < o.packets_per_stream && ok; ++k) {
    for (const std::uint32_t idx : order) {
      const Stream& s = streams[idx];
      const auto seq = static_cast<std::uint16_t>(s.first_seq + k);
      const std::uint32_t ts = s.first_ts + k * o.payload_bytes;
      rtp[0] = 0x80;
      rtp[1] = static_cast<std::uint8_t>((k == 0 ? 0x80 : 0) | (o.payload_type & 0x7F));
      detail::store_be16(&rtp[2], seq);
      detail::store_be32(&rtp[4], ts);
      detail::store_be32(&rtp[8], s.ssrc);
      for (unsigned j = 0; j < o.payload_bytes; ++j) rtp[12 + j] = payload_byte(s.id, seq, j);
      const std::uint64_t t_us = t0_us + std::uint64_t{k} * o.ptime_ms * 1000ULL + s.phase_us;
      emit(t_us, detail::build_frame(o, s.src_ip, s.src_port, s.dst_ip, s.dst_port, rtp.data(), rtp.size(), ip_id++,
                                     frame.data()));
      ++sum.rtp;
      if (o.stray_every != 0 && sum.rtp % o.stray_every == 0) {
        const std::uint32_t stray_ip = 0xC6336400U + 1U + static_cast<std::uint32_t>(sum.rtp % 250);  // 198.51.100.x
        emit(t_us, detail::build_frame(o, stray_ip, s.src_port, s.dst_ip, s.dst_port, rtp.data(), rtp.size(), ip_id++,
                                       frame.data()));
        ++sum.stray;
      }
      if (o.unknown_every != 0 && sum.rtp % o.unknown_every == 0) {
        emit(t_us, detail::build_frame(o, s.src_ip, s.src_port, s.dst_ip, o.unknown_port, rtp.data(), rtp.size(),
                                       ip_id++, frame.data()));
        ++sum.unknown;
      }
    }
  }
  if (std::fclose(f) != 0) ok = false;
  if (!ok) return path + ": write failed: " + std::strerror(errno);
  return {};
}

/// The sidecar flow list: comment lines, then one stream per line:
/// id dst_ip dst_port src_ip src_port ssrc packets payload_bytes dst_index
inline std::string write_flow_list(const std::string& path, const std::vector<Stream>& streams, const Summary& sum) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return path + ": " + std::strerror(errno);
  std::fprintf(f, "# callrec-pcapgen flows: frames=%llu rtp=%llu stray=%llu unknown=%llu streams=%zu\n",
               static_cast<unsigned long long>(sum.frames), static_cast<unsigned long long>(sum.rtp),
               static_cast<unsigned long long>(sum.stray), static_cast<unsigned long long>(sum.unknown), streams.size());
  std::fprintf(f, "# id dst_ip dst_port src_ip src_port ssrc packets payload_bytes dst_index\n");
  for (const Stream& s : streams) {
    std::fprintf(f, "%u %s %u %s %u 0x%08x %llu %llu %u\n", s.id, ip_to_string(s.dst_ip).c_str(), s.dst_port,
                 ip_to_string(s.src_ip).c_str(), s.src_port, s.ssrc, static_cast<unsigned long long>(s.packets),
                 static_cast<unsigned long long>(s.payload_bytes), s.dst_index);
  }
  const bool ok = std::ferror(f) == 0;
  if (std::fclose(f) != 0 || !ok) return path + ": write failed";
  return {};
}

/// Reads a flow list written by write_flow_list (summary from the first comment line).
inline std::string read_flow_list(const std::string& path, std::vector<Stream>& streams, Summary& sum) {
  streams.clear();
  sum = Summary{};
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return path + ": " + std::strerror(errno);
  char line[512];
  unsigned lineno = 0;
  std::string err;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    ++lineno;
    if (line[0] == '#') {
      unsigned long long fr = 0;
      unsigned long long rt = 0;
      unsigned long long st = 0;
      unsigned long long un = 0;
      if (std::sscanf(line, "# callrec-pcapgen flows: frames=%llu rtp=%llu stray=%llu unknown=%llu", &fr, &rt, &st, &un) ==
          4) {
        sum.frames = fr;
        sum.rtp = rt;
        sum.stray = st;
        sum.unknown = un;
      }
      continue;
    }
    Stream s;
    char dst[32] = {};
    char src[32] = {};
    unsigned dport = 0;
    unsigned sport = 0;
    unsigned long long pk = 0;
    unsigned long long by = 0;
    if (std::sscanf(line, "%u %31s %u %31s %u %x %llu %llu %u", &s.id, dst, &dport, src, &sport, &s.ssrc, &pk, &by,
                    &s.dst_index) != 9 ||
        !parse_ip(dst, s.dst_ip) || !parse_ip(src, s.src_ip) || dport > 65535 || sport > 65535) {
      err = path + ":" + std::to_string(lineno) + ": malformed flow line";
      break;
    }
    s.dst_port = static_cast<std::uint16_t>(dport);
    s.src_port = static_cast<std::uint16_t>(sport);
    s.packets = pk;
    s.payload_bytes = by;
    streams.push_back(s);
  }
  std::fclose(f);
  return err;
}

}  // namespace callrec::pcapgen
