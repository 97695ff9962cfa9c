// GradientSync at world sizes 1, 2 and 4. The golden test: N ranks with gradient
// accumulation must end with the parameters of ONE process that trains on the concatenated
// global batch (token-mean loss), including ranks and micro-batches with unequal numbers of
// real tokens. The reference below shares no code with the distributed path beyond the
// model's forward math: no Communicator, no GradientSync, no countItems.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <random>
#include <string>
#include <vector>

#include "cohort/dist/batch_stats.h"
#include "cohort/dist/error.h"
#include "cohort/dist/gradient_sync.h"
#include "counting_backend.h"
#include "test_util.h"

namespace cohort::test {
namespace {

using dist::GradientSync;
using dist::GradientSyncOptions;
using dist::ReduceOp;
using Clock = std::chrono::steady_clock;

// ---- helpers ----

// Deterministic O(1) values without an RNG, distinct per element and per `seed`.
at::Tensor detValues(at::IntArrayRef shape, double seed, at::ScalarType type) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return (at::sin(at::arange(n, at::kDouble) * 0.7311 + seed) * 0.5).view(shape).to(type);
}

// max|a - b| / max|b|: a relative error per tensor that does not blow up at zeros.
double relDiff(const at::Tensor& a, const at::Tensor& b) {
  const double den = std::max(b.abs().max().item<double>(), 1e-30);
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>() / den;
}

double worstRelDiff(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  double worst = a.size() == b.size() ? 0.0 : 1e300;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    worst = std::max(worst, relDiff(a[i], b[i]));
  }
  return worst;
}

// y = x W^T + b, as a submodule so that names read "fc2.weight".
struct Affine : torch::nn::Module {
  Affine(std::int64_t in, std::int64_t out, at::ScalarType type, double seed) {
    weight = register_parameter("weight", detValues({out, in}, seed, type));
    bias = register_parameter("bias", detValues({out}, seed + 0.5, type));
  }
  at::Tensor forward(const at::Tensor& x) { return at::linear(x, weight, bias); }
  at::Tensor weight, bias;
};

// ---- the causal-LM-like model of the golden test ----

constexpr std::int64_t kVocab = 11, kDim = 6, kHidden = 8, kSeq = 8;
constexpr double kLr = 0.5;
constexpr int kSteps = 3;

std::vector<at::Tensor> initialLmParams(at::ScalarType type, double perturb) {
  return {detValues({kVocab, kDim}, 1.0 + perturb, type),
          detValues({kHidden, kDim}, 2.0 + perturb, type),
          detValues({kHidden}, 3.0 + perturb, type) * 0.1,
          detValues({kVocab, kHidden}, 4.0 + perturb, type),
          detValues({kVocab}, 5.0 + perturb, type) * 0.1};
}

// embedding -> tanh(linear) -> linear to the vocabulary. p = {embed, w1, b1, w2, b2}.
at::Tensor lmLogits(const std::vector<at::Tensor>& p, const at::Tensor& ids) {
  at::Tensor e = p[0].index_select(0, ids.reshape({-1})).view({ids.size(0), ids.size(1), kDim});
  return at::linear(at::tanh(at::linear(e, p[1], p[2])), p[3], p[4]);
}

// Causal LM: position t predicts token t+1; padding (-100) is ignored.
at::Tensor shiftedTokenLoss(const at::Tensor& logits, const at::Tensor& labels, int64_t reduction) {
  at::Tensor lg = logits.narrow(1, 0, kSeq - 1).reshape({-1, kVocab});
  at::Tensor lb = labels.narrow(1, 1, kSeq - 1).reshape({-1});
  return at::cross_entropy_loss(lg, lb, {}, reduction, -100);
}

struct TinyLm : torch::nn::Module {
  TinyLm(at::ScalarType type, double perturb) {
    const auto init = initialLmParams(type, perturb);
    const char* names[] = {"embed", "w1", "b1", "w2", "b2"};
    for (std::size_t i = 0; i < init.size(); ++i) p.push_back(register_parameter(names[i], init[i]));
  }
  std::vector<at::Tensor> p;
};

struct MicroBatch {
  at::Tensor ids, labels;
};

