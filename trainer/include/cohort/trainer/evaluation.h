// Distributed evaluation with Hugging Face Trainer semantics and single-process exactness.
// Every rank runs the same number of batches of the eval set (EvalShardPlan); per batch the
// model runs in eval mode without autograd, the per-sample losses are computed, and
// preprocess_logits_for_metrics (when given) shrinks the logits on the rank that produced
// them BEFORE anything is kept or sent. Predictions, labels and losses are gathered to rank 0
// (every eval_accumulation_steps batches, or once at the end), the padding rows are dropped
// and the rows are put in GLOBAL sample order, so rank 0 sees exactly the arrays one process
// evaluating the whole set would see. Rank 0 calls compute_metrics; the metrics dict is
// broadcast so every rank returns the same one (best-checkpoint decisions need that).
// Evaluation polls a stop hook between batches and agrees on it with one tiny all-reduce, so
// a preemption request stops every rank at the same batch. User guide: docs/evaluation.md.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cohort/dist/communicator.h"
#include "cohort/dist/error.h"
#include "cohort/trainer/data.h"
#include "cohort/trainer/training_args.pb.h"

namespace torch::nn {
class Module;
}

namespace cohort::trainer {

// Declared (not included) from trainer.h, so that trainer.h can include this header (for
// TrainerParts' compute_metrics / preprocess hooks) without a cycle. The alias is the same
// type as trainer.h's.
struct ModelOutput;
using ForwardFn = std::function<ModelOutput(const Batch&)>;

// What compute_metrics sees (rank 0 only), rows in global sample order (row i = sample i of
// the eval dataset), padding rows removed. Sequence-shaped tensors are padded along dim 1 to
// the longest row of the whole set: labels with -100, predictions with the prediction pad
// value (-100 by default, as HF).
struct EvalPrediction {
  at::Tensor predictions;  // [n, ...]; undefined with prediction_loss_only
  at::Tensor labels;       // [n, ...]; undefined with prediction_loss_only or without labels
  at::Tensor losses;       // [n] float64, per-sample mean loss (sum / targets; 0 if no
                           // targets); undefined without a loss
};

// Called on rank 0 only. The returned keys get the metric prefix ("accuracy" ->
// "eval_accuracy") unless they already carry it. An exception is rethrown on rank 0 and
// reported as cohort::Error on the other ranks (no rank is left waiting).
using ComputeMetricsFn = std::function<std::map<std::string, double>(const EvalPrediction&)>;
// Called on every rank, once per batch, with that rank's logits and labels (unpadded, as the
// collator produced them); the result replaces the logits as predictions. Its dim 0 must be
// the batch size. Typical use: argmax, [B, T, V] -> [B, T].
using PreprocessLogitsFn =
    std::function<at::Tensor(const at::Tensor& logits, const at::Tensor& labels)>;

// Per-sample losses of one batch: `sum` [B] is the sum of the sample's loss terms (token
// losses), `count` [B] how many terms (targets) it has. Both are converted to float64.
struct SampleLosses {
  at::Tensor sum;
  at::Tensor count;
};
using EvalLossFn = std::function<SampleLosses(const ModelOutput&, const at::Tensor& labels)>;

// The default loss: cross-entropy per target (labels != -100). logits [B, C] with labels [B]
// (classification: count is 0 or 1), or logits [B, T, V] with labels [B, T] (sequences; with
// shiftLabels, logits[:, :-1] predict labels[:, 1:]). Not collective.
SampleLosses perSampleCrossEntropy(const ModelOutput& out, const at::Tensor& labels,
                                   bool shiftLabels);

// Which eval-set rows each rank evaluates: pure index arithmetic, no threads or data.
// Batch-strided: global batch g covers slots [g*B, (g+1)*B); in step s rank r runs global
// batch s*W + r. A slot < n is sample `slot` (REAL); a slot >= n is PADDING and carries a copy
// of sample slot % n, so every rank runs steps() full batches of B rows and every collective
// sees the same shapes. Because batch g holds the same samples at any world size, each batch
// (and so the collator's padding and the model's output) is bit-identical to the batch one
// process builds; only which rank runs it changes.
class EvalShardPlan {
 public:
  // ConfigError when datasetSize < 1, perDeviceBatch < 1 or worldSize < 1.
  EvalShardPlan(std::int64_t datasetSize, std::int64_t perDeviceBatch, int worldSize);
  std::int64_t datasetSize() const { return n_; }
  std::int64_t batchSize() const { return batch_; }
  // Batches per rank: ceil(n / (B * W)), the same on every rank.
  std::int64_t steps() const;
  // Global slot of row `row` of rank `rank`'s batch in step `step`.
  std::int64_t slot(std::int64_t step, int rank, std::int64_t row) const {
    return (step * world_ + rank) * batch_ + row;
  }
  bool isReal(std::int64_t slot) const { return slot < n_; }
  // Dataset index the slot reads (itself when real, a duplicate when padding).
  std::int64_t sampleOf(std::int64_t slot) const { return slot % n_; }
  // Real rows (slot < n) in a rank's batch of a step.
  std::int64_t realRows(std::int64_t step, int rank) const;

