#pragma once
// The hand-off from one dataplane RX thread to one writer thread: a single-producer /
// single-consumer ring of variable-length records [header][packet bytes], 8-byte aligned.
// A record is either a packet of a stream or an in-band control mark (the RX thread's
// "this stream's flow is gone" mark, so a writer closes a stream only after its last packet).
//
// A packet record either carries the packet's bytes (push: a copy) or, for zero-copy producers,
// a pointer to bytes the producer keeps alive (push_ref). The consumer sees both the same way:
// consume()/consume_bulk() present a reference record as a kPacket record whose data points
// to the producer's memory. The producer may reuse that memory once released_position() has
// reached the position_after() it noted at push time: the consumer releases ring space only
// after its callback returned, so it no longer reads the referenced bytes either.
//
// Producer: exactly one thread (an RX core). Consumer: exactly one thread (a writer).
// head_ (producer) and tail_ (consumer) live on separate cache lines; each side caches the
// other's index and re-reads it (acquire) only when the cached value says full/empty.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <vector>

namespace callrec::fileio {

using StreamId = std::uint32_t;

enum class RecordKind : std::uint16_t {
  kPacket = 0,       ///< packet bytes follow the header
  kEndOfStream = 1,  ///< no bytes
  kPacketRef = 2,    ///< a PacketRef follows (producer side only: consumers see kPacket)
};

/// Payload of a kPacketRef record: the packet's bytes stay in the producer's memory.
struct PacketRef {
  const std::byte* data;
  std::uint32_t len;
  std::uint32_t reserved;
};
static_assert(sizeof(PacketRef) == 16);

struct alignas(8) RingRecordHeader {
  std::uint32_t stream;
  std::uint16_t kind;
  std::uint16_t len;        ///< payload bytes following the header
  std::uint64_t rx_ns;      ///< receive time, CLOCK_MONOTONIC ns
};
static_assert(sizeof(RingRecordHeader) == 16);

/// One record handed out by PacketRing::consume_bulk(): a copy of its header, and its bytes,
/// which stay in the ring (valid until the callback returns).
struct RingRecord {
  RingRecordHeader h;
  const std::byte* data;
  [[nodiscard]] std::span<const std::byte> bytes() const { return {data, h.len}; }
};

class PacketRing {
 public:
  /// capacity_bytes is rounded up to a power of two (>= 4096).
  explicit PacketRing(std::size_t capacity_bytes);
  PacketRing(const PacketRing&) = delete;
  PacketRing& operator=(const PacketRing&) = delete;

  // ---- producer side -------------------------------------------------------------------
  /// Copies one record in. False when the ring is full (the caller counts a ring-full drop).
  /// Records become visible to the consumer only at publish().
  bool push(StreamId stream, RecordKind kind, std::uint64_t rx_ns, std::span<const std::byte> data);
  /// Zero-copy push: the record points at `data`, which the producer must keep unchanged until
  /// released_position() >= position_after() read right after this call. False when full.
  bool push_ref(StreamId stream, std::uint64_t rx_ns, const std::byte* data, std::uint16_t len);
  /// Makes every pushed record visible (one release store per burst).
  void publish();
  /// Producer: the ring position just past the last record pushed (published or not).
  [[nodiscard]] std::uint64_t position_after() const { return head_local_; }
  /// Producer (or any thread): every record that ends at or before this position has been
  /// consumed and its callback has returned (acquire: the consumer's reads happened before).
  [[nodiscard]] std::uint64_t released_position() const { return tail_.load(std::memory_order_acquire); }

  // ---- consumer side -------------------------------------------------------------------
  /// Calls fn(const RingRecordHeader&, std::span<const std::byte>) for up to max records,
  /// then releases their space (one release store). Returns the number consumed.
  template <typename Fn>
  std::size_t consume(Fn&& fn, std::size_t max = SIZE_MAX);
  /// Gathers up to out.size() records into out, calls fn(std::span<const RingRecord>) once
  /// with them (skipped when there are none), then releases their space (one release store).
  /// For consumers that work on a burst in stages (prefetch, then process). Returns the count.
  template <typename Fn>
  std::size_t consume_bulk(std::span<RingRecord> out, Fn&& fn);

  [[nodiscard]] std::size_t capacity() const { return mask_ + 1; }
  /// Approximate bytes in use (either side may call it; for statistics).
  [[nodiscard]] std::size_t used_approx() const;

