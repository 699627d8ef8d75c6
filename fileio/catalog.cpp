#include "fileio/catalog.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>

namespace callrec::fileio {

namespace {

constexpr int kBusyTimeoutMs = 5000;

constexpr const char* kSchema = R"sql(
CREATE TABLE recordings(
  id            INTEGER PRIMARY KEY,
  call_id       TEXT NOT NULL DEFAULT '',
  source        TEXT NOT NULL DEFAULT '',
  device        TEXT NOT NULL DEFAULT '',
  remote_number TEXT NOT NULL DEFAULT '',
  remote_name   TEXT NOT NULL DEFAULT '',
  local_number  TEXT NOT NULL DEFAULT '',
  local_name    TEXT NOT NULL DEFAULT '',
  direction     TEXT NOT NULL DEFAULT '',
  codec         TEXT NOT NULL DEFAULT '',
  started_at    INTEGER NOT NULL,
  stopped_at    INTEGER,
  state         TEXT NOT NULL DEFAULT 'recording' CHECK(state IN ('recording','stopped','recovered')),
  stop_reason   TEXT NOT NULL DEFAULT '',
  peer          TEXT NOT NULL DEFAULT '',
  extra         TEXT NOT NULL DEFAULT '{}',
  received      INTEGER NOT NULL DEFAULT 0,
  lost          INTEGER NOT NULL DEFAULT 0,
  filled        INTEGER NOT NULL DEFAULT 0,
  duplicate     INTEGER NOT NULL DEFAULT 0,
  reordered     INTEGER NOT NULL DEFAULT 0,
  late          INTEGER NOT NULL DEFAULT 0,
  stray         INTEGER NOT NULL DEFAULT 0,
  other_payload INTEGER NOT NULL DEFAULT 0,
  bytes         INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE segments(
  recording_id INTEGER NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
  idx          INTEGER NOT NULL,
  path         TEXT NOT NULL,
  codec        TEXT NOT NULL,
  rtp_len      INTEGER NOT NULL,
  increment    INTEGER NOT NULL,
  packets      INTEGER NOT NULL DEFAULT 0,
  opened_at    INTEGER NOT NULL,
  closed_at    INTEGER,
  stream       INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(recording_id, idx)
) WITHOUT ROWID;
CREATE INDEX recordings_device        ON recordings(device, started_at);
CREATE INDEX recordings_remote_number ON recordings(remote_number, started_at);
CREATE INDEX recordings_local_number  ON recordings(local_number, started_at);
CREATE INDEX recordings_started_at    ON recordings(started_at);
CREATE INDEX recordings_call_id       ON recordings(call_id);
CREATE INDEX recordings_open          ON recordings(started_at) WHERE state = 'recording';
)sql" "\n";

/// Tables added by schema version 2 (also the migration from version 1, with the ALTER).
constexpr const char* kSchemaV2Tables = R"sql(
CREATE TABLE streams(
  recording_id  INTEGER NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
  stream        INTEGER NOT NULL,
  role          TEXT NOT NULL DEFAULT '',
  codec         TEXT NOT NULL DEFAULT '',
  src           TEXT NOT NULL DEFAULT '',
  dst           TEXT NOT NULL DEFAULT '',
  flags         TEXT NOT NULL DEFAULT '',
  packets       INTEGER NOT NULL DEFAULT 0,
  lost          INTEGER NOT NULL DEFAULT 0,
  filled        INTEGER NOT NULL DEFAULT 0,
  duplicate     INTEGER NOT NULL DEFAULT 0,
  reordered     INTEGER NOT NULL DEFAULT 0,
  late          INTEGER NOT NULL DEFAULT 0,
  other_payload INTEGER NOT NULL DEFAULT 0,
  bytes         INTEGER NOT NULL DEFAULT 0,
  rtcp          INTEGER NOT NULL DEFAULT 0,
  dtmf          INTEGER NOT NULL DEFAULT 0,
  first_at      INTEGER,
  last_at       INTEGER,
  PRIMARY KEY(recording_id, stream)
) WITHOUT ROWID;
CREATE TABLE events(
  recording_id  INTEGER NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
  stream        INTEGER NOT NULL DEFAULT 0,
  at            INTEGER NOT NULL,
  kind          TEXT NOT NULL,
  value         TEXT NOT NULL DEFAULT '',
  duration_ms   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_recording ON events(recording_id, at);
)sql";

/// What schema version 3 adds to version 2 (a new file gets version 1, then 2, then this, so a
/// migrated file and a new one have the same columns in the same order).
constexpr const char* kSchemaV3 = R"sql(
ALTER TABLE streams ADD COLUMN label TEXT NOT NULL DEFAULT '';
ALTER TABLE streams ADD COLUMN participant TEXT NOT NULL DEFAULT '';
CREATE TABLE participants(
  recording_id   INTEGER NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
  idx            INTEGER NOT NULL,
  participant_id TEXT NOT NULL DEFAULT '',
  name           TEXT NOT NULL DEFAULT '',
  aor            TEXT NOT NULL DEFAULT '',
  number         TEXT NOT NULL DEFAULT '',
  role           TEXT NOT NULL DEFAULT '',
  sends          TEXT NOT NULL DEFAULT '',
  PRIMARY KEY(recording_id, idx)
) WITHOUT ROWID;
CREATE INDEX participants_number ON participants(number);
)sql";

constexpr const char* kRowColumns =
    "id, call_id, source, device, remote_number, remote_name, local_number, local_name, direction, codec, "
    "started_at, stopped_at, state, stop_reason, peer, extra, received, lost, filled, duplicate, reordered, "
    "late, stray, other_payload, bytes";

/// Metadata keys a stop may override (protocol key -> column). Never built from input.
struct ColumnKey {
  std::string_view key;
  const char* column;
};
constexpr ColumnKey kColumnKeys[] = {
    {"remote_number", "remote_number"},
    {"remote_name", "remote_name"},
    {"local_number", "local_number"},
    {"local_name", "local_name"},
};

/// Keys naming a value the server owns: the catalog's other columns (and the protocol's `dir`).
constexpr std::string_view kServerOwnedKeys[] = {
    "id",         "call_id",    "source", "device", "direction", "dir",      "codec",    "started_at",
    "stopped_at", "state",      "stop_reason", "peer", "extra",  "received", "lost",     "filled",
    "duplicate",  "reordered",  "late",   "stray",  "other_payload", "bytes", "cmd",     "reason",
};

/// Sequential binder: binds parameters 1, 2, 3 ... and keeps the first error. Text is bound
/// without a copy (SQLITE_STATIC): the caller keeps it alive until the statement is reset.
class Binder {
 public:
  explicit Binder(sqlite3_stmt* s) : s_(s) {}
  Binder& text(std::string_view v) {
    if (rc_ != SQLITE_OK) return *this;
    if (v.size() > static_cast<std::size_t>(INT_MAX)) {
      rc_ = SQLITE_TOOBIG;
      return *this;
    }
    rc_ = sqlite3_bind_text(s_, ++i_, v.empty() ? "" : v.data(), static_cast<int>(v.size()), nullptr);
    return *this;
  }
  Binder& i64(std::int64_t v) {
    if (rc_ == SQLITE_OK) rc_ = sqlite3_bind_int64(s_, ++i_, v);
    return *this;
  }
  Binder& u64(std::uint64_t v) { return i64(static_cast<std::int64_t>(v)); }
  Binder& opt(const std::optional<std::int64_t>& v) {
    if (v) return i64(*v);
    if (rc_ == SQLITE_OK) rc_ = sqlite3_bind_null(s_, ++i_);
    return *this;
  }
  [[nodiscard]] int rc() const { return rc_; }

