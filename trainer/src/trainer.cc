#include "cohort/trainer/trainer.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "checkpointing.h"
#include "cohort/ckpt/checkpointer.h"
#include "cohort/dist/batch_stats.h"
#include "cohort/dist/env.h"
#include "cohort/dist/error.h"
#include "cohort/dist/fused_optimizer.h"
#include "cohort/dist/gradient_sync.h"
#include "cohort/dist/log.h"
#include "cohort/trainer/neftune.h"
#include "cohort/trainer/preemption.h"
#include "cohort/trainer/schedule.h"
#include "cohort/trainer/training_args.h"
#include "device_placement.h"
#include "mixed_precision.h"
#include "resume.h"
#include "save_policy.h"
#include "model_loss.h"
#include "script_adapter.h"
#include "train_loop.h"

namespace cohort::trainer {

namespace {

bool defaultDecay(const std::string& name) {
  return name.find("bias") == std::string::npos && name.find("norm") == std::string::npos &&
         name.find("ln") == std::string::npos;
}

// After `cohort run --min-np` restarted the job on fewer ranks (COHORT_ELASTIC_WORLD_SIZE =
// the launched size), more accumulation keeps the global batch: the same samples per step,
// so the run continues the trajectory of the launched size.
void keepLaunchedGlobalBatch(TrainingArguments& args, int world, int rank) {
  const std::int64_t launched = env::get(env::kElasticWorldSize);
  if (launched <= 0 || launched == world) return;
  const std::int64_t accum = args.gradient_accumulation_steps() * launched;
  if (accum % world != 0) {
    if (rank == 0) {
      COHORT_LOG_WARN(
          "COHORT_ELASTIC_WORLD_SIZE={}: {} x {} accumulation steps do not split over {} ranks; "
          "the global batch changes",
          launched, launched, args.gradient_accumulation_steps(), world);
    }
    return;
  }
  if (rank == 0) {
    COHORT_LOG_INFO(
        "restarted on {} of {} ranks (COHORT_ELASTIC_WORLD_SIZE): gradient_accumulation_steps "
        "{} -> {} keeps the global batch",
        world, launched, args.gradient_accumulation_steps(), accum / world);
  }
  args.set_gradient_accumulation_steps(static_cast<std::int32_t>(accum / world));
}

}  // namespace

at::Tensor tokenLossSum(const ModelOutput& out, const at::Tensor& labels, bool shiftLabels) {
  at::Tensor logits = out.logits;
  at::Tensor target = labels;
  if (shiftLabels) {
    logits = logits.narrow(-2, 0, logits.size(-2) - 1);
    target = target.narrow(-1, 1, target.size(-1) - 1);
  }
  at::Tensor flatLogits = logits.reshape({-1, logits.size(-1)});
  return at::cross_entropy_loss(flatLogits, target.reshape({-1}), {}, at::Reduction::Sum,
                               /*ignore_index=*/-100);
}

Batch batchWithItemCount(const Batch& b, const at::Tensor& numItems) {
  Batch out = b;
  out.numItemsInBatch = numItems;
  return out;
}

at::Tensor modelLossOverItems(const ModelOutput& out, const at::Tensor& labels,
                              const at::Tensor& numItems, bool shiftLabels) {
  if (out.lossOverItemsInBatch) return out.loss;
  // The model's loss is the mean over this micro-batch's own targets: mean * local / global
  // is the micro-batch's token sum over the global count (a micro-batch without targets
  // contributes 0, not 0/0).
  at::Tensor target = labels;
  if (shiftLabels) target = target.narrow(-1, 1, target.size(-1) - 1);
  const at::Tensor local = target.ne(-100).sum();
  const at::Tensor mean = at::where(local.gt(0), out.loss, at::zeros_like(out.loss));
  return mean * local.to(out.loss.scalar_type()) / numItems.clamp_min(1);
}

at::Tensor tokenMeanLoss(const ModelOutput& out, const at::Tensor& labels,
                         std::int64_t numItemsInBatch, bool shiftLabels) {
  const at::Tensor sum = tokenLossSum(out, labels, shiftLabels);
  return sum / static_cast<double>(std::max<std::int64_t>(1, numItemsInBatch));
}

Trainer::Trainer(TrainingArguments args, dist::Communicator& comm, TrainerParts parts)
    : args_(std::move(args)), comm_(comm), parts_(std::move(parts)) {
  ValidationContext ctx;
  ctx.hasTrainDataset = parts_.trainDataset != nullptr;
  ctx.hasEvalDataset = parts_.evalDataset != nullptr;
  // label_names (HF): the batch entry that holds the labels. Cohort's loss, item count and
  // evaluation take one label tensor.
  if (args_.label_names_size() > 1) {
    throw ConfigError("label_names: the Trainer takes one label tensor, got " +
                      std::to_string(args_.label_names_size()) + " names");
  }
  std::string labelName = args_.label_names_size() == 1 ? args_.label_names(0) : "";
  // A TorchScript model becomes parts_.model here: before the device facts are read.
  if (parts_.scriptModel) labelName = adoptScriptModel(parts_, labelName, comm_.rank());
  if (labelName.empty()) labelName = kLabelsName;
  if (labelName != kLabelsName) parts_.collator = withLabelName(parts_.collator, labelName);
  if (parts_.model) ctx.onCuda = modelDevice(*parts_.model).is_cuda();
  logWarnings(validate(args_, ctx), comm_.rank());
  applyTf32(args_);  // HF sets LibTorch's TF32 switches in __post_init__
  if (!parts_.model || !parts_.forward) {
    throw ConfigError("Trainer: a model and a forward function are required");
  }
  checkPlacement(modelDevice(*parts_.model), comm_);  // before any collective
  if (args_.has_neftune_noise_alpha() && args_.neftune_noise_alpha() > 0 &&
      parts_.neftuneEmbedding == nullptr) {
    throw ConfigError(
        "neftune_noise_alpha is set but the model has no NoisyEmbedding "
        "(TrainerParts::neftuneEmbedding)");
  }
  if (parts_.computeLoss && parts_.computeLossOnDevice) {
    throw ConfigError("TrainerParts: set computeLoss or computeLossOnDevice, not both");
  }
  defaultLoss_ = !parts_.computeLoss;
  if (!parts_.computeLoss) {
    const bool shift = parts_.shiftLabels;
    parts_.computeLoss = [shift](const ModelOutput& o, const at::Tensor& labels, std::int64_t n) {
      return tokenMeanLoss(o, labels, n, shift);
    };
  }
  if (!parts_.decayParameter) parts_.decayParameter = defaultDecay;
  if (args_.enable_jit_checkpoint()) {
    std::vector<int> signals;
    for (const auto& name : args_.jit_checkpoint_signals()) signals.push_back(signalFromName(name));
    if (signals.empty()) signals = {SIGTERM, SIGUSR1};
    watcher_ = std::make_unique<PreemptionWatcher>(signals, args_.jit_kill_wait());
  }
}

Trainer::~Trainer() = default;

std::pair<EvalParts, EvalOptions> Trainer::evalSetup(std::shared_ptr<const Dataset> dataset,
                                                     const std::string& metricKeyPrefix) const {
  EvalParts ep;
  ep.model = parts_.model.get();
  ep.forward = parts_.forward;
  if (args_.bf16() || args_.fp16()) {
    // As accelerate wraps the model's forward: autocast, then floating outputs back to
    // float32 (convert_outputs_to_fp32) for the loss, the metrics and the gathers.
    const c10::DeviceType device = modelDevice(*parts_.model).type();
    const at::ScalarType dtype = autocastDtype(args_);
    ep.forward = [f = parts_.forward, device, dtype](const Batch& b) {
      ModelOutput out;
      {
        AutocastScope autocast(device, dtype, true);
        out = f(b);
      }
      for (at::Tensor* t : {&out.logits, &out.loss}) {
        if (!t->defined()) continue;
        if (t->scalar_type() == at::kBFloat16 || t->scalar_type() == at::kHalf) *t = t->to(at::kFloat);
      }
      return out;
    };
  }
  ep.dataset = std::move(dataset);
  ep.collator = parts_.collator;
  ep.loss = parts_.evalLoss;
  ep.computeMetrics = parts_.computeMetrics;
  ep.preprocessLogits = parts_.preprocessLogitsForMetrics;
  if (watcher_) ep.shouldStop = [w = watcher_.get()] { return w->stopRequested(); };
  EvalOptions eo = evalOptionsFromArgs(args_);
  eo.shiftLabels = parts_.shiftLabels;
  eo.metricKeyPrefix = metricKeyPrefix;
  eo.device = modelDevice(*parts_.model);
  return {std::move(ep), std::move(eo)};
}

std::map<std::string, double> Trainer::evaluate(const std::string& metricKeyPrefix) {
  if (!parts_.evalDataset) throw ConfigError("evaluate() needs an eval dataset");
  const auto [ep, eo] = evalSetup(parts_.evalDataset, metricKeyPrefix);
  setTrainingPhase(TrainingPhase::kEval);
  const FullEvalCast cast(parts_.model.get(), args_, /*inTrain=*/control_ != nullptr);
  const EvalResult r = trainer::evaluate(comm_, ep, eo);
  setTrainingPhase(TrainingPhase::kIdle);
  evalInterrupted_ = r.interrupted;
  if (r.interrupted) return {};  // a preemption: all ranks stopped at the same batch
  LogEntry e;
  e.step = state_.globalStep;
  e.epoch = state_.epoch;
  for (const auto& [k, v] : r.metrics) e.values[k] = v;
  state_.logHistory.push_back(e);
  for (auto& rep : reporters_) rep->log(e);
  if (bar_ != nullptr) bar_->onLog(e);
  TrainerControl local;
  TrainerControl& control = control_ != nullptr ? *control_ : local;
  for (auto& cb : parts_.callbacks) cb->onEvaluate(state_, control, r.metrics);
  return r.metrics;
}

TrainOutput Trainer::train() {
  const int rank = comm_.rank();
  const auto start = TrainClock::now();
  at::manual_seed(static_cast<std::uint64_t>(args_.seed()));
  keepLaunchedGlobalBatch(args_, comm_.size(), rank);
  TrainRun run(args_, comm_, parts_);  // COLLECTIVE: data plan, sync, optimizer, checkpointer
  state_ = TrainerState{};
  state_.stepsPerEpoch = run.plan.stepsPerEpoch();
  state_.maxSteps =
      args_.max_steps() > 0
          ? args_.max_steps()
          : static_cast<std::int64_t>(
                std::ceil(args_.num_train_epochs() * static_cast<double>(state_.stepsPerEpoch)));
  ckpt::Checkpointer& checkpointer = run.checkpointer;
  const TrainingState& ts = run.ts;
  const GlobalBatchPlan& plan = run.plan;
  const bool withOptimizer = run.withOptimizer;
  // Before anything reads or writes output_dir: is it one directory, or one per node?
  run.storage = checkOutputStorage(args_, *run.consensus);
  checkpointer.setNodeLocal(run.storage.viewOf);
  DataPosition next;
  if (resumeKind(args_) != ResumeKind::kNone) {
    next = resumeRun(args_, state_, ts, *run.consensus, run.storage, checkpointer, plan,
                     withOptimizer);
  } else {
    startFresh(args_, *run.consensus, run.storage);
  }
  run.loader.seek(next.epoch, next.stepInEpoch);
  const double alpha = args_.has_neftune_noise_alpha() ? args_.neftune_noise_alpha() : 0.0;
  NeftuneScope neftune(alpha > 0 ? parts_.neftuneEmbedding : nullptr, alpha);
  TrainLoop loop(*this, run, next, start);
  return loop.run();
}

}  // namespace cohort::trainer
