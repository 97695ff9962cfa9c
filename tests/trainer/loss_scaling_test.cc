// fp16 loss scaling (torch.amp.GradScaler's rules) at 1, 2 and 4 ranks. float16 autocast does
// not exist on a CPU and HF refuses fp16 there, so the scaler's step logic runs through the
// test seam (mixed_precision.h): losses scaled as with fp16, no autocast, float64 weights so
// that scaling by powers of two is exact and "the same" means 1e-10; a non-finite gradient is
// injected on the LAST rank at one step. Checked: every rank skips that step and halves the
// scale; the scale grows after the (shortened) growth interval; the parameters are the same
// on every rank and equal an independent single-process loop that skips the same step
// (torch::optim::AdamW, clip_grad_norm_, HF's linear schedule held back by the skip); and a
// resume from a checkpoint taken between the skip and the next growth continues bit for bit.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <mpi.h>
#include <torch/types.h>  // before clip_grad.h, which needs it
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>

#include <cmath>
#include <filesystem>

#include "mixed_precision.h"
#include "mixed_precision_util.h"

namespace cohort::test {
namespace {

namespace fs = std::filesystem;

constexpr std::int64_t kSteps = 8, kWarmup = 2, kInterval = 2, kInject = 5, kSaveAt = 6;

// torch's rules with init 2^16, growth 2 after kInterval finite steps, backoff 0.5, and step 5
// skipped: after steps 1..8 the scale is 2^16, 2^17 (2 finite), 2^17, 2^18 (2 finite), 2^17
// (skip: halved, count reset), 2^17, 2^18 (2 finite since the skip), 2^18.
const std::vector<double> kScales = {65536, 131072, 131072, 262144, 131072, 131072, 262144, 262144};

class Hooks {
 public:
  explicit Hooks(int world) {
    h_.forceLossScaling = true;
    h_.growthInterval = kInterval;
    h_.injectAtStep = kInject;
    h_.injectRank = world - 1;
    trainer::setLossScalingTestHooks(&h_);
  }
  ~Hooks() { trainer::setLossScalingTestHooks(nullptr); }

 private:
  trainer::LossScalingTestHooks h_;
};

trainer::TrainingArguments scaledArgs(const std::string& dir) {
  trainer::TrainingArguments args = mp::baseArgs(dir, kSteps);
  args.set_lr_scheduler_type("linear");
  args.set_warmup_steps(kWarmup);
  return args;
}

double linearMultiplier(std::int64_t step) {
  if (step < kWarmup) return static_cast<double>(step) / kWarmup;
  return std::max(0.0, static_cast<double>(kSteps - step) / static_cast<double>(kSteps - kWarmup));
}

// One process, the whole global batch, torch's AdamW; step kInject is skipped: its data is
// consumed, nothing changes, and the schedule does not advance (HF's scheduler.step() is not
// called for a skipped optimizer step).
mp::Result reference() {
  auto model = mp::freshModel(at::kDouble);
  auto data = mp::corpus();
  std::vector<at::Tensor> decay, plain;
  for (const auto& kv : model->named_parameters()) {
    const std::string& n = kv.key();
    const bool noDecay = n.find("bias") != std::string::npos || n.find("norm") != std::string::npos ||
                         n.find("ln") != std::string::npos;
    (noDecay ? plain : decay).push_back(kv.value());
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(mp::kLr).weight_decay(mp::kWd)));
  groups.emplace_back(plain, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(mp::kLr).weight_decay(0.0)));
  torch::optim::AdamW opt(std::move(groups), torch::optim::AdamWOptions(mp::kLr));
  const auto order =
      trainer::GlobalBatchPlan(data->size(), mp::kGlobalBatch, 1, 1, false, mp::kSeed, true)
          .epochOrder(0);
  std::int64_t updates = 0;
  for (std::int64_t step = 0; step < kSteps; ++step) {
    if (step + 1 == kInject) continue;
    for (auto& g : opt.param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(g.options()).lr(mp::kLr * linearMultiplier(updates));
    }
    std::vector<trainer::Sample> samples;
    for (std::int64_t i = 0; i < mp::kGlobalBatch; ++i) {
      samples.push_back(data->get(order[static_cast<std::size_t>(step * mp::kGlobalBatch + i)]));
    }
    trainer::Batch b = trainer::defaultCollate(samples);
    at::Tensor logits = model->forward(b.input);
    at::Tensor target = b.labels.narrow(1, 1, b.labels.size(1) - 1);
    at::Tensor pred = logits.narrow(1, 0, logits.size(1) - 1);
    at::Tensor loss = at::cross_entropy_loss(pred.reshape({-1, pred.size(-1)}),
                                             target.reshape({-1}), {}, at::Reduction::Mean, -100);
    opt.zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model->parameters(), mp::kClip);
    opt.step();
    ++updates;
  }
  mp::Result r;
  for (const auto& kv : model->named_parameters()) r.params[kv.key()] = kv.value().detach().clone();
  return r;
}

