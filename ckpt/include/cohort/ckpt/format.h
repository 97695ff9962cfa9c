// The on-disk checkpoint format, without LibTorch or MPI: shard files (HDF5, one per writing
// rank), the protobuf manifest, the incomplete-checkpoint sentinel, validation, listing and
// range reads. The launcher's `cohort ckpt` and the collective Checkpointer (checkpointer.h)
// are both built on it. docs/checkpoint-format.md describes the same rules for other tools.
//
// Directory layout: output_dir/checkpoint-<global_step>/
//   shard-<r>-of-<N>.h5       one per rank (r, N zero-padded to 5 digits)
//   manifest.pb / .txtpb      written last, by rank 0
//   checkpoint-is-incomplete.txt   present from before the first shard byte until the
//                                  manifest is durable
// Thread-safety: free functions are thread-safe for distinct files; ShardReader is not.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cohort/ckpt/errors.h"
#include "cohort/ckpt/manifest.pb.h"

namespace cohort::ckpt {

inline constexpr const char* kSentinelName = "checkpoint-is-incomplete.txt";
inline constexpr const char* kManifestName = "manifest.pb";
inline constexpr const char* kManifestTextName = "manifest.txtpb";
inline constexpr const char* kCheckpointPrefix = "checkpoint-";
inline constexpr std::int64_t kDefaultChecksumBlockBytes = 1 << 20;
inline constexpr std::int64_t kMaxChecksumBlockBytes = 1 << 30;
// What this code writes. Version 1 (no manifest or shard-file checksums) is still read.
inline constexpr std::uint32_t kFormatVersion = 2;

// Bytes per element of a dtype name ("float32", ...); CheckpointCorrupt for an unknown one.
std::size_t dtypeSize(const std::string& dtype);
// The product of the shape; CheckpointCorrupt for a negative dimension or an overflow.
std::int64_t numelOf(const TensorEntry& entry);

// "shard-00003-of-00004.h5"
std::string shardFileName(int rank, int worldSize);
// "<outputDir>/checkpoint-<step>"
std::string checkpointDir(const std::string& outputDir, std::int64_t step);

// One piece of a tensor that a rank writes: `count` elements starting at flat element
// `offset` of tensor `name`, read from `data` (host memory, must stay valid during the call).
struct ChunkSource {
  std::string name;
  std::string dtype;
  std::vector<std::int64_t> shape;  // global shape of the tensor
  std::int64_t offset = 0;
  std::int64_t count = 0;
  const void* data = nullptr;
};

struct WriteOptions {
  std::int64_t checksumBlockBytes = kDefaultChecksumBlockBytes;
  bool directIo = true;  // O_DIRECT for large datasets where the filesystem allows it
};

// Where writeShard takes the bytes of chunks whose memory may change hands while it runs
// (the deferred snapshot of an async save). writeShard reads each chunk once, front to back, in
// chunk order, from the thread that called it.
class ChunkBytes {
 public:
  virtual ~ChunkBytes() = default;
  // Copies bytes [pos, pos + n) of chunk `index` to `dst`.
  virtual void copy(std::size_t index, std::int64_t pos, std::int64_t n, void* dst) = 0;
};

// Whether shard `s` is in this directory: always, except in a node's copy of a checkpoint
// saved on each node (Manifest.local_shards, save_on_each_node).
bool shardIsHere(const Manifest& manifest, int s);
// "shards 2-3 of 4 here (save_on_each_node)", or "" for a checkpoint with every shard.
std::string localShardsNote(const Manifest& manifest);

// A whole shard file as the manifest records it (format version 2).
struct ShardFile {
  std::int64_t bytes = 0;
  std::uint32_t crc32c = 0;
};

// Creates `path` (replacing any file there), writes every chunk as its own 1-D dataset,
// fsyncs. Returns the chunks as manifest entries (shard index left 0) in input order, and
// the finished file's size and checksum in `*file` when given. Bytes come from
// ChunkSource::data, or through `bytes` when it is given.
// Throws CheckpointError naming the file on any failure; a failed file operation (create,
// write, fsync) is a CheckpointIoError that also names the save-protocol step.
std::vector<Chunk> writeShard(const std::string& path, const std::vector<ChunkSource>& chunks,
                              const WriteOptions& options = {}, ChunkBytes* bytes = nullptr,
                              ShardFile* file = nullptr);

// Reads element ranges of a shard's datasets, verifying the checksum blocks it touches.
// Owns an open HDF5 file. Errors: CheckpointCorrupt naming the file.
class ShardReader {
 public:
  ShardReader(const std::string& path, std::int64_t checksumBlockBytes);
  ~ShardReader();
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;

