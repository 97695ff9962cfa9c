// The training loss when the model brings its own (ModelOutput::loss, HF's rule; trainer.h),
// and the batch the step's forward receives. Private to the trainer library.
#pragma once

#include <ATen/core/Tensor.h>

#include "cohort/trainer/trainer.h"

namespace cohort::trainer {

// `b` with numItemsInBatch set (a shallow copy: the tensors are shared).
Batch batchWithItemCount(const Batch& b, const at::Tensor& numItems);

// The micro-batch's share of the step loss from the model's own loss: out.loss when the
// model divided by the global count itself (lossOverItemsInBatch), else
// out.loss * (targets of this micro-batch) / numItems, computed on the device.
at::Tensor modelLossOverItems(const ModelOutput& out, const at::Tensor& labels,
                              const at::Tensor& numItems, bool shiftLabels);

}  // namespace cohort::trainer
