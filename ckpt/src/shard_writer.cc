// Writes one shard file. HDF5 lays the file out (datasets, attributes, metadata) but the
// payload bypasses it: every dataset is created contiguous, allocated early and never
// filled (large ones aligned to 4 KiB), and after HDF5 has closed the file the bytes are
// written at the offsets HDF5 reported, from staging buffers while the next buffer is filled
// and checksummed: the large datasets' aligned part through O_DIRECT (buffered writes of a
// new file are capped far below the disk here, ~250 vs ~900 MB/s), the rest buffered. The
// result is an ordinary HDF5 file. Every payload write and the fsync go through the FileOps
// seam (file_ops.h), so failures are CheckpointIoError naming the step and the file.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "cohort/ckpt/crc32c.h"
#include "cohort/ckpt/format.h"
#include "file_ops.h"
#include "h5_util.h"

namespace cohort::ckpt {

namespace {

constexpr std::int64_t kAlign = 4096;
// Datasets at least this large start on a 4 KiB boundary (O_DIRECT); smaller ones are packed.
constexpr std::int64_t kDirectThreshold = 64 * 1024;
constexpr std::int64_t kStageBytes = 8 << 20;
constexpr int kStageBuffers = 3;

std::string sysError(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

struct AlignedBuffer {
  char* data = nullptr;
  explicit AlignedBuffer(std::size_t n) {
    data = static_cast<char*>(std::aligned_alloc(kAlign, n));
    if (data == nullptr) throw CheckpointError("out of memory for checkpoint staging buffers");
  }
  ~AlignedBuffer() { std::free(data); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
};

// Running CRC32C per checksum block across calls (a block may span staging buffers).
class BlockChecksums {
 public:
  explicit BlockChecksums(std::int64_t blockBytes) : block_(blockBytes) {}
  void add(const char* p, std::int64_t n) {
    while (n > 0) {
      const std::int64_t take = std::min(n, block_ - filled_);
      crc_ = crc32c::extend(crc_, p, static_cast<std::size_t>(take));
      filled_ += take, p += take, n -= take;
      if (filled_ == block_) flush();
    }
  }
  std::vector<std::uint32_t> finish() {
    if (filled_ > 0) flush();
    return std::move(out_);
  }

 private:
  void flush() { out_.push_back(crc_), crc_ = 0, filled_ = 0; }
  std::int64_t block_, filled_ = 0;
  std::uint32_t crc_ = 0;
  std::vector<std::uint32_t> out_;
};

// Writes staged buffers at file offsets on its own thread: the aligned part through the
// O_DIRECT file (when there is one), the rest (a small dataset, a final partial 4 KiB at a
// dataset's end) through the buffered one, so no byte outside the dataset is ever touched.
class DirectWriter {
 public:
  // `buffered`: the shard file, open for writing. With `direct`, it is opened a second time
  // with O_DIRECT where the filesystem allows it.
  DirectWriter(const std::string& path, std::unique_ptr<WritableFile> buffered, bool direct)
      : path_(path), buffered_(std::move(buffered)) {
    if (direct && fileOps().open(path, OpenMode::kDirect, &direct_) != 0) direct_.reset();
    for (int i = 0; i < kStageBuffers; ++i) {
      buffers_.push_back(std::make_unique<AlignedBuffer>(kStageBytes));
      free_.push_back(buffers_.back()->data);
    }
    thread_ = std::thread([this] { run(); });
  }
  ~DirectWriter() {
    {
      std::lock_guard<std::mutex> g(m_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  char* acquire() {
    std::unique_lock<std::mutex> g(m_);
    cv_.wait(g, [&] { return !free_.empty() || error_; });
    rethrowLocked();
    char* b = free_.front();
    free_.pop_front();
    return b;
  }
  void submit(char* buf, std::int64_t fileOffset, std::int64_t n) {
    {
      std::lock_guard<std::mutex> g(m_);
      queue_.push_back({buf, fileOffset, n});
    }
    cv_.notify_all();
  }
  // Waits for every queued write, then makes the file durable.
  void finish() {
    std::unique_lock<std::mutex> g(m_);
    cv_.wait(g, [&] { return (queue_.empty() && !busy_) || error_; });
    rethrowLocked();
    checkStep(buffered_->sync(), step::kShardFsync, "fsync", path_);
    if (direct_) checkStep(direct_->close(), step::kShardFsync, "close", path_);
    checkStep(buffered_->close(), step::kShardFsync, "close", path_);
  }

 private:
  struct Job {
    char* buf;
    std::int64_t off, n;
  };
  void rethrowLocked() {
    if (error_) std::rethrow_exception(error_);
  }
  void writeAll(WritableFile& file, const char* p, std::int64_t n, std::int64_t off) {
    checkStep(file.writeAt(p, static_cast<std::size_t>(n), off), step::kShardWrite, "write", path_);
  }
  void run() {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> g(m_);
        cv_.wait(g, [&] { return !queue_.empty() || done_; });
        if (queue_.empty()) return;
        job = queue_.front();
        queue_.pop_front();
        busy_ = true;
      }
      try {
        std::int64_t aligned = direct_ && job.off % kAlign == 0 ? job.n / kAlign * kAlign : 0;
        if (aligned > 0) writeAll(*direct_, job.buf, aligned, job.off);
        if (aligned < job.n)
          writeAll(*buffered_, job.buf + aligned, job.n - aligned, job.off + aligned);
      } catch (...) {
        std::lock_guard<std::mutex> g(m_);
        error_ = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> g(m_);
        free_.push_back(job.buf);
        busy_ = false;
      }
      cv_.notify_all();
    }
  }

  std::string path_;
  std::unique_ptr<WritableFile> buffered_, direct_;
  std::vector<std::unique_ptr<AlignedBuffer>> buffers_;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<char*> free_;
  std::deque<Job> queue_;
  bool busy_ = false, done_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

struct Pending {
  std::size_t index;  // into the chunk list
  std::int64_t fileOffset, bytes;
};

// The CRC32C of a whole dataset from its block checksums.
std::uint32_t wholeChecksum(const Chunk& chunk, std::int64_t bytes, std::int64_t blockBytes) {
  std::uint32_t crc = 0;
  for (int k = 0; k < chunk.crc32c_size(); ++k) {
    const std::int64_t n = std::min(blockBytes, bytes - k * blockBytes);
    crc = crc32c::combine(crc, chunk.crc32c(k), static_cast<std::uint64_t>(n));
  }
  return crc;
}

// Size and CRC32C of the finished file without reading the datasets back (the large ones left
// through O_DIRECT and are not cached): the bytes around them are read (HDF5's metadata,
// alignment gaps), the datasets enter by their block checksums.
ShardFile describeFile(const std::string& path, std::vector<Pending> datasets,
                       const std::vector<Chunk>& chunks, std::int64_t blockBytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw CheckpointError(sysError("cannot reopen", path));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  const off_t end = ::lseek(fd, 0, SEEK_END);
  if (end < 0) throw CheckpointError(sysError("cannot size", path));
  std::sort(datasets.begin(), datasets.end(),
            [](const Pending& a, const Pending& b) { return a.fileOffset < b.fileOffset; });
  std::uint32_t crc = 0;
  std::vector<char> buf(1 << 20);
  auto readRange = [&](std::int64_t from, std::int64_t to) {
    while (from < to) {
      const auto n = static_cast<std::size_t>(std::min<std::int64_t>(to - from, 1 << 20));
      const ssize_t r = ::pread(fd, buf.data(), n, from);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) throw CheckpointError(sysError("cannot read back", path));
      crc = crc32c::extend(crc, buf.data(), static_cast<std::size_t>(r));
      from += r;
    }
  };
  std::int64_t pos = 0;
  for (const Pending& p : datasets) {
    if (p.fileOffset < pos || p.fileOffset + p.bytes > end) {
      throw CheckpointError("internal error: overlapping datasets in " + path);
    }
    readRange(pos, p.fileOffset);
    crc = crc32c::combine(crc, wholeChecksum(chunks[p.index], p.bytes, blockBytes),
                          static_cast<std::uint64_t>(p.bytes));
    pos = p.fileOffset + p.bytes;
  }
  readRange(pos, end);
  return {static_cast<std::int64_t>(end), crc};
}

}  // namespace

std::vector<Chunk> writeShard(const std::string& path, const std::vector<ChunkSource>& chunks,
                              const WriteOptions& options, ChunkBytes* bytes, ShardFile* file) {
  if (options.checksumBlockBytes <= 0 || options.checksumBlockBytes % 8 != 0) {
    throw CheckpointError("checksum block size must be a positive multiple of 8");
  }
  std::vector<Chunk> out(chunks.size());
  std::vector<Pending> payload;  // every non-empty dataset, in chunk order
  auto fetch = [&](std::size_t index, std::int64_t pos, std::int64_t n, char* dst) {
    if (bytes != nullptr) {
      bytes->copy(index, pos, n, dst);
    } else {
      std::memcpy(dst, static_cast<const char*>(chunks[index].data) + pos,
                  static_cast<std::size_t>(n));
    }
  };
  FileOps& ops = fileOps();
  ops.remove(path);  // a previous attempt's file, if any (ENOENT otherwise)
  // Created through the seam (HDF5 then truncates and lays it out by path); the payload is
  // written through this same open file.
  std::unique_ptr<WritableFile> shard;
  checkStep(ops.open(path, OpenMode::kCreate, &shard), step::kShardCreate, "create", path);
  {
    std::lock_guard<std::recursive_mutex> lk(h5::lock());
    h5::quietErrors();
    h5::Id fapl(H5Pcreate(H5P_FILE_ACCESS));
    H5Pset_fapl_sec2(fapl.get());
    H5Pset_alignment(fapl.get(), kDirectThreshold, kAlign);
    h5::Id file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()));
    if (!file.valid()) throw CheckpointError("cannot create " + path + ": " + h5::lastError());
    h5::Id lcpl(H5Pcreate(H5P_LINK_CREATE));
    H5Pset_create_intermediate_group(lcpl.get(), 1);
    std::set<std::string> used;
    for (std::size_t i = 0; i < chunks.size(); ++i) {
      const ChunkSource& c = chunks[i];
      const std::size_t es = dtypeSize(c.dtype);
      const std::int64_t size = c.count * static_cast<std::int64_t>(es);
      std::string dataset = "/" + c.name;
      if (!used.insert(dataset).second) dataset += "@" + std::to_string(c.offset);
      used.insert(dataset);
      const hsize_t dims[1] = {static_cast<hsize_t>(c.count)};
      h5::Id space(H5Screate_simple(1, dims, nullptr));
      h5::Id type = h5::fileTypeFor(c.dtype);
      h5::Id dcpl(H5Pcreate(H5P_DATASET_CREATE));
      H5Pset_layout(dcpl.get(), H5D_CONTIGUOUS);
      H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_EARLY);
      H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER);
      h5::Id dset(H5Dcreate2(file.get(), dataset.c_str(), type.get(), space.get(), lcpl.get(),
                             dcpl.get(), H5P_DEFAULT));
      if (!dset.valid()) {
        throw CheckpointError("cannot create dataset " + dataset + " in " + path + ": " +
                              h5::lastError());
      }
      h5::setStringAttr(dset.get(), "tensor", c.name);
      h5::setStringAttr(dset.get(), "dtype", c.dtype);
      const long long off = c.offset;
      h5::setInt64Attr(dset.get(), "offset", &off, 1);
      std::vector<long long> shape(c.shape.begin(), c.shape.end());
      h5::setInt64Attr(dset.get(), "shape", shape.data(), shape.size());
      Chunk& m = out[i];
      m.set_dataset(dataset);
      m.set_offset(c.offset);
      m.set_count(c.count);
      if (size == 0) continue;
      const haddr_t addr = H5Dget_offset(dset.get());
      if (addr == HADDR_UNDEF) {
        throw CheckpointError("no file offset for dataset " + dataset + " in " + path + ": " +
                              h5::lastError());
      }
      payload.push_back({i, static_cast<std::int64_t>(addr), size});
    }
    if (H5Fclose(file.release()) < 0) {
      throw CheckpointError("cannot close " + path + ": " + h5::lastError());
    }
  }
  // HDF5 has written its metadata; the datasets' bytes go straight to their offsets.
  DirectWriter writer(path, std::move(shard), options.directIo);
  for (const Pending& p : payload) {
    BlockChecksums sums(options.checksumBlockBytes);
    for (std::int64_t pos = 0; pos < p.bytes; pos += kStageBytes) {
      const std::int64_t n = std::min(kStageBytes, p.bytes - pos);
      char* buf = writer.acquire();
      fetch(p.index, pos, n, buf);
      sums.add(buf, n);
      writer.submit(buf, p.fileOffset + pos, n);
    }
    for (std::uint32_t v : sums.finish()) out[p.index].add_crc32c(v);
  }
  writer.finish();
  if (file != nullptr) *file = describeFile(path, payload, out, options.checksumBlockBytes);
  const std::string dir = std::filesystem::path(path).parent_path().string();
  checkStep(ops.syncPath(dir), step::kDirectoryFsync, "fsync directory", dir);
  return out;
}

}  // namespace cohort::ckpt
