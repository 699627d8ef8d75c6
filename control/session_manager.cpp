#include "control/session_manager.hpp"

#include <algorithm>
#include <map>
#include <set>

#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include <cerrno>
#include <cstdio>

#include "control/log.hpp"
#include "fileio/record_reader.hpp"

namespace callrec::control {

namespace {

std::int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// steady_clock is CLOCK_MONOTONIC (the clock of the packets' rx_ns), in ns.
std::uint64_t steady_ns(std::chrono::steady_clock::time_point t) {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count());
}

bool stat_dir(const std::filesystem::path& p, dev_t& dev, ino_t& ino) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return false;
  dev = st.st_dev;
  ino = st.st_ino;
  return true;
}

/// Ticks are 1 s apart: a gap this long means the daemon itself did not run (a false positive
/// only delays RTP timeouts by the gap).
constexpr auto kStallGap = std::chrono::milliseconds(1500);

}  // namespace

const char* ingest_name(IngestKind k) {
  switch (k) {
    case IngestKind::kUpload: return "upload";
    case IngestKind::kSpan: return "span";
    case IngestKind::kSiprec: return "siprec";
  }
  return "?";
}

SessionManager::SessionManager(SessionConfig cfg, fileio::Catalog& catalog, fileio::WriterPool& writers,
                               dataplane::Source& source, PortAllocator& ports)
    : cfg_(std::move(cfg)), catalog_(catalog), writers_(writers), source_(source), ports_(ports) {
  storage_known_ = stat_dir(cfg_.storage, storage_dev_, storage_ino_);
  last_tick_ = std::chrono::steady_clock::now();  // a stall before the first tick counts too
}

SessionManager::~SessionManager() = default;

fileio::StreamId SessionManager::next_stream_id() {
  for (;;) {
    fileio::StreamId id = next_stream_++;
    if (id == 0) continue;
    if (!stream_index_.contains(id)) return id;
  }
}

std::string SessionManager::allocate_stream(Recording& r, const sockaddr_storage& peer, const StreamPlan* plan,
                                            const std::filesystem::path& device_dir,
                                            std::chrono::steady_clock::time_point now, Stream& s) {
  std::string bind_error, resource_error;
  for (int attempt = 0; attempt < 8 && resource_error.empty(); ++attempt) {
    auto port = ports_.allocate(now);
    if (!port) break;
    s.id = next_stream_id();
    dataplane::FlowSpec flow;
    flow.stream = s.id;
    flow.local_port = *port;
    flow.latch = cfg_.latch;
    // Latch or not, only the peer's own address may send (NAT keeps the address of the
    // signalling connection for its UDP in the common case; SIPREC: the SRC's media address);
    // only --latch-any opens it to any address.
    if (!(cfg_.latch && cfg_.latch_any)) {
      flow.expected = (plan && plan->expected.ss_family != AF_UNSPEC) ? plan->expected : peer;
      // The signalling port says nothing about the RTP port: accept any port.
      if (flow.expected.ss_family == AF_INET)
        reinterpret_cast<sockaddr_in*>(&flow.expected)->sin_port = 0;
      else if (flow.expected.ss_family == AF_INET6)
        reinterpret_cast<sockaddr_in6*>(&flow.expected)->sin6_port = 0;
    }
    // The writer must know the stream before its first packet can arrive.
    fileio::WriterOptions w;
    w.directory = device_dir;
    w.tag = r.meta.device.empty() ? r.meta.call_id : r.meta.device;
    if (plan && !plan->role.empty()) w.tag += "-" + plan->role;
    w.max_file_bytes = cfg_.max_file_bytes;
    w.reserve_bytes = cfg_.reserve_bytes;
    w.flush_interval = cfg_.flush_interval;
    w.free_space = cfg_.free_space;
    writers_.open_stream(s.id, w, plan ? plan->assembler : cfg_.assembler);
    const Status st = source_.add_flow(flow);
    if (st) {
      s.port = *port;
      break;
    }
    writers_.close_stream_now(s.id);
    s.id = 0;
    if (const int e = st.code(); e == EMFILE || e == ENFILE || e == ENOMEM || e == ENOBUFS) {
      // The process is out of descriptors or memory, not the port at fault: give the port
      // back and refuse the start instead of burning the range on retries.
      ports_.release(*port, now);
      resource_error = st.message();
      break;
    }
    bind_error = st.message();
    ports_.mark_unusable(*port, now);
  }
  if (!resource_error.empty()) {
    log_warn("start refused: call_id=%s device=%s reason=overloaded (%s)", r.meta.call_id.c_str(),
             r.meta.device.c_str(), resource_error.c_str());
    ++counters_.overloaded;
    return "overloaded";
  }
  if (s.port == 0) {
    if (!bind_error.empty()) log_warn("start: cannot bind an RTP port: %s", bind_error.c_str());
    ++counters_.no_port;
    return "no_port";
  }
  if (plan) {
    s.info = plan->info;
    s.info.role = plan->role;
    s.has_info = true;
  }
  return {};
}

