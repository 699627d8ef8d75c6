// libFuzzer target for the control protocol's wire codec: TCP bytes -> FrameDecoder (split at
// fuzzer-chosen points, small max length so overflow is reached) -> parse_message -> typed
// parsing, with round-trip properties checked on everything that parses:
// - format_message(parse_message(x)) parses back to the same message;
// - a typed message formatted and parsed again gives the same typed values;
// - percent_decode(percent_encode(x)) == x;
// - request_identity() agrees with parse_message() on every line that parses.
// Any violated property aborts (a finding), as does any sanitizer report.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "control/protocol.hpp"

namespace {

using namespace callrec::control;

void check(bool ok) {
  if (!ok) std::abort();
}

void typed(const Message& m) {
  switch (command_of(m.cmd)) {
    case Command::kStartRequest: {
      const auto r = parse_start_request(m);
      if (!r.ok()) {
        check(!r.error().reason.empty());
        return;
      }
      check(valid_id(r->id));
      check(normalize_device(r->device) == r->device);  // normalization is idempotent
      const auto again = parse_message(format_start_request(*r));
      check(again.ok());
      const auto r2 = parse_start_request(*again);
      check(r2.ok());
      check(r2->id == r->id && r2->device == r->device && r2->remote_number == r->remote_number &&
            r2->remote_name == r->remote_name && r2->local_number == r->local_number &&
            r2->local_name == r->local_name && r2->dir == r->dir && r2->codec == r->codec && r2->extras == r->extras);
      break;
    }
    case Command::kStopRequest: {
      const auto r = parse_stop_request(m);
      if (!r.ok()) return;
      const auto again = parse_message(format_stop_request(*r));
      check(again.ok());
      const auto r2 = parse_stop_request(*again);
      check(r2.ok());
      check(r2->id == r->id && r2->remote_number == r->remote_number && r2->remote_name == r->remote_name &&
            r2->local_number == r->local_number && r2->local_name == r->local_name && r2->reason == r->reason &&
            r2->extras == r->extras);
      StartRequest meta;
      apply_stop_overrides(meta, *r);
      break;
    }
    case Command::kStartResponse: {
      const auto r = parse_start_response(m);
      if (!r.ok()) return;
      const auto again = parse_message(format_start_response(*r));
      check(again.ok());
      const auto r2 = parse_start_response(*again);
      check(r2.ok());
      check(r2->id == r->id && r2->success == r->success && r2->reason == r->reason);
      if (r->success) check(r2->server == r->server && r2->port == r->port);
      break;
    }
    case Command::kStopResponse: {
      const auto r = parse_stop_response(m);
      if (!r.ok()) return;
      const auto again = parse_message(format_stop_response(*r));
      check(again.ok());
      const auto r2 = parse_stop_response(*again);
      check(r2.ok() && r2->id == r->id && r2->success == r->success && r2->reason == r->reason);
      break;
    }
    case Command::kUnknown:
      break;
  }
}

void message(std::string_view line) {
  const auto m = parse_message(line);
  // request_identity() answers what a refused line was; on a line that parses it must agree
  // with the parsed message (its command, and the id when that id is valid).
  const auto ident = request_identity(line);
  if (ident) {
    check(ident->command == Command::kStartRequest || ident->command == Command::kStopRequest);
    check(ident->id.empty() || valid_id(ident->id));
  }
  if (m.ok()) {
    const Command c = command_of(m->cmd);
    const bool request = c == Command::kStartRequest || c == Command::kStopRequest;
    check(request == ident.has_value());
    if (ident) {
      const auto id = m->get("id");
      if (id && valid_id(*id)) check(ident->id == *id);
    }
  }
  if (!m.ok()) {
    check(m.error().reason == reason::kBadRequest);
    return;
  }
  check(!m->cmd.empty());
  const std::string wire = format_message(*m);
  check(wire.size() >= 2 && wire.substr(wire.size() - 2) == "\r\n");
  check(wire.find_first_of(std::string_view("\n\0", 2)) == wire.size() - 1);
  const auto back = parse_message(wire);
  check(back.ok() && back->cmd == m->cmd && back->fields == m->fields);
  typed(*m);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  // First byte: read size (1..32) and whether to use a tiny max_message to reach overflow.
  const std::size_t chunk = (data[0] & 0x1F) + 1u;
  const std::size_t max = (data[0] & 0x80) != 0 ? 64 : kDefaultMaxMessage;
  const std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);

  FrameDecoder d(max);
  std::size_t total = 0;
  for (std::size_t i = 0; i < bytes.size(); i += chunk) {
    d.feed(bytes.substr(i, chunk));
    check(d.pending().size() <= max + 1);
    while (auto line = d.next()) {
      check(line->size() <= max && !line->empty());
      total += line->size();
      message(*line);
    }
  }
  if (auto rest = d.take_unterminated()) message(*rest);
  check(total <= bytes.size());

  // The whole input as one line, and the encoding round trip.
  message(bytes);
  check(percent_decode(percent_encode(bytes)) == std::string(bytes));
  return 0;
}
