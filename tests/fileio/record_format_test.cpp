// Record header codec: golden bytes, byte-order detection, plausibility, codec table.
#include "fileio/record_format.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace callrec::fileio {
namespace {

using Bytes = std::array<std::byte, kHeaderSize>;

Bytes to_bytes(const std::vector<unsigned> v) {
  Bytes b{};
  EXPECT_EQ(v.size(), kHeaderSize);
  for (std::size_t i = 0; i < std::min(v.size(), b.size()); ++i) b[i] = static_cast<std::byte>(v[i]);
  return b;
}

/// "PCMA", 60 NULs, then the three integers as given (already in the wanted byte order).
Bytes golden(const char (&codec)[5], std::array<unsigned, 12> ints) {
  std::vector<unsigned> v(kHeaderSize, 0);
  for (std::size_t i = 0; i < 4; ++i) v[i] = static_cast<unsigned char>(codec[i]);
  for (std::size_t i = 0; i < ints.size(); ++i) v[64 + i] = ints[i];
  return to_bytes(v);
}

// rtpLen 172 = 0xAC, increment 160 = 0xA0, dataSize 3440 = 0x0D70 (20 packets).
const Bytes kGoldenLe = golden("PCMA", {0xAC, 0x00, 0x00, 0x00,    // rtpLen
                                        0xA0, 0x00, 0x00, 0x00,    // increment
                                        0x70, 0x0D, 0x00, 0x00});  // dataSize
const Bytes kGoldenBe = golden("PCMA", {0x00, 0x00, 0x00, 0xAC,    //
                                        0x00, 0x00, 0x00, 0xA0,    //
                                        0x00, 0x00, 0x0D, 0x70});

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x + " | ";
  return s;
}

TEST(RecordFormat, EncodeGoldenLittleEndian) {
  const Bytes got = encode_header({"PCMA", 172, 160, 3440});
  EXPECT_EQ(got, kGoldenLe);
  // The literal spelled out once more for the parts a reviewer checks first.
  EXPECT_EQ(got[0], std::byte{'P'});
  EXPECT_EQ(got[3], std::byte{'A'});
  EXPECT_EQ(got[4], std::byte{0});
  EXPECT_EQ(got[63], std::byte{0});
  EXPECT_EQ(got[64], std::byte{0xAC});
  EXPECT_EQ(got[72], std::byte{0x70});
  EXPECT_EQ(got[73], std::byte{0x0D});
}

TEST(RecordFormat, EncodeGoldenBigEndian) {
  EXPECT_EQ(encode_header({"PCMA", 172, 160, 3440}, ByteOrder::kBig), kGoldenBe);
}

TEST(RecordFormat, EncodeFullWidthIntegers) {
  // dataSize uses all 32 bits; rtpLen/increment are stored as their two's complement bits.
  const Bytes got = encode_header({"PCMU", 65535, 1000000, 0xFEDCBA98u});
  const Bytes want = golden("PCMU", {0xFF, 0xFF, 0x00, 0x00, 0x40, 0x42, 0x0F, 0x00, 0x98, 0xBA, 0xDC, 0xFE});
  EXPECT_EQ(got, want);
  const Bytes neg = encode_header({"PCMU", -1, -2, 0});
  EXPECT_EQ(neg[64], std::byte{0xFF});
  EXPECT_EQ(neg[67], std::byte{0xFF});
  EXPECT_EQ(neg[68], std::byte{0xFE});
}

TEST(RecordFormat, DecodeGoldenLittleEndian) {
  const HeaderDecode d = decode_header(kGoldenLe);
  EXPECT_TRUE(d.plausible) << joined(d.problems);
  EXPECT_TRUE(d.problems.empty());
  EXPECT_EQ(d.order, ByteOrder::kLittle);
  EXPECT_EQ(d.header.codec, "PCMA");
  EXPECT_EQ(d.header.rtp_len, 172);
  EXPECT_EQ(d.header.increment, 160);
  EXPECT_EQ(d.header.data_size, 3440u);
}

