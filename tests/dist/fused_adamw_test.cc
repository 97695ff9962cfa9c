// FusedAdamW over GradientSync's flat buffers against torch::optim::AdamW (an independent
// implementation) on the same model and gradients, with and without weight decay per
// parameter, in float64 and float32.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/activation.h>
#include <torch/optim/adamw.h>

#include "cohort/dist/error.h"
#include "cohort/dist/fused_adamw.h"
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
double maxRelDiff(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max()).item<double>();
}

void compareWithTorch(at::ScalarType type, double tol) {
  auto comm = worldComm();
  auto fused = makeModel(type);
  auto ref = makeModel(type);
  dist::GradientSync sync(*fused, *comm);  // world 1: a plain flat-buffer optimizer
  dist::AdamWOptions o;
  o.lr = 1e-2;
  o.weightDecay = 0.1;
  auto noBias = [](const std::string& name) { return name.find("bias") == std::string::npos; };
  dist::FusedAdamW opt(sync, o, noBias);

  std::vector<torch::Tensor> decay, plain;
  for (const auto& kv : ref->named_parameters()) (noBias(kv.key()) ? decay : plain).push_back(kv.value());
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(o.lr).weight_decay(0.1)));
  groups.emplace_back(plain, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(o.lr).weight_decay(0.0)));
  torch::optim::AdamW refOpt(std::move(groups), torch::optim::AdamWOptions(o.lr));

  at::manual_seed(11);
  for (int step = 0; step < 6; ++step) {
    at::Tensor x = at::randn({4, 16}, type);
    sync.zeroGrad();
    fused->forward(x).pow(2).sum().backward();
    sync.finish();
    opt.step();
    refOpt.zero_grad();
    ref->forward(x).pow(2).sum().backward();
    refOpt.step();
  }
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

TEST(UnitFusedAdamW, MatchesTorchAdamWFloat64) { compareWithTorch(at::kDouble, 1e-12); }
TEST(UnitFusedAdamW, MatchesTorchAdamWFloat32) { compareWithTorch(at::kFloat, 1e-5); }

TEST(UnitFusedAdamW, RejectsBadOptions) {
  auto comm = worldComm();
  auto m = makeModel(at::kFloat);
  dist::GradientSync sync(*m, *comm);
  dist::AdamWOptions o;
  o.beta1 = 1.0;
  EXPECT_THROW(dist::FusedAdamW(sync, o), ConfigError);
  dist::GradientSyncOptions so;
  so.flatParameters = false;
  auto m2 = makeModel(at::kFloat);
  dist::GradientSync sync2(*m2, *comm, so);
  EXPECT_THROW(dist::FusedAdamW(sync2, dist::AdamWOptions{}), ConfigError);
}

}  // namespace
}  // namespace cohort::test
