// MpiBackend: host collectives executed by one communication-engine thread per backend.
//
// Why an engine thread: collectives become asynchronous (GradientSync overlaps them with
// backward), and every wait polls nonblocking requests against a deadline, so a peer that
// never arrives turns into a TimeoutError instead of a hang. While it polls, the engine also
// answers peers' "where are you?" queries and abort notices on a private control
// communicator; that is how a timed-out rank names the ranks that did not arrive.
//
// All-reduce is Cohort's own ring (reduce-scatter + all-gather over Isend/Irecv), run slice
// by slice so each slice stays in cache; bf16/fp16 are widened to float32 per slice. With
// two ranks (other dtypes) the two ring steps are pipelined across slices: the next slice's
// reduce-scatter message and this slice's all-gather message travel while this rank
// reduces, one wait per slice. Every collective is preceded by the cross-rank argument
// check (COHORT_CHECK_COLLECTIVES): a small MAX all-reduce of its signature, a plain swap
// of signatures with two ranks. The other collectives use MPI's nonblocking collectives on
// a contiguous byte type.
#include "cohort/dist/mpi_backend.h"

#include <sched.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

#include "cohort/dist/env.h"
#include "cohort/dist/error.h"
#include "cohort/dist/log.h"
#include "cohort/dist/runtime.h"
#include "collective_check.h"
#include "mpi_check.h"
#include "reduce.h"
#include "work_state.h"

namespace cohort::dist {

BackendOptions BackendOptions::fromEnv() {
  BackendOptions o;
  o.timeoutSeconds = env::get(env::kCollectiveTimeout);
  if (!(o.timeoutSeconds > 0)) {
    throw ConfigError("environment variable COHORT_COLLECTIVE_TIMEOUT must be > 0 seconds");
  }
  const std::int64_t slice = env::get(env::kAllreduceSliceBytes);
  if (slice < 4096) {
    throw ConfigError("environment variable COHORT_ALLREDUCE_SLICE_BYTES must be >= 4096");
  }
  o.sliceBytes = static_cast<std::size_t>(slice);
  o.checkArguments = env::get(env::kCheckCollectives);
  return o;
}

namespace {

using Clock = std::chrono::steady_clock;

bool isHalf(DType t) { return t == DType::kBFloat16 || t == DType::kFloat16; }

constexpr int kDataTag = 11;
constexpr int kGatherTag = 12;  // the all-gather half of a two-rank all-reduce
constexpr int kCheckTag = 13;
// A wait spins for kSpinPolls polls, then yields the core between polls until kSpinTime,
// then sleeps between polls (longer after kLongWait). Slice exchanges take tens to hundreds
// of microseconds, and a peer that is briefly descheduled comes back within a few
// milliseconds: sleeping any earlier costs a timer tick (~60 us) per wake-up, which cost up
// to half the bandwidth of 1-16 MiB all-reduces on a loaded machine.
constexpr std::uint64_t kSpinPolls = 2000;
constexpr auto kSpinTime = std::chrono::milliseconds(2);
constexpr auto kLongWait = std::chrono::milliseconds(20);
// A thread blocked in wait() has nothing else to do: it spins (as MPI_Allreduce does) for up
// to kCallerSpinTime before it sleeps. Yielding instead hands a contended core to another
// process for a whole time slice (~3 ms) per message, which made a 1 MiB all-reduce ~20x
// slower than MPI's next to one CPU-bound process per core.
constexpr auto kCallerSpinTime = std::chrono::milliseconds(50);
constexpr int kQueryTag = 21;
constexpr int kReplyTag = 22;
constexpr int kAbortTag = 23;

using detail::Kind;
using detail::kindName;

struct Op : detail::Signature {
  void* buf = nullptr;
  const void* in = nullptr;
  std::shared_ptr<detail::WorkState> state;
};

class MpiBackend;

// Waiting runs the backend's queued ops in this thread when the engine is idle. A Work must
// not outlive its backend.
class MpiWork : public Work {
 public:
  MpiWork(MpiBackend* b, std::shared_ptr<detail::WorkState> s)
      : backend_(b), state_(std::move(s)) {}
  ~MpiWork() override;
  void wait() override;
  bool isCompleted() override {
    std::lock_guard<std::mutex> lock(state_->mu);
    return state_->done;
  }

