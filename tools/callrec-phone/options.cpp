#include "options.hpp"

#include <algorithm>
#include <charconv>
#include <span>
#include <cmath>
#include <functional>
#include <string_view>

namespace callrec::phone {
namespace {

bool parse_u32(std::string_view s, std::uint32_t lo, std::uint32_t hi, std::uint32_t* out) {
  std::uint64_t v = 0;
  const auto* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, v);
  if (ec != std::errc{} || p != end || v < lo || v > hi) return false;
  *out = static_cast<std::uint32_t>(v);
  return true;
}

bool parse_u64(std::string_view s, std::uint64_t* out) {
  const auto* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, *out);
  return ec == std::errc{} && p == end && !s.empty();
}

bool parse_double(std::string_view s, double lo, double hi, double* out) {
  // std::from_chars for double is in libstdc++ 11+.
  double v = 0;
  const auto* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, v);
  if (ec != std::errc{} || p != end || !std::isfinite(v) || v < lo || v > hi) return false;
  *out = v;
  return true;
}

using Setter = std::function<bool(Options&, std::string_view)>;

struct OptionSpec {
  const char* name;   ///< long name without "--"
  const char* arg;    ///< nullptr: a flag
  const char* help;
  Setter set;         ///< returns false when the value is invalid
};

const char* kSections[] = {"Load (--duration, --rate, --threads and --timeout apply to both modes)", "Media", "Impairments", "Output", "Misc",
                           "SIPREC client mode (--siprec)"};
/// Print order of the sections.
constexpr int kSectionOrder[] = {0, 5, 1, 2, 3, 4};

struct Entry {
  int section;
  OptionSpec spec;
};

