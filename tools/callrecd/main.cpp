// callrecd: the call-recording daemon. Options: `callrecd --help`.
#include <cstdio>

#include "control/config.hpp"
#include "control/daemon.hpp"
#include "control/span/span_offline.hpp"

int main(int argc, char** argv) {
  using namespace callrec::control;
  DaemonConfig cfg;
  if (auto st = apply_flags(argc, argv, cfg); !st) {
    std::fprintf(stderr, "callrecd: %s\n(see callrecd --help)\n", st.message().c_str());
    return 2;
  }
  if (cfg.show_help) {
    std::fputs(usage("callrecd").c_str(), stdout);
    return 0;
  }
  if (cfg.show_version) {
    std::puts("callrecd 0.1.0");
    return 0;
  }
  if (auto st = validate(cfg); !st) {
    std::fprintf(stderr, "callrecd: %s\n", st.message().c_str());
    return 2;
  }
  if (!cfg.span_read.empty()) return span::run_span_read(cfg);
  Daemon d(std::move(cfg));
  return d.run();
}