 private:
  MpiBackend* backend_;
  std::shared_ptr<detail::WorkState> state_;
};

class MpiBackend final : public Backend {
 public:
  MpiBackend(MPI_Comm parent, const BackendOptions& options) : options_(options) {
    if (!isInitialized()) {
      throw DistError("cohort::dist: a collective backend was created before "
                      "cohort::dist::init() (or after shutdown)");
    }
    COHORT_MPI_CHECK(MPI_Comm_dup(parent, &data_));
    COHORT_MPI_CHECK(MPI_Comm_dup(parent, &ctrl_));
    MPI_Comm_set_errhandler(data_, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(ctrl_, MPI_ERRORS_RETURN);
    COHORT_MPI_CHECK(MPI_Comm_rank(data_, &rank_));
    COHORT_MPI_CHECK(MPI_Comm_size(data_, &size_));
    engine_ = std::thread([this] { engineLoop(); });
  }

  ~MpiBackend() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    engineCv_.notify_all();
    engine_.join();
    // A broken communicator may still have requests in flight; freeing it could block.
    if (!broken_) {
      MPI_Comm_free(&data_);
      MPI_Comm_free(&ctrl_);
    }
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* name() const override { return "mpi"; }
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
    checkRoot(root, "broadcast");
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
    return gatherCommon(Kind::kAllGatherV, in, out, counts, dtype, 0);
  }

  std::unique_ptr<Work> gatherV(const void* in, void* out, const std::vector<std::size_t>& counts,
                                DType dtype, int root) override {
    checkRoot(root, "gather");
    return gatherCommon(Kind::kGatherV, in, out, counts, dtype, root);
  }

  std::unique_ptr<Work> barrier() override {
    Op o;
    o.kind = Kind::kBarrier;
    return submit(std::move(o));
  }

  void abort(const std::string& reason) override {
    std::unique_lock<std::mutex> lock(mu_);
    markJobBroken();
    if (abortState_ == AbortState::kNone) {
      abortReason_ = reason;
      abortState_ = AbortState::kRequested;
    }
    engineCv_.notify_all();
    // The engine posts the notices within a few milliseconds; bounded so abort never hangs.
    cv_.wait_for(lock, std::chrono::seconds(2),
                 [&] { return abortState_ == AbortState::kSent || engineDone_; });
  }

 private:
  enum class AbortState { kNone, kRequested, kSent };

  void checkRoot(int root, const char* what) const {
    if (root < 0 || root >= size_) {
      throw DistError(std::string(what) + ": root " + std::to_string(root) +
                      " is not a rank of this group (size " + std::to_string(size_) + ")");
    }
  }

  std::unique_ptr<Work> submitReduction(Kind kind, void* buf, std::size_t count, DType dtype,
                                        ReduceOp op) {
    if (op == ReduceOp::kAvg && !isFloating(dtype)) {
      throw DistError(std::string(kindName(kind)) + ": AVG needs a floating dtype, got " +
                      toString(dtype));
    }
    Op o;
    o.kind = kind;
    o.buf = buf;
    o.count = count;
    o.dtype = dtype;
    o.reduce = op;
    return submit(std::move(o));
  }

  std::unique_ptr<Work> gatherCommon(Kind kind, const void* in, void* out,
                                     const std::vector<std::size_t>& counts, DType dtype,
                                     int root) {
    if (static_cast<int>(counts.size()) != size_) {
      throw DistError(std::string(kindName(kind)) + ": counts has " +
                      std::to_string(counts.size()) + " entries, group size is " +
                      std::to_string(size_));
    }
    std::size_t total = 0;
    for (std::size_t c : counts) {
      if (c > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
        throw DistError(std::string(kindName(kind)) + ": " + std::to_string(c) +
                        " elements from one rank exceed MPI's int count limit");
      }
      total += c;
    }
    if (total > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
      throw DistError(std::string(kindName(kind)) + ": " + std::to_string(total) +
                      " elements in total exceed MPI's int displacement limit");
    }
    Op o;
    o.kind = kind;
    o.in = in;
    o.buf = out;
    o.counts = counts;
    o.count = total;
    o.dtype = dtype;
    o.root = root;
    return submit(std::move(o));
  }

