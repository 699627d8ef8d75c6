#pragma once
// SIP transports of the SIPREC server, on the control event loop (no thread per call or
// connection): UDP and TCP on the same ADDR:PORT, and TLS (RFC 3261 26.3, RFC 7866 12) on its
// own port, with optional mutual TLS.
//
// - UDP: one datagram is one message, up to 64 KiB (an INVITE with SDP and metadata often
//   passes 1,500 bytes and arrives as IP fragments, which the kernel reassembles).
// - TCP/TLS: messages framed by Content-Length (sip::parse_message stream mode); CRLF
//   keep-alives skipped (a double CRLF ping gets its single CRLF pong, RFC 5626 4.4.1).
//   A framing error (no or bad Content-Length, garbage) cannot be resynchronised safely: the
//   connection is closed and counted.
// Bounded: a connection holds at most max_message bytes of unframed input and out_hard bytes
// of unsent output; connections are capped (max_connections); a connection that has not
// completed its TLS handshake or sent a first message within handshake_timeout, or that has
// been idle for idle_timeout, is closed (half-open TCP, handshakes that never finish).
#include <netinet/in.h>
#include <openssl/ssl.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "control/event_loop.hpp"
#include "fileio/status.hpp"

namespace callrec::control::siprec {

enum class Transport : std::uint8_t { kUdp, kTcp, kTls };
const char* transport_name(Transport t);

/// Where a message came from, and where its responses go (RFC 3261 18.2.2: over the same
/// connection, or for UDP to the source address and port of the request).
struct SipPeer {
  Transport transport = Transport::kUdp;
  sockaddr_storage addr{};  ///< the peer's address (IPv4-mapped IPv6 unmapped)
  std::uint64_t conn = 0;   ///< TCP/TLS: the connection id; UDP: 0
  int udp_fd = -1;          ///< UDP: the socket the request arrived on (replies leave from it)
  std::string local_host;   ///< our address as the peer reached it (for Contact, c=)
  std::uint16_t local_port = 0;
};

struct TransportOptions {
  std::size_t max_connections = 4096;
  std::size_t max_message = 64 * 1024 + 8 * 1024;  ///< unframed input per connection
  std::size_t out_hard = 1024 * 1024;              ///< unsent output per connection
  std::chrono::milliseconds handshake_timeout{10000};
  std::chrono::milliseconds idle_timeout{15 * 60 * 1000};
};

struct TlsOptions {
  std::string cert, key;  ///< PEM files (certificate chain, private key)
  std::string ca;         ///< non-empty: mutual TLS, the client must present a certificate from this CA
};

struct TransportCounters {
  std::uint64_t udp_datagrams = 0, udp_oversize = 0, tcp_accepted = 0, tls_accepted = 0, conn_refused = 0,
                conn_closed = 0, framing_errors = 0, input_overflow = 0, output_overflow = 0,
                handshake_failures = 0, handshake_timeouts = 0, idle_closed = 0, send_failures = 0,
                keepalives = 0;
};

class SipTransport {
 public:
  /// Called for every framed message (bytes valid only during the call).
  using OnMessage = std::function<void(const SipPeer&, std::string_view)>;
  /// Called when a connection closes (the server forgets what it held for it).
  using OnClose = std::function<void(std::uint64_t conn)>;

  SipTransport(EventLoop& loop, TransportOptions opts, OnMessage on_message, OnClose on_close);
  ~SipTransport();
  SipTransport(const SipTransport&) = delete;
  SipTransport& operator=(const SipTransport&) = delete;

  /// UDP and TCP on `addr` (port 0: any free port, the same for both where possible).
  Status listen(const sockaddr_storage& addr);
  /// TLS on `addr`. Loads the certificate, key and CA now: errors come back here.
  Status listen_tls(const sockaddr_storage& addr, const TlsOptions& tls);
  /// The port of the n-th UDP/TCP listener and of the n-th TLS listener (tests with port 0).
  [[nodiscard]] std::uint16_t port(std::size_t n = 0) const;
  [[nodiscard]] std::uint16_t tls_port(std::size_t n = 0) const;

  /// Sends a message to a peer. TCP/TLS: over the peer's connection (false when it is gone).
  bool send(const SipPeer& to, std::string_view msg);
  /// A new request to a peer we are in a dialog with (our BYE): its connection when it still
  /// exists, else UDP to its address (a closed TCP connection is not re-opened).
  bool send_request(const SipPeer& to, std::string_view msg);

  void close_all();
  /// Connections for which this returns true (they carry dialogs) are never closed as idle.
  void set_busy_check(std::function<bool(std::uint64_t conn)> f) { busy_ = std::move(f); }
  [[nodiscard]] const TransportCounters& counters() const { return c_; }
  [[nodiscard]] std::size_t connections() const { return conns_.size(); }

 private:
  struct Listener {
    int fd = -1;
    Transport kind = Transport::kUdp;
    std::uint16_t port = 0;
    sockaddr_storage addr{};
  };
  struct Conn;
  void on_udp(Listener& l);
  void on_accept(Listener& l);
  void on_conn(std::uint64_t id, std::uint32_t ev);
  void conn_read(Conn& c);
  void conn_frame(Conn& c);
  void conn_flush(Conn& c);
  void conn_interest(Conn& c);
  bool conn_handshake(Conn& c);
  void conn_close(Conn& c, const char* why);
  void sweep();

  EventLoop& loop_;
  TransportOptions opts_;
  OnMessage on_message_;
  OnClose on_close_;
  std::function<bool(std::uint64_t)> busy_;
  /// Posted closures hold a weak reference: they do nothing once the transport is gone.
  std::shared_ptr<SipTransport*> self_ = std::make_shared<SipTransport*>(this);
  std::vector<std::unique_ptr<Listener>> listeners_;
  SSL_CTX* tls_ctx_ = nullptr;
  std::unordered_map<std::uint64_t, std::unique_ptr<Conn>> conns_;
  std::uint64_t next_conn_ = 1;
  EventLoop::TimerId sweep_timer_ = 0;
  std::vector<char> udp_buf_;
  TransportCounters c_;
};

}  // namespace callrec::control::siprec
