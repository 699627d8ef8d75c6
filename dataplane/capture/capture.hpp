#pragma once
// Where mirror traffic comes from: capture files (pcap and pcapng) and live interfaces
// (libpcap: TPACKET_V3 ring underneath, promiscuous, optional BPF filter). Both hand out
// frames with their link type and capture time; the span lane decodes them.
//
// Files: read by two small readers here, pcapng and classic pcap, over one 2 MiB read buffer
// that frames are handed out of without a copy (read_burst()). pcapng, because libpcap 1.10 ends
// the read at the first interface whose link type differs from the first one's ("an interface
// has a type ... different from the type of the first interface"), and real captures
// (any-interface captures, mirrors with a management port) have those. Classic pcap, because
// libpcap copies every frame twice (stdio's buffer, then its own) and the lane's burst needed a
// third: the reader was over a third of an offline run (bench/RESULTS.md). Rarer forms (the
// "modified" pcap of old Red Hat patches) still go to libpcap. Both readers are bounded (pcapng
// blocks over 16 MiB, pcap records over 256 KiB end the read with an error), tested against
// libpcap, and fuzzed.
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "fileio/status.hpp"

namespace callrec::dataplane::capture {

struct Frame {
  std::span<const std::byte> data;  ///< valid until the next call
  std::uint32_t link = 0;           ///< LINKTYPE_*
  std::uint64_t ts_ns = 0;          ///< Unix ns
  std::uint32_t orig_len = 0;       ///< length on the wire (> data.size(): cut by the snap length)
};

class FrameSource {
 public:
  virtual ~FrameSource() = default;
  /// 1: a frame; 0: nothing now (live) or end of file; -1: error (error() says what).
  virtual int next(Frame& f) = 0;
  /// Up to `max` frames into out; every frame of the call stays valid until the next call of
  /// read_burst() or next(). The count; 0: nothing now or the end; -1: error. The capture file
  /// readers hand out frames in their read buffer (no copy); others give one frame at a time.
  virtual int read_burst(Frame* out, unsigned max) { return max == 0 ? 0 : next(*out); }
  [[nodiscard]] virtual bool eof() const = 0;
  [[nodiscard]] virtual std::string error() const = 0;
};

/// Frames gathered into a burst for the lane (SpanLane::on_burst), which decodes them all and
/// then overlaps the memory misses of their endpoint and stream lookups (STYLE.md's burst of
/// 32). A FrameSource's frame is valid only until its next call, so the burst copies each one
/// into its own arena: ~10 ns for a 172-byte frame, against the ~100-300 ns of a dependent miss
/// per packet that the burst hides (bench/RESULTS.md, passive capture).
class FrameBurst {
 public:
  static constexpr unsigned kMax = 32;
  explicit FrameBurst(std::size_t arena_bytes = std::size_t{256} << 10) : arena_(arena_bytes) {}
  /// Copies `f` in (its timestamp as given). false: no room (the burst is full, or the arena
  /// is): process and clear the burst, then add again; a frame larger than the whole arena never
  /// fits and is processed on its own.
  bool add(const Frame& f) {
    if (n_ == kMax || f.data.size() > arena_.size() - used_) return false;
    std::byte* d = arena_.data() + used_;
    if (!f.data.empty()) std::memcpy(d, f.data.data(), f.data.size());
    frames_[n_] = f;
    frames_[n_].data = {d, f.data.size()};
    used_ += (f.data.size() + 63) & ~std::size_t{63};  // each frame on its own cache lines
    if (used_ > arena_.size()) used_ = arena_.size();
    ++n_;
    return true;
  }
  [[nodiscard]] std::span<const Frame> frames() const { return {frames_.data(), n_}; }
  [[nodiscard]] bool empty() const { return n_ == 0; }
  [[nodiscard]] bool full() const { return n_ == kMax; }
  void clear() {
    n_ = 0;
    used_ = 0;
  }

