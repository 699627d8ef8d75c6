#pragma once
// The control thread's event loop: epoll over file descriptors plus timers. Single-threaded:
// every handler runs on the thread that calls run(). Other threads reach it only through
// post(), which queues a closure and wakes the loop with an eventfd.
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "fileio/status.hpp"

namespace callrec::control {

class EventLoop {
 public:
  using Clock = std::chrono::steady_clock;
  /// events: EPOLLIN/EPOLLOUT/EPOLLERR/EPOLLHUP bits as returned by epoll.
  using FdHandler = std::function<void(std::uint32_t events)>;
  using TimerId = std::uint64_t;

  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  /// Watches fd for `events` (EPOLLIN, EPOLLOUT ...). The loop does not own fd.
  Status add_fd(int fd, std::uint32_t events, FdHandler handler);
  Status modify_fd(int fd, std::uint32_t events);
  /// Stops watching fd (safe to call from inside any handler, including fd's own).
  void remove_fd(int fd);

  /// Runs fn once after delay (or every `delay` when repeat). Returns an id for cancel().
  TimerId add_timer(std::chrono::milliseconds delay, std::function<void()> fn, bool repeat = false);
  void cancel_timer(TimerId id);

  /// Thread-safe: runs fn on the loop thread soon.
  void post(std::function<void()> fn);
  /// Runs fn after each iteration's events, timers and posted work (group commit, flushes).
  void set_after_batch(std::function<void()> fn) { after_batch_ = std::move(fn); }

  /// Runs until stop(). Returns the first fatal error (epoll failure), ok otherwise.
  Status run();
  /// Thread-safe.
  void stop();

  [[nodiscard]] static Clock::time_point now() { return Clock::now(); }

 private:
  void run_timers();
  void drain_posted();

  int epfd_ = -1;
  int wakefd_ = -1;
  bool stopping_ = false;
  std::unordered_map<int, std::shared_ptr<FdHandler>> handlers_;
  struct Timer {
    std::chrono::milliseconds period;
    bool repeat;
    std::function<void()> fn;
  };
  std::multimap<Clock::time_point, TimerId> timer_queue_;
  std::unordered_map<TimerId, Timer> timers_;
  TimerId next_timer_ = 1;
  std::mutex post_mu_;
  std::vector<std::function<void()>> posted_;
  std::function<void()> after_batch_;
};

}  // namespace callrec::control
