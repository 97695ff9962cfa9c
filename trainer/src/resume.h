// How a training run begins: resume from a checkpoint (resume_from_checkpoint) or start
// fresh in an output_dir that holds no earlier run's checkpoints. Rank 0 looks at the
// output directory; its decision reaches every rank as one record on the run's consensus,
// so every rank loads the same checkpoint or fails with the same error.
#pragma once

#include <memory>

#include "checkpointing.h"
#include "cohort/dist/consensus.h"
#include "cohort/trainer/data.h"
#include "cohort/trainer/trainer.h"
#include "output_storage.h"
#include "save_policy.h"

namespace cohort::dist {
class Communicator;
}  // namespace cohort::dist

namespace cohort::trainer {

// COLLECTIVE over the world: the consensus of the run's checkpoint and resume decisions
// ("checkpoint consensus", COHORT_CONSENSUS_TIMEOUT), separate from the training
// communicator `comm`, which must span the same ranks (makeCommunicator builds it over the
// world; DistError otherwise).
std::unique_ptr<dist::Consensus> makeRunConsensus(const dist::Communicator& comm);

// COLLECTIVE on `consensus`. A run that does not resume must not mix its checkpoints with
// an earlier run's in output_dir: ConfigError naming them, unless overwrite_output_dir,
// which removes them (rank 0, after one line naming what goes). On node-local storage
// (save_on_each_node) the first rank of each node looks at (and clears) its node's directory.
void startFresh(const TrainingArguments& args, dist::Consensus& consensus,
                const OutputStorage& storage);

// COLLECTIVE on `consensus` and the training communicator. Restores the run from
// resume_from_checkpoint into `state` and the model/optimizer of `ts`; returns where the
// data loader continues ({} when there is nothing to resume from with "true"). With
// "true", incomplete or corrupt checkpoints are skipped (and reported) in favour of the
// next older valid one; a checkpoint that had completed and is damaged, with nothing valid
// left, is a ConfigError. On node-local storage (save_on_each_node) the first rank of each
// node looks in its node's directory, and "true" takes the newest checkpoint valid on every
// node.
DataPosition resumeRun(const TrainingArguments& args, TrainerState& state, const TrainingState& ts,
                       dist::Consensus& consensus, const OutputStorage& storage,
                       ckpt::Checkpointer& cp, const GlobalBatchPlan& plan, bool withOptimizer);

}  // namespace cohort::trainer
