#include "lm_model.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "cohort/dist/error.h"

namespace cohort::examples {

CausalSelfAttentionImpl::CausalSelfAttentionImpl(std::int64_t dim, std::int64_t heads)
    : heads_(heads) {
  qkv_ = register_module("qkv", torch::nn::Linear(dim, 3 * dim));
  proj_ = register_module("proj", torch::nn::Linear(dim, dim));
}

at::Tensor CausalSelfAttentionImpl::forward(const at::Tensor& x) {
  const std::int64_t B = x.size(0), T = x.size(1), D = x.size(2), H = heads_, hd = D / H;
  auto parts = qkv_->forward(x).chunk(3, -1);
  auto split = [&](const at::Tensor& t) { return t.view({B, T, H, hd}).transpose(1, 2); };
  at::Tensor q = split(parts[0]), k = split(parts[1]), v = split(parts[2]);
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(hd));
  at::Tensor future = at::ones({T, T}, x.options().dtype(at::kBool)).triu(1);
  scores = scores.masked_fill(future, -std::numeric_limits<double>::infinity());
  at::Tensor y = at::matmul(at::softmax(scores, -1), v).transpose(1, 2).reshape({B, T, D});
  return proj_->forward(y);
}

BlockImpl::BlockImpl(std::int64_t dim, std::int64_t heads) {
  ln1_ = register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  attn_ = register_module("attn", CausalSelfAttention(dim, heads));
  ln2_ = register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  fc_ = register_module("fc", torch::nn::Linear(dim, 4 * dim));
  out_ = register_module("out", torch::nn::Linear(4 * dim, dim));
}

at::Tensor BlockImpl::forward(const at::Tensor& x) {
  at::Tensor h = x + attn_->forward(ln1_->forward(x));
  return h + out_->forward(at::gelu(fc_->forward(ln2_->forward(h))));
}

ByteLmImpl::ByteLmImpl(const LmConfig& cfg) {
  embed = register_module("embed", trainer::NoisyEmbedding(cfg.vocab, cfg.dim));
  pos_ = register_parameter("pos", at::randn({cfg.maxLen, cfg.dim}) * 0.02);
  for (std::int64_t i = 0; i < cfg.layers; ++i) {
    blocks_.push_back(register_module("block" + std::to_string(i), Block(cfg.dim, cfg.heads)));
  }
  lnf_ = register_module("lnf", torch::nn::LayerNorm(torch::nn::LayerNormOptions({cfg.dim})));
  head_ = register_module("head", torch::nn::Linear(cfg.dim, cfg.vocab));
}

at::Tensor ByteLmImpl::forward(const at::Tensor& input) {
  const std::int64_t T = input.size(1);
  at::Tensor x = embed->forward(input) + pos_.narrow(0, 0, T);
  for (auto& b : blocks_) x = b->forward(x);
  return head_->forward(lnf_->forward(x));
}

std::string readCorpus(const std::string& dir) {
  // By resolved path: /usr/share/common-licenses links GPL -> GPL-3 (and LGPL, GFDL), and a
  // text read twice would sit in both the train and the held-out split.
  std::set<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (!e.is_regular_file()) continue;
    std::error_code resolveError;
    const auto real = std::filesystem::canonical(e.path(), resolveError);
    if (!resolveError) files.insert(real);
  }
  if (ec || files.empty()) throw ConfigError("no text corpus found in " + dir);
  std::string text;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    text += s.str();
  }
  return text;
}

ByteTextDataset::ByteTextDataset(const std::string& text, std::int64_t maxLen)
    : text_(std::make_shared<const std::string>(text)) {
  const std::int64_t n = static_cast<std::int64_t>(text.size());
  std::int64_t pos = 0;
  while (pos + 16 <= n) {
    std::int64_t end = std::min(n, pos + maxLen);
    // End after the last line break in the window when that keeps >= 16 bytes.
    for (std::int64_t i = end - 1; i >= pos + 16; --i) {
      if (text[static_cast<std::size_t>(i)] == '\n') {
        end = i + 1;
        break;
      }
    }
    chunks_.emplace_back(pos, end - pos);
    pos = end;
  }
}

trainer::Sample ByteTextDataset::get(std::int64_t index) const {
  const auto [off, len] = chunks_.at(static_cast<std::size_t>(index));
  at::Tensor ids = at::empty({len}, at::kLong);
  auto* p = ids.data_ptr<std::int64_t>();
  for (std::int64_t i = 0; i < len; ++i) {
    p[i] = static_cast<unsigned char>((*text_)[static_cast<std::size_t>(off + i)]);
  }
  return {ids, ids.clone()};
}

std::shared_ptr<ByteTextDataset> ByteTextDataset::slice(std::int64_t from, std::int64_t to) const {
  auto d = std::shared_ptr<ByteTextDataset>(new ByteTextDataset());
  d->text_ = text_;
  d->chunks_.assign(chunks_.begin() + from, chunks_.begin() + to);
  return d;
}

}  // namespace cohort::examples
