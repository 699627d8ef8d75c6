#pragma once
// SRTP for recorded streams (SIPREC offers RTP/SAVP with SDES keys, RFC 4568): the key the SRC
// announces in its a=crypto line is the key it encrypts with, so the writer thread that owns
// the stream decrypts each packet with it (libsrtp2) before assembly, and the record files hold
// plain RTP. The answer carries a fresh key of our own for the same suite (we never send media,
// but SDES requires one).
//
// Only this file's .cpp includes libsrtp2. srtp_init() runs once, on first use, thread-safely.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace callrec::fileio {

/// SDES crypto suites (RFC 4568, RFC 6188, RFC 7714). Only the ones libsrtp2 implements.
enum class SrtpSuite : std::uint8_t {
  kAesCm128HmacSha1_80,  ///< AES_CM_128_HMAC_SHA1_80 (the default everyone offers)
  kAesCm128HmacSha1_32,  ///< AES_CM_128_HMAC_SHA1_32
  kAes256CmHmacSha1_80,  ///< AES_256_CM_HMAC_SHA1_80 (RFC 6188)
  kAes256CmHmacSha1_32,  ///< AES_256_CM_HMAC_SHA1_32
  kAeadAes128Gcm,        ///< AEAD_AES_128_GCM (RFC 7714)
  kAeadAes256Gcm,        ///< AEAD_AES_256_GCM
};
const char* srtp_suite_name(SrtpSuite s);
/// Master key + salt bytes of the suite (30 for AES_CM_128, 46 for AES_256_CM, 28/44 for GCM).
std::size_t srtp_key_salt_len(SrtpSuite s);

/// One a=crypto attribute.
struct SdesCrypto {
  unsigned tag = 1;
  SrtpSuite suite = SrtpSuite::kAesCm128HmacSha1_80;
  std::vector<std::uint8_t> key_salt;  ///< master key || master salt (decoded inline: key)
  bool unencrypted_srtp = false;       ///< session parameter UNENCRYPTED_SRTP
  bool unauthenticated_srtp = false;   ///< session parameter UNAUTHENTICATED_SRTP
};

/// Parses an a=crypto value ("1 AES_CM_128_HMAC_SHA1_80 inline:BASE64[|lifetime][|MKI:len]
/// [session-params]"). False, with a reason in *why, for anything we cannot decrypt: unknown
/// suite, a key of the wrong length or bad base64, several keys (MKI), KDR, FEC parameters.
/// Lifetime is accepted and ignored; UNENCRYPTED_SRTP / UNAUTHENTICATED_SRTP are honoured.
bool parse_sdes(std::string_view value, SdesCrypto& out, std::string* why = nullptr);
/// A fresh random key (getrandom) for our answer, with the offer's tag and suite and session
/// parameters.
SdesCrypto make_sdes_answer(const SdesCrypto& offer);
/// "TAG SUITE inline:BASE64" (+ session parameters).
std::string format_sdes(const SdesCrypto& c);

/// Decrypts one stream's SRTP (receive side). Not thread-safe: one writer thread owns it.
class SrtpReceiver {
 public:
  enum class Result : std::uint8_t { kOk, kAuthFailed, kReplayed, kError };
  /// nullptr with *why when libsrtp refuses the key.
  static std::unique_ptr<SrtpReceiver> create(const SdesCrypto& remote, std::string* why = nullptr);
  ~SrtpReceiver();
  SrtpReceiver(const SrtpReceiver&) = delete;
  SrtpReceiver& operator=(const SrtpReceiver&) = delete;
  /// Decrypts and authenticates `len` bytes at `pkt` in place; on kOk, *out_len is the plain
  /// RTP length (the tag is removed).
  Result unprotect(std::uint8_t* pkt, std::size_t len, std::size_t* out_len);

 private:
  SrtpReceiver();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Test and load-generator side: encrypts with a key (send side). Not thread-safe.
class SrtpSender {
 public:
  static std::unique_ptr<SrtpSender> create(const SdesCrypto& local, std::string* why = nullptr);
  ~SrtpSender();
  SrtpSender(const SrtpSender&) = delete;
  SrtpSender& operator=(const SrtpSender&) = delete;
  /// Encrypts `len` bytes of RTP at `pkt` in place; `cap` must leave room for the tag
  /// (len + 16 is always enough). Returns the SRTP length, 0 on error.
  std::size_t protect(std::uint8_t* pkt, std::size_t len, std::size_t cap);

 private:
  SrtpSender();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace callrec::fileio
