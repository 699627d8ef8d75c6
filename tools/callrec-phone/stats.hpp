#pragma once
// Counters and latency histograms of one worker thread, merged by the main thread for the
// periodic and final reports. Plain data: a worker owns its Stats and publishes copies.
#include <array>
#include <cstdint>
#include <map>
#include <string>

namespace callrec::phone {

/// Log-linear histogram of microsecond values (HdrHistogram-like: 32 sub-buckets per power of
/// two, so a percentile is within ~3% of the true value). Fixed size, mergeable, no allocation.
class LatencyHistogram {
 public:
  void add(std::uint64_t us);
  void merge(const LatencyHistogram& o);
  [[nodiscard]] std::uint64_t count() const { return count_; }
  [[nodiscard]] std::uint64_t max() const { return max_; }
  /// Value at quantile q (0..1): midpoint of the bucket holding it, clamped to max(). 0 if empty.
  [[nodiscard]] std::uint64_t percentile(double q) const;

 private:
  static constexpr unsigned kSubBits = 5;
  static constexpr std::size_t kSub = std::size_t{1} << kSubBits;
  static constexpr std::size_t kBuckets = (64 - kSubBits) * kSub + kSub;
  static std::size_t index_of(std::uint64_t v);
  static std::uint64_t lower_of(std::size_t idx);
  static std::uint64_t width_of(std::size_t idx);

  std::array<std::uint64_t, kBuckets> counts_{};
  std::uint64_t count_ = 0;
  std::uint64_t max_ = 0;
};

struct Stats {
  // Calls. attempted = succeeded + failed + aborted + in progress.
  std::uint64_t calls_attempted = 0;
  std::uint64_t calls_succeeded = 0;
  std::uint64_t calls_failed = 0;
  std::uint64_t calls_aborted = 0;  ///< ended on purpose by --disconnect
  std::uint64_t calls_active = 0;   ///< gauge: started, not ended
  std::uint64_t streams_active = 0; ///< gauge: RTP flowing
  std::map<std::string, std::uint64_t> failed_by_reason;
  std::map<std::string, std::uint64_t> server_stops_by_reason;
  std::map<std::string, std::uint64_t> errors;

  LatencyHistogram setup_latency;  ///< RecordStartRequest sent -> RecordStartResponse received
  LatencyHistogram stop_latency;   ///< RecordStopRequest sent -> RecordStopResponse received

  // RTP.
  std::uint64_t rtp_generated = 0;   ///< packets made (what a perfect recorder stores)
  std::uint64_t rtp_sent = 0;        ///< datagrams handed to the kernel (duplicates included)
  std::uint64_t rtp_bytes_sent = 0;
  std::uint64_t rtp_dropped_loss = 0;
  std::uint64_t rtp_reordered = 0;
  std::uint64_t rtp_duplicated = 0;
  std::uint64_t rtp_send_failed = 0; ///< the kernel refused it (counted in errors too)
  std::uint64_t stray_sent = 0;      ///< --wrong-source packets
  std::uint64_t late_sends = 0;      ///< deadline missed by more than kLateThresholdUs
  std::uint64_t max_late_us = 0;
  std::uint64_t send_batches = 0;    ///< sendmmsg calls
  std::uint64_t disconnects = 0;     ///< --disconnect resets done

  // SIPREC mode (the signalling thread's; calls_* above count sessions, setup_latency is
  // INVITE -> 200, stop_latency BYE -> 200, server_stops_by_reason the server's BYEs).
  std::uint64_t sessions_established = 0;  ///< INVITEs answered 2xx
  std::uint64_t sip_sent = 0;              ///< SIP messages sent (retransmissions included)
  std::uint64_t sip_received = 0;
  std::uint64_t sip_retransmissions = 0;   ///< requests we re-sent (UDP, RFC 3261 timers A/E)
  std::uint64_t reinvites = 0;             ///< pause/resume re-INVITEs answered 2xx
  std::uint64_t updates = 0;               ///< metadata UPDATEs answered 2xx
  std::uint64_t rtp_paused = 0;            ///< packet times skipped while a session was paused
  LatencyHistogram indialog_latency;       ///< re-INVITE / UPDATE -> 2xx
  std::int64_t first_invite_ns = 0;        ///< monotonic time of the first INVITE (0: none)
  std::int64_t last_established_ns = 0;    ///< of the last 2xx to an initial INVITE

  void merge(const Stats& o);
};

inline constexpr std::uint64_t kLateThresholdUs = 5000;

/// What the report says besides the counters.
struct RunInfo {
  double elapsed_s = 0;
  std::uint64_t seed = 0;
  std::uint32_t phones = 0;
  std::uint32_t threads = 0;
  std::string server;
  std::string codec;
  bool interrupted = false;
  double cpu_user_s = 0;  ///< the simulator's own CPU time: is the load generator the bottleneck?
  double cpu_sys_s = 0;
};

/// SIPREC mode: what the report says besides the counters.
struct SiprecInfo {
  std::string transport;
  bool srtp = false;
  std::uint32_t sessions = 0;  ///< --calls
  std::uint32_t repeat = 1;
};

std::string format_report_text(const Stats& s, const RunInfo& info);
/// SIPREC mode: the report ends with "RESULT " + format_siprec_report_json().
std::string format_siprec_report_text(const Stats& s, const RunInfo& info, const SiprecInfo& si);
/// One JSON object on one line (newline-terminated).
std::string format_siprec_report_json(const Stats& s, const RunInfo& info, const SiprecInfo& si);
/// Sessions established per second from the first INVITE to the last 2xx (0: fewer than 2).
double siprec_setup_rate(const Stats& s);
std::string format_report_json(const Stats& s, const RunInfo& info);
/// One progress line (no newline) for stderr.
std::string format_progress(const Stats& s, double elapsed_s, std::uint64_t rtp_sent_before, double interval_s);

}  // namespace callrec::phone
