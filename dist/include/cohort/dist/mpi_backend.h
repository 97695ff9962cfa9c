// The MPI collective backend for host memory: used on CPU nodes and by every test. All MPI
// traffic of one MpiBackend runs on its own communication-engine thread (so collectives are
// asynchronous and a blocking wait can time out), on private duplicates of the parent
// communicator (so user MPI traffic cannot interfere).
#pragma once

#include <mpi.h>

#include <memory>

#include "cohort/dist/backend.h"

namespace cohort::dist {

// COLLECTIVE over `parent` (it duplicates it). Throws DistError when called before
// dist::init() or after shutdown ("collective called before init"). The backend must be
// destroyed before the Runtime.
std::unique_ptr<Backend> makeMpiBackend(MPI_Comm parent, const BackendOptions& options);

}  // namespace cohort::dist
