#include "cohort/trainer/evaluation.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <limits>

#include "cohort/dist/log.h"
#include "cohort/trainer/trainer.h"

namespace cohort::trainer {

namespace {

using Clock = std::chrono::steady_clock;
constexpr double kLabelPad = -100.0;

// Bytes a kept tensor pins: its whole storage, so a preprocess that returns a VIEW of the
// logits is charged for the logits it keeps alive.
std::int64_t pinnedBytes(const at::Tensor& t) {
  if (!t.defined() || !t.has_storage()) return 0;
  return static_cast<std::int64_t>(t.storage().nbytes());
}

// Dim-1 size (0 for tensors with fewer than two dims: nothing to pad).
std::int64_t widthOf(const at::Tensor& t) { return t.defined() && t.dim() >= 2 ? t.size(1) : 0; }

at::Tensor padDim1(const at::Tensor& t, std::int64_t width, double pad) {
  if (!t.defined() || t.dim() < 2 || t.size(1) >= width) return t;
  std::vector<std::int64_t> shape(t.sizes().begin(), t.sizes().end());
  shape[1] = width - t.size(1);
  return at::cat({t, at::full(shape, pad, t.options())}, 1);
}

double roundTo(double v, int digits) {
  const double f = std::pow(10.0, digits);
  return std::round(v * f) / f;
}

// Puts the module in eval mode and restores training mode on scope exit.
class EvalModeGuard {
 public:
  explicit EvalModeGuard(torch::nn::Module* m)
      : m_(m), wasTraining_(m != nullptr && m->is_training()) {
    if (m_ != nullptr) m_->eval();
  }
  ~EvalModeGuard() {
    if (m_ != nullptr && wasTraining_) m_->train(true);
  }
  EvalModeGuard(const EvalModeGuard&) = delete;
  EvalModeGuard& operator=(const EvalModeGuard&) = delete;

 private:
  torch::nn::Module* m_;
  bool wasTraining_;
};

// One batch kept on this rank until the next transfer. meta [B, 3] float64 per row: the
// global slot (or -1 for a padding row), the loss sum, the loss term count.
struct LocalChunk {
  at::Tensor pred, label, meta;
};

// Real rows of one gathered batch on rank 0 (host memory).
struct HostChunk {
  at::Tensor meta, pred, label;
};

class EvalLoop {
 public:
  EvalLoop(dist::Communicator& comm, const EvalParts& parts, const EvalOptions& opt)
      : comm_(comm),
        parts_(parts),
        opt_(opt),
        plan_(parts.dataset->size(), opt.perDeviceEvalBatchSize, comm.size()),
        rank_(comm.rank()),
        commDevice_(comm.backend().usesDeviceMemory() ? opt.device : c10::Device(c10::kCPU)) {
    collate_ = parts_.collator ? parts_.collator : Collator(defaultCollate);
    if (parts_.loss) {
      loss_ = parts_.loss;
    } else {
      const bool shift = opt_.shiftLabels;
      loss_ = [shift](const ModelOutput& o, const at::Tensor& labels) {
        return perSampleCrossEntropy(o, labels, shift);
      };
    }
    lossOnly_ = opt_.predictionLossOnly || (!parts_.computeMetrics && !opt_.keepPredictions);
  }

  EvalResult run() {
    const auto start = Clock::now();
    result_.numSamples = plan_.datasetSize();
    result_.numSteps = plan_.steps();
    COHORT_LOG_INFO("evaluation: {} samples, {} per device x {} ranks, {} batches per rank{}",
                    plan_.datasetSize(), plan_.batchSize(), comm_.size(), plan_.steps(),
                    lossOnly_ ? " (loss only)" : "");
    {
      at::NoGradGuard noGrad;
      EvalModeGuard mode(parts_.model);
      const std::int64_t every = opt_.evalAccumulationSteps;
      for (std::int64_t s = 0; s < plan_.steps(); ++s) {
        if (stopAgreed()) {
          result_.interrupted = true;
          break;
        }
        runBatch(s);
        ++result_.batchesRun;
        if (every > 0 && result_.batchesRun % every == 0) transfer();
      }
      if (result_.interrupted) {
        // Every rank agreed on the same batch: drop the partial results, no more collectives.
        COHORT_LOG_WARN("evaluation stopped on request before batch {} of {}", result_.batchesRun,
                        plan_.steps());
        local_.clear();
        host_.clear();
        return std::move(result_);
      }
      if (!local_.empty()) transfer();
    }
    finish(start);
    return std::move(result_);
  }

 private:
  at::Tensor forComm(const at::Tensor& t) const {
    return (comm_.backend().usesDeviceMemory() ? t.to(commDevice_) : t.cpu()).contiguous();
  }