const std::vector<Entry>& option_table() {
  static const std::vector<Entry> table = {
      {0, {"server", "HOST:PORT", "recording server control address (required); [v6addr]:port for IPv6",
           [](Options& o, std::string_view v) { o.server = v; return !v.empty(); }}},
      {0, {"phones", "N", "number of phones, each with its own TCP connection (default 1)",
           [](Options& o, std::string_view v) { return parse_u32(v, 1, 1000000, &o.phones); }}},
      {0, {"first-phone", "I", "index of the first phone; device MAC = 02:00:<index as 4 bytes> (default 0)",
           [](Options& o, std::string_view v) { return parse_u32(v, 0, 0xFFFFFFF0u, &o.first_phone); }}},
      {0, {"calls-per-phone", "K", "calls each phone makes, one after another (default 1)",
           [](Options& o, std::string_view v) { return parse_u32(v, 1, 100000000, &o.calls_per_phone); }}},
      {0, {"concurrent-per-phone", "M", "recordings a phone runs at once on its connection (default 1)",
           [](Options& o, std::string_view v) { return parse_u32(v, 1, 1000, &o.concurrent_per_phone); }}},
      {0, {"duration", "SECONDS", "length of each call's RTP stream, fractions allowed (default 10)",
           [](Options& o, std::string_view v) { return parse_double(v, 0.0, 86400.0 * 7, &o.duration_s); }}},
      {0, {"ramp", "RATE", "new calls per second over all threads, 0 = no limit (default 100)",
           [](Options& o, std::string_view v) { return parse_double(v, 0.0, 1e7, &o.ramp); }}},
      {0, {"threads", "N", "worker threads, each an epoll loop owning phones i % N (default 1)",
           [](Options& o, std::string_view v) { return parse_u32(v, 1, 256, &o.threads); }}},
      {0, {"rate", "RATE", "same as --ramp (new calls or SIPREC sessions per second)",
           [](Options& o, std::string_view v) { return parse_double(v, 0.0, 1e7, &o.ramp); }}},
      {0, {"timeout", "SECONDS", "wait this long for a connect or a response (default 5)",
           [](Options& o, std::string_view v) { return parse_double(v, 0.001, 3600, &o.timeout_s); }}},
      {1, {"codec", "PCMA|PCMU", "payload codec: PCMA (PT 8, default) or PCMU (PT 0)",
           [](Options& o, std::string_view v) {
             auto c = fileio::codec_from_name(v);
             if (c) o.codec = *c;
             return c.has_value();
           }}},
      {1, {"wav", "FILE", "play FILE (16-bit PCM mono 8000 Hz WAV), looped",
           [](Options& o, std::string_view v) { o.wav_path = v; return !v.empty(); }}},
      {1, {"tone", "HZ", "play a sine of HZ (default 440) instead of a WAV",
           [](Options& o, std::string_view v) { return parse_double(v, 1.0, 3999.0, &o.tone_hz); }}},
      {1, {"tone-spread", "HZ", "phone i plays tone + (i % 8) * HZ, 0 = all the same (default 20)",
           [](Options& o, std::string_view v) { return parse_double(v, 0.0, 400.0, &o.tone_spread_hz); }}},
      {1, {"ptime", "MS", "packetization time: ptime*8 samples per packet, ts step the same (default 20)",
           [](Options& o, std::string_view v) { return parse_u32(v, 5, 200, &o.ptime_ms); }}},
      {1, {"udp-sockets", "N", "0: one RTP socket per phone (default, realistic); N: N sockets per thread shared "
                               "by all streams: fewer descriptors and bigger sendmmsg batches, about 2.5x less CPU "
                               "per packet; use 4 beyond ~1000 phones per thread",
           [](Options& o, std::string_view v) { return parse_u32(v, 0, 65536, &o.udp_sockets); }}},
      {2, {"loss", "P", "drop P percent of RTP packets at random",
           [](Options& o, std::string_view v) { return parse_double(v, 0, 100, &o.loss_pct); }}},
      {2, {"reorder", "P", "send P percent of packets after the stream's next packet",
           [](Options& o, std::string_view v) { return parse_double(v, 0, 100, &o.reorder_pct); }}},
      {2, {"duplicate", "P", "send P percent of packets twice",
           [](Options& o, std::string_view v) { return parse_double(v, 0, 100, &o.duplicate_pct); }}},
      {2, {"disconnect", "P", "for P percent of calls, reset the TCP connection mid-call (counted as aborted, "
                              "not failed; every call on that connection ends)",
           [](Options& o, std::string_view v) { return parse_double(v, 0, 100, &o.disconnect_pct); }}},
      {2, {"wrong-source", nullptr, "per call, send 3 forged packets (next seq numbers, payload 0x55) from another "
                                    "socket before the real ones; a correct server drops them",
           [](Options& o, std::string_view) { o.wrong_source = true; return true; }}},
      {2, {"seed", "S", "random seed (ids, SSRCs, impairments); printed in the report (default: time)",
           [](Options& o, std::string_view v) {
             std::uint64_t s = 0;
             if (!parse_u64(v, &s)) return false;
             o.seed = s;
             return true;
           }}},
      {2, {"stop-override", "KEY=VALUE", "add KEY=VALUE to every RecordStopRequest (repeatable), e.g. remote_name=X",
           [](Options& o, std::string_view v) {
             const auto eq = v.find('=');
             if (eq == std::string_view::npos || eq == 0) return false;
             const std::string_view key = v.substr(0, eq);
             if (key == "cmd" || key == "id") return false;
             o.stop_overrides.emplace_back(std::string(key), std::string(v.substr(eq + 1)));
             return true;
           }}},
      {3, {"report-interval", "SECONDS", "print a progress report to stderr this often, 0 = never (default 10)",
           [](Options& o, std::string_view v) { return parse_double(v, 0, 86400, &o.report_interval_s); }}},
      {3, {"json", nullptr, "print the final report as one JSON object on stdout",
           [](Options& o, std::string_view) { o.json = true; return true; }}},
      {3, {"save-sent", "DIR", "for tests: per call write DIR/<id>.rtp (every generated packet in sequence order, "
                               "before impairments, each prefixed by its length as uint32 big-endian) and "
                               "DIR/<id>.meta (key=value lines); costs one descriptor per active call",
           [](Options& o, std::string_view v) { o.save_sent_dir = v; return !v.empty(); }}},
      {3, {"verbose", nullptr, "log every call event to stderr",
           [](Options& o, std::string_view) { o.verbose = true; return true; }}},
      {4, {"help", nullptr, "show this help", [](Options&, std::string_view) { return true; }}},
      {5, {"siprec", "HOST:PORT", "SIPREC mode: act as a recording client (SRC, RFC 7866) towards the recording "
                                  "server at HOST:PORT; [v6addr]:port for IPv6",
           [](Options& o, std::string_view v) { o.siprec = v; return !v.empty(); }}},
      {5, {"transport", "udp|tcp|tls", "SIP transport (default udp; UDP requests are retransmitted per RFC 3261, "
                                       "T1 doubling, until a response)",
           [](Options& o, std::string_view v) {
             if (v == "udp") o.transport = SipTransport::kUdp;
             else if (v == "tcp") o.transport = SipTransport::kTcp;
             else if (v == "tls") o.transport = SipTransport::kTls;
             else return false;
             return true;
           }}},
      {5, {"calls", "N", "concurrent recording sessions, each with two sendonly RTP streams (labels 1 and 2) "
                         "(default 1)",
           [](Options& o, std::string_view v) { return parse_u32(v, 1, 1000000, &o.sessions); }}},
      {5, {"repeat", "K", "sessions each of the N slots runs one after another (default 1)",
           [](Options& o, std::string_view v) { return parse_u32(v, 1, 100000000, &o.repeat); }}},
      {5, {"connections", "N", "signalling sockets (UDP) or connections (TCP, TLS) the sessions share, session i "
                               "on number i % N (default 1)",
           [](Options& o, std::string_view v) { return parse_u32(v, 1, 10000, &o.connections); }}},
      {5, {"srtp", nullptr, "offer RTP/SAVP with an SDES key (a=crypto AES_CM_128_HMAC_SHA1_80, fresh random key "
                            "per stream) and send SRTP",
           [](Options& o, std::string_view) { o.srtp = true; return true; }}},
      {5, {"pause-resume", nullptr, "pause the recording at 1/3 of the call (re-INVITE, a=inactive, no RTP) and "
                                    "resume it at 2/3 (re-INVITE, a=sendonly)",
           [](Options& o, std::string_view) { o.pause_resume = true; return true; }}},
      {5, {"metadata-update", nullptr, "at half the call send an UPDATE carrying only new rs-metadata (a partial "
                                       "update renaming the second participant)",
           [](Options& o, std::string_view) { o.metadata_update = true; return true; }}},
      {5, {"t1", "MS", "RFC 3261 timer T1 for UDP retransmissions (default 500)",
           [](Options& o, std::string_view v) { return parse_u32(v, 10, 60000, &o.t1_ms); }}},
      {5, {"tls-cert", "FILE", "TLS client certificate (PEM) for mutual TLS",
           [](Options& o, std::string_view v) { o.tls_cert = v; return !v.empty(); }}},
      {5, {"tls-key", "FILE", "private key (PEM) of --tls-cert",
           [](Options& o, std::string_view v) { o.tls_key = v; return !v.empty(); }}},
      {5, {"tls-ca", "FILE", "verify the server's certificate against these CA certificates (PEM) and its name "
                             "or address; WITHOUT --tls-ca THE SERVER'S CERTIFICATE IS NOT VERIFIED",
           [](Options& o, std::string_view v) { o.tls_ca = v; return !v.empty(); }}},
  };
  return table;
}

}  // namespace

