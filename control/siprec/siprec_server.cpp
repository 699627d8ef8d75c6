#include "control/siprec/siprec_server.hpp"

#include <arpa/inet.h>
#include <sys/random.h>

#include <algorithm>
#include <cstring>

#include "control/config.hpp"
#include "control/log.hpp"
#include "control/sip/sdp.hpp"

namespace callrec::control::siprec {

namespace {

using Clock = EventLoop::Clock;

std::string random_token(std::size_t n) {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string out(n, 'x');
  unsigned char buf[64];
  n = std::min(n, sizeof buf);
  if (::getrandom(buf, n, 0) != static_cast<ssize_t>(n))
    for (std::size_t i = 0; i < n; ++i) buf[i] = static_cast<unsigned char>(std::rand());
  for (std::size_t i = 0; i < n; ++i) out[i] = kAlphabet[buf[i] % 36];
  return out;
}

std::uint64_t random_u48() {
  std::uint64_t v = 0;
  if (::getrandom(&v, sizeof v, 0) != sizeof v) v = static_cast<std::uint64_t>(std::rand());
  return (v & 0xFFFFFFFFFFFFull) | 1;
}

/// The first element of a comma list (a Via value may hold several Vias).
std::string_view first_element(std::string_view v) {
  bool quoted = false;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (v[i] == '"') quoted = !quoted;
    if (v[i] == ',' && !quoted) return sip::trim(v.substr(0, i));
  }
  return sip::trim(v);
}

/// "SIP/2.0/UDP host:port;branch=..." -> sent-by "host:port" and the parameters.
void split_via(std::string_view via, std::string_view& sent_by, std::string_view& params) {
  via = first_element(via);
  const std::size_t sp = via.find_first_of(" \t");
  std::string_view rest = sp == std::string_view::npos ? std::string_view{} : sip::trim(via.substr(sp));
  const std::size_t semi = rest.find(';');
  sent_by = sip::trim(rest.substr(0, semi));
  params = semi == std::string_view::npos ? std::string_view{} : rest.substr(semi);
}

std::string_view via_branch(std::string_view via) {
  std::string_view sent_by, params;
  split_via(via, sent_by, params);
  return sip::param(params, "branch");
}

std::string_view tag_of(std::string_view name_addr) { return sip::parse_name_addr(name_addr).tag; }

/// Parameters after the name-addr's closing '>' (or after the URI): where ;tag and feature
/// tags (+sip.src) live.
bool contact_has_feature(std::string_view contact, std::string_view feature) {
  const std::size_t gt = contact.find('>');
  const std::string_view params = gt == std::string_view::npos ? contact : contact.substr(gt + 1);
  std::size_t pos = 0;
  while ((pos = params.find(';', pos)) != std::string_view::npos) {
    ++pos;
    std::size_t end = params.find_first_of(";=,", pos);
    const std::string_view name = sip::trim(params.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos));
    if (sip::iequals(name, feature)) return true;
  }
  return false;
}

std::string lower(std::string_view s) {
  std::string o(s);
  for (char& c : o)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  return o;
}

/// The media type without parameters, lower case ("multipart/mixed").
std::string media_type(std::string_view ct) {
  const std::size_t semi = ct.find(';');
  return lower(sip::trim(ct.substr(0, semi)));
}

/// A participant's number: the user part of its aor ("sip:+1555@host" -> "+1555"; "1000@host"
/// -> "1000"; a bare number stays).
std::string aor_number(std::string_view aor) {
  std::string_view a = sip::trim(aor);
  if (!a.empty() && a.front() == '<') a.remove_prefix(1);
  for (std::string_view scheme : {"sips:", "sip:", "tel:"})
    if (a.size() >= scheme.size() && sip::iequals(a.substr(0, scheme.size()), scheme)) {
      a.remove_prefix(scheme.size());
      break;
    }
  const std::size_t at = a.find('@');
  if (at != std::string_view::npos) a = a.substr(0, at);
  const std::size_t semi = a.find_first_of(";>");
  return std::string(a.substr(0, semi));
}

bool to_sockaddr(const dataplane::decode::IpAddr& ip, sockaddr_storage& out) {
  out = sockaddr_storage{};
  if (ip.family == 4) {
    auto* s = reinterpret_cast<sockaddr_in*>(&out);
    s->sin_family = AF_INET;
    std::memcpy(&s->sin_addr, ip.b.data(), 4);
    return true;
  }
  if (ip.family == 6) {
    auto* s = reinterpret_cast<sockaddr_in6*>(&out);
    s->sin6_family = AF_INET6;
    std::memcpy(&s->sin6_addr, ip.b.data(), 16);
    return true;
  }
  return false;
}

/// The callee: of the participants other than the caller, the first that sends a stream (else
/// the first). nullptr with fewer than two participants.
const sip::RsParticipant* pick_callee(const sip::RsMetadata& meta, const sip::RsParticipant* caller) {
  const sip::RsParticipant* callee = nullptr;
  for (const auto& pt : meta.participants)
    if (&pt != caller && (callee == nullptr || (!pt.send.empty() && callee->send.empty()))) callee = &pt;
  return callee;
}

/// The catalog's participant rows of a session: roles by callrec's rule, and which of the
/// session manager's streams each participant sends (by label through the metadata).
std::vector<fileio::ParticipantRow> participant_rows(const sip::RsMetadata& meta, const std::vector<MediaPlan>& plans,
                                                     const std::vector<int>& stream_of) {
  const sip::RsParticipant* caller = meta.caller();
  const sip::RsParticipant* callee = pick_callee(meta, caller);
  std::vector<fileio::ParticipantRow> rows;
  for (std::size_t i = 0; i < meta.participants.size(); ++i) {
    const auto& pt = meta.participants[i];
    fileio::ParticipantRow r;
    r.idx = static_cast<std::uint32_t>(i);
    r.participant_id = pt.id;
    r.name = pt.name;
    r.aor = pt.aor;
    r.number = aor_number(pt.aor);
    r.role = &pt == caller ? "caller" : &pt == callee ? "callee" : "";
    for (std::size_t k = 0; k < plans.size() && k < stream_of.size(); ++k)
      if (stream_of[k] >= 0 && !plans[k].label.empty() && meta.sender_of_label(plans[k].label) == &pt)
        r.sends += (r.sends.empty() ? "" : ",") + std::to_string(stream_of[k]);
    rows.push_back(std::move(r));
  }
  return rows;
}

/// The key under which an m-line's payload map is shared: its formats, rtpmaps and ptime.
std::string payload_key(const sip::SdpMedia& md) {
  std::string key(md.formats);
  for (const auto& rm : md.rtpmaps) key += '|' + std::to_string(rm.pt) + std::string(rm.encoding) + '/' + std::to_string(rm.clock);
  return key + '|' + std::to_string(md.ptime);
}

