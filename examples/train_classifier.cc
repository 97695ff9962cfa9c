// train_classifier: which of 8 license texts in /usr/share/common-licenses a 64-byte window
// comes from, trained data-parallel by the Trainer with a user loss (per-sample
// cross-entropy sum / num_items_in_batch), and scored by held-out accuracy:
//   mpirun -np 2 build/examples/train_classifier --config examples/train_classifier.txtpb
// Prints on rank 0:
//   train_classifier: N ranks, S steps, train loss L, held-out accuracy A (chance C; A0 before
//   training), ...
#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <string>

#include "classifier_model.h"
#include "cohort/dist/device.h"
#include "cohort/dist/log.h"
#include "cohort/dist/runtime.h"
#include "cohort/trainer/training_args.h"
#include "example_main.h"

using namespace cohort;

namespace {

constexpr std::int64_t kTrainPerClass = 512;
constexpr std::int64_t kHeldOutPerClass = 128;

// compute_metrics (rank 0, on the gathered held-out predictions in global order): accuracy.
// preprocess_logits_for_metrics keeps only the argmax per sample, so the gathered arrays are
// one class id per window instead of one logit per class.
std::map<std::string, double> accuracy(const trainer::EvalPrediction& p) {
  const at::Tensor hits = p.predictions.reshape({-1}).eq(p.labels.reshape({-1}));
  return {{"accuracy", hits.to(at::kDouble).mean().item<double>()}};
}

const trainer::ProgramInfo kProgram{
    "train_classifier",
    "Trains a byte classifier data-parallel to tell which of 8 licence texts in\n"
    "/usr/share/common-licenses a 64-byte window comes from, scored by held-out accuracy, e.g.\n"
    "  mpirun -np 2 train_classifier --config examples/train_classifier.txtpb",
    ""};

}  // namespace

int main(int argc, char** argv) {
  return examples::runExample(kProgram, argc, argv, [](examples::ExampleContext& ex) {
    trainer::TrainingArguments& args = ex.args;

    // Read the data before the communicator exists: a missing file is the same ConfigError
    // on every rank, and no collective is left waiting.
    auto texts = examples::readLicenseTexts();
    examples::ClassifierConfig cfg;
    cfg.numClasses = static_cast<std::int64_t>(texts->size());
    using Split = examples::LicenseWindowDataset::Split;
    auto train = std::make_shared<examples::LicenseWindowDataset>(texts, Split::kTrain, cfg.window,
                                                                  kTrainPerClass);
    auto heldOut = std::make_shared<examples::LicenseWindowDataset>(texts, Split::kHeldOut,
                                                                    cfg.window, kHeldOutPerClass);
    ex.comm = dist::makeCommunicator(ex.runtime, dist::chooseDevice(ex.runtime));

    at::manual_seed(static_cast<std::uint64_t>(args.seed()));
    examples::ByteClassifier model(cfg);
    trainer::TrainerParts parts;
    parts.model = model.ptr();
    parts.forward = [&](const trainer::Batch& b) {
      return trainer::ModelOutput{model->forward(b.input), {}};
    };
    parts.computeLoss = examples::classificationLoss;
    parts.trainDataset = train;
    parts.evalDataset = heldOut;
    parts.neftuneEmbedding = model->embed.get();
    parts.computeMetrics = accuracy;
    parts.preprocessLogitsForMetrics = [](const at::Tensor& logits, const at::Tensor&) {
      return logits.argmax(-1);
    };
    // Per-sample cross-entropy of a [B, classes] logit row against its [B, 1] label.
    parts.evalLoss = [](const trainer::ModelOutput& o, const at::Tensor& labels) {
      return trainer::perSampleCrossEntropy(o, labels.reshape({-1}), false);
    };
    COHORT_LOG_INFO("{} classes, {} train / {} held-out windows of {} bytes", cfg.numClasses,
                    train->size(), heldOut->size(), cfg.window);

    // "Before" is measured inside train(), after a resume has loaded the checkpoint.
    auto start = std::make_shared<examples::EvaluateAtTrainBegin>();
    parts.callbacks.push_back(start);
    trainer::Trainer t(args, *ex.comm, parts);
    start->attach(t);
    // An evaluation interrupted by a preemption returns no metrics; train() then writes the
    // JIT checkpoint at its first step boundary and the program ends (exit 0) for the job to
    // be requeued.
    const trainer::TrainOutput out = t.train();
    if (out.preempted) return;
    const auto& first = start->metrics();
    const double before = first.count("eval_accuracy") ? first.at("eval_accuracy") : NAN;
    const double after = t.evaluate().at("eval_accuracy");
    if (ex.rank == 0) {
      std::printf(
          "train_classifier: %d ranks, %lld steps, train loss %.4f, held-out accuracy "
          "%.4f (chance %.4f; %.4f before training), %lld held-out windows of %lld "
          "licenses\n",
          ex.comm->size(), static_cast<long long>(out.globalStep), out.trainingLoss, after,
          heldOut->chanceAccuracy(), before, static_cast<long long>(heldOut->size()),
          static_cast<long long>(cfg.numClasses));
      std::printf("train_classifier: outputs in %s\n", args.output_dir().c_str());
    }
  });
}
