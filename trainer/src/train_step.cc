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
#include "device_placement.h"
#include "mixed_precision.h"
#include "model_loss.h"
#include "train_loop.h"

namespace cohort::trainer {

namespace {

// The test seam's injected overflow (mixed_precision.h): on the chosen rank and step, the
// first trainable parameter's gradient of the step's last micro-batch becomes +inf before it
// reaches the gradient buckets. Does nothing otherwise.
class InfInjection {
 public:
  InfInjection(torch::nn::Module& model, int rank, std::int64_t step, bool lastMicro) {
    const LossScalingTestHooks* h = lossScalingTestHooks();
    if (h == nullptr || !lastMicro || h->injectAtStep != step || h->injectRank != rank) return;
    for (const auto& p : model.parameters()) {
      if (!p.requires_grad()) continue;
      param_ = p;
      hook_ = param_.register_hook(
          [](const at::Tensor& g) { return at::full_like(g, INFINITY); });
      return;
    }
  }
  ~InfInjection() {
    if (param_.defined()) param_.remove_hook(hook_);
  }
  InfInjection(const InfInjection&) = delete;
  InfInjection& operator=(const InfInjection&) = delete;

 private:
  at::Tensor param_;
  unsigned hook_ = 0;
};

}  // namespace

at::TensorOptions TrainLoop::onDevice(at::ScalarType dtype) const {
  return at::TensorOptions().dtype(dtype).device(run_.device);
}

at::Tensor TrainLoop::readToHost(const at::Tensor& t) {
  ++syncsThisStep_;
  return t.to(at::kCPU);
}

bool TrainLoop::fetch(StepResult& step) {
  setTrainingPhase(TrainingPhase::kData);
  step.data = run_.loader.next();
  phases_.lap(PhaseClock::kData);
  // Counted on the host copies the loader made (no device read), then moved.
  std::vector<at::Tensor> labels;
  for (const Batch& b : step.data.micro) {
    if (b.size > 0) labels.push_back(b.labels);
  }
  const std::int64_t localItems = dist::countItems(labels, -100, t_.parts_.shiftLabels);
  for (Batch& b : step.data.micro) moveBatch(b, run_.device);
  // The stop request rides the step's one small all-reduce (dist::StepStats' layout): every
  // rank learns it at the same step boundary, before this step changes anything.
  const bool stopHere = t_.watcher_ && t_.watcher_->stopRequested();
  dist::StepStats local;
  local[dist::StepStatsSlot::kNumItems] = localItems;
  local[dist::StepStatsSlot::kStopRequested] = stopHere ? 1 : 0;
  step.stats = at::tensor(at::ArrayRef<std::int64_t>(local.values.data(), local.values.size()),
                          at::kLong)
                   .to(run_.device);
  t_.comm_.allReduce(step.stats, dist::ReduceOp::kSum);
  // The count stays on the device (the default loss divides there) unless a user's
  // computeLoss takes it as a number: then it is read now, and the stop flag with it (a stop
  // agreed here runs nothing of the step). Otherwise the flag is read after the step, in the
  // log's copy when the step logs (stopAgreed()): a stop then takes effect one step later.
  if (!t_.defaultLoss_) {
    const at::Tensor host = readToHost(step.stats);
    const std::int64_t* v = host.data_ptr<std::int64_t>();
    step.numItems = v[static_cast<std::size_t>(dist::StepStatsSlot::kNumItems)];
    step.stopFlag = v[static_cast<std::size_t>(dist::StepStatsSlot::kStopRequested)] > 0;
    if (*step.stopFlag) {
      phases_.lap(PhaseClock::kStepStats);
      return false;
    }
  }
  phases_.lap(PhaseClock::kStepStats);
  return true;
}

bool TrainLoop::stopAgreed(StepResult& step) {
  if (!t_.watcher_) return false;
  if (!step.stopFlag) {
    const at::Tensor flag =
        step.stats.select(0, static_cast<std::int64_t>(dist::StepStatsSlot::kStopRequested));
    step.stopFlag = readToHost(flag).item<std::int64_t>() > 0;
  }
  return *step.stopFlag;
}

at::Tensor TrainLoop::microLoss(const Batch& b, const StepResult& step) {
  if (b.size == 0) {
    // A rank with no samples left in a short last step still joins the gradient
    // reduction: a zero loss that touches every parameter.
    at::Tensor loss = at::zeros({}, onDevice(at::kDouble));
    for (const auto& p : run_.model.parameters()) loss = loss + p.sum() * 0.0;
    return loss;
  }
  // HF: autocast (bf16 / fp16) around forward and loss; backward runs outside it.
  AutocastScope autocast(run_.device.type(), autocastDtype(args_), args_.bf16() || args_.fp16());
  const at::Tensor items = step.stats.select(0, static_cast<std::int64_t>(dist::StepStatsSlot::kNumItems));
  // The model sees the global count as num_items_in_batch (model_loss.h).
  const ModelOutput out = t_.parts_.forward(batchWithItemCount(b, items));
  if (!t_.defaultLoss_) return t_.parts_.computeLoss(out, b.labels, step.numItems);
  if (out.useModelLoss && out.loss.defined()) {
    return modelLossOverItems(out, b.labels, items, t_.parts_.shiftLabels);
  }
  if (t_.parts_.computeLossOnDevice) return t_.parts_.computeLossOnDevice(out, b.labels, items);
  // tokenMeanLoss with the global count as a device scalar: the same division.
  return tokenLossSum(out, b.labels, t_.parts_.shiftLabels) / items.clamp_min(1);
}

void TrainLoop::forwardBackward(StepResult& step) {
  setTrainingPhase(TrainingPhase::kCompute);
  step.lr = lr_;
  lastLr_ = lr_;
  run_.sync.zeroGrad();
  const std::vector<Batch>& micro = step.data.micro;
  // The host used to add loss.item() per micro-batch from 0.0: the same float64 additions.
  step.localLoss = at::zeros({}, onDevice(at::kDouble));
  // fp16: the loss is scaled before backward (GradScaler.scale), gradients are unscaled in
  // reduceAndClip; the logged loss is the unscaled one.
  const bool scaling = lossScalingOn(args_);
  TrainerState& state = t_.state_;
  if (scaling && !(state.lossScale > 0)) state.lossScale = lossScaleOptions().initScale;
  for (std::size_t m = 0; m < micro.size(); ++m) {
    std::optional<dist::GradientSync::NoSyncGuard> guard;
    if (m + 1 < micro.size()) guard.emplace(run_.sync.noSync());
    at::Tensor loss = microLoss(micro[m], step);
    InfInjection inject(run_.model, rank_, state.globalStep + 1, m + 1 == micro.size());
    (scaling ? loss * state.lossScale : loss).backward();
    step.localLoss = step.localLoss + loss.detach().to(at::kDouble);
  }
  phases_.lap(PhaseClock::kForwardBackward);
  run_.sync.finish();
  phases_.lap(PhaseClock::kGradSync);
}

void TrainLoop::reduceAndClip(StepResult& step) {
  const auto& grads = run_.sync.bucketGradients();
  const bool scaling = lossScalingOn(args_);
  if (scaling) {
    // GradScaler.unscale_: the reduced gradients times the float32 reciprocal of the scale
    // (a power of two: exact), before the norm and the clipping.
    const double inv = inverseScale(t_.state_.lossScale);
    for (std::size_t k = 0; k < grads.size(); ++k) {
      const auto [lo, hi] = run_.sync.ownedRange(k);
      grads[k].slice(0, lo, hi).mul_(inv);
    }
  }
  // One small all-reduce: this rank's share of the squared gradient norm and of the loss.
  // A non-finite gradient on any rank makes the reduced norm non-finite on every rank: the
  // found-inf flag of loss scaling rides this all-reduce, no extra collective.
  at::Tensor normSq = at::zeros({}, onDevice(at::kDouble));
  for (std::size_t k = 0; k < grads.size(); ++k) {
    const auto [lo, hi] =
        dist::partitionOf(static_cast<std::size_t>(grads[k].numel()), world_, rank_);
    normSq = normSq + grads[k]
                          .slice(0, static_cast<std::int64_t>(lo), static_cast<std::int64_t>(hi))
                          .to(at::kDouble)
                          .pow(2)
                          .sum();
  }
  step.reduced = at::stack({normSq, step.localLoss});
  t_.comm_.allReduce(step.reduced);
  if (scaling) {
    // The host decides whether the optimizer runs (torch's GradScaler.step reads found_inf
    // the same way): one counted read per step with loss scaling.
    step.skipped = !std::isfinite(readToHost(step.reduced.select(0, 0)).item<double>());
  }
  if (args_.max_grad_norm() > 0 && !step.skipped) {
    // As torch's clip_grad_norm_: coef = max / (norm + 1e-6), applied when < 1. Decided on
    // the device (a factor of exactly 1 otherwise, which leaves the gradients' bits alone).
    const at::Tensor norm = step.reduced.select(0, 0).sqrt();
    at::Tensor coef = at::full({}, args_.max_grad_norm(), onDevice(at::kDouble)).div(norm + 1e-6);
    coef = at::where(coef.lt(1.0), coef, at::ones_like(coef));
    for (std::size_t k = 0; k < grads.size(); ++k) {
      const auto [lo, hi] = run_.sync.ownedRange(k);
      grads[k].slice(0, lo, hi).mul_(coef);
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
  TrainerState& state = t_.state_;
  if (!step.skipped) run_.optimizer.step(step.lr);
  if (lossScalingOn(args_)) {
    // GradScaler.update(); a skipped step leaves the parameters, the moments, Adam's step
    // count and the learning-rate schedule where they were (HF: the scheduler does not step).
    LossScaleState s{state.lossScale, state.lossScaleGrowthTracker};
    updateLossScale(s, step.skipped, lossScaleOptions());
    if (step.skipped) {
      ++state.skippedSteps;
      if (rank_ == 0) {
        COHORT_LOG_INFO("step {}: non-finite gradients, optimizer step skipped (loss scale "
                        "{} -> {}, {} skipped so far)",
                        state.globalStep + 1, state.lossScale, s.scale, state.skippedSteps);
      }
    }
    state.lossScale = s.scale;
    state.lossScaleGrowthTracker = s.growthTracker;
  }
  phases_.lap(PhaseClock::kOptimizer);
}

}  // namespace cohort::trainer
