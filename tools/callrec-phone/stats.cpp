#include "stats.hpp"

#include <bit>
#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstdio>

namespace callrec::phone {

std::size_t LatencyHistogram::index_of(std::uint64_t v) {
  if (v < 2 * kSub) return static_cast<std::size_t>(v);
  const unsigned msb = static_cast<unsigned>(std::bit_width(v)) - 1;  // >= kSubBits + 1
  const unsigned shift = msb - kSubBits;
  return static_cast<std::size_t>(shift + 1) * kSub + static_cast<std::size_t>((v >> shift) - kSub);
}

std::uint64_t LatencyHistogram::lower_of(std::size_t idx) {
  if (idx < 2 * kSub) return idx;
  const std::size_t shift = idx / kSub - 1;
  return (static_cast<std::uint64_t>(kSub) + idx % kSub) << shift;
}

std::uint64_t LatencyHistogram::width_of(std::size_t idx) {
  if (idx < 2 * kSub) return 1;
  return std::uint64_t{1} << (idx / kSub - 1);
}

void LatencyHistogram::add(std::uint64_t us) {
  ++counts_[index_of(us)];
  ++count_;
  if (us > max_) max_ = us;
}

void LatencyHistogram::merge(const LatencyHistogram& o) {
  for (std::size_t i = 0; i < kBuckets; ++i) counts_[i] += o.counts_[i];
  count_ += o.count_;
  if (o.max_ > max_) max_ = o.max_;
}

std::uint64_t LatencyHistogram::percentile(double q) const {
  if (count_ == 0) return 0;
  auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_)));
  if (rank < 1) rank = 1;
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < kBuckets; ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      const std::uint64_t mid = lower_of(i) + (width_of(i) - 1) / 2;
      return mid < max_ ? mid : max_;
    }
  }
  return max_;
}

void Stats::merge(const Stats& o) {
  calls_attempted += o.calls_attempted;
  calls_succeeded += o.calls_succeeded;
  calls_failed += o.calls_failed;
  calls_aborted += o.calls_aborted;
  calls_active += o.calls_active;
  streams_active += o.streams_active;
  for (const auto& [k, v] : o.failed_by_reason) failed_by_reason[k] += v;
  for (const auto& [k, v] : o.server_stops_by_reason) server_stops_by_reason[k] += v;
  for (const auto& [k, v] : o.errors) errors[k] += v;
  setup_latency.merge(o.setup_latency);
  stop_latency.merge(o.stop_latency);
  rtp_generated += o.rtp_generated;
  rtp_sent += o.rtp_sent;
  rtp_bytes_sent += o.rtp_bytes_sent;
  rtp_dropped_loss += o.rtp_dropped_loss;
  rtp_reordered += o.rtp_reordered;
  rtp_duplicated += o.rtp_duplicated;
  rtp_send_failed += o.rtp_send_failed;
  stray_sent += o.stray_sent;
  late_sends += o.late_sends;
  if (o.max_late_us > max_late_us) max_late_us = o.max_late_us;
  send_batches += o.send_batches;
  disconnects += o.disconnects;
  sessions_established += o.sessions_established;
  sip_sent += o.sip_sent;
  sip_received += o.sip_received;
  sip_retransmissions += o.sip_retransmissions;
  reinvites += o.reinvites;
  updates += o.updates;
  rtp_paused += o.rtp_paused;
  indialog_latency.merge(o.indialog_latency);
  if (o.first_invite_ns != 0 && (first_invite_ns == 0 || o.first_invite_ns < first_invite_ns))
    first_invite_ns = o.first_invite_ns;
  last_established_ns = std::max(last_established_ns, o.last_established_ns);
}

namespace {

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  const int n = std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return std::string(buf, n < 0 ? 0 : std::min<std::size_t>(static_cast<std::size_t>(n), sizeof buf - 1));
}

double ms(std::uint64_t us) { return static_cast<double>(us) / 1000.0; }

std::string text_map(const std::map<std::string, std::uint64_t>& m) {
  if (m.empty()) return "none";
  std::string s;
  for (const auto& [k, v] : m) {
    if (!s.empty()) s += ", ";
    s += k + " " + std::to_string(v);
  }
  return s;
}

std::string text_latency(const LatencyHistogram& h) {
  if (h.count() == 0) return "n=0";
  return fmt("n=%" PRIu64 " p50 %.2f  p90 %.2f  p99 %.2f  max %.2f", h.count(), ms(h.percentile(0.5)),
             ms(h.percentile(0.9)), ms(h.percentile(0.99)), ms(h.max()));
}

