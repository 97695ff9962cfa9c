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

namespace {

// Held-out perplexity: rank r scores samples r, r+W, ...; sums are all-reduced, so the
// result is exact for any world size.
double heldOutPerplexity(examples::ByteLm& model, const trainer::Dataset& data,
                         dist::Communicator& comm) {
  at::NoGradGuard noGrad;
  model->eval();
  double sums[2] = {0, 0};
  for (std::int64_t i = comm.rank(); i < data.size(); i += comm.size()) {
    trainer::Batch b = trainer::defaultCollate({data.get(i)});
    at::Tensor logits = model->forward(b.input);
    trainer::ModelOutput out{logits, {}};
    at::Tensor loss = trainer::tokenMeanLoss(out, b.labels, 1, /*shiftLabels=*/true);
    sums[0] += loss.item<double>();
    sums[1] += static_cast<double>(b.labels.size(1) - 1);
  }
  at::Tensor t = at::tensor({sums[0], sums[1]}, at::kDouble);
  comm.allReduce(t);
  model->train();
  return std::exp(t[0].item<double>() / t[1].item<double>());
}

}  // namespace

int main(int argc, char** argv) {
  int rank = 0;
  std::unique_ptr<dist::Communicator> comm;
  try {
    at::set_num_threads(1);
    auto runtime = dist::init(&argc, &argv);
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

    const double before = heldOutPerplexity(model, *heldOut, *comm);
    trainer::Trainer t(args, *comm, parts);
    const trainer::TrainOutput out = t.train();
    const double after = heldOutPerplexity(model, *heldOut, *comm);
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