TEST(RecordFormat, DecodeGoldenBigEndian) {
  const HeaderDecode d = decode_header(kGoldenBe);
  EXPECT_TRUE(d.plausible) << joined(d.problems);
  EXPECT_EQ(d.order, ByteOrder::kBig);
  EXPECT_EQ(d.header.codec, "PCMA");
  EXPECT_EQ(d.header.rtp_len, 172);
  EXPECT_EQ(d.header.increment, 160);
  EXPECT_EQ(d.header.data_size, 3440u);
}

TEST(RecordFormat, RoundTripBothOrders) {
  for (const ByteOrder order : {ByteOrder::kLittle, ByteOrder::kBig}) {
    for (const RecordHeader& h : {RecordHeader{"PCMU", 13, 1, 0}, RecordHeader{"pcma", 65535, 1000000, 0xFFFFFFFFu},
                                  RecordHeader{"PCMA", 332, 320, 123456u}, RecordHeader{"G729", 32, 80, 64}}) {
      const HeaderDecode d = decode_header(encode_header(h, order));
      EXPECT_TRUE(d.plausible) << h.codec << " " << joined(d.problems);
      EXPECT_EQ(d.order, order) << h.codec;
      EXPECT_EQ(d.header.codec, h.codec);
      EXPECT_EQ(d.header.rtp_len, h.rtp_len);
      EXPECT_EQ(d.header.increment, h.increment);
      EXPECT_EQ(d.header.data_size, h.data_size);
    }
  }
}

TEST(RecordFormat, CodecNameIsTruncatedTo63BytesAndNulTerminated) {
  const std::string long_name(100, 'X');
  const Bytes b = encode_header({long_name, 172, 160, 0});
  for (std::size_t i = 0; i < 63; ++i) EXPECT_EQ(b[i], std::byte{'X'}) << i;
  EXPECT_EQ(b[63], std::byte{0});
  const HeaderDecode d = decode_header(b);
  EXPECT_TRUE(d.plausible) << joined(d.problems);
  EXPECT_EQ(d.header.codec, std::string(63, 'X'));
}

TEST(RecordFormat, PlausibilityBoundaries) {
  struct Case {
    std::int32_t rtp_len;
    std::int32_t increment;
    bool plausible;
  };
  const Case cases[] = {
      {13, 1, true},       {65535, 1000000, true}, {172, 160, true},      {12, 160, false},
      {0, 160, false},     {65536, 160, false},    {-172, 160, false},    {172, 0, false},
      {172, -160, false},  {172, 1000001, false},  {0, 0, false},
  };
  for (const Case& c : cases) {
    const HeaderDecode d = decode_header(encode_header({"PCMU", c.rtp_len, c.increment, 0}));
    EXPECT_EQ(d.plausible, c.plausible) << "rtpLen " << c.rtp_len << " increment " << c.increment << ": "
                                        << joined(d.problems);
    EXPECT_EQ(d.problems.empty(), c.plausible);
  }
}

TEST(RecordFormat, ImplausibleIntegersAreNamedInProblems) {
  const HeaderDecode d = decode_header(encode_header({"PCMA", 5, 2000000, 0}));
  ASSERT_FALSE(d.plausible);
  const std::string all = joined(d.problems);
  EXPECT_NE(all.find("rtpLen 5"), std::string::npos) << all;
  EXPECT_NE(all.find("increment 2000000"), std::string::npos) << all;
  EXPECT_NE(all.find("big-endian"), std::string::npos) << all;  // the other reading was tried too
  EXPECT_EQ(d.order, ByteOrder::kLittle);  // neither plausible: the format's own order is reported
}

