#pragma once
// Small helpers the benchmark programs share: option lists, /proc readings, pinning.
// Header-only (bench/CMakeLists.txt builds every *_bench.cpp as its own program).
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace callrec::bench {

/// "1000,10000" -> {1000, 10000}; strings are kept as they are.
template <typename T>
std::vector<T> parse_list(const std::string& s) {
  std::vector<T> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if constexpr (std::is_same_v<T, std::string>) {
      out.push_back(item);
    } else {
      out.push_back(static_cast<T>(std::stod(item)));
    }
  }
  return out;
}

/// The inverse of parse_list, for printing the command that reruns a benchmark.
template <typename T>
std::string join(const std::vector<T>& v) {
  std::ostringstream os;
  for (std::size_t i = 0; i < v.size(); ++i) os << (i != 0 ? "," : "") << v[i];
  return os.str();
}

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

/// On-CPU seconds of this process's threads whose name starts with `prefix`
/// (/proc/self/task/*/schedstat, ns resolution), whoever created them.
inline double threads_cpu_s(const std::string& prefix) {
  std::uint64_t ns = 0;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    std::string comm;
    std::getline(std::ifstream(task.path() / "comm"), comm);
    if (comm.rfind(prefix, 0) != 0) continue;
    std::uint64_t run_ns = 0;
    std::ifstream(task.path() / "schedstat") >> run_ns;
    ns += run_ns;
  }
  return static_cast<double>(ns) * 1e-9;
}

/// System-wide UDP RcvbufErrors (/proc/net/snmp): datagrams dropped at a full socket buffer;
/// -1 if unreadable.
inline long long udp_rcvbuf_errors() {
  std::ifstream f("/proc/net/snmp");
  std::string line;
  std::vector<std::string> header;
  while (std::getline(f, line)) {
    if (line.rfind("Udp: ", 0) != 0) continue;
    std::istringstream is(line.substr(5));
    std::vector<std::string> fields;
    std::string w;
    while (is >> w) fields.push_back(w);
    if (header.empty()) {
      header = fields;
      continue;
    }
    for (std::size_t i = 0; i < header.size() && i < fields.size(); ++i) {
      if (header[i] == "RcvbufErrors") return std::stoll(fields[i]);
    }
  }
  return -1;
}

/// Pins the calling thread to one CPU.
inline void pin_self(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

/// /proc/loadavg's one-minute figure.
inline double loadavg1() { return std::strtod(read_file("/proc/loadavg").c_str(), nullptr); }

/// dpdk-testpmd --forward-mode=rxonly on net_pcap replaying `pcap` from memory (infinite_rx=1),
/// lcores 0-1: the median of its per-second Rx-pps once forwarding (the I/O ceiling the
/// DPDK benchmarks compare against, same file, same run). mbufs must exceed the file's frames
/// (infinite_rx keeps it all in mbufs); mbuf_size: data room per mbuf (testpmd --mbuf-size).
/// busy_sibling: a spinning thread pinned to CPU 0 while testpmd's forwarding lcore polls on
/// CPU 1 (the situation of a pipeline whose consumer keeps CPU 0 busy). Prints its command
/// line. 0: it did not run.
inline double testpmd_rxonly_pps(const std::string& pcap, unsigned mbufs, unsigned mbuf_size, bool huge,
                                 unsigned seconds, bool busy_sibling, double& load) {
  using Clock = std::chrono::steady_clock;
  auto now = [] { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); };
  std::atomic<bool> spin_stop{false};
  std::thread spinner;
  if (busy_sibling) {
    spinner = std::thread([&] {
      pin_self(0);
      volatile std::uint64_t x = 0;
      while (!spin_stop.load(std::memory_order_relaxed)) x = x + 1;
    });
  }
  const unsigned mem_mb = static_cast<unsigned>(static_cast<double>(mbufs) * (mbuf_size + 256) / 1e6) + 512;
  std::vector<std::string> args = {"dpdk-testpmd", "--no-pci", "-l", "0-1", "--no-shconf",
                                   "--file-prefix=callrec-testpmd-" + std::to_string(::getpid()),
                                   "--vdev=net_pcap0,rx_pcap=" + pcap + ",infinite_rx=1"};
  if (huge) {
    args.insert(args.begin() + 1, {"--in-memory"});
  } else {
    args.insert(args.begin() + 1, {"--no-huge", "-m", std::to_string(mem_mb)});
  }
  args.insert(args.end(), {"--", "--forward-mode=rxonly", "--stats-period", "1",
                           "--total-num-mbufs=" + std::to_string(mbufs), "--mbuf-size=" + std::to_string(mbuf_size)});
  std::string shown;
  for (const auto& a : args) shown += a + " ";
  std::printf("  testpmd: %s\n", shown.c_str());
  int pfd[2];
  if (::pipe(pfd) != 0) return 0;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(pfd[1], 1);
    ::dup2(pfd[1], 2);
    ::close(pfd[0]);
    ::close(pfd[1]);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    _exit(127);
  }
  ::close(pfd[1]);
  std::FILE* in = ::fdopen(pfd[0], "r");
  std::vector<double> pps;
  char line[512];
  const double t0 = now();
  const double l0 = loadavg1();
  const auto wanted = static_cast<std::size_t>(seconds) + 2;
  while (std::fgets(line, sizeof line, in) != nullptr) {
    const char* p = std::strstr(line, "Rx-pps:");
    if (p != nullptr) {
      const double v = std::strtod(p + 7, nullptr);
      if (v > 0) pps.push_back(v);
      if (pps.size() >= wanted) break;
    }
    if (now() - t0 > 120) break;
  }
  load = (l0 + loadavg1()) / 2;
  ::kill(pid, SIGINT);
  while (std::fgets(line, sizeof line, in) != nullptr) {
  }
  std::fclose(in);
  int status = 0;
  ::waitpid(pid, &status, 0);
  spin_stop = true;
  if (spinner.joinable()) spinner.join();
  if (pps.size() < 3) return 0;
  pps.erase(pps.begin());  // the first period includes the start
  std::sort(pps.begin(), pps.end());
  return pps[pps.size() / 2];
}

}  // namespace callrec::bench