void json_string(std::string& out, std::string_view s) {
  out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += fmt("\\u%04x", c);
        } else {
          out += ch;  // UTF-8 passes through
        }
    }
  }
  out += '"';
}

std::string json_map(const std::map<std::string, std::uint64_t>& m) {
  std::string s = "{";
  bool first = true;
  for (const auto& [k, v] : m) {
    if (!first) s += ", ";
    first = false;
    json_string(s, k);
    s += ": " + std::to_string(v);
  }
  return s + "}";
}

std::string json_latency(const LatencyHistogram& h) {
  return fmt("{\"count\": %" PRIu64 ", \"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, \"max\": %.3f}", h.count(),
             ms(h.percentile(0.5)), ms(h.percentile(0.9)), ms(h.percentile(0.99)), ms(h.max()));
}

}  // namespace

std::string format_report_text(const Stats& s, const RunInfo& info) {
  std::string r;
  r += fmt("callrec-phone report: %.1f s, %u phones, %u thread(s), server %s, codec %s, seed %" PRIu64 "%s\n",
           info.elapsed_s, info.phones, info.threads, info.server.c_str(), info.codec.c_str(), info.seed,
           info.interrupted ? " (interrupted)" : "");
  r += fmt("calls:      attempted %" PRIu64 "  succeeded %" PRIu64 "  failed %" PRIu64 "  aborted %" PRIu64
           "  unfinished %" PRIu64 "\n",
           s.calls_attempted, s.calls_succeeded, s.calls_failed, s.calls_aborted, s.calls_active);
  r += "  failed by reason:       " + text_map(s.failed_by_reason) + "\n";
  r += "  server-initiated stops: " + text_map(s.server_stops_by_reason) + "\n";
  r += "setup ms:   " + text_latency(s.setup_latency) + "\n";
  r += "stop ms:    " + text_latency(s.stop_latency) + "\n";
  const double pps = info.elapsed_s > 0 ? static_cast<double>(s.rtp_sent) / info.elapsed_s : 0;
  r += fmt("rtp:        sent %" PRIu64 " pkts (%" PRIu64 " bytes, %.0f pkt/s avg, %" PRIu64
           " sendmmsg), generated %" PRIu64 "\n",
           s.rtp_sent, s.rtp_bytes_sent, pps, s.send_batches, s.rtp_generated);
  r += fmt("  impaired: lost %" PRIu64 "  reordered %" PRIu64 "  duplicated %" PRIu64 "  stray %" PRIu64
           "  disconnects %" PRIu64 "\n",
           s.rtp_dropped_loss, s.rtp_reordered, s.rtp_duplicated, s.stray_sent, s.disconnects);
  r += fmt("  late sends (> %.0f ms): %" PRIu64 "  (max lateness %.2f ms)\n", ms(kLateThresholdUs), s.late_sends,
           ms(s.max_late_us));
  r += "errors:     " + text_map(s.errors) + "\n";
  r += fmt("cpu:        %.2f s user, %.2f s system (%.0f%% of one core)\n", info.cpu_user_s, info.cpu_sys_s,
           info.elapsed_s > 0 ? 100.0 * (info.cpu_user_s + info.cpu_sys_s) / info.elapsed_s : 0.0);
  return r;
}

std::string format_report_json(const Stats& s, const RunInfo& info) {
  std::string r = "{";
  r += fmt("\"elapsed_s\": %.3f, \"seed\": %" PRIu64 ", \"phones\": %u, \"threads\": %u, ", info.elapsed_s, info.seed,
           info.phones, info.threads);
  r += "\"server\": ";
  json_string(r, info.server);
  r += ", \"codec\": ";
  json_string(r, info.codec);
  r += fmt(", \"interrupted\": %s, \"cpu_user_s\": %.3f, \"cpu_sys_s\": %.3f, ", info.interrupted ? "true" : "false",
           info.cpu_user_s, info.cpu_sys_s);
  r += fmt("\"calls\": {\"attempted\": %" PRIu64 ", \"succeeded\": %" PRIu64 ", \"failed\": %" PRIu64
           ", \"aborted\": %" PRIu64 ", \"unfinished\": %" PRIu64 ", \"failed_by_reason\": ",
           s.calls_attempted, s.calls_succeeded, s.calls_failed, s.calls_aborted, s.calls_active);
  r += json_map(s.failed_by_reason) + "}, ";
  r += "\"setup_latency_ms\": " + json_latency(s.setup_latency) + ", ";
  r += "\"stop_latency_ms\": " + json_latency(s.stop_latency) + ", ";
  r += fmt("\"rtp\": {\"packets_sent\": %" PRIu64 ", \"bytes_sent\": %" PRIu64 ", \"packets_generated\": %" PRIu64
           ", \"lost\": %" PRIu64 ", \"reordered\": %" PRIu64 ", \"duplicated\": %" PRIu64 ", \"send_failed\": %" PRIu64
           ", \"stray_sent\": %" PRIu64 ", \"late_sends\": %" PRIu64 ", \"max_late_ms\": %.3f, \"sendmmsg_calls\": %" PRIu64
           "}, ",
           s.rtp_sent, s.rtp_bytes_sent, s.rtp_generated, s.rtp_dropped_loss, s.rtp_reordered, s.rtp_duplicated,
           s.rtp_send_failed, s.stray_sent, s.late_sends, ms(s.max_late_us), s.send_batches);
  r += fmt("\"disconnects\": %" PRIu64 ", ", s.disconnects);
  r += "\"server_stops_by_reason\": " + json_map(s.server_stops_by_reason) + ", ";
  r += "\"errors\": " + json_map(s.errors);
  r += "}\n";
  return r;
}

