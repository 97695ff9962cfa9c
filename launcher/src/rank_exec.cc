#include "rank_exec.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "launch_plan.h"
#include "rank_output.h"
#include "startup_signals.h"
#include "status_file.h"
#include "sys_util.h"

namespace cohort::launcher {

namespace {

struct RankInfo {
  int rank = 0, worldSize = 1, localRank = 0, localWorldSize = 1, nodeRank = 0;
};

std::optional<int> envInt(const EnvMap& env, const char* name) {
  auto v = lookup(env, name);
  if (!v) return std::nullopt;
  auto n = parseInteger(*v, 0, 1 << 24);
  if (!n) return std::nullopt;
  return static_cast<int>(*n);
}

// Open MPI 4.1 sets OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE} but no node index
// (its NODE_RANK is the rank within the node), so the node comes from the layout the
// launcher planned: mpirun fills node 0 first with our --map-by slot / ppr.
std::optional<RankInfo> fromOpenMpi(const EnvMap& env) {
  auto rank = envInt(env, "OMPI_COMM_WORLD_RANK");
  auto size = envInt(env, "OMPI_COMM_WORLD_SIZE");
  if (!rank || !size) return std::nullopt;
  RankInfo info;
  info.rank = *rank;
  info.worldSize = *size;
  info.localRank = envInt(env, "OMPI_COMM_WORLD_LOCAL_RANK").value_or(0);
  info.localWorldSize = envInt(env, "OMPI_COMM_WORLD_LOCAL_SIZE").value_or(1);
  info.nodeRank = info.rank / std::max(1, info.localWorldSize);  // uniform nodes
  std::vector<int> layout = expandCounts(lookup(env, kEnvNodeLayout).value_or(""));
  int first = 0;
  for (size_t node = 0; node < layout.size(); first += layout[node], ++node) {
    if (info.rank < first + layout[node]) {
      // Trust the layout only when mpirun placed us where it says.
      if (layout[node] == info.localWorldSize && info.rank - first == info.localRank) {
        info.nodeRank = static_cast<int>(node);
      }
      break;
    }
  }
  return info;
}

std::optional<RankInfo> fromSlurm(const EnvMap& env) {
  auto rank = envInt(env, "SLURM_PROCID");
  auto size = envInt(env, "SLURM_NTASKS");
  if (!size) size = envInt(env, "SLURM_NPROCS");
  if (!rank || !size) return std::nullopt;
  RankInfo info;
  info.rank = *rank;
  info.worldSize = *size;
  info.localRank = envInt(env, "SLURM_LOCALID").value_or(0);
  info.nodeRank = envInt(env, "SLURM_NODEID").value_or(0);
  auto per_node_text = lookup(env, "SLURM_STEP_TASKS_PER_NODE");
  if (!per_node_text) per_node_text = lookup(env, "SLURM_TASKS_PER_NODE");
  std::vector<int> per_node = expandCounts(per_node_text.value_or(""));
  if (info.nodeRank < static_cast<int>(per_node.size())) {
    info.localWorldSize = per_node[static_cast<size_t>(info.nodeRank)];
  } else {
    info.localWorldSize = info.worldSize;
  }
  return info;
}

void setDefault(const char* name, const std::string& value) { setenv(name, value.c_str(), 0); }
void setAlways(const char* name, int value) { setenv(name, std::to_string(value).c_str(), 1); }

bool boundBySlurm(const EnvMap& env) {
  auto type = lookup(env, "SLURM_CPU_BIND_TYPE");
  return type && !type->empty() && type->rfind("none", 0) != 0;
}

bool isDirectory(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void noopHandler(int) {}

[[noreturn]] void exitLike(const RankStatus& status) {
  if (!status.killedBySignal) exit(status.value);
  // Die of the same signal so mpirun/srun report it, but without dumping a core of this
  // wrapper (the program already dumped its own if it was going to).
  rlimit no_core{0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  signal(status.value, SIG_DFL);
  sigset_t only;
  sigemptyset(&only);
  sigaddset(&only, status.value);
  sigprocmask(SIG_UNBLOCK, &only, nullptr);
  raise(status.value);
  _exit(128 + status.value);
}

// Ranks other than 0 get their output relayed as whole "[rank r]" lines (rank_output.h).
RankOutputMode outputModeFor(const EnvMap& env, int rank) {
  if (rank == 0) return RankOutputMode::kDirect;
  auto mode = parseRankOutputMode(lookup(env, kEnvRankOutput).value_or(""));
  return mode.value_or(RankOutputMode::kDirect);  // not set: started by hand, no relaying
}

struct Plumbing {
  int childOut = -1, childErr = -1;  // the program's ends; -1: inherit the wrapper's
  std::vector<std::unique_ptr<LineRelay>> relays;
  void closeChildEnds() {
    for (int* fd : {&childOut, &childErr}) {
      if (*fd >= 0) close(*fd);
      *fd = -1;
    }
  }
};

// A pty for stdout when the wrapper's stdout is a terminal (mpirun hands ranks one), so
// the program's stdio stays line-buffered as it would be without us; else a pipe.
bool outputChannel(bool usePty, int* ours, int* theirs) {
  if (usePty) {
    int master = -1, slave = -1;
    if (openpty(&master, &slave, nullptr, nullptr, nullptr) == 0) {
      termios raw{};
      if (tcgetattr(slave, &raw) == 0) {
        cfmakeraw(&raw);  // no "\n" -> "\r\n", no echo
        tcsetattr(slave, TCSANOW, &raw);
      }
      fcntl(master, F_SETFD, FD_CLOEXEC);
      fcntl(slave, F_SETFD, FD_CLOEXEC);
      *ours = master;
      *theirs = slave;
      return true;
    }
  }
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return false;
  *ours = fds[0];
  *theirs = fds[1];
  return true;
}

Plumbing plumbOutput(RankOutputMode mode, int rank) {
  Plumbing p;
  if (mode == RankOutputMode::kDirect) return p;
  const std::string prefix = "[rank " + std::to_string(rank) + "] ";
  const bool hold = mode == RankOutputMode::kOnError;
  int ours = -1;
  if (outputChannel(isatty(STDOUT_FILENO) == 1, &ours, &p.childOut)) {
    p.relays.push_back(std::make_unique<LineRelay>(ours, STDOUT_FILENO, prefix, hold));
  }
  if (outputChannel(false, &ours, &p.childErr)) {
    p.relays.push_back(std::make_unique<LineRelay>(ours, STDERR_FILENO, prefix, hold));
  }
  return p;
}

// Forwards signals to the program and relays its output until it exits. False when
// waiting failed (message printed).
bool superviseProgram(pid_t child, const sigset_t& waited,
                      std::vector<std::unique_ptr<LineRelay>>& relays, RankStatus* status,
                      int* waitStatus) {
  const int sfd = signalfd(-1, &waited, SFD_CLOEXEC | SFD_NONBLOCK);
  for (;;) {
    std::vector<pollfd> fds;
    if (sfd >= 0) fds.push_back({sfd, POLLIN, 0});
    for (auto& r : relays) {
      if (r->open()) fds.push_back({r->fd(), POLLIN, 0});
    }
    poll(fds.data(), fds.size(), sfd >= 0 ? 1000 : 100);
    for (auto& r : relays) {
      for (const pollfd& p : fds) {
        if (r->open() && p.fd == r->fd() && (p.revents & (POLLIN | POLLHUP | POLLERR))) r->pump();
      }
    }
    timespec now{0, 0};
    for (int sig; (sig = sigtimedwait(&waited, nullptr, &now)) > 0;) {
      if (sig == SIGCHLD) continue;
      // SIGUSR1 is how `cohort run` reaches every rank through mpirun without mpirun's
      // SIGTERM-then-SIGKILL; it, and a SIGINT, reach the program as the ordinary
      // preemption signal, SIGTERM: every stop request to a rank is a graceful stop.
      kill(child, sig == SIGUSR1 || sig == SIGINT ? SIGTERM : sig);
      if (status->received.empty()) status->received = signalName(sig);
    }
    if (sfd >= 0) {  // the signals were taken above; empty the descriptor's queue view
      signalfd_siginfo info;
      while (read(sfd, &info, sizeof(info)) > 0) {
      }
    }
    pid_t done = waitpid(child, waitStatus, WNOHANG);
    if (done == child) break;
    if (done < 0 && errno != EINTR) {
      fprintf(stderr, "cohort _rank-exec: waitpid: %s\n", strerror(errno));
      if (sfd >= 0) close(sfd);
      return false;
    }
  }
  if (sfd >= 0) close(sfd);
  return true;
}

}  // namespace

int runRankExec(int argc, char** argv) {
  // The stop signals have been blocked since the first instruction (startup_signals.h):
  // they are only taken by sigtimedwait below and forwarded, never fatal to the wrapper.
  sigset_t waited;
  sigemptyset(&waited);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD}) {
    sigaddset(&waited, sig);
  }
  settleStartupMask(waited);
  // The program starts with SIGTERM and SIGUSR1 still blocked: one that comes while it
  // loads its libraries (seconds for LibTorch) stays pending until its early handlers are
  // in place and unblock them (installEarlyPreemptionHandlers), instead of killing it.
  // (`cohort run --no-signal-hold`: for programs that never unblock them.)
  sigset_t held = startupOriginalMask();
  if (lookup(environmentSnapshot(), kEnvHoldSignals).value_or("1") != "0") {
    sigaddset(&held, SIGTERM);
    sigaddset(&held, SIGUSR1);
  }
  // An inherited SIG_IGN for SIGCHLD would make the kernel reap the child for us.
  struct sigaction sa {};
  sa.sa_handler = noopHandler;
  sigaction(SIGCHLD, &sa, nullptr);

