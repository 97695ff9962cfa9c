// Reads every COHORT_* variable three times after dist::init, so that
// env_override_test.sh can check that each override is logged once, by rank 0 only.
#include <cstdio>

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
  std::printf("probe rank %d done\n", rt->topology().rank);
  return 0;
}
