#include "control/protocol.hpp"

#include <algorithm>
#include <array>
#include <charconv>

namespace callrec::control {
namespace {

constexpr char kHexDigits[] = "0123456789ABCDEF";

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  }
  return true;
}

bool needs_escape(unsigned char c) { return c < 0x20 || c == 0x7F || c == '&' || c == '=' || c == '%'; }

/// A short, log-safe rendering of untrusted bytes: at most 32 bytes, others as \xNN.
std::string excerpt(std::string_view s) {
  constexpr std::size_t kMax = 32;
  std::string out;
  out.reserve(std::min(s.size(), kMax) + 8);
  for (std::size_t i = 0; i < s.size() && i < kMax; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c >= 0x7F || c == '\\') {
      out += "\\x";
      out += kHexDigits[c >> 4];
      out += kHexDigits[c & 0xF];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > kMax) out += "...";
  return out;
}

ProtocolError bad_request(std::string detail) { return {reason::kBadRequest, std::move(detail)}; }

/// Puts key=value into `extras`, replacing the value of an existing key (first position kept).
void merge_extra(Fields& extras, const std::string& key, const std::string& value) {
  for (auto& [k, v] : extras) {
    if (k == key) {
      v = value;
      return;
    }
  }
  extras.emplace_back(key, value);
}

bool is_one_of(std::string_view key, std::initializer_list<std::string_view> keys) {
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

/// The `id` of a typed message, or the error to report.
std::optional<ProtocolError> check_id(const Message& m, std::string& out) {
  const auto id = m.get("id");
  if (!id) return bad_request("id missing");
  if (id->empty()) return bad_request("id empty");
  if (id->size() > kMaxIdLength) {
    return bad_request("id longer than " + std::to_string(kMaxIdLength) + " bytes");
  }
  if (!valid_id(*id)) return bad_request("id not printable ASCII: " + excerpt(*id));
  out.assign(*id);
  return std::nullopt;
}

std::optional<bool> result_from_wire(std::string_view s) {
  if (iequals(s, "success")) return true;
  if (iequals(s, "failed")) return false;
  return std::nullopt;
}

void append_fields(std::string& out, std::span<const Field> fields) {
  for (const auto& [k, v] : fields) {
    out += '&';
    percent_encode_to(k, out);
    out += '=';
    percent_encode_to(v, out);
  }
}

}  // namespace

std::optional<std::string_view> Message::get(std::string_view key) const {
  for (auto it = fields.rbegin(); it != fields.rend(); ++it) {
    if (it->first == key) return std::string_view(it->second);
  }
  return std::nullopt;
}

// ---- percent-encoding ------------------------------------------------------------------------

std::optional<std::string> percent_decode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    if (i + 2 >= in.size()) return std::nullopt;  // needs two more bytes
    const int hi = hex_value(in[i + 1]);
    const int lo = hex_value(in[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>((hi << 4) | lo);
    i += 2;
  }
  return out;
}

void percent_encode_to(std::string_view in, std::string& out) {
  for (const char ch : in) {
    const auto c = static_cast<unsigned char>(ch);
    if (needs_escape(c)) {
      out += '%';
      out += kHexDigits[c >> 4];
      out += kHexDigits[c & 0xF];
    } else {
      out += ch;
    }
  }
}

std::string percent_encode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  percent_encode_to(in, out);
  return out;
}

// ---- messages --------------------------------------------------------------------------------

namespace {

/// The message framing both parse_message() and request_identity() read: a trailing CR/LF/NUL
/// and leading blanks dropped, pairs split on '&' (empty pairs skipped), key and value on the
/// first '=' (no '=': an empty value). Calls on_pair(raw_key, raw_value) until it returns false.
std::string_view trim_message(std::string_view line) {
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n' || line.back() == '\0')) line.remove_suffix(1);
  while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
  return line;
}

template <class F>
void for_each_pair(std::string_view line, F&& on_pair) {
  std::size_t pos = 0;
  while (pos <= line.size()) {
    std::size_t amp = line.find('&', pos);
    if (amp == std::string_view::npos) amp = line.size();
    const std::string_view pair = line.substr(pos, amp - pos);
    pos = amp + 1;
    if (pair.empty()) continue;  // "a=1&&b=2", a trailing '&'
    const std::size_t eq = pair.find('=');
    if (!on_pair(pair.substr(0, eq), eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1))) return;
  }
}

}  // namespace