  // Elements [from, from + count) of `chunk` (chunk-relative) into dst, after checking the
  // dataset's length and HDF5 datatype against the manifest's count and `dtype`.
  void read(const Chunk& chunk, const std::string& dtype, std::int64_t from, std::int64_t count,
            void* dst);
  // Reads every byte of the chunk and checks all its checksums.
  void verify(const Chunk& chunk, const std::string& dtype);
  // CRC32C of the whole file.
  std::uint32_t fileChecksum();
  std::int64_t fileBytes() const { return fileBytes_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::int64_t blockBytes_;
  std::int64_t fileBytes_ = 0;
  std::int64_t fileId_ = -1;
  std::vector<char> scratch_;
};

// Reads `count` elements from flat offset `from` of a tensor into dst, from whichever shards
// hold them, opening shard files through `readers` (a cache keyed by shard index).
class RangeReader {
 public:
  RangeReader(std::string dir, const Manifest& manifest);
  ~RangeReader();
  void read(const TensorEntry& entry, std::int64_t from, std::int64_t count, void* dst);
  // Bytes read from shard files so far (for the log and the benchmark).
  std::int64_t bytesRead() const { return bytesRead_; }

 private:
  std::string dir_;
  const Manifest& manifest_;
  std::map<std::uint32_t, std::unique_ptr<ShardReader>> readers_;
  std::int64_t bytesRead_ = 0;
};

// Rank 0's half of a save: the manifest of a checkpoint written by reports.size() ranks, where
// reports[r] lists the tensor pieces rank r wrote (entries with their chunks; the chunks' shard
// index is set to r here). Pieces of a tensor are merged and sorted by offset; `header`'s
// non-tensor fields are kept. Throws CheckpointError when ranks disagree on a tensor's dtype
// and CheckpointCorrupt (checkManifest, naming `where`) when the chunks do not tile a tensor.
Manifest assembleManifest(Manifest header, const std::vector<ShardReport>& reports,
                          std::int64_t checksumBlockBytes, const std::string& where);

// Parses dir/manifest.pb, checks its checksum (version 2) and its structure (every tensor
// tiled exactly by its chunks in offset order, no overflowing shape, sizes within the shard
// files, shard names as documented, known dtypes, checksum counts, UTF-8 strings).
// CheckpointCorrupt naming the file.
Manifest readManifest(const std::string& dir);
// The bytes of manifest.pb: version 2 ends with manifest_crc32c over all bytes before it
// (any other value of the field in `manifest` is ignored); version 1 is plain protobuf.
std::string serializeManifest(const Manifest& manifest);
// Parses manifest.pb's bytes as readManifest does; `where` names them in errors.
Manifest parseManifest(const std::string& bytes, const std::string& where);
// Writes manifest.pb (and manifest.txtpb) atomically (temp file, fsync, rename, dir fsync).
// A failed step throws CheckpointIoError naming it ("manifest write", "manifest fsync",
// "manifest publish", "directory fsync") and the file.
void writeManifest(const std::string& dir, const Manifest& manifest);
// Checks a manifest's structure (as readManifest does); `where` names it in errors.
void checkManifest(const Manifest& manifest, const std::string& where);

// Durability helpers (throw CheckpointError naming the path; the sentinel's, a
// CheckpointIoError naming the step "sentinel create" or "sentinel removal").
void fsyncPath(const std::string& path);
void createSentinel(const std::string& dir);  // creates dir too; fsyncs file and dir
// Fsyncs the dir; when that fails, puts the sentinel back (best effort) before throwing, so
// that the directory does not look complete after a save that reported failure.
void removeSentinel(const std::string& dir);

enum class CheckpointStatus { kValid, kIncomplete, kCorrupt };
const char* statusName(CheckpointStatus status);

struct CheckpointInfo {
  std::string path;
  std::int64_t step = -1;  // from the directory name
  CheckpointStatus status = CheckpointStatus::kIncomplete;
  std::string reason;      // why it is not valid (names the file)
  std::int64_t bytes = 0;  // on disk
  int worldSize = 0;
  std::optional<double> bestMetric;
  bool preempted = false;
};

// Classifies one checkpoint directory. Cheap checks (sentinel, manifest, shard files present
// and not shorter than their datasets need); verifyChecksums additionally reads every chunk.
CheckpointInfo inspectCheckpoint(const std::string& dir, bool verifyChecksums);
// Every checkpoint-<N> directory in outputDir, by increasing step.
std::vector<CheckpointInfo> listCheckpoints(const std::string& outputDir, bool verifyChecksums);
// Reads every chunk of every shard; throws CheckpointCorrupt naming the first bad file.
void verifyCheckpoint(const std::string& dir);

// Writes one HDF5 file with every tensor whose name starts with `prefix` as a full dataset
// of its global shape (the prefix stripped from the dataset path). Returns tensors written.
int exportConsolidated(const std::string& dir, const std::string& outFile,
                       const std::string& prefix = "model/");

}  // namespace cohort::ckpt
