// Record file inspection, sequential reading and repair. See record_reader.hpp.
//
// Definitions used throughout (spec "What a player derives" + decision 3):
// - bytes_on_disk  = file size - 76; whole packets = bytes_on_disk / rtpLen; the rest is a
//   partial trailing packet.
// - dataSize is "sane" when it is a whole multiple of rtpLen. Readable packets are then
//   min(dataSize / rtpLen, whole packets) (what a player trusting the header can play without
//   running off the end of the file); otherwise every whole packet on disk.
// - duration = readable packets * increment / clock; period = increment / clock.
#include "fileio/record_reader.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <string>
#include <utility>

namespace callrec::fileio {
namespace {

constexpr std::size_t kReadAheadBytes = 64 * 1024;  // one pread(2) fills this many bytes of packets

/// Closes an fd on scope exit unless released (errors of close on a read-only fd are irrelevant;
/// repair_record closes explicitly and checks).
class FdGuard {
 public:
  explicit FdGuard(int fd) : fd_(fd) {}
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  ~FdGuard() {
    if (fd_ >= 0) (void)::close(fd_);
  }
  [[nodiscard]] int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

std::string quoted(const std::filesystem::path& p) { return "'" + p.string() + "'"; }

/// Opens without following into a FIFO/device hang (O_NONBLOCK has no effect on regular files).
Status open_file(const std::filesystem::path& path, int flags, int& fd) {
  do {
    fd = ::open(path.c_str(), flags | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return Status::from_errno(quoted(path) + ": cannot open");
  return Status::ok();
}

/// pread until len bytes or end of file; `got` receives the bytes read.
Status pread_full(int fd, std::byte* buf, std::size_t len, std::uint64_t offset, std::size_t& got,
                  const std::filesystem::path& path) {
  got = 0;
  while (got < len) {
    const ssize_t n = ::pread(fd, buf + got, len - got, static_cast<off_t>(offset + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::from_errno(quoted(path) + ": read failed at offset " + std::to_string(offset + got));
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  return Status::ok();
}

Status pwrite_full(int fd, const std::byte* buf, std::size_t len, std::uint64_t offset,
                   const std::filesystem::path& path) {
  std::size_t done = 0;
  while (done < len) {
    const ssize_t n = ::pwrite(fd, buf + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::from_errno(quoted(path) + ": write failed at offset " + std::to_string(offset + done));
    }
    done += static_cast<std::size_t>(n);
  }
  return Status::ok();
}

std::string plural(std::uint64_t n, const char* word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (const auto& x : v) {
    if (!s.empty()) s += sep;
    s += x;
  }
  return s;
}

/// Readable packets: min(declared, whole) when dataSize is a whole multiple of rtpLen, else whole.
std::uint64_t readable_packets(const RecordInfo& info) {
  if (info.integrity == Integrity::kBroken) return 0;
  const auto rtp = static_cast<std::uint64_t>(info.decoded.header.rtp_len);
  const bool sane = info.decoded.header.data_size % rtp == 0;
  return sane ? std::min(info.declared_packets, info.whole_packets) : info.whole_packets;
}

/// The inspection proper, on an open fd (shared by inspect_record, RecordReader and repair).
Status inspect_fd(int fd, const std::filesystem::path& path, RecordInfo& out) {
  out = RecordInfo{};
  out.path = path;
  struct stat st {};
  if (::fstat(fd, &st) != 0) return Status::from_errno(quoted(path) + ": cannot stat");
  if (!S_ISREG(st.st_mode)) return Status(EINVAL, quoted(path) + ": not a regular file");
  out.file_size = static_cast<std::uint64_t>(st.st_size);

  std::array<std::byte, kHeaderSize> hdr{};
  std::size_t got = 0;
  if (Status s = pread_full(fd, hdr.data(), hdr.size(), 0, got, path); !s) return s;
  if (got < kHeaderSize) {
    out.file_size = std::max<std::uint64_t>(out.file_size, got);
    out.problems.push_back("file is " + plural(out.file_size, "byte") + ", shorter than the " +
                           std::to_string(kHeaderSize) + "-byte header.");
    out.integrity = Integrity::kBroken;
    return Status::ok();
  }
  out.bytes_on_disk = out.file_size > kHeaderSize ? out.file_size - kHeaderSize : 0;
  out.decoded = decode_header(hdr);
  if (!out.decoded.plausible) {
    out.problems.insert(out.problems.end(), out.decoded.problems.begin(), out.decoded.problems.end());
    out.integrity = Integrity::kBroken;
    return Status::ok();
  }

  const RecordHeader& h = out.decoded.header;
  const auto rtp = static_cast<std::uint64_t>(h.rtp_len);  // plausible: 13 .. 65535
  out.codec = codec_from_name(h.codec);
  if (out.codec) {
    out.clock_rate = codec_info(*out.codec).clock_rate;
  } else if (const std::uint32_t clock = rtp_clock_for_name(h.codec); clock != 0) {
    out.clock_rate = clock;  // a codec passive capture or SIPREC stored by its SDP name
  } else {
    out.problems.push_back("unknown codec '" + h.codec +
                           "': clock rate unknown, period and duration not computed.");
  }
  out.whole_packets = out.bytes_on_disk / rtp;
  out.trailing_bytes = out.bytes_on_disk % rtp;
  out.declared_packets = h.data_size / rtp;

  bool consistent = true;
  if (h.data_size % rtp != 0) {
    consistent = false;
    out.problems.push_back("dataSize " + std::to_string(h.data_size) + " is not a whole multiple of rtpLen " +
                           std::to_string(rtp) + "; all " + plural(out.whole_packets, "whole packet") +
                           " on disk are used.");
  }
  if (h.data_size != out.bytes_on_disk) {
    consistent = false;
    const std::uint64_t cap = max_data_size(static_cast<std::uint32_t>(rtp));
    if (out.whole_packets * rtp > cap && h.data_size == cap) {
      out.problems.push_back("the " + plural(out.bytes_on_disk, "byte") + " of data on disk exceed the largest " +
                             "dataSize a header can hold (" + std::to_string(cap) + "): packets after the first " +
                             std::to_string(out.declared_packets) + " are not declared.");
    } else if (h.data_size > out.bytes_on_disk) {
      out.problems.push_back("dataSize " + std::to_string(h.data_size) + " declares more than the " +
                             plural(out.bytes_on_disk, "byte") + " of data on disk (" +
                             plural(out.declared_packets, "packet") + " declared, " +
                             std::to_string(out.whole_packets) + " whole on disk).");
    } else {
      out.problems.push_back("dataSize " + std::to_string(h.data_size) + " is less than the " +
                             plural(out.bytes_on_disk, "byte") + " of data on disk (" +
                             plural(out.declared_packets, "packet") + " declared, " +
                             std::to_string(out.whole_packets) + " whole on disk); data written after the last " +
                             "header update (e.g. before a crash) is not declared.");
    }
  }
  if (out.trailing_bytes != 0) {
    consistent = false;
    out.problems.push_back("partial trailing packet: " + plural(out.trailing_bytes, "byte") + " after the last of " +
                           plural(out.whole_packets, "whole packet") + " (rtpLen " + std::to_string(rtp) + ").");
  }
  out.integrity = consistent ? Integrity::kOk : Integrity::kRepairable;

  if (out.clock_rate != 0) {
    const auto inc = static_cast<std::uint64_t>(h.increment);  // plausible: 1 .. 1000000
    out.period_s = static_cast<double>(inc) / out.clock_rate;
    // The spec's formula, packets * increment / clock, with the product taken in integers (exact
    // below 2^64, then one rounding) so whole-second recordings give exact durations.
    const std::uint64_t packets = readable_packets(out);
    out.duration_s = packets <= UINT64_MAX / inc
                         ? static_cast<double>(packets * inc) / out.clock_rate
                         : static_cast<double>(packets) * static_cast<double>(inc) / out.clock_rate;
  }
  return Status::ok();
}

}  // namespace

const char* integrity_name(Integrity i) {
  switch (i) {
    case Integrity::kOk:
      return "ok";
    case Integrity::kRepairable:
      return "repairable";
    case Integrity::kBroken:
      return "broken";
  }
  return "unknown";
}

Status inspect_record(const std::filesystem::path& path, RecordInfo& out) {
  out = RecordInfo{};
  out.path = path;
  int fd = -1;
  if (Status s = open_file(path, O_RDONLY, fd); !s) return s;
  FdGuard guard(fd);
  return inspect_fd(fd, path, out);
}

// ---- RecordReader -----------------------------------------------------------------------------

RecordReader::~RecordReader() {
  if (fd_ >= 0) (void)::close(fd_);
}

Status RecordReader::open(const std::filesystem::path& path) {
  if (fd_ >= 0) {
    (void)::close(fd_);  // read-only: nothing to lose
    fd_ = -1;
  }
  info_ = RecordInfo{};
  packet_count_ = 0;
  read_ = 0;
  buf_pos_ = 0;
  buf_len_ = 0;

  int fd = -1;
  if (Status s = open_file(path, O_RDONLY, fd); !s) return s;
  FdGuard guard(fd);
  if (Status s = inspect_fd(fd, path, info_); !s) return s;
  if (info_.integrity == Integrity::kBroken) {
    return Status(EINVAL, quoted(path) + ": not a readable record file: " +
                               join(info_.problems, " "));
  }
  packet_count_ = readable_packets(info_);
  const auto rtp = static_cast<std::size_t>(info_.decoded.header.rtp_len);
  const std::size_t per_read = std::max<std::size_t>(1, kReadAheadBytes / rtp);
  buf_.resize(per_read * rtp);
  fd_ = guard.release();
  return Status::ok();
}

std::optional<std::span<const std::byte>> RecordReader::next(Status* err) {
  if (fd_ < 0 || read_ >= packet_count_) return std::nullopt;
  const auto rtp = static_cast<std::size_t>(info_.decoded.header.rtp_len);
  if (buf_len_ - buf_pos_ < rtp) {
    // Refill with as many whole packets as remain, up to the read-ahead size.
    const std::uint64_t remaining = packet_count_ - read_;
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(remaining, buf_.size() / rtp)) * rtp;
    const std::uint64_t offset = kHeaderSize + read_ * rtp;
    std::size_t got = 0;
    Status s = pread_full(fd_, buf_.data(), want, offset, got, info_.path);
    buf_pos_ = 0;
    buf_len_ = got - got % rtp;
    if (!s || buf_len_ == 0) {
      if (s) {
        s = Status(EIO, quoted(info_.path) + ": file ended after " + std::to_string(read_) + " of " +
                            std::to_string(packet_count_) + " packets (was it truncated while being read?)");
      }
      if (err != nullptr) *err = std::move(s);
      packet_count_ = read_;  // stop here: later calls return nullopt
      buf_len_ = 0;
      return std::nullopt;
    }
  }
  const std::span<const std::byte> pkt(buf_.data() + buf_pos_, rtp);
  buf_pos_ += rtp;
  ++read_;
  return pkt;
}

// ---- repair -----------------------------------------------------------------------------------
// For a closed file (after a crash): it takes no lock, so it must not run on a segment that a
// RecordWriter still has open. The partial packet is cut before dataSize is rewritten; a crash
// between the two leaves a file that is still repairable. dataSize keeps the header's byte order
// and is capped at max_data_size(rtpLen): whole packets beyond it are never truncated.

Status repair_record(const std::filesystem::path& path, RepairResult& out) {
  out = RepairResult{};
  int fd = -1;
  if (Status s = open_file(path, O_RDWR, fd); !s) return s;
  FdGuard guard(fd);
  RecordInfo info;
  if (Status s = inspect_fd(fd, path, info); !s) return s;
  if (info.integrity == Integrity::kBroken) {
    return Status(EINVAL, quoted(path) + ": refusing to repair, not a record file: " +
                                join(info.problems, " "));
  }
  const RecordHeader& h = info.decoded.header;
  const auto rtp = static_cast<std::uint64_t>(h.rtp_len);
  const std::uint64_t cap = max_data_size(static_cast<std::uint32_t>(rtp));
  const std::uint64_t whole_bytes = info.whole_packets * rtp;
  const auto new_size = static_cast<std::uint32_t>(std::min(whole_bytes, cap));
  out.old_data_size = h.data_size;
  out.new_data_size = new_size;

  std::vector<std::string> changes;
  if (info.trailing_bytes != 0) {
    const std::uint64_t keep = kHeaderSize + whole_bytes;
    int rc = 0;
    do {
      rc = ::ftruncate(fd, static_cast<off_t>(keep));
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) {
      return Status::from_errno(quoted(path) + ": cannot truncate the partial trailing packet (to " +
                                std::to_string(keep) + " bytes)");
    }
    out.truncated_bytes = info.trailing_bytes;
    changes.push_back("removed a partial trailing packet (" + plural(info.trailing_bytes, "byte") + ")");
  }
  if (new_size != h.data_size) {
    std::array<std::byte, 4> field{};
    const auto encoded = encode_header(RecordHeader{"", 0, 0, new_size}, info.decoded.order);
    std::copy_n(encoded.begin() + kDataSizeOffset, field.size(), field.begin());
    if (Status s = pwrite_full(fd, field.data(), field.size(), kDataSizeOffset, path); !s) return s;
    changes.push_back("dataSize " + std::to_string(h.data_size) + " -> " + std::to_string(new_size) + " (" +
                      plural(new_size / rtp, "whole packet") + ", " +
                      (info.decoded.order == ByteOrder::kLittle ? "little" : "big") + "-endian)");
  }
  out.changed = !changes.empty();
  if (out.changed && ::fsync(fd) != 0) return Status::from_errno(quoted(path) + ": fsync after repair failed");
  if (::close(guard.release()) != 0) return Status::from_errno(quoted(path) + ": close after repair failed");

  std::string tail;
  if (whole_bytes > cap) {
    tail = "; " + plural(whole_bytes - cap, "byte") + " of whole packets beyond the 32-bit dataSize limit (" +
           std::to_string(cap) + ") stay on disk undeclared";
  }
  out.summary = path.string() + ": " +
                (out.changed ? "repaired: " + join(changes, ", ")
                             : "nothing to repair (" + plural(new_size / rtp, "packet") + ", dataSize " +
                                   std::to_string(new_size) + ")") +
                tail;
  return Status::ok();
}

}  // namespace callrec::fileio
