#include "cohort/trainer/data.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "cohort/dist/error.h"
#include "sample_order.h"

namespace cohort::trainer {

namespace {

// The named view over (input, labels, fields) shared by Sample and Batch.
at::Tensor getNamed(const at::Tensor& input, const at::Tensor& labels, const std::string& labelsName,
                    const std::map<std::string, at::Tensor>& fields, const std::string& name) {
  if (name == kInputIdsName) return input;
  if (name == labelsName) return labels;
  const auto it = fields.find(name);
  return it == fields.end() ? at::Tensor() : it->second;
}

void setNamed(at::Tensor& input, at::Tensor& labels, const std::string& labelsName,
              std::map<std::string, at::Tensor>& fields, const std::string& name, at::Tensor t) {
  if (name.empty()) throw ConfigError("a tensor name must not be empty");
  if (name == kInputIdsName) {
    input = std::move(t);
  } else if (name == labelsName) {
    labels = std::move(t);
  } else if (t.defined()) {
    fields[name] = std::move(t);
  } else {
    fields.erase(name);
  }
}

std::vector<std::string> namesOf(const at::Tensor& input, const at::Tensor& labels,
                                 const std::string& labelsName,
                                 const std::map<std::string, at::Tensor>& fields) {
  std::vector<std::string> out;
  if (input.defined()) out.push_back(kInputIdsName);
  if (labels.defined()) out.push_back(labelsName);
  for (const auto& [name, t] : fields) {
    if (t.defined()) out.push_back(name);
  }
  return out;
}

double defaultPad(const std::string& name) {
  if (name == kLabelsName) return -100.0;  // no prediction target (HF's label_pad_token_id)
  return 0.0;                              // attention_mask: masked; input_ids, others: 0
}

// Stacks one field of every sample; pads dim 0 at the end when the lengths differ.
at::Tensor stackPadded(const std::vector<at::Tensor>& items, double pad) {
  std::int64_t longest = 0;
  bool ragged = false;
  for (const auto& t : items) {
    if (t.dim() > 0) {
      if (longest != 0 && t.size(0) != longest) ragged = true;
      longest = std::max(longest, t.size(0));
    }
  }
  std::vector<at::Tensor> parts;
  parts.reserve(items.size());
  for (at::Tensor t : items) {
    if (ragged && t.size(0) < longest) {
      std::vector<std::int64_t> shape(t.sizes().begin(), t.sizes().end());
      shape[0] = longest - t.size(0);
      t = at::cat({t, at::full(shape, pad, t.options())});
    }
    parts.push_back(t);
  }
  return at::stack(parts);
}

Batch collatePadded(const std::vector<Sample>& samples,
                    const std::map<std::string, double>& padValues) {
  Batch b;
  b.size = static_cast<std::int64_t>(samples.size());
  if (samples.empty()) return b;
  const std::vector<std::string> names = samples.front().names();
  for (std::size_t i = 1; i < samples.size(); ++i) {
    if (samples[i].names() == names) continue;
    for (const auto& n : names) {
      if (!samples[i].has(n)) {
        throw ConfigError("collate: sample " + std::to_string(i) + " of the batch has no '" + n +
                          "' but sample 0 has");
      }
    }
    for (const auto& n : samples[i].names()) {
      if (!samples.front().has(n)) {
        throw ConfigError("collate: sample " + std::to_string(i) + " of the batch has '" + n +
                          "' but sample 0 has not");
      }
    }
  }
  std::vector<at::Tensor> items(samples.size());
  for (const auto& name : names) {
    for (std::size_t i = 0; i < samples.size(); ++i) items[i] = samples[i].get(name);
    const auto pv = padValues.find(name);
    b.set(name, stackPadded(items, pv != padValues.end() ? pv->second : defaultPad(name)));
  }
  return b;
}

}  // namespace

at::Tensor Sample::get(const std::string& name) const {
  return getNamed(input, labels, kLabelsName, fields, name);
}
void Sample::set(const std::string& name, at::Tensor t) {
  setNamed(input, labels, kLabelsName, fields, name, std::move(t));
}
std::vector<std::string> Sample::names() const {
  return namesOf(input, labels, kLabelsName, fields);
}

at::Tensor Batch::get(const std::string& name) const {
  return getNamed(input, labels, labelsName, fields, name);
}
void Batch::set(const std::string& name, at::Tensor t) {
  setNamed(input, labels, labelsName, fields, name, std::move(t));
}
std::vector<std::string> Batch::names() const { return namesOf(input, labels, labelsName, fields); }

void Batch::forEachTensor(const std::function<void(at::Tensor&)>& fn) {
  if (input.defined()) fn(input);
  if (labels.defined()) fn(labels);
  for (auto& kv : fields) {
    if (kv.second.defined()) fn(kv.second);
  }
}

Batch defaultCollate(const std::vector<Sample>& samples) { return collatePadded(samples, {}); }

Collator makePaddingCollator(std::map<std::string, double> padValues) {
  return [pv = std::move(padValues)](const std::vector<Sample>& samples) {
    return collatePadded(samples, pv);
  };
}

Collator withLabelName(Collator inner, const std::string& name) {
  if (!inner) inner = defaultCollate;
  if (name == kLabelsName) return inner;
  if (name.empty() || name == kInputIdsName) {
    throw ConfigError("label_names: '" + name + "' cannot name the labels");
  }
  return [inner = std::move(inner), name](const std::vector<Sample>& samples) {
    std::vector<Sample> moved = samples;
    for (std::size_t i = 0; i < moved.size(); ++i) {
      auto it = moved[i].fields.find(name);
      if (it == moved[i].fields.end() || !it->second.defined()) {
        throw ConfigError("label_names names '" + name + "' but sample " + std::to_string(i) +
                          " of the batch has no tensor of that name");
      }
      moved[i].labels = std::move(it->second);
      moved[i].fields.erase(it);
    }
    Batch b = inner(moved);
    b.labelsName = name;
    return b;
  };
}

GlobalBatchPlan::GlobalBatchPlan(std::int64_t datasetSize, std::int64_t perDeviceBatch,
                                 int worldSize, std::int64_t accumulation, bool dropLast,
                                 std::uint64_t seed, bool shuffle)
    : n_(datasetSize),
      perDevice_(perDeviceBatch),
      world_(worldSize),
      accum_(accumulation),
      dropLast_(dropLast),
      seed_(seed),
      shuffle_(shuffle) {
  if (perDevice_ <= 0 || world_ <= 0 || accum_ <= 0) {
    throw ConfigError("per_device_train_batch_size and gradient_accumulation_steps must be > 0");
  }
}

std::int64_t GlobalBatchPlan::stepsPerEpoch() const {
  const std::int64_t g = globalBatch();
  return dropLast_ ? n_ / g : (n_ + g - 1) / g;
}

std::vector<std::int64_t> GlobalBatchPlan::epochOrder(std::int64_t epoch) const {
  if (shuffle_) return shuffledOrder(n_, seed_, epoch);  // sample_order.h, docs/trainer.md
  std::vector<std::int64_t> order(static_cast<std::size_t>(n_));
  for (std::int64_t i = 0; i < n_; ++i) order[static_cast<std::size_t>(i)] = i;
  return order;
}

std::vector<std::int64_t> GlobalBatchPlan::microIndices(const std::vector<std::int64_t>& order,
                                                        std::int64_t step, int rank,
                                                        std::int64_t micro) const {
  const std::int64_t stepStart = step * globalBatch();
  const std::int64_t stepEnd = std::min(n_, stepStart + globalBatch());
  const std::int64_t first = stepStart + (micro * world_ + rank) * perDevice_;
  const std::int64_t last = std::min(stepEnd, first + perDevice_);
  std::vector<std::int64_t> idx;
  for (std::int64_t i = first; i < last; ++i) idx.push_back(order[static_cast<std::size_t>(i)]);
  return idx;
}

std::int64_t GlobalBatchPlan::samplesInStep(std::int64_t step) const {
  return std::max<std::int64_t>(0, std::min(n_, (step + 1) * globalBatch()) - step * globalBatch());
}

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, Collator collate,
                       GlobalBatchPlan plan, int rank, int numWorkers, int prefetchFactor,
                       bool persistentWorkers, bool pinMemory)
    : dataset_(std::move(dataset)),
      collate_(collate ? std::move(collate) : Collator(defaultCollate)),
      plan_(plan),
      rank_(rank),
      numWorkers_(numWorkers),
      prefetchFactor_(std::max(1, prefetchFactor)),
      persistent_(persistentWorkers),
      pin_(pinMemory) {
  if (plan_.stepsPerEpoch() <= 0) {
    throw ConfigError("the training set (" + std::to_string(dataset_->size()) +
                      " samples) is smaller than one global batch (" +
                      std::to_string(plan_.globalBatch()) +
                      ") and dataloader_drop_last is set: no step can run");
  }
  seek(0, 0);
}

