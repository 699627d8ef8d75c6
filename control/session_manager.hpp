#pragma once
// The session layer shared by every ingest path (phone upload now; passive SPAN capture and
// the SIPREC server later). A recording is metadata plus one or more RTP streams; the manager
// owns its lifecycle:
//
//   start()  -> ports allocated, flows installed in the dataplane, streams opened in writers,
//               catalog row inserted, "start" log line
//   stop()   -> flows removed (the dataplane marks each stream's end in-band), state stopping
//   writer kStreamClosed for every stream -> catalog finished with statistics, ports
//               quarantined, "stop" log line, owner notified if the server initiated the stop
//
// Server-initiated stops: no_space (a writer hit ENOSPC), rtp_timeout (no RTP for too long),
// shutdown, operator. The owner of the recording (the TCP connection, a SIP dialog) is told
// through RecordingOwner so it can tell its peer (RecordStopRequest, BYE ...).
//
// Thread: everything here runs on the control thread (the event loop). No locks.
#include <netinet/in.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "control/port_allocator.hpp"
#include "dataplane/source.hpp"
#include "fileio/catalog.hpp"
#include "fileio/record_format.hpp"
#include "fileio/writer_pool.hpp"

namespace callrec::control {

enum class IngestKind : std::uint8_t { kUpload, kSpan, kSiprec };
const char* ingest_name(IngestKind k);

using RecordingHandle = std::uint64_t;

struct RecordingMetadata {
  std::string call_id;        ///< the peer's id for the recording (phone id, SIP Call-ID ...)
  std::string device;
  std::string remote_number, remote_name, local_number, local_name;
  std::string direction;      ///< "in" / "out"
  std::string codec;          ///< "PCMA" / "PCMU"
  std::vector<std::pair<std::string, std::string>> extra;  ///< unknown keys, kept
};

/// Fields a stop may override (only the present ones replace the stored values).
struct MetadataOverrides {
  std::optional<std::string> remote_number, remote_name, local_number, local_name;
  std::vector<std::pair<std::string, std::string>> extra;
};

/// The ingest-side owner of a recording. Called on the control thread.
class RecordingOwner {
 public:
  virtual ~RecordingOwner() = default;
  /// The server ended the recording (reason: no_space, rtp_timeout, shutdown, operator ...).
  virtual void on_server_stop(RecordingHandle h, const std::string& call_id, const std::string& reason) = 0;
};

struct SessionConfig {
  std::filesystem::path storage;
  std::chrono::seconds rtp_timeout{30};
  /// Latch the first RTP source seen. The expected address is always the phone's (port 0):
  /// latch fixes the port (NAT rewrites it) from the phone's own address.
  bool latch = false;
  /// With latch: the first source from ANY address is latched (weaker: a host that sprays the
  /// port before the phone's first packet takes the recording). Off by default.
  bool latch_any = false;
  std::uint64_t reserve_bytes = 256ull << 20;
  std::uint64_t max_file_bytes = 0;
  std::chrono::milliseconds flush_interval{1000};
  fileio::AssemblerOptions assembler;
  fileio::FreeSpaceFn free_space;  ///< empty: statvfs
};

/// One stream of a recording that the caller observes (passive capture): no port is
/// allocated; the caller's source installs and moves its flows (by endpoint) itself.
struct StreamPlan {
  std::string role;                ///< "caller" / "callee" (catalog, file name tag)
  fileio::AssemblerOptions assembler;
  /// Allocated streams (StartParams::allocate, add_streams): the RTP source expected (port 0:
  /// any port of that address). AF_UNSPEC: the recording's peer address (with latch_any: any).
  sockaddr_storage expected{};
  /// The catalog's streams row as known at the start (label, participant, flags ...).
  fileio::StreamRow info;
};

struct StartParams {
  IngestKind kind = IngestKind::kUpload;
  RecordingMetadata meta;
  sockaddr_storage peer{};   ///< expected RTP source address (port ignored unless latch is off and set)
  std::string peer_text;     ///< for logs and the catalog
  RecordingOwner* owner = nullptr;
  unsigned streams = 1;      ///< RTP streams to receive (upload: 1; span/siprec: 2)
  /// Non-empty: "observe these streams" instead of "allocate a local port per stream" (streams
  /// is then observe.size()). The flows live in `source` (the caller's: it installs them by
  /// endpoint, may move them, and removes them when the manager stops the recording), media
  /// time is the packets' capture time (Unix ns: file names and times follow it), and the
  /// caller owns the media timeout (the manager's rtp_timeout does not apply).
  std::vector<StreamPlan> observe;
  dataplane::Source* source = nullptr;
  std::int64_t started_ms = 0;  ///< 0: now (offline capture: the packet time)
  /// Non-empty: one allocated port per plan, each stream with its own assembler options,
  /// expected source and catalog row (SIPREC: one stream per offered m-line). `streams` is then
  /// allocate.size().
  std::vector<StreamPlan> allocate;
};

struct StartResult {
  bool ok = false;
  std::string reason;                ///< machine reason when !ok (no_port, no_space, ...)
  RecordingHandle handle = 0;
  std::vector<std::uint16_t> ports;  ///< one per stream (0 for observed streams)
  std::vector<fileio::StreamId> streams;  ///< the stream ids, in plan order
};

struct SessionCounters {
  std::uint64_t started = 0, start_failed = 0, stopped = 0;
  std::uint64_t stop_by_peer = 0, stop_no_space = 0, stop_rtp_timeout = 0, stop_shutdown = 0,
                stop_operator = 0, stop_disconnect = 0, stop_error = 0,
                stop_storage_lost = 0;
  std::uint64_t no_port = 0;
  std::uint64_t stop_overrides_ignored = 0;  ///< stop fields naming server-owned values (device, codec ...)
  std::uint64_t overloaded = 0;
  std::uint64_t reserve_stops = 0;  ///< recordings stopped (no_space) because free space fell below the reserve
  std::uint64_t storage_lost = 0;   ///< times the storage or a device directory was found removed/replaced
  std::uint64_t stalls = 0;         ///< control-thread stalls (ticks far apart) that restarted the RTP timeouts  ///< starts refused because the process ran out of descriptors/memory
};

/// A recording as the manager sees it (also what `callrec status` shows).
struct RecordingView {
  RecordingHandle handle;
  IngestKind kind;
  RecordingMetadata meta;
  std::string peer;
  std::vector<std::uint16_t> ports;
  std::int64_t started_ms;
  bool stopping;
  std::uint64_t packets;  ///< written + filled, from the latest writer stats
  std::uint64_t bytes;
};

class SessionManager {
 public:
  SessionManager(SessionConfig cfg, fileio::Catalog& catalog, fileio::WriterPool& writers,
                 dataplane::Source& source, PortAllocator& ports);
  ~SessionManager();

