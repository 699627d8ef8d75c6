#pragma once
// Per-flow packet-rate policer, shared by the kernel and DPDK sources (issue 9 item 3: one
// stream can never take the writer's capacity from the others). A token bucket of `burst`
// packets refilled at `pps`, kept as GCRA: one theoretical arrival time per flow (8 bytes, no
// division or floating point per packet). Checked on the RX thread where the flow is looked up,
// after the source and RTP checks (a stray sender cannot spend the phone's budget), on the RX
// timestamp (CLOCK_MONOTONIC ns; one per burst is fine: equal times just use the burst).
// A phone sends 50 pps (20 ms ptime), 100 at 10 ms. callrecd's default, 400 pps with a burst of
// 500 packets (10 s of a 20 ms call: a backlog released after a stall or a bufferbloated uplink
// passes whole), stops a flood at 8x a call's rate; a burst is at most ~100 KB of ring.
#include <cstdint>

namespace callrec::dataplane {

struct PolicerConfig {
  std::uint64_t interval_ns = 0;   ///< 1 s / pps; 0: policing off
  std::uint64_t tolerance_ns = 0;  ///< (burst - 1) * interval

  /// pps 0: off. burst 0 counts as 1.
  static constexpr PolicerConfig make(std::uint32_t pps, std::uint32_t burst) {
    PolicerConfig c;
    if (pps == 0) return c;
    c.interval_ns = 1'000'000'000ull / pps;
    if (c.interval_ns == 0) c.interval_ns = 1;
    c.tolerance_ns = std::uint64_t{burst > 0 ? burst - 1 : 0} * c.interval_ns;
    return c;
  }
  [[nodiscard]] constexpr bool enabled() const { return interval_ns != 0; }
};

/// True: the packet conforms (and is charged to the flow's `tat`); false: police it.
inline bool policer_admit(std::uint64_t& tat, const PolicerConfig& c, std::uint64_t now_ns) {
  if (c.interval_ns == 0) return true;
  const std::uint64_t t = tat > now_ns ? tat : now_ns;
  if (t - now_ns > c.tolerance_ns) return false;
  tat = t + c.interval_ns;
  return true;
}

}  // namespace callrec::dataplane
