#include "cohort/trainer/program_exit.h"

#include "cohort/dist/error.h"
#include "cohort/dist/exit_order.h"
#include "fatal_line.h"

namespace cohort::trainer {

namespace {

// A ConfigError is printed by rank 0 alone, but mpirun ends the whole job at the first
// non-zero exit: a rank that exits first can take rank 0's message with it (seen when rank
// 0 took longer to unwind). So rank 0 tells the others once it has printed, and they wait
// for that. Only when `rank` is this process's rank in the Runtime's world.
void orderConfigErrorExit(int rank) noexcept {
  dist::ExitOrder* order = dist::worldExitOrder();
  if (order == nullptr || order->rank() != rank) return;
  if (rank == 0) {
    order->rootReported();
  } else {
    order->waitForRoot();
  }
}

}  // namespace

int exitCodeFor(const std::exception& e) noexcept {
  return dynamic_cast<const ConfigError*>(&e) != nullptr ? kConfigErrorExitCode : 1;
}

int reportFatalError(const std::exception& e, int rank, std::FILE* out) noexcept {
  const int code = exitCodeFor(e);
  if (code == kConfigErrorExitCode && rank != 0) {
    orderConfigErrorExit(rank);
    return code;
  }
  // One line with one write(), whatever the message holds; no allocation, nothing throws.
  char prefix[48] = "config error: ";
  if (code != kConfigErrorExitCode) {
    std::snprintf(prefix, sizeof(prefix), "error (rank %d): ", rank);
  }
  writeFatalLine(out, prefix, e.what());
  if (code == kConfigErrorExitCode) orderConfigErrorExit(rank);
  return code;
}

}  // namespace cohort::trainer
