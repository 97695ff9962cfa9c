#pragma once
// Small POSIX helpers shared by `cohort run` and the per-rank wrapper: environment lookup,
// number parsing, shell quoting, PATH search, CPU/GPU counting, clocks and signal names.
// Everything here is cheap (no threads, no heavy init) because the launcher must start in
// milliseconds on a login node. Not thread-safe where it touches the environment.

#include <sched.h>

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace cohort::launcher {

// Bad command-line input or an unusable environment: `cohort run` prints the message as one
// line and exits 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

using EnvMap = std::map<std::string, std::string>;

// A snapshot of this process's environment.
EnvMap environmentSnapshot();
// The value of NAME when set (an empty value counts as set).
std::optional<std::string> lookup(const EnvMap& env, const std::string& name);

// Whole decimal integer in [min, max]; nullopt for anything else (sign, spaces, overflow).
std::optional<long> parseInteger(const std::string& text, long min, long max);
// Expands Slurm's per-node counts "2(x3),1" (SLURM_TASKS_PER_NODE) to {2, 2, 2, 1}; a plain
// "2,2" list (COHORT_NODE_LAYOUT) too. Empty when it does not parse.
std::vector<int> expandCounts(const std::string& text);
// Non-negative decimal seconds such as "60" or "0.5"; nullopt otherwise.
std::optional<double> parseSeconds(const std::string& text);

// Quotes one word for a POSIX shell only when needed, so a printed command can be pasted.
std::string shellQuote(const std::string& word);
std::string joinCommand(const std::vector<std::string>& argv);

// NAME with a slash: that file if executable; otherwise the first executable NAME on PATH.
std::optional<std::string> findExecutable(const std::string& name, const EnvMap& env);
// Absolute path of the running executable (/proc/self/exe).
std::string selfExecutable();

// Physical cores (distinct package/core pairs from sysfs) among the CPUs in MASK; falls
// back to the number of CPUs in MASK when sysfs has no topology.
int physicalCores(const cpu_set_t& mask);
// Physical cores this process may run on (its affinity mask), at least 1.
int coresInAffinity();
// Physical cores online on this node, at least 1.
int coresOnNode();
// GPUs visible to a rank on this node: CUDA_VISIBLE_DEVICES entries when that is set, else
// the NVIDIA driver's device count (/proc/driver/nvidia/gpus), else 0.
int visibleGpuCount(const EnvMap& env);

// Seconds since the epoch (CLOCK_REALTIME): comparable across nodes with synced clocks.
double wallClockSeconds();
// Seconds on CLOCK_MONOTONIC, for timeouts.
double monotonicSeconds();
std::string hostName();
// "60", "0.5": seconds for messages.
std::string formatSeconds(double seconds);
// "SIGTERM", "SIGKILL", ... or "signal N".
std::string signalName(int sig);

}  // namespace cohort::launcher
