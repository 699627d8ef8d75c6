#include "fileio/writer_pool.hpp"

#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>

#include "fileio/stream_recorder.hpp"

namespace callrec::fileio {

namespace {

using Clock = std::chrono::steady_clock;

/// Records taken from one ring before moving to the next one (fairness between producers,
/// and a bound on how long a busy ring delays commands and the flush walk).
constexpr std::size_t kBurst = 256;
/// Records processed as one staged batch (lookup + prefetch for all, then process): enough to
/// hide a memory miss behind the others' work, small enough that the prefetched lines survive.
constexpr std::size_t kBatch = 32;
/// How often a writer walks all its streams: flush_if_due, kStats, counters published.
/// A stream's dataSize therefore lags its data by at most flush_interval + this.
constexpr Clock::duration kWalkInterval = std::chrono::milliseconds(100);
/// Idle backoff: empty rounds spent spinning, then yielding, then sleeping.
constexpr unsigned kSpinRounds = 64;
constexpr unsigned kYieldRounds = 128;
constexpr std::chrono::microseconds kSleepMin{200};
constexpr std::chrono::microseconds kSleepMax{1000};
/// stop() drains the rings until they are empty; producers should be stopped first. A producer
/// that keeps pushing cannot hold the writer longer than this.
constexpr Clock::duration kStopDrainLimit = std::chrono::seconds(2);
/// Expected streams per writer (index slots reserved once so opening streams rarely rehashes).
constexpr std::size_t kInitialStreams = 1024;

/// StreamId -> T*: open addressing with linear probing, power-of-two capacity kept at most half
/// full, erase by backward shift (no tombstones). A lookup reads one 16-byte slot, usually one
/// cache line; the std::unordered_map it replaced read a bucket and a node (two cold lines per
/// packet at 10k streams: 6% of the writer's samples). Grows only at insert (stream open), never
/// on the packet path. Writer thread only.
template <typename T>
class StreamIndex {
 public:
  explicit StreamIndex(std::size_t expected) { rehash(std::bit_ceil(std::max<std::size_t>(16, expected * 2))); }
  [[nodiscard]] const void* home_slot(StreamId id) const { return &slots_[home(id)]; }
  [[nodiscard]] T* find(StreamId id) const {
    for (std::size_t i = home(id);; i = (i + 1) & mask_) {
      const Slot& sl = slots_[i];
      if (sl.p == nullptr) return nullptr;
      if (sl.id == id) return sl.p;
    }
  }
  void insert(StreamId id, T* p) {  // id must not be present
    if ((size_ + 1) * 2 > slots_.size()) rehash(slots_.size() * 2);
    place(id, p);
    ++size_;
  }
  void erase(StreamId id) {
    std::size_t i = home(id);
    while (slots_[i].p != nullptr && slots_[i].id != id) i = (i + 1) & mask_;
    if (slots_[i].p == nullptr) return;
    // Backward shift: move later entries of the probe run into the hole when their home
    // position allows it, so every lookup still finds its entry before an empty slot.
    for (std::size_t j = (i + 1) & mask_; slots_[j].p != nullptr; j = (j + 1) & mask_) {
      const std::size_t h = home(slots_[j].id);
      if (((j - h) & mask_) >= ((j - i) & mask_)) {
        slots_[i] = slots_[j];
        i = j;
      }
    }
    slots_[i] = Slot{};
    --size_;
  }

 private:
  struct Slot {
    StreamId id = 0;
    T* p = nullptr;  ///< nullptr: empty
  };
  [[nodiscard]] std::size_t home(StreamId id) const {
    return static_cast<std::size_t>((static_cast<std::uint64_t>(id) * 0x9E3779B97F4A7C15ull) >> shift_);
  }
  void place(StreamId id, T* p) {
    std::size_t i = home(id);
    while (slots_[i].p != nullptr) i = (i + 1) & mask_;
    slots_[i] = Slot{id, p};
  }
  void rehash(std::size_t cap) {
    std::vector<Slot> old = std::exchange(slots_, std::vector<Slot>(cap));
    mask_ = cap - 1;
    shift_ = 64 - static_cast<unsigned>(std::countr_zero(cap));
    for (const Slot& sl : old) {
      if (sl.p != nullptr) place(sl.id, sl.p);
    }
  }

