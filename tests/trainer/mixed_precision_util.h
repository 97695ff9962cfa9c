// Shared by the mixed-precision tests: train_lm's model at the golden test's size, its data,
// and one Trainer run that records what the tests compare.
#pragma once

#include <ATen/ATen.h>
#include <mpi.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cohort/trainer/trainer.h"
#include "cohort/trainer/training_args.h"
#include "lm_model.h"
#include "lm_test_config.h"
#include "test_util.h"

namespace cohort::test::mp {

constexpr std::int64_t kGlobalBatch = 8;
constexpr std::int64_t kSeed = 7;
constexpr double kLr = 3e-3, kWd = 0.1, kClip = 1.0;

using cohort::test::smallConfig;

inline std::shared_ptr<examples::ByteTextDataset> corpus() {
  static auto data = std::make_shared<examples::ByteTextDataset>(examples::readCorpus(), 48);
  return data->slice(0, 400);
}

inline examples::ByteLm freshModel(at::ScalarType type) {
  at::manual_seed(1234);
  examples::ByteLm m(smallConfig());
  m->to(type);
  return m;
}

// The arguments every run shares (output_dir under /tmp/<name>, no saves, logs each step).
inline trainer::TrainingArguments baseArgs(const std::string& name, std::int64_t steps) {
  trainer::TrainingArguments args;
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);  // world sizes may run at the same time
  args.set_output_dir(
      (std::filesystem::temp_directory_path() / (name + "_w" + std::to_string(world))).string());
  args.set_overwrite_output_dir(true);
  args.set_learning_rate(kLr);
  args.set_weight_decay(kWd);
  args.set_max_grad_norm(kClip);
  args.set_max_steps(steps);
  args.set_logging_steps(1);
  args.set_save_strategy("no");
  args.add_report_to("none");
  args.set_seed(kSeed);
  return args;
}

struct Result {
  std::vector<double> losses, learningRates, lossScales;  // per logged step / per step
  std::map<std::string, at::Tensor> params;
  trainer::TrainerState state;
};

// Records the loss scale after every step.
class ScaleRecorder : public trainer::TrainerCallback {
 public:
  explicit ScaleRecorder(std::vector<double>* out) : out_(out) {}
  void onStepEnd(const trainer::TrainerState& s, trainer::TrainerControl&) override {
    out_->push_back(s.lossScale);
  }

 private:
  std::vector<double>* out_;
};

// The global batch of 8 split over `world` ranks (accumulation 1).
inline Result runTrainer(trainer::TrainingArguments args, at::ScalarType type, int world) {
  args.set_per_device_train_batch_size(static_cast<int>(kGlobalBatch / world));
  auto comm = worldComm();
  auto model = freshModel(type);
  Result r;
  trainer::TrainerParts parts;
  parts.model = model.ptr();
  parts.forward = [&](const trainer::Batch& b) {
    return trainer::ModelOutput{model->forward(b.input), {}};
  };
  parts.trainDataset = corpus();
  parts.shiftLabels = true;
  parts.callbacks.push_back(std::make_shared<ScaleRecorder>(&r.lossScales));
  trainer::Trainer t(args, *comm, parts);
  t.train();
  for (const auto& e : t.state().logHistory) {
    if (e.values.contains("loss")) r.losses.push_back(e.values.at("loss"));
    if (e.values.contains("learning_rate")) r.learningRates.push_back(e.values.at("learning_rate"));
  }
  for (const auto& kv : model->named_parameters()) r.params[kv.key()] = kv.value().detach().clone();
  r.state = t.state();
  return r;
}

}  // namespace cohort::test::mp