StartResult SessionManager::start(const StartParams& p) {
  StartResult res;
  const auto now = std::chrono::steady_clock::now();
  auto fail = [&](std::string reason) {
    ++counters_.start_failed;
    res.ok = false;
    res.reason = std::move(reason);
    return res;
  };
  if (!p.meta.codec.empty() && !fileio::codec_from_name(p.meta.codec)) return fail("unsupported_codec");

  // Refuse up front when the volume is already below the reserve (plus the headroom a new
  // recording needs for its first flushes, ~30 s of G.711): the phone tells its user now instead
  // of the recording failing at its first packet.
  constexpr std::uint64_t kStartHeadroom = 256 * 1024;
  std::uint64_t free_bytes = 0;
  Status fs = free_space(free_bytes);
  if (!fs && fs.code() == ENOENT) {
    // The storage directory was removed under us: re-create it rather than answer no_space.
    check_storage(now);
    fs = free_space(free_bytes);
  }
  if (!fs) {
    log_error("start refused: call_id=%s device=%s reason=storage_error (%s)", p.meta.call_id.c_str(),
              p.meta.device.c_str(), fs.message().c_str());
    return fail("storage_error");
  }
  if (free_bytes < cfg_.reserve_bytes + kStartHeadroom) {
    log_warn("start refused: call_id=%s device=%s reason=no_space (below reserve)", p.meta.call_id.c_str(),
             p.meta.device.c_str());
    return fail("no_space");
  }

  Recording r;
  r.handle = next_handle_++;
  r.kind = p.kind;
  r.meta = p.meta;
  r.peer = p.peer_text;
  r.peer_addr = p.peer;
  r.owner = p.owner;
  r.started = now;
  r.started_ms = p.started_ms != 0 ? p.started_ms : unix_ms_now();
  r.source = p.source ? p.source : &source_;
  r.observed = !p.observe.empty();
  r.idle_base_ns = steady_ns(now);

  // Recordings are filed by device (spec: "the server files recordings by device"), one
  // directory per device (device_dir_name is injective). A directory this start creates is
  // removed again if the start is refused (when still empty).
  const std::filesystem::path device_dir = cfg_.storage / fileio::device_dir_name(p.meta.device);
  bool created_dir = false;
  if (std::error_code ec; !std::filesystem::is_directory(device_dir, ec)) {
    created_dir = std::filesystem::create_directories(device_dir, ec);
    if (ec) {
      log_error("start refused: cannot create %s: %s", device_dir.c_str(), ec.message().c_str());
      return fail(ec.value() == ENOSPC ? "no_space" : "storage_error");
    }
  }
  auto remove_created_dir = [&] {
    if (!created_dir) return;
    std::error_code ec;
    std::filesystem::remove(device_dir, ec);  // only if empty: never another recording's files
  };

  // Ports and flows, rolled back on failure.
  auto rollback = [&] {
    for (auto& s : r.streams) {
      if (s.id != 0 && r.observed) stream_index_.erase(s.id);
      if (s.id != 0 && !r.observed) source_.remove_flow(s.id);
      if (s.port != 0) ports_.release(s.port, now);
    }
    remove_created_dir();
  };
  // Observed streams: no port, no flow here (the caller's source installs them by endpoint).
  for (std::size_t i = 0; i < p.observe.size(); ++i) {
    Stream s;
    s.id = next_stream_id();
    fileio::WriterOptions w;
    w.directory = device_dir;
    w.tag = (p.meta.device.empty() ? p.meta.call_id : p.meta.device) + "-" + p.observe[i].role;
    w.max_file_bytes = cfg_.max_file_bytes;
    w.reserve_bytes = cfg_.reserve_bytes;
    w.flush_interval = cfg_.flush_interval;
    w.free_space = cfg_.free_space;
    w.packet_clock = true;
    writers_.open_stream(s.id, w, p.observe[i].assembler, p.source != nullptr ? p.source->end_marks_per_stream() : 1);
    s.info.stream = static_cast<std::uint32_t>(i);
    s.info.role = p.observe[i].role;
    s.has_info = true;
    stream_index_[s.id] = r.handle;  // reserved now: next_stream_id() must not hand it out twice
    r.streams.push_back(s);
    res.ports.push_back(0);
    res.streams.push_back(s.id);
  }
  const unsigned n_alloc = !p.observe.empty() ? 0u : !p.allocate.empty() ? static_cast<unsigned>(p.allocate.size())
                                                                         : std::max(1u, p.streams);
  for (unsigned i = 0; i < n_alloc; ++i) {
    const StreamPlan* plan = p.allocate.empty() ? nullptr : &p.allocate[i];
    Stream s;
    const std::string err = allocate_stream(r, p.peer, plan, device_dir, now, s);
    if (!err.empty()) {
      rollback();
      return fail(err);
    }
    s.info.stream = static_cast<std::uint32_t>(r.streams.size());
    r.streams.push_back(s);
    res.ports.push_back(s.port);
    res.streams.push_back(s.id);
  }

  fileio::RecordingRow row;
  row.call_id = r.meta.call_id;
  row.source = ingest_name(r.kind);
  row.device = r.meta.device;
  row.remote_number = r.meta.remote_number;
  row.remote_name = r.meta.remote_name;
  row.local_number = r.meta.local_number;
  row.local_name = r.meta.local_name;
  row.direction = r.meta.direction;
  row.codec = r.meta.codec;
  row.started_at = r.started_ms;
  row.peer = r.peer;
  for (const auto& [k, v] : r.meta.extra) row.extra[k] = v;
  if (Status st = catalog_.insert_recording(row, r.catalog_id); !st) {
    log_error("catalog: %s", st.message().c_str());
    for (auto& s : r.streams) writers_.close_stream_now(s.id);
    rollback();
    return fail("internal_error");
  }

  r.device_dir = device_dir;
  stat_dir(device_dir, r.dir_dev, r.dir_ino);
  for (auto& s : r.streams) stream_index_[s.id] = r.handle;
  res.ok = true;
  res.handle = r.handle;
  ++counters_.started;
  std::string ports_text;
  for (auto& s : r.streams) ports_text += (ports_text.empty() ? "" : ",") + std::to_string(s.port);
  log_info("recording start: rec=%lld kind=%s call_id=%s device=%s peer=%s dir=%s codec=%s remote=%s local=%s port=%s",
           static_cast<long long>(r.catalog_id), ingest_name(r.kind), r.meta.call_id.c_str(),
           r.meta.device.c_str(), r.peer.c_str(), r.meta.direction.c_str(), r.meta.codec.c_str(),
           r.meta.remote_number.c_str(), r.meta.local_number.c_str(), ports_text.c_str());
  if (r.owner) {
    auto& oi = owners_[r.owner];
    oi.active[r.meta.call_id] = r.handle;
    oi.all.insert(r.handle);
  }
  recs_.emplace(r.handle, std::move(r));
  return res;
}

