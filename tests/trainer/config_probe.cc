// config_probe: the smallest program that follows the config contract of Cohort's example
// programs. It starts the runtime, parses --config and --field overrides, validates, and
// prints OK on rank 0; a bad configuration is one "config error:" line (rank 0) and exit
// code 2 on every rank, before any collective, so nothing hangs.
// Positional arguments say which datasets exist: "train", "eval" (used by validation).
// Run by config_exit_test.sh under mpirun.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <memory>

#include "cohort/dist/device.h"
#include "cohort/dist/runtime.h"
#include "cohort/trainer/training_args.h"

int main(int argc, char** argv) {
  namespace ct = cohort::trainer;
  std::unique_ptr<cohort::dist::Runtime> rt;
  try {
    rt = cohort::dist::init(&argc, &argv);
  } catch (const std::exception& e) {
    return ct::reportFatalError(e, 0);
  }
  const int rank = rt->rank();
  try {
    const ct::ProgramInfo program{"config_probe", "Checks a configuration.", "[train] [eval]"};
    const ct::CommandLine cl = ct::parseTrainingArgs(argc, argv, program);
    if (cl.helpRequested) {
      if (rank == 0) std::fputs(ct::helpText(program).c_str(), stdout);
      return 0;
    }
    const auto has = [&](const char* what) {
      return std::find(cl.positional.begin(), cl.positional.end(), what) != cl.positional.end();
    };
    ct::logWarnings(cl.warnings, rank);
    // The device the examples would train on: a GPU when this build can use one.
    const bool cuda = cohort::dist::cudaCollectivesAvailable() &&
                      cohort::dist::visibleCudaDeviceCount() > 0;
    ct::logWarnings(ct::validate(cl.args, {has("train"), has("eval"), cuda}), rank);
    if (rank == 0)
      std::printf("OK %d ranks, logging every %lld of 100 steps\n", rt->worldSize(),
                  static_cast<long long>(ct::resolveLoggingSteps(cl.args, 100)));
    return 0;
  } catch (const std::exception& e) {
    // Every rank got here with the same error (validation is deterministic), so the
    // Runtime's destructor can finalise MPI normally on all of them.
    return ct::reportFatalError(e, rank);
  }
}
