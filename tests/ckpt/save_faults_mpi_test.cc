// ENOSPC and EIO at each step of the collective save (ckpt::Checkpointer, real ranks): the
// step of rank 0 (sentinel, manifest, publish, sentinel removal) or of the last rank (its
// shard) fails through the FileOps seam. Every rank gets the same CheckpointError naming the
// step and the file; the checkpoint never looks complete; the previous one still verifies;
// a retry succeeds. The single-process version of every step is save_faults_test.cc.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "cohort/ckpt/checkpointer.h"
#include "cohort/dist/communicator.h"
#include "cohort/dist/types.h"
#include "faulty_file_ops.h"
#include "test_util.h"

namespace cohort::test {
namespace {

namespace fs = std::filesystem;
using ckpt::testing::Fault;
using ckpt::testing::FaultOp;

struct CollectiveCase {
  const char* label;
  bool lastRank;  // the fault is on the last rank (else on rank 0)
  Fault fault;
  const char* step;
  std::string file;  // the file name the message must contain ("" = the directory)
};

// Rank 0's fsyncs of checkpoint-2: 1 sentinel create, 2 after its shard, 3 after the
// manifest, 4 after the sentinel removal.
std::vector<CollectiveCase> collectiveCases(int world) {
  namespace step = ckpt::step;
  const std::string sentinel = ckpt::kSentinelName;
  const std::string lastShard = ckpt::shardFileName(world - 1, world);
  return {
      {"sentinel create",
       false,
       {FaultOp::kOpen, sentinel + ".tmp"},
       step::kSentinelCreate,
       sentinel + ".tmp"},
      {"shard create", true, {FaultOp::kOpen, lastShard}, step::kShardCreate, lastShard},
      {"shard write", true, {FaultOp::kWrite, lastShard}, step::kShardWrite, lastShard},
      {"shard fsync", true, {FaultOp::kSync, lastShard}, step::kShardFsync, lastShard},
      {"manifest write",
       false,
       {FaultOp::kWrite, "manifest.pb.tmp"},
       step::kManifestWrite,
       "manifest.pb.tmp"},
      {"manifest fsync",
       false,
       {FaultOp::kSync, "manifest.pb.tmp"},
       step::kManifestFsync,
       "manifest.pb.tmp"},
      {"manifest publish",
       false,
       {FaultOp::kRename, ckpt::kManifestName},
       step::kManifestPublish,
       ckpt::kManifestName},
      {"directory fsync",
       false,
       {FaultOp::kSyncPath, "checkpoint-2", 3},
       step::kDirectoryFsync,
       ""},
      {"sentinel removal", false, {FaultOp::kRemove, sentinel}, step::kSentinelRemove, sentinel},
      {"sentinel removal fsync",
       false,
       {FaultOp::kSyncPath, "checkpoint-2", 4},
       step::kSentinelRemove,
       ""},
  };
}

std::vector<ckpt::SavePiece> piecesOf(const std::vector<at::Tensor>& g, int world, int rank) {
  std::vector<ckpt::SavePiece> out;
  for (std::size_t i = 0; i < g.size(); ++i) {
    const auto [lo, hi] = dist::partitionOf(static_cast<std::size_t>(g[i].numel()), world, rank);
    out.push_back(
        {"t" + std::to_string(i),
         g[i].reshape({-1}).slice(0, static_cast<std::int64_t>(lo), static_cast<std::int64_t>(hi)),
         g[i].sizes().vec(), static_cast<std::int64_t>(lo)});
  }
  return out;
}

TEST(CheckpointerSaveFaults, EveryStepIsOneAgreedErrorAndNothingLooksComplete) {
  ckpt::Checkpointer cp;
  const int world = cp.comm().size(), rank = cp.comm().rank();
  std::string root;
  if (rank == 0) {
    root = (fs::temp_directory_path() / "cohort-ckpt-faults-XXXXXX").string();
    if (::mkdtemp(root.data()) == nullptr) root.clear();
  }
  root = cp.shareFromRoot(root);
  at::manual_seed(5);
  // Large enough that every rank's piece of the first takes the O_DIRECT path; one small.
  const std::vector<at::Tensor> g{at::randn({4 * 40000}, at::kDouble), at::randn({9})};
  const auto pieces = piecesOf(g, world, rank);
  const std::string good = root + "/checkpoint-1", dir = root + "/checkpoint-2";
  cp.save(good, pieces, {});

  for (const CollectiveCase& c : collectiveCases(world)) {
    for (int err : {ENOSPC, EIO}) {
      SCOPED_TRACE(std::string(c.label) + " " + std::strerror(err));
      Fault fault = c.fault;
      fault.err = err;
      ckpt::testing::FaultyFileOps faulty(fault);
      const bool mine = c.lastRank ? rank == world - 1 : rank == 0;
      std::optional<ckpt::testing::ScopedFileOps> installed;
      if (mine) installed.emplace(&faulty);
      const std::string msg = messageOf<CheckpointError>([&] { cp.save(dir, pieces, {}); });
      installed.reset();
      if (mine) EXPECT_EQ(faulty.fired(), 1) << "the fault never fired";
      // One error, the same on every rank, naming the step and the file.
      EXPECT_EQ(msg, cp.shareFromRoot(msg));
      EXPECT_NE(msg.find(std::string("'") + c.step + "'"), std::string::npos) << msg;
      const std::string file = c.file.empty() ? dir : dir + "/" + c.file;
      EXPECT_NE(msg.find(file), std::string::npos) << msg;
      EXPECT_NE(msg.find(std::strerror(err)), std::string::npos) << msg;
      if (c.lastRank && world > 1) {
        EXPECT_NE(msg.find("rank " + std::to_string(world - 1)), std::string::npos) << msg;
      }
      cp.comm().barrier();
      // Never complete; the previous checkpoint verifies (every rank looks).
      const bool sentinel = fs::exists(fs::path(dir) / ckpt::kSentinelName);
      EXPECT_TRUE(sentinel || !fs::exists(fs::path(dir) / ckpt::kManifestName));
      EXPECT_NE(ckpt::inspectCheckpoint(dir, false).status, ckpt::CheckpointStatus::kValid);
      EXPECT_EQ(ckpt::inspectCheckpoint(good, true).status, ckpt::CheckpointStatus::kValid);
      cp.comm().barrier();
    }
  }
  // A retry at the same step, without faults, publishes.
  cp.save(dir, pieces, {});
  EXPECT_EQ(ckpt::inspectCheckpoint(dir, true).status, ckpt::CheckpointStatus::kValid);
  cp.comm().barrier();
  if (rank == 0) fs::remove_all(root);
}

}  // namespace
}  // namespace cohort::test
