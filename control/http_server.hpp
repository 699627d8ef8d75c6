#pragma once
// A deliberately small HTTP/1.1 server for the operator interface (Prometheus /metrics,
// /status JSON, operator stop). One request per connection ("Connection: close"), bounded
// request size, runs on the control event loop. Not exposed to phones: bind it to loopback or
// a management network.
#include <netinet/in.h>

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

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;
  explicit HttpServer(EventLoop& loop) : loop_(loop) {}
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// Binds and listens (port 0: ephemeral, see local_port()).
  Status listen(const sockaddr_storage& addr);
  void route(std::string path, Handler h) { routes_[std::move(path)] = std::move(h); }
  [[nodiscard]] std::uint16_t local_port() const { return port_; }
  void close();

 private:
  struct Conn {
    std::string in;
    std::string out;
    std::size_t sent = 0;
  };
  void on_accept();
  void on_conn(int fd, std::uint32_t ev);
  void finish(int fd);
  HttpResponse dispatch(const std::string& head);

  EventLoop& loop_;
  int fd_ = -1;
  std::uint16_t port_ = 0;
  AcceptGuard accept_guard_;
  EventLoop::TimerId accept_timer_ = 0;
  std::unordered_map<std::string, Handler> routes_;
  std::unordered_map<int, Conn> conns_;
};

}  // namespace callrec::control
