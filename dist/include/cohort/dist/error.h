// Errors of the dist layer, below cohort::Error and ConfigError (cohort/core/error.h, the
// cohort_core target, which the checkpoint format and the `cohort ckpt` tool use without
// dist's MPI and LibTorch). Header-only and dependency-free: the standalone NCCL core uses it.
#pragma once

#include "cohort/core/error.h"

namespace cohort {

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

}  // namespace cohort
