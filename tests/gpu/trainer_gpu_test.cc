// GPU checks of the Trainer (CTest label `gpu`, run by scripts/gpu-check). Each test runs
// the Trainer on the CUDA device of this rank (the model moved there with .to() before the
// Trainer is built: the Trainer works on the device of the model's parameters) through the
// NCCL communicator, and checks it against a CPU run. Where no CUDA device is visible, or
// this build cannot run collectives on CUDA tensors (CPU LibTorch, no NCCL), every test
// skips and says why, so the binary also runs (and skips) in the CPU test suite.
//   GpuGolden:  20 steps on CUDA vs an independent single-process CPU loop (torch's AdamW,
//               clip_grad_norm_, the linear schedule): float32 relative L2 <= 1e-4.
//   GpuEval:    evaluation with eval_accumulation_steps keeps peak device memory bounded by
//               the offload cadence (torch's CUDA allocator statistics).
//   GpuJit:     a JIT checkpoint written by a CUDA run, resumed on CPU (and a CPU one resumed
//               on CUDA), continues the uninterrupted trajectory.
//   GpuMixed:   bf16 and fp16 (CUDA autocast; fp16 with loss scaling) 20-step loss curves vs
//               the float32 CUDA run of the same steps.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/types.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>

#include <csignal>
#include <cstdio>
#include <filesystem>

#include "cohort/dist/device.h"
#include "cohort/trainer/trainer.h"
#include "lm_model.h"
#include "lm_test_config.h"
#include "test_util.h"

