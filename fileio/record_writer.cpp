// RecordWriter: one recording as a chain of record files. See record_writer.hpp for the contract.
//
// Per-packet path (append): two compares, one memcpy into the buffer, and one write(2) every
// buf_cap_ / rtp_len packets (~100 ns/pkt with the 8 KiB default buffer, ~50 ns with 64 KiB,
// to tmpfs: bench/fileio_bench.cpp BM_WriterAppend; the write(2) dominates).
// No allocation, no logging, no exceptions. Everything that
// allocates (names, Status messages, SegmentInfo) happens at segment open/close or on errors.
//
// Error policy:
// - A refused or failed segment creation, and any failed write, set the sticky failed_ status:
//   later appends return it at once (no system call), so a full disk is not hammered by every
//   packet of every stream. close_segment() clears it: the next append tries a new file, and
//   that attempt starts with the free-space check again.
// - After a failed write the file is truncated back to the last whole packet written, dataSize
//   is rewritten to match and the file is closed (on_segment_closed fires): the file on disk is
//   always a valid record file. Data is "durable" in the sense of accepted by write(2); there is
//   no fsync (thousands of streams; the spec bounds crash loss by the flush interval).
#include "fileio/record_writer.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <utility>

namespace callrec::fileio {
namespace {

/// Process-wide name counter: two writers of this process never try the same name, so O_EXCL
/// only has to resolve collisions with other processes (or leftovers) in the same millisecond.
std::atomic<std::uint64_t> g_name_counter{0};
constexpr int kMaxCreateAttempts = 1000;
constexpr mode_t kFileMode = 0640;  // call audio: not world-readable

std::string errno_text(int e) { return std::strerror(e); }

/// "yyyymmddThhmmss.mmm" in UTC.
std::string utc_stamp(std::chrono::system_clock::time_point t) {
  using std::chrono::duration_cast;
  using std::chrono::milliseconds;
  const std::int64_t ms = duration_cast<milliseconds>(t.time_since_epoch()).count();
  std::int64_t secs = ms / 1000;
  std::int64_t milli = ms % 1000;
  if (milli < 0) {
    milli += 1000;
    secs -= 1;
  }
  const std::time_t tt = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04d%02d%02dT%02d%02d%02d.%03d", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(milli));
  return buf;
}

/// pwrite(2) of all of [p, p+len) at off; loops on short writes and EINTR. Returns 0 or errno.
int pwrite_all(int fd, const std::byte* p, std::size_t len, off_t off) {
  std::size_t done = 0;
  while (done < len) {
    const ssize_t n = ::pwrite(fd, p + done, len - done, off + static_cast<off_t>(done));
    if (n > 0) {
      done += static_cast<std::size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      return n < 0 ? errno : EIO;
    }
  }
  return 0;
}

std::uint64_t sat_add(std::uint64_t a, std::uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

}  // namespace

Status free_space_statvfs(const std::filesystem::path& dir, std::uint64_t& free_bytes) {
  struct statvfs st {};
  if (::statvfs(dir.c_str(), &st) != 0) return Status::from_errno("statvfs " + dir.string());
  free_bytes = static_cast<std::uint64_t>(st.f_bavail) * static_cast<std::uint64_t>(st.f_frsize);
  return {};
}

std::string sanitize_name_part(std::string_view s) {
  constexpr std::size_t kMaxLen = 48;
  std::string out;
  out.reserve(kMaxLen);
  bool in_multibyte = false;
  for (const char ch : s) {
    if (out.size() == kMaxLen) break;
    const auto c = static_cast<unsigned char>(ch);
    // One '_' per UTF-8 character, not per byte: skip continuation bytes of a sequence.
    if (in_multibyte && (c & 0xC0) == 0x80) continue;
    in_multibyte = c >= 0x80;
    const bool keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '-';
    out += keep ? static_cast<char>(c) : '_';
  }
  if (out == ".") out = "_";
  if (out == "..") out = "__";
  return out;
}

RecordWriter::RecordWriter(WriterOptions opts) : opts_(std::move(opts)) {
  opts_.tag = sanitize_name_part(opts_.tag);
  if (!opts_.free_space) opts_.free_space = free_space_statvfs;
}

RecordWriter::~RecordWriter() { (void)close(); }

Status RecordWriter::set_format(std::string_view codec, std::uint32_t rtp_len, std::uint32_t increment) {
  if (closed_) return Status(EBADF, "record writer for " + opts_.directory.string() + " is closed");
  if (codec.empty() || codec.size() >= kCodecFieldSize) {
    return Status(EINVAL, "codec name '" + std::string(codec) + "' must be 1..63 characters");
  }
  if (rtp_len <= kRtpHeaderMin || rtp_len > static_cast<std::uint32_t>(kMaxRtpLen)) {
    return Status(EINVAL, "rtpLen " + std::to_string(rtp_len) + " out of range 13..65535");
  }
  if (increment == 0 || increment > 0x7FFFFFFFu) {
    return Status(EINVAL, "increment " + std::to_string(increment) + " out of range");
  }
  if (codec == codec_ && rtp_len == rtp_len_ && increment == increment_) return {};
  Status st = finish_segment();  // a different format: the open segment (if any) ends here
  codec_.assign(codec);
  rtp_len_ = rtp_len;
  increment_ = increment;
  const std::size_t pkts = opts_.buffer_bytes / rtp_len > 0 ? opts_.buffer_bytes / rtp_len : 1;
  buf_cap_ = pkts * rtp_len;
  if (buf_.size() < buf_cap_) buf_.resize(buf_cap_);  // grows only; not on the packet path
  data_limit_ = segment_data_limit(rtp_len, opts_.max_file_bytes);
  return st;
}

namespace {
std::atomic<std::int64_t> g_fd_slots{4096};
bool take_fd_slot() {
  std::int64_t v = g_fd_slots.load(std::memory_order_relaxed);
  while (v > 0)
    if (g_fd_slots.compare_exchange_weak(v, v - 1, std::memory_order_relaxed)) return true;
  return false;
}
}  // namespace

void set_record_fd_budget(std::int64_t slots) { g_fd_slots.store(slots, std::memory_order_relaxed); }
std::int64_t record_fd_budget_left() { return g_fd_slots.load(std::memory_order_relaxed); }

Status RecordWriter::ensure_fd() {
  if (fd_ >= 0) return {};
  const int fd = ::open(segments_.back().path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return Status::from_errno("reopen " + segments_.back().path.string());
  fd_ = fd;
  return {};
}

void RecordWriter::park_fd() {
  if (own_slot_ || fd_ < 0) return;
  ::close(fd_);  // only written through pwrite: nothing is lost by closing (no data in libc)
  fd_ = -1;
}

Status RecordWriter::append(std::span<const std::byte> pkt) {
  if (closed_) [[unlikely]] {
    return Status(EBADF, "record writer for " + opts_.directory.string() + " is closed");
  }
  if (paused_) {
    ++dropped_paused_;
    return {};
  }
  if (!failed_.is_ok()) [[unlikely]] return failed_;
  if (rtp_len_ == 0 || pkt.size() != rtp_len_) [[unlikely]] {
    return Status(EINVAL, "packet of " + std::to_string(pkt.size()) + " bytes does not match rtpLen " +
                              std::to_string(rtp_len_) + " (recording in " + opts_.directory.string() + ")");
  }
  if (!seg_open_) [[unlikely]] {
    Status st = open_segment();
    if (!st) return failed_ = st;
  } else if (file_data_bytes_ + buf_len_ + rtp_len_ > data_limit_) [[unlikely]] {
    // Rotation: check the size before writing (Suricata log-pcap.c).
    Status st = finish_segment();
    if (!st) {
      if (failed_.is_ok()) failed_ = st;
      return st;
    }
    st = open_segment();
    if (!st) return failed_ = st;
  }
  std::memcpy(buf_.data() + buf_len_, pkt.data(), rtp_len_);
  buf_len_ += rtp_len_;
  if (buf_len_ == buf_cap_) {
    Status st = write_buffer();
    park_fd();
    return st;
  }
  return {};
}

std::chrono::system_clock::time_point RecordWriter::now() const {
  if (opts_.packet_clock && packet_ns_ != 0)
    return std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::nanoseconds(packet_ns_)));
  return std::chrono::system_clock::now();
}

Status RecordWriter::open_segment() {
  std::uint64_t free_bytes = 0;
  Status st = opts_.free_space(opts_.directory, free_bytes);
  if (!st) return st;
  std::uint64_t file_need = opts_.expected_file_bytes;
  if (opts_.max_file_bytes != 0 && opts_.max_file_bytes < file_need) file_need = opts_.max_file_bytes;
  const std::uint64_t need = sat_add(opts_.reserve_bytes, file_need);
  if (free_bytes < need) {
    return Status(ENOSPC, "not enough free space in " + opts_.directory.string() + ": " +
                              std::to_string(free_bytes) + " bytes free, " + std::to_string(need) +
                              " bytes needed (reserve " + std::to_string(opts_.reserve_bytes) +
                              " + file " + std::to_string(file_need) + ")");
  }

  const auto opened = now();
  std::string stem = "Record_" + utc_stamp(opened) + "Z";
  if (!opts_.tag.empty()) stem += "_" + opts_.tag;
  std::filesystem::path path;
  int fd = -1;
  for (int attempt = 0; attempt < kMaxCreateAttempts && fd < 0;) {
    const std::uint64_t n = g_name_counter.fetch_add(1, std::memory_order_relaxed);
    path = opts_.directory / (stem + "_" + std::to_string(n) + ".rec");
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, kFileMode);
    if (fd >= 0) break;
    if (errno == EINTR) continue;
    if (errno != EEXIST) return Status::from_errno("create " + path.string());
    ++attempt;  // taken (another process, or a leftover): next number
  }
  if (fd < 0) {
    return Status(EEXIST, "no free file name for " + (opts_.directory / stem).string() + "_<n>.rec after " +
                              std::to_string(kMaxCreateAttempts) + " attempts");
  }

