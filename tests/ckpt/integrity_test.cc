// Checkpoint integrity and bounds (issue 20): the manifest's own checksum (and version 1
// manifests, which have none, still read), whole-shard checksums, overflowing shapes, shard
// names that leave the directory, datatypes relabelled with the same element size, and the
// acceptance fuzz: every byte of a small checkpoint's manifest.pb and a sample of its shard
// bytes changed in turn, each change rejected by verify, never a crash or a hang.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <random>
#include <set>

#include "cohort/ckpt/crc32c.h"
#include "cohort/ckpt/format.h"
#include "format_test_util.h"

namespace cohort::ckpt {
namespace {

namespace fs = std::filesystem;
using testing::entryOf;
using testing::HostTensor;
using testing::makeTensor;
using testing::messageOf;
using testing::readFile;
using testing::sampleHeader;
using testing::TempDir;
using testing::writeCheckpoint;
using testing::writeFile;

TEST(Crc32c, CombineEqualsTheChecksumOfTheConcatenation) {
  std::mt19937 rng(5);
  std::string data(70000, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  for (std::size_t split : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{4096},
                            std::size_t{65537}, data.size()}) {
    const std::uint32_t a = crc32c::value(data.data(), split);
    const std::uint32_t b = crc32c::value(data.data() + split, data.size() - split);
    EXPECT_EQ(crc32c::combine(a, b, data.size() - split), crc32c::value(data.data(), data.size()))
        << split;
  }
}

// A small checkpoint: two shards, a few dtypes, large (O_DIRECT) and small datasets.
class Integrity : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = checkpointDir(tmp_.path(), 3);
    tensors_ = {makeTensor("model/a.weight", "float32", {300, 100}, 1),
                makeTensor("model/b.bias", "float16", {10}, 2),
                makeTensor("model/mask", "bool", {6}, 3),
                makeTensor("rng/0/torch_cpu", "uint8", {40}, 4, /*onlyRank=*/0)};
    WriteOptions opt;
    opt.checksumBlockBytes = 4096;
    manifest_ = writeCheckpoint(dir_, 2, tensors_, sampleHeader(), opt);
    manifestPath_ = (fs::path(dir_) / kManifestName).string();
  }
  std::string shard(int r) const { return (fs::path(dir_) / shardFileName(r, 2)).string(); }
  // Writes `m` as a tool that edits manifests on purpose would: with a valid checksum.
  void reseal(const Manifest& m) { writeFile(manifestPath_, serializeManifest(m)); }

  TempDir tmp_;
  std::string dir_, manifestPath_;
  std::vector<HostTensor> tensors_;
  Manifest manifest_;
};

TEST_F(Integrity, TheManifestEndsWithItsOwnChecksumAndShardsAreRecorded) {
  const std::string bytes = readFile(manifestPath_);
  ASSERT_GT(bytes.size(), 7u);
  EXPECT_EQ(static_cast<unsigned char>(bytes[0]), 0x08);
  EXPECT_EQ(static_cast<unsigned char>(bytes[1]), kFormatVersion);
  EXPECT_EQ(static_cast<unsigned char>(bytes[bytes.size() - 5]), 0x7D);  // field 15, fixed32
  const Manifest m = readManifest(dir_);
  EXPECT_EQ(m.manifest_crc32c(), crc32c::value(bytes.data(), bytes.size() - 5));
  ASSERT_EQ(m.shard_bytes_size(), 2);
  for (int r = 0; r < 2; ++r) {
    const std::string file = readFile(shard(r));
    EXPECT_EQ(m.shard_bytes(r), static_cast<std::int64_t>(file.size()));
    EXPECT_EQ(m.shard_crc32c(r), crc32c::value(file.data(), file.size()));  // no read-back
  }
  EXPECT_NO_THROW(verifyCheckpoint(dir_));
}

