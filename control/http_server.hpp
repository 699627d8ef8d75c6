#pragma once
// A deliberately small HTTP/1.1 server for the operator interface (Prometheus /metrics,
// /status JSON, operator stop). One request per connection ("Connection: close"), bounded
// request size, runs on the control event loop. Not exposed to phones: bind it to loopback or
// a management network.
//
// A slow or idle client cannot take the operator's endpoint away: at most `max_connections`
// at once (a new one beyond that replaces the oldest one still sending its request head), the
// request head must arrive within `header_timeout` and the response be taken within
// `idle_timeout`, and `reserved` descriptors are held back so that /metrics answers even when
// the rest of the daemon is out of descriptors.
#include <netinet/in.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>

#include "control/accept_guard.hpp"
#include "control/event_loop.hpp"

namespace callrec::control {

struct HttpRequest {
  std::string method;   ///< GET, POST ...
  std::string path;     ///< without the query
  std::unordered_map<std::string, std::string> query;  ///< percent-decoded
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; version=0.0.4";
  std::string body;
};

struct HttpServerOptions {
  std::size_t max_connections = 16;
  std::chrono::milliseconds header_timeout{5000};
  std::chrono::milliseconds idle_timeout{10000};
  unsigned reserved = 4;  ///< descriptors kept for the endpoint (AcceptGuard::take)
};

struct HttpCounters {
  std::uint64_t requests = 0;
  std::uint64_t timeouts = 0;      ///< connections closed: head or response not done in time
  std::uint64_t replaced = 0;      ///< slow connections closed to make room at max_connections
  std::uint64_t reserved_used = 0; ///< connections served on a reserved descriptor
  std::uint64_t shed = 0;          ///< connections closed at accept: no descriptor at all
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;
  explicit HttpServer(EventLoop& loop, HttpServerOptions opts = {})
      : loop_(loop), opts_(opts), accept_guard_(opts.reserved) {}
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// Binds and listens (port 0: ephemeral, see local_port()).
  Status listen(const sockaddr_storage& addr);
  void route(std::string path, Handler h) { routes_[std::move(path)] = std::move(h); }
  [[nodiscard]] std::uint16_t local_port() const { return port_; }
  /// The bound address and port ("127.0.0.1:9464", "[::]:9464").
  [[nodiscard]] const std::string& local_endpoint() const { return endpoint_; }
  [[nodiscard]] const HttpCounters& counters() const { return counters_; }
  [[nodiscard]] std::size_t connections() const { return conns_.size(); }
  void close();

 private:
  struct Conn {
    std::string in;
    std::string out;
    std::size_t sent = 0;
    std::chrono::steady_clock::time_point opened;
    bool reserved = false;  ///< on a descriptor from the reserve
  };
  void on_accept();
  void adopt(int fd, bool reserved);
  void on_conn(int fd, std::uint32_t ev);
  void finish(int fd);
  void sweep();
  HttpResponse dispatch(const std::string& head);

  EventLoop& loop_;
  HttpServerOptions opts_;
  HttpCounters counters_;
  EventLoop::TimerId sweep_timer_ = 0;
  std::string endpoint_;
  int fd_ = -1;
  std::uint16_t port_ = 0;
  AcceptGuard accept_guard_;
  EventLoop::TimerId accept_timer_ = 0;
  std::unordered_map<std::string, Handler> routes_;
  std::unordered_map<int, Conn> conns_;
};

}  // namespace callrec::control
