// Helpers shared by the MPI tests.
#pragma once

#include <gtest/gtest.h>
#include <mpi.h>

#include <memory>
#include <string>

#include "cohort/dist/communicator.h"
#include "cohort/dist/mpi_backend.h"
#include "cohort/dist/runtime.h"
#include "message_of.h"

namespace cohort::test {

extern dist::Runtime* gRuntime;

// A fresh communicator over the world for one test (its own engine and MPI communicators,
// so a test that breaks it on purpose leaves the next test unaffected).
inline std::unique_ptr<dist::Communicator> worldComm(double timeoutSeconds = 60.0,
                                                     std::size_t sliceBytes = 1 << 20) {
  dist::BackendOptions o;
  o.timeoutSeconds = timeoutSeconds;
  o.sliceBytes = sliceBytes;
  return std::make_unique<dist::Communicator>(dist::makeMpiBackend(MPI_COMM_WORLD, o));
}

// True on every rank iff `ok` is true on every rank (compute, then agree, then assert).
inline bool allRanks(bool ok) {
  int mine = ok ? 1 : 0, all = 0;
  MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all == 1;
}


void resetJobBroken();

}  // namespace cohort::test
