#include "mixed_precision.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/nn/module.h>
#include <torch/version.h>

#include <cmath>

namespace cohort::trainer {

namespace {

// LibTorch 2.4 replaced the per-device autocast functions (is_cpu_enabled,
// set_autocast_cpu_dtype, ...) by ones that take the device type.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
bool autocastEnabled(c10::DeviceType d) { return at::autocast::is_autocast_enabled(d); }
void setAutocastEnabled(c10::DeviceType d, bool on) { at::autocast::set_autocast_enabled(d, on); }
at::ScalarType autocastDtypeOf(c10::DeviceType d) { return at::autocast::get_autocast_dtype(d); }
void setAutocastDtype(c10::DeviceType d, at::ScalarType t) { at::autocast::set_autocast_dtype(d, t); }
#else
bool autocastEnabled(c10::DeviceType d) {
  return d == c10::DeviceType::CPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
}
void setAutocastEnabled(c10::DeviceType d, bool on) {
  if (d == c10::DeviceType::CPU) {
    at::autocast::set_cpu_enabled(on);
  } else {
    at::autocast::set_enabled(on);
  }
}
at::ScalarType autocastDtypeOf(c10::DeviceType d) {
  return d == c10::DeviceType::CPU ? at::autocast::get_autocast_cpu_dtype()
                                   : at::autocast::get_autocast_gpu_dtype();
}
void setAutocastDtype(c10::DeviceType d, at::ScalarType t) {
  if (d == c10::DeviceType::CPU) {
    at::autocast::set_autocast_cpu_dtype(t);
  } else {
    at::autocast::set_autocast_gpu_dtype(t);
  }
}
#endif

const LossScalingTestHooks* gTestHooks = nullptr;

}  // namespace

AutocastScope::AutocastScope(c10::DeviceType device, at::ScalarType dtype, bool enabled)
    : device_(device), active_(enabled) {
  if (!active_) return;
  wasEnabled_ = autocastEnabled(device_);
  previousDtype_ = autocastDtypeOf(device_);
  setAutocastEnabled(device_, true);
  setAutocastDtype(device_, dtype);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  // The casts of the weights are cached for the region (torch.autocast does the same).
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  setAutocastEnabled(device_, wasEnabled_);
  setAutocastDtype(device_, previousDtype_);
}

at::ScalarType autocastDtype(const TrainingArguments& args) {
  if (args.bf16()) return at::kBFloat16;
  if (args.fp16()) return at::kHalf;
  return at::kFloat;
}

void applyTf32(const TrainingArguments& args) {
  if (!args.has_tf32()) return;
  at::globalContext().setAllowTF32CuBLAS(args.tf32());
  at::globalContext().setAllowTF32CuDNN(args.tf32());
}

void updateLossScale(LossScaleState& s, bool foundInf, const LossScaleOptions& o) {
  if (foundInf) {
    s.scale = static_cast<float>(s.scale * o.backoffFactor);
    s.growthTracker = 0;
    return;
  }
  if (++s.growthTracker == o.growthInterval) {
    const float grown = static_cast<float>(s.scale * o.growthFactor);
    if (std::isfinite(grown)) s.scale = grown;  // torch keeps the scale at float32's range
    s.growthTracker = 0;
  }
}

double inverseScale(double scale) { return static_cast<float>(1.0 / scale); }

void setLossScalingTestHooks(const LossScalingTestHooks* hooks) { gTestHooks = hooks; }

const LossScalingTestHooks* lossScalingTestHooks() { return gTestHooks; }

bool lossScalingOn(const TrainingArguments& args) {
  return args.fp16() || (gTestHooks != nullptr && gTestHooks->forceLossScaling);
}

LossScaleOptions lossScaleOptions() {
  LossScaleOptions o;
  if (gTestHooks != nullptr && gTestHooks->growthInterval > 0) {
    o.growthInterval = gTestHooks->growthInterval;
  }
  return o;
}

FullEvalCast::FullEvalCast(torch::nn::Module* model, const TrainingArguments& args, bool inTrain) {
  // HF casts only when evaluate()/predict() is not called from inside train().
  if (model == nullptr || inTrain || !(args.bf16_full_eval() || args.fp16_full_eval())) return;
  const at::ScalarType dtype = args.bf16_full_eval() ? at::kBFloat16 : at::kHalf;
  at::NoGradGuard noGrad;
  auto castOne = [&](const at::Tensor& t) {
    if (!t.defined() || !at::isFloatingType(t.scalar_type())) return;
    for (const auto& [handle, original] : saved_) {
      if (handle.unsafeGetTensorImpl() == t.unsafeGetTensorImpl()) return;  // tied
    }
    saved_.emplace_back(t, t.data());
    at::Tensor(t).set_data(t.data().to(dtype));
  };
  for (const auto& kv : model->named_parameters()) castOne(kv.value());
  for (const auto& kv : model->named_buffers()) castOne(kv.value());
}

FullEvalCast::~FullEvalCast() {
  at::NoGradGuard noGrad;
  for (auto& [handle, original] : saved_) handle.set_data(original);
}

}  // namespace cohort::trainer
