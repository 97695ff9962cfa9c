// ENOSPC and EIO at each step of the save protocol (single process; the collective version
// is in checkpointer_test.cc): the error is a CheckpointIoError naming the step and the file,
// the failed checkpoint never looks complete (its sentinel stays or it has no manifest), and
// the previous checkpoint still verifies. The faults come through the FileOps seam
// (ckpt/src/file_ops.h, faulty_file_ops.h).
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <tuple>
#include <vector>

#include "faulty_file_ops.h"
#include "format_test_util.h"

namespace cohort::ckpt::testing {
namespace {

constexpr int kWorld = 2;

std::vector<HostTensor> faultTensors() {
  // A large tensor (each rank's half is over 64 KiB: the O_DIRECT path) and a small one.
  return {makeTensor("model/w", "float32", {100000}, 1), makeTensor("model/b", "float32", {10}, 2)};
}

struct StepCase {
  const char* label;
  Fault fault;               // err is filled in per errno
  const char* expectedStep;  // CheckpointIoError::step()
  std::string expectedFile;  // relative to the checkpoint dir ("" = the dir itself)
};

// The order of the protocol's directory fsyncs of checkpoint-2 at world 2: 1 sentinel
// create, 2 and 3 after each shard, 4 after the manifest, 5 after the sentinel removal.
std::vector<StepCase> stepCases() {
  const std::string sentinel = kSentinelName;
  const std::string shard0 = shardFileName(0, kWorld), shard1 = shardFileName(1, kWorld);
  const std::string dir = "checkpoint-2";
  return {
      {"sentinel_create",
       {FaultOp::kOpen, sentinel + ".tmp"},
       step::kSentinelCreate,
       sentinel + ".tmp"},
      {"sentinel_write",
       {FaultOp::kWrite, sentinel + ".tmp"},
       step::kSentinelCreate,
       sentinel + ".tmp"},
      {"sentinel_dir_fsync", {FaultOp::kSyncPath, dir, 1}, step::kSentinelCreate, ""},
      {"shard_create", {FaultOp::kOpen, shard1}, step::kShardCreate, shard1},
      {"shard_write", {FaultOp::kWrite, shard0}, step::kShardWrite, shard0},
      {"shard_write_second_rank", {FaultOp::kWrite, shard1, 2}, step::kShardWrite, shard1},
      {"shard_fsync", {FaultOp::kSync, shard1}, step::kShardFsync, shard1},
      {"shard_dir_fsync", {FaultOp::kSyncPath, dir, 3}, step::kDirectoryFsync, ""},
      {"manifest_write",
       {FaultOp::kWrite, "manifest.pb.tmp"},
       step::kManifestWrite,
       "manifest.pb.tmp"},
      {"manifest_text_write",
       {FaultOp::kOpen, "manifest.txtpb.tmp"},
       step::kManifestWrite,
       "manifest.txtpb.tmp"},
      {"manifest_fsync",
       {FaultOp::kSync, "manifest.pb.tmp"},
       step::kManifestFsync,
       "manifest.pb.tmp"},
      {"manifest_publish",
       {FaultOp::kRename, kManifestName},
       step::kManifestPublish,
       kManifestName},
      {"publish_dir_fsync", {FaultOp::kSyncPath, dir, 4}, step::kDirectoryFsync, ""},
      {"sentinel_removal", {FaultOp::kRemove, sentinel}, step::kSentinelRemove, sentinel},
      {"sentinel_removal_dir_fsync", {FaultOp::kSyncPath, dir, 5}, step::kSentinelRemove, ""},
  };
}

class SaveFault : public ::testing::TestWithParam<std::tuple<StepCase, int>> {};

TEST_P(SaveFault, IsATypedErrorNamingStepAndFileAndNothingLooksComplete) {
  const auto& [c, err] = GetParam();
  TempDir tmp;
  const auto tensors = faultTensors();
  const std::string good = checkpointDir(tmp.path(), 1), dir = checkpointDir(tmp.path(), 2);
  writeCheckpoint(good, kWorld, tensors, sampleHeader());

  Fault fault = c.fault;
  fault.err = err;
  FaultyFileOps faulty(fault);
  std::string what, stepName, path;
  int errorNumber = 0;
  {
    ScopedFileOps installed(&faulty);
    try {
      writeCheckpoint(dir, kWorld, tensors, sampleHeader());
    } catch (const CheckpointIoError& e) {
      what = e.what(), stepName = e.step(), path = e.path(), errorNumber = e.errorNumber();
    }
  }
  ASSERT_EQ(faulty.fired(), 1) << "the fault never fired: the case does not reach its step";
  ASSERT_FALSE(what.empty()) << "no CheckpointIoError";
  const std::string file = c.expectedFile.empty() ? dir : dir + "/" + c.expectedFile;
  EXPECT_EQ(stepName, c.expectedStep) << what;
  EXPECT_EQ(path, file) << what;
  EXPECT_EQ(errorNumber, err) << what;
  EXPECT_NE(what.find(std::string("'") + c.expectedStep + "'"), std::string::npos) << what;
  EXPECT_NE(what.find(file), std::string::npos) << what;
  EXPECT_NE(what.find(std::strerror(err)), std::string::npos) << what;

  // The failed save never looks complete; the previous one is untouched.
  const bool sentinel = fs::exists(fs::path(dir) / kSentinelName);
  const bool manifest = fs::exists(fs::path(dir) / kManifestName);
  EXPECT_TRUE(sentinel || !manifest) << "checkpoint-2 has a manifest and no sentinel";
  EXPECT_NE(inspectCheckpoint(dir, true).status, CheckpointStatus::kValid);
  EXPECT_NO_THROW(verifyCheckpoint(good));
  const auto all = listCheckpoints(tmp.path(), true);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].status, CheckpointStatus::kValid) << all[0].reason;
  EXPECT_NE(all[1].status, CheckpointStatus::kValid);