  const auto header = encode_header(RecordHeader{codec_, static_cast<std::int32_t>(rtp_len_),
                                                 static_cast<std::int32_t>(increment_), 0});
  if (const int e = pwrite_all(fd, header.data(), header.size(), 0); e != 0) {
    // Not even a header: leave no invalid file behind.
    ::close(fd);
    ::unlink(path.c_str());
    return Status(e, "write header " + path.string() + ": " + errno_text(e));
  }
  if (::lseek(fd, static_cast<off_t>(kHeaderSize), SEEK_SET) < 0) {
    const int e = errno;
    ::close(fd);
    ::unlink(path.c_str());
    return Status(e, "lseek " + path.string() + ": " + errno_text(e));
  }
  fd_ = fd;
  seg_open_ = true;
  own_slot_ = take_fd_slot();
  buf_len_ = 0;
  file_data_bytes_ = 0;
  header_data_size_ = 0;
  bytes_written_total_ += kHeaderSize;

  SegmentInfo seg;
  seg.path = std::move(path);
  seg.index = static_cast<std::uint32_t>(segments_.size());
  seg.codec = codec_;
  seg.rtp_len = rtp_len_;
  seg.increment = increment_;
  seg.opened = opened;
  segments_.push_back(std::move(seg));
  if (on_segment_opened) on_segment_opened(segments_.back());
  park_fd();
  return {};
}

