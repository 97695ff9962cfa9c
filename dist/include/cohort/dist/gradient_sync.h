// GradientSync: data-parallel gradient synchronisation for a torch::nn::Module (the role of
// PyTorch's DistributedDataParallel, without wrapping forward()). It makes N ranks train like
// one process on the concatenated batch: parameters start equal (broadcast from rank 0),
// models are checked to be the same on every rank, and gradients are summed (or averaged)
// across ranks bucket by bucket WHILE backward still runs, so communication hides behind
// compute.
//
// Gradients live in flat per-bucket buffers: every parameter's .grad() is a view into its
// bucket, so autograd accumulates straight into the buffer the all-reduce sends, with no
// copies, and an optimizer can later run one fused pass over contiguous memory.
//
// Typical step (see docs/data-parallel.md for the loss-scaling contract):
//
//   GradientSync sync(model, comm);
//   for (micro = 0; micro + 1 < accum; ++micro) {
//     auto guard = sync.noSync();                     // accumulate locally
//     (lossSum(model, batch[micro]) / globalNumItems).backward();
//   }
//   (lossSum(model, batch[accum - 1]) / globalNumItems).backward();  // buckets all-reduce
//   sync.finish();    // waits for the buckets; .grad() now holds the global gradient
//   optimizerStep();
//   sync.zeroGrad();
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cohort/dist/communicator.h"
#include "cohort/dist/types.h"

namespace torch::nn {
class Module;
}  // namespace torch::nn

namespace cohort::dist {

struct GradientSyncOptions {
  // Bucket capacity in MiB. A bucket closes once it holds at least this much; a parameter
  // larger than the cap gets a bucket of its own.
  double bucketCapMb = 25.0;
  // The first bucket of each dtype (the last layers, whose gradients are ready first) is
  // small, so that the first all-reduce starts early in backward.
  double firstBucketCapMb = 1.0;
  // kSum when the loss is already normalised by the GLOBAL item count; kAvg when each rank's
  // loss is a local mean (the backend divides by the world size). Nothing else is allowed.
  ReduceOp op = ReduceOp::kSum;
  // false: a parameter that requires grad but got no gradient in a synchronised step is an
  // error at finish() (on every rank). true: its bucket is reduced anyway, with whatever its
  // buffer holds (zeros after zeroGrad(), or what no_sync micro-batches accumulated).
  bool findUnusedParameters = false;
  // true: a bucket's all-reduce starts from the autograd hook as soon as the bucket is
  // complete. false: all buckets are reduced in finish(), after backward (the "no overlap"
  // baseline of the benchmark).
  bool overlap = true;
  // true: each parameter's storage becomes a view into a flat per-bucket buffer with the
  // same layout as the gradients (bucketParameters()), so an optimizer can update a bucket
  // in one pass over contiguous memory (FusedOptimizer). Moving the module to another device
  // afterwards (Module::to) undoes this: create GradientSync after placing the model.
  bool flatParameters = true;
  // ZeRO-1 style: buckets are reduce-SCATTERED instead of all-reduced, each rank updates only
  // its partition of every bucket (ownedRange) with optimizer state for that partition only,
  // then the parameters are all-gathered (launchParameterGather). Per-rank optimizer work and
  // memory fall by the world size and the result is bit-identical to the replicated update.
  // After finish(), .grad() holds the reduced gradient only inside ownedRange.
  bool shardedUpdate = false;
  // Gradient communication in bfloat16 (PyTorch's bf16_compress_hook): at launch a float32 or
  // float64 bucket is rounded into a bfloat16 copy, that copy is reduced (the backends sum
  // bf16 in float32 and round once) and the result is widened back into the bucket's
  // gradients in finish(). Half the bytes of float32 on the wire; each summed gradient is
  // rounded to bf16's 8 significant bits. Buckets that already are bf16/fp16 are sent as is.
  bool bf16Communication = false;
};

// Where one parameter's gradient lives.
struct ParamSlot {
  std::string name;        // as in Module::named_parameters()
  std::size_t bucket = 0;  // index into bucketGradients()
  std::int64_t offset = 0;  // first element in that bucket's flat gradient buffer
  std::int64_t numel = 0;
};

// Owns its bucket buffers and the autograd hooks it installed (removed by the destructor).
// Borrows `comm`, which must outlive this object; the parameters are held by tensor handle,
// so the module itself may go away first.
//
// COLLECTIVE: the constructor, and finish() after a synchronised backward, must be called by
// every rank in the same order relative to other collectives on `comm`. Buckets are reduced
// in bucket index order on every rank, whatever order autograd finishes them in.
// Thread-safety: not thread-safe; one training thread drives forward/backward/finish. The
// gradient hooks may run on autograd's worker threads (CUDA) and synchronise internally.
// Errors: DistError (model mismatch, unused parameters, failed collective), TimeoutError
// (peers did not arrive), ConfigError (bad options).
class GradientSync {
 public:
  // RAII scope in which backward only accumulates into the buckets (no communication), for
  // the first micro-batches of gradient accumulation. The next synchronised backward then
  // reduces everything accumulated. Nestable; restores the previous mode on destruction.
  class [[nodiscard]] NoSyncGuard {
   public:
    NoSyncGuard(NoSyncGuard&& other) noexcept;
    NoSyncGuard& operator=(NoSyncGuard&&) = delete;
    NoSyncGuard(const NoSyncGuard&) = delete;
    NoSyncGuard& operator=(const NoSyncGuard&) = delete;
    ~NoSyncGuard();

