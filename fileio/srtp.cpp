// SDES (RFC 4568) parsing and SRTP decryption with libsrtp2. See srtp.hpp.
//
// Policies. The receive side is one srtp_t per recorded stream with an ssrc_any_inbound
// policy: a new SSRC under the same key (a re-INVITE, an SBC that restarts the stream) gets
// its own stream state, cloned by libsrtp from the template only after its first packet
// authenticated, so forged packets with random SSRCs allocate nothing. Replay window: libsrtp's
// 128 packets, so reordering inside it is accepted (the assembler puts packets back in order)
// and a duplicate or a packet older than the window is refused (kReplayed).
//
// Session parameters map onto libsrtp's crypto policies: UNENCRYPTED_SRTP -> the null cipher
// (keys still come from the suite's AES-CM KDF), UNAUTHENTICATED_SRTP -> no tag. The RTCP policy
// is always the suite's full policy: we never process SRTCP, but libsrtp sizes the master key it
// reads from the larger of the RTP and RTCP ciphers, and the null cipher alone would make it
// read 30 bytes of an AES-256 key||salt.
//
// Debian 12's libsrtp2 (2.5.0) is built against NSS, which provides AES-GCM: all six suites of
// the header work. The NSS backend creates an NSS cipher context per packet inside libsrtp
// (aes_icm_nss.c set_iv); that allocation is libsrtp's, not ours (bench/srtp_bench.cpp measures
// the cost per packet with it).
#include "fileio/srtp.hpp"

#include <srtp2/crypto_types.h>
#include <srtp2/srtp.h>
#include <dlfcn.h>
#include <sys/random.h>

#include <array>
#include <cerrno>
#include <climits>
#include <cstring>
#include <mutex>
#include <system_error>

