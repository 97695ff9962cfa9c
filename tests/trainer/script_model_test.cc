// TorchScript models in the Trainer (issue 16), with modules defined from TorchScript source
// in C++ (no Python needed): keyword arguments from the named batch, tuple outputs, HF's
// default label name, the exact rescaling of a model's mean loss at any world size, and the
// construction-time checks. The Python end to end test is script/parity_test.sh.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/nn/module.h>

#include <filesystem>

#include "cohort/dist/error.h"
#include "cohort/trainer/data.h"
#include "cohort/trainer/trainer.h"
#include "cohort/trainer/training_args.h"
#include "test_util.h"

namespace cohort::test {
namespace {

using namespace cohort::trainer;

at::Tensor initialW() {
  at::manual_seed(3);
  return at::randn({8, 8}, at::kDouble);
}

// logits = w[input_ids] * mask; with a label, (mean token cross-entropy over label != -100,
// logits): the HF tuple with the loss first. The label argument is called "label", so the
// Trainer's default label name must come from forward's signature (HF's find_labels).
std::shared_ptr<torch::jit::Module> scriptLm() {
  auto m = std::make_shared<torch::jit::Module>("TinyScriptLm");
  m->register_parameter("w", initialW().requires_grad_(), /*is_buffer=*/false);
  m->define(R"(
def forward(self, input_ids: Tensor, attention_mask: Tensor, label: Optional[Tensor] = None):
    logits = self.w[input_ids] * attention_mask.unsqueeze(-1).double()
    if label is None:
        return (logits, logits)
    lp = torch.log_softmax(logits, -1)
    mask = label != -100
    safe = torch.where(mask, label, torch.zeros_like(label))
    nll = -lp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    loss = (nll * mask.double()).sum() / mask.sum()
    return (loss, logits)
)");
  return m;
}

// Uneven lengths, so micro-batches and ranks hold different numbers of targets.
class MaskedDataset : public Dataset {
 public:
  explicit MaskedDataset(std::string labelField) : field_(std::move(labelField)) {}
  std::int64_t size() const override { return 24; }
  Sample get(std::int64_t i) const override {
    const std::int64_t len = 2 + i % 4;
    at::Tensor x = at::arange(i, i + len, at::kLong).remainder(8);
    Sample s;
    s.input = x;
    s.set("attention_mask", at::ones({len}, at::kLong));
    s.set(field_, x.roll(-1));
    s.set("unused_extra", at::zeros({len}, at::kLong));  // forward does not take it
    return s;
  }

 private:
  std::string field_;
};

struct TinyLm : torch::nn::Module {
  TinyLm() { w = register_parameter("w", initialW()); }
  at::Tensor w;
};

// The model's MEAN loss, rescaled by the Trainer (local targets / global count), trains
// exactly as the default token-sum loss of the same logits in C++: at any world size, with
// uneven target counts per micro-batch and rank.
TEST(TrainerScriptModel, MeanLossRescaledEqualsTokenSumLoss) {
  auto comm = worldComm();
  const int world = comm->size();
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("cohort_script_" + std::to_string(world)))
          .string();
  TrainingArguments a;
  a.set_output_dir(dir);
  a.set_per_device_train_batch_size(world == 4 ? 3 : 6 / world);
  a.set_gradient_accumulation_steps(world == 4 ? 1 : 2);
  a.set_max_steps(4);
  a.set_learning_rate(0.05);
  a.set_save_strategy("no");
  a.add_report_to("none");

  auto script = scriptLm();
  TrainerParts sp;
  sp.scriptModel = script;
  sp.trainDataset = std::make_shared<MaskedDataset>("label");
  Trainer ts(a, *comm, sp);
  ts.train();

  auto m = std::make_shared<TinyLm>();
  TrainerParts cp;
  cp.model = m;
  cp.forward = [m](const Batch& b) {
    return ModelOutput{at::embedding(m->w, b.input) *
                           b.get("attention_mask").unsqueeze(-1).to(at::kDouble),
                       {}};
  };
  cp.trainDataset = std::make_shared<MaskedDataset>("labels");
  Trainer tc(a, *comm, cp);
  tc.train();

  const at::Tensor got = script->attr("w").toTensor();
  const double rel = ((got - m->w).norm() / m->w.norm()).item<double>();
  const double moved = ((got - initialW()).norm()).item<double>();
  EXPECT_TRUE(allRanks(rel < 1e-10 && moved > 1e-3)) << "rel " << rel << " moved " << moved;
  // The trained tensor is the module's own (trained in place) under its name.
  EXPECT_EQ(ts.state().globalStep, 4);
}

TEST(UnitScriptModel, ConstructionChecksNameTheProblem) {
  auto comm = worldComm();
  const std::string dir = (std::filesystem::temp_directory_path() / "cohort_script_bad").string();
  TrainingArguments a;
  a.set_output_dir(dir);
  a.set_max_steps(1);
  a.add_report_to("none");
  auto expectError = [&](TrainerParts p, const std::string& want) {
    try {
      Trainer t(a, *comm, p);
      ADD_FAILURE() << "no error for " << want;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  };
  auto define = [](const std::string& src) {
    auto m = std::make_shared<torch::jit::Module>("Bad");
    m->register_parameter("w", initialW(), false);
    m->define(src);
    return m;
  };
  TrainerParts p;
  p.trainDataset = std::make_shared<MaskedDataset>("labels");
  p.scriptModel = define("def forward(self, input_ids: Tensor, pixel_values: Tensor):\n"
                         "    return self.w[input_ids]\n");
  expectError(p, "needs 'pixel_values'");
  p.scriptModel = define(
      "def forward(self, input_ids: Tensor, num_items_in_batch: Tensor):\n"
      "    return self.w[input_ids]\n");
  expectError(p, "default for num_items_in_batch");
  p.scriptModel = define("def forward(self, input_ids: Tensor):\n    return 'text'\n");
  expectError(p, "returned");
  p.scriptModel = define("def forward(self, input_ids: Tensor):\n"
                         "    return self.w[input_ids].reshape(3, -1, 5)\n");
  expectError(p, "forward failed");
  p.scriptModel = scriptLm();
  p.model = std::make_shared<TinyLm>();
  expectError(p, "either scriptModel or model");
}

}  // namespace
}  // namespace cohort::test