double siprec_setup_rate(const Stats& s) {
  if (s.sessions_established < 2 || s.first_invite_ns == 0 || s.last_established_ns <= s.first_invite_ns) return 0;
  return static_cast<double>(s.sessions_established) / (static_cast<double>(s.last_established_ns - s.first_invite_ns) / 1e9);
}

std::string format_siprec_report_json(const Stats& s, const RunInfo& info, const SiprecInfo& si) {
  std::string r = "{\"mode\": \"siprec\", ";
  r += fmt("\"elapsed_s\": %.3f, \"seed\": %" PRIu64 ", \"sessions\": %u, \"repeat\": %u, \"threads\": %u, ",
           info.elapsed_s, info.seed, si.sessions, si.repeat, info.threads);
  r += "\"server\": ";
  json_string(r, info.server);
  r += ", \"transport\": ";
  json_string(r, si.transport);
  r += ", \"codec\": ";
  json_string(r, info.codec);
  r += fmt(", \"srtp\": %s, \"interrupted\": %s, \"cpu_user_s\": %.3f, \"cpu_sys_s\": %.3f, ", si.srtp ? "true" : "false",
           info.interrupted ? "true" : "false", info.cpu_user_s, info.cpu_sys_s);
  r += fmt("\"attempted\": %" PRIu64 ", \"established\": %" PRIu64 ", \"completed\": %" PRIu64 ", \"failed\": %" PRIu64
           ", \"unfinished\": %" PRIu64 ", \"failed_by_reason\": ",
           s.calls_attempted, s.sessions_established, s.calls_succeeded, s.calls_failed, s.calls_active);
  r += json_map(s.failed_by_reason) + ", ";
  r += "\"server_byes_by_reason\": " + json_map(s.server_stops_by_reason) + ", ";
  r += "\"setup_latency_ms\": " + json_latency(s.setup_latency) + ", ";
  r += "\"bye_latency_ms\": " + json_latency(s.stop_latency) + ", ";
  r += "\"indialog_latency_ms\": " + json_latency(s.indialog_latency) + ", ";
  r += fmt("\"setup_rate_per_s\": %.1f, ", siprec_setup_rate(s));
  r += fmt("\"sip\": {\"sent\": %" PRIu64 ", \"received\": %" PRIu64 ", \"retransmissions\": %" PRIu64
           ", \"reinvites\": %" PRIu64 ", \"updates\": %" PRIu64 "}, ",
           s.sip_sent, s.sip_received, s.sip_retransmissions, s.reinvites, s.updates);
  r += fmt("\"rtp\": {\"packets_sent\": %" PRIu64 ", \"bytes_sent\": %" PRIu64 ", \"packets_generated\": %" PRIu64
           ", \"paused\": %" PRIu64 ", \"lost\": %" PRIu64 ", \"reordered\": %" PRIu64 ", \"duplicated\": %" PRIu64
           ", \"send_failed\": %" PRIu64 ", \"late_sends\": %" PRIu64 ", \"max_late_ms\": %.3f, \"sendmmsg_calls\": %" PRIu64
           "}, ",
           s.rtp_sent, s.rtp_bytes_sent, s.rtp_generated, s.rtp_paused, s.rtp_dropped_loss, s.rtp_reordered,
           s.rtp_duplicated, s.rtp_send_failed, s.late_sends, ms(s.max_late_us), s.send_batches);
  r += "\"errors\": " + json_map(s.errors);
  r += "}\n";
  return r;
}