// Rank r's rows are shorter the larger r is, and batch sizes alternate, so ranks and
// micro-batches hold different numbers of real tokens: per-rank or per-micro-batch
// normalisation gives a different (wrong) gradient.
MicroBatch makeBatch(int step, int rank, int micro) {
  std::mt19937_64 rng(1000003ull * step + 7919ull * rank + 31ull * micro + 17);
  const std::int64_t rows = 2 + (rank + micro) % 2;
  MicroBatch b{at::zeros({rows, kSeq}, at::kLong), at::full({rows, kSeq}, -100, at::kLong)};
  auto ids = b.ids.accessor<std::int64_t, 2>();
  auto labels = b.labels.accessor<std::int64_t, 2>();
  for (std::int64_t i = 0; i < rows; ++i) {
    const std::int64_t len =
        std::max<std::int64_t>(2, kSeq - rank - static_cast<std::int64_t>(rng() % 3));
    for (std::int64_t t = 0; t < len; ++t) {
      ids[i][t] = labels[i][t] = static_cast<std::int64_t>(rng() % kVocab);
    }
  }
  return b;
}

void sgdStep(const std::vector<at::Tensor>& params) {
  at::NoGradGuard noGrad;
  for (const auto& p : params) p.sub_(p.grad() * kLr);
}

std::vector<at::Tensor> snapshot(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> out;
  for (const auto& p : params) out.push_back(p.detach().clone());
  return out;
}

// One process, the concatenated batch of every rank and micro-batch, token-mean loss.
std::vector<at::Tensor> trainReference(at::ScalarType type, int world, int accum) {
  std::vector<at::Tensor> p = initialLmParams(type, 0.0);
  for (auto& t : p) t.set_requires_grad(true);
  for (int step = 0; step < kSteps; ++step) {
    std::vector<at::Tensor> ids, labels;
    for (int r = 0; r < world; ++r) {
      for (int m = 0; m < accum; ++m) {
        MicroBatch b = makeBatch(step, r, m);
        ids.push_back(b.ids);
        labels.push_back(b.labels);
      }
    }
    at::Tensor loss = shiftedTokenLoss(lmLogits(p, at::cat(ids)), at::cat(labels),
                                       at::Reduction::Mean);
    loss.backward();
    sgdStep(p);
    for (auto& t : p) t.mutable_grad().reset();
  }
  return snapshot(p);
}

enum class Scaling {
  kGlobalItems,       // the contract: sum / global num_items, SUM all-reduce
  kLocalItems,        // wrong: sum / this rank's items, AVG all-reduce
  kMicroBatchMean,    // approximate contract without num_items: mean / accum, AVG
};

std::vector<at::Tensor> trainDistributed(dist::Communicator& comm, at::ScalarType type,
                                         int accum, Scaling scaling) {
  // Ranks start from different values: the constructor's broadcast must make them equal.
  TinyLm model(type, 0.25 * comm.rank());
  GradientSyncOptions o;
  o.op = scaling == Scaling::kGlobalItems ? ReduceOp::kSum : ReduceOp::kAvg;
  o.firstBucketCapMb = 200.0 / (1 << 20);  // several buckets, so ordering matters
  o.bucketCapMb = 300.0 / (1 << 20);
  GradientSync sync(model, comm, o);
  for (int step = 0; step < kSteps; ++step) {
    std::vector<MicroBatch> batches;
    std::vector<at::Tensor> labels;
    for (int m = 0; m < accum; ++m) {
      batches.push_back(makeBatch(step, comm.rank(), m));
      labels.push_back(batches.back().labels);
    }
    const std::int64_t localItems = dist::countItems(labels, -100, /*shiftLabels=*/true);
    const auto global = dist::reduceStepStats(comm, localItems, /*stopRequested=*/false);
    for (int m = 0; m < accum; ++m) {
      auto backward = [&] {
        at::Tensor sum = shiftedTokenLoss(lmLogits(model.p, batches[m].ids), batches[m].labels,
                                          at::Reduction::Sum);
        at::Tensor loss;
        switch (scaling) {
          case Scaling::kGlobalItems: loss = sum / static_cast<double>(global.numItems); break;
          case Scaling::kLocalItems: loss = sum / static_cast<double>(localItems); break;
          case Scaling::kMicroBatchMean:
            loss = sum / static_cast<double>(dist::countItems({batches[m].labels}, -100, true)) /
                   static_cast<double>(accum);
            break;
        }
        loss.backward();
      };
      if (m + 1 < accum) {
        auto guard = sync.noSync();
        backward();
      } else {
        backward();
      }
    }
    sync.finish();
    sgdStep(model.p);
    sync.zeroGrad();
  }
  return snapshot(model.p);
}

