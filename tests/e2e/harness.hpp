#pragma once
// End-to-end harness: starts the real callrecd (and the real tools) as child processes and
// talks to them over real sockets on loopback. Everything hermetic: port 0 for the control
// and metrics listeners (the daemon's "ready:" log line says which ports it got), a private
// temporary directory per test, an RTP port range picked per test process.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "control/protocol.hpp"
#include "fileio/catalog.hpp"
#include "fileio/g711.hpp"
#include "fileio/record_reader.hpp"
#include "fileio/rtp.hpp"

namespace callrec::e2e {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

inline std::string bin(const char* name) { return std::string(CALLREC_BIN_DIR) + "/" + name; }

/// Polls cond every 10 ms until it holds or the deadline passes.
inline bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds timeout = 10s) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return cond();
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "callrec-e2e-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

struct CmdResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

/// Runs a program to completion, capturing stdout and stderr.
inline CmdResult run_cmd(const std::vector<std::string>& argv, std::chrono::seconds timeout = 60s) {
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) return {};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  CmdResult r;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  const auto end = std::chrono::steady_clock::now() + timeout;
  int open = 2;
  char buf[65536];
  while (open > 0 && std::chrono::steady_clock::now() < end) {
    if (::poll(fds, 2, 100) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open;
      } else {
        (i == 0 ? r.out : r.err).append(buf, static_cast<std::size_t>(n));
      }
    }
  }
  for (auto& f : fds)
    if (f.fd >= 0) ::close(f.fd);
  if (open > 0) ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

/// RTP ports of a test's own: `slots` consecutive ranges of 400 ports from 20000 (100 ranges),
/// each held by a lock file (flock) while this lives, so that no daemon of another test, run in
/// parallel by ctest, is given them. A random free place; when none is free, a random one
/// unlocked (and a note on stderr).
class RtpRangeLock {
 public:
  static constexpr unsigned kSlots = 100;
  static constexpr unsigned kSlotPorts = 400;
  RtpRangeLock() = default;  ///< holds nothing
  explicit RtpRangeLock(unsigned slots) {
    std::random_device rd;
    const unsigned places = kSlots - slots + 1;
    const unsigned first = rd() % places;
    for (unsigned k = 0; k < places; ++k) {
      const unsigned at = (first + k) % places;
      if (try_lock(at, slots)) {
        lo_ = static_cast<std::uint16_t>(20000 + at * kSlotPorts);
        return;
      }
    }
    std::fprintf(stderr, "note: no free RTP port range for this test; sharing one\n");
    lo_ = static_cast<std::uint16_t>(20000 + first * kSlotPorts);
  }
  ~RtpRangeLock() { release(); }
  RtpRangeLock(RtpRangeLock&& o) noexcept : fds_(std::move(o.fds_)), lo_(o.lo_) { o.fds_.clear(); }
  RtpRangeLock& operator=(RtpRangeLock&& o) noexcept {
    if (this != &o) {
      release();
      fds_ = std::move(o.fds_);
      o.fds_.clear();
      lo_ = o.lo_;
    }
    return *this;
  }
  RtpRangeLock(const RtpRangeLock&) = delete;
  RtpRangeLock& operator=(const RtpRangeLock&) = delete;
  /// The first port of the range(s).
  [[nodiscard]] std::uint16_t lo() const { return lo_; }

 private:
  bool try_lock(unsigned at, unsigned slots) {
    for (unsigned i = 0; i < slots; ++i) {
      const std::string path = "/tmp/callrec-e2e-rtp-range-" + std::to_string(at + i) + ".lock";
      const int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0666);
      if (fd >= 0 && ::flock(fd, LOCK_EX | LOCK_NB) == 0) {
        fds_.push_back(fd);
        continue;
      }
      if (fd >= 0) ::close(fd);
      release();
      return false;
    }
    return true;
  }
  void release() {
    for (const int fd : fds_) ::close(fd);
    fds_.clear();
  }
  std::vector<int> fds_;
  std::uint16_t lo_ = 0;
};

