#pragma once
// Reads and checks a record file: validates the header, iterates whole packets, computes
// what the seed's player computes (period, duration), and describes damage precisely
// (dataSize disagreeing with the file length, a partial trailing packet, an implausible header).
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "fileio/record_format.hpp"
#include "fileio/status.hpp"

namespace callrec::fileio {

enum class Integrity : std::uint8_t {
  kOk,          ///< header plausible, dataSize == bytes on disk, whole packets only
  kRepairable,  ///< header plausible but dataSize disagrees with disk / partial trailing packet
  kBroken,      ///< header unreadable or implausible: not a record file we can interpret
};
const char* integrity_name(Integrity i);

struct RecordInfo {
  std::filesystem::path path;
  HeaderDecode decoded;                 ///< header + byte order + plausibility problems
  std::optional<Codec> codec;           ///< nullopt when the codec name is unknown
  std::uint64_t file_size = 0;
  std::uint64_t bytes_on_disk = 0;      ///< file_size - 76 (0 if shorter)
  std::uint64_t whole_packets = 0;      ///< whole rtpLen packets physically present
  std::uint64_t declared_packets = 0;   ///< dataSize / rtpLen
  std::uint64_t trailing_bytes = 0;     ///< bytes of a partial last packet
  std::uint32_t clock_rate = 0;         ///< 0 for an unknown codec
  double period_s = 0;                  ///< increment / clock
  double duration_s = 0;                ///< packets * increment / clock (packets actually readable)
  Integrity integrity = Integrity::kBroken;
  std::vector<std::string> problems;    ///< everything wrong, one sentence each
};

/// Inspects a file without changing it. Fails only when the file cannot be opened/read
/// (the Status names the file); format damage is reported in RecordInfo::problems.
Status inspect_record(const std::filesystem::path& path, RecordInfo& out);

/// Sequential packet reader over the readable packets of a file:
/// min(declared, whole) packets when dataSize is sane, all whole packets otherwise.
class RecordReader {
 public:
  RecordReader() = default;
  RecordReader(const RecordReader&) = delete;
  RecordReader& operator=(const RecordReader&) = delete;
  ~RecordReader();

  /// Opens and inspects; fails (with the problems joined) when integrity is kBroken.
  Status open(const std::filesystem::path& path);
  [[nodiscard]] const RecordInfo& info() const { return info_; }
  /// Packets this reader will return in total.
  [[nodiscard]] std::uint64_t packet_count() const { return packet_count_; }
  /// Reads the next packet into an internal buffer; nullopt at the end (or sets *err on I/O error).
  std::optional<std::span<const std::byte>> next(Status* err = nullptr);

 private:
  int fd_ = -1;
  RecordInfo info_;
  std::uint64_t packet_count_ = 0;
  std::uint64_t read_ = 0;
  std::vector<std::byte> buf_;   ///< read-ahead of many packets
  std::size_t buf_pos_ = 0;
  std::size_t buf_len_ = 0;
};

/// What repair_record did.
struct RepairResult {
  bool changed = false;
  std::uint32_t old_data_size = 0;
  std::uint32_t new_data_size = 0;
  std::uint64_t truncated_bytes = 0;  ///< partial trailing packet removed
  std::string summary;                ///< one line for people
};

/// Recomputes dataSize from the whole packets on disk and truncates a partial trailing packet.
/// Refuses (error) a kBroken file. Safe to run on a healthy file (changes nothing).
Status repair_record(const std::filesystem::path& path, RepairResult& out);

}  // namespace callrec::fileio
