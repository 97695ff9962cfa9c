// Range reads from shard files with checksum verification. A read covers whole checksum
// blocks: when the caller wants exactly those bytes they land in its buffer directly,
// otherwise (a resharded load that needs part of a block) they go through a scratch buffer.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "cohort/ckpt/crc32c.h"
#include "cohort/ckpt/format.h"
#include "h5_util.h"

namespace cohort::ckpt {

namespace {

// The dataset's "dtype" attribute as Cohort writes it (a short fixed-length string); ""
// when absent or in another form (files from other writers), "?" when it cannot be read.
std::string dtypeAttribute(hid_t dset) {
  if (H5Aexists(dset, "dtype") <= 0) return "";
  h5::Id attr(H5Aopen(dset, "dtype", H5P_DEFAULT));
  if (!attr.valid()) return "?";
  h5::Id type(H5Aget_type(attr.get()));
  h5::Id space(H5Aget_space(attr.get()));
  if (!type.valid() || H5Tget_class(type.get()) != H5T_STRING ||
      H5Tis_variable_str(type.get()) != 0 || H5Sget_simple_extent_npoints(space.get()) != 1) {
    return "";
  }
  const std::size_t n = H5Tget_size(type.get());
  if (n == 0 || n > 64) return "";
  std::string value(n, '\0');
  if (H5Aread(attr.get(), type.get(), value.data()) < 0) return "?";
  value.resize(std::strlen(value.c_str()));
  return value;
}

// Opens a chunk's dataset and checks it against the manifest: one dimension of `count`
// elements, the HDF5 datatype this dtype is stored as (and its "dtype" attribute, which
// tells bool from uint8 and bfloat16 from uint16). Caller holds the HDF5 lock.
h5::Id openChecked(hid_t file, const Chunk& chunk, const std::string& dtype,
                   const std::string& where) {
  h5::Id dset(H5Dopen2(file, chunk.dataset().c_str(), H5P_DEFAULT));
  if (!dset.valid()) throw CheckpointCorrupt(where + ": dataset missing (" + h5::lastError() + ")");
  h5::Id type(H5Dget_type(dset.get()));
  h5::Id space(H5Dget_space(dset.get()));
  hsize_t dims[1] = {0};
  if (H5Sget_simple_extent_ndims(space.get()) != 1 ||
      H5Sget_simple_extent_dims(space.get(), dims, nullptr) != 1 ||
      dims[0] != static_cast<hsize_t>(chunk.count())) {
    throw CheckpointCorrupt(where + ": shape differs from the manifest (" +
                            std::to_string(chunk.count()) + " elements)");
  }
  const h5::Id expected = h5::fileTypeFor(dtype);
  if (!type.valid() || H5Tequal(type.get(), expected.get()) <= 0) {
    h5::lastError();
    throw CheckpointCorrupt(where + ": the HDF5 datatype is not the one " + dtype +
                            " is stored as (the manifest says " + dtype + ")");
  }
  const std::string attr = dtypeAttribute(dset.get());
  if (!attr.empty() && attr != dtype) {
    throw CheckpointCorrupt(where + ": the dataset says dtype '" + attr + "', the manifest " +
                            dtype);
  }
  return dset;
}

}  // namespace

ShardReader::ShardReader(const std::string& path, std::int64_t checksumBlockBytes)
    : path_(path), blockBytes_(checksumBlockBytes) {
  std::lock_guard<std::recursive_mutex> lk(h5::lock());
  h5::quietErrors();
  h5::Id fapl(H5Pcreate(H5P_FILE_ACCESS));
  H5Pset_fapl_sec2(fapl.get());
  // Probe first: H5Fopen's own message for these cases is vague.
  if (::access(path.c_str(), R_OK) != 0) throw CheckpointCorrupt("shard " + path + " is missing");
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    h5::lastError();
    throw CheckpointCorrupt("shard " + path + " is not an HDF5 file (damaged header)");
  }
  std::error_code ec;
  fileBytes_ = static_cast<std::int64_t>(std::filesystem::file_size(path, ec));
  if (ec) throw CheckpointCorrupt("cannot size shard " + path + ": " + ec.message());
  fileId_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get());
  if (fileId_ < 0) throw CheckpointCorrupt("cannot open shard " + path + ": " + h5::lastError());
}

ShardReader::~ShardReader() {
  std::lock_guard<std::recursive_mutex> lk(h5::lock());
  if (fileId_ >= 0) H5Fclose(fileId_);
}

