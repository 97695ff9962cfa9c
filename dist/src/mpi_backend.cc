// The MPI network under the host backend (host_backend.h): the ring's Transport is
// Isend/Irecv of bytes on a private duplicate of the parent communicator, the control
// channel (queries, replies, abort notices) is a second duplicate probed with Iprobe, and
// broadcast, all_gather (v), gather (v), barrier and the argument check of three or more
// ranks use MPI's nonblocking collectives on a contiguous byte type. Every wait goes
// through the engine's WaitPolicy, so it keeps the collective's deadline.
#include "cohort/dist/mpi_backend.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <mutex>
#include <vector>

#include "cohort/dist/env.h"
#include "cohort/dist/error.h"
#include "cohort/dist/log.h"
#include "cohort/dist/runtime.h"
#include "host_backend.h"
#include "mpi_check.h"

namespace cohort::dist {

// The one place where the backend reads the environment.
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
  const std::int64_t crossHost = env::get(env::kAllreduceSliceBytesCrossHost);
  if (crossHost < 4096) {
    throw ConfigError(
        "environment variable COHORT_ALLREDUCE_SLICE_BYTES_CROSS_HOST must be >= 4096");
  }
  o.crossHostSliceBytes = static_cast<std::size_t>(crossHost);
  o.checkArguments = env::get(env::kCheckCollectives);
  return o;
}

namespace {

using detail::Kind;
using detail::Op;
using detail::WaitPolicy;

// Polls MPI requests to completion with `wait`'s policy and deadline.
void waitRequests(WaitPolicy& wait, MPI_Request* reqs, int n) {
  wait.waitUntil([&] {
    int flag = 0;
    COHORT_MPI_CHECK(MPI_Testall(n, reqs, &flag, MPI_STATUSES_IGNORE));
    return flag != 0;
  });
}

class MpiTransport final : public detail::Transport {
 public:
  MpiTransport(MPI_Comm comm, int rank, int size) : comm_(comm), rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void postSend(int peer, int tag, const void* data, std::size_t bytes) override {
    reqs_.push_back(MPI_REQUEST_NULL);
    COHORT_MPI_CHECK(MPI_Isend(data, static_cast<int>(bytes), MPI_BYTE, peer, tag, comm_,
                               &reqs_.back()));
  }

  void postSendJoined(int peer, int tag, const void* head, std::size_t headBytes,
                      const void* body, std::size_t bodyBytes) override {
    if (bodyBytes == 0) return postSend(peer, tag, head, headBytes);
    // Both pieces by absolute address (MPI_BOTTOM): one message, no staging copy.
    MPI_Aint where[2];
    COHORT_MPI_CHECK(MPI_Get_address(head, &where[0]));
    COHORT_MPI_CHECK(MPI_Get_address(body, &where[1]));
    const int lengths[2] = {static_cast<int>(headBytes), static_cast<int>(bodyBytes)};
    MPI_Datatype joined;
    COHORT_MPI_CHECK(MPI_Type_create_hindexed(2, lengths, where, MPI_BYTE, &joined));
    COHORT_MPI_CHECK(MPI_Type_commit(&joined));
    reqs_.push_back(MPI_REQUEST_NULL);
    const int rc = MPI_Isend(MPI_BOTTOM, 1, joined, peer, tag, comm_, &reqs_.back());
    MPI_Type_free(&joined);  // freed when the send no longer needs it
    if (rc != MPI_SUCCESS) detail::throwMpiError(rc, "MPI_Isend (joined)", __FILE__, __LINE__);
  }

  void postRecv(int peer, int tag, void* data, std::size_t bytes) override {
    reqs_.push_back(MPI_REQUEST_NULL);
    COHORT_MPI_CHECK(MPI_Irecv(data, static_cast<int>(bytes), MPI_BYTE, peer, tag, comm_,
                               &reqs_.back()));
  }

