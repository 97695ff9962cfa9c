#include "resume.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>

#include "cohort/ckpt/checkpointer.h"
#include "cohort/dist/communicator.h"
#include "cohort/dist/consensus.h"
#include "cohort/dist/error.h"
#include "cohort/dist/log.h"
#include "cohort/trainer/training_args.h"

namespace cohort::trainer {

namespace {

namespace fs = std::filesystem;

// What rank 0 found in output_dir for a fresh start, shared as one record.
struct FreshStartScan {
  std::string error;               // the scan or the removal failed
  std::vector<std::string> found;  // an earlier run's checkpoints (removed with overwrite)

  void encode(dist::RecordWriter& w) const { w.add(error).add(found); }
  static FreshStartScan decode(dist::RecordReader& r) {
    FreshStartScan s;
    s.error = r.string();
    s.found = r.strings();
    return s;
  }
};

// Rank 0 only: lists output_dir's checkpoints; with overwrite_output_dir removes them after
// one line naming what goes (printed first, so that it stands even if a removal fails).
FreshStartScan scanForFreshStart(const TrainingArguments& args) {
  FreshStartScan scan;
  try {
    std::vector<ckpt::CheckpointInfo> dirs;
    if (fs::is_directory(args.output_dir())) dirs = ckpt::listCheckpoints(args.output_dir(), false);
    for (const auto& d : dirs) scan.found.push_back(d.path);
    if (dirs.empty() || !args.overwrite_output_dir()) return scan;
    const std::string marker = args.output_dir() + "/PREEMPTED";
    std::string names;
    std::int64_t bytes = 0;
    for (const auto& d : dirs) {
      names += (names.empty() ? "" : " ") + fs::path(d.path).filename().string();
      bytes += d.bytes;
    }
    if (fs::exists(marker)) names += " PREEMPTED";
    COHORT_LOG_WARN(
        "overwrite_output_dir: deleting the earlier run's {} checkpoint(s) ({:.1f} MiB) in "
        "{}: {}",
        dirs.size(), static_cast<double>(bytes) / (1 << 20), args.output_dir(), names);
    for (const auto& d : dirs) fs::remove_all(d.path);
    fs::remove(marker);
  } catch (const std::exception& e) {
    scan.error = "output_dir " + args.output_dir() + ": " + e.what();
  }
  return scan;
}

std::string joined(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : sep) + s;
  return out;
}

// The scan of output_dir by the rank(s) that look after it: rank 0's record on every rank
// (one shared directory), or, on node-local storage, every node's record, by rank.
template <class T, class Scan>
std::vector<std::pair<int, T>> scanViews(dist::Consensus& consensus, const OutputStorage& storage,
                                         Scan scan) {
  const int rank = consensus.rank();
  if (!storage.nodeLocal()) return {{0, consensus.shareRecord(rank == 0 ? scan() : T{})}};
  dist::RecordWriter w;
  if (storage.ownsView(rank)) scan().encode(w);
  const std::vector<std::string> all = consensus.allGather(w.take());
  std::vector<std::pair<int, T>> out;
  for (int r = 0; r < static_cast<int>(all.size()); ++r) {
    if (!storage.ownsView(r)) continue;
    dist::RecordReader reader(all[static_cast<std::size_t>(r)],
                              "output_dir scan of rank " + std::to_string(r));
    out.emplace_back(r, T::decode(reader));
    reader.finish();
  }
  return out;
}

// Rank 0's answer for resume_from_checkpoint=true, shared as one record.
struct ResumeScan {
  std::string error;                    // output_dir could not be read
  std::int64_t skipped = 0;             // incomplete or corrupt directories passed over
  std::vector<std::string> lost;        // among them, those that had completed (damaged)
  std::vector<std::string> candidates;  // valid checkpoints, newest first

