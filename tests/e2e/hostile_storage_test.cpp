// End to end, the real callrecd over loopback: what is recorded must stay true when the storage,
// the catalog or a phone works against it (issue 9, items 7, 8, 11, 12, 13). Tests that need root
// (tmpfs mounts) skip with a reason when not root.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <thread>

#include "e2e/harness.hpp"
#include "fileio/catalog.hpp"
#include "fileio/record_reader.hpp"

#include <sqlite3.h>

namespace callrec::e2e {
namespace {

void send_all(Phone& phone, std::uint16_t port, const std::vector<std::vector<std::byte>>& pkts) {
  for (std::size_t i = 0; i < pkts.size(); ++i) {
    phone.send_rtp(port, pkts[i]);
    if (i % 50 == 49) std::this_thread::sleep_for(2ms);  // stay under the socket buffer
  }
}

std::vector<fileio::RecordingRow> all_rows(const fs::path& db) {
  fileio::Catalog c;
  std::vector<fileio::RecordingRow> rows;
  if (!c.open_read_only(db)) return rows;
  fileio::CatalogFilter f;
  f.limit = 0;
  (void)c.list(f, rows);
  return rows;
}

std::string file_bytes(const fs::path& p) {
  std::string out;
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  char buf[65536];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  return out;
}

long long metric(const DaemonProcess& d, const std::string& name) {
  return metric_value(http(d.metrics_port(), "GET", "/metrics"), name);
}

/// A small tmpfs mounted for the test (root only), unmounted at the end.
class SmallVolume {
 public:
  SmallVolume(const fs::path& at, const std::string& size) : path_(at) {
    fs::create_directories(at);
    if (::mount("tmpfs", at.c_str(), "tmpfs", 0, ("size=" + size).c_str()) == 0) mounted_ = true;
    else error_ = std::strerror(errno);
  }
  ~SmallVolume() {
    if (mounted_) ::umount2(path_.c_str(), MNT_DETACH);
  }
  SmallVolume(const SmallVolume&) = delete;
  SmallVolume& operator=(const SmallVolume&) = delete;
  [[nodiscard]] bool mounted() const { return mounted_; }
  [[nodiscard]] const std::string& error() const { return error_; }
  [[nodiscard]] std::uint64_t free_bytes() const {
    struct statvfs st {};
    if (::statvfs(path_.c_str(), &st) != 0) return 0;
    return static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
  }

 private:
  fs::path path_;
  bool mounted_ = false;
  std::string error_;
};

class HostileStorage : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(bin("callrecd"))) GTEST_SKIP() << "callrecd not built";
  }
  std::unique_ptr<DaemonProcess> start_daemon(std::vector<std::string> extra = {}) {
    auto d = std::make_unique<DaemonProcess>(dir_.path(), std::move(extra));
    EXPECT_TRUE(d->ready()) << d->log();
    return d;
  }
  TempDir dir_;
};