namespace callrec::fileio {

namespace {

struct SuiteInfo {
  SrtpSuite suite;
  const char* name;
  std::size_t key_salt_len;
  std::size_t tag_len;
  bool aead;
};

constexpr std::array<SuiteInfo, 6> kSuites{{
    {SrtpSuite::kAesCm128HmacSha1_80, "AES_CM_128_HMAC_SHA1_80", SRTP_AES_ICM_128_KEY_LEN_WSALT, 10, false},
    {SrtpSuite::kAesCm128HmacSha1_32, "AES_CM_128_HMAC_SHA1_32", SRTP_AES_ICM_128_KEY_LEN_WSALT, 4, false},
    {SrtpSuite::kAes256CmHmacSha1_80, "AES_256_CM_HMAC_SHA1_80", SRTP_AES_ICM_256_KEY_LEN_WSALT, 10, false},
    {SrtpSuite::kAes256CmHmacSha1_32, "AES_256_CM_HMAC_SHA1_32", SRTP_AES_ICM_256_KEY_LEN_WSALT, 4, false},
    {SrtpSuite::kAeadAes128Gcm, "AEAD_AES_128_GCM", SRTP_AES_GCM_128_KEY_LEN_WSALT, 16, true},
    {SrtpSuite::kAeadAes256Gcm, "AEAD_AES_256_GCM", SRTP_AES_GCM_256_KEY_LEN_WSALT, 16, true},
}};

const SuiteInfo& info(SrtpSuite s) {
  for (const SuiteInfo& i : kSuites) {
    if (i.suite == s) return i;
  }
  return kSuites[0];  // unreachable for a valid enum value
}

bool fail(std::string* why, std::string msg) {
  if (why != nullptr) *why = std::move(msg);
  return false;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/// The next whitespace-separated token of s (s advances past it); empty at the end.
std::string_view next_token(std::string_view& s) {
  std::size_t i = 0;
  while (i < s.size() && is_space(s[i])) ++i;
  std::size_t j = i;
  while (j < s.size() && !is_space(s[j])) ++j;
  std::string_view tok = s.substr(i, j - i);
  s.remove_prefix(j);
  return tok;
}

// ---- base64 (RFC 4648, standard alphabet) ------------------------------------------------

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int b64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

/// Decodes base64 with or without its '=' padding (equipment omits it); false on any other
/// byte, on a dangling single character, or on padding in the middle.
bool base64_decode(std::string_view in, std::vector<std::uint8_t>& out) {
  while (!in.empty() && in.back() == '=') in.remove_suffix(1);
  if (in.size() % 4 == 1) return false;
  out.clear();
  out.reserve(in.size() * 3 / 4);
  std::uint32_t acc = 0;
  unsigned bits = 0;
  for (char c : in) {
    const int v = b64_value(c);
    if (v < 0) return false;
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<std::uint8_t>((acc >> bits) & 0xFF));
    }
  }
  return true;
}

std::string base64_encode(const std::vector<std::uint8_t>& in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const std::uint32_t v = (std::uint32_t{in[i]} << 16) | (std::uint32_t{in[i + 1]} << 8) | in[i + 2];
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += kB64[v & 63];
  }
  if (i + 1 == in.size()) {
    const std::uint32_t v = std::uint32_t{in[i]} << 16;
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    const std::uint32_t v = (std::uint32_t{in[i]} << 16) | (std::uint32_t{in[i + 1]} << 8);
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

// ---- libsrtp -------------------------------------------------------------------------------

/// NSS_InitContext (nss.h), reached through dlsym: libsrtp2 links NSS, we do not.
using NssInitContextFn = void* (*)(const char* configdir, const char* cert_prefix, const char* key_prefix,
                                   const char* secmod_name, void* init_params, unsigned flags);
constexpr unsigned kNssInitFlags = 0x1 /*READONLY*/ | 0x2 /*NOCERTDB*/ | 0x4 /*NOMODDB*/ | 0x8 /*FORCEOPEN*/;

/// Debian's libsrtp2 is built against NSS and initialises it with NSS_INIT_OPTIMIZESPACE: the
/// NSS software token then keeps its sessions and key objects in 32-bucket hash tables, and
/// every packet looks its key up there (libsrtp makes an NSS cipher context per packet). The
/// cost per packet grows with the streams open: AES_CM_128_HMAC_SHA1_80 ~3 us at 100 streams,
/// ~17 us at 1,000, ~105 us at 5,000. Initialised first without that flag, NSS takes its
/// 1024-bucket tables and libsrtp's later NSS_InitContext calls join that initialisation:
/// ~7-10 us at 1,000, ~20 us at 5,000 (measured on this 2-core VM, bench/RESULTS.md). The
/// reference is never released. Without NSS (libsrtp built on OpenSSL) the symbol is absent and
/// nothing is done.
void init_nss_for_many_keys() {
  void* sym = ::dlsym(RTLD_DEFAULT, "NSS_InitContext");
  if (sym == nullptr) return;
  NssInitContextFn fn = nullptr;
  static_assert(sizeof fn == sizeof sym);
  std::memcpy(&fn, &sym, sizeof fn);
  (void)fn("", "", "", "", nullptr, kNssInitFlags);  // a failure leaves NSS to libsrtp's flags
}

/// srtp_init() once per process, from whichever thread needs libsrtp first.
///
/// With the NSS backend every libsrtp cipher holds an NSS_InitContext reference, and NSS shuts
/// down (dlclose of softokn, ...) when the last one goes: the next stream open would then
/// initialise NSS again, ~3.5 ms of CPU on the writer thread (bench/srtp_bench.cpp,
/// BM_CreateReceiver). One session made here and never freed keeps NSS up for the process.
srtp_err_status_t init_once() {
  static std::once_flag once;
  static srtp_err_status_t status = srtp_err_status_ok;
  std::call_once(once, [] {
    init_nss_for_many_keys();
    status = srtp_init();
    if (status != srtp_err_status_ok) return;
    srtp_policy_t policy;
    std::memset(&policy, 0, sizeof policy);
    srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&policy.rtp);
    srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy.rtcp);
    policy.ssrc.type = ssrc_any_inbound;
    std::array<unsigned char, SRTP_MAX_KEY_LEN> key{};
    policy.key = key.data();
    policy.window_size = 128;
    static srtp_t keep_alive = nullptr;  // intentionally never freed
    (void)srtp_create(&keep_alive, &policy);  // a failure only costs the re-initialisations
  });
  return status;
}

