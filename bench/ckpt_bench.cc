// Checkpoint save/load throughput of ~1 GiB of float32 state (a few large tensors, some
// medium ones, many small ones, as a model plus optimizer state looks), on the world this
// program is launched with. Every rank holds its partition of every tensor
// (dist::partitionOf, as the trainer's flat buffers split them) and writes it; rank 0 prints
//   CKPT <world> <variant> <seconds> <bytes>
// per measurement, wall time over all ranks (barrier, call, barrier on every rank):
//   save_sync        Checkpointer::save into a new directory (shards + manifest durable)
//   load_cold        Checkpointer::load of every rank's partition, page cache dropped first
//   load_full_rank0  rank 0 alone loads every tensor (all N shards) of the async save, cold
//   async_stall_first / async_stall   the time saveAsync takes to return (the snapshot):
//                    the first one of the process (allocates the snapshot buffers) / later
//   async_total      saveAsync until wait() returns
//   In simulated training steps (below): every rank runs forward + backward of a dense
//   model whose parameters are a third of the state (the rest: Adam's two moments) at 32
//   tokens per rank, i.e. 6 * P * 32 FLOPs of float32 GEMMs on cache-sized matrices, then an
//   optimizer step that changes every element it holds. A window is 5 such steps; a save
//   (sync, or async with the state read in place until the optimizer step) is made before
//   the first step of the window, as the Trainer does at a step boundary:
//   step_compute     forward + backward of one step (the time an async write has before
//                    the optimizer step needs the state back)
//   step_sync_block  the sync save inside a window (the training waits for all of it)
//   step_async_block saveAsync + releaseSources() before the optimizer step: the time the
//                    training thread is blocked by an async save (the headline stall)
//   window_plain / window_sync / window_async   5 steps without a save / with a sync save /
//                    with an async save (including the final wait for its end): the
//                    differences include what the background writer costs the compute
//   window_async_final_wait   the part of window_async spent in the final wait() (the
//                    write outlasting the window)
//   memcpy           std::memcpy of every rank's partition into touched buffers (the floor
//                    of a copying snapshot)
//   torch_save       each rank torch::save(its partition as std::vector<Tensor>) to a new
//                    file + fsync (at world 1: the whole state, what a rank-0 save does)
//   torch_load       torch::load of those files, cold
// Every read is the first read of files written just before: on a VM disk a second cold
// read can be served by the host's cache (2x faster here), so each load gets its own save.
// The page cache is dropped (sync; echo 3 > /proc/sys/vm/drop_caches, root only) before
// every measurement; where that is not allowed, the files are evicted with
// posix_fadvise(DONTNEED) after fsync. The method is printed as `CACHE <method>`.
// Each repeat runs the Cohort block and the torch block, in A B then B A order.
// scripts/bench ckpt runs it at world 1, 2, 4 next to dd (bench/ckpt_report.py reports).
#include <ATen/ATen.h>
#include <fcntl.h>
#include <mpi.h>
#include <torch/serialize.h>
#include <unistd.h>

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

#include "cohort/ckpt/checkpointer.h"
#include "cohort/dist/consensus.h"
#include "cohort/dist/runtime.h"
#include "cohort/dist/types.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct TensorSpec {
  std::string name;
  std::int64_t numel;
};

// ~`mib` MiB of float32: 7/8 in 4 large tensors, 3/32 in 32 medium ones, 1/32 in small ones
// of 8 Ki elements (1024 of them at 1 GiB).
std::vector<TensorSpec> stateLayout(std::int64_t mib) {
  const std::int64_t total = mib * (1 << 20) / 4;
  std::vector<TensorSpec> out;
  for (int i = 0; i < 4; ++i)
    out.push_back({"model/layers." + std::to_string(i) + ".weight", total * 7 / 32});
  for (int i = 0; i < 32; ++i)
    out.push_back({"optimizer/exp_avg/proj." + std::to_string(i), total * 3 / 1024});
  const std::int64_t small = std::max<std::int64_t>(16, total / 32 / 8192);
  for (std::int64_t i = 0; i < small; ++i)
    out.push_back({"model/norm." + std::to_string(i) + ".bias", 8192});
  return out;
}

// Deterministic, not compressible by a filesystem: a hash of (tensor, global element).
void fill(at::Tensor& t, std::size_t tensorIndex, std::int64_t offset) {
  auto* p = t.data_ptr<float>();
  std::uint32_t h = static_cast<std::uint32_t>(tensorIndex * 2654435761u);
  for (std::int64_t i = 0, n = t.numel(); i < n; ++i) {
    std::uint32_t x = h ^ static_cast<std::uint32_t>(offset + i) * 0x9E3779B1u;
    x ^= x >> 15, x *= 0x85EBCA77u, x ^= x >> 13;
    p[i] = static_cast<float>(x & 0xFFFFFF) * (1.0f / 16777216.0f) - 0.5f;
  }
}

