#include "dataplane/decode/reassembly.hpp"

#include <algorithm>
#include <cstring>

namespace callrec::dataplane::decode {

// ---- IP fragments ------------------------------------------------------------------------

void IpReassembler::drop(std::unordered_map<Key, Entry, KeyHash>::iterator it) {
  bytes_ -= it->second.data.capacity();
  ages_.erase(it->second.age);
  map_.erase(it);
}

void IpReassembler::expire(std::uint64_t now_ns) {
  while (!ages_.empty()) {
    auto it = map_.find(ages_.front());
    if (now_ns < it->second.created_ns + lim_.fragment_timeout_ns) break;
    c_.inc(kR_frag_timeout);
    drop(it);
  }
}

std::span<const std::byte> IpReassembler::add(const Packet& p, std::uint64_t now_ns) {
  const std::uint32_t begin = p.frag_offset;
  const auto end64 = static_cast<std::uint64_t>(begin) + p.l4.size();
  if (end64 > 65535 || (p.frag_more && (p.l4.size() % 8) != 0)) {
    c_.inc(kR_frag_too_big);  // past the largest datagram, or a middle fragment not 8-aligned
    return {};
  }
  const auto end = static_cast<std::uint32_t>(end64);
  expire(now_ns);
  const Key key{p.src, p.dst, p.frag_id, p.proto};
  auto it = map_.find(key);
  if (it == map_.end()) {
    while (!ages_.empty() && (map_.size() >= lim_.max_datagrams || bytes_ + end > lim_.max_fragment_bytes)) {
      c_.inc(kR_frag_evicted);
      drop(map_.find(ages_.front()));
    }
    it = map_.emplace(key, Entry{}).first;
    ages_.push_back(key);
    it->second.age = std::prev(ages_.end());
    it->second.created_ns = now_ns;
  }
  Entry& e = it->second;
  if (!p.frag_more) {
    if ((e.total != 0 && e.total != end) || (!e.have.empty() && e.have.back().second > end)) {
      c_.inc(kR_frag_overlap);  // two different ends, or bytes past the end
      drop(it);
      return {};
    }
    e.total = end;
  } else if (e.total != 0 && end > e.total) {
    c_.inc(kR_frag_too_big);
    drop(it);
    return {};
  }
  if (end > e.data.size()) {
    // Growing a held datagram counts against the byte cap too: older datagrams go first, and
    // this one when it alone is over the cap. reserve(end) allocates exactly end bytes.
    const std::size_t before = e.data.capacity();
    const std::size_t grow = end > before ? end - before : 0;
    while (bytes_ + grow > lim_.max_fragment_bytes && ages_.front() != key) {
      c_.inc(kR_frag_evicted);
      drop(map_.find(ages_.front()));
    }
    if (bytes_ + grow > lim_.max_fragment_bytes) {
      c_.inc(kR_frag_evicted);
      drop(it);
      return {};
    }
    e.data.reserve(end);
    e.data.resize(end);
    bytes_ += e.data.capacity() - before;
  }
  // Overlaps: the same bytes again are a duplicate (tolerated); different bytes end the datagram.
  bool dup = false;
  for (const auto& [b, en] : e.have) {
    const std::uint32_t ob = std::max(b, begin), oe = std::min(en, end);
    if (ob >= oe) continue;
    if (std::memcmp(e.data.data() + ob, p.l4.data() + (ob - begin), oe - ob) != 0) {
      c_.inc(kR_frag_overlap);
      drop(it);
      return {};
    }
    dup = true;
  }
  if (dup) c_.inc(kR_frag_duplicate);
  if (end > begin) std::memcpy(e.data.data() + begin, p.l4.data(), end - begin);
  // Merge [begin, end) into the sorted interval list.
  e.have.emplace_back(begin, end);
  std::sort(e.have.begin(), e.have.end());
  std::size_t w = 0;
  for (std::size_t r = 1; r < e.have.size(); ++r) {
    if (e.have[r].first <= e.have[w].second)
      e.have[w].second = std::max(e.have[w].second, e.have[r].second);
    else
      e.have[++w] = e.have[r];
  }
  e.have.resize(w + 1);
  if (e.total == 0 || e.have.size() != 1 || e.have[0].first != 0 || e.have[0].second != e.total) return {};
  // drop() subtracts the entry's capacity: take it before the buffer moves to done_.
  bytes_ -= e.data.capacity();
  done_.swap(e.data);
  done_.resize(e.total);
  ages_.erase(e.age);
  map_.erase(it);
  c_.inc(kR_frag_reassembled);
  return done_;
}

// ---- TCP streams ---------------------------------------------------------------------------

namespace {
inline std::int32_t seq_diff(std::uint32_t a, std::uint32_t b) { return static_cast<std::int32_t>(a - b); }
}  // namespace

void TcpReassembler::consume(Stream& s, std::size_t n) {
  n = std::min(n, s.buf.size());
  s.buf.erase(s.buf.begin(), s.buf.begin() + static_cast<std::ptrdiff_t>(n));
}

void TcpReassembler::append(Stream& s, std::span<const std::byte> data) {
  if (s.buf.size() + data.size() > lim_.max_tcp_buffer) {
    // The consumer could not frame a message in max_tcp_buffer bytes (a stream that never ends,
    // an enormous message): start over after these bytes.
    c_.inc(kR_tcp_gaps);
    s.buf.clear();
    s.lost = true;
    return;
  }
  s.buf.insert(s.buf.end(), data.begin(), data.end());
}

void TcpReassembler::expire(std::uint64_t now_ns) {
  while (!ages_.empty()) {
    auto it = map_.find(ages_.front());
    if (now_ns < it->second.last_ns + lim_.tcp_timeout_ns) break;
    c_.inc(kR_tcp_timeout);
    ages_.pop_front();
    map_.erase(it);
  }
}

TcpReassembler::Stream* TcpReassembler::add(const Packet& p, std::uint64_t now_ns, bool may_create) {
  for (const Key& k : closing_) {
    auto it = map_.find(k);
    if (it != map_.end()) {
      ages_.erase(it->second.age);
      map_.erase(it);
    }
  }
  closing_.clear();
  const Key key{Endpoint{p.src, p.sport}, Endpoint{p.dst, p.dport}};
  auto it = map_.find(key);
  const bool syn = (p.tcp_flags & kTcpSyn) != 0;
  const bool fin = (p.tcp_flags & (kTcpFin | kTcpRst)) != 0;
  if (it == map_.end()) {
    if (!may_create || (p.payload.empty() && !syn)) return nullptr;  // not (yet) followed
    while (!ages_.empty() && map_.size() >= lim_.max_tcp_streams) {
      c_.inc(kR_tcp_evicted);
      map_.erase(ages_.front());
      ages_.pop_front();
    }
    it = map_.emplace(key, Stream{}).first;
    ages_.push_back(key);
    it->second.age = std::prev(ages_.end());
    it->second.next_seq = p.tcp_seq + (syn ? 1 : 0);
    c_.inc(kR_tcp_streams);
  } else {
    ages_.splice(ages_.end(), ages_, it->second.age);
  }
  Stream& s = it->second;
  s.last_ns = now_ns;
  if (syn) {
    // A new connection on the same four-tuple: what was buffered belongs to the old one.
    s.next_seq = p.tcp_seq + 1;
    s.buf.clear();
    s.ooo.clear();
    s.ooo_bytes = 0;
    s.lost = false;  // the new connection starts at its first byte: nothing skipped in it
  }
  const std::size_t before = s.buf.size();
  const bool was_lost = s.lost;
  std::uint32_t seq = p.tcp_seq + (syn ? 1 : 0);
  std::span<const std::byte> data = p.payload;
  if (!data.empty()) {
    const std::int32_t d = seq_diff(seq, s.next_seq);
    if (d < 0) {  // starts before what we have: keep only the new tail
      const auto old = static_cast<std::size_t>(-static_cast<std::int64_t>(d));
      if (old >= data.size()) {
        c_.inc(kR_tcp_retransmits);
        data = {};
      } else {
        data = data.subspan(old);
        seq = s.next_seq;
      }
    }
    if (!data.empty() && seq == s.next_seq) {
      append(s, data);
      s.next_seq += static_cast<std::uint32_t>(data.size());
      // Held segments that now fit.
      for (bool progress = true; progress && !s.ooo.empty();) {
        progress = false;
        for (std::size_t i = 0; i < s.ooo.size(); ++i) {
          auto& [oseq, obytes] = s.ooo[i];
          const std::int32_t od = seq_diff(oseq, s.next_seq);
          if (od > 0) continue;
          const auto skip = static_cast<std::size_t>(-static_cast<std::int64_t>(od));
          if (skip < obytes.size()) {
            append(s, std::span<const std::byte>(obytes).subspan(skip));
            s.next_seq += static_cast<std::uint32_t>(obytes.size() - skip);
          }
          s.ooo_bytes -= obytes.size();
          s.ooo.erase(s.ooo.begin() + static_cast<std::ptrdiff_t>(i));
          progress = true;
          break;
        }
      }
    } else if (!data.empty()) {  // a hole before it: hold it
      c_.inc(kR_tcp_out_of_order);
      s.ooo.emplace_back(seq, std::vector<std::byte>(data.begin(), data.end()));
      s.ooo_bytes += data.size();
      if (s.ooo.size() > 32 || s.buf.size() + s.ooo_bytes > lim_.max_tcp_buffer) {
        // The hole is not coming back: skip to the earliest held segment.
        c_.inc(kR_tcp_gaps);
        std::sort(s.ooo.begin(), s.ooo.end(),
                  [](const auto& a, const auto& b) { return seq_diff(a.first, b.first) < 0; });
        s.buf.clear();
        s.lost = true;
        s.next_seq = s.ooo.front().first;
        auto held = std::move(s.ooo);
        s.ooo.clear();
        s.ooo_bytes = 0;
        for (auto& [oseq, obytes] : held) {
          const std::int32_t od = seq_diff(oseq, s.next_seq);
          if (od > 0) {  // another hole: keep it for later
            s.ooo_bytes += obytes.size();
            s.ooo.emplace_back(oseq, std::move(obytes));
            continue;
          }
          const auto skip = static_cast<std::size_t>(-static_cast<std::int64_t>(od));
          if (skip < obytes.size()) {
            append(s, std::span<const std::byte>(obytes).subspan(skip));
            s.next_seq += static_cast<std::uint32_t>(obytes.size() - skip);
          }
        }
      }
    }
  }
  if (fin) closing_.push_back(key);
  if (s.buf.size() != before || s.lost != was_lost) return &s;
  return nullptr;
}

}  // namespace callrec::dataplane::decode