#if COHORT_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace cohort::test {
namespace {

namespace fs = std::filesystem;

constexpr std::int64_t kBatch = 8, kSteps = 20, kWarmup = 3;
constexpr double kLr = 3e-3, kWd = 0.1, kClip = 0.5;

// Empty when this process can run the Trainer on CUDA; else why not.
std::string whyNoGpu() {
  if (!torch::cuda::is_available()) return "no CUDA device visible to this process";
  if (!dist::cudaCollectivesAvailable()) {
    return "this build cannot run collectives on CUDA tensors (needs a CUDA LibTorch and NCCL)";
  }
  return "";
}

#define COHORT_REQUIRE_GPU()                               \
  do {                                                     \
    const std::string why = whyNoGpu();                    \
    if (!allRanks(why.empty())) GTEST_SKIP() << "skipped: " << (why.empty() ? "a peer has no GPU" : why); \
  } while (0)

at::Device rankDevice() {
  const dist::DeviceChoice c = dist::chooseDevice(*gRuntime);
  return c.kind == dist::DeviceKind::kCuda ? at::Device(at::kCUDA, c.index) : at::Device(at::kCPU);
}

std::unique_ptr<dist::Communicator> commFor(const at::Device& device) {
  if (device.is_cpu()) return worldComm();
  dist::DeviceChoice c;
  c.kind = dist::DeviceKind::kCuda;
  c.index = device.index();
  return dist::makeCommunicator(*gRuntime, c);
}

std::shared_ptr<const examples::ByteTextDataset> corpus(std::int64_t from, std::int64_t to) {
  static auto data = std::make_shared<examples::ByteTextDataset>(examples::readCorpus(), 48);
  return data->slice(from, to);
}

examples::ByteLm freshModel() {
  at::manual_seed(1234);
  return examples::ByteLm(smallConfig());
}

bool noDecay(const std::string& n) {
  return n.find("bias") != std::string::npos || n.find("ln") != std::string::npos;
}

trainer::TrainingArguments baseArgs(const std::string& dir, int world) {
  trainer::TrainingArguments a;
  a.set_output_dir((fs::temp_directory_path() / dir).string());
  a.set_per_device_train_batch_size(static_cast<int>(kBatch / world));
  a.set_learning_rate(kLr);
  a.set_weight_decay(kWd);
  a.set_max_grad_norm(kClip);
  a.set_max_steps(kSteps);
  a.set_warmup_steps(kWarmup);
  a.set_lr_scheduler_type("linear");
  a.set_logging_steps(1);
  a.set_save_strategy("no");
  a.add_report_to("none");
  a.set_seed(7);
  return a;
}

trainer::TrainerParts partsFor(examples::ByteLm& model) {
  trainer::TrainerParts p;
  p.model = model.ptr();
  p.forward = [model](const trainer::Batch& b) mutable {
    return trainer::ModelOutput{model->forward(b.input), {}};
  };
  p.trainDataset = corpus(0, 400);
  p.shiftLabels = true;
  p.decayParameter = [](const std::string& n) { return !noDecay(n); };
  return p;
}

std::map<std::string, at::Tensor> cpuParams(examples::ByteLm& model) {
  std::map<std::string, at::Tensor> out;
  for (const auto& kv : model->named_parameters()) out[kv.key()] = kv.value().detach().to(at::kCPU).clone();
  return out;
}

double relL2(const std::map<std::string, at::Tensor>& got,
             const std::map<std::string, at::Tensor>& want) {
  double diff = 0, norm = 0;
  for (const auto& [name, w] : want) {
    diff += (got.at(name).to(at::kDouble) - w.to(at::kDouble)).pow(2).sum().item<double>();
    norm += w.to(at::kDouble).pow(2).sum().item<double>();
  }
  return std::sqrt(diff / norm);
}

// The independent reference: one CPU process, the whole global batch, torch's AdamW.
std::map<std::string, at::Tensor> cpuReference() {
  auto model = freshModel();
  auto data = corpus(0, 400);
  std::vector<at::Tensor> decay, plain;
  for (const auto& kv : model->named_parameters()) (noDecay(kv.key()) ? plain : decay).push_back(kv.value());
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(kLr).weight_decay(kWd)));
  groups.emplace_back(plain, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(kLr).weight_decay(0.0)));
  torch::optim::AdamW opt(std::move(groups), torch::optim::AdamWOptions(kLr));
  const auto order = trainer::GlobalBatchPlan(data->size(), kBatch, 1, 1, false, 7, true).epochOrder(0);
  for (std::int64_t step = 0; step < kSteps; ++step) {
    const double mult = step < kWarmup ? double(step) / kWarmup
                                       : std::max(0.0, double(kSteps - step) / double(kSteps - kWarmup));
    for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(kLr * mult);
    std::vector<trainer::Sample> samples;
    for (std::int64_t i = 0; i < kBatch; ++i) samples.push_back(data->get(order[std::size_t(step * kBatch + i)]));
    const trainer::Batch b = trainer::defaultCollate(samples);
    const at::Tensor logits = model->forward(b.input);
    const at::Tensor target = b.labels.narrow(1, 1, b.labels.size(1) - 1);
    const at::Tensor pred = logits.narrow(1, 0, logits.size(1) - 1);
    at::Tensor loss = at::cross_entropy_loss(pred.reshape({-1, pred.size(-1)}), target.reshape({-1}),
                                             {}, at::Reduction::Mean, -100);
    opt.zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model->parameters(), kClip);
    opt.step();
  }
  return cpuParams(model);
}

int worldSize() {
  int n = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

TEST(GpuGolden, TrainerOnCudaMatchesCpuReference) {
  COHORT_REQUIRE_GPU();
  const at::Device device = rankDevice();
  ASSERT_TRUE(device.is_cuda());
  auto comm = commFor(device);
  auto model = freshModel();
  model->to(device);
  trainer::Trainer t(baseArgs("cohort_gpu_golden", comm->size()), *comm, partsFor(model));
  t.train();
  const double d = relL2(cpuParams(model), cpuReference());
  std::printf("GpuGolden: world %d, %lld steps on %s: relative L2 vs CPU reference %.3e\n",
              comm->size(), static_cast<long long>(kSteps), device.str().c_str(), d);
  EXPECT_LE(d, 1e-4);
  EXPECT_TRUE(allRanks(d <= 1e-4));
}

// The logged step losses of one CUDA run with `args`.
std::vector<double> cudaLosses(const trainer::TrainingArguments& args) {
  const at::Device device = rankDevice();
  auto comm = commFor(device);
  auto model = freshModel();
  model->to(device);
  trainer::Trainer t(args, *comm, partsFor(model));
  t.train();
  std::vector<double> out;
  for (const auto& e : t.state().logHistory) {
    if (e.values.contains("loss")) out.push_back(e.values.at("loss"));
  }
  return out;
}

double worstLossGap(const std::vector<double>& got, const std::vector<double>& want) {
  if (got.size() != want.size() || want.empty()) return 1e9;
  double worst = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    worst = std::max(worst, std::abs(got[i] - want[i]) / std::abs(want[i]));
  }
  return worst;
}

