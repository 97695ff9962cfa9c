// The torch-free checkpoint format: CRC32C, shard round trips (HDF5-written small datasets
// and O_DIRECT large ones) through the manifest and range reads, corruption detection,
// directory classification and simulated write failures. Several "ranks" are simulated in
// this one process (format_util.h); the collective protocol is tested in collective_tests.
#include "cohort/ckpt/format.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <fstream>
#include <functional>
#include <random>
#include <set>

#include "cohort/ckpt/crc32c.h"
#include "format_test_util.h"

namespace cohort::ckpt {
namespace {

namespace fs = std::filesystem;
using testing::entryOf;
using testing::flipByteInPattern;
using testing::HostTensor;
using testing::makeTensor;
using testing::messageOf;
using testing::readFile;
using testing::sampleHeader;
using testing::sampleTensors;
using testing::TempDir;
using testing::writeCheckpoint;
using testing::writeFile;

// ---------------------------------------------------------------------------------------
// CRC32C

TEST(Crc32c, KnownVectors) {
  const std::string digits = "123456789";
  EXPECT_EQ(crc32c::value(digits.data(), digits.size()), 0xE3069283u);
  EXPECT_EQ(crc32c::extendPortable(0, digits.data(), digits.size()), 0xE3069283u);
  EXPECT_EQ(crc32c::value(nullptr, 0), 0u);
  // RFC 3720 (iSCSI), appendix B.4.
  std::vector<unsigned char> zeros(32, 0), ones(32, 0xFF), inc(32), dec(32);
  for (int i = 0; i < 32; ++i) inc[i] = static_cast<unsigned char>(i), dec[i] = 31 - i;
  for (auto* fn : {&crc32c::extend, &crc32c::extendPortable}) {
    EXPECT_EQ(fn(0, zeros.data(), 32), 0x8A9136AAu);
    EXPECT_EQ(fn(0, ones.data(), 32), 0x62A8AB43u);
    EXPECT_EQ(fn(0, inc.data(), 32), 0x46DD794Eu);
    EXPECT_EQ(fn(0, dec.data(), 32), 0x113FDB5Cu);
  }
}

TEST(Crc32c, FastPathEqualsPortableAtEveryLengthAndAlignment) {
  std::mt19937 rng(7);
  std::vector<unsigned char> buf(300000);
  for (auto& b : buf) b = static_cast<unsigned char>(rng());
  for (std::size_t align = 0; align < 16; ++align) {
    for (std::size_t len = 0; len <= 300; ++len) {
      const unsigned char* p = buf.data() + align;
      ASSERT_EQ(crc32c::extend(0, p, len), crc32c::extendPortable(0, p, len))
          << "len " << len << " align " << align;
      ASSERT_EQ(crc32c::extend(0x12345678u, p, len), crc32c::extendPortable(0x12345678u, p, len));
    }
  }
  for (std::size_t len : {4095u, 4096u, 4097u, 65536u + 3u, 299990u}) {
    const std::size_t align = len % 13;
    EXPECT_EQ(crc32c::extend(0, buf.data() + align, len),
              crc32c::extendPortable(0, buf.data() + align, len))
        << len;
  }
}

TEST(Crc32c, ExtendContinuesAValue) {
  std::mt19937 rng(11);
  std::vector<unsigned char> buf(5000);
  for (auto& b : buf) b = static_cast<unsigned char>(rng());
  const std::uint32_t whole = crc32c::value(buf.data(), buf.size());
  for (std::size_t cut : {0u, 1u, 7u, 8u, 9u, 1000u, 4999u, 5000u}) {
    const std::uint32_t a = crc32c::value(buf.data(), cut);
    EXPECT_EQ(crc32c::extend(a, buf.data() + cut, buf.size() - cut), whole) << cut;
    EXPECT_EQ(crc32c::extendPortable(a, buf.data() + cut, buf.size() - cut), whole) << cut;
  }
}

// ---------------------------------------------------------------------------------------
// Round trips

struct RoundTripCase {
  std::int64_t blockBytes;
  bool directIo;
  int world;
};

class FormatRoundTrip : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(FormatRoundTrip, FullAndPartialReadsEqualTheSource) {
  const RoundTripCase p = GetParam();
  TempDir tmp;
  const std::string dir = checkpointDir(tmp.path(), 40);
  const std::vector<HostTensor> tensors = sampleTensors(p.world);
  WriteOptions opt;
  opt.checksumBlockBytes = p.blockBytes;
  opt.directIo = p.directIo;
  writeCheckpoint(dir, p.world, tensors, sampleHeader(), opt);

