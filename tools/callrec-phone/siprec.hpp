#pragma once
// callrec-phone's SIPREC client mode (--siprec): a recording client (SRC, RFC 7866) that opens
// N concurrent recording sessions towards a recording server (SRS). One thread, one epoll loop,
// does all the signalling for every session; the RTP of the sessions runs on the upload mode's
// worker threads (worker.hpp ExtStream: the same timing wheel, sendmmsg batches and sockets),
// so thousands of sessions cost a few hundred bytes each here and a Call slot there.
//
// A session, in order (one client transaction at a time, CSeq 1, 2 ...):
//   INVITE (Require: siprec, Contact ;+sip.src, multipart/mixed: SDP with two sendonly m-lines
//   labelled 1 and 2 + rs-metadata) -> 1xx -> 2xx (To tag, Contact, SDP answer: one port per
//   m-line) -> ACK -> RTP on both streams for --duration
//   [--pause-resume: re-INVITE a=inactive at 1/3 (RTP stops when it is sent), re-INVITE
//    a=sendonly at 2/3 (RTP resumes when it is answered), each ACKed]
//   [--metadata-update: UPDATE with only a partial rs-metadata document at 1/2]
//   -> both streams done -> BYE -> 2xx: the session succeeded.
// A non-2xx final answer to the INVITE is ACKed (same branch) and fails the session with the
// status code as its reason ("503"). A BYE from the server is answered 200 and fails the
// session (reason server_bye; its Reason text counted apart). A 2xx retransmitted by the
// server (our ACK lost) is ACKed again; a 2xx for a session we gave up on is ACKed and BYEd.
//
// Transports: UDP (RFC 3261 17.1: INVITE retransmitted at T1, 2*T1 ... until a provisional
// or final response; BYE/UPDATE at T1 doubling up to T2 = 4 s until a final one; the
// transaction fails after --timeout), TCP (framing by Content-Length, sip::parse_message
// stream mode), TLS (OpenSSL client; --tls-cert/--tls-key for mutual TLS; the server's
// certificate is verified only with --tls-ca). --connections N sockets or connections are
// shared by the sessions (session i on i % N), as an SBC keeps a few connections to its SRS.
#include <netinet/in.h>
#include <openssl/ssl.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <queue>
#include <string>
#include <string_view>
#include <vector>

#include "control/sip/sip_message.hpp"
#include "fileio/srtp.hpp"
#include "stats.hpp"
#include "worker.hpp"

namespace callrec::phone {

class SipClient {
 public:
  /// server: the resolved --siprec address. workers: the RTP threads (session i's streams go
  /// to workers[i % size]); they must outlive run().
  SipClient(const RunConfig& cfg, const sockaddr_storage& server, std::vector<Worker*> workers,
            const StopLevel* stop);
  ~SipClient();
  SipClient(const SipClient&) = delete;
  SipClient& operator=(const SipClient&) = delete;

  /// Before run(), on the main thread: epoll, timers, the TLS context (certificate, key and CA
  /// files are read here). False with *error set on failure (a usage error).
  bool init(std::string* error);
  /// Thread body: returns when every session has ended (or at stop level 2); then tells the
  /// workers that no more streams come (Worker::close_external).
  void run();
  [[nodiscard]] Stats snapshot() const;
  [[nodiscard]] bool finished() const { return finished_.load(std::memory_order_acquire); }

 private:
  enum class State : std::uint8_t { kIdle, kInviting, kActive, kByeing };
  enum class TxKind : std::uint8_t { kNone, kInvite, kReinvite, kUpdate, kBye };
  enum class TimerKind : std::uint8_t { kRetransmit, kTxTimeout, kPause, kResume, kMetaUpdate };
  enum Pending : std::uint8_t { kWantPause = 1, kWantResume = 2, kWantMeta = 4, kWantBye = 8 };
  enum class ConnState : std::uint8_t { kClosed, kConnecting, kHandshaking, kReady };

  struct Session {
    std::uint32_t gen = 0;      ///< bumped for every new session of the slot (in Call-ID, tags, stream keys)
    std::uint32_t epoch = 0;    ///< bumped when a transaction ends: its timers go stale
    State state = State::kIdle;
    TxKind tx = TxKind::kNone;
    bool provisional = false;   ///< a 1xx arrived for the INVITE in progress (stop retransmitting)
    bool paused = false;
    std::uint8_t pending = 0;   ///< Pending bits: what waits for the transaction in progress
    std::uint8_t streams = 0;   ///< RTP streams running on the worker
    std::uint32_t conn = 0;
    std::uint32_t repeats_left = 0;
    std::uint32_t cseq = 0;     ///< CSeq of our last request
    std::uint32_t number = 0;   ///< session number in the run (names, aors, tones)
    std::uint32_t retx_ms = 0;  ///< current retransmission interval (UDP)
    std::uint64_t sdp_version = 1;
    std::uint64_t sdp_id = 0;
    std::int64_t tx_sent_ns = 0;  ///< first transmission of the transaction in progress
    std::string tx_msg;           ///< its bytes (UDP: retransmitted; released when it ends)
    std::string to_tag;           ///< the server's tag (dialog)
    std::string remote_target;    ///< the server's Contact URI
    sockaddr_storage media{};     ///< media address of the answer (c=)
    std::array<std::uint16_t, 2> media_ports{};
    std::array<std::uint16_t, 2> local_ports{};  ///< announced in our offer
    std::unique_ptr<std::array<fileio::SdesCrypto, 2>> keys;  ///< --srtp: our keys
  };

