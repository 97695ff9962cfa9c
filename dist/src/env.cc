#include "cohort/dist/env.h"

#include <cerrno>
#include <cstdlib>
#include <strings.h>

#include "cohort/dist/error.h"

namespace cohort::env {

const std::vector<Var>& all() {
  static const std::vector<Var> vars = {
      {"COHORT_COLLECTIVE_TIMEOUT", "600",
       "Seconds a collective may wait for its peers before it fails with TimeoutError naming "
       "the collective, its sequence number and the ranks that did not arrive."},
      {"COHORT_CONSENSUS_TIMEOUT", "1800",
       "Seconds an agreement on a consensus communicator (a checkpoint save's shard reports, "
       "the resume decision) waits for its peers before it fails with TimeoutError naming "
       "the consensus and the ranks that did not arrive. It covers the slowest rank's shard "
       "write, hence longer than COHORT_COLLECTIVE_TIMEOUT."},
      {"COHORT_EXIT_ORDER_TIMEOUT", "5",
       "Seconds a rank waits, after a configuration error every rank has, for rank 0 to "
       "print it before exiting (mpirun ends the job at the first exit). 0: no wait."},
      {"COHORT_LOG_LEVEL", "",
       "trace|debug|info|warn|error|off. Default: info on rank 0, warn on other ranks."},
      {"COHORT_DEVICE", "auto",
       "auto|cpu|cuda. auto = one CUDA device per local rank when GPUs are visible, else CPU."},
      {"COHORT_ALLREDUCE_SLICE_BYTES", "1048576",
       "All-reduce pipelining granularity in bytes: large buffers are reduced slice by slice "
       "so that data stays in cache."},
      {"COHORT_CHECK_COLLECTIVES", "1",
       "1: every collective first checks across ranks that kind, count, dtype and root "
       "match (a mismatch is a DistError on every rank instead of a hang). 0 disables."},
      {"COHORT_CKPT_COPY_AHEAD", "1",
       "1: an async checkpoint save copies the weights and optimizer moments to host memory "
       "on a background thread, ahead of the writer, so the next optimizer step rarely "
       "waits. 0: no background copy (less memory traffic); the optimizer step copies "
       "whatever the writer has not read yet."},
      {"COHORT_PROGRESS_BAR", "auto",
       "auto|1|0. The rank-0 progress bar redraws one line when stdout is a terminal, else "
       "prints a plain line every 30 s. auto: a terminal is assumed only when stdout is a "
       "tty and the program was not started by mpirun (which always gives ranks a pty)."},
  };
  return vars;
}

namespace {

const Var& find(const std::string& name) {
  for (const Var& v : all()) {
    if (name == v.name) return v;
  }
  throw Error("cohort::env: variable " + name + " is not declared in env.cc");
}

std::string raw(const std::string& name) {
  const Var& v = find(name);
  const char* s = std::getenv(v.name);
  return (s != nullptr && *s != '\0') ? std::string(s) : std::string(v.defaultValue);
}

[[noreturn]] void bad(const std::string& name, const std::string& value, const char* want) {
  throw ConfigError("environment variable " + name + "='" + value + "' is not " + want);
}

}  // namespace

std::string getString(const std::string& name) { return raw(name); }

std::int64_t getInt(const std::string& name) {
  const std::string s = raw(name);
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || errno != 0 || *end != '\0') bad(name, s, "an integer");
  return v;
}

double getDouble(const std::string& name) {
  const std::string s = raw(name);
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || errno != 0 || *end != '\0') bad(name, s, "a number");
  return v;
}

bool getBool(const std::string& name) {
  const std::string s = raw(name);
  for (const char* t : {"1", "true", "yes", "on"})
    if (strcasecmp(s.c_str(), t) == 0) return true;
  for (const char* f : {"0", "false", "no", "off"})
    if (strcasecmp(s.c_str(), f) == 0) return false;
  bad(name, s, "a boolean (1/0, true/false, yes/no, on/off)");
}

}  // namespace cohort::env
