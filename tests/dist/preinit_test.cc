// A collective before cohort::dist::init() is a typed error, not an MPI crash.
#include <mpi.h>

#include <cstdio>
#include <string>

#include "cohort/dist/error.h"
#include "cohort/dist/mpi_backend.h"

int main() {
  try {
    auto b = cohort::dist::makeMpiBackend(MPI_COMM_WORLD, cohort::dist::BackendOptions{});
    std::printf("FAIL: no error before init\n0 passed, 1 failed\n");
    return 1;
  } catch (const cohort::DistError& e) {
    const std::string msg = e.what();
    if (msg.find("before cohort::dist::init()") == std::string::npos) {
      std::printf("FAIL: unexpected message: %s\n0 passed, 1 failed\n", msg.c_str());
      return 1;
    }
    std::printf("ok: %s\n1 passed, 0 failed\n", msg.c_str());
    return 0;
  }
}