  int first = 1;
  if (first < argc && strcmp(argv[first], "--") == 0) ++first;
  if (first >= argc) {
    fprintf(stderr, "cohort _rank-exec: no program given\n");
    return 2;
  }
  const EnvMap env = environmentSnapshot();
  std::optional<RankInfo> found = fromOpenMpi(env);
  if (!found) found = fromSlurm(env);
  if (!found) {
    fprintf(stderr,
            "cohort _rank-exec: not started by mpirun or srun (neither OMPI_COMM_WORLD_RANK "
            "nor SLURM_PROCID is set); use cohort run\n");
    return 2;
  }
  const RankInfo info = *found;
  setAlways("RANK", info.rank);
  setAlways("WORLD_SIZE", info.worldSize);
  setAlways("LOCAL_RANK", info.localRank);
  setAlways("LOCAL_WORLD_SIZE", info.localWorldSize);
  setAlways("NODE_RANK", info.nodeRank);
  setAlways("GROUP_RANK", info.nodeRank);
  const bool bound = envInt(env, kEnvCoresPerRank).value_or(0) > 0 || boundBySlurm(env);
  const std::string threads =
      std::to_string(threadsPerRank(coresInAffinity(), info.localWorldSize, bound));
  setDefault("OMP_NUM_THREADS", threads);
  setDefault("OPENBLAS_NUM_THREADS", threads);

