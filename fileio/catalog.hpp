#pragma once
// The recordings catalog (spec decision 6): one row per recording with its metadata and final
// counters, and the record files ("segments") of each recording linked in order. An embedded
// SQLite database in WAL mode (synchronous=NORMAL: a commit survives a process crash; a power
// loss may lose the last commits, never corrupt the database).
//
// Threads: a Catalog is used only from the control thread (one connection, opened without
// SQLite's own mutexes). Other processes (`callrec list`) may read the same file concurrently:
// WAL lets readers run beside the writer.
//
// Crash recovery: rows left in state 'recording' after a crash come back from
// open_recordings(); the daemon repairs their files (fileio::repair_record), records the
// repaired packet counts with close_segment() and calls mark_recovered().
//
// Every method returns a Status naming the database file and the SQLite error; nothing throws.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fileio/record_writer.hpp"
#include "fileio/status.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace callrec::fileio {

/// Schema version stored in PRAGMA user_version.
/// 2: segments carry their stream (direction) index; per-stream rows (streams) and in-call events
/// (events: DTMF ...).
/// 3: SIPREC: streams carry their SDP label and sending participant; participants of the
/// recorded call (participants, indexed by number: `list --number` matches them too).
/// Older files are migrated in place at open (read-only opens read them as they are).
inline constexpr int kCatalogSchemaVersion = 3;

/// Final (or last known) counters of a recording.
struct RecordingStats {
  std::uint64_t received = 0;
  std::uint64_t lost = 0;
  std::uint64_t filled = 0;
  std::uint64_t duplicate = 0;
  std::uint64_t reordered = 0;
  std::uint64_t late = 0;
  std::uint64_t stray = 0;  ///< packets from a wrong source (counted by the dataplane)
  std::uint64_t other_payload = 0;
  std::uint64_t bytes = 0;  ///< bytes written to the record files
};

struct SegmentRow {
  std::uint32_t idx = 0;  ///< 0, 1, 2 ... within the recording
  std::uint32_t stream = 0;  ///< which stream (direction) of the recording the file holds
  std::string path;
  std::string codec;
  std::uint32_t rtp_len = 0;
  std::uint32_t increment = 0;
  std::uint64_t packets = 0;
  std::int64_t opened_at = 0;             ///< unix ms
  std::optional<std::int64_t> closed_at;  ///< unix ms; nullopt while the file is open
};

/// One RTP stream (direction) of a recording: a passive or SIPREC call has two, an upload one.
struct StreamRow {
  std::uint32_t stream = 0;  ///< 0, 1 ... within the recording
  std::string role;          ///< "caller" (sent by the calling party), "callee", or a SIPREC label
  std::string codec;         ///< the SDP encoding name ("PCMA", "G722" ...)
  std::string src, dst;      ///< endpoints seen ("192.0.2.1:4000"); dst as announced by SDP
  std::string flags;         ///< comma list: "nat" (source differs from SDP), "moved", "no_media", "srtp"
  std::string label;         ///< SIPREC: the SDP a=label of the stream ("" elsewhere)
  std::string participant;   ///< SIPREC: participant_id of the sender per the metadata ("" unknown)
  std::uint64_t packets = 0, lost = 0, filled = 0, duplicate = 0, reordered = 0, late = 0, other_payload = 0,
                bytes = 0, rtcp = 0, dtmf = 0;
  std::optional<std::int64_t> first_at, last_at;  ///< unix ms of the first and last media packet
};

/// A participant of a recorded call (SIPREC metadata, RFC 7865).
struct ParticipantRow {
  std::uint32_t idx = 0;        ///< 0, 1 ... in metadata order
  std::string participant_id;   ///< as the SRC sent it
  std::string name;             ///< display name
  std::string aor;              ///< address of record as sent ("sip:+15551234@host")
  std::string number;           ///< the aor's user part ("+15551234"): what `callrec list --number` matches
  std::string role;             ///< "caller", "callee" or "" (by callrec's rule, see export)
  std::string sends;            ///< comma list of the stream indexes it sends ("0")
};

/// Something that happened during a call, at a time (DTMF digits: kind "dtmf", value "5").
struct EventRow {
  std::uint32_t stream = 0;
  std::int64_t at = 0;  ///< unix ms
  std::string kind;
  std::string value;
  std::uint32_t duration_ms = 0;
};