/// A running callrecd. Its stderr is collected line by line.
class DaemonProcess {
 public:
  /// Starts callrecd with storage/catalog in dir and the extra flags; waits for "ready:".
  /// nofile > 0: the daemon runs with RLIMIT_NOFILE (soft and hard) set to it.
  DaemonProcess(const fs::path& dir, std::vector<std::string> extra, std::uint16_t rtp_lo = 0, std::uint16_t rtp_hi = 0,
                rlim_t nofile = 0)
      : nofile_(nofile) {
    storage_ = dir / "recordings";
    catalog_ = dir / "catalog.db";
    if (rtp_lo == 0) {
      // ctest runs tests in parallel: each daemon takes a 400-port range of its own, held by a
      // lock file while it lives, so that no daemon of another test receives this one's RTP
      // (a phone of a test still sending to a port its daemon let go of was counted as SRTP
      // forgeries by a SIPREC daemon that had just been given the same port).
      rtp_lock_ = RtpRangeLock(1);
      rtp_lo = rtp_lock_.lo();
      rtp_hi = static_cast<std::uint16_t>(rtp_lo + RtpRangeLock::kSlotPorts - 1);
    }
    rtp_lo_ = rtp_lo;
    std::vector<std::string> argv = {bin("callrecd"), "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
                                     "--storage", storage_.string(), "--catalog", catalog_.string(),
                                     "--rtp-ports", std::to_string(rtp_lo) + "-" + std::to_string(rtp_hi),
                                     "--port-quarantine", "0"};
    for (auto& e : extra) argv.push_back(std::move(e));
    start(argv);
  }
  ~DaemonProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (reader_.joinable()) reader_.join();
  }
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  [[nodiscard]] bool ready() const { return control_port_ != 0; }
  [[nodiscard]] std::uint16_t control_port() const { return control_port_; }
  [[nodiscard]] std::uint16_t metrics_port() const { return metrics_port_; }
  [[nodiscard]] const fs::path& storage() const { return storage_; }
  [[nodiscard]] const fs::path& catalog() const { return catalog_; }
  [[nodiscard]] pid_t pid() const { return pid_; }

  std::string log() {
    std::lock_guard lk(mu_);
    return log_;
  }
  bool wait_log(const std::string& needle, std::chrono::milliseconds timeout = 10s) {
    return wait_until([&] { return log().find(needle) != std::string::npos; }, timeout);
  }
  /// Number of occurrences of needle in the log.
  std::size_t count_log(const std::string& needle) {
    const std::string l = log();
    std::size_t n = 0;
    for (auto p = l.find(needle); p != std::string::npos; p = l.find(needle, p + 1)) ++n;
    return n;
  }
  void signal(int sig) { ::kill(pid_, sig); }
  /// Waits for exit; returns the exit code (128+signal when killed), -1 on timeout.
  int wait_exit(std::chrono::seconds timeout = 30s) {
    int status = 0;
    const bool done = wait_until([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, timeout);
    if (!done) return -1;
    pid_ = -1;
    if (reader_.joinable()) reader_.join();
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  void start(const std::vector<std::string>& argv) {
    int err_pipe[2];
    if (::pipe2(err_pipe, O_CLOEXEC) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      if (nofile_ > 0) {
        const rlimit rl{nofile_, nofile_};
        if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) ::_exit(126);
      }
      ::dup2(err_pipe[1], 2);
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::close(err_pipe[1]);
    const int fd = err_pipe[0];
    reader_ = std::thread([this, fd] {
      char buf[4096];
      for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) break;
        std::lock_guard lk(mu_);
        log_.append(buf, static_cast<std::size_t>(n));
      }
      ::close(fd);
    });
    wait_until([&] { return log().find("ready:") != std::string::npos || log().find(" error: ") != std::string::npos; }, 20s);
    const std::string l = log();
    control_port_ = port_after(l, "control=");
    metrics_port_ = port_after(l, "metrics=");
  }
  static std::uint16_t port_after(const std::string& l, const std::string& key) {
    const auto r = l.find("ready:");
    if (r == std::string::npos) return 0;
    auto p = l.find(key, r);
    if (p == std::string::npos) return 0;
    const auto sp = l.find_first_of(" \n", p);
    const auto colon = l.rfind(':', sp);
    return static_cast<std::uint16_t>(std::stoi(l.substr(colon + 1, sp - colon - 1)));
  }

  rlim_t nofile_ = 0;
  pid_t pid_ = -1;
  std::thread reader_;
  std::mutex mu_;
  std::string log_;
  fs::path storage_, catalog_;
  std::uint16_t control_port_ = 0, metrics_port_ = 0, rtp_lo_ = 0;
  RtpRangeLock rtp_lock_;  ///< holds this daemon's RTP port range against other tests (none: given)
};