 private:
  sqlite3_stmt* s_;
  int i_ = 0;
  int rc_ = SQLITE_OK;
};

/// Resets a cached statement and clears its bindings at scope exit.
class ResetGuard {
 public:
  explicit ResetGuard(sqlite3_stmt* s) : s_(s) {}
  ~ResetGuard() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  ResetGuard(const ResetGuard&) = delete;
  ResetGuard& operator=(const ResetGuard&) = delete;

 private:
  sqlite3_stmt* s_;
};

std::string column_text(sqlite3_stmt* s, int i) {
  const auto* p = sqlite3_column_text(s, i);
  const int n = sqlite3_column_bytes(s, i);
  if (p == nullptr || n <= 0) return {};
  return std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
}

std::optional<std::int64_t> column_opt(sqlite3_stmt* s, int i) {
  if (sqlite3_column_type(s, i) == SQLITE_NULL) return std::nullopt;
  return sqlite3_column_int64(s, i);
}

std::uint64_t column_u64(sqlite3_stmt* s, int i) { return static_cast<std::uint64_t>(sqlite3_column_int64(s, i)); }

/// An errno for a SQLite result code (so callers can tell "disk full" from "bug").
int errno_for(sqlite3* db, int code) {
  const int primary = code & 0xFF;
  if (db != nullptr && (primary == SQLITE_IOERR || primary == SQLITE_CANTOPEN || primary == SQLITE_FULL)) {
    const int sys = sqlite3_system_errno(db);
    if (sys != 0) return sys;
  }
  switch (primary) {
    case SQLITE_FULL:
      return ENOSPC;
    case SQLITE_IOERR:
      return EIO;
    case SQLITE_CANTOPEN:
      return ENOENT;
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return EACCES;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return EBUSY;
    case SQLITE_NOMEM:
      return ENOMEM;
    case SQLITE_TOOBIG:
      return E2BIG;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return EILSEQ;
    default:
      break;
  }
  if (code == SQLITE_CONSTRAINT_FOREIGNKEY) return ENOENT;
  if (code == SQLITE_CONSTRAINT_PRIMARYKEY || code == SQLITE_CONSTRAINT_UNIQUE) return EEXIST;
  return 0;  // logical error: Status code -1
}

/// The SQLite message, plus the OS error behind it when there is one.
std::string describe(sqlite3* db, int code) {
  std::string msg = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(code);
  const int primary = code & 0xFF;
  if (db != nullptr && (primary == SQLITE_IOERR || primary == SQLITE_CANTOPEN || primary == SQLITE_FULL)) {
    if (const int sys = sqlite3_system_errno(db); sys != 0) {
      msg += " (";
      msg += std::strerror(sys);
      msg += ')';
    }
  }
  return msg;
}

void append_u64(std::string& out, std::uint64_t v) { out += std::to_string(v); }
void append_i64(std::string& out, std::int64_t v) { out += std::to_string(v); }
void append_opt(std::string& out, const std::optional<std::int64_t>& v) {
  if (v) {
    append_i64(out, *v);
  } else {
    out += "null";
  }
}
void append_key(std::string& out, std::string_view key) {
  out += '"';
  out += key;  // keys are our own ASCII identifiers
  out += "\":";
}
void append_str_field(std::string& out, std::string_view key, std::string_view v) {
  append_key(out, key);
  out += '"';
  json_escape_append(out, v);
  out += "\",";
}

// ---- tiny JSON object parser (flat object of strings) -------------------------------------

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

class JsonParser {
 public:
  explicit JsonParser(std::string_view t) : t_(t) {}

  bool object(std::map<std::string, std::string>& out) {
    ws();
    if (!eat('{')) return false;
    ws();
    if (eat('}')) return end();
    for (;;) {
      std::string key;
      std::string value;
      ws();
      if (!string(key)) return false;
      ws();
      if (!eat(':')) return false;
      ws();
      if (!string(value)) return false;
      out[std::move(key)] = std::move(value);
      ws();
      if (eat(',')) continue;
      if (eat('}')) return end();
      return false;
    }
  }

 private:
  bool end() {
    ws();
    return i_ == t_.size();
  }
  void ws() {
    while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\t' || t_[i_] == '\n' || t_[i_] == '\r')) ++i_;
  }
  bool eat(char c) {
    if (i_ < t_.size() && t_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  bool hex4(std::uint32_t& v) {
    if (t_.size() - i_ < 4) return false;
    v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = t_[i_++];
      v <<= 4;
      if (c >= '0' && c <= '9') {
        v |= static_cast<std::uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        v |= static_cast<std::uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        v |= static_cast<std::uint32_t>(c - 'A' + 10);
      } else {
        return false;
      }
    }
    return true;
  }
  bool string(std::string& out) {
    if (!eat('"')) return false;
    while (i_ < t_.size()) {
      const char c = t_[i_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return false;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= t_.size()) return false;
      const char e = t_[i_++];
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          std::uint32_t cp = 0;
          if (!hex4(cp)) return false;
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            std::uint32_t lo = 0;
            if (t_.substr(i_, 2) == "\\u") {
              i_ += 2;
              if (!hex4(lo)) return false;
              if (lo >= 0xDC00 && lo <= 0xDFFF) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
              } else {
                append_utf8(out, 0xFFFD);
                cp = lo >= 0xD800 && lo <= 0xDFFF ? 0xFFFD : lo;
              }
            } else {
              cp = 0xFFFD;
            }
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            cp = 0xFFFD;
          }
          append_utf8(out, cp);
          break;
        }
        default:
          return false;
      }
    }
    return false;
  }

  std::string_view t_;
  std::size_t i_ = 0;
};

}  // namespace

// ---- JSON -----------------------------------------------------------------------------------

void json_escape_append(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      switch (c) {
        case '"':
          out += "\\\"";
          break;
        case '\\':
          out += "\\\\";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        case '\t':
          out += "\\t";
          break;
        default:
          if (c < 0x20 || c == 0x7F) {
            out += "\\u00";
            out += kHex[c >> 4];
            out += kHex[c & 0xF];
          } else {
            out += static_cast<char>(c);
          }
      }
      ++i;
      continue;
    }
    // Multi-byte UTF-8: copy a well-formed sequence (RFC 3629 ranges), else U+FFFD per byte.
    std::size_t len = 0;
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;  // no UTF-16 surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    bool ok = len != 0 && i + len <= n;
    for (std::size_t k = 1; ok && k < len; ++k) {
      const unsigned char cc = p[i + k];
      const unsigned char kl = k == 1 ? lo : 0x80;
      const unsigned char kh = k == 1 ? hi : 0xBF;
      ok = cc >= kl && cc <= kh;
    }
    if (ok) {
      out.append(s.data() + i, len);
      i += len;
    } else {
      out += "\\ufffd";
      ++i;
    }
  }
}

std::string json_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  json_escape_append(out, s);
  return out;
}

std::string json_object(const std::map<std::string, std::string>& m) {
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : m) {
    if (!first) out += ',';
    first = false;
    out += '"';
    json_escape_append(out, k);
    out += "\":\"";
    json_escape_append(out, v);
    out += '"';
  }
  out += '}';
  return out;
}

bool parse_json_object(std::string_view text, std::map<std::string, std::string>& out) {
  std::map<std::string, std::string> tmp;
  if (!JsonParser(text).object(tmp)) return false;
  out = std::move(tmp);
  return true;
}

