// Manifest I/O and structural checks, the sentinel protocol's file operations (through the
// FileOps seam, file_ops.h), and the classification of checkpoint directories (valid /
// incomplete / corrupt).
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "cohort/ckpt/crc32c.h"
#include "cohort/ckpt/format.h"
#include "file_ops.h"

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
  for (std::int64_t d : e.shape()) {
    if (d < 0) throw CheckpointCorrupt("tensor " + e.name() + ": negative dimension");
    if (__builtin_mul_overflow(n, d, &n)) {
      throw CheckpointCorrupt("tensor " + e.name() + ": the shape's element count overflows");
    }
  }
  return n;
}

std::string shardFileName(int rank, int worldSize) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "shard-%05d-of-%05d.h5", rank, worldSize);
  return buf;
}

bool shardIsHere(const Manifest& manifest, int s) {
  if (manifest.local_shards_size() == 0) return true;
  const auto& here = manifest.local_shards();
  return std::binary_search(here.begin(), here.end(), static_cast<std::uint32_t>(s));
}

std::string localShardsNote(const Manifest& m) {
  if (m.local_shards_size() == 0) return "";
  std::string out;
  const auto& here = m.local_shards();
  for (int i = 0; i < here.size();) {  // runs of consecutive shards as a-b
    int j = i;
    while (j + 1 < here.size() && here[j + 1] == here[j] + 1) ++j;
    out += (i ? "," : "") + std::to_string(here[i]);
    if (j > i) out += "-" + std::to_string(here[j]);
    i = j + 1;
  }
  return std::string(here.size() > 1 ? "shards " : "shard ") + out + " of " +
         std::to_string(m.shards_size()) + " here (save_on_each_node)";
}

std::string checkpointDir(const std::string& outputDir, std::int64_t step) {
  return (fs::path(outputDir) / (kCheckpointPrefix + std::to_string(step))).string();
}

void fsyncPath(const std::string& path) {
  const int err = fileOps().syncPath(path);
  if (err != 0) throw CheckpointError("fsync failed for " + path + ": " + std::strerror(err));
}

namespace {

constexpr const char* kSentinelText =
    "This checkpoint is being written or its save failed; it is never resumed "
    "from. Cohort removes this file once manifest.pb is durable.\n";

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
  FileOps& ops = fileOps();
  checkStep(ops.createDirectories(dir), step::kSentinelCreate, "create directory", dir);
  writeFileDurably((fs::path(dir) / kSentinelName).string(), kSentinelText, step::kSentinelCreate,
                   step::kSentinelCreate, step::kSentinelCreate);
  checkStep(ops.syncPath(dir), step::kSentinelCreate, "fsync directory", dir);
  const std::string parent = fs::path(dir).parent_path().string();
  checkStep(ops.syncPath(parent), step::kSentinelCreate, "fsync directory", parent);
}

void removeSentinel(const std::string& dir) {
  FileOps& ops = fileOps();
  const std::string sentinel = (fs::path(dir) / kSentinelName).string();
  const int err = ops.remove(sentinel);
  if (err != ENOENT) checkStep(err, step::kSentinelRemove, "remove", sentinel);
  const int syncErr = ops.syncPath(dir);
  if (syncErr != 0) {
    // The removal may not be durable, yet the directory would look complete to anyone
    // listing it now, though the save reports failure: the sentinel goes back (best effort).
    try {
      writeFileDurably(sentinel, kSentinelText, step::kSentinelRemove, step::kSentinelRemove,
                       step::kSentinelRemove);
    } catch (const CheckpointError&) {
    }
    checkStep(syncErr, step::kSentinelRemove, "fsync directory", dir);
  }
}

namespace {

bool validUtf8(const std::string& s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t extra = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      extra = 1, cp = c & 0x1Fu;
    } else if ((c & 0xF0) == 0xE0) {
      extra = 2, cp = c & 0x0Fu;
    } else if ((c & 0xF8) == 0xF0) {
      extra = 3, cp = c & 0x07u;
    } else {
      return false;
    }
    if (i + extra >= s.size()) return false;
    for (std::size_t k = 1; k <= extra; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (b & 0x3Fu);
    }
    // Overlong forms, UTF-16 surrogates and values past U+10FFFF are not UTF-8.
    static constexpr std::uint32_t kMin[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += extra + 1;
  }
  return true;
}

