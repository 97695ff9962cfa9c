// Golden test: train_lm's model trained by the Trainer for 20 steps on 1, 2 or 4 ranks (the
// same global batch of 8 sequences, split as per-device batch x ranks x accumulation in
// different ways) gives the same losses and parameters as a single-process loop written
// independently here: torch::optim::AdamW, torch's clip_grad_norm_, the HF linear schedule
// with warmup written out, and the token-mean loss over the whole global batch. Sequences
// have different lengths, so ranks and micro-batches hold unequal numbers of tokens.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>

#include <filesystem>

#include "cohort/trainer/trainer.h"
#include "cohort/trainer/training_args.h"
#include "lm_model.h"
#include "lm_test_config.h"
#include "test_util.h"

namespace cohort::test {
namespace {

constexpr std::int64_t kGlobalBatch = 8;
constexpr std::int64_t kSteps = 20;
constexpr double kLr = 3e-3, kWd = 0.1, kClip = 0.5;
constexpr std::int64_t kWarmup = 3;

std::shared_ptr<examples::ByteTextDataset> corpus() {
  static auto data = std::make_shared<examples::ByteTextDataset>(examples::readCorpus(), 48);
  return data->slice(0, 400);
}

examples::ByteLm freshModel(at::ScalarType type) {
  at::manual_seed(1234);
  examples::ByteLm m(smallConfig());
  m->to(type);
  return m;
}

bool noDecay(const std::string& name) {
  return name.find("bias") != std::string::npos || name.find("ln") != std::string::npos;
}

struct Result {
  std::vector<double> losses;
  std::map<std::string, at::Tensor> params;
};

Result runTrainer(at::ScalarType type, std::int64_t perDevice, std::int64_t accumulation,
                  bool sharded) {
  auto comm = worldComm();
  trainer::TrainingArguments args;
  args.set_output_dir((std::filesystem::temp_directory_path() / "cohort_golden").string());
  args.set_per_device_train_batch_size(static_cast<int>(perDevice));
  args.set_gradient_accumulation_steps(static_cast<int>(accumulation));
  args.set_learning_rate(kLr);
  args.set_weight_decay(kWd);
  args.set_max_grad_norm(kClip);
  args.set_max_steps(kSteps);
  args.set_warmup_steps(kWarmup);
  args.set_lr_scheduler_type("linear");
  args.set_logging_steps(1);
  args.set_save_strategy("no");
  args.add_report_to("none");
  args.set_seed(7);
  auto model = freshModel(type);
  trainer::TrainerParts parts;
  parts.model = model.ptr();
  parts.forward = [&](const trainer::Batch& b) {
    return trainer::ModelOutput{model->forward(b.input), {}};
  };
  parts.trainDataset = corpus();
  parts.shiftLabels = true;
  parts.shardedUpdate = sharded;
  parts.decayParameter = [](const std::string& n) { return !noDecay(n); };
  trainer::Trainer t(args, *comm, parts);
  t.train();
  Result r;
  for (const auto& e : t.state().logHistory) {
    if (e.values.contains("loss")) r.losses.push_back(e.values.at("loss"));
  }
  for (const auto& kv : model->named_parameters()) r.params[kv.key()] = kv.value().detach().clone();
  return r;
}

// The reference: one process, the whole global batch at once, torch's own optimizer.
Result runReference(at::ScalarType type) {
  auto model = freshModel(type);
  auto data = corpus();
  std::vector<at::Tensor> decay, plain;
  for (const auto& kv : model->named_parameters()) {
    (noDecay(kv.key()) ? plain : decay).push_back(kv.value());
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(kLr).weight_decay(kWd)));
  groups.emplace_back(plain, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(kLr).weight_decay(0.0)));
  torch::optim::AdamW opt(std::move(groups), torch::optim::AdamWOptions(kLr));
  // The global sample order is a function of the seed only (world size 1 here).
  const auto order =
      trainer::GlobalBatchPlan(data->size(), kGlobalBatch, 1, 1, false, 7, true).epochOrder(0);
  Result r;
  for (std::int64_t step = 0; step < kSteps; ++step) {
    const double mult = step < kWarmup ? static_cast<double>(step) / kWarmup
                                       : std::max(0.0, static_cast<double>(kSteps - step) /
                                                           static_cast<double>(kSteps - kWarmup));
    for (auto& g : opt.param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(g.options()).lr(kLr * mult);
    }
    std::vector<trainer::Sample> samples;
    for (std::int64_t i = 0; i < kGlobalBatch; ++i) {
      samples.push_back(data->get(order[static_cast<std::size_t>(step * kGlobalBatch + i)]));
    }
    trainer::Batch b = trainer::defaultCollate(samples);
    at::Tensor logits = model->forward(b.input);
    at::Tensor target = b.labels.narrow(1, 1, b.labels.size(1) - 1);
    at::Tensor pred = logits.narrow(1, 0, logits.size(1) - 1);
    at::Tensor loss = at::cross_entropy_loss(pred.reshape({-1, pred.size(-1)}), target.reshape({-1}),
                                             {}, at::Reduction::Mean, -100);
    opt.zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model->parameters(), kClip);
    opt.step();
    r.losses.push_back(loss.item<double>());
  }
  for (const auto& kv : model->named_parameters()) r.params[kv.key()] = kv.value().detach().clone();
  return r;
}