/// The session manager's plan for one accepted m-line: its payload map and SRTP key, the
/// source its RTP must come from (the m-line's c=, when it names one), and its catalog row.
/// `src_text` is the row's source when the m-line names none ("" leaves it empty).
StreamPlan stream_plan(const MediaPlan& p, const sip::RsParticipant* sender, std::string role,
                       const std::string& src_text) {
  StreamPlan st;
  st.role = std::move(role);
  st.assembler.payloads = p.payloads;
  st.assembler.srtp = p.srtp_in;
  sockaddr_storage expected{};
  const bool has_source = p.source.family != 0 && !p.source.is_unspecified() && to_sockaddr(p.source, expected);
  if (has_source) st.expected = expected;
  st.info.label = p.label;
  st.info.participant = sender ? sender->id : std::string();
  st.info.codec = p.codec;
  st.info.src = has_source ? format_ip(expected) : src_text;
  if (p.srtp_in) st.info.flags = "srtp";
  return st;
}

/// Transactions held at once (each ~1-2 KiB for 32 s): beyond, new requests get a stateless 503.
constexpr std::size_t kMaxTransactions = 32768;

constexpr std::string_view kAllow = "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO\r\n";
constexpr std::string_view kAccept = "Accept: application/sdp, multipart/mixed, application/rs-metadata+xml\r\n";

}  // namespace

// ---- state -------------------------------------------------------------------------------

struct SiprecServer::Tx {
  std::string key;
  std::string method;
  SipPeer peer;
  std::string response;      ///< the last response sent (or held), for retransmissions
  int status = 0;
  bool held = false;         ///< defer_flush: the final response waits for flush_pending()
  bool acked = false;
  Clock::time_point expires{};
  // INVITE with a non-2xx final over UDP: retransmitted until the ACK (timer G/H).
  Clock::time_point next_retx{};
  std::chrono::milliseconds interval{0};
  std::string session_tag;   ///< the dialog an INVITE transaction created (CANCEL)
};

struct SiprecServer::Session {
  std::string tag;           ///< our To tag (the dialog key)
  std::string call_id;       ///< the recording session's SIP Call-ID
  std::string remote_tag;    ///< the SRC's From tag
  std::string from_hdr, to_hdr;  ///< as in the INVITE (To gets our tag)
  std::string remote_target; ///< the SRC's Contact URI
  std::vector<std::string> route;  ///< Record-Route values, for our BYE
  SipPeer peer;              ///< where the SRC's requests come from
  std::uint32_t remote_cseq = 0;
  std::uint32_t local_cseq = 0;
  RecordingHandle rec = 0;
  bool has_rec = false;
  std::vector<MediaPlan> plans;    ///< per offered m-line, in order
  std::vector<int> stream_of;      ///< m-line -> session-manager stream index (-1: none)
  unsigned next_stream = 0;        ///< streams the session manager holds for the recording
  sip::RsMetadata meta;
  std::uint64_t sdp_id = 0, sdp_version = 0;
  // 2xx of the last INVITE, retransmitted until its ACK.
  std::string pending_2xx;
  std::uint32_t pending_cseq = 0;
  Clock::time_point next_retx{}, give_up{};
  std::chrono::milliseconds interval{0};
  // Our BYE.
  bool bye_sent = false;
  std::string bye;
  Clock::time_point bye_next{}, bye_give_up{};
  std::chrono::milliseconds bye_interval{0};
  bool ended = false;
  std::string invite_key;    ///< the initial INVITE's transaction (CANCEL while held)
};

// ---- life cycle --------------------------------------------------------------------------

SiprecServer::SiprecServer(EventLoop& loop, SessionManager& sessions, PortAllocator& ports, SiprecOptions opts)
    : loop_(loop), sessions_mgr_(sessions), ports_(ports), opts_(std::move(opts)) {
  transport_ = std::make_unique<SipTransport>(
      loop_, opts_.transport, [this](const SipPeer& p, std::string_view b) { on_message(p, b); },
      [this](std::uint64_t conn) { on_conn_closed(conn); });
  transport_->set_busy_check([this](std::uint64_t conn) {
    for (auto& [tag, s] : sessions_by_tag_)
      if (s->peer.conn == conn) return true;
    return false;
  });
}

SiprecServer::~SiprecServer() {
  if (tick_timer_ != 0) loop_.cancel_timer(tick_timer_);
  // Recordings still owned by us must not call back into a destroyed server.
  sessions_mgr_.stop_owned_by(this, "shutdown");
}

Status SiprecServer::start() {
  for (const auto& a : opts_.listen)
    if (Status st = transport_->listen(a); !st) return st;
  for (const auto& a : opts_.tls_listen)
    if (Status st = transport_->listen_tls(a, opts_.tls); !st) return st;
  tick_timer_ = loop_.add_timer(std::chrono::milliseconds(50), [this] { tick(); }, true);
  return Status::ok();
}

void SiprecServer::stop() {
  std::vector<Session*> all;
  for (auto& [t, s] : sessions_by_tag_) all.push_back(s.get());
  for (Session* s : all)
    if (!s->ended && s->has_rec) sessions_mgr_.stop(s->rec, {}, "shutdown", true);  // -> on_server_stop -> BYE
  transport_->close_all();
}

// ---- messages ----------------------------------------------------------------------------

void SiprecServer::on_message(const SipPeer& peer, std::string_view bytes) {
  sip::Message m;
  const bool stream = peer.transport != Transport::kUdp;
  const sip::ParseResult r = sip::parse_message(bytes, m, stream);
  if (r != sip::ParseResult::kOk) {
    // Without a parsed message there is no Via to answer to: dropped and counted.
    ++c_.garbage;
    log_debug("siprec: %s %s: unparseable message (%s), dropped", transport_name(peer.transport),
              format_endpoint(peer.addr).c_str(), sip::parse_result_name(r));
    return;
  }
  if (!m.request) {
    on_response(peer, m);
    return;
  }
  on_request(peer, m, bytes.substr(0, m.size));
}

