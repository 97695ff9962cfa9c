#include "run_command.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "job_process.h"
#include "launch_plan.h"
#include "run_options.h"
#include "startup_signals.h"
#include "status_file.h"
#include "sys_util.h"

namespace cohort::launcher {

namespace {

constexpr int kExitUsage = 2;
constexpr int kExitLauncherFailed = 3;
constexpr int kExitGraceExpired = 124;
constexpr double kRestartDelayS = 1;

void say(const std::string& line) { fprintf(stderr, "cohort run: %s\n", line.c_str()); }

std::string plural(int n, const char* word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

std::string toolName(const LaunchPlan& plan) {
  return plan.backend == Backend::kSrun ? "srun" : "mpirun";
}

std::string describePlan(const LaunchPlan& plan) {
  const int most = *std::max_element(plan.ranksPerNode.begin(), plan.ranksPerNode.end());
  std::string s = plural(plan.np, "rank") + " on " +
                  plural(static_cast<int>(plan.ranksPerNode.size()), "node") + " (" +
                  layoutString(plan.ranksPerNode) + ") via " + toolName(plan) + ", " +
                  plural(plan.coresPerNode, "core") + " per node";
  if (plan.coresPerRank > 0) {
    s += ", each rank bound to " + plural(plan.coresPerRank, "core");
  } else if (plan.oversubscribe) {
    s += ", not bound (" + std::to_string(most) + " ranks > cores: oversubscribed)";
  } else if (plan.backend == Backend::kSrun) {
    s += ", binding as Slurm is configured";
  }
  return s;
}

std::string range(int n) { return n == 1 ? "0" : "0.." + std::to_string(n - 1); }

void printDryRun(const LaunchPlan& plan, const EnvMap& env, const JobCommand& cmd) {
  printf("cohort run: dry run: %s\n", describePlan(plan).c_str());
  printf("command:\n  %s\n", joinCommand(cmd.argv).c_str());
  printf("environment added for %s and every rank:\n", toolName(plan).c_str());
  for (const auto& [name, value] : cmd.setEnv) printf("  %s=%s\n", name.c_str(), value.c_str());
  const int most = *std::max_element(plan.ranksPerNode.begin(), plan.ranksPerNode.end());
  const int least = *std::min_element(plan.ranksPerNode.begin(), plan.ranksPerNode.end());
  const int nodes = static_cast<int>(plan.ranksPerNode.size());
  printf("set in each rank by cohort _rank-exec:\n");
  printf(
      "  RANK=%s WORLD_SIZE=%d NODE_RANK=%s GROUP_RANK=NODE_RANK LOCAL_RANK=%s "
      "LOCAL_WORLD_SIZE=%s\n",
      range(plan.np).c_str(), plan.np, range(nodes).c_str(), range(most).c_str(),
      most == least ? std::to_string(most).c_str()
                    : (layoutString(plan.ranksPerNode) + " (by node)").c_str());
  const bool bound = plan.coresPerRank > 0;
  const int threads = threadsPerRank(bound ? plan.coresPerRank : plan.coresPerNode, most, bound);
  for (const char* name : {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"}) {
    if (auto user = lookup(env, name)) {
      printf("  %s=%s (set by the user; kept)\n", name, user->c_str());
    } else {
      printf("  %s=%d (%s)\n", name, threads,
             bound ? "the cores bound to each rank"
             : plan.backend == Backend::kSrun
                 ? "cores of the node / ranks on the node, or the cores Slurm binds a task to"
                 : "cores of the node / ranks on the node");
    }
  }
}

std::string tempDir(const EnvMap& env) {
  auto tmp = lookup(env, "TMPDIR");
  return tmp && !tmp->empty() ? *tmp : "/tmp";
}

// Where the rank status records go unless --run-dir says: on one node a temp dir; across
// nodes the working directory, which on a cluster is normally the shared filesystem every
// node can write (a node-local /tmp would hide the other nodes' records).
std::string runDirTemplate(const LaunchPlan& plan, const EnvMap& env) {
  if (plan.ranksPerNode.size() > 1) {
    char cwd[4096];
    if (getcwd(cwd, sizeof(cwd)) != nullptr) return std::string(cwd) + "/.cohort-run-XXXXXX";
  }
  return tempDir(env) + "/cohort-run-XXXXXX";
}

bool makeDir(const std::string& dir) {
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos == dir.size() || dir[pos] == '/') {
      if (mkdir(dir.substr(0, pos).c_str(), 0755) != 0 && errno != EEXIST) return false;
    }
  }
  struct stat st;
  return stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Removes the rank records (and the directory when REMOVE_DIR) of one attempt directory.
void clearStatusDir(const std::string& dir, bool remove_dir) {
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (strncmp(e->d_name, "rank-", 5) == 0) unlink((dir + "/" + e->d_name).c_str());
    }
    closedir(d);
  }
  if (remove_dir) rmdir(dir.c_str());
}

struct AttemptResult {
  int code = 0;
  int started = 0;          // ranks whose wrapper started
  bool stopped = false;     // a stop signal ended this attempt: never restart
  bool rankFailed = false;  // some rank recorded a non-zero exit
};

int waitStatusCode(int status) {
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WIFEXITED(status) ? WEXITSTATUS(status) : kExitLauncherFailed;
}

// Turns the outcome and the rank records into the exit code and the report lines.
AttemptResult judge(const AttemptOutcome& out, const LaunchPlan& plan, const std::string& dir,
                    double gracePeriodS) {
  AttemptResult r;
  r.stopped = out.stopSignal.has_value();
  if (out.startFailed) {
    r.code = kExitLauncherFailed;
    return r;
  }
  const std::vector<RankStatus> statuses = readRankStatuses(dir);
  r.started = countStartedRanks(dir);
  const int tool_code = waitStatusCode(out.toolStatus);
  const auto first = firstFailure(statuses);
  const bool all_clean = !first && static_cast<int>(statuses.size()) == plan.np;
  r.rankFailed = first.has_value();
  if (first) {
    say("rank " + std::to_string(first->rank) + " (" + first->host +
        ") failed first: " + describeOutcome(*first) +
        (first->received.empty() ? "" : " after it was sent " + first->received));
  }
  if (out.graceExpired) {
    r.code = kExitGraceExpired;
    say("ranks were killed at the end of the " + formatSeconds(gracePeriodS) +
        " s grace period; exit " + std::to_string(kExitGraceExpired));
  } else if (out.secondSignal) {
    r.code = 128 + *out.stopSignal;
  } else if (first) {
    r.code = shellExitCode(*first);
  } else if (all_clean || tool_code == 0) {
    r.code = 0;
    if (r.stopped) {
      say("stopped by " + signalName(*out.stopSignal) + "; all " + plural(plan.np, "rank") +
          " exited 0");
    }
  } else {
    r.code = tool_code;
    say(toolName(plan) + " exited with " +
        (WIFSIGNALED(out.toolStatus) ? signalName(WTERMSIG(out.toolStatus))
                                     : "code " + std::to_string(tool_code)) +
        " and no rank reported a failure (" + std::to_string(r.started) + " of " +
        std::to_string(plan.np) + " ranks started)");
  }
  return r;
}

// Nodes none of whose ranks left an exit record although ranks elsewhere did: the host went
// away with its ranks (power, kernel, network), so nothing there could report: a lost host.
// Indices into plan.ranksPerNode.
std::vector<int> silentNodes(const LaunchPlan& plan, const std::string& dir) {
  const std::vector<RankStatus> statuses = readRankStatuses(dir);
  std::vector<int> silent;
  int first = 0;
  for (int n = 0; n < static_cast<int>(plan.ranksPerNode.size()); ++n) {
    const int end = first + plan.ranksPerNode[static_cast<std::size_t>(n)];
    if (std::none_of(statuses.begin(), statuses.end(),
                     [&](const RankStatus& s) { return s.rank >= first && s.rank < end; }))
      silent.push_back(n);
    first = end;
  }
  if (silent.size() == plan.ranksPerNode.size()) silent.clear();
  return silent;
}

// The restart's plan after a failed attempt, and what changed (for the restart line).
// --min-np lets a smaller world help in two cases: a launch failure (no rank failed, yet
// not every rank started: a node that cannot be reached) drops the last node; a lost host
// (ranks failed, and every rank of some node vanished without an exit record) drops those
// nodes. Otherwise the job relaunches at the same size.
std::pair<LaunchPlan, std::string> restartPlan(const LaunchPlan& plan, const RunOptions& opts,
                                               const AttemptResult& result,
                                               const std::string& dir) {
  if (!opts.minNp || plan.ranksPerNode.size() <= 1) return {plan, ""};
  const std::string minNp = "--min-np " + std::to_string(*opts.minNp);
  if (!result.rankFailed && result.started < plan.np && dropLastNode(plan).np >= *opts.minNp) {
    return {dropLastNode(plan), " with one node less (not every rank started; " + minNp + ")"};
  }
  const std::vector<int> silent = result.rankFailed ? silentNodes(plan, dir) : std::vector<int>{};
  if (silent.empty() || dropNodes(plan, silent).np < *opts.minNp) return {plan, ""};
  std::string names;
  for (int n : silent) {
    names += (names.empty() ? "" : ", ") +
             (plan.hosts.empty() ? "node " + std::to_string(n) : plan.hosts[static_cast<std::size_t>(n)]);
  }
  return {dropNodes(plan, silent), " without " + names +
                                       " (no rank there left an exit record: host lost; " + minNp +
                                       ")"};
}

int supervise(LaunchPlan plan, const RunOptions& opts, const EnvMap& env, const std::string& self,
              const sigset_t& signals) {
  const bool own_dir = opts.runDir.empty();
  std::string run_dir = opts.runDir;
  if (own_dir) {
    auto makeTemp = [](std::string templ) -> std::optional<std::string> {
      if (mkdtemp(templ.data()) == nullptr) return std::nullopt;
      return templ;
    };
    std::optional<std::string> made = makeTemp(runDirTemplate(plan, env));
    if (!made && plan.ranksPerNode.size() > 1) {
      made = makeTemp(tempDir(env) + "/cohort-run-XXXXXX");  // cwd not writable
    }
    if (!made) {
      say("cannot create a run directory (" + runDirTemplate(plan, env) + "): " + strerror(errno) +
          "; pass --run-dir DIR");
      return kExitLauncherFailed;
    }
    run_dir = *made;
  }
  int code = 0;
  std::vector<std::string> dirs;
  for (int attempt = 0;; ++attempt) {
    const std::string dir = run_dir + "/attempt-" + std::to_string(attempt);
    if (!makeDir(dir)) {
      say("cannot create " + dir + ": " + strerror(errno));
      code = kExitLauncherFailed;
      break;
    }
    clearStatusDir(dir, false);  // records left by an earlier run in a reused --run-dir
    dirs.push_back(dir);
    JobCommand cmd = buildCommand(plan, opts, env, self, dir, attempt);
    const AttemptOutcome out = runAttempt(cmd, dir, plan.np, opts.gracePeriodS, signals);
    const AttemptResult result = judge(out, plan, dir, opts.gracePeriodS);
    code = result.code;
    if (code == 0 || result.stopped || attempt >= opts.maxRestarts) break;

    // A launch failure (no rank failed, yet not every rank started: a node that cannot be
    // reached) is the one case where a smaller world can help; a failing rank is relaunched
    // at the same size so it resumes with the same global batch.
    std::string change;
    std::tie(plan, change) = restartPlan(plan, opts, result, dir);
    if (plan.launchedNp > 0 && plan.launchedNp != plan.np && !change.empty()) {
      change += "; the global batch of " + std::to_string(plan.launchedNp) +
                " ranks stays (COHORT_ELASTIC_WORLD_SIZE)";
    }
    say("restarting the job (restart " + std::to_string(attempt + 1) + " of " +
        std::to_string(opts.maxRestarts) + ") as " + plural(plan.np, "rank") + change);
    if (auto sig = waitForStopSignal(kRestartDelayS, signals)) {
      say("got " + signalName(*sig) + " before the restart: not restarting");
      break;
    }
  }
  if (own_dir) {
    for (const std::string& dir : dirs) clearStatusDir(dir, true);
    rmdir(run_dir.c_str());
  }
  return code;
}

}  // namespace

