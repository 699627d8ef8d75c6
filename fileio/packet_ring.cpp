#include "fileio/packet_ring.hpp"

#include <bit>

namespace callrec::fileio {

namespace {
constexpr std::uint16_t kWrapMarker = 0xFFFF;
}

PacketRing::PacketRing(std::size_t capacity_bytes) {
  std::size_t cap = std::bit_ceil(capacity_bytes < 4096 ? std::size_t{4096} : capacity_bytes);
  // + one header of slack: a wrap marker written in the last 8 bytes stays inside the buffer.
  buf_ = std::make_unique<std::byte[]>(cap + sizeof(RingRecordHeader));
  mask_ = cap - 1;
}

bool PacketRing::push(StreamId stream, RecordKind kind, std::uint64_t rx_ns,
                      std::span<const std::byte> data) {
  const std::size_t need = (sizeof(RingRecordHeader) + data.size() + kAlign - 1) & ~(kAlign - 1);
  const std::size_t cap = capacity();
  if (data.size() > 0xFFFF || need > cap / 2) return false;
  std::size_t off = head_local_ & mask_;
  const std::size_t to_end = cap - off;
  const std::size_t total = need <= to_end ? need : to_end + need;  // wrap wastes the tail end
  if (head_local_ + total - tail_cache_ > cap) {
    // acquire: pairs with consume()'s release; the consumer is done with that space.
    tail_cache_ = tail_.load(std::memory_order_acquire);
    if (head_local_ + total - tail_cache_ > cap) return false;
  }
  if (need > to_end) {
    RingRecordHeader wrap{0, kWrapMarker, 0, 0};
    std::memcpy(buf_.get() + off, &wrap, sizeof wrap);
    head_local_ += to_end;
    off = 0;
  }
  RingRecordHeader h{stream, static_cast<std::uint16_t>(kind), static_cast<std::uint16_t>(data.size()), rx_ns};
  std::memcpy(buf_.get() + off, &h, sizeof h);
  if (!data.empty()) std::memcpy(buf_.get() + off + sizeof h, data.data(), data.size());
  head_local_ += need;
  return true;
}

bool PacketRing::push_ref(StreamId stream, std::uint64_t rx_ns, const std::byte* data, std::uint16_t len) {
  const PacketRef ref{data, len, 0};
  return push(stream, RecordKind::kPacketRef, rx_ns,
              std::span<const std::byte>(reinterpret_cast<const std::byte*>(&ref), sizeof ref));
}

void PacketRing::publish() {
  // release: every record byte written by push() is visible before the new head.
  head_.store(head_local_, std::memory_order_release);
}

std::size_t PacketRing::used_approx() const {
  // The two loads are not one snapshot. Read head first (the original code) and a consumer may
  // move tail past that stale head: head - tail wrapped to ~2^64. Read tail first and the
  // producer may move head more than a capacity past that stale tail. So clamp to [0, capacity].
  const std::uint64_t tail = tail_.load(std::memory_order_relaxed);
  const std::uint64_t head = head_.load(std::memory_order_relaxed);
  if (head <= tail) return 0;
  const std::uint64_t used = head - tail;
  return used < capacity() ? static_cast<std::size_t>(used) : capacity();
}

RingMatrix::RingMatrix(unsigned producers, unsigned writers, std::size_t ring_bytes)
    : producers_(producers == 0 ? 1 : producers), writers_(writers == 0 ? 1 : writers) {
  rings_.reserve(std::size_t{producers_} * writers_);
  for (unsigned i = 0; i < producers_ * writers_; ++i) rings_.push_back(std::make_unique<PacketRing>(ring_bytes));
}

}  // namespace callrec::fileio
