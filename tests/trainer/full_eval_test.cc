// bf16_full_eval / fp16_full_eval (issue 15, docs/trainer.md "Mixed precision", trainer/src/
// mixed_precision.cc FullEvalCast), at 1, 2 and 4 ranks:
// - evaluate() and predict() outside train() run the forward with the model's parameters in
//   bf16: the eval loss equals, bit for bit, the one of a bf16 copy of the model run sample by
//   sample here, and differs from the float32 eval loss (both printed);
// - afterwards every parameter and buffer is the same tensor as before, float32 again, with
//   the same bits; a tied weight (one tensor under two names) is cast once and restored;
// - an evaluation inside train() (eval_strategy=steps) does not cast (HF: full eval only
//   outside training): its eval loss is the float32 one;
// - fp16_full_eval on a CPU model is refused when the Trainer is built (HF refuses float16
//   on a CPU; validate() alone is covered in training_args_validation_test.cc).
//
// Why exact equality: per_device_eval_batch_size=1, so the evaluation loop runs each sample
// alone, unpadded, at every world size; the reference runs the same LibTorch ops on the same
// single-sample tensors in the same dtype, in the same process, and sums the per-sample
// losses in float64 in dataset order as the loop does (evaluation.cc). The float32 Trainer
// loss must equal the float32 reference exactly too, which shows the reference reproduces
// the loop's arithmetic. The bf16 and float32 losses differ by 1e-4 to 4e-4 relative (bf16
// keeps 8 significant bits; measured 2026-12 at 1, 2 and 4 ranks), well above the 2^-16
// (1.5e-5) the test requires.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>
#include <sstream>

#include "cohort/core/error.h"
#include "cohort/trainer/trainer.h"
#include "cohort/trainer/training_args.h"
#include "lm_model.h"
#include "message_of.h"
#include "mixed_precision_util.h"
#include "test_util.h"

