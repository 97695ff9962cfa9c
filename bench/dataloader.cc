// Samples/s of the memory-mapped token dataset (openTokenDataset) + defaultCollate through
// the DataLoader with 0, 2 and 4 worker threads (scripts/bench dataloader; the baseline is
// bench/dataloader_numpy.py, nanoGPT's numpy.memmap reading of the same windows).
//   --make-file PATH --tokens N   writes N random uint16 ids (GPT-2's vocabulary) and exits
//   --file PATH --seq T --batch B --samples N [--repeats R] [--workers 0,2,4]
//       times N samples (N / B steps of world 1, shuffled, data_seed 42) per variant, after
//       one untimed step, in the order 0 2 4 then 4 2 0 ... (R passes, alternating); prints
//       RATE cohort <workers> <samples/s> <samples> <checksum of the ids read>
//   --dump-order PATH             writes the first N windows of that order (one index per
//       line) for the numpy baseline, and exits.
// One process, OMP/intra-op threads 1: the workers are the data loader's own threads.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cohort/trainer/data.h"
#include "cohort/trainer/token_dataset.h"

using namespace cohort::trainer;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  std::string file, makeFile, dumpOrder;
  std::int64_t tokens = 0, seq = 1024, batch = 8, samples = 4096;
  int repeats = 2;
  std::vector<int> workers{0, 2, 4};
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--file")
      o.file = v;
    else if (k == "--make-file")
      o.makeFile = v;
    else if (k == "--dump-order")
      o.dumpOrder = v;
    else if (k == "--tokens")
      o.tokens = std::stoll(v);
    else if (k == "--seq")
      o.seq = std::stoll(v);
    else if (k == "--batch")
      o.batch = std::stoll(v);
    else if (k == "--samples")
      o.samples = std::stoll(v);
    else if (k == "--repeats")
      o.repeats = std::stoi(v);
    else if (k == "--workers") {
      o.workers.clear();
      std::stringstream ss(v);
      for (std::string w; std::getline(ss, w, ',');) o.workers.push_back(std::stoi(w));
    } else {
      std::fprintf(stderr, "bench_dataloader: unknown option %s\n", k.c_str());
      std::exit(2);
    }
  }
  return o;
}

int makeFile(const Options& o) {
  std::mt19937 gen(1);
  std::uniform_int_distribution<int> id(0, 50256);
  std::vector<std::uint16_t> chunk(1 << 20);
  std::ofstream out(o.makeFile, std::ios::binary);
  for (std::int64_t left = o.tokens; left > 0;) {
    const std::int64_t n = std::min<std::int64_t>(left, static_cast<std::int64_t>(chunk.size()));
    for (std::int64_t i = 0; i < n; ++i)
      chunk[static_cast<std::size_t>(i)] = static_cast<std::uint16_t>(id(gen));
    out.write(reinterpret_cast<const char*>(chunk.data()), n * 2);
    left -= n;
  }
  return out.good() ? 0 : 1;
}

// Samples/s of one variant; `checksum` gets the sum of the first id of every window read.
double measure(const std::shared_ptr<const Dataset>& data, const GlobalBatchPlan& plan, int workers,
               std::int64_t steps, std::int64_t& checksum) {
  DataLoader loader(data, defaultCollate, plan, 0, workers, 2, false);
  loader.next();  // untimed: starts the workers
  checksum = 0;
  const auto t0 = Clock::now();
  std::int64_t samples = 0;
  for (std::int64_t s = 0; s < steps; ++s) {
    const StepData d = loader.next();
    for (const Batch& b : d.micro) {
      samples += b.size;
      checksum += b.input.select(1, 0).sum().item<std::int64_t>();
    }
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return static_cast<double>(samples) / seconds;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  if (!o.makeFile.empty()) return makeFile(o);
  at::set_num_threads(1);
  try {
    auto data = openTokenDataset({{o.file}, o.seq, 50257, "uint16"});
    const GlobalBatchPlan plan(data->size(), o.batch, 1, 1, true, 42, true);
    const std::int64_t steps = o.samples / o.batch;
    if (!o.dumpOrder.empty()) {
      // The windows the timed steps read: steps 1 .. steps of epoch 0 (step 0 is the warm-up).
      const auto order = plan.epochOrder(0);
      std::ofstream out(o.dumpOrder);
      for (std::int64_t i = o.batch; i < (steps + 1) * o.batch; ++i)
        out << order[static_cast<std::size_t>(i)] << '\n';
      return 0;
    }
    for (int r = 0; r < o.repeats; ++r) {
      std::vector<int> ws = o.workers;
      if (r % 2 == 1) std::reverse(ws.begin(), ws.end());
      for (int w : ws) {
        std::int64_t checksum = 0;
        const double rate = measure(data, plan, w, steps, checksum);
        std::printf("RATE cohort %d %.1f %lld %lld\n", w, rate,
                    static_cast<long long>(steps * o.batch), static_cast<long long>(checksum));
        std::fflush(stdout);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_dataloader: %s\n", e.what());
    return 1;
  }
  return 0;
}
