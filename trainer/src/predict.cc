// Trainer::predict: HF's predict on the evaluation loop (evaluation.h), which already shards
// the dataset across the ranks, gathers the rows to rank 0 in dataset order and computes the
// metrics once; predict only asks it to hand the gathered arrays back.
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include "cohort/trainer/preemption.h"
#include "cohort/trainer/trainer.h"

namespace cohort::trainer {

PredictionOutput Trainer::predict(std::shared_ptr<const Dataset> dataset,
                                  const std::string& metricKeyPrefix) {
  if (!dataset) throw ConfigError("predict() needs a dataset");
  EvalParts ep;
  ep.model = parts_.model.get();
  ep.forward = parts_.forward;
  ep.dataset = std::move(dataset);
  ep.collator = parts_.collator;
  ep.loss = parts_.evalLoss;
  ep.computeMetrics = parts_.computeMetrics;
  ep.preprocessLogits = parts_.preprocessLogitsForMetrics;
  if (watcher_) ep.shouldStop = [w = watcher_.get()] { return w->stopRequested(); };
  EvalOptions eo = evalOptionsFromArgs(args_);
  eo.shiftLabels = parts_.shiftLabels;
  eo.metricKeyPrefix = metricKeyPrefix;
  eo.keepPredictions = true;
  if (!parts_.model->parameters().empty()) eo.device = parts_.model->parameters().front().device();
  setTrainingPhase(TrainingPhase::kEval);
  struct Idle {
    ~Idle() { setTrainingPhase(TrainingPhase::kIdle); }
  } idle;
  EvalResult r = trainer::evaluate(comm_, ep, eo);
  PredictionOutput out;
  out.numSamples = r.numSamples;
  out.interrupted = r.interrupted;
  out.metrics = std::move(r.metrics);
  if (r.predictions) {
    out.predictions = std::move(r.predictions->predictions);
    out.labelIds = std::move(r.predictions->labels);
  }
  return out;
}

}  // namespace cohort::trainer
