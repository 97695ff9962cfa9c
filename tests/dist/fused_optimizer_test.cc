// FusedOptimizer over GradientSync's flat buffers against torch::optim::AdamW (an independent
// implementation) on the same model and gradients, with and without weight decay per
// parameter, in float64 and float32.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/activation.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include "cohort/dist/error.h"
#include "cohort/dist/fused_optimizer.h"
#include "test_util.h"

namespace cohort::test {
namespace {

torch::nn::Sequential makeModel(at::ScalarType type) {
  torch::manual_seed(3);
  torch::nn::Sequential m(torch::nn::Linear(16, 32), torch::nn::Tanh(), torch::nn::Linear(32, 8));
  m->to(type);
  return m;
}

// Max abs difference relative to the tensor's largest magnitude (elementwise ratios blow
// up on elements that happen to be near zero).
// Trains `fused` (GradientSync + FusedOptimizer) and `ref` (a torch optimizer) on the same
// random inputs for `steps` steps.
template <typename RefOpt>
void stepBoth(dist::GradientSync& sync, dist::FusedOptimizer& opt, torch::nn::Sequential& fused,
              torch::nn::Sequential& ref, RefOpt& refOpt, int steps, at::ScalarType type) {
  for (int step = 0; step < steps; ++step) {
    at::Tensor x = at::randn({4, 16}, type);
    sync.zeroGrad();
    fused->forward(x).pow(2).sum().backward();
    sync.finish();
    opt.step();
    refOpt.zero_grad();
    ref->forward(x).pow(2).sum().backward();
    refOpt.step();
  }
}

double maxRelDiff(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max()).item<double>();
}

void compareWithTorch(at::ScalarType type, double tol) {
  auto comm = worldComm();
  auto fused = makeModel(type);
  auto ref = makeModel(type);
  dist::GradientSync sync(*fused, *comm);  // world 1: a plain flat-buffer optimizer
  dist::OptimizerOptions o;
  o.lr = 1e-2;
  o.weightDecay = 0.1;
  auto noBias = [](const std::string& name) { return name.find("bias") == std::string::npos; };
  dist::FusedOptimizer opt(sync, o, noBias);

  std::vector<torch::Tensor> decay, plain;
  for (const auto& kv : ref->named_parameters()) (noBias(kv.key()) ? decay : plain).push_back(kv.value());
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(o.lr).weight_decay(0.1)));
  groups.emplace_back(plain, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(o.lr).weight_decay(0.0)));
  torch::optim::AdamW refOpt(std::move(groups), torch::optim::AdamWOptions(o.lr));

  at::manual_seed(11);
  stepBoth(sync, opt, fused, ref, refOpt, 6, type);
  auto fp = fused->named_parameters();
  auto rp = ref->named_parameters();
  for (const auto& kv : rp) {
    EXPECT_LE(maxRelDiff(fp[kv.key()], kv.value()), tol) << kv.key();
  }
  EXPECT_EQ(opt.stepCount(), 6);
  // The parameters really live in the flat buffers the optimizer updated.
  for (const auto& slot : sync.paramSlots()) {
    EXPECT_TRUE(fp[slot.name].is_alias_of(sync.bucketParameters()[slot.bucket])) << slot.name;
  }
}

TEST(UnitFusedOptimizer, MatchesTorchAdamWFloat64) { compareWithTorch(at::kDouble, 1e-12); }
TEST(UnitFusedOptimizer, MatchesTorchAdamWFloat32) { compareWithTorch(at::kFloat, 1e-5); }

// optim=sgd: torch.optim.SGD without momentum, weight decay added to the gradient.
TEST(UnitFusedOptimizer, SgdMatchesTorchSgd) {
  auto comm = worldComm();
  auto fused = makeModel(at::kDouble);
  auto ref = makeModel(at::kDouble);
  dist::GradientSync sync(*fused, *comm);
  dist::OptimizerOptions o;
  o.kind = dist::OptimizerKind::kSgd;
  o.lr = 0.05;
  o.weightDecay = 0.1;
  dist::FusedOptimizer opt(sync, o);
  torch::optim::SGD refOpt(ref->parameters(), torch::optim::SGDOptions(0.05).weight_decay(0.1));
  at::manual_seed(12);
  stepBoth(sync, opt, fused, ref, refOpt, 5, at::kDouble);
  auto fp = fused->named_parameters();
  for (const auto& kv : ref->named_parameters()) {
    EXPECT_LE(maxRelDiff(fp[kv.key()], kv.value()), 1e-12) << kv.key();
  }
  EXPECT_EQ(opt.expAvg()[0].numel(), 0);  // SGD keeps no moments
}