// Item 8: a RecordStopRequest naming server-owned fields must not rewrite them, and the phone's
// reason=no_space is its metadata, not a server-side no-space stop.
TEST_F(HostileStorage, StopRequestCannotRewriteServerOwnedFieldsOrFakeANoSpaceStop) {
  auto d = start_daemon();
  ASSERT_TRUE(d->ready());
  Phone phone(d->control_port());
  auto st = phone.start("H1");
  ASSERT_TRUE(st && st->success) << (st ? st->reason : "no answer");
  send_all(phone, st->port, make_rtp(20, fileio::Codec::kPcma));
  ASSERT_TRUE(wait_until([&] { return metric(*d, "callrec_rx_packets_total") >= 20; }));
  const auto before = catalog_row(d->catalog(), "H1");
  ASSERT_EQ(before.state, "recording");
  auto sp = phone.stop("H1", "&device=../../etc/passwd&codec=GSM&peer=6.6.6.6:666&dir=x&reason=no_space&x-note=ok");
  ASSERT_TRUE(sp && sp->success);
  ASSERT_TRUE(d->wait_log("recording stop:")) << d->log();

  const auto row = catalog_row(d->catalog(), "H1");
  EXPECT_EQ(row.state, "stopped");
  EXPECT_EQ(row.device, before.device);
  EXPECT_EQ(row.device, "00:11:22:33:44:55");
  EXPECT_EQ(row.codec, "PCMA");
  EXPECT_EQ(row.peer, before.peer);
  EXPECT_EQ(row.direction, "out");
  EXPECT_EQ(row.stop_reason, "phone") << "the catalog's stop reason is the peer's stop";
  EXPECT_EQ(row.extra.count("device"), 0u) << "server-owned keys are not stored as extras either";
  EXPECT_EQ(row.extra.count("codec"), 0u);
  EXPECT_EQ(row.extra.count("peer"), 0u);
  EXPECT_EQ(row.extra.count("dir"), 0u);
  EXPECT_EQ(row.extra.count("phone_reason") ? row.extra.at("phone_reason") : "", "no_space");
  EXPECT_EQ(row.extra.count("x-note") ? row.extra.at("x-note") : "", "ok") << "other extras are kept";
  const std::string m = http(d->metrics_port(), "GET", "/metrics");
  EXPECT_EQ(metric_value(m, "callrec_recordings_stopped_total{reason=\"no_space\"}"), 0) << m;
  EXPECT_EQ(metric_value(m, "callrec_recordings_stopped_total{reason=\"phone\"}"), 1) << m;
  EXPECT_EQ(metric_value(m, "callrec_stop_overrides_ignored_total"), 4) << m;
  EXPECT_TRUE(d->wait_log("server-owned field(s) device,codec,peer,dir: ignored")) << d->log();
  // Nothing was written outside the storage, the file is where the device's files go.
  ASSERT_EQ(row.segments.size(), 1u);
  EXPECT_EQ(fs::path(row.segments[0].path).parent_path().parent_path(), d->storage());
}

// Item 11: a second daemon on the same storage and catalog would mark the first's live recording
// recovered and repair its open file under it. It must refuse, naming the first, and touch nothing.
TEST_F(HostileStorage, SecondDaemonOnTheSameStorageAndCatalogRefusesAndTouchesNothing) {
  auto d = start_daemon({"--flush-ms", "50"});
  ASSERT_TRUE(d->ready());
  Phone phone(d->control_port());
  auto st = phone.start("L1");
  ASSERT_TRUE(st && st->success);
  send_all(phone, st->port, make_rtp(100, fileio::Codec::kPcma));
  ASSERT_TRUE(wait_until([&] {
    const auto f = record_files(d->storage());
    return !f.empty() && fs::file_size(f[0]) == 76 + 100 * 172;
  })) << d->log();
  const fs::path file = record_files(d->storage())[0];
  const auto bytes_before = [&] { return file_bytes(file); };
  const std::string before = bytes_before();

  DaemonProcess second(dir_.path(), {});
  EXPECT_FALSE(second.ready()) << second.log();
  const int rc = second.wait_exit(10s);
  EXPECT_NE(rc, 0) << second.log();
  EXPECT_NE(rc, -1) << "the second daemon did not exit\n" << second.log();
  EXPECT_NE(second.log().find("another callrecd (pid " + std::to_string(d->pid()) + ")"), std::string::npos)
      << second.log();
  EXPECT_EQ(second.log().find("recovered"), std::string::npos) << second.log();

  EXPECT_EQ(catalog_row(d->catalog(), "L1").state, "recording") << "the live recording was left alone";
  EXPECT_EQ(bytes_before(), before) << "the open file was not repaired under the first daemon";
  // The first daemon carries on: more packets, a normal stop.
  send_all(phone, st->port, make_rtp(10, fileio::Codec::kPcma, 1100, 5000 + 100 * 160));
  ASSERT_TRUE(wait_until([&] { return metric(*d, "callrec_rx_packets_total") >= 110; }));
  ASSERT_TRUE(phone.stop("L1")->success);
  ASSERT_TRUE(d->wait_log("recording stop:")) << d->log();
  const auto row = catalog_row(d->catalog(), "L1");
  EXPECT_EQ(row.state, "stopped");
  EXPECT_EQ(row.stats.received, 110u);
  // Once the first is gone (even by SIGKILL) the lock is free again.
  d->signal(SIGKILL);
  d->wait_exit();
  DaemonProcess third(dir_.path(), {});
  EXPECT_TRUE(third.ready()) << third.log();
}

