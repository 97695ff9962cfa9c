// NcclBackend: collectives on a dedicated CUDA stream, ordered after the caller's compute
// stream with events. Waits poll the completion event against the collective timeout and
// the communicator's async error, and abort the NCCL communicator when the deadline passes
// (a hung NCCL kernel never returns otherwise).
#include "nccl_backend.h"

#include <nccl.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "cohort/dist/error.h"
#include "collective_check.h"

namespace cohort::dist {

namespace {

using Clock = std::chrono::steady_clock;
using detail::Kind;

#define COHORT_CUDA_CHECK(call)                                                         \
  do {                                                                                  \
    const cudaError_t cohort_cuda_rc_ = (call);                                         \
    if (cohort_cuda_rc_ != cudaSuccess)                                                 \
      throw DistError(std::string(#call) + " failed: " + cudaGetErrorString(cohort_cuda_rc_) + \
                      " (" + __FILE__ + ":" + std::to_string(__LINE__) + ")");          \
  } while (0)

#define COHORT_NCCL_CHECK(call)                                                         \
  do {                                                                                  \
    const ncclResult_t cohort_nccl_rc_ = (call);                                        \
    if (cohort_nccl_rc_ != ncclSuccess && cohort_nccl_rc_ != ncclInProgress)            \
      throw DistError(std::string(#call) + " failed: " + ncclGetErrorString(cohort_nccl_rc_) + \
                      " (" + __FILE__ + ":" + std::to_string(__LINE__) + ")");          \
  } while (0)

#define COHORT_MPI_CALL(call)                                                           \
  do {                                                                                  \
    if ((call) != MPI_SUCCESS) throw DistError(std::string(#call) + " failed");         \
  } while (0)

ncclDataType_t toNccl(DType t) {
  switch (t) {
    case DType::kFloat32: return ncclFloat32;
    case DType::kFloat64: return ncclFloat64;
    case DType::kBFloat16: return ncclBfloat16;
    case DType::kFloat16: return ncclFloat16;
    case DType::kInt32: return ncclInt32;
    case DType::kInt64: return ncclInt64;
    case DType::kUInt8: return ncclUint8;
  }
  throw DistError("nccl: unsupported dtype");
}

ncclRedOp_t toNccl(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
    case ReduceOp::kAvg: return ncclAvg;
  }
  throw DistError("nccl: unsupported reduce op");
}

Clock::time_point deadlineAfter(double seconds) {
  return Clock::now() +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

// Polls an MPI request until done or the deadline (bootstrap traffic only).
void waitMpi(MPI_Request* req, Clock::time_point deadline, const std::string& what) {
  while (true) {
    int flag = 0;
    COHORT_MPI_CALL(MPI_Test(req, &flag, MPI_STATUS_IGNORE));
    if (flag) return;
    if (Clock::now() > deadline) {
      throw TimeoutError(what + " timed out (COHORT_COLLECTIVE_TIMEOUT): a peer did not arrive");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

class NcclBackend;

class NcclWork : public Work {
 public:
  NcclWork(NcclBackend* backend, cudaEvent_t done, detail::Signature sig)
      : backend_(backend), done_(done), sig_(std::move(sig)) {}
  ~NcclWork() override;
  void wait() override;
  bool isCompleted() override;

 private:
  NcclBackend* backend_;
  cudaEvent_t done_;
  detail::Signature sig_;
  bool finished_ = false;
};

class NcclBackend final : public Backend {
 public:
  NcclBackend(MPI_Comm bootstrap, int device, const BackendOptions& options,
              ComputeStreamFn computeStream)
      : options_(options), computeStream_(std::move(computeStream)), device_(device) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      throw DistError("cohort::dist: the NCCL backend was created before cohort::dist::init()");
    }
    COHORT_MPI_CALL(MPI_Comm_dup(bootstrap, &mpi_));
    MPI_Comm_set_errhandler(mpi_, MPI_ERRORS_RETURN);
    COHORT_MPI_CALL(MPI_Comm_rank(mpi_, &rank_));
    COHORT_MPI_CALL(MPI_Comm_size(mpi_, &size_));
    const auto deadline = deadlineAfter(options_.timeoutSeconds);

    // Every rank learns whether every rank has a device, so all fail together.
    int count = 0;
    const cudaError_t rc = cudaGetDeviceCount(&count);
    std::string local;
    if (rc != cudaSuccess || count == 0) {
      local = "no CUDA device visible to rank " + std::to_string(rank_) + " (" +
              (rc != cudaSuccess ? std::string(cudaGetErrorString(rc)) : "0 devices") + ")";
    } else if (device_ < 0 || device_ >= count) {
      local = "rank " + std::to_string(rank_) + " asked for CUDA device " +
              std::to_string(device_) + " but sees " + std::to_string(count);
    }
    int ok[2] = {local.empty() ? 1 : 0, local.empty() ? size_ : rank_};  // MIN: first bad rank
    MPI_Request req;
    COHORT_MPI_CALL(MPI_Iallreduce(MPI_IN_PLACE, ok, 2, MPI_INT, MPI_MIN, mpi_, &req));
    waitMpi(&req, deadline, "NCCL backend start-up");
    if (!local.empty()) throw DistError("nccl: " + local);
    if (!ok[0]) {
      throw DistError("nccl: no usable CUDA device on rank " + std::to_string(ok[1]) +
                      " (see that rank's log); all ranks stop");
    }
    COHORT_CUDA_CHECK(cudaSetDevice(device_));

    ncclUniqueId id;
    if (rank_ == 0) COHORT_NCCL_CHECK(ncclGetUniqueId(&id));
    COHORT_MPI_CALL(MPI_Ibcast(&id, sizeof(id), MPI_BYTE, 0, mpi_, &req));
    waitMpi(&req, deadline, "NCCL unique-id broadcast");
#if NCCL_VERSION_CODE >= 21400
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    COHORT_NCCL_CHECK(ncclCommInitRankConfig(&comm_, size_, id, rank_, &config));
    waitComm(deadline, "ncclCommInitRank");
#else
    COHORT_NCCL_CHECK(ncclCommInitRank(&comm_, size_, id, rank_));
#endif
    COHORT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    COHORT_CUDA_CHECK(cudaMalloc(&scratch_, 16));
  }

  ~NcclBackend() override {
    if (comm_ != nullptr) {
      if (broken_) {
        ncclCommAbort(comm_);
      } else {
        ncclCommDestroy(comm_);
      }
    }
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    if (scratch_ != nullptr) cudaFree(scratch_);
    if (mpi_ != MPI_COMM_NULL && !broken_) MPI_Comm_free(&mpi_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* name() const override { return "nccl"; }
  bool usesDeviceMemory() const override { return true; }

  std::unique_ptr<Work> allReduce(void* buf, std::size_t count, DType dtype,
                                  ReduceOp op) override {
    detail::Signature sig = start(Kind::kAllReduce, count, dtype, 0);
    sig.reduce = op;
    return launch(std::move(sig), [&] {
      COHORT_NCCL_CHECK(ncclAllReduce(buf, buf, count, toNccl(dtype), toNccl(op), comm_, stream_));
    });
  }

  // Uneven partitions: one reduce (reduce_scatter) or broadcast (all_gather) per owner,
  // fused in a group; ncclReduceScatter/ncclAllGather need equal counts.
  std::unique_ptr<Work> reduceScatter(void* buf, std::size_t count, DType dtype,
                                      ReduceOp op) override {
    detail::Signature sig = start(Kind::kReduceScatter, count, dtype, 0);
    sig.reduce = op;
    return launch(std::move(sig), [&] {
      forEachPartition(buf, count, dtype, [&](char* p, std::size_t n, int owner) {
        COHORT_NCCL_CHECK(ncclReduce(p, p, n, toNccl(dtype), toNccl(op), owner, comm_, stream_));
      });
    });
  }

  std::unique_ptr<Work> allGatherPartitions(void* buf, std::size_t count, DType dtype) override {
    detail::Signature sig = start(Kind::kAllGatherPartitions, count, dtype, 0);
    return launch(std::move(sig), [&] {
      forEachPartition(buf, count, dtype, [&](char* p, std::size_t n, int owner) {
        COHORT_NCCL_CHECK(ncclBroadcast(p, p, n, toNccl(dtype), owner, comm_, stream_));
      });
    });
  }

  std::unique_ptr<Work> broadcast(void* buf, std::size_t count, DType dtype, int root) override {
    detail::Signature sig = start(Kind::kBroadcast, count, dtype, root);
    return launch(std::move(sig), [&] {
      COHORT_NCCL_CHECK(ncclBroadcast(buf, buf, count, toNccl(dtype), root, comm_, stream_));
    });
  }

  // NCCL has no all-gather-v: one broadcast per rank into its slot, fused in a group.
  std::unique_ptr<Work> allGatherV(const void* in, void* out,
                                   const std::vector<std::size_t>& counts, DType dtype) override {
    detail::Signature sig = startGather(Kind::kAllGatherV, counts, dtype, 0);
    const std::size_t es = elementSize(dtype);
    return launch(std::move(sig), [&] {
      COHORT_NCCL_CHECK(ncclGroupStart());
      std::size_t off = 0;
      for (int r = 0; r < size_; ++r) {
        char* slot = static_cast<char*>(out) + off * es;
        COHORT_NCCL_CHECK(ncclBroadcast(r == rank_ ? in : slot, slot, counts[r], toNccl(dtype), r,
                                        comm_, stream_));
        off += counts[r];
      }
      COHORT_NCCL_CHECK(ncclGroupEnd());
    });
  }

  std::unique_ptr<Work> gatherV(const void* in, void* out, const std::vector<std::size_t>& counts,
                                DType dtype, int root) override {
    detail::Signature sig = startGather(Kind::kGatherV, counts, dtype, root);
    const std::size_t es = elementSize(dtype);
    return launch(std::move(sig), [&] {
      COHORT_NCCL_CHECK(ncclGroupStart());
      if (rank_ == root) {
        std::size_t off = 0;
        for (int r = 0; r < size_; ++r) {
          char* slot = static_cast<char*>(out) + off * es;
          if (r == rank_) {
            COHORT_CUDA_CHECK(cudaMemcpyAsync(slot, in, counts[r] * es, cudaMemcpyDeviceToDevice,
                                              stream_));
          } else if (counts[r] > 0) {
            COHORT_NCCL_CHECK(ncclRecv(slot, counts[r], toNccl(dtype), r, comm_, stream_));
          }
          off += counts[r];
        }
      } else if (counts[rank_] > 0) {
        COHORT_NCCL_CHECK(ncclSend(in, counts[rank_], toNccl(dtype), root, comm_, stream_));
      }
      COHORT_NCCL_CHECK(ncclGroupEnd());
    });
  }

  std::unique_ptr<Work> barrier() override {
    detail::Signature sig = start(Kind::kBarrier, 1, DType::kFloat32, 0);
    return launch(std::move(sig), [&] {
      COHORT_NCCL_CHECK(
          ncclAllReduce(scratch_, scratch_, 1, ncclFloat32, ncclSum, comm_, stream_));
    });
  }

  void abort(const std::string& /*reason*/) override {
    if (comm_ != nullptr && !broken_) ncclCommAbort(comm_);
    comm_ = nullptr;
    broken_ = true;
  }

  // Called by NcclWork::wait(): event completion against the deadline and async errors.
  void waitEvent(cudaEvent_t done, const detail::Signature& sig) {
    const auto deadline = deadlineAfter(options_.timeoutSeconds);
    while (true) {
      const cudaError_t q = cudaEventQuery(done);
      if (q == cudaSuccess) break;
      if (q != cudaErrorNotReady) COHORT_CUDA_CHECK(q);
      ncclResult_t async = ncclSuccess;
      if (comm_ != nullptr) ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        failComm();
        throw DistError(sig.describe() + " failed: " + ncclGetErrorString(async));
      }
      if (Clock::now() > deadline) {
        failComm();
        throw TimeoutError(sig.describe() + " timed out after " +
                           std::to_string(options_.timeoutSeconds) + " s on rank " +
                           std::to_string(rank_) +
                           " (NCCL; COHORT_COLLECTIVE_TIMEOUT); the communicator was aborted");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    // Later work on the compute stream sees the result without a host round trip.
    COHORT_CUDA_CHECK(cudaStreamWaitEvent(computeStream_(), done, 0));
  }

 private:
  void failComm() {
    if (comm_ != nullptr) ncclCommAbort(comm_);
    comm_ = nullptr;
    broken_ = true;
  }

  void waitComm(Clock::time_point deadline, const char* what) {
    while (true) {
      ncclResult_t state = ncclSuccess;
      COHORT_NCCL_CHECK(ncclCommGetAsyncError(comm_, &state));
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) {
        throw DistError(std::string(what) + " failed: " + ncclGetErrorString(state));
      }
      if (Clock::now() > deadline) {
        failComm();
        throw TimeoutError(std::string(what) + " timed out (COHORT_COLLECTIVE_TIMEOUT)");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  detail::Signature start(Kind kind, std::size_t count, DType dtype, int root) {
    if (broken_) throw DistError("nccl: the communicator is unusable after an earlier error");
    if ((kind == Kind::kBroadcast || kind == Kind::kGatherV) && (root < 0 || root >= size_)) {
      throw DistError(std::string(detail::kindName(kind)) + ": root " + std::to_string(root) +
                      " is not a rank of this group");
    }
    detail::Signature sig;
    sig.kind = kind;
    sig.seq = nextSeq_++;
    sig.count = count;
    sig.dtype = dtype;
    sig.root = root;
    return sig;
  }

  detail::Signature startGather(Kind kind, const std::vector<std::size_t>& counts, DType dtype,
                                int root) {
    if (static_cast<int>(counts.size()) != size_) {
      throw DistError(std::string(detail::kindName(kind)) + ": counts has " +
                      std::to_string(counts.size()) + " entries, group size is " +
                      std::to_string(size_));
    }
    std::size_t total = 0;
    for (auto c : counts) total += c;
    detail::Signature sig = start(kind, total, dtype, root);
    sig.counts = counts;
    return sig;
  }

  // Calls fn(partition start, element count, owner rank) for every rank's partition, inside
  // one NCCL group.
  template <typename Fn>
  void forEachPartition(void* buf, std::size_t count, DType dtype, Fn&& fn) {
    const std::size_t es = elementSize(dtype);
    COHORT_NCCL_CHECK(ncclGroupStart());
    for (int r = 0; r < size_; ++r) {
      const auto [lo, hi] = partitionOf(count, size_, r);
      fn(static_cast<char*>(buf) + lo * es, hi - lo, r);
    }
    COHORT_NCCL_CHECK(ncclGroupEnd());
  }

  template <typename Enqueue>
  std::unique_ptr<Work> launch(detail::Signature sig, Enqueue&& enqueue) {
    if (options_.checkArguments && size_ > 1) {
      detail::SignatureBuffer buf = detail::encodeSignature(sig);
      MPI_Request req;
      COHORT_MPI_CALL(MPI_Iallreduce(MPI_IN_PLACE, buf.data(), static_cast<int>(buf.size()),
                                     MPI_INT64_T, MPI_MAX, mpi_, &req));
      waitMpi(&req, deadlineAfter(options_.timeoutSeconds), sig.describe());
      const std::string mismatch = detail::signatureMismatch(sig, buf);
      if (!mismatch.empty()) throw DistError(mismatch);
    }
    COHORT_CUDA_CHECK(cudaSetDevice(device_));
    cudaEvent_t ready = nullptr, done = nullptr;
    COHORT_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    COHORT_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    COHORT_CUDA_CHECK(cudaEventRecord(ready, computeStream_()));
    COHORT_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready, 0));
    cudaEventDestroy(ready);
    enqueue();
#if NCCL_VERSION_CODE >= 21400
    waitComm(deadlineAfter(options_.timeoutSeconds), sig.describe().c_str());
#endif
    COHORT_CUDA_CHECK(cudaEventRecord(done, stream_));
    return std::make_unique<NcclWork>(this, done, std::move(sig));
  }

  const BackendOptions options_;
  ComputeStreamFn computeStream_;
  int device_ = 0;
  MPI_Comm mpi_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  void* scratch_ = nullptr;
  std::int64_t nextSeq_ = 0;
  bool broken_ = false;
};

NcclWork::~NcclWork() {
  if (done_ != nullptr) cudaEventDestroy(done_);
}

void NcclWork::wait() {
  if (finished_) return;
  backend_->waitEvent(done_, sig_);
  finished_ = true;
}

bool NcclWork::isCompleted() { return finished_ || cudaEventQuery(done_) == cudaSuccess; }

}  // namespace

std::unique_ptr<Backend> makeNcclBackend(MPI_Comm bootstrap, int device,
                                         const BackendOptions& options,
                                         ComputeStreamFn computeStream) {
  if (!computeStream) {
    computeStream = [] { return static_cast<cudaStream_t>(nullptr); };  // legacy default stream
  }
  return std::make_unique<NcclBackend>(bootstrap, device, options, std::move(computeStream));
}

}  // namespace cohort::dist
