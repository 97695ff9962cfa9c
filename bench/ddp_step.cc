// One data-parallel training step of a ~25 M-parameter MLP (1024-2560x4-1024, batch 32 per
// rank, AdamW), as Cohort runs it: GradientSync (buckets all-reduced while backward runs, or
// after it with --overlap 0) and FusedOptimizer over the flat buffers. Prints on rank 0:
//   STEP cohort_overlap|cohort_no_overlap[_replicated] <world> <median step seconds>
// By default the update is sharded (GradientSyncOptions::shardedUpdate); --sharded 0 runs
// the replicated update (every rank updates every parameter, as DDP). --bf16comm 1 reduces
// the gradient buckets in bfloat16 (ddp_bf16_grad_comm): variant cohort_overlap_bf16comm.
// Also prints, on rank 0, `BYTES <variant> <world> <bytes>`: the gradient bytes this rank
// handed to the communicator in the last step (GradientSync::lastStepCommBytes).
// scripts/bench ddp_step runs it at world 1 and 2 next to PyTorch DDP (bench/ddp_step_pytorch.py).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <mpi.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "cohort/dist/device.h"
#include "cohort/dist/fused_optimizer.h"
#include "cohort/dist/gradient_sync.h"
#include "cohort/dist/runtime.h"

int main(int argc, char** argv) {
  at::set_num_threads(1);
  auto rt = cohort::dist::init(&argc, &argv);
  int steps = 10, overlap = 1, sharded = 1, bf16comm = 0;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--steps") == 0) steps = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--overlap") == 0) overlap = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--sharded") == 0) sharded = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--bf16comm") == 0) bf16comm = std::atoi(argv[i + 1]);
  }
  std::vector<int64_t> dims;
  std::stringstream spec(std::getenv("DDP_BENCH_DIMS") ? std::getenv("DDP_BENCH_DIMS")
                                                        : "1024,2560,2560,2560,2560,1024");
  for (std::string d; std::getline(spec, d, ',');) dims.push_back(std::stoll(d));
  const int64_t batch = std::getenv("DDP_BENCH_BATCH") ? std::atoll(std::getenv("DDP_BENCH_BATCH")) : 32;

  cohort::dist::DeviceChoice cpu;
  auto comm = cohort::dist::makeCommunicator(*rt, cpu);
  torch::manual_seed(0);
  torch::nn::Sequential model;
  for (std::size_t i = 0; i + 1 < dims.size(); ++i) {
    model->push_back(torch::nn::Linear(dims[i], dims[i + 1]));
    if (i + 2 < dims.size()) model->push_back(torch::nn::ReLU());
  }
  cohort::dist::GradientSyncOptions so;
  so.op = cohort::dist::ReduceOp::kAvg;  // per-rank mean loss, as DDP
  so.overlap = overlap != 0;
  so.shardedUpdate = sharded != 0;  // ZeRO-1 style: each rank updates 1/N of the parameters
  so.bf16Communication = bf16comm != 0;
  cohort::dist::GradientSync sync(*model, *comm, so);
  cohort::dist::OptimizerOptions ao;
  ao.lr = 1e-4;
  ao.weightDecay = 0.01;
  cohort::dist::FusedOptimizer opt(sync, ao);

  at::Generator gen = at::detail::createCPUGenerator(1 + rt->rank());
  at::Tensor x = at::randn({batch, dims.front()}, gen);
  at::Tensor y = at::randn({batch, dims.back()}, gen);
  std::vector<double> times;
  double phases[4] = {0, 0, 0, 0};  // forward, backward, finish, optimizer (rank 0)
  const int warmup = 2;
  for (int s = 0; s < warmup + steps; ++s) {
    comm->barrier();
    const auto t0 = std::chrono::steady_clock::now();
    sync.zeroGrad();
    at::Tensor loss = (model->forward(x) - y).pow(2).mean();
    const auto t1 = std::chrono::steady_clock::now();
    loss.backward();
    const auto t2 = std::chrono::steady_clock::now();
    sync.finish();
    const auto t3 = std::chrono::steady_clock::now();
    opt.step();
    const auto t4 = std::chrono::steady_clock::now();
    if (s >= warmup) {
      auto sec = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
      phases[0] += sec(t0, t1);
      phases[1] += sec(t1, t2);
      phases[2] += sec(t2, t3);
      phases[3] += sec(t3, t4);
    }
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (s >= warmup) times.push_back(dt);
  }
  std::sort(times.begin(), times.end());
  if (rt->rank() == 0) {
    int64_t params = 0;
    for (const auto& p : model->parameters()) params += p.numel();
    const std::string variant = std::string(overlap ? "cohort_overlap" : "cohort_no_overlap") +
                                (sharded ? "" : "_replicated") + (bf16comm ? "_bf16comm" : "");
    std::printf("STEP %s %d %.6f params=%lld buckets=%zu\n", variant.c_str(), rt->worldSize(),
                times[times.size() / 2], static_cast<long long>(params), sync.numBuckets());
    std::printf("BYTES %s %d %lld\n", variant.c_str(), rt->worldSize(),
                static_cast<long long>(sync.lastStepCommBytes()));
    std::printf("PHASES forward %.4f backward %.4f finish %.4f optimizer %.4f (mean s, rank 0)\n",
                phases[0] / steps, phases[1] / steps, phases[2] / steps, phases[3] / steps);
  }
  return 0;
}
