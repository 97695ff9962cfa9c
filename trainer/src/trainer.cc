#include "cohort/trainer/trainer.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "checkpointing.h"
#include "cohort/ckpt/checkpointer.h"
#include "cohort/dist/batch_stats.h"
#include "cohort/dist/env.h"
#include "cohort/dist/error.h"
#include "cohort/dist/fused_optimizer.h"
#include "cohort/dist/gradient_sync.h"
#include "cohort/dist/log.h"
#include "cohort/trainer/neftune.h"
#include "cohort/trainer/preemption.h"
#include "cohort/trainer/schedule.h"
#include "cohort/trainer/training_args.h"
#include "device_placement.h"
#include "save_policy.h"
#include "train_loop.h"

namespace cohort::trainer {

namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

bool defaultDecay(const std::string& name) {
  return name.find("bias") == std::string::npos && name.find("norm") == std::string::npos &&
         name.find("ln") == std::string::npos;
}

// Splits the step loop's wall time into named phases: lap(p) charges the time since the
// previous lap (or start()) to p. Two clock reads per phase boundary (~50 ns each).
class PhaseClock {
 public:
  enum Phase {
    kData,
    kStepStats,
    kForwardBackward,
    kGradSync,
    kClip,
    kOptimizer,
    kBookkeeping,
    kCount
  };
  void start() { last_ = Clock::now(); }
  void lap(Phase p) {
    const auto now = Clock::now();
    total_[p] += now - last_;
    last_ = now;
  }
  std::map<std::string, double> seconds() const {
    static const char* const kNames[kCount] = {
        "data", "step_stats", "forward_backward", "grad_sync", "clip", "optimizer", "bookkeeping"};
    std::map<std::string, double> out;
    for (int i = 0; i < kCount; ++i)
      out[kNames[i]] = std::chrono::duration<double>(total_[i]).count();
    return out;
  }

 private:
  Clock::time_point last_;
  Clock::duration total_[kCount]{};
};

std::vector<std::string> splitLines(const std::string& s) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos < s.size()) {
    const std::size_t nl = s.find('\n', pos);
    out.push_back(s.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos));
    if (nl == std::string::npos) break;
    pos = nl + 1;
  }
  return out;
}

// COLLECTIVE. A run that does not resume must not mix its checkpoints with an earlier run's
// in output_dir: rotation and `resume_from_checkpoint=true` go by step number, so an old
// checkpoint-176 would outrank (and rotate away) this run's checkpoint-100. As HF's
// example scripts: an error, unless overwrite_output_dir, which removes them (rank 0) after
// one line naming what goes (printed first, so that it stands even if a removal fails).
void startFresh(const TrainingArguments& args, ckpt::Checkpointer& cp, int rank) {
  std::string found, error;
  if (rank == 0) {
    try {
      std::vector<ckpt::CheckpointInfo> dirs;
      if (std::filesystem::is_directory(args.output_dir()))
        dirs = ckpt::listCheckpoints(args.output_dir(), false);
      for (const auto& d : dirs) found += (found.empty() ? "" : ", ") + d.path;
      if (!dirs.empty() && args.overwrite_output_dir()) {
        const std::string marker = args.output_dir() + "/PREEMPTED";
        std::string names;
        std::int64_t bytes = 0;
        for (const auto& d : dirs) {
          names += (names.empty() ? "" : " ") + std::filesystem::path(d.path).filename().string();
          bytes += d.bytes;
        }
        if (std::filesystem::exists(marker)) names += " PREEMPTED";
        COHORT_LOG_WARN(
            "overwrite_output_dir: deleting the earlier run's {} checkpoint(s) ({:.1f} MiB) in "
            "{}: {}",
            dirs.size(), static_cast<double>(bytes) / (1 << 20), args.output_dir(), names);
        for (const auto& d : dirs) std::filesystem::remove_all(d.path);
        std::filesystem::remove(marker);
      }
    } catch (const std::exception& e) {
      error = "output_dir " + args.output_dir() + ": " + e.what();
    }
  }
  cp.agree<ConfigError>(error);
  found = cp.shareFromRoot(found);
  if (!found.empty() && !args.overwrite_output_dir()) {
    throw ConfigError("output_dir " + args.output_dir() +
                      " holds checkpoints of an earlier run (" + found +
                      ") and this run does not resume: set resume_from_checkpoint=true to "
                      "continue it, overwrite_output_dir=true to delete them and start over, "
                      "or use another output_dir");
  }
}