// True on every rank iff every rank holds bitwise the same parameters.
bool identicalAcrossRanks(dist::Communicator& comm, const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> flat;
  for (const auto& p : params) flat.push_back(p.reshape({-1}).to(at::kDouble));
  at::Tensor mine = at::cat(flat);
  at::Tensor all = comm.allGather(mine);
  bool same = true;
  for (int r = 0; r < comm.size(); ++r) same = same && at::equal(all[r], mine);
  return same;
}

void expectMatchesReference(at::ScalarType type, double tolerance) {
  auto comm = worldComm();
  bool ok = true;
  for (int accum : {1, 3}) {
    const auto got = trainDistributed(*comm, type, accum, Scaling::kGlobalItems);
    const auto want = trainReference(type, comm->size(), accum);
    const double worst = worstRelDiff(got, want);
    EXPECT_LE(worst, tolerance) << "accum=" << accum << " world=" << comm->size();
    const bool same = identicalAcrossRanks(*comm, got);
    EXPECT_TRUE(same) << "ranks diverged, accum=" << accum;
    ok = ok && worst <= tolerance && same;
  }
  EXPECT_TRUE(allRanks(ok));
}

TEST(GradientSyncExact, Float64MatchesOneProcessOnTheGlobalBatch) {
  expectMatchesReference(at::kDouble, 1e-10);
}

TEST(GradientSyncExact, Float32MatchesOneProcessOnTheGlobalBatch) {
  expectMatchesReference(at::kFloat, 1e-5);
}

// The test data must be able to catch the classic mistakes, or the test above proves little.
TEST(GradientSyncExact, PerRankAndPerMicroBatchScalingAreDetected) {
  auto comm = worldComm();
  bool ok = true;
  const auto refOne = trainReference(at::kDouble, comm->size(), 1);
  const double perRank = worstRelDiff(
      trainDistributed(*comm, at::kDouble, 1, Scaling::kLocalItems), refOne);
  if (comm->size() >= 2) {
    EXPECT_GT(perRank, 1e-6) << "per-rank normalisation went unnoticed";
    ok = ok && perRank > 1e-6;
  } else {
    EXPECT_LE(perRank, 1e-10) << "at world 1 local and global counts are the same";
    ok = ok && perRank <= 1e-10;
  }
  const auto refThree = trainReference(at::kDouble, comm->size(), 3);
  const double perMicro = worstRelDiff(
      trainDistributed(*comm, at::kDouble, 3, Scaling::kMicroBatchMean), refThree);
  EXPECT_GT(perMicro, 1e-6) << "per-micro-batch normalisation went unnoticed";
  ok = ok && perMicro > 1e-6;
  EXPECT_TRUE(allRanks(ok));
}

// ---- overlap ----

struct DeepMlp : torch::nn::Module {
  DeepMlp(int layers, std::int64_t width) {
    for (int i = 0; i < layers; ++i) {
      fc.push_back(register_module("fc" + std::to_string(i),
                                   std::make_shared<Affine>(width, width, at::kFloat, i * 1.3)));
    }
  }
  at::Tensor forward(at::Tensor x) {
    for (auto& l : fc) x = at::tanh(l->forward(x));
    return x;
  }
  std::vector<std::shared_ptr<Affine>> fc;
};

TEST(GradientSyncOverlap, SomeBucketLaunchesBeforeBackwardReturns) {
  auto comm = worldComm();
  bool ok = true;
  for (bool overlap : {true, false}) {
    DeepMlp model(6, 48);  // 9 KiB weights: one bucket each with ~8 KiB caps
    GradientSyncOptions o;
    o.firstBucketCapMb = o.bucketCapMb = 8.0 / 1024;
    o.overlap = overlap;
    GradientSync sync(model, *comm, o);
    const bool enoughBuckets = sync.numBuckets() >= 4;
    EXPECT_TRUE(enoughBuckets) << sync.numBuckets() << " buckets";
    ok = ok && enoughBuckets;
    for (int iter = 0; iter < 3; ++iter) {
      const at::Tensor x = detValues({16, 48}, comm->rank() + iter, at::kFloat);
      const auto before = Clock::now();
      model.forward(x).pow(2).sum().backward();
      const auto backwardReturned = Clock::now();
      sync.finish();
      int early = 0, launched = 0;
      for (const auto& t : sync.lastLaunchTimes()) {
        launched += t >= before ? 1 : 0;
        early += (t >= before && t < backwardReturned) ? 1 : 0;
      }
      const bool allLaunched = launched == static_cast<int>(sync.numBuckets());
      EXPECT_TRUE(allLaunched) << launched << " of " << sync.numBuckets() << " launched";
      // With overlap at least one bucket must start inside backward; without, none may.
      const bool right = overlap ? early >= 1 : early == 0;
      EXPECT_TRUE(right) << "overlap=" << overlap << ": " << early << " of "
                         << sync.numBuckets() << " buckets launched before backward returned";
      ok = ok && allLaunched && right;
      sync.zeroGrad();
    }
  }
  EXPECT_TRUE(allRanks(ok));
}

