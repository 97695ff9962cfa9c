// Values derived from TrainingArguments with Hugging Face's semantics: step cadences
// (ratios resolved against the run's total steps), best-metric direction, seeds.
#include <algorithm>
#include <cmath>

#include "training_args_internal.h"

namespace cohort::trainer {

namespace {

using namespace args_detail;

std::int64_t resolveInterval(double v, std::int64_t totalSteps) {
  if (v >= 1) return static_cast<std::int64_t>(v);
  // HF: math.ceil(max_steps * ratio), in double precision.
  const auto n = static_cast<std::int64_t>(std::ceil(static_cast<double>(totalSteps) * v));
  return std::max<std::int64_t>(1, n);
}

}  // namespace

// ---- Derived values ----

std::int64_t resolveLoggingSteps(const TrainingArguments& a, std::int64_t totalSteps) {
  return resolveInterval(a.logging_steps(), totalSteps);
}
std::int64_t resolveEvalSteps(const TrainingArguments& a, std::int64_t totalSteps) {
  return resolveInterval(effectiveEvalSteps(a), totalSteps);
}
std::int64_t resolveSaveSteps(const TrainingArguments& a, std::int64_t totalSteps) {
  return resolveInterval(a.save_steps(), totalSteps);
}
std::int64_t resolveWarmupSteps(const TrainingArguments& a, std::int64_t totalSteps) {
  if (a.warmup_steps() > 0) return a.warmup_steps();
  return static_cast<std::int64_t>(std::ceil(static_cast<double>(totalSteps) * a.warmup_ratio()));
}

std::string metricForBestModel(const TrainingArguments& a) {
  return a.has_metric_for_best_model() ? a.metric_for_best_model() : "loss";
}
std::string bestMetricKey(const TrainingArguments& a) {
  const std::string m = metricForBestModel(a);
  return m.rfind("eval_", 0) == 0 ? m : "eval_" + m;
}
bool greaterIsBetter(const TrainingArguments& a) {
  if (a.has_greater_is_better()) return a.greater_is_better();
  return !endsWith(metricForBestModel(a), "loss");
}
std::int64_t dataSeed(const TrainingArguments& a) {
  return a.has_data_seed() ? a.data_seed() : a.seed();
}
int prefetchFactor(const TrainingArguments& a) {
  if (a.has_dataloader_prefetch_factor()) return a.dataloader_prefetch_factor();
  return a.dataloader_num_workers() > 0 ? 2 : 0;
}
ResumeKind resumeKind(const TrainingArguments& a) {
  const std::string v = lower(a.resume_from_checkpoint());
  if (v.empty() || v == "false") return ResumeKind::kNone;
  if (v == "true") return ResumeKind::kLatest;
  return ResumeKind::kPath;
}

}  // namespace cohort::trainer
