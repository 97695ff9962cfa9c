// The one typed registry of COHORT_* environment variables (as NCCL_PARAM). Every variable
// the project reads is declared ONCE below, in COHORT_ENV_REGISTRY, with its C++ handle,
// type, default and a one-line meaning; docs/env.md lists them (a test checks the two lists
// are the same). Code reads a variable through its handle, `env::get(env::kCollectiveTimeout)`,
// so a misspelt name is a compile error, and the handle's type fixes what get() returns.
//
// A value is read from the environment and parsed once per process, then cached (later
// changes to the environment are not seen, as NCCL). A variable set to a value that differs
// from its default is reported once, as "COHORT_X set by environment to Y", through the
// override sink (setOverrideSink); dist::init installs one that logs on rank 0 only.
//
// Torch-free and MPI-free: built as its own small library (cohort_env) that the launcher
// may link too. Thread-safety: every function here may be called from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace cohort::env {

// "auto", or a boolean: nullopt is auto.
using AutoBool = std::optional<bool>;

enum class Type { kString, kInt, kDouble, kBool, kAutoBool };

// X(handle, C++ type, name, default, meaning). Defaults are written as a user would set
// them; an empty default means "unset" (the reader decides, e.g. by rank).
#define COHORT_ENV_REGISTRY(X)                                                               \
  X(kCollectiveTimeout, double, "COHORT_COLLECTIVE_TIMEOUT", "600",                          \
    "Seconds a collective may wait for its peers before it fails with TimeoutError naming "  \
    "the collective, its sequence number and the ranks that did not arrive.")                \
  X(kConsensusTimeout, double, "COHORT_CONSENSUS_TIMEOUT", "1800",                           \
    "Seconds an agreement on a consensus communicator (a checkpoint save's shard reports, "  \
    "the resume decision) waits for its peers; longer than COHORT_COLLECTIVE_TIMEOUT.")      \
  X(kExitOrderTimeout, double, "COHORT_EXIT_ORDER_TIMEOUT", "5",                             \
    "Seconds a rank waits, after a configuration error every rank has, for rank 0 to "       \
    "print it before exiting (mpirun ends the job at the first exit). 0: no wait.")          \
  X(kLogLevel, std::string, "COHORT_LOG_LEVEL", "",                                          \
    "trace|debug|info|warn|error|off. Default: info on rank 0, warn on other ranks.")        \
  X(kDevice, std::string, "COHORT_DEVICE", "auto",                                           \
    "auto|cpu|cuda. auto = one CUDA device per local rank when GPUs are visible, else CPU.") \
  X(kAllreduceSliceBytes, std::int64_t, "COHORT_ALLREDUCE_SLICE_BYTES", "1048576",           \
    "All-reduce pipelining granularity in bytes: large buffers are reduced slice by slice "  \
    "so that data stays in cache.")                                                          \
  X(kAllreduceSliceBytesCrossHost, std::int64_t, "COHORT_ALLREDUCE_SLICE_BYTES_CROSS_HOST",  \
    "8388608",                                                                               \
    "The all-reduce slice of an MPI group whose ranks are on several hosts, where each "     \
    "slice costs a rendezvous on the network.")                                              \
  X(kCheckCollectives, bool, "COHORT_CHECK_COLLECTIVES", "1",                                \
    "1: every collective first checks across ranks that kind, count, dtype and root "        \
    "match (a mismatch is a DistError on every rank instead of a hang). 0 disables.")        \
  X(kCkptCopyAhead, bool, "COHORT_CKPT_COPY_AHEAD", "1",                                     \
    "1: an async checkpoint save copies the weights and optimizer moments to host memory "   \
    "on a background thread, ahead of the writer. 0: no background copy.")                   \
  X(kProgressBar, AutoBool, "COHORT_PROGRESS_BAR", "auto",                                   \
    "auto|1|0. The rank-0 progress bar redraws one line in place (1) or prints a plain "     \
    "line every 30 s (0); auto: in place only on a tty not started by mpirun.")                   \
  X(kElasticWorldSize, std::int64_t, "COHORT_ELASTIC_WORLD_SIZE", "0",                        \
    "Set by cohort run --min-np when it restarts a job on fewer ranks: the world size the "   \
    "job was launched with. The Trainer raises gradient_accumulation_steps to keep the "      \
    "global batch. 0: unset.")                                                                \
  X(kMallocTuning, bool, "COHORT_MALLOC_TUNING", "1",                                         \
    "1: dist::Runtime fixes glibc malloc's mmap and trim thresholds so that each step "       \
    "reuses its host memory (cohort/dist/allocator.h). 0: glibc's defaults.")

// A declared variable as data (for docs checks, listings and messages).
struct Var {
  const char* name;
  Type type;
  const char* defaultValue;
  const char* help;
  int index;  // position in the registry
};

// A typed handle to a declared variable: get() on it returns T.
template <typename T>
struct Param {
  Var var;
};

namespace detail {
template <typename T>
constexpr Type typeOf();
template <>
constexpr Type typeOf<std::string>() {
  return Type::kString;
}
template <>
constexpr Type typeOf<std::int64_t>() {
  return Type::kInt;
}
template <>
constexpr Type typeOf<double>() {
  return Type::kDouble;
}
template <>
constexpr Type typeOf<bool>() {
  return Type::kBool;
}
template <>
constexpr Type typeOf<AutoBool>() {
  return Type::kAutoBool;
}

enum Index : int {
#define COHORT_ENV_INDEX_(handle, T, name, def, help) handle##Index,
  COHORT_ENV_REGISTRY(COHORT_ENV_INDEX_)
#undef COHORT_ENV_INDEX_
      kVarCount
};
}  // namespace detail

// The handles: env::kCollectiveTimeout, env::kLogLevel, ...
#define COHORT_ENV_HANDLE_(handle, T, name, def, help) \
  inline constexpr Param<T> handle{{name, detail::typeOf<T>(), def, help, detail::handle##Index}};
COHORT_ENV_REGISTRY(COHORT_ENV_HANDLE_)
#undef COHORT_ENV_HANDLE_

// All declared variables, in declaration order.
const std::vector<Var>& all();

// The value: the environment's when set and non-empty, else the declared default. Parsed
// once, then cached. Integers are decimal; doubles as strtod; booleans 1/0, true/false,
// yes/no, on/off (any case); AutoBool also "auto". A value that does not parse is a
// ConfigError naming the variable and the value (and is not cached: the next read retries).
std::string get(const Param<std::string>& p);
std::int64_t get(const Param<std::int64_t>& p);
double get(const Param<double>& p);
bool get(const Param<bool>& p);
AutoBool get(const Param<AutoBool>& p);

// Receives each override notice ("COHORT_X set by environment to Y"), once per variable and
// process, at the variable's first read. Notices produced before a sink is installed are
// held and handed to the next sink installed, in order; an empty function holds again.
void setOverrideSink(std::function<void(const std::string&)> sink);

}  // namespace cohort::env