  void encode(dist::RecordWriter& w) const { w.add(error).add(skipped).add(lost).add(candidates); }
  static ResumeScan decode(dist::RecordReader& r) {
    ResumeScan s;
    s.error = r.string();
    s.skipped = r.int64();
    s.lost = r.strings();
    s.candidates = r.strings();
    return s;
  }
};

// Rank 0 only: the candidates for "true", logging what it skips.
ResumeScan scanForResume(const TrainingArguments& args) {
  ResumeScan scan;
  std::vector<std::string> skipped;
  try {
    scan.candidates = resumeCandidates(args.output_dir(), &skipped, &scan.lost);
  } catch (const std::exception& e) {
    // Shared like a decision: the other ranks fail with it instead of waiting.
    scan.error = "resume_from_checkpoint=true: cannot read output_dir " + args.output_dir() + ": " +
                 e.what();
    return scan;
  }
  scan.skipped = static_cast<std::int64_t>(skipped.size());
  if (!scan.candidates.empty() || !scan.lost.empty()) {
    for (const auto& line : skipped) COHORT_LOG_WARN("resume: skipping {}", line);
  } else if (!skipped.empty()) {
    std::string dirs;
    for (const auto& line : skipped) {
      dirs += (dirs.empty() ? "" : ", ") + line.substr(0, line.find(" is "));
    }
    COHORT_LOG_WARN(
        "resume_from_checkpoint=true: no checkpoint in {} ever completed ({}: save "
        "interrupted; kept for inspection until this run's save of that step replaces it "
        "or rotation removes it); starting fresh",
        args.output_dir(), dirs);
  }
  return scan;
}

// Logs what the resume restored and seeds the RNG of a rank the checkpoint has no state for.
void reportResume(const TrainingArguments& args, const TrainerState& state, const ckpt::Manifest& m,
                  const LoadReport& r, const std::string& dir, int rank, int world,
                  bool withOptimizer) {
  if (rank == 0) {
    COHORT_LOG_INFO("resumed from {} at step {} (epoch {:.3f}, {} samples consumed){}", dir,
                    state.globalStep, state.epoch, state.consumedSamples,
                    m.world_size() == world
                        ? std::string()
                        : fmt::format("; resharded from {} to {} ranks", m.world_size(), world));
  }
  if (m.world_size() != world) {
    COHORT_LOG_INFO("resume: rank {} read {:.1f} MiB from the {} shards", rank,
                    static_cast<double>(r.bytesRead) / (1 << 20), m.world_size());
  }
  if (withOptimizer && !r.optimizerRestored && rank == 0) {
    COHORT_LOG_WARN(
        "resume: {} holds no optimizer state (save_only_model); the optimizer "
        "starts fresh",
        dir);
  }
  if (withOptimizer && !r.rngRestored) {
    // A rank that did not exist at save time (or a model-only checkpoint): derive a
    // seed deterministically from the run's seed, the step and the rank.
    const std::uint64_t seed = static_cast<std::uint64_t>(args.seed()) * 1000003ULL +
                               static_cast<std::uint64_t>(state.globalStep) * 7919ULL +
                               static_cast<std::uint64_t>(rank);
    at::manual_seed(seed);
    COHORT_LOG_INFO("resume: no RNG state for rank {} in {} (saved by {} ranks); seeded {}", rank,
                    dir, m.world_size(), seed);
  }
}

// COLLECTIVE. Loads `dir` into the run; throws CheckpointCorrupt (agreed) when it is damaged.
DataPosition loadCheckpoint(const TrainingArguments& args, TrainerState& state,
                            const TrainingState& ts, ckpt::Checkpointer& cp,
                            const GlobalBatchPlan& plan, bool withOptimizer,
                            const std::string& dir) {
  const ckpt::Manifest m = cp.loadManifest(dir);
  const LoadReport r = loadState(ts, cp, dir, m, withOptimizer, withOptimizer);
  DataPosition pos = applyHeader(m, state);
  state.resumedFrom = dir;
  const ckpt::TrainerStateRecord& t = m.trainer_state();
  if (t.global_batch() != plan.globalBatch()) {
    // Same samples seen, but the batches differ from here on: say so.
    pos.stepInEpoch = std::min(
        plan.stepsPerEpoch(),
        (pos.stepInEpoch * t.global_batch() + plan.globalBatch() - 1) / plan.globalBatch());
    COHORT_LOG_WARN(
        "resume: the global batch changed from {} to {}; the data position is "
        "rescaled and the trajectory differs from an uninterrupted run",
        t.global_batch(), plan.globalBatch());
  }
  reportResume(args, state, m, r, dir, ts.comm.rank(), ts.comm.size(), withOptimizer);
  return pos;
}

// One decision from the nodes' scans: the checkpoints valid on every node, newest first (a
// checkpoint valid on some nodes only counts as damaged: its training is not on every disk).
ResumeScan mergeResumeScans(const std::vector<std::pair<int, ResumeScan>>& scans) {
  if (scans.size() == 1) return scans.front().second;
  ResumeScan out;
  for (const auto& [rank, scan] : scans) {
    if (out.error.empty() && !scan.error.empty())
      out.error = "rank " + std::to_string(rank) + ": " + scan.error;
    out.skipped += scan.skipped;
    for (const auto& l : scan.lost) out.lost.push_back("rank " + std::to_string(rank) + ": " + l);
  }
  for (const auto& c : scans.front().second.candidates) {
    std::string missing;
    for (const auto& [rank, scan] : scans) {
      if (std::find(scan.candidates.begin(), scan.candidates.end(), c) == scan.candidates.end())
        missing += (missing.empty() ? "" : ", ") + std::to_string(rank);
    }
    if (missing.empty()) {
      out.candidates.push_back(c);
    } else {
      out.lost.push_back(c + " is not valid in the directory of rank(s) " + missing);
    }
  }
  return out;
}

}  // namespace