 private:
  std::int64_t n_, batch_;
  int world_;
};

struct EvalOptions {
  std::int64_t perDeviceEvalBatchSize = 8;
  // 0 (HF's None): predictions stay where the model produced them until the end of the loop
  // and are gathered once. n > 0: every n batches the accumulated ones are moved to host
  // memory and gathered to rank 0's host arrays.
  std::int64_t evalAccumulationSteps = 0;
  // Only the losses are gathered: no predictions, labels, or compute_metrics call.
  bool predictionLossOnly = false;
  // For the default loss (perSampleCrossEntropy).
  bool shiftLabels = false;
  std::string metricKeyPrefix = "eval";
  double predictionPadValue = -100.0;
  // Where the model's outputs live. With a backend that moves device memory (NCCL) the
  // gathers run there; with the MPI backend tensors go to the host first.
  c10::Device device = c10::Device(c10::kCPU);
  // Return the gathered EvalPrediction in EvalResult::predictions (rank 0) — predict().
  bool keepPredictions = false;
};

// The eval-relevant fields of TrainingArguments: per_device_eval_batch_size,
// eval_accumulation_steps, prediction_loss_only. prediction_loss_only is forced on by
// evaluate() when there is no compute_metrics and keepPredictions is false (as HF).
EvalOptions evalOptionsFromArgs(const TrainingArguments& args);

// What the caller brings. Borrowed: `model` must outlive the call; the functions are called
// from the calling thread only.
struct EvalParts {
  // Switched to eval mode for the loop and restored afterwards (also on an exception).
  // Optional: without it the forward function owns the mode.
  torch::nn::Module* model = nullptr;
  ForwardFn forward;                       // required
  std::shared_ptr<const Dataset> dataset;  // required, at least one sample
  Collator collator;                       // default: defaultCollate
  EvalLossFn loss;                         // default: perSampleCrossEntropy(shiftLabels)
  ComputeMetricsFn computeMetrics;         // optional
  PreprocessLogitsFn preprocessLogits;     // optional
  // Polled on every rank before every batch; if it returns true on ANY rank, every rank stops
  // before that batch and evaluate() returns interrupted = true. Optional.
  std::function<bool()> shouldStop;
};

struct EvalResult {
  // The same dict on every rank: {prefix}_loss (when there is a loss), compute_metrics' keys
  // (prefixed), {prefix}_runtime, {prefix}_samples_per_second, {prefix}_steps_per_second
  // (rank 0's clock). Empty when interrupted.
  std::map<std::string, double> metrics;
  std::int64_t numSamples = 0;  // real samples of the eval set
  std::int64_t numSteps = 0;    // batches per rank (EvalShardPlan::steps())
  bool interrupted = false;
  std::int64_t batchesRun = 0;  // per rank; < numSteps when interrupted
  // Device->host transfers (flushes of the accumulated batches), counted on every rank even
  // on CPU, and the batch count after which each happened (the cadence).
  std::int64_t hostTransfers = 0;
  std::vector<std::int64_t> transferAfterBatch;
  // Memory counters: the largest total size of the tensors this rank kept between batches
  // (its accumulator), and on rank 0 the largest total size of the gathered host arrays
  // (including the final global-order arrays). 0 elsewhere.
  std::int64_t peakAccumulatedBytes = 0;
  std::int64_t peakHostBytes = 0;
  // Rank 0 with EvalOptions::keepPredictions; std::nullopt otherwise.
  std::optional<EvalPrediction> predictions;
};

// COLLECTIVE over `comm`: every rank calls it with the same dataset size and options. Runs
// under at::NoGradGuard. Throws ConfigError (before any collective) for missing parts or an
// empty dataset; DistError/TimeoutError from the collectives; a forward or preprocess that
// throws on one rank leaves the others to the collective timeout. Not thread-safe.
EvalResult evaluate(dist::Communicator& comm, const EvalParts& parts, const EvalOptions& options);

}  // namespace cohort::trainer
