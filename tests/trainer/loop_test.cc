// The trainer's loop area: schedules, the global batch plan, the data loader's workers,
// NEFTune, logging cadence and values.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "cohort/dist/error.h"
#include "cohort/trainer/data.h"
#include "cohort/trainer/neftune.h"
#include "cohort/trainer/schedule.h"
#include "cohort/trainer/trainer.h"
#include "cohort/trainer/training_args.h"
#include "lm_model.h"
#include "test_util.h"

namespace cohort::test {
namespace {

using namespace cohort::trainer;

TEST(UnitSchedule, ShapesMatchHuggingFace) {
  // 10 steps, 2 warmup.
  EXPECT_DOUBLE_EQ(lrMultiplier("linear", 0, 2, 10), 0.0);
  EXPECT_DOUBLE_EQ(lrMultiplier("linear", 1, 2, 10), 0.5);
  EXPECT_DOUBLE_EQ(lrMultiplier("linear", 2, 2, 10), 1.0);
  EXPECT_DOUBLE_EQ(lrMultiplier("linear", 6, 2, 10), 0.5);
  EXPECT_DOUBLE_EQ(lrMultiplier("linear", 10, 2, 10), 0.0);
  EXPECT_DOUBLE_EQ(lrMultiplier("cosine", 2, 2, 10), 1.0);
  EXPECT_NEAR(lrMultiplier("cosine", 6, 2, 10), 0.5, 1e-12);
  EXPECT_NEAR(lrMultiplier("cosine", 10, 2, 10), 0.0, 1e-12);
  EXPECT_DOUBLE_EQ(lrMultiplier("constant", 0, 2, 10), 1.0);
  EXPECT_DOUBLE_EQ(lrMultiplier("constant_with_warmup", 1, 2, 10), 0.5);
  EXPECT_DOUBLE_EQ(lrMultiplier("constant_with_warmup", 9, 2, 10), 1.0);
  EXPECT_THROW(lrMultiplier("triangle", 0, 2, 10), ConfigError);
  EXPECT_EQ(warmupStepsFor(0, 0.1, 95), 10);
  EXPECT_EQ(warmupStepsFor(3, 0.5, 95), 3);
}

// Every sample of an epoch is used exactly once per epoch, whatever the world size, and the
// samples of global step k are the same set at every world size.
TEST(UnitPlan, GlobalStepsDoNotDependOnWorldSize) {
  const std::int64_t n = 103;
  std::vector<std::set<std::int64_t>> reference;
  for (auto [world, perDevice, accum] : std::vector<std::tuple<int, int, int>>{
           {1, 12, 1}, {2, 3, 2}, {3, 4, 1}, {4, 1, 3}}) {
    GlobalBatchPlan plan(n, perDevice, world, accum, false, 5, true);
    ASSERT_EQ(plan.globalBatch(), 12);
    ASSERT_EQ(plan.stepsPerEpoch(), 9);
    const auto order = plan.epochOrder(1);
    std::vector<std::set<std::int64_t>> steps;
    std::multiset<std::int64_t> seen;
    for (std::int64_t s = 0; s < plan.stepsPerEpoch(); ++s) {
      std::set<std::int64_t> step;
      for (int r = 0; r < world; ++r)
        for (int m = 0; m < accum; ++m)
          for (auto i : plan.microIndices(order, s, r, m)) step.insert(i), seen.insert(i);
      EXPECT_EQ(static_cast<std::int64_t>(step.size()), plan.samplesInStep(s));
      steps.push_back(step);
    }
    EXPECT_EQ(seen.size(), static_cast<std::size_t>(n));           // no duplicates
    EXPECT_EQ(std::set<std::int64_t>(seen.begin(), seen.end()).size(), static_cast<std::size_t>(n));
    if (reference.empty()) reference = steps;
    EXPECT_EQ(steps, reference) << "world " << world;
  }
  GlobalBatchPlan dropLast(n, 12, 1, 1, true, 5, true);
  EXPECT_EQ(dropLast.stepsPerEpoch(), 8);
  // Epochs are shuffled differently; data_seed changes the order.
  GlobalBatchPlan p(n, 12, 1, 1, false, 5, true), q(n, 12, 1, 1, false, 6, true);
  EXPECT_NE(p.epochOrder(0), p.epochOrder(1));
  EXPECT_NE(p.epochOrder(0), q.epochOrder(0));
}

// The order is pinned (docs/trainer.md spells out the algorithm; these values come from
// tests/trainer/data_order_reference.py, written from that text): a build with another
// standard library or a change of the draw would silently reorder a resumed run's data.
TEST(UnitPlan, ShuffledOrderIsPinnedForAKnownSeed) {
  const GlobalBatchPlan plan(20, 4, 1, 1, false, 42, true);
  EXPECT_EQ(plan.epochOrder(0), (std::vector<std::int64_t>{8,  5, 13, 17, 16, 0,  6,  18, 7,  1,
                                                           11, 2, 10, 3,  9,  14, 19, 15, 12, 4}));
  const GlobalBatchPlan big(1000, 4, 1, 1, false, 7, true);
  const auto order = big.epochOrder(3);
  EXPECT_EQ(std::vector<std::int64_t>(order.begin(), order.begin() + 8),
            (std::vector<std::int64_t>{688, 173, 902, 645, 197, 474, 905, 790}));
}

class CountingDataset : public Dataset {
 public:
  explicit CountingDataset(std::int64_t n) : n_(n) {}
  std::int64_t size() const override { return n_; }
  Sample get(std::int64_t i) const override {
    return {at::full({3}, static_cast<double>(i), at::kDouble), at::full({1}, i, at::kLong)};
  }

