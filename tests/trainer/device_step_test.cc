// The step on the model's device (issue 14): device placement checks, batches reaching the
// model where its parameters are, and the host-sync budget of the device-side step (at most
// one device-to-host read per optimizer step, none on a step that neither logs nor can stop).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <filesystem>
#include <set>

#include "cohort/dist/error.h"
#include "cohort/trainer/trainer.h"
#include "cohort/trainer/training_args.h"
#include "test_util.h"

namespace cohort::test {
namespace {

using namespace cohort::trainer;

// Three-class classification: input [4] float64, label a class index (default loss path:
// logits [B, 3] against labels [B]).
class ClassDataset : public Dataset {
 public:
  explicit ClassDataset(std::int64_t n) : n_(n) {}
  std::int64_t size() const override { return n_; }
  Sample get(std::int64_t i) const override {
    at::Tensor x = at::arange(4, at::kDouble).mul(0.1 * static_cast<double>(i % 7)).add(0.3);
    return {x, at::scalar_tensor(i % 3, at::kLong)};
  }

 private:
  std::int64_t n_;
};

struct Linear43 : torch::nn::Module {
  explicit Linear43(at::Device device = at::kCPU) {
    at::manual_seed(7);
    w = register_parameter("w", at::randn({4, 3}, at::kDouble).to(device));
    b = register_parameter("bias", at::zeros({3}, at::kDouble).to(device));
  }
  at::Tensor w, b;
};

TrainingArguments syncArgs(const std::string& name, int logEvery) {
  TrainingArguments a;
  a.set_output_dir((std::filesystem::temp_directory_path() / name).string());
  a.set_overwrite_output_dir(true);
  a.set_per_device_train_batch_size(2);
  a.set_gradient_accumulation_steps(2);
  a.set_max_steps(6);
  a.set_learning_rate(0.05);
  a.set_max_grad_norm(0.5);  // clipping active: its decision must stay on the device too
  a.set_save_strategy("no");
  a.set_logging_steps(logEvery);
  a.add_report_to("jsonl");
  return a;
}

// Records the device of every tensor the model is handed.
struct Seen {
  std::set<std::string> devices;
};

TrainerParts classParts(std::shared_ptr<Linear43> m, std::shared_ptr<Seen> seen,
                        std::int64_t datasetSize) {
  TrainerParts p;
  p.model = m;
  p.forward = [m, seen](const Batch& b) {
    seen->devices.insert(b.input.device().str());
    if (b.labels.defined()) seen->devices.insert(b.labels.device().str());
    return ModelOutput{at::matmul(b.input, m->w) + m->b, {}};
  };
  p.trainDataset = std::make_shared<ClassDataset>(datasetSize);
  p.evalDataset = std::make_shared<ClassDataset>(5);
  return p;
}

// The counter the Trainer exposes: a step that logs reads once (the log values), a step that
// neither logs nor can stop reads nothing, with the default loss or a computeLossOnDevice.
// With enable_jit_checkpoint every step may stop: one read per step, the stop flag riding
// the log's copy on a logged step (never two). A user's computeLoss takes the global item
// count as a number, so those steps read it (once) before the forward.
enum class Loss { kDefault, kUserHost, kUserDevice };

TEST(TrainerHostSyncs, OnePerLoggedStepAndNoneOtherwise) {
  auto comm = worldComm();
  const std::int64_t n = 16 * comm->size();
  auto run = [&](int logEvery, Loss loss, bool jit = false) {
    auto parts = classParts(std::make_shared<Linear43>(), std::make_shared<Seen>(), n);
    if (loss == Loss::kUserHost) {
      parts.computeLoss = [](const ModelOutput& o, const at::Tensor& labels, std::int64_t items) {
        return tokenMeanLoss(o, labels, items, false);
      };
    } else if (loss == Loss::kUserDevice) {
      parts.computeLossOnDevice = [](const ModelOutput& o, const at::Tensor& labels,
                                     const at::Tensor& items) {
        EXPECT_EQ(items.device(), labels.device());
        return tokenMeanLoss(o, labels, 1, false) / items.clamp_min(1);  // sum / count
      };
    }
    TrainingArguments args = syncArgs("cohort_syncs_" + std::to_string(comm->size()), logEvery);
    args.set_enable_jit_checkpoint(jit);
    Trainer t(args, *comm, std::move(parts));
    TrainOutput out = t.train();
    return std::make_pair(out, t.state().logHistory);
  };
  const auto [everyStep, logEvery1] = run(1, Loss::kDefault);
  const auto [sparse, logSparse] = run(3, Loss::kDefault);
  const auto [user, logUser] = run(3, Loss::kUserHost);
  const auto [userDevice, logUserDevice] = run(3, Loss::kUserDevice);
  const auto [jitEvery, logJitEvery] = run(1, Loss::kDefault, true);
  const auto [jitSparse, logJitSparse] = run(3, Loss::kDefault, true);
  const std::vector<std::int64_t> one(6, 1);
  const std::vector<std::int64_t> sparseWant{0, 0, 1, 0, 0, 1};
  const std::vector<std::int64_t> userWant{1, 1, 2, 1, 1, 2};
  EXPECT_EQ(everyStep.hostSyncsPerStep, one);
  EXPECT_EQ(sparse.hostSyncsPerStep, sparseWant);
  EXPECT_EQ(user.hostSyncsPerStep, userWant);
  EXPECT_EQ(userDevice.hostSyncsPerStep, sparseWant);
  EXPECT_EQ(jitEvery.hostSyncsPerStep, one);
  EXPECT_EQ(jitSparse.hostSyncsPerStep, one);
  EXPECT_EQ(userDevice.trainingLoss, sparse.trainingLoss);
  EXPECT_EQ(jitSparse.trainingLoss, sparse.trainingLoss);
  // The device-side default loss (divided by the count on the device) and the host path
  // (tokenMeanLoss with the count as a number) give the same bits: same logged losses and
  // norms, same train_loss.
  bool same = sparse.trainingLoss == user.trainingLoss && logSparse.size() == logUser.size();
  for (std::size_t i = 0; same && i < logSparse.size(); ++i) {
    for (const char* key : {"loss", "grad_norm"}) {
      const auto a = logSparse[i].values.find(key), b = logUser[i].values.find(key);
      same = same && (a == logSparse[i].values.end()) == (b == logUser[i].values.end());
      if (a != logSparse[i].values.end() && b != logUser[i].values.end())
        same = same && a->second == b->second;
    }
  }
  EXPECT_TRUE(same) << sparse.trainingLoss << " vs " << user.trainingLoss;
  // Logging every step vs every third: the run's loss is the same sum either way.
  EXPECT_EQ(everyStep.trainingLoss, sparse.trainingLoss);
  EXPECT_TRUE(allRanks(everyStep.hostSyncsPerStep == one &&
                       sparse.hostSyncsPerStep == sparseWant &&
                       user.hostSyncsPerStep == userWant &&
                       userDevice.hostSyncsPerStep == sparseWant &&
                       jitEvery.hostSyncsPerStep == one && jitSparse.hostSyncsPerStep == one &&
                       same));
}

// The model's tensors must be where the communicator runs its collectives: a clear
// ConfigError at construction (before any collective), not a failure inside the first step.
TEST(TrainerPlacement, RejectsAModelOffTheCommunicatorsDevice) {
  auto comm = worldComm();
  auto meta = std::make_shared<Linear43>(at::Device(at::kMeta));
  const std::string off = messageOf<ConfigError>([&] {
    Trainer t(syncArgs("cohort_place_meta", 1), *comm,
              classParts(meta, std::make_shared<Seen>(), 8));
  });
  EXPECT_NE(off.find("meta"), std::string::npos) << off;
  EXPECT_NE(off.find("communicator"), std::string::npos) << off;
  auto mixed = std::make_shared<Linear43>();
  mixed->register_buffer("scale", at::ones({1}, at::TensorOptions().dtype(at::kDouble).device(at::kMeta)));
  const std::string spread = messageOf<ConfigError>([&] {
    Trainer t(syncArgs("cohort_place_mixed", 1), *comm,
              classParts(mixed, std::make_shared<Seen>(), 8));
  });
  EXPECT_NE(spread.find("several devices"), std::string::npos) << spread;
  EXPECT_TRUE(allRanks(off.find("meta") != std::string::npos &&
                       spread.find("several devices") != std::string::npos));
}

// Every batch tensor, in training and in evaluation, reaches the model on the device of its
// parameters.
TEST(TrainerPlacement, BatchesReachTheModelOnItsDevice) {
  auto comm = worldComm();
  auto seen = std::make_shared<Seen>();
  auto model = std::make_shared<Linear43>();
  TrainerParts parts = classParts(model, seen, 8 * comm->size());
  TrainingArguments a = syncArgs("cohort_place_batches", 2);
  a.set_eval_strategy("steps");
  a.set_eval_steps(3);
  Trainer t(a, *comm, std::move(parts));
  t.train();
  const std::string want = model->w.device().str();
  const bool ok = seen->devices == std::set<std::string>{want};
  EXPECT_TRUE(ok) << "devices seen: " << seen->devices.size();
  EXPECT_TRUE(allRanks(ok));
}

}  // namespace
}  // namespace cohort::test
