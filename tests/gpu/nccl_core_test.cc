// Standalone test of the NCCL core: links only CUDA, NCCL and MPI (no LibTorch, no gtest) so
// it can be carried to a GPU machine alone. Without a visible CUDA device it checks the one
// clear error every rank must raise; with devices it checks each collective x dtype against
// a host reference (any world size with one GPU per rank; world size 1 on a single GPU).
#include <cuda_runtime_api.h>
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cohort/dist/error.h"
#include "nccl_backend.h"
#include "reduce.h"

using namespace cohort::dist;

namespace {

int gPassed = 0, gFailed = 0, gRank = 0, gSize = 1;

void check(bool ok, const std::string& what) {
  if (ok) {
    ++gPassed;
  } else {
    ++gFailed;
    std::printf("[rank %d] FAIL: %s\n", gRank, what.c_str());
  }
}

double contribution(int rank, std::size_t i) { return static_cast<double>((i * 7 + rank * 3 + 1) % 13); }

// Host encode/decode of one element of dtype t.
void put(std::vector<char>& buf, std::size_t i, DType t, double v) {
  char* p = buf.data() + i * elementSize(t);
  switch (t) {
    case DType::kFloat32: { float x = static_cast<float>(v); std::memcpy(p, &x, 4); break; }
    case DType::kFloat64: std::memcpy(p, &v, 8); break;
    case DType::kBFloat16: { auto x = detail::floatToBf16(static_cast<float>(v)); std::memcpy(p, &x, 2); break; }
    case DType::kFloat16: { auto x = detail::floatToFp16(static_cast<float>(v)); std::memcpy(p, &x, 2); break; }
    case DType::kInt32: { auto x = static_cast<std::int32_t>(v); std::memcpy(p, &x, 4); break; }
    case DType::kInt64: { auto x = static_cast<std::int64_t>(v); std::memcpy(p, &x, 8); break; }
    case DType::kUInt8: { auto x = static_cast<std::uint8_t>(v); std::memcpy(p, &x, 1); break; }
  }
}

double get(const std::vector<char>& buf, std::size_t i, DType t) {
  const char* p = buf.data() + i * elementSize(t);
  switch (t) {
    case DType::kFloat32: { float x; std::memcpy(&x, p, 4); return x; }
    case DType::kFloat64: { double x; std::memcpy(&x, p, 8); return x; }
    case DType::kBFloat16: { std::uint16_t x; std::memcpy(&x, p, 2); return detail::bf16ToFloat(x); }
    case DType::kFloat16: { std::uint16_t x; std::memcpy(&x, p, 2); return detail::fp16ToFloat(x); }
    case DType::kInt32: { std::int32_t x; std::memcpy(&x, p, 4); return x; }
    case DType::kInt64: { std::int64_t x; std::memcpy(&x, p, 8); return static_cast<double>(x); }
    case DType::kUInt8: { std::uint8_t x; std::memcpy(&x, p, 1); return x; }
  }
  return NAN;
}

void runCollectives(Backend& b) {
  const DType types[] = {DType::kFloat32, DType::kFloat64, DType::kBFloat16, DType::kFloat16,
                         DType::kInt32,   DType::kInt64,   DType::kUInt8};
  const std::size_t n = 1000;
  for (DType t : types) {
    const std::size_t es = elementSize(t);
    std::vector<char> host(n * es * gSize);
    void* dev = nullptr;
    cudaMalloc(&dev, n * es * gSize);
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kMin, ReduceOp::kAvg}) {
      if (op == ReduceOp::kAvg && !isFloating(t)) continue;
      for (std::size_t i = 0; i < n; ++i) put(host, i, t, contribution(gRank, i));
      cudaMemcpy(dev, host.data(), n * es, cudaMemcpyHostToDevice);
      b.allReduce(dev, n, t, op)->wait();
      cudaMemcpy(host.data(), dev, n * es, cudaMemcpyDeviceToHost);
      bool ok = true;
      for (std::size_t i = 0; i < n && ok; ++i) {
        double want = contribution(0, i);
        for (int r = 1; r < gSize; ++r) {
          const double c = contribution(r, i);
          want = op == ReduceOp::kMax ? std::max(want, c)
                 : op == ReduceOp::kMin ? std::min(want, c) : want + c;
        }
        if (op == ReduceOp::kAvg) want /= gSize;
        ok = std::fabs(get(host, i, t) - want) <= 1e-2 * std::fabs(want) + 1e-6;
      }
      check(ok, std::string("all_reduce ") + toString(op) + " " + toString(t));
    }
    // broadcast from the last rank
    for (std::size_t i = 0; i < n; ++i) put(host, i, t, contribution(gRank, i));
    cudaMemcpy(dev, host.data(), n * es, cudaMemcpyHostToDevice);
    b.broadcast(dev, n, t, gSize - 1)->wait();
    cudaMemcpy(host.data(), dev, n * es, cudaMemcpyDeviceToHost);
    bool ok = true;
    for (std::size_t i = 0; i < n; ++i) ok = ok && get(host, i, t) == contribution(gSize - 1, i);
    check(ok, std::string("broadcast ") + toString(t));
    // all_gather_v / gather_v: rank r sends r+1 elements
    std::vector<std::size_t> counts;
    std::size_t total = 0;
    for (int r = 0; r < gSize; ++r) { counts.push_back(r + 1); total += r + 1; }
    std::vector<char> mine((gRank + 1) * es);
    for (int i = 0; i <= gRank; ++i) put(mine, i, t, contribution(gRank, i));
    void* din = nullptr;
    cudaMalloc(&din, mine.size());
    cudaMemcpy(din, mine.data(), mine.size(), cudaMemcpyHostToDevice);
    for (int pass = 0; pass < 2; ++pass) {
      cudaMemset(dev, 0, total * es);
      if (pass == 0) {
        b.allGatherV(din, dev, counts, t)->wait();
      } else {
        b.gatherV(din, dev, counts, t, 0)->wait();
      }
      cudaMemcpy(host.data(), dev, total * es, cudaMemcpyDeviceToHost);
      ok = true;
      if (pass == 0 || gRank == 0) {
        std::size_t k = 0;
        for (int r = 0; r < gSize; ++r)
          for (int i = 0; i <= r; ++i) ok = ok && get(host, k++, t) == contribution(r, i);
      }
      check(ok, std::string(pass == 0 ? "all_gather_v " : "gather_v ") + toString(t));
    }
    cudaFree(din);
    cudaFree(dev);
  }
  b.barrier()->wait();
  check(true, "barrier");
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &gRank);
  MPI_Comm_size(MPI_COMM_WORLD, &gSize);
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess) devices = 0;
  BackendOptions options;
  options.timeoutSeconds = 60;
  if (devices == 0) {
    std::string msg;
    try {
      makeNcclBackend(MPI_COMM_WORLD, 0, options, nullptr);
    } catch (const cohort::DistError& e) {
      msg = e.what();
    }
    const std::string want = "no CUDA device visible to rank " + std::to_string(gRank);
    check(msg.find(want) != std::string::npos, "no-GPU error, got: '" + msg + "'");
    if (gRank == 0) std::printf("no CUDA device: checked the start-up error: %s\n", msg.c_str());
  } else {
    try {
      auto b = makeNcclBackend(MPI_COMM_WORLD, gRank % devices, options, nullptr);
      runCollectives(*b);
    } catch (const std::exception& e) {
      check(false, std::string("exception: ") + e.what());
    }
  }
  int local[2] = {gPassed, gFailed}, total[2] = {0, 0};
  MPI_Allreduce(local, total, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (gRank == 0) std::printf("%d passed, %d failed\n", total[0], total[1]);
  MPI_Finalize();
  return total[1] == 0 ? 0 : 1;
}