// Every string of the manifest, with its field name (they must be UTF-8).
std::vector<std::pair<const char*, const std::string*>> stringsOf(const Manifest& m) {
  std::vector<std::pair<const char*, const std::string*>> out = {
      {"created_by", &m.created_by()}, {"training_args", &m.training_args()}};
  for (const std::string& s : m.shards()) out.emplace_back("shards", &s);
  for (const TensorEntry& t : m.tensors()) {
    out.emplace_back("tensor name", &t.name());
    out.emplace_back("dtype", &t.dtype());
    for (const Chunk& c : t.chunks()) out.emplace_back("dataset", &c.dataset());
  }
  const TrainerStateRecord& st = m.trainer_state();
  out.emplace_back("best_model_checkpoint", &st.best_model_checkpoint());
  out.emplace_back("optimizer", &st.optimizer());
  out.emplace_back("lr_scheduler_type", &st.lr_scheduler_type());
  for (const LogRecord& r : st.log_history()) {
    for (const auto& kv : r.values()) out.emplace_back("log_history key", &kv.first);
  }
  return out;
}

}  // namespace

namespace {

// One tensor entry: dtype, shape without overflow, chunks tiling it in offset order, their
// checksum counts, and (version 2) the bytes each shard holds, added to shardPayload.
void checkTensor(const Manifest& m, const TensorEntry& t, std::vector<std::int64_t>& shardPayload,
                 const std::function<void(const std::string&)>& bad) {
  const std::string tw = "tensor " + t.name() + ": ";
  std::size_t es = 0;
  std::int64_t numel = 0, numelBytes = 0;
  try {
    es = dtypeSize(t.dtype());
    numel = numelOf(t);
  } catch (const CheckpointCorrupt& e) {
    bad(e.what());
  }
  if (__builtin_mul_overflow(numel, static_cast<std::int64_t>(es), &numelBytes))
    bad(tw + "the tensor's byte size overflows");
  const std::int64_t block = m.checksum_block_bytes();
  std::int64_t next = 0;
  for (const Chunk& c : t.chunks()) {
    // In offset order, contiguous, inside the tensor (no sum can overflow: all <= numel).
    if (c.offset() != next || c.count() < 0 || c.count() > numel - c.offset()) {
      bad(tw + "chunk at offset " + std::to_string(c.offset()) + " (+" + std::to_string(c.count()) +
          ") out of range or not contiguous (numel " + std::to_string(numel) + ")");
    }
    if (c.shard() >= static_cast<std::uint32_t>(m.shards_size()))
      bad(tw + "shard index out of range");
    if (c.dataset().empty() || c.dataset()[0] != '/') bad(tw + "bad dataset path");
    const std::int64_t bytes = c.count() * static_cast<std::int64_t>(es);
    const std::int64_t blocks = bytes / block + (bytes % block != 0 ? 1 : 0);
    if (c.crc32c_size() != blocks) bad(tw + "checksum count mismatch");
    if (m.format_version() >= 2) {
      // A shard holds at least the bytes of its datasets: bounds every size by the files.
      std::int64_t& payload = shardPayload[c.shard()];
      if (__builtin_add_overflow(payload, bytes, &payload) || payload > m.shard_bytes(c.shard()))
        bad(tw + "chunks hold more bytes than shard " + m.shards(c.shard()) + " has");
    }
    next += c.count();
  }
  if (next != numel)
    bad(tw + "chunks cover " + std::to_string(next) + " of " + std::to_string(numel) + " elements");
}

}  // namespace