  StartResult start(const StartParams& p);
  /// server_initiated == false: the peer's stop. The catalog's stop reason is the peer's
  /// ("phone" for the upload path, "hangup" for others); `reason` is the peer's own and kept as
  /// metadata (extra `phone_reason`), never counted as a server stop cause (a phone's
  /// reason=no_space is not a server no-space stop). Overrides: the four numbers/names replace
  /// the stored values; extra keys naming a server-owned value (fileio::is_server_owned_key:
  /// device, codec, peer, dir ...) are ignored, counted (stop_overrides_ignored) and logged;
  /// other extra keys are merged into the recording's extras.
  /// server_initiated == true: a server stop (operator, no_space ...): `reason` is stored and
  /// counted, and the owner is notified.
  /// Returns false when the handle is unknown or already stopping.
  /// at_ms: the stop time (0: now; offline capture: the packet time).
  bool stop(RecordingHandle h, const MetadataOverrides& ov, const std::string& reason,
            bool server_initiated, std::int64_t at_ms = 0);
  /// Observed streams: what the caller knows of stream `index` (endpoints, flags, RTCP and DTMF
  /// counts, first/last packet times); written to the catalog's streams row when the recording
  /// finishes, with the writer's counters.
  void set_stream_info(RecordingHandle h, unsigned index, const fileio::StreamRow& info);
  /// An event of a running (or stopping) recording (DTMF ...), to the catalog now.
  void add_event(RecordingHandle h, const fileio::EventRow& ev);
  /// Allocated recordings (SIPREC re-INVITE adding m-lines): more streams, each on a new port
  /// (res.ports, res.streams in plan order; their indexes follow the existing streams). On
  /// failure nothing was added.
  StartResult add_streams(RecordingHandle h, const std::vector<StreamPlan>& plans);
  /// Ends one stream of a running recording (an m-line removed); the recording goes on, and
  /// the stream's row and files stay in the catalog. False when unknown or already ended.
  bool end_stream(RecordingHandle h, unsigned index);
  /// Pauses (true) or resumes one stream: while paused its packets are not recorded and its
  /// silence does not count towards rtp_timeout (a recording whose every live stream is paused
  /// never times out). Resuming restarts its silence clock.
  void set_stream_paused(RecordingHandle h, unsigned index, bool paused);
  /// Replaces the recording's metadata in the catalog (an update of the peer's metadata while
  /// recording): the numbers and names, and the extra keys given (merged).
  void update_metadata(RecordingHandle h, const RecordingMetadata& meta);
  /// Participants of the recorded call (SIPREC), replaced as a whole in the catalog.
  void set_participants(RecordingHandle h, const std::vector<fileio::ParticipantRow>& parts);
  /// The catalog id of a recording (0 when unknown).
  [[nodiscard]] std::int64_t catalog_id(RecordingHandle h) const;
  /// Every recording of an owner (its connection failed): stopped with `reason`, no notification.
  void stop_owned_by(RecordingOwner* owner, const std::string& reason);
  /// Server stop of everything (shutdown).
  void stop_all(const std::string& reason);