bool SessionManager::stop(RecordingHandle h, const MetadataOverrides& ov, const std::string& reason,
                          bool server_initiated, std::int64_t at_ms) {
  return stop_impl(h, ov, reason, server_initiated ? StopOrigin::kServer : StopOrigin::kPeer, at_ms);
}

void SessionManager::set_stream_info(RecordingHandle h, unsigned index, const fileio::StreamRow& info) {
  auto it = recs_.find(h);
  if (it == recs_.end() || index >= it->second.streams.size()) return;
  Stream& s = it->second.streams[index];
  s.info = info;
  s.info.stream = index;
  s.has_info = true;
}

void SessionManager::add_event(RecordingHandle h, const fileio::EventRow& ev) {
  auto it = recs_.find(h);
  if (it == recs_.end()) return;
  if (Status st = catalog_.add_event(it->second.catalog_id, ev); !st) log_error("catalog: %s", st.message().c_str());
}

StartResult SessionManager::add_streams(RecordingHandle h, const std::vector<StreamPlan>& plans) {
  StartResult res;
  auto it = recs_.find(h);
  if (it == recs_.end() || it->second.stopping || it->second.observed) {
    res.reason = "unknown_recording";
    return res;
  }
  Recording& r = it->second;
  const auto now = std::chrono::steady_clock::now();
  std::vector<Stream> added;
  for (const auto& plan : plans) {
    Stream s;
    const std::string err = allocate_stream(r, r.peer_addr, &plan, r.device_dir, now, s);
    if (!err.empty()) {
      for (auto& a : added) {
        source_.remove_flow(a.id);
        ports_.release(a.port, now);
      }
      res.reason = err;
      return res;
    }
    s.info.stream = static_cast<std::uint32_t>(r.streams.size() + added.size());
    added.push_back(s);
  }
  for (auto& s : added) {
    stream_index_[s.id] = r.handle;
    res.ports.push_back(s.port);
    res.streams.push_back(s.id);
    r.streams.push_back(std::move(s));
  }
  res.ok = true;
  res.handle = h;
  return res;
}

bool SessionManager::end_stream(RecordingHandle h, unsigned index) {
  auto it = recs_.find(h);
  if (it == recs_.end() || it->second.stopping || index >= it->second.streams.size()) return false;
  Recording& r = it->second;
  Stream& s = r.streams[index];
  if (s.ended || s.closed) return false;
  s.ended = true;
  if (auto fs = r.source->flow_stats(s.id)) s.stray = fs->wrong_source;
  r.source->remove_flow(s.id);  // the writer closes it after its last packet (kStreamClosed)
  return true;
}

void SessionManager::set_stream_paused(RecordingHandle h, unsigned index, bool paused) {
  auto it = recs_.find(h);
  if (it == recs_.end() || it->second.stopping || index >= it->second.streams.size()) return;
  Stream& s = it->second.streams[index];
  if (s.ended || s.closed || s.paused == paused) return;
  s.paused = paused;
  if (paused) {
    writers_.pause_stream(s.id);
  } else {
    writers_.resume_stream(s.id);
    // Its silence is counted from the resume on.
    it->second.idle_base_ns = std::max(it->second.idle_base_ns, steady_ns(std::chrono::steady_clock::now()));
  }
}

