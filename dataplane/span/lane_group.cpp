#include "dataplane/span/lane_group.hpp"

#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <string>

namespace callrec::dataplane {

namespace {

std::uint64_t mono_now() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

// ---- control -> lane ---------------------------------------------------------------------
enum class Cmd : std::uint8_t { kAdd, kSet, kClear, kRemove, kQuiesce };
struct CmdBody {
  Cmd type = Cmd::kAdd;
  bool rtcp = false;
  std::uint32_t clock = 0;
  std::uint64_t ts = ~std::uint64_t{0};  ///< packet time of the SIP message behind it (none: now)
  StreamId a = 0, b = 0;  ///< kAdd: sibling; kSet: to, from
  std::array<std::uint64_t, 2> pts{};
  decode::Endpoint ep;
};

// ---- lane -> control ---------------------------------------------------------------------
enum class Ev : std::uint8_t { kSip, kSipTcp, kDtmf, kStats, kQuiesced };
struct EvHead {
  Ev type = Ev::kSip;
  bool lost = false;
  std::uint32_t seq = 0;  ///< per lane: a gap means events were dropped
  std::uint32_t duration_ms = 0;
  decode::Endpoint src, dst;
};
constexpr std::size_t kMaxEventBytes = 65535 - sizeof(EvHead);
constexpr std::size_t kTcpPartialMax = 256u << 10;  ///< a partial SIP message held for a TCP stream

template <typename T>
std::span<const std::byte> bytes_of(const T& t) {
  return {reinterpret_cast<const std::byte*>(&t), sizeof t};
}

}  // namespace

/// One lane: its SpanLane, its rings, its thread, what it publishes.
struct SpanLaneGroup::Lane final : SpanSink {
  Lane(const LaneGroupOptions& o, unsigned producer)
      : cmds(o.command_ring_bytes), events(o.event_ring_bytes) {
    SpanLaneOptions lo = o.lane;
    lo.producer = producer;
    lo.lossless = false;  // live: a full writer ring drops (counted), the port does not wait
    lo.track_updates = true;
    lane = std::make_unique<SpanLane>(lo);
    lane->set_sink(this);
  }
  std::unique_ptr<SpanLane> lane;
  fileio::PacketRing cmds;    ///< control -> lane
  fileio::PacketRing events;  ///< lane -> control
  std::thread thread;
  // lane thread
  std::uint32_t seq = 0;
  bool quiescing = false;
  bool pushed = false;
  std::uint64_t last_ts = 0;  ///< packet time of the newest frame (expiry runs on it)
  std::vector<std::pair<StreamId, SpanStreamStats>> updates;  ///< reports not sent yet
  std::vector<std::uint64_t> values;
  // published by the lane thread (relaxed), read by the control thread
  std::vector<std::atomic<std::uint64_t>> pub;
  std::atomic<std::uint64_t> pub_frames{0}, pub_bytes{0}, events_dropped{0}, sip_truncated{0};
  // control thread
  std::uint32_t next_seq = 0;
  bool acked = false;
  std::deque<std::pair<StreamId, CmdBody>> backlog;  ///< commands the ring had no room for
  bool cmd_pushed = false;                           ///< pushed, not yet published

