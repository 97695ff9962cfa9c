// The preemption signal watcher: handlers only record, kill_wait counts from the FIRST signal,
// the configured signal set is honoured, early handlers keep or re-raise a start-up signal.
#include "cohort/trainer/preemption.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "cohort/dist/error.h"

namespace cohort::test {
namespace {

using namespace cohort::trainer;
using namespace std::chrono_literals;

TEST(UnitPreemption, KillWaitCountsFromTheFirstSignal) {
  constexpr double kKillWait = 1.0;
  PreemptionWatcher w({SIGUSR2}, kKillWait);
  EXPECT_FALSE(w.signalled());
  setTrainingPhase(TrainingPhase::kEval);
  const auto first = std::chrono::steady_clock::now();
  ::raise(SIGUSR2);  // delivered to this thread before raise returns; the process survives
  setTrainingPhase(TrainingPhase::kIdle);
  EXPECT_TRUE(w.signalled());
  EXPECT_EQ(w.signalNumber(), SIGUSR2);
  EXPECT_EQ(w.phaseAtSignal(), TrainingPhase::kEval);
  const bool stopped = w.stopRequested();
  // Within kill_wait it must not stop yet; a machine busy enough to stall this thread for
  // the whole kill_wait cannot tell, so the check only counts when the clock says so.
  if (std::chrono::duration<double>(std::chrono::steady_clock::now() - first).count() <
      kKillWait) {
    EXPECT_FALSE(stopped) << "stop requested before kill_wait ran out";
  }
  std::this_thread::sleep_for(600ms);
  ::raise(SIGUSR2);  // a second signal does not restart the wait
  std::this_thread::sleep_for(500ms);  // past kill_wait from the first, not from the second
  EXPECT_TRUE(w.stopRequested());
}

TEST(UnitPreemption, OnlyTheConfiguredSignalsAndHandlersRestored) {
  {
    PreemptionWatcher w({SIGHUP}, 0.0);
    EXPECT_THROW(PreemptionWatcher({SIGHUP}, 0.0), ConfigError);  // one at a time
    ::raise(SIGHUP);
    EXPECT_TRUE(w.stopRequested());
  }
  // The previous (default) action is back: a child dies of SIGHUP.
  const pid_t pid = fork();
  if (pid == 0) {
    ::raise(SIGHUP);
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGHUP);
}

TEST(UnitPreemption, SignalNames) {
  EXPECT_EQ(signalFromName("SIGTERM"), SIGTERM);
  EXPECT_EQ(signalFromName("usr1"), SIGUSR1);
  EXPECT_EQ(signalName(SIGUSR2), "SIGUSR2");
  EXPECT_THROW(signalFromName("SIGKILL"), ConfigError);  // cannot be caught: refuse it
}

// Early handlers: a start-up SIGTERM is kept for a JIT Trainer, and re-raised without JIT.
TEST(UnitPreemption, EarlyHandlersKeepOrReRaise) {
  pid_t pid = fork();
  if (pid == 0) {
    installEarlyPreemptionHandlers();
    ::raise(SIGTERM);
    PreemptionWatcher w({SIGTERM}, 0.0);
    _exit(w.stopRequested() ? 0 : 3);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  pid = fork();
  if (pid == 0) {
    installEarlyPreemptionHandlers();
    ::raise(SIGTERM);
    releaseEarlyPreemptionHandlers();  // JIT off: the signal takes its default effect now
    _exit(0);
  }
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM) << status;
}

}  // namespace
}  // namespace cohort::test