/// The RTP crypto policy of c (suite and session parameters).
void set_rtp_policy(const SdesCrypto& c, srtp_crypto_policy_t& p) {
  switch (c.suite) {
    case SrtpSuite::kAesCm128HmacSha1_80:
      srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&p);
      break;
    case SrtpSuite::kAesCm128HmacSha1_32:
      srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&p);
      break;
    case SrtpSuite::kAes256CmHmacSha1_80:
      srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(&p);
      break;
    case SrtpSuite::kAes256CmHmacSha1_32:
      srtp_crypto_policy_set_aes_cm_256_hmac_sha1_32(&p);
      break;
    case SrtpSuite::kAeadAes128Gcm:
      srtp_crypto_policy_set_aes_gcm_128_16_auth(&p);
      return;  // AEAD: no session parameters apply (parse_sdes refuses them)
    case SrtpSuite::kAeadAes256Gcm:
      srtp_crypto_policy_set_aes_gcm_256_16_auth(&p);
      return;
  }
  if (c.unencrypted_srtp) {
    // cipher_key_len stays the suite's: the KDF (AES-CM of that size) still derives the
    // authentication key from the full master key.
    p.cipher_type = SRTP_NULL_CIPHER;
  }
  if (c.unauthenticated_srtp) {
    p.auth_type = SRTP_NULL_AUTH;
    p.auth_key_len = 0;
    p.auth_tag_len = 0;
  }
  if (c.unencrypted_srtp && c.unauthenticated_srtp) {
    p.sec_serv = sec_serv_none;
  } else if (c.unencrypted_srtp) {
    p.sec_serv = sec_serv_auth;
  } else if (c.unauthenticated_srtp) {
    p.sec_serv = sec_serv_conf;
  }
}

/// The session of one side (ssrc_any_inbound or ssrc_any_outbound); nullptr with *why.
srtp_t create_session(const SdesCrypto& c, srtp_ssrc_type_t type, std::string* why) {
  if (const srtp_err_status_t st = init_once(); st != srtp_err_status_ok) {
    fail(why, "srtp_init failed (libsrtp error " + std::to_string(static_cast<int>(st)) + ")");
    return nullptr;
  }
  const SuiteInfo& si = info(c.suite);
  if (c.key_salt.size() != si.key_salt_len) {
    fail(why, std::string(si.name) + " needs " + std::to_string(si.key_salt_len) + " bytes of key||salt, got " +
                  std::to_string(c.key_salt.size()));
    return nullptr;
  }
  if (si.aead && (c.unencrypted_srtp || c.unauthenticated_srtp)) {
    fail(why, std::string("UNENCRYPTED_SRTP/UNAUTHENTICATED_SRTP do not apply to ") + si.name);
    return nullptr;
  }
  srtp_policy_t policy;
  std::memset(&policy, 0, sizeof policy);
  set_rtp_policy(c, policy.rtp);
  SdesCrypto full = c;  // the suite's full policy for RTCP (see the header comment)
  full.unencrypted_srtp = false;
  full.unauthenticated_srtp = false;
  set_rtp_policy(full, policy.rtcp);
  policy.ssrc.type = type;
  policy.ssrc.value = 0;
  // libsrtp derives the session keys inside srtp_create() and keeps no pointer to this buffer.
  std::array<unsigned char, SRTP_MAX_KEY_LEN> key{};
  std::memcpy(key.data(), c.key_salt.data(), c.key_salt.size());
  policy.key = key.data();
  policy.window_size = 128;  // reordering up to 128 packets back; older or repeated: replay
  policy.allow_repeat_tx = 0;
  policy.next = nullptr;
  srtp_t session = nullptr;
  const srtp_err_status_t st = srtp_create(&session, &policy);
  std::fill(key.begin(), key.end(), static_cast<unsigned char>(0));
  if (st != srtp_err_status_ok) {
    fail(why, "libsrtp refused the key (srtp_create error " + std::to_string(static_cast<int>(st)) + ")");
    return nullptr;
  }
  return session;
}

}  // namespace

const char* srtp_suite_name(SrtpSuite s) { return info(s).name; }

std::size_t srtp_key_salt_len(SrtpSuite s) { return info(s).key_salt_len; }