  // Nothing left behind blocks a retry at the same step.
  writeCheckpoint(dir, kWorld, tensors, sampleHeader());
  EXPECT_NO_THROW(verifyCheckpoint(dir));
}

std::string caseName(const ::testing::TestParamInfo<std::tuple<StepCase, int>>& info) {
  return std::string(std::get<0>(info.param).label) +
         (std::get<1>(info.param) == ENOSPC ? "_ENOSPC" : "_EIO");
}

INSTANTIATE_TEST_SUITE_P(EveryStep, SaveFault,
                         ::testing::Combine(::testing::ValuesIn(stepCases()),
                                            ::testing::Values(ENOSPC, EIO)),
                         caseName);

// A disk that fills up after N payload bytes, in the small dataset and in the large one's
// O_DIRECT part: a "shard write" CheckpointIoError naming the file; exactly the payload fits.
TEST(SaveFaultDiskFull, MidShardThrowsNamingTheFileAndExactPayloadFits) {
  TempDir tmp;
  const HostTensor small = makeTensor("model/b", "float32", {100}, 1);
  const HostTensor large = makeTensor("model/w", "float32", {100000}, 2);
  auto source = [](const HostTensor& t) {
    ChunkSource c;
    c.name = t.name, c.dtype = t.dtype, c.shape = t.shape, c.count = t.numel();
    c.data = t.bytes.data();
    return c;
  };
  for (std::int64_t afterBytes : {0, 100, 200000}) {
    SCOPED_TRACE(afterBytes);
    FaultyFileOps full(Fault{FaultOp::kWrite, "*.h5", 1, ENOSPC, afterBytes});
    ScopedFileOps installed(&full);
    const std::string path = tmp / ("shard-" + std::to_string(afterBytes) + ".h5");
    const std::string msg = messageOf<CheckpointIoError>([&] {
      writeShard(path, {source(small), source(large)});
    });
    EXPECT_EQ(full.fired(), 1);
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(step::kShardWrite), std::string::npos) << msg;
  }
  FaultyFileOps exact(Fault{FaultOp::kWrite, "*.h5", 1, ENOSPC, 400400});  // the payload
  ScopedFileOps installed(&exact);
  EXPECT_NO_THROW(writeShard(tmp / "ok.h5", {source(small), source(large)}));
  EXPECT_EQ(exact.fired(), 0);
}

}  // namespace
}  // namespace cohort::ckpt::testing
