#include "dataplane/capture/capture.hpp"

#include <pcap/pcap.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
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

// ---- capture files: a bounded buffer over a file descriptor or over memory ------------------

/// The bytes of a capture file, read in large blocks (one read(2) per 2 MiB) into one buffer
/// that the readers below hand frames out of without copying them. The frames of one
/// next_burst() call stay valid until the next call: the buffer is refilled (its unread tail
/// moved to the front, which invalidates every pointer into it) only when a burst needs bytes
/// it does not hold yet, and a reader ends its burst there instead when it already holds
/// frames. Over memory (tests, fuzzing) the "buffer" is the caller's bytes.
class ByteWindow {
 public:
  static constexpr std::size_t kBlock = std::size_t{2} << 20;
  /// Takes the descriptor (closed by the destructor).
  explicit ByteWindow(int fd) : fd_(fd), own_(kBlock), data_(own_.data()) {}
  explicit ByteWindow(std::span<const std::byte> mem) : data_(mem.data()), end_(mem.size()) {}
  ~ByteWindow() {
    if (fd_ >= 0) ::close(fd_);
  }
  ByteWindow(const ByteWindow&) = delete;
  ByteWindow& operator=(const ByteWindow&) = delete;

  /// The next n bytes if the buffer holds them (no read), else nullptr.
  [[nodiscard]] const std::byte* peek(std::size_t n) const { return end_ - pos_ >= n ? data_ + pos_ : nullptr; }
  /// The next n bytes: from the buffer, or after a refill when may_refill. nullptr: not
  /// buffered and no refill allowed (the caller ends its burst), or the input ends first.
  const std::byte* want(std::size_t n, bool may_refill) {
    if (const std::byte* p = peek(n)) return p;
    return may_refill && fill(n) ? data_ + pos_ : nullptr;
  }
  void skip(std::size_t n) { pos_ += n; }
  [[nodiscard]] std::size_t buffered() const { return end_ - pos_; }
  /// Reads until the buffer holds n bytes (invalidates every pointer handed out before) or the
  /// input ends; n is bounded by the callers (the largest record or block they accept).
  bool fill(std::size_t n) {
    if (end_ - pos_ >= n) return true;
    if (fd_ < 0 || eof_) return false;
    const std::size_t left = end_ - pos_;
    if (pos_ != 0 && left != 0) std::memmove(own_.data(), own_.data() + pos_, left);
    pos_ = 0;
    end_ = left;
    if (own_.size() < n) own_.resize(std::max(n, own_.size() * 2));
    data_ = own_.data();
    while (end_ < n && !eof_) {
      // as much as fits, so that the next bursts need no read
      const ssize_t r = ::read(fd_, own_.data() + end_, own_.size() - end_);
      if (r > 0) {
        end_ += static_cast<std::size_t>(r);
      } else if (r == 0) {
        eof_ = true;
      } else if (errno != EINTR) {
        error_ = std::strerror(errno);
        eof_ = true;
      }
    }
    return end_ >= n;
  }
  /// A read error (empty: none; the end of the input is not one).
  [[nodiscard]] const std::string& error() const { return error_; }

 private:
  int fd_ = -1;
  std::vector<std::byte> own_;
  const std::byte* data_;
  std::size_t pos_ = 0, end_ = 0;
  bool eof_ = false;
  std::string error_;
};

// ---- classic pcap ----------------------------------------------------------------------------

/// Classic pcap (the four magic numbers: microsecond and nanosecond times, either byte order;
/// what else libpcap knows, such as the "modified" format of old Red Hat patches, is read by
/// libpcap). Frames point into the ByteWindow: no copy between the file and the span lane
/// (libpcap copies each frame twice, stdio's buffer and then its own, and the lane's burst a
/// third time: bench/RESULTS.md, the offline reader). Checks as libpcap does: a record longer
/// than 256 KiB ends the read with an error (a damaged file; libpcap: "invalid packet capture
/// length"), a file that ends inside a record ends with a "truncated" error.
class PcapReader final : public FrameSource {
 public:
  static constexpr std::uint32_t kMaxCaplen = 262144;  ///< libpcap's largest snapshot length
  PcapReader(std::unique_ptr<ByteWindow> in, bool swap, bool nanos, std::uint32_t link)
      : in_(std::move(in)), swap_(swap), nanos_(nanos), link_(link) {}
  int next(Frame& f) override { return read_burst(&f, 1); }
  int read_burst(Frame* out, unsigned max) override;
  [[nodiscard]] bool eof() const override { return eof_; }
  [[nodiscard]] std::string error() const override { return error_; }