void SessionManager::update_metadata(RecordingHandle h, const RecordingMetadata& meta) {
  auto it = recs_.find(h);
  if (it == recs_.end()) return;
  Recording& r = it->second;
  fileio::MetadataOverrides upd;
  auto field = [&](std::string& dst, const std::string& v, const char* key) {
    if (dst == v) return;
    dst = v;
    upd.emplace_back(key, v);
  };
  field(r.meta.remote_number, meta.remote_number, "remote_number");
  field(r.meta.remote_name, meta.remote_name, "remote_name");
  field(r.meta.local_number, meta.local_number, "local_number");
  field(r.meta.local_name, meta.local_name, "local_name");
  for (const auto& [k, v] : meta.extra) {
    bool found = false;
    for (auto& [ek, ev] : r.meta.extra)
      if (ek == k) {
        found = true;
        if (ev != v) {
          ev = v;
          upd.emplace_back(k, v);
        }
      }
    if (!found) {
      r.meta.extra.emplace_back(k, v);
      upd.emplace_back(k, v);
    }
  }
  if (upd.empty()) return;
  if (Status st = catalog_.update_metadata(r.catalog_id, upd); !st) log_error("catalog: %s", st.message().c_str());
}

void SessionManager::set_participants(RecordingHandle h, const std::vector<fileio::ParticipantRow>& parts) {
  auto it = recs_.find(h);
  if (it == recs_.end()) return;
  if (Status st = catalog_.set_participants(it->second.catalog_id, parts); !st)
    log_error("catalog: %s", st.message().c_str());
}

std::int64_t SessionManager::catalog_id(RecordingHandle h) const {
  auto it = recs_.find(h);
  return it == recs_.end() ? 0 : it->second.catalog_id;
}

const char* SessionManager::peer_stop_reason(IngestKind k) {
  return k == IngestKind::kUpload ? "phone" : "hangup";
}

bool SessionManager::stop_impl(RecordingHandle h, const MetadataOverrides& ov, const std::string& reason_in,
                               StopOrigin origin, std::int64_t at_ms) {
  auto it = recs_.find(h);
  if (it == recs_.end() || it->second.stopping) return false;
  Recording& r = it->second;
  r.stopped_ms = at_ms;
  const bool server_initiated = origin == StopOrigin::kServer;
  // A peer's stop: its reason is metadata (extra phone_reason), never a server stop cause; the
  // catalog's stop reason is the peer's stop ("phone" for the upload path).
  std::string reason = reason_in;
  std::optional<std::string> peer_reason;
  if (origin == StopOrigin::kPeer) {
    reason = peer_stop_reason(r.kind);
    if (!reason_in.empty() && reason_in != reason) peer_reason = reason_in;
  }
  auto apply = [](std::string& dst, const std::optional<std::string>& v) {
    if (v && *v != dst) dst = *v;
  };
  apply(r.meta.remote_number, ov.remote_number);
  apply(r.meta.remote_name, ov.remote_name);
  apply(r.meta.local_number, ov.local_number);
  apply(r.meta.local_name, ov.local_name);
  auto merge_extra = [&r](const std::string& k, const std::string& v) {
    for (auto& [ek, evv] : r.meta.extra)
      if (ek == k) {
        evv = v;
        return;
      }
    r.meta.extra.emplace_back(k, v);
  };
  fileio::MetadataOverrides upd;
  if (ov.remote_number) upd.emplace_back("remote_number", *ov.remote_number);
  if (ov.remote_name) upd.emplace_back("remote_name", *ov.remote_name);
  if (ov.local_number) upd.emplace_back("local_number", *ov.local_number);
  if (ov.local_name) upd.emplace_back("local_name", *ov.local_name);
  // Fields the server owns (device, codec, peer, dir ...) are not the peer's to change: ignored,
  // counted and logged (the key names only: they are from a fixed list, safe to log).
  std::string ignored;
  for (const auto& [k, v] : ov.extra) {
    if (fileio::is_server_owned_key(k)) {
      ++counters_.stop_overrides_ignored;
      ignored += (ignored.empty() ? "" : ",") + k;
      continue;
    }
    merge_extra(k, v);
    upd.emplace_back(k, v);
  }
  if (peer_reason) {
    merge_extra("phone_reason", *peer_reason);
    upd.emplace_back("phone_reason", *peer_reason);
  }
  if (!ignored.empty())
    log_warn("recording rec=%lld: stop tried to change server-owned field(s) %s: ignored",
             static_cast<long long>(r.catalog_id), ignored.c_str());
  if (!upd.empty())
    if (Status st = catalog_.update_metadata(r.catalog_id, upd); !st) log_error("catalog: %s", st.message().c_str());

  index_unactive(r);
  r.stopping = true;
  r.stop_reason = reason;
  if (origin == StopOrigin::kPeer) ++counters_.stop_by_peer;
  else if (origin == StopOrigin::kOwnerGone) ++counters_.stop_disconnect;
  else if (reason == "no_space") ++counters_.stop_no_space;
  else if (reason == "rtp_timeout") ++counters_.stop_rtp_timeout;
  else if (reason == "shutdown") ++counters_.stop_shutdown;
  else if (reason == "operator") ++counters_.stop_operator;
  else if (reason == "storage_lost") ++counters_.stop_storage_lost;
  else ++counters_.stop_error;
  // The dataplane marks each stream's end in-band after its last packet; the writer then
  // closes the files and reports kStreamClosed, which finishes the recording.
  for (auto& s : r.streams) {
    if (s.closed || s.ended) continue;
    if (auto fs = r.source->flow_stats(s.id)) s.stray = fs->wrong_source;
    r.source->remove_flow(s.id);
  }
  bool all_closed = true;
  for (auto& s : r.streams) all_closed = all_closed && s.closed;
  if (all_closed) {  // every stream had already ended (end_stream): nothing more will close
    if (server_initiated && r.owner) r.owner->on_server_stop(h, r.meta.call_id, reason);
    finish(r);
    return true;
  }
  if (server_initiated && r.owner) r.owner->on_server_stop(h, r.meta.call_id, reason);
  return true;
}

