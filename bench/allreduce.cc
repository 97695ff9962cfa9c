// All-reduce bandwidth: Cohort's Communicator::allReduce vs raw MPI_Allreduce, interleaved
// (A B, B A, ...) in the same launch, float32 sum, in place, on the same buffer. Prints one
// ROW line per size and variant (the median over repetitions), then CROW lines for 1 and
// 16 MiB with one CPU-bound thread per rank competing for its core; scripts/bench aggregates
// several launches.
//   usage: mpirun -np N bench_allreduce [--min-kib 4] [--max-mib 256] [--reps 6]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "cohort/dist/communicator.h"
#include "cohort/dist/device.h"
#include "cohort/dist/runtime.h"

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Seconds per all-reduce; the slowest rank's time counts.
template <typename F>
double timeIt(int iters, F&& f) {
  MPI_Barrier(MPI_COMM_WORLD);
  const double t0 = now();
  for (int i = 0; i < iters; ++i) f();
  double dt = (now() - t0) / iters;
  MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return dt;
}

// One timed block of each variant on `a` (filled with 0.5 first: the sums double the values).
struct Variants {
  cohort::dist::Communicator& comm;
  at::Tensor a;
  int iters;
  std::vector<double> tc, tm;
  void cohort() {
    a.fill_(0.5);
    tc.push_back(timeIt(iters, [&] { comm.allReduce(a); }));
  }
  void mpi() {
    a.fill_(0.5);
    tm.push_back(timeIt(iters, [&] {
      MPI_Allreduce(MPI_IN_PLACE, a.data_ptr<float>(), static_cast<int>(a.numel()), MPI_FLOAT,
                    MPI_SUM, MPI_COMM_WORLD);
    }));
  }
  // On rank 0: `<tag> <bytes> cohort|mpi <seconds> <busbw GB/s>` of the medians.
  void print(const char* tag, std::size_t bytes, double busFactor) const {
    const double c = median(tc), m = median(tm);
    std::printf("%s %zu cohort %.6e %.4f\n", tag, bytes, c, bytes / c * busFactor / 1e9);
    std::printf("%s %zu mpi %.6e %.4f\n", tag, bytes, m, bytes / m * busFactor / 1e9);
    std::fflush(stdout);
  }
};

}  // namespace

int main(int argc, char** argv) {
  at::set_num_threads(1);
  auto rt = cohort::dist::init(&argc, &argv);
  int maxMib = 256, reps = 6, minKib = 4;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--max-mib") == 0) maxMib = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--min-kib") == 0) minKib = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--reps") == 0) reps = std::atoi(argv[i + 1]);
  }
  cohort::dist::DeviceChoice cpu;
  auto comm = cohort::dist::makeCommunicator(*rt, cpu);
  const int n = rt->worldSize();
  const double busFactor = n > 1 ? 2.0 * (n - 1) / n : 1.0;
  for (std::size_t bytes = static_cast<std::size_t>(minKib) << 10;
       bytes <= static_cast<std::size_t>(maxMib) << 20; bytes *= 4) {
    const int64_t count = static_cast<int64_t>(bytes / 4);
    // Both variants reduce the same buffer: on this VM the speed of memory differs between
    // buffers (and over time) by up to ~10x, so separate buffers would compare memory too.
    // Enough iterations for ~0.2 s per sample at 1 GB/s, at least 2.
    Variants v{*comm, at::full({count}, 0.5f, at::kFloat),
               std::max<int>(2, static_cast<int>(2e8 / static_cast<double>(bytes)))};
    comm->allReduce(v.a);  // warm-up both paths
    MPI_Allreduce(MPI_IN_PLACE, v.a.data_ptr<float>(), static_cast<int>(count), MPI_FLOAT,
                  MPI_SUM, MPI_COMM_WORLD);
    for (int r = 0; r < reps; ++r) {  // A B, B A, ...: neither variant always goes first
      if (r % 2 == 0) {
        v.cohort();
        v.mpi();
      } else {
        v.mpi();
        v.cohort();
      }
    }
    if (rt->rank() == 0) v.print("ROW", bytes, busFactor);
  }
  // Contended: one CPU-bound thread per rank (a data-loader worker, another job's process)
  // competes for the rank's core while both variants run 1 and 16 MiB all-reduces.
  std::atomic<bool> stop{false};
  std::thread hog([&] {
    volatile std::uint64_t x = 0;
    while (!stop.load(std::memory_order_relaxed)) x = x + 1;
  });
  for (std::size_t bytes : {std::size_t{1} << 20, std::size_t{16} << 20}) {
    if (bytes > static_cast<std::size_t>(maxMib) << 20) continue;
    const int64_t count = static_cast<int64_t>(bytes / 4);
    Variants v{*comm, at::full({count}, 0.5f, at::kFloat),
               std::max<int>(2, static_cast<int>(2e7 / static_cast<double>(bytes)))};
    for (int r = 0; r < 4; ++r) {
      v.cohort();
      v.mpi();
    }
    if (rt->rank() == 0) v.print("CROW", bytes, busFactor);
  }
  stop = true;
  hog.join();
  if (rt->rank() == 0) std::printf("WORLD %d\n", n);
  comm.reset();
  return 0;
}