 private:
  std::int64_t n_;
};

std::vector<std::vector<double>> drain(DataLoader& loader, int steps) {
  std::vector<std::vector<double>> out;
  for (int s = 0; s < steps; ++s) {
    std::vector<double> ids;
    for (const auto& b : loader.next().micro) {
      for (std::int64_t i = 0; i < b.size; ++i) ids.push_back(b.input[i][0].item<double>());
    }
    out.push_back(ids);
  }
  return out;
}

TEST(UnitDataLoader, WorkersAndPrefetchDeliverTheSameBatches) {
  auto data = std::make_shared<CountingDataset>(50);
  GlobalBatchPlan plan(50, 4, 2, 2, false, 3, true);  // rank 1 of 2
  DataLoader sync(data, nullptr, plan, 1, 0, 2, false);
  const auto want = drain(sync, 9);  // crosses the epoch boundary (4 steps per epoch)
  for (bool persistent : {false, true}) {
    DataLoader threaded(data, nullptr, plan, 1, 3, 2, persistent);
    EXPECT_EQ(drain(threaded, 9), want) << "persistent " << persistent;
    // Persistent workers are started once; others once per epoch.
    EXPECT_EQ(threaded.threadsStarted(), persistent ? 3 : 9);
  }
  DataLoader seeking(data, nullptr, plan, 1, 2, 1, true);
  seeking.seek(1, 2);
  EXPECT_EQ(drain(seeking, 3), std::vector<std::vector<double>>(want.begin() + 6, want.begin() + 9));
}

TEST(UnitNeftune, NoiseOnlyInTrainingAndRemovedAfterAnException) {
  at::manual_seed(0);
  NoisyEmbedding emb(10, 8);
  at::Tensor ids = at::arange(6, at::kLong).reshape({1, 6});
  at::Tensor clean = emb->forward(ids).detach();
  {
    NeftuneScope scope(emb.get(), 5.0);
    emb->train();
    at::Tensor noisy = emb->forward(ids).detach();
    const double bound = 5.0 / std::sqrt(6.0 * 8.0);
    EXPECT_GT((noisy - clean).abs().max().item<double>(), 0.0);
    EXPECT_LE((noisy - clean).abs().max().item<double>(), bound + 1e-6);
    emb->eval();
    EXPECT_TRUE(at::equal(emb->forward(ids), clean));
    emb->train();
  }
  EXPECT_TRUE(at::equal(emb->forward(ids), clean));
  try {
    NeftuneScope scope(emb.get(), 5.0);
    throw std::runtime_error("bad batch");
  } catch (const std::runtime_error&) {
  }
  EXPECT_EQ(emb->neftuneAlpha(), 0.0);
  EXPECT_TRUE(at::equal(emb->forward(ids), clean));
}

// A tiny regression model for loop tests.
struct Linear1 : torch::nn::Module {
  Linear1() { w = register_parameter("w", at::zeros({3, 1}, at::kDouble)); }
  at::Tensor w;
};

TrainingArguments quickArgs(const std::string& dir) {
  TrainingArguments a;
  a.set_output_dir(dir);
  a.set_per_device_train_batch_size(2);
  a.set_max_steps(10);
  a.set_learning_rate(0.1);
  a.set_save_strategy("no");
  a.add_report_to("jsonl");
  return a;
}

TrainerParts quickParts(std::shared_ptr<Linear1> m, std::shared_ptr<const Dataset> data) {
  TrainerParts p;
  p.model = m;
  p.forward = [m](const Batch& b) { return ModelOutput{at::matmul(b.input, m->w), {}}; };
  p.trainDataset = std::move(data);
  // Regression: mean squared error over the global number of samples.
  p.computeLoss = [](const ModelOutput& o, const at::Tensor& labels, std::int64_t n) {
    return (o.logits.squeeze(-1) - labels.select(-1, 0).to(at::kDouble)).pow(2).sum() /
           static_cast<double>(n);
  };
  return p;
}

// Logging cadence (logging_steps, logging_first_step, epoch strategy) and values: the logged
// loss is the mean over the interval of the global step losses, on every rank the same.
TEST(TrainerLogging, CadenceAndValues) {
  auto comm = worldComm();
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("cohort_logging_" + std::to_string(comm->size())))
                              .string();
  if (comm->rank() == 0) std::filesystem::remove_all(dir);
  comm->barrier();
  auto data = std::make_shared<CountingDataset>(8 * comm->size());
  TrainingArguments a = quickArgs(dir);
  a.set_logging_steps(4);
  a.set_logging_first_step(true);
  Trainer t(a, *comm, quickParts(std::make_shared<Linear1>(), data));
  t.train();
  std::vector<std::int64_t> steps;
  for (const auto& e : t.state().logHistory) {
    if (e.values.contains("loss")) steps.push_back(e.step);
  }
  EXPECT_EQ(steps, (std::vector<std::int64_t>{1, 4, 8}));
  const auto& first = t.state().logHistory.front();
  for (const char* key : {"loss", "grad_norm", "learning_rate", "samples_per_second",
                          "tokens_per_second"}) {
    EXPECT_TRUE(first.values.contains(key)) << key;
  }
  // Linear decay from 0.1 over 10 steps: after step 4, 0.1 * 6 / 10.
  EXPECT_NEAR(t.state().logHistory[1].values.at("learning_rate"), 0.06, 1e-12);
  const auto& last = t.state().logHistory.back();
  EXPECT_TRUE(last.values.contains("train_runtime"));
  EXPECT_EQ(last.step, 10);
  // Epoch strategy: one entry per epoch (8 samples per rank, batch 2 -> 4 steps per epoch).
  TrainingArguments e = quickArgs(dir + "_epoch");
  e.set_logging_strategy("epoch");
  e.set_max_steps(8);
  Trainer te(e, *comm, quickParts(std::make_shared<Linear1>(), data));
  te.train();
  std::vector<std::int64_t> epochSteps;
  for (const auto& x : te.state().logHistory) {
    if (x.values.contains("loss")) epochSteps.push_back(x.step);
  }
  EXPECT_EQ(epochSteps, (std::vector<std::int64_t>{4, 8}));
  // The jsonl file on rank 0 has every entry.
  if (comm->rank() == 0) {
    std::ifstream f(dir + "/log_history.jsonl");
    std::string line;
    int lines = 0;
    while (std::getline(f, line)) ++lines;
    EXPECT_EQ(lines, static_cast<int>(t.state().logHistory.size()));
  }
  // The logged losses agree across ranks.
  at::Tensor l = at::tensor({t.state().logHistory[1].values.at("loss")}, at::kDouble);
  at::Tensor all = comm->allGather(l);
  EXPECT_TRUE(allRanks((all - l).abs().max().item<double>() == 0.0));
}

// grad_norm is the norm of the GLOBAL gradient before clipping (as HF logs it), checked
// against a single-process computation of the first global batch's gradient.
TEST(TrainerClipping, LoggedNormIsGlobalAndPreClip) {
  auto comm = worldComm();
  auto data = std::make_shared<CountingDataset>(4 * comm->size());
  TrainingArguments a = quickArgs((std::filesystem::temp_directory_path() / "cohort_clip").string());
  a.set_max_steps(1);
  a.set_logging_steps(1);
  a.clear_report_to();
  a.add_report_to("none");
  a.set_max_grad_norm(1e-3);
  auto m = std::make_shared<Linear1>();
  Trainer t(a, *comm, quickParts(m, data));
  t.train();
  // Single-process reference gradient of the first global batch at w = 0.
  GlobalBatchPlan plan(data->size(), 2, comm->size(), 1, false, 42, true);
  const auto order = plan.epochOrder(0);
  at::Tensor g = at::zeros({3}, at::kDouble);
  const std::int64_t n = plan.samplesInStep(0);
  for (std::int64_t i = 0; i < n; ++i) {
    const double v = static_cast<double>(order[static_cast<std::size_t>(i)]);
    g += at::full({3}, v, at::kDouble) * (-2.0 * v) / static_cast<double>(n);
  }
  const double want = g.norm().item<double>();
  const double got = t.state().logHistory.front().values.at("grad_norm");
  EXPECT_NEAR(got, want, 1e-9 * want);
  // First AdamW step moves each weight by ~lr (sign of the clipped gradient, up to eps).
  EXPECT_NEAR(m->w.abs().max().item<double>(), 0.1, 1e-5);
  EXPECT_TRUE(allRanks(std::abs(got - want) <= 1e-9 * want));
}

// Callbacks see every step on every rank and steer the loop through TrainerControl:
// should_stop ends training after the current step, should_log forces a log entry.
TEST(TrainerCallbacks, ControlStopsAndForcesLogs) {
  auto comm = worldComm();
  struct Steer : TrainerCallback {
    int begins = 0, steps = 0, logs = 0, ends = 0;
    void onTrainBegin(const TrainerState&, TrainerControl&) override { ++begins; }
    void onStepEnd(const TrainerState& s, TrainerControl& c) override {
      ++steps;
      if (s.globalStep == 2) c.shouldLog = true;
      if (s.globalStep == 5) c.shouldStop = true;
    }
    void onLog(const TrainerState&, TrainerControl&, const LogEntry&) override { ++logs; }
    void onTrainEnd(const TrainerState&, TrainerControl&) override { ++ends; }
  };
  auto steer = std::make_shared<Steer>();
  TrainingArguments a = quickArgs((std::filesystem::temp_directory_path() / "cohort_cb").string());
  a.clear_report_to();
  a.add_report_to("none");
  a.set_logging_strategy("no");
  auto parts = quickParts(std::make_shared<Linear1>(),
                          std::make_shared<CountingDataset>(40 * comm->size()));
  parts.callbacks.push_back(steer);
  Trainer t(a, *comm, parts);
  const TrainOutput out = t.train();
  EXPECT_EQ(out.globalStep, 5);
  EXPECT_EQ(steer->begins, 1);
  EXPECT_EQ(steer->steps, 5);
  EXPECT_EQ(steer->logs, 1);  // only the forced one: logging_strategy is "no"
  EXPECT_EQ(steer->ends, 1);
  EXPECT_TRUE(allRanks(out.globalStep == 5 && steer->logs == 1));
}

// TrainOutput::phaseSeconds charges the loop's time to the phase that spent it: a forward
// and a callback that sleep show up (at least) in forward_backward and bookkeeping, and the
// phases never add up to more than the run.
TEST(TrainerPhases, ChargeTimeToThePhaseThatSpentIt) {
  auto comm = worldComm();
  struct SlowStepEnd : TrainerCallback {
    void onStepEnd(const TrainerState&, TrainerControl&) override {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  };
  TrainingArguments a =
      quickArgs((std::filesystem::temp_directory_path() / "cohort_phases").string());
  a.clear_report_to();
  a.add_report_to("none");
  a.set_max_steps(4);
  auto m = std::make_shared<Linear1>();
  auto parts = quickParts(m, std::make_shared<CountingDataset>(40 * comm->size()));
  parts.forward = [m](const Batch& b) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return ModelOutput{at::matmul(b.input, m->w), {}};
  };
  parts.callbacks.push_back(std::make_shared<SlowStepEnd>());
  Trainer t(a, *comm, parts);
  const TrainOutput out = t.train();
  std::vector<std::string> names;
  double sum = 0.0;
  for (const auto& [k, v] : out.phaseSeconds) names.push_back(k), sum += v;
  EXPECT_EQ(names, (std::vector<std::string>{"bookkeeping", "clip", "data", "forward_backward",
                                             "grad_sync", "optimizer", "step_stats"}));
  EXPECT_GE(out.phaseSeconds.at("forward_backward"), 4 * 0.010);
  EXPECT_GE(out.phaseSeconds.at("bookkeeping"), 4 * 0.020);
  EXPECT_LE(sum, out.metrics.at("train_runtime"));
  EXPECT_TRUE(allRanks(out.phaseSeconds.size() == 7 &&
                       out.phaseSeconds.at("bookkeeping") >= 4 * 0.020));
}

// eval_on_start logs an eval entry at step 0; eval_strategy=steps evaluates every eval_steps;
// the eval loss equals a direct computation over the eval set with the final parameters.
TEST(TrainerEvaluation, OnStartAndEveryEvalSteps) {
  auto comm = worldComm();
  TrainingArguments a = quickArgs((std::filesystem::temp_directory_path() / "cohort_eval").string());
  a.clear_report_to();
  a.add_report_to("none");
  a.set_max_steps(6);
  a.set_eval_strategy("steps");
  a.set_eval_steps(3);
  a.set_eval_on_start(true);
  a.set_per_device_eval_batch_size(3);
  auto m = std::make_shared<Linear1>();
  auto parts = quickParts(m, std::make_shared<CountingDataset>(12 * comm->size()));
  parts.evalDataset = std::make_shared<CountingDataset>(7);
  parts.evalLoss = [](const ModelOutput& o, const at::Tensor& labels) {
    at::Tensor err = (o.logits.squeeze(-1) - labels.select(-1, 0).to(at::kDouble)).pow(2);
    return SampleLosses{err, at::ones_like(err)};
  };
  Trainer t(a, *comm, parts);
  t.train();
  std::vector<std::int64_t> evalSteps;
  double lastEvalLoss = 0;
  for (const auto& e : t.state().logHistory) {
    if (e.values.contains("eval_loss")) {
      evalSteps.push_back(e.step);
      lastEvalLoss = e.values.at("eval_loss");
    }
  }
  EXPECT_EQ(evalSteps, (std::vector<std::int64_t>{0, 3, 6}));
  double want = 0;
  for (int i = 0; i < 7; ++i) {
    const double pred = (at::full({3}, static_cast<double>(i), at::kDouble) * m->w.squeeze(-1)).sum().item<double>();
    want += (pred - i) * (pred - i) / 7.0;
  }
  EXPECT_NEAR(lastEvalLoss, want, 1e-12 * std::max(1.0, want));
  EXPECT_TRUE(allRanks(evalSteps.size() == 3 && std::abs(lastEvalLoss - want) <= 1e-12 * std::max(1.0, want)));
}

// Issues 21.8 and 22.6: after a resume, train_loss is the mean step loss of the WHOLE run
// (the trainer state carries the running sum through the checkpoint), so it equals an
// uninterrupted run's; train_samples_per_second and train_steps_per_second count only the
// samples and steps this train() call ran, over this call's train_runtime.
TEST(TrainerResume, TrainLossCoversTheWholeRunAndRatesCoverTheLeg) {
  auto comm = worldComm();
  const std::string base = (std::filesystem::temp_directory_path() /
                            ("cohort_resume_loss_" + std::to_string(comm->size())))
                               .string();
  if (comm->rank() == 0) std::filesystem::remove_all(base);
  comm->barrier();
  auto data = std::make_shared<CountingDataset>(8 * comm->size());
  auto args = [&](const std::string& dir) {
    TrainingArguments a = quickArgs(dir);
    a.clear_report_to();
    a.add_report_to("none");
    a.set_learning_rate(0.01);
    return a;
  };
  Trainer full(args(base + "/full"), *comm, quickParts(std::make_shared<Linear1>(), data));
  const TrainOutput ref = full.train();

  struct StopAt4 : TrainerCallback {
    void onStepEnd(const TrainerState& s, TrainerControl& c) override {
      if (s.globalStep == 4) c.shouldStop = true;
    }
  };
  TrainingArguments leg = args(base + "/legs");
  leg.set_save_strategy("steps");
  leg.set_save_steps(4);
  auto firstParts = quickParts(std::make_shared<Linear1>(), data);
  firstParts.callbacks.push_back(std::make_shared<StopAt4>());
  Trainer first(leg, *comm, firstParts);
  EXPECT_EQ(first.train().globalStep, 4);
  const std::int64_t samplesAt4 = first.state().consumedSamples;

  leg.set_resume_from_checkpoint("true");
  Trainer second(leg, *comm, quickParts(std::make_shared<Linear1>(), data));
  const TrainOutput out = second.train();
  EXPECT_EQ(second.state().resumedFrom, base + "/legs/checkpoint-4");
  EXPECT_EQ(out.globalStep, 10);
  const double want = ref.trainingLoss;
  EXPECT_GT(want, 0.0);
  EXPECT_NEAR(out.trainingLoss, want, 1e-12 * want);
  EXPECT_NEAR(out.metrics.at("train_loss"), want, 1e-12 * want);
  EXPECT_EQ(second.state().totalLossSteps, 10);

  const double runtime = out.metrics.at("train_runtime");
  const auto legSamples = static_cast<double>(second.state().consumedSamples - samplesAt4);
  EXPECT_EQ(second.state().consumedSamples, full.state().consumedSamples);
  EXPECT_NEAR(out.metrics.at("train_samples_per_second") * runtime, legSamples, 1e-9 * legSamples);
  EXPECT_NEAR(out.metrics.at("train_steps_per_second") * runtime, 6.0, 1e-9);
  // An uninterrupted run: its own samples and steps.
  const double refRuntime = ref.metrics.at("train_runtime");
  EXPECT_NEAR(ref.metrics.at("train_samples_per_second") * refRuntime,
              static_cast<double>(full.state().consumedSamples), 1e-9 * legSamples);
  EXPECT_TRUE(allRanks(std::abs(out.trainingLoss - want) <= 1e-12 * want));
}

// Issue 21.10: the examples' corpus holds each file once, however many names link to it
// (/usr/share/common-licenses has GPL -> GPL-3, LGPL -> LGPL-3, GFDL -> GFDL-1.3).
TEST(UnitExamples, CorpusReadsEachFileOnce) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("cohort_corpus_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir / "sub");
  std::ofstream(dir / "B-1") << "bbbb\n";
  std::ofstream(dir / "C-2") << "cc\n";
  std::ofstream(dir / "sub" / "ignored") << "a directory is not read\n";
  std::filesystem::create_symlink("C-2", dir / "A");        // sorts first by name
  std::filesystem::create_symlink(dir / "B-1", dir / "Z");  // absolute target
  std::filesystem::create_symlink("missing", dir / "dangling");
  EXPECT_EQ(examples::readCorpus(dir.string()), "bbbb\ncc\n");
  std::filesystem::remove_all(dir);

  // The system corpus: the sum of its distinct files.
  std::set<std::filesystem::path> real;
  std::uintmax_t bytes = 0;
  for (const auto& e : std::filesystem::directory_iterator("/usr/share/common-licenses")) {
    if (e.is_regular_file() && real.insert(std::filesystem::canonical(e.path())).second)
      bytes += std::filesystem::file_size(e.path());
  }
  EXPECT_EQ(examples::readCorpus().size(), bytes);
}

}  // namespace
}  // namespace cohort::test