/// A start from another device (Phone::start always names 00:11:22:33:44:55).
std::optional<control::StartResponse> start_device(Phone& phone, const std::string& id, const std::string& device) {
  phone.send_raw("cmd=RecordStartRequest&id=" + id + "&device=" + device +
                 "&remote_number=100&local_number=200&dir=in&codec=PCMA\r\n");
  auto m = phone.recv();
  if (!m) return std::nullopt;
  auto r = control::parse_start_response(*m);
  if (!r) return std::nullopt;
  return *r;
}

std::vector<std::string> subdirs(const fs::path& p) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(p, ec))
    if (e.is_directory()) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Item 13: a refused start left an empty device directory behind, and devices a:b and a_b
// shared one directory.
TEST_F(HostileStorage, RefusedStartsLeaveNoDirectoryAndSimilarDevicesNeverShareOne) {
  std::random_device rd;
  const RtpRangeLock ports(1);  // 4 of this test's own ports
  const auto lo = static_cast<std::uint16_t>(ports.lo() + (rd() % 100) * 4);
  DaemonProcess d(dir_.path(), {}, lo, static_cast<std::uint16_t>(lo + 3));  // 2 even ports
  ASSERT_TRUE(d.ready()) << d.log();
  Phone phone(d.control_port());
  auto a = start_device(phone, "A", "a%3Ab");  // a:b
  auto b = start_device(phone, "B", "a_b");
  ASSERT_TRUE(a && a->success && b && b->success);
  for (int i = 0; i < 5; ++i) {
    auto r = start_device(phone, "R" + std::to_string(i), "refused-" + std::to_string(i));
    ASSERT_TRUE(r.has_value());
    EXPECT_FALSE(r->success);
    EXPECT_EQ(r->reason, "no_port");
  }
  send_all(phone, a->port, make_rtp(10, fileio::Codec::kPcma, 1, 0, 0xA));
  send_all(phone, b->port, make_rtp(10, fileio::Codec::kPcma, 1, 0, 0xB));
  ASSERT_TRUE(wait_until([&] { return metric(d, "callrec_rx_packets_total") >= 20; }));
  ASSERT_TRUE(phone.stop("A")->success);
  ASSERT_TRUE(phone.stop("B")->success);
  ASSERT_TRUE(wait_until([&] { return d.count_log("recording stop:") == 2; })) << d.log();
  EXPECT_EQ(subdirs(d.storage()), (std::vector<std::string>{"a%5Fb", "a_b"}))
      << "one directory per device, none for the refused starts";
  const auto ra = catalog_row(d.catalog(), "A");
  const auto rb = catalog_row(d.catalog(), "B");
  ASSERT_EQ(ra.segments.size(), 1u);
  ASSERT_EQ(rb.segments.size(), 1u);
  EXPECT_NE(fs::path(ra.segments[0].path).parent_path(), fs::path(rb.segments[0].path).parent_path());
}

