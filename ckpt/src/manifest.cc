// Manifest I/O and structural checks, the sentinel protocol's file operations, and the
// classification of checkpoint directories (valid / incomplete / corrupt).
#include <fcntl.h>
#include <google/protobuf/text_format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "cohort/ckpt/format.h"

namespace cohort::ckpt {

namespace fs = std::filesystem;

std::size_t dtypeSize(const std::string& d) {
  if (d == "float64" || d == "int64") return 8;
  if (d == "float32" || d == "int32") return 4;
  if (d == "float16" || d == "bfloat16" || d == "int16") return 2;
  if (d == "int8" || d == "uint8" || d == "bool") return 1;
  throw CheckpointCorrupt("unknown dtype '" + d + "'");
}

std::int64_t numelOf(const TensorEntry& e) {
  std::int64_t n = 1;
  for (std::int64_t d : e.shape()) n *= d;
  return n;
}

std::string shardFileName(int rank, int worldSize) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "shard-%05d-of-%05d.h5", rank, worldSize);
  return buf;
}

std::string checkpointDir(const std::string& outputDir, std::int64_t step) {
  return (fs::path(outputDir) / (kCheckpointPrefix + std::to_string(step))).string();
}

void fsyncPath(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw CheckpointError("cannot open " + path + " to fsync: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) throw CheckpointError("fsync failed for " + path + ": " + std::strerror(err));
}

namespace {

void writeFileDurably(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw CheckpointError("cannot create " + tmp + ": " + std::strerror(errno));
  const char* p = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    const ssize_t w = ::write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int err = errno;
      ::close(fd);
      throw CheckpointError("write failed for " + tmp + ": " + std::strerror(err));
    }
    p += w, left -= static_cast<std::size_t>(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    throw CheckpointError("fsync failed for " + tmp + ": " + std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    throw CheckpointError("cannot rename " + tmp + ": " + std::strerror(errno));
  }
}

std::optional<std::int64_t> stepOfName(const std::string& name) {
  const std::string prefix = kCheckpointPrefix;
  if (name.rfind(prefix, 0) != 0 || name.size() == prefix.size()) return std::nullopt;
  const std::string digits = name.substr(prefix.size());
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      digits.size() > 18) {
    return std::nullopt;
  }
  return std::stoll(digits);
}

}  // namespace

void createSentinel(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw CheckpointError("cannot create " + dir + ": " + ec.message());
  writeFileDurably((fs::path(dir) / kSentinelName).string(),
                   "This checkpoint is being written or its save failed; it is never resumed "
                   "from. Cohort removes this file once manifest.pb is durable.\n");
  fsyncPath(dir);
  fsyncPath(fs::path(dir).parent_path().string());
}

void removeSentinel(const std::string& dir) {
  std::error_code ec;
  fs::remove(fs::path(dir) / kSentinelName, ec);
  if (ec) throw CheckpointError("cannot remove the sentinel in " + dir + ": " + ec.message());
  fsyncPath(dir);
}

void checkManifest(const Manifest& m, const std::string& where) {
  auto bad = [&](const std::string& why) { throw CheckpointCorrupt(where + ": " + why); };
  if (m.format_version() != 1)
    bad("unsupported format_version " + std::to_string(m.format_version()));
  if (m.world_size() <= 0 || m.shards_size() != m.world_size())
    bad("world_size and shards disagree");
  const std::int64_t block = m.checksum_block_bytes();
  if (block <= 0 || block % 8 != 0) bad("bad checksum_block_bytes");
  for (const TensorEntry& t : m.tensors()) {
    const std::string tw = "tensor " + t.name() + ": ";
    std::size_t es = 0;
    try {
      es = dtypeSize(t.dtype());
    } catch (const CheckpointCorrupt& e) {
      bad(tw + e.what());
    }
    for (std::int64_t d : t.shape()) {
      if (d < 0) bad(tw + "negative dimension");
    }
    const std::int64_t numel = numelOf(t);
    std::int64_t next = 0;
    for (const Chunk& c : t.chunks()) {
      if (c.offset() != next || c.count() < 0 || c.offset() + c.count() > numel) {
        bad(tw + "chunk at offset " + std::to_string(c.offset()) + " (+" +
            std::to_string(c.count()) + ") out of range or not contiguous (numel " +
            std::to_string(numel) + ")");
      }
      if (c.shard() >= static_cast<std::uint32_t>(m.shards_size()))
        bad(tw + "shard index out of range");
      const std::int64_t bytes = c.count() * static_cast<std::int64_t>(es);
      if (c.crc32c_size() != (bytes + block - 1) / block) bad(tw + "checksum count mismatch");
      next += c.count();
    }
    if (next != numel)
      bad(tw + "chunks cover " + std::to_string(next) + " of " + std::to_string(numel) +
          " elements");
  }
}

