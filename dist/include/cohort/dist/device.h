// Device choice (one rank per GPU) and the communicator factory: the ONE place that decides
// between the MPI backend (host tensors) and the NCCL backend (CUDA tensors).
#pragma once

#include <memory>
#include <string>

#include "cohort/dist/backend.h"
#include "cohort/dist/communicator.h"
#include "cohort/dist/runtime.h"

namespace cohort::dist {

enum class DeviceKind { kCpu, kCuda };

struct DeviceChoice {
  DeviceKind kind = DeviceKind::kCpu;
  int index = 0;       // CUDA device index among the visible ones (0 for CPU)
  std::string reason;  // one line for the log: why this device
};

// Pure policy, testable without a GPU. `preference` is auto|cpu|cuda (COHORT_DEVICE).
// auto: CPU when no GPU is visible, else local rank -> device. When each rank sees exactly
// one device through CUDA_VISIBLE_DEVICES (srun --gpus-per-task), that device is used.
// Throws ConfigError for an unknown preference, DistError when cuda is asked but no device
// is visible ("no CUDA device visible to rank N") or when ranks would share a GPU.
DeviceChoice chooseDevice(const Topology& topo, int visibleCudaDevices,
                          const std::string& preference, bool cudaVisibleDevicesSet);

// CUDA devices this process can use (0 when built without CUDA or without a driver).
int visibleCudaDeviceCount();

// True when this build can run collectives on CUDA tensors (CUDA LibTorch + NCCL).
bool cudaCollectivesAvailable();

// Decides the device from COHORT_DEVICE and the topology.
DeviceChoice chooseDevice(const Runtime& runtime);

// COLLECTIVE over the world. MPI backend for CPU, NCCL backend for CUDA (DistError when this
// build has no NCCL/CUDA LibTorch).
std::unique_ptr<Communicator> makeCommunicator(const Runtime& runtime, const DeviceChoice& device,
                                               const BackendOptions& options =
                                                   BackendOptions::fromEnv());

}  // namespace cohort::dist
