// Where the Trainer computes: the device of the model's parameters. The communicator must
// run its collectives there (the MPI backend: host tensors; NCCL: CUDA tensors), batches are
// moved there (non_blocking from pinned host memory on CUDA), and every tensor the step
// hands to the communicator is created there. Private to the trainer library.
#pragma once

#include <c10/core/Device.h>

#include "cohort/dist/communicator.h"
#include "cohort/trainer/data.h"

namespace torch::nn {
class Module;
}

namespace cohort::trainer {

// The one device of the model's parameters and buffers (CPU for a model without any).
// ConfigError when they are spread over several devices.
c10::Device modelDevice(torch::nn::Module& model);

// The device whose tensors `comm` accepts: CUDA (the current device) for a backend that works
// on device memory, else CPU.
c10::Device communicatorDevice(dist::Communicator& comm);

// ConfigError naming both devices unless the model's device is the one the communicator
// runs on (for CUDA: the device type; the index is the rank's GPU).
void checkPlacement(const c10::Device& model, dist::Communicator& comm);

// Moves the batch's tensors to `device`; non_blocking when a tensor is in pinned host memory.
// A no-op for tensors already there (and for an empty batch).
void moveBatch(Batch& batch, const c10::Device& device);

}  // namespace cohort::trainer