int gRank = 0, gWorld = 1;
std::string gCacheMethod;

double maxOverRanks(double v) {
  MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return v;
}

void fadviseTree(const std::string& dir) {
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const int fd = ::open(e.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

// Empties the page cache (and flushes what is dirty) before a measurement. COLLECTIVE.
void dropCaches(const std::string& benchDir) {
  int ok = 1;
  if (gRank == 0) {
    ::sync();
    std::ofstream f("/proc/sys/vm/drop_caches");
    f << "3\n";
    f.flush();
    ok = f.good() ? 1 : 0;
  }
  MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (!ok) fadviseTree(benchDir);
  gCacheMethod = ok ? "drop_caches" : "fadvise_dontneed";
  MPI_Barrier(MPI_COMM_WORLD);
}

void removeTree(const std::string& path) {
  MPI_Barrier(MPI_COMM_WORLD);
  if (gRank == 0) {
    fs::remove_all(path);
    ::sync();
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

void report(const char* variant, double seconds, std::int64_t bytes) {
  if (gRank == 0) {
    std::printf("CKPT %d %s %.6f %lld\n", gWorld, variant, seconds, static_cast<long long>(bytes));
    std::fflush(stdout);
  }
}

std::int64_t allBytes(std::int64_t localBytes) {
  MPI_Allreduce(MPI_IN_PLACE, &localBytes, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  return localBytes;
}

struct State {
  std::vector<TensorSpec> specs;
  std::vector<at::Tensor> part;      // this rank's partition of every tensor
  std::vector<std::int64_t> offset;  // its first element
  std::vector<cohort::ckpt::SavePiece> pieces;
  std::int64_t localBytes = 0, totalBytes = 0;
};

bool sameAsState(const State& s, const std::vector<at::Tensor>& got) {
  bool same = got.size() == s.part.size();
  for (std::size_t i = 0; same && i < got.size(); ++i) same = at::equal(got[i], s.part[i]);
  int ok = same ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return ok == 1;
}

// Forward + backward of a dense model of `params` parameters at 32 tokens per rank as
// float32 GEMMs of the same FLOPs (6 * P * tokens) on matrices that stay in cache.
struct ComputeModel {
  at::Tensor x, w, y;
  std::int64_t gemms = 0;
  explicit ComputeModel(std::int64_t params) {
    constexpr std::int64_t kTokens = 32, kM = 256, kK = 1024, kN = 1024;
    x = at::rand({kM, kK});
    w = at::rand({kK, kN});
    y = at::empty({kM, kN});
    gemms = std::max<std::int64_t>(1, 6 * params * kTokens / (2 * kM * kK * kN));
  }
  void run() {
    for (std::int64_t i = 0; i < gemms; ++i) at::mm_out(y, x, w);
  }
};

enum class WindowSave { kNone, kSync, kAsync };

// Five training steps; the save (if any) comes before the first. COLLECTIVE.
void stepWindow(cohort::ckpt::Checkpointer& ckpt, const State& s, ComputeModel& model,
                WindowSave save, const std::string& saveDir, const char* variant) {
  constexpr int kSteps = 5;
  std::vector<cohort::ckpt::SavePiece> deferred = s.pieces;
  for (auto& p : deferred) p.deferCopy = true;
  MPI_Barrier(MPI_COMM_WORLD);
  const auto t0 = Clock::now();
  double block = 0.0, compute = 0.0;
  for (int k = 0; k < kSteps; ++k) {
    auto t = Clock::now();
    if (k == 0 && save == WindowSave::kSync) ckpt.save(saveDir, s.pieces, cohort::ckpt::Manifest());
    if (k == 0 && save == WindowSave::kAsync)
      ckpt.saveAsync(saveDir, deferred, cohort::ckpt::Manifest());
    if (k == 0) block += std::chrono::duration<double>(Clock::now() - t).count();
    t = Clock::now();
    model.run();
    if (k == 0) compute = std::chrono::duration<double>(Clock::now() - t).count();
    t = Clock::now();
    if (k == 0) ckpt.releaseSources();
    if (k == 0) block += std::chrono::duration<double>(Clock::now() - t).count();
    for (const at::Tensor& p : s.part) p.add_(1.0f);  // the optimizer step
  }
  const auto tw = Clock::now();
  ckpt.wait();
  const double tail = std::chrono::duration<double>(Clock::now() - tw).count();
  MPI_Barrier(MPI_COMM_WORLD);
  report(variant, std::chrono::duration<double>(Clock::now() - t0).count(), s.totalBytes);
  if (save == WindowSave::kAsync) report("window_async_final_wait", maxOverRanks(tail), s.totalBytes);
  if (save == WindowSave::kSync) report("step_sync_block", maxOverRanks(block), s.totalBytes);
  if (save == WindowSave::kAsync) report("step_async_block", maxOverRanks(block), s.totalBytes);
  if (save == WindowSave::kNone) report("step_compute", maxOverRanks(compute), s.totalBytes);
  if (save == WindowSave::kNone) return;
  // The checkpoint holds the state from before the window's steps.
  std::vector<at::Tensor> dst;
  std::vector<cohort::ckpt::LoadPiece> loads;
  for (std::size_t i = 0; i < s.part.size(); ++i) {
    dst.push_back(at::zeros_like(s.part[i]));
    loads.push_back({s.specs[i].name, dst.back(), s.offset[i]});
  }
  ckpt.load(saveDir, ckpt.loadManifest(saveDir), loads);
  for (int k = 0; k < kSteps; ++k)
    for (at::Tensor& t : dst) t.add_(1.0f);
  if (!sameAsState(s, dst)) throw std::runtime_error(std::string(variant) + ": wrong checkpoint");
  removeTree(saveDir);
}

void stepWindows(cohort::ckpt::Checkpointer& ckpt, const State& s, const std::string& dir,
                 int rep) {
  std::int64_t elements = 0;
  for (const auto& spec : s.specs) elements += spec.numel;
  ComputeModel model(elements / 3);
  const std::string saveDir = dir + "/cohort-window-" + std::to_string(rep);
  // A B C then C B A: each variant sees the same mix of neighbours.
  const WindowSave order[] = {WindowSave::kNone, WindowSave::kSync, WindowSave::kAsync,
                              WindowSave::kAsync, WindowSave::kSync, WindowSave::kNone};
  for (WindowSave w : order) {
    dropCaches(dir);
    stepWindow(ckpt, s, model, w, saveDir,
               w == WindowSave::kNone   ? "window_plain"
               : w == WindowSave::kSync ? "window_sync"
                                        : "window_async");
  }
}

void cohortBlock(cohort::ckpt::Checkpointer& ckpt, const State& s, const std::string& dir, int rep,
                 bool& firstAsync) {
  // Synchronous save.
  const std::string saveDir = dir + "/cohort-sync-" + std::to_string(rep);
  dropCaches(dir);
  auto t0 = Clock::now();
  ckpt.save(saveDir, s.pieces, cohort::ckpt::Manifest());
  MPI_Barrier(MPI_COMM_WORLD);
  report("save_sync", std::chrono::duration<double>(Clock::now() - t0).count(), s.totalBytes);

  // Cold load of every rank's partition into existing (touched) tensors, as a resume does.
  std::vector<at::Tensor> dst;
  std::vector<cohort::ckpt::LoadPiece> loads;
  for (std::size_t i = 0; i < s.part.size(); ++i) {
    dst.push_back(at::zeros_like(s.part[i]));
    loads.push_back({s.specs[i].name, dst.back(), s.offset[i]});
  }
  dropCaches(dir);
  t0 = Clock::now();
  const cohort::ckpt::Manifest m = ckpt.loadManifest(saveDir);
  const std::int64_t read = ckpt.load(saveDir, m, loads);
  MPI_Barrier(MPI_COMM_WORLD);
  report("load_cold", std::chrono::duration<double>(Clock::now() - t0).count(), allBytes(read));
  if (!sameAsState(s, dst)) throw std::runtime_error("loaded tensors differ from the saved ones");
  dst.clear();
  loads.clear();
  removeTree(saveDir);

  // Async save: the stall is the time saveAsync takes to return.
  const std::string asyncDir = dir + "/cohort-async-" + std::to_string(rep);
  dropCaches(dir);
  t0 = Clock::now();
  ckpt.saveAsync(asyncDir, s.pieces, cohort::ckpt::Manifest());
  const double stall = std::chrono::duration<double>(Clock::now() - t0).count();
  ckpt.wait();
  MPI_Barrier(MPI_COMM_WORLD);
  const double total = std::chrono::duration<double>(Clock::now() - t0).count();
  report(firstAsync ? "async_stall_first" : "async_stall", maxOverRanks(stall), s.totalBytes);
  report("async_total", total, s.totalBytes);
  firstAsync = false;

  // Rank 0 alone reads everything (from all N shards): one process's read path.
  dropCaches(dir);
  if (gRank == 0) {
    std::vector<at::Tensor> full;
    for (const auto& spec : s.specs) full.push_back(at::zeros({spec.numel}, at::kFloat));
    t0 = Clock::now();
    const cohort::ckpt::Manifest fm = cohort::ckpt::readManifest(asyncDir);
    cohort::ckpt::RangeReader reader(asyncDir, fm);
    std::map<std::string, const cohort::ckpt::TensorEntry*> byName;
    for (const auto& t : fm.tensors()) byName[t.name()] = &t;
    for (std::size_t i = 0; i < s.specs.size(); ++i)
      reader.read(*byName.at(s.specs[i].name), 0, s.specs[i].numel, full[i].data_ptr());
    report("load_full_rank0", std::chrono::duration<double>(Clock::now() - t0).count(),
           reader.bytesRead());
  }
  removeTree(asyncDir);

  stepWindows(ckpt, s, dir, rep);

  // The floor of a copying snapshot: plain memcpy of the partition into touched buffers.
  std::vector<at::Tensor> copies;
  for (const at::Tensor& t : s.part) copies.push_back(at::zeros_like(t));
  MPI_Barrier(MPI_COMM_WORLD);
  t0 = Clock::now();
  for (std::size_t i = 0; i < copies.size(); ++i)
    std::memcpy(copies[i].data_ptr(), s.part[i].data_ptr(), s.part[i].numel() * 4);
  const double copy = std::chrono::duration<double>(Clock::now() - t0).count();
  report("memcpy", maxOverRanks(copy), s.totalBytes);
}

void torchBlock(const State& s, const std::string& dir, int rep) {
  const std::string tdir = dir + "/torch-" + std::to_string(rep);
  if (gRank == 0) fs::create_directories(tdir);
  MPI_Barrier(MPI_COMM_WORLD);
  const std::string file = tdir + "/rank-" + std::to_string(gRank) + ".pt";
  dropCaches(dir);
  auto t0 = Clock::now();
  torch::save(s.part, file);
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) throw std::runtime_error("fsync failed for " + file);
  ::close(fd);
  const int dfd = ::open(tdir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) ::fsync(dfd), ::close(dfd);
  MPI_Barrier(MPI_COMM_WORLD);
  report("torch_save", std::chrono::duration<double>(Clock::now() - t0).count(), s.totalBytes);

  dropCaches(dir);
  t0 = Clock::now();
  std::vector<at::Tensor> got;
  torch::load(got, file);
  MPI_Barrier(MPI_COMM_WORLD);
  report("torch_load", std::chrono::duration<double>(Clock::now() - t0).count(), s.totalBytes);
  if (!sameAsState(s, got)) throw std::runtime_error("torch::load returned different tensors");
  removeTree(tdir);
}

int run(int argc, char** argv) {
  std::string dir;
  std::int64_t mib = 1024;
  int repeats = 2, withTorch = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--dir")
      dir = argv[i + 1];
    else if (a == "--mib")
      mib = std::atoll(argv[i + 1]);
    else if (a == "--repeats")
      repeats = std::atoi(argv[i + 1]);
    else if (a == "--torch")
      withTorch = std::atoi(argv[i + 1]);
    else
      throw std::runtime_error("unknown argument " + a);
  }
  if (dir.empty())
    throw std::runtime_error(
        "usage: bench_ckpt --dir DIR [--mib 1024] "
        "[--repeats 2] [--torch 1]");
  State s;
  s.specs = stateLayout(mib);
  for (std::size_t i = 0; i < s.specs.size(); ++i) {
    const auto [lo, hi] =
        cohort::dist::partitionOf(static_cast<std::size_t>(s.specs[i].numel), gWorld, gRank);
    at::Tensor t = at::empty({static_cast<std::int64_t>(hi - lo)}, at::kFloat);
    fill(t, i, static_cast<std::int64_t>(lo));
    s.part.push_back(t);
    s.offset.push_back(static_cast<std::int64_t>(lo));
    s.pieces.push_back({s.specs[i].name, t, {s.specs[i].numel}, static_cast<std::int64_t>(lo)});
    s.localBytes += t.numel() * 4;
  }
  s.totalBytes = allBytes(s.localBytes);
  if (gRank == 0) {
    fs::create_directories(dir);
    std::printf("STATE %d %d tensors %lld bytes\n", gWorld, static_cast<int>(s.specs.size()),
                static_cast<long long>(s.totalBytes));
  }
  MPI_Barrier(MPI_COMM_WORLD);
  cohort::dist::Consensus consensus(MPI_COMM_WORLD,
                                    cohort::dist::ConsensusOptions::fromEnv("checkpoint"));
  cohort::ckpt::Checkpointer ckpt(consensus);
  bool firstAsync = true;
  for (int rep = 0; rep < repeats; ++rep) {
    if (rep % 2 == 0 || !withTorch) {
      cohortBlock(ckpt, s, dir, rep, firstAsync);
      if (withTorch) torchBlock(s, dir, rep);
    } else {
      torchBlock(s, dir, rep);
      cohortBlock(ckpt, s, dir, rep, firstAsync);
    }
  }
  if (gRank == 0) std::printf("CACHE %s\n", gCacheMethod.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  auto rt = cohort::dist::init(&argc, &argv);
  gRank = rt->rank();
  gWorld = rt->worldSize();
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_ckpt rank %d: %s\n", gRank, e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  return 1;
}
