// TorchScript models (script_model.h, script_adapter.h): loading, the parameter mirror the
// Trainer trains, and the keyword-argument forward call.
#include "cohort/trainer/script_model.h"

#include <ATen/ATen.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <sstream>

#include "cohort/dist/error.h"
#include "cohort/dist/log.h"
#include "script_adapter.h"

namespace cohort::trainer {

namespace {

constexpr const char* kNumItemsArg = "num_items_in_batch";

// TorchScript errors carry a multi-line traceback; the last non-empty line says what failed.
std::string reasonOf(const std::exception& e) {
  const auto* c10 = dynamic_cast<const c10::Error*>(&e);
  std::istringstream in(c10 != nullptr ? c10->what_without_backtrace() : e.what());
  std::string line, last;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t") != std::string::npos) last = line;
  }
  return last.substr(std::min(last.size(), last.find_first_not_of(" \t")));
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out.empty() ? "none" : out;
}

// A torch::nn::Module tree mirroring a script module's: the same names, and the SAME tensors
// (registering a tensor keeps its TensorImpl, so GradientSync's set_data() onto the flat
// buckets and the optimizer's in-place updates are what the script module computes with).
// A tensor reachable under two names (a head tied to the embedding) is registered once,
// under its first name in pre-order, as Python's named_parameters() deduplicates: it must
// get one gradient slot and one update.
class ScriptMirror : public torch::nn::Module {
 public:
  using Seen = std::set<const c10::TensorImpl*>;
  ScriptMirror(const torch::jit::Module& script, std::shared_ptr<torch::jit::Module> root,
               Seen& seen)
      : root_(std::move(root)) {
    for (const auto& p : script.named_parameters(/*recurse=*/false)) {
      if (seen.insert(p.value.unsafeGetTensorImpl()).second) {
        register_parameter(p.name, p.value, p.value.requires_grad());
      }
    }
    for (const auto& b : script.named_buffers(/*recurse=*/false)) {
      if (b.value.defined() && seen.insert(b.value.unsafeGetTensorImpl()).second) {
        register_buffer(b.name, b.value);
      }
    }
    for (const auto& c : script.named_children()) {
      register_module(c.name, std::make_shared<ScriptMirror>(c.value, nullptr, seen));
    }
  }
  // The root reaches the script module, whose own train() sets every submodule's flag.
  void train(bool on = true) override {
    torch::nn::Module::train(on);
    if (root_) root_->train(on);
  }

 private:
  std::shared_ptr<torch::jit::Module> root_;  // the root only
};

struct ForwardArg {
  std::string name;
  bool hasDefault = false;
  bool isInt = false;  // num_items_in_batch typed int (else Tensor)
};

ModelOutput parseOutput(const c10::IValue& out, bool labelsPassed) {
  ModelOutput o;
  auto tensorAt = [](const c10::IValue& v) { return v.isTensor() ? v.toTensor() : at::Tensor(); };
  if (out.isTensor()) {
    const at::Tensor t = out.toTensor();
    (t.dim() == 0 ? o.loss : o.logits) = t;
  } else if (out.isTuple()) {
    const auto& items = out.toTupleRef().elements();
    std::size_t i = 0;
    if (labelsPassed && !items.empty() && items[0].isTensor() && items[0].toTensor().dim() == 0) {
      o.loss = items[i++].toTensor();
    }
    if (i < items.size()) o.logits = tensorAt(items[i]);
  } else if (out.isGenericDict()) {
    for (const auto& kv : out.toGenericDict()) {
      if (!kv.key().isString()) continue;
      if (kv.key().toStringRef() == "logits") o.logits = tensorAt(kv.value());
      if (kv.key().toStringRef() == "loss") o.loss = tensorAt(kv.value());
    }
  } else {
    throw ConfigError("the TorchScript model's forward returned " + out.tagKind() +
                      ": expected a Tensor, a tuple or a Dict[str, Tensor] (\"logits\", \"loss\")");
  }
  if (!o.logits.defined() && !o.loss.defined()) {
    throw ConfigError("the TorchScript model's forward returned neither logits nor a loss");
  }
  return o;
}

// The keyword-argument call of a script module's forward on a batch.
class ScriptForward {
 public:
  ScriptForward(std::shared_ptr<torch::jit::Module> m, std::vector<ForwardArg> args)
      : module_(std::move(m)), args_(std::move(args)) {}

  ModelOutput operator()(const Batch& b) const {
    torch::jit::Kwargs kwargs;
    bool labelsPassed = false, itemsPassed = false;
    for (const ForwardArg& a : args_) {
      if (a.name == kNumItemsArg) {
        if (!b.numItemsInBatch.defined()) continue;  // evaluation: forward's default
        kwargs[a.name] = a.isInt ? c10::IValue(b.numItemsInBatch.item<std::int64_t>())
                                 : c10::IValue(b.numItemsInBatch);
        itemsPassed = true;
        continue;
      }
      const at::Tensor t = b.get(a.name);
      if (!t.defined()) {
        if (a.hasDefault) continue;
        throw ConfigError("the TorchScript model's forward needs '" + a.name +
                          "' but the batch has no tensor of that name (it has: " +
                          joined(b.names()) + ")");
      }
      kwargs[a.name] = t;
      if (a.name == b.labelsName) labelsPassed = true;
    }
    c10::IValue out;
    try {
      out = module_->get_method("forward")({}, kwargs);
    } catch (const c10::Error& e) {
      throw Error("the TorchScript model's forward failed: " + reasonOf(e));
    }
    ModelOutput o = parseOutput(out, labelsPassed);
    o.useModelLoss = o.loss.defined();
    o.lossOverItemsInBatch = itemsPassed && o.loss.defined();
    return o;
  }