void SessionManager::stop_owned_by(RecordingOwner* owner, const std::string& reason) {
  auto it = owners_.find(owner);
  if (it == owners_.end()) return;
  const std::vector<RecordingHandle> hs(it->second.all.begin(), it->second.all.end());
  owners_.erase(it);
  // The owner is going away: detach every recording of it (stopping ones too) before stopping,
  // so no callback reaches it.
  for (auto h : hs)
    if (auto r = recs_.find(h); r != recs_.end()) r->second.owner = nullptr;
  for (auto h : hs)
    if (auto r = recs_.find(h); r != recs_.end() && !r->second.stopping) stop_impl(h, {}, reason, StopOrigin::kOwnerGone);
}

void SessionManager::stop_all(const std::string& reason) {
  std::vector<RecordingHandle> hs;
  for (auto& [h, r] : recs_)
    if (!r.stopping) hs.push_back(h);
  for (auto h : hs) stop(h, {}, reason, true);
}

SessionManager::Recording* SessionManager::by_stream(fileio::StreamId s) {
  auto it = stream_index_.find(s);
  if (it == stream_index_.end()) return nullptr;
  auto rit = recs_.find(it->second);
  return rit == recs_.end() ? nullptr : &rit->second;
}

void SessionManager::on_writer_events(std::vector<fileio::WriterEvent>& events) {
  for (auto& ev : events) {
    Recording* r = by_stream(ev.stream);
    if (!r) continue;
    Stream* s = nullptr;
    for (auto& x : r->streams)
      if (x.id == ev.stream) s = &x;
    if (!s) continue;
    switch (ev.kind) {
      case fileio::WriterEventKind::kSegmentOpened: {
        // Catalog file numbers are per recording: with several streams each writer counts its own.
        if (s->seg_idx.size() <= ev.seg.index) s->seg_idx.resize(ev.seg.index + 1, 0);
        s->seg_idx[ev.seg.index] = r->next_seg_idx++;
        fileio::SegmentInfo seg = ev.seg;
        seg.index = s->seg_idx[ev.seg.index];
        if (s->codec.empty()) s->codec = seg.codec;
        const auto stream_no = static_cast<std::uint32_t>(s - r->streams.data());
        if (Status st = catalog_.add_segment(r->catalog_id, seg, stream_no); !st)
          log_error("catalog: %s", st.message().c_str());
        break;
      }
      case fileio::WriterEventKind::kSegmentClosed: {
        const std::uint32_t idx = ev.seg.index < s->seg_idx.size() ? s->seg_idx[ev.seg.index] : ev.seg.index;
        if (Status st = catalog_.close_segment(r->catalog_id, idx, ev.seg.packets,
                                               fileio::to_unix_ms(ev.seg.closed));
            !st)
          log_error("catalog: %s", st.message().c_str());
        break;
      }
      case fileio::WriterEventKind::kStats:
        s->counters = ev.counters;
        s->bytes = ev.bytes_written;
        if (ev.last_packet_ns > s->last_packet_ns) s->last_packet_ns = ev.last_packet_ns;
        break;
      case fileio::WriterEventKind::kError:
        log_error("recording rec=%lld call_id=%s: write error: %s", static_cast<long long>(r->catalog_id),
                  r->meta.call_id.c_str(), ev.status.message().c_str());
        // ENOENT: the directory of a new segment is gone (storage removed under the recording).
        stop(r->handle, {},
             ev.status.code() == ENOSPC ? "no_space" : ev.status.code() == ENOENT ? "storage_lost" : "io_error",
             true);
        break;
      case fileio::WriterEventKind::kStreamClosed: {
        s->counters = ev.counters;
        s->bytes = ev.bytes_written;
        s->closed = true;
        stream_index_.erase(s->id);
        if (!r->stopping && !s->ended) {
          // The writer closed a stream we did not stop (should not happen): end the recording.
          index_unactive(*r);
          r->stopping = true;
          r->stop_reason = "error";
        }
        bool all = r->stopping;
        for (auto& x : r->streams) all = all && x.closed;
        if (all) finish(*r);
        break;
      }
    }
  }
}

