// Data for the Trainer: a random-access Dataset, a Collator that turns samples into a
// Batch, and the distributed plan that maps GLOBAL steps to per-rank micro-batches.
//
// The global order is one seeded permutation per epoch (data_seed, else seed). Global step k
// of an epoch consumes samples order[k*G, (k+1)*G) with G = per-device batch x world size x
// gradient accumulation: the set of samples in a step does not depend on the world size, so
// a run resumed on a different number of ranks (with accumulation adjusted to keep G)
// continues the same trajectory. Micro-batch m of rank r takes the B samples starting at
// (m*W + r)*B of that slice. A short last slice (dataloader_drop_last = false) is split the
// same way; ranks that run out get EMPTY micro-batches (never duplicated samples).
#pragma once

#include <ATen/core/Tensor.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace cohort::trainer {

// Named tensors (Hugging Face's batch dictionaries). A Sample or Batch holds tensors by name:
// `input` IS the tensor named "input_ids" and `labels` IS the one named "labels" (kept as
// members so that code written as Sample{input, labels}, batch.input, batch.labels keeps its
// meaning); every other name ("attention_mask", "token_type_ids", "position_ids", ...) lives
// in `fields`. The named view (get/set/has/names) maps "input_ids" and "labels" to the
// members, so code may use either spelling. A field set to an undefined tensor is absent.
inline constexpr const char* kInputIdsName = "input_ids";
inline constexpr const char* kLabelsName = "labels";
inline constexpr const char* kAttentionMaskName = "attention_mask";

// One example: model input and labels (-100 = no prediction target), plus named extras.
struct Sample {
  at::Tensor input;   // "input_ids"
  at::Tensor labels;  // "labels"
  std::map<std::string, at::Tensor> fields{};  // any other named tensor

  // The tensor named `name` (undefined when absent).
  at::Tensor get(const std::string& name) const;
  void set(const std::string& name, at::Tensor t);
  bool has(const std::string& name) const { return get(name).defined(); }
  // The defined names: input_ids, labels (when present), then the fields in name order.
  std::vector<std::string> names() const;
};

// A collated micro-batch. `size` is the number of samples (0 for an empty micro-batch, in
// which case the tensors are undefined). Named view as Sample's; `labelsName` is the name
// the labels go by (label_names: "labels" unless the Trainer was told another name, in which
// case get(labelsName) is `labels` and the model receives it under that name).
struct Batch {
  at::Tensor input;   // "input_ids"
  at::Tensor labels;  // "labels" (or labelsName)
  std::int64_t size = 0;
  std::map<std::string, at::Tensor> fields{};  // any other named tensor, [size, ...]
  std::string labelsName = kLabelsName;
  // During training: the step's GLOBAL prediction-target count (a 0-dim int64 tensor on the
  // model's device), set by the Trainer for the forward call (HF's num_items_in_batch);
  // undefined in evaluation and prediction.
  at::Tensor numItemsInBatch{};

  at::Tensor get(const std::string& name) const;
  void set(const std::string& name, at::Tensor t);
  bool has(const std::string& name) const { return get(name).defined(); }
  std::vector<std::string> names() const;
  // Calls fn on every defined tensor of the batch (input, labels, fields), e.g. to move them.
  void forEachTensor(const std::function<void(at::Tensor&)>& fn);
};

// Random-access data. get() must be thread-safe (data-loader worker threads call it).
class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual std::int64_t size() const = 0;
  virtual Sample get(std::int64_t index) const = 0;
};

// The default collator (HF's padding collators): every named tensor is stacked along a new
// dim 0; sequences of different lengths (dim 0 of the per-sample tensors) are padded at the
// end to the longest in the batch, per field: labels with -100 (no target), attention_mask
// with 0 (masked), input_ids and any other field with its entry in `padValues` (default 0).
// Every sample must carry the same names (ConfigError naming the field and sample).
using Collator = std::function<Batch(const std::vector<Sample>&)>;
Batch defaultCollate(const std::vector<Sample>& samples);
// The same with per-field pad values (e.g. {{"input_ids", pad_token_id}}); an entry for
// "labels" or "attention_mask" overrides their default too.
Collator makePaddingCollator(std::map<std::string, double> padValues);

