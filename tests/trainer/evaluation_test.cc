// The trainer's evaluation area: the eval shard plan, exactness of the gathered arrays and
// metrics against one process (a communicator over MPI_COMM_SELF) and against an independent
// per-sample computation, preprocess_logits_for_metrics before accumulation (memory counter),
// eval_accumulation_steps cadence, the stop hook, the metrics broadcast.
// MPI tests (Eval*) run at np 1, 2, 3 and 4; Unit* tests touch no other rank.
#include "cohort/trainer/evaluation.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <cmath>
#include <set>
#include <tuple>

#include "cohort/dist/error.h"
#include "cohort/trainer/trainer.h"
#include "test_util.h"

namespace cohort::test {
namespace {

using namespace cohort::trainer;

std::unique_ptr<dist::Communicator> selfComm() {
  dist::BackendOptions o;
  o.timeoutSeconds = 120.0;
  return std::make_unique<dist::Communicator>(dist::makeMpiBackend(MPI_COMM_SELF, o));
}

// ---- a linear classifier on float64 features ----

constexpr std::int64_t kFeatures = 5, kClasses = 4;

class FeatureDataset : public Dataset {
 public:
  explicit FeatureDataset(std::int64_t n) : n_(n) {}
  std::int64_t size() const override { return n_; }
  Sample get(std::int64_t i) const override {
    at::Tensor x = at::empty({kFeatures}, at::kDouble);
    for (std::int64_t f = 0; f < kFeatures; ++f) {
      x[f] = std::sin(0.37 * static_cast<double>(i) + 1.3 * static_cast<double>(f));
    }
    return {x, at::scalar_tensor((i * 7 + i / 3) % kClasses, at::kLong)};
  }

 private:
  std::int64_t n_;
};

struct Classifier : torch::nn::Module {
  Classifier() {
    w = register_parameter("w", at::cos(at::arange(kFeatures * kClasses, at::kDouble) * 0.7)
                                    .reshape({kFeatures, kClasses}));
    b = register_parameter("b", at::linspace(-0.2, 0.3, kClasses, at::kDouble));
  }
  at::Tensor forward(const at::Tensor& x) { return at::matmul(x, w) + b; }
  at::Tensor w, b;
};

std::map<std::string, double> classifierMetrics(const EvalPrediction& p) {
  return {
      {"accuracy", p.predictions.argmax(-1).eq(p.labels).to(at::kDouble).mean().item<double>()}};
}

EvalParts classifierParts(const std::shared_ptr<Classifier>& m, std::int64_t n) {
  EvalParts p;
  p.model = m.get();
  p.forward = [m](const Batch& b) { return ModelOutput{m->forward(b.input), {}}; };
  p.dataset = std::make_shared<FeatureDataset>(n);
  p.computeMetrics = classifierMetrics;
  return p;
}

// ---- a tiny causal token model with variable sequence lengths ----

class TokenDataset : public Dataset {
 public:
  TokenDataset(std::int64_t n, std::int64_t vocab) : n_(n), vocab_(vocab) {}
  std::int64_t size() const override { return n_; }
  static std::int64_t lengthOf(std::int64_t i) { return 1 + (i * 5 + i / 7) % 9; }  // 1..9
  Sample get(std::int64_t i) const override {
    const std::int64_t len = lengthOf(i);
    at::Tensor ids = at::empty({len}, at::kLong);
    for (std::int64_t t = 0; t < len; ++t) ids[t] = (i * 7 + t * 3 + i * t) % vocab_;
    return {ids, ids.clone()};
  }