  EXPECT_FALSE(fs::exists(fs::path(dir) / kSentinelName));
  EXPECT_TRUE(fs::exists(fs::path(dir) / kManifestTextName));
  const Manifest m = readManifest(dir);
  EXPECT_EQ(m.world_size(), p.world);
  EXPECT_EQ(m.checksum_block_bytes(), p.blockBytes);
  ASSERT_EQ(m.tensors_size(), static_cast<int>(tensors.size()));
  EXPECT_EQ(m.trainer_state().best_model_checkpoint(), "out/checkpoint-30");
  std::int64_t total = 0;
  for (const HostTensor& t : tensors) total += static_cast<std::int64_t>(t.bytes.size());
  EXPECT_EQ(m.total_bytes(), total);
  for (int i = 1; i < m.tensors_size(); ++i)
    EXPECT_LT(m.tensors(i - 1).name(), m.tensors(i).name());

  std::mt19937_64 rng(static_cast<std::uint64_t>(p.blockBytes) * 31 + p.world);
  RangeReader reader(dir, m);
  for (const HostTensor& src : tensors) {
    SCOPED_TRACE(src.name);
    const TensorEntry& e = entryOf(m, src.name);
    EXPECT_EQ(e.dtype(), src.dtype);
    EXPECT_EQ(std::vector<std::int64_t>(e.shape().begin(), e.shape().end()), src.shape);
    EXPECT_EQ(e.chunks_size(), src.onlyRank >= 0 ? 1 : p.world);
    for (const Chunk& c : e.chunks()) EXPECT_EQ(c.dataset(), "/" + src.name);
    const std::int64_t n = src.numel();
    const auto es = static_cast<std::int64_t>(dtypeSize(src.dtype));

    std::vector<char> all(src.bytes.size());
    reader.read(e, 0, n, all.data());
    ASSERT_EQ(all, src.bytes);

    // Ranges that start/end on both sides of every chunk boundary and of checksum-block
    // boundaries (in elements), plus random ones.
    std::set<std::int64_t> edges = {0, n};
    for (const Chunk& c : e.chunks()) edges.insert(c.offset());
    const std::int64_t blockElems = std::max<std::int64_t>(1, p.blockBytes / es);
    for (std::int64_t b = blockElems; b < n && edges.size() < 200; b += blockElems) {
      edges.insert(b);
    }
    std::vector<std::pair<std::int64_t, std::int64_t>> ranges;
    for (std::int64_t edge : edges) {
      for (std::int64_t d : {-3, -1, 0, 1, 5}) {
        const std::int64_t lo = std::clamp<std::int64_t>(edge + d, 0, n);
        const std::int64_t len =
            std::min<std::int64_t>(n - lo, 1 + static_cast<std::int64_t>(rng() % 9000));
        ranges.emplace_back(lo, len);
        const std::int64_t lo2 = std::max<std::int64_t>(0, lo - 7);
        ranges.emplace_back(lo2, std::min<std::int64_t>(n - lo2, 14));
      }
    }
    for (int k = 0; k < 40 && n > 0; ++k) {
      const std::int64_t lo = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(n));
      ranges.emplace_back(
          lo, static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(n - lo + 1)));
    }
    for (auto [lo, len] : ranges) {
      std::vector<char> part(static_cast<std::size_t>(len * es) + 1, '\x77');
      reader.read(e, lo, len, part.data());
      ASSERT_EQ(0, std::memcmp(part.data(), src.bytes.data() + lo * es,
                               static_cast<std::size_t>(len * es)))
          << "elements [" << lo << ", " << lo + len << ")";
      ASSERT_EQ(part.back(), '\x77') << "read past the requested range";
    }
  }
  EXPECT_GT(reader.bytesRead(), total);

