// The torch-facing communicator: collectives on at::Tensor. It validates tensors (dtype,
// device, contiguity, shapes across ranks where the collective allows) and forwards to a
// Backend (MPI for host tensors, NCCL for CUDA tensors). Created by makeCommunicator()
// (device.h), which is the one place that decides between backends.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cohort/dist/backend.h"

namespace cohort::dist {

// Owns its Backend. Every method except rank()/size()/backend()/abort() is COLLECTIVE:
// every rank must call it in the same order with tensors of matching dtype (and shape,
// where stated). Errors are typed: DistError for bad tensors or a failed collective,
// TimeoutError when peers did not arrive within COHORT_COLLECTIVE_TIMEOUT. Not
// thread-safe: issue collectives from one thread.
class Communicator {
 public:
  explicit Communicator(std::unique_ptr<Backend> backend);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const;
  int size() const;
  Backend& backend() { return *backend_; }

  // In place on a contiguous tensor; the same numel and dtype on every rank. The Work keeps
  // the tensor alive until it completes.
  std::unique_ptr<Work> allReduceAsync(const at::Tensor& tensor, ReduceOp op = ReduceOp::kSum);
  void allReduce(const at::Tensor& tensor, ReduceOp op = ReduceOp::kSum);
  // In place on a contiguous tensor (flattened): afterwards this rank's partition
  // (partitionOf(numel, size, rank)) holds the reduction; the rest is unspecified.
  std::unique_ptr<Work> reduceScatterAsync(const at::Tensor& tensor, ReduceOp op = ReduceOp::kSum);
  // In place: every rank's partition of the (flattened) tensor reaches every rank.
  std::unique_ptr<Work> allGatherPartitionsAsync(const at::Tensor& tensor);
  // In place: every rank receives root's values (the same numel and dtype everywhere).
  void broadcast(const at::Tensor& tensor, int root = 0);
  // Same shape on every rank (checked; a mismatch names both shapes). Returns a tensor of
  // shape [size, *tensor.shape] in rank order.
  at::Tensor allGather(const at::Tensor& tensor);
  // Tensors may differ in dim 0 across ranks (trailing dims must match). Returns their
  // concatenation along dim 0 in rank order; `rowsPerRank` (optional) receives each rank's
  // dim-0 size.
  at::Tensor allGatherV(const at::Tensor& tensor, std::vector<std::int64_t>* rowsPerRank = nullptr);
  // As allGatherV, but only root gets the result (std::nullopt elsewhere).
  std::optional<at::Tensor> gatherV(const at::Tensor& tensor, int root = 0);
  void barrier();
  // Not collective: see Backend::abort.
  void abort(const std::string& reason);

 private:
  // Exchanges [dtype, ndim, dims...] and checks them; returns every rank's dim 0.
  std::vector<std::int64_t> exchangeShapes(const at::Tensor& t, bool sameDim0, const char* what);

  std::unique_ptr<Backend> backend_;
};

// Maps a torch dtype to the collective dtype; throws DistError naming unsupported ones.
DType toDType(const at::Tensor& t, const char* what);

}  // namespace cohort::dist
