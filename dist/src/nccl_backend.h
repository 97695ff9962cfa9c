// The NCCL collective core for CUDA device memory. Torch-free and spdlog-free: it needs only
// CUDA, NCCL and MPI (for the unique-id bootstrap and the cross-rank argument check), so the
// standalone test (tests/gpu/nccl_core_test.cc) can be carried to a GPU machine alone.
#pragma once

#include <cuda_runtime_api.h>
#include <mpi.h>

#include <functional>
#include <memory>

#include "cohort/dist/backend.h"

namespace cohort::dist {

// Returns the stream the caller's compute runs on: collectives are ordered after the work
// already queued there (via an event), and run on the backend's own stream.
using ComputeStreamFn = std::function<cudaStream_t()>;

// COLLECTIVE over `bootstrap` (MPI). Selects `device` (an index among the visible devices),
// checks on every rank that a CUDA device is usable, and fails on ALL ranks with
// DistError("no CUDA device visible to rank N ...") when one is not. Then rank 0 creates the
// NCCL unique id, MPI broadcasts it, and the NCCL communicator is initialised without
// blocking so that COHORT_COLLECTIVE_TIMEOUT applies to init too.
std::unique_ptr<Backend> makeNcclBackend(MPI_Comm bootstrap, int device,
                                         const BackendOptions& options,
                                         ComputeStreamFn computeStream);

}  // namespace cohort::dist