  const CheckpointInfo info = inspectCheckpoint(dir, /*verifyChecksums=*/true);
  EXPECT_EQ(info.status, CheckpointStatus::kValid) << info.reason;
  EXPECT_EQ(info.step, 40);
  EXPECT_EQ(info.worldSize, p.world);
  ASSERT_TRUE(info.bestMetric.has_value());
  EXPECT_DOUBLE_EQ(*info.bestMetric, 0.25);
  EXPECT_FALSE(info.preempted);
  EXPECT_GT(info.bytes, total);
  EXPECT_NO_THROW(verifyCheckpoint(dir));
  EXPECT_EQ(exportConsolidated(dir, tmp / "model.h5"), 10);
  EXPECT_TRUE(fs::exists(tmp / "model.h5"));
  EXPECT_FALSE(fs::exists(tmp / "model.h5.tmp"));
}

INSTANTIATE_TEST_SUITE_P(Blocks, FormatRoundTrip,
                         ::testing::Values(RoundTripCase{4096, true, 3},
                                           RoundTripCase{kDefaultChecksumBlockBytes, true, 3},
                                           RoundTripCase{24, true, 2},
                                           RoundTripCase{4096, false, 2},
                                           RoundTripCase{4096, true, 1}),
                         [](const auto& info) {
                           return "block" + std::to_string(info.param.blockBytes) +
                                  (info.param.directIo ? "_direct" : "_buffered") + "_world" +
                                  std::to_string(info.param.world);
                         });

TEST(FormatShard, TwoChunksOfOneTensorInOneShardGetDistinctDatasets) {
  TempDir tmp;
  const HostTensor t = makeTensor("model/w", "float32", {40000}, 3);
  std::vector<ChunkSource> src(2);
  for (int i = 0; i < 2; ++i) {
    src[i].name = t.name, src[i].dtype = t.dtype, src[i].shape = t.shape;
    src[i].offset = i * 20000, src[i].count = 20000;
    src[i].data = t.bytes.data() + i * 80000;
  }
  const std::string path = tmp / "shard.h5";
  const std::vector<Chunk> chunks = writeShard(path, src);
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[0].dataset(), "/model/w");
  EXPECT_NE(chunks[1].dataset(), chunks[0].dataset());
  ShardReader reader(path, kDefaultChecksumBlockBytes);
  std::vector<char> back(80000);
  reader.read(chunks[1], "float32", 0, 20000, back.data());
  EXPECT_EQ(0, std::memcmp(back.data(), t.bytes.data() + 80000, 80000));
  EXPECT_NO_THROW(reader.verify(chunks[0], "float32"));
}

TEST(FormatShard, RejectsABadChecksumBlockSize) {
  TempDir tmp;
  WriteOptions opt;
  opt.checksumBlockBytes = 4097;
  EXPECT_THROW(writeShard(tmp / "s.h5", {}, opt), CheckpointError);
}

// A disk filling up mid-shard: save_faults_test.cc (through the FileOps seam).

// ---------------------------------------------------------------------------------------
// Corruption: every kind is CheckpointCorrupt naming the file, never a silent load.

class FormatCorruption : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = checkpointDir(tmp_.path(), 7);
    tensors_ = sampleTensors(3);
    WriteOptions opt;
    opt.checksumBlockBytes = 4096;
    writeCheckpoint(dir_, 3, tensors_, sampleHeader(), opt);
    manifest_ = readManifest(dir_);
  }
  std::string shard(int r) const { return (fs::path(dir_) / shardFileName(r, 3)).string(); }
  const HostTensor& tensor(const std::string& name) const {
    for (const HostTensor& t : tensors_) {
      if (t.name == name) return t;
    }
    throw std::runtime_error(name);
  }
  // Reads a whole tensor, expecting CheckpointCorrupt; returns the message.
  std::string readFails(const std::string& name) {
    const Manifest m = readManifest(dir_);
    RangeReader reader(dir_, m);
    const TensorEntry& e = entryOf(m, name);
    std::vector<char> buf(static_cast<std::size_t>(numelOf(e)) * dtypeSize(e.dtype()));
    return messageOf<CheckpointCorrupt>([&] { reader.read(e, 0, numelOf(e), buf.data()); });
  }
  // Flips a byte at element `elem` of `name` (which rank `r` holds) in r's shard.
  void flip(const std::string& name, int r, std::int64_t elem) {
    const HostTensor& t = tensor(name);
    const auto es = static_cast<std::int64_t>(dtypeSize(t.dtype));
    const std::string pattern(t.bytes.data() + elem * es, 64);
    ASSERT_GE(flipByteInPattern(shard(r), pattern, 5), 0) << "pattern not found once";
  }

  TempDir tmp_;
  std::string dir_;
  std::vector<HostTensor> tensors_;
  Manifest manifest_;
};