namespace cohort::test {
namespace {

using trainer::Trainer;
using trainer::TrainingArguments;

constexpr std::int64_t kEvalSamples = 16;
const double kMinRelGap = std::ldexp(1.0, -16);  // bf16 vs float32: measured >= 1e-4

// Held-out samples after the training slice (mp::corpus() is samples [0, 400)).
std::shared_ptr<examples::ByteTextDataset> evalSet() {
  static auto data = std::make_shared<examples::ByteTextDataset>(examples::readCorpus(), 48);
  return data->slice(400, 400 + kEvalSamples);
}

// The eval loss the evaluation loop computes at per_device_eval_batch_size=1 with the
// default loss (shifted token cross-entropy, evaluation.cc perSampleCrossEntropy), written
// out: each sample alone, its token losses summed in the model's dtype, then float64 sums
// over the samples in dataset order, divided by the target count.
double referenceEvalLoss(examples::ByteLm model, const trainer::Dataset& data) {
  at::NoGradGuard noGrad;
  model->eval();
  double total = 0, terms = 0;
  for (std::int64_t i = 0; i < data.size(); ++i) {
    const trainer::Sample s = data.get(i);
    const std::int64_t t = s.input.size(0) - 1;
    const at::Tensor logits = model->forward(s.input.unsqueeze(0)).narrow(1, 0, t);
    const at::Tensor target = s.labels.unsqueeze(0).narrow(1, 1, t);
    const at::Tensor per = at::cross_entropy_loss(
        logits.reshape({-1, logits.size(-1)}), target.reshape({-1}), {}, at::Reduction::None, -100);
    total += per.reshape({1, t}).sum(1).to(at::kDouble).item<double>();
    terms += static_cast<double>(t);  // every byte is a target
  }
  return total / terms;
}

// A copy of `model`'s current weights in `type` (the independent side of the comparison).
examples::ByteLm copyAs(examples::ByteLm& model, at::ScalarType type) {
  examples::ByteLm c = mp::freshModel(at::kFloat);
  at::NoGradGuard noGrad;
  auto src = model->named_parameters();
  for (auto& kv : c->named_parameters()) kv.value().copy_(src[kv.key()]);
  c->to(type);
  return c;
}

// Every parameter and buffer: its handle (the optimizer holds these) and a copy of its data.
struct Snapshot {
  std::vector<std::string> names;
  std::vector<at::Tensor> handles, values;
};

Snapshot snapshot(torch::nn::Module& m) {
  Snapshot s;
  auto add = [&](const std::string& name, const at::Tensor& t) {
    s.names.push_back(name);
    s.handles.push_back(t);
    s.values.push_back(t.detach().clone());
  };
  for (const auto& kv : m.named_parameters()) add(kv.key(), kv.value());
  for (const auto& kv : m.named_buffers()) add("buffer " + kv.key(), kv.value());
  return s;
}

// "" when every tensor of `before` is still the module's, in its dtype, with the same bits;
// else the tensors that are not.
std::string unrestored(const Snapshot& before, torch::nn::Module& m) {
  const Snapshot now = snapshot(m);
  if (now.names != before.names) return "the module's tensors changed names";
  std::ostringstream out;
  for (std::size_t i = 0; i < now.names.size(); ++i) {
    const at::Tensor& a = now.values[i];
    const at::Tensor& b = before.values[i];
    if (now.handles[i].unsafeGetTensorImpl() != before.handles[i].unsafeGetTensorImpl()) {
      out << now.names[i] << ": another tensor; ";
    } else if (a.scalar_type() != b.scalar_type()) {
      out << now.names[i] << ": " << a.scalar_type() << " (was " << b.scalar_type() << "); ";
    } else if (a.sizes() != b.sizes() || std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) != 0) {
      out << now.names[i] << ": other bits; ";
    }
  }
  return out.str();
}

// The dtypes the model's parameters had at the forward calls.
using SeenTypes = std::set<at::ScalarType>;

trainer::TrainerParts lmParts(examples::ByteLm model, SeenTypes* seen) {
  trainer::TrainerParts parts;
  parts.model = model.ptr();
  parts.forward = [model, seen](const trainer::Batch& b) mutable {
    for (const auto& p : model->parameters()) seen->insert(p.scalar_type());
    return trainer::ModelOutput{model->forward(b.input), {}};
  };
  parts.trainDataset = mp::corpus();
  parts.evalDataset = evalSet();
  parts.shiftLabels = true;
  return parts;
}

TrainingArguments fullEvalArgs(const std::string& name, bool bf16FullEval, int world) {
  TrainingArguments a = mp::baseArgs(name, 2);
  a.set_bf16_full_eval(bf16FullEval);
  a.set_per_device_train_batch_size(static_cast<int>(mp::kGlobalBatch / world));
  a.set_per_device_eval_batch_size(1);
  a.set_lr_scheduler_type("constant");
  return a;
}

int worldSize() {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  return world;
}

int rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

double relGap(double a, double b) { return std::abs(a - b) / std::abs(b); }

TEST(MixedFullEval, EvaluateAndPredictRunInBf16AndRestoreTheWeights) {
  const int world = worldSize();
  auto comm = worldComm();
  examples::ByteLm model = mp::freshModel(at::kFloat);
  const double wantBf16 = referenceEvalLoss(copyAs(model, at::kBFloat16), *evalSet());
  const double wantFp32 = referenceEvalLoss(copyAs(model, at::kFloat), *evalSet());
  const Snapshot before = snapshot(*model);

  SeenTypes fp32Seen, seen, predictSeen;
  Trainer plain(fullEvalArgs("cohort_full_eval_off", false, world), *comm,
                lmParts(model, &fp32Seen));
  const double fp32 = plain.evaluate().at("eval_loss");
  Trainer t(fullEvalArgs("cohort_full_eval", true, world), *comm, lmParts(model, &seen));
  const double bf16 = t.evaluate().at("eval_loss");
  const std::string afterEvaluate = unrestored(before, *model);
  Trainer p(fullEvalArgs("cohort_full_eval_predict", true, world), *comm,
            lmParts(model, &predictSeen));
  const double predicted = p.predict(evalSet()).metrics.at("test_loss");
  const std::string afterPredict = unrestored(before, *model);

  if (rank() == 0)
    std::printf(
        "world %d eval loss: bf16_full_eval %.9g (bf16 reference %.9g), float32 %.9g "
        "(reference %.9g), predict %.9g; bf16 vs float32 relative gap %.3g\n",
        world, bf16, wantBf16, fp32, wantFp32, predicted, relGap(bf16, fp32));
  EXPECT_EQ(bf16, wantBf16) << "evaluate() did not run the bf16 model";
  EXPECT_EQ(predicted, wantBf16) << "predict() did not run the bf16 model";
  EXPECT_EQ(fp32, wantFp32) << "the reference does not reproduce the evaluation loop";
  EXPECT_GE(relGap(wantBf16, wantFp32), kMinRelGap) << "bf16 would not be visible";
  EXPECT_EQ(seen, SeenTypes{at::kBFloat16});
  EXPECT_EQ(predictSeen, SeenTypes{at::kBFloat16});
  EXPECT_EQ(fp32Seen, SeenTypes{at::kFloat});
  EXPECT_EQ(afterEvaluate, "") << "after evaluate()";
  EXPECT_EQ(afterPredict, "") << "after predict()";
  EXPECT_TRUE(
      allRanks(bf16 == wantBf16 && predicted == wantBf16 && fp32 == wantFp32 &&
               relGap(wantBf16, wantFp32) >= kMinRelGap && seen == SeenTypes{at::kBFloat16} &&
               predictSeen == SeenTypes{at::kBFloat16} && fp32Seen == SeenTypes{at::kFloat} &&
               afterEvaluate.empty() && afterPredict.empty()));
}

// HF: full eval only when evaluate() is not called from train(). The step-2 evaluation
// inside train() sees float32 weights and logs the float32 loss of the final weights; the
// same Trainer's evaluate() after train() casts again.
TEST(MixedFullEval, NoCastDuringTrain) {
  const int world = worldSize();
  auto comm = worldComm();
  examples::ByteLm model = mp::freshModel(at::kFloat);
  SeenTypes seen;
  TrainingArguments a = fullEvalArgs("cohort_full_eval_train", true, world);
  a.set_eval_strategy("steps");
  a.set_eval_steps(2);
  Trainer t(a, *comm, lmParts(model, &seen));
  t.train();
  const SeenTypes inTrain = seen;
  std::vector<double> logged;
  for (const auto& e : t.state().logHistory) {
    if (e.values.contains("eval_loss")) logged.push_back(e.values.at("eval_loss"));
  }
  const Snapshot before = snapshot(*model);
  const double wantFp32 = referenceEvalLoss(copyAs(model, at::kFloat), *evalSet());
  const double wantBf16 = referenceEvalLoss(copyAs(model, at::kBFloat16), *evalSet());
  seen.clear();
  const double after = t.evaluate().at("eval_loss");
  const std::string afterEvaluate = unrestored(before, *model);

  const double inTrainLoss = logged.empty() ? std::nan("") : logged.front();
  if (rank() == 0)
    std::printf(
        "world %d after 2 steps: eval in train() %.9g (float32 reference %.9g), "
        "evaluate() after train() %.9g (bf16 reference %.9g)\n",
        world, inTrainLoss, wantFp32, after, wantBf16);
  EXPECT_EQ(logged.size(), 1u);
  EXPECT_EQ(inTrain, SeenTypes{at::kFloat}) << "parameters were cast during train()";
  EXPECT_EQ(inTrainLoss, wantFp32) << "the evaluation inside train() was not float32";
  EXPECT_GE(relGap(wantBf16, wantFp32), kMinRelGap);
  EXPECT_EQ(after, wantBf16);
  EXPECT_EQ(seen, SeenTypes{at::kBFloat16});
  EXPECT_EQ(afterEvaluate, "");
  EXPECT_TRUE(allRanks(logged.size() == 1 && inTrain == SeenTypes{at::kFloat} &&
                       inTrainLoss == wantFp32 && relGap(wantBf16, wantFp32) >= kMinRelGap &&
                       after == wantBf16 && seen == SeenTypes{at::kBFloat16} &&
                       afterEvaluate.empty()));
}

// Logits from a tied embedding (GPT-2's lm_head is its wte): one tensor registered as
// "embed" here and as "head.weight", a float buffer and an integer one.
struct TiedHeadImpl : torch::nn::Module {
  at::Tensor weight;
};
TORCH_MODULE(TiedHead);

struct TiedLmImpl : torch::nn::Module {
  TiedLmImpl() {
    embed = register_parameter("embed", at::randn({256, 8}) * 0.3);
    head = register_module("head", TiedHead());
    head->weight = head->register_parameter("weight", embed);
    scale = register_buffer("scale", at::full({1}, 0.7));
    calls = register_buffer("calls", at::zeros({1}, at::kLong));
  }
  at::Tensor forward(const at::Tensor& input) {
    return at::matmul(at::embedding(embed, input), head->weight.t()) * scale;
  }
  at::Tensor embed, scale, calls;
  TiedHead head{nullptr};
};
TORCH_MODULE(TiedLm);

// A tied weight is cast once and restored once: casting it twice would save its bf16 copy
// as the "original" and leave it bf16 after the restore.
TEST(MixedFullEval, TiedWeightCastOnceAndRestored) {
  auto comm = worldComm();
  at::manual_seed(99);
  TiedLm model;
  const Snapshot before = snapshot(*model);
  bool tiedDuring = true;
  std::set<std::string> typesDuring;
  trainer::TrainerParts parts;
  parts.model = model.ptr();
  parts.forward = [&](const trainer::Batch& b) {
    tiedDuring = tiedDuring &&
                 model->embed.unsafeGetTensorImpl() == model->head->weight.unsafeGetTensorImpl();
    typesDuring.insert(std::string(c10::toString(model->embed.scalar_type())) + "/" +
                       c10::toString(model->scale.scalar_type()) + "/" +
                       c10::toString(model->calls.scalar_type()));
    return trainer::ModelOutput{model->forward(b.input), {}};
  };
  parts.trainDataset = mp::corpus();
  parts.evalDataset = evalSet();
  parts.shiftLabels = true;
  Trainer t(fullEvalArgs("cohort_full_eval_tied", true, worldSize()), *comm, std::move(parts));
  const double loss = t.evaluate().at("eval_loss");
  const std::string after = unrestored(before, *model);
  const bool tiedAfter =
      model->embed.unsafeGetTensorImpl() == model->head->weight.unsafeGetTensorImpl();
  const std::set<std::string> want{"BFloat16/BFloat16/Long"};
  EXPECT_TRUE(std::isfinite(loss));
  EXPECT_TRUE(tiedDuring);
  EXPECT_EQ(typesDuring, want) << "embed(=head.weight)/scale/calls during the forward";
  EXPECT_EQ(after, "");
  EXPECT_TRUE(tiedAfter);
  EXPECT_TRUE(allRanks(std::isfinite(loss) && tiedDuring && typesDuring == want && after.empty() &&
                       tiedAfter));
}

// docs/training-arguments.md: fp16_full_eval needs a model on a CUDA device, checked when
// the Trainer knows the device (its constructor, before any collective).
TEST(MixedFullEval, Fp16FullEvalRefusedForACpuModel) {
  auto comm = worldComm();
  examples::ByteLm model = mp::freshModel(at::kFloat);
  SeenTypes seen;
  TrainingArguments a = fullEvalArgs("cohort_full_eval_fp16", false, worldSize());
  a.set_fp16_full_eval(true);
  const std::string msg =
      messageOf<ConfigError>([&] { Trainer t(a, *comm, lmParts(model, &seen)); });
  EXPECT_NE(msg.find("fp16_full_eval"), std::string::npos) << "message: '" << msg << "'";
  EXPECT_TRUE(allRanks(msg.find("fp16_full_eval") != std::string::npos));
}

}  // namespace
}  // namespace cohort::test
