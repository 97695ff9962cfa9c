// What the Trainer costs over a hand-written loop: steps/s of train_lm's ByteLm (default
// LmConfig) on the train split of /usr/share/common-licenses, one process, one thread,
// per-device batch 8, AdamW (lr 3e-3, weight decay 0.01 except biases and norms), global
// gradient clipping at 1.0, linear schedule without warmup:
//   trainer      cohort::trainer::Trainer (report_to none)
//   handwritten  the minimal LibTorch loop a user would write instead: torch::optim::AdamW,
//                token-mean loss, clip_grad_norm_, the same batches in the same order
//                (GlobalBatchPlan, as the Trainer's loader) and the same initial weights.
// Both run in the same process, alternating (A B, then B A, ...), after --warm-runs untimed
// pairs (default 1) that take the process's cold start out of the first measured run.
// Steps/s is measured from the end of warmup step W to the end of the last step. Prints per
// run:
//   RATE trainer|handwritten <steps/s> <measured steps> <tokens in measured steps>
//   LOSS trainer|handwritten <mean loss over all steps>
//   CPU trainer|handwritten <process CPU ms per step over the whole run, set-up included>
//   PHASES trainer|handwritten <phase>=<ms per step> ... (TrainOutput::phaseSeconds; the
//          loop times the same phases: data, forward_backward, clip, optimizer)
// and once: CHECK param_max_abs_diff <max |p_trainer - p_handwritten| after the first pair>.
// --dump-order FILE writes the batches (train-split indices, one step per line) for the
// PyTorch baseline (bench/trainer_overhead_pytorch.py) and exits.
// scripts/bench trainer_overhead runs it next to that baseline.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/optim/adamw.h>
// torch/types.h first: clip_grad.h does not include what it uses.
// clang-format off
#include <torch/types.h>
#include <torch/nn/utils/clip_grad.h>
// clang-format on

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "cohort/dist/device.h"
#include "cohort/dist/runtime.h"
#include "cohort/trainer/training_args.h"
#include "lm_model.h"

using namespace cohort;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::int64_t kBatch = 8;
constexpr double kLr = 3e-3;
constexpr double kWeightDecay = 0.01;
constexpr double kMaxGradNorm = 1.0;
constexpr std::uint64_t kDataSeed = 42;
constexpr std::uint64_t kInitSeed = 0;

struct Options {
  int steps = 100;  // measured
  int warmup = 10;
  int repeats = 2;  // pairs of runs
  int warmRuns = 1;  // untimed pairs first: the process's first run pays its cold start
  std::string dumpOrder;
  std::string only;  // "trainer" or "handwritten": one variant (for profiling the process)
};

struct Run {
  std::vector<Clock::time_point> stepEnds;  // one per step
  std::shared_ptr<torch::nn::Module> model;
  double meanLoss = 0.0;                       // over all steps
  std::map<std::string, double> phaseSeconds;  // summed over all steps (warmup included)
  double cpuSeconds = 0.0;  // the process's user + system CPU time over the whole run
};

// The process's CPU time so far (user + system, all threads). Unlike wall time it barely
// moves when other processes compete for the cores, so it still compares A and B on a busy
// machine (where wall-time ratios swing by 2x between runs).
double processCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  const auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec * 1e-6; };
  return sec(u.ru_utime) + sec(u.ru_stime);
}

template <typename F>
Run timedCpu(F&& runOnce) {
  const double c0 = processCpuSeconds();
  Run r = runOnce();
  r.cpuSeconds = processCpuSeconds() - c0;
  return r;
}

// The hand-written loop's phases, named as the Trainer's (TrainOutput::phaseSeconds).
class Laps {
 public:
  Laps() : last_(Clock::now()) {}
  void lap(const char* phase, std::map<std::string, double>& into) {
    const auto now = Clock::now();
    into[phase] += std::chrono::duration<double>(now - last_).count();
    last_ = now;
  }

 private:
  Clock::time_point last_;
};

double stepsPerSecond(const Run& r, int warmup) {
  const auto& t = r.stepEnds;
  const double sec = std::chrono::duration<double>(t.back() - t[warmup - 1]).count();
  return static_cast<double>(t.size() - static_cast<std::size_t>(warmup)) / sec;
}

// HF's rule, as the Trainer's default: no decay for biases and normalisation weights.
bool decays(const std::string& name) {
  return name.find("bias") == std::string::npos && name.find("norm") == std::string::npos &&
         name.find("ln") == std::string::npos;
}

class StepTimer : public trainer::TrainerCallback {
 public:
  explicit StepTimer(std::vector<Clock::time_point>& out) : out_(out) {}
  void onStepEnd(const trainer::TrainerState&, trainer::TrainerControl&) override {
    out_.push_back(Clock::now());
  }

