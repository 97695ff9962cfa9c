// train_lm: a tiny byte-level causal transformer LM trained data-parallel on the text of
// /usr/share/common-licenses (every Debian system has it), with a held-out split and
// perplexity. The README's main job runs it on 2 ranks:
//   mpirun -np 2 build/examples/train_lm --config examples/train_lm.txtpb [--field=value ...]
#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>

#include "cohort/dist/device.h"
#include "cohort/dist/log.h"
#include "cohort/dist/runtime.h"
#include "cohort/trainer/training_args.h"
#include "example_main.h"
#include "lm_model.h"

using namespace cohort;

namespace {

const trainer::ProgramInfo kProgram{
    "train_lm",
    "Trains a tiny byte-level causal transformer LM data-parallel on the texts of\n"
    "/usr/share/common-licenses (a held-out tenth is scored by perplexity), e.g.\n"
    "  mpirun -np 2 train_lm --config examples/train_lm.txtpb --max_steps=100",
    ""};

}  // namespace

int main(int argc, char** argv) {
  return examples::runExample(kProgram, argc, argv, [](examples::ExampleContext& ex) {
    trainer::TrainingArguments& args = ex.args;

    ex.comm = dist::makeCommunicator(ex.runtime, dist::chooseDevice(ex.runtime));
    const std::string text = examples::readCorpus();
    examples::LmConfig cfg;
    auto all = std::make_shared<examples::ByteTextDataset>(text, cfg.maxLen);
    const std::int64_t split = all->size() * 9 / 10;
    auto train = all->slice(0, split);
    auto heldOut = all->slice(split, all->size());

    at::manual_seed(static_cast<std::uint64_t>(args.seed()));
    examples::ByteLm model(cfg);
    trainer::TrainerParts parts;
    parts.model = model.ptr();
    parts.forward = [&](const trainer::Batch& b) {
      return trainer::ModelOutput{model->forward(b.input), {}};
    };
    parts.trainDataset = train;
    parts.evalDataset = heldOut;
    parts.shiftLabels = true;
    parts.neftuneEmbedding = model->embed.get();
    COHORT_LOG_INFO("corpus: {} bytes, {} train / {} held-out sequences", text.size(),
                    train->size(), heldOut->size());

    // Held-out perplexity = exp(eval_loss): the token mean over the whole held-out split,
    // exact for any world size. "Before" is measured inside train(), after a resume has
    // loaded the checkpoint.
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
    const double before = first.count("eval_loss") ? std::exp(first.at("eval_loss")) : NAN;
    const double after = std::exp(t.evaluate().at("eval_loss"));
    if (ex.rank == 0) {
      std::printf(
          "train_lm: %d ranks, %lld steps, train loss %.4f, held-out perplexity %.2f -> "
          "%.2f (bytes: 256 = uniform)\n",
          ex.comm->size(), static_cast<long long>(out.globalStep), out.trainingLoss, before, after);
      std::printf("train_lm: outputs in %s (log_history.jsonl, TensorBoard runs/)\n",
                  args.output_dir().c_str());
    }
  });
}
