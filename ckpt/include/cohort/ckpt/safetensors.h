// The safetensors file format, without LibTorch or MPI, for weights that travel between
// Cohort and the Hugging Face / PyTorch world: the trainer's loadWeights()/saveModel() and
// the launcher's `cohort ckpt export --format safetensors` are built on it.
//
// A safetensors file is: 8 bytes, a little-endian u64 N; N bytes of UTF-8 JSON, an object
// {name: {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...} with an
// optional "__metadata__": {string: string}; then the byte buffer, where each tensor's
// row-major little-endian bytes lie at [begin, end) relative to the buffer's start. The
// buffer is covered exactly once (no overlaps, no holes). dtypes: F64 F32 F16 BF16 I64 I32
// I16 I8 U8 BOOL. docs/checkpoint-format.md describes the same rules.
//
// Names of dtypes in this API are the checkpoint format's ("float32", "bfloat16", ...).
// Thread-safety: SafetensorsFile is not thread-safe; free functions are, for distinct files.
// Errors: CheckpointCorrupt naming the file for anything malformed; CheckpointError for a
// failed write.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "cohort/ckpt/errors.h"

namespace cohort::ckpt {

// Largest header accepted (the reference implementation's limit): a corrupt length field
// must not make a reader allocate gigabytes.
inline constexpr std::uint64_t kMaxSafetensorsHeaderBytes = 100u << 20;

// "float32" <-> "F32". CheckpointCorrupt for a name outside the supported set.
std::string safetensorsDtypeOf(const std::string& dtype);
std::string dtypeOfSafetensors(const std::string& stDtype);

struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // checkpoint dtype name ("float32")
  std::vector<std::int64_t> shape;
  std::int64_t begin = 0;  // absolute offsets in the file
  std::int64_t end = 0;
  std::int64_t bytes() const { return end - begin; }
};

// An open safetensors file whose header has been read and validated in full: header length
// within bounds and the file, JSON well-formed, known dtypes, non-negative shapes whose byte
// count equals the tensor's extent, offsets inside the file, no two tensors overlapping, no
// hole or trailing bytes, no duplicate names. Reads only the byte ranges asked for (pread).
// Owns its file descriptor.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // In file order of the header (as written).
  const std::vector<SafetensorsEntry>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::int64_t fileBytes() const { return fileBytes_; }
  // The tensor's bytes into dst (entry.bytes() of them).
  void read(const SafetensorsEntry& entry, void* dst) const;

 private:
  std::string path_;
  int fd_ = -1;
  std::int64_t fileBytes_ = 0;
  std::vector<SafetensorsEntry> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Hugging Face's shard index (model.safetensors.index.json): {"metadata": {...},
// "weight_map": {tensor name: shard file name}}. Returns the weight map; CheckpointCorrupt
// naming the file when it is not such an object or a shard name is not a plain file name
// in the same directory (no "/" or "..").
std::map<std::string, std::string> readSafetensorsIndex(const std::string& indexFile);

// What a writer lays out: one tensor, its bytes supplied by the fill callback.
struct SafetensorsTensorSpec {
  std::string name;
  std::string dtype;  // checkpoint dtype name
  std::vector<std::int64_t> shape;
};

// Writes `path` atomically: `path`.tmp, fsync, rename, fsync of the directory. The header
// (padded with spaces to a multiple of 8 bytes, so that the buffer starts aligned) lists the
// tensors in the given order, each right after the previous one. fill(i, dst) must write
// the numel * dtypeSize bytes of tensor i (little-endian) to dst; it is called once per
// tensor, in order, with a buffer of one tensor only. Returns the file's size.
std::int64_t writeSafetensors(const std::string& path,
                              const std::vector<SafetensorsTensorSpec>& tensors,
                              const std::map<std::string, std::string>& metadata,
                              const std::function<void(std::size_t, void*)>& fill);

// `cohort ckpt export --format safetensors`: every tensor of checkpoint `dir` whose name
// starts with `prefix`, under its name without the prefix (for "model/": the parameter's
// state-dict name, "fc1.weight"; the same names as the HDF5 export's datasets), converted by
// `dtype`: "keep"; "float32" (floating tensors
// widened or rounded to nearest-even float32); "bf16" (floating tensors rounded to
// nearest-even bfloat16, NaN kept quiet). Integer and bool tensors are never converted.
// Checksums of every chunk are verified on the way. Returns the tensors written.
// ConfigError for an unknown dtype option.
int exportSafetensors(const std::string& dir, const std::string& outFile,
                      const std::string& prefix = "model/", const std::string& dtype = "keep");

// The conversions of exportSafetensors, exposed for tests: n elements of `from` (checkpoint
// dtype name) at src into `to` at dst. Supported: identity, any floating type to float32
// or bfloat16. ConfigError otherwise.
void convertElements(const std::string& from, const std::string& to, const void* src, void* dst,
                     std::int64_t n);

}  // namespace cohort::ckpt
