#pragma once
// The SIPREC recording server (SRS, RFC 7866): the third ingest path, on the control event
// loop beside the upload server, recording through the same session manager, port allocator,
// dataplane sources and writers. See ../shared/spec/siprec-srs.md and README "SIPREC".
//
// Layers, all on the control thread:
// - transport (sip_transport.hpp): UDP + TCP on one port, TLS, framing;
// - server transactions (RFC 3261 17.2, RFC 6026): keyed by the top Via branch, sent-by and
//   method; a retransmitted request is answered from its transaction (never processed twice);
//   100 Trying for INVITE; final responses kept for 64*T1 to answer retransmissions; a 2xx is
//   retransmitted over UDP (T1 doubling to T2) until its ACK, and a 2xx never ACKed within
//   64*T1 ends the session with a BYE;
// - dialogs: one per recording session, keyed by our To tag; re-INVITE and UPDATE (new SDP
//   and/or metadata), BYE either way, CANCEL (487 while the answer is still held back), 481
//   for unknown dialogs, 491 for an INVITE while our previous 2xx awaits its ACK, 500 with
//   Retry-After for an out-of-order CSeq or an offer while one is in progress;
// - recording sessions: multipart bodies, rs-metadata (pugixml), the SDP answer
//   (sdp_answer.hpp), one allocated stream per accepted m-line, pause/resume, streams added and
//   removed, SRTP (decrypted on the writer threads), 503 + Retry-After when full.
//
// The server's own BYE (RecordingOwner::on_server_stop: no_space, rtp_timeout, shutdown,
// operator) carries a Reason header naming the cause and is retransmitted over UDP until
// answered (64*T1).
#include <netinet/in.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "control/event_loop.hpp"
#include "control/port_allocator.hpp"
#include "control/session_manager.hpp"
#include "control/sip/rs_metadata.hpp"
#include "control/sip/sip_message.hpp"
#include "control/siprec/sdp_answer.hpp"
#include "control/siprec/sip_transport.hpp"

namespace callrec::control::siprec {

struct SiprecOptions {
  std::vector<sockaddr_storage> listen;      ///< UDP + TCP
  std::vector<sockaddr_storage> tls_listen;  ///< TLS
  TlsOptions tls;
  TransportOptions transport;
  std::size_t max_sessions = 0;      ///< 0: no cap (ports, disk and descriptors still apply)
  unsigned max_streams = 16;         ///< accepted m-lines per session; more are answered with port 0
  std::string media_address;         ///< c= of our answers; empty: the address the SRC reached us on
  std::string device = "siprec";     ///< catalog device (and storage directory) of SIPREC recordings
  std::chrono::seconds retry_after{10};  ///< Retry-After of 503
  std::chrono::milliseconds t1{500};
  std::chrono::milliseconds t2{4000};
  /// Answers that start a recording wait for flush_pending() (the daemon commits the catalog
  /// batch first: an answered session is always in the catalog).
  bool defer_flush = false;
  /// Free ports needed beyond a session's own streams before a new session is accepted (the
  /// upload path keeps its share).
  std::size_t port_reserve = 0;
};

#define CALLREC_SIPREC_COUNTERS(X)                                                                        \
  X(requests, "SIP requests received")                                                                    \
  X(responses_in, "SIP responses received (to our BYEs)")                                                 \
  X(retransmissions, "retransmitted requests answered from their transaction")                            \
  X(retransmits_sent, "responses and requests we retransmitted (2xx until ACK, BYE until answered)")     \
  X(invites, "initial INVITEs (new recording sessions offered)")                                         \
  X(reinvites, "re-INVITEs in a dialog")                                                                   \
  X(updates, "UPDATEs in a dialog")                                                                        \
  X(byes_in, "BYEs received")                                                                              \
  X(byes_sent, "BYEs we sent (server-ended recordings)")                                                  \
  X(bye_unanswered, "BYEs we sent that were never answered")                                              \
  X(acks, "ACKs received")                                                                                 \
  X(cancels, "CANCELs received")                                                                           \
  X(cancelled, "INVITEs cancelled before their answer (487)")                                             \
  X(options, "OPTIONS answered")                                                                           \
  X(sessions_started, "recording sessions answered 200")                                                  \
  X(sessions_ended, "recording sessions ended")                                                           \
  X(refused_busy, "INVITEs refused with 503 (session cap, ports, disk, descriptors)")                     \
  X(refused_not_siprec, "INVITEs refused: not a recording session (no siprec tag, no metadata)")          \
  X(refused_media, "INVITEs refused: no acceptable media (488)")                                          \
  X(bad_requests, "requests answered 400 (malformed message, SDP or metadata)")                           \
  X(bad_metadata, "rs-metadata documents refused (malformed, DOCTYPE, too large, too many elements)")     \
  X(unsupported, "requests answered 415/420/405")                                                          \
  X(unknown_dialog, "in-dialog requests for no dialog (481)")                                             \
  X(glare, "re-INVITEs while our 2xx awaited its ACK (491)")                                              \
  X(out_of_order, "requests answered 500 (CSeq out of order, offer already in progress)")                  \
  X(ack_timeouts, "2xx never ACKed (the session was ended with a BYE)")                                   \
  X(garbage, "datagrams or messages dropped without an answer (unparseable, responses to nothing)")       \
  X(quirks, "requests accepted despite a vendor quirk (CSeq method not the request's, BYE without To tag)") \
  X(paused, "streams paused (inactive or c=0.0.0.0)")                                                     \
  X(resumed, "streams resumed")                                                                            \
  X(streams_added, "streams added by a re-INVITE or UPDATE")                                              \
  X(streams_removed, "streams removed by a re-INVITE or UPDATE (port 0)")                                 \
  X(streams_rejected, "offered m-lines answered with port 0 (codec, transport, crypto, cap)")            \
  X(metadata_updates, "metadata updates applied (complete or partial)")                                   \
  X(srtp_streams, "streams accepted as SRTP (decrypted and stored as RTP)")

struct SiprecCounters {
#define CALLREC_X(name, help) std::uint64_t name = 0;
  CALLREC_SIPREC_COUNTERS(CALLREC_X)
#undef CALLREC_X
};

class SiprecServer final : public RecordingOwner {
 public:
  SiprecServer(EventLoop& loop, SessionManager& sessions, PortAllocator& ports, SiprecOptions opts);
  ~SiprecServer() override;
  SiprecServer(const SiprecServer&) = delete;
  SiprecServer& operator=(const SiprecServer&) = delete;

