// callrec-pcapgen: writes a pcap of N concurrent G.711 RTP streams, interleaved as on the wire,
// plus a flow list (sidecar file) so a benchmark or a test can pre-install the flows; or, with
// --calls, a capture of N concurrent SIP calls (signalling and both RTP directions) for passive
// capture (callrecd --span-read), plus a call list.
// Exit codes: 0 done, 1 I/O error, 2 usage error.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "tools/callrec-pcapgen/calls_gen.hpp"
#include "tools/callrec-pcapgen/pcap_gen.hpp"

namespace {

using callrec::pcapgen::Options;

constexpr int kExitOk = 0;
constexpr int kExitIo = 1;
constexpr int kExitUsage = 2;

struct Cli {
  Options gen;
  callrec::pcapgen::CallsOptions calls;
  bool calls_mode = false;
  std::vector<std::string> given;  ///< options on the command line (modes refuse the other's)
  std::string out;
  std::string flows;  ///< empty: out + ".flows"
  bool print_flows = false;
  bool quiet = false;
  unsigned seconds = 0;
};

struct OptionSpec {
  const char* name;
  const char* arg;  ///< nullptr: a flag
  const char* help;
};

// The one option table: usage() prints it, parse() accepts exactly these.
constexpr OptionSpec kOptions[] = {
    {"--streams", "N", "concurrent RTP streams (default 1000)"},
    {"--packets-per-stream", "K", "packets of each stream (default 100)"},
    {"--seconds", "S", "instead of -K: S seconds of audio per stream (K = S * 1000 / ptime);\n"
                       "with --calls: of each call, both ways (default 10)"},
    {"--dst-ip", "A", "first destination (dataplane) IPv4 address (default 10.0.0.1)"},
    {"--dst-ips", "M", "destination addresses A, A+1 ... (default: as many as the streams need)"},
    {"--port-lo", "P", "first destination UDP port (default 16384)"},
    {"--port-hi", "P", "last destination UDP port (default 65534)"},
    {"--port-step", "S", "destination port step (default 2: RTP ports are even)"},
    {"--src-ip", "A", "stream i sends from A + i (default 172.16.0.1)"},
    {"--src-port-lo", "P", "stream i sends from P + 2 * (i % 20000) (default 20000)"},
    {"--dst-mac", "MAC", "destination MAC (default 02:00:00:00:00:01)"},
    {"--payload-type", "PT", "8 = PCMA (default), 0 = PCMU"},
    {"--payload-bytes", "B", "G.711 payload bytes per packet (default 160 -> 214-byte frames)"},
    {"--ptime", "MS", "packet interval in ms (default 20)"},
    {"--vlan", "ID", "802.1Q-tag every frame with this VLAN id"},
    {"--stray-every", "N", "after every Nth RTP packet, a copy from a wrong source address"},
    {"--unknown-every", "N", "after every Nth RTP packet, one to --unknown-port"},
    {"--unknown-port", "P", "destination port of the unknown packets (default 9)"},
    {"--calls", "N", "calls mode: N concurrent SIP calls instead of bare streams (see below)"},
    {"--ramp", "S", "calls mode: calls start evenly over the first S seconds (default --seconds / 2)"},
    {"--reinvite-pct", "P", "calls mode: % of calls whose media moves by re-INVITE mid-call (default 10)"},
    {"--fragment-pct", "P", "calls mode: % of INVITEs made > 1500 bytes and sent as 2 IPv4 fragments (default 10)"},
    {"--seed", "N", "random seed for phases, SSRCs, first sequence numbers (default 1)"},
    {"--out", "FILE", "pcap to write (required)"},
    {"-o", "FILE", "same as --out"},
    {"--flows", "FILE", "flow list to write (default FILE.flows; calls mode: call list, FILE.calls)"},
    {"--print-flows", nullptr, "also print the flow list (call list) on stdout"},
    {"--quiet", nullptr, "no progress on stderr"},
    {"--help", nullptr, "this text"},
};

// Options that mean something in one mode only (the others apply to both).
constexpr const char* kStreamsOnly[] = {"--streams", "--packets-per-stream", "--dst-ip", "--dst-ips", "--port-lo",
                                        "--port-hi", "--port-step", "--src-ip", "--src-port-lo", "--payload-type",
                                        "--payload-bytes", "--ptime", "--stray-every", "--unknown-every",
                                        "--unknown-port"};
constexpr const char* kCallsOnly[] = {"--ramp", "--reinvite-pct", "--fragment-pct"};

void usage(std::FILE* to) {
  std::fprintf(to,
               "usage: callrec-pcapgen --out FILE [options]\n"
               "       callrec-pcapgen --calls N [--seconds S] --out FILE [options]\n"
               "\n"
               "Writes a pcap of N concurrent G.711 RTP streams (one packet per stream every ptime; with\n"
               "160-byte payloads a frame is 214 bytes: Ethernet 14 + IPv4 20 + UDP 8 + RTP 12 + 160),\n"
               "interleaved as they arrive on the wire (each stream has a random phase in the ptime).\n"
               "Stream i (1-based id) goes to port-lo + step*i on the first address, spilling to the next\n"
               "address when the port range is used up. The flow list (FILE.flows) has one line per stream:\n"
               "  id dst_ip dst_port src_ip src_port ssrc packets payload_bytes dst_index\n"
               "\n"
               "options:\n");
  for (const OptionSpec& o : kOptions) {
    std::string left = std::string(o.name) + (o.arg != nullptr ? std::string(" ") + o.arg : "");
    std::string help = o.help;
    for (std::size_t nl = help.find('\n'); nl != std::string::npos; nl = help.find('\n', nl + 1))
      help.insert(nl + 1, std::string(27, ' '));
    std::fprintf(to, "  %-24s %s\n", left.c_str(), help.c_str());
  }
  std::fprintf(to,
               "\n"
               "calls mode (--calls N): what a SPAN port sees of N concurrent SIP calls, Ethernet/IPv4/UDP.\n"
               "Call i: caller 10.64.x.y, callee 10.128.x.y (SIP on 5060 each, RTP on even ports); INVITE\n"
               "with an SDP offer (PCMA 8, telephone-event 101), 100, 180, 200 with the answer, ACK, then\n"
               "RTP both ways every 20 ms (172-byte RTP packets, distinct SSRCs) for --seconds, BYE and 200.\n"
               "Calls start evenly over --ramp seconds, so with ramp < seconds all N are up at once.\n"
               "--reinvite-pct of the calls get a re-INVITE mid-call that moves one party's media to a new\n"
               "port (the RTP after it uses that port); --fragment-pct of the INVITEs carry routing headers\n"
               "that make them ~2.5 KB, sent as two IPv4 fragments. The call list (FILE.calls) has a summary\n"
               "line (frames, rtp, sip, peak_concurrent ...) and one line per call:\n"
               "  id call_id caller_sip callee_sip caller_rtp callee_rtp moved fragmented ssrc_caller ssrc_callee packets_each_way\n"
               "Stream-mode options (--streams, --dst-ip, --ptime ...) are refused in calls mode.\n"
               "\n"
               "examples:\n"
               "  callrec-pcapgen --streams 10000 --packets-per-stream 100 --dst-ip 10.0.0.1 --out /dev/shm/s10k.pcap\n"
               "  callrec-pcapgen --calls 10000 --seconds 20 -o /dev/shm/calls10k.pcap\n"
               "\n"
               "exit status: 0 written, 1 I/O error, 2 usage error\n");
}

bool to_uint(const char* s, unsigned long max, unsigned long& out) {
  char* end = nullptr;
  errno = 0;
  const unsigned long v = std::strtoul(s, &end, 0);
  if (errno != 0 || end == s || *end != '\0' || v > max || s[0] == '-') return false;
  out = v;
  return true;
}

bool parse_mac(const char* s, std::array<std::uint8_t, 6>& mac) {
  unsigned b[6];
  if (std::sscanf(s, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6) return false;
  for (int i = 0; i < 6; ++i) {
    if (b[i] > 255) return false;
    mac[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(b[i]);
  }
  return true;
}

/// Returns kExitOk to continue, or an exit code.
int parse(int argc, char** argv, Cli& cli) {
  for (int i = 1; i < argc; ++i) {
    const std::string name = std::string(argv[i]) == "-o" ? std::string("--out") : std::string(argv[i]);
    const OptionSpec* spec = nullptr;
    for (const OptionSpec& o : kOptions) {
      if (name == o.name) spec = &o;
    }
    if (spec == nullptr) {
      std::fprintf(stderr, "callrec-pcapgen: unknown option '%s' (see --help)\n", argv[i]);
      return kExitUsage;
    }
    cli.given.push_back(name);
    if (spec->arg == nullptr) {
      if (name == "--help") {
        usage(stdout);
        std::exit(kExitOk);
      }
      if (name == "--print-flows") cli.print_flows = true;
      if (name == "--quiet") cli.quiet = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "callrec-pcapgen: %s needs %s\n", spec->name, spec->arg);
      return kExitUsage;
    }
    const char* v = argv[++i];
    unsigned long u = 0;
    bool ok = true;
    Options& g = cli.gen;
    if (name == "--streams") {
      ok = to_uint(v, 10'000'000, u) && u > 0;
      g.streams = static_cast<unsigned>(u);
    } else if (name == "--packets-per-stream") {
      ok = to_uint(v, 100'000'000, u) && u > 0;
      g.packets_per_stream = static_cast<unsigned>(u);
    } else if (name == "--seconds") {
      ok = to_uint(v, 1'000'000, u) && u > 0;
      cli.seconds = static_cast<unsigned>(u);
    } else if (name == "--dst-ip") {
      ok = callrec::pcapgen::parse_ip(v, g.dst_ip);
    } else if (name == "--dst-ips") {
      ok = to_uint(v, 65536, u);
      g.dst_ips = static_cast<unsigned>(u);
    } else if (name == "--port-lo" || name == "--port-hi" || name == "--port-step" || name == "--src-port-lo" ||
               name == "--unknown-port" || name == "--vlan") {
      ok = to_uint(v, name == "--vlan" ? 4094 : 65535, u) && (u > 0 || name == "--vlan");
      const auto p = static_cast<std::uint16_t>(u);
      if (name == "--port-lo") g.port_lo = p;
      if (name == "--port-hi") g.port_hi = p;
      if (name == "--port-step") g.port_step = p;
      if (name == "--src-port-lo") g.src_port_lo = p;
      if (name == "--unknown-port") g.unknown_port = p;
      if (name == "--vlan") g.vlan = p;
    } else if (name == "--src-ip") {
      ok = callrec::pcapgen::parse_ip(v, g.src_ip);
    } else if (name == "--dst-mac") {
      ok = parse_mac(v, g.dst_mac);
    } else if (name == "--payload-type") {
      ok = to_uint(v, 127, u);
      g.payload_type = static_cast<std::uint8_t>(u);
    } else if (name == "--payload-bytes") {
      ok = to_uint(v, 1400, u) && u > 0;
      g.payload_bytes = static_cast<unsigned>(u);
    } else if (name == "--ptime") {
      ok = to_uint(v, 1000, u) && u > 0;
      g.ptime_ms = static_cast<unsigned>(u);
    } else if (name == "--stray-every") {
      ok = to_uint(v, 1'000'000'000, u);
      g.stray_every = static_cast<unsigned>(u);
    } else if (name == "--unknown-every") {
      ok = to_uint(v, 1'000'000'000, u);
      g.unknown_every = static_cast<unsigned>(u);
    } else if (name == "--calls") {
      ok = to_uint(v, 1'000'000, u) && u > 0;
      cli.calls.calls = static_cast<unsigned>(u);
      cli.calls_mode = true;
    } else if (name == "--ramp") {
      char* end = nullptr;
      const double r = std::strtod(v, &end);
      ok = end != v && *end == '\0' && r >= 0 && r <= 86'400;
      cli.calls.ramp_s = r;
    } else if (name == "--reinvite-pct" || name == "--fragment-pct") {
      ok = to_uint(v, 100, u);
      (name == "--reinvite-pct" ? cli.calls.reinvite_pct : cli.calls.fragment_pct) = static_cast<unsigned>(u);
    } else if (name == "--seed") {
      char* end = nullptr;
      g.seed = std::strtoull(v, &end, 0);
      ok = end != v && *end == '\0';
    } else if (name == "--out") {
      cli.out = v;
    } else if (name == "--flows") {
      cli.flows = v;
    }
    if (!ok) {
      std::fprintf(stderr, "callrec-pcapgen: bad value '%s' for %s (%s)\n", v, spec->name, spec->help);
      return kExitUsage;
    }
  }
  if (cli.out.empty()) {
    std::fprintf(stderr, "callrec-pcapgen: --out FILE is required (see --help)\n");
    return kExitUsage;
  }
  for (const std::string& g : cli.given) {
    for (const char* other : cli.calls_mode ? std::span<const char* const>(kStreamsOnly) : std::span<const char* const>(kCallsOnly)) {
      if (g == other) {
        std::fprintf(stderr, "callrec-pcapgen: %s does not apply %s (see --help)\n", other,
                     cli.calls_mode ? "with --calls" : "without --calls");
        return kExitUsage;
      }
    }
  }
  if (cli.calls_mode) {
    cli.calls.seed = cli.gen.seed;
    cli.calls.dst_mac = cli.gen.dst_mac;
    cli.calls.vlan = cli.gen.vlan;
    if (cli.seconds != 0) cli.calls.seconds = cli.seconds;
    if (cli.flows.empty()) cli.flows = cli.out + ".calls";
    return kExitOk;
  }
  if (cli.seconds != 0) cli.gen.packets_per_stream = cli.seconds * 1000U / cli.gen.ptime_ms;
  if (cli.flows.empty()) cli.flows = cli.out + ".flows";
  return kExitOk;
}

int run_calls(const Cli& cli) {
  namespace pg = callrec::pcapgen;
  std::vector<pg::Call> calls;
  pg::CallsSummary sum;
  if (std::string err = pg::plan_calls(cli.calls, calls, sum); !err.empty()) {
    std::fprintf(stderr, "callrec-pcapgen: %s\n", err.c_str());
    return kExitUsage;
  }
  const std::uint64_t total = std::uint64_t{cli.calls.calls} * 2 * sum.packets_per_direction;
  if (!cli.quiet) {
    std::fprintf(stderr,
                 "callrec-pcapgen: %u calls x %u s (%llu re-INVITEs, %llu fragmented INVITEs, peak %llu concurrent) "
                 "= %llu RTP packets -> %s\n",
                 cli.calls.calls, cli.calls.seconds, static_cast<unsigned long long>(sum.reinvites),
                 static_cast<unsigned long long>(sum.fragmented), static_cast<unsigned long long>(sum.peak_concurrent),
                 static_cast<unsigned long long>(total), cli.out.c_str());
  }
  auto progress = [&](std::uint64_t frames) {
    if (!cli.quiet) {
      std::fprintf(stderr, "\r  %llu / ~%llu frames", static_cast<unsigned long long>(frames),
                   static_cast<unsigned long long>(total));
    }
  };
  if (std::string err = pg::write_calls_pcap(cli.out, cli.calls, calls, sum, progress); !err.empty()) {
    std::fprintf(stderr, "\ncallrec-pcapgen: %s\n", err.c_str());
    return kExitIo;
  }
  if (std::string err = pg::write_call_list(cli.flows, cli.calls, calls, sum); !err.empty()) {
    std::fprintf(stderr, "\ncallrec-pcapgen: %s\n", err.c_str());
    return kExitIo;
  }
  if (!cli.quiet) {
    std::fprintf(stderr,
                 "%swrote %llu frames (%llu RTP, %llu SIP messages, %llu IP fragments), %llu bytes, %.1f s of traffic; "
                 "calls: %s\n",
                 sum.frames >= 1'000'000 ? "\n" : "", static_cast<unsigned long long>(sum.frames),
                 static_cast<unsigned long long>(sum.rtp), static_cast<unsigned long long>(sum.sip),
                 static_cast<unsigned long long>(sum.fragments), static_cast<unsigned long long>(sum.file_bytes),
                 sum.span_s, cli.flows.c_str());
  }
  if (cli.print_flows) pg::print_call_list(stdout, cli.calls, calls, sum);
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  Cli cli;
  if (const int rc = parse(argc, argv, cli); rc != kExitOk) return rc;
  if (cli.calls_mode) return run_calls(cli);
  std::vector<callrec::pcapgen::Stream> streams;
  if (std::string err = callrec::pcapgen::plan(cli.gen, streams); !err.empty()) {
    std::fprintf(stderr, "callrec-pcapgen: %s\n", err.c_str());
    return kExitUsage;
  }
  const std::uint64_t total = std::uint64_t{cli.gen.streams} * cli.gen.packets_per_stream;
  if (!cli.quiet) {
    std::fprintf(stderr, "callrec-pcapgen: %u streams x %u packets = %llu RTP packets -> %s\n", cli.gen.streams,
                 cli.gen.packets_per_stream, static_cast<unsigned long long>(total), cli.out.c_str());
  }
  callrec::pcapgen::Summary sum;
  auto progress = [&](std::uint64_t frames) {
    if (!cli.quiet) {
      std::fprintf(stderr, "\r  %llu / ~%llu frames", static_cast<unsigned long long>(frames),
                   static_cast<unsigned long long>(total));
    }
  };
  if (std::string err = callrec::pcapgen::write_pcap(cli.out, cli.gen, streams, sum, progress); !err.empty()) {
    std::fprintf(stderr, "\ncallrec-pcapgen: %s\n", err.c_str());
    return kExitIo;
  }
  if (std::string err = callrec::pcapgen::write_flow_list(cli.flows, streams, sum); !err.empty()) {
    std::fprintf(stderr, "\ncallrec-pcapgen: %s\n", err.c_str());
    return kExitIo;
  }
  if (!cli.quiet) {
    std::fprintf(stderr, "%swrote %llu frames (%llu RTP, %llu stray, %llu unknown), %llu bytes; flows: %s\n",
                 sum.frames >= 1'000'000 ? "\n" : "", static_cast<unsigned long long>(sum.frames),
                 static_cast<unsigned long long>(sum.rtp), static_cast<unsigned long long>(sum.stray),
                 static_cast<unsigned long long>(sum.unknown), static_cast<unsigned long long>(sum.file_bytes),
                 cli.flows.c_str());
  }
  if (cli.print_flows) {
    std::printf("# id dst_ip dst_port src_ip src_port ssrc packets payload_bytes dst_index\n");
    for (const auto& s : streams) {
      std::printf("%u %s %u %s %u 0x%08x %llu %llu %u\n", s.id, callrec::pcapgen::ip_to_string(s.dst_ip).c_str(),
                  s.dst_port, callrec::pcapgen::ip_to_string(s.src_ip).c_str(), s.src_port, s.ssrc,
                  static_cast<unsigned long long>(s.packets), static_cast<unsigned long long>(s.payload_bytes),
                  s.dst_index);
    }
  }
  return kExitOk;
}
