// libFuzzer target for the record file parser: decode_header on the raw bytes, then
// inspect_record, RecordReader and repair_record (on a copy) over the input written to a file.
// Besides "no crash, no sanitizer report", it checks invariants and aborts when one breaks:
// - a plausible header re-encodes to the same 76 bytes;
// - inspect never fails on a regular file, and its counts add up;
// - the reader opens exactly the non-broken files and returns packet_count() packets of rtpLen;
// - repair refuses broken files without touching them, makes other files kOk, is idempotent.
//
// Build/run: tools/dev.sh fuzz step, or
//   CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCALLREC_FUZZ=ON -DCALLREC_BENCH=OFF \
//     -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined"
//   cmake --build build-fuzz --target record_reader_fuzz
//   build-fuzz/tests/record_reader_fuzz -max_total_time=20 tests/fuzz/corpus/record_reader_fuzz
#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "fileio/record_format.hpp"
#include "fileio/record_reader.hpp"

namespace {

namespace fs = std::filesystem;
using callrec::Status;
using namespace callrec::fileio;

[[noreturn]] void fail(const char* what, const std::string& detail = {}) {
  std::fprintf(stderr, "record_reader_fuzz: invariant broken: %s %s\n", what, detail.c_str());
  std::abort();
}

void check(bool ok, const char* what, const std::string& detail = {}) {
  if (!ok) fail(what, detail);
}

struct Scratch {
  fs::path dir;
  fs::path input;
  fs::path copy;
};

void remove_scratch();

/// One scratch directory per process (tmpfs when available: repair fsyncs on every input).
const Scratch& scratch() {
  static const Scratch s = [] {
    Scratch r;
    std::string base = "/tmp";
    if (const char* t = std::getenv("TMPDIR"); t != nullptr && *t != '\0') {
      base = t;
    } else if (::access("/dev/shm", W_OK) == 0) {
      base = "/dev/shm";
    }
    std::string tmpl = base + "/record_reader_fuzz_XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) fail("mkdtemp", tmpl + ": " + std::strerror(errno));
    r.dir = tmpl;
    r.input = r.dir / "input.rec";
    r.copy = r.dir / "copy.rec";
    return r;
  }();
  static const bool registered = [] { return std::atexit(remove_scratch) == 0; }();
  (void)registered;
  return s;
}

void remove_scratch() {
  std::error_code ec;
  fs::remove_all(scratch().dir, ec);
}

void write_file(const fs::path& p, const std::uint8_t* data, std::size_t size) {
  const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) fail("open for write", p.string() + ": " + std::strerror(errno));
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("write", p.string() + ": " + std::strerror(errno));
    done += static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0) fail("close", p.string());
}

std::vector<std::uint8_t> read_file(const fs::path& p) {
  std::vector<std::uint8_t> out;
  FILE* f = std::fopen(p.c_str(), "rb");
  if (f == nullptr) fail("fopen", p.string());
  std::uint8_t buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.insert(out.end(), buf, buf + n);
  std::fclose(f);
  return out;
}

void fuzz_header(const std::uint8_t* data, std::size_t size) {
  if (size < kHeaderSize) return;
  std::array<std::byte, kHeaderSize> raw{};
  std::memcpy(raw.data(), data, kHeaderSize);
  const HeaderDecode d = decode_header(raw);
  check(d.plausible == d.problems.empty(), "plausible <=> no problems");
  if (d.plausible) {
    check(encode_header(d.header, d.order) == raw, "plausible header re-encodes byte-exactly");
    check(d.header.rtp_len >= 13 && d.header.rtp_len <= kMaxRtpLen, "plausible rtpLen in range");
    check(d.header.increment >= 1 && d.header.increment <= 1000000, "plausible increment in range");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz_header(data, size);

  const Scratch& s = scratch();
  write_file(s.input, data, size);

  // inspect_record
  RecordInfo info;
  Status st = inspect_record(s.input, info);
  check(st.is_ok(), "inspect of a regular file succeeds", st.message());
  check(info.file_size == size, "file_size");
  if (info.integrity == Integrity::kBroken) {
    check(!info.problems.empty(), "broken file lists problems");
  } else {
    const auto rtp = static_cast<std::uint64_t>(info.decoded.header.rtp_len);
    check(info.decoded.plausible, "non-broken => plausible header");
    check(info.bytes_on_disk == size - kHeaderSize, "bytes_on_disk");
    check(info.whole_packets * rtp + info.trailing_bytes == info.bytes_on_disk, "whole + trailing = on disk");
    check(info.trailing_bytes < rtp, "trailing < rtpLen");
    check((info.integrity == Integrity::kOk) ==
              (info.decoded.header.data_size == info.bytes_on_disk && info.trailing_bytes == 0),
          "kOk <=> dataSize matches whole packets on disk");
    check(info.duration_s >= 0 && info.period_s >= 0, "non-negative times");
  }

  // RecordReader
  {
    RecordReader r;
    st = r.open(s.input);
    check(st.is_ok() == (info.integrity != Integrity::kBroken), "reader opens exactly non-broken files",
          st.message());
    if (st.is_ok()) {
      check(r.packet_count() <= info.whole_packets, "reader never promises more than is on disk");
      std::uint64_t n = 0;
      Status err;
      while (auto pkt = r.next(&err)) {
        check(pkt->size() == static_cast<std::size_t>(info.decoded.header.rtp_len), "packet size == rtpLen");
        ++n;
      }
      check(err.is_ok(), "no read error", err.message());
      check(n == r.packet_count(), "reader returns packet_count() packets");
    }
  }

  // repair_record on a copy
  write_file(s.copy, data, size);
  RepairResult rr;
  st = repair_record(s.copy, rr);
  if (info.integrity == Integrity::kBroken) {
    check(!st.is_ok(), "repair refuses a broken file");
    check(!rr.changed, "refused repair changes nothing");
    const auto after = read_file(s.copy);
    check(after.size() == size && (size == 0 || std::memcmp(after.data(), data, size) == 0),
          "refused repair leaves the bytes alone");
  } else {
    check(st.is_ok(), "repair of a repairable file succeeds", st.message());
    check(rr.changed == (info.integrity == Integrity::kRepairable), "changed <=> was repairable");
    RecordInfo fixed;
    st = inspect_record(s.copy, fixed);
    check(st.is_ok(), "inspect after repair", st.message());
    check(fixed.integrity == Integrity::kOk, "repaired file is kOk");  // inputs are far below 4 GiB
    check(fixed.whole_packets == info.whole_packets, "repair keeps every whole packet");
    RepairResult again;
    st = repair_record(s.copy, again);
    check(st.is_ok() && !again.changed, "repair is idempotent", st.message());
  }
  return 0;
}
