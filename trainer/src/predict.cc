// Trainer::predict: HF's predict on the evaluation loop (evaluation.h), which already shards
// the dataset across the ranks, gathers the rows to rank 0 in dataset order and computes the
// metrics once; predict only asks it to hand the gathered arrays back.
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include "cohort/trainer/preemption.h"
#include "cohort/trainer/trainer.h"
#include "mixed_precision.h"

namespace cohort::trainer {

PredictionOutput Trainer::predict(std::shared_ptr<const Dataset> dataset,
                                  const std::string& metricKeyPrefix) {
  if (!dataset) throw ConfigError("predict() needs a dataset");
  auto [ep, eo] = evalSetup(std::move(dataset), metricKeyPrefix);
  eo.keepPredictions = true;
  setTrainingPhase(TrainingPhase::kEval);
  struct Idle {
    ~Idle() { setTrainingPhase(TrainingPhase::kIdle); }
  } idle;
  const FullEvalCast cast(parts_.model.get(), args_, /*inTrain=*/control_ != nullptr);
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