// a=crypto:<tag> <crypto-suite> <key-params> [<session-param>]...
//   key-params = "inline:" key-salt ["|" lifetime] ["|" MKI ":" length] *(";" key-param)
bool parse_sdes(std::string_view value, SdesCrypto& out, std::string* why) {
  while (!value.empty() && is_space(value.front())) value.remove_prefix(1);
  if (istarts_with(value, "a=crypto:")) value.remove_prefix(9);  // lenient: the whole line

  SdesCrypto c;
  const std::string_view tag = next_token(value);
  if (!all_digits(tag) || tag.size() > 9) return fail(why, "tag '" + std::string(tag) + "' is not a 1-9 digit number");
  c.tag = 0;
  for (char d : tag) c.tag = c.tag * 10 + static_cast<unsigned>(d - '0');

  const std::string_view suite = next_token(value);
  if (suite.empty()) return fail(why, "no crypto suite");
  const SuiteInfo* si = nullptr;
  for (const SuiteInfo& i : kSuites) {
    if (iequals(suite, i.name)) si = &i;  // suite names are compared case-insensitively (lenient)
  }
  if (si == nullptr) return fail(why, "unsupported crypto suite '" + std::string(suite) + "'");
  c.suite = si->suite;

  const std::string_view keys = next_token(value);
  if (keys.empty()) return fail(why, "no key parameters");
  if (keys.find(';') != std::string_view::npos) {
    return fail(why, "several master keys (MKI key lists) are not supported");
  }
  if (!istarts_with(keys, "inline:")) return fail(why, "key method is not 'inline:'");
  std::string_view key_info = keys.substr(7);
  const std::size_t bar = key_info.find('|');
  const std::string_view b64 = key_info.substr(0, bar);
  std::string_view rest = bar == std::string_view::npos ? std::string_view{} : key_info.substr(bar + 1);
  bool have_lifetime = false;
  while (bar != std::string_view::npos) {
    const std::size_t next = rest.find('|');
    const std::string_view field = rest.substr(0, next);
    if (field.find(':') != std::string_view::npos) {
      // A master key identifier: every packet would carry it between payload and tag. One
      // key with an MKI could be decrypted (srtp_unprotect_mki), but the SRC's MKI is a key
      // selector we would have to track across re-keys; refused until a real SRC needs it.
      return fail(why, "MKI '" + std::string(field) + "' is not supported (offer a key without MKI)");
    }
    if (have_lifetime) return fail(why, "two lifetimes in the key parameters");
    const std::string_view digits = istarts_with(field, "2^") ? field.substr(2) : field;
    if (!all_digits(digits)) return fail(why, "bad key lifetime '" + std::string(field) + "'");
    have_lifetime = true;  // accepted and ignored: libsrtp enforces its own 2^48 limit
    if (next == std::string_view::npos) break;
    rest.remove_prefix(next + 1);
  }
  if (!base64_decode(b64, c.key_salt)) return fail(why, "key is not valid base64");
  if (c.key_salt.size() != si->key_salt_len) {
    return fail(why, std::string(si->name) + " needs " + std::to_string(si->key_salt_len) +
                         " bytes of key||salt, the key has " + std::to_string(c.key_salt.size()));
  }

  for (std::string_view p = next_token(value); !p.empty(); p = next_token(value)) {
    const std::size_t eq = p.find('=');
    const std::string_view name = p.substr(0, eq);
    const std::string_view val = eq == std::string_view::npos ? std::string_view{} : p.substr(eq + 1);
    if (name == "UNENCRYPTED_SRTP" && eq == std::string_view::npos) {
      c.unencrypted_srtp = true;
    } else if (name == "UNAUTHENTICATED_SRTP" && eq == std::string_view::npos) {
      c.unauthenticated_srtp = true;
    } else if (name == "UNENCRYPTED_SRTCP" && eq == std::string_view::npos) {
      // SRTCP is not recorded.
    } else if (name == "KDR") {
      // Key derivation rate 2^n packets; 0 (the default) means no re-derivation, the only
      // rate libsrtp implements.
      if (!all_digits(val)) return fail(why, "bad KDR value '" + std::string(val) + "'");
      if (val.find_first_not_of('0') != std::string_view::npos) {
        return fail(why, "key derivation rate KDR=" + std::string(val) + " is not supported (only 0)");
      }
    } else if (name == "FEC_ORDER") {
      if (val != "FEC_SRTP") return fail(why, "FEC_ORDER=" + std::string(val) + " is not supported");
    } else if (name == "FEC_KEY") {
      return fail(why, "FEC_KEY is not supported");
    } else if (name == "WSH") {
      // Window size hint: the receiver's choice; libsrtp's 128-packet window is kept.
      if (!all_digits(val)) return fail(why, "bad WSH value '" + std::string(val) + "'");
    } else {
      return fail(why, "unknown session parameter '" + std::string(p) + "'");
    }
  }
  if (si->aead && (c.unencrypted_srtp || c.unauthenticated_srtp)) {
    // RFC 7714: confidentiality and authentication of AEAD suites cannot be turned off.
    return fail(why, std::string("UNENCRYPTED_SRTP/UNAUTHENTICATED_SRTP are not allowed with ") + si->name);
  }
  out = std::move(c);
  return true;
}

