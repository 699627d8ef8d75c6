#pragma once
// A minimal SIPREC client (SRC) for the end-to-end tests: UDP, TCP or TLS to callrecd's SIPREC
// server, messages built by hand so a test controls every byte (retransmissions, lies,
// garbage), responses framed with the product's own parser (sip::parse_message) and SDP read
// with sip::parse_sdp.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "control/sip/sdp.hpp"
#include "control/sip/sip_message.hpp"

namespace callrec::e2e {

enum class SipTransport { kUdp, kTcp, kTls };

/// One received SIP message (owned bytes plus its parse).
struct SipMsg {
  std::string raw;
  control::sip::Message m;  ///< views into raw: copies and moves parse their own copy again
  SipMsg() = default;
  SipMsg(const SipMsg& o) : raw(o.raw) { reparse(); }
  SipMsg(SipMsg&& o) noexcept : raw(std::move(o.raw)) { reparse(); }
  SipMsg& operator=(const SipMsg& o) {
    raw = o.raw;
    reparse();
    return *this;
  }
  SipMsg& operator=(SipMsg&& o) noexcept {
    raw = std::move(o.raw);
    reparse();
    return *this;
  }
  void reparse() { (void)control::sip::parse_message(raw, m, false); }
  [[nodiscard]] int status() const { return m.status; }
  [[nodiscard]] std::string header(std::string_view name) const {
    return std::string(control::sip::header_value(m, name));
  }
  [[nodiscard]] std::string to_tag() const { return std::string(control::sip::parse_name_addr(m.to).tag); }
  [[nodiscard]] std::string body() const { return std::string(m.body); }
};

inline std::string rand_token(std::size_t n = 12) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char k[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string s(n, 'a');
  for (auto& c : s) c = k[rng() % 36];
  return s;
}

class SipClient {
 public:
  struct TlsConfig {
    std::string cert, key;  ///< client certificate (mutual TLS); empty: none
    std::string ca;         ///< verify the server against this CA; empty: no verification
  };