std::string to_json(const std::vector<RecordingRow>& rows) {
  std::string out = "[";
  bool first = true;
  for (const RecordingRow& r : rows) {
    if (!first) out += ',';
    first = false;
    out += '{';
    append_key(out, "id");
    append_i64(out, r.id);
    out += ',';
    append_str_field(out, "call_id", r.call_id);
    append_str_field(out, "source", r.source);
    append_str_field(out, "device", r.device);
    append_str_field(out, "remote_number", r.remote_number);
    append_str_field(out, "remote_name", r.remote_name);
    append_str_field(out, "local_number", r.local_number);
    append_str_field(out, "local_name", r.local_name);
    append_str_field(out, "direction", r.direction);
    append_str_field(out, "codec", r.codec);
    append_key(out, "started_at");
    append_i64(out, r.started_at);
    out += ',';
    append_key(out, "stopped_at");
    append_opt(out, r.stopped_at);
    out += ',';
    append_str_field(out, "state", r.state);
    append_str_field(out, "stop_reason", r.stop_reason);
    append_str_field(out, "peer", r.peer);
    append_key(out, "extra");
    out += json_object(r.extra);
    out += ',';
    append_key(out, "stats");
    out += '{';
    const RecordingStats& s = r.stats;
    const std::pair<std::string_view, std::uint64_t> stats[] = {
        {"received", s.received},   {"lost", s.lost}, {"filled", s.filled}, {"duplicate", s.duplicate},
        {"reordered", s.reordered}, {"late", s.late}, {"stray", s.stray},   {"other_payload", s.other_payload},
        {"bytes", s.bytes}};
    for (std::size_t i = 0; i < std::size(stats); ++i) {
      if (i != 0) out += ',';
      append_key(out, stats[i].first);
      append_u64(out, stats[i].second);
    }
    out += "},";
    append_key(out, "segments");
    out += '[';
    for (std::size_t i = 0; i < r.segments.size(); ++i) {
      const SegmentRow& g = r.segments[i];
      if (i != 0) out += ',';
      out += '{';
      append_key(out, "idx");
      append_u64(out, g.idx);
      out += ',';
      append_str_field(out, "path", g.path);
      append_str_field(out, "codec", g.codec);
      append_key(out, "rtp_len");
      append_u64(out, g.rtp_len);
      out += ',';
      append_key(out, "increment");
      append_u64(out, g.increment);
      out += ',';
      append_key(out, "packets");
      append_u64(out, g.packets);
      out += ',';
      append_key(out, "opened_at");
      append_i64(out, g.opened_at);
      out += ',';
      append_key(out, "closed_at");
      append_opt(out, g.closed_at);
      out += ',';
      append_key(out, "stream");
      append_u64(out, g.stream);
      out += '}';
    }
    out += "],";
    append_key(out, "streams");
    out += '[';
    for (std::size_t i = 0; i < r.streams.size(); ++i) {
      const StreamRow& t = r.streams[i];
      if (i != 0) out += ',';
      out += '{';
      append_key(out, "stream");
      append_u64(out, t.stream);
      out += ',';
      append_str_field(out, "role", t.role);
      append_str_field(out, "codec", t.codec);
      append_str_field(out, "src", t.src);
      append_str_field(out, "dst", t.dst);
      append_str_field(out, "flags", t.flags);
      append_str_field(out, "label", t.label);
      append_str_field(out, "participant", t.participant);
      const std::pair<std::string_view, std::uint64_t> ts[] = {
          {"packets", t.packets},     {"lost", t.lost}, {"filled", t.filled},       {"duplicate", t.duplicate},
          {"reordered", t.reordered}, {"late", t.late}, {"other_payload", t.other_payload},
          {"bytes", t.bytes},         {"rtcp", t.rtcp}, {"dtmf", t.dtmf}};
      for (const auto& [k, v] : ts) {
        append_key(out, k);
        append_u64(out, v);
        out += ',';
      }
      append_key(out, "first_at");
      append_opt(out, t.first_at);
      out += ',';
      append_key(out, "last_at");
      append_opt(out, t.last_at);
      out += '}';
    }
    out += "],";
    append_key(out, "events");
    out += '[';
    for (std::size_t i = 0; i < r.events.size(); ++i) {
      const EventRow& e = r.events[i];
      if (i != 0) out += ',';
      out += '{';
      append_key(out, "stream");
      append_u64(out, e.stream);
      out += ',';
      append_key(out, "at");
      append_i64(out, e.at);
      out += ',';
      append_str_field(out, "kind", e.kind);
      append_str_field(out, "value", e.value);
      append_key(out, "duration_ms");
      append_u64(out, e.duration_ms);
      out += '}';
    }
    out += "],";
    append_key(out, "participants");
    out += '[';
    for (std::size_t i = 0; i < r.participants.size(); ++i) {
      const ParticipantRow& p = r.participants[i];
      if (i != 0) out += ',';
      out += '{';
      append_key(out, "idx");
      append_u64(out, p.idx);
      out += ',';
      append_str_field(out, "participant_id", p.participant_id);
      append_str_field(out, "name", p.name);
      append_str_field(out, "aor", p.aor);
      append_str_field(out, "number", p.number);
      append_str_field(out, "role", p.role);
      append_key(out, "sends");
      out += '"';
      json_escape_append(out, p.sends);
      out += "\"}";
    }
    out += "]}";
  }
  out += ']';
  return out;
}

std::int64_t to_unix_ms(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

bool is_server_owned_key(std::string_view key) {
  for (const std::string_view k : kServerOwnedKeys)
    if (k == key) return true;
  return false;
}

// ---- Catalog --------------------------------------------------------------------------------

void Catalog::StmtDeleter::operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }

Catalog::Catalog() = default;

Catalog::~Catalog() { close(); }

void Catalog::close() {
  if (in_batch_ || degraded_) {
    if (Status st = retry_pending(); !st) {
      std::fprintf(stderr, "%s\n", st.message().c_str());
      std::fprintf(stderr, "catalog %s: %zu write(s) lost at close; the next start recovers the open recordings\n",
                   path_.c_str(), journal_.size());
    }
  }
  journal_.clear();
  degraded_ = false;
  ballast_present_ = false;
  insert_.reset();
  get_.reset();
  get_extra_.reset();
  set_extra_.reset();
  add_segment_.reset();
  close_segment_.reset();
  finish_.reset();
  recovered_.reset();
  recovered_segments_.reset();
  open_rows_.reset();
  segments_.reset();
  device_paths_.reset();
  set_stream_.reset();
  add_event_.reset();
  streams_.reset();
  events_.reset();
  has_recording_.reset();
  del_participants_.reset();
  add_participant_.reset();
  participants_.reset();
  update_column_.clear();
  list_.clear();
  if (db_ != nullptr) {
    // Every statement is finalized above, so close cannot report SQLITE_BUSY.
    if (sqlite3_close(db_) != SQLITE_OK) {
      std::fprintf(stderr, "catalog %s: close: %s\n", path_.c_str(), sqlite3_errmsg(db_));
    }
    db_ = nullptr;
  }
}

Status Catalog::err(std::string_view what) const {
  const int code = sqlite3_extended_errcode(db_);
  last_rc_ = code;
  std::string msg = "catalog " + path_.string() + ": " + std::string(what) + ": " + describe(db_, code);
  return Status(errno_for(db_, code), std::move(msg));
}

Status Catalog::prepare(Stmt& slot, const char* sql) {
  if (slot) return Status::ok();
  if (db_ == nullptr) return Status(EBADF, "catalog: not open");
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK) {
    sqlite3_finalize(s);
    return err(std::string("prepare \"") + sql + "\"");
  }
  slot.reset(s);
  return Status::ok();
}

Status Catalog::exec(const char* sql) {
  if (db_ == nullptr) return Status(EBADF, "catalog: not open");
  char* msg = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
    sqlite3_free(msg);  // same text as sqlite3_errmsg
    return err(std::string("exec \"") + sql + "\"");
  }
  return Status::ok();
}

Status Catalog::step_done(sqlite3_stmt* s, std::string_view what) {
  const int rc = sqlite3_step(s);
  if (rc != SQLITE_DONE) return err(what);
  return Status::ok();
}

Status Catalog::expect_changed(std::string_view what, std::int64_t id) {
  if (sqlite3_changes(db_) == 0) {
    return Status(ENOENT,
                  "catalog " + path_.string() + ": " + std::string(what) + ": no recording " + std::to_string(id));
  }
  return Status::ok();
}