  bool stopAgreed() {
    const bool mine = parts_.shouldStop && parts_.shouldStop();
    at::Tensor flag =
        at::full({1}, mine ? 1 : 0, at::TensorOptions().dtype(at::kLong).device(commDevice_));
    comm_.allReduce(flag, dist::ReduceOp::kSum);
    return flag.cpu().item<std::int64_t>() > 0;
  }

  void runBatch(std::int64_t step) {
    const std::int64_t b = plan_.batchSize();
    std::vector<Sample> samples;
    std::vector<double> slots;
    samples.reserve(static_cast<std::size_t>(b));
    for (std::int64_t row = 0; row < b; ++row) {
      const std::int64_t slot = plan_.slot(step, rank_, row);
      samples.push_back(parts_.dataset->get(plan_.sampleOf(slot)));
      slots.push_back(plan_.isReal(slot) ? static_cast<double>(slot) : -1.0);
    }
    Batch batch = collate_(samples);
    if (batch.size != b) {
      throw ConfigError("evaluation: the collator returned " + std::to_string(batch.size) +
                        " rows for " + std::to_string(b) + " samples");
    }
    // The model runs where its parameters are; what it produces stays there until transfer().
    batch.forEachTensor([&](at::Tensor& t) {
      if (t.device() != opt_.device) t = t.to(opt_.device);
    });
    const ModelOutput out = parts_.forward(batch);

    LocalChunk c;
    at::Tensor sum, count;
    if (batch.labels.defined()) {
      const SampleLosses l = loss_(out, batch.labels);
      if (l.sum.defined()) {
        sum = l.sum.detach().to(at::kDouble).reshape({-1});
        count =
            l.count.defined() ? l.count.detach().to(at::kDouble).reshape({-1}) : at::ones_like(sum);
        if (sum.size(0) != b || count.size(0) != b) {
          throw ConfigError("evaluation: the loss function must return one value per sample");
        }
        haveLoss_ = true;
      }
    }
    const auto metaOpts = at::TensorOptions().dtype(at::kDouble);
    at::Tensor slotCol = at::tensor(slots, metaOpts);
    if (sum.defined()) {
      c.meta = at::stack({slotCol.to(sum.device()), sum, count}, 1);
    } else {
      c.meta = at::stack({slotCol, at::zeros({b}, metaOpts), at::zeros({b}, metaOpts)}, 1);
    }
    if (!lossOnly_) {
      at::Tensor pred = out.logits;
      // Before anything is kept or sent: the accumulator only ever sees the reduced tensor.
      if (parts_.preprocessLogits) pred = parts_.preprocessLogits(pred, batch.labels);
      if (!pred.defined() || pred.dim() < 1 || pred.size(0) != b) {
        throw ConfigError("evaluation: predictions must have the batch size (" + std::to_string(b) +
                          ") as dim 0");
      }
      c.pred = pred.detach();
      if (batch.labels.defined()) c.label = batch.labels;
    }
    localBytes_ += pinnedBytes(c.pred) + pinnedBytes(c.label) + pinnedBytes(c.meta);
    result_.peakAccumulatedBytes = std::max(result_.peakAccumulatedBytes, localBytes_);
    local_.push_back(std::move(c));
  }

