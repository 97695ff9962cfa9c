// Preemption signals for the JIT checkpoint (enable_jit_checkpoint). The handler only
// records the first signal (number, times, what the rank was doing) in lock-free atomics;
// everything else happens in the training thread, which polls stopRequested() at points
// where all ranks agree on it (the per-step StepStats all-reduce, between eval batches).
// Saving inside a handler hangs and corrupts checkpoints (Lightning #21406); we never do.
#pragma once

#include <string>
#include <vector>

namespace cohort::trainer {

// What the training thread is doing; recorded with the signal for the log.
enum class TrainingPhase { kIdle = 0, kData, kCompute, kEval, kSave };
const char* phaseName(TrainingPhase phase);
// Called by the Trainer at phase boundaries (async-signal-safe to read).
void setTrainingPhase(TrainingPhase phase);

// Installs handlers for `signals` (numbers) for its lifetime and restores the previous ones
// on destruction. One at a time per process (ConfigError otherwise). Thread-safe queries.
class PreemptionWatcher {
 public:
  PreemptionWatcher(const std::vector<int>& signals, double killWaitSeconds);
  ~PreemptionWatcher();
  PreemptionWatcher(const PreemptionWatcher&) = delete;
  PreemptionWatcher& operator=(const PreemptionWatcher&) = delete;

  // A signal arrived on this rank (any time).
  bool signalled() const;
  // A signal arrived and killWaitSeconds have passed since the FIRST one (later signals do
  // not restart the wait).
  bool stopRequested() const;
  int signalNumber() const;       // 0 when none
  double signalWallTime() const;  // seconds since the epoch (CLOCK_REALTIME) of the first
  TrainingPhase phaseAtSignal() const;
  // Tests: behave as if `sig` had been delivered now.
  void simulateSignal(int sig);

 private:
  std::vector<int> signals_;
  double killWait_;
};

// A preemption can come while the program is still starting (loading LibTorch, MPI_Init):
// call installEarlyPreemptionHandlers() first thing in main() so that SIGTERM/SIGUSR1 are
// recorded, not fatal. It also unblocks them: `cohort run` starts programs with them
// blocked, so that one sent before the handlers exist stays pending (a PreemptionWatcher
// unblocks its signals too). examples/example_main.cc installs them from .preinit_array,
// before any library initialiser runs. A Trainer with enable_jit_checkpoint then takes them over and acts on
// a signal that already arrived; without JIT, releaseEarlyPreemptionHandlers() restores the
// default actions and re-raises a signal that arrived meanwhile (the program dies of it as
// it would have). examples/example_main.cc shows the pattern.
void installEarlyPreemptionHandlers();
void releaseEarlyPreemptionHandlers();

// "SIGTERM"/"TERM"/"term" -> SIGTERM, for TERM INT HUP USR1 USR2; ConfigError otherwise.
int signalFromName(const std::string& name);
std::string signalName(int sig);

}  // namespace cohort::trainer
