#include "cohort/dist/allocator.h"

#include <malloc.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

#include "cohort/dist/env.h"

namespace cohort::dist {
namespace {

// The user's own malloc settings, if any ("" if none).
std::string userMallocSetting() {
  for (const char* name : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                           "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_"}) {
    const char* v = std::getenv(name);
    if (v != nullptr && *v != '\0') return name;
  }
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables != nullptr && std::strstr(tunables, "glibc.malloc.") != nullptr) {
    return "GLIBC_TUNABLES";
  }
  return "";
}

HostAllocatorTuning apply() {
  HostAllocatorTuning r;
  if (!env::get(env::kMallocTuning)) {
    r.why = "left alone: COHORT_MALLOC_TUNING=0";
    return r;
  }
  if (const std::string user = userMallocSetting(); !user.empty()) {
    r.why = "left alone: " + user + " is set";
    return r;
  }
  // The trim threshold first: setting the mmap threshold also ends glibc's dynamic
  // adjustment of both, so neither may be left at its start value.
  if (mallopt(M_TRIM_THRESHOLD, static_cast<int>(kTunedTrimThreshold)) != 1 ||
      mallopt(M_MMAP_THRESHOLD, static_cast<int>(kTunedMmapThreshold)) != 1) {
    r.why = "left alone: mallopt refused the thresholds";
    return r;
  }
  r.applied = true;
  r.why = "mmap_threshold=32MiB trim_threshold=1GiB";
  return r;
}

}  // namespace

namespace {
std::mutex gMu;
std::optional<HostAllocatorTuning> gResult;
}  // namespace

HostAllocatorTuning tuneHostAllocator() {
  std::lock_guard<std::mutex> lock(gMu);
  if (!gResult) gResult = apply();
  return *gResult;
}

std::optional<HostAllocatorTuning> hostAllocatorTuning() {
  std::lock_guard<std::mutex> lock(gMu);
  return gResult;
}

}  // namespace cohort::dist