// A changed number that still parses (the examples of the issue) is caught by the checksum.
TEST_F(Integrity, AnEditedStepOrLogValueIsRejected) {
  for (auto edit : std::vector<std::function<void(Manifest&)>>{
           [](Manifest& m) { m.mutable_trainer_state()->set_global_step(999999); },
           [](Manifest& m) {
             (*m.mutable_trainer_state()->mutable_log_history(0)->mutable_values())["loss"] = 9;
           },
           [](Manifest& m) { m.set_training_args("learning_rate: 5\n"); }}) {
    Manifest m = manifest_;
    m.mutable_trainer_state()->add_log_history()->mutable_values()->insert({"loss", 2.0});
    reseal(m);
    ASSERT_NO_THROW(readManifest(dir_));
    std::string good = readFile(manifestPath_);
    edit(m);
    std::string changed = serializeManifest(m);
    // Keep the old checksum: what a flipped byte or a careless edit leaves.
    changed.replace(changed.size() - 4, 4, good.substr(good.size() - 4));
    writeFile(manifestPath_, changed);
    const std::string msg = messageOf<CheckpointCorrupt>([&] { verifyCheckpoint(dir_); });
    EXPECT_NE(msg.find("manifest checksum mismatch"), std::string::npos) << msg;
    EXPECT_NE(msg.find(manifestPath_), std::string::npos) << msg;
  }
}

TEST_F(Integrity, VersionOneCheckpointsAreStillRead) {
  Manifest m = manifest_;
  m.set_format_version(1);
  m.clear_shard_bytes();
  m.clear_shard_crc32c();
  std::string bytes;
  ASSERT_TRUE(m.SerializeToString(&bytes));  // exactly what version 1 wrote
  writeFile(manifestPath_, bytes);
  EXPECT_EQ(readManifest(dir_).format_version(), 1u);
  EXPECT_NO_THROW(verifyCheckpoint(dir_));
  const TensorEntry& e = entryOf(manifest_, "model/a.weight");
  const Manifest v1 = readManifest(dir_);
  RangeReader reader(dir_, v1);  // borrows the manifest
  std::vector<char> buf(30000 * 4);
  reader.read(e, 0, 30000, buf.data());
  EXPECT_EQ(0, std::memcmp(buf.data(), tensors_[0].bytes.data(), buf.size()));
  // Version 1 with version 2's fields, or version 2 without its checksum: rejected.
  m.add_shard_bytes(1);
  m.add_shard_bytes(1);
  m.add_shard_crc32c(1);
  m.add_shard_crc32c(1);
  writeFile(manifestPath_, serializeManifest(m));
  EXPECT_THROW(readManifest(dir_), CheckpointCorrupt);
  ASSERT_TRUE(manifest_.SerializeToString(&bytes));
  writeFile(manifestPath_, bytes);
  const std::string msg = messageOf<CheckpointCorrupt>([&] { readManifest(dir_); });
  EXPECT_NE(msg.find("without its checksum"), std::string::npos) << msg;
}