std::string format_siprec_report_text(const Stats& s, const RunInfo& info, const SiprecInfo& si) {
  std::string r;
  r += fmt("callrec-phone SIPREC report: %.1f s, %u session slot(s) x %u, %s to %s%s, %u RTP thread(s), codec %s, "
           "seed %" PRIu64 "%s\n",
           info.elapsed_s, si.sessions, si.repeat, si.transport.c_str(), info.server.c_str(), si.srtp ? ", SRTP" : "",
           info.threads, info.codec.c_str(), info.seed, info.interrupted ? " (interrupted)" : "");
  r += fmt("sessions:   attempted %" PRIu64 "  established %" PRIu64 "  completed %" PRIu64 "  failed %" PRIu64
           "  unfinished %" PRIu64 "\n",
           s.calls_attempted, s.sessions_established, s.calls_succeeded, s.calls_failed, s.calls_active);
  r += "  failed by reason:       " + text_map(s.failed_by_reason) + "\n";
  r += "  server BYEs by reason:  " + text_map(s.server_stops_by_reason) + "\n";
  r += "setup ms:   " + text_latency(s.setup_latency) + "   (INVITE -> 200)\n";
  r += "bye ms:     " + text_latency(s.stop_latency) + "   (BYE -> 200)\n";
  if (s.indialog_latency.count() > 0) r += "update ms:  " + text_latency(s.indialog_latency) + "   (re-INVITE/UPDATE -> 200)\n";
  r += fmt("setup rate: %.1f sessions/s (first INVITE to last 200)\n", siprec_setup_rate(s));
  r += fmt("sip:        sent %" PRIu64 " (retransmissions %" PRIu64 "), received %" PRIu64 ", re-INVITEs %" PRIu64
           ", UPDATEs %" PRIu64 "\n",
           s.sip_sent, s.sip_retransmissions, s.sip_received, s.reinvites, s.updates);
  const double pps = info.elapsed_s > 0 ? static_cast<double>(s.rtp_sent) / info.elapsed_s : 0;
  r += fmt("rtp:        sent %" PRIu64 " pkts (%" PRIu64 " bytes, %.0f pkt/s avg, %" PRIu64
           " sendmmsg), generated %" PRIu64 ", paused %" PRIu64 "\n",
           s.rtp_sent, s.rtp_bytes_sent, pps, s.send_batches, s.rtp_generated, s.rtp_paused);
  r += fmt("  impaired: lost %" PRIu64 "  reordered %" PRIu64 "  duplicated %" PRIu64 "\n", s.rtp_dropped_loss,
           s.rtp_reordered, s.rtp_duplicated);
  r += fmt("  late sends (> %.0f ms): %" PRIu64 "  (max lateness %.2f ms)\n", ms(kLateThresholdUs), s.late_sends,
           ms(s.max_late_us));
  r += "errors:     " + text_map(s.errors) + "\n";
  r += fmt("cpu:        %.2f s user, %.2f s system (%.0f%% of one core)\n", info.cpu_user_s, info.cpu_sys_s,
           info.elapsed_s > 0 ? 100.0 * (info.cpu_user_s + info.cpu_sys_s) / info.elapsed_s : 0.0);
  r += "RESULT " + format_siprec_report_json(s, info, si);
  return r;
}

std::string format_progress(const Stats& s, double elapsed_s, std::uint64_t rtp_sent_before, double interval_s) {
  std::uint64_t errors = 0;
  for (const auto& [k, v] : s.errors) errors += v;
  std::uint64_t server_stops = 0;
  for (const auto& [k, v] : s.server_stops_by_reason) server_stops += v;
  const double pps = interval_s > 0 ? static_cast<double>(s.rtp_sent - rtp_sent_before) / interval_s : 0;
  return fmt("[%7.1fs] calls %" PRIu64 " ok %" PRIu64 " failed %" PRIu64 " aborted %" PRIu64 " active %" PRIu64
             " streams %" PRIu64 " | setup p50 %.2f p99 %.2f ms | rtp %" PRIu64 " (%.0f pkt/s) late %" PRIu64
             " | server stops %" PRIu64 " | errors %" PRIu64,
             elapsed_s, s.calls_attempted, s.calls_succeeded, s.calls_failed, s.calls_aborted, s.calls_active,
             s.streams_active, ms(s.setup_latency.percentile(0.5)), ms(s.setup_latency.percentile(0.99)), s.rtp_sent,
             pps, s.late_sends, server_stops, errors);
}

}  // namespace callrec::phone
