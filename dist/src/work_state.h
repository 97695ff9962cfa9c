// Completion state shared between a backend's engine and the Work handles it returns.
#pragma once

#include <atomic>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>

#include "cohort/dist/backend.h"

namespace cohort::dist::detail {

struct WorkState {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::exception_ptr error;
  // The issuing thread waits for this collective at once and runs it itself: the engine
  // leaves it alone (no thread hand-off before the first byte moves, no wake-up after).
  // Cleared when the Work is destroyed, so an unwaited collective still runs.
  std::atomic<bool> callerRuns{false};

  void complete(std::exception_ptr e) {
    {
      std::lock_guard<std::mutex> lock(mu);
      done = true;
      error = std::move(e);
    }
    cv.notify_all();
  }
};

// Marks the collectives issued by this thread inside the scope as "the caller waits for it
// right away" (the Communicator's blocking calls). A backend reads it with callerWaits().
class CallerWaitsScope {
 public:
  CallerWaitsScope() { flag() = true; }
  ~CallerWaitsScope() { flag() = false; }
  CallerWaitsScope(const CallerWaitsScope&) = delete;
  CallerWaitsScope& operator=(const CallerWaitsScope&) = delete;
  static bool& flag() {
    thread_local bool active = false;
    return active;
  }
};

// True when the current thread issues a collective inside a CallerWaitsScope.
inline bool callerWaits() { return CallerWaitsScope::flag(); }

}  // namespace cohort::dist::detail