void SessionManager::finish(Recording& r) {
  const auto now = std::chrono::steady_clock::now();
  fileio::RecordingStats st;
  for (auto& s : r.streams) {
    st.received += s.counters.received;
    st.lost += s.counters.lost;
    st.filled += s.counters.filled;
    st.duplicate += s.counters.duplicate;
    st.reordered += s.counters.reordered;
    st.late += s.counters.late;
    st.other_payload += s.counters.other_payload;
    st.bytes += s.bytes;
    if (auto fs = r.source->flow_stats(s.id)) s.stray = std::max(s.stray, fs->wrong_source);
    st.stray += s.stray;
    if (s.port) ports_.release(s.port, now);
    if (s.has_info) {
      fileio::StreamRow row = s.info;
      if (!s.codec.empty()) row.codec = s.codec;  // what was recorded, not what SDP offered first
      row.packets = s.counters.received;
      row.lost = s.counters.lost;
      row.filled = s.counters.filled;
      row.duplicate = s.counters.duplicate;
      row.reordered = s.counters.reordered;
      row.late = s.counters.late;
      row.other_payload = s.counters.other_payload;
      row.bytes = s.bytes;
      if (Status cs = catalog_.set_stream(r.catalog_id, row); !cs) log_error("catalog: %s", cs.message().c_str());
    }
  }
  std::int64_t stopped_ms = r.stopped_ms != 0 ? r.stopped_ms : unix_ms_now();
  if (r.observed) {
    // Packet time: the end is the last packet of the call, if it came after the stop.
    for (const auto& s : r.streams)
      if (s.info.last_at && *s.info.last_at > stopped_ms) stopped_ms = *s.info.last_at;
  }
  if (Status cs = catalog_.finish_recording(r.catalog_id, stopped_ms, r.stop_reason, st); !cs)
    log_error("catalog: %s", cs.message().c_str());
  ++counters_.stopped;
  log_info("recording stop: rec=%lld call_id=%s device=%s reason=%s duration=%.1fs received=%llu lost=%llu filled=%llu dup=%llu reordered=%llu stray=%llu bytes=%llu",
           static_cast<long long>(r.catalog_id), r.meta.call_id.c_str(), r.meta.device.c_str(),
           r.stop_reason.c_str(), static_cast<double>(stopped_ms - r.started_ms) / 1000.0,
           static_cast<unsigned long long>(st.received), static_cast<unsigned long long>(st.lost),
           static_cast<unsigned long long>(st.filled), static_cast<unsigned long long>(st.duplicate),
           static_cast<unsigned long long>(st.reordered), static_cast<unsigned long long>(st.stray),
           static_cast<unsigned long long>(st.bytes));
  index_forget(r);
  recs_.erase(r.handle);
}

void SessionManager::index_unactive(const Recording& r) {
  if (r.stopping || !r.owner) return;
  auto it = owners_.find(r.owner);
  if (it == owners_.end()) return;
  auto a = it->second.active.find(r.meta.call_id);
  if (a != it->second.active.end() && a->second == r.handle) it->second.active.erase(a);
}

void SessionManager::index_forget(const Recording& r) {
  index_unactive(r);
  if (!r.owner) return;
  auto it = owners_.find(r.owner);
  if (it == owners_.end()) return;
  it->second.all.erase(r.handle);
  if (it->second.all.empty()) owners_.erase(it);
}

Status SessionManager::free_space(std::uint64_t& free_bytes) const {
  return cfg_.free_space ? cfg_.free_space(cfg_.storage, free_bytes)
                         : fileio::free_space_statvfs(cfg_.storage, free_bytes);
}

void SessionManager::check_storage(std::chrono::steady_clock::time_point) {
  dev_t dev = 0;
  ino_t ino = 0;
  const bool present = stat_dir(cfg_.storage, dev, ino);
  const bool replaced = present && storage_known_ && (dev != storage_dev_ || ino != storage_ino_);
  std::vector<RecordingHandle> lost;
  std::string what;
  if (!present || replaced) {
    what = cfg_.storage.string() + (present ? " was replaced" : " was removed");
    for (auto& [h, r] : recs_)
      if (!r.stopping) lost.push_back(h);
    std::error_code ec;
    std::filesystem::create_directories(cfg_.storage, ec);
    if (ec) {
      log_error("storage %s: cannot re-create it: %s", cfg_.storage.c_str(), ec.message().c_str());
      storage_known_ = false;
    } else {
      storage_known_ = stat_dir(cfg_.storage, storage_dev_, storage_ino_);
      log_error("storage %s while recording: re-created it for new recordings", what.c_str());
    }
    ++counters_.storage_lost;
  } else {
    if (!storage_known_) {
      storage_dev_ = dev;
      storage_ino_ = ino;
      storage_known_ = true;
    }
    // A device directory removed (or replaced) under its recordings: one stat per directory.
    std::unordered_map<std::string, bool> gone;
    for (auto& [h, r] : recs_) {
      if (r.stopping) continue;
      auto [it, fresh] = gone.try_emplace(r.device_dir.string(), false);
      if (fresh) {
        dev_t d = 0;
        ino_t i = 0;
        it->second = !stat_dir(r.device_dir, d, i) || d != r.dir_dev || i != r.dir_ino;
        if (it->second) {
          what += (what.empty() ? "" : ", ") + r.device_dir.string();
          ++counters_.storage_lost;
        }
      }
      if (it->second) lost.push_back(h);
    }
    if (!lost.empty()) log_error("device directory %s removed while recording", what.c_str());
  }
  // Their files are gone (unlinked while open): say so in the stop reason and the catalog.
  for (const auto h : lost) stop(h, {}, "storage_lost", true);
}