struct RecordingRow {
  std::int64_t id = 0;  ///< catalog id (set by insert_recording)
  std::string call_id;  ///< the phone's id (RecordStartRequest id)
  std::string source;   ///< "upload", "span", "siprec"
  std::string device;   ///< the phone's MAC
  std::string remote_number;
  std::string remote_name;
  std::string local_number;
  std::string local_name;
  std::string direction;                   ///< "in" / "out"
  std::string codec;                       ///< "PCMA" / "PCMU"
  std::int64_t started_at = 0;             ///< unix ms
  std::optional<std::int64_t> stopped_at;  ///< unix ms; nullopt while recording
  std::string state = "recording";         ///< "recording", "stopped", "recovered"
  std::string stop_reason;
  std::string peer;                          ///< the phone's address
  std::map<std::string, std::string> extra;  ///< metadata keys the protocol does not name
  RecordingStats stats;
  std::vector<SegmentRow> segments;  ///< filled by get(), list(), open_recordings(); in idx order
  std::vector<StreamRow> streams;    ///< filled by get() and list(); in stream order
  std::vector<ParticipantRow> participants;  ///< filled by get() and list(); SIPREC only
  std::vector<EventRow> events;      ///< filled by get() and list(); in time order
};

/// The catalog's own health (callrecd /metrics).
struct CatalogStats {
  std::uint64_t commit_failures = 0;  ///< batches that could not be committed (disk full, I/O error)
  std::uint64_t queued_writes = 0;    ///< writes kept for replay after a failed commit
  std::uint64_t replays = 0;          ///< successful replays of kept writes
  std::uint64_t replayed_writes = 0;  ///< writes committed by replays
  std::uint64_t dropped_writes = 0;   ///< kept writes that could no longer apply (their row was gone)
  std::uint64_t ballast_releases = 0; ///< times the reserve file was given up for a commit
  std::uint64_t pending_writes = 0;   ///< gauge: writes not in the database yet
  bool ballast_present = false;       ///< gauge: the reserve file is in place
};

/// Selects recordings for list(). Empty / nullopt fields do not filter.
struct CatalogFilter {
  std::string device;
  std::string number;                ///< matches remote_number, local_number or a participant's number exactly
  std::optional<std::int64_t> from;  ///< started_at >= from (unix ms)
  std::optional<std::int64_t> to;    ///< started_at < to (unix ms)
  std::string call_id;
  std::optional<std::int64_t> id;  ///< the catalog id
  std::string state;               ///< "recording", "stopped" or "recovered"
  std::size_t limit = 100;         ///< 0: no limit
};

/// Key/value metadata as received (e.g. a RecordStopRequest). See Catalog::update_metadata.
using MetadataOverrides = std::vector<std::pair<std::string, std::string>>;

/// Unix milliseconds of a system_clock time point.
std::int64_t to_unix_ms(std::chrono::system_clock::time_point t);

class Catalog {
 public:
  Catalog();
  ~Catalog();
  Catalog(const Catalog&) = delete;
  Catalog& operator=(const Catalog&) = delete;

  /// Opens (creating if absent) the database at path, switches it to WAL, creates or checks
  /// the schema. Fails on a database written by a newer schema version.
  Status open(const std::filesystem::path& path);
  /// Opens an existing database for reading only (`callrec list` beside a running daemon):
  /// never creates the file or the schema and takes no write lock. ENOENT when the file does
  /// not exist; fails on a file without a catalog schema or with a newer one.
  Status open_read_only(const std::filesystem::path& path);
  void close();
  [[nodiscard]] bool is_open() const { return db_ != nullptr; }
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

  /// Inserts a recording (row.id, row.segments are ignored); id receives the new catalog id,
  /// assigned by the catalog (MAX(id)+1 at open, then counting; never reused in a run).
  Status insert_recording(const RecordingRow& row, std::int64_t& id);
  /// Applies metadata from the protocol (a stop's overrides): remote_number, remote_name,
  /// local_number and local_name replace their columns; keys naming a value the server owns
  /// (is_server_owned_key: device, dir/direction, codec, peer, state, the counters, the
  /// protocol's cmd/id/reason ...) are ignored, never stored; any other key is merged into
  /// `extra` (the last value of a repeated key wins). One transaction: all overrides apply or
  /// none. ENOENT: no such id.
  Status update_metadata(std::int64_t id, const MetadataOverrides& overrides);
  /// Links a new record file to the recording (seg.index becomes idx) as a file of `stream`.
  /// idx is unique per recording: with several streams the caller numbers the files itself.
  Status add_segment(std::int64_t id, const SegmentInfo& seg, std::uint32_t stream = 0);
  /// Inserts or replaces the row of one stream of a recording.
  Status set_stream(std::int64_t id, const StreamRow& row);
  Status add_event(std::int64_t id, const EventRow& ev);
  /// Replaces every participant row of a recording (SIPREC metadata, initial or updated).
  Status set_participants(std::int64_t id, const std::vector<ParticipantRow>& rows);
  Status close_segment(std::int64_t id, std::uint32_t idx, std::uint64_t packets, std::int64_t closed_at);
  /// state 'stopped' with its time, reason and final counters.
  Status finish_recording(std::int64_t id, std::int64_t stopped_at, std::string_view reason,
                          const RecordingStats& stats);
  /// After a crash: state 'recovered', stopped_at, reason (e.g. "crash"). Open segments get
  /// closed_at = stopped_at (their packet counts should have been set by close_segment first).
  Status mark_recovered(std::int64_t id, std::int64_t stopped_at, std::string_view reason = "crash");

