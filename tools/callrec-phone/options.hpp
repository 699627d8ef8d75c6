#pragma once
// Command-line options of callrec-phone: one option table, one usage(), one parser.
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fileio/record_format.hpp"

namespace callrec::phone {

/// Exit codes of the program (also documented in usage()).
inline constexpr int kExitOk = 0;          ///< every call attempted succeeded
inline constexpr int kExitCallsFailed = 1; ///< at least one call failed (or fatal runtime error)
inline constexpr int kExitUsage = 2;       ///< bad command line or unreadable input file

/// SIP transport of the SIPREC client mode.
enum class SipTransport : std::uint8_t { kUdp, kTcp, kTls };
const char* sip_transport_name(SipTransport t);

struct Options {
  std::string server;                 ///< HOST:PORT as given (upload mode)
  std::uint32_t phones = 1;
  std::uint32_t first_phone = 0;      ///< index of the first phone (device MAC derivation)
  std::uint32_t calls_per_phone = 1;
  std::uint32_t concurrent_per_phone = 1;
  double duration_s = 10.0;
  double ramp = 100.0;                ///< new calls per second over all threads; 0 = unlimited
  fileio::Codec codec = fileio::Codec::kPcma;
  std::string wav_path;               ///< empty: tone
  double tone_hz = 440.0;
  double tone_spread_hz = 20.0;       ///< phone i plays tone + (i % 8) * spread
  std::uint32_t ptime_ms = 20;
  std::uint32_t threads = 1;
  std::uint32_t udp_sockets = 0;      ///< 0: one UDP socket per phone; N: a pool of N per thread
  double loss_pct = 0;
  double reorder_pct = 0;
  double duplicate_pct = 0;
  double disconnect_pct = 0;
  bool wrong_source = false;
  std::optional<std::uint64_t> seed;
  std::vector<std::pair<std::string, std::string>> stop_overrides;
  double report_interval_s = 10.0;    ///< 0: only the final report
  bool json = false;
  std::string save_sent_dir;
  double timeout_s = 5.0;             ///< wait for a response / for TCP connect
  bool verbose = false;

  // SIPREC client mode (--siprec): callrec-phone is a recording client (SRC, RFC 7866).
  std::string siprec;                 ///< HOST:PORT of the recording server; non-empty: SIPREC mode
  SipTransport transport = SipTransport::kUdp;
  std::uint32_t sessions = 1;         ///< --calls: concurrent recording sessions
  std::uint32_t repeat = 1;           ///< sessions each slot runs one after another
  std::uint32_t connections = 1;      ///< signalling sockets / connections the sessions share
  bool srtp = false;
  bool pause_resume = false;
  bool metadata_update = false;
  std::uint32_t t1_ms = 500;          ///< RFC 3261 T1 (UDP retransmission base)
  std::string tls_cert, tls_key, tls_ca;
  [[nodiscard]] bool siprec_mode() const { return !siprec.empty(); }
};

/// The --help text.
std::string usage();

/// Parses argv. On error returns nullopt and sets *error to a one-line message. Sets *help
/// when --help was asked for (then returns nullopt with an empty error).
std::optional<Options> parse_options(int argc, char** argv, std::string* error, bool* help);

}  // namespace callrec::phone