// Worst max-abs difference relative to the tensor's scale.
double worstDifference(const mp::Result& got, const mp::Result& want) {
  double worst = 0;
  for (const auto& [name, w] : want.params) {
    const double d = ((got.params.at(name) - w).abs().max() / w.abs().max()).item<double>();
    worst = std::max(worst, d);
  }
  return worst;
}

// True when every rank holds rank 0's parameters bit for bit.
bool sameOnEveryRank(const mp::Result& r) {
  bool same = true;
  for (const auto& [name, p] : r.params) {
    at::Tensor mine = p.contiguous();
    at::Tensor root = mine.clone();
    MPI_Bcast(root.data_ptr(), static_cast<int>(root.numel()), MPI_DOUBLE, 0, MPI_COMM_WORLD);
    same = same && at::equal(mine, root);
  }
  return same;
}

TEST(MixedLossScaling, EveryRankSkipsTheInjectedStepAndMatchesOneProcess) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  const Hooks hooks(world);
  const mp::Result got = mp::runTrainer(scaledArgs("cohort_scaler"), at::kDouble, world);
  const mp::Result want = reference();
  const double worst = worstDifference(got, want);
  EXPECT_EQ(got.lossScales, kScales);
  EXPECT_EQ(got.state.skippedSteps, 1);
  EXPECT_EQ(got.state.globalStep, kSteps);  // HF: a skipped step still counts
  // The schedule held back one step: the learning rates logged after steps 4 and 5 (the next
  // step's, as HF logs them) are equal.
  ASSERT_EQ(got.learningRates.size(), static_cast<std::size_t>(kSteps));
  EXPECT_EQ(got.learningRates[kInject - 2], got.learningRates[kInject - 1]);
  EXPECT_LE(worst, 1e-10) << "world " << world << ": parameters vs the single-process loop";
  EXPECT_TRUE(sameOnEveryRank(got));
  EXPECT_TRUE(allRanks(got.lossScales == kScales && got.state.skippedSteps == 1 && worst <= 1e-10));
}

TEST(MixedLossScaling, ResumeBetweenSkipAndGrowthContinuesBitForBit) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  const Hooks hooks(world);
  const std::string name = "cohort_scaler_resume";
  const fs::path dir = fs::temp_directory_path() / (name + "_w" + std::to_string(world));
  trainer::TrainingArguments args = scaledArgs(name);
  args.set_save_strategy("steps");
  args.set_save_steps(kSaveAt);
  const mp::Result full = mp::runTrainer(args, at::kDouble, world);
  trainer::TrainingArguments resumed = scaledArgs(name);
  resumed.set_overwrite_output_dir(false);
  resumed.set_resume_from_checkpoint(
      (dir / ("checkpoint-" + std::to_string(kSaveAt))).string());
  const mp::Result second = mp::runTrainer(resumed, at::kDouble, world);
  bool bitIdentical = second.params.size() == full.params.size();
  for (const auto& [n, p] : full.params) bitIdentical = bitIdentical && at::equal(second.params.at(n), p);
  // The resumed run records steps 7 and 8 only.
  const std::vector<double> tail(kScales.begin() + kSaveAt, kScales.end());
  EXPECT_EQ(second.lossScales, tail);
  EXPECT_EQ(second.state.lossScale, full.state.lossScale);
  EXPECT_EQ(second.state.lossScaleGrowthTracker, full.state.lossScaleGrowthTracker);
  EXPECT_EQ(second.state.skippedSteps, 1);
  EXPECT_TRUE(bitIdentical) << "world " << world << ": resumed parameters differ";
  EXPECT_TRUE(allRanks(bitIdentical && second.lossScales == tail));
  MPI_Barrier(MPI_COMM_WORLD);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank == 0) fs::remove_all(dir);
}

}  // namespace
}  // namespace cohort::test
