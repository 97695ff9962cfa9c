// gtest main for MPI tests: one Runtime per process, only rank 0 prints, and every test's
// pass/fail is agreed across ranks so a failure on any rank fails the run (and is named).
#include <gtest/gtest.h>
#include <mpi.h>

#include <ATen/Parallel.h>

#include <cstdlib>
#include <string>

#include "cohort/dist/runtime.h"
#include "test_util.h"

namespace cohort::test {
dist::Runtime* gRuntime = nullptr;
void resetJobBroken() { dist::clearJobBrokenForTesting(); }
}

namespace {

class AgreeListener : public ::testing::EmptyTestEventListener {
 public:
  explicit AgreeListener(int rank) : rank_(rank) {}
  void OnTestEnd(const ::testing::TestInfo& info) override {
    int failed = info.result()->Failed() ? 1 : 0;
    int size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    std::vector<int> all(size);
    MPI_Allgather(&failed, 1, MPI_INT, all.data(), 1, MPI_INT, MPI_COMM_WORLD);
    if (rank_ == 0) {
      for (int r = 1; r < size; ++r) {
        if (all[r]) {
          std::printf("[  FAILED  ] %s.%s failed on rank %d (see that rank's output)\n",
                      info.test_suite_name(), info.name(), r);
          anyRemoteFailure = true;
        }
      }
    }
  }
  bool anyRemoteFailure = false;

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  setenv("OMP_NUM_THREADS", "1", 0);
  at::set_num_threads(1);
  auto runtime = cohort::dist::init(&argc, &argv);
  cohort::test::gRuntime = runtime.get();
  ::testing::InitGoogleTest(&argc, argv);
  auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
  const int rank = runtime->rank();
  // COHORT_TEST_ALL_RANKS=1 keeps every rank's printer (to see why rank N failed).
  const char* all = std::getenv("COHORT_TEST_ALL_RANKS");
  if (rank != 0 && !(all != nullptr && std::string(all) == "1")) {
    delete listeners.Release(listeners.default_result_printer());
  }
  auto* agree = new AgreeListener(rank);
  listeners.Append(agree);
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int anyFailed = 0;
  MPI_Allreduce(&failed, &anyFailed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  // Tests that break a communicator on purpose (timeouts, aborts) leave the job marked
  // broken; the process-level MPI state is still sound, so finalise normally.
  cohort::test::resetJobBroken();
  runtime.reset();
  return anyFailed;
}