  /// Paths of every segment of every recording of `device` (crash recovery: record files in a
  /// device directory that no row references were opened after the last commit).
  Status device_segment_paths(const std::string& device, std::vector<std::string>& out);
  /// Rows still in state 'recording' (with segments), oldest first.
  Status open_recordings(std::vector<RecordingRow>& out);

  /// Group commit. With it on, the first write opens a transaction that every later write joins
  /// until commit_batch(): one WAL commit per batch of control events instead of one per row
  /// (the commit was half of the control thread's time at 10,000 phones). The caller commits
  /// before it tells anyone the rows exist (callrecd: at the end of each event-loop iteration,
  /// before the responses go out). Off by default: every write is its own transaction.
  void set_group_commit(bool on) { group_commit_ = on; }
  /// Commits the open batch, if any. Writes are never lost to a failed commit (a full disk, an
  /// I/O error): every write of the batch is kept, in order, and replayed in one transaction at
  /// most once a second from commit_batch()/maintain(), and by retry_pending() (which may give
  /// up the reserve file, below) and close(). Meanwhile new writes queue behind them and
  /// return ok (they will be committed in order); reads do not see them yet. A kept write that
  /// can no longer apply (its row is gone) is dropped and counted, the others go on.
  /// Returns the error of a failed attempt (at most once per retry interval).
  Status commit_batch();
  /// Replays kept writes now, whatever the retry interval; on a full volume it gives up the
  /// reserve file first. The caller decides when (callrecd: once no recording is running any
  /// more, so the recordings cannot eat the space meant for the final states; at shutdown).
  Status retry_pending();
  /// The last failed commit failed because the volume (or the file's limit) is full.
  [[nodiscard]] bool full() const { return degraded_ && full_; }
  /// Periodic (callrecd: once a second): retries kept writes when due and re-creates the
  /// reserve file once the volume has room for it again.
  Status maintain();
  [[nodiscard]] bool degraded() const { return degraded_; }
  [[nodiscard]] CatalogStats stats() const;
  /// The reserve: a file `<catalog>.reserve` of this many bytes (fallocate'd at open) next to
  /// the database, on the same volume, given up (truncated) when a commit fails with a full
  /// disk -- by retry_pending() with group commit, at once for a write of its own otherwise -- so
  /// the catalog can still commit its final states; re-created by maintain() once the volume has
  /// room again. 0: none. Set before open(); default 4 MiB.
  void set_reserve_bytes(std::uint64_t bytes) { ballast_bytes_ = bytes; }
  [[nodiscard]] std::filesystem::path ballast_path() const;
  /// Caps the database at `pages` pages (SQLite's max_page_count; 0: no cap). Writes beyond it
  /// fail with SQLITE_FULL exactly as on a full volume: tests exercise the retry path with it.
  Status set_max_pages(std::uint32_t pages);
  [[nodiscard]] bool in_batch() const { return in_batch_; }
  /// Rows matching filter (with segments), newest first (started_at, then id, descending).
  Status list(const CatalogFilter& filter, std::vector<RecordingRow>& out);
  /// One row with its segments. ENOENT: no such id.
  Status get(std::int64_t id, RecordingRow& out);

 private:
  struct StmtDeleter {
    void operator()(sqlite3_stmt* s) const;
  };
  using Stmt = std::unique_ptr<sqlite3_stmt, StmtDeleter>;