// HF's label_names for a collator: samples that carry their labels under `name` (a field,
// not "labels") get them moved into Sample::labels before `inner` collates (so they are
// padded with -100 and counted as labels), and the batch's labelsName is `name`. "labels"
// returns `inner` unchanged. A sample without the field is a ConfigError naming it.
Collator withLabelName(Collator inner, const std::string& name);

// The micro-batches one rank runs for one optimizer step, plus where they came from.
struct StepData {
  std::int64_t epoch = 0;
  std::int64_t stepInEpoch = 0;
  std::vector<Batch> micro;          // gradient_accumulation_steps entries
  std::int64_t samplesThisStep = 0;  // global, all ranks
};

// Pure index arithmetic of the distributed plan (testable without threads or data).
class GlobalBatchPlan {
 public:
  GlobalBatchPlan(std::int64_t datasetSize, std::int64_t perDeviceBatch, int worldSize,
                  std::int64_t accumulation, bool dropLast, std::uint64_t seed, bool shuffle);
  std::int64_t globalBatch() const { return perDevice_ * world_ * accum_; }
  std::int64_t accumulation() const { return accum_; }
  std::int64_t datasetSize() const { return n_; }
  std::int64_t stepsPerEpoch() const;
  // The epoch's global sample order (a seeded permutation, or identity without shuffle).
  std::vector<std::int64_t> epochOrder(std::int64_t epoch) const;
  // Dataset indices of micro-batch `micro` of `rank` in step `step` of an epoch.
  std::vector<std::int64_t> microIndices(const std::vector<std::int64_t>& order, std::int64_t step,
                                         int rank, std::int64_t micro) const;
  // Samples (all ranks) in step `step` of an epoch.
  std::int64_t samplesInStep(std::int64_t step) const;

 private:
  std::int64_t n_, perDevice_;
  int world_;
  std::int64_t accum_;
  bool dropLast_;
  std::uint64_t seed_;
  bool shuffle_;
};

// Yields this rank's StepData in step order. With numWorkers = 0 batches are built in the
// caller's thread; otherwise worker THREADS build whole steps round-robin (step i by worker
// i % numWorkers), each at most prefetchFactor steps ahead, and next() returns them in
// order. persistentWorkers keeps the threads across epochs. pinMemory (HF's
// dataloader_pin_memory, for a model on a GPU; needs a CUDA build) puts each collated batch
// in page-locked host memory, in the worker, so that the copy to the device can be
// non_blocking. Not thread-safe (one consumer).
class DataLoader {
 public:
  DataLoader(std::shared_ptr<const Dataset> dataset, Collator collate, GlobalBatchPlan plan,
             int rank, int numWorkers, int prefetchFactor, bool persistentWorkers,
             bool pinMemory = false);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Positions the loader at (epoch, stepInEpoch); the next next() returns that step.
  void seek(std::int64_t epoch, std::int64_t stepInEpoch);
  // The next step; rolls over to the next epoch at the end of one.
  StepData next();
  const GlobalBatchPlan& plan() const { return plan_; }
  // Worker threads started so far (for tests of persistence).
  int threadsStarted() const { return threadsStarted_; }

 private:
  using Order = std::shared_ptr<const std::vector<std::int64_t>>;
  StepData build(const Order& order, std::int64_t epoch, std::int64_t step) const;
  void startWorkers();
  void stopWorkers();
  void workerLoop(int worker);

  std::shared_ptr<const Dataset> dataset_;
  Collator collate_;
  GlobalBatchPlan plan_;
  int rank_, numWorkers_, prefetchFactor_;
  bool persistent_;
  bool pin_;
  std::int64_t epoch_ = 0, step_ = 0;  // the next step to hand out
  Order order_;                        // of epoch_
  int threadsStarted_ = 0;

  // Worker state, guarded by mu_.
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> workers_;
  bool stopping_ = false;
  std::int64_t generation_ = 0;             // bumped by seek/epoch change
  std::int64_t epochW_ = 0, firstStepW_ = 0;  // what the workers produce
  Order orderW_;
  std::int64_t consumed_ = 0;               // steps handed out since firstStepW_
  std::map<std::int64_t, StepData> ready_;  // relative step -> data
  std::exception_ptr workerError_;
};

}  // namespace cohort::trainer
