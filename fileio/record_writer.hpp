#pragma once
// Writes one recording as a chain of record files ("segments").
//
// Owned by exactly one thread (a writer thread, or a tool); not thread-safe.
// - Names: "Record_<UTC yyyymmddThhmmss.mmm>Z[_<tag>]_<n>.rec", created with O_EXCL so two
//   recordings starting in the same millisecond never collide; the tag is sanitized to
//   [A-Za-z0-9.-] (it may come from the network).
// - Before creating a file the free space of the directory is checked against
//   reserve_bytes + the file's expected size; short space is refused with ENOSPC.
// - Rotation: a new file when the next packet would take the file past max_file_bytes, or past
//   the largest whole-packet dataSize that fits 32 bits.
// - Buffering: packets are copied into a per-writer buffer; it is written with one write(2)
//   when full. dataSize in the header is rewritten at flush() (call it on a bounded interval,
//   see flush_if_due) and on close. After a failed write the file is truncated back to the
//   last whole packet and dataSize rewritten, so what is on disk is always a valid file.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "fileio/record_format.hpp"
#include "fileio/status.hpp"

namespace callrec::fileio {

/// Free bytes available to an unprivileged writer at `dir` (statvfs f_bavail * f_frsize).
Status free_space_statvfs(const std::filesystem::path& dir, std::uint64_t& free_bytes);

using FreeSpaceFn = std::function<Status(const std::filesystem::path& dir, std::uint64_t& free_bytes)>;

struct WriterOptions {
  std::filesystem::path directory;          ///< must exist
  std::string tag;                          ///< optional, sanitized into the file name
  std::uint64_t max_file_bytes = 0;         ///< 0: no limit but the 32-bit dataSize
  std::uint64_t reserve_bytes = 64ull << 20;///< free space that must remain on the volume
  std::uint64_t expected_file_bytes = 1ull << 20; ///< space asked for, beyond the reserve, at creation
  std::size_t buffer_bytes = 8192;          ///< write buffer (rounded up to hold >= 1 packet)
  std::chrono::milliseconds flush_interval{1000};
  FreeSpaceFn free_space;                   ///< empty: free_space_statvfs
  /// File names and segment times from packet time (passive capture: a capture file processed
  /// at full speed is named as it was live): the rx_ns given to set_packet_time() is Unix ns.
  bool packet_clock = false;
};

/// Descriptors: a writer keeps its segment file open only while it holds one of a process-wide
/// budget of slots (default 4,096); beyond that, it reopens the file for each write (about one
/// per second of audio: the buffer is 8 KiB) and closes it again, so recordings are not bounded
/// by RLIMIT_NOFILE (20,000 streams would otherwise need 20,000 descriptors). Control thread, at
/// start-up: the daemon sets the budget from its limit.
void set_record_fd_budget(std::int64_t slots);
std::int64_t record_fd_budget_left();

/// One file of a recording.
struct SegmentInfo {
  std::filesystem::path path;
  std::uint32_t index = 0;         ///< 0, 1, 2 ... within this writer
  std::string codec;
  std::uint32_t rtp_len = 0;
  std::uint32_t increment = 0;
  std::uint64_t packets = 0;       ///< packets durably written (reflected in dataSize on close)
  std::chrono::system_clock::time_point opened;
  std::chrono::system_clock::time_point closed;
};

/// Makes a file-name-safe version of s: keeps [A-Za-z0-9.-], maps others to '_', at most 48 chars,
/// never "." or "..".
std::string sanitize_name_part(std::string_view s);

/// Largest number of data bytes (whole packets of rtp_len) one segment may hold: the largest
/// dataSize that fits 32 bits and, when max_file_bytes != 0, the file limit minus the header --
/// but never less than one packet (a limit below header + 1 packet still stores one per file).
/// The writer rotates before a packet would take the segment past this.
constexpr std::uint64_t segment_data_limit(std::uint32_t rtp_len, std::uint64_t max_file_bytes) {
  if (rtp_len == 0) return 0;
  std::uint64_t limit = max_data_size(rtp_len);
  if (max_file_bytes != 0) {
    const std::uint64_t room = max_file_bytes > kHeaderSize ? max_file_bytes - kHeaderSize : 0;
    const std::uint64_t by_file = room / rtp_len * rtp_len;
    if (by_file < limit) limit = by_file;
  }
  return limit < rtp_len ? rtp_len : limit;
}

class RecordWriter {
  // Hot: the state append() reads and writes, first and together (two cache lines): a writer
  // thread touches it for a different stream at nearly every packet.
  int fd_ = -1;                           ///< -1 while parked (or no segment)
  bool seg_open_ = false;                 ///< a segment file exists and takes packets
  bool own_slot_ = false;                 ///< holds one of the process's kept descriptors
  Status ensure_fd();                     ///< reopens a parked segment file
  void park_fd();                         ///< closes the descriptor of a writer without a slot
  std::uint32_t rtp_len_ = 0;
  bool closed_ = false;
  bool paused_ = false;
  std::size_t buf_len_ = 0;
  std::size_t buf_cap_ = 0;               ///< whole packets that fit buffer_bytes (>= 1 packet)
  std::uint64_t file_data_bytes_ = 0;     ///< data bytes durably written to the open file
  std::uint64_t data_limit_ = 0;          ///< segment_data_limit(rtp_len_, max_file_bytes)
  std::uint64_t bytes_written_total_ = 0;
  std::vector<std::byte> buf_;
  Status failed_;                         ///< sticky write error; cleared by close_segment()

