// A rank that skips a collective turns into a TimeoutError on the others, within the
// configured timeout, naming the collective, its sequence number and the missing rank.
// A rank that aborts makes its peers fail at once with its reason. Each of these leaves the
// communicator broken on purpose, so ctest runs them in their own processes.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "cohort/dist/error.h"
#include "test_util.h"

namespace cohort::test {
namespace {

using Clock = std::chrono::steady_clock;

TEST(Timeout, SkippedCollectiveNamesTheMissingRank) {
  constexpr double kTimeout = 2.0;
  auto comm = worldComm(kTimeout);
  if (comm->size() == 1) GTEST_SKIP() << "needs two ranks";
  at::Tensor t = at::ones({1024}, at::kFloat);
  comm->allReduce(t);  // #0: everybody
  const int skipper = comm->size() - 1;
  bool ok = true;
  if (comm->rank() == skipper) {
    // Stay alive (the engine answers the others' queries) while they time out.
    std::this_thread::sleep_for(std::chrono::duration<double>(kTimeout + 2.0));
  } else {
    const auto start = Clock::now();
    const std::string msg = messageOf<TimeoutError>([&] { comm->allReduce(t); });
    const double waited = std::chrono::duration<double>(Clock::now() - start).count();
    EXPECT_NE(msg.find("all_reduce #1"), std::string::npos) << msg;
    EXPECT_NE(msg.find("timed out after 2 s"), std::string::npos) << msg;
    EXPECT_NE(msg.find("ranks that did not arrive: rank " + std::to_string(skipper) +
                       " (last collective #0, now idle)"),
              std::string::npos)
        << msg;
    EXPECT_GE(waited, kTimeout * 0.9);
    // + the bounded query round (1 s here); the rest is room for a busy machine: this
    // only tells a timeout that fires from one that never does.
    EXPECT_LE(waited, kTimeout + 20.0);
    // The communicator is unusable afterwards, with a clear error, not a hang.
    const std::string after = messageOf<DistError>([&] { comm->barrier(); });
    EXPECT_NE(after.find("unusable"), std::string::npos) << after;
    ok = !msg.empty() && !after.empty();
  }
  EXPECT_TRUE(allRanks(ok));
}

TEST(Abort, PeersFailFastWithTheReason) {
  auto comm = worldComm(60.0);
  if (comm->size() == 1) GTEST_SKIP() << "needs two ranks";
  at::Tensor t = at::ones({16}, at::kFloat);
  bool ok = true;
  if (comm->rank() == 1) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    comm->abort("bad batch 17");
  } else {
    const auto start = Clock::now();
    const std::string msg = messageOf<DistError>([&] { comm->allReduce(t); });
    const double waited = std::chrono::duration<double>(Clock::now() - start).count();
    EXPECT_NE(msg.find("rank 1 failed: bad batch 17"), std::string::npos) << msg;
    EXPECT_LT(waited, 30.0);  // not the 60 s timeout (room for a busy machine)
    ok = !msg.empty();
  }
  EXPECT_TRUE(allRanks(ok));
}

}  // namespace
}  // namespace cohort::test
