// End to end, the real callrecd over loopback: what is recorded must stay true when the storage,
// the catalog or a phone works against it (issue 9, items 7, 8, 11, 12, 13). Tests that need root
// (tmpfs mounts) skip with a reason when not root.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/statvfs.h>

#include <fstream>
#include <map>
#include <thread>

#include "e2e/harness.hpp"
#include "fileio/catalog.hpp"
#include "fileio/record_reader.hpp"

namespace callrec::e2e {
namespace {

void send_all(Phone& phone, std::uint16_t port, const std::vector<std::vector<std::byte>>& pkts) {
  for (std::size_t i = 0; i < pkts.size(); ++i) {
    phone.send_rtp(port, pkts[i]);
    if (i % 50 == 49) std::this_thread::sleep_for(2ms);  // stay under the socket buffer
  }
}

[[maybe_unused]] std::vector<fileio::RecordingRow> all_rows(const fs::path& db) {
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

}  // namespace
}  // namespace callrec::e2e