  std::vector<Slot> slots_;
  std::size_t mask_ = 0;
  unsigned shift_ = 0;
  std::size_t size_ = 0;
};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

/// Control-thread -> writer command.
struct Command {
  enum class Kind : std::uint8_t { kOpen, kPause, kResume, kCloseNow, kStop };
  Kind kind = Kind::kStop;
  StreamId stream = 0;
  WriterOptions wopts;
  AssemblerOptions aopts;
  std::uint32_t end_marks = 1;  ///< kOpen: end marks that finish the stream (one per producer)
};

/// Writer -> control-thread events: a mutex-protected vector plus an eventfd to wake the
/// control loop. Writers append whole batches (one lock per loop iteration at most).
class EventQueue {
 public:
  EventQueue() {
    fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "writer pool: eventfd");
  }
  ~EventQueue() {
    if (fd_ >= 0) ::close(fd_);
  }
  EventQueue(const EventQueue&) = delete;
  EventQueue& operator=(const EventQueue&) = delete;

  [[nodiscard]] int fd() const { return fd_; }

  /// Writer thread: moves batch in (batch is left empty, its capacity kept when possible).
  void post(std::vector<WriterEvent>& batch) {
    if (batch.empty()) return;
    {
      std::lock_guard lock(mu_);
      if (events_.empty()) {
        events_.swap(batch);  // both keep a reserved buffer: no allocation in steady state
      } else {
        events_.insert(events_.end(), std::make_move_iterator(batch.begin()), std::make_move_iterator(batch.end()));
      }
    }
    batch.clear();
    const std::uint64_t one = 1;
    if (::write(fd_, &one, sizeof one) < 0 && errno != EAGAIN) {
      // EAGAIN: the counter is saturated, the fd is readable anyway. Anything else is a bug.
      std::fprintf(stderr, "callrec writer pool: eventfd write: %s\n", std::strerror(errno));
    }
  }

  /// Control thread: appends pending events to out.
  bool poll(std::vector<WriterEvent>& out) {
    // Reset the eventfd before taking the events: an event posted after this read writes
    // the eventfd again, so the control loop never sleeps on a pending event.
    std::uint64_t count = 0;
    if (::read(fd_, &count, sizeof count) < 0 && errno != EAGAIN) {
      std::fprintf(stderr, "callrec writer pool: eventfd read: %s\n", std::strerror(errno));
    }
    std::lock_guard lock(mu_);
    if (events_.empty()) return false;
    if (out.empty()) {
      out.swap(events_);
    } else {
      out.insert(out.end(), std::make_move_iterator(events_.begin()), std::make_move_iterator(events_.end()));
      events_.clear();
    }
    return true;
  }

 private:
  int fd_ = -1;
  std::mutex mu_;
  std::vector<WriterEvent> events_;
};

/// Counters a writer publishes for WriterPool::stats() (relaxed: statistics only).
struct PublishedStats {
  std::atomic<std::uint64_t> packets{0};
  std::atomic<std::uint64_t> unknown_stream{0};
  std::atomic<std::uint64_t> write_errors{0};
  std::atomic<std::uint64_t> bytes_written{0};
  std::atomic<std::uint64_t> active_streams{0};
  std::atomic<std::uint64_t> asm_invalid{0};
  std::atomic<std::uint64_t> asm_other_payload{0};
  std::atomic<std::uint64_t> asm_format_flaps{0};
  std::atomic<std::uint64_t> asm_segment_limited{0};
  std::atomic<std::uint64_t> asm_unbacked_jumps{0};
  std::atomic<std::uint64_t> asm_segments{0};
  std::atomic<std::uint64_t> asm_srtp_failed{0};
};

/// The published subset of AssemblerCounters, summed.
void add_published(AssemblerCounters& sum, const AssemblerCounters& c) {
  sum.invalid += c.invalid;
  sum.other_payload += c.other_payload;
  sum.format_flaps += c.format_flaps;
  sum.segment_limited += c.segment_limited;
  sum.unbacked_jumps += c.unbacked_jumps;
  sum.segments += c.segments;
  sum.srtp_failed += c.srtp_failed;
}

/// One writer thread and everything it owns. Only the command queue and the published
/// counters are touched by another thread.
class alignas(64) Writer {
 public:
  Writer(unsigned index, RingMatrix& rings, EventQueue& events, const WriterPoolOptions& opts)
      : index_(index),
        rings_(rings),
        events_(events),
        stats_interval_(opts.stats_interval),
        cpu_(index < opts.cpus.size() ? opts.cpus[index] : -1),
        srtp_scratch_(std::make_unique<std::byte[]>(StreamRecorder::kSrtpScratchBytes)),
        index_of_(kInitialStreams) {
    streams_.reserve(kInitialStreams);
    batch_.reserve(256);
  }
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // ---- control thread --------------------------------------------------------------------
  void enqueue(Command cmd) {
    std::lock_guard lock(cmd_mu_);
    cmds_.push_back(std::move(cmd));
    // release: a writer that sees the flag (acquire) sees the command; and anything the
    // control thread does after this (telling the dataplane to send packets) happens after it.
    cmd_pending_.store(true, std::memory_order_release);
  }
  void start() {
    thread_ = std::thread([this] { run(); });
  }
  void join() {
    if (thread_.joinable()) thread_.join();
  }
  [[nodiscard]] const PublishedStats& published() const { return pub_; }