Status Catalog::join_batch() {
  if (!group_commit_ || in_batch_ || db_ == nullptr) return Status::ok();
  Status st = exec("BEGIN IMMEDIATE");
  if (st) in_batch_ = true;
  return st;
}

bool Catalog::retriable(int rc) {
  switch (rc & 0xFF) {
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_NOMEM:
    case SQLITE_CANTOPEN:
      return true;
    default:
      return false;
  }
}

Status Catalog::write(Op op) {
  if (db_ == nullptr) return Status(EBADF, "catalog: not open");
  last_rc_ = SQLITE_OK;
  if (!group_commit_) {
    // Its own transaction. A full volume: the ballast gives the catalog room, once.
    Status st = op();
    if (!st && (last_rc_ & 0xFF) == SQLITE_FULL && release_ballast()) {
      last_rc_ = SQLITE_OK;
      st = op();
    }
    return st;
  }
  if (degraded_) {  // an earlier batch is waiting to be replayed: this write goes after it
    journal_.push_back(std::move(op));
    ++stats_.queued_writes;
    return Status::ok();
  }
  Status st = join_batch();
  if (st) st = op();
  if (st) {
    journal_.push_back(std::move(op));
    return Status::ok();
  }
  if (!retriable(last_rc_)) return st;  // a logical error (no such row ...): nothing to retry
  // The volume is full (or the file unwritable) mid-batch: SQLite may have rolled the batch
  // back. Keep every write of it, in order, and replay them (commit_batch, maintain).
  journal_.push_back(std::move(op));
  ++stats_.queued_writes;
  enter_degraded(st);
  return Status::ok();
}

void Catalog::enter_degraded(const Status& why) {
  if (in_batch_) {
    in_batch_ = false;
    if (sqlite3_get_autocommit(db_) == 0) {
      if (Status rb = exec("ROLLBACK"); !rb) std::fprintf(stderr, "%s\n", rb.message().c_str());
    }
  }
  if (!degraded_) ++stats_.commit_failures;
  degraded_ = true;
  full_ = (last_rc_ & 0xFF) == SQLITE_FULL;
  last_failure_ = why.message();
}

Status Catalog::commit_batch() {
  if (!degraded_) {
    if (!in_batch_) {
      journal_.clear();
      return Status::ok();
    }
    in_batch_ = false;
    last_rc_ = SQLITE_OK;
    Status st;
    if (sqlite3_get_autocommit(db_) != 0) {  // SQLite rolled the transaction back after an error
      last_rc_ = SQLITE_IOERR;
      st = Status(EIO, "catalog " + path_.string() + ": batch was rolled back by an earlier error");
    } else {
      st = exec("COMMIT");
    }
    if (st) {
      journal_.clear();
      return st;
    }
    in_batch_ = true;  // for enter_degraded's rollback
    enter_degraded(st);
    return Status(st.code(), std::to_string(journal_.size()) + " catalog write(s) kept for retry: " + st.message());
  }
  return replay(false, false);
}

Status Catalog::retry_pending() { return degraded_ ? replay(true, true) : commit_batch(); }

Status Catalog::replay(bool force, bool may_use_reserve) {
  if (!degraded_) return Status::ok();
  const auto now = std::chrono::steady_clock::now();
  if (!force && now < next_retry_) return Status::ok();
  next_retry_ = now + kRetryInterval;
  if (journal_.empty()) {
    degraded_ = false;
    return Status::ok();
  }
  last_rc_ = SQLITE_OK;
  Status st = exec("BEGIN IMMEDIATE");
  if (st) {
    in_batch_ = true;  // the writes join this transaction (tx_begin uses savepoints)
    std::vector<Op> kept;
    kept.reserve(journal_.size());
    for (std::size_t i = 0; i < journal_.size(); ++i) {
      last_rc_ = SQLITE_OK;
      Status w = journal_[i]();
      if (w) {
        kept.push_back(std::move(journal_[i]));
        continue;
      }
      if (retriable(last_rc_)) {
        st = w;
        for (std::size_t k = i; k < journal_.size(); ++k) kept.push_back(std::move(journal_[k]));
        break;
      }
      // A write that cannot apply (its row is gone): dropped, the others go on.
      ++stats_.dropped_writes;
      std::fprintf(stderr, "catalog %s: replay: dropped a write: %s\n", path_.c_str(), w.message().c_str());
    }
    journal_ = std::move(kept);
    if (st) {
      last_rc_ = SQLITE_OK;
      st = exec("COMMIT");
    }
    in_batch_ = false;
    if (!st && sqlite3_get_autocommit(db_) == 0) {
      if (Status rb = exec("ROLLBACK"); !rb) std::fprintf(stderr, "%s\n", rb.message().c_str());
    }
  }
  if (st) {
    ++stats_.replays;
    stats_.replayed_writes += journal_.size();
    journal_.clear();
    degraded_ = false;
    return st;
  }
  full_ = (last_rc_ & 0xFF) == SQLITE_FULL;
  if (full_ && may_use_reserve && release_ballast()) return replay(true, false);
  last_failure_ = st.message();
  return Status(st.code(), std::to_string(journal_.size()) + " catalog write(s) not committed yet (retried every " +
                               std::to_string(std::chrono::duration_cast<std::chrono::seconds>(kRetryInterval).count()) +
                               " s, and at shutdown): " + st.message());
}

bool Catalog::release_ballast() {
  if (!ballast_present_) return false;
  ballast_present_ = false;
  ++stats_.ballast_releases;
  // Truncate rather than unlink: the space is free at once even if a reader holds it open.
  if (::truncate(ballast_path().c_str(), 0) != 0) {
    std::fprintf(stderr, "catalog %s: release %s: %s\n", path_.c_str(), ballast_path().c_str(), std::strerror(errno));
    return false;
  }
  return true;
}

std::filesystem::path Catalog::ballast_path() const { return path_.string() + ".reserve"; }

bool Catalog::make_ballast() {
  if (ballast_bytes_ == 0 || ballast_present_ || path_.empty()) return ballast_present_;
  const int fd = ::open(ballast_path().c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  const int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(ballast_bytes_));
  if (rc != 0) {
    if (::ftruncate(fd, 0) != 0) {  // give back what a partial allocation took
    }
  }
  ::close(fd);
  ballast_present_ = rc == 0;
  return ballast_present_;
}

Status Catalog::maintain() {
  Status st = replay(false, false);
  if (!degraded_ && !ballast_present_ && ballast_bytes_ != 0) {
    // Re-create the catalog's reserve once the volume has room for it and more.
    struct statvfs v {};
    const std::filesystem::path dir = path_.has_parent_path() ? path_.parent_path() : std::filesystem::path(".");
    if (::statvfs(dir.c_str(), &v) == 0 &&
        static_cast<std::uint64_t>(v.f_bavail) * v.f_frsize >= ballast_bytes_ + (1u << 20))
      make_ballast();
  }
  return st;
}

CatalogStats Catalog::stats() const {
  CatalogStats s = stats_;
  s.pending_writes = degraded_ ? journal_.size() : 0;
  s.ballast_present = ballast_present_;
  return s;
}

Status Catalog::set_max_pages(std::uint32_t pages) {
  const std::string sql = "PRAGMA max_page_count = " + std::to_string(pages == 0 ? 0xFFFFFFFEu : pages);
  return exec(sql.c_str());
}

// ---- writes (each one a replayable operation, see write()) ----------------------------------

Status Catalog::insert_recording(const RecordingRow& row, std::int64_t& id) {
  if (db_ == nullptr) return Status(EBADF, "catalog: not open");
  // Ids are assigned here, never reused: a write queued after a failed commit keeps its id, so
  // the writes that refer to it (segments, finish) replay against the right row.
  const std::int64_t new_id = next_id_;
  Status st = write([this, row, new_id] { return do_insert(row, new_id); });
  if (st) {
    id = new_id;
    ++next_id_;
  }
  return st;
}