// Tolerances from the formats' unit roundoff u (bf16 2^-8, fp16 2^-11), times 8 for 20 steps
// of trajectories that drift apart: bf16 2^-5 (3.1%), fp16 2^-8 (0.39%) per step's loss.
TEST(GpuMixed, Bf16AndFp16LossCurvesFollowFloat32) {
  COHORT_REQUIRE_GPU();
  const int world = worldSize();
  const std::vector<double> fp32 = cudaLosses(baseArgs("cohort_gpu_mixed_fp32", world));
  trainer::TrainingArguments bf16 = baseArgs("cohort_gpu_mixed_bf16", world);
  bf16.set_bf16(true);
  trainer::TrainingArguments fp16 = baseArgs("cohort_gpu_mixed_fp16", world);
  fp16.set_fp16(true);
  const double gapBf16 = worstLossGap(cudaLosses(bf16), fp32);
  const double gapFp16 = worstLossGap(cudaLosses(fp16), fp32);
  std::printf("GpuMixed: world %d, %lld steps: worst per-step loss gap to float32: bf16 %.3e "
              "(tolerance %.3e), fp16 %.3e (tolerance %.3e)\n",
              world, static_cast<long long>(kSteps), gapBf16, 1.0 / 32, gapFp16, 1.0 / 256);
  EXPECT_LE(gapBf16, 1.0 / 32);
  EXPECT_LE(gapFp16, 1.0 / 256);
  EXPECT_TRUE(allRanks(gapBf16 <= 1.0 / 32 && gapFp16 <= 1.0 / 256));
}

#if COHORT_TORCH_CUDA
// Peak bytes allocated on `device` while f runs (torch's caching allocator statistics).
template <typename F>
std::int64_t peakDuring(const at::Device& device, F&& f) {
  torch::cuda::synchronize(device.index());
  const auto idx = static_cast<c10::DeviceIndex>(device.index());
  c10::cuda::CUDACachingAllocator::resetPeakStats(idx);
  const auto before = c10::cuda::CUDACachingAllocator::getDeviceStats(idx);
  f();
  torch::cuda::synchronize(device.index());
  const auto after = c10::cuda::CUDACachingAllocator::getDeviceStats(idx);
  return after.allocated_bytes[0].peak - before.allocated_bytes[0].current;
}
#endif