  std::unique_ptr<Work> submit(Op o) {
    if (!isInitialized()) {
      throw DistError(std::string("cohort::dist: ") + kindName(o.kind) +
                      " called before cohort::dist::init() (or after shutdown)");
    }
    o.state = std::make_shared<detail::WorkState>();
    const bool callerRuns = detail::callerWaits();
    o.state->callerRuns = callerRuns;
    auto work = std::make_unique<MpiWork>(this, o.state);
    {
      std::unique_lock<std::mutex> lock(mu_);
      o.seq = nextSeq_++;
      queue_.push_back(std::move(o));
      if (size_ == 1 && queue_.size() == 1 && !runnerBusy_) {
        // One rank: the op moves no data between ranks (at most a local copy), so it runs
        // here and now, in order (nothing is queued before it). Handing it to the engine
        // costs two thread wake-ups per op (GradientSync launches every bucket async): a
        // 110-step Trainer run at world 1 made 1021 futex calls, now 326, as many as a
        // hand-written loop without any backend work.
        runFront(lock);
        return work;
      }
    }
    if (!callerRuns) engineCv_.notify_all();
    return work;
  }

  // ---- engine thread ----

  // The engine runs queued ops whenever no other thread holds the runner token; so does a
  // thread blocked in wait() (runQueuedUntil). The engine leaves an op whose issuing thread
  // runs it itself (callerRuns: a blocking call), which saves the two thread hand-offs (a
  // wake-up of ~5 us each here) that the engine would add. Exactly one thread makes this
  // backend's MPI calls at a time.
  void engineLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      // On shutdown nothing is left for a caller that will not come.
      if (!queue_.empty() && !runnerBusy_ && (stop_ || !queue_.front().state->callerRuns)) {
        runFront(lock);
        continue;
      }
      if (stop_ && queue_.empty()) break;
      if (size_ == 1) {
        // No peer can send a control message or an abort notice: nothing to poll for, so
        // sleep until a submit, a release, an abort or shutdown notifies engineCv_. A 5 ms
        // poll here woke this thread 200 times a second beside the training thread (and a
        // Trainer has two backends: its communicator and its Checkpointer's).
        engineCv_.wait(lock);
      } else {
        engineCv_.wait_for(lock, std::chrono::milliseconds(5));
      }
      if (runnerBusy_ || !queue_.empty()) continue;
      runnerBusy_ = true;
      lock.unlock();
      idlePoll();
      lock.lock();
      runnerBusy_ = false;
      if (!queue_.empty()) cv_.notify_all();  // a caller may have queued meanwhile
    }
    engineDone_ = true;
    cv_.notify_all();
  }

  // Pops and runs the front op with the runner token; `lock` holds mu_ on entry and exit.
  // Wakes waiting callers, and the engine only when it has something to run: a wake-up
  // costs a core that the peer rank or compute threads would use.
  void runFront(std::unique_lock<std::mutex>& lock) {
    runnerBusy_ = true;
    Op op = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    run(op);
    lock.lock();
    runnerBusy_ = false;
    cv_.notify_all();
    if (!queue_.empty() && !queue_.front().state->callerRuns) engineCv_.notify_all();
  }

 public:
  // Called when an MpiWork is destroyed: an op its issuer meant to run goes to the engine.
  void releaseToEngine(const std::shared_ptr<detail::WorkState>& state) {
    if (!state->callerRuns.exchange(false)) return;
    { std::lock_guard<std::mutex> lock(mu_); }  // the engine is waiting or will see the flag
    engineCv_.notify_all();
  }

  // Called by MpiWork::wait(): runs queued ops (in order) until `state` is done.
  void runQueuedUntil(const std::shared_ptr<detail::WorkState>& state) {
    std::unique_lock<std::mutex> lock(mu_);
    while (!isDone(*state)) {
      if (!queue_.empty() && !runnerBusy_) {
        runFront(lock);
      } else {
        cv_.wait_for(lock, std::chrono::milliseconds(1));
      }
    }
  }

 private:
  static bool isDone(detail::WorkState& st) {
    std::lock_guard<std::mutex> l(st.mu);
    return st.done;
  }

  void idlePoll() {
    try {
      serviceControl(nullptr);
      handleAbortRequest();
    } catch (const std::exception& e) {
      COHORT_LOG_WARN("communication engine: {}", e.what());
    }
  }

