// A small float64 Trainer run for the checkpoint and preemption tests: a 2-layer MLP
// classifier (with a buffer, so non-parameter state is checkpointed too) on a synthetic
// dataset. TrainingArguments come from the command line as in the examples; the probe's
// own flags are:
//   --probe-out=PATH        rank 0 writes the final parameters and the log history there
//   --probe-stop-at=N       stop after optimizer step N (a callback sets should_stop)
//   --probe-metrics=a,b,... the k-th evaluation reports eval_score = the k-th value
//   --probe-ballast-mb=M    an extra M MiB buffer (slow, large saves)
//   --probe-ballast-param-mb=M  an extra M MiB trainable parameter (scales the logits by
//                           1 + 1e-3 * its mean), so weights and Adam moments are large:
//                           async saves then race the next optimizer step. Parameters this
//                           large are written to --probe-out as two weighted sums.
//   --probe-step-ms=T       sleep T ms in every forward (time for signals to land)
//   --probe-pid-dir=DIR     each rank writes DIR/rank-<r>.pid (for tests that kill one) and
//                           keeps DIR/phase-<r> holding one letter: D (loading a training
//                           sample), F (training forward), E (evaluation)
//   --probe-data-ms=T       sleep T ms per training/eval sample fetched
//   --probe-throw-at=S:R    rank R throws in the forward of step S
//   --probe-hang-at=S:R     rank R stops (sleeps forever) in the forward of step S
//   --probe-kill-at=S:R     rank R SIGKILLs itself in the forward of step S, only in the first
//                           attempt of a `cohort run --max-restarts` job (COHORT_RESTART_COUNT)
#include <ATen/ATen.h>
#include <fcntl.h>
#include <signal.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cohort/dist/device.h"
#include "cohort/trainer/evaluation.h"
#include "cohort/trainer/trainer.h"
#include "example_main.h"

using namespace cohort;

namespace {

struct ProbeFlags {
  std::string out;
  std::int64_t stopAt = -1;
  std::vector<double> metrics;
  std::int64_t ballastMb = 0, ballastParamMb = 0;
  std::int64_t stepMs = 0;
  std::string pidDir;
  std::int64_t dataMs = 0;
  std::int64_t throwStep = -1, throwRank = -1, hangStep = -1, hangRank = -1;
  std::int64_t killStep = -1, killRank = -1;
};

void stepAndRank(const char* v, std::int64_t& step, std::int64_t& rank) {
  const std::string s = v;
  const auto colon = s.find(':');
  step = std::stoll(s.substr(0, colon));
  rank = colon == std::string::npos ? 0 : std::stoll(s.substr(colon + 1));
}

// One letter at offset 0 of a per-rank file: what the probe is doing (for chaos tests).
class PhaseFile {
 public:
  void open(const std::string& path) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  }
  void set(char c) const {
    if (fd_ >= 0) (void)!::pwrite(fd_, &c, 1, 0);
  }

 private:
  int fd_ = -1;
};
PhaseFile gPhase;

// Removes the probe's flags from argv (the rest are TrainingArguments).
ProbeFlags takeFlags(int& argc, char** argv) {
  ProbeFlags f;
  int w = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* name) -> const char* {
      const std::size_t n = std::strlen(name);
      return a.compare(0, n, name) == 0 ? argv[i] + n : nullptr;
    };
    if (const char* v = value("--probe-out=")) {
      f.out = v;
    } else if (const char* v = value("--probe-stop-at=")) {
      f.stopAt = std::stoll(v);
    } else if (const char* v = value("--probe-ballast-mb=")) {
      f.ballastMb = std::stoll(v);
    } else if (const char* v = value("--probe-ballast-param-mb=")) {
      f.ballastParamMb = std::stoll(v);
    } else if (const char* v = value("--probe-step-ms=")) {
      f.stepMs = std::stoll(v);
    } else if (const char* v = value("--probe-data-ms=")) {
      f.dataMs = std::stoll(v);
    } else if (const char* v = value("--probe-throw-at=")) {
      stepAndRank(v, f.throwStep, f.throwRank);
    } else if (const char* v = value("--probe-kill-at=")) {
      const char* attempt = std::getenv("COHORT_RESTART_COUNT");
      if (attempt == nullptr || std::string(attempt) == "0") stepAndRank(v, f.killStep, f.killRank);
    } else if (const char* v = value("--probe-hang-at=")) {
      stepAndRank(v, f.hangStep, f.hangRank);
    } else if (const char* v = value("--probe-pid-dir=")) {
      f.pidDir = v;
    } else if (const char* v = value("--probe-metrics=")) {
      std::stringstream ss(v);
      std::string item;
      while (std::getline(ss, item, ',')) f.metrics.push_back(std::stod(item));
    } else {
      argv[w++] = argv[i];
    }
  }
  argc = w;
  argv[argc] = nullptr;
  return f;
}

