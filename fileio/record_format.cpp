// The record file header: codec table, 76-byte encode/decode with byte-order detection.
// See record_format.hpp and /work/shared/spec/record-format.md.
#include "fileio/record_format.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace callrec::fileio {
namespace {

// Indexed by Codec's value (kPcmu = 0, kPcma = 1); codec_info() relies on that order.
constexpr std::array<CodecInfo, 2> kCodecs{{
    {Codec::kPcmu, "PCMU", 0, 8000, 0xFF, 1},
    {Codec::kPcma, "PCMA", 8, 8000, 0xD5, 1},
}};
static_assert(static_cast<std::size_t>(Codec::kPcmu) == 0 && static_cast<std::size_t>(Codec::kPcma) == 1);

constexpr std::int32_t kRtpLenMin = static_cast<std::int32_t>(kRtpHeaderMin) + 1;  // >= 1 payload byte
constexpr std::int32_t kIncrementMin = 1;
constexpr std::int32_t kIncrementMax = 1000000;
constexpr std::size_t kRtpLenOffset = 64;
constexpr std::size_t kIncrementOffset = 68;

constexpr char ascii_upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; }

std::uint32_t load_u32(const std::byte* p, ByteOrder order) {
  const auto b = [p](std::size_t i) { return std::to_integer<std::uint32_t>(p[i]); };
  if (order == ByteOrder::kLittle) return b(0) | (b(1) << 8) | (b(2) << 16) | (b(3) << 24);
  return (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3);
}

void store_u32(std::byte* p, std::uint32_t v, ByteOrder order) {
  for (std::size_t i = 0; i < 4; ++i) {
    const unsigned shift = order == ByteOrder::kLittle ? 8 * i : 8 * (3 - i);
    p[i] = static_cast<std::byte>((v >> shift) & 0xFF);
  }
}

const char* order_name(ByteOrder order) { return order == ByteOrder::kLittle ? "little-endian" : "big-endian"; }

std::string hex_byte(unsigned v) {
  constexpr const char* kDigits = "0123456789ABCDEF";
  std::string s = "0x";
  s += kDigits[(v >> 4) & 0xF];
  s += kDigits[v & 0xF];
  return s;
}

/// Checks the codec field (independent of byte order): printable ASCII up to the first NUL,
/// at least one character, NUL-terminated within 64 bytes and NUL-padded after the name.
/// Appends problems; returns the name (printable part) in `name`.
void check_codec_field(std::span<const std::byte, kHeaderSize> bytes, std::string& name,
                       std::vector<std::string>& problems) {
  std::size_t n = 0;
  while (n < kCodecFieldSize && bytes[n] != std::byte{0}) ++n;
  bool printable = true;
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = std::to_integer<unsigned>(bytes[i]);
    if (c < 0x20 || c > 0x7E) {
      if (printable) {
        problems.push_back("codec field has a non-printable byte " + hex_byte(c) + " at offset " +
                           std::to_string(i) + ".");
      }
      printable = false;
      name += '?';
    } else {
      name += static_cast<char>(c);
    }
  }
  if (n == 0) {
    problems.emplace_back("codec field is empty (first byte is NUL).");
  } else if (n == kCodecFieldSize) {
    problems.emplace_back("codec field is not NUL-terminated within its 64 bytes.");
  }
  for (std::size_t i = n; i < kCodecFieldSize; ++i) {
    if (bytes[i] != std::byte{0}) {
      problems.push_back("codec field is not NUL-padded: byte " +
                         hex_byte(std::to_integer<unsigned>(bytes[i])) + " at offset " + std::to_string(i) +
                         " follows the terminating NUL.");
      break;
    }
  }
}

struct Reading {
  std::int32_t rtp_len = 0;
  std::int32_t increment = 0;
  std::uint32_t data_size = 0;
  std::vector<std::string> problems;  // integer-field problems only
};

Reading read_integers(std::span<const std::byte, kHeaderSize> bytes, ByteOrder order) {
  Reading r;
  r.rtp_len = static_cast<std::int32_t>(load_u32(bytes.data() + kRtpLenOffset, order));
  r.increment = static_cast<std::int32_t>(load_u32(bytes.data() + kIncrementOffset, order));
  r.data_size = load_u32(bytes.data() + kDataSizeOffset, order);
  if (r.rtp_len < kRtpLenMin || r.rtp_len > kMaxRtpLen) {
    r.problems.push_back("rtpLen " + std::to_string(r.rtp_len) + " (read " + order_name(order) +
                         ") is outside [" + std::to_string(kRtpLenMin) + ", " + std::to_string(kMaxRtpLen) +
                         "].");
  }
  if (r.increment < kIncrementMin || r.increment > kIncrementMax) {
    r.problems.push_back("increment " + std::to_string(r.increment) + " (read " + order_name(order) +
                         ") is outside [" + std::to_string(kIncrementMin) + ", " +
                         std::to_string(kIncrementMax) + "].");
  }
  return r;
}

}  // namespace

std::uint32_t rtp_clock_for_name(std::string_view name) {
  struct Known {
    std::string_view name;
    std::uint32_t clock;
  };
  static constexpr Known kKnown[] = {
      {"PCMA", 8000}, {"PCMU", 8000},   {"G722", 8000},   {"G729", 8000},  {"G729A", 8000},  {"G723", 8000},
      {"GSM", 8000},  {"iLBC", 8000},   {"AMR", 8000},    {"G726-16", 8000}, {"G726-24", 8000},
      {"G726-32", 8000}, {"G726-40", 8000}, {"G728", 8000}, {"speex", 8000}, {"AMR-WB", 16000},
      {"G7221", 16000}, {"SILK", 16000}, {"opus", 48000}, {"L16", 8000},    {"EVS", 16000}};
  for (const Known& k : kKnown)
    if (name.size() == k.name.size() && std::equal(name.begin(), name.end(), k.name.begin(), [](char a, char b) {
          return ascii_upper(a) == ascii_upper(b);
        }))
      return k.clock;
  return 0;
}