 private:
  /// Line-aligned, the per-packet fields first: with the recorder's hot state (laid out at the
  /// front of each of its parts) a packet touches about six consecutive lines of its Stream.
  struct alignas(64) Stream {
    Stream(StreamId sid, WriterOptions w, AssemblerOptions a, std::span<std::byte> srtp_scratch)
        : id(sid), rec(std::move(w), std::move(a), srtp_scratch) {}
    StreamId id;
    std::uint32_t pos = 0;                  ///< index in streams_
    std::uint64_t last_packet_ns = 0;
    bool failed = false;                    ///< a kError was emitted; packets are dropped
    bool active = false;                    ///< traffic since the last kStats
    std::uint32_t ends_left = 1;            ///< end marks still to come (one per producer of it)
    std::uint32_t closed_reported = 0;      ///< segments whose kSegmentClosed was emitted
    std::uint64_t dropped_after_error = 0;  ///< packets dropped because the stream failed
    StreamRecorder rec;
  };
  void run();
  void pin_and_name();
  std::size_t drain_once();
  void on_batch(std::span<const RingRecord> recs);
  void on_record(const RingRecordHeader& h, std::span<const std::byte> data, Stream* sp);
  void run_commands();
  void open(Command& cmd);
  void finish(Stream& s);
  void fail(Stream& s, Status st);
  void walk(Clock::time_point now, bool with_stats);
  void publish_stats();
  [[nodiscard]] WriterEvent event_for(WriterEventKind kind, const Stream& s) const;
  void idle(unsigned rounds);

  const unsigned index_;
  RingMatrix& rings_;
  EventQueue& events_;
  const std::chrono::milliseconds stats_interval_;
  const int cpu_;
  std::thread thread_;

  // command queue (control thread <-> writer)
  std::mutex cmd_mu_;
  std::vector<Command> cmds_;
  alignas(64) std::atomic<bool> cmd_pending_{false};

  // writer-thread state
  /// SRTP streams decrypt each packet here (StreamRecorder): one buffer for all the writer's
  /// streams, allocated once; declared before streams_, which point into it.
  std::unique_ptr<std::byte[]> srtp_scratch_;
  alignas(64) std::vector<std::unique_ptr<Stream>> streams_;  ///< owner; order is arbitrary
  StreamIndex<Stream> index_of_;
  bool erased_in_batch_ = false;  ///< a stream was closed while a batch held Stream pointers
  RingRecord recs_[kBatch];
  Stream* batch_streams_[kBatch];
  std::vector<Command> cmds_local_;
  std::vector<WriterEvent> batch_;  ///< events of this loop iteration, posted once
  bool stopping_ = false;
  std::uint64_t packets_ = 0;
  std::uint64_t unknown_ = 0;
  std::uint64_t write_errors_ = 0;
  std::uint64_t closed_bytes_ = 0;  ///< bytes written by streams already closed
  AssemblerCounters closed_asm_;    ///< published counters of streams already closed