// Issue 20 item 2: [4503599627370497, 12288] has 12288 elements modulo 2^64.
TEST_F(Integrity, ShapesWhoseProductOverflowsAreRejected) {
  Manifest m = manifest_;
  TensorEntry* t = m.mutable_tensors(0);
  ASSERT_EQ(t->name(), "model/a.weight");
  t->clear_shape();
  t->add_shape(4503599627370497);
  t->add_shape(12288);
  t->mutable_chunks(0)->set_count(12288);
  reseal(m);
  std::string msg = messageOf<CheckpointCorrupt>([&] { readManifest(dir_); });
  EXPECT_NE(msg.find("overflows"), std::string::npos) << msg;
  EXPECT_THROW(exportConsolidated(dir_, tmp_ / "out.h5"), CheckpointCorrupt);
  EXPECT_FALSE(fs::exists(tmp_ / "out.h5"));
  // Dims whose product fits but whose bytes do not.
  t->clear_shape();
  t->add_shape(std::int64_t{1} << 61);
  reseal(m);
  msg = messageOf<CheckpointCorrupt>([&] { readManifest(dir_); });
  EXPECT_NE(msg.find("model/a.weight"), std::string::npos) << msg;
  // A shape and chunk counts that agree with each other but not with the shard files
  // (checksum lists sized for 1 GiB blocks so that the manifest stays consistent).
  m = manifest_;
  t = m.mutable_tensors(0);
  t->set_shape(0, std::int64_t{1} << 40);
  t->set_shape(1, 1);
  t->mutable_chunks(1)->set_count((std::int64_t{1} << 40) - t->chunks(0).count());
  m.set_checksum_block_bytes(kMaxChecksumBlockBytes);
  for (auto& entry : *m.mutable_tensors()) {
    for (auto& c : *entry.mutable_chunks()) {
      const std::int64_t b = c.count() * static_cast<std::int64_t>(dtypeSize(entry.dtype()));
      c.clear_crc32c();
      for (std::int64_t k = 0; k < (b + kMaxChecksumBlockBytes - 1) / kMaxChecksumBlockBytes; ++k)
        c.add_crc32c(0);
    }
  }
  reseal(m);
  msg = messageOf<CheckpointCorrupt>([&] { readManifest(dir_); });
  EXPECT_NE(msg.find("more bytes than shard"), std::string::npos) << msg;
  // Version 1 has no shard sizes: the reader bounds every allocation by the file's size.
  m.set_format_version(1);
  m.clear_shard_bytes();
  m.clear_shard_crc32c();
  std::string v1;
  ASSERT_TRUE(m.SerializeToString(&v1));
  writeFile(manifestPath_, v1);
  ASSERT_NO_THROW(readManifest(dir_));
  const CheckpointInfo info = inspectCheckpoint(dir_, false);
  EXPECT_EQ(info.status, CheckpointStatus::kCorrupt);
  EXPECT_NE(info.reason.find("do not fit in the file"), std::string::npos) << info.reason;
  EXPECT_THROW(exportConsolidated(dir_, tmp_ / "out.h5"), CheckpointCorrupt);
  std::vector<char> buf(16);
  RangeReader reader(dir_, m);
  EXPECT_THROW(reader.read(m.tensors(0), (std::int64_t{1} << 40) - 4, 4, buf.data()),
               CheckpointCorrupt);
}

// Strings must be UTF-8 (docs/checkpoint-format.md): multi-byte text is fine, broken
// sequences are not.
TEST_F(Integrity, StringsMustBeUtf8) {
  Manifest m = manifest_;
  (*m.mutable_trainer_state()->add_log_history()->mutable_values())["perplexit\xC3\xA9"] = 1;
  m.set_training_args("run_name: \"\xE6\xB5\x8B\xE8\xAF\x95 \xF0\x9F\x9A\x80\"\n");
  reseal(m);
  EXPECT_NO_THROW(readManifest(dir_));
  for (const std::string bad :
       {"\xC3", "\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xE6\xB5", "\xFF", "a\x80"}) {
    Manifest b = m;
    b.set_training_args(bad);
    reseal(b);
    const std::string msg = messageOf<CheckpointCorrupt>([&] { readManifest(dir_); });
    EXPECT_NE(msg.find("training_args is not valid UTF-8"), std::string::npos) << msg;
  }
}

// Issue 20 item 3.
TEST_F(Integrity, ShardNamesMustBeTheDocumentedFileNames) {
  for (const std::string name : {"../x.h5", "/etc/passwd", "sub/shard-00000-of-00002.h5",
                                 "shard-00001-of-00002.h5", "shard-0-of-2.h5", ""}) {
    SCOPED_TRACE(name);
    Manifest m = manifest_;
    m.set_shards(0, name);
    reseal(m);
    const std::string msg = messageOf<CheckpointCorrupt>([&] { readManifest(dir_); });
    EXPECT_NE(msg.find("shard 0 is named"), std::string::npos) << msg;
    EXPECT_EQ(inspectCheckpoint(dir_, false).status, CheckpointStatus::kCorrupt);
  }
}

// Issue 20 item 5: same element size, other type.
TEST_F(Integrity, ADtypeRelabelledWithTheSameElementSizeIsRejected) {
  for (auto [name, dtype] :
       std::vector<std::pair<std::string, std::string>>{{"model/a.weight", "int32"},
                                                        {"model/b.bias", "bfloat16"},
                                                        {"model/b.bias", "int16"},
                                                        {"model/mask", "uint8"},
                                                        {"rng/0/torch_cpu", "bool"},
                                                        {"rng/0/torch_cpu", "int8"}}) {
    SCOPED_TRACE(name + " as " + dtype);
    Manifest m = manifest_;
    for (auto& t : *m.mutable_tensors()) {
      if (t.name() == name) t.set_dtype(dtype);
    }
    reseal(m);
    ASSERT_NO_THROW(readManifest(dir_));
    const CheckpointInfo info = inspectCheckpoint(dir_, false);
    EXPECT_EQ(info.status, CheckpointStatus::kCorrupt);
    EXPECT_TRUE(info.reason.find("datatype") != std::string::npos ||
                info.reason.find("dataset says dtype") != std::string::npos)
        << info.reason;
    EXPECT_THROW(verifyCheckpoint(dir_), CheckpointCorrupt);
  }
}