const char* sip_transport_name(SipTransport t) {
  switch (t) {
    case SipTransport::kUdp: return "udp";
    case SipTransport::kTcp: return "tcp";
    case SipTransport::kTls: return "tls";
  }
  return "?";
}

std::string usage() {
  std::string s =
      "Usage: callrec-phone --server HOST:PORT [options]     (upload mode)\n"
      "       callrec-phone --siprec HOST:PORT [options]     (SIPREC client mode)\n"
      "\n"
      "Phone simulator and load generator for callrec recording servers. Each phone opens a TCP\n"
      "control connection, asks for recordings (RecordStartRequest), streams G.711 RTP over UDP at\n"
      "real-time pacing to the address the server returns, then stops them (RecordStopRequest).\n"
      "A RecordStopRequest from the server is answered and ends that recording.\n"
      "\n"
      "With --siprec it is a SIPREC recording client (SRC, RFC 7866) instead: N concurrent recording\n"
      "sessions, each an INVITE (Require: siprec, Contact ;+sip.src, multipart/mixed body: SDP with\n"
      "two sendonly audio m-lines labelled 1 and 2, and RFC 7865 rs-metadata naming two participants\n"
      "and their streams), ACK, RTP on both streams to the ports of the 200's SDP answer for\n"
      "--duration, optional pause/resume re-INVITEs and metadata UPDATE, then BYE. A BYE from the\n"
      "server is answered 200 and ends that session. Signalling runs on one event-loop thread, RTP\n"
      "on the --threads workers. TLS: the server's certificate is NOT verified unless --tls-ca is given.\n";
  for (const int sec : kSectionOrder) {
    s += "\n";
    s += kSections[sec];
    s += ":\n";
    for (const auto& e : option_table()) {
      if (e.section != sec) continue;
      std::string left = "  --";
      left += e.spec.name;
      if (e.spec.arg != nullptr) {
        left += ' ';
        left += e.spec.arg;
      }
      if (e.spec.name == std::string_view("help")) left = "  -h, --help";
      constexpr std::size_t kCol = 30;
      constexpr std::size_t kWidth = 100;
      s += left;
      std::size_t col = left.size();
      if (col >= kCol - 1) {
        s += '\n';
        col = 0;
      }
      s.append(kCol - col, ' ');
      col = kCol;
      // Word-wrap the help text.
      std::string_view text = e.spec.help;
      bool first = true;
      while (!text.empty()) {
        const auto sp = text.find(' ');
        const std::string_view word = text.substr(0, sp);
        if (!first && col + 1 + word.size() > kWidth) {
          s += '\n';
          s.append(kCol, ' ');
          col = kCol;
          first = true;
        }
        if (!first) {
          s += ' ';
          ++col;
        }
        s += word;
        col += word.size();
        first = false;
        if (sp == std::string_view::npos) break;
        text.remove_prefix(sp + 1);
      }
      s += '\n';
    }
  }
  s +=
      "\n"
      "Report: calls attempted/succeeded/failed/aborted, failures by reason, setup and stop latency\n"
      "(p50/p90/p99/max of request->response), RTP packets sent, late sends (deadline missed by\n"
      "more than 5 ms), server-initiated stops by reason, errors. A call succeeds when its start is\n"
      "accepted and its stop is confirmed; a server-initiated stop counts as a failure\n"
      "(reason server_stop). Failure reasons are the server's reason= (no_port, overloaded ...) or\n"
      "connect_failed, connect_timeout, start_timeout, stop_timeout, connection_lost, server_stop,\n"
      "bad_response, stop_<reason>. Ctrl-C stops the calls in progress and prints the report.\n"
      "\n"
      "SIPREC report: sessions attempted/established/completed/failed, failures by reason (the\n"
      "SIP status code of a refused INVITE: 503, 488 ...; timeout, connect_failed, connection_lost,\n"
      "server_bye, bye_<code>, bye_timeout), setup latency (INVITE -> 200) and BYE latency (BYE -> 200)\n"
      "percentiles, setup rate, SIP retransmissions, RTP as above. Its last line is\n"
      "'RESULT {json}', the same object --json prints alone. A session succeeds when its BYE is\n"
      "answered 2xx.\n"
      "\n"
      "Exit status: 0 every call succeeded, 1 some call failed (or a runtime error),\n"
      "2 usage error (bad option, unreadable WAV).\n"
      "\n"
      "Example: 1000 phones, 3 calls each, 30 s calls, 50 new calls/s, 1% loss, 2 threads:\n"
      "  callrec-phone --server 10.0.0.5:5060 --phones 1000 --calls-per-phone 3 --duration 30 \\\n"
      "                --ramp 50 --loss 1 --threads 2 --report-interval 5\n"
      "Example: 500 SIPREC sessions over TCP with SRTP, 60 s each, paused and resumed mid-call:\n"
      "  callrec-phone --siprec 10.0.0.5:5060 --transport tcp --srtp --calls 500 --duration 60 \\\n"
      "                --rate 100 --pause-resume --udp-sockets 4\n";
  return s;
}