void checkManifest(const Manifest& m, const std::string& where) {
  const std::function<void(const std::string&)> bad = [&](const std::string& why) {
    throw CheckpointCorrupt(where + ": " + why);
  };
  const std::uint32_t version = m.format_version();
  if (version != 1 && version != kFormatVersion)
    bad("unsupported format_version " + std::to_string(version));
  for (const auto& [field, value] : stringsOf(m)) {
    if (!validUtf8(*value)) bad(std::string(field) + " is not valid UTF-8");
  }
  if (m.world_size() <= 0 || m.shards_size() != m.world_size())
    bad("world_size and shards disagree");
  for (int s = 0; s < m.shards_size(); ++s) {
    // Exactly the documented name: a path ("../x.h5", "/etc/...") would read outside the
    // checkpoint directory.
    if (m.shards(s) != shardFileName(s, m.world_size())) {
      bad("shard " + std::to_string(s) + " is named '" + m.shards(s) + "', not '" +
          shardFileName(s, m.world_size()) + "'");
    }
  }
  for (int i = 0; i < m.local_shards_size(); ++i) {
    if (m.local_shards(i) >= static_cast<std::uint32_t>(m.shards_size()) ||
        (i > 0 && m.local_shards(i) <= m.local_shards(i - 1)))
      bad("local_shards must be increasing shard indices");
  }
  if (version >= 2) {
    if (m.shard_bytes_size() != m.shards_size() || m.shard_crc32c_size() != m.shards_size())
      bad("shard_bytes / shard_crc32c do not list every shard");
    for (std::int64_t b : m.shard_bytes()) {
      if (b < 0) bad("negative shard size");
    }
  } else if (m.shard_bytes_size() != 0 || m.shard_crc32c_size() != 0 || m.has_manifest_crc32c()) {
    bad("version 1 manifest with version 2 checksum fields");
  }
  const std::int64_t block = m.checksum_block_bytes();
  if (block <= 0 || block % 8 != 0 || block > kMaxChecksumBlockBytes)
    bad("bad checksum_block_bytes " + std::to_string(block));
  std::vector<std::int64_t> shardPayload(static_cast<std::size_t>(m.shards_size()), 0);
  const std::string* previous = nullptr;
  for (const TensorEntry& t : m.tensors()) {
    if (t.name().empty()) bad("a tensor without a name");
    if (previous != nullptr && !(*previous < t.name()))
      bad("tensor " + t.name() + ": tensors are not sorted by name or a name repeats");
    previous = &t.name();
    checkTensor(m, t, shardPayload, bad);
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
  m.clear_shard_bytes();
  m.clear_shard_crc32c();
  m.clear_manifest_crc32c();
  m.set_format_version(kFormatVersion);
  m.set_created_by("cohort 0.1.0");
  m.set_world_size(world);
  for (int r = 0; r < world; ++r) {
    m.add_shards(shardFileName(r, world));
    m.add_shard_bytes(reports[static_cast<std::size_t>(r)].file_bytes());
    m.add_shard_crc32c(reports[static_cast<std::size_t>(r)].file_crc32c());
  }
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

namespace {

// The tag of Manifest.manifest_crc32c (field 15, fixed32) and the first two bytes of every
// version 2 manifest (field 1, format_version = 2, serialized first).
constexpr unsigned char kChecksumTag = (15 << 3) | 5;
constexpr unsigned char kVersion2Start[2] = {0x08, 0x02};

}  // namespace

std::string serializeManifest(const Manifest& manifest) {
  Manifest m = manifest;
  m.clear_manifest_crc32c();
  std::string bytes;
  if (!m.SerializeToString(&bytes)) throw CheckpointError("cannot serialise the manifest");
  if (m.format_version() != 1) {
    if (m.format_version() == 2 && std::memcmp(bytes.data(), kVersion2Start, 2) != 0)
      throw CheckpointError("internal error: a version 2 manifest must start with its version");
    const std::uint32_t crc = crc32c::value(bytes.data(), bytes.size());
    bytes.push_back(static_cast<char>(kChecksumTag));
    for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<char>((crc >> (8 * i)) & 0xFFu));
  }
  return bytes;
}

Manifest parseManifest(const std::string& bytes, const std::string& where) {
  auto bad = [&](const std::string& why) { throw CheckpointCorrupt(where + ": " + why); };
  Manifest m;
  const bool version2 = bytes.size() >= 2 && std::memcmp(bytes.data(), kVersion2Start, 2) == 0;
  if (version2) {
    const std::size_t n = bytes.size();
    if (n < 7 || static_cast<unsigned char>(bytes[n - 5]) != kChecksumTag)
      bad("version 2 manifest without its checksum at the end (truncated or damaged)");
    std::uint32_t stored = 0;
    for (int i = 0; i < 4; ++i)
      stored |= static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[n - 4 + i])) << (8 * i);
    const std::uint32_t actual = crc32c::value(bytes.data(), n - 5);
    if (stored != actual) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "manifest checksum mismatch (stored %08x, computed %08x)",
                    stored, actual);
      bad(std::string(buf) + ": the file changed after it was written");
    }
    if (!m.ParseFromString(bytes)) bad("unparsable manifest");
    if (m.format_version() != 2 || !m.has_manifest_crc32c() || m.manifest_crc32c() != stored)
      bad("malformed version 2 manifest");
  } else {
    if (!m.ParseFromString(bytes)) bad("unparsable manifest");
    // Only version 1 manifests (written before the checksum existed) lack one.
    if (m.has_manifest_crc32c()) bad("checksummed manifest that does not start as version 2");
    if (m.format_version() != 1)
      bad("unsupported format_version " + std::to_string(m.format_version()) +
          (m.format_version() >= 2 ? " (not in its documented place)" : ""));
  }
  checkManifest(m, where);
  return m;
}

