#pragma once
// G.722 (64 kbit/s) to 16-bit PCM at 16 kHz, through spandsp (Debian libspandsp-dev): a
// well-kept implementation of the ITU reference, used by FreeSWITCH and Asterisk. One decoder
// per stream (it has state across packets).
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace callrec::fileio {

class G722Decoder {
 public:
  G722Decoder();
  ~G722Decoder();
  G722Decoder(const G722Decoder&) = delete;
  G722Decoder& operator=(const G722Decoder&) = delete;
  /// Decodes one payload: two 16 kHz samples per byte, appended to out.
  void decode(std::span<const std::byte> payload, std::vector<std::int16_t>& out);
  void reset();

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace callrec::fileio
