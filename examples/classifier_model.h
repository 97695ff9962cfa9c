// The license classifier of examples/train_classifier: which license text of
// /usr/share/common-licenses (every Debian system has them) a 64-byte window of text comes
// from. Real data with a held-out split that shares no text with the training split: the
// last fifth of every file is held out, and no window crosses the boundary.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cohort/trainer/data.h"
#include "cohort/trainer/neftune.h"
#include "cohort/trainer/trainer.h"

namespace cohort::examples {

struct ClassifierConfig {
  std::int64_t numClasses = 8;
  std::int64_t window = 64;  // bytes per sample
  std::int64_t dim = 32;     // byte embedding
  std::int64_t hidden = 96;  // convolution channels and MLP width
  std::int64_t kernel = 5;   // byte n-gram width seen by the convolution
};

// input [B, window] int64 bytes -> logits [B, numClasses]. Embedding, a 1-D convolution over
// the bytes (n-gram detectors), GELU, max pool over positions, then a 2-layer MLP. The
// embedding is a NoisyEmbedding so that neftune_noise_alpha applies to it.
class ByteClassifierImpl : public torch::nn::Module {
 public:
  explicit ByteClassifierImpl(const ClassifierConfig& cfg);
  at::Tensor forward(const at::Tensor& input);
  trainer::NoisyEmbedding embed{nullptr};

 private:
  torch::nn::Conv1d conv_{nullptr};
  torch::nn::Linear fc_{nullptr}, head_{nullptr};
};
TORCH_MODULE(ByteClassifier);

// The license files used as classes, in class-id order (names under the corpus directory).
const std::vector<std::string>& licenseClassNames();

// Windows of `window` bytes from each class's text. For class c with text of n bytes, the
// training region is [0, 4n/5) and the held-out region [4n/5, n); `perClass` windows start
// at evenly spaced offsets inside the requested region, so every class has the same number
// of samples (chance = 1 / classes) and the windows of small files overlap. Sample: input =
// the bytes [window] int64, labels = the class id, shape [1] (one prediction target per
// sample, so num_items_in_batch counts samples). get() is thread-safe (read-only).
class LicenseWindowDataset : public trainer::Dataset {
 public:
  enum class Split { kTrain, kHeldOut };
  // `texts[c]` is the text of class c; each must hold at least 5 windows' worth of bytes.
  // Throws ConfigError otherwise.
  LicenseWindowDataset(std::shared_ptr<const std::vector<std::string>> texts, Split split,
                       std::int64_t window, std::int64_t perClass);
  std::int64_t size() const override { return static_cast<std::int64_t>(items_.size()); }
  trainer::Sample get(std::int64_t index) const override;
  std::int64_t numClasses() const { return static_cast<std::int64_t>(texts_->size()); }
  // The share of the most frequent class: the accuracy of always guessing it.
  double chanceAccuracy() const;

 private:
  std::shared_ptr<const std::vector<std::string>> texts_;
  std::int64_t window_;
  std::vector<std::pair<std::int64_t, std::int64_t>> items_;  // class, offset
};

// Reads licenseClassNames() from `dir` (ConfigError naming a file that is missing).
std::shared_ptr<const std::vector<std::string>> readLicenseTexts(
    const std::string& dir = "/usr/share/common-licenses");

// Per-sample cross-entropy SUMMED over the micro-batch and divided by the GLOBAL number of
// samples of the step: summed over micro-batches and ranks it is the mean over the global
// batch (TrainerParts::computeLoss contract). labels: [B, 1] class ids.
at::Tensor classificationLoss(const trainer::ModelOutput& out, const at::Tensor& labels,
                              std::int64_t numItemsInBatch);

}  // namespace cohort::examples
