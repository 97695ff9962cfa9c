// Pretrained weights in and out, by parameter name, in the formats the PyTorch / Hugging Face
// world uses. loadWeights() initialises a model from a safetensors file, a directory of
// safetensors shards with Hugging Face's index (model.safetensors.index.json), a directory
// holding model.safetensors (what Trainer::saveModel writes), or a Cohort checkpoint
// directory (its "model/..." tensors). saveWeights() writes a model's parameters and buffers
// as one safetensors file. User guide: docs/trainer.md ("Weights in and out").
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cohort/dist/communicator.h"

namespace torch::nn {
class Module;
}

namespace cohort::trainer {

struct LoadWeightsOptions {
  // true (default): every parameter and buffer of the model must be in the file, every
  // tensor of the file must belong to the model, shapes must match; all the differences are
  // listed in ONE ConfigError. false: missing and unexpected names are reported (and
  // logged) but not an error; a shape mismatch still is.
  bool strict = true;
  // Renames the file's tensors before matching: a name that starts with a key has that
  // prefix replaced by the value (the longest matching key wins), e.g. {"model.", ""} loads
  // a Hugging Face "model.layers.0.weight" into "layers.0.weight". Names that match no key
  // are kept.
  std::map<std::string, std::string> prefixMap;
};

struct LoadWeightsReport {
  std::string source;  // the file(s) or checkpoint read
  std::int64_t tensorsLoaded = 0;
  std::int64_t bytesRead = 0;           // bytes of tensor data read from disk
  std::vector<std::string> missing;     // model names not in the file (strict = false)
  std::vector<std::string> unexpected;  // file names (after the prefix map) not in the model
  std::vector<std::string> converted;   // "name: F32 -> float64" where the dtype differed
};

// Copies the tensors of `path` into the model's parameters and buffers, in place (without
// autograd), converting the dtype where it differs (as torch's load_state_dict). Reads only
// the tensors it needs. Not collective; not thread-safe with other users of the model.
// Errors: ConfigError for a path that does not exist or is none of the supported layouts,
// and for names and shapes that do not fit (one message listing every difference);
// CheckpointCorrupt naming the file for a malformed file (header length, JSON, offsets out
// of the file, overlapping tensors, dtype/shape that do not match the byte count, bad
// checksums of a Cohort checkpoint).
LoadWeightsReport loadWeights(torch::nn::Module& model, const std::string& path,
                              const LoadWeightsOptions& options = {});

// COLLECTIVE over `comm`: every rank reads `path` itself (a shared filesystem) and the ranks
// agree on the outcome before returning: if loading failed on ANY rank, every rank throws
// the same error (the lowest failing rank's message, same type family: ConfigError or
// CheckpointCorrupt), so that a program exits with the same code everywhere before training
// starts. Call it before the Trainer is built (or between train() calls).
LoadWeightsReport loadWeights(dist::Communicator& comm, torch::nn::Module& model,
                              const std::string& path, const LoadWeightsOptions& options = {});

// Writes the model's parameters and buffers (state-dict names, their own dtypes, CPU copies)
// to `file` as safetensors, atomically (file.tmp, fsync, rename, directory fsync), with
// `metadata` in the header's __metadata__ (plus "format": "pt"). Not collective. Returns the
// file's size in bytes. CheckpointError on a failed write.
std::int64_t saveWeights(torch::nn::Module& model, const std::string& file,
                         const std::map<std::string, std::string>& metadata = {});

}  // namespace cohort::trainer
