// libFuzzer target for the RTP path (issue 9): a sequence of datagrams with arrival times ->
// StreamAssembler -> RecordWriter writing record files into a scratch directory -> the files
// read back with RecordReader. Besides "no crash, no sanitizer report", it checks invariants and
// aborts when one breaks:
// - every emitted packet has its segment's length and payload type (no segment is corrupted);
// - filled <= lost; every received packet is accounted for exactly once after the flush;
// - the silence written is bounded by the elapsed arrival time (+ 1.5 ptime of tolerance):
//   gap fill is no amplifier, whatever the sender does;
// - segments begun never exceed 1 + the segment cap's allowance over the elapsed time;
// - every file the writer made reads back valid (kOk), and the files, in order, hold exactly
//   the packets the assembler emitted.
//
// Input: byte 0 and 1 choose the options (reorder window, max gap fill, format_confirm, segment
// cap, file rotation); then records. A record starts with one byte: bits 0-5 the arrival delta
// (ms; bit 6 multiplies it by 16), bit 7 the kind: 1 = a synthesized RTP packet (4 more bytes:
// payload type selector, signed sequence step, payload length, flags: new SSRC, padding, marker,
// bogus padding), 0 = a raw datagram (1 length byte, then that many bytes).
//
// Build/run: tools/dev.sh fuzz step, or
//   CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCALLREC_FUZZ=ON -DCALLREC_BENCH=OFF \
//     -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined"
//   cmake --build build-fuzz --target rtp_path_fuzz
//   build-fuzz/tests/rtp_path_fuzz -max_total_time=60 tests/fuzz/corpus/rtp_path_fuzz
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "fileio/record_format.hpp"
#include "fileio/record_reader.hpp"
#include "fileio/record_writer.hpp"
#include "fileio/rtp.hpp"
#include "fileio/stream_assembler.hpp"

