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
#include "resume.h"
#include "save_policy.h"

namespace cohort::trainer {

namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

bool defaultDecay(const std::string& name) {
  return name.find("bias") == std::string::npos && name.find("norm") == std::string::npos &&
         name.find("ln") == std::string::npos;
}

// Splits the step loop's wall time into named phases: lap(p) charges the time since the
// previous lap (or start()) to p. Two clock reads per phase boundary (~50 ns each).
class PhaseClock {
 public:
  enum Phase {
    kData,
    kStepStats,
    kForwardBackward,
    kGradSync,
    kClip,
    kOptimizer,
    kBookkeeping,
    kCount
  };
  void start() { last_ = Clock::now(); }
  void lap(Phase p) {
    const auto now = Clock::now();
    total_[p] += now - last_;
    last_ = now;
  }
  std::map<std::string, double> seconds() const {
    static const char* const kNames[kCount] = {
        "data", "step_stats", "forward_backward", "grad_sync", "clip", "optimizer", "bookkeeping"};
    std::map<std::string, double> out;
    for (int i = 0; i < kCount; ++i)
      out[kNames[i]] = std::chrono::duration<double>(total_[i]).count();
    return out;
  }

 private:
  Clock::time_point last_;
  Clock::duration total_[kCount]{};
};

}  // namespace

at::Tensor tokenMeanLoss(const ModelOutput& out, const at::Tensor& labels,
                         std::int64_t numItemsInBatch, bool shiftLabels) {
  at::Tensor logits = out.logits;
  at::Tensor target = labels;
  if (shiftLabels) {
    logits = logits.narrow(-2, 0, logits.size(-2) - 1);
    target = target.narrow(-1, 1, target.size(-1) - 1);
  }
  at::Tensor flatLogits = logits.reshape({-1, logits.size(-1)});
  at::Tensor sum = at::cross_entropy_loss(flatLogits, target.reshape({-1}), {}, at::Reduction::Sum,
                                          /*ignore_index=*/-100);
  return sum / static_cast<double>(std::max<std::int64_t>(1, numItemsInBatch));
}