Status Catalog::update_metadata(std::int64_t id, const MetadataOverrides& overrides) {
  return write([this, id, overrides] { return do_update_metadata(id, overrides); });
}

Status Catalog::add_segment(std::int64_t id, const SegmentInfo& seg, std::uint32_t stream) {
  return write([this, id, seg, stream] { return do_add_segment(id, seg, stream); });
}

Status Catalog::set_stream(std::int64_t id, const StreamRow& row) {
  return write([this, id, row] { return do_set_stream(id, row); });
}

Status Catalog::add_event(std::int64_t id, const EventRow& ev) {
  return write([this, id, ev] { return do_add_event(id, ev); });
}

Status Catalog::set_participants(std::int64_t id, const std::vector<ParticipantRow>& rows) {
  return write([this, id, rows] { return do_set_participants(id, rows); });
}

Status Catalog::close_segment(std::int64_t id, std::uint32_t idx, std::uint64_t packets, std::int64_t closed_at) {
  return write([this, id, idx, packets, closed_at] { return do_close_segment(id, idx, packets, closed_at); });
}

Status Catalog::finish_recording(std::int64_t id, std::int64_t stopped_at, std::string_view reason,
                                 const RecordingStats& stats) {
  return write([this, id, stopped_at, r = std::string(reason), stats] { return do_finish(id, stopped_at, r, stats); });
}

Status Catalog::mark_recovered(std::int64_t id, std::int64_t stopped_at, std::string_view reason) {
  return write([this, id, stopped_at, r = std::string(reason)] { return do_mark_recovered(id, stopped_at, r); });
}

Status Catalog::tx_begin() {
  return exec(in_batch_ ? "SAVEPOINT catalog_tx" : "BEGIN IMMEDIATE");
}

Status Catalog::tx_commit() { return exec(in_batch_ ? "RELEASE catalog_tx" : "COMMIT"); }

void Catalog::tx_rollback() {
  Status rb = in_batch_ ? exec("ROLLBACK TO catalog_tx") : exec("ROLLBACK");
  if (rb && in_batch_) rb = exec("RELEASE catalog_tx");
  if (!rb) std::fprintf(stderr, "%s\n", rb.message().c_str());
}

/// Opens path_ with `flags`, extended result codes and the busy timeout; db_ is set on success.
Status Catalog::open_db(int flags) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path_.c_str(), &db, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    Status st(errno_for(db, rc), "catalog " + path_.string() + ": open: " + describe(db, rc));
    sqlite3_close(db);
    return st;
  }
  db_ = db;
  sqlite3_extended_result_codes(db_, 1);
  if (sqlite3_busy_timeout(db_, kBusyTimeoutMs) != SQLITE_OK) {
    Status st = err("busy_timeout");
    close();
    return st;
  }
  return Status::ok();
}

Status Catalog::open(const std::filesystem::path& path) {
  close();
  path_ = path;
  if (Status st = open_db(SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE); !st) return st;
  Status st = exec("PRAGMA foreign_keys = ON");
  if (st) {
    // journal_mode answers with the mode in effect: anything but "wal" means WAL is unavailable
    // here (e.g. a file system without shared memory), which we do not silently accept.
    Stmt jm;
    st = prepare(jm, "PRAGMA journal_mode = WAL");
    if (st) {
      if (sqlite3_step(jm.get()) != SQLITE_ROW) {
        st = err("PRAGMA journal_mode = WAL");
      } else if (const std::string mode = column_text(jm.get(), 0); mode != "wal") {
        st = Status(EINVAL, "catalog " + path_.string() + ": cannot use WAL journal (mode is " + mode + ")");
      }
    }
  }
  if (st) st = exec("PRAGMA synchronous = NORMAL");
  if (st) st = create_schema();
  if (st) {
    Stmt mx;
    st = prepare(mx, "SELECT COALESCE(MAX(id), 0) + 1 FROM recordings");
    if (st) {
      if (sqlite3_step(mx.get()) == SQLITE_ROW) next_id_ = sqlite3_column_int64(mx.get(), 0);
      else st = err("next id");
    }
  }
  if (!st) {
    close();
    return st;
  }
  make_ballast();  // best effort: maintain() retries when the volume has room
  return st;
}

Status Catalog::open_read_only(const std::filesystem::path& path) {
  close();
  path_ = path;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return Status(ec ? ec.value() : ENOENT, "catalog " + path.string() + ": " +
                                                (ec ? ec.message() : std::string("no such file")));
  }
  if (Status st = open_db(SQLITE_OPEN_READONLY); !st) return st;
  Status st;
  int version = 0;
  if (st) {
    Stmt uv;
    st = prepare(uv, "PRAGMA user_version");
    if (st) {
      if (sqlite3_step(uv.get()) == SQLITE_ROW) {
        version = sqlite3_column_int(uv.get(), 0);
      } else {
        st = err("PRAGMA user_version");
      }
    }
  }
  version_ = version;
  if (st && version == 0) {
    st = Status(EPROTO, "catalog " + path_.string() + ": not a callrec catalog (no schema)");
  } else if (st && version > kCatalogSchemaVersion) {
    st = Status(EPROTO, "catalog " + path_.string() + ": schema version " + std::to_string(version) +
                            " is newer than this program's (" + std::to_string(kCatalogSchemaVersion) + ")");
  }
  if (!st) close();
  return st;
}

Status Catalog::create_schema() {
  Status st = exec("BEGIN IMMEDIATE");
  if (!st) return st;
  Stmt uv;
  st = prepare(uv, "PRAGMA user_version");
  int version = 0;
  if (st) {
    if (sqlite3_step(uv.get()) == SQLITE_ROW) {
      version = sqlite3_column_int(uv.get(), 0);
    } else {
      st = err("PRAGMA user_version");
    }
  }
  uv.reset();
  if (st) {
    if (version == 0) {
      st = exec(kSchema);
      if (st) st = exec(kSchemaV2Tables);
      if (st) st = exec(kSchemaV3);
      if (st) st = exec(("PRAGMA user_version = " + std::to_string(kCatalogSchemaVersion)).c_str());
    } else if (version < kCatalogSchemaVersion) {
      st = migrate(version);
    } else if (version > kCatalogSchemaVersion) {
      st = Status(EPROTO, "catalog " + path_.string() + ": schema version " + std::to_string(version) +
                              " is newer than this program's (" + std::to_string(kCatalogSchemaVersion) + ")");
    }
  }
  if (st) st = exec("COMMIT");
  if (st) {
    version_ = kCatalogSchemaVersion;  // a catalog opened read-only before may have seen an older one
    return st;
  }
  if (Status rb = exec("ROLLBACK"); !rb) {
    std::fprintf(stderr, "%s\n", rb.message().c_str());  // the first error is the one returned
  }
  return st;
}

/// In create_schema's transaction: each step brings the file one version up, so a version-1
/// file goes through 2 to 3 and ends with exactly the tables and columns of a new one.
Status Catalog::migrate(int from) {
  Status st;
  if (from <= 1) {
    st = exec("ALTER TABLE segments ADD COLUMN stream INTEGER NOT NULL DEFAULT 0");
    if (st) st = exec(kSchemaV2Tables);
  }
  if (st && from <= 2) st = exec(kSchemaV3);
  if (st) st = exec(("PRAGMA user_version = " + std::to_string(kCatalogSchemaVersion)).c_str());
  return st;
}

