#pragma once
// The RTP timing wheel of one callrec-phone worker: 1024 slots of 1 ms, each holding the
// streams whose next packet falls in that millisecond (modulo the wheel's lap). Header-only so
// that tests/tools can check the scheduling without the worker around it.
//
// sweep() visits the due slots in time order, but at most `budget` entries that did work
// (sent a packet) per call: an overloaded worker (more packets due than it can send) then
// returns to its event loop every `budget` packets to read the control sockets instead of
// sending the whole backlog first, which delayed server stops and responses by seconds.
// The interrupted slot keeps its unvisited entries and the cursor stays before it, so the next
// sweep resumes there: no stream is skipped or visited twice, and since every packet's
// deadline is absolute (base + n * ptime) a resumed stream is only late, never drifted.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace callrec::phone {

class SendWheel {
 public:
  struct Entry {
    std::uint32_t call;
    std::uint32_t gen;
  };
  static constexpr std::size_t kSlots = 1024;  ///< 1 ms each; > the largest ptime

  SendWheel() : slots_(kSlots) {}

  /// Queues `e` in the slot of `key_ms` (loop-relative ms). A key at or before the cursor is
  /// only seen a lap later: callers insert at least cursor() + 1.
  void insert(Entry e, std::int64_t key_ms) { slot(key_ms).push_back(e); }

  /// Visits the entries of the slots (cursor, now_ms], in slot order, as visit(entry, slot_ms)
  /// -> bool (true: it sent a packet, which counts against the budget; false: a stale entry or
  /// one re-queued for a later lap). The visitor may insert() (into later slots). Returns true
  /// when it stopped on the budget with due entries left, false when caught up with now_ms.
  template <class Visit>
  bool sweep(std::int64_t now_ms, std::size_t budget, Visit&& visit) {
    if (now_ms <= cursor_ms_) return false;
    const std::int64_t from = std::max(cursor_ms_ + 1, now_ms - static_cast<std::int64_t>(kSlots) + 1);
    std::size_t used = 0;
    for (std::int64_t ms = from; ms <= now_ms; ++ms) {
      auto& s = slot(ms);
      if (s.empty()) continue;
      if (used >= budget) {
        cursor_ms_ = ms - 1;
        return true;
      }
      sweep_.swap(s);  // s is empty now; the visitor may append later-lap entries to it
      std::size_t i = 0;
      for (; i < sweep_.size() && used < budget; ++i) {
        if (visit(sweep_[i], ms)) ++used;
      }
      if (i < sweep_.size()) {  // out of budget inside this slot: keep the rest for next time
        sweep_.erase(sweep_.begin(), sweep_.begin() + static_cast<std::ptrdiff_t>(i));
        sweep_.insert(sweep_.end(), s.begin(), s.end());
        s.swap(sweep_);
        sweep_.clear();
        cursor_ms_ = ms - 1;
        return true;
      }
      sweep_.clear();
    }
    cursor_ms_ = now_ms;
    return false;
  }

  /// The earliest busy slot after the cursor (loop-relative ms), or -1 when the wheel is empty.
  [[nodiscard]] std::int64_t next_busy_ms() const {
    for (std::int64_t ms = cursor_ms_ + 1; ms <= cursor_ms_ + static_cast<std::int64_t>(kSlots); ++ms) {
      if (!slots_[static_cast<std::size_t>(ms) & (kSlots - 1)].empty()) return ms;
    }
    return -1;
  }

  [[nodiscard]] std::int64_t cursor() const { return cursor_ms_; }

 private:
  std::vector<Entry>& slot(std::int64_t ms) { return slots_[static_cast<std::size_t>(ms) & (kSlots - 1)]; }

  std::vector<std::vector<Entry>> slots_;
  std::vector<Entry> sweep_;
  std::int64_t cursor_ms_ = 0;  ///< last fully swept ms
};

}  // namespace callrec::phone
