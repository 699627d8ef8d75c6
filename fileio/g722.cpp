#include "fileio/g722.hpp"

#include <spandsp.h>

namespace callrec::fileio {

struct G722Decoder::State {
  g722_decode_state_t* dec = nullptr;
};

G722Decoder::G722Decoder() : s_(std::make_unique<State>()) { reset(); }

G722Decoder::~G722Decoder() {
  if (s_->dec != nullptr) g722_decode_free(s_->dec);
}

void G722Decoder::reset() {
  if (s_->dec != nullptr) g722_decode_free(s_->dec);
  s_->dec = g722_decode_init(nullptr, 64000, 0);
}

void G722Decoder::decode(std::span<const std::byte> payload, std::vector<std::int16_t>& out) {
  const std::size_t at = out.size();
  out.resize(at + payload.size() * 2);
  const int n = g722_decode(s_->dec, out.data() + at, reinterpret_cast<const std::uint8_t*>(payload.data()),
                            static_cast<int>(payload.size()));
  out.resize(at + static_cast<std::size_t>(n > 0 ? n : 0));
}

}  // namespace callrec::fileio