void SiprecServer::on_request(const SipPeer& peer, const sip::Message& m, std::string_view) {
  ++c_.requests;
  // RFC 3261 8.2: the headers a response needs. Without a Via there is nowhere to answer.
  if (m.via.empty()) {
    ++c_.garbage;
    return;
  }
  if (m.call_id.empty() || m.from.empty() || m.to.empty() || m.cseq_method.empty()) {
    ++c_.bad_requests;
    respond_stateless(peer, m, 400, m.call_id.empty() ? "Missing Call-ID" : m.from.empty() ? "Missing From"
                                                     : m.to.empty()    ? "Missing To"
                                                                       : "Missing or bad CSeq");
    return;
  }
  // The CSeq method should be the request's (RFC 3261 8.1.1.5); BroadWorks sends BYEs with
  // "CSeq: N INVITE". The request line decides; the quirk is counted.
  if (!sip::iequals(m.cseq_method, m.method)) ++c_.quirks;
  if (m.body_truncated) {
    ++c_.bad_requests;
    respond_stateless(peer, m, 400, "Content-Length larger than the message");
    return;
  }
  if (m.method == "ACK") {
    on_ack(peer, m);
    return;
  }
  // Transaction key (RFC 3261 17.2.3): branch + sent-by + method; RFC 2543 peers (no magic
  // cookie): Call-ID, From tag, CSeq and the top Via.
  const std::string_view branch = via_branch(m.via);
  std::string key;
  std::string_view sent_by, params;
  split_via(m.via, sent_by, params);
  const std::string_view method_key = m.method == "CANCEL" ? std::string_view("CANCEL") : m.method;
  if (branch.size() > 7 && branch.substr(0, 7) == "z9hG4bK") {
    key.append(branch).append("|").append(sent_by).append("|").append(method_key);
  } else {
    key.append(m.call_id).append("|").append(tag_of(m.from)).append("|").append(std::to_string(m.cseq));
    key.append("|").append(first_element(m.via)).append("|").append(method_key);
  }
  if (auto it = txs_.find(key); it != txs_.end()) {
    ++c_.retransmissions;
    Tx& tx = *it->second;
    if (!tx.response.empty() && !tx.held) transport_->send(peer, tx.response);
    return;
  }
  if (txs_.size() >= kMaxTransactions) {  // bounded: a flood of distinct requests
    ++c_.refused_busy;
    respond_stateless(peer, m, 503, "Service Unavailable",
                      "Retry-After: " + std::to_string(opts_.retry_after.count()) + "\r\n");
    return;
  }
  auto txp = std::make_unique<Tx>();
  Tx& tx = *txp;
  tx.key = key;
  tx.method = std::string(m.method);
  tx.peer = peer;
  tx.expires = Clock::now() + 64 * opts_.t1;
  txs_.emplace(key, std::move(txp));

  if (m.method == "CANCEL") {
    on_cancel(peer, m, tx);
    return;
  }
  const std::string_view to_tag = tag_of(m.to);
  if (m.method == "INVITE" && to_tag.empty()) {
    on_invite(peer, m, tx);
    return;
  }
  if (m.method == "OPTIONS") {
    ++c_.options;
    respond(tx, m, 200, "OK", std::string(kAllow) + std::string(kAccept) + "Supported: siprec\r\n");
    return;
  }
  Session* tagless = nullptr;
  if (to_tag.empty() && (m.method == "BYE" || m.method == "UPDATE" || m.method == "INFO")) {
    // An in-dialog request without the To tag (BroadWorks' BYE): the dialog of this Call-ID
    // and From tag, when there is one.
    if (auto it = tag_by_call_.find(std::string(m.call_id)); it != tag_by_call_.end())
      if (auto sit = sessions_by_tag_.find(it->second);
          sit != sessions_by_tag_.end() && sit->second->remote_tag == tag_of(m.from)) {
        tagless = sit->second.get();
        ++c_.quirks;
      }
  }
  if (to_tag.empty() && !tagless) {
    if (m.method == "BYE" || m.method == "UPDATE" || m.method == "INFO" || m.method == "PRACK") {
      ++c_.unknown_dialog;
      respond(tx, m, 481, "Call/Transaction Does Not Exist");
    } else {
      ++c_.unsupported;
      respond(tx, m, 405, "Method Not Allowed", std::string(kAllow));
    }
    return;
  }
  Session* s = tagless ? tagless : find_session(m);
  if (!s || s->ended) {
    ++c_.unknown_dialog;
    respond(tx, m, 481, "Call/Transaction Does Not Exist");
    return;
  }
  // In-dialog CSeq must grow (RFC 3261 12.2.2).
  if (m.cseq <= s->remote_cseq && m.method != "BYE") {
    ++c_.out_of_order;
    respond(tx, m, 500, "CSeq Out of Order", "Retry-After: 1\r\n");
    return;
  }
  if (m.cseq > s->remote_cseq) s->remote_cseq = m.cseq;
  s->peer = peer;  // the SRC may move connections (a TCP reconnect)
  if (m.method == "BYE") {
    on_bye(peer, m, tx, *s);
  } else if (m.method == "INVITE" || m.method == "UPDATE") {
    on_reoffer(peer, m, tx, *s);
  } else if (m.method == "INFO" || m.method == "NOTIFY" || m.method == "MESSAGE") {
    respond(tx, m, 200, "OK");
  } else {
    ++c_.unsupported;
    respond(tx, m, 405, "Method Not Allowed", std::string(kAllow));
  }
}

void SiprecServer::on_response(const SipPeer&, const sip::Message& m) {
  ++c_.responses_in;
  // The only requests we send are BYEs: a final response ends its retransmissions.
  if (!sip::iequals(m.cseq_method, "BYE") || m.status < 200) return;
  const std::string_view from_tag = tag_of(m.from);  // our tag in our BYE's From
  auto it = sessions_by_tag_.find(std::string(from_tag));
  if (it == sessions_by_tag_.end() || !it->second->bye_sent) {
    ++c_.garbage;
    return;
  }
  Session& s = *it->second;
  s.bye.clear();
  end_session(s, "bye answered");
}

void SiprecServer::on_ack(const SipPeer&, const sip::Message& m) {
  ++c_.acks;
  // ACK of a non-2xx final: same branch as the INVITE (its transaction absorbs it).
  const std::string_view branch = via_branch(m.via);
  if (!branch.empty()) {
    std::string_view sent_by, params;
    split_via(m.via, sent_by, params);
    std::string key;
    key.append(branch).append("|").append(sent_by).append("|INVITE");
    if (auto it = txs_.find(key); it != txs_.end() && it->second->status >= 300) {
      it->second->acked = true;
      it->second->interval = std::chrono::milliseconds(0);
      return;
    }
  }
  // ACK of a 2xx: in the dialog.
  Session* s = find_session(m);
  if (!s) return;
  // RFC 3261 requires the ACK's CSeq number to be the INVITE's; some SRCs (BroadWorks) send
  // their own. An ACK in the dialog while a 2xx is outstanding can only acknowledge it.
  if (!s->pending_2xx.empty()) {
    s->pending_2xx.clear();
    s->interval = std::chrono::milliseconds(0);
  }
}

