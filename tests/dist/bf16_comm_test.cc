// GradientSyncOptions::bf16Communication at world sizes 1, 2 and 4: float32 gradient buckets
// are rounded to bf16, reduced in bf16 (summed in float32 in rank order, rounded once) and
// widened back into the float32 gradients, for the all-reduce and the reduce-scatter
// (sharded) paths; the bytes handed to the communicator are half those of float32.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <mpi.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>

#include <vector>

#include "cohort/dist/gradient_sync.h"
#include "test_util.h"

namespace cohort::test {
namespace {

// Rank-dependent input whose gradients need more than bf16's 8 significant bits.
at::Tensor inputOf(int rank) {
  return at::sin(at::arange(6 * 40, at::kFloat).reshape({6, 40}) * (0.37 + 0.11 * rank)) * 3.1;
}

struct StepRun {
  std::vector<at::Tensor> local, reduced;  // per parameter: before / after the reduction
  std::int64_t bytes = 0;
};

StepRun runStep(bool bf16, bool sharded) {
  auto comm = worldComm();
  at::manual_seed(3);
  torch::nn::Sequential model(torch::nn::Linear(40, 24), torch::nn::Linear(24, 5));
  dist::GradientSyncOptions o;
  o.firstBucketCapMb = o.bucketCapMb = 2000.0 / (1 << 20);  // several buckets
  o.overlap = false;  // the local gradients can be read after backward, before the reduction
  o.shardedUpdate = sharded;
  o.bf16Communication = bf16;
  dist::GradientSync sync(*model, *comm, o);
  StepRun r;
  for (int step = 0; step < 2; ++step) {  // the second step reuses the bf16 buffers
    sync.zeroGrad();
    model->forward(inputOf(comm->rank() + step)).pow(2).sum().backward();
    r.local.clear();
    for (const auto& p : model->parameters()) r.local.push_back(p.grad().clone());
    sync.finish();
  }
  for (const auto& p : model->parameters()) r.reduced.push_back(p.grad().clone());
  r.bytes = sync.lastStepCommBytes();
  // Which elements this rank holds reduced: its partition of each bucket when sharded.
  if (sharded) {
    for (std::size_t i = 0; i < sync.paramSlots().size(); ++i) {
      const dist::ParamSlot& s = sync.paramSlots()[i];
      const auto [lo, hi] = sync.ownedRange(s.bucket);
      at::Tensor mask = at::zeros({s.numel}, at::kBool);
      const std::int64_t a = std::max(lo, s.offset), b = std::min(hi, s.offset + s.numel);
      if (a < b) mask.narrow(0, a - s.offset, b - a).fill_(true);
      r.reduced[i] = at::where(mask.view(r.reduced[i].sizes()), r.reduced[i],
                               at::full_like(r.reduced[i], NAN));
    }
  }
  return r;
}

at::Tensor roundBf16(const at::Tensor& t) { return t.to(at::kBFloat16).to(at::kFloat); }

// sum over ranks (in rank order, float32) of bf16(local), rounded once to bf16.
at::Tensor expectedSum(const at::Tensor& local, int world) {
  at::Tensor mine = roundBf16(local).contiguous();
  at::Tensor all = at::empty({world, mine.numel()}, at::kFloat);
  MPI_Allgather(mine.data_ptr(), static_cast<int>(mine.numel()), MPI_FLOAT, all.data_ptr(),
                static_cast<int>(mine.numel()), MPI_FLOAT, MPI_COMM_WORLD);
  at::Tensor acc = at::zeros({mine.numel()}, at::kFloat);
  for (int r = 0; r < world; ++r) acc.add_(all[r]);
  return roundBf16(acc).view(local.sizes());
}

TEST(GradientSyncBf16, BucketsAreSummedInBf16IntoFloat32Gradients) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  bool ok = true;
  for (bool sharded : {false, true}) {
    const StepRun bf16 = runStep(true, sharded);
    const StepRun fp32 = runStep(false, sharded);
    bool exact = true, differs = false;
    for (std::size_t i = 0; i < bf16.local.size(); ++i) {
      const at::Tensor want = expectedSum(bf16.local[i], world);
      const at::Tensor got = bf16.reduced[i];
      const at::Tensor held = got.isnan().logical_not();  // NaN: not this rank's partition
      exact = exact && at::equal(got.masked_select(held), want.masked_select(held));
      differs = differs || !at::equal(got.masked_select(held), fp32.reduced[i].masked_select(held));
      EXPECT_EQ(bf16.reduced[i].scalar_type(), at::kFloat);
    }
    EXPECT_TRUE(exact) << "sharded " << sharded << ": not the bf16 sum rounded once";
    EXPECT_TRUE(differs) << "sharded " << sharded << ": identical to float32 communication";
    EXPECT_GT(fp32.bytes, 0);
    EXPECT_EQ(2 * bf16.bytes, fp32.bytes) << "sharded " << sharded;
    ok = ok && exact && differs && 2 * bf16.bytes == fp32.bytes;
  }
  EXPECT_TRUE(allRanks(ok));
}

}  // namespace
}  // namespace cohort::test
