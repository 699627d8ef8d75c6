#include "control/port_allocator.hpp"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <random>
#include <string>

namespace callrec::control {
namespace {

std::string range_text(const PortAllocatorOptions& o) { return std::to_string(o.lo) + "-" + std::to_string(o.hi); }

}  // namespace

Status validate(const PortAllocatorOptions& opts) {
  if (opts.lo == 0) return Status::error("port range " + range_text(opts) + ": port 0 is not a port");
  if (opts.lo > opts.hi) return Status::error("port range " + range_text(opts) + ": low port above high port");
  if (opts.even_only && opts.lo == opts.hi && opts.lo % 2 != 0) {
    return Status::error("port range " + range_text(opts) + ": no even port in the range");
  }
  if (opts.quarantine < std::chrono::steady_clock::duration::zero()) {
    return Status::error("port quarantine must not be negative");
  }
  if (opts.unusable_retry < std::chrono::steady_clock::duration::zero()) {
    return Status::error("unusable-port retry delay must not be negative");
  }
  return Status::ok();
}

PortAllocator::PortAllocator(PortAllocatorOptions opts) : opts_(opts) {
  if (!validate(opts_).is_ok()) return;
  step_ = opts_.even_only ? 2 : 1;
  first_ = opts_.even_only && opts_.lo % 2 != 0 ? static_cast<std::uint16_t>(opts_.lo + 1) : opts_.lo;
  capacity_ = (static_cast<std::size_t>(opts_.hi) - first_) / step_ + 1;
  state_.assign(capacity_, State::kFree);
  unusable_count_.assign(capacity_, 0);
  for (std::size_t i = 0; i < capacity_; ++i) {
    const auto port = static_cast<std::uint16_t>(first_ + i * step_);
    if (opts_.order == PortOrder::kRandom) ready_.push_back(port);
    else free_.push_back(Entry{port, TimePoint::min()});
  }
}

std::uint32_t PortAllocator::random32() {
  if (random_.empty()) {
    // One system call per 1,024 allocations. getrandom never fails for <= 256 bytes once the
    // pool is initialised except on EINTR; a failure falls back to a seeded engine (still not
    // guessable from outside, but weaker): logged by nobody, as it does not happen on Linux >= 3.17.
    random_.resize(1024);
    auto* p = reinterpret_cast<char*>(random_.data());
    std::size_t got = 0;
    const std::size_t want = random_.size() * sizeof(std::uint32_t);
    while (got < want) {
      const ssize_t n = ::getrandom(p + got, std::min<std::size_t>(want - got, 256), 0);
      if (n > 0) {
        got += static_cast<std::size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        std::mt19937 fallback(static_cast<std::uint32_t>(
            std::chrono::steady_clock::now().time_since_epoch().count() ^ reinterpret_cast<std::uintptr_t>(this)));
        for (auto& v : random_) v = fallback();
        break;
      }
    }
  }
  const std::uint32_t v = random_.back();
  random_.pop_back();
  return v;
}

std::optional<std::uint16_t> PortAllocator::allocate_random(TimePoint now) {
  // Ports whose quarantine (or unusable wait) is over join the ready set.
  for (auto* q : {&free_, &unusable_}) {
    while (!q->empty() && q->front().ready <= now) {
      ready_.push_back(q->front().port);
      q->pop_front();
    }
  }
  if (ready_.empty()) {
    ++stats_.exhausted;
    return std::nullopt;
  }
  // Uniform over the ready ports (Lemire's multiply-shift; the bias for n <= 65,536 is below
  // 2^-16, immaterial here).
  const auto i = static_cast<std::size_t>((static_cast<std::uint64_t>(random32()) * ready_.size()) >> 32);
  const std::uint16_t port = ready_[i];
  ready_[i] = ready_.back();
  ready_.pop_back();
  state_[*index_of(port)] = State::kInUse;
  ++in_use_;
  ++stats_.allocations;
  return port;
}

std::optional<std::size_t> PortAllocator::index_of(std::uint16_t port) const {
  if (capacity_ == 0 || port < first_ || port > opts_.hi) return std::nullopt;
  const std::size_t off = port - first_;
  if (off % step_ != 0) return std::nullopt;
  return off / step_;
}

void PortAllocator::push(std::deque<Entry>& q, Entry e) {
  // A caller's clock going backwards must not let this port jump the queue's order (and the
  // queue stays sorted, so allocate() looks at the front only).
  if (!q.empty() && e.ready < q.back().ready) e.ready = q.back().ready;
  q.push_back(e);
}

std::optional<std::uint16_t> PortAllocator::allocate(TimePoint now) {
  if (opts_.order == PortOrder::kRandom) return allocate_random(now);
  // Each port has exactly one entry, in free_ (kFree) or unusable_ (kUnusable).
  const bool free_ready = !free_.empty() && free_.front().ready <= now;
  const bool unusable_ready = !unusable_.empty() && unusable_.front().ready <= now;
  if (!free_ready && !unusable_ready) {
    ++stats_.exhausted;
    return std::nullopt;
  }
  // Both ready: the one that has been waiting longest (least recently used).
  std::deque<Entry>& q =
      (free_ready && (!unusable_ready || free_.front().ready <= unusable_.front().ready)) ? free_ : unusable_;
  const std::uint16_t port = q.front().port;
  q.pop_front();
  state_[*index_of(port)] = State::kInUse;
  ++in_use_;
  ++stats_.allocations;
  return port;
}

bool PortAllocator::release(std::uint16_t port, TimePoint now) {
  const auto idx = index_of(port);
  if (!idx || state_[*idx] != State::kInUse) {
    ++stats_.bad_releases;
    return false;
  }
  state_[*idx] = State::kFree;
  --in_use_;
  ++stats_.releases;
  push(free_, Entry{port, now + opts_.quarantine});
  return true;
}

bool PortAllocator::mark_unusable(std::uint16_t port, TimePoint now) {
  const auto idx = index_of(port);
  if (!idx || state_[*idx] != State::kInUse) {
    ++stats_.bad_releases;
    return false;
  }
  state_[*idx] = State::kUnusable;
  --in_use_;
  ++unusable_count_[*idx];
  ++stats_.unusable_marks;
  push(unusable_, Entry{port, now + opts_.unusable_retry});
  return true;
}

bool PortAllocator::is_allocated(std::uint16_t port) const {
  const auto idx = index_of(port);
  return idx && state_[*idx] == State::kInUse;
}

std::uint32_t PortAllocator::unusable_count(std::uint16_t port) const {
  const auto idx = index_of(port);
  return idx ? unusable_count_[*idx] : 0;
}

std::size_t PortAllocator::count_waiting(const std::deque<Entry>& q, TimePoint now) {
  // Sorted by ready time: the waiting ones are a suffix.
  const auto it = std::partition_point(q.begin(), q.end(), [now](const Entry& e) { return e.ready <= now; });
  return static_cast<std::size_t>(q.end() - it);
}

std::size_t PortAllocator::waiting(TimePoint now) const {
  return count_waiting(free_, now) + count_waiting(unusable_, now);
}

}  // namespace callrec::control
