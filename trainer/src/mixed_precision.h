// Mixed precision for the Trainer (HF's bf16 / fp16 / *_full_eval / tf32): the autocast scope
// around forward and loss, torch.amp.GradScaler's dynamic loss scale, and the cast of the
// model for a full-precision-less evaluation. Parameters, gradients and optimizer state stay
// in the model's own dtype (float32: the master weights); autocast alone runs the matmuls in
// bf16/fp16, as torch.amp does, so the optimizer, the gradient buckets and the checkpoints
// need no second copy of the weights. Private to the trainer library; single-threaded (the
// training thread).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "cohort/trainer/training_args.pb.h"

namespace torch::nn {
class Module;
}

namespace cohort::trainer {

// Enables LibTorch's autocast for one device type with one dtype for its lifetime and
// restores the previous state (enabled flag, dtype, nesting; the cast cache is cleared when
// the outermost scope closes, as torch.autocast's __exit__). `enabled` false: does nothing.
class AutocastScope {
 public:
  AutocastScope(c10::DeviceType device, at::ScalarType dtype, bool enabled);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  c10::DeviceType device_;
  bool active_ = false;
  bool wasEnabled_ = false;
  at::ScalarType previousDtype_ = at::kFloat;
};

// The autocast dtype of a training step: kBFloat16 (bf16), kHalf (fp16), or nullopt-like
// kFloat when neither flag is set (no autocast).
at::ScalarType autocastDtype(const TrainingArguments& args);

// tf32: set (true/false) LibTorch's TF32 switches for cuBLAS and cuDNN; unset: leave them.
// Only meaningful on CUDA (validation refuses tf32=true elsewhere).
void applyTf32(const TrainingArguments& args);

// torch.amp.GradScaler's constants (its defaults; HF uses them unchanged).
struct LossScaleOptions {
  double initScale = 65536.0;  // 2^16
  double growthFactor = 2.0;
  double backoffFactor = 0.5;
  std::int64_t growthInterval = 2000;
};

// The scaler's state between steps (checkpointed with the trainer state).
struct LossScaleState {
  double scale = 0.0;  // 0: not started (set to initScale by the first scaled step)
  std::int64_t growthTracker = 0;  // finite steps since the last growth or backoff
};

// GradScaler.update(): backoff and reset on a non-finite step; growth after growthInterval
// finite steps in a row. The scale is a float32 value, as torch keeps it.
void updateLossScale(LossScaleState& s, bool foundInf, const LossScaleOptions& o);

// torch's unscale factor: the float32 reciprocal of the scale (exact for powers of two).
double inverseScale(double scale);

// ---- test seam (tests/trainer/mixed_precision_test.cc) ----
// float16 autocast does not exist for a CPU in LibTorch 1.13 and HF refuses fp16 on a CPU, so
// the scaler's step logic is tested on the CPU with loss scaling forced on (no autocast),
// a shorter growth interval, and a non-finite gradient injected on one rank at one step.
struct LossScalingTestHooks {
  bool forceLossScaling = false;    // scale losses as fp16 would, whatever the device
  std::int64_t growthInterval = 0;  // > 0: replaces 2000
  std::int64_t injectAtStep = -1;   // 1-based global step whose gradient gets an inf
  int injectRank = 0;               // ... on this rank
};
// Set for the calling process until cleared (nullptr). Not thread-safe: tests only.
void setLossScalingTestHooks(const LossScalingTestHooks* hooks);
const LossScalingTestHooks* lossScalingTestHooks();

// Loss scaling is on: fp16, or the test seam.
bool lossScalingOn(const TrainingArguments& args);
LossScaleOptions lossScaleOptions();

// bf16_full_eval / fp16_full_eval outside train(): casts the model's floating parameters and
// buffers to that dtype for the scope and restores the original tensors (bit for bit) after.
class FullEvalCast {
 public:
  FullEvalCast(torch::nn::Module* model, const TrainingArguments& args, bool inTrain);
  ~FullEvalCast();
  FullEvalCast(const FullEvalCast&) = delete;
  FullEvalCast& operator=(const FullEvalCast&) = delete;

 private:
  // Each cast tensor (tied weights once) and its original data.
  std::vector<std::pair<at::Tensor, at::Tensor>> saved_;
};

}  // namespace cohort::trainer
