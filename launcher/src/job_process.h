#pragma once
// Runs one attempt of a job: mpirun or srun as a child in its own process group, with the
// launcher's stop signals turned into a graceful stop (SIGUSR1 through mpirun/srun, which
// both forward it to every rank without killing them), a grace period, then a hard stop.
// Single-threaded; the caller blocks the stop signals before anything else (see
// stopSignals()) so that none is lost or fatal while the launcher starts.

#include <signal.h>

#include <optional>
#include <string>

#include "launch_plan.h"

namespace cohort::launcher {

// SIGTERM, SIGINT, SIGUSR1 and SIGHUP (unless SIGHUP was inherited as ignored, as under
// nohup), plus SIGCHLD. Blocked for the whole run and taken with sigtimedwait.
sigset_t stopSignals();

struct AttemptOutcome {
  int toolStatus = 0;             // waitpid status of mpirun/srun
  std::optional<int> stopSignal;  // the first stop signal the launcher received
  bool graceExpired = false;      // ranks outlived --grace-period and were killed
  bool secondSignal = false;      // a second stop signal cut the grace period short
  bool failFastBackstop = false;  // a rank failed and the launcher had to stop the job
  bool startFailed = false;       // fork/exec of the tool failed (message printed)
};

// Starts COMMAND, supervises it until it exits and returns what happened. Rank status
// records are read from STATUS_DIR while it runs (fail-fast backstop), and a stop signal
// that arrives before all RANKS have announced themselves there (rank-R.started) is held
// until they have, so that no rank misses it (see kHoldAtMostS).
AttemptOutcome runAttempt(const JobCommand& command, const std::string& statusDir, int ranks,
                          double gracePeriodS, const sigset_t& signals);

// Waits up to SECONDS for a stop signal; returns it, or nullopt when the time passed.
std::optional<int> waitForStopSignal(double seconds, const sigset_t& signals);

}  // namespace cohort::launcher