std::unique_ptr<dist::Consensus> makeRunConsensus(const dist::Communicator& comm) {
  auto consensus = std::make_unique<dist::Consensus>(MPI_COMM_WORLD,
                                                     dist::ConsensusOptions::fromEnv("checkpoint"));
  if (consensus->size() != comm.size()) {
    throw DistError("the Trainer's communicator has " + std::to_string(comm.size()) +
                    " ranks but the world " + std::to_string(consensus->size()) +
                    ": its checkpoint and resume decisions run over the world");
  }
  return consensus;
}

void startFresh(const TrainingArguments& args, dist::Consensus& consensus,
                const OutputStorage& storage) {
  FreshStartScan scan;
  for (const auto& [rank, s] :
       scanViews<FreshStartScan>(consensus, storage, [&] { return scanForFreshStart(args); })) {
    if (!s.error.empty()) {
      throw ConfigError(consensus.size() > 1 ? "rank " + std::to_string(rank) + ": " + s.error
                                             : s.error);
    }
    for (const auto& f : s.found) {
      if (std::find(scan.found.begin(), scan.found.end(), f) == scan.found.end())
        scan.found.push_back(f);
    }
  }
  if (!scan.found.empty() && !args.overwrite_output_dir()) {
    throw ConfigError("output_dir " + args.output_dir() + " holds checkpoints of an earlier run (" +
                      joined(scan.found, ", ") +
                      ") and this run does not resume: set resume_from_checkpoint=true to "
                      "continue it, overwrite_output_dir=true to delete them and start over, "
                      "or use another output_dir");
  }
}

DataPosition resumeRun(const TrainingArguments& args, TrainerState& state, const TrainingState& ts,
                       dist::Consensus& consensus, const OutputStorage& storage,
                       ckpt::Checkpointer& cp, const GlobalBatchPlan& plan, bool withOptimizer) {
  const bool latest = resumeKind(args) == ResumeKind::kLatest;
  std::vector<std::string> candidates{args.resume_from_checkpoint()};
  if (latest) {
    // Rank 0 looks, every rank gets its answer.
    const ResumeScan scan = mergeResumeScans(
        scanViews<ResumeScan>(consensus, storage, [&] { return scanForResume(args); }));
    if (!scan.error.empty()) throw ConfigError(scan.error);
    if (scan.candidates.empty() && scan.lost.empty()) {
      // Nothing was ever saved (the first run of a job that always passes "true"), or only
      // saves that never finished (a crash during the first save): start fresh. The dead
      // save stays for inspection; this run's save of that step replaces it, and rotation
      // removes it once a newer checkpoint is complete.
      if (consensus.rank() == 0 && scan.skipped == 0) {
        COHORT_LOG_INFO("resume_from_checkpoint=true: no checkpoint in {} yet; starting fresh",
                        args.output_dir());
      }
      return {};
    }
    if (scan.candidates.empty()) {
      // A checkpoint had completed and is damaged: its training would be lost silently.
      throw ConfigError(
          "resume_from_checkpoint=true but no valid checkpoint in " + args.output_dir() + " (" +
          std::to_string(scan.skipped) +
          " incomplete or corrupt skipped); completed but damaged: " + joined(scan.lost, "; "));
    }
    candidates = scan.candidates;
  }
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    try {
      return loadCheckpoint(args, state, ts, cp, plan, withOptimizer, candidates[i]);
    } catch (const CheckpointCorrupt& e) {
      if (!latest || i + 1 == candidates.size()) throw;
      if (consensus.rank() == 0)
        COHORT_LOG_WARN("resume: skipping {}: {}", candidates[i], e.what());
    }
  }
  return {};
}

}  // namespace cohort::trainer