  // Moves the accumulated batches to rank 0's host arrays (COLLECTIVE; every rank holds the
  // same number of batches here). One message per batch, so no rank ever concatenates its
  // whole accumulator (which would double it).
  void transfer() {
    ++result_.hostTransfers;
    result_.transferAfterBatch.push_back(result_.batchesRun);
    const auto k = static_cast<std::int64_t>(local_.size());
    if (lossOnly_) {
      std::vector<at::Tensor> metas;
      for (auto& c : local_) metas.push_back(c.meta);
      std::optional<at::Tensor> m = comm_.gatherV(forComm(at::cat(metas)));
      local_.clear();
      localBytes_ = 0;
      if (m) keep(*m, {}, {});
      return;
    }
    // Agree on the dim-1 width of each batch across ranks, and that all or none have labels:
    // [any has labels, any lacks labels, (pred width, label width) per batch], MAX-reduced.
    std::vector<std::int64_t> w(static_cast<std::size_t>(2 + 2 * k), 0);
    for (std::int64_t i = 0; i < k; ++i) {
      const auto& c = local_[static_cast<std::size_t>(i)];
      (c.label.defined() ? w[0] : w[1]) = 1;
      w[static_cast<std::size_t>(2 + 2 * i)] = widthOf(c.pred);
      w[static_cast<std::size_t>(3 + 2 * i)] = widthOf(c.label);
    }
    at::Tensor wt = forComm(at::tensor(w, at::kLong));
    comm_.allReduce(wt, dist::ReduceOp::kMax);
    wt = wt.cpu();
    const std::int64_t* agreed = wt.data_ptr<std::int64_t>();
    if (agreed[0] != 0 && agreed[1] != 0) {
      throw ConfigError("evaluation: some ranks' batches have labels and others' do not");
    }
    for (std::int64_t i = 0; i < k; ++i) {
      LocalChunk& c = local_[static_cast<std::size_t>(i)];
      const at::Tensor pred = padDim1(c.pred, agreed[2 + 2 * i], opt_.predictionPadValue);
      std::optional<at::Tensor> gp = comm_.gatherV(forComm(pred));
      std::optional<at::Tensor> gl;
      if (c.label.defined())
        gl = comm_.gatherV(forComm(padDim1(c.label, agreed[3 + 2 * i], kLabelPad)));
      std::optional<at::Tensor> gm = comm_.gatherV(forComm(c.meta));
      localBytes_ -= pinnedBytes(c.pred) + pinnedBytes(c.label) + pinnedBytes(c.meta);
      c = LocalChunk{};
      if (gm) keep(*gm, gp ? *gp : at::Tensor(), gl ? *gl : at::Tensor());
    }
    local_.clear();
    localBytes_ = 0;
  }

  // Rank 0: drops the padding rows of gathered rows and moves the rest to host memory.
  void keep(const at::Tensor& meta, const at::Tensor& pred, const at::Tensor& label) {
    HostChunk h;
    h.meta = meta.cpu();
    const at::Tensor real = h.meta.select(1, 0).ge(0);
    const std::int64_t realCount = real.sum().item<std::int64_t>();
    if (realCount == 0) return;
    if (realCount == h.meta.size(0)) {
      h.pred = pred.defined() ? pred.cpu() : pred;
      h.label = label.defined() ? label.cpu() : label;
    } else {
      const at::Tensor rows = real.nonzero().select(1, 0);
      h.meta = h.meta.index_select(0, rows);
      if (pred.defined()) h.pred = pred.index_select(0, rows.to(pred.device())).cpu();
      if (label.defined()) h.label = label.index_select(0, rows.to(label.device())).cpu();
    }
    hostBytes_ += pinnedBytes(h.meta) + pinnedBytes(h.pred) + pinnedBytes(h.label);
    result_.peakHostBytes = std::max(result_.peakHostBytes, hostBytes_);
    host_.push_back(std::move(h));
  }

  // Rank 0: one tensor [n, width, ...] in global order from the host chunks' rows; frees
  // each chunk's part once copied. A gathered batch-step holds CONSECUTIVE global rows (step s
  // of ranks 0..W-1 is global batches sW..sW+W-1), so `out` can be left uninitialised and
  // filled range by range: its pages become resident as the chunks' pages are released, and
  // the peak stays near one copy of the arrays instead of two.
  at::Tensor place(at::Tensor HostChunk::*part, double pad) {
    const at::Tensor& first = host_.front().*part;
    std::int64_t width = 0;
    bool ranges = true;
    for (const auto& h : host_) {
      width = std::max(width, widthOf(h.*part));
      auto acc = h.meta.accessor<double, 2>();
      for (std::int64_t i = 1; i < acc.size(0); ++i)
        ranges = ranges && acc[i][0] == acc[0][0] + static_cast<double>(i);
    }
    std::vector<std::int64_t> shape(first.sizes().begin(), first.sizes().end());
    shape[0] = plan_.datasetSize();
    if (shape.size() >= 2) shape[1] = width;
    at::Tensor out =
        ranges ? at::empty(shape, first.options()) : at::full(shape, pad, first.options());
    // An uninitialised `out` is charged as its rows are written (that is when pages become
    // resident); a pre-filled one at once.
    const std::int64_t rowBytes = pinnedBytes(out) / std::max<std::int64_t>(1, out.size(0));
    if (!ranges) hostBytes_ += pinnedBytes(out);
    result_.peakHostBytes = std::max(result_.peakHostBytes, hostBytes_);
    for (auto& h : host_) {
      at::Tensor& src = h.*part;
      if (ranges) {
        hostBytes_ += rowBytes * src.size(0);
        result_.peakHostBytes = std::max(result_.peakHostBytes, hostBytes_);
        at::Tensor rows =
            out.narrow(0, static_cast<std::int64_t>(h.meta[0][0].item<double>()), src.size(0));
        if (out.dim() >= 2) {
          rows.narrow(1, 0, src.size(1)).copy_(src);
          if (src.size(1) < width) rows.narrow(1, src.size(1), width - src.size(1)).fill_(pad);
        } else {
          rows.copy_(src);
        }
      } else {
        at::Tensor dst = out.dim() >= 2 ? out.narrow(1, 0, src.size(1)) : out;
        dst.index_copy_(0, h.meta.select(1, 0).to(at::kLong), src);
      }
      hostBytes_ -= pinnedBytes(src);
      src = at::Tensor();
    }
    return out;
  }