 private:
  std::vector<Clock::time_point>& out_;
};

Run runTrainer(const std::shared_ptr<examples::ByteTextDataset>& data, int totalSteps,
               dist::Communicator& comm,
               std::shared_ptr<trainer::TrainerCallback> extra = nullptr) {
  at::manual_seed(kInitSeed);
  examples::ByteLm model{examples::LmConfig{}};
  trainer::TrainingArguments args;
  args.set_output_dir(
      (std::filesystem::temp_directory_path() / "cohort_trainer_overhead").string());
  args.set_per_device_train_batch_size(kBatch);
  args.set_learning_rate(kLr);
  args.set_weight_decay(kWeightDecay);
  args.set_max_grad_norm(kMaxGradNorm);
  args.set_lr_scheduler_type("linear");
  args.set_max_steps(totalSteps);
  args.add_report_to("none");
  args.set_seed(static_cast<std::int64_t>(kDataSeed));
  args.set_save_strategy("no");
  Run run;
  trainer::TrainerParts parts;
  parts.model = model.ptr();
  parts.forward = [&](const trainer::Batch& b) {
    return trainer::ModelOutput{model->forward(b.input), {}};
  };
  parts.trainDataset = data;
  parts.shiftLabels = true;
  parts.callbacks.push_back(std::make_shared<StepTimer>(run.stepEnds));
  if (extra) parts.callbacks.push_back(std::move(extra));
  trainer::Trainer t(args, comm, parts);
  const trainer::TrainOutput out = t.train();
  run.meanLoss = out.trainingLoss;
  run.phaseSeconds = out.phaseSeconds;
  run.model = model.ptr();
  return run;
}

// The hand-written loop, one step at a time: runHandwritten runs it alone, the lockstep run
// calls step() from the Trainer's onStepEnd.
class Handwritten {
 public:
  Handwritten(const std::shared_ptr<examples::ByteTextDataset>& data, int totalSteps)
      : data_(data),
        totalSteps_(totalSteps),
        plan_(data->size(), kBatch, 1, 1, false, kDataSeed, true),
        order_(plan_.epochOrder(0)) {
    at::manual_seed(kInitSeed);
    model_ = examples::ByteLm{examples::LmConfig{}};
    model_->train();
    std::vector<at::Tensor> decay, noDecay;
    for (const auto& item : model_->named_parameters()) {
      (decays(item.key()) ? decay : noDecay).push_back(item.value());
      all_.push_back(item.value());
    }
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                   torch::optim::AdamWOptions(kLr).weight_decay(kWeightDecay)));
    groups.emplace_back(noDecay, std::make_unique<torch::optim::AdamWOptions>(
                                     torch::optim::AdamWOptions(kLr).weight_decay(0.0)));
    optimizer_ = std::make_unique<torch::optim::AdamW>(std::move(groups));
  }

  void step(int step, Run& run) {
    Laps laps;
    std::vector<trainer::Sample> samples;
    for (std::int64_t i : plan_.microIndices(order_, step, 0, 0)) samples.push_back(data_->get(i));
    trainer::Batch b = trainer::defaultCollate(samples);
    laps.lap("data", run.phaseSeconds);
    const double lr = kLr * std::max(0.0, static_cast<double>(totalSteps_ - step) / totalSteps_);
    for (auto& g : optimizer_->param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    }
    optimizer_->zero_grad();
    at::Tensor logits = model_->forward(b.input);
    const std::int64_t T = logits.size(1);
    at::Tensor target = b.labels.narrow(1, 1, T - 1).reshape({-1});
    at::Tensor loss =
        at::cross_entropy_loss(logits.narrow(1, 0, T - 1).reshape({-1, logits.size(-1)}), target,
                               {}, at::Reduction::Sum, -100) /
        target.ne(-100).sum();
    loss.backward();
    lossSum_ += loss.item<double>();
    laps.lap("forward_backward", run.phaseSeconds);
    torch::nn::utils::clip_grad_norm_(all_, kMaxGradNorm);
    laps.lap("clip", run.phaseSeconds);
    optimizer_->step();
    laps.lap("optimizer", run.phaseSeconds);
  }

  void finish(Run& run) const {
    run.meanLoss = lossSum_ / totalSteps_;
    run.model = model_.ptr();
  }

 private:
  std::shared_ptr<examples::ByteTextDataset> data_;
  int totalSteps_;
  trainer::GlobalBatchPlan plan_;
  std::vector<std::int64_t> order_;
  examples::ByteLm model_{nullptr};
  std::vector<at::Tensor> all_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  double lossSum_ = 0.0;
};

Run runHandwritten(const std::shared_ptr<examples::ByteTextDataset>& data, int totalSteps) {
  Handwritten loop(data, totalSteps);
  Run run;
  for (int step = 0; step < totalSteps; ++step) {
    loop.step(step, run);
    run.stepEnds.push_back(Clock::now());
  }
  loop.finish(run);
  return run;
}