std::optional<Codec> codec_from_name(std::string_view name) {
  for (const CodecInfo& info : kCodecs) {
    if (name.size() == info.name.size() &&
        std::equal(name.begin(), name.end(), info.name.begin(),
                   [](char a, char b) { return ascii_upper(a) == ascii_upper(b); })) {
      return info.codec;
    }
  }
  return std::nullopt;
}

std::optional<Codec> codec_from_payload_type(std::uint8_t pt) {
  for (const CodecInfo& info : kCodecs) {
    if (info.payload_type == pt) return info.codec;
  }
  return std::nullopt;
}

const CodecInfo& codec_info(Codec c) {
  const auto i = static_cast<std::size_t>(c);
  // An out-of-range enum value (a cast from bad data) maps to PCMU rather than reading past the table.
  return i < kCodecs.size() ? kCodecs[i] : kCodecs[0];
}

std::array<std::byte, kHeaderSize> encode_header(const RecordHeader& h, ByteOrder order) {
  std::array<std::byte, kHeaderSize> out{};  // NUL padding included
  const std::size_t n = std::min(h.codec.size(), kCodecFieldSize - 1);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>(h.codec[i]);
  store_u32(out.data() + kRtpLenOffset, static_cast<std::uint32_t>(h.rtp_len), order);
  store_u32(out.data() + kIncrementOffset, static_cast<std::uint32_t>(h.increment), order);
  store_u32(out.data() + kDataSizeOffset, h.data_size, order);
  return out;
}

HeaderDecode decode_header(std::span<const std::byte, kHeaderSize> bytes) {
  HeaderDecode d;
  std::vector<std::string> codec_problems;
  check_codec_field(bytes, d.header.codec, codec_problems);

  Reading le = read_integers(bytes, ByteOrder::kLittle);
  Reading chosen;
  if (le.problems.empty()) {
    chosen = std::move(le);
    d.order = ByteOrder::kLittle;
  } else {
    Reading be = read_integers(bytes, ByteOrder::kBig);
    if (be.problems.empty()) {
      chosen = std::move(be);
      d.order = ByteOrder::kBig;
    } else {
      // Neither reading is plausible: report the little-endian one (the format's byte order).
      chosen = std::move(le);
      d.order = ByteOrder::kLittle;
      chosen.problems.push_back("the big-endian reading (rtpLen " + std::to_string(be.rtp_len) +
                                ", increment " + std::to_string(be.increment) + ") is implausible too.");
    }
  }
  d.header.rtp_len = chosen.rtp_len;
  d.header.increment = chosen.increment;
  d.header.data_size = chosen.data_size;
  d.problems = std::move(codec_problems);
  d.problems.insert(d.problems.end(), chosen.problems.begin(), chosen.problems.end());
  d.plausible = d.problems.empty();
  return d;
}

std::string device_dir_name(std::string_view device) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  constexpr std::size_t kMaxName = 120, kKeep = 100;
  if (device.empty()) return "~none";
  std::string out;
  out.reserve(device.size() + 8);
  for (std::size_t i = 0; i < device.size(); ++i) {
    const auto c = static_cast<unsigned char>(device[i]);
    const bool keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
                      (c == '.' && i != 0);
    if (keep) {
      out += static_cast<char>(c);
    } else if (c == ':') {
      out += '_';
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    }
  }
  if (out.size() <= kMaxName) return out;
  std::size_t cut = kKeep;
  if (out[cut - 1] == '%') cut -= 1;  // never split a %XX escape
  else if (out[cut - 2] == '%') cut -= 2;
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a 64 of the whole device
  for (const char ch : device) {
    h ^= static_cast<unsigned char>(ch);
    h *= 1099511628211ull;
  }
  out.resize(cut);
  out += '~';
  for (int shift = 60; shift >= 0; shift -= 4) out += kHex[(h >> shift) & 0xF];
  return out;
}

std::optional<std::int64_t> record_name_time_ms(std::string_view name) {
  // Record_yyyymmddThhmmss.mmmZ
  constexpr std::string_view kPrefix = "Record_";
  if (name.size() < kPrefix.size() + 20 || name.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  const std::string_view t = name.substr(kPrefix.size(), 20);
  auto num = [&](std::size_t off, std::size_t len, int& v) {
    v = 0;
    for (std::size_t i = off; i < off + len; ++i) {
      if (t[i] < '0' || t[i] > '9') return false;
      v = v * 10 + (t[i] - '0');
    }
    return true;
  };
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, se = 0, ms = 0;
  if (!num(0, 4, y) || !num(4, 2, mo) || t[8] != 'T' || !num(6, 2, d) || !num(9, 2, h) || !num(11, 2, mi) ||
      !num(13, 2, se) || t[15] != '.' || !num(16, 3, ms) || t[19] != 'Z')
    return std::nullopt;
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) return std::nullopt;
  // Days from civil (H. Hinnant's algorithm): no dependence on the TZ environment.
  const int yy = y - (mo <= 2 ? 1 : 0);
  const int era = (yy >= 0 ? yy : yy - 399) / 400;
  const int yoe = yy - era * 400;
  const int doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  const std::int64_t days = static_cast<std::int64_t>(era) * 146097 + doe - 719468;
  return ((days * 24 + h) * 60 + mi) * 60000ll + se * 1000ll + ms;
}

}  // namespace callrec::fileio
