// Every collective x every dtype against a reference computed locally from what each rank
// contributed. Runs at world sizes 1, 2 and 4 (ctest).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <vector>

#include "cohort/dist/error.h"
#include "test_util.h"
#include "work_state.h"

namespace cohort::test {
namespace {

using dist::ReduceOp;

const std::vector<at::ScalarType> kAllTypes = {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf,
                                               at::kInt,   at::kLong,   at::kByte};

// Small integers: exact in every dtype, and sums over 4 ranks fit in uint8.
at::Tensor contribution(int rank, int64_t n, at::ScalarType t) {
  at::Tensor idx = at::arange(n, at::kDouble);
  return at::remainder(idx * 7 + rank * 3 + 1, 13).to(t);
}

at::Tensor referenceReduce(int size, int64_t n, at::ScalarType t, ReduceOp op) {
  at::Tensor acc;
  for (int r = 0; r < size; ++r) {
    at::Tensor c = contribution(r, n, t).to(at::kDouble);
    if (r == 0) {
      acc = c;
    } else if (op == ReduceOp::kSum || op == ReduceOp::kAvg) {
      acc = acc + c;
    } else if (op == ReduceOp::kMax) {
      acc = at::maximum(acc, c);
    } else {
      acc = at::minimum(acc, c);
    }
  }
  if (op == ReduceOp::kAvg) acc = acc / size;
  return acc.to(t);  // one rounding, in torch's own conversion
}

class AllReduceTest : public ::testing::TestWithParam<std::tuple<at::ScalarType, ReduceOp>> {};

TEST_P(AllReduceTest, MatchesReferenceForManySizes) {
  const auto [type, op] = GetParam();
  if (op == ReduceOp::kAvg && !at::isFloatingType(type)) GTEST_SKIP() << "AVG is float-only";
  // A 4 KiB slice makes the larger sizes run through many pipelined slices.
  auto comm = worldComm(60.0, 4096);
  bool ok = true;
  for (int64_t n : {0, 1, 3, 7, 1000, 25'013}) {
    at::Tensor t = contribution(comm->rank(), n, type);
    comm->allReduce(t, op);
    at::Tensor want = referenceReduce(comm->size(), n, type, op);
    const bool same = at::equal(t, want);
    EXPECT_TRUE(same) << "n=" << n << " dtype=" << c10::toString(type)
                      << " op=" << dist::toString(op);
    ok = ok && same;
  }
  EXPECT_TRUE(allRanks(ok));
}

INSTANTIATE_TEST_SUITE_P(
    DTypesAndOps, AllReduceTest,
    ::testing::Combine(::testing::ValuesIn(kAllTypes),
                       ::testing::Values(ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kMin,
                                         ReduceOp::kAvg)));

// Half types are summed in float32 and rounded once: 256 + 1 + 1 + 1 = 259 -> bf16 260.
// Accumulating in bf16 hop by hop would give 256 (each +1 rounds away).
TEST(AllReduceHalf, SumsAreRoundedOnceNotPerHop) {
  auto comm = worldComm();
  bool ok = true;
  for (auto type : {at::kBFloat16, at::kHalf}) {
    const double big = type == at::kBFloat16 ? 256.0 : 2048.0;
    at::Tensor t = at::full({5}, comm->rank() == 0 ? big : 1.0, at::TensorOptions().dtype(type));
    comm->allReduce(t);
    const double exact = big + (comm->size() - 1);
    at::Tensor want = at::full({5}, exact, at::kDouble).to(at::kFloat).to(type);
    const bool same = at::equal(t, want);
    EXPECT_TRUE(same) << c10::toString(type) << " got " << t[0].item<double>() << " want "
                      << want[0].item<double>();
    ok = ok && same;
  }
  EXPECT_TRUE(allRanks(ok));
}

TEST(AllReduce, AsyncHandlesCompleteInIssueOrder) {
  auto comm = worldComm();
  std::vector<at::Tensor> ts;
  std::vector<std::unique_ptr<dist::Work>> works;
  for (int i = 0; i < 8; ++i) {
    ts.push_back(at::full({1000 + i}, static_cast<double>(comm->rank() + i), at::kDouble));
    works.push_back(comm->allReduceAsync(ts.back()));
  }
  bool ok = true;
  for (int i = 7; i >= 0; --i) {  // waiting out of order is allowed
    works[i]->wait();
    EXPECT_TRUE(works[i]->isCompleted());
    const double want = comm->size() * (comm->size() - 1) / 2.0 + comm->size() * i;
    ok = ok && at::allclose(ts[i], at::full_like(ts[i], want), 0, 0);
  }
  EXPECT_TRUE(allRanks(ok));
}

// A blocking call's collective runs on the calling thread, in wait(): the engine thread
// leaves it alone (no hand-off). Before wait() nothing has moved, on any rank.
TEST(AllReduce, BlockingCallsRunOnTheCallingThread) {
  auto comm = worldComm();
  at::Tensor t = at::full({4096}, static_cast<double>(comm->rank() + 1), at::kDouble);
  std::unique_ptr<dist::Work> work;
  {
    dist::detail::CallerWaitsScope callerWaits;  // what Communicator::allReduce sets
    work = comm->allReduceAsync(t);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const bool untouched = at::equal(t, at::full_like(t, comm->rank() + 1.0));
  EXPECT_TRUE(untouched) << "the engine ran a collective whose caller was about to run it";
  work->wait();
  const double want = comm->size() * (comm->size() + 1) / 2.0;
  EXPECT_TRUE(allRanks(untouched && at::equal(t, at::full_like(t, want))));
}

// ... and when its Work is dropped without wait(), the engine runs it after all.
TEST(AllReduce, DroppedBlockingStyleWorkStillCompletes) {
  auto comm = worldComm();
  at::Tensor t = at::full({4096}, static_cast<double>(comm->rank() + 1), at::kDouble);
  {
    dist::detail::CallerWaitsScope callerWaits;
    comm->allReduceAsync(t);  // the Work dies here
  }
  const double want = comm->size() * (comm->size() + 1) / 2.0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  bool done = false;
  while (!done && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    done = at::equal(t, at::full_like(t, want));
  }
  EXPECT_TRUE(done) << "a dropped collective never ran";
  comm->barrier();  // the next collective still works
  EXPECT_TRUE(allRanks(done));
}

// Async collectives (engine) and blocking ones (caller) issued back to back keep the order.
TEST(AllReduce, AsyncAndBlockingCallsInterleave) {
  auto comm = worldComm();
  const int n = comm->size();
  bool ok = true;
  for (int round = 0; round < 20; ++round) {
    at::Tensor a = at::full({3000 + round}, static_cast<double>(comm->rank()), at::kDouble);
    at::Tensor b = at::full({17}, static_cast<double>(round + comm->rank()), at::kDouble);
    auto wa = comm->allReduceAsync(a);
    comm->allReduce(b);  // queued behind a
    wa->wait();
    ok = ok && at::equal(a, at::full_like(a, n * (n - 1) / 2.0)) &&
         at::equal(b, at::full_like(b, n * round + n * (n - 1) / 2.0));
  }
  EXPECT_TRUE(allRanks(ok));
}

class PerTypeTest : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(PerTypeTest, BroadcastFromEveryRoot) {
  auto comm = worldComm();
  bool ok = true;
  for (int root = 0; root < comm->size(); ++root) {
    at::Tensor t = contribution(comm->rank(), 777, GetParam());
    comm->broadcast(t, root);
    ok = ok && at::equal(t, contribution(root, 777, GetParam()));
  }
  EXPECT_TRUE(allRanks(ok));
}

TEST_P(PerTypeTest, AllGatherSameShape) {
  auto comm = worldComm();
  at::Tensor mine = contribution(comm->rank(), 12, GetParam()).reshape({3, 4});
  at::Tensor all = comm->allGather(mine);
  bool ok = all.sizes() == at::IntArrayRef({comm->size(), 3, 4});
  for (int r = 0; ok && r < comm->size(); ++r) {
    ok = at::equal(all[r], contribution(r, 12, GetParam()).reshape({3, 4}));
  }
  EXPECT_TRUE(allRanks(ok));
}

// Rank r contributes r rows (rank 0 none), trailing dims [2, 3].
TEST_P(PerTypeTest, AllGatherVAndGatherVWithUnevenRows) {
  auto comm = worldComm();
  auto rowsOf = [](int r) { return contribution(r, r * 6, at::kDouble).reshape({r, 2, 3}); };
  at::Tensor mine = rowsOf(comm->rank()).to(GetParam());
  std::vector<at::Tensor> parts;
  for (int r = 0; r < comm->size(); ++r) parts.push_back(rowsOf(r).to(GetParam()));
  at::Tensor want = at::cat(parts, 0);

  std::vector<int64_t> rows;
  at::Tensor all = comm->allGatherV(mine, &rows);
  bool ok = at::equal(all, want);
  for (int r = 0; r < comm->size(); ++r) ok = ok && rows[r] == r;
  for (int root : {0, comm->size() - 1}) {
    auto got = comm->gatherV(mine, root);
    ok = ok && (comm->rank() == root ? (got.has_value() && at::equal(*got, want))
                                     : !got.has_value());
  }
  EXPECT_TRUE(allRanks(ok));
}

INSTANTIATE_TEST_SUITE_P(DTypes, PerTypeTest, ::testing::ValuesIn(kAllTypes));

TEST(Barrier, AllRanksPass) {
  auto comm = worldComm();
  for (int i = 0; i < 5; ++i) comm->barrier();
  SUCCEED();
}

TEST(Topology, MatchesMpi) {
  const auto& t = gRuntime->topology();
  int rank = -1, size = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  EXPECT_EQ(t.rank, rank);
  EXPECT_EQ(t.worldSize, size);
  // ctest runs every rank on this one host.
  EXPECT_EQ(t.localRank, rank);
  EXPECT_EQ(t.localSize, size);
  EXPECT_EQ(t.nodeIndex, 0);
  EXPECT_EQ(t.nodeCount, 1);
  EXPECT_FALSE(t.hostname.empty());
}

}  // namespace
}  // namespace cohort::test

namespace cohort::test {
namespace {

// reduce_scatter leaves each rank's partition reduced; all_gather_partitions then restores
// the full all-reduce result. Sizes cover partitions of unequal and zero length and many
// slices (4 KiB slice).
class PartitionTest : public ::testing::TestWithParam<std::tuple<at::ScalarType, ReduceOp>> {};

TEST_P(PartitionTest, ReduceScatterThenAllGatherEqualsAllReduce) {
  const auto [type, op] = GetParam();
  if (op == ReduceOp::kAvg && !at::isFloatingType(type)) GTEST_SKIP() << "AVG is float-only";
  auto comm = worldComm(60.0, 4096);
  bool ok = true;
  for (int64_t n : {0, 1, 3, 1000, 25'013}) {
    at::Tensor t = contribution(comm->rank(), n, type);
    at::Tensor want = referenceReduce(comm->size(), n, type, op);
    comm->reduceScatterAsync(t, op)->wait();
    const auto [lo, hi] = dist::partitionOf(n, comm->size(), comm->rank());
    const bool mine = at::equal(t.slice(0, lo, hi), want.slice(0, lo, hi));
    comm->allGatherPartitionsAsync(t)->wait();
    const bool all = at::equal(t, want);
    EXPECT_TRUE(mine && all) << "n=" << n << " dtype=" << c10::toString(type)
                             << " op=" << dist::toString(op) << " own=" << mine;
    ok = ok && mine && all;
  }
  EXPECT_TRUE(allRanks(ok));
}

INSTANTIATE_TEST_SUITE_P(DTypesAndOps, PartitionTest,
                         ::testing::Combine(::testing::ValuesIn(kAllTypes),
                                            ::testing::Values(ReduceOp::kSum, ReduceOp::kMax,
                                                              ReduceOp::kAvg)));

}  // namespace
}  // namespace cohort::test