  SipClient(SipTransport t, std::uint16_t server_port, const TlsConfig* tls = nullptr) : t_(t), port_(server_port) {
    server_.sin_family = AF_INET;
    server_.sin_port = htons(port_);
    server_.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd_ = ::socket(AF_INET, t == SipTransport::kUdp ? SOCK_DGRAM : SOCK_STREAM, 0);
    sockaddr_in local{};
    local.sin_family = AF_INET;
    local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof local);
    if (t != SipTransport::kUdp) {
      connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&server_), sizeof server_) == 0;
      if (connected_ && t == SipTransport::kTls) connected_ = tls_connect(tls);
    } else {
      connected_ = true;
    }
    socklen_t l = sizeof local;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&local), &l);
    local_port_ = ntohs(local.sin_port);
  }
  ~SipClient() {
    if (ssl_) SSL_free(ssl_);
    if (ctx_) SSL_CTX_free(ctx_);
    if (fd_ >= 0) ::close(fd_);
  }
  SipClient(const SipClient&) = delete;
  SipClient& operator=(const SipClient&) = delete;

  [[nodiscard]] bool ok() const { return connected_; }
  [[nodiscard]] std::uint16_t local_port() const { return local_port_; }
  [[nodiscard]] const char* via_transport() const {
    return t_ == SipTransport::kUdp ? "UDP" : t_ == SipTransport::kTcp ? "TCP" : "TLS";
  }
  [[nodiscard]] std::string tls_error() const { return tls_error_; }

  bool send(const std::string& msg) {
    if (t_ == SipTransport::kUdp)
      return ::sendto(fd_, msg.data(), msg.size(), 0, reinterpret_cast<const sockaddr*>(&server_), sizeof server_) ==
             static_cast<ssize_t>(msg.size());
    if (t_ == SipTransport::kTls) return SSL_write(ssl_, msg.data(), static_cast<int>(msg.size())) == static_cast<int>(msg.size());
    return ::send(fd_, msg.data(), msg.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(msg.size());
  }

  /// The next message (request or response), or nullopt after `timeout`.
  std::optional<SipMsg> recv(std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (t_ != SipTransport::kUdp) {
        if (auto m = frame()) return m;
      }
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      if (!(t_ == SipTransport::kTls && SSL_pending(ssl_) > 0)) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return std::nullopt;
      }
      char buf[70000];
      ssize_t n = 0;
      if (t_ == SipTransport::kTls) n = SSL_read(ssl_, buf, sizeof buf);
      else n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        closed_ = true;
        return std::nullopt;
      }
      if (t_ == SipTransport::kUdp) {
        SipMsg out;
        out.raw.assign(buf, static_cast<std::size_t>(n));
        if (control::sip::parse_message(out.raw, out.m, false) != control::sip::ParseResult::kOk) continue;
        return out;
      }
      in_.append(buf, static_cast<std::size_t>(n));
    }
  }
  /// The next final response (1xx skipped), or nullopt.
  std::optional<SipMsg> final_response(std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      auto m = recv(std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now()));
      if (!m) return std::nullopt;
      if (!m->m.request && m->m.status >= 200) return m;
      if (m->m.request) requests.push_back(*m);  // kept for the test (a BYE from the server ...)
    }
    return std::nullopt;
  }
  [[nodiscard]] bool closed() const { return closed_; }

  std::vector<SipMsg> requests;  ///< requests received while waiting for responses

 private:
  std::optional<SipMsg> frame() {
    std::size_t skip = 0;
    while (skip < in_.size() && (in_[skip] == '\r' || in_[skip] == '\n')) ++skip;
    in_.erase(0, skip);
    if (in_.empty()) return std::nullopt;
    control::sip::Message m;
    const auto pr = control::sip::parse_message(in_, m, true);
    if (pr == control::sip::ParseResult::kIncomplete) return std::nullopt;
    if (pr != control::sip::ParseResult::kOk) {
      // What the server sent cannot be framed: a bug the test must see, not a timeout.
      ADD_FAILURE() << "unframeable bytes from the server (" << control::sip::parse_result_name(pr) << "): " << in_;
      in_.clear();
      return std::nullopt;
    }
    SipMsg out;
    out.raw = in_.substr(0, m.size);
    in_.erase(0, m.size);
    control::sip::parse_message(out.raw, out.m, true);
    return out;
  }
  bool tls_connect(const TlsConfig* tls) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (tls && !tls->cert.empty()) {
      SSL_CTX_use_certificate_chain_file(ctx_, tls->cert.c_str());
      SSL_CTX_use_PrivateKey_file(ctx_, tls->key.c_str(), SSL_FILETYPE_PEM);
    }
    if (tls && !tls->ca.empty()) {
      SSL_CTX_load_verify_locations(ctx_, tls->ca.c_str(), nullptr);
      SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    }
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    if (SSL_connect(ssl_) != 1) {
      char b[256] = "";
      ERR_error_string_n(ERR_get_error(), b, sizeof b);
      tls_error_ = b;
      return false;
    }
    // TLS 1.3: a refused client certificate shows on the first read, not in the handshake.
    return true;
  }

  SipTransport t_;
  std::uint16_t port_;
  int fd_ = -1;
  sockaddr_in server_{};
  std::uint16_t local_port_ = 0;
  bool connected_ = false;
  bool closed_ = false;
  std::string in_;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  std::string tls_error_;
};

/// One SRC-side dialog: builds the requests of a recording session.
struct SrcDialog {
  explicit SrcDialog(SipClient& client) : c(client) {}
  SipClient& c;
  std::string call_id = rand_token(16) + "@127.0.0.1";
  std::string from_tag = rand_token(8);
  std::string to_tag;  ///< the SRS's, from its 200
  std::uint32_t cseq = 1;
  std::string last_branch;

