#include "save_policy.h"

#include <algorithm>
#include <filesystem>

#include "cohort/trainer/training_args.h"

namespace cohort::trainer {

namespace fs = std::filesystem;

ckpt::Manifest makeHeader(const TrainingArguments& args, const TrainerState& state,
                          const DataPosition& next, std::int64_t globalBatch,
                          std::int64_t optimizerStep, bool withOptimizer, double lastLr,
                          bool preempted) {
  ckpt::Manifest m;
  m.set_training_args(toTextFormat(args));
  ckpt::TrainerStateRecord& t = *m.mutable_trainer_state();
  t.set_global_step(state.globalStep);
  t.set_epoch(state.epoch);
  t.set_consumed_samples(state.consumedSamples);
  t.set_epoch_index(next.epoch);
  t.set_step_in_epoch(next.stepInEpoch);
  t.set_global_batch(globalBatch);
  t.set_max_steps(state.maxSteps);
  if (state.bestMetric) t.set_best_metric(*state.bestMetric);
  if (!state.bestModelCheckpoint.empty()) t.set_best_model_checkpoint(state.bestModelCheckpoint);
  t.set_best_global_step(state.bestGlobalStep);
  t.set_total_loss(state.totalLoss);
  t.set_total_loss_steps(state.totalLossSteps);
  if (state.lossScale > 0) {
    t.set_loss_scale(state.lossScale);
    t.set_loss_scale_growth_tracker(state.lossScaleGrowthTracker);
  }
  if (state.skippedSteps > 0) t.set_skipped_steps(state.skippedSteps);
  for (const LogEntry& e : state.logHistory) {
    ckpt::LogRecord* r = t.add_log_history();
    r->set_step(e.step);
    r->set_epoch(e.epoch);
    for (const auto& [k, v] : e.values) (*r->mutable_values())[k] = v;
  }
  if (withOptimizer) {
    t.set_optimizer(args.optim() == "sgd" ? "sgd" : "adamw");
    t.set_optimizer_step(optimizerStep);
  }
  t.set_lr_scheduler_type(args.lr_scheduler_type());
  t.set_last_learning_rate(lastLr);
  t.set_data_seed(static_cast<std::uint64_t>(dataSeed(args)));
  t.set_preempted(preempted);
  return m;
}

DataPosition applyHeader(const ckpt::Manifest& m, TrainerState& state) {
  const ckpt::TrainerStateRecord& t = m.trainer_state();
  state.globalStep = t.global_step();
  state.epoch = t.epoch();
  state.consumedSamples = t.consumed_samples();
  state.bestMetric.reset();
  if (t.has_best_metric()) state.bestMetric = t.best_metric();
  state.bestModelCheckpoint = t.best_model_checkpoint();
  state.bestGlobalStep = t.best_global_step();
  state.totalLoss = t.total_loss();  // 0 and 0 steps when the checkpoint predates the sum
  state.totalLossSteps = t.total_loss_steps();
  state.lossScale = t.loss_scale();  // 0: not saved (the run starts at the initial scale)
  state.lossScaleGrowthTracker = t.loss_scale_growth_tracker();
  state.skippedSteps = t.skipped_steps();
  state.logHistory.clear();
  for (const ckpt::LogRecord& r : t.log_history()) {
    LogEntry e;
    e.step = r.step();
    e.epoch = r.epoch();
    for (const auto& [k, v] : r.values()) e.values[k] = v;
    state.logHistory.push_back(std::move(e));
  }
  return {t.epoch_index(), t.step_in_epoch()};
}

std::vector<std::string> rotateCheckpoints(const std::string& outputDir, int limit,
                                           const std::string& bestCheckpoint) {
  std::vector<std::string> deleted;
  const auto all = ckpt::listCheckpoints(outputDir, /*verifyChecksums=*/false);
  std::int64_t newestValid = -1;
  for (const auto& c : all) {
    if (c.status == ckpt::CheckpointStatus::kValid) newestValid = std::max(newestValid, c.step);
  }
  if (newestValid < 0) return deleted;  // nothing complete yet: touch nothing
  auto same = [](const std::string& a, const std::string& b) {
    std::error_code ec;
    return !b.empty() && fs::equivalent(a, b, ec);
  };
  std::vector<const ckpt::CheckpointInfo*> valid;
  for (const auto& c : all) {
    if (c.status == ckpt::CheckpointStatus::kValid) {
      valid.push_back(&c);
    } else if (c.step < newestValid && !same(c.path, bestCheckpoint)) {
      deleted.push_back(c.path);  // a dead save older than a complete one
    }
  }
  if (limit > 0) {
    std::size_t keep = valid.size();
    for (const auto* c : valid) {  // oldest first
      if (keep <= static_cast<std::size_t>(limit)) break;
      if (c->step == newestValid || same(c->path, bestCheckpoint)) continue;
      deleted.push_back(c->path);
      --keep;
    }
  }
  for (const auto& p : deleted) {
    std::error_code ec;
    fs::remove_all(p, ec);
  }
  return deleted;
}

namespace {

// A save that never finished: the sentinel is there (it goes before the first byte and
// leaves after the durable manifest), or the directory holds no shard and no manifest (the
// save died creating the sentinel). A directory whose manifest is missing while shards
// remain without a sentinel lost its manifest after completing.
bool neverCompleted(const ckpt::CheckpointInfo& c) {
  if (c.status != ckpt::CheckpointStatus::kIncomplete) return false;
  if (fs::exists(fs::path(c.path) / ckpt::kSentinelName)) return true;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(c.path, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("shard-", 0) == 0 || name.rfind(ckpt::kManifestName, 0) == 0) return false;
  }
  return true;
}

}  // namespace

std::vector<std::string> resumeCandidates(const std::string& outputDir,
                                          std::vector<std::string>* skipped,
                                          std::vector<std::string>* lost) {
  std::vector<std::string> out;
  auto all = ckpt::listCheckpoints(outputDir, /*verifyChecksums=*/false);
  std::reverse(all.begin(), all.end());
  for (const auto& c : all) {
    if (c.status == ckpt::CheckpointStatus::kValid) {
      out.push_back(c.path);
      continue;
    }
    std::string line = c.path + " is " + ckpt::statusName(c.status) + ": " + c.reason;
    std::replace(line.begin(), line.end(), '\n', ' ');  // one line each
    if (skipped != nullptr) skipped->push_back(line);
    if (lost != nullptr && !neverCompleted(c)) lost->push_back(line);
  }
  return out;
}

bool improves(double value, const std::optional<double>& best, bool greaterIsBetter) {
  if (!best) return true;
  return greaterIsBetter ? value > *best : value < *best;
}

}  // namespace cohort::trainer