  PublishedStats pub_;
};

void Writer::pin_and_name() {
  char name[16];
  std::snprintf(name, sizeof name, "callrec-wr%u", index_);
  pthread_setname_np(pthread_self(), name);  // cosmetic: failure ignored
  if (cpu_ < 0) return;
  if (cpu_ >= CPU_SETSIZE) {
    std::fprintf(stderr, "callrec writer %u: cpu %d out of range, not pinned\n", index_, cpu_);
    return;
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(static_cast<unsigned>(cpu_), &set);
  const int rc = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
  if (rc != 0) {
    std::fprintf(stderr, "callrec writer %u: cannot pin to cpu %d: %s (running unpinned)\n", index_, cpu_,
                 std::strerror(rc));
  }
}

void Writer::run() {
  pin_and_name();
  Clock::time_point next_walk = Clock::now() + kWalkInterval;
  Clock::time_point next_stats = Clock::now() + stats_interval_;
  Clock::time_point stop_deadline = Clock::time_point::max();
  unsigned idle_rounds = 0;
  for (;;) {
    // Commands: one flag check per round, the lock only when something is queued.
    if (cmd_pending_.load(std::memory_order_acquire)) run_commands();
    const std::size_t n = drain_once();
    const Clock::time_point now = Clock::now();
    if (now >= next_walk) {
      const bool with_stats = now >= next_stats;
      walk(now, with_stats);
      next_walk = now + kWalkInterval;
      if (with_stats) next_stats = now + stats_interval_;
    }
    events_.post(batch_);
    if (stopping_) {
      if (n == 0) break;  // every ring was empty on this round: drained
      if (stop_deadline == Clock::time_point::max()) stop_deadline = now + kStopDrainLimit;
      if (now >= stop_deadline) break;
    }
    if (n >= kBatch) {
      idle_rounds = 0;
    } else if (n != 0) {
      // A trickle (less than one staged batch per round): sleep once, so that the next round
      // finds whole batches, instead of spinning and yielding between single records. At 50
      // packets/s x 1,000 streams the spin cost a quarter of a core (bench/RESULTS.md). Under
      // load every round is full and never sleeps; the ring holds the sleep's traffic.
      idle_rounds = kSpinRounds + kYieldRounds;  // an empty round next: keep sleeping, no spin
      std::this_thread::sleep_for(kSleepMin);
    } else {
      idle(idle_rounds);
      if (idle_rounds < kSpinRounds + kYieldRounds + 8) ++idle_rounds;  // saturates: no wrap
    }
  }
  // Stop: the rings are drained; close every stream gracefully (final flush, events).
  while (!streams_.empty()) finish(*streams_.back());
  events_.post(batch_);
  publish_stats();
}

std::size_t Writer::drain_once() {
  std::size_t n = 0;
  for (unsigned p = 0; p < rings_.producers(); ++p) {
    PacketRing& ring = rings_.ring(p, index_);
    for (std::size_t got = 0; got < kBurst;) {
      const std::size_t k = ring.consume_bulk(recs_, [this](std::span<const RingRecord> b) { on_batch(b); });
      if (k == 0) break;
      got += k;
      n += k;
    }
  }
  return n;
}

void Writer::idle(unsigned rounds) {
  if (rounds < kSpinRounds) {
    cpu_relax();
  } else if (rounds < kSpinRounds + kYieldRounds) {
    std::this_thread::yield();
  } else {
    // 200 us, 400 us, 800 us, then 1 ms: about 1000 cheap wake-ups/s when idle for long.
    const unsigned shift = std::min(rounds - kSpinRounds - kYieldRounds, 3u);
    std::this_thread::sleep_for(std::min(kSleepMax, kSleepMin * (1u << shift)));
  }
}

// Per-record path: no allocation, no logging; a lock only when the control thread queued a
// command (rare), or on the error path. Measured ~250 ns/pkt end to end (1 producer thread +
// 1 writer, 1000 streams, 172-byte PCMA, files on tmpfs, both threads on 2 shared cores; an
// ad-hoc run, write(2) included) — a bench target should pin this down.
// A batch of up to kBatch records in stages, so that the cold lines of each record's stream
// are fetched in parallel rather than one miss after another: (1) prefetch the index slots,
// (2) look the streams up and prefetch their hot state, (3) prefetch the write-buffer and
// header-template lines that state points to, (4) process in ring order.
void Writer::on_batch(std::span<const RingRecord> recs) {
  // Commands before packets: a command issued before a packet was pushed (open_stream, then
  // the dataplane installs the flow) must apply to that packet. The consume_bulk() that handed
  // us this batch did an acquire load of the ring head after the producer's publish, so a
  // command enqueued (release) before that publish is visible here. The converse does not
  // hold: a packet published before a command may still sit in the ring when the command
  // runs (commands and packets travel on different queues), so pause/resume/close_now take
  // effect at the moment the writer sees them, not at a packet boundary the caller chose.
  if (cmd_pending_.load(std::memory_order_acquire)) [[unlikely]]
    run_commands();
  const std::size_t n = recs.size();
  for (std::size_t i = 0; i < n; ++i) __builtin_prefetch(index_of_.home_slot(recs[i].h.stream));
  for (std::size_t i = 0; i < n; ++i) {
    Stream* sp = index_of_.find(recs[i].h.stream);
    batch_streams_[i] = sp;
    if (sp != nullptr) {
      __builtin_prefetch(sp);
      sp->rec.prefetch_state();
    }
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (batch_streams_[i] != nullptr) batch_streams_[i]->rec.prefetch_buffers();
  }
  erased_in_batch_ = false;
  for (std::size_t i = 0; i < n; ++i) {
    const RingRecord& r = recs[i];
    // A stream closed earlier in this batch invalidates the pointers looked up above.
    Stream* sp = erased_in_batch_ ? index_of_.find(r.h.stream) : batch_streams_[i];
    on_record(r.h, r.bytes(), sp);
  }
  packets_ += n;
}

// Per-record path: no allocation, no logging; a lock only when the control thread queued a
// command (rare), or on the error path.
void Writer::on_record(const RingRecordHeader& h, std::span<const std::byte> data, Stream* sp) {
  if (sp == nullptr) [[unlikely]] {
    if (h.kind == static_cast<std::uint16_t>(RecordKind::kPacket)) ++unknown_;
    return;  // an end mark for a stream already closed (close_stream_now) is expected
  }
  Stream& s = *sp;
  if (h.kind == static_cast<std::uint16_t>(RecordKind::kEndOfStream)) [[unlikely]] {
    // A stream several producers feed (the lanes of a DPDK mirror) ends at the last of their
    // marks: each follows that producer's last packet of it.
    if (s.ends_left > 1) {
      --s.ends_left;
      return;
    }
    finish(s);
    return;
  }
  s.last_packet_ns = h.rx_ns;
  s.active = true;
  if (s.failed) [[unlikely]] {
    ++s.dropped_after_error;
    return;
  }
  Status st = s.rec.on_rtp(data, h.rx_ns);
  if (!st.is_ok()) [[unlikely]]
    fail(s, std::move(st));
}

void Writer::run_commands() {
  {
    std::lock_guard lock(cmd_mu_);
    cmds_local_.swap(cmds_);
    cmd_pending_.store(false, std::memory_order_relaxed);
  }
  for (Command& cmd : cmds_local_) {
    if (cmd.kind == Command::Kind::kOpen) {
      open(cmd);
      continue;
    }
    if (cmd.kind == Command::Kind::kStop) {
      stopping_ = true;
      continue;
    }
    Stream* sp = index_of_.find(cmd.stream);
    if (sp == nullptr) continue;  // already closed in-band: nothing to do
    switch (cmd.kind) {
      case Command::Kind::kPause:
        sp->rec.pause();
        break;
      case Command::Kind::kResume:
        sp->rec.resume();
        break;
      case Command::Kind::kCloseNow:
        finish(*sp);
        break;
      case Command::Kind::kOpen:
      case Command::Kind::kStop:
        break;
    }
  }
  cmds_local_.clear();
}

void Writer::open(Command& cmd) {
  const StreamId id = cmd.stream;
  if (index_of_.find(id) != nullptr) {
    // A control-plane bug (ids are unique while open). Keep the running stream untouched.
    std::fprintf(stderr, "callrec writer %u: stream %u opened twice; second open ignored\n", index_, id);
    return;
  }
  // An SRTP stream's receiver is created here, on the writer thread that will use it.
  auto s = std::make_unique<Stream>(id, std::move(cmd.wopts), std::move(cmd.aopts),
                                    std::span<std::byte>(srtp_scratch_.get(), StreamRecorder::kSrtpScratchBytes));
  Stream* sp = s.get();
  sp->ends_left = cmd.end_marks;
  if (!sp->rec.srtp_error().empty()) {
    // Rare (once per stream open, the key was checked when the call was set up): every packet
    // of the stream will count as srtp_failed.
    std::fprintf(stderr, "callrec writer %u: stream %u: no SRTP decryption: %s\n", index_, id,
                 sp->rec.srtp_error().c_str());
  }
  // Segment callbacks run on this thread, inside on_rtp / flush / close (rare: once per file).
  sp->rec.writer().on_segment_opened = [this, sp](const SegmentInfo& seg) {
    WriterEvent ev = event_for(WriterEventKind::kSegmentOpened, *sp);
    ev.seg = seg;
    batch_.push_back(std::move(ev));
  };
  sp->rec.writer().on_segment_closed = [this, sp](const SegmentInfo& seg) {
    WriterEvent ev = event_for(WriterEventKind::kSegmentClosed, *sp);
    ev.seg = seg;
    batch_.push_back(std::move(ev));
    ++sp->closed_reported;
  };
  sp->pos = static_cast<std::uint32_t>(streams_.size());
  index_of_.insert(id, sp);
  streams_.push_back(std::move(s));
}

WriterEvent Writer::event_for(WriterEventKind kind, const Stream& s) const {
  WriterEvent ev{};
  ev.kind = kind;
  ev.stream = s.id;
  ev.counters = s.rec.counters();
  ev.last_packet_ns = s.last_packet_ns;
  ev.bytes_written = s.rec.writer().bytes_written();
  return ev;
}

void Writer::fail(Stream& s, Status st) {
  ++write_errors_;
  if (s.failed) return;  // one kError per stream; later errors are only counted
  s.failed = true;
  WriterEvent ev = event_for(WriterEventKind::kError, s);
  ev.status = std::move(st);
  batch_.push_back(std::move(ev));
}

void Writer::finish(Stream& s) {
  // Final flush + dataSize + close; fires on_segment_closed for the open segment. A failed
  // stream is closed too: the writer keeps what is on disk valid, and buffered data may
  // still fit.
  Status st = s.rec.close();
  if (!st.is_ok()) fail(s, std::move(st));
  // Every segment gets its kSegmentClosed exactly once, even if the writer closed one
  // without calling back (the catalog links segments from these events).
  const auto& segs = s.rec.writer().segments();
  for (std::size_t i = s.closed_reported; i < segs.size(); ++i) {
    WriterEvent ev = event_for(WriterEventKind::kSegmentClosed, s);
    ev.seg = segs[i];
    batch_.push_back(std::move(ev));
  }
  s.closed_reported = static_cast<std::uint32_t>(segs.size());
  batch_.push_back(event_for(WriterEventKind::kStreamClosed, s));
  closed_bytes_ += s.rec.writer().bytes_written();
  add_published(closed_asm_, s.rec.counters());
  // Swap-remove from the owner vector (order is arbitrary), then free.
  index_of_.erase(s.id);
  erased_in_batch_ = true;
  const std::uint32_t pos = s.pos;
  std::unique_ptr<Stream> gone = std::move(streams_[pos]);
  if (pos + 1 != streams_.size()) {
    streams_[pos] = std::move(streams_.back());
    streams_[pos]->pos = pos;
  }
  streams_.pop_back();
}

void Writer::walk(Clock::time_point now, bool with_stats) {
  for (const auto& sp : streams_) {
    Stream& s = *sp;
    if (!s.failed) {
      Status st = s.rec.flush_if_due(now);
      if (!st.is_ok()) [[unlikely]]
        fail(s, std::move(st));
    }
    if (with_stats && s.active) {
      batch_.push_back(event_for(WriterEventKind::kStats, s));
      s.active = false;
    }
  }
  publish_stats();
}

void Writer::publish_stats() {
  std::uint64_t bytes = closed_bytes_;
  AssemblerCounters a = closed_asm_;
  for (const auto& sp : streams_) {
    bytes += sp->rec.writer().bytes_written();
    add_published(a, sp->rec.counters());
  }
  constexpr auto r = std::memory_order_relaxed;
  pub_.asm_invalid.store(a.invalid, r);
  pub_.asm_other_payload.store(a.other_payload, r);
  pub_.asm_format_flaps.store(a.format_flaps, r);
  pub_.asm_segment_limited.store(a.segment_limited, r);
  pub_.asm_unbacked_jumps.store(a.unbacked_jumps, r);
  pub_.asm_segments.store(a.segments, r);
  pub_.asm_srtp_failed.store(a.srtp_failed, r);
  pub_.packets.store(packets_, std::memory_order_relaxed);
  pub_.unknown_stream.store(unknown_, std::memory_order_relaxed);
  pub_.write_errors.store(write_errors_, std::memory_order_relaxed);
  pub_.bytes_written.store(bytes, std::memory_order_relaxed);
  pub_.active_streams.store(streams_.size(), std::memory_order_relaxed);
}

}  // namespace

struct WriterPool::Impl {
  explicit Impl(WriterPoolOptions o) : opts(std::move(o)), rings(opts.producers, opts.writers, opts.ring_bytes) {
    writers.reserve(rings.writers());
    for (unsigned w = 0; w < rings.writers(); ++w) writers.push_back(std::make_unique<Writer>(w, rings, events, opts));
  }

