// weights_probe: fine-tuning from pretrained weights as a user's program does it. Builds a
// small float32 MLP (nested names fc1.weight ..., and a buffer "scale"), loads the weights
// named by init=PATH (collective loadWeights: a bad file is one "config error:" line and
// exit 2 on every rank, before the Trainer exists), trains with the TrainingArguments of the
// command line, then saveModel() (output_dir/model.safetensors). Run by
// weights_finetune_test.sh.
// Positional arguments: init=PATH, prefix=FROM=TO (a prefix-map entry), lenient
// (strict = false).
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <cmath>
#include <cstdio>
#include <exception>
#include <memory>

#include "cohort/dist/device.h"
#include "cohort/dist/runtime.h"
#include "cohort/trainer/trainer.h"
#include "cohort/trainer/training_args.h"
#include "cohort/trainer/weights.h"

namespace {

namespace ct = cohort::trainer;

struct Lin : torch::nn::Module {
  Lin(std::int64_t in, std::int64_t out) {
    weight = register_parameter("weight", at::randn({out, in}) * 0.3);
    bias = register_parameter("bias", at::zeros({out}));
  }
  at::Tensor forward(const at::Tensor& x) { return at::addmm(bias, x, weight.t()); }
  at::Tensor weight, bias;
};

struct Net : torch::nn::Module {
  Net() {
    fc1 = register_module("fc1", std::make_shared<Lin>(6, 8));
    fc2 = register_module("fc2", std::make_shared<Lin>(8, 3));
    scale = register_buffer("scale", at::ones({3}));
  }
  at::Tensor forward(const at::Tensor& x) {
    return fc2->forward(at::tanh(fc1->forward(x))) * scale;
  }
  std::shared_ptr<Lin> fc1, fc2;
  at::Tensor scale;
};

class Features : public ct::Dataset {
 public:
  std::int64_t size() const override { return 37; }
  ct::Sample get(std::int64_t i) const override {
    at::Tensor x = at::empty({6}, at::kFloat);
    for (int f = 0; f < 6; ++f) x[f] = std::sin(0.31 * static_cast<double>(i) + 0.9 * f);
    return {x, at::scalar_tensor((i * 5 + 1) % 3, at::kLong)};
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::unique_ptr<cohort::dist::Runtime> rt;
  try {
    rt = cohort::dist::init(&argc, &argv);
  } catch (const std::exception& e) {
    return ct::reportFatalError(e, 0);
  }
  const int rank = rt->rank();
  try {
    const ct::ProgramInfo program{"weights_probe", "Fine-tunes a small MLP from a weights file.",
                                  "[init=PATH] [prefix=FROM=TO] [lenient]"};
    const ct::CommandLine cl = ct::parseTrainingArgs(argc, argv, program);
    std::string init;
    ct::LoadWeightsOptions lo;
    for (const auto& p : cl.positional) {
      if (p.rfind("init=", 0) == 0) {
        init = p.substr(5);
      } else if (p.rfind("prefix=", 0) == 0 && p.find('=', 7) != std::string::npos) {
        const std::size_t eq = p.find('=', 7);
        lo.prefixMap[p.substr(7, eq - 7)] = p.substr(eq + 1);
      } else if (p == "lenient") {
        lo.strict = false;
      } else {
        throw cohort::ConfigError("weights_probe: unknown argument '" + p + "'");
      }
    }
    ct::logWarnings(ct::validate(cl.args, {true, false}), rank);
    auto comm = cohort::dist::makeCommunicator(*rt, cohort::dist::chooseDevice(*rt));
    at::manual_seed(1234);
    auto net = std::make_shared<Net>();
    if (!init.empty()) {
      const ct::LoadWeightsReport r = ct::loadWeights(*comm, *net, init, lo);
      if (rank == 0) std::printf("loaded %lld tensors\n", static_cast<long long>(r.tensorsLoaded));
    }
    ct::TrainerParts parts;
    parts.model = net;
    parts.forward = [net](const ct::Batch& b) {
      return ct::ModelOutput{net->forward(b.input), {}};
    };
    parts.trainDataset = std::make_shared<Features>();
    ct::Trainer trainer(cl.args, *comm, parts);
    const ct::TrainOutput out = trainer.train();
    const std::string file = trainer.saveModel();
    if (rank == 0) {
      std::printf("OK steps %lld, saved %s\n", static_cast<long long>(out.globalStep),
                  file.c_str());
    }
    return 0;
  } catch (const std::exception& e) {
    return ct::reportFatalError(e, rank);
  }
}