 private:
  std::int64_t n_, vocab_;
};

// logits[t] = mean(embed[x_0..x_t]) @ head + bias: position t sees tokens <= t only.
struct TokenModel : torch::nn::Module {
  explicit TokenModel(std::int64_t vocab, std::int64_t dim = 4) {
    embed = register_parameter(
        "embed", at::sin(at::arange(vocab * dim, at::kDouble) * 0.91).reshape({vocab, dim}));
    head = register_parameter(
        "head", at::cos(at::arange(dim * vocab, at::kDouble) * 0.53).reshape({dim, vocab}));
    bias = register_parameter("bias", at::linspace(-0.5, 0.5, vocab, at::kDouble));
  }
  at::Tensor forward(const at::Tensor& ids) {
    const std::int64_t b = ids.size(0), t = ids.size(1);
    at::Tensor e = embed.index_select(0, ids.reshape({-1})).reshape({b, t, -1});
    at::Tensor c = e.cumsum(1) / at::arange(1, t + 1, at::kDouble).reshape({1, t, 1});
    return at::matmul(c, head) + bias;
  }
  at::Tensor embed, head, bias;
};

// Next-token accuracy; predictions are logits [n, T, V] or ids [n, T].
std::map<std::string, double> tokenMetrics(const EvalPrediction& p) {
  at::Tensor ids = p.predictions.dim() == 3 ? p.predictions.argmax(-1) : p.predictions;
  const std::int64_t t = ids.size(1);
  at::Tensor pred = ids.narrow(1, 0, t - 1), target = p.labels.narrow(1, 1, t - 1);
  at::Tensor mask = target.ne(-100);
  const double total = mask.sum().item<double>();
  const double correct = (pred.eq(target) & mask).sum().item<double>();
  return {{"accuracy", total > 0 ? correct / total : 0.0}};
}

EvalParts tokenParts(const std::shared_ptr<TokenModel>& m, std::int64_t n, std::int64_t vocab,
                     bool argmax) {
  EvalParts p;
  p.model = m.get();
  p.forward = [m](const Batch& b) { return ModelOutput{m->forward(b.input), {}}; };
  p.dataset = std::make_shared<TokenDataset>(n, vocab);
  p.computeMetrics = tokenMetrics;
  if (argmax) {
    p.preprocessLogits = [](const at::Tensor& logits, const at::Tensor&) {
      return logits.argmax(-1);
    };
  }
  return p;
}

EvalOptions opts(std::int64_t batch, bool shift, std::int64_t accum = 0) {
  EvalOptions o;
  o.perDeviceEvalBatchSize = batch;
  o.shiftLabels = shift;
  o.evalAccumulationSteps = accum;
  o.keepPredictions = true;
  return o;
}

// True when every rank holds the same value as rank 0.
bool sameOnAllRanks(dist::Communicator& comm, double v) {
  at::Tensor all = comm.allGather(at::tensor({v}, at::kDouble));
  return (all - all[0]).abs().max().item<double>() == 0.0 || std::isnan(v);
}

// Equal to 1e-12, or both NaN (an eval set without a single target has no loss).
void expectClose(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) {
    EXPECT_TRUE(std::isnan(a) && std::isnan(b)) << a << " vs " << b;
  } else {
    EXPECT_NEAR(a, b, 1e-12);
  }
}

bool sameArrays(const EvalPrediction& a, const EvalPrediction& b) {
  auto eq = [](const at::Tensor& x, const at::Tensor& y) {
    return x.defined() == y.defined() && (!x.defined() || at::equal(x, y));
  };
  return eq(a.predictions, b.predictions) && eq(a.labels, b.labels) && eq(a.losses, b.losses);
}

// ---- the plan ----

TEST(UnitEvalPlan, EveryRealSampleOnceAndBatchesIndependentOfWorld) {
  for (std::int64_t n : {1, 2, 7, 64, 1001}) {
    for (std::int64_t b : {1, 3, 8}) {
      for (int w : {1, 2, 3, 4, 5}) {
        EvalShardPlan plan(n, b, w);
        EXPECT_EQ(plan.steps(), (n + b * w - 1) / (b * w));
        std::multiset<std::int64_t> real;
        std::int64_t realRows = 0;
        for (std::int64_t s = 0; s < plan.steps(); ++s) {
          for (int r = 0; r < w; ++r) {
            realRows += plan.realRows(s, r);
            for (std::int64_t j = 0; j < b; ++j) {
              const std::int64_t slot = plan.slot(s, r, j);
              // Global batch s*w + r holds slots [(s*w + r)*b, +b) at every world size.
              EXPECT_EQ(slot, ((s * w + r) * b) + j);
              EXPECT_LT(plan.sampleOf(slot), n);
              if (plan.isReal(slot)) real.insert(slot);
            }
          }
        }
        EXPECT_EQ(real.size(), static_cast<std::size_t>(n)) << n << " " << b << " " << w;
        EXPECT_EQ(std::set<std::int64_t>(real.begin(), real.end()).size(),
                  static_cast<std::size_t>(n));
        EXPECT_EQ(realRows, n);
      }
    }
  }
  EXPECT_THROW(EvalShardPlan(0, 8, 2), ConfigError);
  EXPECT_THROW(EvalShardPlan(5, 0, 2), ConfigError);
}

TEST(UnitEvalLoss, PerSampleCrossEntropyMatchesManual) {
  at::Tensor logits = at::randn({3, 5, 7}, at::kDouble);
  at::Tensor labels = at::randint(0, 7, {3, 5}, at::kLong);
  labels[1][3] = -100;
  labels[2][1] = -100;
  const SampleLosses l = perSampleCrossEntropy(ModelOutput{logits, {}}, labels, true);
  at::Tensor logp = at::log_softmax(logits, -1);
  for (std::int64_t i = 0; i < 3; ++i) {
    double sum = 0;
    std::int64_t count = 0;
    for (std::int64_t t = 0; t + 1 < 5; ++t) {
      const std::int64_t y = labels[i][t + 1].item<std::int64_t>();
      if (y == -100) continue;
      sum -= logp[i][t][y].item<double>();
      ++count;
    }
    EXPECT_NEAR(l.sum[i].item<double>(), sum, 1e-12);
    EXPECT_EQ(l.count[i].item<std::int64_t>(), count);
  }
  at::Tensor cls = at::randn({4, 3}, at::kDouble);
  at::Tensor y = at::tensor({0, 2, -100, 1}, at::kLong);
  const SampleLosses c = perSampleCrossEntropy(ModelOutput{cls, {}}, y, false);
  EXPECT_EQ(c.count.to(at::kLong).sum().item<std::int64_t>(), 3);
  EXPECT_NEAR(c.sum[1].item<double>(), -at::log_softmax(cls, -1)[1][2].item<double>(), 1e-12);
  EXPECT_EQ(c.sum[2].item<double>(), 0.0);
}

TEST(UnitEvalConfig, BadPartsAreConfigErrorsBeforeAnyCollective) {
  auto comm = selfComm();
  auto m = std::make_shared<Classifier>();
  EvalParts p = classifierParts(m, 4);
  EvalParts noForward = p;
  noForward.forward = nullptr;
  EXPECT_THROW(evaluate(*comm, noForward, opts(2, false)), ConfigError);
  EvalParts empty = p;
  empty.dataset = std::make_shared<FeatureDataset>(0);
  EXPECT_THROW(evaluate(*comm, empty, opts(2, false)), ConfigError);
  EXPECT_THROW(evaluate(*comm, p, opts(0, false)), ConfigError);
  EXPECT_THROW(evaluate(*comm, p, opts(2, false, -1)), ConfigError);
  TrainingArguments args;
  args.set_per_device_eval_batch_size(3);
  args.set_eval_accumulation_steps(5);
  const EvalOptions o = evalOptionsFromArgs(args);
  EXPECT_EQ(o.perDeviceEvalBatchSize, 3);
  EXPECT_EQ(o.evalAccumulationSteps, 5);
  EXPECT_EQ(evalOptionsFromArgs(TrainingArguments()).evalAccumulationSteps, 0);
}

// ---- exactness ----

// The distributed run equals the single-process run bit for bit (arrays in global order, no
// padding rows) and an independent per-sample computation to 1e-12.
TEST(EvalExactness, ClassifierMatchesSingleProcess) {
  auto comm = worldComm();
  auto self = selfComm();
  auto m = std::make_shared<Classifier>();
  for (std::int64_t n : {1, 7, 64, 1001}) {
    for (std::int64_t b : {1, 8}) {
      const EvalParts parts = classifierParts(m, n);
      const EvalResult got = evaluate(*comm, parts, opts(b, false));
      bool ok = got.numSamples == n && !got.interrupted && got.metrics.count("eval_loss") &&
                got.metrics.count("eval_accuracy") && got.metrics.count("eval_runtime") &&
                got.metrics.count("eval_samples_per_second") &&
                got.metrics.count("eval_steps_per_second");
      ok = ok && sameOnAllRanks(*comm, got.metrics.at("eval_loss")) &&
           sameOnAllRanks(*comm, got.metrics.at("eval_accuracy"));
      if (comm->rank() == 0) {
        const EvalResult ref = evaluate(*self, parts, opts(b, false));
        EXPECT_TRUE(got.predictions && ref.predictions);
        EXPECT_TRUE(sameArrays(*got.predictions, *ref.predictions)) << "n " << n << " b " << b;
        EXPECT_EQ(got.predictions->predictions.size(0), n);
        EXPECT_NEAR(got.metrics.at("eval_loss"), ref.metrics.at("eval_loss"), 1e-12);
        EXPECT_NEAR(got.metrics.at("eval_accuracy"), ref.metrics.at("eval_accuracy"), 1e-12);
        // Independent: one sample at a time.
        double loss = 0, correct = 0;
        for (std::int64_t i = 0; i < n; ++i) {
          const Sample s = parts.dataset->get(i);
          at::Tensor logits = m->forward(s.input.unsqueeze(0)).detach();
          EXPECT_TRUE(at::allclose(logits[0], got.predictions->predictions[i], 0, 1e-12));
          EXPECT_EQ(got.predictions->labels[i].item<std::int64_t>(), s.labels.item<std::int64_t>());
          loss -= at::log_softmax(logits, -1)[0][s.labels.item<std::int64_t>()].item<double>();
          correct += logits.argmax(-1).item<std::int64_t>() == s.labels.item<std::int64_t>();
        }
        EXPECT_NEAR(got.metrics.at("eval_loss"), loss / static_cast<double>(n), 1e-12);
        EXPECT_NEAR(got.metrics.at("eval_accuracy"), correct / static_cast<double>(n), 1e-12);
      }
      EXPECT_TRUE(allRanks(ok)) << "n " << n << " b " << b;
    }
  }
}

// Variable sequence lengths: batches (and so ranks) have different dim-1 sizes; the arrays are
// padded along dim 1 (predictions -100, labels -100) to the longest row of the whole set.
// With and without preprocess_logits_for_metrics.
TEST(EvalExactness, TokenModelVariableLengthsMatchSingleProcess) {
  auto comm = worldComm();
  auto self = selfComm();
  const std::int64_t vocab = 11;
  auto m = std::make_shared<TokenModel>(vocab);
  for (bool argmax : {false, true}) {
    for (std::int64_t n : {1, 7, 64, 1001}) {
      for (std::int64_t b : {1, 8}) {
        const EvalParts parts = tokenParts(m, n, vocab, argmax);
        const EvalResult got = evaluate(*comm, parts, opts(b, true));
        bool ok = got.metrics.count("eval_loss") && got.metrics.count("eval_accuracy") &&
                  sameOnAllRanks(*comm, got.metrics.at("eval_loss")) &&
                  sameOnAllRanks(*comm, got.metrics.at("eval_accuracy"));
        if (comm->rank() == 0) {
          const EvalResult ref = evaluate(*self, parts, opts(b, true));
          const auto& p = *got.predictions;
          EXPECT_TRUE(sameArrays(p, *ref.predictions))
              << "argmax " << argmax << " n " << n << " b " << b;
          expectClose(got.metrics.at("eval_loss"), ref.metrics.at("eval_loss"));
          expectClose(got.metrics.at("eval_accuracy"), ref.metrics.at("eval_accuracy"));
          std::int64_t longest = 0;
          for (std::int64_t i = 0; i < n; ++i)
            longest = std::max(longest, TokenDataset::lengthOf(i));
          EXPECT_EQ(p.labels.sizes(), (at::IntArrayRef{n, longest}));
          EXPECT_EQ(p.predictions.dim(), argmax ? 2 : 3);
          // Independent: each sample alone, unpadded.
          double sum = 0, terms = 0, correct = 0;
          for (std::int64_t i = 0; i < n; ++i) {
            const Sample s = parts.dataset->get(i);
            const std::int64_t len = s.input.size(0);
            at::Tensor logits = m->forward(s.input.unsqueeze(0))[0].detach();  // [len, V]
            EXPECT_TRUE(at::equal(p.labels[i].narrow(0, 0, len), s.labels));
            EXPECT_TRUE(p.labels[i].narrow(0, len, longest - len).eq(-100).all().item<bool>());
            at::Tensor ids = logits.argmax(-1);
            if (argmax) {
              EXPECT_TRUE(at::equal(p.predictions[i].narrow(0, 0, len), ids));
            } else {
              EXPECT_TRUE(at::allclose(p.predictions[i].narrow(0, 0, len), logits, 0, 1e-12));
            }
            at::Tensor logp = at::log_softmax(logits, -1);
            for (std::int64_t t = 0; t + 1 < len; ++t) {
              const std::int64_t y = s.labels[t + 1].item<std::int64_t>();
              sum -= logp[t][y].item<double>();
              terms += 1;
              correct += ids[t].item<std::int64_t>() == y;
            }
          }
          if (terms > 0) {
            EXPECT_NEAR(got.metrics.at("eval_loss"), sum / terms, 1e-12);
            EXPECT_NEAR(got.metrics.at("eval_accuracy"), correct / terms, 1e-12);
          } else {
            EXPECT_TRUE(std::isnan(got.metrics.at("eval_loss")));  // no targets at all
          }
        }
        EXPECT_TRUE(allRanks(ok)) << "argmax " << argmax << " n " << n << " b " << b;
      }
    }
  }
}

// ---- preprocess_logits_for_metrics ----

// The hook sees each rank's own [B, T, V] logits, once per batch, and only its [B, T] output
// is ever kept: the accumulator's byte counter stays at dataset x T (and at batch x T with
// eval_accumulation_steps = 1), never dataset x vocab.
TEST(EvalPreprocess, RunsBeforeAccumulation) {
  auto comm = worldComm();
  const std::int64_t vocab = 1000, b = 4, maxLen = 9, n = 64;
  auto m = std::make_shared<TokenModel>(vocab);
  const EvalShardPlan plan(n, b, comm->size());
  const std::int64_t rows = plan.steps() * b;  // per rank, padding rows included

  std::vector<std::vector<std::int64_t>> shapes;
  EvalParts pre = tokenParts(m, n, vocab, false);
  pre.preprocessLogits = [&shapes](const at::Tensor& logits, const at::Tensor& labels) {
    std::vector<std::int64_t> s(logits.sizes().begin(), logits.sizes().end());
    s.push_back(labels.size(0));
    s.push_back(labels.size(1));
    shapes.push_back(s);
    return logits.argmax(-1);
  };
  const EvalResult reduced = evaluate(*comm, pre, opts(b, true));
  const EvalResult plain = evaluate(*comm, tokenParts(m, n, vocab, false), opts(b, true));
  const EvalResult perBatch = evaluate(*comm, pre, opts(b, true, /*accum=*/1));

  bool ok = static_cast<std::int64_t>(shapes.size()) == 2 * plan.steps();
  for (const auto& s : shapes) {
    ok = ok && s.size() == 5 && s[0] == b && s[2] == vocab && s[3] == b && s[4] == s[1];
  }
  // int64 ids + int64 labels per token, 3 float64 per row.
  const std::int64_t reducedBound = rows * maxLen * 16 + rows * 24;
  const std::int64_t batchBound = b * maxLen * 16 + b * 24;
  ok = ok && reduced.peakAccumulatedBytes > 0 && reduced.peakAccumulatedBytes <= reducedBound;
  ok = ok && plain.peakAccumulatedBytes >= rows * vocab * 8;  // at least one token per row
  ok = ok && perBatch.peakAccumulatedBytes <= batchBound;
  EXPECT_LE(reduced.peakAccumulatedBytes, reducedBound);
  EXPECT_GE(plain.peakAccumulatedBytes, rows * vocab * 8);
  EXPECT_LE(perBatch.peakAccumulatedBytes, batchBound);
  if (comm->rank() == 0) {
    // Rank 0's host arrays: dataset x T for the reduced run, dataset x T x V for the plain.
    EXPECT_LE(reduced.peakHostBytes, n * maxLen * 32 + n * 48);
    EXPECT_GE(plain.peakHostBytes, n * vocab * 8);
    // Same ids as argmax of the full logits at every real position.
    const auto& r = *reduced.predictions;
    const auto& p = *plain.predictions;
    at::Tensor real = p.labels.ne(-100);
    EXPECT_TRUE(
        at::equal(r.predictions.masked_select(real), p.predictions.argmax(-1).masked_select(real)));
    EXPECT_EQ(reduced.metrics.at("eval_accuracy"), plain.metrics.at("eval_accuracy"));
    EXPECT_EQ(reduced.metrics.at("eval_loss"), plain.metrics.at("eval_loss"));
  }
  EXPECT_TRUE(allRanks(ok)) << "preprocess calls " << shapes.size() << " peak "
                            << reduced.peakAccumulatedBytes << " / " << reducedBound;
}

// ---- eval_accumulation_steps ----

TEST(EvalAccumulation, TransferCadenceAndIdenticalResults) {
  auto comm = worldComm();
  const std::int64_t vocab = 13, n = 64, b = 2;
  auto m = std::make_shared<TokenModel>(vocab);
  const EvalParts parts = tokenParts(m, n, vocab, false);
  const EvalShardPlan plan(n, b, comm->size());
  const EvalResult base = evaluate(*comm, parts, opts(b, true));
  bool ok =
      base.hostTransfers == 1 && base.transferAfterBatch == std::vector<std::int64_t>{plan.steps()};
  for (std::int64_t every : {1, 3, 5}) {
    const EvalResult r = evaluate(*comm, parts, opts(b, true, every));
    std::vector<std::int64_t> want;
    for (std::int64_t k = every; k < plan.steps(); k += every) want.push_back(k);
    want.push_back(plan.steps());
    EXPECT_EQ(r.transferAfterBatch, want) << "every " << every;
    EXPECT_EQ(r.hostTransfers, static_cast<std::int64_t>(want.size()));
    ok = ok && r.transferAfterBatch == want;
    // The accumulator never holds more than `every` batches.
    ok = ok && r.peakAccumulatedBytes <= every * b * 9 * (vocab * 8 + 8) + every * b * 24;
    if (comm->rank() == 0) {
      EXPECT_TRUE(sameArrays(*r.predictions, *base.predictions)) << "every " << every;
      EXPECT_EQ(r.metrics.at("eval_loss"), base.metrics.at("eval_loss"));
      EXPECT_EQ(r.metrics.at("eval_accuracy"), base.metrics.at("eval_accuracy"));
    }
  }
  EXPECT_TRUE(allRanks(ok));
}

// ---- prediction_loss_only, metrics, modes ----

TEST(EvalMetrics, LossOnlyPrefixBroadcastAndErrors) {
  auto comm = worldComm();
  auto m = std::make_shared<Classifier>();
  const std::int64_t n = 37;
  EvalParts parts = classifierParts(m, n);
  const EvalResult full = evaluate(*comm, parts, opts(3, false));

  int metricCalls = 0;
  EvalParts counted = parts;
  counted.computeMetrics = [&metricCalls](const EvalPrediction& p) {
    ++metricCalls;
    return classifierMetrics(p);
  };
  EvalOptions lossOnly = opts(3, false);
  lossOnly.predictionLossOnly = true;
  lossOnly.keepPredictions = false;
  const EvalResult lo = evaluate(*comm, counted, lossOnly);
  bool ok = metricCalls == 0 && !lo.metrics.count("eval_accuracy") &&
            lo.metrics.at("eval_loss") == full.metrics.at("eval_loss") && !lo.predictions &&
            lo.peakAccumulatedBytes <= EvalShardPlan(n, 3, comm->size()).steps() * 3 * 24;

  // A custom prefix; keys that already carry it are left alone.
  EvalParts custom = parts;
  custom.computeMetrics = [](const EvalPrediction& p) {
    auto r = classifierMetrics(p);
    r["test_rows"] = static_cast<double>(p.predictions.size(0));
    return r;
  };
  EvalOptions o = opts(3, false);
  o.metricKeyPrefix = "test";
  const EvalResult t = evaluate(*comm, custom, o);
  ok = ok && t.metrics.size() == 6 && t.metrics.at("test_rows") == static_cast<double>(n) &&
       t.metrics.count("test_accuracy") && t.metrics.count("test_loss") &&
       t.metrics.count("test_runtime") && t.metrics.count("test_steps_per_second");
  // Every rank returns rank 0's dict, runtime included.
  for (const auto& [k, v] : t.metrics) ok = ok && sameOnAllRanks(*comm, v);

  // compute_metrics throws on rank 0: every rank throws, nobody waits.
  EvalParts bad = parts;
  bad.computeMetrics = [](const EvalPrediction&) -> std::map<std::string, double> {
    throw std::runtime_error("metric exploded");
  };
  std::string message;
  try {
    evaluate(*comm, bad, opts(3, false));
  } catch (const std::exception& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("metric exploded"), std::string::npos) << message;
  ok = ok && message.find("metric exploded") != std::string::npos;
  // The communicator is still in step: the next evaluation is normal.
  const EvalResult again = evaluate(*comm, parts, opts(3, false));
  ok = ok && again.metrics.at("eval_loss") == full.metrics.at("eval_loss");
  EXPECT_TRUE(allRanks(ok));
}

struct ModeProbe : Classifier {
  std::vector<bool> seen;
};

TEST(EvalMetrics, EvalModeNoGradAndModeRestored) {
  auto comm = worldComm();
  auto m = std::make_shared<ModeProbe>();
  m->train(true);
  EvalParts parts = classifierParts(m, 9);
  bool gradSeen = false;
  parts.forward = [m, &gradSeen](const Batch& b) {
    m->seen.push_back(m->is_training());
    at::Tensor out = m->forward(b.input);
    gradSeen = gradSeen || out.requires_grad();
    return ModelOutput{out, {}};
  };
  evaluate(*comm, parts, opts(2, false));
  bool ok = !m->seen.empty() && !gradSeen && m->is_training();
  for (bool s : m->seen) ok = ok && !s;
  EXPECT_TRUE(allRanks(ok));
}

// ---- the stop hook ----

// One rank asks to stop before batch k: every rank stops before batch k, returns
// interrupted, and the communicator is still in step for the next collective.
TEST(EvalStop, OneRankStopsEveryRankAtTheSameBatch) {
  auto comm = worldComm();
  const std::int64_t vocab = 7, n = 64, b = 2;
  auto m = std::make_shared<TokenModel>(vocab);
  const EvalShardPlan plan(n, b, comm->size());
  const int asker = comm->size() - 1;
  bool ok = true;
  for (std::int64_t k : {std::int64_t{0}, std::int64_t{2}, plan.steps() - 1}) {
    EvalParts parts = tokenParts(m, n, vocab, true);
    int polls = 0;
    parts.shouldStop = [&polls, k, asker, &comm]() {
      return comm->rank() == asker && polls++ >= k;
    };
    const EvalResult r = evaluate(*comm, parts, opts(b, true, /*accum=*/1));
    ok = ok && r.interrupted && r.batchesRun == k && r.metrics.empty() && r.hostTransfers == k;
    EXPECT_TRUE(r.interrupted) << "k " << k;
    EXPECT_EQ(r.batchesRun, k);
  }
  EvalParts never = tokenParts(m, n, vocab, true);
  never.shouldStop = [] { return false; };
  const EvalResult full = evaluate(*comm, never, opts(b, true));
  ok =
      ok && !full.interrupted && full.batchesRun == plan.steps() && full.metrics.count("eval_loss");
  EXPECT_TRUE(allRanks(ok));
}

}  // namespace
}  // namespace cohort::test
