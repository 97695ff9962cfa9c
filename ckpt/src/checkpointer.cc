#include "cohort/ckpt/checkpointer.h"

#include <ATen/ATen.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "cohort/dist/consensus.h"
#include "cohort/dist/env.h"
#include "cohort/dist/log.h"

namespace cohort::ckpt {

namespace fs = std::filesystem;

std::string dtypeName(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return "float32";
    case at::kDouble:
      return "float64";
    case at::kHalf:
      return "float16";
    case at::kBFloat16:
      return "bfloat16";
    case at::kLong:
      return "int64";
    case at::kInt:
      return "int32";
    case at::kShort:
      return "int16";
    case at::kChar:
      return "int8";
    case at::kByte:
      return "uint8";
    case at::kBool:
      return "bool";
    default:
      break;
  }
  throw CheckpointError(std::string("checkpoints cannot store dtype ") +
                        std::string(c10::toString(t.scalar_type())));
}

namespace {

// Host, contiguous: what the shard writer reads from.
at::Tensor hostContiguous(const at::Tensor& t) {
  // From a GPU: through page-locked memory (one DMA, no staging copy).
  at::Tensor h = t.device().is_cpu()
                     ? t
                     : at::empty(t.sizes(), t.options().device(at::kCPU).pinned_memory(t.is_cuda()))
                           .copy_(t);
  return h.contiguous();
}

}  // namespace

// The bytes of an async save. Pieces copied at saveAsync come from the snapshot buffers.
// Deferred pieces are read in place, while a copier thread copies them into their snapshot
// buffers ahead of the writer; release() copies whatever neither has covered, after which
// the caller may change the originals. Per deferred piece, bytes below safe_[i] are either
// already read by the writer or in the snapshot buffer; the writer reads each piece once,
// front to back, from the snapshot below safe_ and in place above it.
class Checkpointer::AsyncSources : public ChunkBytes {
 public:
  AsyncSources(std::vector<at::Tensor> live, std::vector<at::Tensor> snapshot, bool withCopier)
      : live_(std::move(live)), snapshot_(std::move(snapshot)), safe_(snapshot_.size(), 0) {
    for (std::size_t i = 0; i < live_.size(); ++i) {
      if (!live_[i].defined()) safe_[i] = static_cast<std::int64_t>(snapshot_[i].nbytes());
    }
    if (withCopier) copier_ = std::thread([this] { copyAhead(); });
  }
  // Nothing reads the snapshot any more: stop the copier, copy nothing.
  ~AsyncSources() override { stopCopier(); }

  void copy(std::size_t index, std::int64_t pos, std::int64_t n, void* dst) override {
    std::unique_lock<std::mutex> g(mu_);
    if (pos + n <= safe_[index]) {  // the snapshot range below safe_ never changes again
      g.unlock();
      std::memcpy(dst, bytesOf(snapshot_[index]) + pos, static_cast<std::size_t>(n));
      return;
    }
    if (released_) {
      throw CheckpointError("internal error: piece " + std::to_string(index) +
                            " read again after its source was released");
    }
    std::memcpy(dst, bytesOf(live_[index]) + pos, static_cast<std::size_t>(n));
    safe_[index] = std::max(safe_[index], pos + n);
  }

  // Stops the copier and copies the rest; returns the bytes this call copied.
  std::int64_t release() {
    {
      std::lock_guard<std::mutex> g(mu_);
      if (released_) return 0;
    }
    stopCopier();
    // One critical section: the writer reads in place before it or from the snapshot after.
    std::lock_guard<std::mutex> g(mu_);
    std::int64_t copied = 0;
    for (std::size_t i = 0; i < live_.size(); ++i) {
      if (!live_[i].defined()) continue;
      const auto total = static_cast<std::int64_t>(live_[i].nbytes());
      copied += copyRange(i, safe_[i], total);
      safe_[i] = total;
    }
    live_.clear();
    released_ = true;
    return copied;
  }