  std::string request(const std::string& method, const std::string& content_type, const std::string& body,
                      const std::string& extra = "", std::uint32_t cseq_override = 0, const std::string& branch = {}) {
    last_branch = branch.empty() ? "z9hG4bK" + rand_token(12) : branch;
    const std::uint32_t n = cseq_override != 0 ? cseq_override : cseq;
    std::string r = method + " sip:srs@127.0.0.1 SIP/2.0\r\n";
    r += "Via: SIP/2.0/" + std::string(c.via_transport()) + " 127.0.0.1:" + std::to_string(c.local_port()) +
         ";branch=" + last_branch + "\r\n";
    r += "Max-Forwards: 70\r\n";
    r += "From: <sip:src@127.0.0.1>;tag=" + from_tag + "\r\n";
    r += "To: <sip:srs@127.0.0.1>" + (to_tag.empty() ? std::string() : ";tag=" + to_tag) + "\r\n";
    r += "Call-ID: " + call_id + "\r\n";
    r += "CSeq: " + std::to_string(n) + " " + (method == "ACK" || method == "CANCEL" ? method : method) + "\r\n";
    r += "Contact: <sip:src@127.0.0.1:" + std::to_string(c.local_port()) + ">;+sip.src\r\n";
    r += extra;
    if (!content_type.empty()) r += "Content-Type: " + content_type + "\r\n";
    r += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    return r;
  }
};

/// Two sendonly PCMA m-lines (labels given), c=127.0.0.1, plus RFC 7865 metadata naming the
/// caller (participant A) and the callee (B): a multipart/mixed body and its Content-Type.
inline std::pair<std::string, std::string> siprec_body(const std::vector<std::string>& mlines,
                                                       const std::string& metadata) {
  std::string sdp = "v=0\r\no=src 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n";
  for (const auto& m : mlines) sdp += m;
  std::string b = "--BOUNDARY\r\nContent-Type: application/sdp\r\n\r\n" + sdp;
  if (!metadata.empty())
    b += "\r\n--BOUNDARY\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n" +
         metadata;
  b += "\r\n--BOUNDARY--\r\n";
  return {"multipart/mixed;boundary=BOUNDARY", b};
}

inline std::string pcma_mline(std::uint16_t port, const std::string& label, const std::string& dir = "sendonly") {
  return "m=audio " + std::to_string(port) + " RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=label:" +
         label + "\r\na=" + dir + "\r\n";
}

/// Metadata: participant "alice" (+15550001, sends label `la`, marked the calling party the
/// Acme way) and "bob" (+15550002, sends `lb`), in the order given by `bob_first`.
inline std::string two_party_metadata(const std::string& la, const std::string& lb, bool bob_first = false,
                                      const std::string& call = "recorded-call-1") {
  const std::string alice =
      "<participant participant_id=\"pA\"><nameID aor=\"sip:+15550001@example.com\"><name>Alice</name></nameID>"
      "<send>sA</send><extensiondata xmlns:apkt=\"http://acmepacket.com/siprec/extensiondata\">"
      "<apkt:callingParty>true</apkt:callingParty></extensiondata></participant>";
  const std::string bob =
      "<participant participant_id=\"pB\"><nameID aor=\"sip:+15550002@example.com\"><name>Bob</name></nameID>"
      "<send>sB</send></participant>";
  return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<recording xmlns=\"urn:ietf:params:xml:ns:recording:1\">"
         "<datamode>complete</datamode><session session_id=\"S1\"><sipSessionID>" + call +
         "</sipSessionID></session>" + (bob_first ? bob + alice : alice + bob) +
         "<stream stream_id=\"sA\" session_id=\"S1\"><label>" + la + "</label></stream>"
         "<stream stream_id=\"sB\" session_id=\"S1\"><label>" + lb + "</label></stream></recording>";
}

}  // namespace callrec::e2e