// Item 12: the storage directory removed while recording. The recording must not look like a
// normal stop, and new starts must work (not a misleading no_space).
TEST_F(HostileStorage, StorageRemovedMidCallIsReportedAndNewRecordingsWork) {
  auto d = start_daemon({"--flush-ms", "50"});
  ASSERT_TRUE(d->ready());
  Phone phone(d->control_port());
  auto st = phone.start("G1");
  ASSERT_TRUE(st && st->success);
  send_all(phone, st->port, make_rtp(50, fileio::Codec::kPcma));
  ASSERT_TRUE(wait_until([&] { return !record_files(d->storage()).empty(); })) << d->log();
  fs::remove_all(d->storage());
  send_all(phone, st->port, make_rtp(50, fileio::Codec::kPcma, 1050, 5000 + 50 * 160));
  auto m = phone.recv(5s);
  ASSERT_TRUE(m.has_value()) << d->log();
  EXPECT_EQ(m->cmd, "RecordStopRequest");
  EXPECT_EQ(m->get("reason").value_or(""), "storage_lost");
  phone.send_raw("cmd=RecordStopResponse&id=G1&result=success\r\n");
  ASSERT_TRUE(d->wait_log("reason=storage_lost")) << d->log();
  EXPECT_TRUE(d->wait_log("was removed while recording")) << d->log();
  EXPECT_EQ(catalog_row(d->catalog(), "G1").stop_reason, "storage_lost");
  EXPECT_GE(metric(*d, "callrec_storage_lost_total"), 1);
  EXPECT_EQ(metric(*d, "callrec_recordings_stopped_total{reason=\"storage_lost\"}"), 1);
  EXPECT_TRUE(fs::is_directory(d->storage())) << "the storage directory is re-created";
  // A new recording works and is written.
  auto again = phone.start("G2");
  ASSERT_TRUE(again.has_value());
  ASSERT_TRUE(again->success) << again->reason;
  const auto pkts = make_rtp(30, fileio::Codec::kPcma, 7, 0, 0x77);
  send_all(phone, again->port, pkts);
  ASSERT_TRUE(wait_until([&] { return metric(*d, "callrec_writer_packets_total") >= 130; })) << d->log();
  ASSERT_TRUE(phone.stop("G2")->success);
  ASSERT_TRUE(wait_until([&] { return d->count_log("recording stop:") == 2; })) << d->log();
  const auto row = catalog_row(d->catalog(), "G2");
  EXPECT_EQ(row.stop_reason, "phone");
  ASSERT_EQ(row.segments.size(), 1u);
  EXPECT_EQ(read_packets(row.segments[0].path), pkts);
}

// Item 13: the daemon itself stopped (SIGSTOP, a VM pause) for longer than --rtp-timeout ended
// live calls as rtp_timeout although their phones never stopped sending.
TEST_F(HostileStorage, DaemonPausedLongerThanTheRtpTimeoutDoesNotEndLiveCalls) {
  // 3 s: the writers report each stream's last packet once a second, so 1 s could expire a live
  // call without any stall (and 2 s leaves a loaded machine only a second of slack).
  auto d = start_daemon({"--rtp-timeout", "3"});
  ASSERT_TRUE(d->ready());
  Phone phone(d->control_port());
  auto st = phone.start("P1");
  ASSERT_TRUE(st && st->success);
  const auto pkts = make_rtp(400, fileio::Codec::kPcma);
  std::size_t sent = 0;
  auto pace = [&](std::chrono::milliseconds for_how_long) {  // 20 ms pacing, like a phone
    const auto end = std::chrono::steady_clock::now() + for_how_long;
    while (std::chrono::steady_clock::now() < end && sent < pkts.size()) {
      phone.send_rtp(st->port, pkts[sent++]);
      std::this_thread::sleep_for(20ms);
    }
  };
  pace(500ms);
  d->signal(SIGSTOP);
  pace(4500ms);  // the phone keeps talking while the daemon is stopped (longer than the timeout)
  d->signal(SIGCONT);
  pace(2500ms);
  auto m = phone.recv(200ms);
  EXPECT_FALSE(m.has_value()) << "the daemon stopped a live call: " << (m ? m->get("reason").value_or("") : "");
  auto sp = phone.stop("P1");
  ASSERT_TRUE(sp.has_value());
  ASSERT_TRUE(d->wait_log("recording stop:")) << d->log();
  const auto row = catalog_row(d->catalog(), "P1");
  EXPECT_EQ(row.stop_reason, "phone") << d->log();
  EXPECT_GE(metric(*d, "callrec_control_stalls_total"), 1) << d->log();
  EXPECT_EQ(metric(*d, "callrec_recordings_stopped_total{reason=\"rtp_timeout\"}"), 0);
}