 private:
  std::uint32_t u32(const std::byte* p) const {
    std::uint32_t v;
    std::memcpy(&v, p, 4);
    return swap_ ? __builtin_bswap32(v) : v;
  }
  /// Ends the read; the frames already in the burst are returned first.
  int end(unsigned n, std::string why) {
    eof_ = true;
    error_ = std::move(why);
    return n != 0 ? static_cast<int>(n) : (error_.empty() ? 0 : -1);
  }
  std::unique_ptr<ByteWindow> in_;
  bool swap_, nanos_;
  std::uint32_t link_;
  std::uint64_t offset_ = 24;  ///< file offset of the next record (for messages)
  bool eof_ = false;
  std::string error_;
};

int PcapReader::read_burst(Frame* out, unsigned max) {
  if (eof_) return error_.empty() ? 0 : -1;
  unsigned n = 0;
  while (n < max) {
    // A refill would invalidate this burst's frames: only the first frame of a burst may ask.
    const std::byte* h = in_->want(16, n == 0);
    if (h == nullptr) {
      if (n != 0) break;
      if (!in_->error().empty()) return end(n, "read: " + in_->error());
      const std::size_t got = in_->buffered();
      if (got == 0) return end(n, {});
      return end(n, "truncated dump file; tried to read 16 header bytes, only got " + std::to_string(got));
    }
    const std::uint32_t caplen = u32(h + 8);
    if (caplen > kMaxCaplen)
      return end(n, "invalid packet capture length " + std::to_string(caplen) + ", bigger than maximum of " +
                        std::to_string(kMaxCaplen) + " (record at offset " + std::to_string(offset_) + ")");
    const std::byte* rec = in_->want(16 + std::size_t{caplen}, n == 0);
    if (rec == nullptr) {
      if (n != 0) break;
      if (!in_->error().empty()) return end(n, "read: " + in_->error());
      return end(n, "truncated dump file; tried to read " + std::to_string(caplen) + " captured bytes, only got " +
                        std::to_string(in_->buffered() - 16));
    }
    Frame& f = out[n++];
    const std::uint64_t sec = u32(rec), frac = u32(rec + 4);
    f.ts_ns = sec * 1'000'000'000ull + (nanos_ ? frac : frac * 1000ull);
    f.orig_len = u32(rec + 12);
    f.link = link_;
    f.data = {rec + 16, caplen};
    in_->skip(16 + std::size_t{caplen});
    offset_ += 16 + std::uint64_t{caplen};
  }
  return static_cast<int>(n);
}

// ---- pcapng ----------------------------------------------------------------------------------