void SiprecServer::on_cancel(const SipPeer&, const sip::Message& m, Tx& tx) {
  ++c_.cancels;
  // The INVITE transaction it cancels: same branch and sent-by (RFC 3261 9.2).
  std::string key = tx.key;
  const std::size_t bar = key.rfind('|');
  if (bar != std::string::npos) key = key.substr(0, bar) + "|INVITE";
  auto it = txs_.find(key);
  if (it == txs_.end()) {
    ++c_.unknown_dialog;
    respond(tx, m, 481, "Call/Transaction Does Not Exist");
    return;
  }
  Tx& inv = *it->second;
  respond(tx, m, 200, "OK");
  if (inv.status >= 200 && !inv.held) return;  // already answered: the CANCEL has no effect
  // The answer is still held back: the session never existed for the SRC.
  ++c_.cancelled;
  if (auto sit = sessions_by_tag_.find(inv.session_tag); sit != sessions_by_tag_.end()) {
    Session& s = *sit->second;
    s.pending_2xx.clear();
    if (s.has_rec) sessions_mgr_.stop(s.rec, {}, "cancelled", false);
    s.has_rec = false;
    end_session(s, "cancelled");
  }
  // Re-answer the held INVITE with 487 (same transaction, sent when the batch is flushed).
  // The INVITE's bytes are gone: rebuild the 487 from the CANCEL, whose Via, From, To (no
  // tag), Call-ID and CSeq number are the INVITE's (RFC 3261 9.1).
  std::string resp = build_response(m, 487, "Request Terminated", {}, {}, {}, random_token(10), inv.peer);
  // CSeq method of the CANCEL -> INVITE.
  if (const std::size_t p = resp.find(" CANCEL\r\n"); p != std::string::npos) resp.replace(p, 9, " INVITE\r\n");
  inv.response = std::move(resp);
  inv.status = 487;
  if (!inv.held) transport_->send(inv.peer, inv.response);
  inv.interval = inv.peer.transport == Transport::kUdp ? opts_.t1 : std::chrono::milliseconds(0);
  inv.next_retx = Clock::now() + inv.interval;
}

// ---- sessions ----------------------------------------------------------------------------

bool SiprecServer::session_admissible(std::size_t streams, std::string& why) {
  if (opts_.max_sessions != 0 && sessions_by_rec_.size() >= opts_.max_sessions) {
    why = "session limit (--siprec-max-sessions)";
    return false;
  }
  if (ports_.available(Clock::now()) < streams + opts_.port_reserve) {
    why = "no free RTP ports";
    return false;
  }
  return true;
}

std::shared_ptr<const fileio::PayloadMap> SiprecServer::intern(std::shared_ptr<const fileio::PayloadMap> map,
                                                               const std::string& key) {
  if (auto it = maps_.find(key); it != maps_.end()) return it->second;
  if (maps_.size() >= 4096) maps_.clear();  // bounded: writers keep theirs through their shared_ptr
  maps_.emplace(key, map);
  return map;
}

