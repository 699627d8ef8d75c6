#pragma once
// G.711 A-law and mu-law (ITU-T G.711) encode/decode. Decoding is a 256-entry table lookup.
#include <cstddef>
#include <cstdint>
#include <span>

#include "fileio/record_format.hpp"

namespace callrec::fileio {

std::int16_t alaw_to_linear(std::uint8_t a);
std::int16_t ulaw_to_linear(std::uint8_t u);
std::uint8_t linear_to_alaw(std::int16_t pcm);
std::uint8_t linear_to_ulaw(std::int16_t pcm);

/// Decodes in.size() bytes into out (out.size() >= in.size()).
void g711_decode(Codec codec, std::span<const std::byte> in, std::span<std::int16_t> out);
/// Encodes in.size() samples into out (out.size() >= in.size()).
void g711_encode(Codec codec, std::span<const std::int16_t> in, std::span<std::byte> out);

}  // namespace callrec::fileio