  struct Timer {
    std::int64_t at_ns;
    std::uint32_t slot;
    std::uint32_t gen;
    std::uint32_t epoch;
    TimerKind kind;
    bool operator>(const Timer& o) const { return at_ns > o.at_ns; }
  };

  struct DeferredFail {
    std::uint32_t slot;
    std::uint32_t gen;
    std::string why;
  };

  struct Conn {
    int fd = -1;
    ConnState st = ConnState::kClosed;
    SSL* ssl = nullptr;
    std::string rx;
    std::string tx;
    std::size_t tx_off = 0;
    bool want_write = false;
    bool ssl_wants_write = false;
    std::string local_host;  ///< our address as the server sees it (Via, Contact, c=)
    std::uint16_t local_port = 0;
    std::uint64_t opened = 0;  ///< connections opened (reconnects after a loss)
    std::string broken;        ///< set: failed outside the event handler; the next event closes it
  };

  // Loop.
  std::int64_t now_ns() const;
  void arm_timer(std::int64_t at_ns);
  void publish();
  void begin_stop();
  void flush_outbox();
  void drain_done(std::int64_t now);
  void run_timers(std::int64_t now);
  void start_ready(std::int64_t now);
  void add_timer(std::int64_t at, std::uint32_t slot, TimerKind kind, bool tx_bound);

  // Sessions.
  void start_session(std::uint32_t slot, std::int64_t now);
  void end_session(std::uint32_t slot, bool ok, const std::string& reason);
  void send_request(std::uint32_t slot, TxKind kind, std::int64_t now);
  void finish_tx(Session& s);
  void run_pending(std::uint32_t slot, std::int64_t now);
  void stop_streams(std::uint32_t slot);
  void on_invite_2xx(std::uint32_t slot, const control::sip::Message& m, std::int64_t now);
  void send_ack(std::uint32_t slot, std::uint32_t cseq);
  /// A request in the session's dialog (to_override: the To header value instead of ours).
  std::string build_request(const Session& s, std::uint32_t slot, std::string_view method, std::uint32_t cseq,
                            std::string_view branch, std::string_view extra, std::string_view content_type,
                            std::string_view body, std::string_view to_override = {}) const;
  std::string sdp_offer(const Session& s, std::uint32_t slot, std::string_view direction);
  std::string call_id(std::uint32_t slot, std::uint32_t gen) const;
  std::string from_tag(std::uint32_t slot, std::uint32_t gen) const;
  std::string branch(std::uint32_t slot, std::uint32_t gen, std::uint32_t cseq, char suffix) const;
  /// The slot a Call-ID names (-1: not ours / stale).
  int slot_of(std::string_view call_id) const;

  // Messages in.
  void on_message(std::uint32_t conn, std::string_view bytes, bool stream);
  void handle_message(std::uint32_t conn, const control::sip::Message& m);
  void on_response(std::uint32_t conn, const control::sip::Message& m, std::int64_t now);
  void on_request(std::uint32_t conn, const control::sip::Message& m);
  void respond(std::uint32_t conn, const control::sip::Message& m, int code, std::string_view reason,
               std::string_view extra = {});
  void stray_2xx(std::uint32_t conn, const control::sip::Message& m);

  // Transport.
  bool ensure_conn(std::uint32_t ci);
  void send_on(std::uint32_t ci, std::string_view msg);
  void on_conn_event(std::uint32_t ci, std::uint32_t events);
  void conn_connected(std::uint32_t ci);
  bool conn_handshake(std::uint32_t ci);
  void conn_read(std::uint32_t ci);
  void conn_flush(std::uint32_t ci);
  void conn_interest(std::uint32_t ci);
  void conn_lost(std::uint32_t ci, const std::string& why);
  void count_error(const std::string& what) { ++stats_.errors[what]; }
  void log(std::uint32_t slot, const char* fmt, ...) __attribute__((format(printf, 3, 4)));

  const RunConfig& cfg_;
  const Options& opt_;
  sockaddr_storage server_{};
  std::string server_host_;  ///< "127.0.0.1" / "[::1]" for URIs
  std::uint16_t server_port_ = 0;
  std::vector<Worker*> workers_;
  std::vector<std::vector<ExtCommand>> outbox_;  ///< per worker, flushed once per loop pass
  const StopLevel* stop_;
  int stop_seen_ = 0;
  std::uint64_t run_id_ = 0;

  int epfd_ = -1;
  int tfd_ = -1;
  int evfd_ = -1;
  std::int64_t armed_ns_ = -1;
  std::int64_t t0_ns_ = 0;
  SSL_CTX* tls_ = nullptr;
  std::vector<Conn> conns_;
  std::vector<char> udp_buf_;

  std::vector<Session> sessions_;
  std::vector<DeferredFail> deferred_fail_;  ///< sessions that could not send (no connection): failed next pass
  std::uint32_t active_ = 0;  ///< sessions not idle
  std::uint32_t next_number_ = 0;
  std::deque<std::uint32_t> ready_;
  std::int64_t next_start_ns_ = 0;
  std::int64_t start_interval_ns_ = 0;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<>> timers_;
  std::uint64_t packets_per_stream_ = 0;

  // Stream ends reported by the workers (their threads) -> this thread.
  std::mutex done_mu_;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> done_queue_;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> done_work_;

  Stats stats_;
  mutable std::mutex pub_mu_;
  Stats published_;
  std::int64_t next_publish_ns_ = 0;
  std::atomic<bool> finished_{false};
};

}  // namespace callrec::phone
