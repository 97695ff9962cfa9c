#pragma once
// Where the ranks of one `cohort run` go and the exact mpirun/srun command that puts them
// there. Pure functions of the options and an environment snapshot, so --dry-run prints
// precisely what a real launch runs and tests can check it without starting anything.

#include <string>
#include <utility>
#include <vector>

#include "run_options.h"
#include "sys_util.h"

namespace cohort::launcher {

// Environment variables `cohort run` sets for mpirun/srun (and so for every rank); the
// per-rank wrapper (`cohort _rank-exec`) reads them. Listed in docs/launcher.md.
inline constexpr const char* kEnvStatusDir = "COHORT_RUN_STATUS_DIR";
inline constexpr const char* kEnvRestartCount = "COHORT_RESTART_COUNT";
inline constexpr const char* kEnvMaxRestarts = "COHORT_MAX_RESTARTS";
inline constexpr const char* kEnvNodeLayout = "COHORT_NODE_LAYOUT";
inline constexpr const char* kEnvCoresPerRank = "COHORT_CORES_PER_RANK";
inline constexpr const char* kEnvHoldSignals = "COHORT_HOLD_SIGNALS";
// Set only when a --min-np restart runs on fewer ranks than the job was launched with: that
// original number (the Trainer keeps the global batch with more accumulation).
inline constexpr const char* kEnvElasticWorldSize = "COHORT_ELASTIC_WORLD_SIZE";

struct LaunchPlan {
  Backend backend = Backend::kMpirun;  // never kAuto once planned
  std::string tool;                    // absolute path of mpirun or srun
  bool inSlurm = false;                // SLURM_JOB_ID is set
  std::vector<std::string> hosts;      // mpirun -H names, one per node; empty = no -H
  std::vector<int> ranksPerNode;       // node order; ranks fill node 0 first
  int np = 0;
  int coresPerNode = 1;
  int coresPerRank = 0;            // > 0: mpirun binds each rank to this many cores
  bool oversubscribe = false;      // more ranks than cores on some node
  bool runAsRoot = false;          // add mpirun's --allow-run-as-root
  bool consoleIsTerminal = false;  // `cohort run`'s stdout is a terminal (progress bar in place)
  int launchedNp = 0;              // np of the first attempt, once nodes were dropped; else 0
};

// Decides the backend, the rank layout and the binding. Throws UsageError for input that
// cannot work (e.g. -np beyond the hosts' slots, srun with -H, tool not found).
LaunchPlan makePlan(const RunOptions& opts, const EnvMap& env);

// The plan with its last node removed (for --min-np restarts); np shrinks accordingly.
LaunchPlan dropLastNode(const LaunchPlan& plan);
// The plan without the nodes `gone` (indices into ranksPerNode, for --min-np restarts after
// a lost host); the ranks are renumbered in node order. `gone` must leave a node.
LaunchPlan dropNodes(const LaunchPlan& plan, const std::vector<int>& gone);

struct JobCommand {
  std::vector<std::string> argv;                            // tool, flags, wrapper, program
  std::vector<std::pair<std::string, std::string>> setEnv;  // added to the tool's env
};

// The command for one attempt. SELF is this executable (started as `SELF _rank-exec`),
// STATUS_DIR where ranks write their exit status, ATTEMPT counts from 0.
JobCommand buildCommand(const LaunchPlan& plan, const RunOptions& opts, const EnvMap& env,
                        const std::string& self, const std::string& statusDir, int attempt);

// "2,2" for ranksPerNode {2, 2}.
std::string layoutString(const std::vector<int>& ranksPerNode);

// OMP/OpenBLAS threads per rank: the cores bound to it, else the node's cores shared by its
// ranks; at least 1. Used by the wrapper on each node and by --dry-run as a prediction.
int threadsPerRank(int coresAvailable, int localRanks, bool bound);

}  // namespace cohort::launcher