void SiprecServer::on_invite(const SipPeer& peer, const sip::Message& m, Tx& tx) {
  ++c_.invites;
  // 100 Trying at once: the SRC stops retransmitting over UDP.
  transport_->send(peer, build_response(m, 100, "Trying", {}, {}, {}, {}, peer));

  // Option tags: siprec is ours; anything else required is refused (RFC 3261 8.2.2.3).
  std::string unsupported;
  sip::for_each_header(m, "Require", 0, [&](std::string_view v) {
    while (!v.empty()) {
      const std::size_t comma = v.find(',');
      const std::string_view t = sip::trim(v.substr(0, comma));
      if (!t.empty() && !sip::iequals(t, "siprec") && !sip::iequals(t, "timer"))
        unsupported += (unsupported.empty() ? "" : ", ") + std::string(t);
      if (comma == std::string_view::npos) break;
      v.remove_prefix(comma + 1);
    }
  });
  if (!unsupported.empty()) {
    ++c_.unsupported;
    respond(tx, m, 420, "Bad Extension", "Unsupported: " + unsupported + "\r\n");
    return;
  }
  const bool require_siprec = sip::header_has_token(m, "Require", 0, "siprec");

  // The body: SDP, and the metadata when present.
  std::string_view sdp_text, meta_text;
  const std::string ct = media_type(m.content_type);
  std::vector<sip::BodyPart> parts;
  if (m.body.empty()) {
    ++c_.refused_media;
    respond(tx, m, 488, "Not Acceptable Here (an SDP offer is required)", "Warning: 399 callrec \"no offer\"\r\n");
    return;
  }
  if (ct == "application/sdp") {
    sdp_text = m.body;
  } else if (ct.rfind("multipart/", 0) == 0) {
    if (!sip::split_multipart(m.content_type, m.body, parts) || parts.empty()) {
      ++c_.bad_requests;
      respond(tx, m, 400, "Bad multipart body (no boundary or no parts)");
      return;
    }
    for (const auto& p : parts) {
      const std::string pt = media_type(p.content_type);
      if (pt == "application/sdp" && sdp_text.empty()) sdp_text = p.body;
      else if (pt.find("rs-metadata") != std::string::npos && meta_text.empty()) meta_text = p.body;
      else if (meta_text.empty() && pt != "application/sdp" && p.body.find("<recording") != std::string_view::npos)
        meta_text = p.body;  // a part with a mangled Content-Type that holds the metadata (BroadWorks)
    }
  } else {
    ++c_.unsupported;
    respond(tx, m, 415, "Unsupported Media Type", std::string(kAccept));
    return;
  }
  const bool is_recording = require_siprec || contact_has_feature(m.contact, "+sip.src") || !meta_text.empty();
  if (!is_recording) {
    ++c_.refused_not_siprec;
    respond(tx, m, 488, "Not Acceptable Here (not a recording session)",
            "Warning: 399 callrec \"callrec is a SIPREC recording server: Require: siprec or rs-metadata expected\"\r\n");
    return;
  }
  if (sdp_text.empty()) {
    ++c_.refused_media;
    respond(tx, m, 488, "Not Acceptable Here (an SDP offer is required)");
    return;
  }
  sip::Sdp sdp;
  if (!sip::parse_sdp(sdp_text, sdp)) {
    ++c_.bad_requests;
    respond(tx, m, 400, "Bad SDP");
    return;
  }
  if (sdp.dropped_media != 0) {
    ++c_.refused_media;
    respond(tx, m, 488, "Not Acceptable Here (too many m-lines)");
    return;
  }
  sip::RsMetadata meta;
  bool meta_unrecognised = false;
  if (!meta_text.empty()) {
    const sip::MetadataError e = sip::parse_rs_metadata(meta_text, meta);
    if (e == sip::MetadataError::kNotRecording) {
      // Well-formed XML that is not RFC 7865 metadata (a vendor's own schema): the media is
      // still recorded, by m-line order, and the document is counted (lenient: RFC 7866
      // allows a session without metadata).
      ++c_.bad_metadata;
      meta = sip::RsMetadata{};
      meta_unrecognised = true;
    } else if (e != sip::MetadataError::kOk) {
      ++c_.bad_metadata;
      ++c_.bad_requests;
      respond(tx, m, 400, std::string("Bad rs-metadata (") + sip::metadata_error_name(e) + ")");
      return;
    }
  }

  // Plans, one per m-line.
  std::vector<MediaPlan> plans;
  plans.reserve(sdp.media.size());
  unsigned accepted = 0;
  for (const sip::SdpMedia& md : sdp.media) {
    MediaPlan p = plan_media(md);
    if (p.accepted && accepted >= opts_.max_streams) {
      p = MediaPlan{};
      p.media = std::string(md.media);
      p.proto = std::string(md.proto);
      p.formats = std::string(md.formats);
      p.label = std::string(md.label);
      p.reject_reason = "stream cap";
    }
    if (p.accepted) {
      ++accepted;
      p.payloads = intern(p.payloads, payload_key(md));
    } else {
      ++c_.streams_rejected;
    }
    plans.push_back(std::move(p));
  }
  if (accepted == 0) {
    ++c_.refused_media;
    std::string why = plans.empty() ? "no m-line" : plans.front().reject_reason;
    respond(tx, m, 488, "Not Acceptable Here (no acceptable media)", "Warning: 304 callrec \"" + why + "\"\r\n");
    return;
  }
  std::string busy_why;
  if (!session_admissible(accepted, busy_why)) {
    ++c_.refused_busy;
    log_warn("siprec: %s: INVITE %.*s refused with 503: %s", format_endpoint(peer.addr).c_str(),
             static_cast<int>(m.call_id.size()), m.call_id.data(), busy_why.c_str());
    respond(tx, m, 503, "Service Unavailable", "Retry-After: " + std::to_string(opts_.retry_after.count()) + "\r\n");
    return;
  }

  // Who is who: caller left, callee right (export), by the metadata's rule (rs_metadata.hpp).
  const sip::RsParticipant* caller = meta.caller();
  const sip::RsParticipant* callee = pick_callee(meta, caller);

  StartParams sp;
  sp.kind = IngestKind::kSiprec;
  sp.meta.call_id = !meta.recorded_call_id.empty() ? meta.recorded_call_id : std::string(m.call_id);
  sp.meta.device = opts_.device;
  if (caller) {
    sp.meta.local_number = aor_number(caller->aor);
    sp.meta.local_name = caller->name;
  }
  if (callee) {
    sp.meta.remote_number = aor_number(callee->aor);
    sp.meta.remote_name = callee->name;
  }
  sp.meta.direction = "";
  sp.meta.extra = {{"siprec_call_id", std::string(m.call_id)},
                   {"siprec_session_id", meta.session_id},
                   {"siprec_src", format_endpoint(peer.addr)},
                   {"siprec_transport", transport_name(peer.transport)}};
  if (!meta.group_id.empty()) sp.meta.extra.emplace_back("siprec_group_id", meta.group_id);
  if (!meta.recorded_call_id.empty()) sp.meta.extra.emplace_back("recorded_call_id", meta.recorded_call_id);
  if (!m.user_agent.empty()) sp.meta.extra.emplace_back("siprec_src_user_agent", std::string(m.user_agent));
  if (meta_text.empty()) sp.meta.extra.emplace_back("siprec_metadata", "none");
  if (meta_unrecognised) sp.meta.extra.emplace_back("siprec_metadata", "unrecognised");
  sp.peer = peer.addr;
  sp.peer_text = format_endpoint(peer.addr);
  sp.owner = this;
  std::vector<int> stream_of(plans.size(), -1);
  unsigned mixed_roles = 0;
  for (std::size_t i = 0; i < plans.size(); ++i) {
    MediaPlan& p = plans[i];
    if (!p.accepted) continue;
    std::string role;
    const sip::RsParticipant* sender = p.label.empty() ? nullptr : meta.sender_of_label(p.label);
    if (sender == nullptr && meta.participants.size() >= 2) {
      // No labels, or labels the metadata does not name: by m-line order, the n-th stream is
      // the n-th participant's.
      const std::size_t n = static_cast<std::size_t>(std::count_if(stream_of.begin(), stream_of.begin() + static_cast<long>(i), [](int v) { return v >= 0; }));
      if (n < meta.participants.size()) sender = &meta.participants[n];
    }
    if (accepted == 1 && meta.participants.size() != 1) {
      role = "mixed";
    } else if (sender != nullptr && sender == caller) {
      role = "caller";
    } else if (sender != nullptr && sender == callee) {
      role = "callee";
    } else if (sender == nullptr && caller == nullptr && accepted == 2) {
      role = mixed_roles++ == 0 ? "caller" : "callee";  // no metadata: m-line order
    } else {
      role = "stream" + std::to_string(i);
    }
    if (p.srtp_in) ++c_.srtp_streams;
    StreamPlan st = stream_plan(p, sender, std::move(role), sp.peer_text);
    stream_of[i] = static_cast<int>(sp.allocate.size());
    sp.allocate.push_back(std::move(st));
  }
  for (const auto& p : plans)
    if (p.accepted && sp.meta.codec.empty() && (p.codec == "PCMA" || p.codec == "PCMU")) sp.meta.codec = p.codec;

  StartResult res = sessions_mgr_.start(sp);
  if (!res.ok) {
    const bool busy = res.reason == "no_space" || res.reason == "no_port" || res.reason == "overloaded" ||
                      res.reason == "storage_error";
    if (busy) ++c_.refused_busy;
    log_warn("siprec: %s: INVITE %.*s refused: %s", format_endpoint(peer.addr).c_str(),
             static_cast<int>(m.call_id.size()), m.call_id.data(), res.reason.c_str());
    respond(tx, m, busy ? 503 : 500, busy ? "Service Unavailable" : "Server Internal Error",
            "Retry-After: " + std::to_string(opts_.retry_after.count()) + "\r\nWarning: 399 callrec \"" + res.reason +
                "\"\r\n");
    return;
  }
  for (std::size_t i = 0; i < plans.size(); ++i)
    if (stream_of[i] >= 0) plans[i].port = res.ports[static_cast<std::size_t>(stream_of[i])];

  auto sess = std::make_unique<Session>();
  Session& s = *sess;
  s.tag = random_token(16);
  s.call_id = std::string(m.call_id);
  s.remote_tag = std::string(tag_of(m.from));
  s.from_hdr = std::string(m.from);
  s.to_hdr = std::string(m.to) + ";tag=" + s.tag;
  s.remote_target = std::string(sip::parse_name_addr(m.contact).uri);
  sip::for_each_header(m, "Record-Route", 0, [&](std::string_view v) { s.route.emplace_back(v); });
  s.peer = peer;
  s.remote_cseq = m.cseq;
  s.local_cseq = 1;
  s.rec = res.handle;
  s.has_rec = true;
  s.plans = std::move(plans);
  s.stream_of = std::move(stream_of);
  s.next_stream = accepted;
  s.meta = std::move(meta);
  s.sdp_id = random_u48();
  s.sdp_version = 1;
  s.invite_key = tx.key;
  tx.session_tag = s.tag;
  for (std::size_t i = 0; i < s.plans.size(); ++i)
    if (s.stream_of[i] >= 0 && s.plans[i].paused) {
      sessions_mgr_.set_stream_paused(s.rec, static_cast<unsigned>(s.stream_of[i]), true);
      ++c_.paused;
    }
  // Participants to the catalog.
  const auto rows = participant_rows(s.meta, s.plans, s.stream_of);
  if (!rows.empty()) sessions_mgr_.set_participants(s.rec, rows);

  const std::string body = format_answer(s.plans, media_address(peer), s.sdp_id, s.sdp_version);
  std::string extra = contact_of(peer) + std::string(kAllow) + "Supported: siprec\r\n";
  if (require_siprec) extra += "Require: siprec\r\n";
  respond(tx, m, 200, "OK", extra, "application/sdp", body, s.tag, opts_.defer_flush);
  s.pending_2xx = tx.response;
  s.pending_cseq = m.cseq;
  s.interval = peer.transport == Transport::kUdp ? opts_.t1 : std::chrono::milliseconds(0);
  s.next_retx = Clock::now() + opts_.t1;
  s.give_up = Clock::now() + 64 * opts_.t1;
  sessions_by_rec_[s.rec] = &s;
  ++c_.sessions_started;
  log_info("siprec: session %s from %s (%s): recording %lld, %u stream(s), call %s", s.call_id.c_str(),
           format_endpoint(peer.addr).c_str(), transport_name(peer.transport),
           static_cast<long long>(sessions_mgr_.catalog_id(s.rec)), accepted, sp.meta.call_id.c_str());
  tag_by_call_[s.call_id] = s.tag;
  sessions_by_tag_.emplace(s.tag, std::move(sess));
}