void ShardReader::read(const Chunk& chunk, const std::string& dtype, std::int64_t from,
                       std::int64_t count, void* dst) {
  const std::string where = "shard " + path_ + " dataset " + chunk.dataset();
  if (from < 0 || count < 0 || chunk.count() < 0 || from > chunk.count() ||
      count > chunk.count() - from) {
    throw CheckpointCorrupt(where + ": range outside the chunk");
  }
  const auto es = static_cast<std::int64_t>(dtypeSize(dtype));
  std::int64_t total = 0;
  // Nothing is allocated for more bytes than the file has.
  if (__builtin_mul_overflow(chunk.count(), es, &total) || total > fileBytes_) {
    throw CheckpointCorrupt(where + ": " + std::to_string(chunk.count()) + " elements of " + dtype +
                            " do not fit in the file (" + std::to_string(fileBytes_) + " bytes)");
  }
  if (count == 0) {
    std::lock_guard<std::recursive_mutex> lk(h5::lock());
    openChecked(fileId_, chunk, dtype, where);
    return;
  }
  const std::int64_t a = from * es, b = (from + count) * es;
  const std::int64_t firstBlock = a / blockBytes_;
  const std::int64_t readA = firstBlock * blockBytes_;
  const std::int64_t readB = std::min(total, b + (blockBytes_ - 1 - (b - 1) % blockBytes_));
  const bool direct = readA == a && readB == b;
  char* buf = static_cast<char*>(dst);
  {
    std::lock_guard<std::recursive_mutex> lk(h5::lock());
    h5::Id dset = openChecked(fileId_, chunk, dtype, where);  // before the scratch grows
    h5::Id type(H5Dget_type(dset.get()));
    h5::Id space(H5Dget_space(dset.get()));
    if (!direct) {
      scratch_.resize(static_cast<std::size_t>(readB - readA));
      buf = scratch_.data();
    }
    const hsize_t start[1] = {static_cast<hsize_t>(readA / es)};
    const hsize_t n[1] = {static_cast<hsize_t>((readB - readA) / es)};
    H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, start, nullptr, n, nullptr);
    h5::Id mem(H5Screate_simple(1, n, nullptr));
    // The file type as memory type: bytes are copied as stored, no conversion.
    if (H5Dread(dset.get(), type.get(), mem.get(), space.get(), H5P_DEFAULT, buf) < 0) {
      throw CheckpointCorrupt(where + ": read failed (" + h5::lastError() + ")");
    }
  }
  for (std::int64_t pos = readA; pos < readB; pos += blockBytes_) {
    const std::int64_t k = pos / blockBytes_;
    const std::int64_t n = std::min(blockBytes_, total - pos);
    if (k >= chunk.crc32c_size() ||
        crc32c::value(buf + (pos - readA), static_cast<std::size_t>(n)) != chunk.crc32c(k)) {
      throw CheckpointCorrupt(where + ": checksum mismatch in block " + std::to_string(k) +
                              " (bytes " + std::to_string(pos) + ".." + std::to_string(pos + n) +
                              ")");
    }
  }
  if (!direct) std::memcpy(dst, buf + (a - readA), static_cast<std::size_t>(b - a));
}

void ShardReader::verify(const Chunk& chunk, const std::string& dtype) {
  // In pieces of whole checksum blocks (<= 64 MiB unless a block is larger): `cohort ckpt
  // verify` runs on login nodes, and one chunk can hold gigabytes.
  const auto es = static_cast<std::int64_t>(dtypeSize(dtype));
  read(chunk, dtype, 0, 0, nullptr);  // metadata and size checks before any allocation
  const std::int64_t pieceBytes = std::max<std::int64_t>(1, (64 << 20) / blockBytes_) * blockBytes_;
  const std::int64_t pieceElems = std::max<std::int64_t>(1, pieceBytes / es);
  std::vector<char> buf(static_cast<std::size_t>(std::min(chunk.count(), pieceElems) * es));
  std::int64_t from = 0;
  do {
    const std::int64_t n = std::min(pieceElems, chunk.count() - from);
    read(chunk, dtype, from, n, buf.data());
    from += n;
  } while (from < chunk.count());
}

std::uint32_t ShardReader::fileChecksum() {
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw CheckpointCorrupt("cannot open shard " + path_ + ": " + std::strerror(errno));
  std::vector<char> buf(8 << 20);
  std::uint32_t crc = 0;
  std::int64_t pos = 0;
  for (;;) {
    const ssize_t r = ::pread(fd, buf.data(), buf.size(), pos);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int err = errno;
      ::close(fd);
      throw CheckpointCorrupt("cannot read shard " + path_ + ": " + std::strerror(err));
    }
    if (r == 0) break;
    crc = crc32c::extend(crc, buf.data(), static_cast<std::size_t>(r));
    pos += r;
  }
  ::close(fd);
  return crc;
}

RangeReader::RangeReader(std::string dir, const Manifest& manifest)
    : dir_(std::move(dir)), manifest_(manifest) {}

RangeReader::~RangeReader() = default;

void RangeReader::read(const TensorEntry& entry, std::int64_t from, std::int64_t count, void* dst) {
  const std::size_t es = dtypeSize(entry.dtype());
  if (from < 0 || count < 0 || from > numelOf(entry) || count > numelOf(entry) - from) {
    throw CheckpointCorrupt("tensor " + entry.name() + ": requested range outside the tensor");
  }
  std::int64_t covered = 0;
  for (const Chunk& c : entry.chunks()) {
    const std::int64_t lo = std::max(from, c.offset());
    const std::int64_t hi = std::min(from + count, c.offset() + c.count());
    if (lo >= hi) continue;
    auto& reader = readers_[c.shard()];
    if (!reader) {
      if (!shardIsHere(manifest_, static_cast<int>(c.shard()))) {
        throw CheckpointCorrupt(
            dir_ + ": tensor " + entry.name() + " needs " +
            manifest_.shards(static_cast<int>(c.shard())) +
            ", which is on another node's disk (this directory holds " +
            localShardsNote(manifest_) +
            "): a checkpoint saved on each node resumes with the same ranks on the same hosts");
      }
      reader =
          std::make_unique<ShardReader>(dir_ + "/" + manifest_.shards(static_cast<int>(c.shard())),
                                        manifest_.checksum_block_bytes());
    }
    reader->read(c, entry.dtype(), lo - c.offset(), hi - lo,
                 static_cast<char*>(dst) + (lo - from) * static_cast<std::int64_t>(es));
    bytesRead_ += (hi - lo) * static_cast<std::int64_t>(es);
    covered += hi - lo;
  }
  if (covered != count) {
    throw CheckpointCorrupt("tensor " + entry.name() + ": chunks do not cover the range read");
  }
}

}  // namespace cohort::ckpt