  bool testAll() override {
    int flag = 0;
    COHORT_MPI_CHECK(MPI_Testall(static_cast<int>(reqs_.size()), reqs_.data(), &flag,
                                 MPI_STATUSES_IGNORE));
    if (flag) reqs_.clear();
    return flag != 0;
  }

 private:
  MPI_Comm comm_;
  int rank_;
  int size_;
  std::vector<MPI_Request> reqs_;  // posted, not yet known complete
};

class MpiControl final : public detail::ControlChannel {
 public:
  explicit MpiControl(MPI_Comm comm) : comm_(comm) {}

  void post(int dest, int tag, std::vector<char> payload) override {
    sends_.push_back(PendingSend{MPI_REQUEST_NULL, std::move(payload)});
    PendingSend& p = sends_.back();
    if (MPI_Isend(p.payload.data(), static_cast<int>(p.payload.size()), MPI_BYTE, dest, tag,
                  comm_, &p.req) != MPI_SUCCESS) {
      sends_.pop_back();  // a dead peer: nothing to deliver
    }
  }

  bool sending() override {
    pruneSends();
    return !sends_.empty();
  }

  std::optional<detail::ControlMessage> receive() override {
    pruneSends();
    int flag = 0;
    MPI_Status st;
    if (MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm_, &flag, &st) != MPI_SUCCESS || !flag) {
      return std::nullopt;
    }
    int bytes = 0;
    MPI_Get_count(&st, MPI_BYTE, &bytes);
    std::vector<char> buf(static_cast<std::size_t>(std::max(bytes, 1)));
    COHORT_MPI_CHECK(MPI_Recv(buf.data(), bytes, MPI_BYTE, st.MPI_SOURCE, st.MPI_TAG, comm_,
                              MPI_STATUS_IGNORE));
    buf.resize(static_cast<std::size_t>(bytes));
    return detail::ControlMessage{st.MPI_SOURCE, st.MPI_TAG, std::move(buf)};
  }

 private:
  struct PendingSend {
    MPI_Request req;
    std::vector<char> payload;
  };

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

  MPI_Comm comm_;
  std::deque<PendingSend> sends_;
};

class MpiNetwork final : public detail::Network {
 public:
  MpiNetwork(MPI_Comm parent) {
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
    transport_ = std::make_unique<MpiTransport>(data_, rank_, size_);
    control_ = std::make_unique<MpiControl>(ctrl_);
  }

  detail::Transport& transport() override { return *transport_; }
  detail::ControlChannel& control() override { return *control_; }

  void runOther(const Op& op, WaitPolicy& wait) override {
    switch (op.kind) {
      case Kind::kBroadcast: return runBroadcast(op, wait);
      case Kind::kAllGatherV:
      case Kind::kGatherV: return runGather(op, wait);
      case Kind::kBarrier: {
        if (size_ == 1) return;
        MPI_Request req;
        COHORT_MPI_CHECK(MPI_Ibarrier(data_, &req));
        return waitRequests(wait, &req, 1);
      }
      default: throw DistError(std::string("mpi: no network collective for ") + op.describe());
    }
  }