Status Catalog::do_insert(const RecordingRow& r, std::int64_t id) {
  Status st = prepare(insert_,
                      "INSERT INTO recordings(id, call_id, source, device, remote_number, remote_name, local_number, "
                      "local_name, direction, codec, started_at, stopped_at, state, stop_reason, peer, extra, "
                      "received, lost, filled, duplicate, reordered, late, stray, other_payload, bytes) "
                      "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
  if (!st) return st;
  sqlite3_stmt* s = insert_.get();
  ResetGuard guard(s);
  const std::string extra = json_object(r.extra);
  const RecordingStats& x = r.stats;
  Binder b(s);
  b.i64(id).text(r.call_id).text(r.source).text(r.device).text(r.remote_number).text(r.remote_name).text(r.local_number);
  b.text(r.local_name).text(r.direction).text(r.codec).i64(r.started_at).opt(r.stopped_at).text(r.state);
  b.text(r.stop_reason).text(r.peer).text(extra);
  b.u64(x.received).u64(x.lost).u64(x.filled).u64(x.duplicate).u64(x.reordered).u64(x.late).u64(x.stray);
  b.u64(x.other_payload).u64(x.bytes);
  if (b.rc() != SQLITE_OK) return err("insert recording: bind");
  return step_done(s, "insert recording");
}

Status Catalog::do_update_metadata(std::int64_t id, const MetadataOverrides& overrides) {
  Status st = prepare(get_extra_, "SELECT extra FROM recordings WHERE id = ?");
  if (st) st = prepare(set_extra_, "UPDATE recordings SET extra = ? WHERE id = ?");
  if (!st) return st;
  st = tx_begin();
  if (!st) return st;

  std::map<std::string, std::string> extra;
  bool extra_changed = false;
  {
    sqlite3_stmt* s = get_extra_.get();
    ResetGuard guard(s);
    if (Binder(s).i64(id).rc() != SQLITE_OK) {
      st = err("update metadata: bind");
    } else if (const int rc = sqlite3_step(s); rc == SQLITE_DONE) {
      st = Status(ENOENT, "catalog " + path_.string() + ": update metadata: no recording " + std::to_string(id));
    } else if (rc != SQLITE_ROW) {
      st = err("update metadata: read extra");
    } else if (!parse_json_object(column_text(s, 0), extra)) {
      st = Status(EILSEQ, "catalog " + path_.string() + ": recording " + std::to_string(id) +
                              ": extra is not a JSON object of strings");
    }
  }
  for (const auto& [key, value] : overrides) {
    if (!st) break;
    if (is_server_owned_key(key)) continue;  // never from a stop (see catalog.hpp)
    const ColumnKey* col = nullptr;
    for (const ColumnKey& c : kColumnKeys) {
      if (c.key == key) col = &c;
    }
    if (col == nullptr) {
      auto [it, inserted] = extra.try_emplace(key, value);
      if (!inserted && it->second != value) {
        it->second = value;
        inserted = true;
      }
      extra_changed = extra_changed || inserted;
      continue;
    }
    Stmt& slot = update_column_[col->column];
    const std::string sql = std::string("UPDATE recordings SET ") + col->column + " = ? WHERE id = ?";
    st = prepare(slot, sql.c_str());
    if (!st) break;
    sqlite3_stmt* s = slot.get();
    ResetGuard guard(s);
    if (Binder(s).text(value).i64(id).rc() != SQLITE_OK) {
      st = err("update metadata: bind");
    } else {
      st = step_done(s, std::string("update metadata: ") + col->column);
    }
  }
  if (st && extra_changed) {
    sqlite3_stmt* s = set_extra_.get();
    ResetGuard guard(s);
    const std::string json = json_object(extra);
    if (Binder(s).text(json).i64(id).rc() != SQLITE_OK) {
      st = err("update metadata: bind");
    } else {
      st = step_done(s, "update metadata: extra");
    }
  }
  if (st) return tx_commit();
  tx_rollback();
  return st;
}

Status Catalog::do_set_stream(std::int64_t id, const StreamRow& r) {
  Status st = prepare(set_stream_,
                      "INSERT OR REPLACE INTO streams(recording_id, stream, role, codec, src, dst, flags, packets, lost, "
                      "filled, duplicate, reordered, late, other_payload, bytes, rtcp, dtmf, first_at, last_at, "
                      "label, participant) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
  if (!st) return st;
  sqlite3_stmt* s = set_stream_.get();
  ResetGuard guard(s);
  Binder b(s);
  b.i64(id).u64(r.stream).text(r.role).text(r.codec).text(r.src).text(r.dst).text(r.flags);
  b.u64(r.packets).u64(r.lost).u64(r.filled).u64(r.duplicate).u64(r.reordered).u64(r.late).u64(r.other_payload);
  b.u64(r.bytes).u64(r.rtcp).u64(r.dtmf).opt(r.first_at).opt(r.last_at).text(r.label).text(r.participant);
  if (b.rc() != SQLITE_OK) return err("set stream: bind");
  return step_done(s, "stream " + std::to_string(r.stream) + " of recording " + std::to_string(id));
}

Status Catalog::do_add_event(std::int64_t id, const EventRow& e) {
  Status st = prepare(add_event_, "INSERT INTO events(recording_id, stream, at, kind, value, duration_ms) VALUES(?,?,?,?,?,?)");
  if (!st) return st;
  sqlite3_stmt* s = add_event_.get();
  ResetGuard guard(s);
  Binder b(s);
  b.i64(id).u64(e.stream).i64(e.at).text(e.kind).text(e.value).u64(e.duration_ms);
  if (b.rc() != SQLITE_OK) return err("add event: bind");
  return step_done(s, "event of recording " + std::to_string(id));
}

Status Catalog::do_set_participants(std::int64_t id, const std::vector<ParticipantRow>& rows) {
  Status st = prepare(has_recording_, "SELECT 1 FROM recordings WHERE id = ?");
  if (st) st = prepare(del_participants_, "DELETE FROM participants WHERE recording_id = ?");
  if (st) {
    st = prepare(add_participant_,
                 "INSERT INTO participants(recording_id, idx, participant_id, name, aor, number, role, sends) "
                 "VALUES(?,?,?,?,?,?,?,?)");
  }
  if (!st) return st;
  st = tx_begin();
  if (!st) return st;
  {
    sqlite3_stmt* s = has_recording_.get();
    ResetGuard guard(s);
    if (Binder(s).i64(id).rc() != SQLITE_OK) {
      st = err("set participants: bind");
    } else if (const int rc = sqlite3_step(s); rc == SQLITE_DONE) {
      st = Status(ENOENT, "catalog " + path_.string() + ": set participants: no recording " + std::to_string(id));
    } else if (rc != SQLITE_ROW) {
      st = err("set participants: find recording");
    }
  }
  if (st) {
    sqlite3_stmt* s = del_participants_.get();
    ResetGuard guard(s);
    if (Binder(s).i64(id).rc() != SQLITE_OK) {
      st = err("set participants: bind");
    } else {
      st = step_done(s, "set participants: delete");
    }
  }
  for (const ParticipantRow& p : rows) {
    if (!st) break;
    sqlite3_stmt* s = add_participant_.get();
    ResetGuard guard(s);
    Binder b(s);
    b.i64(id).u64(p.idx).text(p.participant_id).text(p.name).text(p.aor).text(p.number).text(p.role).text(p.sends);
    if (b.rc() != SQLITE_OK) {
      st = err("set participants: bind");
    } else {
      st = step_done(s, "participant " + std::to_string(p.idx) + " of recording " + std::to_string(id));
    }
  }
  if (st) return tx_commit();
  tx_rollback();
  return st;
}

Status Catalog::do_add_segment(std::int64_t id, const SegmentInfo& seg, std::uint32_t stream) {
  Status st = prepare(add_segment_,
                      "INSERT INTO segments(recording_id, idx, path, codec, rtp_len, increment, packets, opened_at, "
                      "closed_at, stream) VALUES(?,?,?,?,?,?,?,?,?,?)");
  if (!st) return st;
  sqlite3_stmt* s = add_segment_.get();
  ResetGuard guard(s);
  const std::string path = seg.path.string();
  std::optional<std::int64_t> closed;
  if (seg.closed != std::chrono::system_clock::time_point{}) closed = to_unix_ms(seg.closed);
  Binder b(s);
  b.i64(id).u64(seg.index).text(path).text(seg.codec).u64(seg.rtp_len).u64(seg.increment).u64(seg.packets);
  b.i64(to_unix_ms(seg.opened)).opt(closed).u64(stream);
  if (b.rc() != SQLITE_OK) return err("add segment: bind");
  return step_done(s, "add segment " + std::to_string(seg.index) + " to recording " + std::to_string(id));
}

Status Catalog::do_close_segment(std::int64_t id, std::uint32_t idx, std::uint64_t packets, std::int64_t closed_at) {
  Status st =
      prepare(close_segment_, "UPDATE segments SET packets = ?, closed_at = ? WHERE recording_id = ? AND idx = ?");
  if (!st) return st;
  sqlite3_stmt* s = close_segment_.get();
  ResetGuard guard(s);
  if (Binder(s).u64(packets).i64(closed_at).i64(id).u64(idx).rc() != SQLITE_OK) return err("close segment: bind");
  st = step_done(s, "close segment");
  if (!st) return st;
  if (sqlite3_changes(db_) == 0) {
    return Status(ENOENT, "catalog " + path_.string() + ": close segment: no segment " + std::to_string(idx) +
                              " in recording " + std::to_string(id));
  }
  return Status::ok();
}

Status Catalog::do_finish(std::int64_t id, std::int64_t stopped_at, std::string_view reason,
                          const RecordingStats& x) {
  Status st = prepare(finish_,
                      "UPDATE recordings SET stopped_at = ?, state = 'stopped', stop_reason = ?, received = ?, "
                      "lost = ?, filled = ?, duplicate = ?, reordered = ?, late = ?, stray = ?, other_payload = ?, "
                      "bytes = ? WHERE id = ?");
  if (!st) return st;
  sqlite3_stmt* s = finish_.get();
  ResetGuard guard(s);
  Binder b(s);
  b.i64(stopped_at).text(reason).u64(x.received).u64(x.lost).u64(x.filled).u64(x.duplicate).u64(x.reordered);
  b.u64(x.late).u64(x.stray).u64(x.other_payload).u64(x.bytes).i64(id);
  if (b.rc() != SQLITE_OK) return err("finish recording: bind");
  st = step_done(s, "finish recording");
  if (!st) return st;
  return expect_changed("finish recording", id);
}

Status Catalog::do_mark_recovered(std::int64_t id, std::int64_t stopped_at, std::string_view reason) {
  Status st =
      prepare(recovered_, "UPDATE recordings SET state = 'recovered', stopped_at = ?, stop_reason = ? WHERE id = ?");
  if (st) {
    st = prepare(recovered_segments_, "UPDATE segments SET closed_at = ? WHERE recording_id = ? AND closed_at IS NULL");
  }
  if (!st) return st;
  st = tx_begin();
  if (!st) return st;
  {
    sqlite3_stmt* s = recovered_.get();
    ResetGuard guard(s);
    if (Binder(s).i64(stopped_at).text(reason).i64(id).rc() != SQLITE_OK) {
      st = err("mark recovered: bind");
    } else {
      st = step_done(s, "mark recovered");
      if (st) st = expect_changed("mark recovered", id);
    }
  }
  if (st) {
    sqlite3_stmt* s = recovered_segments_.get();
    ResetGuard guard(s);
    if (Binder(s).i64(stopped_at).i64(id).rc() != SQLITE_OK) {
      st = err("mark recovered: bind");
    } else {
      st = step_done(s, "mark recovered: segments");
    }
  }
  if (st) return tx_commit();
  tx_rollback();
  return st;
}

Status Catalog::load_rows(sqlite3_stmt* s, std::vector<RecordingRow>& out, std::string_view what) {
  const std::size_t first = out.size();
  for (;;) {
    const int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return err(what);
    RecordingRow r;
    int c = 0;
    r.id = sqlite3_column_int64(s, c++);
    r.call_id = column_text(s, c++);
    r.source = column_text(s, c++);
    r.device = column_text(s, c++);
    r.remote_number = column_text(s, c++);
    r.remote_name = column_text(s, c++);
    r.local_number = column_text(s, c++);
    r.local_name = column_text(s, c++);
    r.direction = column_text(s, c++);
    r.codec = column_text(s, c++);
    r.started_at = sqlite3_column_int64(s, c++);
    r.stopped_at = column_opt(s, c++);
    r.state = column_text(s, c++);
    r.stop_reason = column_text(s, c++);
    r.peer = column_text(s, c++);
    if (!parse_json_object(column_text(s, c++), r.extra)) {
      return Status(EILSEQ, "catalog " + path_.string() + ": recording " + std::to_string(r.id) +
                                ": extra is not a JSON object of strings");
    }
    RecordingStats& x = r.stats;
    x.received = column_u64(s, c++);
    x.lost = column_u64(s, c++);
    x.filled = column_u64(s, c++);
    x.duplicate = column_u64(s, c++);
    x.reordered = column_u64(s, c++);
    x.late = column_u64(s, c++);
    x.stray = column_u64(s, c++);
    x.other_payload = column_u64(s, c++);
    x.bytes = column_u64(s, c++);
    out.push_back(std::move(r));
  }
  sqlite3_reset(s);  // done with this statement before the segment queries
  for (std::size_t i = first; i < out.size(); ++i) {
    Status st = load_segments(out[i]);
    if (st) st = load_streams(out[i]);
    if (st) st = load_participants(out[i]);
    if (!st) return st;
  }
  return Status::ok();
}

Status Catalog::load_segments(RecordingRow& row) {
  Status st = prepare(segments_, version_ >= 2
                                     ? "SELECT idx, path, codec, rtp_len, increment, packets, opened_at, closed_at, "
                                       "stream FROM segments WHERE recording_id = ? ORDER BY idx"
                                     : "SELECT idx, path, codec, rtp_len, increment, packets, opened_at, closed_at, "
                                       "0 FROM segments WHERE recording_id = ? ORDER BY idx");
  if (!st) return st;
  sqlite3_stmt* s = segments_.get();
  ResetGuard guard(s);
  if (Binder(s).i64(row.id).rc() != SQLITE_OK) return err("segments: bind");
  row.segments.clear();
  for (;;) {
    const int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) return Status::ok();
    if (rc != SQLITE_ROW) return err("segments of recording " + std::to_string(row.id));
    SegmentRow g;
    g.idx = static_cast<std::uint32_t>(sqlite3_column_int64(s, 0));
    g.path = column_text(s, 1);
    g.codec = column_text(s, 2);
    g.rtp_len = static_cast<std::uint32_t>(sqlite3_column_int64(s, 3));
    g.increment = static_cast<std::uint32_t>(sqlite3_column_int64(s, 4));
    g.packets = column_u64(s, 5);
    g.opened_at = sqlite3_column_int64(s, 6);
    g.closed_at = column_opt(s, 7);
    g.stream = static_cast<std::uint32_t>(sqlite3_column_int64(s, 8));
    row.segments.push_back(std::move(g));
  }
}

Status Catalog::load_streams(RecordingRow& row) {
  row.streams.clear();
  row.events.clear();
  if (version_ < 2) return Status::ok();
  // A version-2 file (read-only open) has no label and participant columns.
  Status st = prepare(streams_, version_ >= 3
                                    ? "SELECT stream, role, codec, src, dst, flags, packets, lost, filled, duplicate, "
                                      "reordered, late, other_payload, bytes, rtcp, dtmf, first_at, last_at, label, "
                                      "participant FROM streams WHERE recording_id = ? ORDER BY stream"
                                    : "SELECT stream, role, codec, src, dst, flags, packets, lost, filled, duplicate, "
                                      "reordered, late, other_payload, bytes, rtcp, dtmf, first_at, last_at, '', '' "
                                      "FROM streams WHERE recording_id = ? ORDER BY stream");
  if (!st) return st;
  {
    sqlite3_stmt* s = streams_.get();
    ResetGuard guard(s);
    if (Binder(s).i64(row.id).rc() != SQLITE_OK) return err("streams: bind");
    for (;;) {
      const int rc = sqlite3_step(s);
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return err("streams of recording " + std::to_string(row.id));
      StreamRow r;
      r.stream = static_cast<std::uint32_t>(sqlite3_column_int64(s, 0));
      r.role = column_text(s, 1);
      r.codec = column_text(s, 2);
      r.src = column_text(s, 3);
      r.dst = column_text(s, 4);
      r.flags = column_text(s, 5);
      r.packets = column_u64(s, 6);
      r.lost = column_u64(s, 7);
      r.filled = column_u64(s, 8);
      r.duplicate = column_u64(s, 9);
      r.reordered = column_u64(s, 10);
      r.late = column_u64(s, 11);
      r.other_payload = column_u64(s, 12);
      r.bytes = column_u64(s, 13);
      r.rtcp = column_u64(s, 14);
      r.dtmf = column_u64(s, 15);
      r.first_at = column_opt(s, 16);
      r.last_at = column_opt(s, 17);
      r.label = column_text(s, 18);
      r.participant = column_text(s, 19);
      row.streams.push_back(std::move(r));
    }
  }
  st = prepare(events_, "SELECT stream, at, kind, value, duration_ms FROM events WHERE recording_id = ? ORDER BY at, rowid");
  if (!st) return st;
  sqlite3_stmt* s = events_.get();
  ResetGuard guard(s);
  if (Binder(s).i64(row.id).rc() != SQLITE_OK) return err("events: bind");
  for (;;) {
    const int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) return Status::ok();
    if (rc != SQLITE_ROW) return err("events of recording " + std::to_string(row.id));
    EventRow e;
    e.stream = static_cast<std::uint32_t>(sqlite3_column_int64(s, 0));
    e.at = sqlite3_column_int64(s, 1);
    e.kind = column_text(s, 2);
    e.value = column_text(s, 3);
    e.duration_ms = static_cast<std::uint32_t>(sqlite3_column_int64(s, 4));
    row.events.push_back(std::move(e));
  }
}

