// token_probe: the Trainer on a token file, as a user's program runs it, for
// token_resume_test.sh. A causal LM small enough to be instant (logits = a trainable
// [vocab, vocab] table indexed by the input ids; labels = input, shiftLabels = true) trains
// with the TrainingArguments of the command line on openTokenDataset(files=...). With
// record=PREFIX every rank appends "global_step first_token_of_window" lines, one per window
// it trained on, to PREFIX.rankN: the script compares runs by the windows they consumed.
// Positional arguments: files=A[,B...] seq_len=T vocab=V [dtype=D] [record=PREFIX].
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <cstdio>
#include <exception>
#include <fstream>
#include <memory>
#include <sstream>

#include "cohort/dist/device.h"
#include "cohort/dist/runtime.h"
#include "cohort/trainer/token_dataset.h"
#include "cohort/trainer/trainer.h"
#include "cohort/trainer/training_args.h"

namespace {

namespace ct = cohort::trainer;

struct Table : torch::nn::Module {
  explicit Table(std::int64_t vocab) {
    logits = register_parameter("logits", at::zeros({vocab, vocab}, at::kDouble));
  }
  at::Tensor logits;
};

// Writes, at each step end, the windows this rank's forward saw during the step.
struct Recorder : ct::TrainerCallback {
  std::vector<std::int64_t> pending;
  std::ofstream out;
  void onStepEnd(const ct::TrainerState& s, ct::TrainerControl&) override {
    for (std::int64_t w : pending) out << s.globalStep << ' ' << w << '\n';
    out.flush();
    pending.clear();
  }
};

ct::TokenDatasetOptions parseOptions(const std::vector<std::string>& positional,
                                     std::string& record) {
  ct::TokenDatasetOptions o;
  for (const auto& p : positional) {
    const std::size_t eq = p.find('=');
    const std::string key = p.substr(0, eq),
                      value = eq == std::string::npos ? "" : p.substr(eq + 1);
    if (key == "files") {
      std::stringstream ss(value);
      for (std::string f; std::getline(ss, f, ',');) o.files.push_back(f);
    } else if (key == "seq_len") {
      o.seqLen = std::stoll(value);
    } else if (key == "vocab") {
      o.vocabSize = std::stoll(value);
    } else if (key == "dtype") {
      o.dtype = value;
    } else if (key == "record") {
      record = value;
    } else {
      throw cohort::ConfigError("token_probe: unknown argument '" + p + "'");
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  std::unique_ptr<cohort::dist::Runtime> rt;
  try {
    rt = cohort::dist::init(&argc, &argv);
  } catch (const std::exception& e) {
    return ct::reportFatalError(e, 0);
  }
  const int rank = rt->rank();
  std::unique_ptr<cohort::dist::Communicator> comm;
  try {
    const ct::ProgramInfo program{"token_probe", "Trains a bigram table on token files.",
                                  "files=A[,B] seq_len=T vocab=V [dtype=D] [record=PREFIX]"};
    const ct::CommandLine cl = ct::parseTrainingArgs(argc, argv, program);
    std::string record;
    const ct::TokenDatasetOptions opt = parseOptions(cl.positional, record);
    auto data = ct::openTokenDataset(opt);
    ct::logWarnings(ct::validate(cl.args, {true, false}), rank);
    comm = cohort::dist::makeCommunicator(*rt, cohort::dist::chooseDevice(*rt));
    auto table = std::make_shared<Table>(opt.vocabSize);
    auto recorder = std::make_shared<Recorder>();
    if (!record.empty()) recorder->out.open(record + ".rank" + std::to_string(rank), std::ios::app);
    ct::TrainerParts parts;
    parts.model = table;
    parts.forward = [table, recorder, T = opt.seqLen](const ct::Batch& b) {
      for (std::int64_t i = 0; i < b.size; ++i)
        recorder->pending.push_back(b.input[i][0].item<std::int64_t>());
      return ct::ModelOutput{
          table->logits.index_select(0, b.input.reshape({-1})).view({b.size, T, -1}), {}};
    };
    parts.trainDataset = data;
    parts.shiftLabels = true;
    parts.callbacks.push_back(recorder);
    ct::Trainer trainer(cl.args, *comm, parts);
    const ct::TrainOutput out = trainer.train();
    if (rank == 0) {
      std::printf("OK steps %lld, %lld windows, loss %.6f\n",
                  static_cast<long long>(out.globalStep), static_cast<long long>(data->size()),
                  out.trainingLoss);
    }
    return 0;
  } catch (const std::exception& e) {
    // A token id >= vocab is found by one rank while the others wait in the step's
    // all-reduce: abort the communicator (as the examples' main does) so that they end too.
    const int code = ct::reportFatalError(e, rank);
    if (comm) comm->abort(e.what());
    return code;
  }
}