DataLoader::~DataLoader() { stopWorkers(); }

StepData DataLoader::build(const Order& order, std::int64_t epoch, std::int64_t step) const {
  StepData d;
  d.epoch = epoch;
  d.stepInEpoch = step;
  d.samplesThisStep = plan_.samplesInStep(step);
  for (std::int64_t m = 0; m < plan_.accumulation(); ++m) {
    std::vector<Sample> samples;
    for (std::int64_t i : plan_.microIndices(*order, step, rank_, m)) samples.push_back(dataset_->get(i));
    d.micro.push_back(samples.empty() ? Batch{} : collate_(samples));
    if (pin_) d.micro.back().forEachTensor([](at::Tensor& t) { t = t.pin_memory(); });
  }
  return d;
}

void DataLoader::seek(std::int64_t epoch, std::int64_t stepInEpoch) {
  epoch_ = epoch;
  step_ = stepInEpoch;
  order_ = std::make_shared<const std::vector<std::int64_t>>(plan_.epochOrder(epoch_));
  if (numWorkers_ == 0) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++generation_;
    epochW_ = epoch_;
    firstStepW_ = step_;
    orderW_ = order_;
    consumed_ = 0;
    ready_.clear();
  }
  cv_.notify_all();
  if (workers_.empty()) startWorkers();
}