  void run(Op& op) {
    std::exception_ptr error;
    try {
      handleAbortRequest();
      if (!brokenReason_.empty()) throw DistError(op.describe() + ": " + brokenReason_);
      current_ = &op;
      callerRunning_ = std::this_thread::get_id() != engine_.get_id();
      lastStarted_ = op.seq;
      running_ = true;
      deadline_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(options_.timeoutSeconds));
      std::string mismatch;
      if (size_ > 1 && options_.checkArguments) mismatch = checkArguments(op);
      if (!mismatch.empty()) {
        // Every rank saw the same disagreement and no data moved: still usable.
        running_ = false;
        current_ = nullptr;
        op.state->complete(std::make_exception_ptr(DistError(mismatch)));
        return;
      }
      execute(op);
    } catch (...) {
      error = std::current_exception();
      if (brokenReason_.empty()) brokenReason_ = "the communicator is unusable after an earlier error";
      broken_ = true;
      markJobBroken();
    }
    running_ = false;
    current_ = nullptr;
    op.state->complete(error);
  }

  // All ranks must agree on kind, sequence number, count, dtype, op/root and counts.
  // Returns the error message of a disagreement (the same on every rank), or "".
  // Two ranks swap their signatures (one eager message each way) and take the maximum
  // locally, which is the MAX all-reduce at a fraction of a nonblocking collective's cost.
  std::string checkArguments(const Op& op) {
    detail::SignatureBuffer buf = detail::encodeSignature(op);
    const int len = static_cast<int>(buf.size());
    if (size_ == 2) {
      detail::SignatureBuffer peer{};
      MPI_Request reqs[2];
      COHORT_MPI_CHECK(
          MPI_Irecv(peer.data(), len, MPI_INT64_T, 1 - rank_, kCheckTag, data_, &reqs[0]));
      COHORT_MPI_CHECK(
          MPI_Isend(buf.data(), len, MPI_INT64_T, 1 - rank_, kCheckTag, data_, &reqs[1]));
      waitAll(reqs, 2);
      for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = std::max(buf[i], peer[i]);
    } else {
      MPI_Request req;
      COHORT_MPI_CHECK(
          MPI_Iallreduce(MPI_IN_PLACE, buf.data(), len, MPI_INT64_T, MPI_MAX, data_, &req));
      waitAll(&req, 1);
    }
    return detail::signatureMismatch(op, buf);
  }

  void execute(const Op& op) {
    switch (op.kind) {
      case Kind::kAllReduce: {
        return size_ == 2 && !isHalf(op.dtype) ? pairAllReduce(op) : ring(op, true, true);
      }
      case Kind::kReduceScatter: return ring(op, true, false);
      case Kind::kAllGatherPartitions: return ring(op, false, true);
      case Kind::kBroadcast: return runBroadcast(op);
      case Kind::kAllGatherV:
      case Kind::kGatherV: return runGather(op);
      case Kind::kBarrier: {
        if (size_ == 1) return;
        MPI_Request req;
        COHORT_MPI_CHECK(MPI_Ibarrier(data_, &req));
        return waitAll(&req, 1);
      }
    }
  }

  // The ring, shared by all_reduce (reduce-scatter then all-gather), reduce_scatter and
  // all_gather of partitions. Rank i's partition is partitionOf(count, n, i); the buffer is
  // processed slice by slice, slice k being the k-th chunk of every partition, so each slice
  // stays in cache. Half types are widened to float32 for the reduction and rounded once.
  void ring(const Op& op, bool reduceScatter, bool allGather) {
    if (op.count == 0 || size_ == 1) return;
    const int n = size_;
    const bool widen = isHalf(op.dtype) && reduceScatter;
    const DType wt = widen ? DType::kFloat32 : op.dtype;  // working type
    const std::size_t es = elementSize(wt), inEs = elementSize(op.dtype);
    const std::size_t chunk = std::max<std::size_t>(1, options_.sliceBytes / es / n);
    std::size_t maxPart = 0;
    std::vector<std::size_t> start(n), part(n);
    for (int i = 0; i < n; ++i) {
      const auto [lo, hi] = partitionOf(op.count, n, i);
      start[i] = lo;
      part[i] = hi - lo;
      maxPart = std::max(maxPart, part[i]);
    }
    if (reduceScatter && scratch_.size() < chunk * es) scratch_.resize(chunk * es);
    if (widen && widened_.size() < chunk * n) widened_.resize(chunk * n);
    std::vector<char*> seg(n);
    std::vector<std::size_t> len(n);
    char* base = static_cast<char*>(op.buf);
    for (std::size_t k = 0; k * chunk < maxPart; ++k) {
      for (int i = 0; i < n; ++i) {
        const std::size_t off = std::min(k * chunk, part[i]);
        len[i] = std::min(chunk, part[i] - off);
        if (widen) {
          float* w = widened_.data() + static_cast<std::size_t>(i) * chunk;
          detail::widenToFloat(reinterpret_cast<const std::uint16_t*>(base + (start[i] + off) * inEs),
                               w, len[i], op.dtype);
          seg[i] = reinterpret_cast<char*>(w);
        } else {
          seg[i] = base + (start[i] + off) * inEs;
        }
      }
      if (reduceScatter) {
        ringReduceScatter(seg, len, wt, op.reduce);
        if (op.reduce == ReduceOp::kAvg) detail::divideBy(seg[rank_], len[rank_], wt, n);
      }
      if (allGather) ringAllGather(seg, len, es);
      if (widen) {  // round once; after a bare reduce-scatter only our partition is defined
        for (int i = 0; i < n; ++i) {
          if (!allGather && i != rank_) continue;
          const std::size_t off = std::min(k * chunk, part[i]);
          detail::narrowFromFloat(reinterpret_cast<const float*>(seg[i]),
                                  reinterpret_cast<std::uint16_t*>(base + (start[i] + off) * inEs),
                                  len[i], op.dtype);
        }
      }
    }
  }

  // All-reduce of two ranks (float32, float64 and integer types): the ring's two steps per
  // slice, pipelined. Each rank owns half of every slice; step one swaps the halves so each
  // rank reduces its own, step two swaps the reduced halves back. Slice k+1's first swap is
  // posted before slice k is reduced and slice k's second swap is posted right after, so
  // each slice costs one wait instead of two and the peer copies one message while this
  // rank reduces. Received halves alternate between two scratch areas.
  void pairAllReduce(const Op& op) {
    if (op.count == 0) return;
    const int peer = 1 - rank_;
    const std::size_t es = elementSize(op.dtype);
    const std::size_t sliceBytes = std::min<std::size_t>(options_.sliceBytes, 1 << 30);
    const std::size_t chunk = std::max<std::size_t>(1, sliceBytes / es / 2);
    const auto [mineLo, mineHi] = partitionOf(op.count, 2, rank_);
    const auto [peerLo, peerHi] = partitionOf(op.count, 2, peer);
    const std::size_t slices =
        (std::max(mineHi - mineLo, peerHi - peerLo) + chunk - 1) / chunk;
    if (scratch_.size() < 2 * chunk * es) scratch_.resize(2 * chunk * es);
    char* base = static_cast<char*>(op.buf);
    struct Segment {
      char* data;
      int bytes;
    };
    // Slice k of the partition [lo, hi): empty once the partition is exhausted.
    auto segment = [&](std::size_t lo, std::size_t hi, std::size_t k) {
      const std::size_t off = std::min(lo + k * chunk, hi);
      return Segment{base + off * es, static_cast<int>(std::min(chunk, hi - off) * es)};
    };
    auto scratch = [&](std::size_t k) { return scratch_.data() + (k % 2) * chunk * es; };
    // [0, 1]: the halves of slice k going to be reduced; [2, 3]: reduced halves of slice k-1.
    MPI_Request reqs[4] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL, MPI_REQUEST_NULL,
                           MPI_REQUEST_NULL};
    auto postScatter = [&](std::size_t k) {
      const Segment mine = segment(mineLo, mineHi, k), theirs = segment(peerLo, peerHi, k);
      COHORT_MPI_CHECK(MPI_Irecv(scratch(k), mine.bytes, MPI_BYTE, peer, kDataTag, data_,
                                 &reqs[0]));
      COHORT_MPI_CHECK(MPI_Isend(theirs.data, theirs.bytes, MPI_BYTE, peer, kDataTag, data_,
                                 &reqs[1]));
    };
    auto postGather = [&](std::size_t k) {
      const Segment mine = segment(mineLo, mineHi, k), theirs = segment(peerLo, peerHi, k);
      COHORT_MPI_CHECK(MPI_Irecv(theirs.data, theirs.bytes, MPI_BYTE, peer, kGatherTag, data_,
                                 &reqs[2]));
      COHORT_MPI_CHECK(MPI_Isend(mine.data, mine.bytes, MPI_BYTE, peer, kGatherTag, data_,
                                 &reqs[3]));
    };
    postScatter(0);
    for (std::size_t k = 0; k < slices; ++k) {
      waitAll(reqs, 4);  // slice k's halves swapped, slice k-1 complete
      if (k + 1 < slices) postScatter(k + 1);
      const Segment mine = segment(mineLo, mineHi, k);
      const std::size_t n = static_cast<std::size_t>(mine.bytes) / es;
      detail::reduceInto(mine.data, scratch(k), n, op.dtype, op.reduce);
      if (op.reduce == ReduceOp::kAvg) detail::divideBy(mine.data, n, op.dtype, 2);
      postGather(k);
    }
    waitAll(reqs, 4);
  }

  // After n-1 steps rank r's segment r holds the reduction over all ranks.
  void ringReduceScatter(const std::vector<char*>& seg, const std::vector<std::size_t>& len,
                         DType wt, ReduceOp reduce) {
    const int n = size_;
    const std::size_t es = elementSize(wt);
    const int next = (rank_ + 1) % n, prev = (rank_ - 1 + n) % n;
    auto mod = [&](int v) { return ((v % n) + n) % n; };
    MPI_Request reqs[2];
    for (int s = 0; s < n - 1; ++s) {
      const int si = mod(rank_ - s - 1), ri = mod(rank_ - s - 2);
      COHORT_MPI_CHECK(MPI_Irecv(scratch_.data(), static_cast<int>(len[ri] * es), MPI_BYTE, prev,
                                 kDataTag, data_, &reqs[0]));
      COHORT_MPI_CHECK(MPI_Isend(seg[si], static_cast<int>(len[si] * es), MPI_BYTE, next,
                                 kDataTag, data_, &reqs[1]));
      waitAll(reqs, 2);
      detail::reduceInto(seg[ri], scratch_.data(), len[ri], wt, reduce);
    }
  }

  // Rank r's segment r goes to every rank.
  void ringAllGather(const std::vector<char*>& seg, const std::vector<std::size_t>& len,
                     std::size_t es) {
    const int n = size_;
    const int next = (rank_ + 1) % n, prev = (rank_ - 1 + n) % n;
    auto mod = [&](int v) { return ((v % n) + n) % n; };
    MPI_Request reqs[2];
    for (int s = 0; s < n - 1; ++s) {
      const int si = mod(rank_ - s), ri = mod(rank_ - s - 1);
      COHORT_MPI_CHECK(MPI_Irecv(seg[ri], static_cast<int>(len[ri] * es), MPI_BYTE, prev,
                                 kDataTag, data_, &reqs[0]));
      COHORT_MPI_CHECK(MPI_Isend(seg[si], static_cast<int>(len[si] * es), MPI_BYTE, next,
                                 kDataTag, data_, &reqs[1]));
      waitAll(reqs, 2);
    }
  }

  // MPI counts are ints: large buffers go in pieces of a contiguous element type.
  void runBroadcast(const Op& op) {
    if (size_ == 1 || op.count == 0) return;
    const std::size_t es = elementSize(op.dtype);
    const std::size_t piece = static_cast<std::size_t>(1) << 30;  // bytes
    for (std::size_t off = 0; off < op.count * es; off += piece) {
      const std::size_t bytes = std::min(piece, op.count * es - off);
      MPI_Request req;
      COHORT_MPI_CHECK(MPI_Ibcast(static_cast<char*>(op.buf) + off, static_cast<int>(bytes),
                                  MPI_BYTE, op.root, data_, &req));
      waitAll(&req, 1);
    }
  }

  void runGather(const Op& op) {
    const std::size_t es = elementSize(op.dtype);
    if (size_ == 1) {
      if (op.count > 0 && op.buf != nullptr) std::memmove(op.buf, op.in, op.count * es);
      return;
    }
    MPI_Datatype elem;
    COHORT_MPI_CHECK(MPI_Type_contiguous(static_cast<int>(es), MPI_BYTE, &elem));
    COHORT_MPI_CHECK(MPI_Type_commit(&elem));
    std::vector<int> counts(size_), displs(size_);
    int d = 0;
    for (int r = 0; r < size_; ++r) {
      counts[r] = static_cast<int>(op.counts[r]);
      displs[r] = d;
      d += counts[r];
    }
    // MPI rejects a null buffer even for zero elements on some paths.
    static char dummy = 0;
    const void* in = op.in != nullptr ? op.in : &dummy;
    void* out = op.buf != nullptr ? op.buf : &dummy;
    MPI_Request req;
    try {
      if (op.kind == Kind::kAllGatherV) {
        COHORT_MPI_CHECK(MPI_Iallgatherv(in, counts[rank_], elem, out, counts.data(),
                                         displs.data(), elem, data_, &req));
      } else {
        COHORT_MPI_CHECK(MPI_Igatherv(in, counts[rank_], elem, out, counts.data(), displs.data(),
                                      elem, op.root, data_, &req));
      }
      waitAll(&req, 1);
    } catch (...) {
      MPI_Type_free(&elem);
      throw;
    }
    MPI_Type_free(&elem);
  }

  // Polls requests to completion. Spins briefly (the peer is usually right there), then
  // yields (compute threads sharing the core run; an idle core returns at once), then
  // sleeps, so a long wait does not starve compute threads. Every few polls it answers
  // control messages and checks the deadline and abort notices.
  void waitAll(MPI_Request* reqs, int n) {
    std::uint64_t polls = 0;
    const auto start = Clock::now();
    Clock::duration waited{};
    while (true) {
      int flag = 0;
      COHORT_MPI_CHECK(MPI_Testall(n, reqs, &flag, MPI_STATUSES_IGNORE));
      if (flag) return;
      ++polls;
      if (polls % 64 == 0) {
        serviceControl(nullptr);
        handleAbortRequest();
        if (!peerFailure_.empty()) {
          brokenReason_ = peerFailure_;
          throw DistError(current_->describe() + ": " + peerFailure_);
        }
        const auto now = Clock::now();
        if (now > deadline_) throw TimeoutError(diagnoseTimeout(*current_));
        waited = now - start;
      }
      if (callerRunning_) {
        if (waited > kCallerSpinTime) std::this_thread::sleep_for(std::chrono::microseconds(200));
      } else if (waited > kSpinTime) {
        // Sleeping hands the core to compute threads (GradientSync overlaps with backward).
        std::this_thread::sleep_for(std::chrono::microseconds(waited > kLongWait ? 200 : 20));
      } else if (polls > kSpinPolls) {
        sched_yield();
      }
    }
  }

  // ---- control channel: queries, replies and abort notices ----

  struct PendingSend {
    MPI_Request req;
    std::vector<char> payload;
  };

  void postControl(int dest, int tag, std::vector<char> payload) {
    sends_.push_back(PendingSend{MPI_REQUEST_NULL, std::move(payload)});
    PendingSend& p = sends_.back();
    if (MPI_Isend(p.payload.data(), static_cast<int>(p.payload.size()), MPI_BYTE, dest, tag,
                  ctrl_, &p.req) != MPI_SUCCESS) {
      sends_.pop_back();  // a dead peer: nothing to deliver
    }
  }

  void pruneSends() {
    for (auto it = sends_.begin(); it != sends_.end();) {
      int flag = 0;
      if (MPI_Test(&it->req, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS || flag) {
        it = sends_.erase(it);
      } else {
        ++it;
      }
    }
  }

  // Answers queued control messages. Replies are recorded in `replies` when given.
  void serviceControl(std::map<int, std::array<std::int64_t, 3>>* replies) {
    pruneSends();
    while (true) {
      int flag = 0;
      MPI_Status st;
      if (MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, ctrl_, &flag, &st) != MPI_SUCCESS || !flag) {
        return;
      }
      int bytes = 0;
      MPI_Get_count(&st, MPI_BYTE, &bytes);
      std::vector<char> buf(static_cast<std::size_t>(std::max(bytes, 1)));
      COHORT_MPI_CHECK(MPI_Recv(buf.data(), bytes, MPI_BYTE, st.MPI_SOURCE, st.MPI_TAG, ctrl_,
                                MPI_STATUS_IGNORE));
      if (st.MPI_TAG == kQueryTag) {
        std::int64_t state[3] = {lastStarted_, running_ ? 1 : 0, nextSeqSnapshot()};
        std::vector<char> out(sizeof(state));
        std::memcpy(out.data(), state, sizeof(state));
        postControl(st.MPI_SOURCE, kReplyTag, std::move(out));
      } else if (st.MPI_TAG == kReplyTag && replies != nullptr &&
                 bytes == 3 * static_cast<int>(sizeof(std::int64_t))) {
        std::array<std::int64_t, 3> r;
        std::memcpy(r.data(), buf.data(), sizeof(r));
        (*replies)[st.MPI_SOURCE] = r;
      } else if (st.MPI_TAG == kAbortTag && peerFailure_.empty()) {
        peerFailure_ = "rank " + std::to_string(st.MPI_SOURCE) +
                       " failed: " + std::string(buf.data(), static_cast<std::size_t>(bytes));
      }
    }
  }

  std::int64_t nextSeqSnapshot() {
    std::lock_guard<std::mutex> lock(mu_);
    return nextSeq_;
  }

  void handleAbortRequest() {
    std::string reason;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (abortState_ != AbortState::kRequested) return;
      reason = abortReason_;
    }
    for (int p = 0; p < size_; ++p) {
      if (p != rank_) postControl(p, kAbortTag, std::vector<char>(reason.begin(), reason.end()));
    }
    // Give the notices a moment to leave (eager sends complete locally almost at once).
    const auto until = Clock::now() + std::chrono::milliseconds(200);
    while (!sends_.empty() && Clock::now() < until) pruneSends();
    brokenReason_ = "this rank aborted: " + reason;
    broken_ = true;
    {
      std::lock_guard<std::mutex> lock(mu_);
      abortState_ = AbortState::kSent;
    }
    cv_.notify_all();
  }

  // Asks every peer where it is and builds the error message of a timed-out collective.
  std::string diagnoseTimeout(const Op& op) {
    brokenReason_ = "the communicator is unusable after " + op.describe() + " timed out";
    std::map<int, std::array<std::int64_t, 3>> replies;
    for (int p = 0; p < size_; ++p) {
      if (p == rank_) continue;
      std::vector<char> q(sizeof(std::int64_t));
      std::memcpy(q.data(), &op.seq, sizeof(op.seq));
      postControl(p, kQueryTag, std::move(q));
    }
    const double grace = std::min(5.0, std::max(0.5, options_.timeoutSeconds / 2));
    const auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(grace));
    while (Clock::now() < until && static_cast<int>(replies.size()) < size_ - 1) {
      serviceControl(&replies);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    // A peer that started this collective arrived, even if it has timed out itself and is
    // idle again by the time it answers; one whose last collective is older did not.
    std::vector<std::string> missing;
    std::vector<int> arrived;
    for (int p = 0; p < size_; ++p) {
      if (p == rank_) continue;
      auto it = replies.find(p);
      if (it == replies.end()) {
        missing.push_back("rank " + std::to_string(p) + " (no answer: dead or stuck)");
      } else if (it->second[0] < op.seq) {
        const std::int64_t last = it->second[0];
        const bool busy = it->second[1] != 0;
        missing.push_back("rank " + std::to_string(p) + " (last collective #" +
                          std::to_string(last) + (busy ? ", still in it" : ", now idle") + ")");
      } else {
        arrived.push_back(p);
      }
    }
    std::ostringstream s;
    s << op.describe() << " timed out after " << options_.timeoutSeconds << " s on rank "
      << rank_ << " (COHORT_COLLECTIVE_TIMEOUT)";
    if (missing.empty()) {
      s << "; every peer reports it is in this collective (slow network or a stuck transfer)";
    } else {
      s << "; ranks that did not arrive: ";
      for (std::size_t i = 0; i < missing.size(); ++i) s << (i ? ", " : "") << missing[i];
    }
    if (!arrived.empty()) {
      s << "; arrived: ";
      for (std::size_t i = 0; i < arrived.size(); ++i) s << (i ? "," : "") << arrived[i];
    }
    return s.str();
  }

  const BackendOptions options_;
  MPI_Comm data_ = MPI_COMM_NULL;
  MPI_Comm ctrl_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;

  std::mutex mu_;  // guards queue_, nextSeq_, stop_, abort*, engineDone_
  std::condition_variable cv_;        // threads in wait() and abort() wait here
  std::condition_variable engineCv_;  // the engine thread waits here
  std::deque<Op> queue_;
  std::int64_t nextSeq_ = 0;
  bool stop_ = false;
  bool engineDone_ = false;
  bool runnerBusy_ = false;  // a thread is running ops or polling control
  AbortState abortState_ = AbortState::kNone;
  std::string abortReason_;

  // Engine-thread state.
  std::thread engine_;
  std::vector<char> scratch_;
  std::vector<float> widened_;
  std::deque<PendingSend> sends_;
  const Op* current_ = nullptr;
  bool callerRunning_ = false;  // the op runs on a thread blocked in wait(), not the engine
  std::int64_t lastStarted_ = -1;
  bool running_ = false;
  Clock::time_point deadline_;
  std::string peerFailure_;
  std::string brokenReason_;
  std::atomic<bool> broken_{false};
};

MpiWork::~MpiWork() { backend_->releaseToEngine(state_); }

void MpiWork::wait() {
  backend_->runQueuedUntil(state_);
  state_->callerRuns = false;  // done: nothing for the engine to take over
  std::lock_guard<std::mutex> lock(state_->mu);
  if (state_->error) std::rethrow_exception(state_->error);
}

}  // namespace

std::unique_ptr<Backend> makeMpiBackend(MPI_Comm parent, const BackendOptions& options) {
  return std::make_unique<MpiBackend>(parent, options);
}

}  // namespace cohort::dist