void SessionManager::check_reserve() {
  std::vector<std::pair<std::int64_t, RecordingHandle>> running;  // (started_ms, handle)
  for (auto& [h, r] : recs_)
    if (!r.stopping) running.emplace_back(r.started_ms, h);
  std::sort(running.begin(), running.end());  // oldest first: a stable order in the log
  if (catalog_.full()) {
    // The catalog cannot commit: its volume is full. Recordings would only eat the space its
    // final states need; stop them, and once none runs, let the catalog use its reserve file.
    if (!running.empty()) {
      log_error("catalog: the volume is full, %zu write(s) wait: stopping %zu recording(s) with no_space",
                static_cast<std::size_t>(catalog_.stats().pending_writes), running.size());
      counters_.reserve_stops += running.size();
      for (const auto& [started, h] : running) stop(h, {}, "no_space", true);
    } else if (Status st = catalog_.retry_pending(); st) {
      log_info("catalog: kept writes committed (using its reserve file)");
    } else {
      log_error("catalog: %s", st.message().c_str());
    }
    return;
  }
  if (cfg_.reserve_bytes == 0 || running.empty()) return;
  std::uint64_t free_bytes = 0;
  if (!free_space(free_bytes) || free_bytes >= cfg_.reserve_bytes) return;
  // Below the reserve: stop every running recording now, before the volume is full. All of
  // them, not newest first: the check runs once a second, so the reserve must absorb about a
  // second of the volume's whole write rate; stopping only some would let the rest eat into it
  // (and which calls deserve the last bytes cannot be decided fairly). New starts are refused
  // below the reserve anyway.
  log_warn("storage %s: %llu bytes free, below the reserve (%llu): stopping %zu recording(s) with no_space",
           cfg_.storage.c_str(), static_cast<unsigned long long>(free_bytes),
           static_cast<unsigned long long>(cfg_.reserve_bytes), running.size());
  counters_.reserve_stops += running.size();
  for (const auto& [started, h] : running) stop(h, {}, "no_space", true);
}

void SessionManager::tick(std::chrono::steady_clock::time_point now) {
  // The daemon itself was stopped (SIGSTOP, a VM pause) or its loop blocked: the gap is not the
  // phones' silence. Restart every recording's silence clock at the stall's end.
  if (last_tick_ != std::chrono::steady_clock::time_point{} && now - last_tick_ > kStallGap) {
    ++counters_.stalls;
    log_warn("control thread stalled for %.1f s (process stopped, VM paused?): RTP timeouts restart from now",
             std::chrono::duration<double>(now - last_tick_).count());
    for (auto& [h, r] : recs_) r.idle_base_ns = steady_ns(now);
  }
  last_tick_ = now;
  check_storage(now);
  check_reserve();
  if (cfg_.rtp_timeout.count() <= 0) return;
  const std::uint64_t mono_now = steady_ns(now);
  const auto timeout_ns = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(cfg_.rtp_timeout).count());
  std::vector<RecordingHandle> expired;
  for (auto& [h, r] : recs_) {
    if (r.stopping || r.observed) continue;  // observed: the caller's media timeout, by packet time
    std::uint64_t newest = r.idle_base_ns;  // the start, the end of a stall, a resume
    bool live = false;
    for (auto& s : r.streams) {
      newest = std::max(newest, s.last_packet_ns);
      live = live || (!s.paused && !s.ended);
    }
    if (!live) continue;  // paused (SIPREC pause): silence is expected
    if (mono_now > newest && mono_now - newest > timeout_ns) expired.push_back(h);
  }
  for (auto h : expired) stop(h, {}, "rtp_timeout", true);
}

std::vector<RecordingView> SessionManager::list() const {
  std::vector<RecordingView> out;
  out.reserve(recs_.size());
  for (const auto& [h, r] : recs_) {
    RecordingView v{h, r.kind, r.meta, r.peer, {}, r.started_ms, r.stopping, 0, 0};
    for (const auto& s : r.streams) {
      v.ports.push_back(s.port);
      v.packets += s.counters.written + s.counters.filled;
      v.bytes += s.bytes;
    }
    out.push_back(std::move(v));
  }
  return out;
}

std::optional<RecordingHandle> SessionManager::find(const RecordingOwner* owner, const std::string& call_id) const {
  auto it = owners_.find(owner);
  if (it == owners_.end()) return std::nullopt;
  auto a = it->second.active.find(call_id);
  if (a == it->second.active.end()) return std::nullopt;
  return a->second;
}

