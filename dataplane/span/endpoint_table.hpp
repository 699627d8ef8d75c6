#pragma once
// The lane's endpoint table: (family, address, port) -> what the endpoint's packets belong to.
// Open addressing with linear probing over one flat array (as DPDK's rte_hash keeps keys and
// data in bucket arrays): a lookup is one hash and, at the load kept here (<= 1/2), one or two
// cache lines, instead of the bucket array plus a node of std::unordered_map (measured:
// bench/span_bench BM_LaneRtp; bench/RESULTS.md). Tombstones on erase; rebuilt when they and
// the entries pass half the slots. Not thread-safe: one lane owns it.
#include <cstdint>
#include <cstring>
#include <vector>

#include "dataplane/decode/decode.hpp"

namespace callrec::dataplane {

template <typename Value>
class EndpointTable {
 public:
  EndpointTable() { slots_.resize(kMinSlots); }

  [[nodiscard]] std::size_t size() const { return size_; }
  [[nodiscard]] bool empty() const { return size_ == 0; }

  Value* find(const decode::Endpoint& k) {
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = hash(k) & mask;; i = (i + 1) & mask) {
      Slot& s = slots_[i];
      if (s.state == kEmpty) return nullptr;
      if (s.state == kFull && same(s.key, k)) return &s.value;
    }
  }

  /// Starts loading the slot where a lookup of `k` begins (the burst's first stage: the misses
  /// of a burst's lookups overlap instead of following one another).
  void prefetch(const decode::Endpoint& k) const {
    const Slot* s = &slots_[hash(k) & (slots_.size() - 1)];
    __builtin_prefetch(s);
    __builtin_prefetch(reinterpret_cast<const char*>(s + 1) - 1);  // a slot may straddle two lines
  }

  /// Inserts or overwrites.
  Value& set(const decode::Endpoint& k, const Value& v) {
    if (Value* existing = find(k)) {
      *existing = v;
      return *existing;
    }
    if ((size_ + tombstones_ + 1) * 2 > slots_.size()) rebuild(size_ + 1);
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = hash(k) & mask;; i = (i + 1) & mask) {
      Slot& s = slots_[i];
      if (s.state == kFull) continue;
      if (s.state == kTombstone) --tombstones_;
      s.state = kFull;
      s.key = k;
      s.value = v;
      ++size_;
      return s.value;
    }
  }

  void erase(const decode::Endpoint& k) {
    Value* v = find(k);
    if (v == nullptr) return;
    Slot* s = reinterpret_cast<Slot*>(reinterpret_cast<char*>(v) - offsetof(Slot, value));
    s->state = kTombstone;
    --size_;
    ++tombstones_;
    if (size_ == 0) {  // cheap reset: no probe chains to keep
      for (Slot& x : slots_) x.state = kEmpty;
      tombstones_ = 0;
    }
  }

  /// A hash that mixes address and port (Fibonacci hashing of a folded 64-bit key).
  static std::size_t hash(const decode::Endpoint& k) {
    std::uint64_t a;
    if (k.addr.family == 6) {
      std::uint64_t b;
      std::memcpy(&a, k.addr.b.data(), 8);
      std::memcpy(&b, k.addr.b.data() + 8, 8);
      a ^= b * 0x9E3779B97F4A7C15ull;
    } else {  // only the address's own 4 bytes
      std::uint32_t v4;
      std::memcpy(&v4, k.addr.b.data(), 4);
      a = v4;
    }
    const std::uint64_t x = (a ^ (std::uint64_t{k.port} << 48) ^ k.addr.family) * 0x9E3779B97F4A7C15ull;
    return static_cast<std::size_t>(x ^ (x >> 29));
  }

 private:
  static constexpr std::size_t kMinSlots = 64;
  enum State : std::uint8_t { kEmpty, kFull, kTombstone };
  struct Slot {
    decode::Endpoint key;
    State state = kEmpty;
    Value value{};
  };
  static bool same(const decode::Endpoint& a, const decode::Endpoint& b) { return a == b; }
  void rebuild(std::size_t want) {
    std::size_t n = kMinSlots;
    while (n < want * 4) n *= 2;  // load 1/4 after a rebuild, 1/2 before the next
    std::vector<Slot> old(n);
    old.swap(slots_);
    size_ = 0;
    tombstones_ = 0;
    const std::size_t mask = slots_.size() - 1;
    for (Slot& s : old) {
      if (s.state != kFull) continue;
      for (std::size_t i = hash(s.key) & mask;; i = (i + 1) & mask) {
        if (slots_[i].state == kFull) continue;
        slots_[i] = s;
        ++size_;
        break;
      }
    }
  }
  std::vector<Slot> slots_;
  std::size_t size_ = 0, tombstones_ = 0;
};

}  // namespace callrec::dataplane