class PcapngReader final : public FrameSource {
 public:
  explicit PcapngReader(std::unique_ptr<ByteWindow> in) : in_(std::move(in)) {}
  int next(Frame& f) override { return read_burst(&f, 1); }
  int read_burst(Frame* out, unsigned max) override;
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
  /// Ends the read with an error; the frames already in the burst are returned first.
  int fail(unsigned n, std::string msg) {
    error_ = std::move(msg);
    eof_ = true;
    return n != 0 ? static_cast<int>(n) : -1;
  }
  int finish(unsigned n) {
    eof_ = true;
    if (!in_->error().empty()) return fail(n, "read: " + in_->error());
    return static_cast<int>(n);
  }
  /// One packet block's frame (false: not a frame, skipped).
  bool frame_of(std::uint32_t type, std::span<const std::byte> body, Frame& f);
  void parse_idb(std::span<const std::byte> body);
  std::unique_ptr<ByteWindow> in_;
  std::vector<Iface> ifaces_;
  std::uint64_t last_ts_ = 0;  ///< a simple packet block has no time: the previous frame's
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

int PcapngReader::read_burst(Frame* out, unsigned max) {
  if (eof_) return error_.empty() ? 0 : -1;
  unsigned n = 0;
  while (n < max) {
    // Type, length and (a section header's) byte-order magic; a block is at least 12 bytes.
    // A refill would invalidate this burst's frames: only the first frame of a burst may ask.
    const std::byte* hdr = in_->want(12, n == 0);
    if (hdr == nullptr) {
      if (n != 0) break;
      if (const std::byte* h8 = in_->peek(8); h8 != nullptr && u32(h8) == 0x0A0D0D0A)
        return fail(n, "pcapng: truncated section header");
      return finish(n);  // the end (a few stray bytes after the last block are no block)
    }
    std::uint32_t type;
    std::memcpy(&type, hdr, 4);
    const bool shb = type == 0x0A0D0D0A;  // its byte-order magic sets the order of what follows
    if (shb) {
      std::uint32_t magic;
      std::memcpy(&magic, hdr + 8, 4);
      if (magic == 0x1A2B3C4D) swap_ = false;
      else if (magic == 0x4D3C2B1A) swap_ = true;
      else return fail(n, "pcapng: bad byte-order magic");
    } else if (!started_) {
      return fail(n, "pcapng: no section header");
    }
    type = u32(hdr);
    const std::uint32_t len = u32(hdr + 4);
    if (shb && (len < 28 || len > kMaxBlock || (len % 4) != 0)) return fail(n, "pcapng: bad section header length");
    if (len < 12 || len > kMaxBlock || (len % 4) != 0) return fail(n, "pcapng: bad block length " + std::to_string(len));
    const std::byte* block = in_->want(len, n == 0);
    if (block == nullptr) {
      if (n != 0) break;
      if (shb) return fail(n, "pcapng: truncated section header");
      return finish(n);  // a file cut in the middle of a block (a capture still being written): its end
    }
    const std::span<const std::byte> body(block + 8, len - 12);  // minus the trailing length
    in_->skip(len);  // the bytes stay where they are until the next refill
    if (shb) {
      ifaces_.clear();  // interface ids are per section
      started_ = true;
    } else if (type == 1) {
      parse_idb(body);
    } else if (frame_of(type, body, out[n])) {
      ++n;
    }
  }
  return static_cast<int>(n);
}

bool PcapngReader::frame_of(std::uint32_t type, std::span<const std::byte> body, Frame& f) {
  switch (type) {
    case 6: {  // enhanced packet block
      if (body.size() < 20) return false;
      const std::uint32_t ifid = u32(body.data());
      const std::uint64_t ts = (std::uint64_t{u32(body.data() + 4)} << 32) | u32(body.data() + 8);
      const std::uint32_t cap = u32(body.data() + 12), orig = u32(body.data() + 16);
      if (ifid >= ifaces_.size() || cap > body.size() - 20) return false;  // counted by the caller as absent
      const Iface& i = ifaces_[ifid];
      f.data = body.subspan(20, cap);
      f.link = i.link;
      const std::uint64_t sec = ts / i.units_per_s, frac = ts % i.units_per_s;
      f.ts_ns = (sec + static_cast<std::uint64_t>(i.offset_s)) * 1'000'000'000ull +
                (i.units_per_s >= 1'000'000'000ull ? frac / (i.units_per_s / 1'000'000'000ull)
                                                   : frac * (1'000'000'000ull / i.units_per_s));
      f.orig_len = orig;
      last_ts_ = f.ts_ns;
      return true;
    }
    case 3: {  // simple packet block: interface 0, no timestamp
      if (body.size() < 4 || ifaces_.empty()) return false;
      const std::uint32_t orig = u32(body.data());
      f.data = body.subspan(4, std::min<std::size_t>(orig, body.size() - 4));
      f.link = ifaces_[0].link;
      f.orig_len = orig;
      f.ts_ns = last_ts_;
      return true;
    }
    case 2: {  // obsolete packet block
      if (body.size() < 20) return false;
      const std::uint32_t ifid = u16(body.data());
      const std::uint64_t ts = (std::uint64_t{u32(body.data() + 4)} << 32) | u32(body.data() + 8);
      const std::uint32_t cap = u32(body.data() + 12), orig = u32(body.data() + 16);
      if (ifid >= ifaces_.size() || cap > body.size() - 20) return false;
      const Iface& i = ifaces_[ifid];
      f.data = body.subspan(20, cap);
      f.link = i.link;
      f.ts_ns = ts / i.units_per_s * 1'000'000'000ull;
      f.orig_len = orig;
      last_ts_ = f.ts_ns;
      return true;
    }
    default: return false;  // name resolution, statistics, custom, decryption secrets ...
  }
}

}  // namespace

namespace {

/// The reader of the capture in `in` by its magic number: pcapng, or classic pcap in one of its
/// four usual forms. nullptr with an ok `st`: a format for libpcap (or not a capture: libpcap
/// says which).
std::unique_ptr<FrameSource> reader_for(std::unique_ptr<ByteWindow> in, Status& st) {
  st = Status::ok();
  if (!in->fill(24) && !in->error().empty()) {
    st = Status(EIO, in->error());
    return nullptr;
  }
  const std::byte* h = in->peek(4);
  if (h == nullptr) return nullptr;
  std::uint32_t magic;
  std::memcpy(&magic, h, 4);
  if (magic == 0x0A0D0D0A) return std::make_unique<PcapngReader>(std::move(in));
  h = in->peek(24);
  if (h == nullptr) return nullptr;
  const bool swap = magic == 0xD4C3B2A1 || magic == 0x4D3CB2A1;
  const bool nanos = magic == 0xA1B23C4D || magic == 0x4D3CB2A1;
  if (!swap && !nanos && magic != 0xA1B2C3D4) return nullptr;
  std::uint16_t major;
  std::uint32_t link;
  std::memcpy(&major, h + 4, 2);
  std::memcpy(&link, h + 20, 4);
  if (swap) {
    major = __builtin_bswap16(major);
    link = __builtin_bswap32(link);
  }
  if (major != 2) return nullptr;
  in->skip(24);
  // the link type is the low 26 bits (the top bits may say how long an FCS the frames carry)
  return std::make_unique<PcapReader>(std::move(in), swap, nanos, link & 0x03FFFFFFu);
}

}  // namespace

std::unique_ptr<FrameSource> pcapng_from_memory(std::span<const std::byte> bytes) {
  return std::make_unique<PcapngReader>(std::make_unique<ByteWindow>(bytes));
}

std::unique_ptr<FrameSource> capture_from_memory(std::span<const std::byte> bytes) {
  Status st;
  return reader_for(std::make_unique<ByteWindow>(bytes), st);
}

std::unique_ptr<FrameSource> open_file(const std::string& path, Status& st) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    st = Status::from_errno(path);
    return nullptr;
  }
  if (auto r = reader_for(std::make_unique<ByteWindow>(fd), st)) return r;  // the window closes fd
  if (!st) {
    st = Status(st.code(), path + ": " + st.message());
    return nullptr;
  }
  return open_with_libpcap(path, st);
}

std::unique_ptr<FrameSource> open_with_libpcap(const std::string& path, Status& st) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    st = Status::from_errno(path);
    return nullptr;
  }
  // 1 MiB of stdio buffer (libpcap reads the FILE it is given): the default (the file system's
  // block, 4 KiB) made one read(2) per ~20 frames. glibc ignores the size unless it is given
  // the buffer, which must outlive the FILE: the reader keeps it.
  constexpr std::size_t kStdioBuffer = std::size_t{1} << 20;
  auto buf = std::make_unique<char[]>(kStdioBuffer);
  std::setvbuf(f, buf.get(), _IOFBF, kStdioBuffer);
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
