// Hugging Face's checkpoint policies on top of the checkpoint format: the manifest's trainer
// state, rotation (save_total_limit), the best-metric bookkeeping and the choice of the
// checkpoint to resume from. No collectives here; the Trainer calls these where HF does.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cohort/ckpt/format.h"
#include "cohort/trainer/trainer.h"

namespace cohort::trainer {

// Where the data loader stands for the NEXT step.
struct DataPosition {
  std::int64_t epoch = 0;
  std::int64_t stepInEpoch = 0;
};

ckpt::Manifest makeHeader(const TrainingArguments& args, const TrainerState& state,
                          const DataPosition& next, std::int64_t globalBatch,
                          std::int64_t optimizerStep, bool withOptimizer, double lastLr,
                          bool preempted);
// Restores what the manifest says about the run (step, epoch, samples, history, best).
DataPosition applyHeader(const ckpt::Manifest& m, TrainerState& state);

// Rank 0 only: deletes checkpoints of outputDir beyond `limit` (<= 0: keep all), oldest
// first, never the newest valid one nor `bestCheckpoint`; also removes incomplete ones older
// than the newest valid one (left by a crash). Returns the paths deleted.
std::vector<std::string> rotateCheckpoints(const std::string& outputDir, int limit,
                                           const std::string& bestCheckpoint);

// The checkpoints to try for resume_from_checkpoint=true, newest valid first; `skipped`
// gets one line per incomplete or corrupt directory passed over, and `lost` (when given) one
// line per directory among them that had COMPLETED and is now damaged (its data is lost),
// as opposed to a save that never finished (sentinel present, or nothing written yet).
std::vector<std::string> resumeCandidates(const std::string& outputDir,
                                          std::vector<std::string>* skipped,
                                          std::vector<std::string>* lost = nullptr);

// True when `value` beats `best` in the configured direction (any value beats none).
bool improves(double value, const std::optional<double>& best, bool greaterIsBetter);

}  // namespace cohort::trainer