// ---- mismatched models ----

struct TwoLayer : torch::nn::Module {
  TwoLayer(std::int64_t fc2Out, at::ScalarType fc2Type, bool extraLayer) {
    fc1 = register_module("fc1", std::make_shared<Affine>(4, 4, at::kDouble, 0.1));
    fc2 = register_module("fc2", std::make_shared<Affine>(4, fc2Out, fc2Type, 0.2));
    if (extraLayer) register_module("fc3", std::make_shared<Affine>(4, 4, at::kDouble, 0.3));
  }
  std::shared_ptr<Affine> fc1, fc2;
};

TEST(GradientSyncMismatch, EveryRankNamesTheFirstDifference) {
  auto probe = worldComm();
  if (probe->size() < 2) GTEST_SKIP() << "a mismatch needs at least 2 ranks";
  const int last = probe->size() - 1;
  const bool odd = probe->rank() == last;
  const std::string L = std::to_string(last);
  struct Case {
    std::int64_t fc2Out;
    at::ScalarType fc2Type;
    bool extra;
    double bucketCapMb;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {odd ? 3 : 4, at::kDouble, false, 25.0,
       "rank " + L + " parameter 'fc2.weight' has shape [3, 4], rank 0 has [4, 4]"},
      {4, odd ? at::kFloat : at::kDouble, false, 25.0,
       "rank " + L + " parameter 'fc2.weight' has dtype float32, rank 0 has float64"},
      {4, at::kDouble, odd, 25.0,
       "rank " + L + " has an extra parameter 'fc3.weight' [4, 4] float64 that rank 0 lacks"},
      {4, at::kDouble, false, odd ? 10.0 : 25.0,
       "rank " + L + " has GradientSync options {bucketCapMb=10,"},
  };
  bool ok = true;
  for (const auto& c : cases) {
    constexpr double kTimeout = 20.0;
    auto comm = worldComm(kTimeout);
    TwoLayer model(c.fc2Out, c.fc2Type, c.extra);
    GradientSyncOptions o;
    o.bucketCapMb = c.bucketCapMb;
    const auto start = Clock::now();
    const std::string msg =
        messageOf<DistError>([&] { GradientSync sync(model, *comm, o); });
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    const bool named = msg.find(c.expected) != std::string::npos;
    EXPECT_TRUE(named) << "got: '" << msg << "'\nwant: '" << c.expected << "'";
    EXPECT_LT(seconds, kTimeout);
    // The check is an orderly agreement, not a failure: the communicator stays usable.
    comm->barrier();
    ok = ok && named && seconds < kTimeout;
  }
  EXPECT_TRUE(allRanks(ok));
}

// ---- unused parameters, reduction ops, grad views, no_sync ----

// fc1 -> [extra] -> fc2; `extra` sits between the others in registration order, so its bucket
// blocks fc1's bucket from launching early when it is unused (order must still hold).
struct Branchy : torch::nn::Module {
  Branchy() {
    fc1 = register_module("fc1", std::make_shared<Affine>(4, 4, at::kDouble, 0.1));
    extra = register_module("extra", std::make_shared<Affine>(4, 4, at::kDouble, 0.2));
    fc2 = register_module("fc2", std::make_shared<Affine>(4, 3, at::kDouble, 0.3));
  }
  at::Tensor forward(const at::Tensor& x, bool useExtra) {
    at::Tensor h = at::tanh(fc1->forward(x));
    if (useExtra) h = h + at::tanh(extra->forward(h));
    return fc2->forward(h);
  }
  std::shared_ptr<Affine> fc1, extra, fc2;
};

