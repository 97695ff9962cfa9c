#include "cohort/dist/batch_stats.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <string>

#include "cohort/dist/error.h"

namespace cohort::dist {

StepStats allReduceStepStats(Communicator& comm, const StepStats& local) {
  at::Tensor host = at::empty({static_cast<std::int64_t>(kStepStatsSlots)}, at::kLong);
  std::copy(local.values.begin(), local.values.end(), host.data_ptr<std::int64_t>());
  // NCCL takes device tensors only; a handful of bytes either way.
  at::Tensor t = comm.backend().usesDeviceMemory() ? host.to(at::Device(at::kCUDA)) : host;
  comm.allReduce(t, ReduceOp::kSum);
  at::Tensor back = t.cpu();
  StepStats out;
  std::copy_n(back.data_ptr<std::int64_t>(), kStepStatsSlots, out.values.begin());
  return out;
}

GlobalStepStats reduceStepStats(Communicator& comm, std::int64_t localItems, bool stopRequested) {
  if (localItems < 0) {
    throw DistError("reduceStepStats: localItems must be >= 0, got " + std::to_string(localItems));
  }
  StepStats local;
  local[StepStatsSlot::kNumItems] = localItems;
  local[StepStatsSlot::kStopRequested] = stopRequested ? 1 : 0;
  const StepStats global = allReduceStepStats(comm, local);
  GlobalStepStats out;
  out.numItems = global[StepStatsSlot::kNumItems];
  out.ranksRequestingStop = global[StepStatsSlot::kStopRequested];
  out.stopRequested = out.ranksRequestingStop > 0;
  return out;
}

std::int64_t countItems(const std::vector<at::Tensor>& microBatchLabels, std::int64_t ignoreIndex,
                        bool shiftLabels) {
  std::int64_t total = 0;
  for (std::size_t i = 0; i < microBatchLabels.size(); ++i) {
    const at::Tensor& labels = microBatchLabels[i];
    const std::string where = "countItems: micro-batch " + std::to_string(i);
    if (!labels.defined()) throw DistError(where + ": undefined labels tensor");
    if (!at::isIntegralType(labels.scalar_type(), /*includeBool=*/false)) {
      throw DistError(where + ": labels must be an integer tensor, got " +
                      std::string(c10::toString(labels.scalar_type())));
    }
    at::Tensor counted = labels;
    if (shiftLabels) {
      if (labels.dim() < 1) throw DistError(where + ": shiftLabels needs labels with >= 1 dim");
      if (labels.size(-1) <= 1) continue;  // a one-token row predicts nothing
      counted = labels.narrow(-1, 1, labels.size(-1) - 1);
    }
    total += counted.ne(ignoreIndex).sum().item<std::int64_t>();
  }
  return total;
}

}  // namespace cohort::dist