namespace {

namespace fs = std::filesystem;
using callrec::Status;
using namespace callrec::fileio;

[[noreturn]] void fail(const char* what, const std::string& detail = {}) {
  std::fprintf(stderr, "rtp_path_fuzz: invariant broken: %s %s\n", what, detail.c_str());
  std::abort();
}

void check(bool ok, const char* what, const std::string& detail = {}) {
  if (!ok) fail(what, detail);
}

void remove_scratch();

/// One scratch directory per process (tmpfs when available).
const fs::path& scratch() {
  static const fs::path dir = [] {
    std::string base = "/tmp";
    if (const char* t = std::getenv("TMPDIR"); t != nullptr && *t != '\0') {
      base = t;
    } else if (::access("/dev/shm", W_OK) == 0) {
      base = "/dev/shm";
    }
    std::string tmpl = base + "/rtp_path_fuzz_XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) fail("mkdtemp", tmpl + ": " + std::strerror(errno));
    return fs::path(tmpl);
  }();
  static const bool registered = [] { return std::atexit(remove_scratch) == 0; }();
  (void)registered;
  return dir;
}

void remove_scratch() {
  std::error_code ec;
  fs::remove_all(scratch(), ec);
}

/// Checks the assembler's output and forwards it to a RecordWriter.
class CheckingSink final : public AssemblerSink {
 public:
  explicit CheckingSink(RecordWriter& w) : w_(w) {}
  void on_segment(const SegmentFormat& fmt) override {
    check(fmt.rtp_len > kRtpHeaderMin && fmt.rtp_len <= static_cast<std::uint32_t>(kMaxRtpLen), "segment rtp_len");
    check(fmt.increment >= 1 && fmt.increment < fmt.rtp_len, "segment increment");
    fmt_ = fmt;
    have_ = true;
    ++segments;
    max_ptime_ns = std::max<std::uint64_t>(max_ptime_ns, std::uint64_t{fmt.increment} * 125'000u);
    min_ptime_ns = std::min<std::uint64_t>(min_ptime_ns, std::uint64_t{fmt.increment} * 125'000u);
    Status st = w_.set_format(codec_info(fmt.codec).name, fmt.rtp_len, fmt.increment);
    check(st.is_ok(), "set_format", st.message());
  }
  void on_packet(std::span<const std::byte> pkt) override {
    check(have_, "a packet before any segment");
    check(pkt.size() == fmt_.rtp_len, "packet length == segment rtp_len");
    const auto v = parse_rtp(pkt);
    check(v.has_value(), "emitted packet parses as RTP");
    check(v->payload_type == codec_info(fmt_.codec).payload_type, "packet payload type == segment codec");
    emitted.emplace_back(pkt.begin(), pkt.end());
    Status st = w_.append(pkt);
    check(st.is_ok(), "append", st.message());
  }
  std::vector<std::vector<std::byte>> emitted;
  std::uint64_t segments = 0;
  std::uint64_t max_ptime_ns = 0;
  std::uint64_t min_ptime_ns = ~std::uint64_t{0};

 private:
  RecordWriter& w_;
  SegmentFormat fmt_{Codec::kPcmu, 0, 0};
  bool have_ = false;
};

struct Cursor {
  const std::uint8_t* p;
  std::size_t n;
  bool take(std::size_t k) { return n >= k; }
  std::uint8_t u8() {
    const std::uint8_t v = *p;
    ++p;
    --n;
    return v;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  Cursor in{data, size};
  const std::uint8_t o0 = in.u8();
  const std::uint8_t o1 = in.u8();
  AssemblerOptions ao;
  ao.reorder_window = static_cast<std::uint16_t>(1 + (o0 & 0x0F));         // 1..16
  ao.max_gap_fill = static_cast<std::uint32_t>((o0 >> 4) * 4);              // 0..60
  ao.resync_after = 100 + (o1 & 0x03) * 1000u;
  ao.format_confirm = 1 + ((o1 >> 2) & 0x03);                               // 1..4
  ao.segment_burst = 1 + ((o1 >> 4) & 0x03);                                // 1..4
  ao.segment_interval_ms = (o1 & 0x40) != 0 ? 0 : 2000;                     // 0: no cap
  const bool rotate = (o1 & 0x80) != 0;

  WriterOptions wo;
  wo.directory = scratch();
  wo.tag = "fuzz";
  wo.max_file_bytes = rotate ? 4096 : 0;
  wo.reserve_bytes = 0;
  wo.expected_file_bytes = 0;
  wo.free_space = [](const fs::path&, std::uint64_t& free_bytes) {
    free_bytes = 1ull << 40;
    return Status();
  };

  std::uint64_t first_rx = 0;
  std::uint64_t rx = 1'000'000'000ull;
  std::uint64_t pushed = 0;
  std::vector<std::pair<std::uint32_t, std::string>> files;  // expected per-file packet counts
  {
    RecordWriter writer(wo);
    CheckingSink sink(writer);
    StreamAssembler a(ao);
    std::uint16_t seq = 1000;
    std::uint32_t ssrc = 0x5EED;
    std::vector<std::byte> pkt;
    first_rx = rx;
    while (in.take(1)) {
      const std::uint8_t h = in.u8();
      std::uint64_t dt_ms = h & 0x3F;
      if ((h & 0x40) != 0) dt_ms *= 16;
      rx += dt_ms * 1'000'000ull;
      if ((h & 0x80) != 0) {
        if (!in.take(4)) break;
        static constexpr std::uint8_t kPts[4] = {0, 8, 13, 101};
        const std::uint8_t pt = kPts[in.u8() & 3];
        seq = static_cast<std::uint16_t>(seq + static_cast<std::int8_t>(in.u8()));
        std::size_t len = in.u8();
        if (len == 0) len = 160;
        const std::uint8_t flags = in.u8();
        if ((flags & 1) != 0) ssrc = ssrc * 2654435761u + 1;
        pkt.assign(12 + len, std::byte{0x2A});
        write_rtp_header(pkt.data(), pt, (flags & 4) != 0, seq, static_cast<std::uint32_t>(seq) * 160u, ssrc);
        if ((flags & 2) != 0) {
          pkt[0] |= std::byte{0x20};
          pkt.back() = static_cast<std::byte>((flags & 8) != 0 ? 255 : 1 + (flags >> 4));  // bogus or valid
        }
      } else {
        if (!in.take(1)) break;
        std::size_t len = in.u8();
        if (len > in.n) len = in.n;
        pkt.assign(reinterpret_cast<const std::byte*>(in.p), reinterpret_cast<const std::byte*>(in.p) + len);
        in.p += len;
        in.n -= len;
      }
      a.push(pkt, sink, rx);
      ++pushed;
    }
    a.flush(sink);

    const AssemblerCounters& c = a.counters();
    check(c.received == pushed, "received == pushed");
    check(c.filled <= c.lost, "filled <= lost");
    check(c.received == c.written + c.duplicate + c.late + c.invalid + c.other_payload + c.format_flaps +
                            c.segment_limited,
          "every received packet accounted for once after the flush");
    check(sink.emitted.size() == c.written + c.filled, "emitted == written + filled");
    check(sink.segments == c.segments, "segments counted == segments signalled");
    // Silence is bounded by elapsed arrival time: the credit identity gives silence time <=
    // elapsed + 1.5 ptime, plus at most 1.5 ptime per segment change (the debt floor moves with
    // the ptime). Each silence packet lasts at least the smallest ptime seen.
    const std::uint64_t elapsed = rx - first_rx;
    const std::uint64_t tolerance = (sink.max_ptime_ns * 3) / 2 * (1 + c.segments);
    check(c.filled * sink.min_ptime_ns <= elapsed + tolerance, "silence written <= elapsed arrival time",
          std::to_string(c.filled) + " silence packets of >= " + std::to_string(sink.min_ptime_ns) + " ns, " +
              std::to_string(elapsed) + " ns elapsed");
    if (ao.segment_interval_ms != 0) {
      const std::uint64_t allowed = 1 + ao.segment_burst + elapsed / (std::uint64_t{ao.segment_interval_ms} * 1'000'000u);
      check(c.segments <= allowed, "segments within the cap", std::to_string(c.segments));
    }

    Status st = writer.close();
    check(st.is_ok(), "writer close", st.message());
    for (const auto& seg : writer.segments()) files.emplace_back(static_cast<std::uint32_t>(seg.packets), seg.path.string());

    // Read everything back: valid files holding exactly the emitted packets, in order.
    std::size_t next = 0;
    for (const auto& [count, path] : files) {
      RecordReader r;
      st = r.open(path);
      check(st.is_ok(), "record file opens", st.message());
      check(r.info().integrity == Integrity::kOk, "record file is kOk", path);
      check(r.packet_count() == count, "packet count == segment info");
      Status err;
      while (auto p = r.next(&err)) {
        check(next < sink.emitted.size(), "no extra packet on disk");
        const auto& want = sink.emitted[next++];
        check(p->size() == want.size() && std::memcmp(p->data(), want.data(), want.size()) == 0,
              "packet on disk == packet emitted");
      }
      check(err.is_ok(), "read", err.message());
    }
    check(next == sink.emitted.size(), "every emitted packet is on disk");
  }
  for (const auto& f : files) {
    std::error_code ec;
    fs::remove(f.second, ec);
  }
  return 0;
}
