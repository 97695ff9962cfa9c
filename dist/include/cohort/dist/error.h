// Typed errors of the whole project. Every layer throws a subclass of cohort::Error so that
// a program's main() can map failures to exit codes in one place (after aborting the
// communicator, so that peers do not hang). Header-only and dependency-free: the standalone
// NCCL core uses it too.
#pragma once

#include <stdexcept>
#include <string>

namespace cohort {

// Base of every exception Cohort throws.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A collective or backend failed (bad arguments, MPI/NCCL/CUDA error, a peer aborted).
class DistError : public Error {
 public:
  using Error::Error;
};

// A blocking wait exceeded its deadline. The message names the operation, its sequence
// number and, where known, the ranks that did not arrive.
class TimeoutError : public DistError {
 public:
  using DistError::DistError;
};

// A configuration value is invalid; the message names the field or variable.
class ConfigError : public Error {
 public:
  using Error::Error;
};

}  // namespace cohort