  // Rank 0: the global-order arrays, eval loss and compute_metrics, keys prefixed.
  std::map<std::string, double> rootMetrics(Clock::time_point start) {
    const std::int64_t n = plan_.datasetSize();
    std::int64_t rows = 0;
    for (const auto& h : host_) rows += h.meta.size(0);
    std::vector<char> seen(static_cast<std::size_t>(n), 0);
    for (const auto& h : host_) {
      auto acc = h.meta.accessor<double, 2>();
      for (std::int64_t i = 0; i < acc.size(0); ++i) {
        const auto idx = static_cast<std::int64_t>(acc[i][0]);
        if (idx < 0 || idx >= n || seen[static_cast<std::size_t>(idx)])
          rows = -1;
        else
          seen[static_cast<std::size_t>(idx)] = 1;
      }
    }
    if (rows != n) {
      throw Error("evaluation: gathered rows do not cover the eval set exactly once (" +
                  std::to_string(rows) + " rows for " + std::to_string(n) + " samples)");
    }
    EvalPrediction p;
    std::map<std::string, double> metrics;
    if (haveLoss_) {
      at::Tensor sum = at::zeros({n}, at::kDouble), count = at::zeros({n}, at::kDouble);
      for (const auto& h : host_) {
        const at::Tensor idx = h.meta.select(1, 0).to(at::kLong);
        sum.index_copy_(0, idx, h.meta.select(1, 1));
        count.index_copy_(0, idx, h.meta.select(1, 2));
      }
      // Summed in global order, one process's order: the same bits at every world size.
      const double* s = sum.data_ptr<double>();
      const double* c = count.data_ptr<double>();
      double total = 0.0, terms = 0.0;
      for (std::int64_t i = 0; i < n; ++i) total += s[i], terms += c[i];
      metrics["loss"] = terms > 0 ? total / terms : std::numeric_limits<double>::quiet_NaN();
      p.losses = sum / count.clamp_min(1.0);
    }
    if (!lossOnly_) {
      p.predictions = place(&HostChunk::pred, opt_.predictionPadValue);
      if (host_.front().label.defined()) p.labels = place(&HostChunk::label, kLabelPad);
    }
    host_.clear();
    hostBytes_ = 0;
    if (!lossOnly_ && parts_.computeMetrics) {
      for (const auto& [key, value] : parts_.computeMetrics(p)) metrics[key] = value;
    }
    const double runtime =
        std::max(1e-9, std::chrono::duration<double>(Clock::now() - start).count());
    metrics["runtime"] = roundTo(runtime, 4);
    metrics["samples_per_second"] = roundTo(static_cast<double>(n) / runtime, 3);
    metrics["steps_per_second"] = roundTo(static_cast<double>(plan_.steps()) / runtime, 3);
    if (opt_.keepPredictions) result_.predictions = std::move(p);
    std::map<std::string, double> prefixed;
    const std::string pre = opt_.metricKeyPrefix.empty() ? "" : opt_.metricKeyPrefix + "_";
    for (const auto& [key, value] : metrics) {
      prefixed[key.rfind(pre, 0) == 0 ? key : pre + key] = value;
    }
    return prefixed;
  }

