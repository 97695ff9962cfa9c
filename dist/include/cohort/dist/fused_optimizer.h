// FusedOptimizer: AdamW (decoupled weight decay, torch.optim.AdamW's update) or plain SGD
// (torch.optim.SGD without momentum) as ONE pass over GradientSync's flat parameter and
// gradient buffers. torch's AdamW makes about ten passes
// over every tensor (mul_, lerp_, mul_, addcmul_, sqrt, div, add_, addcdiv_); on a CPU those
// passes are memory-bound, so a single fused loop that reads p, g, m, v once and writes
// p, m, v once is several times faster for large models.
//
// That loop reads data_ptr() on the host, so it serves CPU parameters only. Parameters on any
// other device (CUDA, and whatever else LibTorch dispatches) take the tensor-op path: the same
// update as a handful of ATen ops per bucket on the buffers' own device (LibTorch >= 2.1 on
// CUDA: one _fused_adamw_ kernel per bucket), with the moments on that device and no host
// access or host sync. Both paths compute the same parameters (float64: 1e-12 relative).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cohort/dist/gradient_sync.h"

namespace cohort::dist {

enum class OptimizerKind { kAdamW, kSgd };

// Which implementation runs the update. kAuto: the host loop for CPU parameters, tensor ops
// otherwise. kTensorOps forces the device path on CPU too (tests compare the two paths on CPU;
// it is also the path every non-CPU device takes). kHostLoop on non-CPU parameters is a
// ConfigError (the loop would read device memory as host memory).
enum class OptimizerPath { kAuto, kHostLoop, kTensorOps };

struct OptimizerOptions {
  OptimizerKind kind = OptimizerKind::kAdamW;
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weightDecay = 0.01;  // AdamW: decoupled; SGD: added to the gradient (torch's SGD)
  OptimizerPath path = OptimizerPath::kAuto;
};

// Borrows `sync` (which must outlive it and have flatParameters on). Owns the moment
// buffers (exp_avg, exp_avg_sq: flat, one pair per bucket, covering the bucket's owned range,
// on the parameters' device) and the step count. The tensor-op path also keeps, for a bucket
// that mixes decayed and non-decayed parameters, a 0/1 mask of the owned range (one more
// parameter-sized buffer for such buckets only). With GradientSync::shardedUpdate, step() updates only this rank's
// partitions and all-gathers the parameters, so it is COLLECTIVE; otherwise it is local.
// Not thread-safe; step() uses torch's intra-op thread pool.
class FusedOptimizer {
 public:
  // `decay(name)` says whether weight decay applies to a parameter (HF: not to biases and
  // norm weights); default: every parameter decays. Throws ConfigError for bad options.
  FusedOptimizer(GradientSync& sync, OptimizerOptions options,
             std::function<bool(const std::string&)> decay = nullptr);

  // One AdamW update of every parameter from its gradient in the flat buffers. `lr`
  // overrides options().lr for this step (schedulers), when >= 0.
  void step(double lr = -1.0);

  // true: step() runs the host loop (CPU parameters, path kAuto or kHostLoop).
  bool usesHostLoop() const { return hostLoop_; }

  std::int64_t stepCount() const { return step_; }
  // Resuming from a checkpoint: Adam's bias correction continues from this count.
  void setStepCount(std::int64_t steps) { step_ = steps; }
  const OptimizerOptions& options() const { return options_; }
  // Moment buffers, one per bucket, covering GradientSync::ownedRange (for checkpoints).
  const std::vector<at::Tensor>& expAvg() const { return expAvg_; }
  const std::vector<at::Tensor>& expAvgSq() const { return expAvgSq_; }

 private:
  struct Segment {
    std::size_t bucket;
    std::int64_t offset, numel;
    bool decay;
  };
  void stepHostLoop(double lr);
  void stepTensorOps(double lr);
  void buildDecayMasks();

  GradientSync& sync_;
  OptimizerOptions options_;
  std::vector<Segment> segments_;
  std::vector<at::Tensor> expAvg_, expAvgSq_;
  bool hostLoop_ = true;
  // Tensor-op path, per bucket: does weight decay apply to all, none or some (mask) of the
  // owned range; the mask (same dtype and device as the parameters) only for "some".
  enum class Decay { kAll, kNone, kSome };
  std::vector<Decay> decay_;
  std::vector<at::Tensor> decayMask_;
  std::vector<at::Tensor> stepTensor_;  // LibTorch >= 2.1 CUDA: _fused_adamw_'s step count
  std::int64_t step_ = 0;
};

}  // namespace cohort::dist