 private:
  static constexpr std::size_t kAlign = 8;
  static constexpr std::size_t kCacheLine = 64;
  /// A reference record seen by the consumer: becomes a kPacket record on the referenced bytes.
  static void resolve_ref(RingRecordHeader& h, const std::byte*& data) {
    PacketRef ref;
    std::memcpy(&ref, data, sizeof ref);
    h.kind = static_cast<std::uint16_t>(RecordKind::kPacket);
    h.len = static_cast<std::uint16_t>(ref.len);
    data = ref.data;
  }
  std::unique_ptr<std::byte[]> buf_;
  std::size_t mask_;
  // Each index the other side reads (head_, tail_) has a line of its own, and so has each
  // side's private state: with head_local_ beside head_, every push wrote the line an idle
  // consumer was polling, and the load of head_local_ took 80% of push's samples (a DPDK
  // mirror lane against a spinning consumer, bench/RESULTS.md).
  // producer-owned
  alignas(kCacheLine) std::atomic<std::uint64_t> head_{0};  ///< published write position
  alignas(kCacheLine) std::uint64_t head_local_ = 0;       ///< unpublished write position
  std::uint64_t tail_cache_ = 0;                           ///< producer's view of tail_
  // consumer-owned
  alignas(kCacheLine) std::atomic<std::uint64_t> tail_{0};  ///< released read position
  alignas(kCacheLine) std::uint64_t head_cache_ = 0;       ///< consumer's view of head_
  [[maybe_unused]] alignas(kCacheLine) char pad_[1] = {};  ///< keeps neighbours off the consumer line
};

template <typename Fn>
std::size_t PacketRing::consume(Fn&& fn, std::size_t max) {
  std::uint64_t tail = tail_.load(std::memory_order_relaxed);
  if (tail == head_cache_) {
    // acquire: pairs with publish()'s release; the record bytes below are visible.
    head_cache_ = head_.load(std::memory_order_acquire);
    if (tail == head_cache_) return 0;
  }
  std::size_t n = 0;
  while (tail != head_cache_ && n < max) {
    const std::size_t off = tail & mask_;
    RingRecordHeader h;
    std::memcpy(&h, buf_.get() + off, sizeof h);
    if (h.kind == 0xFFFF) {  // wrap marker: the record continues at offset 0
      tail += capacity() - off;
      continue;
    }
    const std::byte* data = buf_.get() + off + sizeof h;
    tail += (sizeof h + h.len + kAlign - 1) & ~(kAlign - 1);
    if (h.kind == static_cast<std::uint16_t>(RecordKind::kPacketRef)) resolve_ref(h, data);
    fn(static_cast<const RingRecordHeader&>(h), std::span<const std::byte>(data, h.len));
    ++n;
  }
  // release: the producer may reuse the space only after we are done reading it.
  tail_.store(tail, std::memory_order_release);
  return n;
}

template <typename Fn>
std::size_t PacketRing::consume_bulk(std::span<RingRecord> out, Fn&& fn) {
  std::uint64_t tail = tail_.load(std::memory_order_relaxed);
  if (tail == head_cache_) {
    // acquire: pairs with publish()'s release; the record bytes below are visible.
    head_cache_ = head_.load(std::memory_order_acquire);
    if (tail == head_cache_) return 0;
  }
  // The header walk is a dependent chain (each length gives the next offset), and a 32 MiB
  // ring is colder than the caches: prefetch ~4 records ahead of the walk, inside [tail, head).
  constexpr std::uint64_t kAhead = 768;
  std::size_t n = 0;
  while (tail != head_cache_ && n < out.size()) {
    const std::size_t off = tail & mask_;
    if (tail + kAhead < head_cache_) __builtin_prefetch(buf_.get() + ((off + kAhead) & mask_));
    RingRecord& r = out[n];
    std::memcpy(&r.h, buf_.get() + off, sizeof r.h);
    if (r.h.kind == 0xFFFF) {  // wrap marker: the record continues at offset 0
      tail += capacity() - off;
      continue;
    }
    r.data = buf_.get() + off + sizeof r.h;
    tail += (sizeof r.h + r.h.len + kAlign - 1) & ~(kAlign - 1);
    if (r.h.kind == static_cast<std::uint16_t>(RecordKind::kPacketRef)) resolve_ref(r.h, r.data);
    ++n;
  }
  if (n != 0) fn(std::span<const RingRecord>(out.data(), n));
  // release: the producer may reuse the space only after we are done reading it.
  tail_.store(tail, std::memory_order_release);
  return n;
}

/// The rings between P producers (RX threads) and W writers: ring(p, w). Stream s is owned by
/// writer writer_for(s). Built once before the threads start; never resized.
class RingMatrix {
 public:
  RingMatrix(unsigned producers, unsigned writers, std::size_t ring_bytes);
  [[nodiscard]] unsigned producers() const { return producers_; }
  [[nodiscard]] unsigned writers() const { return writers_; }
  [[nodiscard]] unsigned writer_for(StreamId s) const { return s % writers_; }
  PacketRing& ring(unsigned producer, unsigned writer) { return *rings_[producer * writers_ + writer]; }

 private:
  unsigned producers_;
  unsigned writers_;
  std::vector<std::unique_ptr<PacketRing>> rings_;
};

}  // namespace callrec::fileio