  // Rank 0 computes the metrics; one header, the key bytes and the values are broadcast. A
  // failure on rank 0 is broadcast too, so the other ranks throw instead of waiting.
  void finish(Clock::time_point start) {
    std::exception_ptr failure;
    std::string bytes;
    std::vector<double> values;
    if (rank_ == 0) {
      try {
        for (const auto& [key, value] : rootMetrics(start)) {
          bytes += key;
          bytes.push_back('\0');
          values.push_back(value);
        }
      } catch (const std::exception& e) {
        failure = std::current_exception();
        bytes = e.what();
        values.clear();
      }
    }
    const std::vector<std::int64_t> head{failure ? 1 : 0, static_cast<std::int64_t>(values.size()),
                                         static_cast<std::int64_t>(bytes.size())};
    at::Tensor header = at::tensor(head, at::kLong).to(commDevice_);
    comm_.broadcast(header, 0);
    header = header.cpu();
    const bool failed = header[0].item<std::int64_t>() != 0;
    const std::int64_t numValues = header[1].item<std::int64_t>();
    const std::int64_t numBytes = header[2].item<std::int64_t>();
    at::Tensor b = rank_ == 0 ? at::from_blob(bytes.data(), {numBytes}, at::kByte).clone()
                              : at::empty({numBytes}, at::kByte);
    b = b.to(commDevice_);
    if (numBytes > 0) comm_.broadcast(b, 0);
    b = b.cpu();
    const std::string text(reinterpret_cast<const char*>(b.data_ptr<std::uint8_t>()),
                           static_cast<std::size_t>(numBytes));
    if (failed) {
      if (failure) std::rethrow_exception(failure);
      throw Error("evaluation failed on rank 0: " + text);
    }
    at::Tensor v =
        rank_ == 0 ? at::tensor(values, at::kDouble) : at::empty({numValues}, at::kDouble);
    v = v.to(commDevice_);
    if (numValues > 0) comm_.broadcast(v, 0);
    v = v.cpu();
    std::size_t pos = 0;
    for (std::int64_t i = 0; i < numValues; ++i) {
      const std::size_t end = text.find('\0', pos);
      result_.metrics[text.substr(pos, end - pos)] = v[i].item<double>();
      pos = end + 1;
    }
  }

  dist::Communicator& comm_;
  const EvalParts& parts_;
  const EvalOptions& opt_;
  EvalShardPlan plan_;
  int rank_;
  c10::Device commDevice_;
  Collator collate_;
  EvalLossFn loss_;
  bool lossOnly_ = false;
  bool haveLoss_ = false;
  std::vector<LocalChunk> local_;
  std::int64_t localBytes_ = 0;
  std::vector<HostChunk> host_;
  std::int64_t hostBytes_ = 0;
  EvalResult result_;
};

}  // namespace

SampleLosses perSampleCrossEntropy(const ModelOutput& out, const at::Tensor& labels,
                                   bool shiftLabels) {
  at::Tensor logits = out.logits;
  at::Tensor target = labels;
  SampleLosses l;
  if (logits.dim() == 2 && target.dim() == 1) {
    l.sum = at::cross_entropy_loss(logits, target, {}, at::Reduction::None, -100);
    l.count = target.ne(-100);
    return l;
  }
  if (shiftLabels) {
    logits = logits.narrow(1, 0, logits.size(1) - 1);
    target = target.narrow(1, 1, target.size(1) - 1);
  }
  const std::int64_t b = target.size(0), t = target.size(1);
  at::Tensor per = at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}),
                                          target.reshape({-1}), {}, at::Reduction::None, -100);
  l.sum = per.reshape({b, t}).sum(1);
  l.count = target.ne(-100).sum(1);
  return l;
}

EvalShardPlan::EvalShardPlan(std::int64_t datasetSize, std::int64_t perDeviceBatch, int worldSize)
    : n_(datasetSize), batch_(perDeviceBatch), world_(worldSize) {
  if (n_ < 1) throw ConfigError("evaluation: the eval dataset is empty");
  if (batch_ < 1) {
    throw ConfigError("per_device_eval_batch_size must be > 0 (got " + std::to_string(batch_) +
                      ")");
  }
  if (world_ < 1) throw ConfigError("evaluation: world size must be > 0");
}

std::int64_t EvalShardPlan::steps() const {
  const std::int64_t perStep = batch_ * world_;
  return (n_ + perStep - 1) / perStep;
}

std::int64_t EvalShardPlan::realRows(std::int64_t step, int rank) const {
  const std::int64_t first = slot(step, rank, 0);
  return std::clamp<std::int64_t>(n_ - first, 0, batch_);
}

EvalOptions evalOptionsFromArgs(const TrainingArguments& args) {
  EvalOptions o;
  o.perDeviceEvalBatchSize = args.per_device_eval_batch_size();
  o.evalAccumulationSteps = args.has_eval_accumulation_steps() ? args.eval_accumulation_steps() : 0;
  o.predictionLossOnly = args.prediction_loss_only();
  return o;
}

EvalResult evaluate(dist::Communicator& comm, const EvalParts& parts, const EvalOptions& options) {
  if (!parts.forward) throw ConfigError("evaluation: a forward function is required");
  if (!parts.dataset) throw ConfigError("evaluation: an eval dataset is required");
  if (options.evalAccumulationSteps < 0) {
    throw ConfigError("eval_accumulation_steps must be > 0 when set (got " +
                      std::to_string(options.evalAccumulationSteps) + ")");
  }
  EvalLoop loop(comm, parts, options);
  return loop.run();
}

}  // namespace cohort::trainer