/// n PCMA packets with 1400-byte payloads (175 ms each): fills a volume with few packets.
std::vector<std::vector<std::byte>> make_big_rtp(std::size_t n, std::uint32_t ssrc) {
  std::vector<std::vector<std::byte>> out;
  for (std::size_t k = 0; k < n; ++k) {
    std::vector<std::byte> p(12 + 1400, std::byte{0xD5});
    fileio::write_rtp_header(p.data(), 8, k == 0, static_cast<std::uint16_t>(100 + k),
                             static_cast<std::uint32_t>(1400 * k), ssrc);
    for (std::size_t i = 12; i < p.size(); i += 7) p[i] = static_cast<std::byte>(k + i);
    out.push_back(std::move(p));
  }
  return out;
}

/// Phones on one daemon that stream big packets (~0.5 MB/s each) until the server stops them.
struct Filler {
  std::vector<std::unique_ptr<Phone>> phones;
  std::vector<std::uint16_t> ports;
  std::vector<std::string> stop_reasons;

  bool start(const DaemonProcess& d, int n) {
    for (int i = 0; i < n; ++i) {
      phones.push_back(std::make_unique<Phone>(d.control_port()));
      auto st = phones.back()->start("F" + std::to_string(i));
      if (!st || !st->success) return false;
      ports.push_back(st->port);
      stop_reasons.emplace_back();
    }
    return true;
  }
  /// Streams until every phone got its RecordStopRequest (or max_packets each were sent).
  void run(std::size_t max_packets) {
    std::vector<std::vector<std::vector<std::byte>>> pkts;
    for (std::size_t i = 0; i < phones.size(); ++i) pkts.push_back(make_big_rtp(max_packets, 0x1000 + i));
    for (std::size_t k = 0; k < max_packets; ++k) {
      bool any = false;
      for (std::size_t i = 0; i < phones.size(); ++i) {
        if (!stop_reasons[i].empty()) continue;
        any = true;
        phones[i]->send_rtp(ports[i], pkts[i][k]);
        if (k % 16 == 15) {
          if (auto m = phones[i]->recv(0ms); m && m->cmd == "RecordStopRequest") {
            stop_reasons[i] = m->get("reason").value_or("?");
            phones[i]->send_raw("cmd=RecordStopResponse&id=F" + std::to_string(i) + "&result=success\r\n");
          }
        }
      }
      if (!any) break;
      std::this_thread::sleep_for(2800us);  // ~350 packets/s per phone
    }
    for (std::size_t i = 0; i < phones.size(); ++i) {
      if (!stop_reasons[i].empty()) continue;
      if (auto m = phones[i]->recv(3s); m && m->cmd == "RecordStopRequest") stop_reasons[i] = m->get("reason").value_or("?");
    }
  }
};