int runRunCommand(int argc, char** argv) {
  // The stop signals have been blocked since the first instruction (startup_signals.h):
  // one that arrived meanwhile is still pending and becomes a graceful stop.
  const sigset_t signals = stopSignals();
  settleStartupMask(signals);
  try {
    const RunOptions opts = parseRunOptions(std::vector<std::string>(argv + 1, argv + argc));
    if (opts.help) {
      fputs(runUsage(), stdout);
      return 0;
    }
    const EnvMap env = environmentSnapshot();
    LaunchPlan plan = makePlan(opts, env);
    plan.consoleIsTerminal = isatty(STDOUT_FILENO) == 1;
    const std::string self = selfExecutable();
    if (opts.dryRun) {
      const std::string dir =
          (opts.runDir.empty() ? runDirTemplate(plan, env) : opts.runDir) + "/attempt-0";
      printDryRun(plan, env, buildCommand(plan, opts, env, self, dir, 0));
      return 0;
    }
    // Check what can be checked before starting anything (e.g. -x NAME not set).
    buildCommand(plan, opts, env, self, "", 0);
    return supervise(plan, opts, env, self, signals);
  } catch (const UsageError& e) {
    fprintf(stderr, "cohort run: %s\n", e.what());
    return kExitUsage;
  }
}

}  // namespace cohort::launcher
