// Where a run's output_dir lives: one directory that every host sees (a shared filesystem),
// or each node's own directory under the same path (a node-local disk). A checkpoint's shards
// come from every rank and its manifest from one, so on node-local disks a normal save would
// leave a manifest on one node and shards nobody can read together: the run finds this out at
// start-up, before training, and stops with an error naming the hosts, unless
// save_on_each_node asks for one copy per node (each node's shards and its own manifest;
// docs/checkpoint-format.md).
#pragma once

#include <vector>

#include "cohort/trainer/training_args.h"

namespace cohort::dist {
class Consensus;
}

namespace cohort::trainer {

struct OutputStorage {
  // Empty: one directory shared by every rank. Otherwise, for save_on_each_node on a
  // node-local output_dir, the directory view each rank sees (0, 1, ... numbered by their
  // lowest rank): ranks of one view share a directory, ranks of different views do not.
  std::vector<int> viewOf;

  bool nodeLocal() const { return !viewOf.empty(); }
  // Whether `rank` looks after its view's directory (scans it at start-up, rotates it): the
  // lowest rank of the view; rank 0 alone when the directory is shared.
  bool ownsView(int rank) const;
};

// COLLECTIVE on `consensus` (three agreements). Every rank creates output_dir; the lowest
// rank of each host writes a random token file there, every rank reports which hosts' tokens
// it reads, the files are removed. A directory that is the same for everyone gives {}. A
// node-local one gives the views with save_on_each_node, and otherwise a ConfigError on every
// rank naming which hosts see which directory (also when hosts see each other's files only
// one way). A world of one rank returns {} without looking.
OutputStorage checkOutputStorage(const TrainingArguments& args, dist::Consensus& consensus);

}  // namespace cohort::trainer
