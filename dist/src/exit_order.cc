#include "cohort/dist/exit_order.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include "cohort/dist/env.h"
#include "cohort/dist/error.h"
#include "cohort/dist/log.h"
#include "exit_order_internal.h"
#include "mpi_check.h"

namespace cohort::dist {

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kPrintedTag = 7411;
// Outlive every call: a notice may still be in flight after rootReported() returned, and a
// cancelled receive may still be written.
int gToken = 1;
int gReceived = 0;

std::unique_ptr<ExitOrder> gWorld;
MPI_Comm gWorldComm = MPI_COMM_NULL;
std::atomic<ExitOrder*> gWorldPtr{nullptr};

Clock::time_point after(double seconds) {
  return Clock::now() +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

void logFailure(const char* what, const std::exception& e) noexcept {
  try {
    COHORT_LOG_WARN("exit order: {}: {}", what, e.what());
  } catch (...) {
  }
}

}  // namespace

ExitOrderOptions ExitOrderOptions::fromEnv() {
  ExitOrderOptions o;
  o.waitSeconds = env::get(env::kExitOrderTimeout);
  if (!(o.waitSeconds >= 0)) {
    throw ConfigError("environment variable COHORT_EXIT_ORDER_TIMEOUT must be >= 0 seconds");
  }
  o.sendSeconds = std::min(1.0, o.waitSeconds);
  return o;
}

ExitOrder::ExitOrder(MPI_Comm comm, ExitOrderOptions options) : comm_(comm), options_(options) {
  COHORT_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  COHORT_MPI_CHECK(MPI_Comm_size(comm_, &size_));
}

bool ExitOrder::rootReported() noexcept {
  if (size_ < 2 || rank_ != 0) return true;
  const auto until = after(options_.sendSeconds);
  bool all = true;
  try {
    for (int r = 1; r < size_; ++r) {
      MPI_Request req = MPI_REQUEST_NULL;
      COHORT_MPI_CHECK(MPI_Isend(&gToken, 1, MPI_INT, r, kPrintedTag, comm_, &req));
      int done = 0;
      while (!done && Clock::now() < until) {
        COHORT_MPI_CHECK(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
      }
      if (!done) {
        all = false;
        COHORT_MPI_CHECK(MPI_Request_free(&req));
      }
    }
  } catch (const std::exception& e) {
    logFailure("telling the other ranks", e);
    return false;
  }
  return all;
}

bool ExitOrder::waitForRoot() noexcept {
  if (size_ < 2 || rank_ == 0) return true;
  const auto until = after(options_.waitSeconds);
  try {
    MPI_Request req = MPI_REQUEST_NULL;
    COHORT_MPI_CHECK(MPI_Irecv(&gReceived, 1, MPI_INT, 0, kPrintedTag, comm_, &req));
    int done = 0;
    for (;;) {
      COHORT_MPI_CHECK(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
      if (done || Clock::now() >= until) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (!done) {
      COHORT_MPI_CHECK(MPI_Cancel(&req));
      COHORT_MPI_CHECK(MPI_Request_free(&req));
    }
    return done != 0;
  } catch (const std::exception& e) {
    logFailure("waiting for rank 0", e);
    return false;
  }
}

ExitOrder* worldExitOrder() { return gWorldPtr.load(); }

namespace detail {

void openWorldExitOrder() {
  const ExitOrderOptions options = ExitOrderOptions::fromEnv();
  COHORT_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &gWorldComm));
  gWorld = std::make_unique<ExitOrder>(gWorldComm, options);
  gWorldPtr.store(gWorld.get());
}

void closeWorldExitOrder(bool freeComm) {
  gWorldPtr.store(nullptr);
  gWorld.reset();
  if (freeComm && gWorldComm != MPI_COMM_NULL) MPI_Comm_free(&gWorldComm);
  gWorldComm = MPI_COMM_NULL;
}

}  // namespace detail

}  // namespace cohort::dist