/// A TCP connection to 127.0.0.1:port; -1 when it cannot be made.
inline int connect_loopback(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

/// HTTP GET/POST against the daemon's operator interface; returns the body ("" on failure).
inline std::string http(std::uint16_t port, const std::string& method, const std::string& path, int* status = nullptr) {
  const int fd = connect_loopback(port);
  if (fd < 0) return {};
  const std::string req = method + " " + path + " HTTP/1.1\r\nHost: x\r\n\r\n";
  [[maybe_unused]] auto w = ::write(fd, req.data(), req.size());
  std::string resp;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    resp.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  if (status && resp.size() > 12) *status = std::stoi(resp.substr(9, 3));
  const auto body = resp.find("\r\n\r\n");
  return body == std::string::npos ? std::string() : resp.substr(body + 4);
}

/// Value of an unlabelled (or exactly labelled) Prometheus sample, -1 when absent.
/// The record files under storage, sorted by path.
inline std::vector<fs::path> record_files(const fs::path& storage) {
  std::vector<fs::path> out;
  if (!fs::exists(storage)) return out;
  for (auto& e : fs::recursive_directory_iterator(storage))
    if (e.is_regular_file() && e.path().extension() == ".rec") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

/// Every packet of a record file, in order.
inline std::vector<std::vector<std::byte>> read_packets(const fs::path& p) {
  fileio::RecordReader r;
  std::vector<std::vector<std::byte>> out;
  if (!r.open(p)) return out;
  while (auto pkt = r.next()) out.emplace_back(pkt->begin(), pkt->end());
  return out;
}

/// The catalog row of the recording with this call id (empty row when absent).
inline fileio::RecordingRow catalog_row(const fs::path& db, const std::string& call_id) {
  fileio::Catalog c;
  fileio::RecordingRow row;
  if (!c.open(db)) return row;
  std::vector<fileio::RecordingRow> rows;
  fileio::CatalogFilter f;
  f.call_id = call_id;
  if (c.list(f, rows) && !rows.empty()) row = rows.front();
  return row;
}

inline long long metric_value(const std::string& text, const std::string& name_and_labels) {
  std::size_t p = 0;
  while ((p = text.find(name_and_labels + " ", p)) != std::string::npos) {
    if (p == 0 || text[p - 1] == '\n') return std::stoll(text.substr(p + name_and_labels.size() + 1));
    ++p;
  }
  return -1;
}

/// A test phone: one TCP control connection and one UDP socket for RTP.
class Phone {
 public:
  explicit Phone(std::uint16_t control_port, const char* local_ip = "127.0.0.1") {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(control_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    udp_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in l{};
    l.sin_family = AF_INET;
    ::inet_pton(AF_INET, local_ip, &l.sin_addr);
    ::bind(udp_, reinterpret_cast<sockaddr*>(&l), sizeof l);
  }
  /// Adopts a control socket and a bound UDP socket made elsewhere (another network namespace);
  /// connect_control() connects the former.
  Phone(int control_fd, int udp_fd) : fd_(control_fd), udp_(udp_fd) {}
  ~Phone() {
    close_control();
    if (udp_ >= 0) ::close(udp_);
  }
  Phone(const Phone&) = delete;
  Phone& operator=(const Phone&) = delete;

  [[nodiscard]] bool connected() const { return connected_; }
  void send_raw(std::string_view s) {
    std::size_t off = 0;
    while (off < s.size()) {
      const ssize_t n = ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;
      off += static_cast<std::size_t>(n);
    }
  }
  /// Next message from the server, nullopt on timeout or closed connection.
  std::optional<control::Message> recv(std::chrono::milliseconds timeout = 5s) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (auto line = dec_.next()) {
        auto m = control::parse_message(*line);
        if (m) return *m;
        continue;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return std::nullopt;
      char buf[4096];
      const ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n <= 0) {
        closed_by_peer_ = true;
        return std::nullopt;
      }
      dec_.feed(std::string_view(buf, static_cast<std::size_t>(n)));
    }
  }
  /// True when the server closed the connection (read returns 0) within the timeout.
  bool wait_closed(std::chrono::milliseconds timeout = 5s) {
    while (!closed_by_peer_) {
      if (!recv(timeout) && !closed_by_peer_) return false;
    }
    return true;
  }
  std::optional<control::StartResponse> start(const std::string& id, const std::string& codec = "PCMA",
                                              const std::string& extra = "") {
    send_raw("cmd=RecordStartRequest&id=" + id + "&device=00:11:22:33:44:55&remote_number=100&remote_name=Alice" +
             "&local_number=200&local_name=Bob&dir=out&codec=" + codec + extra + "\r\n");
    auto m = recv();
    if (!m) return std::nullopt;
    auto r = control::parse_start_response(*m);
    if (!r) return std::nullopt;
    return *r;
  }
  std::optional<control::StopResponse> stop(const std::string& id, const std::string& extra = "") {
    send_raw("cmd=RecordStopRequest&id=" + id + extra + "\r\n");
    auto m = recv();
    if (!m) return std::nullopt;
    auto r = control::parse_stop_response(*m);
    if (!r) return std::nullopt;
    return *r;
  }
  void close_control() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  /// Sends one datagram to 127.0.0.1:port from this phone's UDP socket.
  void send_rtp(std::uint16_t port, std::span<const std::byte> pkt) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::sendto(udp_, pkt.data(), pkt.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof a);
  }

 protected:
  bool connect_control(const sockaddr_in& to) {
    connected_ = fd_ >= 0 && ::connect(fd_, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0;
    return connected_;
  }
  [[nodiscard]] int udp_fd() const { return udp_; }

 private:
  int fd_ = -1;
  int udp_ = -1;
  bool connected_ = false;
  bool closed_by_peer_ = false;
  control::FrameDecoder dec_;
};

/// n G.711 RTP packets (20 ms, 160 samples) of a sine, seq/ts consecutive from the given start.
inline std::vector<std::vector<std::byte>> make_rtp(std::size_t n, fileio::Codec codec, std::uint16_t seq0 = 1000,
                                                    std::uint32_t ts0 = 5000, std::uint32_t ssrc = 0x1234abcd,
                                                    double hz = 440.0) {
  std::vector<std::vector<std::byte>> out;
  const std::uint8_t pt = codec == fileio::Codec::kPcma ? 8 : 0;
  std::vector<std::int16_t> pcm(160);
  for (std::size_t k = 0; k < n; ++k) {
    for (std::size_t i = 0; i < 160; ++i) {
      const double t = static_cast<double>(k * 160 + i) / 8000.0;
      pcm[i] = static_cast<std::int16_t>(8000.0 * std::sin(2 * 3.141592653589793 * hz * t));
    }
    std::vector<std::byte> p(12 + 160);
    fileio::write_rtp_header(p.data(), pt, k == 0, static_cast<std::uint16_t>(seq0 + k),
                             static_cast<std::uint32_t>(ts0 + 160 * k), ssrc);
    fileio::g711_encode(codec, pcm, std::span<std::byte>(p).subspan(12));
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace callrec::e2e