Status RecordWriter::write_buffer() {
  if (Status st = ensure_fd(); !st) {
    buf_len_ = 0;
    return recover_after_write_error(st);
  }
  std::size_t done = 0;
  while (done < buf_len_) {
    // pwrite at the known offset, not write(2): no f_pos lock (fdget_pos) per call, and the
    // file position does not matter (kHeaderSize + data written so far).
    const ssize_t n = ::pwrite(fd_, buf_.data() + done, buf_len_ - done,
                               static_cast<off_t>(kHeaderSize + file_data_bytes_));
    if (n > 0) {
      done += static_cast<std::size_t>(n);
      file_data_bytes_ += static_cast<std::uint64_t>(n);
      bytes_written_total_ += static_cast<std::uint64_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    const int e = n < 0 ? errno : EIO;  // write(2) returning 0 for a non-empty buffer: no progress
    buf_len_ = 0;
    return recover_after_write_error(
        Status(e, "write " + segments_.back().path.string() + ": " + errno_text(e)));
  }
  buf_len_ = 0;
  segments_.back().packets = file_data_bytes_ / rtp_len_;
  return {};
}

Status RecordWriter::write_data_size() {
  const std::uint64_t whole = file_data_bytes_ - file_data_bytes_ % rtp_len_;
  if (whole == header_data_size_) return {};
  if (Status st = ensure_fd(); !st) return st;
  std::array<std::byte, 4> le{};
  for (std::size_t i = 0; i < 4; ++i) le[i] = static_cast<std::byte>((whole >> (8 * i)) & 0xFF);
  if (const int e = pwrite_all(fd_, le.data(), le.size(), static_cast<off_t>(kDataSizeOffset)); e != 0) {
    return Status(e, "rewrite dataSize of " + segments_.back().path.string() + ": " + errno_text(e));
  }
  header_data_size_ = whole;
  return {};
}

Status RecordWriter::recover_after_write_error(const Status& st) {
  SegmentInfo& seg = segments_.back();
  const std::uint64_t whole = file_data_bytes_ - file_data_bytes_ % rtp_len_;
  std::string notes;
  if (Status rs = ensure_fd(); !rs) {
    notes += "; " + rs.message();
  } else if (::ftruncate(fd_, static_cast<off_t>(kHeaderSize + whole)) != 0) {
    notes += "; truncating it failed: " + errno_text(errno);
  } else {
    bytes_written_total_ -= file_data_bytes_ - whole;
    file_data_bytes_ = whole;
  }
  if (Status ds = write_data_size(); !ds) notes += "; " + ds.message();
  seg.packets = whole / rtp_len_;
  if (Status cl = close_file(); !cl) notes += "; " + cl.message();
  failed_ = Status(st.code(), st.message() + " (file kept with " + std::to_string(whole / rtp_len_) +
                                  " whole packets" + notes + ")");
  return failed_;
}

Status RecordWriter::flush() {
  if (!seg_open_) return {};
  if (buf_len_ > 0) {
    if (Status st = write_buffer(); !st) return st;
  }
  if (Status st = write_data_size(); !st) return recover_after_write_error(st);
  park_fd();
  return {};
}

Status RecordWriter::flush_if_due(std::chrono::steady_clock::time_point now) {
  if (!seg_open_ || now - last_flush_ < opts_.flush_interval) return {};
  last_flush_ = now;
  return flush();
}

Status RecordWriter::close_file() {
  SegmentInfo& seg = segments_.back();
  Status st;
  if (fd_ >= 0 && ::close(fd_) != 0) st = Status::from_errno("close " + seg.path.string());
  fd_ = -1;
  seg_open_ = false;
  if (own_slot_) g_fd_slots.fetch_add(1, std::memory_order_relaxed);
  own_slot_ = false;
  buf_len_ = 0;
  seg.closed = now();
  if (on_segment_closed) on_segment_closed(seg);
  return st;
}

Status RecordWriter::finish_segment() {
  if (!seg_open_) return {};
  Status st = flush();
  if (!seg_open_) return st;  // the flush failed and recovery already closed the file
  Status cl = close_file();
  return st.is_ok() ? cl : st;
}

Status RecordWriter::close_segment() {
  Status st = finish_segment();
  failed_ = Status();
  return st;
}

Status RecordWriter::close() {
  if (closed_) return {};
  Status st = finish_segment();
  closed_ = true;
  return st;
}

}  // namespace callrec::fileio
