// Completion state shared between a backend's engine and the Work handles it returns.
#pragma once

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

  void complete(std::exception_ptr e) {
    {
      std::lock_guard<std::mutex> lock(mu);
      done = true;
      error = std::move(e);
    }
    cv.notify_all();
  }
};

// Work over a WorkState; the engine guarantees every op completes (success, error, or its
// own timeout), so wait() needs no second deadline.
class StateWork : public Work {
 public:
  explicit StateWork(std::shared_ptr<WorkState> s) : state_(std::move(s)) {}
  void wait() override {
    std::unique_lock<std::mutex> lock(state_->mu);
    state_->cv.wait(lock, [&] { return state_->done; });
    if (state_->error) std::rethrow_exception(state_->error);
  }
  bool isCompleted() override {
    std::lock_guard<std::mutex> lock(state_->mu);
    return state_->done;
  }

 private:
  std::shared_ptr<WorkState> state_;
};

// Already-finished work (world size 1, empty buffers).
class DoneWork : public Work {
 public:
  void wait() override {}
  bool isCompleted() override { return true; }
};

}  // namespace cohort::dist::detail
