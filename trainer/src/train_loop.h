// The inside of Trainer::train(): one call's working set (TrainRun: data plan and loader,
// gradient sync, optimizer, checkpointer) and the optimizer step as small named units
// (TrainLoop). train() builds a TrainRun, restores or starts the run, and hands over to
// TrainLoop::run(), whose loop reads as the step's outline:
//   fetch (data, item count, stop agreement) -> forwardBackward -> reduceAndClip ->
//   optimizerStep -> advance (state, callbacks) -> log -> evaluate/save cadence,
// and, when a preemption stopped the loop, the JIT save and its report (preemption_report.h).
// Private to the trainer library. Everything here runs on the training thread; the units
// that talk to other ranks say COLLECTIVE.
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "checkpointing.h"
#include "cohort/ckpt/checkpointer.h"
#include "cohort/dist/consensus.h"
#include "cohort/dist/fused_optimizer.h"
#include "cohort/dist/gradient_sync.h"
#include "cohort/trainer/trainer.h"
#include "output_storage.h"
#include "save_policy.h"

namespace cohort::trainer {

using TrainClock = std::chrono::steady_clock;

// Splits the step loop's wall time into named phases: lap(p) charges the time since the
// previous lap (or start()) to p. Two clock reads per phase boundary (~50 ns each).
class PhaseClock {
 public:
  enum Phase { kData, kStepStats, kForwardBackward, kGradSync, kClip, kOptimizer, kBookkeeping, kCount };
  void start() { last_ = TrainClock::now(); }
  void lap(Phase p) {
    const auto now = TrainClock::now();
    total_[p] += now - last_;
    last_ = now;
  }
  std::map<std::string, double> seconds() const;

 private:
  TrainClock::time_point last_;
  TrainClock::duration total_[kCount]{};
};

// One train() call's objects, built in dependency order. Borrows the Trainer's model and
// communicator (both outlive it). COLLECTIVE to construct (GradientSync, Checkpointer).
struct TrainRun {
  TrainRun(const TrainingArguments& args, dist::Communicator& comm, const TrainerParts& parts);
  TrainRun(const TrainRun&) = delete;
  TrainRun& operator=(const TrainRun&) = delete;

  c10::Device device;  // the model's, where the step computes (device_placement.h)
  GlobalBatchPlan plan;
  DataLoader loader;
  torch::nn::Module& model;
  dist::GradientSync sync;
  dist::FusedOptimizer optimizer;
  std::unique_ptr<dist::Consensus> consensus;  // COLLECTIVE: its own duplicate of comm
  ckpt::Checkpointer checkpointer;              // agrees through `consensus`
  TrainingState ts;
  bool withOptimizer;  // !save_only_model
  OutputStorage storage;  // set by Trainer::train (checkOutputStorage) before any save
};

// The default loss's numerator: the sum of the token cross-entropies (trainer.cc).
at::Tensor tokenLossSum(const ModelOutput& out, const at::Tensor& labels, bool shiftLabels);

// What one step's units hand each other. The tensors live on the run's device; the units
// never read them on the host (log() and settleLoss() do, counted).
struct StepResult {
  StepData data;              // micro-batches on the device
  at::Tensor stats;           // [kStepStatsSlots] int64, reduced: items, stop requests
  std::int64_t numItems = -1; // stats[items] on the host; -1 when not read
  std::optional<bool> stopFlag;  // stats[stop requests] > 0, once read on the host
  double lr = 0.0;            // the learning rate this step uses
  at::Tensor localLoss;       // [] float64: this rank's sum of micro-batch losses
  at::Tensor reduced;         // [2] float64, reduced: squared grad norm, step loss
  bool skipped = false;       // fp16: non-finite gradients, the optimizer step was skipped
};

// The optimizer-step loop of one train() call. Borrows the Trainer (a friend: it updates the
// Trainer's state, reporters and control) and the TrainRun.
class TrainLoop {
 public:
  TrainLoop(Trainer& trainer, TrainRun& run, DataPosition next, TrainClock::time_point start);
  ~TrainLoop();  // detaches the control and the bar from the Trainer
  TrainLoop(const TrainLoop&) = delete;
  TrainLoop& operator=(const TrainLoop&) = delete;
  // COLLECTIVE. Runs to max_steps, a callback's stop or a preemption; returns the output.
  TrainOutput run();

