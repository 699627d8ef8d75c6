#include "control/event_loop.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

namespace callrec::control {

EventLoop::EventLoop() {
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wakefd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epfd_ >= 0 && wakefd_ >= 0) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = wakefd_;
    ::epoll_ctl(epfd_, EPOLL_CTL_ADD, wakefd_, &ev);
  }
}

EventLoop::~EventLoop() {
  if (wakefd_ >= 0) ::close(wakefd_);
  if (epfd_ >= 0) ::close(epfd_);
}

Status EventLoop::add_fd(int fd, std::uint32_t events, FdHandler handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) return Status::from_errno("epoll_ctl(ADD)");
  handlers_[fd] = std::make_shared<FdHandler>(std::move(handler));
  return {};
}

Status EventLoop::modify_fd(int fd, std::uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev) != 0) return Status::from_errno("epoll_ctl(MOD)");
  return {};
}

void EventLoop::remove_fd(int fd) {
  if (handlers_.erase(fd) != 0) ::epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
}

EventLoop::TimerId EventLoop::add_timer(std::chrono::milliseconds delay, std::function<void()> fn,
                                        bool repeat) {
  const TimerId id = next_timer_++;
  timers_.emplace(id, Timer{delay, repeat, std::move(fn)});
  timer_queue_.emplace(Clock::now() + delay, id);
  return id;
}

void EventLoop::cancel_timer(TimerId id) { timers_.erase(id); }

void EventLoop::post(std::function<void()> fn) {
  {
    std::lock_guard lk(post_mu_);
    posted_.push_back(std::move(fn));
  }
  const std::uint64_t one = 1;
  [[maybe_unused]] auto r = ::write(wakefd_, &one, sizeof one);
}

void EventLoop::stop() {
  post([this] { stopping_ = true; });
}

void EventLoop::drain_posted() {
  std::uint64_t v;
  while (::read(wakefd_, &v, sizeof v) > 0) {
  }
  std::vector<std::function<void()>> batch;
  {
    std::lock_guard lk(post_mu_);
    batch.swap(posted_);
  }
  for (auto& fn : batch) fn();
}

void EventLoop::run_timers() {
  const auto now = Clock::now();
  while (!timer_queue_.empty() && timer_queue_.begin()->first <= now) {
    const TimerId id = timer_queue_.begin()->second;
    timer_queue_.erase(timer_queue_.begin());
    auto it = timers_.find(id);
    if (it == timers_.end()) continue;  // cancelled
    if (it->second.repeat) {
      timer_queue_.emplace(now + it->second.period, id);
      auto fn = it->second.fn;  // the timer may cancel itself
      fn();
    } else {
      auto fn = std::move(it->second.fn);
      timers_.erase(it);
      fn();
    }
  }
}

Status EventLoop::run() {
  if (epfd_ < 0 || wakefd_ < 0) return Status::error("event loop: epoll/eventfd creation failed");
  std::vector<epoll_event> events(256);
  while (!stopping_) {
    int timeout_ms = 1000;
    while (!timer_queue_.empty() && !timers_.contains(timer_queue_.begin()->second))
      timer_queue_.erase(timer_queue_.begin());
    if (!timer_queue_.empty()) {
      const auto d = std::chrono::duration_cast<std::chrono::milliseconds>(timer_queue_.begin()->first -
                                                                           Clock::now());
      timeout_ms = d.count() < 0 ? 0 : static_cast<int>(std::min<long>(d.count() + 1, 1000));
    }
    const int n = ::epoll_wait(epfd_, events.data(), static_cast<int>(events.size()), timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::from_errno("epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
      const int fd = events[static_cast<std::size_t>(i)].data.fd;
      if (fd == wakefd_) {
        drain_posted();
        continue;
      }
      auto it = handlers_.find(fd);
      if (it == handlers_.end()) continue;  // removed by an earlier handler in this batch
      auto h = it->second;                  // keep alive while it runs
      (*h)(events[static_cast<std::size_t>(i)].events);
    }
    run_timers();
    if (after_batch_) after_batch_();
  }
  return {};
}

}  // namespace callrec::control
