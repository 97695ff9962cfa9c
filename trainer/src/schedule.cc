#include "cohort/trainer/schedule.h"

#include <algorithm>
#include <cmath>

#include "cohort/dist/error.h"

namespace cohort::trainer {

double lrMultiplier(const std::string& type, std::int64_t step, std::int64_t warmup,
                    std::int64_t total) {
  const double s = static_cast<double>(step);
  if (type == "constant") return 1.0;
  const bool known = type == "linear" || type == "cosine" || type == "constant_with_warmup";
  if (!known) {
    throw ConfigError("lr_scheduler_type '" + type +
                      "' is not one of linear, cosine, constant, constant_with_warmup");
  }
  if (step < warmup) return s / static_cast<double>(std::max<std::int64_t>(1, warmup));
  if (type == "constant_with_warmup") return 1.0;
  const double span = static_cast<double>(std::max<std::int64_t>(1, total - warmup));
  if (type == "linear") return std::max(0.0, static_cast<double>(total - step) / span);
  const double progress = static_cast<double>(step - warmup) / span;
  return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
}

std::int64_t warmupStepsFor(std::int64_t warmupSteps, double warmupRatio, std::int64_t total) {
  if (warmupSteps > 0) return warmupSteps;
  return static_cast<std::int64_t>(std::ceil(warmupRatio * static_cast<double>(total)));
}

}  // namespace cohort::trainer