GradientSyncOptions tinyBuckets() {
  GradientSyncOptions o;
  o.firstBucketCapMb = o.bucketCapMb = 64.0 / (1 << 20);  // about one parameter per bucket
  return o;
}

at::Tensor branchyInput(int rank) { return detValues({5, 4}, 1.0 + rank, at::kDouble); }

// Local gradients of an untouched copy, all-reduced by hand: the expected global gradient.
std::vector<at::Tensor> manualGlobalGrads(dist::Communicator& comm, bool useExtra, ReduceOp op) {
  Branchy ref;
  ref.forward(branchyInput(comm.rank()), useExtra).pow(2).sum().backward();
  std::vector<at::Tensor> out;
  for (const auto& p : ref.parameters()) {
    at::Tensor g = p.grad().defined() ? p.grad().clone() : at::zeros_like(p);
    comm.allReduce(g, op);
    out.push_back(g);
  }
  return out;
}

std::vector<at::Tensor> gradsOf(torch::nn::Module& m) {
  std::vector<at::Tensor> out;
  for (const auto& p : m.parameters()) out.push_back(p.grad().clone());
  return out;
}

TEST(GradientSyncUnused, ErrorOnEveryRankByDefault) {
  auto comm = worldComm();
  const int last = comm->size() - 1;
  bool ok = true;
  {  // no rank uses `extra`
    Branchy model;
    GradientSync sync(model, *comm, tinyBuckets());
    model.forward(branchyInput(comm->rank()), false).pow(2).sum().backward();
    const std::string msg = messageOf<DistError>([&] { sync.finish(); });
    const bool named = msg.find("'extra.weight', 'extra.bias'") != std::string::npos &&
                       msg.find("findUnusedParameters") != std::string::npos;
    EXPECT_TRUE(named) << msg;
    // The failed step leaves the object usable for the next one.
    sync.zeroGrad();
    model.forward(branchyInput(comm->rank()), true).pow(2).sum().backward();
    const std::string again = messageOf<DistError>([&] { sync.finish(); });
    EXPECT_EQ(again, "");
    ok = ok && named && again.empty();
  }
  {  // only the last rank skips it: the others must fail too, not wait
    Branchy model;
    GradientSync sync(model, *comm, tinyBuckets());
    model.forward(branchyInput(comm->rank()), comm->rank() != last).pow(2).sum().backward();
    const std::string msg = messageOf<DistError>([&] { sync.finish(); });
    const std::string want = comm->rank() == last
                                 ? "rank " + std::to_string(last) +
                                       " has parameter(s) without a gradient in this step: "
                                       "'extra.weight', 'extra.bias'"
                                 : "another rank has parameter(s) without a gradient";
    const bool named = msg.find(want) != std::string::npos;
    EXPECT_TRUE(named) << "got: " << msg;
    ok = ok && named;
  }
  EXPECT_TRUE(allRanks(ok));
}

TEST(GradientSyncUnused, FindUnusedParametersReducesWhatIsThere) {
  auto comm = worldComm();
  const int last = comm->size() - 1;
  // The expected value: ranks that used `extra` contribute, the last rank contributes zeros.
  std::vector<at::Tensor> want;
  {
    Branchy ref;
    ref.forward(branchyInput(comm->rank()), comm->rank() != last).pow(2).sum().backward();
    for (const auto& p : ref.parameters()) {
      at::Tensor g = p.grad().defined() ? p.grad().clone() : at::zeros_like(p);
      comm->allReduce(g);
      want.push_back(g);
    }
  }
  Branchy model;
  GradientSyncOptions o = tinyBuckets();
  o.findUnusedParameters = true;
  GradientSync sync(model, *comm, o);
  model.forward(branchyInput(comm->rank()), comm->rank() != last).pow(2).sum().backward();
  const std::string msg = messageOf<DistError>([&] { sync.finish(); });
  EXPECT_EQ(msg, "");
  const double worst = msg.empty() ? worstRelDiff(gradsOf(model), want) : 1.0;
  EXPECT_LE(worst, 1e-12);
  EXPECT_TRUE(allRanks(msg.empty() && worst <= 1e-12));
}