 private:
  std::shared_ptr<torch::jit::Module> module_;
  std::vector<ForwardArg> args_;
};

std::vector<ForwardArg> forwardArgs(const torch::jit::Module& m) {
  const auto method = m.find_method("forward");
  if (!method) throw ConfigError("the TorchScript model has no forward method");
  const c10::FunctionSchema& schema = method->function().getSchema();
  std::vector<ForwardArg> out;
  for (std::size_t i = 1; i < schema.arguments().size(); ++i) {  // 0 is self
    const c10::Argument& a = schema.arguments()[i];
    ForwardArg f{a.name(), a.default_value().has_value(), false};
    if (f.name == kNumItemsArg) {
      c10::TypePtr t = a.type();
      if (auto opt = t->cast<c10::OptionalType>()) t = opt->getElementType();
      f.isInt = t->kind() == c10::TypeKind::IntType;
      if (!f.isInt && t->kind() != c10::TypeKind::TensorType) {
        throw ConfigError("the TorchScript model's forward takes num_items_in_batch as " +
                          a.type()->str() + ": expected Tensor or int (Optional allowed)");
      }
      if (!f.hasDefault) {
        throw ConfigError(
            "the TorchScript model's forward needs a default for num_items_in_batch "
            "(e.g. = None): evaluation passes none");
      }
    }
    out.push_back(f);
  }
  return out;
}

std::string resolveLabelName(const std::vector<ForwardArg>& args, const std::string& given) {
  if (!given.empty()) return given;
  std::vector<std::string> labelish;
  for (const auto& a : args) {
    if (a.name == kLabelsName) return kLabelsName;
    if (a.name.find("label") != std::string::npos) labelish.push_back(a.name);
  }
  return labelish.size() == 1 ? labelish.front() : std::string(kLabelsName);
}

// Sample 0 against forward's signature, then one forward on it: ConfigError on a mismatch.
void checkAgainstSample(const TrainerParts& parts, const std::vector<ForwardArg>& args,
                        const std::string& labelName, int rank) {
  if (!parts.trainDataset || parts.trainDataset->size() == 0) return;
  const Sample s = parts.trainDataset->get(0);
  const std::vector<std::string> names = s.names();
  std::set<std::string> taken;
  for (const auto& a : args) {
    taken.insert(a.name);
    const bool present = std::find(names.begin(), names.end(), a.name) != names.end();
    if (!present && !a.hasDefault && a.name != kNumItemsArg) {
      throw ConfigError("the TorchScript model's forward needs '" + a.name +
                        "' but the training samples have no tensor of that name (they have: " +
                        joined(names) + ")");
    }
  }
  std::vector<std::string> unused;
  for (const auto& n : names) {
    const bool isLabels = n == labelName || (n == kLabelsName && labelName == kLabelsName);
    if (taken.count(n) == 0 && !isLabels) unused.push_back(n);
  }
  if (rank == 0 && !unused.empty()) {
    COHORT_LOG_INFO("the TorchScript model's forward does not take {}: not passed to it",
                    joined(unused));
  }
  const Collator collate = withLabelName(parts.collator, labelName);
  Batch b = collate({s});
  torch::nn::Module& model = *parts.model;
  const bool wasTraining = model.is_training();
  model.eval();
  try {
    at::NoGradGuard noGrad;
    parts.forward(b);
  } catch (const Error& e) {
    model.train(wasTraining);
    throw ConfigError(std::string(e.what()) + " (a trial call on training sample 0)");
  } catch (const std::exception& e) {
    model.train(wasTraining);
    throw ConfigError("the TorchScript model's forward failed on training sample 0: " +
                      reasonOf(e));
  }
  model.train(wasTraining);
}

}  // namespace

std::shared_ptr<torch::jit::Module> loadScriptModel(const std::string& path,
                                                   const std::string& device) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw ConfigError("TorchScript model '" + path + "': no such file");
  }
  try {
    c10::optional<c10::Device> where;
    if (!device.empty()) where = c10::Device(device);
    return std::make_shared<torch::jit::Module>(torch::jit::load(path, where));
  } catch (const std::exception& e) {
    throw ConfigError("TorchScript model '" + path +
                      "' cannot be loaded (not a torch.jit.save archive?): " + reasonOf(e));
  }
}

std::shared_ptr<torch::nn::Module> scriptModelAsModule(
    const std::shared_ptr<torch::jit::Module>& script) {
  ScriptMirror::Seen seen;
  return std::make_shared<ScriptMirror>(*script, script, seen);
}

std::string adoptScriptModel(TrainerParts& parts, const std::string& labelName, int rank) {
  if (parts.model || parts.forward) {
    throw ConfigError("TrainerParts: set either scriptModel or model + forward, not both");
  }
  const std::vector<ForwardArg> args = forwardArgs(*parts.scriptModel);
  const std::string label = resolveLabelName(args, labelName);
  parts.model = scriptModelAsModule(parts.scriptModel);
  parts.forward = ScriptForward(parts.scriptModel, args);
  checkAgainstSample(parts, args, label, rank);
  return label;
}

}  // namespace cohort::trainer
