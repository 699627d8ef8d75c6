#pragma once
// The phone-upload ingest path: the TCP command server of ../shared/spec/control-protocol.md.
// Event-driven on the control loop; thousands of connections; per connection memory bounded
// by the frame decoder's limit plus a bounded output buffer. One action function per command
// (start_action / stop_action) does the work; the wire code only parses and formats.
#include <netinet/in.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "control/accept_guard.hpp"
#include "control/event_loop.hpp"
#include "control/protocol.hpp"
#include "control/session_manager.hpp"

namespace callrec::control {

struct UploadServerOptions {
  sockaddr_storage listen{};
  std::string advertise;              ///< server= value; empty: the connection's local address
  std::size_t max_connections = 20000;
  std::size_t max_message = kDefaultMaxMessage;
  std::size_t max_output = 64 * 1024; ///< a peer that does not read its responses is dropped
  unsigned garbage_limit = 3;         ///< garbage messages before the connection is closed
  std::chrono::milliseconds quiet_flush{300};  ///< unterminated message processed after this quiet
  /// Responses wait for flush_pending() instead of going out at once: the daemon first commits
  /// the catalog batch, so an answered start is always in the catalog (group commit).
  bool defer_flush = false;
};

struct UploadCounters {
  std::uint64_t accepted = 0, rejected = 0, closed = 0, active = 0;
  std::uint64_t fd_exhausted = 0;  ///< connections shed at accept because no descriptor was left
  std::uint64_t messages = 0, garbage = 0, bad_request = 0, overflow = 0, output_overflow = 0;
  std::uint64_t start_ok = 0, start_failed = 0, stop_requests = 0, stop_unknown = 0;
  std::uint64_t server_stops_sent = 0, stop_responses = 0;
};

class UploadServer {
 public:
  UploadServer(EventLoop& loop, SessionManager& sessions, UploadServerOptions opts);
  ~UploadServer();
  UploadServer(const UploadServer&) = delete;
  UploadServer& operator=(const UploadServer&) = delete;

  Status listen();
  [[nodiscard]] std::uint16_t local_port() const { return port_; }
  /// Stops accepting; existing connections stay until the peers close or close_all().
  void stop_listening();
  void close_all();
  [[nodiscard]] const UploadCounters& counters() const { return counters_; }
  [[nodiscard]] std::size_t connections() const { return conns_.size(); }
  /// Sends what defer_flush held back.
  void flush_pending();

 private:
  class Conn;
  friend class Conn;
  void on_accept();
  void on_readable(Conn& c, std::uint32_t ev);
  void on_message(Conn& c, const std::string& line);
  void send(Conn& c, std::string msg);
  void flush_output(Conn& c);
  void drop(Conn& c, const char* why);

  StartResponse start_action(Conn& c, const StartRequest& req);
  StopResponse stop_action(Conn& c, const StopRequest& req);

  EventLoop& loop_;
  SessionManager& sessions_;
  UploadServerOptions opts_;
  int fd_ = -1;
  AcceptGuard accept_guard_;
  bool accept_paused_ = false;
  EventLoop::TimerId accept_timer_ = 0;
  void pause_accept();
  std::chrono::steady_clock::time_point last_exhausted_log_{};
  std::uint16_t port_ = 0;
  UploadCounters counters_;
  std::unordered_map<int, std::unique_ptr<Conn>> conns_;
  std::vector<int> pending_flush_;  ///< connections with held-back output (defer_flush)
};

}  // namespace callrec::control