constexpr std::int64_t kIn = 6, kHidden = 16, kClasses = 4;

// Sample i: x_j = sin(0.37 i + 1.3 j) (+ a little structure), label from a fixed projection.
class SyntheticDataset : public trainer::Dataset {
 public:
  SyntheticDataset(std::int64_t n, std::int64_t offset, std::int64_t sleepMs, char phase)
      : n_(n), offset_(offset), sleepMs_(sleepMs), phase_(phase) {}
  std::int64_t size() const override { return n_; }
  trainer::Sample get(std::int64_t index) const override {
    gPhase.set(phase_);
    if (sleepMs_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(sleepMs_));
    const double i = static_cast<double>(index + offset_);
    at::Tensor x = at::empty({kIn}, at::kDouble);
    auto* p = x.data_ptr<double>();
    double best = -1e9;
    std::int64_t label = 0;
    for (std::int64_t j = 0; j < kIn; ++j) p[j] = std::sin(0.37 * i + 1.3 * static_cast<double>(j));
    for (std::int64_t c = 0; c < kClasses; ++c) {
      double s = 0;
      for (std::int64_t j = 0; j < kIn; ++j) s += p[j] * std::cos(static_cast<double>(c * kIn + j));
      if (s > best) best = s, label = c;
    }
    return {x, at::full({1}, label, at::kLong)};
  }

 private:
  std::int64_t n_, offset_, sleepMs_;
  char phase_;
};