// Lockstep: one Trainer run whose onStepEnd runs the hand-written loop's step of the same
// index, so the two alternate step by step (A B A B ... within milliseconds). Load from other
// processes, CPU frequency and the process's heap then weigh on both alike, where whole runs
// seconds apart here differ by up to 1.5x. The Trainer's step is the time from the end of one
// callback to the start of the next (its data, step and bookkeeping); the hand-written step is
// the callback's own time.
class Lockstep : public trainer::TrainerCallback {
 public:
  Lockstep(Handwritten& loop, Run& handRun, std::vector<double>& trainerSec,
           std::vector<double>& handSec)
      : loop_(loop), handRun_(handRun), trainerSec_(trainerSec), handSec_(handSec) {}
  void onTrainBegin(const trainer::TrainerState&, trainer::TrainerControl&) override {
    last_ = Clock::now();
  }
  void onStepEnd(const trainer::TrainerState&, trainer::TrainerControl&) override {
    const auto t0 = Clock::now();
    trainerSec_.push_back(std::chrono::duration<double>(t0 - last_).count());
    loop_.step(step_++, handRun_);
    last_ = Clock::now();
    handSec_.push_back(std::chrono::duration<double>(last_ - t0).count());
  }

 private:
  Handwritten& loop_;
  Run& handRun_;
  std::vector<double>& trainerSec_;
  std::vector<double>& handSec_;
  Clock::time_point last_;
  int step_ = 0;
};

std::int64_t tokensIn(const examples::ByteTextDataset& data, int fromStep, int toStep) {
  trainer::GlobalBatchPlan plan(data.size(), kBatch, 1, 1, false, kDataSeed, true);
  const std::vector<std::int64_t> order = plan.epochOrder(0);
  std::int64_t tokens = 0;
  for (int s = fromStep; s < toStep; ++s) {
    for (std::int64_t i : plan.microIndices(order, s, 0, 0)) tokens += data.get(i).input.numel();
  }
  return tokens;
}