  // The launcher made the directory; on a node that does not share its filesystem it is
  // absent and this rank leaves no record (its outcome still reaches mpirun/srun).
  std::string status_dir = lookup(env, kEnvStatusDir).value_or("");
  if (!status_dir.empty() && !isDirectory(status_dir)) status_dir.clear();
  const std::string host = hostName();
  if (!status_dir.empty()) writeRankStarted(status_dir, info.rank, host, getpid());

  const RankOutputMode output_mode = outputModeFor(env, info.rank);
  Plumbing plumbing = plumbOutput(output_mode, info.rank);
  const pid_t wrapper = getpid();
  const pid_t child = fork();
  if (child < 0) {
    fprintf(stderr, "cohort _rank-exec: fork failed: %s\n", strerror(errno));
    return 3;
  }
  if (child == 0) {
    // Own process group: mpirun signals the wrapper's group, and the wrapper alone decides
    // what reaches the program. PDEATHSIG: if the wrapper is SIGKILLed (mpirun's hard
    // kill), the program must not outlive it.
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != wrapper) _exit(137);
    if (plumbing.childOut >= 0) dup2(plumbing.childOut, STDOUT_FILENO);
    if (plumbing.childErr >= 0) dup2(plumbing.childErr, STDERR_FILENO);
    sigprocmask(SIG_SETMASK, &held, nullptr);
    execvp(argv[first], argv + first);
    int err = errno;
    fprintf(stderr, "cohort _rank-exec: rank %d: cannot run '%s': %s\n", info.rank, argv[first],
            strerror(err));
    _exit(err == ENOENT ? 127 : 126);
  }
  setpgid(child, child);  // also here, so it holds before any signal is forwarded
  plumbing.closeChildEnds();

  RankStatus status;
  status.rank = info.rank;
  status.host = host;
  status.pid = child;
  int wait_status = 0;
  if (!superviseProgram(child, waited, plumbing.relays, &status, &wait_status)) return 3;
  const bool failed = WIFSIGNALED(wait_status) || WEXITSTATUS(wait_status) != 0;
  for (auto& relay : plumbing.relays) {
    relay->finish();
    if (failed) relay->release();  // on-error: the held lines now (no-op otherwise)
  }
  status.time = wallClockSeconds();
  status.killedBySignal = WIFSIGNALED(wait_status);
  status.value = status.killedBySignal ? WTERMSIG(wait_status) : WEXITSTATUS(wait_status);
  if (!status_dir.empty() && !writeRankStatus(status_dir, status)) {
    fprintf(stderr, "cohort _rank-exec: rank %d: cannot write its status to %s: %s\n", info.rank,
            status_dir.c_str(), strerror(errno));
  }
  if ((status.killedBySignal || status.value != 0) && status.received.empty()) {
    fprintf(stderr, "cohort: rank %d on %s: %s %s\n", info.rank, host.c_str(), argv[first],
            describeOutcome(status).c_str());
  }
  exitLike(status);
}

}  // namespace cohort::launcher
