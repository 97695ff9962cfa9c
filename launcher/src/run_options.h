#pragma once
// Command-line options of `cohort run` and the host lists they name. Parsing only checks
// the syntax of each option; how many ranks go where is decided by launch_plan.h, which
// also needs the environment (Slurm allocation, visible GPUs, cores).

#include <optional>
#include <string>
#include <vector>

namespace cohort::launcher {

enum class Backend { kAuto, kMpirun, kSrun };

struct RunOptions {
  std::optional<int> np;                  // -np / -n: total ranks
  std::optional<int> nprocPerNode;        // --nproc-per-node N; nullopt = auto
  bool nprocPerNodeGiven = false;         // true for N and for an explicit "auto"
  std::string hosts;                      // -H host[:slots],...
  std::string hostfile;                   // --hostfile FILE
  Backend backend = Backend::kAuto;       // --launcher
  std::string mpirun = "mpirun";          // --mpirun PATH
  std::string srun = "srun";              // --srun PATH
  bool dryRun = false;                    // --dry-run
  double gracePeriodS = 60;               // --grace-period SECONDS
  std::string rankOutput = "prefix";      // --rank-output prefix|on-error
  bool holdSignals = true;                // false: --no-signal-hold
  int maxRestarts = 0;                    // --max-restarts K
  std::optional<int> minNp;               // --min-np N
  std::string runDir;                     // --run-dir DIR (default: a fresh temp dir)
  std::optional<int> coresPerNode;        // --cores-per-node N (default: measured here)
  std::vector<std::string> exports;       // -x NAME[=VALUE], in order
  std::vector<std::string> launcherArgs;  // --launcher-arg ARG, passed to mpirun/srun
  std::vector<std::string> program;       // PROGRAM ARGS...
  bool help = false;
};

// Parses the words after "run". Throws UsageError naming the offending option.
RunOptions parseRunOptions(const std::vector<std::string>& args);

// The `cohort run --help` text.
const char* runUsage();

struct HostSlots {
  std::string name;
  std::optional<int> slots;  // nullopt: not given
};

// "a:4,b:4" or "a,b". Throws UsageError on an empty name or a bad slot count.
std::vector<HostSlots> parseHostList(const std::string& list);
// Open MPI hostfile syntax: "host [slots=N] [max_slots=N]" or "host:N" per line, '#'
// comments. Throws UsageError naming the file and line when a line does not parse.
std::vector<HostSlots> parseHostfile(const std::string& path);

}  // namespace cohort::launcher
