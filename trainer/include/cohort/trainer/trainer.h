// The Trainer: Hugging Face Trainer semantics on N ranks, with the exactness of the
// data-parallel core. Every optimizer step:
//   1. the data loader yields this rank's gradient_accumulation_steps micro-batches of the
//      GLOBAL batch (data.h);
//   2. the prediction targets of all of them are counted and ONE all-reduce (StepStats) gives
//      num_items_in_batch for the whole step, all ranks (and carries the stop flag);
//   3. forward/backward per micro-batch with loss = compute_loss(outputs, labels,
//      num_items_in_batch) (default: sum of token cross-entropies / num_items), gradients
//      reduce-scattered bucket by bucket while the last backward runs (GradientSync);
//   4. global gradient norm clipping, FusedOptimizer on this rank's partition, parameters
//      all-gathered; scheduler, logging, callbacks.
// After step k the parameters equal those of ONE process training on the concatenated global
// batch, for any world size and accumulation split with the same global batch.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cohort/dist/communicator.h"
#include "cohort/trainer/data.h"
#include "cohort/trainer/evaluation.h"
#include "cohort/trainer/prediction.h"
#include "cohort/trainer/reporting.h"
#include "cohort/trainer/training_args.pb.h"

namespace torch::nn {
class Module;
}
namespace torch::jit {
struct Module;
}