  using Op = std::function<Status()>;
  static constexpr auto kRetryInterval = std::chrono::seconds(1);
  Status write(Op op);  ///< runs (group commit: journals) one write, see commit_batch()
  Status replay(bool force, bool may_use_reserve);
  void enter_degraded(const Status& why);
  static bool retriable(int rc);
  bool release_ballast();
  bool make_ballast();
  Status do_insert(const RecordingRow& row, std::int64_t id);
  Status do_update_metadata(std::int64_t id, const MetadataOverrides& overrides);
  Status do_add_segment(std::int64_t id, const SegmentInfo& seg, std::uint32_t stream);
  Status do_set_stream(std::int64_t id, const StreamRow& row);
  Status do_add_event(std::int64_t id, const EventRow& ev);
  Status do_set_participants(std::int64_t id, const std::vector<ParticipantRow>& rows);
  Status load_streams(RecordingRow& row);
  Status load_participants(RecordingRow& row);
  Status migrate(int from);
  Status do_close_segment(std::int64_t id, std::uint32_t idx, std::uint64_t packets, std::int64_t closed_at);
  Status do_finish(std::int64_t id, std::int64_t stopped_at, std::string_view reason, const RecordingStats& stats);
  Status do_mark_recovered(std::int64_t id, std::int64_t stopped_at, std::string_view reason);
  Status prepare(Stmt& slot, const char* sql);
  Status join_batch();   ///< opens the batch transaction when group commit is on
  Status tx_begin();     ///< BEGIN IMMEDIATE, or a SAVEPOINT inside a batch
  Status tx_commit();
  void tx_rollback();
  Status exec(const char* sql);
  Status open_db(int flags);
  Status create_schema();
  Status err(std::string_view what) const;
  Status step_done(sqlite3_stmt* s, std::string_view what);
  Status expect_changed(std::string_view what, std::int64_t id);
  Status load_rows(sqlite3_stmt* s, std::vector<RecordingRow>& out, std::string_view what);
  Status load_segments(RecordingRow& row);

  sqlite3* db_ = nullptr;
  bool group_commit_ = false;
  bool in_batch_ = false;
  bool degraded_ = false;      ///< journal_ holds writes the database does not have
  bool full_ = false;          ///< ... because the volume is full
  std::vector<Op> journal_;    ///< writes since the last successful commit (group commit)
  mutable int last_rc_ = 0;    ///< SQLite code of the last error (err())
  std::int64_t next_id_ = 1;   ///< next recording id (MAX(id)+1 at open, never reused)
  std::chrono::steady_clock::time_point next_retry_{};
  std::string last_failure_;
  std::uint64_t ballast_bytes_ = 4ull << 20;
  bool ballast_present_ = false;
  CatalogStats stats_;
  std::filesystem::path path_;
  Stmt insert_;
  Stmt get_;
  Stmt get_extra_;
  Stmt set_extra_;
  Stmt add_segment_;
  Stmt close_segment_;
  Stmt finish_;
  Stmt recovered_;
  Stmt recovered_segments_;
  Stmt open_rows_;
  Stmt segments_;
  Stmt device_paths_;
  Stmt set_stream_;
  Stmt add_event_;
  Stmt streams_;
  Stmt events_;
  Stmt has_recording_;
  Stmt del_participants_;
  Stmt add_participant_;
  Stmt participants_;
  int version_ = kCatalogSchemaVersion;  ///< of the open file (a read-only open may see 1 or 2)
  std::map<std::string, Stmt> update_column_;  ///< per column name
  std::map<unsigned, Stmt> list_;              ///< per combination of filters
};

/// True for metadata keys naming a value the server owns (a catalog column other than the four
/// numbers/names a stop may override, or the protocol's cmd/id/reason/dir): a peer's stop never
/// replaces them, and they are not stored as extras either (they would shadow the real column).
bool is_server_owned_key(std::string_view key);

/// JSON string escaping: ", \, control characters (\n \r \t, others \u00XX) escaped; valid
/// UTF-8 passed through; invalid UTF-8 bytes replaced by U+FFFD so the output is always JSON.
void json_escape_append(std::string& out, std::string_view s);
std::string json_escape(std::string_view s);
/// {"key":"value",...} of a string map.
std::string json_object(const std::map<std::string, std::string>& m);
/// Parses a flat JSON object of string values (what json_object writes). False on anything else.
bool parse_json_object(std::string_view text, std::map<std::string, std::string>& out);
/// A JSON array of recordings with their segments, stats and extra (for `callrec list --json`).
std::string to_json(const std::vector<RecordingRow>& rows);

}  // namespace callrec::fileio
