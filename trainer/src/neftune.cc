#include "cohort/trainer/neftune.h"

#include <ATen/ATen.h>

#include <cmath>

namespace cohort::trainer {

NoisyEmbeddingImpl::NoisyEmbeddingImpl(std::int64_t numEmbeddings, std::int64_t dim) {
  embedding = register_module("embedding", torch::nn::Embedding(numEmbeddings, dim));
}

at::Tensor NoisyEmbeddingImpl::forward(const at::Tensor& input) {
  at::Tensor out = embedding->forward(input);
  if (alpha_ > 0 && is_training()) {
    const double dims = static_cast<double>(out.size(-2) * out.size(-1));
    const double mag = alpha_ / std::sqrt(dims);
    out = out + at::empty_like(out).uniform_(-mag, mag);
  }
  return out;
}

NeftuneScope::NeftuneScope(NoisyEmbeddingImpl* embedding, double alpha) : embedding_(embedding) {
  if (embedding_ != nullptr) {
    previous_ = embedding_->neftuneAlpha();
    embedding_->setNeftuneAlpha(alpha);
  }
}

NeftuneScope::~NeftuneScope() {
  if (embedding_ != nullptr) embedding_->setNeftuneAlpha(previous_);
}

}  // namespace cohort::trainer
