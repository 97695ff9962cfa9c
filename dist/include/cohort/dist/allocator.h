// Host allocator tuning for training processes (glibc malloc).
//
// A training step frees and re-allocates the same host tensors (activations, gradients of
// the non-bucketed kind, temporaries) every step. glibc serves blocks above its mmap
// threshold (128 KiB at start, raised dynamically) with fresh mmap()s and returns freed heap
// tops to the kernel above its trim threshold, so each step page-faults its working set in
// again: on the 2-core CI machine that cost the same CPU step 22-50 steps/s instead of ~58
// (bench trainer_overhead, docs/performance.md). tuneHostAllocator() fixes both thresholds
// (mmap at glibc's 32 MiB maximum, trim at 1 GiB) so that the step's memory is reused.
//
// dist::Runtime calls it first thing, on every rank, unless COHORT_MALLOC_TUNING=0, or the
// user tuned malloc already (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_,
// or glibc.malloc.* in GLIBC_TUNABLES): their choice wins. A replacement allocator
// (jemalloc, tcmalloc through LD_PRELOAD) is not affected: mallopt() only tunes glibc's.
// Torch-free and MPI-free (part of cohort_env). Thread-safe; applied at most once.
#pragma once

#include <cstddef>
#include <optional>
#include <string>

namespace cohort::dist {

struct HostAllocatorTuning {
  bool applied = false;
  std::string why;  // "mmap_threshold=..., trim_threshold=..." or why it was left alone
};

inline constexpr std::size_t kTunedMmapThreshold = std::size_t{32} << 20;
inline constexpr std::size_t kTunedTrimThreshold = std::size_t{1} << 30;

// Applies the tuning once per process; later calls return the first call's result.
HostAllocatorTuning tuneHostAllocator();

// What the first tuneHostAllocator() call did; nullopt before any call. Applies nothing.
std::optional<HostAllocatorTuning> hostAllocatorTuning();

}  // namespace cohort::dist
