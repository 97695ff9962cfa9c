// Reads every COHORT_* variable three times after dist::init, so that
// env_override_test.sh can check that each override is logged once, by rank 0 only, and
// that dist::init tuned the host allocator on every rank (cohort/dist/allocator.h).
#include <cstdio>

#include "cohort/dist/allocator.h"
#include "cohort/dist/env.h"
#include "cohort/dist/runtime.h"

int main(int argc, char** argv) {
  namespace env = cohort::env;
  auto rt = cohort::dist::init(&argc, &argv);
  for (int i = 0; i < 3; ++i) {
    env::get(env::kCollectiveTimeout);
    env::get(env::kLogLevel);
    env::get(env::kDevice);
    env::get(env::kAllreduceSliceBytes);
    env::get(env::kCheckCollectives);
    env::get(env::kCkptCopyAhead);
    env::get(env::kProgressBar);
  }
  const auto tuning = cohort::dist::hostAllocatorTuning();  // applied by dist::init
  std::printf("probe rank %d allocator %s\n", rt->topology().rank,
              tuning ? (tuning->applied ? "tuned" : tuning->why.c_str()) : "never asked");
  std::printf("probe rank %d done\n", rt->topology().rank);
  return 0;
}
