// The example models and datasets shared by examples/ and tests/: a byte-level causal
// transformer LM trained on real English text shipped by every Debian system
// (/usr/share/common-licenses), and a license classifier over byte windows of the same files.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <memory>
#include <string>
#include <vector>

#include "cohort/trainer/data.h"
#include "cohort/trainer/neftune.h"
#include "cohort/trainer/trainer.h"

namespace cohort::examples {

struct LmConfig {
  std::int64_t vocab = 256;  // bytes
  std::int64_t dim = 64;
  std::int64_t heads = 4;
  std::int64_t layers = 2;
  std::int64_t maxLen = 128;
};

class CausalSelfAttentionImpl : public torch::nn::Module {
 public:
  CausalSelfAttentionImpl(std::int64_t dim, std::int64_t heads);
  at::Tensor forward(const at::Tensor& x);  // [B, T, d]

 private:
  std::int64_t heads_;
  torch::nn::Linear qkv_{nullptr}, proj_{nullptr};
};
TORCH_MODULE(CausalSelfAttention);

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(std::int64_t dim, std::int64_t heads);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::LayerNorm ln1_{nullptr}, ln2_{nullptr};
  CausalSelfAttention attn_{nullptr};
  torch::nn::Linear fc_{nullptr}, out_{nullptr};
};
TORCH_MODULE(Block);

// input [B, T] int64 -> logits [B, T, vocab]. Position t sees tokens <= t only.
class ByteLmImpl : public torch::nn::Module {
 public:
  explicit ByteLmImpl(const LmConfig& cfg);
  at::Tensor forward(const at::Tensor& input);
  trainer::NoisyEmbedding embed{nullptr};

 private:
  at::Tensor pos_;
  std::vector<Block> blocks_;
  torch::nn::LayerNorm lnf_{nullptr};
  torch::nn::Linear head_{nullptr};
};
TORCH_MODULE(ByteLm);

// The concatenated text of every regular file in `dir`, each read once: symlinks are
// resolved and the files concatenated in the order of their resolved paths (for files that
// live in `dir`, their names).
std::string readCorpus(const std::string& dir = "/usr/share/common-licenses");

// Byte sequences of the corpus: chunks that end at a line break, 16..maxLen bytes long, so
// samples (and so ranks) hold unequal numbers of tokens. input = labels = the bytes (the
// model shifts: position t predicts byte t + 1); the collator pads labels with -100.
class ByteTextDataset : public trainer::Dataset {
 public:
  ByteTextDataset(const std::string& text, std::int64_t maxLen);
  std::int64_t size() const override { return static_cast<std::int64_t>(chunks_.size()); }
  trainer::Sample get(std::int64_t index) const override;
  // Samples [from, to) as a new dataset (train / held-out split).
  std::shared_ptr<ByteTextDataset> slice(std::int64_t from, std::int64_t to) const;

 private:
  ByteTextDataset() = default;
  std::shared_ptr<const std::string> text_;
  std::vector<std::pair<std::int64_t, std::int64_t>> chunks_;  // offset, length
};

}  // namespace cohort::examples
