// FusedOptimizer over GradientSync's flat buffers against torch::optim::AdamW (an independent
// implementation) on the same model and gradients, with and without weight decay per
// parameter, in float64 and float32; its tensor-op (device) path against its host loop, on
// CPU (forced with OptimizerPath::kTensorOps), replicated and sharded; and the tensor-op path
// on `meta` tensors, which have no host memory at all.
#include <ATen/ATen.h>
#include <cstdio>
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

namespace cohort::test {
namespace {

// Three layers so that small bucket caps give several buckets, some with weights and biases
// mixed (a decay mask), some all-decay or no-decay.
torch::nn::Sequential makeDeepModel(at::ScalarType type) {
  torch::manual_seed(4);
  torch::nn::Sequential m(torch::nn::Linear(16, 32), torch::nn::Tanh(), torch::nn::Linear(32, 32),
                          torch::nn::Tanh(), torch::nn::Linear(32, 8));
  m->to(type);
  return m;
}

bool notBias(const std::string& name) { return name.find("bias") == std::string::npos; }

struct PathCase {
  at::ScalarType type;
  dist::OptimizerKind kind;
  double weightDecay;
  bool biasesDecay;  // false: HF's groups (no decay on biases)
  bool sharded;
};

// Max relative difference over all buckets of two optimizers' parameters and moments.
double worstPathDiff(dist::GradientSync& a, dist::GradientSync& b, dist::FusedOptimizer& oa,
                     dist::FusedOptimizer& ob) {
  double worst = 0;
  for (std::size_t k = 0; k < a.numBuckets(); ++k) {
    worst = std::max(worst, maxRelDiff(a.bucketParameters()[k], b.bucketParameters()[k]));
    if (oa.expAvg()[k].numel() == 0 || !oa.expAvg()[k].abs().max().item<double>()) continue;
    worst = std::max(worst, maxRelDiff(oa.expAvg()[k], ob.expAvg()[k]));
    worst = std::max(worst, maxRelDiff(oa.expAvgSq()[k], ob.expAvgSq()[k]));
  }
  return worst;
}

// The host loop and the tensor-op path train two copies of a model on the same batches for
// 30 steps with a changing learning rate (a scheduler's). Returns the worst relative
// difference of parameters and moments on this rank (and checks the paths were the ones
// asked for). Sharded: every rank trains its slice of the same global batch.
double hostVsTensorOps(const PathCase& c) {
  auto comm = worldComm();
  const int n = comm->size(), r = comm->rank();
  auto hostModel = makeDeepModel(c.type);
  auto opsModel = makeDeepModel(c.type);
  dist::GradientSyncOptions so;
  so.firstBucketCapMb = 0.00005;  // the last bias alone (float64): a no-decay bucket
  so.bucketCapMb = 0.002;         // then mixed and all-decay buckets
  so.shardedUpdate = c.sharded;
  dist::GradientSync hostSync(*hostModel, *comm, so), opsSync(*opsModel, *comm, so);
  dist::OptimizerOptions o;
  o.kind = c.kind;
  o.lr = c.kind == dist::OptimizerKind::kSgd ? 0.05 : 1e-2;
  o.weightDecay = c.weightDecay;
  std::function<bool(const std::string&)> decay;
  if (!c.biasesDecay) decay = notBias;
  dist::FusedOptimizer hostOpt(hostSync, o, decay);
  o.path = dist::OptimizerPath::kTensorOps;
  dist::FusedOptimizer opsOpt(opsSync, o, decay);
  EXPECT_GE(hostSync.numBuckets(), 3u);
  EXPECT_TRUE(hostOpt.usesHostLoop());
  EXPECT_FALSE(opsOpt.usesHostLoop());

  at::manual_seed(21);
  const int steps = 30, perRank = 2;
  for (int step = 0; step < steps; ++step) {
    at::Tensor x = at::randn({perRank * n, 16}, c.type).slice(0, r * perRank, (r + 1) * perRank);
    for (auto* pair : {&hostSync, &opsSync}) pair->zeroGrad();
    (hostModel->forward(x).pow(2).sum() / double(perRank * n)).backward();
    (opsModel->forward(x).pow(2).sum() / double(perRank * n)).backward();
    hostSync.finish();
    opsSync.finish();
    const double lr = o.lr * (1.0 - 0.5 * step / steps);
    hostOpt.step(lr);
    opsOpt.step(lr);
  }
  EXPECT_EQ(opsOpt.stepCount(), steps);
  const double worst = worstPathDiff(hostSync, opsSync, hostOpt, opsOpt);
  if (r == 0) {
    std::printf("host loop vs tensor ops, %s %s wd %g%s%s, %zu buckets, %d steps: %.3g\n",
                c10::toString(c.type), c.kind == dist::OptimizerKind::kSgd ? "SGD" : "AdamW",
                c.weightDecay, c.biasesDecay ? "" : " (not biases)", c.sharded ? " sharded" : "",
                hostSync.numBuckets(), steps, worst);
  }
  return worst;
}

using dist::OptimizerKind;

TEST(UnitOptimizerPaths, AdamWFloat64DecayGroups) {
  EXPECT_LE(hostVsTensorOps({at::kDouble, OptimizerKind::kAdamW, 0.1, false, false}), 1e-12);
}
TEST(UnitOptimizerPaths, AdamWFloat64AllDecay) {
  EXPECT_LE(hostVsTensorOps({at::kDouble, OptimizerKind::kAdamW, 0.05, true, false}), 1e-12);
}
TEST(UnitOptimizerPaths, AdamWFloat64NoDecay) {
  EXPECT_LE(hostVsTensorOps({at::kDouble, OptimizerKind::kAdamW, 0.0, false, false}), 1e-12);
}
TEST(UnitOptimizerPaths, AdamWFloat32DecayGroups) {
  EXPECT_LE(hostVsTensorOps({at::kFloat, OptimizerKind::kAdamW, 0.1, false, false}), 1e-5);
}
TEST(UnitOptimizerPaths, SgdFloat64DecayGroups) {
  EXPECT_LE(hostVsTensorOps({at::kDouble, OptimizerKind::kSgd, 0.1, false, false}), 1e-12);
}
TEST(UnitOptimizerPaths, SgdFloat64NoDecay) {
  EXPECT_LE(hostVsTensorOps({at::kDouble, OptimizerKind::kSgd, 0.0, true, false}), 1e-12);
}
TEST(UnitOptimizerPaths, SgdFloat32AllDecay) {
  EXPECT_LE(hostVsTensorOps({at::kFloat, OptimizerKind::kSgd, 0.1, true, false}), 1e-5);
}

// Sharded (run at 1, 2 and 4 ranks): each rank updates its partitions on either path.
TEST(ShardedUpdate, TensorOpsPathEqualsHostLoop) {
  const double a = hostVsTensorOps({at::kDouble, OptimizerKind::kAdamW, 0.1, false, true});
  const double s = hostVsTensorOps({at::kDouble, OptimizerKind::kSgd, 0.1, false, true});
  const double f = hostVsTensorOps({at::kFloat, OptimizerKind::kAdamW, 0.1, false, true});
  EXPECT_TRUE(allRanks(a <= 1e-12 && s <= 1e-12 && f <= 1e-5)) << a << " " << s << " " << f;
}

// `meta` tensors have shapes and dtypes but no memory: any host read or write of a data
// pointer fails there, so this is a device on which the host loop cannot work and the
// tensor-op path must run without touching host memory. kAuto must pick tensor ops, keep the
// moments on the device, and step; kHostLoop must be refused by name.
TEST(UnitOptimizerPaths, MetaDeviceTakesTheTensorOpsPath) {
  auto comm = worldComm();
  for (auto kind : {OptimizerKind::kAdamW, OptimizerKind::kSgd}) {
    // Module::to(kMeta) refuses set_data across backends: register meta parameters directly.
    torch::nn::Module model;
    for (int layer = 0; layer < 3; ++layer) {
      const auto opts = at::TensorOptions(at::kFloat).device(at::kMeta);
      model.register_parameter("weight" + std::to_string(layer), at::empty({32, 32}, opts));
      model.register_parameter("bias" + std::to_string(layer), at::empty({32}, opts));
    }
    dist::GradientSyncOptions so;
    so.bucketCapMb = 0.005;  // several buckets, some mixing weights and biases
    dist::GradientSync sync(model, *comm, so);
    ASSERT_EQ(sync.bucketParameters().front().device().type(), at::kMeta);
    dist::OptimizerOptions o;
    o.kind = kind;
    o.weightDecay = 0.1;
    dist::FusedOptimizer opt(sync, o, notBias);
    EXPECT_FALSE(opt.usesHostLoop());
    for (std::size_t k = 0; k < sync.numBuckets(); ++k) {
      EXPECT_EQ(opt.expAvg()[k].device().type(), at::kMeta);
      EXPECT_EQ(opt.expAvgSq()[k].device().type(), at::kMeta);
    }
    for (const auto& g : sync.bucketGradients()) g.fill_(0.5);
    EXPECT_NO_THROW(opt.step());
    EXPECT_NO_THROW(opt.step(1e-4));
    EXPECT_EQ(opt.stepCount(), 2);
    for (const auto& p : sync.bucketParameters()) EXPECT_EQ(p.device().type(), at::kMeta);

    o.path = dist::OptimizerPath::kHostLoop;
    const std::string msg =
        messageOf<ConfigError>([&] { dist::FusedOptimizer bad(sync, o, notBias); });
    EXPECT_NE(msg.find("kHostLoop needs CPU parameters"), std::string::npos) << msg;
    EXPECT_NE(msg.find("meta"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace cohort::test
