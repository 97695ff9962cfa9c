#include "job_process.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <vector>

#include "startup_signals.h"
#include "status_file.h"
#include "sys_util.h"

namespace cohort::launcher {

namespace {

// After the hard stop (SIGTERM to mpirun: it SIGTERMs then SIGKILLs its ranks ~1 s apart;
// to srun: it SIGKILLs the tasks), how long mpirun/srun get to exit before SIGKILL.
constexpr double kHardStopWaitS = 10;
// A rank has failed but mpirun/srun still runs after this long: stop the job ourselves.
// mpirun and srun --kill-on-bad-exit normally end it within ~2 s.
constexpr double kFailFastBackstopS = 5;
constexpr double kStatusPollS = 0.5;
// A stop that arrives while ranks are still starting is held until every rank's wrapper
// has announced itself (rank-R.started: from then on it takes the signal, and its program
// keeps it pending until its handlers are in place). Should the records never all appear
// (a node that cannot write the run directory), the stop goes out after this long anyway
// and is repeated every kResendS until they do.
constexpr double kHoldAtMostS = 10;
constexpr double kResendS = 5;

void noopHandler(int) {}

void say(const std::string& line) { fprintf(stderr, "cohort run: %s\n", line.c_str()); }

[[noreturn]] void execTool(const JobCommand& command) {
  // Own process group: a Ctrl-C on the terminal reaches only the launcher, which turns it
  // into the graceful SIGUSR1; mpirun would SIGKILL the ranks ~1 s after a SIGINT.
  setpgid(0, 0);
  // A background process group that reads the terminal is stopped by SIGTTIN, so the
  // terminal is not passed on; a pipe or file on stdin is.
  if (isatty(STDIN_FILENO)) {
    int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
  }
  for (const auto& [name, value] : command.setEnv) setenv(name.c_str(), value.c_str(), 1);
  restoreStartupMask();  // mpirun/srun get the signal mask `cohort` was started with
  std::vector<char*> argv;
  for (const std::string& word : command.argv) argv.push_back(const_cast<char*>(word.c_str()));
  argv.push_back(nullptr);
  execv(argv[0], argv.data());
  fprintf(stderr, "cohort run: cannot start %s: %s\n", argv[0], strerror(errno));
  _exit(127);
}

}  // namespace

sigset_t stopSignals() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGTERM, SIGINT, SIGUSR1, SIGCHLD}) sigaddset(&set, sig);
  struct sigaction old {};
  if (sigaction(SIGHUP, nullptr, &old) == 0 && old.sa_handler != SIG_IGN) sigaddset(&set, SIGHUP);
  // SIGCHLD must not be SIG_IGN (inherited), or the kernel reaps mpirun for us.
  struct sigaction sa {};
  sa.sa_handler = noopHandler;
  sigaction(SIGCHLD, &sa, nullptr);
  return set;
}

std::optional<int> waitForStopSignal(double seconds, const sigset_t& signals) {
  const double end = monotonicSeconds() + seconds;
  for (double now = monotonicSeconds(); now < end; now = monotonicSeconds()) {
    double left = end - now;
    timespec ts{static_cast<time_t>(left),
                static_cast<long>((left - static_cast<long>(left)) * 1e9)};
    int sig = sigtimedwait(&signals, nullptr, &ts);
    if (sig > 0 && sig != SIGCHLD) return sig;
  }
  return std::nullopt;
}

AttemptOutcome runAttempt(const JobCommand& command, const std::string& statusDir, int ranks,
                          double gracePeriodS, const sigset_t& signals) {
  AttemptOutcome out;
  const pid_t tool = fork();
  if (tool < 0) {
    say(std::string("fork failed: ") + strerror(errno));
    out.startFailed = true;
    return out;
  }
  if (tool == 0) execTool(command);
  setpgid(tool, tool);
  const std::string tool_name = command.argv[0].substr(command.argv[0].rfind('/') + 1);

  double grace_end = 0, kill_at = 0, next_poll = 0, failure_seen_at = 0;
  double stop_at = 0, next_send = 0;  // next_send > 0: the stop still has to reach a rank
  bool hard_stop = false, killed = false;
  auto allStarted = [&] { return countStartedRanks(statusDir) >= ranks; };
  auto hardStop = [&](double now) {
    hard_stop = true;
    kill_at = now + kHardStopWaitS;
    kill(tool, SIGTERM);
  };
  for (;;) {
    timespec tick{0, 100 * 1000 * 1000};
    const int sig = sigtimedwait(&signals, nullptr, &tick);
    const double now = monotonicSeconds();
    if (sig > 0 && sig != SIGCHLD) {
      if (!out.stopSignal) {
        out.stopSignal = sig;
        grace_end = now + gracePeriodS;
        stop_at = now;
        say("got " + signalName(sig) + ": asking every rank to stop (SIGUSR1 through " + tool_name +
            ", SIGTERM to each program); grace period " + formatSeconds(gracePeriodS) + " s");
        if (allStarted()) {
          kill(tool, SIGUSR1);
        } else {
          say("ranks are still starting (" + std::to_string(countStartedRanks(statusDir)) + " of " +
              std::to_string(ranks) + "): the stop goes out once every rank has started");
          next_send = now + kHoldAtMostS;
        }
      } else if (!hard_stop) {
        say("got " + signalName(sig) + " again: stopping the ranks now");
        out.secondSignal = true;
        hardStop(now);
      }
    }
    int status = 0;
    pid_t done = waitpid(tool, &status, WNOHANG);
    if (done == tool) {
      out.toolStatus = status;
      return out;
    }
    if (next_send > 0 && !hard_stop) {
      if (allStarted()) {
        kill(tool, SIGUSR1);
        next_send = 0;
        say("every rank has started: stop sent " + formatSeconds(now - stop_at) +
            " s after the signal");
      } else if (now >= next_send) {
        kill(tool, SIGUSR1);  // not every rank can be seen: send anyway, and again later
        next_send = now + kResendS;
      }
    }
    if (out.stopSignal && !hard_stop && now >= grace_end) {
      say("grace period of " + formatSeconds(gracePeriodS) +
          " s is over and ranks are still running: killing them");
      out.graceExpired = true;
      hardStop(now);
    }
    if (hard_stop && !killed && now >= kill_at) {
      say(tool_name + " did not exit " + formatSeconds(kHardStopWaitS) +
          " s after SIGTERM: sending SIGKILL");
      kill(-tool, SIGKILL);
      killed = true;
    }
    if (!out.stopSignal && !hard_stop && now >= next_poll) {
      next_poll = now + kStatusPollS;
      if (firstFailure(readRankStatuses(statusDir))) {
        if (failure_seen_at == 0) failure_seen_at = now;
        if (now - failure_seen_at >= kFailFastBackstopS) {
          say("a rank failed " + formatSeconds(kFailFastBackstopS) + " s ago and " + tool_name +
              " still runs: stopping the job");
          out.failFastBackstop = true;
          hardStop(now);
        }
      }
    }
  }
}

}  // namespace cohort::launcher