struct ProbeNetImpl : torch::nn::Module {
  ProbeNetImpl(std::int64_t ballastMb, std::int64_t ballastParamMb) {
    fc1 = register_module("fc1", torch::nn::Linear(kIn, kHidden));
    fc2 = register_module("fc2", torch::nn::Linear(kHidden, kClasses));
    scale = register_buffer("scale", at::full({kClasses}, 1.5, at::kDouble));
    if (ballastMb > 0) {
      ballast = register_buffer("ballast", at::arange(ballastMb * (1 << 17), at::kDouble));
    }
    if (ballastParamMb > 0) {
      const std::int64_t n = ballastParamMb * (1 << 17);
      ballastParam = register_parameter(
          "ballast_w", at::arange(n, at::kDouble).div_(static_cast<double>(n)).sub_(0.5));
    }
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor y = fc2->forward(at::tanh(fc1->forward(x))) * scale;
    if (ballastParam.defined()) y = y * (1.0 + 1e-3 * ballastParam.mean());
    return y;
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  at::Tensor scale, ballast, ballastParam;
};
TORCH_MODULE(ProbeNet);

struct StopAt : trainer::TrainerCallback {
  std::int64_t step;
  std::shared_ptr<std::int64_t> done;  // completed steps, read by the forward
  StopAt(std::int64_t s, std::shared_ptr<std::int64_t> d) : step(s), done(std::move(d)) {}
  void onTrainBegin(const trainer::TrainerState& st, trainer::TrainerControl&) override {
    *done = st.globalStep;
  }
  void onStepEnd(const trainer::TrainerState& st, trainer::TrainerControl& c) override {
    *done = st.globalStep;
    if (st.globalStep == step) c.shouldStop = true;
  }
};

void writeProbe(const std::string& path, torch::nn::Module& model, const trainer::TrainerState& st,
                const trainer::TrainOutput& result) {
  std::ofstream out(path);
  char buf[64];
  for (const auto& p : model.named_parameters()) {
    out << "param " << p.key();
    if (p.value().numel() > (1 << 20)) {  // a ballast: two weighted sums stand for it
      const at::Tensor t = p.value().detach().reshape({-1}).to(at::kDouble);
      const at::Tensor w = at::arange(t.numel(), at::kLong).remainder(7).add(1).to(at::kDouble);
      std::snprintf(buf, sizeof buf, " %.17g", t.mul(w).sum().item<double>());
      out << buf;
      std::snprintf(buf, sizeof buf, " %.17g", t.mul(t).sum().item<double>());
      out << buf << "\n";
      continue;
    }
    const at::Tensor t = p.value().detach().contiguous().to(at::kDouble);
    for (std::int64_t i = 0; i < t.numel(); ++i) {
      std::snprintf(buf, sizeof buf, " %.17g", t.data_ptr<double>()[i]);
      out << buf;
    }
    out << "\n";
  }
  for (const auto& e : st.logHistory) {
    for (const char* key : {"loss", "eval_loss", "eval_score"}) {
      auto it = e.values.find(key);
      if (it == e.values.end()) continue;
      std::snprintf(buf, sizeof buf, "%.17g", it->second);
      out << "log " << key << " " << e.step << " " << buf << "\n";
    }
  }
  for (const auto& [k, v] : result.metrics) out << "metric " << k << " " << v << "\n";
  out << "final_step " << st.globalStep << "\n";
  out << "resumed_from " << (st.resumedFrom.empty() ? "-" : st.resumedFrom) << "\n";
  out << "best " << (st.bestModelCheckpoint.empty() ? "-" : st.bestModelCheckpoint) << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  const ProbeFlags flags = takeFlags(argc, argv);
  const trainer::ProgramInfo program{"train_probe", "The checkpoint tests' small Trainer run.", ""};
  return examples::runExample(program, argc, argv, [&](examples::ExampleContext& ex) {
    ex.comm = dist::makeCommunicator(ex.runtime, dist::chooseDevice(ex.runtime));
    if (!flags.pidDir.empty()) {
      gPhase.open(flags.pidDir + "/phase-" + std::to_string(ex.rank));
      std::ofstream(flags.pidDir + "/rank-" + std::to_string(ex.rank) + ".pid")
          << ::getpid() << "\n";
    }
    at::manual_seed(static_cast<std::uint64_t>(ex.args.seed()));
    ProbeNet model(flags.ballastMb, flags.ballastParamMb);
    model->to(at::kDouble);
    trainer::TrainerParts parts;
    parts.model = model.ptr();
    auto done = std::make_shared<std::int64_t>(0);
    const int rank = ex.rank;
    parts.forward = [&model, &flags, done, rank](const trainer::Batch& b) {
      if (model->is_training()) {
        gPhase.set('F');
        const std::int64_t step = *done + 1;
        if (step == flags.throwStep && rank == flags.throwRank) {
          throw std::runtime_error("probe: bad batch in step " + std::to_string(step));
        }
        if (step == flags.killStep && rank == flags.killRank) ::kill(::getpid(), SIGKILL);
        if (step == flags.hangStep && rank == flags.hangRank) {
          for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
        }
      }
      if (flags.stepMs > 0) std::this_thread::sleep_for(std::chrono::milliseconds(flags.stepMs));
      return trainer::ModelOutput{model->forward(b.input), {}};
    };
    parts.trainDataset = std::make_shared<SyntheticDataset>(96, 0, flags.dataMs, 'D');
    parts.evalDataset = std::make_shared<SyntheticDataset>(24, 1000, flags.dataMs, 'E');
    parts.evalLoss = [](const trainer::ModelOutput& o, const at::Tensor& labels) {
      return trainer::perSampleCrossEntropy(o, labels.reshape({-1}), false);
    };
    auto evals = std::make_shared<std::size_t>(0);
    const std::vector<double> seq = flags.metrics;
    if (!seq.empty()) {
      parts.computeMetrics = [evals, seq](const trainer::EvalPrediction&) {
        const double v = seq[std::min(*evals, seq.size() - 1)];
        ++*evals;
        return std::map<std::string, double>{{"score", v}};
      };
    }
    parts.callbacks.push_back(std::make_shared<StopAt>(flags.stopAt, done));
    trainer::Trainer t(ex.args, *ex.comm, parts);
    const trainer::TrainOutput out = t.train();
    if (ex.rank == 0 && !flags.out.empty()) writeProbe(flags.out, *model, t.state(), out);
    if (ex.rank == 0 && out.preempted)
      std::printf("probe: preempted at step %lld, %s\n", static_cast<long long>(out.globalStep),
                  out.checkpoint.c_str());
  });
}