Parsed<Message> parse_message(std::string_view line) {
  line = trim_message(line);
  if (line.empty()) return bad_request("empty message");

  Message m;
  bool have_cmd = false;
  std::optional<ProtocolError> error;
  for_each_pair(line, [&](std::string_view raw_key, std::string_view raw_value) {
    auto fail = [&](std::string detail) {
      error = bad_request(std::move(detail));
      return false;
    };
    auto key = percent_decode(raw_key);
    if (!key) return fail("bad percent escape in key '" + excerpt(raw_key) + "'");
    if (key->empty()) return fail("empty key before '=" + excerpt(raw_value) + "'");
    auto value = percent_decode(raw_value);
    if (!value) return fail("bad percent escape in " + excerpt(*key) + "='" + excerpt(raw_value) + "'");

    if (!have_cmd) {
      if (*key != "cmd") return fail("does not start with cmd=: '" + excerpt(line) + "'");
      have_cmd = true;
    }
    if (*key == "cmd") {
      m.cmd = std::move(*value);  // a repeated cmd: the last one wins, like any key
    } else {
      m.fields.emplace_back(std::move(*key), std::move(*value));
    }
    return true;
  });
  if (error) return *std::move(error);
  if (!have_cmd) return bad_request("no cmd");
  if (m.cmd.empty()) return bad_request("empty cmd");
  return m;
}

std::string format_message(std::string_view cmd, std::span<const Field> fields) {
  std::string out;
  out.reserve(16 + cmd.size() + fields.size() * 24);
  out += "cmd=";
  percent_encode_to(cmd, out);
  append_fields(out, fields);
  out += "\r\n";
  return out;
}

std::string format_message(std::string_view cmd,
                           std::initializer_list<std::pair<std::string_view, std::string_view>> fields) {
  std::string out;
  out.reserve(16 + cmd.size() + fields.size() * 24);
  out += "cmd=";
  percent_encode_to(cmd, out);
  for (const auto& [k, v] : fields) {
    out += '&';
    percent_encode_to(k, out);
    out += '=';
    percent_encode_to(v, out);
  }
  out += "\r\n";
  return out;
}

std::string format_message(const Message& m) { return format_message(m.cmd, std::span<const Field>(m.fields)); }

// ---- typed commands --------------------------------------------------------------------------

Command command_of(std::string_view cmd) {
  if (iequals(cmd, kCmdStartRequest)) return Command::kStartRequest;
  if (iequals(cmd, kCmdStartResponse)) return Command::kStartResponse;
  if (iequals(cmd, kCmdStopRequest)) return Command::kStopRequest;
  if (iequals(cmd, kCmdStopResponse)) return Command::kStopResponse;
  return Command::kUnknown;
}

std::string_view command_name(Command c) {
  switch (c) {
    case Command::kStartRequest: return kCmdStartRequest;
    case Command::kStartResponse: return kCmdStartResponse;
    case Command::kStopRequest: return kCmdStopRequest;
    case Command::kStopResponse: return kCmdStopResponse;
    case Command::kUnknown: break;
  }
  return {};
}

std::optional<Direction> direction_from_name(std::string_view s) {
  if (iequals(s, "in") || iequals(s, "incoming") || iequals(s, "inbound")) return Direction::kIn;
  if (iequals(s, "out") || iequals(s, "outgoing") || iequals(s, "outbound")) return Direction::kOut;
  return std::nullopt;
}

std::string_view direction_name(Direction d) {
  switch (d) {
    case Direction::kIn: return "in";
    case Direction::kOut: return "out";
    case Direction::kUnknown: break;
  }
  return {};
}

std::optional<fileio::Codec> codec_from_wire(std::string_view s) {
  if (s.size() > 5 && s.substr(s.size() - 5) == "/8000") s.remove_suffix(5);
  for (const std::string_view a : {"PCMA", "G711A", "G.711A"}) {
    if (iequals(s, a)) return fileio::Codec::kPcma;
  }
  for (const std::string_view u : {"PCMU", "G711U", "G.711U"}) {
    if (iequals(s, u)) return fileio::Codec::kPcmu;
  }
  return std::nullopt;
}

