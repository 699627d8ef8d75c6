// callrec: inspect, export, play and repair record files (../shared/spec/record-format.md),
// list the recordings catalog and show a running daemon's status.
//
// This file holds the one table of subcommands and their options; usage(), the parser and the
// handlers are driven by it. To add a subcommand: add its options array and one kCommands
// entry.
#include <cstdio>
#include <span>
#include <string>
#include <string_view>

#include "cli.hpp"

namespace callrec::cli {
namespace {

Exit run_help(const CommandSpec& cmd, const ParsedArgs& args);

constexpr OptionSpec kInfoOptions[] = {
    {"json", 0, "", "print one JSON array with one object per FILE instead of text"},
};

constexpr OptionSpec kExportOptions[] = {
    {"output", 'o', "OUT.wav", "WAV file to write, created or overwritten", true},
    {"sort", 0, "", "join the FILEs in name order (names embed the start time)"},
    {"call", 0, "ID", "export a recording of the catalog instead of FILEs: its catalog id, or its Call-ID"},
    {"catalog", 'c', "FILE", "with --call: the catalog database (default: as callrec list)"},
};

constexpr OptionSpec kPlayOptions[] = {
    {"to", 't', "HOST:PORT", "destination: 192.0.2.1:5004, [2001:db8::1]:5004, host:5004", true},
    {"speed", 's', "X", "play X times as fast (period / X); 0.01 to 1000, default 1"},
    {"loop", 'l', "", "start again after the last packet, until interrupted"},
    {"quiet", 'q', "", "no progress line, only the final summary"},
};

constexpr OptionSpec kRepairOptions[] = {
    {"dry-run", 'n', "", "only inspect and print what would change"},
};

constexpr OptionSpec kListOptions[] = {
    {"catalog", 'c', "FILE", "the catalog database (default: that of the daemon running with the default "
                             "--metrics endpoint, else /var/lib/callrec/catalog.db)"},
    {"device", 'd', "MAC", "only recordings of this device (exact match)"},
    {"number", 'n', "NUMBER", "only calls with this number as remote or local number"},
    {"id", 0, "ID", "only the recording with this catalog id (the ID column)"},
    {"call-id", 0, "ID", "only recordings with this phone-chosen id (RecordStartRequest id)"},
    {"since", 0, "TIME", "only recordings started at or after TIME"},
    {"until", 0, "TIME", "only recordings started before TIME (a DATE: up to the end of that day)"},
    {"state", 0, "STATE", "only recordings in STATE: recording, stopped or recovered"},
    {"limit", 0, "N", "show at most the N newest (default 100; 0: no limit)"},
    {"json", 0, "", "print one JSON array with one object per recording instead of a table"},
};

constexpr OptionSpec kStatusOptions[] = {
    {"metrics", 'm', "HOST:PORT", "the daemon's metrics endpoint (default: its default, 127.0.0.1:9464)"},
    {"json", 0, "", "print the daemon's /status JSON object as it is"},
};

constexpr CommandSpec kCommands[] = {
    {"info", "[--json] FILE...", "show header, packets, duration and integrity of record files",
     "Reads each FILE without changing it and prints: codec, rtpLen, increment, dataSize,\n"
     "packets (declared by dataSize, and whole packets on disk), send period, playable\n"
     "duration, header byte order, the integrity verdict (ok, repairable, broken) and every\n"
     "problem found. FILEs that cannot be read are reported and the others still shown.\n",
     kInfoOptions, 1, SIZE_MAX, "FILE",
     "1 when any FILE is not ok (verdict repairable or broken, or an unknown codec);\n"
     "3 when a FILE cannot be opened or read.",
     run_info},
    {"export", "[--sort] FILE... -o OUT.wav | --call ID -o OUT.wav", "decode record files or a catalog call into a 16-bit PCM WAV file",
     "Decodes the G.711 payload (PCMA, PCMU) of every packet to 16-bit PCM mono WAV at the\n"
     "codec's clock rate (8000 Hz). Several FILEs are segments of one recording and are\n"
     "joined in the order given, or in name order with --sort. The RTP header of each packet\n"
     "(CSRC list and extension included) and RTP padding are skipped. All FILEs must have the\n"
     "same clock rate. A damaged FILE contributes its readable packets (see exit code 1).\n"
     "\n"
     "--call ID exports one recording of the catalog (ID: its catalog id, or its Call-ID when\n"
     "that names one recording). A call of two streams (passive capture, SIPREC) becomes a\n"
     "stereo WAV: the caller (stream 0, the party that sent the INVITE) on the left channel,\n"
     "the callee on the right, aligned on packet time (each segment is placed at its capture\n"
     "time and each packet at its RTP timestamp), silence where a side sent nothing. PCMA,\n"
     "PCMU and G722 are decoded (with G722 the WAV is 16 kHz and G.711 is interpolated to it);\n"
     "any other codec is refused, naming it, and nothing is written.\n",
     kExportOptions, 0, SIZE_MAX, "FILE",
     "1 when the export is partial (a FILE is damaged: only its readable packets were\n"
     "  exported; a packet that is not RTP became silence) or impossible (unknown codec,\n"
     "  uninterpretable header: nothing is written);\n"
     "2 also for mixed clock rates or OUT.wav being one of the FILEs;\n"
     "3 when a FILE cannot be read or OUT.wav cannot be written (OUT.wav is removed).",
     run_export},
    {"play", "FILE --to HOST:PORT [--speed X] [--loop] [--quiet]",
     "send the packets of a record file by UDP at their recorded pace",
     "Sends every stored packet, unchanged, as one UDP datagram to HOST:PORT, one per period\n"
     "= increment / clock rate (20 ms for 160 at 8000 Hz), as the phone's player does.\n"
     "Packets are paced against absolute deadlines (first packet + k * period), so delays\n"
     "never accumulate. HOST is an IPv4 address, an IPv6 address in brackets or a name.\n"
     "Progress is shown on stderr about once per second when stderr is a terminal; otherwise,\n"
     "or with --quiet, only a final summary line. Ctrl-C (SIGINT) or SIGTERM stops cleanly\n"
     "and prints the summary.\n",
     kPlayOptions, 1, 1, "FILE",
     "0 when every packet was sent (with --loop: at least one whole pass, then stopped);\n"
     "1 when the play is partial: stopped before the end, sends failed (e.g. connection\n"
     "  refused), or the FILE is damaged (its readable packets were sent) or unplayable;\n"
     "3 when the FILE cannot be read or the socket cannot be set up.",
     run_play},
    {"repair", "[--dry-run] FILE...", "fix dataSize and cut a partial trailing packet after a crash",
     "Recomputes dataSize from the whole packets on disk and cuts off a partial trailing\n"
     "packet: what a crash or a full disk leaves behind. A healthy FILE is not touched\n"
     "(\"ok, nothing to change\"). A FILE whose header cannot be interpreted is refused.\n",
     kRepairOptions, 1, SIZE_MAX, "FILE",
     "0 when every FILE is ok afterwards (repaired, or nothing to change);\n"
     "1 when a FILE cannot be repaired (header not interpretable) or, with --dry-run,\n"
     "  when a FILE needs a repair;\n"
     "3 when a FILE cannot be opened, read or written.",
     run_repair},
    {"list", "[--catalog FILE] [FILTERS] [--limit N] [--json]", "list recordings from the daemon's catalog",
     "Reads the catalog (the SQLite database callrecd keeps of its recordings; read-only,\n"
     "safe beside a running daemon) and prints the recordings that match every filter given,\n"
     "newest first: catalog id, device, remote and local number, direction, codec, start\n"
     "time (UTC), duration (so far, while recording), state with the stop reason, packets\n"
     "received, packets lost and number of record files. --json prints every column, the\n"
     "stream statistics and the record files (segments) of each recording.\n"
     "\n"
     "TIME is a date 2026-11-29 (UTC midnight), an ISO-8601 time 2026-11-29T18:00:00Z\n"
     "(Z or an offset such as +01:00; none means UTC) or unix seconds 1795975200.\n",
     kListOptions, 0, 0, "", "3 when the catalog cannot be opened or read (missing, not a catalog, unreadable).\n"
     "No match is not an error: exit 0, nothing on stdout ([] with --json).",
     run_list},
    {"status", "[--metrics HOST:PORT] [--json]", "show what a running daemon is doing",
     "Asks a running callrecd (GET /status on its metrics endpoint, --metrics of callrecd)\n"
     "and prints: uptime, active recordings, packets per second received and bytes per\n"
     "second written (over the daemon's last second), packets dropped by cause, free space on\n"
     "the storage volume, then one line per active recording.\n",
     kStatusOptions, 0, 0, "",
     "1 when the daemon answers, but not with a JSON status (an HTTP error, another program);\n"
     "3 when the daemon is not reachable at HOST:PORT (not running, metrics off, timeout).",
     run_status},
    {"help", "[COMMAND]", "show this help, or the help of COMMAND",
     "Shows the global help, or the help of one COMMAND (same as callrec COMMAND --help).\n",
     {}, 0, 1, "COMMAND", "", run_help},
};

Exit run_help(const CommandSpec& cmd, const ParsedArgs& args) {
  if (args.positionals.empty()) {
    usage(stdout, nullptr);
    return Exit::kOk;
  }
  const CommandSpec* target = find_command(args.positionals.front());
  if (target == nullptr) return usage_error(&cmd, "unknown command '" + printable(args.positionals.front()) + "'");
  usage(stdout, target);
  return Exit::kOk;
}

}  // namespace

std::span<const CommandSpec> commands() { return kCommands; }

const CommandSpec* find_command(std::string_view name) {
  for (const CommandSpec& c : kCommands) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

}  // namespace callrec::cli

int main(int argc, char** argv) {
  using namespace callrec::cli;
  if (argc < 2) {
    usage(stderr, nullptr);
    return to_int(Exit::kUsage);
  }
  const std::string_view first = argv[1];
  if (first == "-h" || first == "--help") {
    usage(stdout, nullptr);
    return to_int(Exit::kOk);
  }
  if (first.starts_with('-')) {
    return to_int(usage_error(nullptr, "unknown option '" + printable(first) + "' (a COMMAND comes first)"));
  }
  const CommandSpec* cmd = find_command(first);
  if (cmd == nullptr) return to_int(usage_error(nullptr, "unknown command '" + printable(first) + "'"));

  const std::span<char* const> rest(argv + 2, static_cast<std::size_t>(argc - 2));
  if (wants_help(rest)) {
    usage(stdout, cmd);
    return to_int(Exit::kOk);
  }
  if (cmd->run == nullptr) {
    return to_int(usage_error(nullptr, "'" + std::string(cmd->name) +
                                           "' is available with the daemon; this build does not include it"));
  }
  ParsedArgs args;
  if (auto err = parse_args(*cmd, rest, args)) return to_int(usage_error(cmd, *err));
  return to_int(cmd->run(*cmd, args));
}
