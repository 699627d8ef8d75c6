#pragma once
// One worker thread of callrec-phone: a single-threaded epoll loop that owns a share of the
// phones (phone i belongs to worker i % threads), their TCP control connections, their calls
// and RTP streams. Nothing in here is shared with other workers except the read-only RunConfig;
// counters reach the main thread as copies published under a mutex a few times a second.
//
// Timing: every RTP stream of the worker sits in one timing wheel of 1 ms slots. Packet n of a
// stream is due at base + n * ptime (absolute, no drift); the loop sleeps on one timerfd armed
// for the earliest of the wheel's next busy slot and the control timers (a binary heap for the
// few per-call timeouts), and sends the packets due in sendmmsg batches grouped by socket. One
// loop pass sends at most kSendBudget packets, then polls the control sockets (epoll_wait with
// a zero timeout when more packets are due): an overloaded worker falls behind on RTP (counted
// in late_sends) but still reads server stops and responses within a few ms.
//
// Measured (2-vCPU VM shared with other builds, loopback, sink in another process): ~2.2 us of
// CPU per packet with --udp-sockets 4 (~35 packets per sendmmsg), ~5.8 us with one socket per
// phone (one packet per call); user space is < 0.3 us of either, the rest is the kernel's UDP
// send and loopback delivery. One thread held 3000 streams with 0.15% of sends > 5 ms late and
// 5000 streams with 2% (tests/tools/callrec_phone_test.cpp, DISABLED_ThroughputOneThread).
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <string>
#include <unordered_map>
#include <vector>

#include "audio.hpp"
#include "control/protocol.hpp"
#include "fileio/srtp.hpp"
#include "options.hpp"
#include "send_wheel.hpp"
#include "stats.hpp"

namespace callrec::phone {

/// Everything the workers read and nobody writes once they run.
struct RunConfig {
  Options opt;
  sockaddr_storage server{};  ///< control endpoint (resolved)
  AudioSource audio;
  std::uint64_t seed = 0;
};

/// 0: run; 1: stop gracefully (no new calls, stop the ones running); 2: abort now.
using StopLevel = std::atomic<int>;

/// Small, fast PRNG (SplitMix64). One per phone so that a phone's ids, SSRCs and impairments
/// depend only on the seed and the phone index, not on thread interleaving.
struct Rng {
  std::uint64_t state = 0;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  ///< [0, 1)
  bool chance_pct(double pct) { return pct > 0 && uniform() * 100.0 < pct; }
};

/// SIPREC mode: an RTP stream the signalling thread hands to a worker (siprec.hpp).
struct ExtStream {
  sockaddr_storage dest{};    ///< media address and port of the server's SDP answer
  std::uint32_t audio = 0;    ///< audio loop (AudioSource::loop_for_phone)
  std::uint64_t packets = 0;  ///< packet times of the stream (duration / ptime), paused ones included
  std::uint64_t seed = 0;     ///< SSRC, first sequence number and timestamp, impairments
  std::optional<fileio::SdesCrypto> srtp;  ///< set: send SRTP with this key
};
enum class ExtOp : std::uint8_t { kStart, kPause, kResume, kStop };
struct ExtCommand {
  ExtOp op = ExtOp::kStart;
  std::uint64_t key = 0;  ///< the signalling thread's name for the stream (echoed to the done callback)
  ExtStream stream;       ///< kStart only
};
/// Called on the worker's thread when a stream has ended (its last packet time passed, or
/// kStop): its key and the packets it sent.
using StreamDoneFn = std::function<void(std::uint64_t key, std::uint64_t packets_sent)>;

class Worker {
 public:
  Worker(const RunConfig& cfg, std::uint32_t index, const StopLevel* stop);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  /// Thread body: returns when every phone of this worker is done, or at stop level 2.
  /// A fatal setup error (epoll, timerfd) is counted in errors and ends the run early.
  void run();
  /// Any thread: the counters as last published (at most ~100 ms old; exact after run()).
  [[nodiscard]] Stats snapshot() const;
  [[nodiscard]] bool finished() const { return finished_.load(std::memory_order_acquire); }

