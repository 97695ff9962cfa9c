// Per-optimizer-step statistics that every rank must agree on, carried by ONE small int64
// all-reduce per step. Slot 0 is the global number of prediction targets of the whole step
// (all ranks, all accumulation micro-batches), which exact loss normalisation needs; slot 1
// is the preemption flag, so ranks agree to stop at the same step boundary without another
// collective. Later features add slots to the same message (see StepStatsSlot).
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "cohort/dist/communicator.h"

namespace cohort::dist {

// Slot indices of the step-stats vector. Every slot is SUM-reduced: counts add up, and a
// per-rank 0/1 flag sums to the number of ranks that raised it (> 0: some rank did).
// New fields APPEND a slot before kCount; existing slots never move or change meaning, so
// ranks of one build always agree on the layout (and a mismatched count between builds is
// caught by the backend's argument check, not misread).
enum class StepStatsSlot : std::size_t {
  kNumItems = 0,       // prediction targets on this rank in this optimizer step
  kStopRequested = 1,  // 1 when this rank was asked to stop (SIGTERM/SIGUSR1)
  kCount               // number of slots; keep last
};

inline constexpr std::size_t kStepStatsSlots = static_cast<std::size_t>(StepStatsSlot::kCount);

// The vector itself: a value type, zero-initialised.
struct StepStats {
  std::array<std::int64_t, kStepStatsSlots> values{};

  std::int64_t& operator[](StepStatsSlot s) { return values[static_cast<std::size_t>(s)]; }
  std::int64_t operator[](StepStatsSlot s) const { return values[static_cast<std::size_t>(s)]; }
};

// COLLECTIVE: exactly one all-reduce (SUM) of every slot. Works with either backend (the
// vector travels on the communicator's device). Throws what the communicator throws.
StepStats allReduceStepStats(Communicator& comm, const StepStats& local);

// The agreed result of one step's statistics.
struct GlobalStepStats {
  std::int64_t numItems = 0;            // prediction targets of the step, all ranks
  bool stopRequested = false;           // some rank asked to stop
  std::int64_t ranksRequestingStop = 0;
};

// COLLECTIVE: one all-reduce. `localItems` is this rank's count for the whole optimizer step
// (see countItems). DistError if localItems < 0.
GlobalStepStats reduceStepStats(Communicator& comm, std::int64_t localItems, bool stopRequested);

// Not collective. Counts prediction targets (labels != ignoreIndex) over this rank's
// micro-batches of one optimizer step. With shiftLabels (causal LM: position t predicts token
// t+1) only labels[..., 1:] count, so the first token of each row is never a target. Labels
// must be integer tensors; with shiftLabels at least 1-D. DistError otherwise.
std::int64_t countItems(const std::vector<at::Tensor>& microBatchLabels,
                        std::int64_t ignoreIndex = -100, bool shiftLabels = false);

}  // namespace cohort::dist