void SiprecServer::on_reoffer(const SipPeer& peer, const sip::Message& m, Tx& tx, Session& s) {
  const bool invite = m.method == "INVITE";
  if (invite) ++c_.reinvites;
  else ++c_.updates;
  if (invite && !s.pending_2xx.empty()) {
    // Our 2xx to the previous INVITE still awaits its ACK: the offer/answer exchange is not
    // over (RFC 3261 14.2).
    ++c_.glare;
    respond(tx, m, 491, "Request Pending");
    return;
  }
  std::string_view sdp_text, meta_text;
  const std::string ct = media_type(m.content_type);
  std::vector<sip::BodyPart> parts;
  if (!m.body.empty()) {
    if (ct == "application/sdp") {
      sdp_text = m.body;
    } else if (ct.find("rs-metadata") != std::string::npos) {
      meta_text = m.body;
    } else if (ct.rfind("multipart/", 0) == 0) {
      if (!sip::split_multipart(m.content_type, m.body, parts)) {
        ++c_.bad_requests;
        respond(tx, m, 400, "Bad multipart body");
        return;
      }
      for (const auto& p : parts) {
        const std::string pt = media_type(p.content_type);
        if (pt == "application/sdp" && sdp_text.empty()) sdp_text = p.body;
        else if (pt.find("rs-metadata") != std::string::npos && meta_text.empty()) meta_text = p.body;
      }
    } else {
      ++c_.unsupported;
      respond(tx, m, 415, "Unsupported Media Type", std::string(kAccept));
      return;
    }
  }
  // Metadata first (complete snapshot or partial update).
  if (!meta_text.empty()) {
    sip::RsMetadata upd;
    const sip::MetadataError e = sip::parse_rs_metadata(meta_text, upd);
    if (e != sip::MetadataError::kOk) {
      ++c_.bad_metadata;
      ++c_.bad_requests;
      respond(tx, m, 400, std::string("Bad rs-metadata (") + sip::metadata_error_name(e) + ")");
      return;
    }
    sip::merge_rs_metadata(s.meta, upd);
    ++c_.metadata_updates;
    if (s.has_rec) {
      sessions_mgr_.set_participants(s.rec, participant_rows(s.meta, s.plans, s.stream_of));
      const sip::RsParticipant* caller = s.meta.caller();
      const sip::RsParticipant* callee = pick_callee(s.meta, caller);
      RecordingMetadata rm;
      if (caller) {
        rm.local_number = aor_number(caller->aor);
        rm.local_name = caller->name;
      }
      if (callee) {
        rm.remote_number = aor_number(callee->aor);
        rm.remote_name = callee->name;
      }
      if (!s.meta.recorded_call_id.empty()) rm.extra.emplace_back("recorded_call_id", s.meta.recorded_call_id);
      sessions_mgr_.update_metadata(s.rec, rm);
    }
  }
  if (sdp_text.empty()) {
    if (invite) {
      // A re-INVITE without an offer: our current description is the offer (the ACK answers).
      ++s.sdp_version;
      const std::string body = format_answer(s.plans, media_address(peer), s.sdp_id, s.sdp_version);
      respond(tx, m, 200, "OK", contact_of(peer), "application/sdp", body, s.tag);
      s.pending_2xx = tx.response;
      s.pending_cseq = m.cseq;
      s.interval = peer.transport == Transport::kUdp ? opts_.t1 : std::chrono::milliseconds(0);
      s.next_retx = Clock::now() + opts_.t1;
      s.give_up = Clock::now() + 64 * opts_.t1;
    } else {
      respond(tx, m, 200, "OK", contact_of(peer), {}, {}, s.tag);
    }
    return;
  }
  sip::Sdp sdp;
  if (!sip::parse_sdp(sdp_text, sdp) || sdp.dropped_media != 0) {
    ++c_.bad_requests;
    respond(tx, m, 488, "Not Acceptable Here (bad SDP)");
    return;
  }
  std::vector<MediaPlan> plans;
  std::vector<int> stream_of;
  std::vector<StreamPlan> to_add;
  std::vector<std::size_t> add_mline;
  for (std::size_t i = 0; i < sdp.media.size(); ++i) {
    const sip::SdpMedia& md = sdp.media[i];
    const MediaPlan* prev = i < s.plans.size() ? &s.plans[i] : nullptr;
    MediaPlan p = plan_media(md, prev);
    const int old = i < s.stream_of.size() ? s.stream_of[i] : -1;
    if (p.accepted) {
      p.payloads = intern(p.payloads, payload_key(md));
    }
    if (old >= 0 && p.accepted) {
      p.port = prev->port;
      if (p.paused != prev->paused) {
        sessions_mgr_.set_stream_paused(s.rec, static_cast<unsigned>(old), p.paused);
        ++(p.paused ? c_.paused : c_.resumed);
      }
      stream_of.push_back(old);
    } else if (old >= 0) {
      sessions_mgr_.end_stream(s.rec, static_cast<unsigned>(old));
      ++c_.streams_removed;
      stream_of.push_back(-1);
    } else if (p.accepted) {
      const sip::RsParticipant* sender = p.label.empty() ? nullptr : s.meta.sender_of_label(p.label);
      const sip::RsParticipant* caller = s.meta.caller();
      StreamPlan st = stream_plan(p, sender, sender == nullptr ? "stream" + std::to_string(i) : sender == caller ? "caller" : "callee", "");
      to_add.push_back(std::move(st));
      add_mline.push_back(i);
      stream_of.push_back(-2);  // filled below
    } else {
      stream_of.push_back(-1);
    }
    plans.push_back(std::move(p));
  }
  // m-lines missing from the new offer (RFC 3264 forbids it; lenient): their streams end.
  for (std::size_t i = sdp.media.size(); i < s.stream_of.size(); ++i)
    if (s.stream_of[i] >= 0) {
      sessions_mgr_.end_stream(s.rec, static_cast<unsigned>(s.stream_of[i]));
      ++c_.streams_removed;
    }
  if (!to_add.empty()) {
    StartResult r = sessions_mgr_.add_streams(s.rec, to_add);
    if (!r.ok) {
      ++c_.refused_busy;
      for (std::size_t k = 0; k < add_mline.size(); ++k) {
        plans[add_mline[k]].accepted = false;
        stream_of[add_mline[k]] = -1;
      }
      log_warn("siprec: session %s: new streams refused: %s", s.call_id.c_str(), r.reason.c_str());
    } else {
      // The session manager numbers streams in order of creation: the added ones follow.
      for (std::size_t k = 0; k < add_mline.size(); ++k) {
        const unsigned idx = s.next_stream + static_cast<unsigned>(k);
        plans[add_mline[k]].port = r.ports[k];
        stream_of[add_mline[k]] = static_cast<int>(idx);
        if (plans[add_mline[k]].paused) sessions_mgr_.set_stream_paused(s.rec, idx, true);
      }
      s.next_stream += static_cast<unsigned>(add_mline.size());
      c_.streams_added += add_mline.size();
    }
  }
  for (std::size_t i = 0; i < plans.size(); ++i)
    if (!plans[i].accepted) ++c_.streams_rejected;
  s.plans = std::move(plans);
  s.stream_of = std::move(stream_of);
  ++s.sdp_version;
  const std::string body = format_answer(s.plans, media_address(peer), s.sdp_id, s.sdp_version);
  respond(tx, m, 200, "OK", contact_of(peer), "application/sdp", body, s.tag);
  if (invite) {
    s.pending_2xx = tx.response;
    s.pending_cseq = m.cseq;
    s.interval = peer.transport == Transport::kUdp ? opts_.t1 : std::chrono::milliseconds(0);
    s.next_retx = Clock::now() + opts_.t1;
    s.give_up = Clock::now() + 64 * opts_.t1;
  }
}

