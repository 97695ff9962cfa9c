// The collective checkpoint protocol on LibTorch tensors. Every rank writes the pieces of
// tensors it holds (a 1/N element range of each replicated tensor, its own partition of
// sharded optimizer state, its own RNG state) into its own shard file; rank 0 publishes the
// manifest only after every rank reported its shard durable:
//   1. rank 0 creates checkpoint-is-incomplete.txt (and the directory), fsynced;
//   2. every rank writes + fsyncs shard-<r>-of-<N>.h5;
//   3. all ranks exchange reports: any failure -> the SAME CheckpointError on every rank,
//      nothing published, older checkpoints untouched;
//   4. rank 0 writes manifest.pb (+ .txtpb), removes the sentinel, fsyncs the directory.
// Loads read any element range from whichever shards hold it (resharding to M ranks).
//
// Checkpointer runs on the group of a dist::Consensus it borrows (the world, or any
// sub-group: shard file names and the manifest's world size are the group's): its
// agreements travel there, never on the training communicator, so checkpoint traffic does
// not interleave with training collectives, an async save can agree from its own thread,
// and a slow save waits under the consensus' timeout (COHORT_CONSENSUS_TIMEOUT), not the
// training one. Constructing a Checkpointer is local (creating the Consensus is the
// collective step). Rank 0 of the group creates the sentinel and publishes the manifest.
// COLLECTIVE over the consensus' group: save, saveAsync, wait, load* (same order).
// Thread-safety: one thread drives it (its background writer is internal); nothing else
// may use the consensus while an async save is in flight.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cohort/ckpt/format.h"

namespace cohort::dist {
class Consensus;
}

namespace cohort::ckpt {

// A piece of a tensor this rank writes: `data` (CPU or CUDA, any layout; numel = count)
// holds elements [offset, offset + numel) of the global tensor `name` of shape `shape`.
struct SavePiece {
  std::string name;
  at::Tensor data;
  std::vector<std::int64_t> shape;
  std::int64_t offset = 0;
  // saveAsync only: `data` is read where it is, not copied at the call, until
  // releaseSources(); the caller must not modify it before then. Applies to CPU contiguous
  // tensors; others are copied at the call regardless.
  bool deferCopy = false;
};

// Elements [offset, offset + dst.numel()) of tensor `name` are read into `dst`.
struct LoadPiece {
  std::string name;
  at::Tensor dst;
  std::int64_t offset = 0;
};

struct SaveResult {
  std::string dir;
  double seconds = 0.0;    // sentinel to durable manifest
  std::int64_t bytes = 0;  // payload bytes, all ranks
};

// dtype names of the format <-> torch scalar types.
std::string dtypeName(const at::Tensor& t);

class Checkpointer {
 public:
  // Not collective. `consensus` must outlive this object.
  explicit Checkpointer(dist::Consensus& consensus, WriteOptions options = {});
  ~Checkpointer();  // waits for an async save in flight (its error is logged)
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // Writes `dir` (replacing a previous incomplete attempt there). `header` carries the
  // non-tensor fields (rank 0's is used); tensor entries, shards, world size are filled in.
  // Throws CheckpointError (same on every rank) when any rank failed.
  SaveResult save(const std::string& dir, const std::vector<SavePiece>& pieces, Manifest header);
  // Copies the pieces to host memory now (except those with deferCopy), then writes them
  // on a background thread with the same protocol. At most one in flight: waits for the
  // previous first.
  void saveAsync(const std::string& dir, const std::vector<SavePiece>& pieces, Manifest header);
  // Waits for the async save in flight; its result, or nullopt when none was in flight.
  // Its error is rethrown here (the same on every rank).
  std::optional<SaveResult> wait();
  // Not collective: allocates (and faults in) the host buffers saveAsync copies `pieces`
  // into, so that the first async save stalls no longer than later ones. Optional; only
  // while no async save is in flight.
  void reserveSnapshot(const std::vector<SavePiece>& pieces);
  // Not collective: copies to host memory whatever of the deferCopy pieces of the async
  // save in flight neither the writer nor its background copier has reached yet, after
  // which the caller may modify them. This copy is the stall of a deferred snapshot: it
  // shrinks the longer the caller waits, to nothing once the copier is through (it copies
  // at memcpy speed, ahead of the disk). Returns the bytes it copied.
  std::int64_t releaseSources();
  bool asyncInFlight() const { return pending_ != nullptr; }

  // Parses and checks dir's manifest on every rank; a failure on any rank is the same
  // CheckpointCorrupt everywhere.
  Manifest loadManifest(const std::string& dir);
  // Reads every piece (checksums verified); errors agreed as in loadManifest.
  // Returns the bytes this rank read.
  std::int64_t load(const std::string& dir, const Manifest& manifest,
                    const std::vector<LoadPiece>& pieces);

  // Not collective; call it on every rank alike before the first save or load. For an
  // output_dir that is not the same directory on every node (save_on_each_node): nodeOf[r]
  // numbers the directory view of group rank r. The lowest rank of each view then creates
  // the sentinel and writes the manifest in its view, listing that view's shards as
  // Manifest.local_shards; a load checks that the rank's own shard is in its view. Empty
  // (the default): one shared directory, rank 0 writes the manifest.
  void setNodeLocal(std::vector<int> nodeOf);

  // The group it runs on (rank(), size()); for a caller's checks before a load, while no
  // async save is in flight.
  dist::Consensus& consensus() { return consensus_; }

 private:
  struct Pending;
  class AsyncSources;
  SaveResult saveNow(const std::string& dir, const std::vector<SavePiece>& pieces, Manifest header,
                     ChunkBytes* bytes = nullptr);
  dist::Consensus& consensus_;
  WriteOptions options_;
  std::unique_ptr<Pending> pending_;
  std::vector<at::Tensor> snapshot_;  // reused host buffers of async saves
  std::vector<int> nodeOf_;           // setNodeLocal; empty: one shared directory
  bool writesDirectory() const;       // creates the sentinel and the manifest in its view
};

}  // namespace cohort::ckpt
