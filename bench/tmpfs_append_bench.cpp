// The kernel's share of the writer's cost: appends to many files round-robin, as the writer
// does (one write per stream buffer), with nothing else in the loop. It answers "how much of
// the per-packet budget does the file system alone take on this machine?", which bounds the
// end-to-end figures of dpdk_pipeline_bench (bench/RESULTS-dpdk.md).
//
//   build-bench/bench/tmpfs_append_bench [--files 1000] [--chunk 8084] [--file-mb 1]
//                                        [--dir /dev/shm/callrec-append] [--mode append|overwrite|fallocate]
//
// append     every write extends its file: the file system allocates the pages (what a recorder does)
// overwrite  the files are written once untimed, then rewritten timed: no page allocation
// fallocate  append, but each file is first extended with fallocate(FALLOC_FL_KEEP_SIZE) by
//            1 MiB at a time, to see whether allocating pages in bulk is cheaper
//
// Prints CPU ns per 172-byte packet (a G.711 20 ms RTP packet as the writer stores it) and per
// 4 KiB page, and the command to rerun.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <string>
#include <vector>

namespace {

double thread_cpu_s() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}

void usage() {
  std::printf(
      "usage: tmpfs_append_bench [--files 1000] [--chunk 8084] [--file-mb 1] [--dir /dev/shm/callrec-append]\n"
      "                          [--mode append|overwrite|fallocate]\n");
}

}  // namespace

int main(int argc, char** argv) {
  unsigned files = 1000;
  std::size_t chunk = 8084;  // 47 packets of 172 B: the writer's default 8 KiB buffer
  std::size_t file_bytes = 1u << 20;
  std::string dir = "/dev/shm/callrec-append";
  std::string mode = "append";
  std::string cmdline;
  for (int i = 0; i < argc; ++i) cmdline += std::string(i != 0 ? " " : "") + argv[i];
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) {
      usage();
      return k == "--help" ? 0 : 2;
    }
    const char* v = argv[++i];
    if (k == "--files") {
      files = static_cast<unsigned>(std::strtoul(v, nullptr, 10));
    } else if (k == "--chunk") {
      chunk = std::strtoul(v, nullptr, 10);
    } else if (k == "--file-mb") {
      file_bytes = std::strtoul(v, nullptr, 10) << 20;
    } else if (k == "--dir") {
      dir = v;
    } else if (k == "--mode") {
      mode = v;
    } else {
      usage();
      return 2;
    }
  }
  if (files == 0 || chunk == 0 || file_bytes < chunk || (mode != "append" && mode != "overwrite" && mode != "fallocate")) {
    usage();
    return 2;
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  std::vector<int> fds(files, -1);
  for (unsigned i = 0; i < files; ++i) {
    const std::string p = dir + "/f" + std::to_string(i);
    fds[i] = ::open(p.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
    if (fds[i] < 0) {
      std::perror(p.c_str());
      return 1;
    }
  }
  const std::vector<char> buf(chunk, 'x');
  const std::size_t rounds = file_bytes / chunk;
  auto pass = [&](bool prealloc) -> bool {
    std::vector<std::size_t> allocated(files, 0);
    for (std::size_t r = 0; r < rounds; ++r) {
      const auto off = static_cast<off_t>(r * chunk);
      for (unsigned i = 0; i < files; ++i) {
        if (prealloc && r * chunk + chunk > allocated[i]) {
          if (::fallocate(fds[i], FALLOC_FL_KEEP_SIZE, static_cast<off_t>(allocated[i]), 1 << 20) != 0) {
            std::perror("fallocate");
            return false;
          }
          allocated[i] += 1 << 20;
        }
        if (::pwrite(fds[i], buf.data(), chunk, off) != static_cast<ssize_t>(chunk)) {
          std::perror("pwrite");
          return false;
        }
      }
    }
    return true;
  };
  if (mode == "overwrite" && !pass(false)) return 1;
  const double c0 = thread_cpu_s();
  if (!pass(mode == "fallocate")) return 1;
  const double cpu = thread_cpu_s() - c0;
  const double bytes = static_cast<double>(rounds * chunk) * files;
  std::printf("tmpfs_append_bench: %s, %u files x %zu B writes, %.0f MB in %s: %.0f ns CPU per 172-byte packet, "
              "%.2f us per 4 KiB page, %.0f MB/s of one CPU\n",
              mode.c_str(), files, chunk, bytes / 1e6, dir.c_str(), cpu * 1e9 / (bytes / 172.0),
              cpu * 1e6 / (bytes / 4096.0), bytes / cpu / 1e6);
  for (unsigned i = 0; i < files; ++i) {
    ::close(fds[i]);
    ::unlink((dir + "/f" + std::to_string(i)).c_str());
  }
  std::printf("rerun: %s\n", cmdline.c_str());
  return 0;
}
