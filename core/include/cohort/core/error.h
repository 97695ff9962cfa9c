// The base of the project's typed errors. Every layer throws a subclass of cohort::Error so that
// a program's main() can map failures to exit codes in one place (after aborting the
// communicator, so that peers do not hang). Header-only and dependency-free (target
// cohort_core): the standalone NCCL core, the checkpoint format library and the `cohort ckpt`
// tool use it without dist's MPI and LibTorch. Dist's own errors (DistError, TimeoutError)
// are in cohort/dist/error.h.
#pragma once

#include <stdexcept>
#include <string>

namespace cohort {

// Base of every exception Cohort throws.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A configuration value is invalid; the message names the field or variable.
class ConfigError : public Error {
 public:
  using Error::Error;
};

}  // namespace cohort
