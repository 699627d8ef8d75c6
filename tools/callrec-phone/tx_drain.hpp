#pragma once
// The non-blocking output loop of a TCP (or TLS) connection, shared by the upload phones
// (worker.cpp) and the SIPREC client (siprec.cpp): write what is pending from `off`, stop
// when the socket would block, and on an error drop what is pending so that the caller can
// shut the socket down (callers never tear a connection down in the middle of their own code:
// the read path reports the loss on the next event).
#include <cstddef>
#include <string>

namespace callrec::phone {

enum class Drain : unsigned char {
  kDone,     ///< everything was written (tx is cleared)
  kBlocked,  ///< the socket would block: the rest waits for EPOLLOUT (or the TLS layer)
  kFailed,   ///< a write error: tx is cleared, the caller counts it and shuts the socket down
};

/// `write(p, n)` writes at most n bytes and returns how many it took (> 0), 0 when the socket
/// would block, or < 0 on an error (EINTR is the writer's to retry).
template <typename Write>
Drain drain_tx(std::string& tx, std::size_t& off, Write&& write) {
  Drain result = Drain::kDone;
  while (off < tx.size()) {
    const long n = write(tx.data() + off, tx.size() - off);
    if (n > 0) {
      off += static_cast<std::size_t>(n);
      continue;
    }
    result = n == 0 ? Drain::kBlocked : Drain::kFailed;
    if (n < 0) off = tx.size();  // dropped: the connection is going away
    break;
  }
  if (off >= tx.size()) {
    tx.clear();
    off = 0;
  }
  return result;
}

}  // namespace callrec::phone