  Writer& owner(StreamId id) { return *writers[rings.writer_for(id)]; }

  WriterPoolOptions opts;
  RingMatrix rings;
  EventQueue events;
  std::vector<std::unique_ptr<Writer>> writers;
  bool started = false;
  bool stopped = false;
};

WriterPool::WriterPool(WriterPoolOptions opts) : impl_(std::make_unique<Impl>(std::move(opts))) {}

WriterPool::~WriterPool() { stop(); }

void WriterPool::start() {
  if (impl_->started || impl_->stopped) return;
  impl_->started = true;
  for (auto& w : impl_->writers) w->start();
}

void WriterPool::stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  if (!impl_->started) return;
  // In the command queue behind every earlier command: opens issued before stop() are applied,
  // then the writer drains its rings and closes every stream.
  for (auto& w : impl_->writers) w->enqueue(Command{Command::Kind::kStop, 0, {}, {}});
  for (auto& w : impl_->writers) w->join();
}

unsigned WriterPool::writers() const { return impl_->rings.writers(); }

RingMatrix& WriterPool::rings() { return impl_->rings; }

void WriterPool::open_stream(StreamId id, WriterOptions wopts, AssemblerOptions aopts, std::uint32_t end_marks) {
  impl_->owner(id).enqueue(Command{Command::Kind::kOpen, id, std::move(wopts), aopts, std::max(1u, end_marks)});
}