std::string_view codec_wire_name(fileio::Codec c) { return c == fileio::Codec::kPcma ? "PCMA" : "PCMU"; }

bool valid_id(std::string_view id) {
  if (id.empty() || id.size() > kMaxIdLength) return false;
  return std::all_of(id.begin(), id.end(), [](char c) { return c >= 0x21 && c <= 0x7E; });
}

std::optional<std::string> normalize_device(std::string_view device) {
  if (device.empty() || device.size() > kMaxDeviceLength) return std::nullopt;

  // MAC address: 12 hex digits, no separator or one kind used between groups of equal size.
  std::array<char, 12> hex{};
  std::size_t nhex = 0;
  char sep = 0;
  bool mac = true;
  for (const char c : device) {
    if (hex_value(c) >= 0) {
      if (nhex == hex.size()) {
        mac = false;
        break;
      }
      hex[nhex++] = ascii_lower(c);
    } else if (c == ':' || c == '-' || c == '.') {
      if (sep != 0 && sep != c) {
        mac = false;
        break;
      }
      sep = c;
    } else {
      mac = false;
      break;
    }
  }
  if (mac && nhex == hex.size()) {
    // Separators must split the digits into equal groups of 2, 4 or 6 ("0011.22aa.bbcc").
    bool groups_ok = sep == 0;
    if (!groups_ok) {
      std::size_t group = 0;
      std::size_t len = 0;
      groups_ok = true;
      for (const char c : device) {
        if (c == sep) {
          if (len == 0 || (group != 0 && len != group)) groups_ok = false;
          group = len;
          len = 0;
        } else {
          ++len;
        }
      }
      if (len != group || (group != 2 && group != 4 && group != 6)) groups_ok = false;
    }
    if (groups_ok) {
      std::string out;
      out.reserve(17);
      for (std::size_t i = 0; i < hex.size(); ++i) {
        if (i != 0 && i % 2 == 0) out += ':';
        out += hex[i];
      }
      return out;
    }
  }

  if (device.front() == '.') return std::nullopt;
  const bool safe = std::all_of(device.begin(), device.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == ':' || c == '-';
  });
  if (!safe) return std::nullopt;
  return std::string(device);
}

Parsed<StartRequest> parse_start_request(const Message& m) {
  if (command_of(m.cmd) != Command::kStartRequest) {
    return bad_request("not a RecordStartRequest: cmd=" + excerpt(m.cmd));
  }
  StartRequest r;
  if (auto err = check_id(m, r.id)) return std::move(*err);

  const auto device = m.get("device");
  if (!device || device->empty()) return bad_request("device missing");
  auto norm = normalize_device(*device);
  if (!norm) return bad_request("device unusable: '" + excerpt(*device) + "'");
  r.device = std::move(*norm);

  if (const auto dir = m.get("dir"); dir && !dir->empty()) {
    const auto d = direction_from_name(*dir);
    if (!d) return ProtocolError{reason::kBadDir, "dir must be in|out, not '" + excerpt(*dir) + "'"};
    r.dir = *d;
  }
  if (const auto codec = m.get("codec"); codec && !codec->empty()) {
    r.codec = codec_from_wire(*codec);
    if (!r.codec) {
      return ProtocolError{reason::kUnsupportedCodec, "codec must be PCMA|PCMU, not '" + excerpt(*codec) + "'"};
    }
  }
  r.remote_number = m.get("remote_number").value_or("");
  r.remote_name = m.get("remote_name").value_or("");
  r.local_number = m.get("local_number").value_or("");
  r.local_name = m.get("local_name").value_or("");

  for (const auto& [k, v] : m.fields) {
    if (!is_one_of(k, {"id", "device", "remote_number", "remote_name", "local_number", "local_name", "dir",
                       "codec"})) {
      merge_extra(r.extras, k, v);
    }
  }
  return r;
}