TEST_F(FormatCorruption, FlippedByteInALargeDatasetIsFoundWhereItIs) {
  // bfloat16 [3, 50000]: 100 KB per rank, written through the O_DIRECT path.
  const std::string name = "model/norm.weight";
  const auto [lo, count] = testing::splitRange(150000, 1, 3);
  const std::int64_t elem = lo + 30000;  // byte 60000 of rank 1's chunk: checksum block 14
  flip(name, 1, elem);

  EXPECT_EQ(inspectCheckpoint(dir_, false).status, CheckpointStatus::kValid);  // cheap check
  const CheckpointInfo info = inspectCheckpoint(dir_, true);
  EXPECT_EQ(info.status, CheckpointStatus::kCorrupt);
  EXPECT_NE(info.reason.find(shard(1)), std::string::npos) << info.reason;
  const std::string v = messageOf<CheckpointCorrupt>([&] { verifyCheckpoint(dir_); });
  EXPECT_NE(v.find(shard(1)), std::string::npos) << v;
  EXPECT_NE(v.find("checksum mismatch"), std::string::npos) << v;
  const std::string r = readFails(name);
  EXPECT_NE(r.find(shard(1)), std::string::npos) << r;

  // Reads that do not touch the damaged 4 KiB block still succeed and are exact.
  const Manifest m = readManifest(dir_);
  RangeReader reader(dir_, m);
  const TensorEntry& e = entryOf(m, name);
  const HostTensor& t = tensor(name);
  std::vector<char> buf(2 * 4000);
  reader.read(e, lo, 4000, buf.data());
  EXPECT_EQ(0, std::memcmp(buf.data(), t.bytes.data() + lo * 2, 8000));
  EXPECT_THROW(reader.read(e, elem - 3, 6, buf.data()), CheckpointCorrupt);
  EXPECT_EQ(listCheckpoints(tmp_.path(), true).at(0).status, CheckpointStatus::kCorrupt);
}

TEST_F(FormatCorruption, FlippedByteInASmallHdf5WrittenDataset) {
  const std::string name = "model/fc.bias";  // float16, ~46.7 KB per rank: HDF5 writes it
  const auto [lo, count] = testing::splitRange(70001, 2, 3);
  flip(name, 2, lo + 100);
  const std::string v = messageOf<CheckpointCorrupt>([&] { verifyCheckpoint(dir_); });
  EXPECT_NE(v.find(shard(2)), std::string::npos) << v;
  const std::string r = readFails(name);
  EXPECT_NE(r.find(shard(2)), std::string::npos) << r;
}

// verify reads a chunk in bounded pieces (64 MiB): a flip past the first piece still shows.
TEST(FormatVerify, ChunkLargerThanOneVerifyPiece) {
  TempDir tmp;
  const std::string dir = checkpointDir(tmp.path(), 1);
  const HostTensor big = makeTensor("model/big", "float32", {17 * 1024 * 1024 + 5}, 9);
  writeCheckpoint(dir, 1, {big}, sampleHeader());
  EXPECT_NO_THROW(verifyCheckpoint(dir));
  const std::string shard = (fs::path(dir) / shardFileName(0, 1)).string();
  const std::int64_t elem = 17 * 1024 * 1024 - 100;  // in the last 1 MiB block, second piece
  ASSERT_GE(flipByteInPattern(shard, std::string(big.bytes.data() + elem * 4, 64), 9), 0);
  const std::string msg = messageOf<CheckpointCorrupt>([&] { verifyCheckpoint(dir); });
  EXPECT_NE(msg.find(shard), std::string::npos) << msg;
  EXPECT_NE(msg.find("block 67"), std::string::npos) << msg;
}

TEST_F(FormatCorruption, TruncatedShard) {
  for (std::uintmax_t keep :
       {fs::file_size(shard(0)) - 100, std::uintmax_t{50000}, std::uintmax_t{0}}) {
    SCOPED_TRACE(keep);
    fs::resize_file(shard(0), keep);
    const CheckpointInfo info = inspectCheckpoint(dir_, /*verifyChecksums=*/false);
    EXPECT_EQ(info.status, CheckpointStatus::kCorrupt);
    EXPECT_NE(info.reason.find(shard(0)), std::string::npos) << info.reason;
    const std::string v = messageOf<CheckpointCorrupt>([&] { verifyCheckpoint(dir_); });
    EXPECT_NE(v.find(shard(0)), std::string::npos) << v;
    const std::string r = readFails("model/embed.weight");
    EXPECT_NE(r.find(shard(0)), std::string::npos) << r;
  }
}