 private:
  std::vector<std::byte> arena_;
  std::array<Frame, kMax> frames_{};
  unsigned n_ = 0;
  std::size_t used_ = 0;
};

/// Opens a pcap or pcapng file (by its magic number): pcapng and the four usual forms of
/// classic pcap with the readers here (read_burst() without a copy), anything else with libpcap.
std::unique_ptr<FrameSource> open_file(const std::string& path, Status& st);
/// The same file through libpcap whatever its format (pcapng of one link type, classic pcap):
/// the reference the readers here are tested against.
std::unique_ptr<FrameSource> open_with_libpcap(const std::string& path, Status& st);

/// The pcapng reader over a byte buffer (for tests and the fuzz target).
std::unique_ptr<FrameSource> pcapng_from_memory(std::span<const std::byte> bytes);
/// The reader open_file() would use for these bytes (pcapng or classic pcap), or nullptr when
/// libpcap would have to read them (for tests and the fuzz target).
std::unique_ptr<FrameSource> capture_from_memory(std::span<const std::byte> bytes);

struct LiveOptions {
  std::string interface;
  std::string filter;             ///< BPF (empty: everything)
  std::size_t buffer_bytes = 64u << 20;
  int snaplen = 65535;
};

/// A live capture: non-blocking, selectable.
class LiveCapture final : public FrameSource {
 public:
  static std::unique_ptr<LiveCapture> open(const LiveOptions& o, Status& st);
  ~LiveCapture() override;
  int next(Frame& f) override;
  [[nodiscard]] bool eof() const override { return false; }
  [[nodiscard]] std::string error() const override { return error_; }
  [[nodiscard]] int fd() const;
  /// Kernel counters (pcap_stats): received, dropped by the kernel (ring full), by the interface.
  bool kernel_stats(std::uint64_t& recv, std::uint64_t& drop, std::uint64_t& ifdrop) const;
  [[nodiscard]] const std::string& interface() const { return iface_; }

 private:
  LiveCapture() = default;
  void* pcap_ = nullptr;
  std::uint32_t link_ = 0;
  std::string iface_, error_;
};

struct DpdkCaptureOptions {
  std::vector<std::string> eal_args;  ///< EAL arguments (--no-huge --no-pci -m 512 ...)
  /// A PCI address or port name, or a virtual device string ("net_pcap0,rx_pcap=F",
  /// "net_af_packet0,iface=eth1"): given to EAL as --vdev, the port is its name.
  std::string port;
  unsigned mbufs = 8191;
  unsigned mbuf_data_room = 0;  ///< bytes per mbuf incl. headroom; 0: RTE_MBUF_DEFAULT_BUF_SIZE
  /// Lanes polling the port (lane_burst()): lane 0 reads the RX queue and spreads the frames by a
  /// symmetric hash of their address pair (dataplane/span/spread.hpp) through one ring per
  /// other lane; mbufs travel, bytes are not copied.
  unsigned lanes = 1;
  unsigned lane_ring = 2048;  ///< frames a lane's ring holds (power of two)
};

/// A DPDK port in promiscuous mode as a mirror port: one RX queue, polled by the caller's lanes
/// (SpanLaneGroup: lane threads of their own). Frames carry the host's clock at the RX burst (no
/// NIC timestamps). Only in builds with DPDK (open() says so otherwise).
class DpdkCapture final : public FrameSource {
 public:
  static std::unique_ptr<DpdkCapture> open(const DpdkCaptureOptions& o, Status& st);
  ~DpdkCapture() override;
  int next(Frame& f) override;
  /// Up to `max` (<= 32) frames of one rx burst, straight out of their mbufs (no copy: they
  /// stay valid until the next call of next_burst or next). 0: nothing received.
  unsigned next_burst(Frame* out, unsigned max) { return lane_burst(0, out, max); }
  /// next_burst() for lane `lane` (its thread only): lane 0 polls the NIC and keeps its share,
  /// the others take what lane 0 handed them. Frames stay valid until the lane's next call.
  unsigned lane_burst(unsigned lane, Frame* out, unsigned max);
  /// Lane threads call this first: the thread becomes an EAL thread (its own mempool cache).
  void register_lane_thread();
  [[nodiscard]] unsigned lanes() const;
  /// Frames lane 0 could not hand to a lane: its ring was full (lane 0 reads the NIC only when
  /// every lane's ring has room for a burst, so this stays 0; a lane that falls behind shows
  /// as spread_waits() and, when the NIC's ring overflows meanwhile, as its imissed).
  [[nodiscard]] std::uint64_t spread_dropped() const;
  [[nodiscard]] std::uint64_t spread_waits() const;
  [[nodiscard]] bool eof() const override { return false; }
  [[nodiscard]] std::string error() const override { return {}; }
  /// NIC counters: imissed (the NIC's ring was full), rx_nombuf (no mbuf).
  void nic_stats(std::uint64_t& missed, std::uint64_t& nombuf) const;
  [[nodiscard]] const std::string& port() const { return name_; }

 private:
  DpdkCapture() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string name_;
};

}  // namespace callrec::dataplane::capture