// Item 7 (a): --reserve-mb enforced while recordings run. Storage and catalog on one small
// volume: the recordings end with no_space before the volume is full.
TEST_F(HostileStorage, ReserveIsEnforcedWhileRecordingNotOnlyAtStart) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a small tmpfs";
  // 8 MB: the catalog's own 4 MiB reserve file, then 2 MiB kept by --reserve-mb, ~2 MB to record.
  SmallVolume vol(dir_.path() / "vol", "8m");
  if (!vol.mounted()) GTEST_SKIP() << "tmpfs mount failed: " << vol.error();
  const fs::path mnt = dir_.path() / "vol";
  DaemonProcess d(dir_.path(), {"--storage", (mnt / "recordings").string(), "--catalog", (mnt / "catalog.db").string(),
                                "--reserve-mb", "2", "--flush-ms", "50"});
  ASSERT_TRUE(d.ready()) << d.log();
  Filler f;
  ASSERT_TRUE(f.start(d, 2)) << d.log();
  f.run(3000);
  const fs::path db = mnt / "catalog.db";
  for (const auto& r : f.stop_reasons) EXPECT_EQ(r, "no_space") << d.log();
  ASSERT_TRUE(wait_until([&] { return d.count_log("recording stop:") == 2; })) << d.log();
  // (1 MB/s of recording against a reserve checked every second: ~1 MiB of slack is expected
  // to remain; 256 KiB leaves room for a late tick on a loaded machine.)
  EXPECT_GT(vol.free_bytes(), 256u * 1024u) << "the recordings were stopped before the volume was full";
  EXPECT_EQ(d.log().find("write error"), std::string::npos) << "no recording ran into ENOSPC\n" << d.log();
  EXPECT_TRUE(d.wait_log("below the reserve")) << d.log();
  EXPECT_GE(metric(d, "callrec_reserve_stops_total"), 2);
  ASSERT_EQ(all_rows(db).size(), 2u);
  for (const auto& row : all_rows(db)) {
    EXPECT_EQ(row.state, "stopped") << row.call_id;
    EXPECT_EQ(row.stop_reason, "no_space") << row.call_id;
    ASSERT_FALSE(row.segments.empty());
    fileio::RecordInfo info;
    ASSERT_TRUE(fileio::inspect_record(row.segments[0].path, info));
    EXPECT_EQ(info.integrity, fileio::Integrity::kOk);
    EXPECT_GT(info.whole_packets, 100u);
  }
}

// Item 7 (b, c): a full volume holding storage AND catalog (--reserve-mb 0: nothing stops the
// recordings before the disk is full). The catalog's COMMIT failed with "database or disk is
// full" and rows stayed 'recording' forever, even after a clean shutdown.
TEST_F(HostileStorage, FullVolumeWithTheCatalogOnItLeavesNoRowRecording) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a small tmpfs";
  SmallVolume vol(dir_.path() / "vol", "6m");
  if (!vol.mounted()) GTEST_SKIP() << "tmpfs mount failed: " << vol.error();
  const fs::path mnt = dir_.path() / "vol";
  const std::vector<std::string> args = {"--storage", (mnt / "recordings").string(), "--catalog",
                                         (mnt / "catalog.db").string(), "--reserve-mb", "0", "--flush-ms", "50"};
  const fs::path db = mnt / "catalog.db";
  auto d = std::make_unique<DaemonProcess>(dir_.path(), args);
  ASSERT_TRUE(d->ready()) << d->log();
  Filler f;
  ASSERT_TRUE(f.start(*d, 2)) << d->log();
  f.run(6000);
  for (const auto& r : f.stop_reasons) EXPECT_EQ(r, "no_space") << d->log();
  ASSERT_TRUE(wait_until([&] { return d->count_log("recording stop:") == 2; })) << d->log();
  EXPECT_TRUE(d->wait_log("No space left on device")) << "the volume really was full\n" << d->log();
  // No row stays 'recording' once the recordings ended, while the volume is still full.
  ASSERT_TRUE(wait_until([&] {
    const auto rows = all_rows(db);
    return rows.size() == 2 && std::all_of(rows.begin(), rows.end(), [](const auto& r) { return r.state == "stopped"; });
  }, 5s)) << d->log() << [&] {
    std::string t;
    for (const auto& r : all_rows(db)) t += r.call_id + "=" + r.state + " ";
    fileio::Catalog c;
    const Status st = c.open_read_only(db);
    return t + " open_read_only: " + (st ? std::string("ok") : st.message()) + "\n" +
           http(d->metrics_port(), "GET", "/metrics");
  }();
  for (const auto& row : all_rows(db)) EXPECT_EQ(row.stop_reason, "no_space");
  const std::string m = http(d->metrics_port(), "GET", "/metrics");
  EXPECT_EQ(metric_value(m, "callrec_catalog_pending_writes"), 0) << m;
  // Space returns (the operator deletes something): the catalog's reserve comes back.
  EXPECT_GE(metric(*d, "callrec_catalog_reserve_releases_total"), 1) << "the final states needed the reserve";
  const auto files = record_files(mnt / "recordings");
  ASSERT_FALSE(files.empty());
  for (const auto& file : files) fs::remove(file);
  EXPECT_TRUE(wait_until([&] { return metric(*d, "callrec_catalog_reserve_present") == 1; }, 5s));
  // A new recording and a clean shutdown: every row has its final state after a restart.
  Phone p(d->control_port());
  auto st = p.start("N1");
  ASSERT_TRUE(st && st->success) << (st ? st->reason : "no answer") << d->log();
  send_all(p, st->port, make_rtp(20, fileio::Codec::kPcma));
  d->signal(SIGTERM);
  EXPECT_EQ(d->wait_exit(), 0) << d->log();
  d.reset();
  auto d2 = std::make_unique<DaemonProcess>(dir_.path(), args);
  ASSERT_TRUE(d2->ready()) << d2->log();
  EXPECT_EQ(d2->log().find("recovered"), std::string::npos) << "nothing was left open\n" << d2->log();
  const auto rows = all_rows(db);
  ASSERT_EQ(rows.size(), 3u);
  for (const auto& row : rows) EXPECT_EQ(row.state, "stopped") << row.call_id;
  EXPECT_EQ(catalog_row(db, "N1").stop_reason, "shutdown");
}