TEST(UnitFusedOptimizer, RejectsBadOptions) {
  auto comm = worldComm();
  auto m = makeModel(at::kFloat);
  dist::GradientSync sync(*m, *comm);
  dist::OptimizerOptions o;
  o.beta1 = 1.0;
  EXPECT_THROW(dist::FusedOptimizer(sync, o), ConfigError);
  dist::GradientSyncOptions so;
  so.flatParameters = false;
  auto m2 = makeModel(at::kFloat);
  dist::GradientSync sync2(*m2, *comm, so);
  EXPECT_THROW(dist::FusedOptimizer(sync2, dist::OptimizerOptions{}), ConfigError);
}

}  // namespace
}  // namespace cohort::test

namespace cohort::test {
namespace {

// ZeRO-1 style sharded update at 1, 2, 4 ranks: each rank reduce-scatters, updates its
// partition with 1/N of the optimizer state, and all-gathers the parameters. The result must
// equal ONE process training on the concatenated batch with torch::optim::AdamW.
TEST(ShardedUpdate, EqualsSingleProcessAdamWOnTheGlobalBatch) {
  auto comm = worldComm();
  const int n = comm->size(), r = comm->rank();
  const int64_t perRank = 3;
  auto fused = makeModel(at::kDouble);
  auto ref = makeModel(at::kDouble);
  // Ranks start from different weights: the constructor's broadcast must fix that.
  if (r > 0) {
    at::NoGradGuard g;
    for (auto& p : fused->parameters()) p.add_(0.25 * r);
  }
  dist::GradientSyncOptions so;
  so.shardedUpdate = true;
  so.bucketCapMb = 0.001;  // several buckets, each split across the ranks
  so.firstBucketCapMb = 0.0005;
  dist::GradientSync sync(*fused, *comm, so);
  dist::OptimizerOptions o;
  o.lr = 1e-2;
  o.weightDecay = 0.05;
  dist::FusedOptimizer opt(sync, o);
  torch::optim::AdamW refOpt(ref->parameters(), torch::optim::AdamWOptions(o.lr).weight_decay(0.05));

  at::manual_seed(5);
  for (int step = 0; step < 4; ++step) {
    at::Tensor x = at::randn({perRank * n, 16}, at::kDouble);  // same global batch everywhere
    at::Tensor y = at::randn({perRank * n, 8}, at::kDouble);
    sync.zeroGrad();
    at::Tensor mine = x.slice(0, r * perRank, (r + 1) * perRank);
    at::Tensor target = y.slice(0, r * perRank, (r + 1) * perRank);
    // Sum over this rank's rows / GLOBAL row count, SUM-reduced = the global mean.
    ((fused->forward(mine) - target).pow(2).sum() / static_cast<double>(perRank * n)).backward();
    sync.finish();
    opt.step();
    refOpt.zero_grad();
    ((ref->forward(x) - y).pow(2).sum() / static_cast<double>(perRank * n)).backward();
    refOpt.step();
  }
  double worst = 0;
  auto fp = fused->named_parameters();
  for (const auto& kv : ref->named_parameters()) {
    worst = std::max(worst, maxRelDiff(fp[kv.key()], kv.value()));
  }
  EXPECT_LE(worst, 1e-10);
  // Every rank holds the same parameters, bit for bit.
  at::Tensor flat = at::cat({sync.bucketParameters()});
  at::Tensor all = comm->allGather(flat);
  bool same = true;
  for (int i = 0; i < n; ++i) same = same && at::equal(all[i], flat);
  EXPECT_TRUE(same);
  // Optimizer state is 1/N of the parameters.
  int64_t moments = 0, params = 0;
  for (const auto& m : opt.expAvg()) moments += m.numel();
  for (const auto& p : sync.bucketParameters()) params += p.numel();
  EXPECT_LE(moments, params / n + static_cast<int64_t>(sync.numBuckets()));
  EXPECT_TRUE(allRanks(worst <= 1e-10 && same));
}

}  // namespace
}  // namespace cohort::test