 private:
  static char* bytesOf(const at::Tensor& t) { return static_cast<char*>(t.data_ptr()); }

  void stopCopier() {
    {
      std::lock_guard<std::mutex> g(mu_);
      stopCopier_ = true;
    }
    if (copier_.joinable()) copier_.join();
  }

  std::int64_t copyRange(std::size_t i, std::int64_t from, std::int64_t to) {
    if (from >= to) return 0;
    std::memcpy(bytesOf(snapshot_[i]) + from, bytesOf(live_[i]) + from,
                static_cast<std::size_t>(to - from));
    return to - from;
  }

  // Block by block: a block is claimed under the lock and copied outside it; release()
  // joins this thread, so it waits for one block at most.
  void copyAhead() {
    constexpr std::int64_t kBlock = 4 << 20;
    for (std::size_t i = 0; i < live_.size(); ++i) {
      if (!live_[i].defined()) continue;
      const auto total = static_cast<std::int64_t>(live_[i].nbytes());
      for (;;) {
        std::int64_t from = 0, to = 0;
        {
          std::lock_guard<std::mutex> g(mu_);
          if (stopCopier_) return;
          if (safe_[i] >= total) break;
          from = safe_[i];
          to = std::min(total, from + kBlock);
        }
        copyRange(i, from, to);  // [from, to) is only read: by the writer, in place
        std::lock_guard<std::mutex> g(mu_);
        safe_[i] = std::max(safe_[i], to);
      }
    }
  }

  std::mutex mu_;
  std::vector<at::Tensor> live_;      // deferred pieces (flat views); undefined: copied
  std::vector<at::Tensor> snapshot_;  // host buffers, one per piece
  std::vector<std::int64_t> safe_;    // bytes
  bool stopCopier_ = false, released_ = false;
  std::thread copier_;
};

struct Checkpointer::Pending {
  std::shared_ptr<AsyncSources> sources;
  std::future<SaveResult> result;
};

Checkpointer::Checkpointer(dist::Consensus& consensus, WriteOptions options)
    : consensus_(consensus), options_(options) {}

Checkpointer::~Checkpointer() {
  if (!pending_) return;
  try {
    wait();
  } catch (const std::exception& e) {
    COHORT_LOG_ERROR("async checkpoint save failed: {}", e.what());
  }
}

void Checkpointer::setNodeLocal(std::vector<int> nodeOf) {
  if (!nodeOf.empty() && static_cast<int>(nodeOf.size()) != consensus_.size()) {
    throw CheckpointError("setNodeLocal: " + std::to_string(nodeOf.size()) + " entries for " +
                          std::to_string(consensus_.size()) + " ranks");
  }
  nodeOf_ = std::move(nodeOf);
}

bool Checkpointer::writesDirectory() const {
  const int rank = consensus_.rank();
  if (nodeOf_.empty()) return rank == 0;
  for (int r = 0; r < rank; ++r) {
    if (nodeOf_[static_cast<std::size_t>(r)] == nodeOf_[static_cast<std::size_t>(rank)])
      return false;
  }
  return true;
}

