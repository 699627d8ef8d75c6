// G.711 A-law / mu-law. Decoding: 256-entry tables built at compile time from the ITU-T G.711
// expansion rules (the same arithmetic as the classic Sun reference g711.c, which SoX also
// uses, so the output is bit-exact with `sox -e a-law/-e mu-law`). Encoding: the standard
// segment search on the 16-bit linear value.
#include "fileio/g711.hpp"

#include <algorithm>
#include <array>

namespace callrec::fileio {
namespace {

constexpr unsigned kSignBit = 0x80;
constexpr unsigned kQuantMask = 0x0F;
constexpr unsigned kSegMask = 0x70;
constexpr unsigned kSegShift = 4;
constexpr int kUlawBias = 0x84;  // 132: mu-law bias in the 16-bit (14-bit << 2) domain
constexpr int kUlawClip = 8159;  // largest magnitude in the 14-bit domain (>> 2) before bias

constexpr std::int16_t alaw_expand(unsigned code) {
  const unsigned a = code ^ 0x55u;  // even bits are inverted on the line
  int t = static_cast<int>((a & kQuantMask) << 4);
  const unsigned seg = (a & kSegMask) >> kSegShift;
  if (seg == 0) {
    t += 8;
  } else {
    t += 0x108;
    t <<= seg - 1;
  }
  return static_cast<std::int16_t>((a & kSignBit) != 0 ? t : -t);
}

constexpr std::int16_t ulaw_expand(unsigned code) {
  const unsigned u = ~code & 0xFFu;  // all bits are inverted on the line
  int t = static_cast<int>(((u & kQuantMask) << 3)) + kUlawBias;
  t <<= (u & kSegMask) >> kSegShift;
  return static_cast<std::int16_t>((u & kSignBit) != 0 ? kUlawBias - t : t - kUlawBias);
}

template <typename Fn>
constexpr std::array<std::int16_t, 256> make_table(Fn fn) {
  std::array<std::int16_t, 256> t{};
  for (unsigned i = 0; i < 256; ++i) t[i] = fn(i);
  return t;
}

constexpr auto kAlawTable = make_table(alaw_expand);
constexpr auto kUlawTable = make_table(ulaw_expand);

// Spot checks against G.711 (Table 1a/2a, scaled to 16 bits): silence codes and the extremes.
static_assert(kAlawTable[0xD5] == 8 && kAlawTable[0x55] == -8);
static_assert(kAlawTable[0xAA] == 32256 && kAlawTable[0x2A] == -32256);
static_assert(kUlawTable[0xFF] == 0 && kUlawTable[0x7F] == 0);
static_assert(kUlawTable[0x80] == 32124 && kUlawTable[0x00] == -32124);

// Upper ends of the 8 segments: A-law in the 13-bit domain, mu-law in the biased 14-bit domain.
constexpr std::array<int, 8> kAlawSegEnd{0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF};
constexpr std::array<int, 8> kUlawSegEnd{0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF};

constexpr unsigned segment_of(int v, const std::array<int, 8>& ends) {
  unsigned seg = 0;
  while (seg < ends.size() && v > ends[seg]) ++seg;
  return seg;  // 8: beyond the last segment
}

}  // namespace

std::int16_t alaw_to_linear(std::uint8_t a) { return kAlawTable[a]; }
std::int16_t ulaw_to_linear(std::uint8_t u) { return kUlawTable[u]; }

std::uint8_t linear_to_alaw(std::int16_t pcm) {
  int v = pcm >> 3;  // 13-bit domain (C++20: arithmetic shift)
  unsigned mask = 0xD5;
  if (v < 0) {
    mask = 0x55;
    v = -v - 1;  // one's complement magnitude: -1 .. -4096 -> 0 .. 4095
  }
  const unsigned seg = segment_of(v, kAlawSegEnd);
  if (seg >= 8) return static_cast<std::uint8_t>(0x7F ^ mask);  // unreachable for 16-bit input
  unsigned aval = seg << kSegShift;
  aval |= static_cast<unsigned>(seg < 2 ? (v >> 1) : (v >> seg)) & kQuantMask;
  return static_cast<std::uint8_t>(aval ^ mask);
}

std::uint8_t linear_to_ulaw(std::int16_t pcm) {
  int v = pcm >> 2;  // 14-bit domain
  unsigned mask = 0xFF;
  if (v < 0) {
    v = -v;
    mask = 0x7F;
  }
  v = std::min(v, kUlawClip);
  v += kUlawBias >> 2;
  const unsigned seg = segment_of(v, kUlawSegEnd);
  if (seg >= 8) return static_cast<std::uint8_t>(0x7F ^ mask);  // unreachable after clipping
  const unsigned uval = (seg << kSegShift) | (static_cast<unsigned>(v >> (seg + 1)) & kQuantMask);
  return static_cast<std::uint8_t>(uval ^ mask);
}

void g711_decode(Codec codec, std::span<const std::byte> in, std::span<std::int16_t> out) {
  const std::size_t n = std::min(in.size(), out.size());  // contract: out.size() >= in.size()
  const auto& table = codec == Codec::kPcma ? kAlawTable : kUlawTable;
  for (std::size_t i = 0; i < n; ++i) out[i] = table[std::to_integer<std::uint8_t>(in[i])];
}

void g711_encode(Codec codec, std::span<const std::int16_t> in, std::span<std::byte> out) {
  const std::size_t n = std::min(in.size(), out.size());
  if (codec == Codec::kPcma) {
    for (std::size_t i = 0; i < n; ++i) out[i] = std::byte{linear_to_alaw(in[i])};
  } else {
    for (std::size_t i = 0; i < n; ++i) out[i] = std::byte{linear_to_ulaw(in[i])};
  }
}

}  // namespace callrec::fileio
