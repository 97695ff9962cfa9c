// TrainLoop: the loop, its bookkeeping units (state, logging, evaluation and save cadence,
// checkpoints) and the end of a run. The compute units of the step are in train_step.cc.
#include "train_loop.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "cohort/dist/batch_stats.h"
#include "cohort/dist/env.h"
#include "cohort/dist/log.h"
#include "cohort/trainer/preemption.h"
#include "cohort/trainer/schedule.h"
#include "cohort/trainer/training_args.h"
#include "device_placement.h"
#include "preemption_report.h"
#include "resume.h"

namespace cohort::trainer {

namespace {

double seconds(TrainClock::time_point a, TrainClock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

torch::nn::Module& inTrainingMode(torch::nn::Module& m) {
  m.train(true);
  return m;
}

dist::GradientSyncOptions syncOptions(const TrainerParts& parts, const TrainingArguments& args) {
  dist::GradientSyncOptions so;
  so.op = dist::ReduceOp::kSum;  // losses are normalised by the global item count
  so.shardedUpdate = parts.shardedUpdate;
  so.bf16Communication = args.ddp_bf16_grad_comm();
  return so;
}

dist::OptimizerOptions optimizerOptions(const TrainingArguments& args) {
  dist::OptimizerOptions ao;
  ao.kind = args.optim() == "sgd" ? dist::OptimizerKind::kSgd : dist::OptimizerKind::kAdamW;
  ao.lr = args.learning_rate();
  ao.beta1 = args.adam_beta1();
  ao.beta2 = args.adam_beta2();
  ao.eps = args.adam_epsilon();
  ao.weightDecay = args.weight_decay();
  return ao;
}

}  // namespace

std::map<std::string, double> PhaseClock::seconds() const {
  static const char* const kNames[kCount] = {
      "data", "step_stats", "forward_backward", "grad_sync", "clip", "optimizer", "bookkeeping"};
  std::map<std::string, double> out;
  for (int i = 0; i < kCount; ++i) out[kNames[i]] = std::chrono::duration<double>(total_[i]).count();
  return out;
}

TrainRun::TrainRun(const TrainingArguments& args, dist::Communicator& comm,
                   const TrainerParts& parts)
    : device(modelDevice(*parts.model)),
      plan(parts.trainDataset->size(), args.per_device_train_batch_size(), comm.size(),
           args.gradient_accumulation_steps(), args.dataloader_drop_last(),
           static_cast<std::uint64_t>(dataSeed(args)), /*shuffle=*/true),
      loader(parts.trainDataset, parts.collator, plan, comm.rank(), args.dataloader_num_workers(),
             prefetchFactor(args), args.dataloader_persistent_workers(),
             /*pinMemory=*/args.dataloader_pin_memory() && device.is_cuda()),
      model(inTrainingMode(*parts.model)),
      sync(model, comm, syncOptions(parts, args)),
      optimizer(sync, optimizerOptions(args), parts.decayParameter),
      consensus(makeRunConsensus(comm)),
      checkpointer(*consensus),
      ts{model, sync, optimizer, comm},
      withOptimizer(!args.save_only_model()) {}

TrainLoop::TrainLoop(Trainer& trainer, TrainRun& run, DataPosition next,
                     TrainClock::time_point start)
    : t_(trainer),
      run_(run),
      args_(trainer.args_),
      rank_(trainer.comm_.rank()),
      world_(trainer.comm_.size()),
      start_(start),
      next_(next) {
  const std::int64_t maxSteps = t_.state_.maxSteps;
  warmup_ = resolveWarmupSteps(args_, maxSteps);
  logEvery_ = resolveLoggingSteps(args_, maxSteps);
  evalEvery_ = args_.eval_strategy() == "steps" ? resolveEvalSteps(args_, maxSteps) : 0;
  saveEvery_ = args_.save_strategy() == "steps" ? resolveSaveSteps(args_, maxSteps) : 0;
  trackBest_ = args_.has_metric_for_best_model() || args_.load_best_model_at_end() ||
               args_.save_strategy() == "best";
  lr_ = lrAt(t_.state_.globalStep - t_.state_.skippedSteps);  // fp16 skips: HF's scheduler
  lastLr_ = args_.learning_rate();
}

TrainLoop::~TrainLoop() {
  // evaluate() may run outside train() too.
  t_.control_ = nullptr;
  t_.bar_ = nullptr;
}

double TrainLoop::lrAt(std::int64_t step) const {
  return args_.learning_rate() *
         lrMultiplier(args_.lr_scheduler_type(), step, warmup_, t_.state_.maxSteps);
}

void TrainLoop::openReporting() {
  if (rank_ != 0) return;  // only rank 0 writes logs and draws progress
  ProgressBarOptions po;
  const env::AutoBool mode = env::get(env::kProgressBar);
  if (!mode) {
    po.isTerminal =
        ProgressBar::stdoutIsTerminal() && std::getenv("OMPI_COMM_WORLD_SIZE") == nullptr;
  } else {
    po.isTerminal = *mode;
  }
  bar_ = std::make_unique<ProgressBar>(t_.state_.maxSteps, po);
  ReporterConfig cfg;
  cfg.outputDir = args_.output_dir();
  if (args_.has_logging_dir()) cfg.loggingDir = args_.logging_dir();
  cfg.progressBar = bar_.get();
  cfg.runArguments = &args_;  // TensorBoard: text and HParams summaries of the run
  // A fresh run starts a new log history; a resumed one continues it.
  cfg.appendJsonl = resumeKind(args_) != ResumeKind::kNone;
  std::filesystem::create_directories(args_.output_dir());
  // Nothing configured: console lines, like a plain HF run prints its logs.
  std::vector<std::string> targets(args_.report_to().begin(), args_.report_to().end());
  if (targets.empty()) targets.push_back("console");
  t_.reporters_ = makeReporters(targets, cfg);
  bar_->start(t_.state_.globalStep);
}

bool TrainLoop::begin() {
  TrainerState& state = t_.state_;
  openReporting();
  t_.control_ = &control_;
  t_.bar_ = bar_.get();
  for (auto& cb : t_.parts_.callbacks) cb->onTrainBegin(state, control_);
  bool preempted = false;
  if (args_.eval_on_start()) {
    t_.evaluate();
    preempted = t_.evalInterrupted_;
  }
  COHORT_LOG_INFO(
      "training: {} steps ({} per epoch), global batch {} = {} per device x {} ranks "
      "x {} accumulation, {} samples",
      state.maxSteps, state.stepsPerEpoch, run_.plan.globalBatch(),
      args_.per_device_train_batch_size(), world_, args_.gradient_accumulation_steps(),
      t_.parts_.trainDataset->size());
  // Async saves copy the state to host buffers (the parameters and moments in the
  // background, or when the next optimizer step starts whatever is left): allocate the
  // buffers now, not in the middle of the first save.
  if (args_.save_async() && args_.save_strategy() != "no") {
    run_.checkpointer.reserveSnapshot(savePieces(run_.ts, run_.withOptimizer));
  }
  firstStep_ = state.globalStep;
  firstSamples_ = state.consumedSamples;
  totalLoss_ = at::full({}, state.totalLoss, onDevice(at::kDouble));
  intervalLoss_ = at::zeros({}, onDevice(at::kDouble));
  intervalTokens_ = at::zeros({}, onDevice(at::kLong));
  intervalStart_ = TrainClock::now();
  return !preempted;
}

TrainOutput TrainLoop::run() {
  TrainerState& state = t_.state_;
  bool preempted = !begin();
  while (!preempted && state.globalStep < state.maxSteps && !control_.shouldStop) {
    StepResult step;
    phases_.start();
    syncsThisStep_ = 0;
    if (!fetch(step)) {
      syncsPerStep_.push_back(syncsThisStep_);
      preempted = true;
      break;
    }
    forwardBackward(step);
    reduceAndClip(step);
    optimizerStep(step);
    advance(step);
    const bool epochEnd = step.data.stepInEpoch + 1 == state.stepsPerEpoch;
    const bool evalNow = evalDue(step.data, epochEnd);
    if (logDue(epochEnd)) log(step);
    const bool stop = stopAgreed(step);
    syncsPerStep_.push_back(syncsThisStep_);
    phases_.lap(PhaseClock::kBookkeeping);
    if (stop) {
      preempted = true;  // agreed in this step's all-reduce; the step is complete and saved
      break;
    }
    if (!evaluateAndSave(step.data, evalNow)) {
      preempted = true;  // the step itself is complete: it is what gets saved
      break;
    }
  }
  setTrainingPhase(TrainingPhase::kIdle);
  const std::string jitCheckpoint = preempted ? stopForPreemption() : std::string();
  finishPendingSave();
  if (!preempted && args_.load_best_model_at_end() && !state.bestModelCheckpoint.empty()) {
    if (rank_ == 0) {
      COHORT_LOG_INFO("loading the best model from {} ({} = {})", state.bestModelCheckpoint,
                      bestMetricKey(args_), state.bestMetric.value_or(0.0));
    }
    loadModelOnly(run_.ts, run_.checkpointer, state.bestModelCheckpoint);
  }
  return finish(preempted, jitCheckpoint);
}

void TrainLoop::advance(const StepResult& step) {
  TrainerState& state = t_.state_;
  const StepData& data = step.data;
  ++state.globalStep;
  state.consumedSamples += data.samplesThisStep;
  next_ = data.stepInEpoch + 1 == state.stepsPerEpoch
              ? DataPosition{data.epoch + 1, 0}
              : DataPosition{data.epoch, data.stepInEpoch + 1};
  state.epoch = static_cast<double>(data.epoch) + static_cast<double>(data.stepInEpoch + 1) /
                                                      static_cast<double>(state.stepsPerEpoch);
  lr_ = lrAt(state.globalStep - state.skippedSteps);  // the next step's, once
  // On the device, in the order the host sums ran (state.totalLoss: see settleLoss()).
  const at::Tensor stepLoss = step.reduced.select(0, 1);
  intervalLoss_ = intervalLoss_ + stepLoss;
  totalLoss_ = totalLoss_ + stepLoss;
  intervalTokens_ =
      intervalTokens_ + step.stats.select(0, static_cast<std::int64_t>(dist::StepStatsSlot::kNumItems));
  ++state.totalLossSteps;
  ++intervalSteps_;
  intervalSamples_ += data.samplesThisStep;
  if (bar_) bar_->update(state.globalStep);
  for (auto& cb : t_.parts_.callbacks) cb->onStepEnd(state, control_);
}

bool TrainLoop::evalDue(const StepData& data, bool epochEnd) const {
  const std::int64_t step = t_.state_.globalStep;
  return control_.shouldEvaluate ||
         (evalEvery_ > 0 && step % evalEvery_ == 0 &&
          static_cast<double>(step) >= args_.eval_delay()) ||
         (args_.eval_strategy() == "epoch" && epochEnd &&
          static_cast<double>(data.epoch + 1) > args_.eval_delay());
}

bool TrainLoop::logDue(bool epochEnd) const {
  const std::int64_t step = t_.state_.globalStep;
  if (args_.logging_strategy() == "steps") {
    return control_.shouldLog || (logEvery_ > 0 && step % logEvery_ == 0) ||
           (args_.logging_first_step() && step == 1);
  }
  if (args_.logging_strategy() == "epoch") return control_.shouldLog || epochEnd;
  return control_.shouldLog;
}

void TrainLoop::log(StepResult& step) {
  TrainerState& state = t_.state_;
  // The step's one read: [norm^2, interval loss, run loss, interval items, stop requests].
  const at::Tensor stops =
      step.stats.select(0, static_cast<std::int64_t>(dist::StepStatsSlot::kStopRequested));
  const at::Tensor host =
      readToHost(at::stack({step.reduced.select(0, 0), intervalLoss_, totalLoss_,
                            intervalTokens_.to(at::kDouble), stops.to(at::kDouble)}));
  const double* v = host.data_ptr<double>();
  state.totalLoss = v[2];
  step.stopFlag = v[4] > 0;
  const double dt = std::max(1e-9, seconds(intervalStart_, TrainClock::now()));
  LogEntry e;
  e.step = state.globalStep;
  e.epoch = state.epoch;
  e.values["loss"] = v[1] / static_cast<double>(intervalSteps_);
  e.values["grad_norm"] = std::sqrt(v[0]);
  e.values["learning_rate"] = lr_;
  e.values["samples_per_second"] = static_cast<double>(intervalSamples_) / dt;
  e.values["tokens_per_second"] = v[3] / dt;
  state.logHistory.push_back(e);
  for (auto& r : t_.reporters_) r->log(e);
  if (bar_) bar_->onLog(e);
  for (auto& cb : t_.parts_.callbacks) cb->onLog(state, control_, e);
  control_.shouldLog = false;
  intervalLoss_ = at::zeros({}, onDevice(at::kDouble));
  intervalTokens_ = at::zeros({}, onDevice(at::kLong));
  intervalSteps_ = intervalSamples_ = 0;
  intervalStart_ = TrainClock::now();
}

// HF: a checkpoint every save_steps, at each epoch end, on improvement ("best"), and at the
// end of training for "steps"/"epoch".
bool TrainLoop::saveDue(bool epochEnd, bool improved) const {
  const std::string& strategy = args_.save_strategy();
  const std::int64_t step = t_.state_.globalStep;
  const bool lastStep = step >= t_.state_.maxSteps;
  return control_.shouldSave || (saveEvery_ > 0 && step % saveEvery_ == 0) ||
         (strategy == "epoch" && epochEnd) || (strategy == "best" && improved) ||
         (lastStep && (strategy == "steps" || strategy == "epoch"));
}

bool TrainLoop::evaluateAndSave(const StepData& data, bool evalNow) {
  bool improved = false;
  if (evalNow) {
    control_.shouldEvaluate = false;
    improved = updateBest(t_.evaluate());
    if (t_.evalInterrupted_) return false;
  }
  if (saveDue(data.stepInEpoch + 1 == t_.state_.stepsPerEpoch, improved)) {
    control_.shouldSave = false;
    saveCheckpoint(/*preempted=*/false);
  }
  return true;
}

void TrainLoop::afterSave(const ckpt::SaveResult& r) {
  TrainerState& state = t_.state_;
  state.lastCheckpoint = r.dir;
  if (rank_ == 0) {
    COHORT_LOG_INFO("saved {} ({:.1f} MiB in {:.2f} s, {:.0f} MB/s)", r.dir,
                    static_cast<double>(r.bytes) / (1 << 20), r.seconds,
                    static_cast<double>(r.bytes) / 1e6 / std::max(1e-9, r.seconds));
  }
  if (run_.storage.ownsView(rank_)) {  // rank 0, or each node's first (save_on_each_node)
    const int limit = args_.has_save_total_limit() ? args_.save_total_limit() : 0;
    for (const auto& gone :
         rotateCheckpoints(args_.output_dir(), limit, state.bestModelCheckpoint)) {
      COHORT_LOG_INFO("deleted {} (save_total_limit {})", gone, limit);
    }
  }
  for (auto& cb : t_.parts_.callbacks) cb->onSave(state, control_);
}

void TrainLoop::finishPendingSave() {
  if (auto r = run_.checkpointer.wait()) afterSave(*r);
}

void TrainLoop::saveCheckpoint(bool preempted) {
  TrainerState& state = t_.state_;
  setTrainingPhase(TrainingPhase::kSave);
  struct Idle {
    ~Idle() { setTrainingPhase(TrainingPhase::kIdle); }
  } idle;
  finishPendingSave();
  settleLoss();  // the header holds it
  const std::string dir = ckpt::checkpointDir(args_.output_dir(), state.globalStep);
  if (state.bestMetric && state.bestGlobalStep == state.globalStep) {
    state.bestModelCheckpoint = dir;
  }
  const ckpt::Manifest header =
      makeHeader(args_, state, next_, run_.plan.globalBatch(), run_.optimizer.stepCount(),
                 run_.withOptimizer, lastLr_, preempted);
  const std::vector<ckpt::SavePiece> pieces = savePieces(run_.ts, run_.withOptimizer);
  if (args_.save_async() && !preempted) {
    run_.checkpointer.saveAsync(dir, pieces, header);
  } else {
    afterSave(run_.checkpointer.save(dir, pieces, header));
  }
}

bool TrainLoop::updateBest(const std::map<std::string, double>& metrics) {
  if (!trackBest_) return false;
  TrainerState& state = t_.state_;
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
  if (!improves(it->second, state.bestMetric, greaterIsBetter(args_))) return false;
  state.bestMetric = it->second;
  state.bestGlobalStep = state.globalStep;
  return true;
}

std::string TrainLoop::stopForPreemption() {
  TrainerState& state = t_.state_;
  const PreemptionFacts facts = agreePreemptionFacts(t_.comm_, *t_.watcher_, state.globalStep);
  // The last COMPLETED step: saved now unless a (periodic or async) save of it exists.
  // Stopped before the first step ever (not a resumed run): nothing to save.
  finishPendingSave();
  const bool beforeFirstStep = state.globalStep == 0 && state.lastCheckpoint.empty();
  std::string jitCheckpoint;
  if (!beforeFirstStep) {
    jitCheckpoint = ckpt::checkpointDir(args_.output_dir(), state.globalStep);
    if (state.lastCheckpoint != jitCheckpoint) saveCheckpoint(/*preempted=*/true);
  }
  const double durable = secondsSinceFirstSignal(facts);
  if (rank_ == 0) {
    writePreemptedMarker(args_.output_dir(),
                         beforeFirstStep
                             ? std::string("none: stopped before the first step")
                             : std::filesystem::path(jitCheckpoint).filename().string());
    logPreemption(facts, state.globalStep, jitCheckpoint, durable);
  }
  return jitCheckpoint;
}

void TrainLoop::settleLoss() {
  if (!totalLoss_.defined()) return;  // no step ran in this call
  t_.state_.totalLoss = totalLoss_.to(at::kCPU).item<double>();
}

TrainOutput TrainLoop::finish(bool preempted, const std::string& jitCheckpoint) {
  TrainerState& state = t_.state_;
  settleLoss();
  const double runtime = seconds(start_, TrainClock::now());
  TrainOutput out;
  out.globalStep = state.globalStep;
  out.preempted = preempted;
  out.checkpoint = preempted ? jitCheckpoint : state.lastCheckpoint;
  out.trainingLoss =
      state.totalLossSteps > 0 ? state.totalLoss / static_cast<double>(state.totalLossSteps) : 0;
  // Samples and steps of THIS call over its runtime (docs/logging.md): after a resume the
  // earlier legs' samples are not divided by this leg's time.
  out.metrics["train_runtime"] = runtime;
  out.metrics["train_samples_per_second"] =
      static_cast<double>(state.consumedSamples - firstSamples_) / runtime;
  out.metrics["train_steps_per_second"] =
      static_cast<double>(state.globalStep - firstStep_) / runtime;
  out.metrics["train_loss"] = out.trainingLoss;
  out.phaseSeconds = phases_.seconds();
  out.hostSyncsPerStep = syncsPerStep_;
  LogEntry final;
  final.step = state.globalStep;
  final.epoch = state.epoch;
  for (const auto& [k, v] : out.metrics) final.values[k] = v;
  state.logHistory.push_back(final);
  if (bar_) bar_->finish();
  for (auto& r : t_.reporters_) r->log(final);
  t_.reporters_.clear();  // they borrow the bar
  for (auto& cb : t_.parts_.callbacks) cb->onTrainEnd(state, control_);
  return out;
}

}  // namespace cohort::trainer
