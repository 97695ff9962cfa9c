// The Trainer's step time with a TorchScript model vs the same model written in C++
// (issue 16): tests/trainer/script/gpt_model.py's GPT (2 blocks, causal attention, tied
// head), exported with torch.jit.script, against a torch::nn twin with the same layers and
// the same initial weights (copied by name, and the first step's losses compared, so both
// runs compute the same thing). Both train through the Trainer (default loss from the
// logits, shiftLabels) on the same in-memory token windows, one rank. Rounds alternate the
// two models; each round runs warm-up steps (TorchScript's profiling executor optimises
// after its first calls) and then timed steps; the median per-step time of each is kept.
//   bench_torchscript_step [--model PATH] [--rounds R] [--steps N] [--threads T]
// Without --model the script model is exported first (/usr/bin/python3 with torch).
// Prints the two step times and, last,
//   BENCH {"torchscript_step_over_cpp": <C++ step time / TorchScript step time>}
// (>= 1: the TorchScript model is at least as fast; the target is >= 0.95).
// scripts/bench dataloader runs it for its torchscript_step_over_cpp key.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <unistd.h>
#include <filesystem>
#include <string>
#include <vector>

#include "cohort/dist/communicator.h"
#include "cohort/dist/device.h"
#include "cohort/dist/runtime.h"
#include "cohort/trainer/script_model.h"
#include "cohort/trainer/trainer.h"

using namespace cohort;

namespace {

constexpr std::int64_t kVocab = 256, kDim = 128, kHeads = 4, kSeq = 128, kBatch = 8;

struct BlockImpl : torch::nn::Module {
  BlockImpl()
      : ln1(register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({kDim})))),
        qkv(register_module("qkv", torch::nn::Linear(kDim, 3 * kDim))),
        proj(register_module("proj", torch::nn::Linear(kDim, kDim))),
        ln2(register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({kDim})))),
        fc(register_module("fc", torch::nn::Linear(kDim, 4 * kDim))),
        out(register_module("out", torch::nn::Linear(4 * kDim, kDim))) {}
  at::Tensor forward(const at::Tensor& x) {
    const std::int64_t b = x.size(0), t = x.size(1), hd = kDim / kHeads;
    auto parts = qkv->forward(ln1->forward(x)).split(kDim, 2);
    auto heads = [&](const at::Tensor& y) { return y.view({b, t, kHeads, hd}).transpose(1, 2); };
    const at::Tensor q = heads(parts[0]), k = heads(parts[1]), v = heads(parts[2]);
    at::Tensor att = at::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(hd));
    const at::Tensor causal = at::ones({t, t}, x.options().dtype(at::kBool)).tril();
    att = att.masked_fill(causal.logical_not(), -INFINITY).softmax(-1);
    const at::Tensor y = at::matmul(att, v).transpose(1, 2).reshape({b, t, kDim});
    const at::Tensor h = x + proj->forward(y);
    return h + out->forward(at::gelu(fc->forward(ln2->forward(h))));
  }
  torch::nn::LayerNorm ln1;
  torch::nn::Linear qkv, proj;
  torch::nn::LayerNorm ln2;
  torch::nn::Linear fc, out;
};
TORCH_MODULE(Block);

// gpt_model.py's Gpt with a tied head, in C++ (the same parameter names).
struct CppGpt : torch::nn::Module {
  CppGpt()
      : wte(register_module("wte", torch::nn::Embedding(kVocab, kDim))),
        wpe(register_module("wpe", torch::nn::Embedding(kSeq, kDim))),
        blocks(register_module("blocks", torch::nn::ModuleList(Block(), Block()))),
        ln_f(register_module("ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({kDim})))) {}
  at::Tensor forward(const at::Tensor& ids) {
    at::Tensor x = wte->forward(ids) + wpe->forward(at::arange(ids.size(1), ids.options()));
    for (const auto& m : *blocks) x = m->as<BlockImpl>()->forward(x);
    return at::linear(ln_f->forward(x), wte->weight);
  }
  torch::nn::Embedding wte, wpe;
  torch::nn::ModuleList blocks;
  torch::nn::LayerNorm ln_f;
};

class Windows : public trainer::Dataset {
 public:
  Windows() {
    at::manual_seed(5);
    data_ = at::randint(0, kVocab, {512, kSeq}, at::kLong);
  }
  std::int64_t size() const override { return data_.size(0); }
  trainer::Sample get(std::int64_t i) const override { return {data_[i], data_[i]}; }

 private:
  at::Tensor data_;
};

trainer::TrainingArguments benchArgs(std::int64_t steps, const std::string& dir) {
  trainer::TrainingArguments a;
  a.set_output_dir(dir);
  a.set_per_device_train_batch_size(kBatch);
  a.set_max_steps(steps);
  a.set_learning_rate(1e-4);
  a.set_save_strategy("no");
  a.set_logging_steps(1000000);
  a.add_report_to("none");
  return a;
}

struct Run {
  double secondsPerStep = 0;
  double warmLoss = 0;  // mean loss of the warm-up steps
};

// Trains `warm` then `steps` steps; returns the timed steps' mean wall time.
Run timeSteps(dist::Communicator& comm, trainer::TrainerParts parts, std::int64_t warm,
              std::int64_t steps, const std::string& dir) {
  Run r;
  {
    parts.callbacks.clear();
    trainer::Trainer w(benchArgs(warm, dir), comm, parts);
    const auto out = w.train();
    r.warmLoss = out.trainingLoss;
  }
  trainer::Trainer t(benchArgs(steps, dir), comm, parts);
  const auto start = std::chrono::steady_clock::now();
  t.train();
  r.secondsPerStep =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() /
      static_cast<double>(steps);
  return r;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string argValue(int argc, char** argv, const std::string& name, const std::string& def) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == "--" + name) return argv[i + 1];
  }
  return def;
}

}  // namespace