Status Catalog::load_participants(RecordingRow& row) {
  row.participants.clear();
  if (version_ < 3) return Status::ok();
  Status st = prepare(participants_,
                      "SELECT idx, participant_id, name, aor, number, role, sends FROM participants "
                      "WHERE recording_id = ? ORDER BY idx");
  if (!st) return st;
  sqlite3_stmt* s = participants_.get();
  ResetGuard guard(s);
  if (Binder(s).i64(row.id).rc() != SQLITE_OK) return err("participants: bind");
  for (;;) {
    const int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) return Status::ok();
    if (rc != SQLITE_ROW) return err("participants of recording " + std::to_string(row.id));
    ParticipantRow p;
    p.idx = static_cast<std::uint32_t>(sqlite3_column_int64(s, 0));
    p.participant_id = column_text(s, 1);
    p.name = column_text(s, 2);
    p.aor = column_text(s, 3);
    p.number = column_text(s, 4);
    p.role = column_text(s, 5);
    p.sends = column_text(s, 6);
    row.participants.push_back(std::move(p));
  }
}

Status Catalog::device_segment_paths(const std::string& device, std::vector<std::string>& out) {
  out.clear();
  Status st = prepare(device_paths_,
                      "SELECT s.path FROM segments s JOIN recordings r ON r.id = s.recording_id WHERE r.device = ?");
  if (!st) return st;
  sqlite3_stmt* s = device_paths_.get();
  ResetGuard guard(s);
  if (sqlite3_bind_text(s, 1, device.data(), static_cast<int>(device.size()), SQLITE_TRANSIENT) != SQLITE_OK)
    return err("segment paths: bind");
  for (;;) {
    const int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) return Status::ok();
    if (rc != SQLITE_ROW) return err("segment paths of device " + device);
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
    out.emplace_back(text ? text : "");
  }
}