 public:
  explicit RecordWriter(WriterOptions opts);
  RecordWriter(const RecordWriter&) = delete;
  RecordWriter& operator=(const RecordWriter&) = delete;
  ~RecordWriter();  ///< closes the open segment (errors only logged to the status of close())

  /// Declares the format of the packets that follow. Opens a file lazily on the first packet;
  /// a different format than the current segment's closes it (a new segment begins).
  Status set_format(std::string_view codec, std::uint32_t rtp_len, std::uint32_t increment);

  /// Appends one packet; pkt.size() must equal the current rtp_len (else EINVAL, nothing written).
  /// Ignored (counted) while paused. May open a file, rotate, or write the buffer.
  Status append(std::span<const std::byte> pkt);

  /// Writes buffered data and rewrites dataSize.
  Status flush();
  /// flush() when flush_interval has passed since the last flush (cheap otherwise).
  Status flush_if_due(std::chrono::steady_clock::time_point now);

  /// Finishes the current file (flush, dataSize, close). The next append opens a new segment.
  Status close_segment();
  /// close_segment(); the writer accepts no more packets (append -> EBADF).
  Status close();

  /// packet_clock: the capture time (Unix ns) of the packet about to be appended.
  void set_packet_time(std::uint64_t unix_ns) { packet_ns_ = unix_ns; }

  void pause() { paused_ = true; }
  void resume() { paused_ = false; }
  [[nodiscard]] bool paused() const { return paused_; }

  /// Every segment this writer has opened, the open one last.
  [[nodiscard]] const std::vector<SegmentInfo>& segments() const { return segments_; }
  [[nodiscard]] bool segment_open() const { return seg_open_; }
  [[nodiscard]] std::uint64_t packets_dropped_paused() const { return dropped_paused_; }
  [[nodiscard]] std::uint64_t bytes_written() const { return bytes_written_total_; }
  /// Hints for a caller that batches packets of many streams (no effect on behaviour): the
  /// lines of this object append() reads, then the buffer lines the next packet goes to.
  void prefetch_state() const {
    __builtin_prefetch(&fd_);
    __builtin_prefetch(&buf_);
  }
  void prefetch_buffers() const {
    const std::byte* p = buf_.data() + buf_len_;
    for (std::uint32_t o = 0; o < rtp_len_ + 63; o += 64) __builtin_prefetch(p + o, 1);
  }
  /// Called after a segment is closed (for the catalog). Not called on the per-packet path.
  std::function<void(const SegmentInfo&)> on_segment_closed;
  std::function<void(const SegmentInfo&)> on_segment_opened;

 private:
  Status open_segment();
  Status write_buffer();
  Status write_data_size();
  Status recover_after_write_error(const Status& st);
  Status finish_segment();   ///< flush + close, keeps failed_
  Status close_file();       ///< close(2), stamp SegmentInfo, on_segment_closed

  // Cold: per segment, per flush, per error.
  WriterOptions opts_;
  std::string codec_;
  std::uint32_t increment_ = 0;
  std::uint64_t header_data_size_ = 0;    ///< dataSize currently in the header on disk
  std::uint64_t dropped_paused_ = 0;
  std::uint64_t packet_ns_ = 0;           ///< packet_clock: latest packet time (Unix ns)
  [[nodiscard]] std::chrono::system_clock::time_point now() const;
  std::vector<SegmentInfo> segments_;
  std::chrono::steady_clock::time_point last_flush_{};
};

}  // namespace callrec::fileio
