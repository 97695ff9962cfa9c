// train_lm: a tiny byte-level causal transformer LM trained data-parallel on the text of
// /usr/share/common-licenses (every Debian system has it), with a held-out split and
// perplexity. The README's main job runs it on 2 ranks:
//   mpirun -np 2 build/examples/train_lm --config examples/train_lm.txtpb [--field=value ...]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdio>

#include "cohort/dist/device.h"
#include "cohort/dist/log.h"
#include "cohort/dist/runtime.h"
#include "cohort/trainer/training_args.h"
#include "lm_model.h"

using namespace cohort;

int main(int argc, char** argv) {
  int rank = 0;
  // Declared before the communicator so that it is destroyed after it, also when an
  // exception unwinds: the communicator's engine must stop before MPI is finalised.
  std::unique_ptr<dist::Runtime> runtime;
  std::unique_ptr<dist::Communicator> comm;
  try {
    at::set_num_threads(1);
    runtime = dist::init(&argc, &argv);
    rank = runtime->rank();
    trainer::CommandLine cl = trainer::parseTrainingArgs(argc, argv);
    trainer::TrainingArguments& args = cl.args;
    trainer::ValidationContext ctx;
    ctx.hasTrainDataset = true;
    ctx.hasEvalDataset = true;
    trainer::validate(args, ctx);  // before the first collective: same error on every rank

    comm = dist::makeCommunicator(*runtime, dist::chooseDevice(*runtime));
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
    // exact for any world size.
    trainer::Trainer t(args, *comm, parts);
    const double before = std::exp(t.evaluate().at("eval_loss"));
    const trainer::TrainOutput out = t.train();
    const double after = std::exp(t.evaluate().at("eval_loss"));
    if (rank == 0) {
      std::printf("train_lm: %d ranks, %lld steps, train loss %.4f, held-out perplexity %.2f -> "
                  "%.2f (bytes: 256 = uniform)\n",
                  comm->size(), static_cast<long long>(out.globalStep), out.trainingLoss, before,
                  after);
      std::printf("train_lm: outputs in %s (log_history.jsonl, TensorBoard runs/)\n",
                  args.output_dir().c_str());
    }
    comm.reset();
    return 0;
  } catch (const std::exception& e) {
    const int code = trainer::reportFatalError(e, rank);
    if (comm) comm->abort(e.what());
    return code;
  }
}
