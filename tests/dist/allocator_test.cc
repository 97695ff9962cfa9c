// tuneHostAllocator (cohort/dist/allocator.h): each case runs in a fresh process (a gtest
// death test in "threadsafe" style re-executes the binary), since malloc's settings and the
// env cache are per process. Tuned, a 4 MiB block comes from the heap, not from its own
// mmap, and freeing it leaves the heap its size (no trim); left alone (opt-out), glibc's
// defaults mmap it. Links cohort_env only.
#include "cohort/dist/allocator.h"

#include <gtest/gtest.h>
#include <malloc.h>
#include <stdlib.h>

#include <cstring>
#include <string>

namespace cohort::dist {
namespace {

constexpr std::size_t kBlock = std::size_t{4} << 20;

void clearMallocEnv() {
  for (const char* name : {"COHORT_MALLOC_TUNING", "MALLOC_MMAP_THRESHOLD_",
                           "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
                           "GLIBC_TUNABLES"}) {
    unsetenv(name);
  }
}

// Exit codes of the child: 0 as expected; 1-9 which check failed.
int blockBehaviour(bool expectTuned) {
  const struct mallinfo2 before = mallinfo2();
  void* p = std::malloc(kBlock);
  if (p == nullptr) return 9;
  std::memset(p, 1, kBlock);
  const struct mallinfo2 during = mallinfo2();
  const bool mmapped = during.hblks > before.hblks;
  std::free(p);
  const struct mallinfo2 after = mallinfo2();
  if (expectTuned) {
    if (mmapped) return 1;                         // the block got its own mmap
    if (after.arena < before.arena + kBlock) return 2;  // the heap was trimmed on free
  } else if (!mmapped) {
    return 3;  // glibc's default threshold (128 KiB) should have mmapped it
  }
  return 0;
}

class HostAllocator : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_F(HostAllocator, TunedByDefaultAndTheHeapKeepsAStepsBlocks) {
  EXPECT_EXIT(
      {
        clearMallocEnv();
        if (hostAllocatorTuning().has_value()) std::exit(7);
        const HostAllocatorTuning t = tuneHostAllocator();
        if (!t.applied || t.why.find("mmap_threshold") == std::string::npos) std::exit(8);
        if (!hostAllocatorTuning() || !hostAllocatorTuning()->applied) std::exit(6);
        std::exit(blockBehaviour(/*expectTuned=*/true));
      },
      ::testing::ExitedWithCode(0), "");
}

TEST_F(HostAllocator, OptOutKeepsGlibcDefaults) {
  EXPECT_EXIT(
      {
        clearMallocEnv();
        setenv("COHORT_MALLOC_TUNING", "0", 1);
        const HostAllocatorTuning t = tuneHostAllocator();
        if (t.applied || t.why.find("COHORT_MALLOC_TUNING=0") == std::string::npos) std::exit(8);
        std::exit(blockBehaviour(/*expectTuned=*/false));
      },
      ::testing::ExitedWithCode(0), "");
}

TEST_F(HostAllocator, TheUsersOwnMallocSettingsWin) {
  for (const char* name : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"}) {
    SCOPED_TRACE(name);
    const std::string value =
        std::string(name) == "GLIBC_TUNABLES" ? "glibc.malloc.arena_max=2" : "262144";
    EXPECT_EXIT(
        {
          clearMallocEnv();
          setenv(name, value.c_str(), 1);
          const HostAllocatorTuning t = tuneHostAllocator();
          if (t.applied) std::exit(8);
          if (t.why != std::string("left alone: ") + name + " is set") std::exit(5);
          std::exit(0);
        },
        ::testing::ExitedWithCode(0), "");
  }
  // A GLIBC_TUNABLES without malloc settings does not count as the user's choice.
  EXPECT_EXIT(
      {
        clearMallocEnv();
        setenv("GLIBC_TUNABLES", "glibc.pthread.rseq=0", 1);
        std::exit(tuneHostAllocator().applied ? 0 : 8);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST_F(HostAllocator, AppliedOnceThenTheSameAnswer) {
  EXPECT_EXIT(
      {
        clearMallocEnv();
        const HostAllocatorTuning first = tuneHostAllocator();
        setenv("COHORT_MALLOC_TUNING", "0", 1);  // too late: the first answer stands
        const HostAllocatorTuning second = tuneHostAllocator();
        std::exit(first.applied && second.applied && first.why == second.why ? 0 : 8);
      },
      ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace cohort::dist
