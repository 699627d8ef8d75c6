// Catalog: schema, inserts and updates, segment linking, filters, crash recovery, JSON output,
// and SQLite errors surfacing as Status. Each test uses its own database in a temp directory.
#include "fileio/catalog.hpp"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace callrec::fileio {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class CatalogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "callrec_catalog_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << "mkdtemp: " << std::strerror(errno);
    dir_ = tmpl;
    db_ = dir_ / "catalog.db";
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }

  static RecordingRow row(std::string call_id, std::string device, std::string remote, std::string local,
                          std::int64_t started_at) {
    RecordingRow r;
    r.call_id = std::move(call_id);
    r.source = "upload";
    r.device = std::move(device);
    r.remote_number = std::move(remote);
    r.remote_name = "Remote";
    r.local_number = std::move(local);
    r.local_name = "Local";
    r.direction = "in";
    r.codec = "PCMA";
    r.started_at = started_at;
    r.peer = "192.0.2.7:5060";
    return r;
  }

  std::int64_t insert(Catalog& c, const RecordingRow& r) {
    std::int64_t id = 0;
    const Status st = c.insert_recording(r, id);
    EXPECT_TRUE(st) << st.message();
    EXPECT_GT(id, 0);
    return id;
  }

  static SegmentInfo seg(std::uint32_t idx, const std::string& path, std::int64_t opened_ms) {
    SegmentInfo s;
    s.index = idx;
    s.path = path;
    s.codec = "PCMA";
    s.rtp_len = 172;
    s.increment = 160;
    s.opened = std::chrono::system_clock::time_point(std::chrono::milliseconds(opened_ms));
    return s;
  }

  /// Runs one query on a separate raw connection; returns column `col` of the first row.
  std::string raw_query(const std::string& sql, int col = 0) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open_v2(db_.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
    sqlite3_stmt* s = nullptr;
    std::string out;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, col) != nullptr) {
      out = reinterpret_cast<const char*>(sqlite3_column_text(s, col));
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return out;
  }

  /// Runs several statements on a separate raw connection (creating the file): builds a
  /// catalog of an older schema by hand, as an older program left it.
  void raw_exec(const std::string& sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open_v2(db_.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr), SQLITE_OK);
    char* msg = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &msg);
    EXPECT_EQ(rc, SQLITE_OK) << (msg != nullptr ? msg : "") << "\n" << sql;
    sqlite3_free(msg);
    sqlite3_close(db);
  }

  /// Every row of a query on a separate raw connection, columns joined by '|', rows by '\n'.
  std::string raw_rows(const std::string& sql) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open_v2(db_.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
    sqlite3_stmt* s = nullptr;
    std::string out;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
    while (sqlite3_step(s) == SQLITE_ROW) {
      for (int i = 0; i < sqlite3_column_count(s); ++i) {
        if (i != 0) out += '|';
        if (const auto* t = sqlite3_column_text(s, i)) out += reinterpret_cast<const char*>(t);
      }
      out += '\n';
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return out;
  }

  static std::vector<ParticipantRow> participants() {
    std::vector<ParticipantRow> v(3);
    v[0] = {0, "p-alice", "Alice", "sip:+15551230001@example.com", "+15551230001", "caller", "0"};
    v[1] = {1, "p-bob", "Bob \"B\"", "sip:+15551230002@example.com", "+15551230002", "callee", "1"};
    v[2] = {2, "p-carol", "Carol", "sip:carol@example.com", "carol", "", ""};
    return v;
  }

  static std::vector<std::int64_t> ids(const std::vector<RecordingRow>& rows) {
    std::vector<std::int64_t> v;
    for (const auto& r : rows) v.push_back(r.id);
    return v;
  }

  fs::path dir_;
  fs::path db_;
};

