// What a JIT-checkpoint stop leaves behind besides the checkpoint: the agreed facts of the
// preemption (which rank was signalled first, when, by what, doing what), the log lines
// that tell them, and the PREEMPTED marker that is the contract with the batch script
// (docs/slurm.md): written by rank 0 only after the checkpoint is durable, atomically
// (write, fsync, rename, fsync the directory). Private to the trainer library.
#pragma once

#include <cstdint>
#include <string>

#include "cohort/dist/communicator.h"
#include "cohort/trainer/preemption.h"

namespace cohort::trainer {

struct PreemptionFacts {
  bool mine = false;         // this rank received a signal
  double firstWallTime = 0;  // seconds since the epoch of the first signal on any rank
  int firstRank = 0;         // the rank that received it
  int signal = 0;            // its number
  TrainingPhase phase = TrainingPhase::kIdle;  // what that rank was doing
};

// COLLECTIVE: three tiny all-reduces (time MIN, rank MIN, signal and phase SUM). Every
// signalled rank logs its own line (non-zero ranks log warnings only).
PreemptionFacts agreePreemptionFacts(dist::Communicator& comm, const PreemptionWatcher& watcher,
                                     std::int64_t globalStep);

// Rank 0. Writes <outputDir>/PREEMPTED holding `content` + '\n', durably and atomically.
// Throws std::filesystem errors / CheckpointError from fsync.
void writePreemptedMarker(const std::string& outputDir, const std::string& content);

// Seconds from `facts.firstWallTime` to now (wall clock).
double secondsSinceFirstSignal(const PreemptionFacts& facts);

// Rank 0. One line: who was signalled, when, doing what, and the outcome (the checkpoint and
// how long after the signal it was durable, or that none was written when jitCheckpoint is
// empty).
void logPreemption(const PreemptionFacts& facts, std::int64_t globalStep,
                   const std::string& jitCheckpoint, double durableSeconds);

}  // namespace cohort::trainer
