// The Trainer's side of TorchScript models (script_model.h): turns TrainerParts::scriptModel
// into the model + forward pair the rest of the Trainer works with. Private to the trainer
// library; script_model.cc is the one file that includes LibTorch's TorchScript API.
#pragma once

#include <string>

#include "cohort/trainer/trainer.h"

namespace cohort::trainer {

// Fills parts.model with a torch::nn::Module whose parameters and buffers ARE the script
// module's tensors (same names, trained in place; train()/eval() reach the script module)
// and parts.forward with the keyword-argument call (script_model.h). `labelName` is the
// label_names entry ("" when unset); returns the label name to use: the given one, else
// "labels" when forward takes it, else forward's one argument whose name contains "label"
// (HF's default label_names), else "labels". Checks forward's signature against sample 0 of
// the training set and runs it once on that sample (eval mode, no autograd), so that a
// mismatch is a ConfigError on every rank before any collective. `rank` 0 logs the batch
// entries forward does not take. ConfigError when model or forward is set as well.
std::string adoptScriptModel(TrainerParts& parts, const std::string& labelName, int rank);

}  // namespace cohort::trainer