SaveResult Checkpointer::saveNow(const std::string& dir, const std::vector<SavePiece>& pieces,
                                 Manifest header, ChunkBytes* bytes) {
  const int rank = consensus_.rank(), world = consensus_.size();
  const auto t0 = std::chrono::steady_clock::now();
  std::string err;
  if (writesDirectory()) {
    try {
      // A previous attempt at this step (failed, or killed mid-save) is replaced: the
      // sentinel goes in first, so the directory is never mistaken for a valid one.
      if (fs::exists(dir)) {
        createSentinel(dir);
        for (const auto& e : fs::directory_iterator(dir)) {
          if (e.path().filename() != kSentinelName) fs::remove_all(e.path());
        }
      } else {
        createSentinel(dir);
      }
    } catch (const std::exception& e) {
      err = e.what();
    }
  }
  consensus_.agree<CheckpointError>(err.empty() ? "" : "checkpoint " + dir + " not saved: " + err);

  ShardReport report;
  std::vector<at::Tensor> hold;
  try {
    std::vector<ChunkSource> sources;
    for (const SavePiece& p : pieces) {
      hold.push_back(hostContiguous(p.data));
      ChunkSource c;
      c.name = p.name;
      c.dtype = dtypeName(p.data);
      c.shape = p.shape;
      c.offset = p.offset;
      c.count = p.data.numel();
      c.data = hold.back().data_ptr();
      sources.push_back(std::move(c));
    }
    ShardFile file;
    const std::vector<Chunk> chunks = writeShard(
        (fs::path(dir) / shardFileName(rank, world)).string(), sources, options_, bytes, &file);
    report.set_file_bytes(file.bytes);
    report.set_file_crc32c(file.crc32c);
    std::int64_t bytes = 0;
    for (std::size_t i = 0; i < chunks.size(); ++i) {
      TensorEntry* t = report.add_tensors();
      t->set_name(sources[i].name);
      t->set_dtype(sources[i].dtype);
      for (std::int64_t d : sources[i].shape) t->add_shape(d);
      *t->add_chunks() = chunks[i];
      bytes += sources[i].count * static_cast<std::int64_t>(dtypeSize(sources[i].dtype));
    }
    report.set_bytes(bytes);
  } catch (const std::exception& e) {
    report.set_error(e.what());
  }
  hold.clear();

  // Every rank learns every report: the same error everywhere, or rank 0 has all chunks.
  std::string wire;
  report.SerializeToString(&wire);
  const std::vector<std::string> wires = consensus_.allGather(wire);
  std::vector<ShardReport> reports(wires.size());
  std::int64_t totalBytes = 0;
  std::string firstFailure;
  for (std::size_t r = 0; r < wires.size(); ++r) {
    reports[r].ParseFromString(wires[r]);
    totalBytes += reports[r].bytes();
    if (firstFailure.empty() && !reports[r].error().empty()) {
      firstFailure = "rank " + std::to_string(r) + ": " + reports[r].error();
    }
  }
  if (!firstFailure.empty()) {
    throw CheckpointError("checkpoint " + dir + " not saved (" + firstFailure +
                          "); earlier checkpoints are untouched");
  }

  err.clear();
  if (writesDirectory()) {
    try {
      Manifest m = assembleManifest(std::move(header), reports, options_.checksumBlockBytes,
                                    "the manifest being written for " + dir);
      for (int r = 0; r < world && !nodeOf_.empty(); ++r) {  // this view's shards
        if (nodeOf_[static_cast<std::size_t>(r)] == nodeOf_[static_cast<std::size_t>(rank)])
          m.add_local_shards(static_cast<std::uint32_t>(r));
      }
      m.set_save_seconds(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      writeManifest(dir, m);
      removeSentinel(dir);
    } catch (const std::exception& e) {
      err = e.what();
    }
  }
  consensus_.agree<CheckpointError>(err.empty() ? ""
                                                : "checkpoint " + dir + " not published: " + err);
  SaveResult out;
  out.dir = dir;
  out.bytes = totalBytes;
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

SaveResult Checkpointer::save(const std::string& dir, const std::vector<SavePiece>& pieces,
                              Manifest header) {
  wait();
  return saveNow(dir, pieces, std::move(header));
}

void Checkpointer::reserveSnapshot(const std::vector<SavePiece>& pieces) {
  if (snapshot_.size() != pieces.size()) snapshot_.assign(pieces.size(), at::Tensor());
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    const at::Tensor& src = pieces[i].data;
    at::Tensor& buf = snapshot_[i];
    if (!buf.defined() || buf.numel() != src.numel() || buf.scalar_type() != src.scalar_type()) {
      // Zero-filled: the pages are faulted in now, not during the first snapshot.
      buf = at::zeros({src.numel()},
                      src.options().device(at::kCPU).pinned_memory(src.is_cuda()));
    }
  }
}

void Checkpointer::saveAsync(const std::string& dir, const std::vector<SavePiece>& pieces,
                             Manifest header) {
  wait();
  // Snapshot into reused host buffers: the training may change the originals right after,
  // except the deferred pieces, which it promises to leave alone until releaseSources().
  reserveSnapshot(pieces);
  std::vector<SavePiece> copies = pieces;
  std::vector<at::Tensor> live(pieces.size());
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    const at::Tensor& t = pieces[i].data;
    if (pieces[i].deferCopy && t.device().is_cpu() && t.is_contiguous()) {
      live[i] = t.reshape({-1});
    } else {
      snapshot_[i].copy_(t.reshape({-1}));
    }
    copies[i].data = snapshot_[i];
  }
  auto pending = std::make_unique<Pending>();
  pending->sources = std::make_shared<AsyncSources>(std::move(live), snapshot_,
                                                    env::get(env::kCkptCopyAhead));
  pending->result = std::async(std::launch::async, [this, dir, copies = std::move(copies),
                                                    h = std::move(header),
                                                    sources = pending->sources]() mutable {
    return saveNow(dir, copies, std::move(h), sources.get());
  });
  pending_ = std::move(pending);
}