 private:
  // ---- setup ----
  void openReporting();  // rank 0: progress bar and reporters
  // COLLECTIVE. Reporting, onTrainBegin, eval_on_start, the step accumulators; false when
  // eval_on_start was interrupted by a preemption.
  bool begin();
  // ---- the step's units (train_step.cc) ----
  // COLLECTIVE. Loads the step's micro-batches and agrees on the item count and the stop
  // flag; false when the ranks agreed to stop (nothing of the step ran).
  bool fetch(StepResult& step);
  // With enable_jit_checkpoint: whether the ranks agreed in this step's all-reduce to stop
  // (after this step). Reads the flag unless fetch() or log() already did.
  bool stopAgreed(StepResult& step);
  at::Tensor microLoss(const Batch& b, const StepResult& step);
  void forwardBackward(StepResult& step);
  // COLLECTIVE. Global gradient norm and step loss (one all-reduce), clipping.
  void reduceAndClip(StepResult& step);
  void optimizerStep(const StepResult& step);
  // ---- bookkeeping units (train_loop.cc) ----
  void advance(const StepResult& step);  // state, interval counters, progress, onStepEnd
  bool logDue(bool epochEnd) const;
  void log(StepResult& step);  // also reads the stop flag, in the same copy
  bool evalDue(const StepData& data, bool epochEnd) const;
  bool saveDue(bool epochEnd, bool improved) const;
  // COLLECTIVE. The eval/save cadence after a step; false when an evaluation was
  // interrupted by a preemption (the step itself is complete).
  bool evaluateAndSave(const StepData& data, bool evalNow);
  // ---- checkpoints ----
  void afterSave(const ckpt::SaveResult& r);
  void finishPendingSave();
  void saveCheckpoint(bool preempted);  // COLLECTIVE
  bool updateBest(const std::map<std::string, double>& metrics);
  // COLLECTIVE. The JIT save of the last completed step and its report; returns its path.
  std::string stopForPreemption();
  TrainOutput finish(bool preempted, const std::string& jitCheckpoint);
  double lrAt(std::int64_t step) const;
  // A device-to-host copy of `t`, counted in the step's host syncs.
  at::Tensor readToHost(const at::Tensor& t);
  // state.totalLoss from the device accumulator (one read; before saves and at the end).
  void settleLoss();
  at::TensorOptions onDevice(at::ScalarType dtype) const;

  Trainer& t_;
  TrainRun& run_;
  const TrainingArguments& args_;
  const int rank_, world_;
  const TrainClock::time_point start_;
  DataPosition next_;  // where the data loader continues after the last completed step
  std::int64_t warmup_ = 0, logEvery_ = 0, evalEvery_ = 0, saveEvery_ = 0;
  bool trackBest_ = false;
  double lr_ = 0.0;      // the learning rate of the next step (also what a log reports)
  double lastLr_ = 0.0;  // the learning rate of the last step run (checkpoint header)
  std::unique_ptr<ProgressBar> bar_;
  TrainerControl control_;
  PhaseClock phases_;
  // This call's span, for the rates of the final entry (after a resume: the new steps only).
  std::int64_t firstStep_ = 0, firstSamples_ = 0;
  // Device accumulators (float64 / int64 scalars): the run's loss sum (state.totalLoss's
  // value, added to in the same order as a host sum), and since the last log entry: the loss
  // sum and the item count.
  at::Tensor totalLoss_, intervalLoss_, intervalTokens_;
  std::int64_t intervalSteps_ = 0, intervalSamples_ = 0;
  TrainClock::time_point intervalStart_;
  std::int64_t syncsThisStep_ = 0;
  std::vector<std::int64_t> syncsPerStep_;
};

}  // namespace cohort::trainer
