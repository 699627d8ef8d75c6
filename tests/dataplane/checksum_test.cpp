// The Internet checksum helper (dataplane/decode/checksum.hpp) against RFC 1071's worked example
// and against checksums written out by hand; and its byte-order forms for std::uint8_t frames.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <vector>

#include "dataplane/decode/checksum.hpp"

namespace callrec::dataplane::decode {
namespace {

// RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sum to ddf2 (before the complement).
constexpr std::array<std::uint8_t, 8> kRfc1071 = {0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7};
static_assert(inet_fold(inet_sum(0, kRfc1071.data(), kRfc1071.size())) == 0xDDF2);
static_assert(inet_checksum(kRfc1071.data(), kRfc1071.size()) == 0x220D);

TEST(Checksum, Rfc1071Example) {
  const std::uint32_t sum = inet_sum(0, kRfc1071.data(), kRfc1071.size());
  EXPECT_EQ(sum, 0x2DDF0U);  // unfolded: 0001 + f203 + f4f5 + f6f7
  EXPECT_EQ(inet_fold(sum), 0xDDF2);
  EXPECT_EQ(inet_checksum(sum), 0x220D);
  EXPECT_EQ(inet_checksum(kRfc1071.data(), kRfc1071.size()), 0x220D);
}

TEST(Checksum, PartialSumsAddUpAtEvenOffsets) {
  const std::uint32_t whole = inet_sum(0, kRfc1071.data(), 8);
  const std::uint32_t parts = inet_sum(inet_sum(inet_sum(0, kRfc1071.data(), 2), kRfc1071.data() + 2, 4),
                                       kRfc1071.data() + 6, 2);
  EXPECT_EQ(parts, whole);
}

TEST(Checksum, OddLengthPadsTheLastByteWithZero) {
  const std::array<std::uint8_t, 3> odd = {0x12, 0x34, 0x56};
  const std::array<std::uint8_t, 4> padded = {0x12, 0x34, 0x56, 0x00};
  EXPECT_EQ(inet_sum(0, odd.data(), odd.size()), 0x1234U + 0x5600U);
  EXPECT_EQ(inet_checksum(odd.data(), odd.size()), inet_checksum(padded.data(), padded.size()));
  EXPECT_EQ(inet_checksum(odd.data(), 0), 0xFFFF);  // empty: sum 0
}

TEST(Checksum, Ipv4HeaderWithItsChecksumSumsToZero) {
  // 192.168.0.1 -> 192.168.0.199, UDP, TTL 64, DF, 115 bytes: the header checksum is b861.
  std::array<std::uint8_t, 20> ip = {0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
                                     0x00, 0x00, 0xC0, 0xA8, 0x00, 0x01, 0xC0, 0xA8, 0x00, 0xC7};
  const std::uint16_t c = inet_checksum(ip.data(), ip.size());
  EXPECT_EQ(c, 0xB861);
  ip[10] = static_cast<std::uint8_t>(c >> 8);
  ip[11] = static_cast<std::uint8_t>(c);
  EXPECT_EQ(inet_checksum(ip.data(), ip.size()), 0);
}

TEST(Checksum, Ipv6PseudoHeaderIsTheExplicitCopy) {
  std::array<std::uint8_t, 16> src{};
  std::array<std::uint8_t, 16> dst{};
  src[0] = 0xFE;
  src[1] = 0x80;
  src[15] = 0x01;
  dst[0] = 0x20;
  dst[1] = 0x01;
  dst[2] = 0x0D;
  dst[3] = 0xB8;
  dst[15] = 0x02;
  const std::vector<std::uint8_t> msg = {128, 0, 0, 0, 0x12, 0x34, 0x00, 0x01, 'p', 'i', 'n', 'g', '!'};
  // RFC 8200 8.1: source, destination, 32-bit length, three zero bytes, next header; then the message.
  std::vector<std::uint8_t> b(src.begin(), src.end());
  b.insert(b.end(), dst.begin(), dst.end());
  b.insert(b.end(), {0, 0, 0, static_cast<std::uint8_t>(msg.size()), 0, 0, 0, 58});
  b.insert(b.end(), msg.begin(), msg.end());
  const auto len = static_cast<std::uint32_t>(msg.size());
  EXPECT_EQ(inet6_checksum(src.data(), dst.data(), 58, msg.data(), len), inet_checksum(b.data(), b.size()));
  std::vector<std::uint8_t> with = msg;
  const std::uint16_t c = inet6_checksum(src.data(), dst.data(), 58, msg.data(), len);
  with[2] = static_cast<std::uint8_t>(c >> 8);
  with[3] = static_cast<std::uint8_t>(c);
  EXPECT_EQ(inet6_checksum(src.data(), dst.data(), 58, with.data(), len), 0);
}

TEST(Checksum, ByteOrderFormsForUint8Frames) {
  std::array<std::uint8_t, 6> b{};
  store_be16(b.data(), 0x1234);
  store_be32(b.data() + 2, 0x89ABCDEF);
  EXPECT_EQ(b, (std::array<std::uint8_t, 6>{0x12, 0x34, 0x89, 0xAB, 0xCD, 0xEF}));
  EXPECT_EQ(load_be16(b.data() + 2), 0x89AB);
}

}  // namespace
}  // namespace callrec::dataplane::decode
