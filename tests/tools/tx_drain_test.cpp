// callrec-phone's shared output loop (tools/callrec-phone/tx_drain.hpp): partial writes resume
// where they stopped, a blocked socket keeps the rest, an error drops what is pending.
#include "tools/callrec-phone/tx_drain.hpp"

#include <gtest/gtest.h>

#include <string>

namespace callrec::phone {
namespace {

TEST(TxDrain, PartialWritesThenBlockedKeepTheRestInOrder) {
  std::string tx = "INVITE sip:x SIP/2.0\r\n\r\n", wire;
  std::size_t off = 0;
  int budget = 10;  // the socket takes 10 bytes, 4 at a time, then would block
  auto write = [&](const char* p, std::size_t n) -> long {
    if (budget <= 0) return 0;
    const auto k = static_cast<long>(std::min<std::size_t>({n, 4, static_cast<std::size_t>(budget)}));
    wire.append(p, static_cast<std::size_t>(k));
    budget -= static_cast<int>(k);
    return k;
  };
  EXPECT_EQ(drain_tx(tx, off, write), Drain::kBlocked);
  EXPECT_EQ(off, 10u);
  EXPECT_EQ(wire, "INVITE sip");
  budget = 1000;
  EXPECT_EQ(drain_tx(tx, off, write), Drain::kDone);
  EXPECT_EQ(wire, "INVITE sip:x SIP/2.0\r\n\r\n");
  EXPECT_TRUE(tx.empty());
  EXPECT_EQ(off, 0u);
}

TEST(TxDrain, AnErrorDropsWhatIsPending) {
  std::string tx = "BYE sip:x SIP/2.0\r\n\r\n";
  std::size_t off = 0;
  int calls = 0;
  EXPECT_EQ(drain_tx(tx, off,
                     [&](const char*, std::size_t) -> long {
                       ++calls;
                       return calls == 1 ? 3 : -1;
                     }),
            Drain::kFailed);
  EXPECT_TRUE(tx.empty());
  EXPECT_EQ(off, 0u);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(drain_tx(tx, off, [](const char*, std::size_t) -> long { return -1; }), Drain::kDone);  // nothing left
}

}  // namespace
}  // namespace callrec::phone
