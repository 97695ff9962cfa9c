// Learning-rate schedules with Hugging Face's formulas (get_scheduler): the multiplier of the
// base learning rate for the optimizer step that follows `step` scheduler steps.
#pragma once

#include <cstdint>
#include <string>

namespace cohort::trainer {

// type: linear | cosine | constant | constant_with_warmup. Throws ConfigError otherwise.
//   warmup (step < warmupSteps): step / warmupSteps (except "constant": 1)
//   linear: (total - step) / (total - warmup), floored at 0
//   cosine: 0.5 * (1 + cos(pi * progress)), progress = (step - warmup) / (total - warmup)
double lrMultiplier(const std::string& type, std::int64_t step, std::int64_t warmupSteps,
                    std::int64_t totalSteps);

// warmup_steps when > 0, else ceil(warmup_ratio * total) (HF's get_warmup_steps).
std::int64_t warmupStepsFor(std::int64_t warmupSteps, double warmupRatio, std::int64_t totalSteps);

}  // namespace cohort::trainer
