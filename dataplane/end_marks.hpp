#pragma once
// End-of-stream marks an RX context (one producer row of a RingMatrix) owes its writers, shared
// by the kernel and the DPDK sources. A mark follows a flow's last packet into the ring; when
// the ring is full it waits here and is retried every loop iteration without stalling other
// flows (nothing of that stream can overtake it: its flow is already gone).
#include <time.h>

#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "fileio/packet_ring.hpp"

namespace callrec::dataplane {

inline std::uint64_t mono_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<std::uint64_t>(ts.tv_nsec);
}

class EndMarks {
 public:
  void reserve(std::size_t n) { pending_.reserve(n); }
  [[nodiscard]] bool empty() const { return pending_.empty(); }

  void push(fileio::RingMatrix& rings, unsigned producer, fileio::StreamId stream, unsigned writer) {
    const Pending e{stream, writer};
    if (!try_push(rings, producer, e)) pending_.push_back(e);
  }
  void retry(fileio::RingMatrix& rings, unsigned producer) {
    std::size_t kept = 0;
    for (const Pending& e : pending_)
      if (!try_push(rings, producer, e)) pending_[kept++] = e;
    pending_.resize(kept);
  }
  /// Shutdown: retries until every mark is in or timeout has passed. Returns the marks given up.
  std::size_t drain(fileio::RingMatrix& rings, unsigned producer, std::chrono::milliseconds timeout) {
    const std::uint64_t deadline = mono_ns() + static_cast<std::uint64_t>(timeout.count()) * 1'000'000ULL;
    while (!pending_.empty()) {
      retry(rings, producer);
      if (pending_.empty() || mono_ns() >= deadline) break;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    const std::size_t lost = pending_.size();
    pending_.clear();
    return lost;
  }

 private:
  struct Pending {
    fileio::StreamId stream = 0;
    unsigned writer = 0;
  };
  static bool try_push(fileio::RingMatrix& rings, unsigned producer, const Pending& e) {
    fileio::PacketRing& ring = rings.ring(producer, e.writer);
    if (!ring.push(e.stream, fileio::RecordKind::kEndOfStream, mono_ns(), {})) return false;
    ring.publish();
    return true;
  }
  std::vector<Pending> pending_;
};

}  // namespace callrec::dataplane
