// Bad input gets a typed error naming the problem, on every rank, and no hang.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "cohort/dist/device.h"
#include "cohort/dist/error.h"
#include "test_util.h"

namespace cohort::test {
namespace {

TEST(BadInput, UnsupportedDtypeIsNamed) {
  auto comm = worldComm();
  at::Tensor t = at::zeros({4}, at::kBool);
  const std::string msg = messageOf<DistError>([&] { comm->allReduce(t); });
  EXPECT_NE(msg.find("dtype Bool is not supported"), std::string::npos) << msg;
  EXPECT_TRUE(allRanks(!msg.empty()));
}

TEST(BadInput, WrongDeviceIsNamed) {
  auto comm = worldComm();
  at::Tensor t = at::empty({4}, at::TensorOptions().device(at::kMeta).dtype(at::kFloat));
  const std::string msg = messageOf<DistError>([&] { comm->allReduce(t); });
  EXPECT_NE(msg.find("tensor on meta"), std::string::npos) << msg;
  EXPECT_TRUE(allRanks(!msg.empty()));
}

TEST(BadInput, NonContiguousIsRejected) {
  auto comm = worldComm();
  at::Tensor t = at::zeros({4, 4}, at::kFloat).t();
  const std::string msg = messageOf<DistError>([&] { comm->allReduce(t); });
  EXPECT_NE(msg.find("contiguous"), std::string::npos) << msg;
}

TEST(BadInput, AvgOfIntegersIsRejected) {
  auto comm = worldComm();
  at::Tensor t = at::zeros({4}, at::kLong);
  const std::string msg = messageOf<DistError>([&] { comm->allReduce(t, dist::ReduceOp::kAvg); });
  EXPECT_NE(msg.find("AVG needs a floating dtype"), std::string::npos) << msg;
}

// Rank-dependent sizes: every rank gets the same DistError (no hang, no truncation), and
// the communicator still works afterwards.
TEST(BadInput, MismatchedAllReduceSizesFailOnEveryRank) {
  auto comm = worldComm(20.0);
  if (comm->size() == 1) GTEST_SKIP() << "needs two ranks";
  at::Tensor t = at::ones({10 + comm->rank()}, at::kFloat);
  const std::string msg = messageOf<DistError>([&] { comm->allReduce(t); });
  EXPECT_NE(msg.find("ranks disagree on the element count"), std::string::npos) << msg;
  at::Tensor ok = at::ones({3}, at::kFloat);
  comm->allReduce(ok);
  EXPECT_TRUE(at::equal(ok, at::full({3}, static_cast<float>(comm->size()))));
  EXPECT_TRUE(allRanks(!msg.empty()));
}

TEST(BadInput, MismatchedDtypeAndCollectiveAreNamed) {
  auto comm = worldComm(20.0);
  if (comm->size() == 1) GTEST_SKIP() << "needs two ranks";
  at::Tensor t = at::ones({8}, comm->rank() == 0 ? at::kFloat : at::kDouble);
  std::string msg = messageOf<DistError>([&] { comm->allReduce(t); });
  EXPECT_NE(msg.find("ranks disagree on the dtype (float32 vs float64)"), std::string::npos)
      << msg;
  at::Tensor u = at::ones({8}, at::kFloat);
  std::string msg2 = messageOf<DistError>([&] {
    if (comm->rank() == 0) {
      comm->broadcast(u, 0);
    } else {
      comm->allReduce(u);
    }
  });
  EXPECT_NE(msg2.find("ranks disagree on the collective"), std::string::npos) << msg2;
  EXPECT_TRUE(allRanks(!msg.empty() && !msg2.empty()));
}

// Two ranks send an all_reduce's signature together with its first slice (512 KiB here:
// past the eager limit, so the peer must take the whole message). Disagreeing ops still
// give every rank the error, leave the buffer as it was and the group in step.
TEST(BadInput, MismatchesWithLargeBuffersLeaveTheGroupInStep) {
  auto comm = worldComm(20.0);
  if (comm->size() == 1) GTEST_SKIP() << "needs two ranks";
  const std::int64_t n = 300000;
  at::Tensor a = at::arange(n + comm->rank(), at::kFloat);
  const at::Tensor a0 = a.clone();
  const std::string count = messageOf<DistError>([&] { comm->allReduce(a); });
  EXPECT_NE(count.find("ranks disagree on the element count"), std::string::npos) << count;
  at::Tensor b = comm->rank() == 0 ? at::arange(n, at::kFloat) : at::arange(n, at::kInt);
  const at::Tensor b0 = b.clone();
  const std::string dtype = messageOf<DistError>([&] { comm->allReduce(b); });
  EXPECT_NE(dtype.find("ranks disagree on the dtype (float32 vs int32)"), std::string::npos)
      << dtype;
  at::Tensor c = at::arange(n, at::kFloat);
  const at::Tensor c0 = c.clone();
  const std::string kind = messageOf<DistError>([&] {
    if (comm->rank() == 1) {
      comm->broadcast(c, 0);
    } else {
      comm->allReduce(c);
    }
  });
  EXPECT_NE(kind.find("ranks disagree on the collective"), std::string::npos) << kind;
  const bool untouched = at::equal(a, a0) && at::equal(b, b0) && at::equal(c, c0);
  EXPECT_TRUE(untouched);
  at::Tensor ok = at::full({n}, static_cast<float>(comm->rank() + 1));
  comm->allReduce(ok);
  const float want = static_cast<float>(comm->size() * (comm->size() + 1) / 2);
  EXPECT_TRUE(at::equal(ok, at::full({n}, want)));
  EXPECT_TRUE(allRanks(!count.empty() && !dtype.empty() && !kind.empty() && untouched));
}

// The slice size and the argument check shape the messages of every collective: a rank
// that differs is a ConfigError on every rank when the communicator is made, not a
// truncated message or a hang in the first collective.
TEST(BadInput, SliceSizeOrCheckThatDiffersAcrossRanksIsAConfigError) {
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size == 1) GTEST_SKIP() << "needs two ranks";
  dist::BackendOptions o;
  o.timeoutSeconds = 20;
  o.sliceBytes = (std::size_t{1} << 20) + (gRuntime->rank() == 1 ? 4096 : 0);
  const std::string slice =
      messageOf<ConfigError>([&] { dist::makeMpiBackend(MPI_COMM_WORLD, o); });
  EXPECT_NE(slice.find("COHORT_ALLREDUCE_SLICE_BYTES differs across ranks (from 1048576 to "
                       "1052672 bytes)"),
            std::string::npos)
      << slice;
  o.sliceBytes = std::size_t{1} << 20;
  o.checkArguments = gRuntime->rank() != 1;
  const std::string check =
      messageOf<ConfigError>([&] { dist::makeMpiBackend(MPI_COMM_WORLD, o); });
  EXPECT_NE(check.find("COHORT_CHECK_COLLECTIVES is on for some ranks"), std::string::npos)
      << check;
  EXPECT_TRUE(allRanks(!slice.empty() && !check.empty()));
}

TEST(BadInput, MismatchedAllGatherShapesAreNamed) {
  auto comm = worldComm(20.0);
  if (comm->size() == 1) GTEST_SKIP() << "needs two ranks";
  at::Tensor t = at::ones({2, comm->rank() == 1 ? 5 : 4}, at::kFloat);
  const std::string msg = messageOf<DistError>([&] { comm->allGather(t); });
  EXPECT_NE(msg.find("rank 1 has shape [2, 5]"), std::string::npos) << msg;
  // all_gather_v allows dim 0 to differ but not the trailing dims.
  at::Tensor v = at::ones({comm->rank() + 1, comm->rank() == 1 ? 3 : 2}, at::kFloat);
  const std::string msg2 = messageOf<DistError>([&] { comm->allGatherV(v); });
  EXPECT_NE(msg2.find("only dim 0 may differ"), std::string::npos) << msg2;
  EXPECT_TRUE(allRanks(!msg.empty() && !msg2.empty()));
}

TEST(BadInput, BadRootIsNamed) {
  auto comm = worldComm();
  at::Tensor t = at::ones({2}, at::kFloat);
  const std::string msg = messageOf<DistError>([&] { comm->broadcast(t, comm->size()); });
  EXPECT_NE(msg.find("is not a rank of this group"), std::string::npos) << msg;
}

// Without a GPU, asking for CUDA is one clear error naming the rank.
TEST(Device, CudaWithoutGpuIsAClearError) {
  if (dist::visibleCudaDeviceCount() > 0) GTEST_SKIP() << "a GPU is visible on this machine";
  const std::string msg = messageOf<DistError>([&] {
    dist::chooseDevice(gRuntime->topology(), dist::visibleCudaDeviceCount(), "cuda", false);
  });
  EXPECT_EQ(msg, "no CUDA device visible to rank " + std::to_string(gRuntime->rank()) +
                     " (COHORT_DEVICE=cuda)");
  const auto autoChoice = dist::chooseDevice(*gRuntime);
  EXPECT_EQ(autoChoice.kind, dist::DeviceKind::kCpu);
}

}  // namespace
}  // namespace cohort::test