Trainer::Trainer(TrainingArguments args, dist::Communicator& comm, TrainerParts parts)
    : args_(std::move(args)), comm_(comm), parts_(std::move(parts)) {
  ValidationContext ctx;
  ctx.hasTrainDataset = parts_.trainDataset != nullptr;
  ctx.hasEvalDataset = parts_.evalDataset != nullptr;
  logWarnings(validate(args_, ctx), comm_.rank());
  if (!parts_.model || !parts_.forward) {
    throw ConfigError("Trainer: a model and a forward function are required");
  }
  if (args_.has_neftune_noise_alpha() && args_.neftune_noise_alpha() > 0 &&
      parts_.neftuneEmbedding == nullptr) {
    throw ConfigError(
        "neftune_noise_alpha is set but the model has no NoisyEmbedding "
        "(TrainerParts::neftuneEmbedding)");
  }
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

std::map<std::string, double> Trainer::evaluate(const std::string& metricKeyPrefix) {
  if (!parts_.evalDataset) throw ConfigError("evaluate() needs an eval dataset");
  EvalParts ep;
  ep.model = parts_.model.get();
  ep.forward = parts_.forward;
  ep.dataset = parts_.evalDataset;
  ep.collator = parts_.collator;
  ep.loss = parts_.evalLoss;
  ep.computeMetrics = parts_.computeMetrics;
  ep.preprocessLogits = parts_.preprocessLogitsForMetrics;
  if (watcher_) ep.shouldStop = [w = watcher_.get()] { return w->stopRequested(); };
  EvalOptions eo = evalOptionsFromArgs(args_);
  eo.shiftLabels = parts_.shiftLabels;
  eo.metricKeyPrefix = metricKeyPrefix;
  setTrainingPhase(TrainingPhase::kEval);
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
  const int world = comm_.size(), rank = comm_.rank();
  const auto start = Clock::now();
  at::manual_seed(static_cast<std::uint64_t>(args_.seed()));

  GlobalBatchPlan plan(parts_.trainDataset->size(), args_.per_device_train_batch_size(), world,
                       args_.gradient_accumulation_steps(), args_.dataloader_drop_last(),
                       static_cast<std::uint64_t>(dataSeed(args_)), /*shuffle=*/true);
  DataLoader loader(parts_.trainDataset, parts_.collator, plan, rank,
                    args_.dataloader_num_workers(), prefetchFactor(args_),
                    args_.dataloader_persistent_workers());
  state_ = TrainerState{};
  state_.stepsPerEpoch = plan.stepsPerEpoch();
  state_.maxSteps =
      args_.max_steps() > 0
          ? args_.max_steps()
          : static_cast<std::int64_t>(
                std::ceil(args_.num_train_epochs() * static_cast<double>(state_.stepsPerEpoch)));
  const std::int64_t warmup = resolveWarmupSteps(args_, state_.maxSteps);
  const std::int64_t logEvery = resolveLoggingSteps(args_, state_.maxSteps);

  torch::nn::Module& model = *parts_.model;
  model.train(true);
  dist::GradientSyncOptions so;
  so.op = dist::ReduceOp::kSum;  // losses are normalised by the global item count
  so.shardedUpdate = parts_.shardedUpdate;
  dist::GradientSync sync(model, comm_, so);
  dist::OptimizerOptions ao;
  ao.kind = args_.optim() == "sgd" ? dist::OptimizerKind::kSgd : dist::OptimizerKind::kAdamW;
  ao.lr = args_.learning_rate();
  ao.beta1 = args_.adam_beta1();
  ao.beta2 = args_.adam_beta2();
  ao.eps = args_.adam_epsilon();
  ao.weightDecay = args_.weight_decay();
  dist::FusedOptimizer optimizer(sync, ao, parts_.decayParameter);
  const auto consensus = makeRunConsensus(comm_);  // COLLECTIVE: its own communicator
  ckpt::Checkpointer checkpointer(*consensus);
  const TrainingState ts{model, sync, optimizer, comm_};
  const bool withOptimizer = !args_.save_only_model();
  DataPosition next;
  if (resumeKind(args_) != ResumeKind::kNone) {
    next = resumeRun(args_, state_, ts, *consensus, checkpointer, plan, withOptimizer);
  } else {
    startFresh(args_, *consensus);
  }
  loader.seek(next.epoch, next.stepInEpoch);
  const double alpha = args_.has_neftune_noise_alpha() ? args_.neftune_noise_alpha() : 0.0;
  NeftuneScope neftune(alpha > 0 ? parts_.neftuneEmbedding : nullptr, alpha);

  std::unique_ptr<ProgressBar> bar;
  if (rank == 0) {  // only rank 0 writes logs and draws progress
    ProgressBarOptions po;
    const env::AutoBool mode = env::get(env::kProgressBar);
    if (!mode) {
      po.isTerminal =
          ProgressBar::stdoutIsTerminal() && std::getenv("OMPI_COMM_WORLD_SIZE") == nullptr;
    } else {
      po.isTerminal = *mode;
    }
    bar = std::make_unique<ProgressBar>(state_.maxSteps, po);
    ReporterConfig cfg;
    cfg.outputDir = args_.output_dir();
    if (args_.has_logging_dir()) cfg.loggingDir = args_.logging_dir();
    cfg.progressBar = bar.get();
    cfg.runArguments = &args_;  // TensorBoard: text and HParams summaries of the run
    // A fresh run starts a new log history; a resumed one continues it.
    cfg.appendJsonl = resumeKind(args_) != ResumeKind::kNone;
    std::filesystem::create_directories(args_.output_dir());
    // Nothing configured: console lines, like a plain HF run prints its logs.
    std::vector<std::string> targets(args_.report_to().begin(), args_.report_to().end());
    if (targets.empty()) targets.push_back("console");
    reporters_ = makeReporters(targets, cfg);
    bar->start(state_.globalStep);
  }

  TrainerControl control;
  control_ = &control;
  bar_ = bar.get();
  struct Release {  // evaluate() may run outside train() too
    Trainer* t;
    ~Release() { t->control_ = nullptr, t->bar_ = nullptr; }
  } release{this};
  for (auto& cb : parts_.callbacks) cb->onTrainBegin(state_, control);
  const bool evalSteps = args_.eval_strategy() == "steps";
  const std::int64_t evalEvery = evalSteps ? resolveEvalSteps(args_, state_.maxSteps) : 0;
  bool preempted = false;
  if (args_.eval_on_start()) {
    evaluate();
    preempted = evalInterrupted_;
  }
  COHORT_LOG_INFO(
      "training: {} steps ({} per epoch), global batch {} = {} per device x {} ranks "
      "x {} accumulation, {} samples",
      state_.maxSteps, state_.stepsPerEpoch, plan.globalBatch(),
      args_.per_device_train_batch_size(), world, args_.gradient_accumulation_steps(),
      parts_.trainDataset->size());

  // ---- checkpoints (HF's save_strategy, rotation, best model) ----
  const std::string saveStrategy = args_.save_strategy();
  const std::int64_t saveEvery =
      saveStrategy == "steps" ? resolveSaveSteps(args_, state_.maxSteps) : 0;
  const bool trackBest =
      args_.has_metric_for_best_model() || args_.load_best_model_at_end() || saveStrategy == "best";
  double lastLr = args_.learning_rate();
  auto afterSave = [&](const ckpt::SaveResult& r) {
    state_.lastCheckpoint = r.dir;
    if (rank == 0) {
      COHORT_LOG_INFO("saved {} ({:.1f} MiB in {:.2f} s, {:.0f} MB/s)", r.dir,
                      static_cast<double>(r.bytes) / (1 << 20), r.seconds,
                      static_cast<double>(r.bytes) / 1e6 / std::max(1e-9, r.seconds));
      const int limit = args_.has_save_total_limit() ? args_.save_total_limit() : 0;
      for (const auto& gone :
           rotateCheckpoints(args_.output_dir(), limit, state_.bestModelCheckpoint)) {
        COHORT_LOG_INFO("deleted {} (save_total_limit {})", gone, limit);
      }
    }
    for (auto& cb : parts_.callbacks) cb->onSave(state_, control);
  };
  auto finishPendingSave = [&] {
    if (auto r = checkpointer.wait()) afterSave(*r);
  };
  auto saveCheckpoint = [&](bool preempted) {
    setTrainingPhase(TrainingPhase::kSave);
    struct Idle {
      ~Idle() { setTrainingPhase(TrainingPhase::kIdle); }
    } idle;
    finishPendingSave();
    const std::string dir = ckpt::checkpointDir(args_.output_dir(), state_.globalStep);
    if (state_.bestMetric && state_.bestGlobalStep == state_.globalStep) {
      state_.bestModelCheckpoint = dir;
    }
    const ckpt::Manifest header =
        makeHeader(args_, state_, next, plan.globalBatch(), optimizer.stepCount(), withOptimizer,
                   lastLr, preempted);
    const std::vector<ckpt::SavePiece> pieces = savePieces(ts, withOptimizer);
    if (args_.save_async() && !preempted) {
      checkpointer.saveAsync(dir, pieces, header);
    } else {
      afterSave(checkpointer.save(dir, pieces, header));
    }
  };
  auto updateBest = [&](const std::map<std::string, double>& metrics) {
    if (!trackBest) return false;
    const std::string key = bestMetricKey(args_);
    auto it = metrics.find(key);
    if (it == metrics.end()) {
      std::string have;
      for (const auto& [k, v] : metrics) have += (have.empty() ? "" : ", ") + k;
      throw ConfigError("metric_for_best_model: \"" + key +
                        "\" is not among the evaluation "
                        "metrics (" +
                        have + ")");
    }
    if (!improves(it->second, state_.bestMetric, greaterIsBetter(args_))) return false;
    state_.bestMetric = it->second;
    state_.bestGlobalStep = state_.globalStep;
    return true;
  };

  // Async saves copy the state to host buffers (the parameters and moments in the
  // background, or when the next optimizer step starts whatever is left): allocate the
  // buffers now, not in the middle of the first save.
  if (args_.save_async() && saveStrategy != "no") {
    checkpointer.reserveSnapshot(savePieces(ts, withOptimizer));
  }

  // This call's span, for the rates of the final entry (after a resume: the new steps only).
  const std::int64_t firstStep = state_.globalStep, firstSamples = state_.consumedSamples;
  double intervalLoss = 0.0;
  std::int64_t intervalSteps = 0, intervalSamples = 0, intervalTokens = 0;
  auto intervalStart = Clock::now();
  PhaseClock phases;
  while (!preempted && state_.globalStep < state_.maxSteps && !control.shouldStop) {
    phases.start();
    setTrainingPhase(TrainingPhase::kData);
    StepData data = loader.next();
    phases.lap(PhaseClock::kData);
    std::vector<at::Tensor> labels;
    for (const Batch& b : data.micro) {
      if (b.size > 0) labels.push_back(b.labels);
    }
    const std::int64_t localItems = dist::countItems(labels, -100, parts_.shiftLabels);
    // The stop request rides the step's one small all-reduce: every rank learns it at the
    // same step boundary, before this step changes anything.
    const bool stopHere = watcher_ && watcher_->stopRequested();
    const dist::GlobalStepStats stats = dist::reduceStepStats(comm_, localItems, stopHere);
    phases.lap(PhaseClock::kStepStats);
    if (stats.stopRequested) {
      preempted = true;
      break;
    }
    setTrainingPhase(TrainingPhase::kCompute);

    const double lr =
        args_.learning_rate() *
        lrMultiplier(args_.lr_scheduler_type(), state_.globalStep, warmup, state_.maxSteps);
    lastLr = lr;
    sync.zeroGrad();
    double localLoss = 0.0;
    for (std::size_t m = 0; m < data.micro.size(); ++m) {
      std::optional<dist::GradientSync::NoSyncGuard> guard;
      if (m + 1 < data.micro.size()) guard.emplace(sync.noSync());
      const Batch& b = data.micro[m];
      at::Tensor loss;
      if (b.size == 0) {
        // A rank with no samples left in a short last step still joins the gradient
        // reduction: a zero loss that touches every parameter.
        loss = at::zeros({}, at::kDouble);
        for (const auto& p : model.parameters()) loss = loss + p.sum() * 0.0;
      } else {
        const ModelOutput out = parts_.forward(b);
        loss = parts_.computeLoss(out, b.labels, stats.numItems);
      }
      loss.backward();
      localLoss += loss.item<double>();
    }
    phases.lap(PhaseClock::kForwardBackward);
    sync.finish();
    phases.lap(PhaseClock::kGradSync);

    // One small all-reduce: this rank's share of the squared gradient norm and of the loss.
    double normSq = 0.0;
    const auto& grads = sync.bucketGradients();
    for (std::size_t k = 0; k < grads.size(); ++k) {
      const auto [lo, hi] =
          dist::partitionOf(static_cast<std::size_t>(grads[k].numel()), world, rank);
      normSq += grads[k]
                    .slice(0, static_cast<std::int64_t>(lo), static_cast<std::int64_t>(hi))
                    .to(at::kDouble)
                    .pow(2)
                    .sum()
                    .item<double>();
    }
    at::Tensor shared = at::tensor({normSq, localLoss}, at::kDouble);
    comm_.allReduce(shared);
    const double gradNorm = std::sqrt(shared[0].item<double>());
    const double stepLoss = shared[1].item<double>();
    if (args_.max_grad_norm() > 0) {
      const double coef = args_.max_grad_norm() / (gradNorm + 1e-6);
      if (coef < 1.0) {  // as torch's clip_grad_norm_
        for (std::size_t k = 0; k < grads.size(); ++k) {
          const auto [lo, hi] = sync.ownedRange(k);
          grads[k].slice(0, lo, hi).mul_(coef);
        }
      }
    }
    phases.lap(PhaseClock::kClip);
    // An async save in flight may still be reading parameters and moments in place.
    if (checkpointer.asyncInFlight()) {
      const auto t0 = Clock::now();
      const std::int64_t copied = checkpointer.releaseSources();
      if (copied > 0 && rank == 0) {
        COHORT_LOG_INFO("async save: the optimizer step first copied {:.1f} MiB the writer had "
                        "not reached ({:.3f} s)",
                        static_cast<double>(copied) / (1 << 20), seconds(t0, Clock::now()));
      }
    }
    optimizer.step(lr);
    phases.lap(PhaseClock::kOptimizer);

    ++state_.globalStep;
    state_.consumedSamples += data.samplesThisStep;
    next = data.stepInEpoch + 1 == state_.stepsPerEpoch
               ? DataPosition{data.epoch + 1, 0}
               : DataPosition{data.epoch, data.stepInEpoch + 1};
    state_.epoch = static_cast<double>(data.epoch) + static_cast<double>(data.stepInEpoch + 1) /
                                                         static_cast<double>(state_.stepsPerEpoch);
    intervalLoss += stepLoss;
    state_.totalLoss += stepLoss;
    ++state_.totalLossSteps;
    ++intervalSteps;
    intervalSamples += data.samplesThisStep;
    intervalTokens += stats.numItems;
    if (bar) bar->update(state_.globalStep);
    for (auto& cb : parts_.callbacks) cb->onStepEnd(state_, control);

    const bool epochEnd = data.stepInEpoch + 1 == state_.stepsPerEpoch;
    const bool evalNow = control.shouldEvaluate ||
                         (evalSteps && evalEvery > 0 && state_.globalStep % evalEvery == 0 &&
                          static_cast<double>(state_.globalStep) >= args_.eval_delay()) ||
                         (args_.eval_strategy() == "epoch" && epochEnd &&
                          static_cast<double>(data.epoch + 1) > args_.eval_delay());
    bool doLog = control.shouldLog;
    if (args_.logging_strategy() == "steps") {
      doLog = doLog || (logEvery > 0 && state_.globalStep % logEvery == 0) ||
              (args_.logging_first_step() && state_.globalStep == 1);
    } else if (args_.logging_strategy() == "epoch") {
      doLog = doLog || epochEnd;
    }
    if (doLog) {
      const double dt = std::max(1e-9, seconds(intervalStart, Clock::now()));
      LogEntry e;
      e.step = state_.globalStep;
      e.epoch = state_.epoch;
      e.values["loss"] = intervalLoss / static_cast<double>(intervalSteps);
      e.values["grad_norm"] = gradNorm;
      e.values["learning_rate"] =
          args_.learning_rate() *
          lrMultiplier(args_.lr_scheduler_type(), state_.globalStep, warmup, state_.maxSteps);
      e.values["samples_per_second"] = static_cast<double>(intervalSamples) / dt;
      e.values["tokens_per_second"] = static_cast<double>(intervalTokens) / dt;
      state_.logHistory.push_back(e);
      for (auto& r : reporters_) r->log(e);
      if (bar) bar->onLog(e);
      for (auto& cb : parts_.callbacks) cb->onLog(state_, control, e);
      control.shouldLog = false;
      intervalLoss = 0.0;
      intervalSteps = intervalSamples = intervalTokens = 0;
      intervalStart = Clock::now();
    }
    phases.lap(PhaseClock::kBookkeeping);
    bool improved = false;
    if (evalNow) {
      control.shouldEvaluate = false;
      improved = updateBest(evaluate());
      if (evalInterrupted_) {
        preempted = true;  // the step itself is complete: it is what gets saved
        break;
      }
    }
    // HF: a checkpoint every save_steps, at each epoch end, on improvement ("best"), and at
    // the end of training for "steps"/"epoch".
    const bool lastStep = state_.globalStep >= state_.maxSteps;
    const bool saveNow =
        control.shouldSave || (saveEvery > 0 && state_.globalStep % saveEvery == 0) ||
        (saveStrategy == "epoch" && epochEnd) || (saveStrategy == "best" && improved) ||
        (lastStep && (saveStrategy == "steps" || saveStrategy == "epoch"));
    if (saveNow) {
      control.shouldSave = false;
      saveCheckpoint(/*preempted=*/false);
    }
  }
  setTrainingPhase(TrainingPhase::kIdle);
  std::string jitCheckpoint;
  if (preempted) {
    // Who was signalled first, when, and doing what: one small all-reduce each.
    const bool mine = watcher_->signalled();
    at::Tensor when = at::tensor({mine ? watcher_->signalWallTime() : 1e300}, at::kDouble);
    comm_.allReduce(when, dist::ReduceOp::kMin);
    const double first = when.item<double>();
    const bool isFirst = mine && watcher_->signalWallTime() == first;
    at::Tensor who = at::tensor({static_cast<std::int64_t>(isFirst ? rank : world)}, at::kLong);
    comm_.allReduce(who, dist::ReduceOp::kMin);
    const std::int64_t firstRank = who.item<std::int64_t>();
    const bool report = rank == firstRank;
    at::Tensor what = at::tensor(
        {static_cast<std::int64_t>(report ? watcher_->signalNumber() : 0),
         static_cast<std::int64_t>(report ? static_cast<int>(watcher_->phaseAtSignal()) : 0)},
        at::kLong);
    comm_.allReduce(what, dist::ReduceOp::kSum);
    if (mine) {  // every signalled rank says so (non-zero ranks log warnings only)
      COHORT_LOG_WARN(
          "rank {}: {} received {:.2f} s before the stop at step {}", rank,
          signalName(watcher_->signalNumber()),
          std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
                  .count() -
              watcher_->signalWallTime(),
          state_.globalStep);
    }
    // The last COMPLETED step: saved now unless a (periodic or async) save of it exists.
    // Stopped before the first step ever (not a resumed run): nothing to save.
    finishPendingSave();
    const bool beforeFirstStep = state_.globalStep == 0 && state_.lastCheckpoint.empty();
    if (!beforeFirstStep) {
      jitCheckpoint = ckpt::checkpointDir(args_.output_dir(), state_.globalStep);
      if (state_.lastCheckpoint != jitCheckpoint) saveCheckpoint(/*preempted=*/true);
    }
    const double durable =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count() -
        first;
    if (rank == 0) {
      // The contract with the batch script (docs/slurm.md): PREEMPTED names the checkpoint,
      // written atomically after the checkpoint is durable.
      const std::string marker = args_.output_dir() + "/PREEMPTED";
      {
        std::ofstream m(marker + ".tmp");
        m << (beforeFirstStep ? std::string("none: stopped before the first step")
                              : std::filesystem::path(jitCheckpoint).filename().string())
          << "\n";
      }
      ckpt::fsyncPath(marker + ".tmp");
      std::filesystem::rename(marker + ".tmp", marker);
      ckpt::fsyncPath(args_.output_dir());
      const std::time_t t = static_cast<std::time_t>(first);
      char at[32];
      std::strftime(at, sizeof at, "%H:%M:%S", std::localtime(&t));
      std::string outcome = "stopped before the first step: no checkpoint written";
      if (!beforeFirstStep) {
        outcome = fmt::format("stop agreed at step {}; checkpoint {} durable {:.2f} s after the signal",
                              state_.globalStep, jitCheckpoint, durable);
      }
      COHORT_LOG_INFO("preemption: {} received on rank {} at {}.{:03d} during {}; {}",
                      signalName(static_cast<int>(what[0].item<std::int64_t>())), firstRank, at,
                      static_cast<int>((first - std::floor(first)) * 1000),
                      phaseName(static_cast<TrainingPhase>(what[1].item<std::int64_t>())), outcome);
    }
  }
  finishPendingSave();
  if (!preempted && args_.load_best_model_at_end() && !state_.bestModelCheckpoint.empty()) {
    if (rank == 0) {
      COHORT_LOG_INFO("loading the best model from {} ({} = {})", state_.bestModelCheckpoint,
                      bestMetricKey(args_), state_.bestMetric.value_or(0.0));
    }
    loadModelOnly(ts, checkpointer, state_.bestModelCheckpoint);
  }

  const double runtime = seconds(start, Clock::now());
  TrainOutput out;
  out.globalStep = state_.globalStep;
  out.preempted = preempted;
  out.checkpoint = preempted ? jitCheckpoint : state_.lastCheckpoint;
  out.trainingLoss =
      state_.totalLossSteps > 0 ? state_.totalLoss / static_cast<double>(state_.totalLossSteps) : 0;
  // Samples and steps of THIS call over its runtime (docs/logging.md): after a resume the
  // earlier legs' samples are not divided by this leg's time.
  out.metrics["train_runtime"] = runtime;
  out.metrics["train_samples_per_second"] =
      static_cast<double>(state_.consumedSamples - firstSamples) / runtime;
  out.metrics["train_steps_per_second"] =
      static_cast<double>(state_.globalStep - firstStep) / runtime;
  out.metrics["train_loss"] = out.trainingLoss;
  out.phaseSeconds = phases.seconds();
  LogEntry final;
  final.step = state_.globalStep;
  final.epoch = state_.epoch;
  for (const auto& [k, v] : out.metrics) final.values[k] = v;
  state_.logHistory.push_back(final);
  if (bar) bar->finish();
  for (auto& r : reporters_) r->log(final);
  reporters_.clear();  // they borrow the bar
  for (auto& cb : parts_.callbacks) cb->onTrainEnd(state_, control);
  return out;
}

}  // namespace cohort::trainer