std::optional<Options> parse_options(int argc, char** argv, std::string* error, bool* help) {
  Options o;
  *help = false;
  bool tone_given = false;
  std::vector<std::string> given;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      *help = true;
      error->clear();
      return std::nullopt;
    }
    if (a.substr(0, 2) != "--") {
      *error = "unexpected argument '" + std::string(a) + "'";
      return std::nullopt;
    }
    a.remove_prefix(2);
    std::string_view value;
    bool has_inline = false;
    if (const auto eq = a.find('='); eq != std::string_view::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_inline = true;
    }
    const OptionSpec* spec = nullptr;
    for (const auto& e : option_table()) {
      if (a == e.spec.name) spec = &e.spec;
    }
    if (spec == nullptr) {
      *error = "unknown option --" + std::string(a);
      return std::nullopt;
    }
    if (spec->arg != nullptr && !has_inline) {
      if (i + 1 >= argc) {
        *error = "--" + std::string(a) + " needs a value (" + spec->arg + ")";
        return std::nullopt;
      }
      value = argv[++i];
    } else if (spec->arg == nullptr && has_inline) {
      *error = "--" + std::string(a) + " takes no value";
      return std::nullopt;
    }
    if (!spec->set(o, value)) {
      *error = "invalid value '" + std::string(value) + "' for --" + std::string(a) + " (" + spec->arg + ")";
      return std::nullopt;
    }
    if (a == "tone") tone_given = true;
    given.emplace_back(a);
  }
  const auto was_given = [&given](std::string_view name) {
    return std::find(given.begin(), given.end(), name) != given.end();
  };
  if (o.server.empty() && o.siprec.empty()) {
    *error = "--server HOST:PORT (upload mode) or --siprec HOST:PORT (SIPREC mode) is required";
    return std::nullopt;
  }
  if (!o.server.empty() && !o.siprec.empty()) {
    *error = "--server and --siprec are mutually exclusive";
    return std::nullopt;
  }
  static constexpr std::string_view kUploadOnly[] = {"phones", "first-phone", "calls-per-phone", "concurrent-per-phone",
                                                     "disconnect", "wrong-source", "stop-override", "save-sent"};
  static constexpr std::string_view kSiprecOnly[] = {"transport", "calls", "repeat", "connections", "srtp",
                                                     "pause-resume", "metadata-update", "t1", "tls-cert", "tls-key",
                                                     "tls-ca"};
  for (const auto name : o.siprec.empty() ? std::span<const std::string_view>(kSiprecOnly)
                                          : std::span<const std::string_view>(kUploadOnly)) {
    if (was_given(name)) {
      *error = "--" + std::string(name) + (o.siprec.empty() ? " needs --siprec" : " is not used in SIPREC mode");
      return std::nullopt;
    }
  }
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    *error = "--tls-cert and --tls-key go together";
    return std::nullopt;
  }
  if ((!o.tls_cert.empty() || !o.tls_ca.empty()) && o.transport != SipTransport::kTls) {
    *error = "--tls-cert, --tls-key and --tls-ca need --transport tls";
    return std::nullopt;
  }
  if (tone_given && !o.wav_path.empty()) {
    *error = "--wav and --tone are mutually exclusive";
    return std::nullopt;
  }
  if (o.concurrent_per_phone > o.calls_per_phone) o.concurrent_per_phone = o.calls_per_phone;
  return o;
}

}  // namespace callrec::phone
