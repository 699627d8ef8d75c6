// Unit tests of callrec-phone's RTP timing wheel (tools/callrec-phone/send_wheel.hpp): the
// per-pass send budget that lets an overloaded worker get back to its control sockets, and
// that an interrupted sweep resumes without skipping, repeating or drifting any stream.
#include "tools/callrec-phone/send_wheel.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <vector>

namespace {

using callrec::phone::SendWheel;

constexpr std::size_t kUnlimited = std::numeric_limits<std::size_t>::max();

TEST(SendWheel, BudgetBoundsOnePassAndTheRestFollowsInLaterPasses) {
  SendWheel w;
  constexpr std::uint32_t kStreams = 2000;
  for (std::uint32_t i = 0; i < kStreams; ++i) w.insert({i, 0}, 1);
  std::vector<int> seen(kStreams, 0);
  auto visit = [&](const SendWheel::Entry& e, std::int64_t ms) {
    EXPECT_EQ(ms, 1);
    ++seen[e.call];
    return true;
  };
  std::vector<std::size_t> per_pass;
  bool more = true;
  while (more) {
    const std::size_t before = [&] {
      std::size_t n = 0;
      for (int s : seen) n += static_cast<std::size_t>(s);
      return n;
    }();
    more = w.sweep(1, 512, visit);
    std::size_t after = 0;
    for (int s : seen) after += static_cast<std::size_t>(s);
    per_pass.push_back(after - before);
    ASSERT_LE(per_pass.size(), 10U);
    if (more) {
      EXPECT_EQ(w.next_busy_ms(), 1);  // the loop must not sleep: work is due now
    }
  }
  EXPECT_EQ(per_pass, (std::vector<std::size_t>{512, 512, 512, 464}));
  for (std::uint32_t i = 0; i < kStreams; ++i) EXPECT_EQ(seen[i], 1) << "stream " << i;
  EXPECT_EQ(w.cursor(), 1);
  EXPECT_EQ(w.next_busy_ms(), -1);
  EXPECT_FALSE(w.sweep(1, 512, visit));
}

TEST(SendWheel, EntriesThatDidNoWorkDoNotUseTheBudget) {
  SendWheel w;
  for (std::uint32_t i = 0; i < 100; ++i) w.insert({i, 0}, 3);
  int visits = 0;
  // Odd entries are stale (the call ended): they are dropped without counting.
  EXPECT_FALSE(w.sweep(3, 60, [&](const SendWheel::Entry& e, std::int64_t) {
    ++visits;
    return e.call % 2 == 0;
  }));
  EXPECT_EQ(visits, 100);
}

/// An overloaded loop: 3000 streams of 20 ms (150 packets per ms) but a budget of 100 per
/// 1 ms pass, for 400 ms; then unlimited passes catch up. Every stream must have sent every
/// packet up to "now" exactly once and in order, each pass must stay within the budget, and
/// a packet is never sent before its absolute deadline.
TEST(SendWheel, OverloadedLoopFallsBehindButLosesNothingAndKeepsAbsoluteDeadlines) {
  constexpr std::uint32_t kStreams = 3000;
  constexpr std::int64_t kPtime = 20;
  struct Stream {
    std::int64_t base = 0;
    std::uint64_t n = 0;
  };
  std::vector<Stream> streams(kStreams);
  SendWheel w;
  for (std::uint32_t i = 0; i < kStreams; ++i) {
    streams[i].base = 1 + static_cast<std::int64_t>(i % kPtime);
    w.insert({i, 0}, streams[i].base);
  }
  std::int64_t now_ms = 0;
  std::size_t sent_this_pass = 0;
  std::uint64_t late = 0;
  auto visit = [&](const SendWheel::Entry& e, std::int64_t ms) {
    Stream& s = streams[e.call];
    const std::int64_t due = s.base + static_cast<std::int64_t>(s.n) * kPtime;
    if (due > now_ms) {
      w.insert(e, due);
      return false;
    }
    EXPECT_LE(due, ms) << "stream " << e.call << " found in a slot before its deadline";
    if (now_ms - due > 5) ++late;
    ++s.n;
    ++sent_this_pass;
    w.insert(e, std::max(s.base + static_cast<std::int64_t>(s.n) * kPtime, ms + 1));
    return true;
  };
  bool behind = false;
  for (now_ms = 1; now_ms <= 400; ++now_ms) {
    sent_this_pass = 0;
    behind = w.sweep(now_ms, 100, visit);
    EXPECT_LE(sent_this_pass, 100U);
  }
  --now_ms;
  EXPECT_TRUE(behind);
  EXPECT_GT(late, 0U);  // the overload shows up as late sends
  std::uint64_t total = 0;
  for (const auto& s : streams) total += s.n;
  EXPECT_EQ(total, 400U * 100U);  // every pass used its full budget, no more
  // Catch up at the same "now": every packet due by now_ms goes out, exactly once.
  int passes = 0;
  while (w.sweep(now_ms, 1000, visit)) ASSERT_LT(++passes, 1000);
  EXPECT_FALSE(w.sweep(now_ms, kUnlimited, visit));
  for (std::uint32_t i = 0; i < kStreams; ++i) {
    const auto expected = static_cast<std::uint64_t>((now_ms - streams[i].base) / kPtime + 1);
    ASSERT_EQ(streams[i].n, expected) << "stream " << i;
  }
  // And back on schedule: the next packets go out at their deadlines, not in a burst.
  for (++now_ms; now_ms <= 460; ++now_ms) {
    sent_this_pass = 0;
    late = 0;
    EXPECT_FALSE(w.sweep(now_ms, 1000, visit));
    EXPECT_EQ(sent_this_pass, kStreams / kPtime) << "at " << now_ms;
    EXPECT_EQ(late, 0U);
  }
}

}  // namespace
