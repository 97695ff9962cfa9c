// cohort-train: trains a TorchScript language model (written in Python, exported with
// torch.jit.script) on token files, data-parallel, with no C++ to write (issue 16):
//   cohort run -np 4 -- cohort-train --model model.pt --train_files a.bin,b.bin \
//       --eval_files c.bin --seq_len 256 --config args.txtpb [--field=value ...]
// Program options (below) are taken out of the command line first; everything else is
// TrainingArguments (--config, --field=value), as for every Cohort program. The run writes
// checkpoints and logs as the Trainer does and, at the end, <output_dir>/model.safetensors
// (saveModel). Bad input (model file, forward signature, token files) is one error line and
// exit code 2 on every rank, before any collective.
#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "cohort/dist/device.h"
#include "cohort/dist/error.h"
#include "cohort/dist/log.h"
#include "cohort/trainer/script_model.h"
#include "cohort/trainer/token_dataset.h"
#include "cohort/trainer/weights.h"
#include "example_main.h"

using namespace cohort;

namespace {

const trainer::ProgramInfo kProgram{
    "cohort-train",
    "Trains a TorchScript language model on token files (no C++ to write), e.g.\n"
    "  cohort run -np 4 -- cohort-train --model model.pt --train_files a.bin,b.bin \\\n"
    "      --eval_files c.bin --seq_len 256 --config args.txtpb\n"
    "Program options (before or between the TrainingArguments):\n"
    "  --model PATH          TorchScript file (torch.jit.script(model).save(PATH)); forward\n"
    "                        takes input_ids [B, T] (and optionally labels,\n"
    "                        num_items_in_batch) and returns logits [B, T, V], or a dict\n"
    "                        with \"logits\"/\"loss\"; position t predicts token t + 1\n"
    "  --train_files A,B     token files (docs/data.md: uint16/uint32 raw, llm.c)\n"
    "  --eval_files C,...    held-out token files (optional): eval_loss, perplexity\n"
    "  --seq_len T           tokens per sample (default 256)\n"
    "  --vocab_size V        check token ids < V as they are read (default 0: unchecked)\n"
    "  --token_dtype D       auto | uint16 | uint32 | llmc (default auto)\n"
    "  --init_from PATH      start from these weights: a safetensors file, a directory with\n"
    "                        model.safetensors or HF's sharded index, or a Cohort checkpoint\n"
    "                        (strict: every parameter, same names and shapes)\n"
    "At the end the weights go to <output_dir>/model.safetensors (by parameter name).",
    ""};

struct ProgramOptions {
  std::string model;
  std::vector<std::string> trainFiles, evalFiles;
  std::int64_t seqLen = 256;
  std::int64_t vocabSize = 0;
  std::string tokenDtype = "auto";
  std::string initFrom;
};

std::vector<std::string> splitList(const std::string& s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= s.size()) {
    const std::size_t comma = s.find(',', start);
    const std::string item = s.substr(start, comma == std::string::npos ? std::string::npos
                                                                        : comma - start);
    if (!item.empty()) out.push_back(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

std::int64_t parseCount(const std::string& flag, const std::string& v) {
  try {
    std::size_t used = 0;
    const long long n = std::stoll(v, &used);
    if (used == v.size() && n >= 0) return n;
  } catch (const std::exception&) {
  }
  throw ConfigError("--" + flag + ": expected a non-negative integer, got '" + v + "'");
}

// Takes the program's options out of argv (--name=value or --name value); the rest stays
// for the TrainingArguments parser. Pure: the same result on every rank.
ProgramOptions takeProgramOptions(std::vector<char*>& argv) {
  ProgramOptions o;
  std::vector<char*> rest;
  for (std::size_t i = 0; i < argv.size(); ++i) {
    const std::string a = argv[i];
    std::string name, value;
    bool ours = false;
    for (const char* n : {"model", "train_files", "eval_files", "seq_len", "vocab_size",
                          "token_dtype", "init_from"}) {
      const std::string flag = std::string("--") + n;
      if (a == flag) {
        if (i + 1 >= argv.size()) throw ConfigError(flag + " needs a value");
        name = n, value = argv[++i], ours = true;
      } else if (a.rfind(flag + "=", 0) == 0) {
        name = n, value = a.substr(flag.size() + 1), ours = true;
      }
      if (ours) break;
    }
    if (!ours) {
      rest.push_back(argv[i]);
      continue;
    }
    if (name == "model") o.model = value;
    if (name == "train_files") o.trainFiles = splitList(value);
    if (name == "eval_files") o.evalFiles = splitList(value);
    if (name == "seq_len") o.seqLen = parseCount(name, value);
    if (name == "vocab_size") o.vocabSize = parseCount(name, value);
    if (name == "token_dtype") o.tokenDtype = value;
    if (name == "init_from") o.initFrom = value;
  }
  argv = rest;
  return o;
}

std::shared_ptr<const trainer::Dataset> openTokens(const ProgramOptions& o,
                                                   const std::vector<std::string>& files) {
  trainer::TokenDatasetOptions t;
  t.files = files;
  t.seqLen = o.seqLen;
  t.vocabSize = o.vocabSize;
  t.dtype = o.tokenDtype;
  return trainer::openTokenDataset(t);  // labels = input; the Trainer shifts (shiftLabels)
}

void train(const ProgramOptions& o, examples::ExampleContext& ex) {
  trainer::TrainingArguments& args = ex.args;
  if (o.model.empty()) throw ConfigError("--model is required (a TorchScript file)");
  if (o.trainFiles.empty()) throw ConfigError("--train_files is required (token files)");
  // Everything that can fail alike on every rank comes before the first collective.
  auto trainData = openTokens(o, o.trainFiles);
  auto evalData = o.evalFiles.empty() ? nullptr : openTokens(o, o.evalFiles);
  const dist::DeviceChoice device = dist::chooseDevice(ex.runtime);
  const std::string where =
      device.kind == dist::DeviceKind::kCuda ? "cuda:" + std::to_string(device.index) : "cpu";
  trainer::TrainerParts parts;
  parts.scriptModel = trainer::loadScriptModel(o.model, where);
  parts.trainDataset = trainData;
  parts.evalDataset = evalData;
  parts.shiftLabels = true;  // the windows are labels = input: position t predicts t + 1
  at::manual_seed(static_cast<std::uint64_t>(args.seed()));
  ex.comm = dist::makeCommunicator(ex.runtime, device);
  if (!o.initFrom.empty()) {
    // COLLECTIVE: every rank loads; a failure anywhere stops every rank alike (exit 2/1).
    auto view = trainer::scriptModelAsModule(parts.scriptModel);
    const trainer::LoadWeightsReport r = trainer::loadWeights(*ex.comm, *view, o.initFrom);
    if (ex.rank == 0) {
      COHORT_LOG_INFO("cohort-train: initialised {} tensors from {}", r.tensorsLoaded,
                      o.initFrom);
    }
  }
  trainer::Trainer t(args, *ex.comm, parts);
  COHORT_LOG_INFO("cohort-train: {} train windows of {} tokens{}", trainData->size(), o.seqLen,
                  evalData ? ", " + std::to_string(evalData->size()) + " eval windows" : "");
  const trainer::TrainOutput out = t.train();
  if (out.preempted) return;  // the JIT checkpoint is written; the job is requeued
  double perplexity = NAN;
  if (evalData) perplexity = std::exp(t.evaluate().at("eval_loss"));
  const std::string saved = t.saveModel();
  if (ex.rank == 0) {
    std::printf("cohort-train: %d ranks, %lld steps, train loss %.4f", ex.comm->size(),
                static_cast<long long>(out.globalStep), out.trainingLoss);
    if (evalData) std::printf(", held-out perplexity %.3f", perplexity);
    std::printf("\ncohort-train: weights in %s\n", saved.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> rest(argv, argv + argc);
  ProgramOptions options;
  std::string optionError;
  try {
    options = takeProgramOptions(rest);
  } catch (const ConfigError& e) {
    optionError = e.what();  // reported by runExample's error path, on every rank alike
  }
  int restc = static_cast<int>(rest.size());
  rest.push_back(nullptr);
  return examples::runExample(kProgram, restc, rest.data(), [&](examples::ExampleContext& ex) {
    if (!optionError.empty()) throw ConfigError(optionError);
    train(options, ex);
  });
}