namespace cohort::trainer {

class NoisyEmbeddingImpl;
class PreemptionWatcher;

struct ModelOutput {
  at::Tensor logits;
  at::Tensor loss;  // undefined unless the model computes its own
  // HF's rule for a model that brings its loss: with useModelLoss and no computeLoss, the
  // training loss is `loss` (TorchScript models set it when they return one; a C++ forward
  // may opt in; false keeps the default token loss from logits). As returned when
  // lossOverItemsInBatch (the model divided its token-loss sum by Batch::numItemsInBatch
  // itself); otherwise `loss` is taken as the mean over this micro-batch's own targets and
  // rescaled to their sum over the global count (loss * local targets / num_items_in_batch),
  // which keeps Cohort's token-sum normalisation exact at any world size and accumulation.
  bool useModelLoss = false;
  bool lossOverItemsInBatch = false;
};

// Runs the model on a (non-empty) batch.
using ForwardFn = std::function<ModelOutput(const Batch&)>;
// The user owns normalisation: the returned losses, summed over micro-batches and ranks, are
// the step's loss. numItemsInBatch is GLOBAL (all ranks, all micro-batches of the step).
using ComputeLossFn = std::function<at::Tensor(const ModelOutput&, const at::Tensor& labels,
                                               std::int64_t numItemsInBatch)>;
// The same contract with the global item count as a 0-dim int64 tensor on the model's device
// (as HF hands compute_loss_func a tensor num_items_in_batch): the step then never reads the
// count on the host. A computeLoss taking the count as a number costs one device-to-host read
// before each step's forward.
using ComputeLossOnDeviceFn = std::function<at::Tensor(
    const ModelOutput&, const at::Tensor& labels, const at::Tensor& numItemsInBatch)>;

struct TrainerState {
  std::int64_t globalStep = 0;
  double epoch = 0.0;
  std::int64_t maxSteps = 0;
  std::int64_t stepsPerEpoch = 0;
  std::int64_t consumedSamples = 0;  // global samples consumed by completed steps
  // The sum of the step losses (each averaged over ranks) of the run's first
  // `totalLossSteps` steps, kept across resumes (checkpointed), so that train_loss covers
  // the whole run. totalLossSteps < globalStep only after resuming from a checkpoint that
  // predates it (then the sum starts at the resume). During train() the sum is kept on the
  // model's device; this field catches up when a step logs, at a save and at the end.
  double totalLoss = 0.0;
  std::int64_t totalLossSteps = 0;
  std::vector<LogEntry> logHistory;
  // metric_for_best_model's best value so far, the step it was reached at, and the
  // checkpoint saved at that step (HF's best_metric / best_global_step /
  // best_model_checkpoint).
  std::optional<double> bestMetric;
  std::int64_t bestGlobalStep = 0;
  std::string bestModelCheckpoint;
  std::string resumedFrom;  // the checkpoint this run resumed from ("" for a fresh start)
  std::string lastCheckpoint;  // the newest checkpoint this run completed
  // fp16: torch.amp.GradScaler's scale (0 when the run does not scale losses) and the finite
  // steps since it last changed; checkpointed.
  double lossScale = 0.0;
  std::int64_t lossScaleGrowthTracker = 0;
  // Optimizer steps skipped for non-finite gradients (fp16). They count in globalStep, as in
  // HF, but the learning-rate schedule did not advance: it is at globalStep - skippedSteps.
  std::int64_t skippedSteps = 0;
};

// Set by callbacks to steer the loop (HF's TrainerControl).
struct TrainerControl {
  bool shouldStop = false;
  bool shouldLog = false;
  bool shouldEvaluate = false;
  bool shouldSave = false;
};

// Hooks called on EVERY rank at the same points (keep them deterministic across ranks when
// they set control flags). Default: nothing.
class TrainerCallback {
 public:
  virtual ~TrainerCallback() = default;
  virtual void onTrainBegin(const TrainerState&, TrainerControl&) {}
  virtual void onStepEnd(const TrainerState&, TrainerControl&) {}
  virtual void onLog(const TrainerState&, TrainerControl&, const LogEntry&) {}
  virtual void onEvaluate(const TrainerState&, TrainerControl&,
                          const std::map<std::string, double>&) {}
  virtual void onSave(const TrainerState&, TrainerControl&) {}
  virtual void onTrainEnd(const TrainerState&, TrainerControl&) {}
};

// What the user brings.
struct TrainerParts {
  std::shared_ptr<torch::nn::Module> model;
  ForwardFn forward;
  // Instead of model + forward: a TorchScript module (script_model.h), trained in place and
  // called with the batch's tensors as keyword arguments. Shared: the caller keeps a handle
  // to the trained module.
  std::shared_ptr<torch::jit::Module> scriptModel;
  std::shared_ptr<const Dataset> trainDataset;
  std::shared_ptr<const Dataset> evalDataset;  // optional
  Collator collator;                           // default: defaultCollate
  ComputeLossFn computeLoss;                   // default: token mean over the global count
  ComputeLossOnDeviceFn computeLossOnDevice;   // instead of computeLoss (not both)
  // Causal LM: the model at position t predicts labels[t + 1] (HF shifts inside the model):
  // targets are labels[..., 1:], logits[..., :-1, :].
  bool shiftLabels = false;
  // NEFTune target (neftune_noise_alpha > 0); borrowed, must outlive the Trainer.
  NoisyEmbeddingImpl* neftuneEmbedding = nullptr;
  std::vector<std::shared_ptr<TrainerCallback>> callbacks;
  // Evaluation (eval_strategy, eval_on_start, evaluate()); see evaluation.h.
  ComputeMetricsFn computeMetrics;
  PreprocessLogitsFn preprocessLogitsForMetrics;
  EvalLossFn evalLoss;  // default: per-sample token cross-entropy (shiftLabels honoured)
  // Each rank updates 1/world of the parameters (ZeRO-1 style; same result, less optimizer
  // time and memory). false: every rank updates everything, as DDP.
  bool shardedUpdate = true;
  // Decay applies to a parameter iff this returns true. Default (HF): not to biases and
  // normalisation weights (names containing "bias", "norm" or "ln").
  std::function<bool(const std::string&)> decayParameter;
};

struct TrainOutput {
  std::int64_t globalStep = 0;
  // A preemption signal (enable_jit_checkpoint) stopped the run: `checkpoint` holds the
  // step's durable checkpoint and <output_dir>/PREEMPTED names it. The program should exit 0
  // now (no further evaluation); a requeued run resumes with resume_from_checkpoint=true.
  bool preempted = false;
  std::string checkpoint;
  double trainingLoss = 0.0;              // mean of the step losses
  std::map<std::string, double> metrics;  // train_runtime, train_samples_per_second, ...
  // Wall seconds this rank spent in each part of the step loop, summed over the steps:
  // data (loader), step_stats (the item-count/stop all-reduce), forward_backward (forward,
  // loss, backward, with the overlapped bucket launches), grad_sync (waiting for the
  // gradient reduction), clip (grad norm, its all-reduce, clipping), optimizer, and
  // bookkeeping (progress, callbacks, logging). Evaluation and saves are not included.
  std::map<std::string, double> phaseSeconds;
  // Device-to-host reads the step loop made in each optimizer step of this call (index i:
  // the i-th step run), from fetching its data through logging it; evaluation and saves not
  // included. The step itself works on device tensors: a step reads at most once (the log
  // values and, with enable_jit_checkpoint, the ranks' agreed stop flag, in one copy), and
  // not at all when it neither logs nor can stop, with the default loss or a
  // computeLossOnDevice (a computeLoss taking the item count as a number reads it before the
  // forward: one more read on a logged step).
  std::vector<std::int64_t> hostSyncsPerStep;
};

// Owns its optimizer, data loader and reporters; borrows `comm` (must outlive it).
// train() is COLLECTIVE. Not thread-safe. With enable_jit_checkpoint the Trainer owns the
// process's handlers of the preemption signals while it exists (one Trainer at a time).
class Trainer {
 public:
  // Validates args (ConfigError naming the field) before any collective.
  Trainer(TrainingArguments args, dist::Communicator& comm, TrainerParts parts);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  TrainOutput train();
  // COLLECTIVE. A full evaluation of the eval dataset with the current parameters; the
  // metrics ("eval_loss", compute_metrics' keys with the prefix, runtime, samples/s) are the
  // same dict on every rank and are logged (rank 0) and passed to onEvaluate.
  std::map<std::string, double> evaluate(const std::string& metricKeyPrefix = "eval");
  // COLLECTIVE (predict.cc). HF's predict: the evaluation loop over `dataset`, sharded across
  // the ranks and gathered in dataset order; see PredictionOutput. Not logged.
  PredictionOutput predict(std::shared_ptr<const Dataset> dataset,
                           const std::string& metricKeyPrefix = "test");
  // COLLECTIVE (save_model.cc). HF's save_model: rank 0 writes the model's current weights
  // (after train(): the final ones, or the best with load_best_model_at_end) to
  // <dir>/model.safetensors and the arguments to <dir>/training_args.json, atomically;
  // dir "" means output_dir. Returns the file's path. CheckpointError on every rank when
  // the write failed.
  std::string saveModel(const std::string& dir = "");
  const TrainerState& state() const { return state_; }
  const TrainingArguments& args() const { return args_; }