namespace {

/// Links record files that no catalog row references to the open recording they belong to
/// (see recover()). Adds them to the rows' segments so that they are repaired with the rest.
void link_orphans(fileio::Catalog& catalog, const std::filesystem::path& storage,
                  std::vector<fileio::RecordingRow>& open) {
  std::map<std::string, std::vector<fileio::RecordingRow*>> by_device;
  for (auto& rec : open) by_device[rec.device].push_back(&rec);  // open is oldest first
  for (auto& [device, recs] : by_device) {
    const std::filesystem::path dir = storage / fileio::device_dir_name(device);
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) continue;
    std::vector<std::string> known_paths;
    if (Status st = catalog.device_segment_paths(device, known_paths); !st) {
      log_error("recovery: %s", st.message().c_str());
      continue;
    }
    std::set<std::string> known;
    for (const auto& p : known_paths) known.insert(std::filesystem::path(p).filename().string());
    struct Orphan {
      std::int64_t t;
      std::string name;
      fileio::RecordingRow* owner;
    };
    std::vector<Orphan> orphans;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
      const std::string name = e.path().filename().string();
      if (!e.is_regular_file(ec) || name.size() < 5 || name.compare(name.size() - 4, 4, ".rec") != 0) continue;
      if (known.contains(name)) continue;
      const auto t = fileio::record_name_time_ms(name);
      if (!t) continue;
      // The recording that started last before the file (2 s of slack: the file's name is the
      // writer's clock at its first packet, the row's start the control thread's).
      fileio::RecordingRow* owner = nullptr;
      for (auto* r : recs)
        if (r->started_at <= *t + 2000) owner = r;
      if (owner == nullptr) {
        log_warn("recovery: %s is in no catalog row and older than every open recording of %s: left alone",
                 (dir / name).c_str(), device.c_str());
        continue;
      }
      orphans.push_back({*t, name, owner});
    }
    std::sort(orphans.begin(), orphans.end(),
              [](const Orphan& a, const Orphan& b) { return a.t != b.t ? a.t < b.t : a.name < b.name; });
    for (const auto& o : orphans) {
      const std::filesystem::path path = dir / o.name;
      fileio::RecordInfo info;
      if (!fileio::inspect_record(path, info) || !info.decoded.plausible) {
        log_warn("recovery: %s has no readable header: left alone", path.c_str());
        continue;
      }
      std::uint32_t idx = 0;
      for (const auto& seg : o.owner->segments) idx = std::max(idx, seg.idx + 1);
      fileio::SegmentInfo seg;
      seg.path = path;
      seg.index = idx;
      seg.codec = info.decoded.header.codec;
      seg.rtp_len = static_cast<std::uint32_t>(info.decoded.header.rtp_len);
      seg.increment = static_cast<std::uint32_t>(info.decoded.header.increment);
      seg.opened = std::chrono::system_clock::time_point(std::chrono::milliseconds(o.t));
      if (Status st = catalog.add_segment(o.owner->id, seg); !st) {
        log_error("recovery: %s", st.message().c_str());
        continue;
      }
      log_info("recovery: %s was created after the last catalog commit: linked to rec=%lld as segment %u",
               path.c_str(), static_cast<long long>(o.owner->id), idx);
      fileio::SegmentRow row;
      row.idx = idx;
      row.path = path.string();
      row.codec = seg.codec;
      row.rtp_len = seg.rtp_len;
      row.increment = seg.increment;
      row.opened_at = o.t;
      o.owner->segments.push_back(std::move(row));
    }
  }
}

}  // namespace

std::size_t SessionManager::recover(fileio::Catalog& catalog, const std::filesystem::path& storage,
                                    std::string* report) {
  std::vector<fileio::RecordingRow> open;
  if (Status st = catalog.open_recordings(open); !st) {
    log_error("recovery: %s", st.message().c_str());
    return 0;
  }
  if (!storage.empty()) link_orphans(catalog, storage, open);
  std::size_t n = 0;
  const std::int64_t now_ms = unix_ms_now();
  for (auto& rec : open) {
    std::string what;
    for (auto& seg : rec.segments) {
      fileio::RepairResult rr;
      const Status st = fileio::repair_record(seg.path, rr);
      if (!st) what += " " + seg.path + ": " + st.message() + ";";
      else if (rr.changed) what += " " + seg.path + ": " + rr.summary + ";";
      fileio::RecordInfo info;
      if (fileio::inspect_record(seg.path, info)) {
        if (Status cs = catalog.close_segment(rec.id, seg.idx, info.whole_packets, now_ms); !cs)
          log_error("catalog: %s", cs.message().c_str());
      }
    }
    if (Status st = catalog.mark_recovered(rec.id, now_ms, "crash"); !st) {
      log_error("recovery: %s", st.message().c_str());
      continue;
    }
    log_info("recording recovered: rec=%lld call_id=%s device=%s segments=%zu%s", static_cast<long long>(rec.id),
             rec.call_id.c_str(), rec.device.c_str(), rec.segments.size(), what.c_str());
    if (report) *report += "rec " + std::to_string(rec.id) + what + "\n";
    ++n;
  }
  return n;
}

}  // namespace callrec::control