  Status start();
  /// Ends every session with a BYE (reason shutdown is the session manager's), closes transports.
  void stop();
  /// Sends the answers held back by defer_flush.
  void flush_pending();

  [[nodiscard]] const SiprecCounters& counters() const { return c_; }
  [[nodiscard]] const TransportCounters& transport_counters() const { return transport_->counters(); }
  /// Recording sessions now (dialogs that have not ended).
  [[nodiscard]] std::size_t sessions() const { return sessions_by_rec_.size(); }
  [[nodiscard]] std::size_t transactions() const { return txs_.size(); }
  [[nodiscard]] std::size_t connections() const { return transport_->connections(); }
  [[nodiscard]] std::uint16_t port() const { return transport_->port(); }
  [[nodiscard]] std::uint16_t tls_port() const { return transport_->tls_port(); }

  // RecordingOwner
  void on_server_stop(RecordingHandle h, const std::string& call_id, const std::string& reason) override;

 private:
  struct Session;
  struct Tx;

  void on_message(const SipPeer& peer, std::string_view bytes);
  void on_request(const SipPeer& peer, const sip::Message& m, std::string_view raw);
  void on_response(const SipPeer& peer, const sip::Message& m);
  void on_ack(const SipPeer& peer, const sip::Message& m);
  void on_cancel(const SipPeer& peer, const sip::Message& m, Tx& tx);
  void on_invite(const SipPeer& peer, const sip::Message& m, Tx& tx);
  void on_reoffer(const SipPeer& peer, const sip::Message& m, Tx& tx, Session& s);
  void on_bye(const SipPeer& peer, const sip::Message& m, Tx& tx, Session& s);
  void on_conn_closed(std::uint64_t conn);
  void tick();

  /// Answers the request of tx (kept in the transaction for retransmissions).
  void respond(Tx& tx, const sip::Message& m, int code, std::string_view reason, std::string_view extra = {},
               std::string_view content_type = {}, std::string_view body = {}, const std::string& to_tag = {},
               bool hold = false);
  /// A response without a transaction (a request we could not key: 400 to garbage with headers).
  void respond_stateless(const SipPeer& peer, const sip::Message& m, int code, std::string_view reason,
                         std::string_view extra = {});
  std::string build_response(const sip::Message& m, int code, std::string_view reason, std::string_view extra,
                             std::string_view content_type, std::string_view body, const std::string& to_tag,
                             const SipPeer& peer) const;
  void send_bye(Session& s, const std::string& reason);
  void end_session(Session& s, const char* why);
  Session* find_session(const sip::Message& m);
  std::string contact_of(const SipPeer& peer) const;
  std::string media_address(const SipPeer& peer) const;
  /// Payload maps are shared between sessions with the same codec lists (5 KiB each).
  std::shared_ptr<const fileio::PayloadMap> intern(std::shared_ptr<const fileio::PayloadMap> map,
                                                   const std::string& key);
  bool session_admissible(std::size_t streams, std::string& why);

  EventLoop& loop_;
  SessionManager& sessions_mgr_;
  PortAllocator& ports_;
  SiprecOptions opts_;
  std::unique_ptr<SipTransport> transport_;
  std::unordered_map<std::string, std::unique_ptr<Tx>> txs_;
  std::unordered_map<std::string, std::unique_ptr<Session>> sessions_by_tag_;
  std::unordered_map<RecordingHandle, Session*> sessions_by_rec_;
  std::unordered_map<std::string, std::string> tag_by_call_;  ///< Call-ID -> our tag (tagless BYEs)
  std::unordered_map<std::string, std::shared_ptr<const fileio::PayloadMap>> maps_;
  struct Held {
    SipPeer peer;
    std::string key;  ///< the transaction whose response is held
  };
  std::vector<Held> held_;
  EventLoop::TimerId tick_timer_ = 0;
  SiprecCounters c_;
};

}  // namespace callrec::control::siprec