TEST_F(FormatCorruption, MissingShard) {
  fs::remove(shard(2));
  const CheckpointInfo info = inspectCheckpoint(dir_, false);
  EXPECT_EQ(info.status, CheckpointStatus::kCorrupt);
  EXPECT_NE(info.reason.find(shard(2)), std::string::npos) << info.reason;
  const std::string r = readFails("model/fc.weight");
  EXPECT_NE(r.find(shard(2)), std::string::npos) << r;
}

TEST_F(FormatCorruption, ManifestWithOutOfRangeChunks) {
  const std::string path = (fs::path(dir_) / kManifestName).string();
  auto expectRejected = [&](const std::function<void(Manifest&)>& edit, const char* what) {
    SCOPED_TRACE(what);
    Manifest m = manifest_;
    edit(m);
    writeFile(path, serializeManifest(m));  // re-sealed: the structure checks must catch it
    const std::string msg = messageOf<CheckpointCorrupt>([&] { readManifest(dir_); });
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    const CheckpointInfo info = inspectCheckpoint(dir_, false);
    EXPECT_EQ(info.status, CheckpointStatus::kCorrupt);
    EXPECT_NE(info.reason.find(path), std::string::npos) << info.reason;
  };
  auto chunk = [](Manifest& m, int t, int c) { return m.mutable_tensors(t)->mutable_chunks(c); };
  expectRejected([&](Manifest& m) { chunk(m, 0, 1)->set_offset(numelOf(m.tensors(0)) + 10); },
                 "offset past the end");
  expectRejected([&](Manifest& m) { chunk(m, 0, 2)->set_count(chunk(m, 0, 2)->count() + 1); },
                 "count past the end");
  expectRejected([&](Manifest& m) { chunk(m, 0, 0)->set_offset(-4); }, "negative offset");
  expectRejected([&](Manifest& m) { chunk(m, 1, 0)->set_shard(3); }, "shard index");
  expectRejected([&](Manifest& m) { chunk(m, 1, 0)->add_crc32c(1); }, "checksum count");
  expectRejected([&](Manifest& m) { m.mutable_tensors(2)->set_dtype("complex64"); }, "dtype");
  expectRejected([&](Manifest& m) { m.mutable_tensors(2)->mutable_chunks()->RemoveLast(); },
                 "a gap");
  expectRejected([&](Manifest& m) { m.set_format_version(3); }, "format version");
  expectRejected([&](Manifest& m) { m.mutable_tensors()->SwapElements(0, 1); },
                 "tensors not sorted by name");
  expectRejected([&](Manifest& m) { m.mutable_tensors(0)->mutable_chunks()->SwapElements(0, 1); },
                 "chunks not in offset order");
  expectRejected([&](Manifest& m) { m.mutable_tensors(1)->set_name("model/\xC3("); },
                 "a name that is not UTF-8");
  expectRejected([&](Manifest& m) { m.set_checksum_block_bytes(std::int64_t{1} << 40); },
                 "a checksum block larger than 1 GiB");
  expectRejected([&](Manifest& m) { m.set_world_size(4); }, "world size");
}

TEST_F(FormatCorruption, GarbageOrEmptyManifest) {
  const std::string path = (fs::path(dir_) / kManifestName).string();
  std::mt19937 rng(3);
  std::string garbage(3000, '\0');
  for (char& c : garbage) c = static_cast<char>(rng());
  for (const std::string& bytes : {garbage, std::string(), std::string("not a manifest\n")}) {
    writeFile(path, bytes);
    const std::string msg = messageOf<CheckpointCorrupt>([&] { readManifest(dir_); });
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_EQ(inspectCheckpoint(dir_, false).status, CheckpointStatus::kCorrupt);
  }
}

