#pragma once
// `callrecd --span-read FILE...`: passive capture of capture files. The same lane, tracker,
// session manager, writers and catalog as a live mirror, driven by packet time: every call in
// the files is recorded (both directions), calls still open at the end of the input are closed
// with stop reason capture_end, a one-screen summary is printed, and the exit code is 0 (1 when
// no file could be read, or when calls were not recorded or cut short: no space, write errors,
// the storage removed; 2 for a configuration error).
#include <cstdio>

#include "control/config.hpp"

namespace callrec::control::span {

int run_span_read(const DaemonConfig& cfg, std::FILE* summary = stdout);

}  // namespace callrec::control::span
