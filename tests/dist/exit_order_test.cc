// dist::ExitOrder with real ranks: the other ranks wait for the root's notice (not less),
// the wait is bounded when the root never reports, it works on a sub-group (the group's
// root reports, not world rank 0), and the Runtime keeps one for the world.
#include "cohort/dist/exit_order.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <thread>

#include "test_util.h"

namespace cohort::test {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

dist::ExitOrderOptions options(double waitSeconds) {
  dist::ExitOrderOptions o;
  o.waitSeconds = waitSeconds;
  o.sendSeconds = 1.0;
  return o;
}

TEST(ExitOrder, OtherRanksWaitForTheRootsNotice) {
  MPI_Comm comm = MPI_COMM_NULL;
  MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  bool ok = true;
  {
    dist::ExitOrder order(comm, options(30.0));
    const auto start = Clock::now();
    if (order.rank() == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(400));  // "printing"
      ok = order.rootReported();
      EXPECT_TRUE(ok);
    } else {
      ok = order.waitForRoot();
      const double waited = since(start);
      EXPECT_TRUE(ok);
      EXPECT_GE(waited, 0.3);   // it did wait for the root
      EXPECT_LE(waited, 20.0);  // and returned on its notice, not at the 30 s limit
      ok = ok && waited >= 0.3 && waited <= 20.0;
    }
  }
  EXPECT_TRUE(allRanks(ok));
  MPI_Comm_free(&comm);
}

TEST(ExitOrder, TheWaitIsBoundedWhenTheRootNeverReports) {
  MPI_Comm comm = MPI_COMM_NULL;
  MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  bool ok = true;
  {
    dist::ExitOrder order(comm, options(0.5));
    if (order.rank() != 0) {
      const auto start = Clock::now();
      const bool came = order.waitForRoot();
      const double waited = since(start);
      EXPECT_FALSE(came);
      EXPECT_GE(waited, 0.45);
      EXPECT_LE(waited, 10.0);
      ok = !came && waited >= 0.45 && waited <= 10.0;
    }
  }
  EXPECT_TRUE(allRanks(ok));
  MPI_Comm_free(&comm);
}

TEST(ExitOrder, OnASubGroupTheGroupsRootReports) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm group = MPI_COMM_NULL;
  MPI_Comm_split(MPI_COMM_WORLD, rank % 2, rank, &group);
  bool ok = true;
  {
    dist::ExitOrder order(group, options(20.0));
    // The odd group's root is world rank 1: it must report, and its peers hear it.
    ok = order.rank() == 0 ? order.rootReported() : order.waitForRoot();
    EXPECT_TRUE(ok) << "world rank " << rank << ", group rank " << order.rank();
  }
  EXPECT_TRUE(allRanks(ok));
  MPI_Comm_free(&group);
}

TEST(ExitOrder, TheRuntimeKeepsOneForTheWorld) {
  dist::ExitOrder* world = dist::worldExitOrder();
  ASSERT_TRUE(allRanks(world != nullptr));
  EXPECT_EQ(world->rank(), gRuntime->rank());
  EXPECT_EQ(world->size(), gRuntime->worldSize());
}

}  // namespace
}  // namespace cohort::test
