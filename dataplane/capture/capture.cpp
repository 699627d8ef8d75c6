#include "dataplane/capture/capture.hpp"

#include <pcap/pcap.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

namespace callrec::dataplane::capture {

namespace {

// ---- classic pcap through libpcap ----------------------------------------------------------

class PcapFile final : public FrameSource {
 public:
  PcapFile(pcap_t* p, std::unique_ptr<char[]> stdio_buf)
      : p_(p), link_(static_cast<std::uint32_t>(pcap_datalink(p))), stdio_buf_(std::move(stdio_buf)) {}
  ~PcapFile() override { pcap_close(p_); }  // closes the FILE before its buffer goes
  int next(Frame& f) override {
    pcap_pkthdr* h = nullptr;
    const u_char* d = nullptr;
    const int rc = pcap_next_ex(p_, &h, &d);
    if (rc == 1) {
      f.data = {reinterpret_cast<const std::byte*>(d), h->caplen};
      f.link = link_;
      // opened with nanosecond precision: tv_usec holds nanoseconds
      f.ts_ns = static_cast<std::uint64_t>(h->ts.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(h->ts.tv_usec);
      f.orig_len = h->len;
      return 1;
    }
    if (rc == PCAP_ERROR_BREAK) {
      eof_ = true;
      return 0;
    }
    error_ = pcap_geterr(p_);
    eof_ = true;
    return -1;
  }
  [[nodiscard]] bool eof() const override { return eof_; }
  [[nodiscard]] std::string error() const override { return error_; }

 private:
  pcap_t* p_;
  std::uint32_t link_;
  std::unique_ptr<char[]> stdio_buf_;
  bool eof_ = false;
  std::string error_;
};

// ---- pcapng ----------------------------------------------------------------------------------

/// Bytes from a FILE or from memory.
class ByteInput {
 public:
  virtual ~ByteInput() = default;
  /// Reads exactly n bytes; false at end of input (or a short read).
  virtual bool read(void* out, std::size_t n) = 0;
};

class FileInput final : public ByteInput {
 public:
  FileInput(std::FILE* f, std::unique_ptr<char[]> stdio_buf) : f_(f), stdio_buf_(std::move(stdio_buf)) {}
  ~FileInput() override { std::fclose(f_); }
  bool read(void* out, std::size_t n) override { return std::fread(out, 1, n, f_) == n; }

 private:
  std::FILE* f_;
  std::unique_ptr<char[]> stdio_buf_;
};

class MemInput final : public ByteInput {
 public:
  explicit MemInput(std::span<const std::byte> b) : b_(b) {}
  bool read(void* out, std::size_t n) override {
    if (b_.size() - pos_ < n) return false;
    std::memcpy(out, b_.data() + pos_, n);
    pos_ += n;
    return true;
  }

 private:
  std::span<const std::byte> b_;
  std::size_t pos_ = 0;
};

class PcapngReader final : public FrameSource {
 public:
  explicit PcapngReader(std::unique_ptr<ByteInput> in) : in_(std::move(in)) {}
  int next(Frame& f) override;
  [[nodiscard]] bool eof() const override { return eof_; }
  [[nodiscard]] std::string error() const override { return error_; }

