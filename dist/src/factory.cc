// The one file that knows which optional backends this build has (COHORT_HAVE_NCCL,
// COHORT_TORCH_CUDA). Everything else asks it.
#include <mpi.h>

#include <cstdlib>

#include "cohort/dist/device.h"
#include "cohort/dist/env.h"
#include "cohort/dist/error.h"
#include "cohort/dist/log.h"
#include "cohort/dist/mpi_backend.h"

#if COHORT_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif
#if COHORT_HAVE_NCCL
#include "nccl_backend.h"
#endif
#if COHORT_TORCH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

namespace cohort::dist {

DeviceChoice chooseDevice(const Topology& topo, int visible, const std::string& preference,
                          bool cudaVisibleDevicesSet) {
  if (preference != "auto" && preference != "cpu" && preference != "cuda") {
    throw ConfigError("COHORT_DEVICE='" + preference + "' is not one of auto|cpu|cuda");
  }
  DeviceChoice c;
  if (preference == "cpu") {
    c.reason = "CPU requested (COHORT_DEVICE=cpu)";
    return c;
  }
  if (visible <= 0) {
    if (preference == "cuda") {
      throw DistError("no CUDA device visible to rank " + std::to_string(topo.rank) +
                      " (COHORT_DEVICE=cuda)");
    }
    c.reason = "no CUDA device visible: using the CPU";
    return c;
  }
  c.kind = DeviceKind::kCuda;
  if (visible >= topo.localSize) {
    c.index = topo.localRank;
    c.reason = "local rank " + std::to_string(topo.localRank) + " -> cuda:" +
               std::to_string(c.index) + " of " + std::to_string(visible) + " visible";
  } else if (visible == 1 && cudaVisibleDevicesSet) {
    c.index = 0;
    c.reason = "one device per task through CUDA_VISIBLE_DEVICES -> cuda:0";
  } else {
    throw DistError(std::to_string(topo.localSize) + " ranks on " + topo.hostname + " but only " +
                    std::to_string(visible) +
                    " CUDA devices visible: Cohort runs one rank per GPU (start fewer ranks "
                    "per node, or set COHORT_DEVICE=cpu)");
  }
  return c;
}

int visibleCudaDeviceCount() {
#if COHORT_HAVE_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
#else
  return 0;
#endif
}

bool cudaCollectivesAvailable() { return COHORT_HAVE_NCCL && COHORT_TORCH_CUDA; }

DeviceChoice chooseDevice(const Runtime& runtime) {
  const char* cvd = std::getenv("CUDA_VISIBLE_DEVICES");
  return chooseDevice(runtime.topology(), visibleCudaDeviceCount(),
                      env::get(env::kDevice), cvd != nullptr && *cvd != '\0');
}

std::unique_ptr<Communicator> makeCommunicator(const Runtime& runtime, const DeviceChoice& device,
                                               const BackendOptions& options) {
  (void)runtime;
  if (device.kind == DeviceKind::kCpu) {
    return std::make_unique<Communicator>(makeMpiBackend(MPI_COMM_WORLD, options));
  }
#if COHORT_HAVE_NCCL && COHORT_TORCH_CUDA
  const int index = device.index;
  return std::make_unique<Communicator>(makeNcclBackend(
      MPI_COMM_WORLD, index, options,
      [index] { return c10::cuda::getCurrentCUDAStream(index).stream(); }));
#else
  throw DistError("CUDA collectives need Cohort built with NCCL and a CUDA LibTorch (this build: "
                  "NCCL " + std::string(COHORT_HAVE_NCCL ? "yes" : "no") +
                  ", CUDA LibTorch no); use COHORT_DEVICE=cpu");
#endif
}

}  // namespace cohort::dist