// A byte of HDF5's own structures (not tensor data) changed: only the whole-file checksum
// sees it, so verify names the file and says so.
TEST_F(Integrity, AChangeOutsideTheTensorDataIsFoundByTheFileChecksum) {
  std::string bytes = readFile(shard(1));
  // The "tensor" attribute's value of a dataset: HDF5 never reads it back.
  const std::size_t at = bytes.find("model/b.bias");
  ASSERT_NE(at, std::string::npos);
  bytes[at + 6] = 'X';
  writeFile(shard(1), bytes);
  EXPECT_EQ(inspectCheckpoint(dir_, false).status, CheckpointStatus::kValid);  // cheap check
  const std::string msg = messageOf<CheckpointCorrupt>([&] { verifyCheckpoint(dir_); });
  EXPECT_NE(msg.find(shard(1)), std::string::npos) << msg;
  EXPECT_NE(msg.find("whole file"), std::string::npos) << msg;
}

// The acceptance fuzz: every byte of manifest.pb changed in turn (three ways), and a sample
// of shard bytes; verify must reject each change with CheckpointCorrupt (anything else, a
// crash, or a hang past the test's timeout fails).
TEST_F(Integrity, FuzzEveryManifestByteAndSampledShardBytes) {
  const std::string good = readFile(manifestPath_);
  ASSERT_NO_THROW(verifyCheckpoint(dir_));
  int rejected = 0, accepted = 0;
  std::string firstAccepted;
  auto expectRejected = [&](const std::string& what) {
    try {
      verifyCheckpoint(dir_);
      if (accepted++ == 0) firstAccepted = what;
    } catch (const CheckpointCorrupt&) {
      ++rejected;
    }
  };
  for (std::size_t i = 0; i < good.size(); ++i) {
    for (unsigned char mask : {0x01, 0x80, 0xFF}) {
      std::string bad = good;
      bad[i] = static_cast<char>(bad[i] ^ mask);
      writeFile(manifestPath_, bad);
      expectRejected("manifest byte " + std::to_string(i) + " ^ " + std::to_string(mask));
    }
  }
  // Truncated and extended manifests, too.
  for (std::size_t keep : {std::size_t{0}, std::size_t{1}, good.size() / 2, good.size() - 1}) {
    writeFile(manifestPath_, good.substr(0, keep));
    expectRejected("manifest cut to " + std::to_string(keep));
  }
  writeFile(manifestPath_, good + std::string(1, '\0'));
  expectRejected("manifest with a byte appended");
  writeFile(manifestPath_, good);
  const int manifestChanges = rejected + accepted;

  // Shards: every 97th byte plus 200 random ones, each flipped alone.
  std::mt19937 rng(20);
  for (int r = 0; r < 2; ++r) {
    const std::string original = readFile(shard(r));
    std::set<std::size_t> positions;
    for (std::size_t p = 0; p < original.size(); p += 97) positions.insert(p);
    for (int k = 0; k < 200; ++k) positions.insert(rng() % original.size());
    for (std::size_t p : positions) {
      std::string bad = original;
      bad[p] = static_cast<char>(bad[p] ^ (1 << (rng() % 8)));
      writeFile(shard(r), bad);
      expectRejected("shard " + std::to_string(r) + " byte " + std::to_string(p));
    }
    writeFile(shard(r), original);
  }
  EXPECT_NO_THROW(verifyCheckpoint(dir_));
  EXPECT_EQ(accepted, 0) << "verify accepted " << accepted << " changes, first: " << firstAccepted;
  EXPECT_GT(manifestChanges, static_cast<int>(3 * good.size()));
  std::printf("fuzz: %d changes rejected (%d of manifest.pb, %zu bytes)\n", rejected,
              manifestChanges, good.size());
}

}  // namespace
}  // namespace cohort::ckpt