  void maxReduce(detail::SignatureBuffer& v, WaitPolicy& wait) override {
    MPI_Request req;
    COHORT_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, v.data(), static_cast<int>(v.size()),
                                    MPI_INT64_T, MPI_MAX, data_, &req));
    waitRequests(wait, &req, 1);
  }

  void checkUsable(const char* what) override {
    if (!isInitialized()) {
      throw DistError(std::string("cohort::dist: ") + what +
                      " called before cohort::dist::init() (or after shutdown)");
    }
  }

  void close(bool broken) override {
    // A broken communicator may still have requests in flight; freeing it could block.
    if (!broken) {
      MPI_Comm_free(&data_);
      MPI_Comm_free(&ctrl_);
    }
  }

 private:
  // MPI counts are ints: large buffers go in pieces of a contiguous element type.
  void runBroadcast(const Op& op, WaitPolicy& wait) {
    if (size_ == 1 || op.count == 0) return;
    const std::size_t es = elementSize(op.dtype);
    const std::size_t piece = static_cast<std::size_t>(1) << 30;  // bytes
    for (std::size_t off = 0; off < op.count * es; off += piece) {
      const std::size_t bytes = std::min(piece, op.count * es - off);
      MPI_Request req;
      COHORT_MPI_CHECK(MPI_Ibcast(static_cast<char*>(op.buf) + off, static_cast<int>(bytes),
                                  MPI_BYTE, op.root, data_, &req));
      waitRequests(wait, &req, 1);
    }
  }

  void runGather(const Op& op, WaitPolicy& wait) {
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
      waitRequests(wait, &req, 1);
    } catch (...) {
      MPI_Type_free(&elem);
      throw;
    }
    MPI_Type_free(&elem);
  }

  MPI_Comm data_ = MPI_COMM_NULL;
  MPI_Comm ctrl_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  std::unique_ptr<MpiTransport> transport_;
  std::unique_ptr<MpiControl> control_;
};

}  // namespace

namespace {

// True when the ranks of `comm` are on more than one host. Collective over `comm`; every
// rank gets the same answer (with two hosts or more, no host holds the whole group).
bool spansHosts(MPI_Comm comm) {
  int size = 1;
  COHORT_MPI_CHECK(MPI_Comm_size(comm, &size));
  if (size == 1) return false;
  MPI_Comm local = MPI_COMM_NULL;
  COHORT_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local));
  int localSize = size;
  MPI_Comm_size(local, &localSize);
  MPI_Comm_free(&local);
  return localSize < size;
}

// The ranks must use the same slice size and argument check: both shape the messages a
// collective exchanges, so a difference would be a truncated message or a hang later.
// Collective over `comm`; every rank throws the same ConfigError.
void agreeOnProtocol(MPI_Comm comm, const BackendOptions& o, bool crossHost) {
  const std::int64_t slice = static_cast<std::int64_t>(o.sliceBytes);
  const std::int64_t check = o.checkArguments ? 1 : 0;
  std::int64_t v[4] = {slice, -slice, check, -check};
  COHORT_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, v, 4, MPI_INT64_T, MPI_MAX, comm));
  if (v[0] != -v[1]) {
    throw ConfigError(std::string("environment variable ") +
                      (crossHost ? "COHORT_ALLREDUCE_SLICE_BYTES_CROSS_HOST"
                                 : "COHORT_ALLREDUCE_SLICE_BYTES") +
                      " differs across ranks (from " + std::to_string(-v[1]) + " to " +
                      std::to_string(v[0]) + " bytes): set it to the same value on every rank");
  }
  if (v[2] != -v[3]) {
    throw ConfigError("environment variable COHORT_CHECK_COLLECTIVES is on for some ranks and "
                      "off for others: set it the same on every rank");
  }
}

}  // namespace

std::unique_ptr<Backend> makeMpiBackend(MPI_Comm parent, const BackendOptions& options) {
  auto network = std::make_unique<MpiNetwork>(parent);
  // Within a host a slice is sized for the cache; across hosts every slice costs a
  // rendezvous on the wire (measured over TCP between two hosts: 1 MiB slices reached 0.42 of
  // MPI_Allreduce from 4 MiB up, 8 MiB slices 0.86-0.91; docs/performance.md).
  BackendOptions o = options;
  const bool crossHost = spansHosts(parent);
  if (crossHost) {
    o.sliceBytes = options.crossHostSliceBytes;
    static std::once_flag said;  // several communicators per process: one line
    std::call_once(said, [&] {
      COHORT_LOG_INFO("all-reduce slices of {} bytes: the group spans hosts "
                      "(COHORT_ALLREDUCE_SLICE_BYTES_CROSS_HOST)", o.sliceBytes);
    });
  }
  if (network->transport().size() > 1) agreeOnProtocol(parent, o, crossHost);
  return detail::makeHostBackend(std::move(network), o, "mpi");
}

}  // namespace cohort::dist
