// HostBackend: issue-side argument checks, then the engine runs each op: the cross-rank
// argument check (COHORT_CHECK_COLLECTIVES: a small MAX all-reduce of its signature, a plain
// swap of signatures with two ranks, riding on the first data of a two-rank all_reduce),
// then the ring or the network's own collective, all waits polling against the op's
// deadline.
#include "host_backend.h"

#include "cohort/dist/error.h"
#include "cohort/dist/runtime.h"
#include "control_plane.h"
#include "ring.h"

namespace cohort::dist::detail {

namespace {

class HostBackend final : public Backend {
 public:
  HostBackend(std::unique_ptr<Network> network, const BackendOptions& options, const char* name)
      : options_(options),
        name_(name),
        network_(std::move(network)),
        rank_(network_->transport().rank()),
        size_(network_->transport().size()),
        control_(network_->control(), rank_, size_, options.timeoutSeconds,
                 [this] { return engine_->nextSeq(); }),
        wait_([this] { control_.checkpoint(); }),
        ring_(network_->transport(), wait_, options.sliceBytes) {
    engine_ = std::make_unique<Engine>(
        size_ == 1, [this](Op& op) { return run(op); }, [this] { control_.idle(); });
  }

  ~HostBackend() override {
    engine_.reset();  // runs what is queued, then joins the engine thread
    network_->close(control_.broken());
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* name() const override { return name_; }
  bool usesDeviceMemory() const override { return false; }

  std::unique_ptr<Work> allReduce(void* buf, std::size_t count, DType dtype,
                                  ReduceOp op) override {
    return submitReduction(Kind::kAllReduce, buf, count, dtype, op);
  }

  std::unique_ptr<Work> reduceScatter(void* buf, std::size_t count, DType dtype,
                                      ReduceOp op) override {
    return submitReduction(Kind::kReduceScatter, buf, count, dtype, op);
  }

  std::unique_ptr<Work> allGatherPartitions(void* buf, std::size_t count, DType dtype) override {
    Op o;
    o.kind = Kind::kAllGatherPartitions;
    o.buf = buf;
    o.count = count;
    o.dtype = dtype;
    return submit(std::move(o));
  }

  std::unique_ptr<Work> broadcast(void* buf, std::size_t count, DType dtype,
                                  int root) override {
    checkRoot(root, size_, "broadcast");
    Op o;
    o.kind = Kind::kBroadcast;
    o.buf = buf;
    o.count = count;
    o.dtype = dtype;
    o.root = root;
    return submit(std::move(o));
  }

  std::unique_ptr<Work> allGatherV(const void* in, void* out,
                                   const std::vector<std::size_t>& counts,
                                   DType dtype) override {
    return submitGather(Kind::kAllGatherV, in, out, counts, dtype, 0);
  }

  std::unique_ptr<Work> gatherV(const void* in, void* out, const std::vector<std::size_t>& counts,
                                DType dtype, int root) override {
    checkRoot(root, size_, "gather");
    return submitGather(Kind::kGatherV, in, out, counts, dtype, root);
  }

  std::unique_ptr<Work> barrier() override {
    Op o;
    o.kind = Kind::kBarrier;
    return submit(std::move(o));
  }

  void abort(const std::string& reason) override {
    markJobBroken();
    control_.requestAbort(reason);
    engine_->wake();
    // The runner posts the notices within a few milliseconds; bounded so abort never hangs.
    control_.awaitAbortSent(std::chrono::seconds(2));
  }

 private:
  std::unique_ptr<Work> submitReduction(Kind kind, void* buf, std::size_t count, DType dtype,
                                        ReduceOp op) {
    checkReduction(kind, dtype, op);
    Op o;
    o.kind = kind;
    o.buf = buf;
    o.count = count;
    o.dtype = dtype;
    o.reduce = op;
    return submit(std::move(o));
  }

  std::unique_ptr<Work> submitGather(Kind kind, const void* in, void* out,
                                     const std::vector<std::size_t>& counts, DType dtype,
                                     int root) {
    Op o;
    o.kind = kind;
    o.in = in;
    o.buf = out;
    o.counts = counts;
    o.count = checkGatherCounts(kind, counts, size_);
    o.dtype = dtype;
    o.root = root;
    return submit(std::move(o));
  }

  std::unique_ptr<Work> submit(Op o) {
    network_->checkUsable(kindName(o.kind));
    return engine_->submit(std::move(o));
  }

  // Runs on the thread holding the runner token.
  std::exception_ptr run(Op& op) {
    std::exception_ptr error;
    try {
      control_.begin(op);
      wait_.setCallerRunning(!engine_->onEngineThread());
      std::string mismatch;
      if (size_ > 1 && options_.checkArguments) {
        mismatch = checkAndExecute(op);
      } else {
        execute(op);
      }
      if (!mismatch.empty()) {
        // Every rank saw the same disagreement and no data moved: still usable.
        control_.end();
        return std::make_exception_ptr(DistError(mismatch));
      }
    } catch (...) {
      error = std::current_exception();
      control_.fail();
      markJobBroken();
    }
    control_.end();
    return error;
  }

  // All ranks must agree on kind, sequence number, count, dtype, op/root and counts before
  // `op` runs. Returns the error message of a disagreement (the same on every rank), or "".
  // Two ranks swap their signatures (one message each way) and take the maximum locally,
  // which is the MAX all-reduce at a fraction of a nonblocking collective's cost; a
  // two-rank all_reduce sends its signature with its first slice of data (no extra round).
  std::string checkAndExecute(const Op& op) {
    SignatureBuffer buf = encodeSignature(op);
    if (size_ == 2 && op.kind == Kind::kAllReduce) {
      return ring_.checkedAllReduce(op.buf, op.count, op.dtype, op.reduce, buf,
                                    [&op](const SignatureBuffer& b) {
                                      return signatureMismatch(op, b);
                                    });
    }
    if (size_ == 2) {
      ring_.pairMax(buf);
    } else {
      network_->maxReduce(buf, wait_);
    }
    std::string mismatch = signatureMismatch(op, buf);
    if (mismatch.empty()) execute(op);
    return mismatch;
  }

  void execute(const Op& op) {
    switch (op.kind) {
      case Kind::kAllReduce: return ring_.allReduce(op.buf, op.count, op.dtype, op.reduce);
      case Kind::kReduceScatter:
        return ring_.reduceScatter(op.buf, op.count, op.dtype, op.reduce);
      case Kind::kAllGatherPartitions:
        return ring_.allGatherPartitions(op.buf, op.count, op.dtype);
      default: return network_->runOther(op, wait_);
    }
  }

  const BackendOptions options_;
  const char* const name_;
  const std::unique_ptr<Network> network_;
  const int rank_;
  const int size_;
  ControlPlane control_;
  WaitPolicy wait_;
  Ring ring_;                       // runner state: scratch buffers reused across ops
  std::unique_ptr<Engine> engine_;  // last: its thread calls into everything above
};

}  // namespace

std::unique_ptr<Backend> makeHostBackend(std::unique_ptr<Network> network,
                                         const BackendOptions& options, const char* name) {
  return std::make_unique<HostBackend>(std::move(network), options, name);
}

}  // namespace cohort::dist::detail