TEST_F(CatalogTest, CreatesVersionedSchemaInWalMode) {
  Catalog c;
  ASSERT_TRUE(c.open(db_)) << "open";
  EXPECT_TRUE(c.is_open());
  EXPECT_EQ(raw_query("PRAGMA user_version"), std::to_string(kCatalogSchemaVersion));
  EXPECT_EQ(raw_query("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(raw_query("SELECT count(*) FROM sqlite_master WHERE type='table' AND name IN ('recordings','segments')"),
            "2");
  for (const char* idx : {"recordings_device", "recordings_remote_number", "recordings_local_number",
                          "recordings_started_at", "recordings_call_id"}) {
    EXPECT_EQ(raw_query(std::string("SELECT count(*) FROM sqlite_master WHERE type='index' AND name='") + idx + "'"),
              "1")
        << idx;
  }
  // A device filter is answered from its index (no full scan).
  const std::string plan =
      raw_query("EXPLAIN QUERY PLAN SELECT id FROM recordings WHERE device = 'x' ORDER BY started_at DESC", 3);
  EXPECT_NE(plan.find("recordings_device"), std::string::npos) << plan;
}

TEST_F(CatalogTest, InsertUpdateFinish) {
  Catalog c;
  ASSERT_TRUE(c.open(db_));
  RecordingRow r = row("4711", "00:11:22:33:44:55", "+4930123", "200", 1'700'000'000'000);
  r.extra = {{"vendor_key", "v1"}};
  const std::int64_t id = insert(c, r);

  RecordingRow got;
  ASSERT_TRUE(c.get(id, got));
  EXPECT_EQ(got.id, id);
  EXPECT_EQ(got.call_id, "4711");
  EXPECT_EQ(got.source, "upload");
  EXPECT_EQ(got.device, "00:11:22:33:44:55");
  EXPECT_EQ(got.remote_number, "+4930123");
  EXPECT_EQ(got.direction, "in");
  EXPECT_EQ(got.state, "recording");
  EXPECT_FALSE(got.stopped_at.has_value());
  EXPECT_EQ(got.peer, "192.0.2.7:5060");
  EXPECT_EQ(got.extra, (std::map<std::string, std::string>{{"vendor_key", "v1"}}));

  // Stop request: the four numbers/names replace columns, unknown keys merge into extra; keys
  // naming a server-owned value (dir, device, codec, peer, state, counters, cmd/id/reason) land
  // nowhere: not in their column, not in extra.
  const Status st = c.update_metadata(id, {{"cmd", "RecordStopRequest"},
                                           {"id", "4711"},
                                           {"remote_name", "Zoë \"Z\" Müller"},
                                           {"dir", "out"},
                                           {"direction", "out"},
                                           {"device", "../../etc/passwd"},
                                           {"codec", "GSM"},
                                           {"peer", "6.6.6.6:666"},
                                           {"state", "stopped"},
                                           {"received", "99"},
                                           {"vendor_key", "v2"},
                                           {"x-new", "a&b=c"},
                                           {"reason", "user"}});
  ASSERT_TRUE(st) << st.message();
  ASSERT_TRUE(c.get(id, got));
  EXPECT_EQ(got.remote_name, "Zoë \"Z\" Müller");
  EXPECT_EQ(got.direction, "in");
  EXPECT_EQ(got.device, "00:11:22:33:44:55");
  EXPECT_EQ(got.codec, "PCMA");
  EXPECT_EQ(got.peer, "192.0.2.7:5060");
  EXPECT_EQ(got.state, "recording");
  EXPECT_EQ(got.stats.received, 0u);
  EXPECT_EQ(got.call_id, "4711");
  EXPECT_EQ(got.local_name, "Local") << "keys not given stay";
  EXPECT_EQ(got.extra, (std::map<std::string, std::string>{{"vendor_key", "v2"}, {"x-new", "a&b=c"}}));
  EXPECT_EQ(got.stop_reason, "");

  RecordingStats stats;
  stats.received = 1000;
  stats.lost = 3;
  stats.filled = 2;
  stats.duplicate = 1;
  stats.reordered = 4;
  stats.late = 5;
  stats.stray = 6;
  stats.other_payload = 7;
  stats.bytes = 172'000;
  ASSERT_TRUE(c.finish_recording(id, 1'700'000'060'000, "remote_stop", stats));
  ASSERT_TRUE(c.get(id, got));
  EXPECT_EQ(got.state, "stopped");
  ASSERT_TRUE(got.stopped_at.has_value());
  EXPECT_EQ(*got.stopped_at, 1'700'000'060'000);
  EXPECT_EQ(got.stop_reason, "remote_stop");
  EXPECT_EQ(got.stats.received, 1000u);
  EXPECT_EQ(got.stats.lost, 3u);
  EXPECT_EQ(got.stats.filled, 2u);
  EXPECT_EQ(got.stats.duplicate, 1u);
  EXPECT_EQ(got.stats.reordered, 4u);
  EXPECT_EQ(got.stats.late, 5u);
  EXPECT_EQ(got.stats.stray, 6u);
  EXPECT_EQ(got.stats.other_payload, 7u);
  EXPECT_EQ(got.stats.bytes, 172'000u);

  // Unknown ids are ENOENT, and a failed update changes nothing.
  Status missing = c.update_metadata(id + 100, {{"remote_name", "x"}});
  EXPECT_EQ(missing.code(), ENOENT) << missing.message();
  EXPECT_NE(missing.message().find(db_.string()), std::string::npos) << missing.message();
  EXPECT_EQ(c.finish_recording(id + 100, 1, "x", {}).code(), ENOENT);
  EXPECT_EQ(c.get(id + 100, got).code(), ENOENT);
  EXPECT_EQ(c.mark_recovered(id + 100, 1).code(), ENOENT);
}

TEST_F(CatalogTest, SegmentsLinkedInOrder) {
  Catalog c;
  ASSERT_TRUE(c.open(db_));
  const std::int64_t id = insert(c, row("1", "dev", "100", "200", 1000));
  const std::int64_t other = insert(c, row("2", "dev", "100", "200", 2000));
  // Added out of order: read back in idx order.
  ASSERT_TRUE(c.add_segment(id, seg(1, "/rec/Record_b_1.rec", 1500)));
  ASSERT_TRUE(c.add_segment(id, seg(0, "/rec/Record_a_0.rec", 1000)));
  ASSERT_TRUE(c.add_segment(other, seg(0, "/rec/other_0.rec", 2000)));
  SegmentInfo closed = seg(2, "/rec/Record_c_2.rec", 1800);
  closed.packets = 9;
  closed.closed = std::chrono::system_clock::time_point(1900ms);
  ASSERT_TRUE(c.add_segment(id, closed));
  ASSERT_TRUE(c.close_segment(id, 0, 25, 1500));
  ASSERT_TRUE(c.close_segment(id, 1, 15, 1800));

  RecordingRow got;
  ASSERT_TRUE(c.get(id, got));
  ASSERT_EQ(got.segments.size(), 3u);
  for (std::uint32_t i = 0; i < 3; ++i) EXPECT_EQ(got.segments[i].idx, i);
  EXPECT_EQ(got.segments[0].path, "/rec/Record_a_0.rec");
  EXPECT_EQ(got.segments[0].packets, 25u);
  EXPECT_EQ(got.segments[0].opened_at, 1000);
  EXPECT_EQ(got.segments[0].closed_at, std::optional<std::int64_t>(1500));
  EXPECT_EQ(got.segments[0].codec, "PCMA");
  EXPECT_EQ(got.segments[0].rtp_len, 172u);
  EXPECT_EQ(got.segments[0].increment, 160u);
  EXPECT_EQ(got.segments[1].packets, 15u);
  EXPECT_EQ(got.segments[2].packets, 9u);
  EXPECT_EQ(got.segments[2].closed_at, std::optional<std::int64_t>(1900));
  ASSERT_TRUE(c.get(other, got));
  ASSERT_EQ(got.segments.size(), 1u);
  EXPECT_EQ(got.segments[0].path, "/rec/other_0.rec");
  EXPECT_FALSE(got.segments[0].closed_at.has_value());

  const Status dup = c.add_segment(id, seg(1, "/rec/dup.rec", 1));
  EXPECT_EQ(dup.code(), EEXIST) << dup.message();
  const Status orphan = c.add_segment(id + 100, seg(0, "/rec/orphan.rec", 1));
  EXPECT_EQ(orphan.code(), ENOENT) << orphan.message();
  EXPECT_EQ(c.close_segment(id, 7, 1, 1).code(), ENOENT);
}

TEST_F(CatalogTest, ListFilters) {
  Catalog c;
  ASSERT_TRUE(c.open(db_));
  const std::int64_t a = insert(c, row("A", "dev1", "555", "100", 1000));
  const std::int64_t b = insert(c, row("B", "dev1", "666", "101", 2000));
  const std::int64_t d = insert(c, row("D", "dev2", "100", "777", 3000));  // 100 as remote here
  const std::int64_t e = insert(c, row("E", "dev2", "888", "102", 4000));
  ASSERT_TRUE(c.add_segment(b, seg(0, "/rec/b0.rec", 2000)));

  std::vector<RecordingRow> rows;
  ASSERT_TRUE(c.list({}, rows));
  EXPECT_EQ(ids(rows), (std::vector<std::int64_t>{e, d, b, a})) << "newest first";

  CatalogFilter f;
  f.device = "dev1";
  ASSERT_TRUE(c.list(f, rows));
  EXPECT_EQ(ids(rows), (std::vector<std::int64_t>{b, a}));
  ASSERT_EQ(rows[0].segments.size(), 1u) << "list returns segments";
  EXPECT_EQ(rows[0].segments[0].path, "/rec/b0.rec");

  f = {};
  f.number = "100";  // local of A, remote of D
  ASSERT_TRUE(c.list(f, rows));
  EXPECT_EQ(ids(rows), (std::vector<std::int64_t>{d, a}));

  f = {};
  f.from = 2000;
  f.to = 4000;  // half-open: [2000, 4000)
  ASSERT_TRUE(c.list(f, rows));
  EXPECT_EQ(ids(rows), (std::vector<std::int64_t>{d, b}));

  f = {};
  f.call_id = "E";
  ASSERT_TRUE(c.list(f, rows));
  EXPECT_EQ(ids(rows), (std::vector<std::int64_t>{e}));

  f = {};
  f.device = "dev2";
  f.number = "888";
  f.from = 0;
  ASSERT_TRUE(c.list(f, rows));
  EXPECT_EQ(ids(rows), (std::vector<std::int64_t>{e})) << "filters combine with AND";

  f = {};
  f.limit = 2;
  ASSERT_TRUE(c.list(f, rows));
  EXPECT_EQ(ids(rows), (std::vector<std::int64_t>{e, d}));
  f.limit = 0;  // no limit
  ASSERT_TRUE(c.list(f, rows));
  EXPECT_EQ(rows.size(), 4u);

  f = {};
  f.device = "nobody";
  ASSERT_TRUE(c.list(f, rows));
  EXPECT_TRUE(rows.empty());

  // Cached statements are reused: same filter twice gives the same answer.
  f = {};
  f.device = "dev1";
  ASSERT_TRUE(c.list(f, rows));
  EXPECT_EQ(ids(rows), (std::vector<std::int64_t>{b, a}));

  RecordingRow got;
  ASSERT_TRUE(c.get(d, got));
  EXPECT_EQ(got.call_id, "D");
}

TEST_F(CatalogTest, ListFiltersByIdAndState) {
  Catalog c;
  ASSERT_TRUE(c.open(db_));
  const std::int64_t a = insert(c, row("A", "dev1", "555", "100", 1000));
  const std::int64_t b = insert(c, row("B", "dev1", "666", "101", 2000));
  const std::int64_t d = insert(c, row("D", "dev2", "100", "777", 3000));
  ASSERT_TRUE(c.finish_recording(a, 1500, "phone", {}));
  ASSERT_TRUE(c.mark_recovered(b, 2500));

  std::vector<RecordingRow> rows;
  CatalogFilter f;
  f.id = b;
  ASSERT_TRUE(c.list(f, rows));
  EXPECT_EQ(ids(rows), (std::vector<std::int64_t>{b}));
  f.id = d + 100;
  ASSERT_TRUE(c.list(f, rows));
  EXPECT_TRUE(rows.empty());

  f = {};
  f.state = "recording";
  ASSERT_TRUE(c.list(f, rows));
  EXPECT_EQ(ids(rows), (std::vector<std::int64_t>{d}));
  f.state = "stopped";
  ASSERT_TRUE(c.list(f, rows));
  EXPECT_EQ(ids(rows), (std::vector<std::int64_t>{a}));
  f.state = "recovered";
  ASSERT_TRUE(c.list(f, rows));
  EXPECT_EQ(ids(rows), (std::vector<std::int64_t>{b}));

  f = {};
  f.state = "stopped";
  f.number = "100";  // A (local) and D (remote) match the number; only A is stopped
  ASSERT_TRUE(c.list(f, rows));
  EXPECT_EQ(ids(rows), (std::vector<std::int64_t>{a}));
}

TEST_F(CatalogTest, GroupCommitMakesABatchVisibleOnlyAtCommit) {
  Catalog c;
  ASSERT_TRUE(c.open(db_));
  c.set_group_commit(true);
  EXPECT_FALSE(c.in_batch());
  const std::int64_t a = insert(c, row("A", "dev", "1", "2", 1'700'000'000'000));
  EXPECT_TRUE(c.in_batch());
  const std::int64_t b = insert(c, row("B", "dev", "1", "2", 1'700'000'000'001));
  // A metadata update inside the batch nests (SAVEPOINT), and a failing one is undone alone.
  ASSERT_TRUE(c.update_metadata(a, {{"remote_name", "Changed"}}));
  EXPECT_FALSE(c.update_metadata(999, {{"remote_name", "nobody"}}));
  ASSERT_TRUE(c.finish_recording(b, 1'700'000'001'000, "hangup", {}));
  EXPECT_TRUE(c.in_batch());

  // Another connection (callrec list) sees nothing before the commit ...
  Catalog reader;
  ASSERT_TRUE(reader.open_read_only(db_));
  std::vector<RecordingRow> rows;
  CatalogFilter all;
  all.limit = 0;
  ASSERT_TRUE(reader.list(all, rows));
  EXPECT_TRUE(rows.empty());
  // ... and everything after it, with the batch's own writes applied.
  ASSERT_TRUE(c.commit_batch());
  EXPECT_FALSE(c.in_batch());
  ASSERT_TRUE(reader.list(all, rows));
  ASSERT_EQ(rows.size(), 2u);
  RecordingRow got;
  ASSERT_TRUE(reader.get(a, got));
  EXPECT_EQ(got.remote_name, "Changed");
  ASSERT_TRUE(reader.get(b, got));
  EXPECT_EQ(got.state, "stopped");
  EXPECT_TRUE(c.commit_batch());  // nothing open: a no-op

  // close() commits what is still open.
  const std::int64_t d = insert(c, row("D", "dev", "1", "2", 1'700'000'000'002));
  c.close();
  ASSERT_TRUE(reader.get(d, got));
  EXPECT_EQ(got.call_id, "D");
}

TEST_F(CatalogTest, OpenReadOnly) {
  {
    Catalog missing;
    const Status st = missing.open_read_only(db_);
    EXPECT_FALSE(st);
    EXPECT_EQ(st.code(), ENOENT);
    EXPECT_NE(st.message().find(db_.string()), std::string::npos) << st.message();
    EXPECT_FALSE(fs::exists(db_)) << "a read-only open never creates the file";
  }
  Catalog w;
  ASSERT_TRUE(w.open(db_));
  const std::int64_t a = insert(w, row("A", "dev1", "555", "100", 1000));

  Catalog r;  // beside the writer, as `callrec list` beside the daemon
  ASSERT_TRUE(r.open_read_only(db_));
  std::vector<RecordingRow> rows;
  ASSERT_TRUE(r.list({}, rows));
  EXPECT_EQ(ids(rows), (std::vector<std::int64_t>{a}));
  std::int64_t id = 0;
  EXPECT_FALSE(r.insert_recording(row("B", "dev1", "1", "2", 2000), id)) << "read-only";
  const std::int64_t b = insert(w, row("B", "dev1", "1", "2", 2000));
  ASSERT_TRUE(r.list({}, rows));
  EXPECT_EQ(ids(rows), (std::vector<std::int64_t>{b, a})) << "sees the writer's commits";

  const fs::path other = dir_ / "not-a-catalog.db";
  {
    std::ofstream(other) << "this is not a database, just some text long enough to not be empty\n";
  }
  Catalog bad;
  const Status st = bad.open_read_only(other);
  EXPECT_FALSE(st);
  EXPECT_NE(st.message().find(other.string()), std::string::npos) << st.message();
  EXPECT_FALSE(bad.is_open());
}

TEST_F(CatalogTest, OpenRecordingsAfterCrash) {
  // A child process writes the catalog and dies without closing it (no checkpoint, WAL left
  // behind): the state a crash leaves.
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0) << std::strerror(errno);
  if (pid == 0) {
    Catalog c;
    std::int64_t id = 0;
    bool ok = static_cast<bool>(c.open(db_));
    RecordingRow r1 = row("open-1", "dev", "1", "2", 1000);
    RecordingRow r2 = row("done", "dev", "1", "2", 2000);
    RecordingRow r3 = row("open-2", "dev", "1", "2", 3000);
    ok = ok && c.insert_recording(r1, id) && c.add_segment(id, seg(0, "/rec/o1_0.rec", 1000));
    ok = ok && c.insert_recording(r2, id) && c.finish_recording(id, 2500, "remote_stop", {});
    ok = ok && c.insert_recording(r3, id) && c.add_segment(id, seg(0, "/rec/o2_0.rec", 3000)) &&
         c.close_segment(id, 0, 50, 3100) && c.add_segment(id, seg(1, "/rec/o2_1.rec", 3100));
    ::_exit(ok ? 0 : 1);  // no destructors: the database is not closed
  }
  int wstatus = 0;
  ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
  ASSERT_TRUE(WIFEXITED(wstatus));
  ASSERT_EQ(WEXITSTATUS(wstatus), 0) << "child failed to write the catalog";

  Catalog c;
  ASSERT_TRUE(c.open(db_));
  std::vector<RecordingRow> open;
  ASSERT_TRUE(c.open_recordings(open));
  ASSERT_EQ(open.size(), 2u);
  EXPECT_EQ(open[0].call_id, "open-1") << "oldest first";
  EXPECT_EQ(open[1].call_id, "open-2");
  ASSERT_EQ(open[1].segments.size(), 2u);
  EXPECT_EQ(open[1].segments[0].packets, 50u);
  EXPECT_FALSE(open[1].segments[1].closed_at.has_value());

  // The daemon repairs the open file, records what it found, marks the recording recovered.
  ASSERT_TRUE(c.close_segment(open[1].id, 1, 42, 3200));
  ASSERT_TRUE(c.mark_recovered(open[1].id, 3300, "crash"));
  RecordingRow got;
  ASSERT_TRUE(c.get(open[1].id, got));
  EXPECT_EQ(got.state, "recovered");
  EXPECT_EQ(got.stopped_at, std::optional<std::int64_t>(3300));
  EXPECT_EQ(got.stop_reason, "crash");
  EXPECT_EQ(got.segments[1].packets, 42u);
  EXPECT_EQ(got.segments[1].closed_at, std::optional<std::int64_t>(3200));

  ASSERT_TRUE(c.mark_recovered(open[0].id, 3400));
  ASSERT_TRUE(c.get(open[0].id, got));
  EXPECT_EQ(got.segments[0].closed_at, std::optional<std::int64_t>(3400)) << "open segment closed at recovery";
  ASSERT_TRUE(c.open_recordings(open));
  EXPECT_TRUE(open.empty());
}

TEST_F(CatalogTest, ReopenKeepsData) {
  std::int64_t id = 0;
  {
    Catalog c;
    ASSERT_TRUE(c.open(db_));
    RecordingRow r = row("keep", "dev", "1", "2", 42);
    r.extra = {{"k", "line1\nline2"}};
    id = insert(c, r);
    ASSERT_TRUE(c.add_segment(id, seg(0, "/rec/k.rec", 42)));
  }
  Catalog c;
  ASSERT_TRUE(c.open(db_));
  RecordingRow got;
  ASSERT_TRUE(c.get(id, got));
  EXPECT_EQ(got.call_id, "keep");
  EXPECT_EQ(got.extra.at("k"), "line1\nline2");
  ASSERT_EQ(got.segments.size(), 1u);
  // Reopening the same object on another file works too.
  ASSERT_TRUE(c.open(dir_ / "second.db"));
  EXPECT_EQ(c.get(id, got).code(), ENOENT);
  std::int64_t id2 = 0;
  ASSERT_TRUE(c.insert_recording(row("x", "d", "1", "2", 1), id2));
}

TEST_F(CatalogTest, JsonEscaping) {
  EXPECT_EQ(json_escape("plain"), "plain");
  EXPECT_EQ(json_escape("a\"b"), "a\\\"b");
  EXPECT_EQ(json_escape("a\\b"), "a\\\\b");
  EXPECT_EQ(json_escape("a\nb\r\tc"), "a\\nb\\r\\tc");
  EXPECT_EQ(json_escape(std::string("\x01\x1f\x7f", 3)), "\\u0001\\u001f\\u007f");
  EXPECT_EQ(json_escape(std::string("nul\0x", 5)), "nul\\u0000x");
  const std::string utf8 = "Zo\xC3\xAB \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80";  // Zoë 日本 😀
  EXPECT_EQ(json_escape(utf8), utf8) << "UTF-8 passes through";
  EXPECT_EQ(json_escape("bad\xFF"), "bad\\ufffd");
  EXPECT_EQ(json_escape("\xC3"), "\\ufffd") << "truncated sequence";
  EXPECT_EQ(json_escape("\xED\xA0\x80"), "\\ufffd\\ufffd\\ufffd") << "encoded surrogate";
  EXPECT_EQ(json_escape("\xC0\xAF"), "\\ufffd\\ufffd") << "overlong";

  const std::map<std::string, std::string> m = {{"q\"k", "v\\1"}, {"nl", "a\nb"}, {"u", utf8}, {"c", "\x02"}};
  std::map<std::string, std::string> back;
  ASSERT_TRUE(parse_json_object(json_object(m), back));
  EXPECT_EQ(back, m);
  ASSERT_TRUE(parse_json_object(R"( { "a" : "\u00e9\ud83d\ude00\/" } )", back));
  EXPECT_EQ(back.at("a"), "\xC3\xA9\xF0\x9F\x98\x80/");
  EXPECT_FALSE(parse_json_object(R"({"a":1})", back));
  EXPECT_FALSE(parse_json_object(R"({"a":"b"} x)", back));
  EXPECT_FALSE(parse_json_object(R"({"a":"b)", back));
  EXPECT_FALSE(parse_json_object("", back));

  RecordingRow r = row("id\"1", "dev", "+49 \"30\"", "2", 1000);
  r.id = 7;
  r.remote_name = "Zo\xC3\xAB\\\n";
  r.extra = {{"x", "y"}};
  r.stats.received = 12;
  SegmentRow g;
  g.idx = 0;
  g.path = "/rec/Record_1.rec";
  g.codec = "PCMA";
  g.rtp_len = 172;
  g.increment = 160;
  g.packets = 12;
  g.opened_at = 1000;
  r.segments.push_back(g);
  const std::string json = to_json({r});
  EXPECT_EQ(json.front(), '[');
  EXPECT_EQ(json.back(), ']');
  EXPECT_NE(json.find(R"("id":7,)"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("call_id":"id\"1")"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("remote_number":"+49 \"30\"")"), std::string::npos) << json;
  EXPECT_NE(json.find("\"remote_name\":\"Zo\xC3\xAB\\\\\\n\""), std::string::npos) << json;
  EXPECT_NE(json.find(R"("stopped_at":null)"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("extra":{"x":"y"})"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("received":12)"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("segments":[{"idx":0,"path":"/rec/Record_1.rec")"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("closed_at":null,"stream":0})"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("streams":[],"events":[],"participants":[]})"), std::string::npos) << json;
  EXPECT_EQ(json.find('\n'), std::string::npos) << "no raw control characters";
  EXPECT_EQ(to_json({}), "[]");
}

TEST_F(CatalogTest, SqliteErrorsAreStatus) {
  // A path below a regular file cannot be created (root included).
  const fs::path file = dir_ / "plainfile";
  std::ofstream(file) << "x";
  Catalog c;
  Status st = c.open(file / "catalog.db");
  EXPECT_FALSE(st);
  EXPECT_FALSE(c.is_open());
  EXPECT_NE(st.message().find((file / "catalog.db").string()), std::string::npos) << st.message();

  // A file that is not a database.
  const fs::path junk = dir_ / "junk.db";
  std::ofstream(junk) << std::string(4096, 'j');
  st = c.open(junk);
  EXPECT_FALSE(st);
  EXPECT_NE(st.message().find("junk.db"), std::string::npos) << st.message();

  // Calls on a catalog that is not open fail cleanly.
  std::int64_t id = 0;
  EXPECT_EQ(c.insert_recording(row("1", "d", "1", "2", 1), id).code(), EBADF);
  std::vector<RecordingRow> rows;
  EXPECT_FALSE(c.list({}, rows));

  // A database from a newer program is refused, not misread.
  {
    Catalog ok;
    ASSERT_TRUE(ok.open(db_));
  }
  raw_query("PRAGMA user_version = 99");
  st = c.open(db_);
  EXPECT_EQ(st.code(), EPROTO) << st.message();
  EXPECT_NE(st.message().find("99"), std::string::npos) << st.message();
}

// Schema version 1 exactly as a version-1 program created it (catalog.cpp of that time).
constexpr const char* kV1Schema = R"sql(
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
  PRIMARY KEY(recording_id, idx)
) WITHOUT ROWID;
CREATE INDEX recordings_device        ON recordings(device, started_at);
CREATE INDEX recordings_remote_number ON recordings(remote_number, started_at);
CREATE INDEX recordings_local_number  ON recordings(local_number, started_at);
CREATE INDEX recordings_started_at    ON recordings(started_at);
CREATE INDEX recordings_call_id       ON recordings(call_id);
CREATE INDEX recordings_open          ON recordings(started_at) WHERE state = 'recording';
)sql";

/// Version 2 on top of version 1 (as the version-2 program created a new file: same tables).
constexpr const char* kV2Additions = R"sql(
ALTER TABLE segments ADD COLUMN stream INTEGER NOT NULL DEFAULT 0;
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

constexpr const char* kOldRecording =
    "INSERT INTO recordings(id, call_id, source, device, remote_number, local_number, started_at, stopped_at, "
    "state) VALUES(5, 'old-call', 'span', 'dev', '555', '100', 1000, 2000, 'stopped');"
    "INSERT INTO segments(recording_id, idx, path, codec, rtp_len, increment, packets, opened_at, closed_at) "
    "VALUES(5, 0, '/rec/old0.rec', 'PCMA', 172, 160, 50, 1000, 2000);";

TEST_F(CatalogTest, ParticipantsAndStreamLabelsRoundTrip) {
  Catalog c;
  ASSERT_TRUE(c.open(db_));
  const std::int64_t id = insert(c, row("siprec-1", "srs", "", "", 1000));
  const std::int64_t other = insert(c, row("siprec-2", "srs", "", "", 2000));
  StreamRow t;
  t.stream = 1;
  t.role = "callee";
  t.codec = "PCMU";
  t.label = "leg-b";
  t.participant = "p-bob";
  t.packets = 42;
  ASSERT_TRUE(c.set_stream(id, t));
  t.stream = 0;
  t.role = "caller";
  t.label = "leg-a";
  t.participant = "p-alice";
  ASSERT_TRUE(c.set_stream(id, t));
  ASSERT_TRUE(c.set_participants(id, participants()));
  ASSERT_TRUE(c.set_participants(other, {participants()[2]}));

  RecordingRow got;
  ASSERT_TRUE(c.get(id, got));
  ASSERT_EQ(got.streams.size(), 2u);
  EXPECT_EQ(got.streams[0].label, "leg-a");
  EXPECT_EQ(got.streams[0].participant, "p-alice");
  EXPECT_EQ(got.streams[1].label, "leg-b");
  EXPECT_EQ(got.streams[1].participant, "p-bob");
  EXPECT_EQ(got.streams[1].packets, 42u);
  ASSERT_EQ(got.participants.size(), 3u);
  const std::vector<ParticipantRow> want = participants();
  for (std::size_t i = 0; i < want.size(); ++i) {
    const ParticipantRow& p = got.participants[i];
    EXPECT_EQ(p.idx, want[i].idx) << i;
    EXPECT_EQ(p.participant_id, want[i].participant_id) << i;
    EXPECT_EQ(p.name, want[i].name) << i;
    EXPECT_EQ(p.aor, want[i].aor) << i;
    EXPECT_EQ(p.number, want[i].number) << i;
    EXPECT_EQ(p.role, want[i].role) << i;
    EXPECT_EQ(p.sends, want[i].sends) << i;
  }
  // list() fills them too, per recording.
  std::vector<RecordingRow> rows;
  ASSERT_TRUE(c.list({}, rows));
  ASSERT_EQ(ids(rows), (std::vector<std::int64_t>{other, id}));
  ASSERT_EQ(rows[0].participants.size(), 1u);
  EXPECT_EQ(rows[0].participants[0].participant_id, "p-carol");
  EXPECT_EQ(rows[1].participants.size(), 3u);

  // An update replaces every row (metadata re-sent with a participant gone).
  std::vector<ParticipantRow> upd = {participants()[1]};
  upd[0].idx = 0;
  upd[0].role = "caller";
  ASSERT_TRUE(c.set_participants(id, upd));
  ASSERT_TRUE(c.get(id, got));
  ASSERT_EQ(got.participants.size(), 1u);
  EXPECT_EQ(got.participants[0].participant_id, "p-bob");
  EXPECT_EQ(got.participants[0].role, "caller");
  ASSERT_TRUE(c.get(other, got));
  EXPECT_EQ(got.participants.size(), 1u) << "another recording's rows are not touched";
  ASSERT_TRUE(c.set_participants(other, {}));
  ASSERT_TRUE(c.get(other, got));
  EXPECT_TRUE(got.participants.empty());

  // No such recording; two rows with the same idx: nothing changes (one transaction).
  EXPECT_EQ(c.set_participants(id + 100, participants()).code(), ENOENT);
  EXPECT_EQ(c.set_participants(id + 100, {}).code(), ENOENT);
  std::vector<ParticipantRow> dup = participants();
  dup[2].idx = 1;
  EXPECT_FALSE(c.set_participants(id, dup));
  ASSERT_TRUE(c.get(id, got));
  ASSERT_EQ(got.participants.size(), 1u) << "a failed replacement keeps the previous rows";
  EXPECT_EQ(got.participants[0].participant_id, "p-bob");

  // Group commit: queued like the other writes, visible to a reader at the commit.
  c.set_group_commit(true);
  ASSERT_TRUE(c.set_participants(id, participants()));
  EXPECT_TRUE(c.in_batch());
  Catalog reader;
  ASSERT_TRUE(reader.open_read_only(db_));
  ASSERT_TRUE(reader.get(id, got));
  EXPECT_EQ(got.participants.size(), 1u) << "not committed yet";
  ASSERT_TRUE(c.commit_batch());
  ASSERT_TRUE(reader.get(id, got));
  EXPECT_EQ(got.participants.size(), 3u);

  // Deleting the recording deletes its participants (ON DELETE CASCADE).
  c.close();
  raw_exec("PRAGMA foreign_keys = ON; DELETE FROM recordings WHERE id = " + std::to_string(id) + ";");
  EXPECT_EQ(raw_query("SELECT count(*) FROM participants WHERE recording_id = " + std::to_string(id)), "0");
}

TEST_F(CatalogTest, ListNumberMatchesAParticipant) {
  Catalog c;
  ASSERT_TRUE(c.open(db_));
  const std::int64_t a = insert(c, row("A", "dev1", "555", "100", 1000));
  const std::int64_t s = insert(c, row("S", "srs", "", "", 2000));  // SIPREC: numbers in participants
  const std::int64_t s2 = insert(c, row("S2", "srs", "", "", 3000));
  ASSERT_TRUE(c.set_participants(s, participants()));
  std::vector<ParticipantRow> p2 = {participants()[0]};
  p2[0].number = "555";  // also the remote number of A
  ASSERT_TRUE(c.set_participants(s2, p2));

  std::vector<RecordingRow> rows;
  CatalogFilter f;
  f.number = "+15551230002";
  ASSERT_TRUE(c.list(f, rows));
  EXPECT_EQ(ids(rows), (std::vector<std::int64_t>{s}));
  f.number = "carol";
  ASSERT_TRUE(c.list(f, rows));
  EXPECT_EQ(ids(rows), (std::vector<std::int64_t>{s}));
  f.number = "555";  // A by its remote number, S2 by a participant: each once, newest first
  ASSERT_TRUE(c.list(f, rows));
  EXPECT_EQ(ids(rows), (std::vector<std::int64_t>{s2, a}));
  f.number = "100";
  ASSERT_TRUE(c.list(f, rows));
  EXPECT_EQ(ids(rows), (std::vector<std::int64_t>{a}));
  f.number = "sip:carol@example.com";  // the number, not the aor
  ASSERT_TRUE(c.list(f, rows));
  EXPECT_TRUE(rows.empty());
  f.number = "+15551230002";
  f.device = "dev1";  // combined with AND
  ASSERT_TRUE(c.list(f, rows));
  EXPECT_TRUE(rows.empty());
  f.device = "srs";
  ASSERT_TRUE(c.list(f, rows));
  EXPECT_EQ(ids(rows), (std::vector<std::int64_t>{s}));

  // Every branch of the OR is an index lookup, no scan of recordings or participants.
  const std::string plan = raw_rows(
      "EXPLAIN QUERY PLAN SELECT id FROM recordings WHERE 1 AND (remote_number = 'x' OR local_number = 'x' OR id IN "
      "(SELECT recording_id FROM participants WHERE number = 'x')) ORDER BY started_at DESC, id DESC LIMIT 100");
  EXPECT_NE(plan.find("recordings_remote_number"), std::string::npos) << plan;
  EXPECT_NE(plan.find("recordings_local_number"), std::string::npos) << plan;
  EXPECT_NE(plan.find("participants_number"), std::string::npos) << plan;
  EXPECT_EQ(plan.find("SCAN"), std::string::npos) << plan;
}

TEST_F(CatalogTest, MigratesVersion2InPlaceAndReadsItReadOnly) {
  raw_exec(std::string(kV1Schema) + kV2Additions + kOldRecording +
           "INSERT INTO streams(recording_id, stream, role, codec, packets) VALUES(5, 0, 'caller', 'PCMA', 50);"
           "INSERT INTO streams(recording_id, stream, role, codec, packets) VALUES(5, 1, 'callee', 'PCMA', 49);"
           "INSERT INTO events(recording_id, stream, at, kind, value) VALUES(5, 0, 1500, 'dtmf', '5');"
           "PRAGMA user_version = 2;");

  {  // callrec list beside an older daemon: the file is read as it is, never changed.
    Catalog r;
    ASSERT_TRUE(r.open_read_only(db_));
    RecordingRow got;
    ASSERT_TRUE(r.get(5, got));
    ASSERT_EQ(got.streams.size(), 2u);
    EXPECT_EQ(got.streams[1].role, "callee");
    EXPECT_EQ(got.streams[1].label, "");
    EXPECT_TRUE(got.participants.empty());
    ASSERT_EQ(got.events.size(), 1u);
    std::vector<RecordingRow> rows;
    CatalogFilter f;
    f.number = "555";
    ASSERT_TRUE(r.list(f, rows));
    EXPECT_EQ(ids(rows), (std::vector<std::int64_t>{5}));
    EXPECT_NE(to_json(rows).find(R"("label":"","participant":"")"), std::string::npos);
  }
  EXPECT_EQ(raw_query("PRAGMA user_version"), "2");

  Catalog c;
  ASSERT_TRUE(c.open(db_));
  EXPECT_EQ(raw_query("PRAGMA user_version"), "3");
  RecordingRow got;
  ASSERT_TRUE(c.get(5, got));
  EXPECT_EQ(got.call_id, "old-call");
  ASSERT_EQ(got.segments.size(), 1u);
  EXPECT_EQ(got.segments[0].packets, 50u);
  ASSERT_EQ(got.streams.size(), 2u);
  EXPECT_EQ(got.streams[0].role, "caller");
  EXPECT_EQ(got.streams[1].packets, 49u);
  EXPECT_EQ(got.streams[1].label, "") << "old rows get the default";
  ASSERT_EQ(got.events.size(), 1u);
  EXPECT_EQ(got.events[0].value, "5");

  // The new columns and table work on the migrated file.
  StreamRow t = got.streams[1];
  t.label = "leg-b";
  t.participant = "p-bob";
  ASSERT_TRUE(c.set_stream(5, t));
  ASSERT_TRUE(c.set_participants(5, participants()));
  ASSERT_TRUE(c.get(5, got));
  EXPECT_EQ(got.streams[1].label, "leg-b");
  EXPECT_EQ(got.participants.size(), 3u);
  std::vector<RecordingRow> rows;
  CatalogFilter f;
  f.number = "carol";
  ASSERT_TRUE(c.list(f, rows));
  EXPECT_EQ(ids(rows), (std::vector<std::int64_t>{5}));
  c.close();

  // Same tables, columns and indexes as a new file.
  const std::string shape_sql =
      "SELECT m.type, m.name, p.name, p.type, p.\"notnull\", p.dflt_value, p.pk FROM sqlite_master m "
      "LEFT JOIN pragma_table_info(m.name) p WHERE m.name NOT LIKE 'sqlite_%' ORDER BY m.name, p.cid";
  const std::string migrated = raw_rows(shape_sql);
  const fs::path migrated_db = db_;
  db_ = dir_ / "new.db";
  {
    Catalog n;
    ASSERT_TRUE(n.open(db_));
  }
  EXPECT_EQ(raw_rows(shape_sql), migrated);
  EXPECT_EQ(raw_rows("SELECT name FROM sqlite_master WHERE name = 'participants_number'"), "participants_number\n");
  db_ = migrated_db;
}

TEST_F(CatalogTest, MigratesVersion1ThroughToTheCurrentSchema) {
  raw_exec(std::string(kV1Schema) + kOldRecording + "PRAGMA user_version = 1;");
  {
    Catalog r;  // read-only: version 1 as it is (no streams, no participants)
    ASSERT_TRUE(r.open_read_only(db_));
    RecordingRow got;
    ASSERT_TRUE(r.get(5, got));
    ASSERT_EQ(got.segments.size(), 1u);
    EXPECT_TRUE(got.streams.empty());
    EXPECT_TRUE(got.participants.empty());
  }
  Catalog c;
  ASSERT_TRUE(c.open(db_));
  EXPECT_EQ(raw_query("PRAGMA user_version"), std::to_string(kCatalogSchemaVersion));
  RecordingRow got;
  ASSERT_TRUE(c.get(5, got));
  ASSERT_EQ(got.segments.size(), 1u);
  EXPECT_EQ(got.segments[0].stream, 0u);
  StreamRow t;
  t.label = "main";
  ASSERT_TRUE(c.set_stream(5, t));
  ASSERT_TRUE(c.set_participants(5, participants()));
  ASSERT_TRUE(c.get(5, got));
  ASSERT_EQ(got.streams.size(), 1u);
  EXPECT_EQ(got.streams[0].label, "main");
  EXPECT_EQ(got.participants.size(), 3u);
}

TEST_F(CatalogTest, JsonCarriesParticipantsAndStreamLabels) {
  RecordingRow r = row("siprec-1", "srs", "", "", 1000);
  r.id = 9;
  r.source = "siprec";
  StreamRow t;
  t.stream = 1;
  t.role = "callee";
  t.label = "leg \"b\"";
  t.participant = "p-bob";
  r.streams.push_back(t);
  r.participants = participants();
  const std::string json = to_json({r});
  EXPECT_NE(json.find(R"("flags":"","label":"leg \"b\"","participant":"p-bob","packets":0)"), std::string::npos)
      << json;
  EXPECT_NE(json.find(R"("events":[],"participants":[{"idx":0,"participant_id":"p-alice","name":"Alice",)"
                      R"("aor":"sip:+15551230001@example.com","number":"+15551230001","role":"caller","sends":"0"},)"
                      R"({"idx":1,"participant_id":"p-bob","name":"Bob \"B\"",)"),
            std::string::npos)
      << json;
  EXPECT_NE(json.find(R"({"idx":2,"participant_id":"p-carol","name":"Carol","aor":"sip:carol@example.com",)"
                      R"("number":"carol","role":"","sends":""}]})"),
            std::string::npos)
      << json;
}

// A commit that fails (SQLITE_FULL from max_page_count, exactly what a full volume gives) used to
// lose the batch: rows stayed 'recording' forever. Now the batch is kept and replayed.
TEST_F(CatalogTest, FailedCommitKeepsTheBatchAndReplaysItWhenSpaceReturns) {
  Catalog c;
  c.set_reserve_bytes(0);
  ASSERT_TRUE(c.open(db_));
  c.set_group_commit(true);
  const std::int64_t a = insert(c, row("A", "dev", "1", "2", 1'700'000'000'000));
  ASSERT_TRUE(c.commit_batch());
  ASSERT_TRUE(c.set_max_pages(1));  // the current size: any growth now fails with SQLITE_FULL

  RecordingRow big = row("B", "dev", "1", "2", 1'700'000'000'001);
  big.extra["blob"] = std::string(64 * 1024, 'b');  // needs new pages
  const std::int64_t b = insert(c, big);
  ASSERT_TRUE(c.add_segment(b, seg(0, "/rec/b0.rec", 1'700'000'000'001)));
  ASSERT_TRUE(c.close_segment(b, 0, 50, 1'700'000'000'500));
  ASSERT_TRUE(c.finish_recording(a, 1'700'000'002'000, "phone", {}));
  const Status failed = c.commit_batch();
  EXPECT_FALSE(failed);
  EXPECT_EQ(failed.code(), ENOSPC) << failed.message();
  EXPECT_TRUE(c.degraded());
  EXPECT_TRUE(c.full());
  // Writes go on while degraded: queued behind the failed batch, with ids never reused.
  RecordingStats st;
  st.received = 50;
  ASSERT_TRUE(c.finish_recording(b, 1'700'000'001'000, "phone", st));
  const std::int64_t d = insert(c, row("D", "dev", "1", "2", 1'700'000'000'003));
  EXPECT_EQ(b, a + 1);
  EXPECT_EQ(d, b + 1);
  EXPECT_TRUE(c.commit_batch()) << "a retry is not due yet: no error every loop iteration";
  EXPECT_EQ(c.stats().commit_failures, 1u);
  EXPECT_EQ(c.stats().pending_writes, 6u);

  Catalog reader;
  ASSERT_TRUE(reader.open_read_only(db_));
  RecordingRow got;
  ASSERT_TRUE(reader.get(a, got));
  EXPECT_EQ(got.state, "recording") << "nothing of the failed batch reached the database";
  EXPECT_EQ(reader.get(b, got).code(), ENOENT);

  // Still full: the forced retry fails and keeps everything.
  EXPECT_FALSE(c.retry_pending());
  EXPECT_EQ(c.stats().pending_writes, 6u);
  // Space returns: everything is committed, in order.
  ASSERT_TRUE(c.set_max_pages(0));
  const Status ok = c.retry_pending();
  ASSERT_TRUE(ok) << ok.message();
  EXPECT_FALSE(c.degraded());
  EXPECT_EQ(c.stats().pending_writes, 0u);
  EXPECT_EQ(c.stats().replays, 1u);
  EXPECT_EQ(c.stats().replayed_writes, 6u);
  ASSERT_TRUE(reader.get(a, got));
  EXPECT_EQ(got.state, "stopped");
  ASSERT_TRUE(reader.get(b, got));
  EXPECT_EQ(got.state, "stopped");
  EXPECT_EQ(got.call_id, "B");
  EXPECT_EQ(got.stats.received, 50u);
  EXPECT_EQ(got.extra.at("blob").size(), 64u * 1024u);
  ASSERT_EQ(got.segments.size(), 1u);
  EXPECT_EQ(got.segments[0].packets, 50u);
  ASSERT_TRUE(reader.get(d, got));
  EXPECT_EQ(got.call_id, "D");
  // Back to normal group commit.
  const std::int64_t e = insert(c, row("E", "dev", "1", "2", 1'700'000'000'004));
  EXPECT_EQ(e, d + 1);
  ASSERT_TRUE(c.commit_batch());
  ASSERT_TRUE(reader.get(e, got));

  // A reopened catalog continues after the highest id.
  c.close();
  Catalog again;
  ASSERT_TRUE(again.open(db_));
  EXPECT_EQ(insert(again, row("F", "dev", "1", "2", 1'700'000'000'005)), e + 1);
}

TEST_F(CatalogTest, ReplayDropsOnlyWritesThatCannotApplyAndCloseRetries) {
  Catalog c;
  c.set_reserve_bytes(0);
  ASSERT_TRUE(c.open(db_));
  c.set_group_commit(true);
  const std::int64_t a = insert(c, row("A", "dev", "1", "2", 1'700'000'000'000));
  ASSERT_TRUE(c.commit_batch());
  ASSERT_TRUE(c.set_max_pages(1));
  RecordingRow big = row("B", "dev", "1", "2", 1'700'000'000'001);
  big.extra["blob"] = std::string(64 * 1024, 'b');
  const std::int64_t b = insert(c, big);
  EXPECT_FALSE(c.commit_batch());
  ASSERT_TRUE(c.degraded());
  // Queued while degraded, cannot apply at replay (no such recording): dropped alone.
  ASSERT_TRUE(c.finish_recording(4242, 1, "phone", {}));
  ASSERT_TRUE(c.finish_recording(a, 1'700'000'002'000, "phone", {}));
  ASSERT_TRUE(c.set_max_pages(0));
  c.close();  // retries what is kept
  Catalog reader;
  ASSERT_TRUE(reader.open_read_only(db_));
  RecordingRow got;
  ASSERT_TRUE(reader.get(a, got));
  EXPECT_EQ(got.state, "stopped");
  ASSERT_TRUE(reader.get(b, got));
  EXPECT_EQ(got.call_id, "B");
}

// The catalog on a really full volume (root: a small tmpfs): the reserve file next to it is
// given up so the final states commit, and re-created once space returns.
TEST_F(CatalogTest, ReserveFileLetsTheCatalogCommitOnAFullVolume) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a small tmpfs";
  const fs::path vol = dir_ / "vol";
  fs::create_directories(vol);
  if (::mount("tmpfs", vol.c_str(), "tmpfs", 0, "size=2m") != 0)
    GTEST_SKIP() << "tmpfs mount failed: " << std::strerror(errno);
  struct Unmount {
    fs::path p;
    ~Unmount() { ::umount2(p.c_str(), MNT_DETACH); }
  } unmount{vol};
  const fs::path db = vol / "catalog.db";
  Catalog c;
  c.set_reserve_bytes(256 * 1024);
  ASSERT_TRUE(c.open(db));
  EXPECT_TRUE(c.stats().ballast_present);
  EXPECT_EQ(fs::file_size(c.ballast_path()), 256u * 1024u);
  c.set_group_commit(true);
  std::vector<std::int64_t> open_ids;
  for (int i = 0; i < 20; ++i) open_ids.push_back(insert(c, row("R" + std::to_string(i), "dev", "1", "2", 1'700'000'000'000 + i)));
  ASSERT_TRUE(c.commit_batch());
  // Fill the volume to the last byte.
  const fs::path filler = vol / "filler";
  {
    const int fd = ::open(filler.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    const std::string chunk(4096, 'f');
    while (::write(fd, chunk.data(), chunk.size()) > 0) {
    }
    ::close(fd);
  }
  // The final states of every recording (with a lot of metadata) still commit.
  for (const auto id : open_ids) {
    ASSERT_TRUE(c.update_metadata(id, {{"note", std::string(2000, 'n')}}));
    ASSERT_TRUE(c.finish_recording(id, 1'700'000'010'000, "no_space", {}));
  }
  // The commit fails (the volume is full) and everything is kept; the caller gives the reserve
  // to the catalog (callrecd: once no recording runs) and the kept writes commit.
  EXPECT_FALSE(c.commit_batch());
  EXPECT_TRUE(c.full());
  EXPECT_TRUE(c.stats().ballast_present);
  const Status st = c.retry_pending();
  EXPECT_TRUE(st) << st.message();
  EXPECT_FALSE(c.degraded());
  EXPECT_EQ(c.stats().ballast_releases, 1u);
  EXPECT_FALSE(c.stats().ballast_present);
  {
    Catalog reader;
    ASSERT_TRUE(reader.open_read_only(db));
    for (const auto id : open_ids) {
      RecordingRow got;
      ASSERT_TRUE(reader.get(id, got));
      EXPECT_EQ(got.state, "stopped") << id;
    }
  }
  // Space returns: the reserve is re-created.
  fs::remove(filler);
  ASSERT_TRUE(c.maintain());
  EXPECT_TRUE(c.stats().ballast_present);
  EXPECT_EQ(fs::file_size(c.ballast_path()), 256u * 1024u);
}

}  // namespace
}  // namespace callrec::fileio