TEST_F(FormatCorruption, ManifestNamingAMissingDatasetOrAWrongChecksum) {
  const std::string path = (fs::path(dir_) / kManifestName).string();
  Manifest m = manifest_;
  m.mutable_tensors(0)->mutable_chunks(1)->set_dataset("/no/such/dataset");
  writeFile(path, serializeManifest(m));
  CheckpointInfo info = inspectCheckpoint(dir_, false);
  EXPECT_EQ(info.status, CheckpointStatus::kCorrupt);
  EXPECT_NE(info.reason.find(shard(1)), std::string::npos) << info.reason;

  m = manifest_;
  auto* c = m.mutable_tensors(0)->mutable_chunks(2);
  c->set_crc32c(0, c->crc32c(0) ^ 1u);
  writeFile(path, serializeManifest(m));
  EXPECT_EQ(inspectCheckpoint(dir_, false).status, CheckpointStatus::kValid);
  info = inspectCheckpoint(dir_, true);
  EXPECT_EQ(info.status, CheckpointStatus::kCorrupt);
  EXPECT_NE(info.reason.find(shard(2)), std::string::npos) << info.reason;
}

TEST_F(FormatCorruption, SentinelOrNoManifestMeansIncomplete) {
  std::ofstream(fs::path(dir_) / kSentinelName) << "x";
  CheckpointInfo info = inspectCheckpoint(dir_, true);
  EXPECT_EQ(info.status, CheckpointStatus::kIncomplete);
  EXPECT_NE(info.reason.find(kSentinelName), std::string::npos) << info.reason;
  EXPECT_THROW(verifyCheckpoint(dir_), CheckpointCorrupt);
  fs::remove(fs::path(dir_) / kSentinelName);
  fs::remove(fs::path(dir_) / kManifestName);
  info = inspectCheckpoint(dir_, false);
  EXPECT_EQ(info.status, CheckpointStatus::kIncomplete);
  EXPECT_NE(info.reason.find(kManifestName), std::string::npos) << info.reason;
}

// ---------------------------------------------------------------------------------------
// Listing

TEST(FormatList, OrdersByStepAndClassifies) {
  TempDir tmp;
  const std::vector<HostTensor> tensors = {makeTensor("model/w", "float32", {4000}, 1),
                                           makeTensor("model/b", "bfloat16", {33}, 2)};
  Manifest h = sampleHeader();
  writeCheckpoint(checkpointDir(tmp.path(), 10), 2, tensors, h);
  h.mutable_trainer_state()->set_preempted(true);
  h.mutable_trainer_state()->clear_best_metric();
  writeCheckpoint(checkpointDir(tmp.path(), 2), 1, tensors, h);
  writeCheckpoint(checkpointDir(tmp.path(), 7), 2, tensors, sampleHeader());
  fs::remove(fs::path(checkpointDir(tmp.path(), 7)) / shardFileName(1, 2));
  createSentinel(checkpointDir(tmp.path(), 30));  // a save that never finished
  fs::create_directories(tmp / "checkpoint-abc");
  fs::create_directories(tmp / "runs");
  std::ofstream(tmp / "checkpoint-5") << "a file, not a checkpoint";

  const std::vector<CheckpointInfo> list = listCheckpoints(tmp.path(), false);
  ASSERT_EQ(list.size(), 4u);
  EXPECT_EQ(list[0].step, 2);
  EXPECT_EQ(list[1].step, 7);
  EXPECT_EQ(list[2].step, 10);
  EXPECT_EQ(list[3].step, 30);
  EXPECT_EQ(list[0].status, CheckpointStatus::kValid);
  EXPECT_EQ(list[1].status, CheckpointStatus::kCorrupt);
  EXPECT_EQ(list[2].status, CheckpointStatus::kValid);
  EXPECT_EQ(list[3].status, CheckpointStatus::kIncomplete);
  EXPECT_TRUE(list[0].preempted);
  EXPECT_FALSE(list[0].bestMetric.has_value());
  EXPECT_EQ(list[0].worldSize, 1);
  EXPECT_EQ(list[2].worldSize, 2);
  EXPECT_FALSE(list[2].preempted);
  EXPECT_NE(list[1].reason.find(shardFileName(1, 2)), std::string::npos) << list[1].reason;
  EXPECT_STREQ(statusName(list[3].status), "incomplete");
  EXPECT_TRUE(listCheckpoints(tmp / "does-not-exist", false).empty());
}

}  // namespace
}  // namespace cohort::ckpt
