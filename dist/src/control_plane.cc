#include "control_plane.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <sstream>
#include <thread>

#include "cohort/dist/error.h"
#include "cohort/dist/log.h"

namespace cohort::dist::detail {

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kQueryTag = 21;
constexpr int kReplyTag = 22;
constexpr int kAbortTag = 23;

}  // namespace

void checkRoot(int root, int size, const char* what) {
  if (root < 0 || root >= size) {
    throw DistError(std::string(what) + ": root " + std::to_string(root) +
                    " is not a rank of this group (size " + std::to_string(size) + ")");
  }
}

void checkReduction(Kind kind, DType dtype, ReduceOp op) {
  if (op == ReduceOp::kAvg && !isFloating(dtype)) {
    throw DistError(std::string(kindName(kind)) + ": AVG needs a floating dtype, got " +
                    toString(dtype));
  }
}

std::size_t checkGatherCounts(Kind kind, const std::vector<std::size_t>& counts, int size) {
  if (static_cast<int>(counts.size()) != size) {
    throw DistError(std::string(kindName(kind)) + ": counts has " +
                    std::to_string(counts.size()) + " entries, group size is " +
                    std::to_string(size));
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
  return total;
}

ControlPlane::ControlPlane(ControlChannel& channel, int rank, int size, double timeoutSeconds,
                           std::function<std::int64_t()> nextSeq)
    : channel_(channel),
      rank_(rank),
      size_(size),
      timeoutSeconds_(timeoutSeconds),
      nextSeq_(std::move(nextSeq)) {}

void ControlPlane::begin(const Signature& op) {
  handleAbortRequest();
  if (!brokenReason_.empty()) throw DistError(op.describe() + ": " + brokenReason_);
  current_ = &op;
  lastStarted_ = op.seq;
  running_ = true;
  const auto now = Clock::now();
  deadline_ = now + std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double>(timeoutSeconds_));
  // The query window: up to 5 s (half the timeout when that is shorter, at least 0.5 s).
  const double window = std::min(5.0, std::max(0.5, timeoutSeconds_ / 2));
  queryAt_ = deadline_ - std::chrono::duration_cast<Clock::duration>(
                             std::chrono::duration<double>(window));
  queried_ = false;
  replies_.clear();
}

void ControlPlane::end() {
  running_ = false;
  current_ = nullptr;
}

void ControlPlane::fail() {
  if (brokenReason_.empty()) brokenReason_ = "the communicator is unusable after an earlier error";
  broken_ = true;
}

void ControlPlane::checkpoint() {
  service();
  handleAbortRequest();
  if (!peerFailure_.empty()) {
    brokenReason_ = peerFailure_;
    throw DistError(current_->describe() + ": " + peerFailure_);
  }
  const auto now = Clock::now();
  if (now >= queryAt_ && (!queried_ || now - lastQuery_ >= std::chrono::seconds(1))) {
    queryPeers(*current_);
    queried_ = true;
    lastQuery_ = now;
  }
  if (now > deadline_) throw TimeoutError(diagnoseTimeout(*current_));
}

void ControlPlane::queryPeers(const Signature& op) {
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    auto it = replies_.find(p);
    if (it != replies_.end() && it->second[0] >= op.seq) continue;  // it has arrived
    std::vector<char> q(sizeof(std::int64_t));
    std::memcpy(q.data(), &op.seq, sizeof(op.seq));
    channel_.post(p, kQueryTag, std::move(q));
  }
}

void ControlPlane::idle() {
  try {
    service();
    handleAbortRequest();
  } catch (const std::exception& e) {
    COHORT_LOG_WARN("communication engine: {}", e.what());
  }
}

void ControlPlane::requestAbort(const std::string& reason) {
  std::lock_guard<std::mutex> lock(abortMu_);
  if (abortState_ == AbortState::kNone) {
    abortReason_ = reason;
    abortState_ = AbortState::kRequested;
  }
}

void ControlPlane::awaitAbortSent(std::chrono::milliseconds limit) {
  std::unique_lock<std::mutex> lock(abortMu_);
  abortCv_.wait_for(lock, limit, [&] { return abortState_ == AbortState::kSent; });
}

// Answers queued control messages. A reply (it names the op it was asked about) is kept
// when it is about the op running now; a late one about an earlier op is dropped.
void ControlPlane::service() {
  while (auto m = channel_.receive()) {
    if (m->tag == kQueryTag) {
      std::int64_t asked = -1;
      if (m->payload.size() == sizeof(asked)) std::memcpy(&asked, m->payload.data(), sizeof(asked));
      std::int64_t state[4] = {asked, lastStarted_, running_ ? 1 : 0, nextSeq_()};
      std::vector<char> out(sizeof(state));
      std::memcpy(out.data(), state, sizeof(state));
      channel_.post(m->source, kReplyTag, std::move(out));
    } else if (m->tag == kReplyTag && m->payload.size() == 4 * sizeof(std::int64_t)) {
      std::int64_t r[4];
      std::memcpy(r, m->payload.data(), sizeof(r));
      if (running_ && current_ != nullptr && r[0] == current_->seq) {
        replies_[m->source] = {r[1], r[2], r[3]};
      }
    } else if (m->tag == kAbortTag && peerFailure_.empty()) {
      peerFailure_ = "rank " + std::to_string(m->source) +
                     " failed: " + std::string(m->payload.begin(), m->payload.end());
    }
  }
}

void ControlPlane::handleAbortRequest() {
  std::string reason;
  {
    std::lock_guard<std::mutex> lock(abortMu_);
    if (abortState_ != AbortState::kRequested) return;
    reason = abortReason_;
  }
  for (int p = 0; p < size_; ++p) {
    if (p != rank_) channel_.post(p, kAbortTag, std::vector<char>(reason.begin(), reason.end()));
  }
  // Give the notices a moment to leave (eager sends complete locally almost at once).
  const auto until = Clock::now() + std::chrono::milliseconds(200);
  while (channel_.sending() && Clock::now() < until) {
  }
  brokenReason_ = "this rank aborted: " + reason;
  broken_ = true;
  {
    std::lock_guard<std::mutex> lock(abortMu_);
    abortState_ = AbortState::kSent;
  }
  abortCv_.notify_all();
}

// Builds the error message of a timed-out collective from the peers' answers to the
// queries sent during the last part of the timeout (checkpoint()): the error comes at the
// deadline. A peer asked too late to answer in time (a wait that began near its deadline)
// gets a short last chance.
std::string ControlPlane::diagnoseTimeout(const Signature& op) {
  const auto lastChance = std::min(lastQuery_ + std::chrono::milliseconds(200),
                                   Clock::now() + std::chrono::milliseconds(200));
  while (Clock::now() < lastChance && static_cast<int>(replies_.size()) < size_ - 1) {
    service();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  service();
  brokenReason_ = "the communicator is unusable after " + op.describe() + " timed out";
  const Replies replies = replies_;
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
  s << op.describe() << " timed out after " << timeoutSeconds_ << " s on rank " << rank_
    << " (COHORT_COLLECTIVE_TIMEOUT)";
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

}  // namespace cohort::dist::detail