// 96 eval samples x 47 positions x 256 logits in float32: ~4.6 MB of predictions if they
// stay on the device to the end, ~0.4 MB every 2 batches of 8 with eval_accumulation_steps 2.
TEST(GpuEval, AccumulationStepsBoundPeakDeviceMemory) {
  COHORT_REQUIRE_GPU();
#if !COHORT_TORCH_CUDA
  GTEST_SKIP() << "skipped: the allocator statistics need a CUDA LibTorch";
#else
  const at::Device device = rankDevice();
  auto comm = commFor(device);
  auto run = [&](int accumulationSteps) {
    auto model = freshModel();
    model->to(device);
    auto args = baseArgs("cohort_gpu_eval", comm->size());
    args.set_per_device_eval_batch_size(8);
    if (accumulationSteps > 0) args.set_eval_accumulation_steps(accumulationSteps);
    auto parts = partsFor(model);
    parts.evalDataset = corpus(400, 496);
    parts.computeMetrics = [](const trainer::EvalPrediction& p) {
      return std::map<std::string, double>{{"rows", static_cast<double>(p.predictions.size(0))}};
    };
    trainer::Trainer t(args, *comm, parts);
    std::map<std::string, double> metrics;
    const std::int64_t peak = peakDuring(device, [&] { metrics = t.evaluate(); });
    EXPECT_EQ(metrics.at("eval_rows"), 96.0);
    return peak;
  };
  const std::int64_t keepAll = run(0), every2 = run(2);
  const std::int64_t logitsBytes = 96 / comm->size() * 47 * 256 * 4;
  std::printf("GpuEval: peak device bytes during evaluate(): %lld unset, %lld with "
              "eval_accumulation_steps=2 (this rank's logits: %lld)\n",
              static_cast<long long>(keepAll), static_cast<long long>(every2),
              static_cast<long long>(logitsBytes));
  // Offloading every 2 batches must save most of what keeping everything costs.
  EXPECT_LT(every2, keepAll - logitsBytes / 2);
  EXPECT_TRUE(allRanks(every2 < keepAll - logitsBytes / 2));
#endif
}

// Raises the JIT signal at the end of step `at` (the Trainer finishes the step, saves, stops).
class StopAt : public trainer::TrainerCallback {
 public:
  explicit StopAt(std::int64_t at) : at_(at) {}
  void onStepEnd(const trainer::TrainerState& s, trainer::TrainerControl&) override {
    if (s.globalStep == at_) ::raise(SIGUSR1);
  }

 private:
  std::int64_t at_;
};

// Trains to step 8 on `first` with a JIT stop, resumes on `second` to kSteps; returns the
// final parameters on the host.
std::map<std::string, at::Tensor> stopAndResume(const at::Device& first, const at::Device& second,
                                                const std::string& dir) {
  auto args = baseArgs(dir, worldSize());
  args.set_enable_jit_checkpoint(true);
  args.set_jit_kill_wait(0.0);
  std::error_code ec;
  fs::remove_all(args.output_dir(), ec);
  {
    auto comm = commFor(first);
    auto model = freshModel();
    model->to(first);
    auto parts = partsFor(model);
    parts.callbacks.push_back(std::make_shared<StopAt>(8));
    trainer::Trainer t(args, *comm, parts);
    const auto out = t.train();
    EXPECT_TRUE(out.preempted);
  }
  auto comm = commFor(second);
  auto model = freshModel();
  model->to(second);
  args.set_resume_from_checkpoint("true");
  trainer::Trainer t(args, *comm, partsFor(model));
  const auto out = t.train();
  EXPECT_EQ(out.globalStep, kSteps);
  return cpuParams(model);
}

TEST(GpuJit, CheckpointOnCudaResumesOnCpuAndBack) {
  COHORT_REQUIRE_GPU();
  const at::Device gpu = rankDevice();
  std::map<std::string, at::Tensor> straight;
  {
    auto comm = worldComm();
    auto model = freshModel();
    trainer::Trainer t(baseArgs("cohort_gpu_jit_ref", comm->size()), *comm, partsFor(model));
    t.train();
    straight = cpuParams(model);
  }
  const double toCpu = relL2(stopAndResume(gpu, at::kCPU, "cohort_gpu_jit_a"), straight);
  const double toGpu = relL2(stopAndResume(at::kCPU, gpu, "cohort_gpu_jit_b"), straight);
  std::printf("GpuJit: relative L2 vs an uninterrupted CPU run: cuda->cpu %.3e, cpu->cuda %.3e\n",
              toCpu, toGpu);
  EXPECT_LE(toCpu, 1e-4);
  EXPECT_LE(toGpu, 1e-4);
  EXPECT_TRUE(allRanks(toCpu <= 1e-4 && toGpu <= 1e-4));
}

}  // namespace
}  // namespace cohort::test