TEST(RecordFormat, BigEndianChosenOnlyWhenLittleIsImplausible) {
  // rtpLen bytes 00 00 01 00: LE = 65536 (implausible), BE = 256 (plausible).
  Bytes b = encode_header({"PCMU", 0, 0, 0});
  const unsigned char ints[12] = {0, 0, 1, 0, 0, 0, 0, 160, 0, 0, 0, 0};
  for (std::size_t i = 0; i < 12; ++i) b[64 + i] = static_cast<std::byte>(ints[i]);
  HeaderDecode d = decode_header(b);
  EXPECT_TRUE(d.plausible) << joined(d.problems);
  EXPECT_EQ(d.order, ByteOrder::kBig);
  EXPECT_EQ(d.header.rtp_len, 256);
  EXPECT_EQ(d.header.increment, 160);

  // Plausible as LE: LE wins even though the BE reading is examined only on failure.
  d = decode_header(encode_header({"PCMU", 256, 160, 0x01000000u}));
  EXPECT_EQ(d.order, ByteOrder::kLittle);
  EXPECT_EQ(d.header.data_size, 0x01000000u);

  // Mixed: LE rtpLen plausible but LE increment not, BE increment plausible but BE rtpLen not.
  b = encode_header({"PCMU", 172, 0x00A00000, 0});
  d = decode_header(b);
  EXPECT_FALSE(d.plausible);
}

TEST(RecordFormat, ImplausibleCodecField) {
  // Empty name.
  HeaderDecode d = decode_header(encode_header({"", 172, 160, 0}));
  EXPECT_FALSE(d.plausible);
  EXPECT_NE(joined(d.problems).find("empty"), std::string::npos) << joined(d.problems);

  // Non-printable byte in the name.
  Bytes b = kGoldenLe;
  b[1] = std::byte{0x01};
  d = decode_header(b);
  EXPECT_FALSE(d.plausible);
  EXPECT_NE(joined(d.problems).find("non-printable"), std::string::npos) << joined(d.problems);

  // Garbage after the terminating NUL.
  b = kGoldenLe;
  b[40] = std::byte{'x'};
  d = decode_header(b);
  EXPECT_FALSE(d.plausible);
  EXPECT_NE(joined(d.problems).find("NUL-padded"), std::string::npos) << joined(d.problems);

  // No NUL at all in the 64 bytes.
  b = kGoldenLe;
  for (std::size_t i = 0; i < 64; ++i) b[i] = std::byte{'A'};
  d = decode_header(b);
  EXPECT_FALSE(d.plausible);
  EXPECT_NE(joined(d.problems).find("NUL-terminated"), std::string::npos) << joined(d.problems);

  // High-bit byte (not ASCII).
  b = kGoldenLe;
  b[0] = std::byte{0xC3};
  EXPECT_FALSE(decode_header(b).plausible);
}

TEST(RecordFormat, AllZeroAndAllOnesHeadersAreImplausible) {
  Bytes b{};
  EXPECT_FALSE(decode_header(b).plausible);
  EXPECT_FALSE(decode_header(b).problems.empty());
  b.fill(std::byte{0xFF});
  EXPECT_FALSE(decode_header(b).plausible);
  EXPECT_FALSE(decode_header(b).problems.empty());
}

TEST(RecordFormat, CodecTable) {
  const CodecInfo& u = codec_info(Codec::kPcmu);
  EXPECT_EQ(u.codec, Codec::kPcmu);
  EXPECT_EQ(u.name, "PCMU");
  EXPECT_EQ(u.payload_type, 0);
  EXPECT_EQ(u.clock_rate, 8000u);
  EXPECT_EQ(u.silence, 0xFF);
  const CodecInfo& a = codec_info(Codec::kPcma);
  EXPECT_EQ(a.codec, Codec::kPcma);
  EXPECT_EQ(a.name, "PCMA");
  EXPECT_EQ(a.payload_type, 8);
  EXPECT_EQ(a.clock_rate, 8000u);
  EXPECT_EQ(a.silence, 0xD5);

  EXPECT_EQ(codec_from_payload_type(0), Codec::kPcmu);
  EXPECT_EQ(codec_from_payload_type(8), Codec::kPcma);
  EXPECT_EQ(codec_from_payload_type(18), std::nullopt);
  EXPECT_EQ(codec_from_payload_type(127), std::nullopt);
}

