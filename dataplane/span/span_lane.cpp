#include "dataplane/span/span_lane.hpp"

#include <sched.h>
#include <time.h>

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstring>

#include "fileio/rtp.hpp"

namespace callrec::dataplane {

namespace {

std::string_view as_text(std::span<const std::byte> b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

/// Waiting for ring space (a capture file waits for its writers): a few yields, then 50 us
/// sleeps. Yielding alone kept the reading thread on a CPU the writers needed (10% of the
/// samples of a 10,000-call --span-read went to sched_yield), and the ring holds far more
/// than 50 us of traffic.
void wait_for_ring(unsigned& round) {
  if (++round < 8) {
    ::sched_yield();
    return;
  }
  const timespec ts{0, 50'000};
  ::nanosleep(&ts, nullptr);
}

inline bool pt_in(const std::array<std::uint64_t, 2>& set, unsigned pt) {
  return ((set[pt >> 6] >> (pt & 63)) & 1u) != 0;
}

}  // namespace

SpanLane::SpanLane(SpanLaneOptions o) : opts_(o), ip_(o.limits, rc_), tcp_(o.limits, rc_) {
  if (opts_.hold_ns != 0) {
    hold_.resize(std::max<std::size_t>(opts_.hold_packets, 1));
    hold_bytes_.resize(std::max<std::size_t>(opts_.hold_bytes, 2048));
  }
}
SpanLane::~SpanLane() = default;

Status SpanLane::start(fileio::RingMatrix& rings) {
  if (opts_.producer >= rings.producers())
    return Status::error("span lane: producer " + std::to_string(opts_.producer) + " is not in the ring matrix");
  rings_ = &rings;
  return {};
}

void SpanLane::stop() {
  // End marks for every stream still followed (the session manager normally removed them).
  std::vector<StreamId> left;
  left.reserve(streams_.size());
  for (const auto& [s, st] : streams_) left.push_back(s);
  for (StreamId s : left) remove_flow(s);
  flush();
}

Status SpanLane::add_flow(const FlowSpec&) {
  return Status::error("span lane: streams are followed by endpoint (add_stream), not by local port");
}

void SpanLane::add_stream(StreamId s, const std::array<std::uint64_t, 2>& dtmf_pts, std::uint32_t dtmf_clock,
                          StreamId sibling) {
  StreamState& st = streams_[s];
  st.sibling = sibling;
  st.dtmf_pts = dtmf_pts;
  st.dtmf_clock = dtmf_clock != 0 ? dtmf_clock : 8000;
}

void SpanLane::set_endpoint(const decode::Endpoint& ep, StreamId to_stream, StreamId from_stream, bool rtcp) {
  EpEntry e{to_stream, from_stream, rtcp, nullptr, nullptr};
  for (StreamId s : {to_stream, from_stream}) {
    if (s == 0) continue;
    auto it = streams_.find(s);
    if (it == streams_.end()) continue;
    if (s == to_stream) e.to_st = &it->second;
    if (s == from_stream) e.from_st = &it->second;
    auto& v = it->second.eps;
    if (std::find(v.begin(), v.end(), ep) == v.end()) v.push_back(ep);
  }
  if (hold_live_ != 0) rescue_eps_.push_back(ep);  // held datagrams of it are looked at again
  if (e.to_st == nullptr) e.to = 0;  // a stream not followed (anymore) gets nothing
  if (e.from_st == nullptr) e.from = 0;
  if (e.to == 0 && e.from == 0) {
    eps_.erase(ep);
    return;
  }
  eps_.set(ep, e);
}

void SpanLane::clear_endpoint(const decode::Endpoint& ep, StreamId stream) {
  EpEntry* e = eps_.find(ep);
  if (e == nullptr) return;
  if (e->to == stream) {
    e->to = 0;
    e->to_st = nullptr;
  }
  if (e->from == stream) {
    e->from = 0;
    e->from_st = nullptr;
  }
  if (e->to == 0 && e->from == 0) eps_.erase(ep);
}

void SpanLane::remove_flow(StreamId s) {
  if (auto it = streams_.find(s); it != streams_.end()) {
    for (const decode::Endpoint& ep : it->second.eps) clear_endpoint(ep, s);
    streams_.erase(it);  // an id left in updated_ is skipped by take_updates()
  }
  // The end mark, also for a stream this lane never learnt of: a writer fed by several lanes
  // finishes the stream at the last lane's mark (the session manager removes a stream once).
  // It must reach the writer even on a live capture whose ring is full: wait for it.
  if (rings_ == nullptr) return;
  fileio::PacketRing& ring = rings_->ring(opts_.producer, rings_->writer_for(s));
  for (unsigned round = 0; !ring.push(s, fileio::RecordKind::kEndOfStream, 0, {});) {
    ring.publish();
    wait_for_ring(round);
  }
  dirty_ = true;
}

const SpanStreamStats* SpanLane::stream_stats(StreamId s) const {
  auto it = streams_.find(s);
  return it == streams_.end() ? nullptr : &it->second.st;
}

std::optional<SpanStreamStats> SpanLane::stats_of(StreamId s) const {
  const SpanStreamStats* st = stream_stats(s);
  if (st == nullptr) return std::nullopt;
  return *st;
}

void SpanLane::take_updates(std::vector<std::pair<StreamId, SpanStreamStats>>& out) {
  for (StreamId s : updated_) {
    auto it = streams_.find(s);
    if (it == streams_.end()) continue;  // removed since
    it->second.updated = false;
    out.emplace_back(s, it->second.st);
  }
  updated_.clear();
}

std::optional<FlowStats> SpanLane::flow_stats(StreamId s) const {
  auto it = streams_.find(s);
  if (it == streams_.end()) return std::nullopt;
  FlowStats f;
  f.packets = it->second.st.packets;
  return f;
}

SourceStats SpanLane::stats() const {
  SourceStats s;
  s.rx_packets = frames_;
  s.rx_bytes = bytes_;
  s.delivered = sc_[kS_rtp_delivered];
  s.ring_full = sc_[kS_ring_full];
  s.unknown_flow = sc_[kS_rtp_unattributed];
  s.not_rtp = sc_[kS_not_rtp];
  return s;
}

std::vector<SourceCounter> SpanLane::counters() const {
  std::vector<SourceCounter> out;
  out.reserve(std::size_t{decode::kCounterCount} + std::size_t{decode::kReassemblyCounterCount} + kSpanCounterCount + 3);
  for (unsigned i = 0; i < decode::kCounterCount; ++i)
    out.push_back({"span_decode_" + std::string(decode::kCounterInfo[i].name),
                   std::string(decode::kCounterInfo[i].help), dc_.v[i], false});
  for (unsigned i = 0; i < decode::kReassemblyCounterCount; ++i)
    out.push_back({"span_" + std::string(decode::kReassemblyCounterInfo[i].name),
                   std::string(decode::kReassemblyCounterInfo[i].help), rc_.v[i], false});
  for (unsigned i = 0; i < kSpanCounterCount; ++i)
    out.push_back({"span_" + std::string(kSpanCounterInfo[i].name), std::string(kSpanCounterInfo[i].help), sc_[i],
                   false});
  out.push_back({"span_endpoints", "media endpoints followed", eps_.size(), true});
  out.push_back({"span_fragments_pending", "incomplete IP datagrams held", ip_.pending(), true});
  out.push_back({"span_tcp_streams_open", "TCP streams followed", tcp_.streams(), true});
  return out;
}

void SpanLane::counter_values(std::vector<std::uint64_t>& out) const {
  out.clear();
  for (unsigned i = 0; i < decode::kCounterCount; ++i) out.push_back(dc_.v[i]);
  for (unsigned i = 0; i < decode::kReassemblyCounterCount; ++i) out.push_back(rc_.v[i]);
  for (unsigned i = 0; i < kSpanCounterCount; ++i) out.push_back(sc_[i]);
  out.push_back(eps_.size());
  out.push_back(ip_.pending());
  out.push_back(tcp_.streams());
}

bool SpanLane::push(StreamId s, fileio::RecordKind kind, std::uint64_t ts_ns, std::span<const std::byte> data) {
  fileio::PacketRing& ring = rings_->ring(opts_.producer, rings_->writer_for(s));
  dirty_ = true;
  if (ring.push(s, kind, ts_ns, data)) [[likely]]
    return true;
  if (!opts_.lossless) {
    ++sc_[kS_ring_full];
    return false;
  }
  unsigned round = 0;
  do {  // a file waits for its writers: nothing read from a file is lost to speed
    ring.publish();
    wait_for_ring(round);
  } while (!ring.push(s, kind, ts_ns, data));
  return true;
}

void SpanLane::flush() {
  if (!dirty_ || rings_ == nullptr) return;
  for (unsigned w = 0; w < rings_->writers(); ++w) rings_->ring(opts_.producer, w).publish();
  dirty_ = false;
}

void SpanLane::expire(std::uint64_t now_ns) {
  ip_.expire(now_ns);
  tcp_.expire(now_ns);
  while (hold_count_ != 0 && hold_[hold_head_].ts_ns + opts_.hold_ns < now_ns) drop_held_front();
}

void SpanLane::drop_held_front() {
  Held& h = hold_[hold_head_];
  if (h.live) {
    h.live = false;
    --hold_live_;
    ++sc_[kS_rtp_unattributed];  // nobody claimed it
  }
  hold_head_ = hold_head_ + 1 == hold_.size() ? 0 : hold_head_ + 1;
  if (--hold_count_ == 0) hold_wr_ = 0;
}

void SpanLane::hold(const decode::Packet& p, std::uint64_t ts_ns) {
  const std::size_t len = p.payload.size();
  const std::size_t cap = hold_bytes_.size();
  if (len > cap / 4) {  // not a voice packet anyway
    ++sc_[kS_rtp_unattributed];
    return;
  }
  std::size_t at = 0;
  for (;;) {
    if (hold_count_ == hold_.size()) {
      drop_held_front();
      continue;
    }
    if (hold_count_ == 0) {
      at = 0;
      break;
    }
    const std::size_t front = hold_[hold_head_].off;
    if (hold_wr_ >= front) {  // in use: [front, wr)
      if (len <= cap - hold_wr_) {
        at = hold_wr_;
        break;
      }
      if (len < front) {
        at = 0;
        break;
      }
    } else if (hold_wr_ + len < front) {  // in use: [front, cap) and [0, wr)
      at = hold_wr_;
      break;
    }
    drop_held_front();  // the oldest makes room
  }
  std::memcpy(hold_bytes_.data() + at, p.payload.data(), len);
  hold_wr_ = at + len;
  std::size_t slot = hold_head_ + hold_count_;
  if (slot >= hold_.size()) slot -= hold_.size();
  hold_[slot] = Held{ts_ns, {p.src, p.sport}, {p.dst, p.dport}, at, static_cast<std::uint32_t>(len), true};
  ++hold_count_;
  ++hold_live_;
  ++sc_[kS_rtp_held];
}

void SpanLane::rescue_held(std::uint64_t before) {
  // Only a datagram to or from an endpoint set since it was last matched can match now: the
  // pass compares each held datagram with those few endpoints (a mirror full of RTP of calls
  // whose SIP it never sees keeps the hold full, and a pass must stay cheap); with many of
  // them (a burst of call set-ups) it looks each datagram up instead.
  if (rescue_eps_.empty()) return;
  if (hold_live_ == 0 || eps_.empty()) {
    rescue_eps_.clear();
    return;
  }
  constexpr std::size_t kLinearMax = 16;
  const bool linear = rescue_eps_.size() <= kLinearMax;
  auto involved = [&](const Held& h) {
    if (!linear) return true;
    for (const decode::Endpoint& e : rescue_eps_)
      if (e == h.dst || e == h.src) return true;
    return false;
  };
  std::size_t i = hold_head_;
  for (std::size_t n = 0; n < hold_count_; ++n, i = i + 1 == hold_.size() ? 0 : i + 1) {
    Held& h = hold_[i];
    if (!h.live || h.ts_ns >= before || !involved(h)) continue;
    decode::Packet p;
    p.proto = 17;
    p.src = h.src.addr;
    p.sport = h.src.port;
    p.dst = h.dst.addr;
    p.dport = h.dst.port;
    p.payload = {hold_bytes_.data() + h.off, h.len};
    if (!attribute(p, h.ts_ns)) continue;
    h.live = false;
    --hold_live_;
    ++sc_[kS_rtp_rescued];
  }
  if (before == ~std::uint64_t{0}) rescue_eps_.clear();  // a bounded pass leaves later ones for this one
  while (hold_count_ != 0 && !hold_[hold_head_].live) drop_held_front();
}

void SpanLane::on_frame(std::uint32_t link, std::span<const std::byte> frame, std::uint64_t ts_ns) {
  ++frames_;
  bytes_ += frame.size();
  decode::Packet p;
  on_decoded(p, decode::decode_frame(link, frame, p, dc_), ts_ns);
}

/// Every line of a stream's state that deliver() reads (its dtmf_pts and sibling sit past the
/// statistics; the map node puts the state at any 16-byte offset).
void SpanLane::prefetch_state(const StreamState* st) {
  const char* p = reinterpret_cast<const char*>(st);
  for (std::size_t o = 0; o < offsetof(StreamState, eps); o += 64) __builtin_prefetch(p + o);
  __builtin_prefetch(p + offsetof(StreamState, eps) - 1);
}

void SpanLane::on_burst(std::span<const capture::Frame> frames) {
  constexpr unsigned kMax = capture::FrameBurst::kMax;
  std::array<decode::Packet, kMax> p;
  std::array<decode::Result, kMax> r;
  for (std::size_t done = 0; done < frames.size(); done += kMax) {
    const auto n = static_cast<unsigned>(std::min<std::size_t>(kMax, frames.size() - done));
    const capture::Frame* f = frames.data() + done;
    const bool follow = !eps_.empty();
    for (unsigned i = 0; i < n; ++i) {
      ++frames_;
      bytes_ += f[i].data.size();
      r[i] = decode::decode_frame(f[i].link, f[i].data, p[i], dc_);
      if (follow && r[i] == decode::Result::kUdp) eps_.prefetch(decode::Endpoint{p[i].dst, p[i].dport});
    }
    if (follow) {
      // The slots are (mostly) in cache now: find the streams and start loading their state;
      // a miss on the destination prefetches the source's slot (symmetric RTP, NAT).
      std::uint32_t by_src = 0;
      for (unsigned i = 0; i < n; ++i) {
        if (r[i] != decode::Result::kUdp) continue;
        const EpEntry* e = eps_.find(decode::Endpoint{p[i].dst, p[i].dport});
        if (e != nullptr && e->to_st != nullptr) {
          prefetch_state(e->to_st);
        } else {
          eps_.prefetch(decode::Endpoint{p[i].src, p[i].sport});
          by_src |= 1u << i;
        }
      }
      for (unsigned i = 0; by_src != 0; ++i, by_src >>= 1) {
        if ((by_src & 1u) == 0) continue;
        const EpEntry* e = eps_.find(decode::Endpoint{p[i].src, p[i].sport});
        if (e != nullptr && e->from_st != nullptr) prefetch_state(e->from_st);
      }
    }
    for (unsigned i = 0; i < n; ++i) on_decoded(p[i], r[i], f[i].ts_ns);
  }
}

void SpanLane::gather(capture::FrameBurst& burst, const capture::Frame& f) {
  if (burst.add(f)) return;
  run_burst(burst);
  if (!burst.add(f)) on_burst({&f, 1});  // larger than the arena: on its own
}

void SpanLane::run_burst(capture::FrameBurst& burst) {
  if (burst.empty()) return;
  on_burst(burst.frames());
  burst.clear();
  flush();
}

void SpanLane::on_decoded(decode::Packet& p, decode::Result r, std::uint64_t ts_ns) {
  if (r == decode::Result::kFragment) {
    const std::span<const std::byte> whole = ip_.add(p, ts_ns);
    if (whole.empty()) return;
    r = decode::decode_l4(whole, p, dc_, 0);
  }
  switch (r) {
    case decode::Result::kUdp: on_datagram(p, ts_ns); break;
    case decode::Result::kTcp: on_tcp(p, ts_ns); break;
    default: ++sc_[kS_non_udp_tcp]; break;
  }
}

bool SpanLane::attribute(const decode::Packet& p, std::uint64_t ts_ns) {
  {
    StreamId s = 0;
    StreamState* st = nullptr;
    bool by_source = false, rtcp = false;
    if (const EpEntry* e = eps_.find(decode::Endpoint{p.dst, p.dport}); e != nullptr && e->to != 0) {
      s = e->to;
      st = e->to_st;
      rtcp = e->rtcp;
    } else if (const EpEntry* f = eps_.find(decode::Endpoint{p.src, p.sport}); f != nullptr && f->from != 0) {
      s = f->from;
      st = f->from_st;
      rtcp = f->rtcp;
      by_source = true;
    }
    if (st == nullptr) return false;
    if (rtcp) {
      ++st->st.rtcp;
      ++sc_[kS_rtcp];
      touch(s, *st);
    } else {
      deliver(s, *st, p, by_source, ts_ns);
    }
    return true;
  }
}

void SpanLane::on_datagram(const decode::Packet& p, std::uint64_t ts_ns) {
  if (!eps_.empty() && attribute(p, ts_ns)) return;
  const std::string_view text = as_text(p.payload);
  if (decode::looks_like_sip(text)) {
    ++sc_[kS_sip_udp];
    if (sink_) sink_->on_sip(text, {p.src, p.sport}, {p.dst, p.dport}, ts_ns);
    return;
  }
  if (p.payload.size() >= 12 && (std::to_integer<unsigned>(p.payload[0]) >> 6) == 2) {
    if (opts_.hold_ns != 0) hold(p, ts_ns);
    else ++sc_[kS_rtp_unattributed];
  } else
    ++sc_[kS_udp_other];
}

void SpanLane::on_tcp(const decode::Packet& p, std::uint64_t ts_ns) {
  const bool starts_sip = !p.payload.empty() && decode::looks_like_sip(as_text(p.payload));
  decode::TcpReassembler::Stream* s = tcp_.add(p, ts_ns, starts_sip);
  if (s == nullptr) {
    if (!p.payload.empty() && !starts_sip) ++sc_[kS_tcp_other];
    return;
  }
  if (!sink_) {
    decode::TcpReassembler::consume(*s, s->buf.size());
    return;
  }
  const std::string_view bytes(reinterpret_cast<const char*>(s->buf.data()), s->buf.size());
  const std::size_t used = sink_->on_sip_stream(bytes, s->lost, {p.src, p.sport}, {p.dst, p.dport}, ts_ns);
  s->lost = false;
  decode::TcpReassembler::consume(*s, used);
}

void SpanLane::deliver(StreamId s, StreamState& ss, const decode::Packet& p, bool by_source, std::uint64_t ts_ns) {
  const std::span<const std::byte> rtp = p.payload;
  if (rtp.size() < 12 || (std::to_integer<unsigned>(rtp[0]) >> 6) != 2) {
    ++sc_[kS_not_rtp];
    return;
  }
  const unsigned pt = std::to_integer<unsigned>(rtp[1]) & 0x7F;
  const decode::Endpoint src{p.src, p.sport};
  if (pt >= 72 && pt <= 76) {  // RTCP (SR, RR, SDES, BYE, APP) multiplexed on the RTP port
    ++ss.st.rtcp;
    ++sc_[kS_rtcp];
    touch(s, ss);
    return;
  }
  if (ss.st.packets != 0 && !(ss.st.src == src) && ss.sibling != 0 &&
      (p.dst == ss.st.src.addr || p.src == ss.st.dst.addr)) {
    auto sib = streams_.find(ss.sibling);
    if (sib != streams_.end() && (sib->second.st.packets == 0 || sib->second.st.src == src)) {
      ++sc_[kS_rtp_by_pair];
      deliver(ss.sibling, sib->second, p, by_source, ts_ns);
      return;
    }
  }
  if (pt_in(ss.dtmf_pts, pt)) {
    ++sc_[kS_dtmf_packets];
    dtmf(s, ss, rtp, ts_ns);
    return;
  }
  if (!push(s, fileio::RecordKind::kPacket, ts_ns, rtp)) return;
  ++sc_[kS_rtp_delivered];
  SpanStreamStats& st = ss.st;
  if (st.packets == 0) {
    st.first_ns = ts_ns;
    st.src = src;
    st.dst = decode::Endpoint{p.dst, p.dport};
  } else if (!(st.src == src)) {
    st.moved = true;
    st.src = src;
  }
  ++st.packets;
  st.last_ns = ts_ns;
  touch(s, ss);
  if (by_source) {
    st.by_source = true;
    ++sc_[kS_rtp_by_source];
  }
}

void SpanLane::dtmf(StreamId s, StreamState& ss, std::span<const std::byte> rtp, std::uint64_t ts_ns) {
  const auto v = fileio::parse_rtp(rtp);
  if (!v || v->payload_len < 4) return;
  const std::byte* e = rtp.data() + v->header_len;
  const unsigned event = std::to_integer<unsigned>(e[0]);
  const bool end = (std::to_integer<unsigned>(e[1]) & 0x80) != 0;
  const unsigned duration = decode::load_be16(e + 2);
  if (ss.event_done && ss.event_ts == v->timestamp) return;  // the end packet, retransmitted
  if (!end) {
    ss.in_event = true;
    ss.event_ts = v->timestamp;
    ss.event_done = false;
    return;
  }
  ss.event_done = true;
  ss.in_event = false;
  ss.event_ts = v->timestamp;
  ++ss.st.dtmf;
  touch(s, ss);
  static constexpr const char* kDigits[16] = {"0", "1", "2", "3", "4", "5", "6", "7",
                                              "8", "9", "*", "#", "A", "B", "C", "D"};
  char other[8];
  std::string_view digit;
  if (event < 16) {
    digit = kDigits[event];
  } else {
    const int n = std::snprintf(other, sizeof other, "E%u", event);
    digit = std::string_view(other, static_cast<std::size_t>(n));
  }
  const auto ms = static_cast<std::uint32_t>(std::uint64_t{duration} * 1000 / ss.dtmf_clock);
  if (sink_) sink_->on_dtmf(s, digit, ms, ts_ns);
}

}  // namespace callrec::dataplane
