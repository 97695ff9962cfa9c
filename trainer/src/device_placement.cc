#include "device_placement.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <optional>

#include "cohort/dist/error.h"

namespace cohort::trainer {

c10::Device modelDevice(torch::nn::Module& model) {
  std::optional<c10::Device> found;
  std::string firstName;
  auto visit = [&](const std::string& name, const at::Tensor& t) {
    if (!t.defined()) return;
    if (!found) {
      found = t.device();
      firstName = name;
    } else if (t.device() != *found) {
      throw ConfigError("the model's tensors are on several devices (" + firstName + " on " +
                        found->str() + ", " + name + " on " + t.device().str() +
                        "): the Trainer needs them on one device");
    }
  };
  for (const auto& p : model.named_parameters()) visit(p.key(), p.value());
  for (const auto& b : model.named_buffers()) visit(b.key(), b.value());
  return found.value_or(c10::Device(c10::kCPU));
}

c10::Device communicatorDevice(dist::Communicator& comm) {
  return comm.backend().usesDeviceMemory() ? c10::Device(c10::kCUDA) : c10::Device(c10::kCPU);
}

void checkPlacement(const c10::Device& model, dist::Communicator& comm) {
  const c10::Device want = communicatorDevice(comm);
  if (model.type() != want.type()) {
    throw ConfigError("the model's parameters are on " + model.str() + " but the communicator (" +
                      comm.backend().name() + " backend) runs collectives on " +
                      c10::DeviceTypeName(want.type(), /*lower_case=*/true) +
                      " tensors: move the model to the rank's device (model->to(...)) or "
                      "choose the matching backend (COHORT_DEVICE)");
  }
}

void moveBatch(Batch& batch, const c10::Device& device) {
  auto move = [&](at::Tensor& t) {
    if (!t.defined() || t.device() == device) return;
    t = t.to(device, /*non_blocking=*/device.is_cuda() && t.is_pinned());
  };
  batch.forEachTensor(move);
}

}  // namespace cohort::trainer