  // SIPREC mode (RunConfig::opt.siprec_mode()): the worker has no phones and no control
  // connections; it sends the RTP streams posted here (same wheel, batches and sockets as the
  // upload mode) until close_external() was called and its last stream ended.
  /// Any thread: queues commands, applied in order on the worker's thread (an eventfd wakes it).
  void post(std::vector<ExtCommand>& cmds);
  /// Before run(): where stream ends are reported.
  void set_stream_done(StreamDoneFn fn) { stream_done_ = std::move(fn); }
  /// Any thread: no more streams will be posted.
  void close_external();

 private:
  enum class CallState : std::uint8_t { kFree, kStarting, kStreaming, kStopping };
  enum class Outcome : std::uint8_t { kSucceeded, kFailed, kAborted };
  enum class ConnState : std::uint8_t { kClosed, kConnecting, kConnected };
  enum class TimerKind : std::uint8_t { kStartTimeout, kStopTimeout, kDisconnect };

  struct Call {
    std::uint32_t gen = 0;
    std::uint32_t epoch = 0;  ///< bumped at every state change; stale timers compare it
    CallState state = CallState::kFree;
    std::uint32_t phone = 0;  ///< local phone index
    std::string id;
    // Metadata sent in the start request.
    std::string remote_number, remote_name, local_number, local_name;
    bool dir_in = true;
    std::int64_t start_sent_ns = 0;
    std::int64_t stop_sent_ns = 0;
    // RTP stream.
    sockaddr_storage dest{};
    socklen_t dest_len = 0;
    std::string server_text;
    std::uint16_t server_port = 0;
    int udp_fd = -1;
    std::uint32_t ssrc = 0;
    std::uint16_t seq0 = 0;
    std::uint32_t ts0 = 0;
    std::uint64_t n = 0;      ///< packets generated so far
    std::uint64_t total = 0;  ///< packets the call generates
    std::int64_t base_ms = 0; ///< loop-relative ms of packet 0
    Rng rng;
    std::vector<std::byte> held;  ///< --reorder: packet waiting for the next one
    std::uint32_t held_len = 0;
    bool has_held = false;
    std::FILE* save = nullptr;
    bool streaming = false;   ///< counted in streams_active
    std::uint32_t audio = 0;  ///< audio loop index (the phone's index; SIPREC: per stream)
    // SIPREC streams (ext == true): no phone, no control messages.
    bool ext = false;
    bool paused = false;      ///< packet times pass without packets
    bool owns_fd = false;     ///< udp_fd is this stream's own socket (closed at its end)
    std::uint64_t ext_key = 0;
    std::unique_ptr<fileio::SrtpSender> srtp;
  };

  struct Phone {
    std::uint32_t index = 0;  ///< global phone index (MAC derivation)
    std::string mac;
    int fd = -1;
    ConnState conn = ConnState::kClosed;
    std::uint32_t conn_epoch = 0;
    std::unique_ptr<control::FrameDecoder> decoder;
    std::string tx;
    std::size_t tx_off = 0;
    bool want_write = false;
    std::uint32_t calls_left = 0;  ///< calls not yet started
    std::uint32_t queued = 0;      ///< entries in ready_
    std::vector<std::uint32_t> active;  ///< call indices
    int udp_fd = -1;               ///< per-phone RTP socket (udp_sockets == 0)
    Rng rng;
    bool done = false;
  };

  struct Timer {
    std::int64_t at_ns;
    std::uint32_t call;
    std::uint32_t gen;
    std::uint32_t epoch;
    TimerKind kind;
    bool operator>(const Timer& o) const { return at_ns > o.at_ns; }
  };

  struct BatchItem {
    int fd;
    std::uint32_t len;
    std::uint32_t order;
    socklen_t dest_len;
    sockaddr_in6 dest;  ///< large enough for sockaddr_in too
  };

  // Set-up and loop.
  bool setup();
  std::int64_t now_ns() const;
  std::int64_t next_wakeup_ns(std::int64_t now) const;
  void arm_timer(std::int64_t at_ns);
  void publish();
  void begin_stop();

  // Calls.
  void start_ready_calls(std::int64_t now);
  void start_call(std::uint32_t phone_idx, std::int64_t now);
  void end_call(std::uint32_t call_idx, Outcome o, const std::string& reason);
  void after_call(std::uint32_t phone_idx);
  void finish_phone(std::uint32_t phone_idx);
  std::uint32_t alloc_call();
  void send_stop(std::uint32_t call_idx, std::int64_t now);
  void add_timer(std::int64_t at, std::uint32_t call_idx, TimerKind kind);
  void run_timers(std::int64_t now);
  int find_call(const Phone& p, std::string_view id) const;
  void start_stream(std::uint32_t call_idx, const control::StartResponse& r, std::int64_t now);
  void stop_stream(Call& c);
  void write_meta(const Call& c, Outcome o, const std::string& reason);