// float64: the worst per-tensor max-abs difference relative to the tensor's scale. float32:
// the relative L2 difference of all parameters together; per tensor, float32 noise dominates
// directions whose true gradient is zero (the key bias of attention: softmax ignores it) and
// that Adam's g / sqrt(v) scales up to full step size.
double compare(const Result& got, const Result& want, bool global, std::string* worstWhat) {
  double worst = 0;
  if (got.losses.size() != want.losses.size()) {
    *worstWhat = "loss count " + std::to_string(got.losses.size());
    return 1e9;
  }
  for (std::size_t i = 0; i < want.losses.size(); ++i) {
    const double d = std::abs(got.losses[i] - want.losses[i]) / std::abs(want.losses[i]);
    if (d > worst) worst = d, *worstWhat = "loss of step " + std::to_string(i + 1);
  }
  double diffSq = 0, normSq = 0;
  for (const auto& [name, w] : want.params) {
    at::Tensor delta = (got.params.at(name) - w).to(at::kDouble);
    diffSq += delta.pow(2).sum().item<double>();
    normSq += w.to(at::kDouble).pow(2).sum().item<double>();
    const double d = (delta.abs().max() / w.abs().max().to(at::kDouble)).item<double>();
    if (!global && d > worst) worst = d, *worstWhat = name;
  }
  if (global && std::sqrt(diffSq / normSq) > worst) {
    worst = std::sqrt(diffSq / normSq);
    *worstWhat = "all parameters (relative L2)";
  }
  return worst;
}

// per-device batch and accumulation for this world size, keeping the global batch at 8.
std::pair<std::int64_t, std::int64_t> split(int world, bool moreAccumulation) {
  const std::int64_t perRank = kGlobalBatch / world;
  if (moreAccumulation && perRank >= 2) return {perRank / 2, 2};
  return {perRank, 1};
}

class GoldenTest : public ::testing::TestWithParam<std::tuple<at::ScalarType, bool, bool>> {};

TEST_P(GoldenTest, TrainerEqualsSingleProcessReference) {
  const auto [type, moreAccumulation, sharded] = GetParam();
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  const auto [perDevice, accumulation] = split(world, moreAccumulation);
  const Result got = runTrainer(type, perDevice, accumulation, sharded);
  const Result want = runReference(type);
  std::string what;
  const double worst = compare(got, want, type != at::kDouble, &what);
  const double tol = type == at::kDouble ? 1e-10 : 1e-5;
  EXPECT_LE(worst, tol) << "world " << world << ", " << perDevice << " per device x "
                        << accumulation << " accumulation: worst relative difference at " << what;
  EXPECT_TRUE(allRanks(worst <= tol));
}

INSTANTIATE_TEST_SUITE_P(Splits, GoldenTest,
                         ::testing::Values(std::make_tuple(at::kDouble, false, true),
                                           std::make_tuple(at::kDouble, true, true),
                                           std::make_tuple(at::kDouble, true, false),
                                           std::make_tuple(at::kFloat, true, true)));

}  // namespace
}  // namespace cohort::test
