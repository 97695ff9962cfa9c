// countItems (pure, Unit*) and the one-all-reduce step statistics (every world size).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <atomic>

#include "cohort/dist/batch_stats.h"
#include "cohort/dist/error.h"
#include "counting_backend.h"
#include "test_util.h"

namespace cohort::test {
namespace {

using dist::StepStatsSlot;

at::Tensor labels2d(std::vector<std::int64_t> v, std::int64_t rows) {
  const auto cols = static_cast<std::int64_t>(v.size()) / rows;
  return at::tensor(v, at::kLong).view({rows, cols});
}

TEST(UnitCountItems, CountsNonIgnoredLabels) {
  const auto a = labels2d({5, 1, -100, -100, 2, 3, 4, -100}, 2);
  const auto b = labels2d({-100, 7, 8}, 1);
  EXPECT_EQ(dist::countItems({a}), 5);
  EXPECT_EQ(dist::countItems({a, b}), 7);
  EXPECT_EQ(dist::countItems({}), 0);
}

// Causal LM: position t predicts t+1, so the first label of each row is never a target.
// Counting before the shift would add one item per row (the Hugging Face bug).
TEST(UnitCountItems, ShiftLabelsDropsTheFirstPositionOfEachRow) {
  const auto a = labels2d({5, 1, -100, -100, 2, 3, 4, -100}, 2);
  EXPECT_EQ(dist::countItems({a}, -100, /*shiftLabels=*/true), 3);  // {1}, {3, 4}
  const auto b = labels2d({-100, 7, 8}, 1);
  EXPECT_EQ(dist::countItems({a, b}, -100, true), 5);
  EXPECT_EQ(dist::countItems({at::tensor(std::vector<std::int64_t>{9, 9, 9}, at::kLong)}, -100,
                             true),
            2);  // 1-D labels shift along their only dim
  EXPECT_EQ(dist::countItems({at::full({3, 1}, 4, at::kLong)}, -100, true), 0);
  EXPECT_EQ(dist::countItems({at::zeros({2, 0}, at::kLong)}, -100, true), 0);
}

TEST(UnitCountItems, CustomIgnoreIndexAndIntTypes) {
  const auto a = at::tensor(std::vector<std::int32_t>{0, -1, 3, -1}, at::kInt);
  EXPECT_EQ(dist::countItems({a}, /*ignoreIndex=*/-1), 2);
  EXPECT_EQ(dist::countItems({a}, -1, true), 1);
}

TEST(UnitCountItems, RejectsNonIntegerOrUndefinedLabels) {
  EXPECT_NE(messageOf<DistError>([] { dist::countItems({at::ones({2, 2})}); }), "");
  EXPECT_NE(messageOf<DistError>([] { dist::countItems({at::Tensor()}); }), "");
  EXPECT_NE(messageOf<DistError>(
                [] { dist::countItems({at::scalar_tensor(1, at::kLong)}, -100, true); }),
            "");
}

TEST(UnitStepStats, SlotLayoutIsStable) {
  // Later features append slots; these two must never move (peers of one job agree).
  EXPECT_EQ(static_cast<std::size_t>(StepStatsSlot::kNumItems), 0u);
  EXPECT_EQ(static_cast<std::size_t>(StepStatsSlot::kStopRequested), 1u);
  dist::StepStats s;
  for (auto v : s.values) EXPECT_EQ(v, 0);
}

TEST(StepStats, OneCollectiveCarriesItemsAndStopFlag) {
  CountingBackend* counter = nullptr;
  auto commPtr = countingComm(&counter);
  dist::Communicator& comm = *commPtr;
  const int n = comm.size();
  // Unequal counts per rank; only the last rank asks to stop.
  const auto s = dist::reduceStepStats(comm, 10 * (comm.rank() + 1) + 1,
                                       comm.rank() == n - 1);
  const bool one = counter->total == 1;
  EXPECT_TRUE(one) << counter->total << " collectives";
  EXPECT_EQ(s.numItems, 10 * n * (n + 1) / 2 + n);
  EXPECT_TRUE(s.stopRequested);
  EXPECT_EQ(s.ranksRequestingStop, 1);
  const auto quiet = dist::reduceStepStats(comm, 0, false);
  EXPECT_EQ(quiet.numItems, 0);
  EXPECT_FALSE(quiet.stopRequested);
  EXPECT_TRUE(allRanks(one && s.numItems == 10 * n * (n + 1) / 2 + n && s.stopRequested &&
                       !quiet.stopRequested));
}

}  // namespace
}  // namespace cohort::test