  // Control connection.
  bool connect_phone(std::uint32_t phone_idx);
  void on_phone_event(std::uint32_t phone_idx, std::uint32_t events);
  void on_connected(std::uint32_t phone_idx);
  void send_msg(std::uint32_t phone_idx, std::string msg);
  void flush_tx(std::uint32_t phone_idx);
  void update_epoll(Phone& p);
  void close_phone_fd(Phone& p, bool reset);
  void connection_lost(std::uint32_t phone_idx, const std::string& reason, Outcome o);
  void handle_message(std::uint32_t phone_idx, std::string_view line, std::int64_t now);

  // SIPREC streams.
  void drain_external(std::int64_t now);
  void ext_start(std::uint64_t key, const ExtStream& s, std::int64_t now);
  void ext_end(std::uint32_t call_idx);
  /// Fills c.dest / c.dest_len for dst with port, in the family of the RTP sockets.
  bool set_dest(Call& c, const sockaddr_storage& dst, std::uint16_t port);

  // RTP.
  void wheel_insert(std::uint32_t call_idx, std::int64_t key_ms);
  /// Sends at most kSendBudget due packets; true when more are due (the loop polls the
  /// control sockets without sleeping and comes back).
  bool process_wheel(std::int64_t now);
  void emit_packet(Call& c, std::int64_t now);
  std::byte* batch_slot();
  void commit_slot(const Call& c, std::uint32_t len);
  void flush_batch();
  void send_strays(const Call& c);
  int make_udp_socket(int sndbuf);
  void count_error(const std::string& what) { ++stats_.errors[what]; }
  void log_call(const Call& c, const char* fmt, ...) __attribute__((format(printf, 3, 4)));

  const RunConfig& cfg_;
  const Options& opt_;
  std::uint32_t index_;
  const StopLevel* stop_;
  int stop_seen_ = 0;

  int epfd_ = -1;
  int tfd_ = -1;
  std::int64_t armed_ns_ = -1;
  std::int64_t t0_ns_ = 0;
  int udp_family_ = AF_INET6;
  std::vector<int> udp_pool_;
  std::uint32_t udp_rr_ = 0;
  int stray_fd_ = -1;

  std::vector<Phone> phones_;
  std::uint32_t phones_done_ = 0;
  std::vector<Call> calls_;
  std::vector<std::uint32_t> free_calls_;
  std::deque<std::uint32_t> ready_;
  std::int64_t next_start_ns_ = 0;
  std::int64_t start_interval_ns_ = 0;  ///< 0: no ramp limit
  std::priority_queue<Timer, std::vector<Timer>, std::greater<>> timers_;

  /// Packets per loop pass before the control sockets are polled again: ~1-3 ms of sending
  /// at 2-6 us per packet, so an overloaded worker still answers the server within a few ms.
  static constexpr std::size_t kSendBudget = 512;
  SendWheel wheel_;
  std::vector<std::uint32_t> ended_streams_;  ///< stops to send once the batch is out

  std::uint32_t spp_ = 160;  ///< samples (= payload bytes) per packet
  std::uint32_t pkt_len_ = 172;
  std::uint32_t slot_len_ = 172;  ///< arena stride: pkt_len_ + room for an SRTP tag
  std::uint8_t pt_ = 8;
  static constexpr std::size_t kBatchMax = 512;
  std::vector<std::byte> arena_;
  std::vector<BatchItem> batch_;
  std::vector<std::uint32_t> order_;

  // SIPREC mode.
  bool siprec_ = false;
  int evfd_ = -1;
  std::mutex ext_mu_;
  std::vector<ExtCommand> ext_queue_;
  std::vector<ExtCommand> ext_work_;
  std::atomic<bool> ext_pending_{false};
  std::atomic<bool> ext_closed_{false};
  std::unordered_map<std::uint64_t, std::uint32_t> ext_calls_;  ///< key -> call index
  StreamDoneFn stream_done_;

  Stats stats_;
  mutable std::mutex pub_mu_;
  Stats published_;
  std::int64_t next_publish_ns_ = 0;
  std::atomic<bool> finished_{false};
};

}  // namespace callrec::phone