  /// Pushes one event. A dropped event leaves a gap in the sequence (the control side then
  /// forgets its partial TCP messages); a `retry` event (a report, an answer) is not counted
  /// as dropped: the caller sends it again.
  bool event(const EvHead& h0, StreamId stream, std::uint64_t ts_ns, std::span<const std::byte> body,
             bool retry = false) {
    EvHead h = h0;
    h.seq = seq;
    std::array<std::byte, 65535> scratch;  // header and body in one record
    std::memcpy(scratch.data(), &h, sizeof h);
    const std::size_t n = std::min(body.size(), kMaxEventBytes);
    if (n != 0) std::memcpy(scratch.data() + sizeof h, body.data(), n);
    if (!events.push(stream, fileio::RecordKind::kPacket, ts_ns, {scratch.data(), sizeof h + n})) {
      if (!retry) {
        ++seq;
        events_dropped.fetch_add(1, std::memory_order_relaxed);
      }
      return false;
    }
    ++seq;
    pushed = true;
    return true;
  }
  // SpanSink (lane thread): everything goes to the control thread as events.
  void on_sip(std::string_view msg, const decode::Endpoint& src, const decode::Endpoint& dst,
              std::uint64_t ts_ns) override {
    if (msg.size() > kMaxEventBytes) sip_truncated.fetch_add(1, std::memory_order_relaxed);
    EvHead h;
    h.type = Ev::kSip;
    h.src = src;
    h.dst = dst;
    event(h, 0, ts_ns, {reinterpret_cast<const std::byte*>(msg.data()), msg.size()});
  }
  std::size_t on_sip_stream(std::string_view bytes, bool lost, const decode::Endpoint& src,
                            const decode::Endpoint& dst, std::uint64_t ts_ns) override {
    // The control side frames the messages (it keeps a partial one per stream): all consumed.
    EvHead h;
    h.type = Ev::kSipTcp;
    h.src = src;
    h.dst = dst;
    h.lost = lost;
    for (std::size_t off = 0; off < bytes.size(); off += kMaxEventBytes) {
      const std::size_t n = std::min(kMaxEventBytes, bytes.size() - off);
      event(h, 0, ts_ns, {reinterpret_cast<const std::byte*>(bytes.data() + off), n});
      h.lost = false;
    }
    return bytes.size();
  }
  void on_dtmf(StreamId stream, std::string_view digit, std::uint32_t duration_ms, std::uint64_t ts_ns) override {
    EvHead h;
    h.type = Ev::kDtmf;
    h.duration_ms = duration_ms;
    event(h, stream, ts_ns, {reinterpret_cast<const std::byte*>(digit.data()), digit.size()});
  }
};

SpanLaneGroup::SpanLaneGroup(LaneGroupOptions o, LanePoll poll, LaneInit init)
    : o_(std::move(o)), poll_(std::move(poll)), init_(std::move(init)) {
  o_.lanes = std::max(1u, o_.lanes);
  for (unsigned i = 0; i < o_.lanes; ++i) lanes_.push_back(std::make_unique<Lane>(o_, o_.first_producer + i));
  names_ = lanes_[0]->lane->counters();
  for (auto& l : lanes_) {
    l->pub = std::vector<std::atomic<std::uint64_t>>(names_.size());
    l->values.resize(names_.size());
  }
}

SpanLaneGroup::~SpanLaneGroup() { stop(); }

Status SpanLaneGroup::start(fileio::RingMatrix& rings) {
  if (started_) return Status::error("span lanes: started twice");
  for (auto& l : lanes_)
    if (Status st = l->lane->start(rings); !st) return st;
  started_ = true;
  for (unsigned i = 0; i < o_.lanes; ++i) lanes_[i]->thread = std::thread([this, i] { run(i); });
  return {};
}

void SpanLaneGroup::stop() {
  if (!started_) return;
  // Every command queued reaches its lane first (the lanes are taking them).
  const std::uint64_t deadline = mono_now() + 5'000'000'000ull;
  for (;;) {
    publish_commands();
    if (std::all_of(lanes_.begin(), lanes_.end(), [](const auto& l) { return l->backlog.empty(); })) break;
    if (mono_now() > deadline) {
      for (auto& l : lanes_) c_[kLG_commands_dropped] += l->backlog.size();
      break;
    }
    ::usleep(200);
  }
  started_ = false;
  stop_.store(true, std::memory_order_release);  // after every command pushed so far
  for (auto& l : lanes_)
    if (l->thread.joinable()) l->thread.join();
}

Status SpanLaneGroup::add_flow(const FlowSpec&) {
  return Status::error("span lanes: streams are followed by endpoint (add_stream), not by local port");
}

void SpanLaneGroup::command(std::span<const std::byte> cmd, StreamId stream) {
  constexpr std::size_t kMaxBacklog = 1'000'000;
  CmdBody body;
  std::memcpy(&body, cmd.data(), sizeof body);
  for (auto& l : lanes_) {
    if (l->backlog.empty() && l->cmds.push(stream, fileio::RecordKind::kPacket, 0, cmd)) {
      l->cmd_pushed = true;
      continue;
    }
    if (l->backlog.size() >= kMaxBacklog) {  // a lane that takes nothing any more
      ++c_[kLG_commands_dropped];
      continue;
    }
    ++c_[kLG_command_waits];
    l->backlog.emplace_back(stream, body);
  }
  // Inside poll_events() the commands of its events are published together at its end, so a
  // lane applies them as one batch; outside (timeouts, the session manager), at once.
  if (event_ts_ == ~std::uint64_t{0}) publish_commands();
}

void SpanLaneGroup::publish_commands() {
  for (auto& l : lanes_) {
    while (!l->backlog.empty() &&
           l->cmds.push(l->backlog.front().first, fileio::RecordKind::kPacket, 0, bytes_of(l->backlog.front().second))) {
      l->backlog.pop_front();
      l->cmd_pushed = true;
    }
    if (l->cmd_pushed) {
      l->cmds.publish();
      l->cmd_pushed = false;
    }
  }
}

void SpanLaneGroup::add_stream(StreamId s, const std::array<std::uint64_t, 2>& dtmf_pts, std::uint32_t dtmf_clock,
                               StreamId sibling) {
  stats_[s].assign(o_.lanes, SpanStreamStats{});
  CmdBody c;
  c.type = Cmd::kAdd;
  c.clock = dtmf_clock;
  c.a = sibling;
  c.pts = dtmf_pts;
  command(bytes_of(c), s);
}

void SpanLaneGroup::set_endpoint(const decode::Endpoint& ep, StreamId to_stream, StreamId from_stream, bool rtcp) {
  CmdBody c;
  c.type = Cmd::kSet;
  c.ts = event_ts_;
  c.rtcp = rtcp;
  c.a = to_stream;
  c.b = from_stream;
  c.ep = ep;
  command(bytes_of(c), 0);
}

void SpanLaneGroup::clear_endpoint(const decode::Endpoint& ep, StreamId stream) {
  CmdBody c;
  c.type = Cmd::kClear;
  c.ts = event_ts_;
  c.a = stream;
  c.ep = ep;
  command(bytes_of(c), 0);
}

void SpanLaneGroup::remove_flow(StreamId s) {
  CmdBody c;
  c.type = Cmd::kRemove;
  c.ts = event_ts_;
  command(bytes_of(c), s);
  auto it = stats_.find(s);
  if (it == stats_.end()) return;
  if (const auto st = stats_of(s)) {
    if (removed_.emplace(s, FlowStats{st->packets, 0, 0}).second) removed_order_.push_back(s);
    while (removed_order_.size() > 4096) {
      removed_.erase(removed_order_.front());
      removed_order_.pop_front();
    }
  }
  stats_.erase(it);
}

std::optional<SpanStreamStats> SpanLaneGroup::stats_of(StreamId s) const {
  auto it = stats_.find(s);
  if (it == stats_.end()) return std::nullopt;
  SpanStreamStats out;
  for (const SpanStreamStats& l : it->second) merge_stream_stats(out, l);
  return out;
}

std::optional<FlowStats> SpanLaneGroup::flow_stats(StreamId s) const {
  if (const auto st = stats_of(s)) return FlowStats{st->packets, 0, 0};
  if (auto it = removed_.find(s); it != removed_.end()) return it->second;
  return std::nullopt;
}

// ---- lane thread -----------------------------------------------------------------------------

void SpanLaneGroup::apply(Lane& l, std::span<const std::byte> cmd, StreamId stream) {
  CmdBody c;
  if (cmd.size() != sizeof c) return;
  std::memcpy(&c, cmd.data(), sizeof c);
  SpanLane& lane = *l.lane;
  switch (c.type) {
    case Cmd::kAdd: lane.add_stream(stream, c.pts, c.clock, c.a); break;
    case Cmd::kSet:
      lane.rescue_held(c.ts);
      lane.set_endpoint(c.ep, c.a, c.b, c.rtcp);
      break;
    // Held RTP older than the SIP message behind a change is matched against the endpoints as
    // they were before it (a re-INVITE's old media path, an endpoint another call announces
    // next, packets sent just before a BYE): what the lane would have done had the SDP come in
    // time. The rest waits for the next change, or for the pass after the batch.
    case Cmd::kClear:
      lane.rescue_held(c.ts);
      lane.clear_endpoint(c.ep, c.a);
      break;
    case Cmd::kRemove:
      lane.rescue_held(c.ts);
      lane.remove_flow(stream);
      break;
    case Cmd::kQuiesce: {
      l.quiescing = true;
      lane.flush();
      for (int tries = 0; tries < 20000; ++tries) {  // every report out before the answer
        report(l);
        if (l.updates.empty() && !lane.has_updates()) break;
        l.events.publish();
        ::usleep(50);
      }
      EvHead h;
      h.type = Ev::kQuiesced;
      for (int tries = 0; !l.event(h, 0, l.last_ts, {}, true) && tries < 20000; ++tries) {
        l.events.publish();
        ::usleep(50);
      }
      break;
    }
  }
}

void SpanLaneGroup::report(Lane& l) {
  // What a full ring left over goes first; new figures are taken only once it is out (streams
  // keep their "changed" mark meanwhile), so a stalled control thread costs no memory here.
  if (l.updates.empty()) l.lane->take_updates(l.updates);
  std::size_t sent = 0;
  for (; sent < l.updates.size(); ++sent) {
    EvHead h;
    h.type = Ev::kStats;
    if (!l.event(h, l.updates[sent].first, l.updates[sent].second.last_ns, bytes_of(l.updates[sent].second), true))
      break;  // the rest next time
  }
  l.updates.erase(l.updates.begin(), l.updates.begin() + static_cast<std::ptrdiff_t>(sent));
}

void SpanLaneGroup::publish_counters(Lane& l) {
  l.lane->counter_values(l.values);
  for (std::size_t i = 0; i < l.values.size(); ++i) l.pub[i].store(l.values[i], std::memory_order_relaxed);
  l.pub_frames.store(l.lane->frames(), std::memory_order_relaxed);
  l.pub_bytes.store(l.lane->bytes(), std::memory_order_relaxed);
}

void SpanLaneGroup::run(unsigned i) {
  if (init_) init_(i);
  Lane& l = *lanes_[i];
  {
    char name[16];
    std::snprintf(name, sizeof name, "callrec-span%u", i);
    ::pthread_setname_np(::pthread_self(), name);
  }
  std::array<capture::Frame, capture::FrameBurst::kMax> f;
  unsigned idle = 0;
  const auto interval = static_cast<std::uint64_t>(o_.report_interval.count()) * 1000u;
  std::uint64_t next_report = mono_now() + interval, next_publish = 0;
  for (;;) {
    const bool stopping = stop_.load(std::memory_order_acquire);
    l.cmds.consume([&](const fileio::RingRecordHeader& h, std::span<const std::byte> b) { apply(l, b, h.stream); });
    l.lane->rescue_held();  // RTP that came before its endpoints (no-op when none was set)
    l.lane->flush();
    if (stopping) break;  // every command sent before stop() was applied above
    const unsigned n = l.quiescing ? 0u : poll_(i, f.data(), static_cast<unsigned>(f.size()));
    if (n != 0) {
      l.lane->on_burst({f.data(), n});
      l.lane->flush();
      for (unsigned k = 0; k < n; ++k) l.last_ts = std::max(l.last_ts, f[k].ts_ns);
      idle = 0;
    } else if (++idle > 1024 && o_.idle_sleep_us != 0) {
      ::usleep(o_.idle_sleep_us);
    } else {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    if (const std::uint64_t now = mono_now(); now >= next_report) {
      next_report = now + interval;
      l.lane->expire(l.last_ts);  // packet time: reassembly and held RTP
      report(l);
      if (now >= next_publish) {
        next_publish = now + 100'000'000ull;
        publish_counters(l);
      }
    }
    if (l.pushed) {
      l.events.publish();
      l.pushed = false;
    }
  }
  l.lane->stop();  // end marks for the streams still followed
  report(l);
  publish_counters(l);
  l.events.publish();
}

// ---- control side -------------------------------------------------------------------------------

std::size_t SpanLaneGroup::poll_events(SpanSink& sink) {
  publish_commands();  // what waited for room
  struct Event {
    std::uint64_t ts = 0;
    EvHead h;
    StreamId stream = 0;
    std::string body;
    unsigned lane = 0;
  };
  std::vector<Event> evs;
  for (unsigned li = 0; li < lanes_.size(); ++li) {
    Lane& l = *lanes_[li];
    l.events.consume([&](const fileio::RingRecordHeader& rh, std::span<const std::byte> b) {
      EvHead h;
      if (b.size() < sizeof h) return;
      std::memcpy(&h, b.data(), sizeof h);
      if (h.seq != l.next_seq) {  // this lane dropped events: its partial TCP messages have holes
        for (auto it = tcp_.begin(); it != tcp_.end();) {
          if (it->second.lane != li) {
            ++it;
            continue;
          }
          tcp_age_.erase(it->second.age);
          it = tcp_.erase(it);
        }
      }
      l.next_seq = h.seq + 1;
      const std::span<const std::byte> body = b.subspan(sizeof h);
      if (h.type == Ev::kStats) {
        SpanStreamStats st;
        if (body.size() != sizeof st) return;
        std::memcpy(&st, body.data(), sizeof st);
        if (auto it = stats_.find(rh.stream); it != stats_.end()) it->second[li] = st;
        return;
      }
      if (h.type == Ev::kQuiesced) {
        l.acked = true;
        return;
      }
      evs.push_back(
          Event{rh.rx_ns, h, rh.stream, std::string(reinterpret_cast<const char*>(body.data()), body.size()), li});
    });
  }
  // Lanes run side by side: packet-time order across them (a dialog's messages may travel on
  // two lanes when a proxy is in the middle).
  std::stable_sort(evs.begin(), evs.end(), [](const Event& a, const Event& b) { return a.ts < b.ts; });
  for (Event& e : evs) {
    event_ts_ = e.ts;  // what the sink changes now, it changes at this packet time
    switch (e.h.type) {
      case Ev::kSip: sink.on_sip(e.body, e.h.src, e.h.dst, e.ts); break;
      case Ev::kDtmf: sink.on_dtmf(e.stream, e.body, e.h.duration_ms, e.ts); break;
      case Ev::kSipTcp: {
        const auto key = std::make_pair(e.h.src, e.h.dst);
        const unsigned lane_of_event = e.lane;
        auto it = tcp_.find(key);
        std::string_view bytes = e.body;
        bool lost = e.h.lost;
        if (it != tcp_.end()) {
          if (lost) {
            it->second.bytes.clear();
          }
          it->second.bytes += e.body;
          bytes = it->second.bytes;
        }
        const std::size_t used = std::min(bytes.size(), sink.on_sip_stream(bytes, lost, e.h.src, e.h.dst, e.ts));
        const std::size_t left = bytes.size() - used;
        if (left == 0) {
          if (it != tcp_.end()) {
            tcp_age_.erase(it->second.age);
            tcp_.erase(it);
          }
          break;
        }
        if (left > kTcpPartialMax) {  // no SIP message is this long: drop it, resync later
          ++c_[kLG_tcp_partial_dropped];
          if (it != tcp_.end()) {
            tcp_age_.erase(it->second.age);
            tcp_.erase(it);
          }
          break;
        }
        if (it == tcp_.end()) {
          while (tcp_.size() >= o_.max_tcp_partial && !tcp_age_.empty()) {
            tcp_.erase(tcp_age_.front());
            tcp_age_.pop_front();
            ++c_[kLG_tcp_partial_dropped];
          }
          tcp_age_.push_back(key);
          it = tcp_.emplace(key, TcpPartial{std::string(bytes.substr(used)), lane_of_event, std::prev(tcp_age_.end())})
                   .first;
        } else {
          it->second.bytes.erase(0, used);
        }
        break;
      }
      case Ev::kStats:
      case Ev::kQuiesced: break;
    }
  }
  event_ts_ = ~std::uint64_t{0};
  publish_commands();
  return evs.size();
}

bool SpanLaneGroup::quiesce(SpanSink& sink, std::chrono::milliseconds timeout) {
  if (!started_) return true;
  for (auto& l : lanes_) l->acked = false;
  CmdBody c;
  c.type = Cmd::kQuiesce;
  command(bytes_of(c), 0);
  const std::uint64_t deadline = mono_now() + static_cast<std::uint64_t>(timeout.count()) * 1'000'000ull;
  for (;;) {
    poll_events(sink);
    if (std::all_of(lanes_.begin(), lanes_.end(), [](const auto& l) { return l->acked; })) return true;
    if (mono_now() > deadline) return false;
    ::usleep(200);
  }
}

std::uint64_t SpanLaneGroup::frames() const {
  std::uint64_t n = 0;
  for (const auto& l : lanes_) n += l->pub_frames.load(std::memory_order_relaxed);
  return n;
}

std::vector<SourceCounter> SpanLaneGroup::counters() const {
  std::vector<SourceCounter> out = names_;
  for (std::size_t i = 0; i < out.size(); ++i) {
    std::uint64_t v = 0;
    for (const auto& l : lanes_) {
      const std::uint64_t x = l->pub[i].load(std::memory_order_relaxed);
      // Every lane holds every endpoint: the table's size is one lane's.
      v = out[i].name == "span_endpoints" ? std::max(v, x) : v + x;
    }
    out[i].value = v;
  }
  static constexpr const char* kNames[] = {
#define CALLREC_LG_NAME(name, help) #name,
      CALLREC_LANE_GROUP_COUNTERS(CALLREC_LG_NAME)
#undef CALLREC_LG_NAME
  };
  static constexpr const char* kHelp[] = {
#define CALLREC_LG_HELP(name, help) help,
      CALLREC_LANE_GROUP_COUNTERS(CALLREC_LG_HELP)
#undef CALLREC_LG_HELP
  };
  for (unsigned i = 0; i < kLaneGroupCounterCount; ++i) {
    std::uint64_t v = c_[i];
    for (const auto& l : lanes_) {
      if (i == kLG_events_dropped) v += l->events_dropped.load(std::memory_order_relaxed);
      if (i == kLG_sip_truncated) v += l->sip_truncated.load(std::memory_order_relaxed);
    }
    out.push_back({std::string("span_lanes_") + kNames[i], kHelp[i], v, false});
  }
  out.push_back({"span_lanes", "poll-mode lanes of the DPDK mirror", o_.lanes, true});
  for (unsigned i = 0; i < lanes_.size(); ++i)
    out.push_back({"span_lane" + std::to_string(i) + "_frames", "frames lane " + std::to_string(i) + " decoded",
                   lanes_[i]->pub_frames.load(std::memory_order_relaxed), false});
  return out;
}

SourceStats SpanLaneGroup::stats() const {
  SourceStats s;
  for (const auto& l : lanes_) {
    s.rx_packets += l->pub_frames.load(std::memory_order_relaxed);
    s.rx_bytes += l->pub_bytes.load(std::memory_order_relaxed);
  }
  for (const SourceCounter& c : counters()) {
    if (c.name == "span_rtp_delivered") s.delivered = c.value;
    else if (c.name == "span_ring_full") s.ring_full = c.value;
    else if (c.name == "span_rtp_unattributed") s.unknown_flow = c.value;
    else if (c.name == "span_not_rtp") s.not_rtp = c.value;
  }
  return s;
}

}  // namespace callrec::dataplane