StepData DataLoader::next() {
  if (step_ >= plan_.stepsPerEpoch()) {  // epoch rollover
    if (numWorkers_ > 0 && !persistent_) stopWorkers();
    seek(epoch_ + 1, 0);
  }
  if (numWorkers_ == 0) return build(order_, epoch_, step_++);
  std::unique_lock<std::mutex> lock(mu_);
  const std::int64_t rel = step_ - firstStepW_;
  cv_.wait(lock, [&] { return ready_.count(rel) > 0 || workerError_; });
  if (workerError_) std::rethrow_exception(workerError_);
  StepData d = std::move(ready_[rel]);
  ready_.erase(rel);
  consumed_ = rel + 1;
  ++step_;
  lock.unlock();
  cv_.notify_all();
  return d;
}

void DataLoader::startWorkers() {
  stopping_ = false;
  for (int w = 0; w < numWorkers_; ++w) {
    workers_.emplace_back([this, w] { workerLoop(w); });
    ++threadsStarted_;
  }
}

void DataLoader::stopWorkers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

void DataLoader::workerLoop(int w) {
  std::unique_lock<std::mutex> lock(mu_);
  std::int64_t gen = -1, s = 0;
  while (!stopping_) {
    if (gen != generation_) {
      gen = generation_;
      s = w;
    }
    const std::int64_t step = firstStepW_ + s;
    // At most prefetchFactor steps ahead per worker, and never past the epoch.
    if (step >= plan_.stepsPerEpoch() || s >= consumed_ + numWorkers_ * prefetchFactor_) {
      cv_.wait(lock);
      continue;
    }
    const Order order = orderW_;
    const std::int64_t epoch = epochW_;
    lock.unlock();
    StepData d;
    std::exception_ptr error;
    try {
      d = build(order, epoch, step);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    if (gen != generation_) continue;  // a seek made this step stale
    if (error) {
      workerError_ = error;
    } else {
      ready_[s] = std::move(d);
    }
    s += numWorkers_;
    cv_.notify_all();
  }
}

}  // namespace cohort::trainer