// Item 13: a SIGKILL between a record file's creation and the catalog commit that would have
// recorded it (the writer creates files on its own thread; the control thread commits the
// segment row with the next batch). Reproduced by deleting the segment row after the kill.
// Before: recovery repaired only the files the catalog knew, and this one stayed unlinked.
TEST_F(HostileStorage, FileCreatedAfterTheLastCommitIsLinkedByRecoveryAfterSigkill) {
  fs::path file;
  {
    auto d = start_daemon({"--flush-ms", "50"});
    Phone phone(d->control_port());
    auto st = phone.start("O1");
    ASSERT_TRUE(st && st->success);
    const auto pkts = make_rtp(60, fileio::Codec::kPcma);
    for (std::size_t i = 0; i < pkts.size(); ++i) {
      phone.send_rtp(st->port, pkts[i]);
      if (i % 20 == 19) std::this_thread::sleep_for(2ms);
    }
    ASSERT_TRUE(wait_until([&] {
      const auto f = record_files(d->storage());
      return !f.empty() && fs::file_size(f[0]) == 76 + 60 * 172;
    })) << d->log();
    file = record_files(d->storage())[0];
    d->signal(SIGKILL);
    ASSERT_EQ(d->wait_exit(), 128 + SIGKILL);
  }
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir_.path() / "catalog.db").c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "DELETE FROM segments", nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
  }
  // A stray file of the same device from before the recording started is not claimed.
  const fs::path older = file.parent_path() / "Record_20200101T000000.000Z_stray_0.rec";
  fs::copy_file(file, older);
  ASSERT_TRUE(catalog_row(dir_.path() / "catalog.db", "O1").segments.empty());
  auto d2 = start_daemon();
  ASSERT_TRUE(d2->wait_log("recovered 1 recording")) << d2->log();
  EXPECT_TRUE(d2->wait_log("created after the last catalog commit")) << d2->log();
  const auto row = catalog_row(d2->catalog(), "O1");
  EXPECT_EQ(row.state, "recovered");
  ASSERT_EQ(row.segments.size(), 1u);
  EXPECT_EQ(fs::path(row.segments[0].path).filename(), file.filename());
  EXPECT_EQ(row.segments[0].packets, 60u);
  EXPECT_EQ(row.segments[0].codec, "PCMA");
  EXPECT_TRUE(d2->wait_log("left alone"));
}

}  // namespace
}  // namespace callrec::e2e

