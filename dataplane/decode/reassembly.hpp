#pragma once
// Per-lane reassembly state: IP fragments (IPv4 and IPv6) and TCP byte streams (SIP over TCP).
// Both are bounded in entries, bytes and (packet) time, evict oldest first, tolerate
// duplicates, and count every drop by cause. They allocate, but only per fragmented datagram
// or per TCP connection carrying SIP, never per RTP packet. One lane owns each instance.
#include <cstdint>
#include <list>
#include <span>
#include <unordered_map>
#include <vector>

#include "dataplane/decode/decode.hpp"

namespace callrec::dataplane::decode {

#define CALLREC_REASSEMBLY_COUNTERS(_)                                                          \
  _(frag_reassembled, "IP datagrams reassembled from fragments")                               \
  _(frag_timeout, "incomplete IP datagrams dropped after the reassembly timeout")              \
  _(frag_evicted, "incomplete IP datagrams dropped to stay within the fragment caps")         \
  _(frag_overlap, "IP datagrams dropped: fragments overlapping with different bytes")         \
  _(frag_too_big, "IP fragments beyond 65,535 bytes or past the datagram's end")             \
  _(frag_duplicate, "IP fragments seen twice (tolerated)")                                     \
  _(tcp_streams, "TCP streams followed")                                                      \
  _(tcp_evicted, "TCP streams dropped to stay within the stream cap")                         \
  _(tcp_timeout, "TCP streams dropped after idling")                                          \
  _(tcp_gaps, "TCP streams that lost bytes (a hole never filled, or a buffer overflow)")      \
  _(tcp_out_of_order, "TCP segments held until the bytes before them arrived")                \
  _(tcp_retransmits, "TCP segments whose bytes were already seen")

enum ReassemblyCounter : unsigned {
#define CALLREC_REASM_ENUM(name, help) kR_##name,
  CALLREC_REASSEMBLY_COUNTERS(CALLREC_REASM_ENUM)
#undef CALLREC_REASM_ENUM
      kReassemblyCounterCount
};
inline constexpr std::array<CounterInfo, kReassemblyCounterCount> kReassemblyCounterInfo = {{
#define CALLREC_REASM_INFO(name, help) {#name, help},
    CALLREC_REASSEMBLY_COUNTERS(CALLREC_REASM_INFO)
#undef CALLREC_REASM_INFO
}};
struct ReassemblyCounters {
  std::array<std::uint64_t, kReassemblyCounterCount> v{};
  void inc(ReassemblyCounter c, std::uint64_t n = 1) { v[c] += n; }
  [[nodiscard]] std::uint64_t operator[](ReassemblyCounter c) const { return v[c]; }
};

struct ReassemblyLimits {
  std::size_t max_datagrams = 4096;        ///< incomplete IP datagrams held
  std::size_t max_fragment_bytes = 16u << 20;
  std::uint64_t fragment_timeout_ns = 30'000'000'000ull;
  std::size_t max_tcp_streams = 4096;
  std::size_t max_tcp_buffer = 128u << 10;  ///< bytes held per stream (in order + out of order)
  std::uint64_t tcp_timeout_ns = 300'000'000'000ull;
};

class IpReassembler {
 public:
  IpReassembler(const ReassemblyLimits& lim, ReassemblyCounters& c) : lim_(lim), c_(c) {}
  /// A fragment (decode Result::kFragment). When it completes its datagram, returns the whole
  /// IP payload (valid until the next call); otherwise an empty span.
  std::span<const std::byte> add(const Packet& p, std::uint64_t now_ns);
  /// Drops datagrams older than the timeout (call about once per burst or per second).
  void expire(std::uint64_t now_ns);
  [[nodiscard]] std::size_t pending() const { return map_.size(); }
  [[nodiscard]] std::size_t bytes() const { return bytes_; }

 private:
  struct Key {
    IpAddr src, dst;
    std::uint32_t id;
    std::uint8_t proto;
    friend bool operator==(const Key&, const Key&) = default;
  };
  struct KeyHash {
    std::size_t operator()(const Key& k) const noexcept {
      return EndpointHash{}(Endpoint{k.src, static_cast<std::uint16_t>(k.id)}) * 31 ^
             EndpointHash{}(Endpoint{k.dst, static_cast<std::uint16_t>((k.id >> 16) ^ k.proto)});
    }
  };
  struct Entry {
    std::vector<std::byte> data;
    std::vector<std::pair<std::uint32_t, std::uint32_t>> have;  ///< sorted, merged [begin, end)
    std::uint32_t total = 0;  ///< known once the last fragment (no MF) arrived
    std::uint64_t created_ns = 0;
    std::list<Key>::iterator age;
  };
  void drop(std::unordered_map<Key, Entry, KeyHash>::iterator it);
  ReassemblyLimits lim_;
  ReassemblyCounters& c_;
  std::unordered_map<Key, Entry, KeyHash> map_;
  std::list<Key> ages_;  ///< oldest first
  std::size_t bytes_ = 0;
  std::vector<std::byte> done_;
};

/// TCP byte streams, one per direction of a connection. The caller consumes complete messages
/// from the front of a stream's buffer; a stream joined mid-way starts at the first segment seen
/// (the framer finds the next message start itself).
class TcpReassembler {
 public:
  struct Stream {
    std::vector<std::byte> buf;  ///< in-order bytes not yet consumed
    bool lost = false;           ///< bytes were skipped before buf (the framer must resync)
   private:
    friend class TcpReassembler;
    std::uint32_t next_seq = 0;
    std::uint64_t last_ns = 0;
    std::vector<std::pair<std::uint32_t, std::vector<std::byte>>> ooo;  ///< held segments
    std::size_t ooo_bytes = 0;
    std::list<std::pair<Endpoint, Endpoint>>::iterator age;
  };
  TcpReassembler(const ReassemblyLimits& lim, ReassemblyCounters& c) : lim_(lim), c_(c) {}
  /// A TCP segment (decode Result::kTcp). Returns the stream when it has new in-order bytes
  /// (the caller consumes from buf), nullptr otherwise. FIN/RST end the stream after its bytes.
  /// may_create == false: a segment of a stream not followed yet is ignored (the lane follows
  /// only streams whose first payload it recognised).
  Stream* add(const Packet& p, std::uint64_t now_ns, bool may_create = true);
  /// Removes n bytes from the front of the stream's buffer.
  static void consume(Stream& s, std::size_t n);
  void expire(std::uint64_t now_ns);
  [[nodiscard]] std::size_t streams() const { return map_.size(); }

 private:
  using Key = std::pair<Endpoint, Endpoint>;  // src, dst
  struct KeyHash {
    std::size_t operator()(const Key& k) const noexcept {
      return EndpointHash{}(k.first) * 1000003u ^ EndpointHash{}(k.second);
    }
  };
  void append(Stream& s, std::span<const std::byte> data);
  ReassemblyLimits lim_;
  ReassemblyCounters& c_;
  std::unordered_map<Key, Stream, KeyHash> map_;
  std::list<Key> ages_;  ///< least recently used first
  std::vector<Key> closing_;  ///< streams that saw FIN/RST: erased at the next add()
};

}  // namespace callrec::dataplane::decode