// COLLECTIVE. Restores the run from resume_from_checkpoint; returns where the data loader
// continues. With "true", incomplete or corrupt checkpoints are skipped (and reported) in
// favour of the next older valid one.
DataPosition resumeRun(const TrainingArguments& args, TrainerState& state, const TrainingState& ts,
                       ckpt::Checkpointer& cp, const GlobalBatchPlan& plan, bool withOptimizer) {
  const int rank = ts.comm.rank(), world = ts.comm.size();
  std::vector<std::string> candidates;
  const bool latest = resumeKind(args) == ResumeKind::kLatest;
  if (!latest) {
    candidates.push_back(args.resume_from_checkpoint());
  } else {
    // Rank 0 looks, every rank gets its answer: the number of checkpoints skipped, the
    // number of those that had completed (damaged: data lost) and their lines, then the
    // candidates, one per line.
    std::string decision;
    if (rank == 0) {
      std::vector<std::string> skipped, lost;
      const auto found = resumeCandidates(args.output_dir(), &skipped, &lost);
      if (!found.empty() || !lost.empty()) {
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
      decision = std::to_string(skipped.size()) + "\n" + std::to_string(lost.size()) + "\n";
      for (const auto& line : lost) decision += line + "\n";
      for (const auto& c : found) decision += c + "\n";
    }
    candidates = splitLines(cp.shareFromRoot(decision));
    const std::string skipped = candidates.at(0);
    const auto lostCount = static_cast<std::size_t>(std::stoul(candidates.at(1)));
    const std::vector<std::string> lost(candidates.begin() + 2,
                                        candidates.begin() + 2 + static_cast<long>(lostCount));
    candidates.erase(candidates.begin(), candidates.begin() + 2 + static_cast<long>(lostCount));
    if (candidates.empty() && lost.empty()) {
      // Nothing was ever saved (the first run of a job that always passes "true"), or only
      // saves that never finished (a crash during the first save): start fresh. The dead
      // save stays for inspection; this run's save of that step replaces it, and rotation
      // removes it once a newer checkpoint is complete.
      if (rank == 0 && skipped == "0") {
        COHORT_LOG_INFO("resume_from_checkpoint=true: no checkpoint in {} yet; starting fresh",
                        args.output_dir());
      }
      return {};
    }
    if (candidates.empty()) {
      // A checkpoint had completed and is damaged: its training would be lost silently.
      std::string why;
      for (const auto& line : lost) why += (why.empty() ? "" : "; ") + line;
      throw ConfigError("resume_from_checkpoint=true but no valid checkpoint in " +
                        args.output_dir() + " (" + skipped +
                        " incomplete or corrupt skipped); completed but damaged: " + why);
    }
  }
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    const std::string& dir = candidates[i];
    try {
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
      if (rank == 0) {
        COHORT_LOG_INFO("resumed from {} at step {} (epoch {:.3f}, {} samples consumed){}", dir,
                        state.globalStep, state.epoch, state.consumedSamples,
                        m.world_size() == world ? std::string()
                                                : fmt::format("; resharded from {} to {} ranks",
                                                              m.world_size(), world));
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
        COHORT_LOG_INFO("resume: no RNG state for rank {} in {} (saved by {} ranks); seeded {}",
                        rank, dir, m.world_size(), seed);
      }
      return pos;
    } catch (const CheckpointCorrupt& e) {
      if (!latest || i + 1 == candidates.size()) throw;
      if (rank == 0) COHORT_LOG_WARN("resume: skipping {}: {}", dir, e.what());
    }
  }
  return {};
}

}  // namespace

at::Tensor tokenLossSum(const ModelOutput& out, const at::Tensor& labels, bool shiftLabels) {
  at::Tensor logits = out.logits;
  at::Tensor target = labels;
  if (shiftLabels) {
    logits = logits.narrow(-2, 0, logits.size(-2) - 1);
    target = target.narrow(-1, 1, target.size(-1) - 1);
  }
  at::Tensor flatLogits = logits.reshape({-1, logits.size(-1)});
  return at::cross_entropy_loss(flatLogits, target.reshape({-1}), {}, at::Reduction::Sum,
                               /*ignore_index=*/-100);
}

at::Tensor tokenMeanLoss(const ModelOutput& out, const at::Tensor& labels,
                         std::int64_t numItemsInBatch, bool shiftLabels) {
  const at::Tensor sum = tokenLossSum(out, labels, shiftLabels);
  return sum / static_cast<double>(std::max<std::int64_t>(1, numItemsInBatch));
}

