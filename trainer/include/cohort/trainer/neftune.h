// NEFTune (Jain et al. 2023, as in HF's Trainer): uniform noise U(-1, 1) * alpha / sqrt(L * d)
// added to the embedding output during TRAINING only (L = sequence length, d = embedding
// dim). LibTorch modules have no forward hooks, so the noise lives in NoisyEmbedding, which
// models use in place of torch::nn::Embedding; the Trainer turns it on with a NeftuneScope
// for the duration of train() and the scope turns it off again on every exit, including an
// exception (HF leaks its hook in that case).
#pragma once

#include <torch/nn/modules/embedding.h>

namespace cohort::trainer {

class NoisyEmbeddingImpl : public torch::nn::Module {
 public:
  NoisyEmbeddingImpl(std::int64_t numEmbeddings, std::int64_t dim);
  // input [B, L] int64 -> [B, L, d]; noise only when neftuneAlpha() > 0 and is_training().
  at::Tensor forward(const at::Tensor& input);
  double neftuneAlpha() const { return alpha_; }
  void setNeftuneAlpha(double alpha) { alpha_ = alpha; }
  torch::nn::Embedding embedding{nullptr};

 private:
  double alpha_ = 0.0;
};
TORCH_MODULE(NoisyEmbedding);

// Sets alpha on construction, restores the previous value on destruction.
class NeftuneScope {
 public:
  NeftuneScope(NoisyEmbeddingImpl* embedding, double alpha);
  ~NeftuneScope();
  NeftuneScope(const NeftuneScope&) = delete;
  NeftuneScope& operator=(const NeftuneScope&) = delete;

 private:
  NoisyEmbeddingImpl* embedding_;
  double previous_ = 0.0;
};

}  // namespace cohort::trainer
