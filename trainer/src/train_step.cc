// The compute units of one optimizer step: fetch (data, item count, stop agreement),
// forwardBackward, reduceAndClip, optimizerStep.
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <cmath>
#include <optional>

#include "cohort/dist/batch_stats.h"
#include "cohort/dist/log.h"
#include "cohort/dist/types.h"
#include "cohort/trainer/preemption.h"
#include "train_loop.h"

namespace cohort::trainer {

bool TrainLoop::fetch(StepResult& step) {
  setTrainingPhase(TrainingPhase::kData);
  step.data = run_.loader.next();
  phases_.lap(PhaseClock::kData);
  std::vector<at::Tensor> labels;
  for (const Batch& b : step.data.micro) {
    if (b.size > 0) labels.push_back(b.labels);
  }
  const std::int64_t localItems = dist::countItems(labels, -100, t_.parts_.shiftLabels);
  // The stop request rides the step's one small all-reduce: every rank learns it at the
  // same step boundary, before this step changes anything.
  const bool stopHere = t_.watcher_ && t_.watcher_->stopRequested();
  const dist::GlobalStepStats stats = dist::reduceStepStats(t_.comm_, localItems, stopHere);
  phases_.lap(PhaseClock::kStepStats);
  if (stats.stopRequested) return false;
  step.numItems = stats.numItems;
  return true;
}

void TrainLoop::forwardBackward(StepResult& step) {
  setTrainingPhase(TrainingPhase::kCompute);
  step.lr = lr_;
  lastLr_ = lr_;
  run_.sync.zeroGrad();
  const std::vector<Batch>& micro = step.data.micro;
  double localLoss = 0.0;
  for (std::size_t m = 0; m < micro.size(); ++m) {
    std::optional<dist::GradientSync::NoSyncGuard> guard;
    if (m + 1 < micro.size()) guard.emplace(run_.sync.noSync());
    const Batch& b = micro[m];
    at::Tensor loss;
    if (b.size == 0) {
      // A rank with no samples left in a short last step still joins the gradient
      // reduction: a zero loss that touches every parameter.
      loss = at::zeros({}, at::kDouble);
      for (const auto& p : run_.model.parameters()) loss = loss + p.sum() * 0.0;
    } else {
      const ModelOutput out = t_.parts_.forward(b);
      loss = t_.parts_.computeLoss(out, b.labels, step.numItems);
    }
    loss.backward();
    localLoss += loss.item<double>();
  }
  step.loss = localLoss;
  phases_.lap(PhaseClock::kForwardBackward);
  run_.sync.finish();
  phases_.lap(PhaseClock::kGradSync);
}

void TrainLoop::reduceAndClip(StepResult& step) {
  // One small all-reduce: this rank's share of the squared gradient norm and of the loss.
  double normSq = 0.0;
  const auto& grads = run_.sync.bucketGradients();
  for (std::size_t k = 0; k < grads.size(); ++k) {
    const auto [lo, hi] =
        dist::partitionOf(static_cast<std::size_t>(grads[k].numel()), world_, rank_);
    normSq += grads[k]
                  .slice(0, static_cast<std::int64_t>(lo), static_cast<std::int64_t>(hi))
                  .to(at::kDouble)
                  .pow(2)
                  .sum()
                  .item<double>();
  }
  at::Tensor shared = at::tensor({normSq, step.loss}, at::kDouble);
  t_.comm_.allReduce(shared);
  step.gradNorm = std::sqrt(shared[0].item<double>());
  step.loss = shared[1].item<double>();
  if (args_.max_grad_norm() > 0) {
    const double coef = args_.max_grad_norm() / (step.gradNorm + 1e-6);
    if (coef < 1.0) {  // as torch's clip_grad_norm_
      for (std::size_t k = 0; k < grads.size(); ++k) {
        const auto [lo, hi] = run_.sync.ownedRange(k);
        grads[k].slice(0, lo, hi).mul_(coef);
      }
    }
  }
  phases_.lap(PhaseClock::kClip);
}

void TrainLoop::optimizerStep(const StepResult& step) {
  // An async save in flight may still be reading parameters and moments in place.
  if (run_.checkpointer.asyncInFlight()) {
    const auto t0 = TrainClock::now();
    const std::int64_t copied = run_.checkpointer.releaseSources();
    if (copied > 0 && rank_ == 0) {
      COHORT_LOG_INFO(
          "async save: the optimizer step first copied {:.1f} MiB the writer had "
          "not reached ({:.3f} s)",
          static_cast<double>(copied) / (1 << 20),
          std::chrono::duration<double>(TrainClock::now() - t0).count());
    }
  }
  run_.optimizer.step(step.lr);
  phases_.lap(PhaseClock::kOptimizer);
}

}  // namespace cohort::trainer
