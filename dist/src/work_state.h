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

}  // namespace cohort::dist::detail