void WriterPool::pause_stream(StreamId id) { impl_->owner(id).enqueue(Command{Command::Kind::kPause, id, {}, {}}); }

void WriterPool::resume_stream(StreamId id) { impl_->owner(id).enqueue(Command{Command::Kind::kResume, id, {}, {}}); }

void WriterPool::close_stream_now(StreamId id) {
  impl_->owner(id).enqueue(Command{Command::Kind::kCloseNow, id, {}, {}});
}

bool WriterPool::poll_events(std::vector<WriterEvent>& out) { return impl_->events.poll(out); }

int WriterPool::event_fd() const { return impl_->events.fd(); }

WriterPoolStats WriterPool::stats() const {
  WriterPoolStats s;
  for (const auto& w : impl_->writers) {
    const PublishedStats& p = w->published();
    s.packets += p.packets.load(std::memory_order_relaxed);
    s.unknown_stream += p.unknown_stream.load(std::memory_order_relaxed);
    s.write_errors += p.write_errors.load(std::memory_order_relaxed);
    s.bytes_written += p.bytes_written.load(std::memory_order_relaxed);
    s.active_streams += p.active_streams.load(std::memory_order_relaxed);
    s.assembler.invalid += p.asm_invalid.load(std::memory_order_relaxed);
    s.assembler.other_payload += p.asm_other_payload.load(std::memory_order_relaxed);
    s.assembler.format_flaps += p.asm_format_flaps.load(std::memory_order_relaxed);
    s.assembler.segment_limited += p.asm_segment_limited.load(std::memory_order_relaxed);
    s.assembler.unbacked_jumps += p.asm_unbacked_jumps.load(std::memory_order_relaxed);
    s.assembler.segments += p.asm_segments.load(std::memory_order_relaxed);
    s.assembler.srtp_failed += p.asm_srtp_failed.load(std::memory_order_relaxed);
  }
  return s;
}

}  // namespace callrec::fileio