Parsed<StopRequest> parse_stop_request(const Message& m) {
  if (command_of(m.cmd) != Command::kStopRequest) {
    return bad_request("not a RecordStopRequest: cmd=" + excerpt(m.cmd));
  }
  StopRequest r;
  if (auto err = check_id(m, r.id)) return std::move(*err);
  auto opt = [&m](std::string_view key) -> std::optional<std::string> {
    if (const auto v = m.get(key)) return std::string(*v);
    return std::nullopt;
  };
  r.remote_number = opt("remote_number");
  r.remote_name = opt("remote_name");
  r.local_number = opt("local_number");
  r.local_name = opt("local_name");
  r.reason = opt("reason");
  for (const auto& [k, v] : m.fields) {
    if (!is_one_of(k, {"id", "remote_number", "remote_name", "local_number", "local_name", "reason"})) {
      merge_extra(r.extras, k, v);
    }
  }
  return r;
}

Parsed<StartResponse> parse_start_response(const Message& m) {
  if (command_of(m.cmd) != Command::kStartResponse) {
    return bad_request("not a RecordStartResponse: cmd=" + excerpt(m.cmd));
  }
  StartResponse r;
  if (auto err = check_id(m, r.id)) return std::move(*err);
  const auto result = m.get("result");
  const auto ok = result ? result_from_wire(*result) : std::nullopt;
  if (!ok) return bad_request("result must be success|failed, not '" + excerpt(result.value_or("")) + "'");
  r.success = *ok;
  r.reason = m.get("reason").value_or("");
  r.server = m.get("server").value_or("");
  const std::string_view port = m.get("port").value_or("");
  if (!port.empty() || r.success) {
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) {
      return bad_request("port must be 1..65535, not '" + excerpt(port) + "'");
    }
    r.port = static_cast<std::uint16_t>(value);
  }
  if (r.success && r.server.empty()) return bad_request("server missing in a successful response");
  for (const auto& [k, v] : m.fields) {
    if (!is_one_of(k, {"id", "result", "reason", "server", "port"})) merge_extra(r.extras, k, v);
  }
  return r;
}

Parsed<StopResponse> parse_stop_response(const Message& m) {
  if (command_of(m.cmd) != Command::kStopResponse) {
    return bad_request("not a RecordStopResponse: cmd=" + excerpt(m.cmd));
  }
  StopResponse r;
  if (auto err = check_id(m, r.id)) return std::move(*err);
  const auto result = m.get("result");
  const auto ok = result ? result_from_wire(*result) : std::nullopt;
  if (!ok) return bad_request("result must be success|failed, not '" + excerpt(result.value_or("")) + "'");
  r.success = *ok;
  r.reason = m.get("reason").value_or("");
  for (const auto& [k, v] : m.fields) {
    if (!is_one_of(k, {"id", "result", "reason"})) merge_extra(r.extras, k, v);
  }
  return r;
}

std::string format_start_request(const StartRequest& r) {
  Fields f{{"id", r.id},
           {"device", r.device},
           {"remote_number", r.remote_number},
           {"remote_name", r.remote_name},
           {"local_number", r.local_number},
           {"local_name", r.local_name}};
  if (r.dir != Direction::kUnknown) f.emplace_back("dir", std::string(direction_name(r.dir)));
  if (r.codec) f.emplace_back("codec", std::string(codec_wire_name(*r.codec)));
  f.insert(f.end(), r.extras.begin(), r.extras.end());
  return format_message(kCmdStartRequest, f);
}

std::string format_start_response(const StartResponse& r) {
  std::string out = format_message(kCmdStartResponse, {{"id", r.id},
                                                       {"result", r.success ? "success" : "failed"},
                                                       {"reason", r.reason},
                                                       {"server", r.success ? std::string_view(r.server) : ""},
                                                       {"port", r.success ? std::to_string(r.port) : ""}});
  if (!r.extras.empty()) {
    out.resize(out.size() - 2);  // before "\r\n"
    append_fields(out, r.extras);
    out += "\r\n";
  }
  return out;
}

std::string format_stop_request(const StopRequest& r) {
  Fields f{{"id", r.id}};
  auto add = [&f](std::string_view key, const std::optional<std::string>& v) {
    if (v) f.emplace_back(std::string(key), *v);
  };
  add("remote_number", r.remote_number);
  add("remote_name", r.remote_name);
  add("local_number", r.local_number);
  add("local_name", r.local_name);
  add("reason", r.reason);
  f.insert(f.end(), r.extras.begin(), r.extras.end());
  return format_message(kCmdStopRequest, f);
}