SdesCrypto make_sdes_answer(const SdesCrypto& offer) {
  SdesCrypto a;
  a.tag = offer.tag;
  a.suite = offer.suite;
  a.unencrypted_srtp = offer.unencrypted_srtp;
  a.unauthenticated_srtp = offer.unauthenticated_srtp;
  a.key_salt.assign(srtp_key_salt_len(offer.suite), 0);
  std::size_t got = 0;
  while (got < a.key_salt.size()) {
    const ssize_t n = ::getrandom(a.key_salt.data() + got, a.key_salt.size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "getrandom");
    }
    got += static_cast<std::size_t>(n);
  }
  return a;
}

std::string format_sdes(const SdesCrypto& c) {
  std::string s = std::to_string(c.tag);
  s += ' ';
  s += srtp_suite_name(c.suite);
  s += " inline:";
  s += base64_encode(c.key_salt);
  if (c.unencrypted_srtp) s += " UNENCRYPTED_SRTP";
  if (c.unauthenticated_srtp) s += " UNAUTHENTICATED_SRTP";
  return s;
}

// ---- SrtpReceiver ----------------------------------------------------------------------------

struct SrtpReceiver::Impl {
  srtp_t session = nullptr;
  ~Impl() {
    if (session != nullptr) srtp_dealloc(session);
  }
};

SrtpReceiver::SrtpReceiver() : impl_(std::make_unique<Impl>()) {}
SrtpReceiver::~SrtpReceiver() = default;

std::unique_ptr<SrtpReceiver> SrtpReceiver::create(const SdesCrypto& remote, std::string* why) {
  srtp_t session = create_session(remote, ssrc_any_inbound, why);
  if (session == nullptr) return nullptr;
  std::unique_ptr<SrtpReceiver> r(new SrtpReceiver());
  r->impl_->session = session;
  return r;
}

SrtpReceiver::Result SrtpReceiver::unprotect(std::uint8_t* pkt, std::size_t len, std::size_t* out_len) {
  if (len > static_cast<std::size_t>(INT_MAX)) return Result::kError;
  int n = static_cast<int>(len);
  switch (srtp_unprotect(impl_->session, pkt, &n)) {
    case srtp_err_status_ok:
      if (out_len != nullptr) *out_len = static_cast<std::size_t>(n);
      return Result::kOk;
    case srtp_err_status_auth_fail:
      return Result::kAuthFailed;
    case srtp_err_status_replay_fail:
    case srtp_err_status_replay_old:
      return Result::kReplayed;
    default:
      return Result::kError;  // too short, bad header, cipher failure, key expired
  }
}

// ---- SrtpSender ------------------------------------------------------------------------------

struct SrtpSender::Impl {
  srtp_t session = nullptr;
  std::size_t tag_len = 0;
  ~Impl() {
    if (session != nullptr) srtp_dealloc(session);
  }
};

SrtpSender::SrtpSender() : impl_(std::make_unique<Impl>()) {}
SrtpSender::~SrtpSender() = default;

std::unique_ptr<SrtpSender> SrtpSender::create(const SdesCrypto& local, std::string* why) {
  srtp_t session = create_session(local, ssrc_any_outbound, why);
  if (session == nullptr) return nullptr;
  std::unique_ptr<SrtpSender> s(new SrtpSender());
  s->impl_->session = session;
  s->impl_->tag_len = local.unauthenticated_srtp ? 0 : info(local.suite).tag_len;
  return s;
}

std::size_t SrtpSender::protect(std::uint8_t* pkt, std::size_t len, std::size_t cap) {
  // libsrtp writes the tag after the packet (no MKI: nothing else).
  if (cap < len + impl_->tag_len || cap > static_cast<std::size_t>(INT_MAX)) return 0;
  int n = static_cast<int>(len);
  if (srtp_protect(impl_->session, pkt, &n) != srtp_err_status_ok) return 0;
  return static_cast<std::size_t>(n);
}

}  // namespace callrec::fileio
