// Peak memory of a large-vocabulary evaluation (cohort::trainer::evaluate): a token model
// whose logits are [batch, seq, vocab] float32 (default 8 x 64 x 32000 = 65 MB per batch),
// evaluated with plain gathering (every logit reaches rank 0: dataset x seq x vocab), with
// preprocess_logits_for_metrics = argmax (dataset x seq ids), and either of them with
// eval_accumulation_steps. Peak RSS is per process, so each variant is its own launch:
//   mpirun -np 2 bench_eval_memory --variant plain|preprocess|accum|preprocess_accum
//                                  [--samples 256] [--vocab 32000] [--seq 64] [--batch 8]
//                                  [--accum 4]
// Prints on rank 0 one line:
//   EVALMEM <variant> <samples> <world> <peak_rss_mb max over ranks> <rank 0 peak_rss_mb>
//           <baseline_rss_mb> <runtime_s> <accumulator_peak_mb> <host_arrays_peak_mb>
// scripts/bench eval_memory interleaves the variants over several launches.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <mpi.h>
#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cohort/dist/device.h"
#include "cohort/dist/runtime.h"
#include "cohort/trainer/evaluation.h"
#include "cohort/trainer/trainer.h"

namespace {

using namespace cohort::trainer;

// Peak resident set size of this process so far, in MiB (Linux reports ru_maxrss in KiB).
double peakRssMb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

class TokenData : public Dataset {
 public:
  TokenData(std::int64_t n, std::int64_t seq, std::int64_t vocab)
      : n_(n), seq_(seq), vocab_(vocab) {}
  std::int64_t size() const override { return n_; }
  Sample get(std::int64_t i) const override {
    at::Tensor ids = (at::arange(seq_, at::kLong) * 31 + i * 17).remainder(vocab_);
    return {ids, ids.clone()};
  }

 private:
  std::int64_t n_, seq_, vocab_;
};

}  // namespace

int main(int argc, char** argv) {
  at::set_num_threads(1);
  auto rt = cohort::dist::init(&argc, &argv);
  std::string variant = "plain";
  std::int64_t samples = 256, vocab = 32000, seq = 64, batch = 8, accum = 4, dim = 16;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const char* v = argv[i + 1];
    if (k == "--variant") {
      variant = v;
    } else if (k == "--samples") {
      samples = std::atoll(v);
    } else if (k == "--vocab") {
      vocab = std::atoll(v);
    } else if (k == "--seq") {
      seq = std::atoll(v);
    } else if (k == "--batch") {
      batch = std::atoll(v);
    } else if (k == "--accum") {
      accum = std::atoll(v);
    } else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  const bool preprocess = variant == "preprocess" || variant == "preprocess_accum";
  const bool accumulate = variant == "accum" || variant == "preprocess_accum";
  if (!preprocess && !accumulate && variant != "plain") {
    std::fprintf(stderr, "unknown variant %s\n", variant.c_str());
    return 2;
  }

  auto comm = cohort::dist::makeCommunicator(*rt, cohort::dist::DeviceChoice{});
  at::Tensor embed = at::randn({vocab, dim}, at::kFloat) * 0.1;
  at::Tensor head = at::randn({dim, vocab}, at::kFloat) * 0.1;

  EvalParts parts;
  parts.forward = [&](const Batch& b) {
    return ModelOutput{at::matmul(at::embedding(embed, b.input), head), {}};
  };
  parts.dataset = std::make_shared<TokenData>(samples, seq, vocab);
  parts.computeMetrics = [](const EvalPrediction& p) {
    at::Tensor ids = p.predictions.dim() == 3 ? p.predictions.argmax(-1) : p.predictions;
    at::Tensor pred = ids.narrow(1, 0, ids.size(1) - 1);
    at::Tensor target = p.labels.narrow(1, 1, p.labels.size(1) - 1);
    at::Tensor mask = target.ne(-100);
    return std::map<std::string, double>{
        {"accuracy", (pred.eq(target) & mask).sum().item<double>() / mask.sum().item<double>()}};
  };
  if (preprocess) {
    parts.preprocessLogits = [](const at::Tensor& logits, const at::Tensor&) {
      return logits.argmax(-1);
    };
  }
  EvalOptions o;
  o.perDeviceEvalBatchSize = batch;
  o.shiftLabels = true;
  o.evalAccumulationSteps = accumulate ? accum : 0;

  comm->barrier();
  const double baseline = peakRssMb();
  const EvalResult r = evaluate(*comm, parts, o);
  const double peak = peakRssMb();

  double mine[2] = {peak, baseline}, worst[2] = {0, 0};
  MPI_Reduce(mine, worst, 2, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
  if (comm->rank() == 0) {
    std::printf("EVALMEM %s %lld %d %.1f %.1f %.1f %.3f %.1f %.1f\n", variant.c_str(),
                static_cast<long long>(samples), comm->size(), worst[0], peak, worst[1],
                r.metrics.at("eval_runtime"),
                static_cast<double>(r.peakAccumulatedBytes) / (1 << 20),
                static_cast<double>(r.peakHostBytes) / (1 << 20));
    std::fflush(stdout);
  }
  return 0;
}