std::int64_t Checkpointer::releaseSources() {
  return pending_ ? pending_->sources->release() : 0;
}

std::optional<SaveResult> Checkpointer::wait() {
  if (!pending_) return std::nullopt;
  std::unique_ptr<Pending> p = std::move(pending_);
  return p->result.get();  // rethrows the (agreed) error
}

Manifest Checkpointer::loadManifest(const std::string& dir) {
  Manifest m;
  std::string err;
  try {
    m = readManifest(dir);
    if (fs::exists(fs::path(dir) / kSentinelName)) {
      throw CheckpointCorrupt("checkpoint " + dir + " is incomplete (" + kSentinelName +
                              " present)");
    }
    const int rank = consensus_.rank();
    if (m.local_shards_size() > 0 &&
        (m.world_size() != consensus_.size() || !shardIsHere(m, rank))) {
      throw CheckpointCorrupt(
          "checkpoint " + dir + " was saved on each node by " + std::to_string(m.world_size()) +
          " ranks and this node's copy holds " + localShardsNote(m) + ", not rank " +
          std::to_string(rank) + "'s of " + std::to_string(consensus_.size()) +
          ": resume it with the same ranks on the same hosts");
    }
  } catch (const std::exception& e) {
    err = e.what();
  }
  consensus_.agree<CheckpointCorrupt>(err);
  return m;
}

std::int64_t Checkpointer::load(const std::string& dir, const Manifest& manifest,
                                const std::vector<LoadPiece>& pieces) {
  std::map<std::string, const TensorEntry*> byName;
  for (const TensorEntry& t : manifest.tensors()) byName[t.name()] = &t;
  RangeReader reader(dir, manifest);
  std::string err;
  try {
    for (const LoadPiece& p : pieces) {
      auto it = byName.find(p.name);
      if (it == byName.end())
        throw CheckpointCorrupt(dir + ": no tensor " + p.name + " in the manifest");
      if (it->second->dtype() != dtypeName(p.dst)) {
        throw CheckpointCorrupt(dir + ": tensor " + p.name + " is " + it->second->dtype() +
                                ", the model has " + dtypeName(p.dst));
      }
      const bool inPlace = p.dst.device().is_cpu() && p.dst.is_contiguous();
      at::Tensor host =
          inPlace ? p.dst : at::empty({p.dst.numel()}, p.dst.options().device(at::kCPU));
      reader.read(*it->second, p.offset, p.dst.numel(), host.data_ptr());
      if (!inPlace) p.dst.copy_(host.view(p.dst.sizes()));
    }
  } catch (const std::exception& e) {
    err = e.what();
  }
  consensus_.agree<CheckpointCorrupt>(err);
  return reader.bytesRead();
}

}  // namespace cohort::ckpt