std::string format_stop_response(const StopResponse& r) {
  Fields f{{"id", r.id}, {"result", r.success ? "success" : "failed"}};
  if (!r.reason.empty()) f.emplace_back("reason", r.reason);
  f.insert(f.end(), r.extras.begin(), r.extras.end());
  return format_message(kCmdStopResponse, f);
}

void apply_stop_overrides(StartRequest& meta, const StopRequest& stop) {
  if (stop.remote_number) meta.remote_number = *stop.remote_number;
  if (stop.remote_name) meta.remote_name = *stop.remote_name;
  if (stop.local_number) meta.local_number = *stop.local_number;
  if (stop.local_name) meta.local_name = *stop.local_name;
  for (const auto& [k, v] : stop.extras) merge_extra(meta.extras, k, v);
}

// ---- framing ---------------------------------------------------------------------------------

std::optional<RequestIdentity> request_identity(std::string_view line) {
  // parse_message()'s framing, but a pair that does not decode is skipped instead of failing
  // the line, so the command and id survive a bad field.
  std::optional<Command> cmd;
  std::string id;
  for_each_pair(trim_message(line), [&](std::string_view raw_key, std::string_view raw_value) {
    const auto key = percent_decode(raw_key);
    if (!key) return true;
    const auto value = percent_decode(raw_value);
    if (*key == "cmd") {
      cmd = value ? command_of(*value) : Command::kUnknown;
    } else if (*key == "id") {
      id = value && valid_id(*value) ? *value : std::string();
    }
    return true;
  });
  if (!cmd || (*cmd != Command::kStartRequest && *cmd != Command::kStopRequest)) return std::nullopt;
  return RequestIdentity{*cmd, std::move(id)};
}

FrameDecoder::FrameDecoder(std::size_t max_message) : max_(max_message) {}

void FrameDecoder::feed(std::span<const std::byte> bytes) {
  feed(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

void FrameDecoder::feed(std::string_view bytes) {
  static constexpr std::string_view kTerminators("\n\0", 2);
  std::size_t i = 0;
  while (!overflow_ && i < bytes.size()) {
    std::size_t end = bytes.find_first_of(kTerminators, i);
    const bool terminated = end != std::string_view::npos;
    if (!terminated) end = bytes.size();
    // A partial message may hold max_ bytes plus the CR of a "\r\n" still to come.
    if (pending_.size() + (end - i) > max_ + 1) {
      overflow_ = true;
      pending_.clear();
      pending_.shrink_to_fit();
      return;
    }
    pending_.append(bytes.data() + i, end - i);
    if (!terminated) return;
    complete_line();
    i = end + 1;
  }
}

void FrameDecoder::complete_line() {
  if (!pending_.empty() && pending_.back() == '\r') pending_.pop_back();
  if (pending_.size() > max_) {
    overflow_ = true;
    pending_.clear();
    pending_.shrink_to_fit();
    return;
  }
  if (pending_.empty()) return;  // blank line, "\r\n\0" ...
  ready_.push_back(std::move(pending_));
  pending_ = std::string();
}

std::optional<std::string> FrameDecoder::next() {
  if (ready_.empty()) return std::nullopt;
  std::string m = std::move(ready_.front());
  ready_.pop_front();
  ++messages_;
  return m;
}

std::optional<std::string> FrameDecoder::take_unterminated() {
  if (overflow_) return std::nullopt;
  std::string_view s = pending_;
  if (!s.empty() && s.back() == '\r') s.remove_suffix(1);
  std::string_view body = s;
  while (!body.empty() && (body.front() == ' ' || body.front() == '\t')) body.remove_prefix(1);
  if (body.size() < 5 || body.substr(0, 4) != "cmd=" || body[4] == '&') return std::nullopt;
  // Not inside a %XX escape: neither "...%" nor "...%X".
  if (body.back() == '%' || body[body.size() - 2] == '%') return std::nullopt;
  std::string out(s);
  pending_.clear();
  ++messages_;
  return out;
}

}  // namespace callrec::control