 private:
  friend class TrainLoop;  // train()'s step units (trainer/src/train_loop.h)
  // What evaluate() and predict() hand the evaluation loop: this Trainer's model, forward,
  // collator, losses, metrics, stop hook and arguments, on the model's device.
  std::pair<EvalParts, EvalOptions> evalSetup(std::shared_ptr<const Dataset> dataset,
                                              const std::string& metricKeyPrefix) const;
  TrainingArguments args_;
  dist::Communicator& comm_;
  TrainerParts parts_;
  TrainerState state_;
  std::vector<std::unique_ptr<Reporter>> reporters_;
  ProgressBar* bar_ = nullptr;  // during train() on rank 0
  TrainerControl* control_ = nullptr;  // during train()
  // enable_jit_checkpoint: installed by the constructor, for the Trainer's lifetime.
  std::unique_ptr<PreemptionWatcher> watcher_;
  bool evalInterrupted_ = false;  // the last evaluate() stopped for a preemption
  // computeLoss is not the user's (tokenMeanLoss or computeLossOnDevice): the step divides by
  // the item count on the device and never reads it on the host.
  bool defaultLoss_ = false;
};

// The default loss: sum of token cross-entropies over targets != -100 divided by the global
// number of targets (numItemsInBatch). With shiftLabels, logits[..., :-1] vs labels[..., 1:].
at::Tensor tokenMeanLoss(const ModelOutput& out, const at::Tensor& labels,
                         std::int64_t numItemsInBatch, bool shiftLabels);

}  // namespace cohort::trainer
