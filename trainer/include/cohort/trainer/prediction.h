// What Trainer::predict returns (Hugging Face's PredictionOutput). Kept apart from trainer.h
// so that the prediction API can grow without touching the Trainer's header.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>

namespace cohort::trainer {

struct PredictionOutput {
  // Rank 0 only (undefined on the other ranks, and with prediction_loss_only): the model's
  // outputs (after preprocess_logits_for_metrics) and the labels, one row per sample of the
  // dataset in dataset order, sequence dims padded as in evaluation (docs/evaluation.md).
  at::Tensor predictions;
  at::Tensor labelIds;
  // Every rank, the same dict: "<prefix>_loss" (when the samples have labels),
  // compute_metrics' keys with the prefix, "<prefix>_runtime", "_samples_per_second",
  // "_steps_per_second". Empty when interrupted.
  std::map<std::string, double> metrics;
  std::int64_t numSamples = 0;
  // A preemption signal (enable_jit_checkpoint) stopped the loop on every rank.
  bool interrupted = false;
};

}  // namespace cohort::trainer
