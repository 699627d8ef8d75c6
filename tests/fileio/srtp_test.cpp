// SDES parsing (RFC 4568 examples, vendor-style lines, refusals), libsrtp's reference packets
// for the suites (RFC 3711 B.3 master key), round trips for every suite, tampering, replay,
// reordering, SSRC change and rollover; and the writer pool decrypting SRTP streams into
// record files that hold the plain RTP byte for byte.
//
// MKI: RFC 4568's own examples (and the vendor-style line "...|2^20|1:4") carry a master key
// identifier. parse_sdes refuses any MKI, with a reason naming it (the packets would carry
// an MKI field between payload and tag, and a key list could change keys mid-call); the same
// key without the MKI is accepted. SrtpTest.Rfc4568ExamplesWithMkiAreRefusedWithoutItAccepted
// pins this decision.
#include "fileio/srtp.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "fileio/record_reader.hpp"
#include "fileio/rtp.hpp"
#include "fileio/writer_pool.hpp"

namespace callrec::fileio {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Bytes = std::vector<std::uint8_t>;

constexpr std::array<SrtpSuite, 6> kAllSuites{SrtpSuite::kAesCm128HmacSha1_80, SrtpSuite::kAesCm128HmacSha1_32,
                                              SrtpSuite::kAes256CmHmacSha1_80, SrtpSuite::kAes256CmHmacSha1_32,
                                              SrtpSuite::kAeadAes128Gcm,       SrtpSuite::kAeadAes256Gcm};

std::size_t tag_len(SrtpSuite s) {
  switch (s) {
    case SrtpSuite::kAesCm128HmacSha1_80:
    case SrtpSuite::kAes256CmHmacSha1_80:
      return 10;
    case SrtpSuite::kAesCm128HmacSha1_32:
    case SrtpSuite::kAes256CmHmacSha1_32:
      return 4;
    case SrtpSuite::kAeadAes128Gcm:
    case SrtpSuite::kAeadAes256Gcm:
      return 16;
  }
  return 0;
}

Bytes hex(std::string_view h) {
  Bytes out;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2) {
    out.push_back(static_cast<std::uint8_t>(std::stoul(std::string(h.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

SdesCrypto crypto(SrtpSuite suite, Bytes key_salt) {
  SdesCrypto c;
  c.suite = suite;
  c.key_salt = std::move(key_salt);
  return c;
}

/// A 172-byte PCMA packet (12-byte header + 160 bytes) with a payload unique to (ssrc, seq),
/// and room for the SRTP tag behind it.
Bytes rtp_packet(std::uint32_t ssrc, std::uint16_t seq, std::size_t payload = 160) {
  std::vector<std::byte> p(12 + payload);
  write_rtp_header(p.data(), 8, false, seq, std::uint32_t{seq} * 160u, ssrc);
  for (std::size_t k = 12; k < p.size(); ++k) p[k] = static_cast<std::byte>((ssrc * 13u + seq * 7u + k) & 0xFF);
  Bytes b(p.size());
  std::memcpy(b.data(), p.data(), p.size());
  return b;
}

/// Protects a copy of rtp; the SRTP packet is returned.
Bytes protect(SrtpSender& tx, const Bytes& rtp) {
  Bytes b = rtp;
  b.resize(rtp.size() + 16);
  const std::size_t n = tx.protect(b.data(), rtp.size(), b.size());
  EXPECT_NE(n, 0u);
  b.resize(n);
  return b;
}

/// Unprotects a copy of srtp; *plain gets the RTP on kOk.
SrtpReceiver::Result unprotect(SrtpReceiver& rx, const Bytes& srtp, Bytes* plain = nullptr) {
  Bytes b = srtp;
  std::size_t n = 0;
  const SrtpReceiver::Result r = rx.unprotect(b.data(), b.size(), &n);
  if (r == SrtpReceiver::Result::kOk && plain != nullptr) {
    b.resize(n);
    *plain = b;
  }
  return r;
}

// ---- parse_sdes ---------------------------------------------------------------------------

TEST(SrtpTest, Rfc4568ExamplesWithMkiAreRefusedWithoutItAccepted) {
  SdesCrypto c;
  std::string why;
  // RFC 4568 section 4 and the vendor-style line of the same form: lifetime 2^20, MKI 1 of 4 bytes.
  for (const char* line : {"1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32",
                           "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4",
                           "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|1:4"}) {
    SCOPED_TRACE(line);
    why.clear();
    EXPECT_FALSE(parse_sdes(line, c, &why));
    EXPECT_NE(why.find("MKI"), std::string::npos) << why;
  }
  // The same keys without the MKI.
  ASSERT_TRUE(parse_sdes("1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20", c, &why))
      << why;
  EXPECT_EQ(c.tag, 1u);
  EXPECT_EQ(c.suite, SrtpSuite::kAesCm128HmacSha1_80);
  const std::string expect = "YS___semctl () {\t220;}\n}\nunles";  // what that base64 spells
  EXPECT_EQ(std::string(c.key_salt.begin(), c.key_salt.end()), expect);
  EXPECT_FALSE(c.unencrypted_srtp);
  EXPECT_FALSE(c.unauthenticated_srtp);
  ASSERT_TRUE(parse_sdes("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", c, &why)) << why;
  EXPECT_EQ(c.key_salt, hex("3d2d6e40255e7821426a75667239293f2c2335685c603d265d7b71695051"));
}

TEST(SrtpTest, SeveralKeysAreRefused) {
  // RFC 4568 section 8.1's key list (two keys told apart by MKI).
  SdesCrypto c;
  std::string why;
  EXPECT_FALSE(parse_sdes("1 AES_CM_128_HMAC_SHA1_80 "
                          "inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj|2^20|1:32;"
                          "inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|2:32",
                          c, &why));
  EXPECT_NE(why.find("several"), std::string::npos) << why;
}

TEST(SrtpTest, VendorStyleLines) {
  SdesCrypto c;
  std::string why;
  // Whole attribute line with CRLF, lifetime as 2^31, lower-case suite name.
  ASSERT_TRUE(parse_sdes("a=crypto:3 aes_cm_128_hmac_sha1_32 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^31\r\n",
                         c, &why))
      << why;
  EXPECT_EQ(c.tag, 3u);
  EXPECT_EQ(c.suite, SrtpSuite::kAesCm128HmacSha1_32);
  // Decimal lifetime; session parameters at their defaults or hints.
  ASSERT_TRUE(parse_sdes("2 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|1048576 "
                         "KDR=0 FEC_ORDER=FEC_SRTP WSH=64 UNENCRYPTED_SRTCP",
                         c, &why))
      << why;
  EXPECT_FALSE(c.unencrypted_srtp);
  // AES-256 (RFC 6188): 46 bytes, with and without the base64 padding.
  ASSERT_TRUE(parse_sdes("1 AES_256_CM_HMAC_SHA1_80 "
                         "inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLQ==",
                         c, &why))
      << why;
  EXPECT_EQ(c.suite, SrtpSuite::kAes256CmHmacSha1_80);
  ASSERT_EQ(c.key_salt.size(), 46u);
  for (std::size_t i = 0; i < 46; ++i) EXPECT_EQ(c.key_salt[i], i);
  ASSERT_TRUE(parse_sdes("1 AES_256_CM_HMAC_SHA1_32 "
                         "inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLQ",
                         c, &why))
      << why;
  EXPECT_EQ(c.key_salt.size(), 46u);
  // AEAD (RFC 7714), as SBCs offer it for SIPREC.
  ASSERT_TRUE(parse_sdes("1 AEAD_AES_256_GCM inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKis=", c,
                         &why))
      << why;
  EXPECT_EQ(c.suite, SrtpSuite::kAeadAes256Gcm);
  EXPECT_EQ(c.key_salt.size(), 44u);
  ASSERT_TRUE(parse_sdes("2 AEAD_AES_128_GCM inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==", c, &why)) << why;
  EXPECT_EQ(c.suite, SrtpSuite::kAeadAes128Gcm);
  EXPECT_EQ(c.key_salt.size(), 28u);
  // Session parameters that change the packets.
  ASSERT_TRUE(parse_sdes("1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz "
                         "UNENCRYPTED_SRTP UNAUTHENTICATED_SRTP",
                         c, &why))
      << why;
  EXPECT_TRUE(c.unencrypted_srtp);
  EXPECT_TRUE(c.unauthenticated_srtp);
}

TEST(SrtpTest, Refusals) {
  struct Case {
    const char* line;
    const char* reason;  ///< a word the reason must contain
  };
  const Case cases[] = {
      {"1 F8_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz", "suite"},
      {"1 AES_192_CM_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz", "suite"},
      {"1 AES_CM_128_HMAC_SHA1_80 inline:WVNf*19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz", "base64"},
      {"1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzA", "base64"},  // dangling char
      {"1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubA==", "bytes"},   // 29 bytes
      {"1 AES_256_CM_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz", "46"},      // a 128-bit key
      {"1 AEAD_AES_128_GCM inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz", "28"},            // 30 bytes for 28
      {"1 AES_CM_128_HMAC_SHA1_80 WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz", "inline"},
      {"1 AES_CM_128_HMAC_SHA1_80", "key"},
      {"x AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz", "tag"},
      {"", "tag"},
      {"1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^x", "lifetime"},
      {"1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|2^30", "lifetime"},
      {"1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz KDR=10", "KDR"},
      {"1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz FEC_ORDER=SRTP_FEC", "FEC_ORDER"},
      {"1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz "
       "FEC_KEY=inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
       "FEC_KEY"},
      {"1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz WSH=big", "WSH"},
      {"1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz FOO=1", "unknown"},
      {"1 AEAD_AES_128_GCM inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw== UNENCRYPTED_SRTP", "AEAD"},
      {"1 AEAD_AES_256_GCM inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKis= UNAUTHENTICATED_SRTP",
       "AEAD"},
  };
  for (const Case& tc : cases) {
    SCOPED_TRACE(tc.line);
    SdesCrypto c;
    c.tag = 77;  // untouched on failure
    std::string why;
    EXPECT_FALSE(parse_sdes(tc.line, c, &why));
    EXPECT_NE(why.find(tc.reason), std::string::npos) << why;
    EXPECT_EQ(c.tag, 77u);
    EXPECT_FALSE(parse_sdes(tc.line, c));  // no reason wanted: no crash
  }
}

TEST(SrtpTest, AnswerHasAFreshKeyAndFormatsBackToItself) {
  for (SrtpSuite s : kAllSuites) {
    SCOPED_TRACE(srtp_suite_name(s));
    SdesCrypto offer = crypto(s, Bytes(srtp_key_salt_len(s), 0x5A));
    offer.tag = 7;
    const SdesCrypto a = make_sdes_answer(offer);
    const SdesCrypto b = make_sdes_answer(offer);
    EXPECT_EQ(a.tag, 7u);
    EXPECT_EQ(a.suite, s);
    ASSERT_EQ(a.key_salt.size(), srtp_key_salt_len(s));
    EXPECT_NE(a.key_salt, offer.key_salt);
    EXPECT_NE(a.key_salt, b.key_salt);
    const std::string line = format_sdes(a);
    EXPECT_EQ(line.rfind("7 " + std::string(srtp_suite_name(s)) + " inline:", 0), 0u) << line;
    SdesCrypto back;
    std::string why;
    ASSERT_TRUE(parse_sdes(line, back, &why)) << why << ": " << line;
    EXPECT_EQ(back.key_salt, a.key_salt);
    EXPECT_EQ(back.suite, s);
    EXPECT_EQ(back.tag, 7u);
  }
  SdesCrypto offer = crypto(SrtpSuite::kAesCm128HmacSha1_80, Bytes(30, 1));
  offer.unencrypted_srtp = true;
  const SdesCrypto a = make_sdes_answer(offer);
  EXPECT_TRUE(a.unencrypted_srtp);
  EXPECT_NE(format_sdes(a).find(" UNENCRYPTED_SRTP"), std::string::npos);
  EXPECT_EQ(srtp_key_salt_len(SrtpSuite::kAesCm128HmacSha1_80), 30u);
  EXPECT_EQ(srtp_key_salt_len(SrtpSuite::kAes256CmHmacSha1_32), 46u);
  EXPECT_EQ(srtp_key_salt_len(SrtpSuite::kAeadAes128Gcm), 28u);
  EXPECT_EQ(srtp_key_salt_len(SrtpSuite::kAeadAes256Gcm), 44u);
}

// ---- known answers -----------------------------------------------------------------------
// libsrtp's reference packets (test/srtp_driver.c, srtp_validate*): SSRC 0xcafebabe, seq 0x1234,
// 16 bytes of 0xab. The AES-CM-128 master key and salt are RFC 3711 appendix B.3's.

const char* const kPlain = "800f1234decafbadcafebabeabababababababababababababababab";
const char* const kRfc3711Key = "e1f97a0d3e018be0d64fa32c06de4139"  // master key
                                "0ec675ad498afeebb6960b3aabe6";     // master salt

struct KnownAnswer {
  const char* name;
  SrtpSuite suite;
  bool unencrypted;
  const char* key_salt;
  const char* srtp;
};

const KnownAnswer kKnown[] = {
    {"AES_CM_128_HMAC_SHA1_80", SrtpSuite::kAesCm128HmacSha1_80, false, kRfc3711Key,
     "800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb"},
    {"AES_CM_128_HMAC_SHA1_80 UNENCRYPTED_SRTP", SrtpSuite::kAesCm128HmacSha1_80, true, kRfc3711Key,
     "800f1234decafbadcafebabeabababababababababababababababababa136270b679134ce9b"},
    {"AES_256_CM_HMAC_SHA1_80", SrtpSuite::kAes256CmHmacSha1_80, false,
     "f0f04914b513f2763a1b1fa130f10e2998f6f6e43e4309d1e622a0e332b9f1b6"
     "3b04803de51ee7c96423ab5b78d2",
     "800f1234decafbadcafebabef1d9de17ff251ff1aa007774b0b4b40da08d9d9a5b3a55d8873b"},
    {"AEAD_AES_128_GCM", SrtpSuite::kAeadAes128Gcm, false, "000102030405060708090a0b0c0d0e0fa0a1a2a3a4a5a6a7a8a9aaab",
     "800f1234decafbadcafebabec5002ede04cfdd2eb91159e0880aa06ed2976826f796b201df3131a127e8a392"},
};

TEST(SrtpTest, ReferencePacketsBothWays) {
  for (const KnownAnswer& ka : kKnown) {
    SCOPED_TRACE(ka.name);
    SdesCrypto c = crypto(ka.suite, hex(ka.key_salt));
    c.unencrypted_srtp = ka.unencrypted;
    std::string why;
    auto tx = SrtpSender::create(c, &why);
    ASSERT_NE(tx, nullptr) << why;
    auto rx = SrtpReceiver::create(c, &why);
    ASSERT_NE(rx, nullptr) << why;
    EXPECT_EQ(protect(*tx, hex(kPlain)), hex(ka.srtp)) << "sender output differs from the reference";
    Bytes plain;
    ASSERT_EQ(unprotect(*rx, hex(ka.srtp), &plain), SrtpReceiver::Result::kOk);
    EXPECT_EQ(plain, hex(kPlain));
  }
}

// ---- round trips and failures ------------------------------------------------------------

struct Variant {
  SrtpSuite suite;
  bool unencrypted;
  bool unauthenticated;
};

std::vector<Variant> variants() {
  std::vector<Variant> v;
  for (SrtpSuite s : kAllSuites) v.push_back({s, false, false});
  for (SrtpSuite s : {SrtpSuite::kAesCm128HmacSha1_80, SrtpSuite::kAesCm128HmacSha1_32,
                      SrtpSuite::kAes256CmHmacSha1_80, SrtpSuite::kAes256CmHmacSha1_32}) {
    v.push_back({s, true, false});
    v.push_back({s, false, true});
    v.push_back({s, true, true});
  }
  return v;
}

std::string describe(const Variant& v) {
  return std::string(srtp_suite_name(v.suite)) + (v.unencrypted ? " UNENCRYPTED_SRTP" : "") +
         (v.unauthenticated ? " UNAUTHENTICATED_SRTP" : "");
}

SdesCrypto random_key(const Variant& v) {
  SdesCrypto c = make_sdes_answer(crypto(v.suite, {}));
  c.unencrypted_srtp = v.unencrypted;
  c.unauthenticated_srtp = v.unauthenticated;
  return c;
}

TEST(SrtpTest, RoundTripEverySuiteByteExact) {
  for (const Variant& v : variants()) {
    SCOPED_TRACE(describe(v));
    const SdesCrypto c = random_key(v);
    std::string why;
    auto tx = SrtpSender::create(c, &why);
    ASSERT_NE(tx, nullptr) << why;
    auto rx = SrtpReceiver::create(c, &why);
    ASSERT_NE(rx, nullptr) << why;
    const std::size_t tag = v.unauthenticated ? 0 : tag_len(v.suite);
    for (std::uint16_t seq = 100; seq < 300; ++seq) {
      const Bytes rtp = rtp_packet(0x11223344, seq);
      const Bytes srtp = protect(*tx, rtp);
      ASSERT_EQ(srtp.size(), rtp.size() + tag);
      EXPECT_TRUE(std::equal(rtp.begin(), rtp.begin() + 12, srtp.begin())) << "header stays in clear";
      const bool payload_same = std::equal(rtp.begin() + 12, rtp.end(), srtp.begin() + 12);
      EXPECT_EQ(payload_same, v.unencrypted) << "seq " << seq;
      Bytes plain;
      ASSERT_EQ(unprotect(*rx, srtp, &plain), SrtpReceiver::Result::kOk) << "seq " << seq;
      ASSERT_EQ(plain, rtp) << "seq " << seq;
    }
  }
}

TEST(SrtpTest, TamperedPacketFailsAuthentication) {
  for (SrtpSuite s : kAllSuites) {
    SCOPED_TRACE(srtp_suite_name(s));
    const SdesCrypto c = random_key({s, false, false});
    auto tx = SrtpSender::create(c);
    auto rx = SrtpReceiver::create(c);
    ASSERT_TRUE(tx && rx);
    const Bytes srtp = protect(*tx, rtp_packet(1, 10));
    for (std::size_t at : {std::size_t{3}, std::size_t{20}, srtp.size() - 1}) {  // header, payload, tag
      Bytes bad = srtp;
      bad[at] ^= 0x01;
      EXPECT_EQ(unprotect(*rx, bad), SrtpReceiver::Result::kAuthFailed) << "byte " << at;
    }
    // A failed packet does not enter the replay window: the genuine one still decrypts.
    EXPECT_EQ(unprotect(*rx, srtp), SrtpReceiver::Result::kOk);
    // Another key.
    auto other = SrtpReceiver::create(random_key({s, false, false}));
    ASSERT_NE(other, nullptr);
    EXPECT_EQ(unprotect(*other, srtp), SrtpReceiver::Result::kAuthFailed);
  }
}

TEST(SrtpTest, ReplayIsRefusedReorderingAccepted) {
  const SdesCrypto c = random_key({SrtpSuite::kAesCm128HmacSha1_80, false, false});
  auto tx = SrtpSender::create(c);
  auto rx = SrtpReceiver::create(c);
  ASSERT_TRUE(tx && rx);
  std::vector<Bytes> pkts;
  for (std::uint16_t seq = 1000; seq < 1300; ++seq) pkts.push_back(protect(*tx, rtp_packet(5, seq)));
  EXPECT_EQ(unprotect(*rx, pkts[0]), SrtpReceiver::Result::kOk);
  EXPECT_EQ(unprotect(*rx, pkts[0]), SrtpReceiver::Result::kReplayed);
  // Reordered inside the 128-packet window: 2 before 1, then 100 before 3..99.
  EXPECT_EQ(unprotect(*rx, pkts[2]), SrtpReceiver::Result::kOk);
  EXPECT_EQ(unprotect(*rx, pkts[1]), SrtpReceiver::Result::kOk);
  EXPECT_EQ(unprotect(*rx, pkts[100]), SrtpReceiver::Result::kOk);
  for (std::size_t i = 3; i < 100; ++i) EXPECT_EQ(unprotect(*rx, pkts[i]), SrtpReceiver::Result::kOk) << i;
  EXPECT_EQ(unprotect(*rx, pkts[50]), SrtpReceiver::Result::kReplayed);
  // Older than the window.
  EXPECT_EQ(unprotect(*rx, pkts[299]), SrtpReceiver::Result::kOk);
  EXPECT_EQ(unprotect(*rx, pkts[101]), SrtpReceiver::Result::kReplayed);
}

TEST(SrtpTest, NewSsrcAndSequenceRolloverDecrypt) {
  const SdesCrypto c = random_key({SrtpSuite::kAeadAes128Gcm, false, false});
  auto tx = SrtpSender::create(c);
  auto rx = SrtpReceiver::create(c);
  ASSERT_TRUE(tx && rx);
  // Across the 16-bit wrap (the rollover counter moves to 1 on both sides).
  for (std::uint32_t i = 0; i < 200; ++i) {
    const Bytes rtp = rtp_packet(0xAAAA, static_cast<std::uint16_t>(65436 + i));
    Bytes plain;
    ASSERT_EQ(unprotect(*rx, protect(*tx, rtp), &plain), SrtpReceiver::Result::kOk) << i;
    ASSERT_EQ(plain, rtp);
  }
  // The sender restarts with a new SSRC under the same key (ssrc_any_inbound).
  for (std::uint16_t seq = 7; seq < 50; ++seq) {
    const Bytes rtp = rtp_packet(0xBBBB, seq);
    Bytes plain;
    ASSERT_EQ(unprotect(*rx, protect(*tx, rtp), &plain), SrtpReceiver::Result::kOk) << seq;
    ASSERT_EQ(plain, rtp);
  }
  // The first SSRC is still known (its replay state kept).
  const Bytes rtp = rtp_packet(0xAAAA, 200);
  EXPECT_EQ(unprotect(*rx, protect(*tx, rtp)), SrtpReceiver::Result::kOk);
}

TEST(SrtpTest, BadInputAndBadKeys) {
  const SdesCrypto c = random_key({SrtpSuite::kAesCm128HmacSha1_80, false, false});
  auto tx = SrtpSender::create(c);
  auto rx = SrtpReceiver::create(c);
  ASSERT_TRUE(tx && rx);
  Bytes tiny = {0x80, 0x08, 0x00};
  std::size_t n = 0;
  EXPECT_EQ(rx->unprotect(tiny.data(), tiny.size(), &n), SrtpReceiver::Result::kError);
  Bytes rtp = rtp_packet(1, 1);
  const std::size_t len = rtp.size();
  rtp.resize(len + 9);
  EXPECT_EQ(tx->protect(rtp.data(), len, len + 9), 0u) << "no room for the 10-byte tag";
  rtp.resize(len + 10);
  EXPECT_EQ(tx->protect(rtp.data(), len, len + 10), len + 10);

  std::string why;
  EXPECT_EQ(SrtpReceiver::create(crypto(SrtpSuite::kAesCm128HmacSha1_80, Bytes(29, 1)), &why), nullptr);
  EXPECT_NE(why.find("30"), std::string::npos) << why;
  EXPECT_EQ(SrtpSender::create(crypto(SrtpSuite::kAeadAes256Gcm, Bytes(46, 1)), &why), nullptr);
  EXPECT_NE(why.find("44"), std::string::npos) << why;
}

// ---- writer pool ---------------------------------------------------------------------------

class SrtpWriterPoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "callrec_srtp_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << "mkdtemp: " << std::strerror(errno);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }
  WriterOptions wopts(StreamId s) {
    WriterOptions o;
    o.directory = dir_ / ("s" + std::to_string(s));
    fs::create_directories(o.directory);
    o.tag = "s" + std::to_string(s);
    o.reserve_bytes = 0;
    o.free_space = [](const fs::path&, std::uint64_t& free_bytes) {
      free_bytes = 1ull << 40;
      return Status::ok();
    };
    return o;
  }
  static void push(PacketRing& ring, StreamId s, RecordKind kind, std::uint64_t ns, const Bytes& data) {
    std::vector<std::byte> b(data.size());
    if (!data.empty()) std::memcpy(b.data(), data.data(), data.size());
    while (!ring.push(s, kind, ns, b)) {
      ring.publish();
      std::this_thread::yield();
    }
  }
  bool collect_closed(WriterPool& pool, std::vector<WriterEvent>& events, std::size_t n) {
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    for (;;) {
      const auto closed = std::count_if(events.begin(), events.end(),
                                        [](const WriterEvent& e) { return e.kind == WriterEventKind::kStreamClosed; });
      if (static_cast<std::size_t>(closed) >= n) return true;
      if (std::chrono::steady_clock::now() > deadline) return false;
      pollfd pfd{pool.event_fd(), POLLIN, 0};
      (void)::poll(&pfd, 1, 50);
      pool.poll_events(events);
    }
  }
  static const WriterEvent* find(const std::vector<WriterEvent>& ev, WriterEventKind kind, StreamId s) {
    for (const auto& e : ev) {
      if (e.kind == kind && e.stream == s) return &e;
    }
    return nullptr;
  }
  fs::path dir_;
};

TEST_F(SrtpWriterPoolTest, DecryptsIntoPlainRecordFilesAndCountsFailures) {
  constexpr std::uint16_t kPackets = 200;
  struct StreamPlan {
    StreamId id;
    std::shared_ptr<const SdesCrypto> key;  ///< null: a plain RTP stream
    bool usable_key = true;                 ///< false: the receiver cannot be created
  };
  auto key_of = [](SrtpSuite s) {
    return std::make_shared<const SdesCrypto>(make_sdes_answer(crypto(s, {})));
  };
  const std::vector<StreamPlan> plan = {
      {1, key_of(SrtpSuite::kAesCm128HmacSha1_80)},
      {2, key_of(SrtpSuite::kAeadAes256Gcm)},
      {3, nullptr},
      {4, std::make_shared<const SdesCrypto>(crypto(SrtpSuite::kAesCm128HmacSha1_80, Bytes(10, 1))), false},
  };

  WriterPoolOptions po;  // 1 writer, 1 producer
  po.ring_bytes = 64 << 10;
  WriterPool pool(po);
  pool.start();
  for (const StreamPlan& sp : plan) {
    AssemblerOptions ao;
    ao.srtp = sp.key;
    pool.open_stream(sp.id, wopts(sp.id), ao);
  }

  // Expected plain packets per stream, and what each stream should count as srtp_failed.
  std::map<StreamId, std::vector<Bytes>> expect;
  std::map<StreamId, std::uint64_t> failures;
  {
    std::vector<std::unique_ptr<SrtpSender>> tx(plan.size());
    for (std::size_t i = 0; i < plan.size(); ++i) {
      if (plan[i].key && plan[i].usable_key) tx[i] = SrtpSender::create(*plan[i].key);
    }
    PacketRing& ring = pool.rings().ring(0, 0);
    std::vector<std::vector<Bytes>> wire(plan.size());
    for (std::uint16_t seq = 0; seq < kPackets; ++seq) {
      for (std::size_t i = 0; i < plan.size(); ++i) {
        const StreamPlan& sp = plan[i];
        const Bytes rtp = rtp_packet(0x5000 + sp.id, seq);
        expect[sp.id].push_back(rtp);
        wire[i].push_back(tx[i] ? protect(*tx[i], rtp) : rtp);
      }
    }
    // Wire order per stream: every 20th packet is preceded by a tampered copy and followed by a
    // replay of itself; packets 50 and 51 swap places (reordering the assembler repairs).
    for (std::size_t i = 0; i < plan.size(); ++i) std::swap(wire[i][50], wire[i][51]);
    for (std::uint16_t seq = 0; seq < kPackets; ++seq) {
      for (std::size_t i = 0; i < plan.size(); ++i) {
        const StreamPlan& sp = plan[i];
        const std::uint64_t ns = 1'000'000'000ull + std::uint64_t{seq} * 20'000'000ull;
        const Bytes& pkt = wire[i][seq];
        const bool bad_ones = sp.key != nullptr && seq % 20 == 7;
        if (bad_ones) {
          Bytes tampered = pkt;
          tampered[40] ^= 0x80;
          push(ring, sp.id, RecordKind::kPacket, ns, tampered);
        }
        push(ring, sp.id, RecordKind::kPacket, ns, pkt);
        if (bad_ones) push(ring, sp.id, RecordKind::kPacket, ns, pkt);
        if (seq % 32 == 0) ring.publish();
      }
    }
    for (const StreamPlan& sp : plan) push(ring, sp.id, RecordKind::kEndOfStream, 0, {});
    ring.publish();
    failures[1] = failures[2] = 2 * (kPackets / 20);
    failures[3] = 0;
    failures[4] = kPackets + 2 * (kPackets / 20);  // no receiver: every packet
  }

  std::vector<WriterEvent> ev;
  ASSERT_TRUE(collect_closed(pool, ev, plan.size()));
  std::uint64_t total_failed = 0;
  for (const StreamPlan& sp : plan) {
    SCOPED_TRACE("stream " + std::to_string(sp.id));
    const WriterEvent* closed = find(ev, WriterEventKind::kStreamClosed, sp.id);
    ASSERT_NE(closed, nullptr);
    EXPECT_EQ(closed->counters.srtp_failed, failures[sp.id]);
    total_failed += failures[sp.id];
    EXPECT_EQ(find(ev, WriterEventKind::kError, sp.id), nullptr);
    if (!sp.usable_key) {
      EXPECT_EQ(closed->counters.received, 0u);
      EXPECT_EQ(find(ev, WriterEventKind::kSegmentClosed, sp.id), nullptr) << "nothing recorded";
      continue;
    }
    EXPECT_EQ(closed->counters.received, kPackets);
    EXPECT_EQ(closed->counters.written, kPackets);
    EXPECT_EQ(closed->counters.reordered, 1u);
    EXPECT_EQ(closed->counters.duplicate, 0u) << "replays are SRTP's to refuse";
    EXPECT_EQ(closed->counters.lost, 0u);
    const WriterEvent* seg = find(ev, WriterEventKind::kSegmentClosed, sp.id);
    ASSERT_NE(seg, nullptr);
    EXPECT_EQ(seg->seg.rtp_len, 172u) << "the tag is not recorded";
    RecordReader reader;
    ASSERT_TRUE(reader.open(seg->seg.path)) << seg->seg.path;
    EXPECT_EQ(reader.info().integrity, Integrity::kOk);
    ASSERT_EQ(reader.packet_count(), kPackets);
    for (std::uint16_t seq = 0; seq < kPackets; ++seq) {
      const auto pkt = reader.next();
      ASSERT_TRUE(pkt.has_value()) << seq;
      const Bytes& want = expect[sp.id][seq];
      ASSERT_EQ(pkt->size(), want.size()) << seq;
      const auto got = rtp_payload(*pkt);
      ASSERT_TRUE(got.has_value()) << seq;
      ASSERT_EQ(std::memcmp(got->data(), want.data() + 12, 160), 0) << "payload of seq " << seq;
      ASSERT_EQ(std::memcmp(pkt->data(), want.data(), want.size()), 0) << "packet " << seq;
    }
    EXPECT_FALSE(reader.next().has_value());
  }
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (pool.stats().assembler.srtp_failed != total_failed && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(pool.stats().assembler.srtp_failed, total_failed);
  pool.stop();
}

}  // namespace
}  // namespace callrec::fileio
