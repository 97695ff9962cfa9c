// Check macro for MPI calls: a failing call throws DistError with MPI's own error string
// and the call site. Communicators created by Cohort use MPI_ERRORS_RETURN so that errors
// reach this macro instead of aborting the job.
#pragma once

#include <mpi.h>

#include <string>

#include "cohort/dist/error.h"

namespace cohort::dist::detail {

[[noreturn]] inline void throwMpiError(int code, const char* call, const char* file, int line) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS) len = 0;
  throw DistError(std::string(call) + " failed: " + std::string(msg, len) + " (" + file + ":" +
                  std::to_string(line) + ")");
}

}  // namespace cohort::dist::detail

#define COHORT_MPI_CHECK(call)                                                    \
  do {                                                                            \
    const int cohort_mpi_rc_ = (call);                                            \
    if (cohort_mpi_rc_ != MPI_SUCCESS)                                            \
      ::cohort::dist::detail::throwMpiError(cohort_mpi_rc_, #call, __FILE__, __LINE__); \
  } while (0)
