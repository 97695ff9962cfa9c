#include "classifier_model.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

#include "cohort/dist/error.h"

namespace cohort::examples {

ByteClassifierImpl::ByteClassifierImpl(const ClassifierConfig& cfg) {
  embed = register_module("embed", trainer::NoisyEmbedding(256, cfg.dim));
  conv_ = register_module(
      "conv",
      torch::nn::Conv1d(
          torch::nn::Conv1dOptions(cfg.dim, cfg.hidden, cfg.kernel).padding(cfg.kernel / 2)));
  fc_ = register_module("fc", torch::nn::Linear(cfg.hidden, cfg.hidden));
  head_ = register_module("head", torch::nn::Linear(cfg.hidden, cfg.numClasses));
}

at::Tensor ByteClassifierImpl::forward(const at::Tensor& input) {
  at::Tensor x = embed->forward(input).transpose(1, 2);  // [B, dim, T]
  // Max over positions: "does this n-gram occur in the window", wherever it occurs (a few
  // points of held-out accuracy better than the mean here).
  at::Tensor features = at::gelu(conv_->forward(x)).amax(-1);  // [B, hidden]
  return head_->forward(at::gelu(fc_->forward(features)));
}

const std::vector<std::string>& licenseClassNames() {
  // Distinct licenses with real files (not the GPL/LGPL/GFDL symlinks); LGPL-2.1 and GPL-3
  // share much of their wording, which keeps the task from being trivial.
  static const std::vector<std::string> names = {"Apache-2.0", "Artistic", "BSD",      "CC0-1.0",
                                                 "GFDL-1.3",   "GPL-3",    "LGPL-2.1", "MPL-2.0"};
  return names;
}

std::shared_ptr<const std::vector<std::string>> readLicenseTexts(const std::string& dir) {
  auto texts = std::make_shared<std::vector<std::string>>();
  for (const auto& name : licenseClassNames()) {
    const std::string path = dir + "/" + name;
    std::ifstream in(path, std::ios::binary);
    if (!in) throw ConfigError("train_classifier: cannot read " + path);
    std::stringstream s;
    s << in.rdbuf();
    texts->push_back(s.str());
  }
  return texts;
}

LicenseWindowDataset::LicenseWindowDataset(std::shared_ptr<const std::vector<std::string>> texts,
                                           Split split, std::int64_t window, std::int64_t perClass)
    : texts_(std::move(texts)), window_(window) {
  if (perClass < 1) throw ConfigError("LicenseWindowDataset: perClass must be >= 1");
  for (std::size_t c = 0; c < texts_->size(); ++c) {
    const auto n = static_cast<std::int64_t>((*texts_)[c].size());
    if (n < 5 * window) {
      throw ConfigError("LicenseWindowDataset: class " + std::to_string(c) + " has only " +
                        std::to_string(n) + " bytes");
    }
    const std::int64_t cut = n * 4 / 5;
    const std::int64_t from = split == Split::kTrain ? 0 : cut;
    const std::int64_t to = split == Split::kTrain ? cut : n;
    const std::int64_t span = to - from - window;  // last start offset, relative
    for (std::int64_t i = 0; i < perClass; ++i) {
      const std::int64_t off = perClass == 1 ? 0 : i * span / (perClass - 1);
      items_.emplace_back(static_cast<std::int64_t>(c), from + off);
    }
  }
}

trainer::Sample LicenseWindowDataset::get(std::int64_t index) const {
  const auto [cls, off] = items_.at(static_cast<std::size_t>(index));
  const std::string& text = (*texts_)[static_cast<std::size_t>(cls)];
  at::Tensor bytes = at::empty({window_}, at::kLong);
  auto* p = bytes.data_ptr<std::int64_t>();
  for (std::int64_t i = 0; i < window_; ++i) {
    p[i] = static_cast<unsigned char>(text[static_cast<std::size_t>(off + i)]);
  }
  return {bytes, at::full({1}, cls, at::kLong)};
}

double LicenseWindowDataset::chanceAccuracy() const {
  std::map<std::int64_t, std::int64_t> counts;
  for (const auto& item : items_) ++counts[item.first];
  std::int64_t most = 0;
  for (const auto& [cls, n] : counts) most = std::max(most, n);
  return items_.empty() ? 0.0 : static_cast<double>(most) / static_cast<double>(items_.size());
}

at::Tensor classificationLoss(const trainer::ModelOutput& out, const at::Tensor& labels,
                              std::int64_t numItemsInBatch) {
  at::Tensor sum = at::cross_entropy_loss(out.logits, labels.reshape({-1}), {}, at::Reduction::Sum,
                                          /*ignore_index=*/-100);
  return sum / static_cast<double>(std::max<std::int64_t>(1, numItemsInBatch));
}

}  // namespace cohort::examples