void SiprecServer::on_bye(const SipPeer&, const sip::Message& m, Tx& tx, Session& s) {
  ++c_.byes_in;
  respond(tx, m, 200, "OK", {}, {}, {}, s.tag);
  if (s.has_rec) sessions_mgr_.stop(s.rec, {}, "bye", false);
  s.has_rec = false;
  end_session(s, "bye");
}

void SiprecServer::on_server_stop(RecordingHandle h, const std::string&, const std::string& reason) {
  auto it = sessions_by_rec_.find(h);
  if (it == sessions_by_rec_.end()) return;
  Session& s = *it->second;
  s.has_rec = false;  // the manager is stopping it
  send_bye(s, reason);
}

void SiprecServer::send_bye(Session& s, const std::string& reason) {
  if (s.bye_sent || s.ended) return;
  s.bye_sent = true;
  s.pending_2xx.clear();
  ++c_.byes_sent;
  const SipPeer& p = s.peer;
  const std::string host = p.local_host.find(':') != std::string::npos ? "[" + p.local_host + "]" : p.local_host;
  std::string b;
  b.reserve(512);
  b += "BYE " + (s.remote_target.empty() ? std::string("sip:") + format_endpoint(p.addr) : s.remote_target) +
       " SIP/2.0\r\n";
  b += "Via: SIP/2.0/" + std::string(transport_name(p.transport)) + ' ' + host + ':' + std::to_string(p.local_port) +
       ";branch=z9hG4bK" + random_token(16) + ";rport\r\n";
  for (const auto& r : s.route) b += "Route: " + r + "\r\n";
  b += "Max-Forwards: 70\r\n";
  b += "From: " + s.to_hdr + "\r\n";
  b += "To: " + s.from_hdr + "\r\n";
  b += "Call-ID: " + s.call_id + "\r\n";
  b += "CSeq: " + std::to_string(++s.local_cseq) + " BYE\r\n";
  b += "Reason: SIP;cause=200;text=\"" + reason + "\"\r\n";
  b += "User-Agent: callrec\r\nContent-Length: 0\r\n\r\n";
  s.bye = b;
  if (!transport_->send_request(p, s.bye)) {
    ++c_.bye_unanswered;
    end_session(s, "bye not deliverable");
    return;
  }
  const auto now = Clock::now();
  s.bye_interval = p.transport == Transport::kUdp ? opts_.t1 : std::chrono::milliseconds(0);
  s.bye_next = now + opts_.t1;
  s.bye_give_up = now + 64 * opts_.t1;
  log_info("siprec: session %s: recording ended by the server (%s): BYE sent", s.call_id.c_str(), reason.c_str());
}

void SiprecServer::end_session(Session& s, const char*) {
  if (s.ended) return;
  s.ended = true;
  ++c_.sessions_ended;
  if (s.has_rec) {
    sessions_mgr_.stop(s.rec, {}, "hangup", false);
    s.has_rec = false;
  }
  sessions_by_rec_.erase(s.rec);
  // The dialog lingers (answers retransmitted BYEs with 481 ... no: erased on the next tick).
}

SiprecServer::Session* SiprecServer::find_session(const sip::Message& m) {
  auto it = sessions_by_tag_.find(std::string(tag_of(m.to)));
  if (it == sessions_by_tag_.end()) return nullptr;
  Session& s = *it->second;
  if (s.call_id != m.call_id) return nullptr;
  return &s;
}

void SiprecServer::on_conn_closed(std::uint64_t conn) {
  // A TCP/TLS SRC that drops its connection keeps its dialogs (it may reconnect and send BYE
  // on a new connection); our BYE then has no way to it and is counted.
  (void)conn;
}

// ---- responses ---------------------------------------------------------------------------