TEST(GradientSyncOps, SumAndAvgMatchAManualAllReduce) {
  auto comm = worldComm();
  bool ok = true;
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg}) {
    const auto want = manualGlobalGrads(*comm, true, op);
    Branchy model;
    GradientSyncOptions o = tinyBuckets();
    o.op = op;
    GradientSync sync(model, *comm, o);
    model.forward(branchyInput(comm->rank()), true).pow(2).sum().backward();
    sync.finish();
    const double worst = worstRelDiff(gradsOf(model), want);
    EXPECT_LE(worst, 1e-12) << dist::toString(op);
    ok = ok && worst <= 1e-12;
  }
  EXPECT_TRUE(allRanks(ok));
}

TEST(GradientSyncBuffers, GradsAreViewsOfTheBucketBuffers) {
  auto comm = worldComm();
  Branchy model;
  GradientSync sync(model, *comm, tinyBuckets());
  const auto params = model.parameters();
  auto aliased = [&] {
    bool all = sync.paramSlots().size() == params.size();
    for (std::size_t i = 0; all && i < params.size(); ++i) {
      const auto& s = sync.paramSlots()[i];
      const at::Tensor& flat = sync.bucketGradients().at(s.bucket);
      all = params[i].grad().defined() && s.numel == params[i].numel() &&
            params[i].grad().data_ptr<double>() == flat.data_ptr<double>() + s.offset;
    }
    return all;
  };
  bool ok = aliased();
  EXPECT_TRUE(ok) << "after construction";
  model.forward(branchyInput(comm->rank()), true).pow(2).sum().backward();
  sync.finish();
  const bool afterStep = aliased();
  EXPECT_TRUE(afterStep) << "after backward + finish (autograd must accumulate in place)";
  // A user resetting .grad() (optimizer zero_grad with set_to_none) must not break the sync.
  sync.zeroGrad();
  params[0].mutable_grad().reset();
  params[3].mutable_grad() = at::zeros_like(params[3]);
  model.forward(branchyInput(comm->rank()), true).pow(2).sum().backward();
  sync.finish();
  const bool rebound = aliased();
  EXPECT_TRUE(rebound) << "after the user replaced .grad()";
  const double worst = worstRelDiff(gradsOf(model), manualGlobalGrads(*comm, true, ReduceOp::kSum));
  EXPECT_LE(worst, 1e-12);
  EXPECT_TRUE(allRanks(ok && afterStep && rebound && worst <= 1e-12));
}

TEST(GradientSyncNoSync, AccumulatesWithoutCommunicating) {
  CountingBackend* counter = nullptr;
  auto comm = countingComm(&counter);
  Branchy model;
  GradientSync sync(model, *comm, tinyBuckets());
  const int base = counter->allReduces;
  {
    auto guard = sync.noSync();
    EXPECT_FALSE(sync.syncEnabled());
    model.forward(branchyInput(comm->rank()), true).pow(2).sum().backward();
    sync.finish();  // inside noSync: nothing to do, not collective
  }
  EXPECT_TRUE(sync.syncEnabled());
  const int duringNoSync = counter->allReduces - base;
  EXPECT_EQ(duringNoSync, 0);
  model.forward(branchyInput(comm->rank()), true).pow(2).sum().backward();
  sync.finish();
  const int synced = counter->allReduces - base;
  EXPECT_EQ(synced, static_cast<int>(sync.numBuckets()));
  // Two identical micro-batches: the reduced gradient is twice one micro-batch's.
  auto want = manualGlobalGrads(*comm, true, ReduceOp::kSum);
  for (auto& w : want) w.mul_(2.0);
  const double worst = worstRelDiff(gradsOf(model), want);
  EXPECT_LE(worst, 1e-12);
  EXPECT_TRUE(allRanks(duringNoSync == 0 && synced == static_cast<int>(sync.numBuckets()) &&
                       worst <= 1e-12));
}

// ---- pure unit tests (no collective beyond world size 1 semantics) ----

TEST(UnitGradientSync, RejectsBadOptions) {
  auto comm = worldComm();
  Branchy model;
  GradientSyncOptions o;
  o.op = ReduceOp::kMax;
  EXPECT_NE(messageOf<ConfigError>([&] { GradientSync s(model, *comm, o); }), "");
  o = GradientSyncOptions{};
  o.bucketCapMb = 0;
  EXPECT_NE(messageOf<ConfigError>([&] { GradientSync s(model, *comm, o); }), "");
}

}  // namespace
}  // namespace cohort::test
