#pragma once
// callrecd: the whole appliance wired together on one control thread.
//
//   catalog (recovery first) -> writer pool -> packet source (kernel sockets | DPDK)
//   -> port allocator -> session manager -> ingest paths (phone upload TCP server)
//   -> operator interface (HTTP: /metrics, /status, /stop)
//
// SIGTERM/SIGINT: every recording is stopped with reason "shutdown" (phones get a
// RecordStopRequest), files and catalog are finalized, exit 0.
#include <atomic>
#include <memory>
#include <filesystem>
#include <string>

#include "control/config.hpp"
#include "control/session_manager.hpp"
#include "control/span/call_tracker.hpp"

namespace callrec::control {

/// One daemon per storage and catalog: an OFD lock on `path` holding our pid. EBUSY (naming
/// the other pid) when another process holds it. fd stays open for the process's life.
Status acquire_instance_lock(const std::filesystem::path& path, int& fd);

/// The session manager's settings from the daemon's (shared by the daemon and --span-read).
SessionConfig session_config(const DaemonConfig& cfg);
/// Passive capture's call-tracker settings from the daemon's.
span::TrackerOptions tracker_options(const DaemonConfig& cfg);

class Daemon {
 public:
  explicit Daemon(DaemonConfig cfg);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  /// Runs until SIGTERM/SIGINT (or request_stop()). Returns the process exit code.
  int run();
  /// Thread-safe.
  void request_stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace callrec::control
