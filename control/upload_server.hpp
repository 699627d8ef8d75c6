#pragma once
// The phone-upload ingest path: the TCP command server of ../shared/spec/control-protocol.md.
// Event-driven on the control loop; thousands of connections. One action function per command
// (start_action / stop_action) does the work; the wire code only parses and formats.
//
// One client must not hurt the others (issue 9). Per connection and loop pass:
// - input: at most `read_budget` bytes are read, and every complete message is handled as soon
//   as it is framed (the decoder never queues more than one read's worth);
// - output: when the responses not yet taken by the peer reach `out_high`, the connection stops
//   being read and its framed messages wait (TCP pushes back on the sender); reading resumes
//   once the peer has taken the output down to `out_low`. Nothing is answered late or dropped
//   for a peer that reads slowly; only a peer whose unread output passes `out_hard` (server
//   stops queued while it reads nothing) is disconnected.
// So memory per connection is bounded (max_message + read_budget + out_hard), and the loop
// serves every connection every pass.
//
// Descriptors: `max_connections` caps phone connections (the daemon derives it from the
// descriptor limit: a third of what is left after a reserve, so recordings keep room), and
// `max_per_address` / `max_recordings_per_address` cap one address. When a descriptor is
// needed and none is left (accept, or a start whose socket or file fails with EMFILE), the
// connections that hold no recording and have been idle longest are closed first
// (`evicted_idle`), and only then is a phone refused.
#include <netinet/in.h>

#include <chrono>
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
  std::string advertise;                  ///< server= value; empty: the connection's local address
  std::size_t max_connections = 20000;
  std::size_t max_per_address = 0;        ///< connections from one address; 0: no limit
  std::size_t max_recordings_per_address = 0;  ///< concurrent recordings of one address; 0: no limit
  std::size_t max_message = kDefaultMaxMessage;
  std::size_t read_budget = 64 * 1024;    ///< bytes read from one connection per loop pass
  std::size_t out_high = 64 * 1024;       ///< unread output at which the connection stops being read
  std::size_t out_low = 16 * 1024;        ///< ... and resumes
  std::size_t out_hard = 1024 * 1024;     ///< unread output at which the peer is dropped
  unsigned garbage_limit = 3;             ///< garbage messages before the connection is closed
  /// An unterminated message is processed after this much quiet (or at once on a half-close):
  /// long enough that a request split by a pause of a couple of seconds is read whole.
  std::chrono::milliseconds quiet_flush{5000};
  /// Responses wait for flush_pending() instead of going out at once: the daemon first commits
  /// the catalog batch, so an answered start is always in the catalog (group commit).
  bool defer_flush = false;
};

struct UploadCounters {
  std::uint64_t accepted = 0, rejected = 0, closed = 0, active = 0;
  std::uint64_t fd_exhausted = 0;  ///< connections shed at accept because no descriptor was left
  std::uint64_t per_address_rejected = 0;  ///< connections refused: --max-connections-per-address
  std::uint64_t evicted_idle = 0;  ///< idle connections without a recording closed to free a descriptor
  std::uint64_t messages = 0, garbage = 0, bad_request = 0, overflow = 0, output_overflow = 0;
  std::uint64_t backpressure = 0;  ///< times a connection stopped being read until its peer read
  std::uint64_t start_ok = 0, start_failed = 0, stop_requests = 0, stop_unknown = 0;
  std::uint64_t per_address_recordings_refused = 0;  ///< starts refused: --max-recordings-per-address
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
  [[nodiscard]] const UploadServerOptions& options() const { return opts_; }
  /// Sends what defer_flush held back.
  void flush_pending();
  /// Closes up to `n` connections that hold no recording, idle longest first (never `keep`).
  /// Returns how many were closed. For any part of the daemon that runs out of descriptors.
  std::size_t evict_idle(std::size_t n, const void* keep = nullptr);

 private:
  class Conn;
  friend class Conn;
  struct AddressKey {
    std::string bytes;  ///< family + raw address
    bool operator==(const AddressKey&) const = default;
  };
  struct AddressHash {
    std::size_t operator()(const AddressKey& k) const { return std::hash<std::string>{}(k.bytes); }
  };
  static AddressKey key_of(const sockaddr_storage& a);

  void on_accept();
  void on_event(Conn& c, std::uint32_t ev);
  void read_some(Conn& c);
  /// Handles framed messages until none is left, the connection died or it is paused.
  void handle_ready(Conn& c);
  void on_message(Conn& c, const std::string& line);
  void send(Conn& c, std::string msg);
  void flush_output(Conn& c);
  void update_interest(Conn& c);
  void arm_quiet_timer(Conn& c);
  void drop(Conn& c, const char* why);
  [[nodiscard]] std::size_t unsent(const Conn& c) const;

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
  std::chrono::steady_clock::time_point last_per_address_log_{};
  std::uint16_t port_ = 0;
  UploadCounters counters_;
  std::unordered_map<int, std::unique_ptr<Conn>> conns_;
  struct AddressUse {
    std::size_t conns = 0;
    std::size_t recordings = 0;  ///< sum of the connections' `counted`
  };
  std::unordered_map<AddressKey, AddressUse, AddressHash> per_address_;
  /// Brings the connection's share of its address's recording count up to date (O(1)).
  void sync_recordings(Conn& c);
  [[nodiscard]] std::size_t eviction_batch() const { return std::max<std::size_t>(1, opts_.max_connections / 64); }
  std::vector<int> pending_flush_;  ///< connections with held-back output (defer_flush)
};

}  // namespace callrec::control
