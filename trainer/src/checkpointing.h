// What a Trainer checkpoint holds, and how the pieces map onto ranks. Saving: every rank
// writes the partitionOf(numel, world, rank) element range of each gradient bucket (the
// parameters there and the optimizer moments there), the same 1/world split of buffers and
// frozen parameters, and its own RNG state. Loading at any world size M: each rank reads its
// M-partition of every bucket and all-gathers the parameters; with the sharded update it
// reads exactly its own moments. Tensor names: "model/<param or buffer>",
// "optimizer/exp_avg/<param>", "optimizer/exp_avg_sq/<param>", "rng/<rank>/torch_cpu" (and
// "rng/<rank>/torch_cuda" for a model on a GPU).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cohort/ckpt/checkpointer.h"

namespace torch::nn {
class Module;
}
namespace cohort::dist {
class Communicator;
class GradientSync;
class FusedOptimizer;
}  // namespace cohort::dist

namespace cohort::trainer {

struct TrainingState {
  torch::nn::Module& model;
  dist::GradientSync& sync;
  dist::FusedOptimizer& optimizer;
  dist::Communicator& comm;  // the training communicator (parameter all-gather on load)
};

// This rank's pieces; withOptimizer = false for save_only_model.
std::vector<ckpt::SavePiece> savePieces(const TrainingState& s, bool withOptimizer);

struct LoadReport {
  bool optimizerRestored = false;
  bool rngRestored = false;  // this rank's own RNG state was in the checkpoint
  std::int64_t bytesRead = 0;
};

// COLLECTIVE. Restores model (and optimizer and this rank's RNG when present and wanted)
// from `dir` at the current world size; the optimizer step count comes from the manifest.
// Corruption: the same CheckpointCorrupt on every rank.
LoadReport loadState(const TrainingState& s, ckpt::Checkpointer& ckpt, const std::string& dir,
                     const ckpt::Manifest& manifest, bool withOptimizer, bool withRng);

// COLLECTIVE. Model weights only (load_best_model_at_end).
void loadModelOnly(const TrainingState& s, ckpt::Checkpointer& ckpt, const std::string& dir);

}  // namespace cohort::trainer