Status Catalog::open_recordings(std::vector<RecordingRow>& out) {
  out.clear();
  const std::string sql =
      std::string("SELECT ") + kRowColumns + " FROM recordings WHERE state = 'recording' ORDER BY started_at, id";
  Status st = prepare(open_rows_, sql.c_str());
  if (!st) return st;
  ResetGuard guard(open_rows_.get());
  return load_rows(open_rows_.get(), out, "open recordings");
}

Status Catalog::get(std::int64_t id, RecordingRow& out) {
  const std::string sql = std::string("SELECT ") + kRowColumns + " FROM recordings WHERE id = ?";
  Status st = prepare(get_, sql.c_str());
  if (!st) return st;
  sqlite3_stmt* s = get_.get();
  ResetGuard guard(s);
  if (Binder(s).i64(id).rc() != SQLITE_OK) return err("get: bind");
  std::vector<RecordingRow> rows;
  st = load_rows(s, rows, "get recording " + std::to_string(id));
  if (!st) return st;
  if (rows.empty()) return Status(ENOENT, "catalog " + path_.string() + ": no recording " + std::to_string(id));
  out = std::move(rows.front());
  return Status::ok();
}

Status Catalog::list(const CatalogFilter& f, std::vector<RecordingRow>& out) {
  out.clear();
  enum : unsigned { kDevice = 1, kNumber = 2, kFrom = 4, kTo = 8, kCallId = 16, kLimit = 32, kId = 64, kState = 128 };
  unsigned mask = 0;
  if (!f.device.empty()) mask |= kDevice;
  if (!f.number.empty()) mask |= kNumber;
  if (f.from) mask |= kFrom;
  if (f.to) mask |= kTo;
  if (!f.call_id.empty()) mask |= kCallId;
  if (f.limit != 0) mask |= kLimit;
  if (f.id) mask |= kId;
  if (!f.state.empty()) mask |= kState;
  // One cached statement per combination of filters: each can use its own index (a generic
  // "(? IS NULL OR col = ?)" statement would scan the table).
  Stmt& slot = list_[mask];
  if (!slot) {
    std::string sql = std::string("SELECT ") + kRowColumns + " FROM recordings WHERE 1";
    if (mask & kDevice) sql += " AND device = ?";
    if (mask & kNumber) {
      // Each term has its index (recordings_remote_number, recordings_local_number, the rowid
      // for the participants_number lookup): SQLite answers the OR as a union of index lookups.
      sql += version_ >= 3 ? " AND (remote_number = ? OR local_number = ? OR id IN (SELECT recording_id FROM "
                             "participants WHERE number = ?))"
                           : " AND (remote_number = ? OR local_number = ?)";
    }
    if (mask & kFrom) sql += " AND started_at >= ?";
    if (mask & kTo) sql += " AND started_at < ?";
    if (mask & kCallId) sql += " AND call_id = ?";
    if (mask & kId) sql += " AND id = ?";
    if (mask & kState) sql += " AND state = ?";
    sql += " ORDER BY started_at DESC, id DESC";
    if (mask & kLimit) sql += " LIMIT ?";
    Status st = prepare(slot, sql.c_str());
    if (!st) {
      list_.erase(mask);
      return st;
    }
  }
  sqlite3_stmt* s = slot.get();
  ResetGuard guard(s);
  Binder b(s);
  if (mask & kDevice) b.text(f.device);
  if (mask & kNumber) {
    b.text(f.number).text(f.number);
    if (version_ >= 3) b.text(f.number);
  }
  if (mask & kFrom) b.i64(*f.from);
  if (mask & kTo) b.i64(*f.to);
  if (mask & kCallId) b.text(f.call_id);
  if (mask & kId) b.i64(*f.id);
  if (mask & kState) b.text(f.state);
  if (mask & kLimit)
    b.i64(f.limit > static_cast<std::size_t>(INT64_MAX) ? INT64_MAX : static_cast<std::int64_t>(f.limit));
  if (b.rc() != SQLITE_OK) return err("list: bind");
  return load_rows(s, out, "list");
}

}  // namespace callrec::fileio
