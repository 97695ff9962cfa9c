// The raw collective core: a small, torch-free interface over (pointer, count, dtype), in the
// spirit of gloo's algorithms. Implementations: MpiBackend (host memory, runs everywhere) and
// NcclBackend (device memory). The torch-facing Communicator (communicator.h) validates
// tensors and forwards to a Backend; trainer code never talks to a Backend directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cohort/dist/types.h"

namespace cohort::dist {

// Handle of one asynchronous collective. Owned by the caller; destroying a Work without
// wait() is allowed (the collective still completes in the background, its error is lost).
// Not thread-safe: one thread waits on a given Work.
class Work {
 public:
  virtual ~Work() = default;
  // Blocks until the collective finished. Rethrows the collective's error: DistError, or
  // TimeoutError when the backend's collective timeout fired (the message names the
  // collective, its sequence number and, where it can be known, the ranks that did not
  // arrive). After a timeout the backend is unusable and the caller must abort the job.
  virtual void wait() = 0;
  // Non-blocking: true once wait() would return (or throw) immediately.
  virtual bool isCompleted() = 0;
};

// Per-backend knobs. Defaults come from the COHORT_* environment registry (env.h).
struct BackendOptions {
  double timeoutSeconds = 600.0;    // COHORT_COLLECTIVE_TIMEOUT
  std::size_t sliceBytes = 1 << 20;  // COHORT_ALLREDUCE_SLICE_BYTES: pipelining granularity
  // COHORT_ALLREDUCE_SLICE_BYTES_CROSS_HOST: the granularity of an MPI group whose ranks are
  // on more than one host (each slice is a TCP/IB rendezvous there, not a cache-sized copy).
  std::size_t crossHostSliceBytes = 8 << 20;
  bool checkArguments = true;       // COHORT_CHECK_COLLECTIVES: cross-rank count/dtype check
  static BackendOptions fromEnv();
};

// A group of ranks that run collectives together.
//
// Every method below except rank()/size()/name()/abort() is COLLECTIVE: every rank of the
// group must call it, in the same order, with matching count and dtype (checked across
// ranks when checkArguments is set: a mismatch raises the same DistError on every rank).
// Collectives are executed in issue order. Buffers are borrowed: they must stay valid and
// untouched until the returned Work's wait() has returned.
// Thread-safety: issuing collectives from several threads at once is not allowed (the
// order would be ambiguous); Work handles may be waited on from any one thread.
class Backend {
 public:
  virtual ~Backend() = default;
  Backend() = default;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* name() const = 0;
  // True when buffers must be device (CUDA) memory, false when host memory.
  virtual bool usesDeviceMemory() const = 0;

  // In place. kAvg requires a floating dtype. bf16/fp16 are accumulated in float32.
  virtual std::unique_ptr<Work> allReduce(void* buf, std::size_t count, DType dtype,
                                          ReduceOp op) = 0;
  // In place. Afterwards rank r's partition (partitionOf(count, size, r)) holds the
  // reduction over all ranks; the rest of buf is unspecified. (ZeRO-style updates: each rank
  // updates its partition, then allGatherPartitions.)
  virtual std::unique_ptr<Work> reduceScatter(void* buf, std::size_t count, DType dtype,
                                              ReduceOp op) = 0;
  // In place. Every rank's partition of buf is sent to every rank.
  virtual std::unique_ptr<Work> allGatherPartitions(void* buf, std::size_t count,
                                                    DType dtype) = 0;
  virtual std::unique_ptr<Work> broadcast(void* buf, std::size_t count, DType dtype,
                                          int root) = 0;
  // Rank r contributes counts[r] elements (counts identical on every rank); out receives
  // the concatenation in rank order (sum(counts) elements).
  virtual std::unique_ptr<Work> allGatherV(const void* in, void* out,
                                           const std::vector<std::size_t>& counts,
                                           DType dtype) = 0;
  // As allGatherV, but only root's out is written (other ranks may pass nullptr).
  virtual std::unique_ptr<Work> gatherV(const void* in, void* out,
                                        const std::vector<std::size_t>& counts, DType dtype,
                                        int root) = 0;
  virtual std::unique_ptr<Work> barrier() = 0;

  // Not collective. Tells every peer that this rank failed (their pending and future
  // collectives raise DistError "rank r failed: <reason>") and makes this backend unusable.
  // Best effort and bounded in time; safe to call after a timeout.
  virtual void abort(const std::string& reason) = 0;
};

}  // namespace cohort::dist
