// The control plane of the host backend: the argument checks a collective passes before it
// is queued (root in range, AVG on a floating dtype, gather counts), the per-op state peers
// may ask about, the deadline, abort notices, and the diagnosis of a timed-out collective,
// which asks every peer over the ControlChannel where it is and names the ranks that did
// not arrive. Network-free: it talks through a ControlChannel. Private to cohort_dist.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "collective_check.h"
#include "transport.h"

namespace cohort::dist::detail {

// Local argument checks, before an op is queued. Each throws DistError naming the problem.
void checkRoot(int root, int size, const char* what);
void checkReduction(Kind kind, DType dtype, ReduceOp op);
// Returns the total element count of a gather/all-gather with per-rank `counts`.
std::size_t checkGatherCounts(Kind kind, const std::vector<std::size_t>& counts, int size);

// Owned by a backend, beside its engine. Methods marked "runner" are called only by the
// thread holding the engine's runner token (one at a time); the others from any thread.
class ControlPlane {
 public:
  // `channel` is borrowed and must outlive this object. `nextSeq` gives the sequence number
  // of the next op to be issued (a peer's query reports it).
  ControlPlane(ControlChannel& channel, int rank, int size, double timeoutSeconds,
               std::function<std::int64_t()> nextSeq);

  // Runner: sends a requested abort, throws DistError "<op>: <reason>" when the group is
  // already broken, else records `op` as running (peers' queries see it) and starts its
  // deadline. `op` must stay alive until end().
  void begin(const Signature& op);
  void end();
  // Runner: the current op failed; the group is unusable from now on.
  void fail();
  // Runner, every few polls of a wait: answers peers, sends a requested abort, throws
  // DistError "<op>: rank r failed: <reason>" on a peer's abort notice and TimeoutError
  // (naming the op and the missing ranks) once the deadline passed.
  void checkpoint();
  // Runner, while no op runs: answers peers and sends a requested abort. Never throws.
  void idle();
  // True once an error or an abort broke the group (then the network must not be freed).
  bool broken() const { return broken_; }

  // Any thread: asks the runner to tell every peer that this rank failed with `reason`.
  void requestAbort(const std::string& reason);
  // Any thread: waits at most `limit` for the runner to have sent the abort notices.
  void awaitAbortSent(std::chrono::milliseconds limit);

 private:
  // A peer's answer about the current op: its last started op, whether it is in one, and
  // its next sequence number.
  using Replies = std::map<int, std::array<std::int64_t, 3>>;
  enum class AbortState { kNone, kRequested, kSent };

  // Answers queued control messages; keeps replies about the current op in replies_.
  void service();
  void handleAbortRequest();
  // Asks the peers that have not reported arriving at `op` where they are.
  void queryPeers(const Signature& op);
  std::string diagnoseTimeout(const Signature& op);

  ControlChannel& channel_;
  const int rank_;
  const int size_;
  const double timeoutSeconds_;
  const std::function<std::int64_t()> nextSeq_;

  // Runner state.
  const Signature* current_ = nullptr;
  std::int64_t lastStarted_ = -1;
  bool running_ = false;
  std::chrono::steady_clock::time_point deadline_;
  // The peers are asked where they are from queryAt_ on (the last part of the timeout,
  // again every second), so that the TimeoutError, with their answers, comes at the
  // deadline and not a query round after it.
  std::chrono::steady_clock::time_point queryAt_;
  std::chrono::steady_clock::time_point lastQuery_;
  bool queried_ = false;
  Replies replies_;
  std::string peerFailure_;
  std::string brokenReason_;
  std::atomic<bool> broken_{false};

  std::mutex abortMu_;  // guards the abort request
  std::condition_variable abortCv_;
  AbortState abortState_ = AbortState::kNone;
  std::string abortReason_;
};

}  // namespace cohort::dist::detail
