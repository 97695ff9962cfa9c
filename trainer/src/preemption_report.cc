#include "preemption_report.h"

#include <ATen/ATen.h>

#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "cohort/ckpt/format.h"
#include "cohort/dist/log.h"

namespace cohort::trainer {

namespace {

double wallNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

PreemptionFacts agreePreemptionFacts(dist::Communicator& comm, const PreemptionWatcher& watcher,
                                     std::int64_t globalStep) {
  const int rank = comm.rank(), world = comm.size();
  PreemptionFacts f;
  f.mine = watcher.signalled();
  at::Tensor when = at::tensor({f.mine ? watcher.signalWallTime() : 1e300}, at::kDouble);
  comm.allReduce(when, dist::ReduceOp::kMin);
  f.firstWallTime = when.item<double>();
  const bool isFirst = f.mine && watcher.signalWallTime() == f.firstWallTime;
  at::Tensor who = at::tensor({static_cast<std::int64_t>(isFirst ? rank : world)}, at::kLong);
  comm.allReduce(who, dist::ReduceOp::kMin);
  f.firstRank = static_cast<int>(who.item<std::int64_t>());
  const bool report = rank == f.firstRank;
  at::Tensor what = at::tensor(
      {static_cast<std::int64_t>(report ? watcher.signalNumber() : 0),
       static_cast<std::int64_t>(report ? static_cast<int>(watcher.phaseAtSignal()) : 0)},
      at::kLong);
  comm.allReduce(what, dist::ReduceOp::kSum);
  f.signal = static_cast<int>(what[0].item<std::int64_t>());
  f.phase = static_cast<TrainingPhase>(what[1].item<std::int64_t>());
  if (f.mine) {
    COHORT_LOG_WARN("rank {}: {} received {:.2f} s before the stop at step {}", rank,
                    signalName(watcher.signalNumber()), wallNow() - watcher.signalWallTime(),
                    globalStep);
  }
  return f;
}

void writePreemptedMarker(const std::string& outputDir, const std::string& content) {
  const std::string marker = outputDir + "/PREEMPTED";
  {
    std::ofstream m(marker + ".tmp");
    m << content << "\n";
  }
  ckpt::fsyncPath(marker + ".tmp");
  std::filesystem::rename(marker + ".tmp", marker);
  ckpt::fsyncPath(outputDir);
}

double secondsSinceFirstSignal(const PreemptionFacts& facts) {
  return wallNow() - facts.firstWallTime;
}

void logPreemption(const PreemptionFacts& facts, std::int64_t globalStep,
                   const std::string& jitCheckpoint, double durable) {
  const std::time_t t = static_cast<std::time_t>(facts.firstWallTime);
  char at[32];
  std::strftime(at, sizeof at, "%H:%M:%S", std::localtime(&t));
  std::string outcome = "stopped before the first step: no checkpoint written";
  if (!jitCheckpoint.empty()) {
    outcome = fmt::format("stop agreed at step {}; checkpoint {} durable {:.2f} s after the signal",
                          globalStep, jitCheckpoint, durable);
  }
  COHORT_LOG_INFO("preemption: {} received on rank {} at {}.{:03d} during {}; {}",
                  signalName(facts.signal), facts.firstRank, at,
                  static_cast<int>((facts.firstWallTime - std::floor(facts.firstWallTime)) * 1000),
                  phaseName(facts.phase), outcome);
}

}  // namespace cohort::trainer
