// The collective protocol of ckpt::Checkpointer with real ranks: every rank writes a 1/N
// range, any world size reads any range back, a failure on one rank is the same error on
// all ranks and publishes nothing, async saves complete in the background.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include "cohort/ckpt/checkpointer.h"
#include "cohort/dist/consensus.h"
#include "cohort/dist/types.h"
#include "faulty_file_ops.h"
#include "test_util.h"

namespace cohort::test {
namespace {

namespace fs = std::filesystem;

// A checkpoint consensus over `comm` for one test, as the Trainer makes one over the world.
std::unique_ptr<dist::Consensus> consensusOver(MPI_Comm comm) {
  dist::ConsensusOptions o;
  o.name = "checkpoint";
  o.timeoutSeconds = 60.0;
  return std::make_unique<dist::Consensus>(comm, o);
}

// A directory every rank agrees on (rank 0 creates it; the name is broadcast).
std::string sharedTempDir(ckpt::Checkpointer& cp, const std::string& tag) {
  std::string dir;
  if (cp.consensus().rank() == 0) {
    dir = (fs::temp_directory_path() / ("cohort-ckpt-" + tag + "-XXXXXX")).string();
    if (::mkdtemp(dir.data()) == nullptr) dir.clear();
  }
  return cp.consensus().shareFromRoot(dir);
}

// Tensor t (global) as this rank's 1/N piece.
ckpt::SavePiece pieceOf(const std::string& name, const at::Tensor& t, int world, int rank) {
  const auto [lo, hi] = dist::partitionOf(static_cast<std::size_t>(t.numel()), world, rank);
  return {name, t.reshape({-1}).slice(0, static_cast<std::int64_t>(lo), static_cast<std::int64_t>(hi)),
          t.sizes().vec(), static_cast<std::int64_t>(lo)};
}

std::vector<at::Tensor> globals() {
  at::manual_seed(3);
  return {at::randn({300, 257}, at::kDouble),  // large: the O_DIRECT path, odd size
          at::randn({7}, at::kFloat),          // small: packed, buffered writes
          at::randint(0, 1000, {33, 3}, at::kLong), at::randn({1000}, at::kHalf),
          at::randn({513}, at::kBFloat16)};
}

TEST(Checkpointer, EveryRankWritesItsRangeAndAnyRangeReadsBack) {
  auto consensus = consensusOver(MPI_COMM_WORLD);
  ckpt::Checkpointer cp(*consensus);
  const int world = cp.consensus().size(), rank = cp.consensus().rank();
  const std::string root = sharedTempDir(cp, "rt");
  const std::string dir = root + "/checkpoint-3";
  const auto g = globals();
  std::vector<ckpt::SavePiece> pieces;
  for (std::size_t i = 0; i < g.size(); ++i) pieces.push_back(pieceOf("t" + std::to_string(i), g[i], world, rank));
  ckpt::Manifest header;
  header.mutable_trainer_state()->set_global_step(3);
  const ckpt::SaveResult r = cp.save(dir, pieces, header);
  std::int64_t bytes = 0;
  for (const auto& t : g) bytes += t.numel() * static_cast<std::int64_t>(t.element_size());
  EXPECT_EQ(r.bytes, bytes);
  EXPECT_TRUE(fs::exists(dir + "/manifest.pb"));
  EXPECT_TRUE(fs::exists(dir + "/manifest.txtpb"));
  EXPECT_FALSE(fs::exists(dir + "/" + ckpt::kSentinelName));
  EXPECT_TRUE(fs::exists(dir + "/" + ckpt::shardFileName(world - 1, world)));

  // Read back: every rank reads the full tensors, and a range that crosses shards.
  const ckpt::Manifest m = cp.loadManifest(dir);
  EXPECT_EQ(m.world_size(), world);
  EXPECT_EQ(m.trainer_state().global_step(), 3);
  std::vector<at::Tensor> full;
  std::vector<ckpt::LoadPiece> loads;
  for (std::size_t i = 0; i < g.size(); ++i) {
    full.push_back(at::zeros_like(g[i]));
    loads.push_back({"t" + std::to_string(i), full.back(), 0});
  }
  at::Tensor mid = at::zeros({50000}, at::kDouble);
  loads.push_back({"t0", mid, 10000 + rank});
  cp.load(dir, m, loads);
  for (std::size_t i = 0; i < g.size(); ++i) EXPECT_TRUE(at::equal(full[i], g[i])) << "tensor " << i;
  EXPECT_TRUE(at::equal(mid, g[0].reshape({-1}).slice(0, 10000 + rank, 60000 + rank)));
  EXPECT_TRUE(fs::exists(ckpt::checkpointDir(root, 3)));
  EXPECT_EQ(ckpt::inspectCheckpoint(dir, true).status, ckpt::CheckpointStatus::kValid);
  cp.consensus().barrier();
  if (rank == 0) fs::remove_all(root);
}

TEST(Checkpointer, AFailedRankIsTheSameErrorEverywhereAndNothingIsPublished) {
  const int rank = [] {
    int r = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
  }();
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  auto consensus = consensusOver(MPI_COMM_WORLD);
  ckpt::Checkpointer good(*consensus), failing(*consensus);
  const std::string root = sharedTempDir(good, "fail");
  const auto g = globals();
  std::vector<ckpt::SavePiece> pieces{pieceOf("w", g[0], world, rank)};
  good.save(root + "/checkpoint-1", pieces, {});
  // "Disk full" on the last rank after 1000 payload bytes of its shard.
  ckpt::testing::FaultyFileOps full({ckpt::testing::FaultOp::kWrite, "*.h5", 1, ENOSPC, 1000});
  std::optional<ckpt::testing::ScopedFileOps> installed;
  if (rank == world - 1) installed.emplace(&full);
  const std::string msg = messageOf<CheckpointError>(
      [&] { failing.save(root + "/checkpoint-2", pieces, {}); });
  installed.reset();
  // The same message on every rank, naming the rank and the file.
  const std::string expectRank = "rank " + std::to_string(world - 1);
  EXPECT_NE(msg.find(expectRank), std::string::npos) << msg;
  EXPECT_NE(msg.find(ckpt::shardFileName(world - 1, world)), std::string::npos) << msg;
  const std::string all = good.consensus().shareFromRoot(msg);
  EXPECT_EQ(msg, all);
  EXPECT_FALSE(fs::exists(root + "/checkpoint-2/manifest.pb"));
  EXPECT_TRUE(fs::exists(root + "/checkpoint-2/" + ckpt::kSentinelName));
  EXPECT_EQ(ckpt::inspectCheckpoint(root + "/checkpoint-2", false).status,
            ckpt::CheckpointStatus::kIncomplete);
  EXPECT_EQ(ckpt::inspectCheckpoint(root + "/checkpoint-1", true).status,
            ckpt::CheckpointStatus::kValid);
  // A retry at the same step replaces the failed attempt.
  good.save(root + "/checkpoint-2", pieces, {});
  EXPECT_EQ(ckpt::inspectCheckpoint(root + "/checkpoint-2", true).status,
            ckpt::CheckpointStatus::kValid);
  good.consensus().barrier();
  if (rank == 0) fs::remove_all(root);
}

TEST(Checkpointer, CorruptionOnOneRanksReadIsAgreed) {
  auto consensus = consensusOver(MPI_COMM_WORLD);
  ckpt::Checkpointer cp(*consensus);
  const int world = cp.consensus().size(), rank = cp.consensus().rank();
  const std::string root = sharedTempDir(cp, "corrupt");
  const std::string dir = root + "/checkpoint-1";
  const auto g = globals();
  cp.save(dir, {pieceOf("w", g[0], world, rank)}, {});
  const ckpt::Manifest m = cp.loadManifest(dir);
  cp.consensus().barrier();
  if (rank == 0) {  // flip a byte in the middle of the last shard's payload
    const std::string shard = dir + "/" + ckpt::shardFileName(world - 1, world);
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(0, std::ios::end);
    const auto size = static_cast<std::int64_t>(f.tellg());
    f.seekp(size - 5000);
    char c = 0;
    f.read(&c, 1);
    f.seekp(size - 5000);
    c = static_cast<char>(c ^ 0x5A);
    f.write(&c, 1);
  }
  cp.consensus().barrier();
  // Only the last rank reads the damaged range; every rank gets the error.
  at::Tensor part = at::zeros({10}, at::kDouble);
  std::vector<ckpt::LoadPiece> loads;
  if (rank == world - 1) loads.push_back({"w", part, g[0].numel() - 10});
  const std::string msg = messageOf<CheckpointCorrupt>([&] { cp.load(dir, m, loads); });
  EXPECT_NE(msg.find("checksum mismatch"), std::string::npos) << msg;
  EXPECT_NE(msg.find(ckpt::shardFileName(world - 1, world)), std::string::npos) << msg;
  EXPECT_EQ(ckpt::inspectCheckpoint(dir, true).status, ckpt::CheckpointStatus::kCorrupt);
  cp.consensus().barrier();
  if (rank == 0) fs::remove_all(root);
}

TEST(Checkpointer, AsyncSaveSnapshotsAtTheCallAndCompletesInTheBackground) {
  auto consensus = consensusOver(MPI_COMM_WORLD);
  ckpt::Checkpointer cp(*consensus);
  const int world = cp.consensus().size(), rank = cp.consensus().rank();
  const std::string root = sharedTempDir(cp, "async");
  at::Tensor w = at::arange(200000, at::kDouble);
  const at::Tensor expected = w.clone();
  cp.saveAsync(root + "/checkpoint-1", {pieceOf("w", w, world, rank)}, {});
  EXPECT_TRUE(cp.asyncInFlight());
  w.mul_(-1.0);  // training goes on and changes the tensor
  const auto r = cp.wait();
  ASSERT_TRUE(allRanks(r.has_value()));
  EXPECT_FALSE(cp.asyncInFlight());
  const ckpt::Manifest m = cp.loadManifest(root + "/checkpoint-1");
  at::Tensor back = at::zeros_like(w);
  cp.load(root + "/checkpoint-1", m, {{"w", back, 0}});
  EXPECT_TRUE(at::equal(back, expected));  // the value at saveAsync time
  cp.consensus().barrier();
  if (rank == 0) fs::remove_all(root);
}

// Deferred pieces are read in place until releaseSources(), which copies what the writer has
// not read yet; released at different points of the write (before its first byte, part
// way, after its last), every checkpoint holds the values at saveAsync time although the
// tensors change right after the release.
TEST(Checkpointer, DeferredPiecesAreReadInPlaceUntilReleased) {
  auto consensus = consensusOver(MPI_COMM_WORLD);
  ckpt::Checkpointer cp(*consensus);
  const int world = cp.consensus().size(), rank = cp.consensus().rank();
  const std::string root = sharedTempDir(cp, "deferred");
  at::Tensor big = at::arange(6 << 20, at::kDouble);  // 48 MiB: several staging buffers
  at::Tensor small = at::arange(100, at::kFloat);     // written by HDF5
  at::Tensor copied = at::arange(1000, at::kLong);    // not deferred: copied at the call
  const std::int64_t deferredBytes =
      (pieceOf("b", big, world, rank).data.numel() * 8 + pieceOf("s", small, world, rank).data.numel() * 4);
  int step = 0;
  for (int delayMs : {0, 0, 0, 1, 5, 20, 80, 400}) {
    ++step;
    const at::Tensor eb = big.clone(), es = small.clone(), ec = copied.clone();
    std::vector<ckpt::SavePiece> pieces = {pieceOf("b", big, world, rank),
                                           pieceOf("s", small, world, rank),
                                           pieceOf("c", copied, world, rank)};
    pieces[0].deferCopy = pieces[1].deferCopy = true;
    const std::string dir = root + "/checkpoint-" + std::to_string(step);
    cp.saveAsync(dir, pieces, {});
    copied.add_(1);  // allowed at once: copied at the call
    std::this_thread::sleep_for(std::chrono::milliseconds(delayMs));
    const std::int64_t n = cp.releaseSources();
    EXPECT_GE(n, 0);
    EXPECT_LE(n, deferredBytes);
    EXPECT_EQ(cp.releaseSources(), 0);  // once
    big.mul_(-1.0).sub_(1.0);           // the optimizer step
    small.mul_(-1.0).sub_(1.0);
    ASSERT_TRUE(allRanks(cp.wait().has_value()));
    const ckpt::Manifest m = cp.loadManifest(dir);
    at::Tensor bb = at::zeros_like(big), bs = at::zeros_like(small), bc = at::zeros_like(copied);
    cp.load(dir, m, {{"b", bb, 0}, {"s", bs, 0}, {"c", bc, 0}});
    EXPECT_TRUE(at::equal(bb, eb)) << "delay " << delayMs << " ms, " << n << " bytes copied";
    EXPECT_TRUE(at::equal(bs, es)) << "delay " << delayMs << " ms";
    EXPECT_TRUE(at::equal(bc, ec)) << "delay " << delayMs << " ms";
    if (rank == 0) {
      std::printf("release after %d ms copied %lld of %lld deferred bytes\n", delayMs,
                  static_cast<long long>(n), static_cast<long long>(deferredBytes));
    }
  }
  EXPECT_EQ(cp.releaseSources(), 0);  // nothing in flight
  cp.consensus().barrier();
  if (rank == 0) fs::remove_all(root);
}

// A Checkpointer runs on the group of its consensus: with the world split in two halves,
// each half saves and loads its own checkpoint on its own, at its own pace (the second
// half starts later and writes other values). Shard names and the manifest's world size
// are the group's; nothing waits for the other half.
TEST(Checkpointer, RunsOnASubGroupWhileTheOthersDoSomethingElse) {
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  std::string root;
  {
    auto all = consensusOver(MPI_COMM_WORLD);
    ckpt::Checkpointer any(*all);
    root = sharedTempDir(any, "group");
  }
  const int half = (world + 1) / 2;  // np 4: ranks {0,1} and {2,3}; np 2: {0} and {1}
  const int color = rank < half ? 0 : 1;
  MPI_Comm group = MPI_COMM_NULL;
  MPI_Comm_split(MPI_COMM_WORLD, color, rank, &group);
  bool ok = false;
  std::string why;
  try {
    auto consensus = consensusOver(group);
    ckpt::Checkpointer cp(*consensus);
    const int gRank = consensus->rank(), gSize = consensus->size();
    if (color == 1) std::this_thread::sleep_for(std::chrono::milliseconds(500));
    at::manual_seed(11 + color);
    const at::Tensor w = at::randn({4099}, at::kDouble);  // each group its own values
    const std::string dir = root + "/group-" + std::to_string(color) + "/checkpoint-5";
    cp.save(dir, {pieceOf("w", w, gSize, gRank)}, {});
    const ckpt::Manifest m = cp.loadManifest(dir);
    at::Tensor back = at::zeros_like(w);
    cp.load(dir, m, {{"w", back, 0}});
    ok = m.world_size() == gSize && at::equal(back, w) &&
         fs::exists(dir + "/" + ckpt::shardFileName(gSize - 1, gSize)) &&
         !fs::exists(dir + "/" + ckpt::shardFileName(gSize, gSize + 1)) &&
         ckpt::inspectCheckpoint(dir, true).status == ckpt::CheckpointStatus::kValid;
    if (!ok)
      why = "group " + std::to_string(color) + ": world_size " + std::to_string(m.world_size()) +
            ", group size " + std::to_string(gSize);
  } catch (const std::exception& e) {
    why = e.what();
  }
  MPI_Comm_free(&group);
  EXPECT_TRUE(ok) << why;
  EXPECT_TRUE(allRanks(ok));
  if (rank == 0) fs::remove_all(root);
}

}  // namespace
}  // namespace cohort::test