TEST(RecordFormat, CodecFromNameIsCaseInsensitiveAndExact) {
  EXPECT_EQ(codec_from_name("PCMA"), Codec::kPcma);
  EXPECT_EQ(codec_from_name("pcma"), Codec::kPcma);
  EXPECT_EQ(codec_from_name("PcMa"), Codec::kPcma);
  EXPECT_EQ(codec_from_name("PCMU"), Codec::kPcmu);
  EXPECT_EQ(codec_from_name("pcmu"), Codec::kPcmu);
  EXPECT_EQ(codec_from_name(""), std::nullopt);
  EXPECT_EQ(codec_from_name("PCM"), std::nullopt);
  EXPECT_EQ(codec_from_name("PCMA "), std::nullopt);
  EXPECT_EQ(codec_from_name("PCMAX"), std::nullopt);
  EXPECT_EQ(codec_from_name("G729"), std::nullopt);
  EXPECT_EQ(codec_from_name(std::string_view("PCMA\0", 5)), std::nullopt);
}

TEST(RecordFormat, MaxDataSize) {
  EXPECT_EQ(max_data_size(0), 0u);
  EXPECT_EQ(max_data_size(1), 0xFFFFFFFFull);
  EXPECT_EQ(max_data_size(172), 24970740u * 172u);  // floor((2^32-1)/172) = 24970740
  EXPECT_EQ(max_data_size(172) % 172, 0u);
  EXPECT_LE(max_data_size(172), 0xFFFFFFFFull);
  EXPECT_GT(max_data_size(172) + 172, 0xFFFFFFFFull);
  EXPECT_EQ(max_data_size(65535), 65537ull * 65535u);
}

TEST(DeviceDirName, KeepsTheMacLookAndNeverMapsTwoDevicesToOneDirectory) {
  EXPECT_EQ(device_dir_name("02:00:00:00:00:00"), "02_00_00_00_00_00");
  EXPECT_EQ(device_dir_name("00:11:22:33:44:55"), "00_11_22_33_44_55");
  EXPECT_EQ(device_dir_name("Ok-Tag.42"), "Ok-Tag.42");
  // The collision of the issue: a:b and a_b.
  EXPECT_NE(device_dir_name("a:b"), device_dir_name("a_b"));
  EXPECT_EQ(device_dir_name("a_b"), "a%5Fb");
  EXPECT_EQ(device_dir_name("a%5Fb"), "a%255Fb");
  EXPECT_EQ(device_dir_name("../../etc/passwd"), "%2E.%2F..%2Fetc%2Fpasswd");
  EXPECT_EQ(device_dir_name("."), "%2E");
  EXPECT_EQ(device_dir_name(".."), "%2E.");
  EXPECT_EQ(device_dir_name(""), "~none");
  EXPECT_EQ(device_dir_name(std::string_view("a\0b", 3)), "a%00b");
  const std::vector<std::string> devices = {"a:b", "a_b", "a%3Ab", "a/b", "a b", "A:B", "",
                                            "~none", ".x", "%2Ex", "unknown", std::string(200, 'z'),
                                            std::string(200, 'z') + "1", std::string(99, 'y') + "__"};
  std::vector<std::string> names;
  for (const auto& d : devices) {
    const std::string n = device_dir_name(d);
    EXPECT_LE(n.size(), 120u) << d;
    EXPECT_FALSE(n.empty());
    EXPECT_NE(n[0], '.') << d;
    EXPECT_EQ(n.find('/'), std::string::npos) << d;
    names.push_back(n);
  }
  std::vector<std::string> sorted = names;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end()) << "two devices share a directory";
}

TEST(RecordNameTime, ParsesTheWritersFileNames) {
  // 2026-01-02T03:04:05.678Z
  EXPECT_EQ(record_name_time_ms("Record_20260102T030405.678Z_00_11_22_33_44_55_1.rec"), 1767323045678ll);
  EXPECT_EQ(record_name_time_ms("Record_19700101T000000.000Z_1.rec"), 0);
  EXPECT_FALSE(record_name_time_ms("Record_2026010xT030405.678Z_1.rec"));
  EXPECT_FALSE(record_name_time_ms("record_20260102T030405.678Z_1.rec"));
  EXPECT_FALSE(record_name_time_ms("Record_20261302T030405.678Z_1.rec"));
  EXPECT_FALSE(record_name_time_ms("Record_"));
}

}  // namespace
}  // namespace callrec::fileio