   private:
    friend class GradientSync;
    NoSyncGuard(GradientSync* owner, bool previous) : owner_(owner), previous_(previous) {}
    GradientSync* owner_;
    bool previous_;
  };

  // COLLECTIVE. Checks that every rank has the same parameters and buffers (names, shapes,
  // dtypes, requires_grad, in registration order) and the same bucket options, and throws
  // the same DistError on every rank naming the first difference, e.g. "rank 1 parameter
  // 'fc2.weight' has shape [3, 4], rank 0 has [4, 4]". Then copies rank 0's parameters and
  // buffers to every rank, builds the buckets and installs one gradient hook per parameter.
  // Existing .grad() values are kept (copied into the buckets).
  GradientSync(torch::nn::Module& module, Communicator& comm, GradientSyncOptions options = {});
  ~GradientSync();
  GradientSync(const GradientSync&) = delete;
  GradientSync& operator=(const GradientSync&) = delete;

  NoSyncGuard noSync();
  bool syncEnabled() const;

  // COLLECTIVE after a synchronised backward (outside noSync). Launches the buckets that
  // backward did not complete (unused parameters, or all of them without overlap), waits for
  // every bucket and leaves the reduced gradients in .grad() (and bucketGradients()). Throws
  // DistError on every rank when some rank had parameters without gradient and
  // findUnusedParameters is false, and rethrows any collective or hook error. Inside noSync
  // it does nothing (and is not collective).
  void finish();

  // Zeros every bucket (so every .grad()) and re-binds .grad() to its bucket view where user
  // code replaced or reset it. Not collective. DistError if a step is still in flight.
  void zeroGrad();

  std::size_t numBuckets() const;
  // Flat gradient buffer of each bucket, in reduction order (one dtype/device each).
  const std::vector<at::Tensor>& bucketGradients() const;
  // Flat parameter buffer of each bucket (same layout as bucketGradients(); empty when
  // flatParameters is false).
  const std::vector<at::Tensor>& bucketParameters() const;
  // The element range [first, second) of a bucket that this rank updates: its partition with
  // shardedUpdate, the whole bucket otherwise.
  std::pair<std::int64_t, std::int64_t> ownedRange(std::size_t bucket) const;
  // COLLECTIVE (shardedUpdate; no-ops otherwise): after updating a bucket's owned range,
  // start sending it to every rank; finishParameterGather() waits for all of them and must
  // run before the next forward.
  void launchParameterGather(std::size_t bucket);
  void finishParameterGather();
  // One entry per parameter that requires grad, in registration order.
  const std::vector<ParamSlot>& paramSlots() const;
  // steady_clock time at which each bucket's all-reduce was last launched (a default
  // time_point for a bucket never launched). For overlap tests and tracing.
  std::vector<std::chrono::steady_clock::time_point> lastLaunchTimes() const;
  const GradientSyncOptions& options() const;
  // Bytes this rank handed to the communicator for gradient reductions in the last
  // synchronised step (element size of the dtype sent x elements), for benchmarks.
  std::int64_t lastStepCommBytes() const;

  class Impl;

 private:
  void restoreSync(bool previous);

  std::unique_ptr<Impl> impl_;
};

}  // namespace cohort::dist
