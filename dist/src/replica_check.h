// Replica agreement for data parallelism: checking that every rank built the same model, and
// copying rank 0's values to the others. Private to cohort_dist (used by GradientSync).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cohort/dist/communicator.h"

namespace cohort::dist::detail {

// One thing that must be identical on every rank: a parameter, a buffer, or a line of
// options (kind "options", the text in `name`, no shape).
struct ReplicaEntry {
  std::string kind;   // "parameter", "buffer", "options"
  std::string name;
  std::string dtype;  // "" for options
  std::vector<std::int64_t> shape;
  bool requiresGrad = false;
};

// COLLECTIVE. Exchanges one 64-bit digest per entry (one all-gather); when any rank differs
// from rank 0, exchanges the two offending entries in full (a second all-gather that every
// rank agrees to run) and throws the same DistError on every rank, naming the lowest rank
// that differs and its first differing entry. `what` prefixes the message.
void verifyReplicas(Communicator& comm, const std::vector<ReplicaEntry>& entries,
                    const std::string& what);

// COLLECTIVE. Overwrites every tensor with root's values (autograd is not told: call before
// any graph uses them). Tensors are coalesced per dtype, so a model with many small
// parameters costs a few collectives, not one per tensor. The list must match across ranks.
void broadcastTensors(Communicator& comm, const std::vector<at::Tensor>& tensors, int root);

// "[3, 4]".
std::string shapeText(const std::vector<std::int64_t>& shape);

}  // namespace cohort::dist::detail