  /// Feed writer events (kStats, kError, kSegment*, kStreamClosed).
  void on_writer_events(std::vector<fileio::WriterEvent>& events);
  /// Periodic (about once a second):
  /// - a stall of the daemon itself (ticks more than 1.5 s apart: SIGSTOP, a VM pause) restarts
  ///   every recording's silence clock, so the stall is not taken for the phones' silence;
  /// - the storage directory (one stat) and the device directories of running recordings: one
  ///   removed or replaced ends its recordings with storage_lost and is re-created;
  /// - the storage volume's free space (one statvfs, cfg.free_space when set): below
  ///   reserve_bytes, every running recording is stopped with no_space before the volume is
  ///   full (all: the reserve must absorb about one second of the whole write rate);
  /// - RTP timeouts.
  void tick(std::chrono::steady_clock::time_point now);

  [[nodiscard]] std::size_t active() const { return recs_.size(); }
  [[nodiscard]] bool idle() const { return recs_.empty(); }
  [[nodiscard]] const SessionCounters& counters() const { return counters_; }
  [[nodiscard]] std::vector<RecordingView> list() const;
  /// Recordings of an owner that are not stopping (per-address limits, idle eviction).
  [[nodiscard]] std::size_t active_of(const RecordingOwner* owner) const {
    auto it = owners_.find(owner);
    return it == owners_.end() ? 0 : it->second.active.size();
  }
  /// True while the owner has any recording, stopping ones included.
  [[nodiscard]] bool owns_any(const RecordingOwner* owner) const { return owners_.contains(owner); }
  /// Finds a live recording by the owner's id for it.
  [[nodiscard]] std::optional<RecordingHandle> find(const RecordingOwner* owner, const std::string& call_id) const;

  /// Crash recovery at start-up: repairs files of recordings left open and closes them in the
  /// catalog with reason "recovered". Record files in their device directories (under
  /// `storage`) that no catalog row references were created after the last commit before the
  /// crash: each is linked to the open recording of that device that started last before it
  /// (its name carries its creation time), then repaired like the others. Returns how many
  /// recordings were recovered.
  static std::size_t recover(fileio::Catalog& catalog, const std::filesystem::path& storage,
                             std::string* report = nullptr);