Manifest readManifest(const std::string& dir) {
  const std::string path = (fs::path(dir) / kManifestName).string();
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CheckpointCorrupt("missing manifest " + path);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (in.bad()) throw CheckpointCorrupt("cannot read manifest " + path);
  return parseManifest(bytes.str(), path);
}

void writeManifest(const std::string& dir, const Manifest& manifest) {
  const std::string bytes = serializeManifest(manifest);
  std::string text;
  google::protobuf::TextFormat::PrintToString(manifest, &text);
  writeFileDurably((fs::path(dir) / kManifestTextName).string(), text, step::kManifestWrite,
                   step::kManifestFsync, step::kManifestPublish);
  writeFileDurably((fs::path(dir) / kManifestName).string(), bytes, step::kManifestWrite,
                   step::kManifestFsync, step::kManifestPublish);
  checkStep(fileOps().syncPath(dir), step::kDirectoryFsync, "fsync directory", dir);
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
    // Every shard opens, has the size the manifest recorded (version 2), and every dataset
    // has the manifest's length and datatype (cheap: metadata only, a truncated file fails
    // HDF5's end-of-file check). verifyChecksums reads every chunk, then (version 2) every
    // byte of the file, so a change outside the tensor data shows too.
    // Each shard's chunks with their dtype, so that every shard file is opened once.
    std::vector<std::vector<std::pair<const Chunk*, const std::string*>>> byShard(
        static_cast<std::size_t>(m.shards_size()));
    for (const TensorEntry& t : m.tensors()) {
      for (const Chunk& c : t.chunks()) byShard[c.shard()].emplace_back(&c, &t.dtype());
    }
    for (int s = 0; s < m.shards_size(); ++s) {
      if (!shardIsHere(m, s)) continue;  // on another node's disk (save_on_each_node)
      ShardReader reader((fs::path(dir) / m.shards(s)).string(), m.checksum_block_bytes());
      const bool v2 = m.format_version() >= 2;
      if (v2 && reader.fileBytes() != m.shard_bytes(s)) {
        throw CheckpointCorrupt("shard " + reader.path() + " has " +
                                std::to_string(reader.fileBytes()) + " bytes, the manifest " +
                                std::to_string(m.shard_bytes(s)));
      }
      for (const auto& [c, dtype] : byShard[static_cast<std::size_t>(s)]) {
        if (verifyChecksums) {
          reader.verify(*c, *dtype);
        } else {
          reader.read(*c, *dtype, 0, 0, nullptr);  // count 0: the dataset's metadata only
        }
      }
      if (v2 && verifyChecksums && reader.fileChecksum() != m.shard_crc32c(s)) {
        throw CheckpointCorrupt("shard " + reader.path() +
                                ": checksum of the whole file differs from the manifest (the "
                                "tensor data is intact: bytes of HDF5's own structures changed)");
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
