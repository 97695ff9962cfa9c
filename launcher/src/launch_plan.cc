#include "launch_plan.h"

#include <unistd.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "rank_output.h"

namespace cohort::launcher {

namespace {

std::string plural(long n, const char* word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

// Ranks per node when the user did not say: one per visible GPU, one on a CPU node.
int autoRanksPerNode(const RunOptions& opts, const EnvMap& env) {
  if (opts.nprocPerNode) return *opts.nprocPerNode;
  return std::max(1, visibleGpuCount(env));
}

// "4", or "2(x3)" / "3,2": the count of the first node (SLURM_CPUS_ON_NODE and the like).
std::optional<int> leadingCount(const std::optional<std::string>& value) {
  if (!value) return std::nullopt;
  size_t digits = value->find_first_not_of("0123456789");
  auto n = parseInteger(value->substr(0, digits), 1, 1 << 20);
  if (!n) return std::nullopt;
  return static_cast<int>(*n);
}

// Tasks the allocation holds on each node, in node order. An explicit --nproc-per-node
// (N or auto) is the user's word for every node; otherwise Slurm's own description:
// SLURM_NTASKS_PER_NODE (uniform), else the full SLURM_TASKS_PER_NODE list ("2,1",
// "2(x3),1": an uneven allocation such as salloc -N2 -n3), else SLURM_NTASKS spread
// evenly. SLURM_NTASKS, when set, caps the total (an allocation of -n3 on 2x2 CPUs).
std::vector<int> slurmCapacity(const RunOptions& opts, const EnvMap& env, int nodes) {
  auto uniform = [nodes](int n) { return std::vector<int>(static_cast<size_t>(nodes), n); };
  if (opts.nprocPerNode) return uniform(*opts.nprocPerNode);
  if (opts.nprocPerNodeGiven) return uniform(autoRanksPerNode(opts, env));  // explicit auto
  std::vector<int> capacity;
  if (auto n = leadingCount(lookup(env, "SLURM_NTASKS_PER_NODE"))) {
    capacity = uniform(*n);
  } else if (auto list = lookup(env, "SLURM_TASKS_PER_NODE")) {
    capacity = expandCounts(*list);
    if (static_cast<int>(capacity.size()) != nodes) {
      throw UsageError("SLURM_TASKS_PER_NODE='" + *list + "' does not describe the " +
                       std::to_string(nodes) + " nodes of SLURM_NNODES");
    }
  }
  auto tasks_text = lookup(env, "SLURM_NTASKS");
  auto tasks = tasks_text ? parseInteger(*tasks_text, 1, 1 << 24) : std::nullopt;
  if (capacity.empty()) {
    if (opts.np) return uniform(static_cast<int>((*opts.np + nodes - 1) / nodes));
    if (!tasks) return uniform(autoRanksPerNode(opts, env));
    capacity = uniform(static_cast<int>((*tasks + nodes - 1) / nodes));
  }
  if (tasks) {  // keep only the first SLURM_NTASKS slots
    long left = *tasks;
    for (int& n : capacity) {
      n = static_cast<int>(std::min<long>(n, left));
      left -= n;
    }
  }
  return capacity;
}

void planSlurmLayout(const RunOptions& opts, const EnvMap& env, LaunchPlan* plan) {
  auto nodes_text = lookup(env, "SLURM_NNODES");
  if (!nodes_text) nodes_text = lookup(env, "SLURM_JOB_NUM_NODES");
  auto nodes = nodes_text ? parseInteger(*nodes_text, 1, 1 << 20) : std::nullopt;
  if (!nodes) {
    throw UsageError("inside a Slurm allocation (SLURM_JOB_ID is set) but SLURM_NNODES is " +
                     (nodes_text ? "'" + *nodes_text + "'" : std::string("not set")));
  }
  const std::vector<int> capacity = slurmCapacity(opts, env, static_cast<int>(*nodes));
  long total = 0;
  for (int n : capacity) total += n;
  const int np = opts.np.value_or(static_cast<int>(total));
  if (np > total || np == 0) {
    throw UsageError((opts.np ? "-np " + std::to_string(np) + " exceeds" : "no ranks fit in") +
                     std::string(" the Slurm allocation: ") + plural(total, "task") + " on " +
                     plural(*nodes, "node") + " (" + layoutString(capacity) + ")");
  }
  plan->np = np;
  int left = np;
  for (size_t i = 0; i < capacity.size() && left > 0; ++i) {
    const int n = std::min(left, capacity[i]);
    if (n > 0) plan->ranksPerNode.push_back(n);
    left -= n;
  }
  if (opts.coresPerNode) {
    plan->coresPerNode = *opts.coresPerNode;
  } else if (auto cpus = leadingCount(lookup(env, "SLURM_CPUS_ON_NODE"))) {
    plan->coresPerNode = *cpus;
  } else {
    plan->coresPerNode = coresInAffinity();
  }
}

void planHostLayout(const RunOptions& opts, const EnvMap& env, LaunchPlan* plan) {
  std::vector<HostSlots> hosts =
      opts.hosts.empty() ? parseHostfile(opts.hostfile) : parseHostList(opts.hosts);
  std::vector<int> capacity;
  long total = 0;
  for (const HostSlots& h : hosts) {
    int n = opts.nprocPerNode ? *opts.nprocPerNode : h.slots.value_or(autoRanksPerNode(opts, env));
    capacity.push_back(n);
    total += n;
  }
  const int np = opts.np.value_or(static_cast<int>(total));
  if (np > total) {
    throw UsageError("-np " + std::to_string(np) + " exceeds the " + std::to_string(total) +
                     " slots of the given hosts");
  }
  int left = np;
  for (size_t i = 0; i < hosts.size() && left > 0; ++i) {
    int n = std::min(left, capacity[i]);
    plan->hosts.push_back(hosts[i].name);
    plan->ranksPerNode.push_back(n);
    left -= n;
  }
  plan->np = np;
  plan->coresPerNode = opts.coresPerNode.value_or(coresInAffinity());
}

void planLocalLayout(const RunOptions& opts, const EnvMap& env, LaunchPlan* plan) {
  int np = opts.np.value_or(autoRanksPerNode(opts, env));
  if (opts.np && opts.nprocPerNode && *opts.np > *opts.nprocPerNode) {
    throw UsageError("-np " + std::to_string(*opts.np) + " is more than --nproc-per-node " +
                     std::to_string(*opts.nprocPerNode) + " on one node; name more hosts with -H");
  }
  plan->np = np;
  plan->ranksPerNode = {np};
  plan->coresPerNode = opts.coresPerNode.value_or(coresInAffinity());
}

// Binding: with at least one core per rank on every node each rank gets its own cores
// (so OpenMP threads never share a core); otherwise nothing is bound and mpirun must be
// told that oversubscription is intended.
void planBinding(LaunchPlan* plan) {
  int most = *std::max_element(plan->ranksPerNode.begin(), plan->ranksPerNode.end());
  plan->oversubscribe = most > plan->coresPerNode;
  plan->coresPerRank =
      plan->backend == Backend::kMpirun && !plan->oversubscribe ? plan->coresPerNode / most : 0;
}

bool forwardedByDefault(const std::string& name) {
  for (const char* prefix : {"COHORT_", "NCCL_", "OMP_", "OPENBLAS_"}) {
    if (name.rfind(prefix, 0) == 0) return true;
  }
  return name == "LD_LIBRARY_PATH" || name == "PATH";
}

}  // namespace

std::string layoutString(const std::vector<int>& ranksPerNode) {
  std::string s;
  for (int n : ranksPerNode) s += (s.empty() ? "" : ",") + std::to_string(n);
  return s;
}

int threadsPerRank(int coresAvailable, int localRanks, bool bound) {
  if (bound) return std::max(1, coresAvailable);
  return std::max(1, coresAvailable / std::max(1, localRanks));
}

LaunchPlan makePlan(const RunOptions& opts, const EnvMap& env) {
  LaunchPlan plan;
  plan.inSlurm = lookup(env, "SLURM_JOB_ID").has_value();
  const bool named_hosts = !opts.hosts.empty() || !opts.hostfile.empty();
  plan.backend = opts.backend;
  if (plan.backend == Backend::kAuto) {
    plan.backend = plan.inSlurm && !named_hosts ? Backend::kSrun : Backend::kMpirun;
  }
  if (plan.backend == Backend::kSrun) {
    if (named_hosts) {
      throw UsageError(
          "-H/--hostfile work with mpirun only; under srun the Slurm allocation "
          "decides the hosts");
    }
    if (!plan.inSlurm) {
      throw UsageError(
          "--launcher srun needs a Slurm allocation (SLURM_JOB_ID is not set); "
          "use sbatch/salloc or --launcher mpirun");
    }
  }
  const std::string& tool = plan.backend == Backend::kSrun ? opts.srun : opts.mpirun;
  const char* tool_option = plan.backend == Backend::kSrun ? "--srun" : "--mpirun";
  auto found = findExecutable(tool, env);
  if (!found) {
    throw UsageError(tool.find('/') == std::string::npos
                         ? tool + " not found on PATH (install it or pass " + tool_option + " PATH)"
                         : std::string(tool_option) + " " + tool + ": not an executable file");
  }
  plan.tool = *found;
  plan.runAsRoot = plan.backend == Backend::kMpirun && geteuid() == 0;

  if (named_hosts) {
    planHostLayout(opts, env, &plan);
  } else if (plan.inSlurm) {
    planSlurmLayout(opts, env, &plan);
  } else {
    planLocalLayout(opts, env, &plan);
  }
  planBinding(&plan);
  return plan;
}

LaunchPlan dropLastNode(const LaunchPlan& plan) {
  if (plan.ranksPerNode.size() <= 1) return plan;
  return dropNodes(plan, {static_cast<int>(plan.ranksPerNode.size()) - 1});
}

LaunchPlan dropNodes(const LaunchPlan& plan, const std::vector<int>& gone) {
  LaunchPlan smaller = plan;
  smaller.ranksPerNode.clear();
  smaller.hosts.clear();
  for (int n = 0; n < static_cast<int>(plan.ranksPerNode.size()); ++n) {
    if (std::find(gone.begin(), gone.end(), n) != gone.end()) continue;
    smaller.ranksPerNode.push_back(plan.ranksPerNode[static_cast<std::size_t>(n)]);
    if (!plan.hosts.empty()) smaller.hosts.push_back(plan.hosts[static_cast<std::size_t>(n)]);
  }
  if (smaller.ranksPerNode.empty()) return plan;
  smaller.np = std::accumulate(smaller.ranksPerNode.begin(), smaller.ranksPerNode.end(), 0);
  if (smaller.np != plan.np && smaller.launchedNp == 0) smaller.launchedNp = plan.np;
  planBinding(&smaller);
  return smaller;
}

JobCommand buildCommand(const LaunchPlan& plan, const RunOptions& opts, const EnvMap& env,
                        const std::string& self, const std::string& statusDir, int attempt) {
  JobCommand cmd;
  cmd.setEnv = {
      {kEnvStatusDir, statusDir},
      {kEnvRestartCount, std::to_string(attempt)},
      {kEnvMaxRestarts, std::to_string(opts.maxRestarts)},
      {kEnvNodeLayout, layoutString(plan.ranksPerNode)},
      {kEnvCoresPerRank, std::to_string(plan.coresPerRank)},
      {kEnvRankOutput, opts.rankOutput},
      {kEnvHoldSignals, opts.holdSignals ? "1" : "0"},
  };
  if (plan.launchedNp > 0 && plan.launchedNp != plan.np) {
    cmd.setEnv.emplace_back(kEnvElasticWorldSize, std::to_string(plan.launchedNp));
  }
  // Rank 0's output reaches the console untouched: when that is a terminal, its progress
  // bar may redraw in place (the program itself only sees mpirun's pipe or pty).
  if (plan.consoleIsTerminal && !lookup(env, "COHORT_PROGRESS_BAR")) {
    cmd.setEnv.emplace_back("COHORT_PROGRESS_BAR", "1");
  }
  std::set<std::string> forward;  // sorted, so the printed command is stable
  for (const std::string& x : opts.exports) {
    size_t eq = x.find('=');
    forward.insert(x.substr(0, eq));
    if (eq != std::string::npos) {
      cmd.setEnv.emplace_back(x.substr(0, eq), x.substr(eq + 1));
    } else if (!lookup(env, x)) {
      throw UsageError("-x " + x + ": " + x + " is not set (use -x " + x + "=VALUE)");
    }
  }
  for (const auto& [name, value] : env) {
    if (forwardedByDefault(name)) forward.insert(name);
  }
  for (const auto& [name, value] : cmd.setEnv) forward.insert(name);

  auto& a = cmd.argv;
  a.push_back(plan.tool);
  const int per_node = *std::max_element(plan.ranksPerNode.begin(), plan.ranksPerNode.end());
  // An uneven layout (2,1) is the allocation's own slots filled in node order: mpirun's
  // --map-by slot does exactly that with the slots it reads from Slurm.
  const bool uniform =
      *std::min_element(plan.ranksPerNode.begin(), plan.ranksPerNode.end()) == per_node;
  if (plan.backend == Backend::kSrun) {
    // srun hands the whole environment to the tasks, so nothing needs forwarding;
    // --kill-on-bad-exit gives fail-fast; Slurm's own configuration decides CPU binding.
    // --unbuffered: rank 0's partial lines (a progress bar) pass at once; the wrappers of
    // the other ranks write whole lines, each in one write().
    // An uneven layout (2,1) gets no --ntasks-per-node: srun would warn that it cannot
    // honour it; its block distribution over the allocation places the ranks as planned.
    a.insert(a.end(), {"--mpi=pmix", "--nodes=" + std::to_string(plan.ranksPerNode.size()),
                       "--ntasks=" + std::to_string(plan.np)});
    if (uniform) a.push_back("--ntasks-per-node=" + std::to_string(per_node));
    a.insert(a.end(), {"--kill-on-bad-exit=1", "--unbuffered"});
  } else {
    a.insert(a.end(), {"-np", std::to_string(plan.np)});
    std::string pe = plan.coresPerRank > 0 ? ":PE=" + std::to_string(plan.coresPerRank) : "";
    if (!plan.hosts.empty()) {
      std::string hosts;
      for (size_t i = 0; i < plan.hosts.size(); ++i) {
        hosts += (i ? "," : "") + plan.hosts[i] + ":" + std::to_string(plan.ranksPerNode[i]);
      }
      a.insert(a.end(), {"-H", hosts, "--map-by", "slot" + pe});
    } else if (plan.inSlurm && uniform) {
      // mpirun reads the allocation itself; ppr keeps the per-node count we planned.
      a.insert(a.end(), {"--map-by", "ppr:" + std::to_string(per_node) + ":node" + pe});
    } else {
      a.insert(a.end(), {"--map-by", "slot" + pe});
    }
    a.insert(a.end(), {"--bind-to", plan.coresPerRank > 0 ? "core" : "none"});
    if (plan.oversubscribe) a.push_back("--oversubscribe");
    if (plan.runAsRoot) a.push_back("--allow-run-as-root");
    for (const std::string& name : forward) a.insert(a.end(), {"-x", name});
  }
  a.insert(a.end(), opts.launcherArgs.begin(), opts.launcherArgs.end());
  a.insert(a.end(), {self, "_rank-exec", "--"});
  a.insert(a.end(), opts.program.begin(), opts.program.end());
  return cmd;
}

}  // namespace cohort::launcher