 private:
  struct Stream {
    fileio::StreamId id = 0;
    std::uint16_t port = 0;
    bool closed = false;
    fileio::AssemblerCounters counters;
    std::uint64_t bytes = 0;
    std::uint64_t last_packet_ns = 0;
    std::uint64_t stray = 0;   ///< wrong-source packets, read from the dataplane at stop
    std::vector<std::uint32_t> seg_idx;  ///< writer segment index -> catalog idx (unique per recording)
    bool has_info = false;
    fileio::StreamRow info;    ///< observed streams: set_stream_info()
    std::string codec;         ///< codec of the stream's first record file (what was recorded)
    bool ended = false;        ///< end_stream(): its flow is gone, the recording goes on
    bool paused = false;
  };
  struct Recording {
    RecordingHandle handle = 0;
    std::int64_t catalog_id = 0;
    IngestKind kind = IngestKind::kUpload;
    RecordingMetadata meta;
    std::string peer;
    sockaddr_storage peer_addr{};
    RecordingOwner* owner = nullptr;
    std::vector<Stream> streams;
    std::chrono::steady_clock::time_point started;
    std::int64_t started_ms = 0;
    bool stopping = false;
    std::string stop_reason;
    dataplane::Source* source = nullptr;  ///< where the streams' flows live
    bool observed = false;
    std::int64_t stopped_ms = 0;  ///< set by stop() when given (packet time)
    std::uint32_t next_seg_idx = 0;
    std::uint64_t idle_base_ns = 0;  ///< silence is measured from here at least (start, end of a stall)
    std::filesystem::path device_dir;
    dev_t dir_dev = 0;  ///< identity of device_dir at the start (removed/replaced: storage_lost)
    ino_t dir_ino = 0;
  };

  enum class StopOrigin : std::uint8_t { kPeer, kOwnerGone, kServer };
  bool stop_impl(RecordingHandle h, const MetadataOverrides& ov, const std::string& reason, StopOrigin origin,
                 std::int64_t at_ms = 0);
  static const char* peer_stop_reason(IngestKind k);
  /// One allocated stream (port, flow, writer) of r: "" or the failure reason (no_port, overloaded).
  std::string allocate_stream(Recording& r, const sockaddr_storage& peer, const StreamPlan* plan,
                              const std::filesystem::path& device_dir, std::chrono::steady_clock::time_point now,
                              Stream& s);
  void finish(Recording& r);
  Status free_space(std::uint64_t& free_bytes) const;
  /// Item: the storage (or a device directory) removed or replaced under running recordings:
  /// they are stopped with storage_lost, the storage directory is re-created.
  void check_storage(std::chrono::steady_clock::time_point now);
  /// Below --reserve-mb while recording: stop recordings with no_space (see tick()).
  void check_reserve();
  Recording* by_stream(fileio::StreamId s);
  fileio::StreamId next_stream_id();

  SessionConfig cfg_;
  fileio::Catalog& catalog_;
  fileio::WriterPool& writers_;
  dataplane::Source& source_;
  PortAllocator& ports_;
  SessionCounters counters_;
  std::unordered_map<RecordingHandle, Recording> recs_;
  std::unordered_map<fileio::StreamId, RecordingHandle> stream_index_;
  /// Per owner: its recordings (stopping ones too, until they finish) and, for find(), the
  /// not-yet-stopping ones by call id. Keeps find() and stop_owned_by() O(own recordings)
  /// instead of a scan of every recording (45% of the control thread at 10,000 phones).
  struct OwnerIndex {
    std::unordered_map<std::string, RecordingHandle> active;  ///< call_id -> handle, not stopping
    std::unordered_set<RecordingHandle> all;  ///< a set: one owner (a SIPREC peer) may hold thousands
  };
  std::unordered_map<const RecordingOwner*, OwnerIndex> owners_;
  void index_unactive(const Recording& r);
  void index_forget(const Recording& r);
  std::chrono::steady_clock::time_point last_tick_{};
  bool storage_known_ = false;
  dev_t storage_dev_ = 0;
  ino_t storage_ino_ = 0;
  RecordingHandle next_handle_ = 1;
  fileio::StreamId next_stream_ = 1;
};

}  // namespace callrec::control