 private:
  struct Iface {
    std::uint32_t link = 0;
    std::uint64_t units_per_s = 1'000'000;  ///< if_tsresol (default microseconds)
    std::int64_t offset_s = 0;              ///< if_tsoffset
  };
  static constexpr std::uint32_t kMaxBlock = 16u << 20;
  std::uint32_t u32(const std::byte* p) const {
    std::uint32_t v;
    std::memcpy(&v, p, 4);
    return swap_ ? __builtin_bswap32(v) : v;
  }
  std::uint16_t u16(const std::byte* p) const {
    std::uint16_t v;
    std::memcpy(&v, p, 2);
    return swap_ ? __builtin_bswap16(v) : v;
  }
  int fail(std::string msg) {
    error_ = std::move(msg);
    eof_ = true;
    return -1;
  }
  void parse_idb(std::span<const std::byte> body);
  std::unique_ptr<ByteInput> in_;
  std::vector<std::byte> block_;
  std::vector<Iface> ifaces_;
  bool swap_ = false, eof_ = false, started_ = false;
  std::string error_;
};

void PcapngReader::parse_idb(std::span<const std::byte> b) {
  Iface i;
  if (b.size() < 8) {
    ifaces_.push_back(i);
    return;
  }
  i.link = u16(b.data());
  std::size_t off = 8;
  while (off + 4 <= b.size()) {
    const std::uint16_t code = u16(b.data() + off), len = u16(b.data() + off + 2);
    off += 4;
    if (code == 0 || off + len > b.size()) break;
    if (code == 9 && len >= 1) {  // if_tsresol
      const unsigned v = std::to_integer<unsigned>(b[off]);
      const unsigned e = v & 0x7F;
      std::uint64_t units = 1;
      if (v & 0x80) {
        units = e < 64 ? (std::uint64_t{1} << e) : 0;
      } else {
        for (unsigned k = 0; k < e && units != 0; ++k) units = units > UINT64_MAX / 10 ? 0 : units * 10;
      }
      if (units != 0) i.units_per_s = units;
    } else if (code == 14 && len >= 8) {  // if_tsoffset (seconds)
      std::uint64_t v;
      std::memcpy(&v, b.data() + off, 8);
      if (swap_) v = __builtin_bswap64(v);
      i.offset_s = static_cast<std::int64_t>(v);
    }
    off += (len + 3u) & ~3u;
  }
  ifaces_.push_back(i);
}

int PcapngReader::next(Frame& f) {
  for (;;) {
    if (eof_) return error_.empty() ? 0 : -1;
    std::byte hdr[8];
    if (!in_->read(hdr, 8)) {
      eof_ = true;
      return 0;
    }
    std::uint32_t type;
    std::memcpy(&type, hdr, 4);
    if (type == 0x0A0D0D0A) {  // section header: its byte-order magic sets the order of what follows
      std::byte bom[4];
      if (!in_->read(bom, 4)) return fail("pcapng: truncated section header");
      std::uint32_t magic;
      std::memcpy(&magic, bom, 4);
      if (magic == 0x1A2B3C4D) swap_ = false;
      else if (magic == 0x4D3C2B1A) swap_ = true;
      else return fail("pcapng: bad byte-order magic");
      const std::uint32_t len = u32(hdr + 4);
      if (len < 28 || len > kMaxBlock || (len % 4) != 0) return fail("pcapng: bad section header length");
      block_.resize(len - 12);
      if (!in_->read(block_.data(), block_.size())) return fail("pcapng: truncated section header");
      ifaces_.clear();  // interface ids are per section
      started_ = true;
      continue;
    }
    if (!started_) return fail("pcapng: no section header");
    type = u32(hdr);
    const std::uint32_t len = u32(hdr + 4);
    if (len < 12 || len > kMaxBlock || (len % 4) != 0) return fail("pcapng: bad block length " + std::to_string(len));
    block_.resize(len - 8);
    if (!in_->read(block_.data(), block_.size())) {
      eof_ = true;  // a file cut in the middle of a block (a capture still being written): its end
      return 0;
    }
    const std::span<const std::byte> body(block_.data(), block_.size() - 4);  // minus trailing length
    switch (type) {
      case 1: parse_idb(body); continue;
      case 6: {  // enhanced packet block
        if (body.size() < 20) continue;
        const std::uint32_t ifid = u32(body.data());
        const std::uint64_t ts = (std::uint64_t{u32(body.data() + 4)} << 32) | u32(body.data() + 8);
        const std::uint32_t cap = u32(body.data() + 12), orig = u32(body.data() + 16);
        if (ifid >= ifaces_.size() || cap > body.size() - 20) continue;  // counted by the caller as absent
        const Iface& i = ifaces_[ifid];
        f.data = body.subspan(20, cap);
        f.link = i.link;
        const std::uint64_t sec = ts / i.units_per_s, frac = ts % i.units_per_s;
        f.ts_ns = (sec + static_cast<std::uint64_t>(i.offset_s)) * 1'000'000'000ull +
                  (i.units_per_s >= 1'000'000'000ull ? frac / (i.units_per_s / 1'000'000'000ull)
                                                     : frac * (1'000'000'000ull / i.units_per_s));
        f.orig_len = orig;
        return 1;
      }
      case 3: {  // simple packet block: interface 0, no timestamp
        if (body.size() < 4 || ifaces_.empty()) continue;
        const std::uint32_t orig = u32(body.data());
        f.data = body.subspan(4, std::min<std::size_t>(orig, body.size() - 4));
        f.link = ifaces_[0].link;
        f.orig_len = orig;
        return 1;  // ts_ns keeps the previous frame's time
      }
      case 2: {  // obsolete packet block
        if (body.size() < 20) continue;
        const std::uint32_t ifid = u16(body.data());
        const std::uint64_t ts = (std::uint64_t{u32(body.data() + 4)} << 32) | u32(body.data() + 8);
        const std::uint32_t cap = u32(body.data() + 12), orig = u32(body.data() + 16);
        if (ifid >= ifaces_.size() || cap > body.size() - 20) continue;
        const Iface& i = ifaces_[ifid];
        f.data = body.subspan(20, cap);
        f.link = i.link;
        f.ts_ns = ts / i.units_per_s * 1'000'000'000ull;
        f.orig_len = orig;
        return 1;
      }
      default: continue;  // name resolution, statistics, custom, decryption secrets ...
    }
  }
}

}  // namespace

std::unique_ptr<FrameSource> pcapng_from_memory(std::span<const std::byte> bytes) {
  return std::make_unique<PcapngReader>(std::make_unique<MemInput>(bytes));
}

std::unique_ptr<FrameSource> open_file(const std::string& path, Status& st) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    st = Status::from_errno(path);
    return nullptr;
  }
  // 1 MiB of stdio buffer for both readers (libpcap reads the FILE it is given): the default
  // (the file system's block, 4 KiB) made one read(2) per ~20 frames. glibc ignores the size
  // unless it is given the buffer, which must outlive the FILE: the reader keeps it.
  constexpr std::size_t kStdioBuffer = std::size_t{1} << 20;
  auto buf = std::make_unique<char[]>(kStdioBuffer);
  std::setvbuf(f, buf.get(), _IOFBF, kStdioBuffer);
  std::uint32_t magic = 0;
  const bool got = std::fread(&magic, 1, 4, f) == 4;
  std::rewind(f);
  if (got && magic == 0x0A0D0D0A) {
    st = Status::ok();
    return std::make_unique<PcapngReader>(std::make_unique<FileInput>(f, std::move(buf)));
  }
  char err[PCAP_ERRBUF_SIZE] = {};
  pcap_t* p = pcap_fopen_offline_with_tstamp_precision(f, PCAP_TSTAMP_PRECISION_NANO, err);
  if (p == nullptr) {  // libpcap closes nothing it failed to open
    std::fclose(f);
    st = Status(EINVAL, path + ": " + err);
    return nullptr;
  }
  st = Status::ok();
  return std::make_unique<PcapFile>(p, std::move(buf));  // pcap_close() closes f
}

// ---- live ------------------------------------------------------------------------------------

std::unique_ptr<LiveCapture> LiveCapture::open(const LiveOptions& o, Status& st) {
  char err[PCAP_ERRBUF_SIZE] = {};
  pcap_t* p = pcap_create(o.interface.c_str(), err);
  if (p == nullptr) {
    st = Status(ENODEV, "--span-interface " + o.interface + ": " + err);
    return nullptr;
  }
  auto fail = [&](const std::string& what) {
    st = Status(EINVAL, "--span-interface " + o.interface + ": " + what + ": " + pcap_geterr(p));
    pcap_close(p);
    return nullptr;
  };
  pcap_set_snaplen(p, o.snaplen);
  pcap_set_promisc(p, 1);
  // Not immediate mode: that makes libpcap use TPACKET_V2, whose ring has fixed slots of the
  // snap length (64 KiB), so a 64 MiB buffer held ~1,000 frames and a burst of 1,360 lost 95
  // (measured, span_live_test). TPACKET_V3 packs frames into blocks; a block is handed over when
  // full or after the 10 ms timeout, and the daemon also drains on its 1 s tick.
  pcap_set_timeout(p, 10);
  pcap_set_buffer_size(p, static_cast<int>(std::min<std::size_t>(o.buffer_bytes, 1u << 30)));
  (void)pcap_set_tstamp_precision(p, PCAP_TSTAMP_PRECISION_NANO);
  const int rc = pcap_activate(p);
  if (rc < 0) return fail("activate");
  if (!o.filter.empty()) {
    bpf_program prog{};
    if (pcap_compile(p, &prog, o.filter.c_str(), 1, PCAP_NETMASK_UNKNOWN) != 0) return fail("filter");
    const int frc = pcap_setfilter(p, &prog);
    pcap_freecode(&prog);
    if (frc != 0) return fail("filter");
  }
  if (pcap_setnonblock(p, 1, err) != 0) {
    st = Status(EINVAL, "--span-interface " + o.interface + ": " + err);
    pcap_close(p);
    return nullptr;
  }
  std::unique_ptr<LiveCapture> c(new LiveCapture());
  c->pcap_ = p;
  c->link_ = static_cast<std::uint32_t>(pcap_datalink(p));
  c->iface_ = o.interface;
  st = Status::ok();
  return c;
}

LiveCapture::~LiveCapture() {
  if (pcap_ != nullptr) pcap_close(static_cast<pcap_t*>(pcap_));
}

int LiveCapture::fd() const { return pcap_get_selectable_fd(static_cast<pcap_t*>(pcap_)); }

int LiveCapture::next(Frame& f) {
  pcap_pkthdr* h = nullptr;
  const u_char* d = nullptr;
  const int rc = pcap_next_ex(static_cast<pcap_t*>(pcap_), &h, &d);
  if (rc == 1) {
    f.data = {reinterpret_cast<const std::byte*>(d), h->caplen};
    f.link = link_;
    f.ts_ns = static_cast<std::uint64_t>(h->ts.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(h->ts.tv_usec);
    f.orig_len = h->len;
    return 1;
  }
  if (rc == 0) return 0;
  error_ = pcap_geterr(static_cast<pcap_t*>(pcap_));
  return -1;
}

bool LiveCapture::kernel_stats(std::uint64_t& recv, std::uint64_t& drop, std::uint64_t& ifdrop) const {
  pcap_stat s{};
  if (pcap_stats(static_cast<pcap_t*>(pcap_), &s) != 0) return false;
  recv = s.ps_recv;
  drop = s.ps_drop;
  ifdrop = s.ps_ifdrop;
  return true;
}

#ifndef CALLREC_HAVE_DPDK
struct DpdkCapture::Impl {};
std::unique_ptr<DpdkCapture> DpdkCapture::open(const DpdkCaptureOptions&, Status& st) {
  st = Status(ENOTSUP, "--span-dpdk: this build has no DPDK support (libdpdk was not found)");
  return nullptr;
}
DpdkCapture::~DpdkCapture() = default;
int DpdkCapture::next(Frame&) { return 0; }
unsigned DpdkCapture::lane_burst(unsigned, Frame*, unsigned) { return 0; }
void DpdkCapture::register_lane_thread() {}
unsigned DpdkCapture::lanes() const { return 1; }
std::uint64_t DpdkCapture::spread_dropped() const { return 0; }
std::uint64_t DpdkCapture::spread_waits() const { return 0; }
void DpdkCapture::nic_stats(std::uint64_t& missed, std::uint64_t& nombuf) const { missed = nombuf = 0; }
#endif

}  // namespace callrec::dataplane::capture