Manifest assembleManifest(Manifest header, const std::vector<ShardReport>& reports,
                          std::int64_t checksumBlockBytes, const std::string& where) {
  const int world = static_cast<int>(reports.size());
  std::map<std::string, TensorEntry> merged;
  std::int64_t totalBytes = 0;
  for (int r = 0; r < world; ++r) {
    totalBytes += reports[static_cast<std::size_t>(r)].bytes();
    for (const TensorEntry& t : reports[static_cast<std::size_t>(r)].tensors()) {
      auto [it, fresh] = merged.try_emplace(t.name());
      TensorEntry& e = it->second;
      if (fresh) {
        e = t;
        e.clear_chunks();
      } else if (e.dtype() != t.dtype()) {
        throw CheckpointError("tensor " + t.name() + " has different dtypes on ranks");
      }
      for (const Chunk& c : t.chunks()) {
        Chunk* added = e.add_chunks();
        *added = c;
        added->set_shard(static_cast<std::uint32_t>(r));
      }
    }
  }
  Manifest m = std::move(header);
  m.clear_tensors();
  m.clear_shards();
  m.set_format_version(1);
  m.set_created_by("cohort 0.1.0");
  m.set_world_size(world);
  for (int r = 0; r < world; ++r) m.add_shards(shardFileName(r, world));
  m.set_checksum_block_bytes(checksumBlockBytes);
  m.set_total_bytes(totalBytes);
  for (auto& [name, t] : merged) {
    std::sort(t.mutable_chunks()->begin(), t.mutable_chunks()->end(),
              [](const Chunk& a, const Chunk& b) { return a.offset() < b.offset(); });
    *m.add_tensors() = std::move(t);
  }
  checkManifest(m, where);  // a gap is a bug of the writer: refuse to publish it
  return m;
}

Manifest readManifest(const std::string& dir) {
  const std::string path = (fs::path(dir) / kManifestName).string();
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CheckpointCorrupt("missing manifest " + path);
  Manifest m;
  if (!m.ParseFromIstream(&in)) throw CheckpointCorrupt("unparsable manifest " + path);
  checkManifest(m, path);
  return m;
}

void writeManifest(const std::string& dir, const Manifest& manifest) {
  std::string bytes;
  if (!manifest.SerializeToString(&bytes)) throw CheckpointError("cannot serialise the manifest");
  std::string text;
  google::protobuf::TextFormat::PrintToString(manifest, &text);
  writeFileDurably((fs::path(dir) / kManifestTextName).string(), text);
  writeFileDurably((fs::path(dir) / kManifestName).string(), bytes);
  fsyncPath(dir);
}

const char* statusName(CheckpointStatus s) {
  switch (s) {
    case CheckpointStatus::kValid:
      return "valid";
    case CheckpointStatus::kIncomplete:
      return "incomplete";
    case CheckpointStatus::kCorrupt:
      return "corrupt";
  }
  return "?";
}

CheckpointInfo inspectCheckpoint(const std::string& dir, bool verifyChecksums) {
  CheckpointInfo info;
  info.path = dir;
  info.step = stepOfName(fs::path(dir).filename().string()).value_or(-1);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_regular_file(ec)) info.bytes += static_cast<std::int64_t>(e.file_size(ec));
  }
  if (fs::exists(fs::path(dir) / kSentinelName)) {
    info.status = CheckpointStatus::kIncomplete;
    info.reason = std::string(kSentinelName) + " present (the save did not finish)";
    return info;
  }
  if (!fs::exists(fs::path(dir) / kManifestName)) {
    info.status = CheckpointStatus::kIncomplete;
    info.reason = "no " + std::string(kManifestName);
    return info;
  }
  try {
    const Manifest m = readManifest(dir);
    info.worldSize = m.world_size();
    if (m.trainer_state().has_best_metric()) info.bestMetric = m.trainer_state().best_metric();
    info.preempted = m.trainer_state().preempted();
    // Every shard opens, and every dataset has the manifest's shape (cheap: metadata only,
    // a truncated file fails HDF5's end-of-file check).
    // Each shard's chunks with their element size, so that every shard file is opened once.
    std::vector<std::vector<std::pair<const Chunk*, std::size_t>>> byShard(
        static_cast<std::size_t>(m.shards_size()));
    for (const TensorEntry& t : m.tensors()) {
      for (const Chunk& c : t.chunks()) byShard[c.shard()].emplace_back(&c, dtypeSize(t.dtype()));
    }
    for (int s = 0; s < m.shards_size(); ++s) {
      ShardReader reader((fs::path(dir) / m.shards(s)).string(), m.checksum_block_bytes());
      for (const auto& [c, elemSize] : byShard[static_cast<std::size_t>(s)]) {
        if (verifyChecksums) {
          reader.verify(*c, elemSize);
        } else {
          reader.read(*c, elemSize, 0, 0, nullptr);  // count 0: the dataset's shape only
        }
      }
    }
    info.status = CheckpointStatus::kValid;
  } catch (const CheckpointCorrupt& e) {
    info.status = CheckpointStatus::kCorrupt;
    info.reason = e.what();
  }
  return info;
}

std::vector<CheckpointInfo> listCheckpoints(const std::string& outputDir, bool verifyChecksums) {
  std::vector<std::pair<std::int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(outputDir, ec)) {
    if (!e.is_directory(ec)) continue;
    if (auto step = stepOfName(e.path().filename().string()))
      found.emplace_back(*step, e.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<CheckpointInfo> out;
  for (const auto& [step, path] : found) out.push_back(inspectCheckpoint(path, verifyChecksums));
  return out;
}

void verifyCheckpoint(const std::string& dir) {
  const CheckpointInfo info = inspectCheckpoint(dir, /*verifyChecksums=*/true);
  if (info.status != CheckpointStatus::kValid) {
    throw CheckpointCorrupt(dir + " is " + statusName(info.status) + ": " + info.reason);
  }
}

}  // namespace cohort::ckpt
