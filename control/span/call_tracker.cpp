#include "control/span/call_tracker.hpp"

#include <algorithm>

#include "control/log.hpp"
#include "fileio/record_format.hpp"

namespace callrec::control::span {

using dataplane::decode::Endpoint;
using dataplane::decode::format_endpoint;

namespace {

std::int64_t to_ms(std::uint64_t ns) { return static_cast<std::int64_t>(ns / 1'000'000); }

std::string utc_iso(std::uint64_t ns) {
  const std::time_t t = static_cast<std::time_t>(ns / 1'000'000'000ull);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<unsigned>((ns / 1'000'000) % 1000));
  return buf;
}

/// Printable, bounded copies of header values for the catalog (control bytes become '?').
std::string clean(std::string_view v, std::size_t max = 128) {
  std::string out;
  out.reserve(std::min(v.size(), max));
  for (char ch : v.substr(0, max)) out += (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7F) ? '?' : ch;
  return out;
}

/// "%2B49..." -> "+49..." for the few escapes numbers carry; other bytes kept.
std::string unescape_user(std::string_view u) {
  std::string out;
  for (std::size_t i = 0; i < u.size() && out.size() < 64; ++i) {
    if (u[i] == '%' && i + 2 < u.size()) {
      auto hex = [](char ch) -> int {
        if (ch >= '0' && ch <= '9') return ch - '0';
        if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
        if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
        return -1;
      };
      const int h = hex(u[i + 1]), l = hex(u[i + 2]);
      if (h >= 0 && l >= 0) {
        const char ch = static_cast<char>(h * 16 + l);
        out += (static_cast<unsigned char>(ch) < 0x20) ? '?' : ch;
        i += 2;
        continue;
      }
    }
    out += (static_cast<unsigned char>(u[i]) < 0x20) ? '?' : u[i];
  }
  return out;
}

bool method_is(std::string_view m, std::string_view name) { return sip::iequals(m, name); }

}  // namespace

CallTracker::CallTracker(TrackerOptions o, SessionManager& sessions, dataplane::SpanControl& lane)
    : o_(std::move(o)), sessions_(sessions), lane_(lane) {}

CallTracker::~CallTracker() = default;

CallTracker::Call* CallTracker::find(std::string_view call_id, std::string_view tag) {
  key_buf_.assign(call_id);
  key_buf_ += '\x1f';
  key_buf_.append(tag);
  auto it = calls_.find(key_buf_);
  return it == calls_.end() ? nullptr : it->second.get();
}

bool CallTracker::recently_ended(std::string_view call_id, std::string_view tag) {
  key_buf_.assign(call_id);
  key_buf_ += '\x1f';
  key_buf_.append(tag);
  return ended_.contains(key_buf_);
}

void CallTracker::remember_end(const std::string& key, std::uint64_t ts_ns) {
  constexpr std::uint64_t kLinger = 32'000'000'000ull;  // 64*T1: the last retransmissions
  while (!ended_order_.empty() &&
         (ended_order_.front().second + kLinger < ts_ns || ended_order_.size() >= o_.max_calls)) {
    auto it = ended_.find(ended_order_.front().first);
    if (it != ended_.end() && it->second == ended_order_.front().second) ended_.erase(it);
    ended_order_.pop_front();
  }
  ended_[key] = ts_ns;
  ended_order_.emplace_back(key, ts_ns);
}

void CallTracker::on_sip(std::string_view msg, const Endpoint& src, const Endpoint& dst, std::uint64_t ts_ns) {
  sip::Message m;
  const sip::ParseResult r = sip::parse_message(msg, m, false);
  if (r != sip::ParseResult::kOk) {
    ++c_[kT_sip_bad];
    return;
  }
  handle(m, src, dst, ts_ns);
}

std::size_t CallTracker::on_sip_stream(std::string_view bytes, bool lost, const Endpoint& src, const Endpoint& dst,
                                       std::uint64_t ts_ns) {
  std::size_t used = 0;
  while (used < bytes.size()) {
    std::string_view v = bytes.substr(used);
    // CRLF keep-alives between messages
    std::size_t ws = 0;
    while (ws < v.size() && (v[ws] == '\r' || v[ws] == '\n')) ++ws;
    if (ws == v.size()) return bytes.size();
    if (lost || !dataplane::decode::looks_like_sip(v.substr(ws))) {
      const std::size_t off = sip::find_message_start(v);
      if (off == std::string_view::npos) {
        // No start line yet: keep the last (maybe partial) line, skip the rest.
        const std::size_t nl = v.rfind('\n');
        if (nl != std::string_view::npos) used += nl + 1;
        break;
      }
      used += off;
      lost = false;
      continue;
    }
    sip::Message m;
    const sip::ParseResult r = sip::parse_message(v, m, true);
    if (r == sip::ParseResult::kIncomplete) break;
    if (r != sip::ParseResult::kOk) {
      ++c_[kT_sip_bad];
      const std::size_t nl = v.find('\n', ws);
      used += nl == std::string_view::npos ? v.size() : nl + 1;
      lost = true;  // resync on the next start line
      continue;
    }
    ++c_[kT_sip_tcp];
    handle(m, src, dst, ts_ns);
    used += m.size;
  }
  return used;
}

CallTracker::Call* CallTracker::create(const sip::Message& m, const sip::NameAddr& from, const sip::NameAddr& to,
                                       const Endpoint& src, const Endpoint& dst, std::uint64_t ts_ns) {
  // Caps: unanswered INVITEs first (the cheap flood), then calls overall, oldest first.
  while (!trying_.empty() && trying_.size() >= o_.max_pending) {
    ++c_[kT_pending_evicted];
    erase(*trying_.front());
  }
  while (calls_.size() >= o_.max_calls) {
    Call* oldest = !others_.empty() ? others_.front() : trying_.front();
    ++c_[kT_calls_evicted];
    if (oldest->in_trying) erase(*oldest);
    else end(*oldest, "evicted", ts_ns);
  }
  auto c = std::make_unique<Call>();
  c->call_id = std::string(m.call_id.substr(0, 256));
  c->key = c->call_id + '\x1f' + std::string(from.tag.substr(0, 256));
  c->invite_ns = ts_ns;
  c->last_sip_ns = ts_ns;
  Party& a = c->party[0];
  Party& b = c->party[1];
  a.tag = std::string(from.tag.substr(0, 256));
  a.number = unescape_user(from.user);
  a.name = clean(from.display);
  a.sig = src;
  a.user_agent = clean(m.user_agent);
  b.number = unescape_user(to.user);
  if (b.number.empty()) b.number = unescape_user(sip::parse_name_addr(m.request_uri).user);
  b.name = clean(to.display);
  b.sig = dst;
  if (!m.pai.empty()) c->pai = clean(sip::parse_name_addr(m.pai).uri);
  else if (!m.rpid.empty()) c->pai = clean(sip::parse_name_addr(m.rpid).uri);
  Call* raw = c.get();
  auto [it, inserted] = calls_.emplace(c->key, std::move(c));
  if (!inserted) return it->second.get();
  trying_.push_back(raw);
  raw->age = std::prev(trying_.end());
  ++c_[kT_calls];
  return raw;
}

void CallTracker::promote(Call& c) {
  if (!c.in_trying) return;
  trying_.erase(c.age);
  others_.push_back(&c);
  c.age = std::prev(others_.end());
  c.in_trying = false;
}

void CallTracker::erase(Call& c) {
  if (c.bye_ns != 0) std::erase(closing_, &c);
  (c.in_trying ? trying_ : others_).erase(c.age);
  if (c.rec != 0) by_rec_.erase(c.rec);
  for (fileio::StreamId s : c.streams)
    if (s != 0) by_stream_.erase(s);
  const std::string key = c.key;  // the node (and c.key) dies inside erase
  calls_.erase(key);
}

void CallTracker::handle(const sip::Message& m, const Endpoint& src, const Endpoint& dst, std::uint64_t ts_ns) {
  ++c_[m.request ? kT_sip_requests : kT_sip_responses];
  const std::string_view method = m.request ? m.method : m.cseq_method;
  if (m.request) {
    if (method_is(method, "INVITE")) ++c_[kT_sip_invite];
    else if (method_is(method, "ACK")) ++c_[kT_sip_ack];
    else if (method_is(method, "BYE")) ++c_[kT_sip_bye];
    else if (method_is(method, "CANCEL")) ++c_[kT_sip_cancel];
    else if (method_is(method, "PRACK")) ++c_[kT_sip_prack];
    else if (method_is(method, "UPDATE")) ++c_[kT_sip_update];
    else ++c_[kT_sip_other];
  }
  if (m.call_id.empty() || m.from.empty()) {
    ++c_[kT_sip_bad];
    return;
  }
  const sip::NameAddr from = sip::parse_name_addr(m.from);
  const sip::NameAddr to = sip::parse_name_addr(m.to);
  // Which call, and who sent it: a request from the caller carries the caller's tag in From; a
  // request from the callee carries it in To; responses the other way round.
  unsigned sender = 0;
  Call* c = find(m.call_id, from.tag);
  if (c != nullptr) {
    sender = m.request ? 0 : 1;
  } else if (!to.tag.empty() && (c = find(m.call_id, to.tag)) != nullptr) {
    sender = m.request ? 1 : 0;
  }
  if (c == nullptr) {
    const bool invite = method_is(method, "INVITE");
    const bool dialog_method = invite || method_is(method, "BYE") || method_is(method, "ACK") ||
                               method_is(method, "CANCEL") || method_is(method, "UPDATE") || method_is(method, "PRACK");
    if (dialog_method && (recently_ended(m.call_id, from.tag) || (!to.tag.empty() && recently_ended(m.call_id, to.tag)))) {
      ++c_[kT_sip_after_end];
      return;
    }
    if (m.request && invite && to.tag.empty()) {
      c = create(m, from, to, src, dst, ts_ns);
      sender = 0;
    } else if (!m.request && invite && m.status > 100 && m.status < 300) {
      // The INVITE was not captured (a lost fragment, a capture started during setup): the
      // response names both parties; it travels callee -> caller.
      c = create(m, from, to, dst, src, ts_ns);
      ++c_[kT_calls_joined];
      sender = 1;
    } else {
      if (dialog_method) ++c_[kT_sip_stray];
      return;  // REGISTER, OPTIONS ... are not calls
    }
  }
  if (c->state == State::kEnded) return;
  c->last_sip_ns = ts_ns;
  Party& who = c->party[sender];
  if (!m.user_agent.empty() && who.user_agent.empty()) who.user_agent = clean(m.user_agent);

  if (m.request) {
    if (method_is(method, "BYE")) {
      if (c->bye_ns != 0) return;  // a retransmission, or the other side's BYE too
      c->hangup_by = sender == 0 ? "caller" : "callee";
      if (!m.reason_hdr.empty()) c->reason_hdr = clean(m.reason_hdr);
      c->bye_ns = ts_ns;
      if (c->rec == 0) {
        end(*c, "hangup", ts_ns);
      } else {
        closing_.push_back(c);  // tick() ends it after the tail
      }
      return;
    }
    if (method_is(method, "CANCEL")) {
      if (c->state != State::kAnswered) {
        ++c_[kT_calls_cancelled];
        c->final_code = 487;
        c->hangup_by = "caller";
        end(*c, "cancelled", ts_ns);
      }
      return;
    }
    if (!m.body.empty() && !m.body_truncated) apply_sdp(*c, sender, m.body, m.content_type, ts_ns);
    else if (m.body_truncated) ++c_[kT_sdp_bad];
    maybe_start(*c, ts_ns);
    return;
  }

  // Responses
  if (to.tag.size() > 0 && c->party[1].tag.empty() && sender == 1) c->party[1].tag = std::string(to.tag.substr(0, 256));
  if (method_is(method, "INVITE")) {
    if (sender == 1 && m.status > 100) {
      c->responded = true;
      promote(*c);
    }
    if (m.status >= 180 && m.status < 200 && c->state == State::kTrying) c->state = State::kEarly;
    if (m.status >= 200 && m.status < 300 && c->state != State::kAnswered) {
      c->state = State::kAnswered;
      c->answer_ns = ts_ns;
      c->final_code = m.status;
      c->responded = true;
      promote(*c);
      ++c_[kT_calls_answered];
    } else if (m.status >= 300 && c->state != State::kAnswered) {
      // A failed INVITE before any answer. 401/407: the caller re-sends with credentials in
      // the same dialog; 491 (glare) and 422 are retried too: keep following.
      if (m.status == 401 || m.status == 407 || m.status == 491 || m.status == 422) return;
      c->final_code = m.status;
      c->responded = true;
      if (m.status == 487) {
        ++c_[kT_calls_cancelled];
        end(*c, "cancelled", ts_ns);
      } else {
        ++c_[kT_calls_failed];
        end(*c, "rejected", ts_ns);
      }
      return;
    }
  }
  if (m.status >= 180 && m.status < 300 && !m.body.empty() && !m.body_truncated)
    apply_sdp(*c, sender, m.body, m.content_type, ts_ns);
  maybe_start(*c, ts_ns);
}

void CallTracker::apply_sdp(Call& c, unsigned who, std::string_view body, std::string_view content_type,
                            std::uint64_t ts_ns) {
  const std::string_view text = sip::find_sdp(content_type, body);
  if (text.empty()) return;  // another body (DTMF relay INFO, ISUP, XML ...)
  sip::Sdp sdp;
  if (!sip::parse_sdp(text, sdp)) {
    ++c_[kT_sdp_bad];
    return;
  }
  ++c_[kT_sdp];
  const sip::SdpMedia* a = sdp.first_audio();
  if (a == nullptr) return;
  Party& p = c.party[who];
  p.had_sdp = true;
  p.encodings.clear();
  p.clocks.clear();
  // The formats of the m-line, with their rtpmaps or static assignments.
  std::string_view f = a->formats;
  bool first = true;
  while (!f.empty() && p.encodings.size() < sip::kMaxFormats) {
    const std::size_t sp = f.find(' ');
    const std::string_view tok = f.substr(0, sp);
    f = sp == std::string_view::npos ? std::string_view{} : sip::trim(f.substr(sp + 1));
    unsigned pt = 0;
    bool ok = !tok.empty() && tok.size() <= 3;
    for (char ch : tok) ok = ok && ch >= '0' && ch <= '9';
    if (!ok) continue;
    for (char ch : tok) pt = pt * 10 + static_cast<unsigned>(ch - '0');
    if (pt > 127) continue;
    sip::RtpMap r;
    if (!a->lookup(static_cast<std::uint8_t>(pt), r)) continue;
    p.encodings.emplace_back(static_cast<std::uint8_t>(pt), std::string(r.encoding.substr(0, 23)));
    p.clocks.push_back(r.clock);
    if (first) p.codec = std::string(r.encoding.substr(0, 23));
    first = false;
  }
  p.ptime = a->ptime;
  p.held = !a->receives();
  if (!a->receives()) return;  // hold: keep the old endpoint (media resumes there or moves later)
  const Endpoint ep{a->addr, a->port};
  Endpoint rtcp = ep;
  bool has_rtcp = !a->rtcp_mux;
  if (has_rtcp) {
    rtcp.port = a->rtcp_port != 0 ? a->rtcp_port : static_cast<std::uint16_t>(a->port + 1);
    if (a->rtcp_addr.family != 0) rtcp.addr = a->rtcp_addr;
    if (rtcp.port == 0) has_rtcp = false;
  }
  if (p.has_media && p.media == ep) return;
  if (p.has_media) {
    ++c_[kT_media_moved];
    if (c.rec != 0) {
      lane_.clear_endpoint(p.media, c.streams[0]);
      lane_.clear_endpoint(p.media, c.streams[1]);
      if (p.has_rtcp) {
        lane_.clear_endpoint(p.rtcp, c.streams[0]);
        lane_.clear_endpoint(p.rtcp, c.streams[1]);
      }
    }
  }
  p.media = ep;
  p.rtcp = rtcp;
  p.has_media = true;
  p.has_rtcp = has_rtcp;
  (void)ts_ns;
  if (c.rec != 0) install(c, who);
}

void CallTracker::install(Call& c, unsigned who) {
  const Party& p = c.party[who];
  if (!p.has_media) return;
  // Packets to this party's endpoint are sent by the other party; packets from it, by this one.
  const fileio::StreamId to = c.streams[1 - who], from = c.streams[who];
  lane_.set_endpoint(p.media, to, from, false);
  if (p.has_rtcp && !(p.rtcp == p.media)) lane_.set_endpoint(p.rtcp, to, from, true);
}

void CallTracker::maybe_start(Call& c, std::uint64_t ts_ns) {
  if (c.rec != 0 || c.rec_failed || c.state == State::kEnded) return;
  // Record from the answer, or from early media (the callee's SDP in a provisional response).
  const bool early_media = c.state == State::kEarly && c.party[1].has_media;
  if (c.state != State::kAnswered && !early_media) return;
  start_recording(c, ts_ns);
}

std::shared_ptr<const fileio::PayloadMap> CallTracker::payload_map(const Call& c, unsigned receiver) {
  // RFC 3264: a party receives the payload types its own SDP lists; the sender's list fills in
  // what the receiver did not name (a delayed offer, an answer missing rtpmaps). The map is
  // looked up on every packet by the writer: calls with the same codec lists share one map
  // (interned), so it stays in cache instead of costing a miss per packet (perf: 13% of the
  // writer thread at 10,000 calls with a map per stream).
  const unsigned order[2] = {1 - receiver, receiver};
  std::string key;
  for (unsigned who : order) {
    const Party& p = c.party[who];
    key += std::to_string(p.ptime) + '|';
    for (std::size_t i = 0; i < p.encodings.size(); ++i)
      key += std::to_string(p.encodings[i].first) + ' ' + p.encodings[i].second + '/' + std::to_string(p.clocks[i]) + ';';
    key += '#';
  }
  if (auto it = maps_.find(key); it != maps_.end()) return it->second;
  auto map = std::make_shared<fileio::PayloadMap>(fileio::PayloadMap::g711());
  for (unsigned who : order) {
    const Party& p = c.party[who];
    for (std::size_t i = 0; i < p.encodings.size(); ++i)
      map->set(p.encodings[i].first, p.encodings[i].second, p.clocks[i], p.ptime != 0 ? p.ptime : 20);
  }
  if (maps_.size() >= 4096) maps_.clear();  // bounded: writers keep theirs through their shared_ptr
  maps_.emplace(std::move(key), map);
  return map;
}

bool CallTracker::start_recording(Call& c, std::uint64_t ts_ns) {
  StartParams p;
  p.kind = IngestKind::kSpan;
  p.meta.call_id = c.call_id;
  p.meta.device = o_.device;
  p.meta.local_number = c.party[0].number;
  p.meta.local_name = c.party[0].name;
  p.meta.remote_number = c.party[1].number;
  p.meta.remote_name = c.party[1].name;
  // The recording's codec column: the answer's first format when it is G.711 (streams carry
  // their own, as recorded, in the catalog's streams rows).
  if (const auto g711 = fileio::codec_from_name(c.party[1].codec.empty() ? c.party[0].codec : c.party[1].codec))
    p.meta.codec = std::string(fileio::codec_info(*g711).name);
  const Party& a = c.party[0];
  const Party& b = c.party[1];
  p.meta.extra = {{"caller_number", a.number},
                  {"caller_name", a.name},
                  {"callee_number", b.number},
                  {"callee_name", b.name},
                  {"caller_signalling", format_endpoint(a.sig.addr, a.sig.port)},
                  {"callee_signalling", format_endpoint(b.sig.addr, b.sig.port)},
                  {"invite_at", utc_iso(c.invite_ns)}};
  if (!c.pai.empty()) p.meta.extra.emplace_back("p_asserted_identity", c.pai);
  if (!a.user_agent.empty()) p.meta.extra.emplace_back("caller_user_agent", a.user_agent);
  if (!b.user_agent.empty()) p.meta.extra.emplace_back("callee_user_agent", b.user_agent);
  if (c.answer_ns != 0) p.meta.extra.emplace_back("answered_at", utc_iso(c.answer_ns));
  p.peer_text = format_endpoint(a.sig.addr, a.sig.port);
  p.owner = this;
  p.source = &lane_;
  p.started_ms = to_ms(c.invite_ns);
  for (unsigned i = 0; i < 2; ++i) {
    StreamPlan sp;
    sp.role = i == 0 ? "caller" : "callee";
    sp.assembler = o_.assembler;
    sp.assembler.payloads = payload_map(c, 1 - i);  // stream i is received by the other party
    p.observe.push_back(std::move(sp));
  }
  (void)ts_ns;
  StartResult r = sessions_.start(p);
  if (!r.ok || r.streams.size() != 2) {
    ++c_[kT_record_refused];
    c.rec_failed = true;
    log_warn("span: call_id=%s not recorded: %s", clean(c.call_id).c_str(), r.reason.c_str());
    return false;
  }
  ++c_[kT_calls_recorded];
  c.rec = r.handle;
  by_rec_[c.rec] = &c;
  for (unsigned i = 0; i < 2; ++i) {
    c.streams[i] = r.streams[i];
    by_stream_[c.streams[i]] = {&c, i};
    // telephone-events the stream's receiver declared
    std::array<std::uint64_t, 2> te{};
    std::uint32_t te_clock = 8000;
    for (unsigned who : {1 - i, i}) {
      const Party& pp = c.party[who];
      for (std::size_t k = 0; k < pp.encodings.size(); ++k)
        if (sip::iequals(pp.encodings[k].second, "telephone-event")) {
          te[pp.encodings[k].first >> 6] |= std::uint64_t{1} << (pp.encodings[k].first & 63);
          if (pp.clocks[k] != 0) te_clock = pp.clocks[k];
        }
    }
    lane_.add_stream(c.streams[i], te, te_clock, r.streams[1 - i]);
  }
  install(c, 0);
  install(c, 1);
  return true;
}

void CallTracker::end(Call& c, const std::string& reason, std::uint64_t ts_ns) {
  if (c.state == State::kEnded) return;
  c.state = State::kEnded;
  if (reason == "hangup") ++c_[kT_calls_hangup];
  else if (reason == "timeout") ++c_[kT_calls_timeout];
  else if (reason == "capture_end") ++c_[kT_calls_capture_end];
  // A call attempt the callee side answered in any way is a catalog entry even without media.
  if (c.rec == 0 && !c.rec_failed && c.responded) start_recording(c, ts_ns);
  if (c.rec != 0) {
    const RecordingHandle h = c.rec;
    by_rec_.erase(h);
    bool any_media = false;
    for (unsigned i = 0; i < 2; ++i) {
      const std::optional<dataplane::SpanStreamStats> st = lane_.stats_of(c.streams[i]);
      fileio::StreamRow row;
      row.role = i == 0 ? "caller" : "callee";
      const Party& sender = c.party[i];
      const Party& receiver = c.party[1 - i];
      row.codec = receiver.codec.empty() ? sender.codec : receiver.codec;
      if (receiver.has_media) row.dst = format_endpoint(receiver.media.addr, receiver.media.port);
      std::string flags;
      auto flag = [&flags](const char* f) {
        if (!flags.empty()) flags += ',';
        flags += f;
      };
      if (st && st->packets > 0) {
        any_media = true;
        ++c_[kT_directions_recorded];
        row.src = format_endpoint(st->src.addr, st->src.port);
        row.first_at = to_ms(st->first_ns);
        row.last_at = to_ms(st->last_ns);
        row.rtcp = st->rtcp;
        row.dtmf = st->dtmf;
        if (st->by_source) flag("by_source");
        if (sender.has_media && !(st->src.addr == sender.media.addr)) flag("nat");
        if (st->moved) flag("moved");
      } else {
        if (st) {
          row.rtcp = st->rtcp;
          row.dtmf = st->dtmf;
        }
        flag("no_media");
      }
      row.flags = flags;
      sessions_.set_stream_info(h, i, row);
    }
    MetadataOverrides ov;
    if (c.final_code != 0) ov.extra.emplace_back("final_response", std::to_string(c.final_code));
    if (!c.hangup_by.empty()) ov.extra.emplace_back("hangup_by", c.hangup_by);
    if (!c.reason_hdr.empty()) ov.extra.emplace_back("sip_reason", c.reason_hdr);
    if (c.answer_ns != 0) ov.extra.emplace_back("answered_at", utc_iso(c.answer_ns));
    ov.extra.emplace_back("answered", c.answer_ns != 0 ? "yes" : "no");
    ov.extra.emplace_back("media", any_media ? "yes" : "none");
    if (!any_media && c.answer_ns != 0) ++c_[kT_calls_no_media];
    ov.extra.emplace_back("ended_at", utc_iso(ts_ns));
    for (fileio::StreamId s : c.streams) by_stream_.erase(s);
    c.streams = {};
    c.rec = 0;
    sessions_.stop(h, ov, reason, reason != "hangup", to_ms(ts_ns));
  }
  remember_end(c.key, ts_ns);
  erase(c);
}

void CallTracker::on_server_stop(RecordingHandle h, const std::string&, const std::string&) {
  // The server ended a recording itself (no_space, shutdown, operator): the call is over for us.
  auto it = by_rec_.find(h);
  if (it == by_rec_.end()) return;  // we stopped it (end() forgets the handle first)
  Call& c = *it->second;
  by_rec_.erase(it);
  for (fileio::StreamId s : c.streams) by_stream_.erase(s);
  c.streams = {};
  c.rec = 0;
  c.rec_failed = true;
  c.state = State::kEnded;
  // Its late messages (the 200 to a re-INVITE, the BYE) must not bring it back as a new call.
  remember_end(c.key, c.last_sip_ns);
  erase(c);
}

void CallTracker::on_dtmf(fileio::StreamId stream, std::string_view digit, std::uint32_t duration_ms,
                          std::uint64_t ts_ns) {
  auto it = by_stream_.find(stream);
  if (it == by_stream_.end()) return;
  Call& c = *it->second.first;
  if (c.rec == 0) return;
  ++c_[kT_dtmf];
  fileio::EventRow ev;
  ev.stream = it->second.second;
  ev.at = to_ms(ts_ns);
  ev.kind = "dtmf";
  ev.value = std::string(digit);
  ev.duration_ms = duration_ms;
  sessions_.add_event(c.rec, ev);
}

void CallTracker::tick(std::uint64_t now_ns) {
  std::vector<Call*> done;
  std::erase_if(closing_, [&](Call* c) {
    if (now_ns < c->bye_ns + o_.bye_tail_ns) return false;
    done.push_back(c);
    return true;
  });
  for (Call* c : done) end(*c, "hangup", c->bye_ns);
  while (!trying_.empty() && now_ns > trying_.front()->invite_ns + o_.invite_timeout_ns) {
    ++c_[kT_invites_unanswered];
    erase(*trying_.front());
  }
  std::vector<Call*> expired;
  for (Call* c : others_) {
    if (c->bye_ns != 0) continue;  // ending after its BYE tail
    std::uint64_t last = c->last_sip_ns;
    for (fileio::StreamId s : c->streams)
      if (const std::optional<dataplane::SpanStreamStats> st = s != 0 ? lane_.stats_of(s) : std::nullopt)
        last = std::max(last, st->last_ns);
    std::uint64_t limit = o_.media_timeout_ns;
    if (c->state != State::kAnswered) limit = o_.ringing_timeout_ns;
    else if (c->party[0].held || c->party[1].held) limit = o_.held_timeout_ns;
    if (now_ns > last + limit) expired.push_back(c);
  }
  for (Call* c : expired) end(*c, "timeout", now_ns);
}

void CallTracker::end_all(const std::string& reason, std::uint64_t now_ns) {
  while (!trying_.empty()) {
    ++c_[kT_invites_unanswered];
    erase(*trying_.front());
  }
  while (!others_.empty()) {
    Call& c = *others_.front();
    if (c.bye_ns != 0) end(c, "hangup", c.bye_ns);
    else end(c, reason, now_ns);
  }
}

}  // namespace callrec::control::span
