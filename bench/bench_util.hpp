#pragma once
// Small helpers the benchmark programs share: option lists, /proc readings, pinning.
// Header-only (bench/CMakeLists.txt builds every *_bench.cpp as its own program).
#include <pthread.h>
#include <sched.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
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

}  // namespace callrec::bench