Trainer::Trainer(TrainingArguments args, dist::Communicator& comm, TrainerParts parts)
    : args_(std::move(args)), comm_(comm), parts_(std::move(parts)) {
  ValidationContext ctx;
  ctx.hasTrainDataset = parts_.trainDataset != nullptr;
  ctx.hasEvalDataset = parts_.evalDataset != nullptr;
  logWarnings(validate(args_, ctx), comm_.rank());
  if (!parts_.model || !parts_.forward) {
    throw ConfigError("Trainer: a model and a forward function are required");
  }
  checkPlacement(modelDevice(*parts_.model), comm_);  // before any collective
  if (args_.has_neftune_noise_alpha() && args_.neftune_noise_alpha() > 0 &&
      parts_.neftuneEmbedding == nullptr) {
    throw ConfigError(
        "neftune_noise_alpha is set but the model has no NoisyEmbedding "
        "(TrainerParts::neftuneEmbedding)");
  }
  defaultLoss_ = !parts_.computeLoss;
  if (!parts_.computeLoss) {
    const bool shift = parts_.shiftLabels;
    parts_.computeLoss = [shift](const ModelOutput& o, const at::Tensor& labels, std::int64_t n) {
      return tokenMeanLoss(o, labels, n, shift);
    };
  }
  if (!parts_.decayParameter) parts_.decayParameter = defaultDecay;
  if (args_.enable_jit_checkpoint()) {
    std::vector<int> signals;
    for (const auto& name : args_.jit_checkpoint_signals()) signals.push_back(signalFromName(name));
    if (signals.empty()) signals = {SIGTERM, SIGUSR1};
    watcher_ = std::make_unique<PreemptionWatcher>(signals, args_.jit_kill_wait());
  }
}

Trainer::~Trainer() = default;

std::map<std::string, double> Trainer::evaluate(const std::string& metricKeyPrefix) {
  if (!parts_.evalDataset) throw ConfigError("evaluate() needs an eval dataset");
  EvalParts ep;
  ep.model = parts_.model.get();
  ep.forward = parts_.forward;
  ep.dataset = parts_.evalDataset;
  ep.collator = parts_.collator;
  ep.loss = parts_.evalLoss;
  ep.computeMetrics = parts_.computeMetrics;
  ep.preprocessLogits = parts_.preprocessLogitsForMetrics;
  if (watcher_) ep.shouldStop = [w = watcher_.get()] { return w->stopRequested(); };
  EvalOptions eo = evalOptionsFromArgs(args_);
  eo.shiftLabels = parts_.shiftLabels;
  eo.metricKeyPrefix = metricKeyPrefix;
  eo.device = modelDevice(*parts_.model);
  setTrainingPhase(TrainingPhase::kEval);
  const EvalResult r = trainer::evaluate(comm_, ep, eo);
  setTrainingPhase(TrainingPhase::kIdle);
  evalInterrupted_ = r.interrupted;
  if (r.interrupted) return {};  // a preemption: all ranks stopped at the same batch
  LogEntry e;
  e.step = state_.globalStep;
  e.epoch = state_.epoch;
  for (const auto& [k, v] : r.metrics) e.values[k] = v;
  state_.logHistory.push_back(e);
  for (auto& rep : reporters_) rep->log(e);
  if (bar_ != nullptr) bar_->onLog(e);
  TrainerControl local;
  TrainerControl& control = control_ != nullptr ? *control_ : local;
  for (auto& cb : parts_.callbacks) cb->onEvaluate(state_, control, r.metrics);
  return r.metrics;
}

TrainOutput Trainer::train() {
  const int rank = comm_.rank();
  const auto start = TrainClock::now();
  at::manual_seed(static_cast<std::uint64_t>(args_.seed()));
  TrainRun run(args_, comm_, parts_);  // COLLECTIVE: data plan, sync, optimizer, checkpointer
  state_ = TrainerState{};
  state_.stepsPerEpoch = run.plan.stepsPerEpoch();
  state_.maxSteps =
      args_.max_steps() > 0
          ? args_.max_steps()
          : static_cast<std::int64_t>(
                std::ceil(args_.num_train_epochs() * static_cast<double>(state_.stepsPerEpoch)));
  ckpt::Checkpointer& checkpointer = run.checkpointer;
  const TrainingState& ts = run.ts;
  const GlobalBatchPlan& plan = run.plan;
  const bool withOptimizer = run.withOptimizer;
  DataPosition next;
  if (resumeKind(args_) != ResumeKind::kNone) {
    next = resumeRun(args_, state_, ts, checkpointer, plan, withOptimizer);
  } else {
    startFresh(args_, checkpointer, rank);
  }
  run.loader.seek(next.epoch, next.stepInEpoch);
  const double alpha = args_.has_neftune_noise_alpha() ? args_.neftune_noise_alpha() : 0.0;
  NeftuneScope neftune(alpha > 0 ? parts_.neftuneEmbedding : nullptr, alpha);
  TrainLoop loop(*this, run, next, start);
  return loop.run();
}

}  // namespace cohort::trainer