int main(int argc, char** argv) {
  auto runtime = dist::init(&argc, &argv);
  const int threads = std::stoi(argValue(argc, argv, "threads", "1"));
  const int rounds = std::stoi(argValue(argc, argv, "rounds", "3"));
  const std::int64_t steps = std::stoll(argValue(argc, argv, "steps", "20"));
  at::set_num_threads(threads);
  const std::string work =
      (std::filesystem::temp_directory_path() / ("cohort_bench_ts_" + std::to_string(getpid())))
          .string();
  std::string modelPath = argValue(argc, argv, "model", "");
  if (modelPath.empty()) {
    modelPath = work + "/model/model.pt";
    const std::string cmd = "/usr/bin/python3 " COHORT_SOURCE_DIR
                            "/tests/trainer/script/gpt_model.py " + work +
                            "/model --dtype float32 --loss none --tokens 1024 --d_model " +
                            std::to_string(kDim) + " --heads " + std::to_string(kHeads) +
                            " --max_len " + std::to_string(kSeq);
    if (std::system(cmd.c_str()) != 0) {
      std::fprintf(stderr, "bench_torchscript_step: cannot export the model (%s)\n", cmd.c_str());
      return 1;
    }
  }
  auto comm = dist::makeCommunicator(*runtime, dist::chooseDevice(*runtime));
  auto data = std::make_shared<Windows>();
  std::vector<double> ts, cpp;
  double lossTs = 0, lossCpp = 0;
  for (int r = 0; r < rounds; ++r) {
    // Fresh models each round, the C++ one with the script model's initial weights.
    auto script = trainer::loadScriptModel(modelPath);
    auto twin = std::make_shared<CppGpt>();
    {
      at::NoGradGuard g;
      auto params = twin->named_parameters();
      for (const auto& p : script->named_parameters()) {
        if (auto* dst = params.find(p.name)) dst->copy_(p.value);
      }
    }
    trainer::TrainerParts sp;
    sp.scriptModel = script;
    sp.trainDataset = data;
    sp.shiftLabels = true;
    trainer::TrainerParts cp;
    cp.model = twin;
    cp.forward = [twin](const trainer::Batch& b) {
      return trainer::ModelOutput{twin->forward(b.input), {}};
    };
    cp.trainDataset = data;
    cp.shiftLabels = true;
    // Alternate which model goes first, so a slow patch of a shared machine hits both.
    Run a, b;
    if (r % 2 == 0) {
      a = timeSteps(*comm, sp, 3, steps, work + "/ts");
      b = timeSteps(*comm, cp, 3, steps, work + "/cpp");
    } else {
      b = timeSteps(*comm, cp, 3, steps, work + "/cpp");
      a = timeSteps(*comm, sp, 3, steps, work + "/ts");
    }
    ts.push_back(a.secondsPerStep);
    cpp.push_back(b.secondsPerStep);
    lossTs = a.warmLoss, lossCpp = b.warmLoss;
  }
  std::filesystem::remove_all(work);
  const double tsStep = median(ts), cppStep = median(cpp);
  std::printf("model: GPT d=%lld, 2 blocks, T=%lld, batch %lld, %d thread(s); warm-up loss "
              "torchscript %.6f, C++ %.6f\n",
              static_cast<long long>(kDim), static_cast<long long>(kSeq),
              static_cast<long long>(kBatch), threads, lossTs, lossCpp);
  std::printf("trainer step: torchscript %.2f ms, C++ %.2f ms (median of %d rounds x %lld steps)\n",
              tsStep * 1e3, cppStep * 1e3, rounds, static_cast<long long>(steps));
  if (std::abs(lossTs - lossCpp) > 1e-4 * std::max(1.0, std::abs(lossCpp))) {
    std::fprintf(stderr, "bench_torchscript_step: the two models differ (loss %.6f vs %.6f)\n",
                 lossTs, lossCpp);
    return 1;
  }
  std::printf("BENCH {\"torchscript_step_over_cpp\": %.3f}\n", cppStep / tsStep);
  comm.reset();
  return 0;
}
