#pragma once
// A DPDK telemetry v2 client for tests (the unit tests and the daemon e2e tests both read
// /callrec/stats): the socket is SOCK_SEQPACKET; the server greets with its version and
// limits, then answers each command with one JSON message.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace callrec::test_support {

class TelemetryClient {
 public:
  explicit TelemetryClient(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (fd_ < 0 || path.size() >= sizeof a.sun_path) return;
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) return;
    greeting_ = receive();
  }
  ~TelemetryClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  TelemetryClient(const TelemetryClient&) = delete;
  TelemetryClient& operator=(const TelemetryClient&) = delete;

  /// The server's first message ("" when the connection failed).
  [[nodiscard]] const std::string& greeting() const { return greeting_; }
  /// One command; its JSON answer, or "" on failure (5 s timeout).
  std::string request(const std::string& cmd) {
    if (greeting_.empty()) return {};
    if (::send(fd_, cmd.data(), cmd.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(cmd.size())) return {};
    return receive();
  }

 private:
  std::string receive() {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 5000) <= 0) return {};
    std::string buf(65536, '\0');
    const ssize_t n = ::recv(fd_, buf.data(), buf.size(), 0);
    buf.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return buf;
  }
  int fd_ = -1;
  std::string greeting_;
};

/// One command on a fresh connection: the JSON answer, "" on failure.
inline std::string telemetry_request(const std::string& path, const std::string& cmd) {
  TelemetryClient c(path);
  return c.request(cmd);
}

/// The non-negative integer after "key": in a flat JSON text, or -1.
inline long long json_number(const std::string& json, const std::string& key) {
  const std::size_t at = json.find("\"" + key + "\":");
  if (at == std::string::npos) return -1;
  std::size_t i = at + key.size() + 3;
  while (i < json.size() && json[i] == ' ') ++i;
  if (i >= json.size() || json[i] < '0' || json[i] > '9') return -1;
  return std::stoll(json.substr(i));
}

}  // namespace callrec::test_support