std::string SiprecServer::contact_of(const SipPeer& peer) const {
  const std::string host = peer.local_host.find(':') != std::string::npos ? "[" + peer.local_host + "]" : peer.local_host;
  std::string c = "Contact: <sip:callrec@" + host + ':' + std::to_string(peer.local_port);
  if (peer.transport == Transport::kTcp) c += ";transport=tcp";
  if (peer.transport == Transport::kTls) c = "Contact: <sips:callrec@" + host + ':' + std::to_string(peer.local_port);
  return c + ">;+sip.srs\r\n";
}

std::string SiprecServer::media_address(const SipPeer& peer) const {
  return opts_.media_address.empty() ? peer.local_host : opts_.media_address;
}

std::string SiprecServer::build_response(const sip::Message& m, int code, std::string_view reason,
                                         std::string_view extra, std::string_view content_type,
                                         std::string_view body, const std::string& to_tag, const SipPeer&) const {
  std::string r;
  r.reserve(512 + body.size());
  r += "SIP/2.0 " + std::to_string(code) + ' ';
  r.append(reason);
  r += "\r\n";
  sip::for_each_header(m, "Via", 'v', [&](std::string_view v) {
    r += "Via: ";
    r.append(v);
    r += "\r\n";
  });
  if (code > 100 && code < 300)
    sip::for_each_header(m, "Record-Route", 0, [&](std::string_view v) {
      r += "Record-Route: ";
      r.append(v);
      r += "\r\n";
    });
  r += "From: ";
  r.append(m.from);
  r += "\r\nTo: ";
  r.append(m.to);
  if (code > 100 && !to_tag.empty() && tag_of(m.to).empty()) r += ";tag=" + to_tag;
  r += "\r\nCall-ID: ";
  r.append(m.call_id);
  r += "\r\nCSeq: " + std::to_string(m.cseq) + ' ';
  r.append(m.cseq_method);
  r += "\r\nServer: callrec\r\n";
  r.append(extra);
  if (!content_type.empty()) {
    r += "Content-Type: ";
    r.append(content_type);
    r += "\r\n";
  }
  r += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  r.append(body);
  return r;
}

void SiprecServer::respond(Tx& tx, const sip::Message& m, int code, std::string_view reason, std::string_view extra,
                           std::string_view content_type, std::string_view body, const std::string& to_tag, bool hold) {
  // Error responses to an INVITE carry a To tag too (RFC 3261 8.2.6.2).
  const std::string tag = to_tag.empty() && code >= 300 ? random_token(10) : to_tag;
  tx.response = build_response(m, code, reason, extra, content_type, body, tag, tx.peer);
  tx.status = code;
  if (hold) {
    tx.held = true;
    held_.push_back(Held{tx.peer, tx.key});
  } else {
    transport_->send(tx.peer, tx.response);
  }
  const auto now = Clock::now();
  tx.expires = now + 64 * opts_.t1;
  if (tx.method == "INVITE" && code >= 300 && tx.peer.transport == Transport::kUdp) {
    tx.interval = opts_.t1;  // timer G: until the ACK
    tx.next_retx = now + opts_.t1;
  }
  if (tx.method != "INVITE" && tx.peer.transport != Transport::kUdp) tx.expires = now + std::chrono::seconds(1);
}

void SiprecServer::respond_stateless(const SipPeer& peer, const sip::Message& m, int code, std::string_view reason,
                                     std::string_view extra) {
  if (m.via.empty() || m.method == "ACK") return;
  transport_->send(peer, build_response(m, code, reason, extra, {}, {}, code >= 300 ? random_token(10) : std::string(), peer));
}

void SiprecServer::flush_pending() {
  if (held_.empty()) return;
  std::vector<Held> h;
  h.swap(held_);
  for (const Held& x : h) {
    auto it = txs_.find(x.key);
    if (it == txs_.end()) continue;
    Tx& tx = *it->second;
    if (!tx.held) continue;
    tx.held = false;
    transport_->send(tx.peer, tx.response);
  }
}

// ---- timers ------------------------------------------------------------------------------

void SiprecServer::tick() {
  const auto now = Clock::now();
  // Transactions: retransmissions of non-2xx finals to INVITEs (timer G), expiry (H, J, L).
  for (auto it = txs_.begin(); it != txs_.end();) {
    Tx& tx = *it->second;
    if (tx.interval.count() > 0 && !tx.acked && !tx.held && now >= tx.next_retx) {
      transport_->send(tx.peer, tx.response);
      ++c_.retransmits_sent;
      tx.interval = std::min(tx.interval * 2, opts_.t2);
      tx.next_retx = now + tx.interval;
    }
    if (now >= tx.expires && !tx.held) it = txs_.erase(it);
    else ++it;
  }
  // Sessions: 2xx until ACK, BYE until answered, ended dialogs forgotten.
  std::vector<Session*> ack_lost;
  for (auto it = sessions_by_tag_.begin(); it != sessions_by_tag_.end();) {
    Session& s = *it->second;
    if (s.ended && (s.bye.empty() || now >= s.bye_give_up)) {
      if (auto t = tag_by_call_.find(s.call_id); t != tag_by_call_.end() && t->second == s.tag) tag_by_call_.erase(t);
      it = sessions_by_tag_.erase(it);
      continue;
    }
    if (!s.pending_2xx.empty() && !s.ended) {
      auto tx = txs_.find(s.invite_key);
      const bool held = tx != txs_.end() && tx->second->held;
      if (!held && s.interval.count() > 0 && now >= s.next_retx) {
        transport_->send(s.peer, s.pending_2xx);
        ++c_.retransmits_sent;
        s.interval = std::min(s.interval * 2, opts_.t2);
        s.next_retx = now + s.interval;
      }
      if (now >= s.give_up) ack_lost.push_back(&s);
    }
    if (s.bye_sent && !s.bye.empty()) {
      if (s.bye_interval.count() > 0 && now >= s.bye_next) {
        transport_->send_request(s.peer, s.bye);
        ++c_.retransmits_sent;
        s.bye_interval = std::min(s.bye_interval * 2, opts_.t2);
        s.bye_next = now + s.bye_interval;
      }
      if (now >= s.bye_give_up) {
        ++c_.bye_unanswered;
        s.bye.clear();
        end_session(s, "bye unanswered");
      }
    }
    ++it;
  }
  for (Session* s : ack_lost) {
    ++c_.ack_timeouts;
    log_warn("siprec: session %s: the 2xx was never acknowledged: ending it", s->call_id.c_str());
    s->pending_2xx.clear();
    // A server stop: the manager calls on_server_stop(), which sends the BYE.
    if (s->has_rec && sessions_mgr_.stop(s->rec, {}, "ack_timeout", true)) continue;
    send_bye(*s, "ack_timeout");
    if (!s->bye_sent) end_session(*s, "ack timeout");
  }
}

}  // namespace callrec::control::siprec