void dumpOrder(const examples::ByteTextDataset& data, int totalSteps, std::int64_t corpusBytes,
               std::int64_t allChunks, const std::string& path) {
  trainer::GlobalBatchPlan plan(data.size(), kBatch, 1, 1, false, kDataSeed, true);
  const std::vector<std::int64_t> order = plan.epochOrder(0);
  std::ofstream out(path);
  // Header: what the baseline must reproduce from the corpus before it trusts the indices.
  out << "corpus_bytes " << corpusBytes << " chunks " << allChunks << " train " << data.size()
      << "\n";
  for (int s = 0; s < totalSteps; ++s) {
    const std::vector<std::int64_t> idx = plan.microIndices(order, s, 0, 0);
    for (std::size_t k = 0; k < idx.size(); ++k) out << (k ? " " : "") << idx[k];
    out << "\n";
  }
  if (!out) throw ConfigError("cannot write " + path);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--steps") {
      o.steps = std::atoi(argv[i + 1]);
    } else if (flag == "--warmup") {
      o.warmup = std::atoi(argv[i + 1]);
    } else if (flag == "--repeats") {
      o.repeats = std::atoi(argv[i + 1]);
    } else if (flag == "--dump-order") {
      o.dumpOrder = argv[i + 1];
    } else if (flag == "--warm-runs") {
      o.warmRuns = std::atoi(argv[i + 1]);
    } else if (flag == "--only") {
      o.only = argv[i + 1];
      if (o.only != "trainer" && o.only != "handwritten" && o.only != "lockstep") {
        throw ConfigError("--only takes trainer, handwritten or lockstep");
      }
    } else {
      throw ConfigError("unknown option " + flag +
                        " (--steps N --warmup W --repeats R --dump-order FILE --warm-runs N "
                        "--only trainer|handwritten|lockstep)");
    }
  }
  if (o.steps < 1 || o.warmup < 1 || o.repeats < 1 || o.warmRuns < 0) {
    throw ConfigError("--steps, --warmup and --repeats must be >= 1");
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  std::unique_ptr<dist::Runtime> rt;
  std::unique_ptr<dist::Communicator> comm;
  try {
    at::set_num_threads(1);
    rt = dist::init(&argc, &argv);
    const Options o = parse(argc, argv);
    if (rt->worldSize() != 1) throw ConfigError("bench_trainer_overhead runs as ONE process");
    const std::string text = examples::readCorpus();
    const examples::LmConfig cfg;
    examples::ByteTextDataset all(text, cfg.maxLen);
    const std::int64_t split = all.size() * 9 / 10;  // train_lm's split
    auto train = all.slice(0, split);
    const int total = o.warmup + o.steps;
    if (!o.dumpOrder.empty()) {
      dumpOrder(*train, total, static_cast<std::int64_t>(text.size()), all.size(), o.dumpOrder);
      return 0;
    }
    dist::DeviceChoice cpu;
    comm = dist::makeCommunicator(*rt, cpu);
    const std::int64_t tokens = tokensIn(*train, o.warmup, total);
    if (o.only == "lockstep") {
      // The first run of a process pays its cold start: one untimed lockstep run per --warm-runs.
      for (int r = -o.warmRuns; r < o.repeats; ++r) {
        std::vector<double> trainerSec, handSec;
        Handwritten loop(train, total);
        Run hand;
        runTrainer(train, total, *comm,
                   std::make_shared<Lockstep>(loop, hand, trainerSec, handSec));
        if (r < 0) continue;
        double ta = 0.0, tb = 0.0;
        std::vector<double> ratios;  // per step: hand-written time / Trainer time
        for (std::size_t i = static_cast<std::size_t>(o.warmup); i < trainerSec.size(); ++i) {
          ta += trainerSec[i];
          tb += handSec[i];
          ratios.push_back(handSec[i] / trainerSec[i]);
        }
        std::nth_element(ratios.begin(), ratios.begin() + ratios.size() / 2, ratios.end());
        // LOCKSTEP <Trainer ms/step> <hand-written ms/step> <median over steps of hand / Trainer>
        std::printf("LOCKSTEP %.4f %.4f %.4f\n", ta * 1e3 / o.steps, tb * 1e3 / o.steps,
                    ratios[ratios.size() / 2]);
        std::fflush(stdout);
      }
      comm.reset();
      return 0;
    }
    if (!o.only.empty()) {  // one variant, for perf stat/record of the whole process
      for (int r = 0; r < o.repeats; ++r) {
        const Run x =
            o.only == "trainer" ? runTrainer(train, total, *comm) : runHandwritten(train, total);
        std::printf("RATE %s %.4f %d %lld\n", o.only.c_str(), stepsPerSecond(x, o.warmup), o.steps,
                    static_cast<long long>(tokens));
      }
      comm.reset();
      return 0;
    }
    // The first run in a process is slower whatever it runs (the heap grows, pages are
    // first touched, lazy symbols bind; one launch here: 0.80 for its first pair, 0.98-1.11
    // for the next three). The A B, B A order would charge that to the Trainer in every
    // launch, so both variants run once, untimed, first.
    for (int r = 0; r < o.warmRuns; ++r) {
      runTrainer(train, total, *comm);
      runHandwritten(train, total);
    }
    for (int r = 0; r < o.repeats; ++r) {
      Run a, b;
      if (r % 2 == 0) {
        a = timedCpu([&] { return runTrainer(train, total, *comm); });
        b = timedCpu([&] { return runHandwritten(train, total); });
      } else {
        b = timedCpu([&] { return runHandwritten(train, total); });
        a = timedCpu([&] { return runTrainer(train, total, *comm); });
      }
      std::printf("RATE trainer %.4f %d %lld\n", stepsPerSecond(a, o.warmup), o.steps,
                  static_cast<long long>(tokens));
      std::printf("RATE handwritten %.4f %d %lld\n", stepsPerSecond(b, o.warmup), o.steps,
                  static_cast<long long>(tokens));
      std::printf("LOSS trainer %.6f\nLOSS handwritten %.6f\n", a.meanLoss, b.meanLoss);
      std::printf("CPU trainer %.4f\nCPU handwritten %.4f\n", a.cpuSeconds * 1e3 / total,
                  b.cpuSeconds * 1e3 / total);
      for (const auto& [name, run] : {std::pair{"trainer", &a}, std::pair{"handwritten", &b}}) {
        std::printf("PHASES %s", name);  // ms per step
        for (const auto& [phase, sec] : run->phaseSeconds) {
          std::printf(" %s=%.4f", phase.c_str(), sec * 1e3 / total);
        }
        std::printf("\n");
      }
      if (r == 0) {
        // Same initial weights, batches and update rule: the trained weights agree up to
        // float32 rounding (FusedOptimizer vs torch::optim::AdamW).
        at::NoGradGuard noGrad;
        double diff = 0.0;
        const auto pa = a.model->named_parameters(), pb = b.model->named_parameters();
        for (const auto& item : pa) {
          diff = std::max(diff, (item.value() - pb[item.key()]).abs().max().item<double>());
        }
        std::printf("CHECK param_max_abs_diff %.3g after %d steps\n", diff, total);
      }
      std::fflush(stdout);
    }
    comm.reset();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_trainer_overhead: %s\n", e.what());
    if (comm) comm->abort(e.what());
    return trainer::exitCodeFor(e);
  }
}
