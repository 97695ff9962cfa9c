// TorchScript models in the Trainer (issue 16): a model written in Python, exported with
// torch.jit.script (or torch.jit.trace) and saved, is trained by Cohort without C++ model code.
// Load it with loadScriptModel() and hand it to TrainerParts::scriptModel instead of model +
// forward. The Trainer then
//   - trains the module's own parameter tensors in place (flat gradient buckets, sharded
//     update, checkpoints and saveModel keyed by the module's parameter names, e.g.
//     "blocks.0.attn.qkv.weight"), so the module holds the trained weights afterwards;
//   - calls forward with the batch's named tensors as keyword arguments: every argument of
//     forward that the batch has (input_ids, attention_mask, labels or the label_names entry,
//     ...) is passed; batch entries forward does not take are left out (HF's
//     remove_unused_columns); an argument without a default that the batch lacks is a
//     ConfigError before any collective;
//   - passes `num_items_in_batch` during training when forward takes it (typed Tensor, int or
//     Optional of either; it must have a default, as evaluation passes none);
//   - understands the output: a tensor (logits; a 0-dim tensor is a loss), a tuple ((loss,
//     logits, ...) when labels were passed and the first element is 0-dim, else (logits,
//     ...)), or a Dict[str, Tensor] with "logits" and/or "loss" (HF's ModelOutput).
// Only this library's script_model.cc includes LibTorch's TorchScript API (the runtime itself
// lives in libtorch_cpu, which every Cohort target links already).
#pragma once

#include <memory>
#include <string>

namespace torch::jit {
struct Module;
}
namespace torch::nn {
class Module;
}

namespace cohort::trainer {

// Loads a TorchScript file (torch.jit.save). `device` "" keeps the saved placement, else
// e.g. "cpu" or "cuda:0". ConfigError naming the file when it is missing or not a TorchScript
// archive (one line, TorchScript's reason appended). Thread-safe; not collective.
std::shared_ptr<torch::jit::Module> loadScriptModel(const std::string& path,
                                                   const std::string& device = "");

// The script module's parameters and buffers as a torch::nn::Module holding the SAME tensors
// under the module's names (a tied weight once, under its first name): what the Trainer
// trains. loadWeights() into it initialises the script module in place (cohort-train's
// --init_from); saveWeights() reads it. Not collective.
std::shared_ptr<torch::nn::Module> scriptModelAsModule(
    const std::shared_ptr<torch::jit::Module>& script);

}  // namespace cohort::trainer
