// Exit ordering after an error every rank has (a bad configuration): the group's root
// prints it, and the other ranks wait until it has, so that mpirun, which ends the whole
// job at the first non-zero exit, does not take the root's message with it when another
// rank happens to exit first. Point-to-point messages with deadlines: a root that is stuck
// or gone costs the others at most their wait, never a hang.
#pragma once

#include <mpi.h>

namespace cohort::dist {

struct ExitOrderOptions {
  // How long a non-root rank waits for the root's "printed" notice (COHORT_EXIT_ORDER_TIMEOUT).
  double waitSeconds = 5.0;
  // How long the root waits for its notices to leave (min(1 s, waitSeconds) from fromEnv()).
  double sendSeconds = 1.0;
  // The defaults above overridden by the environment; ConfigError for a bad value.
  static ExitOrderOptions fromEnv();
};

// Borrows `comm` (it must outlive this object) and uses one reserved tag on it, so the
// communicator should be a private one (the Runtime keeps a duplicate of the world for its
// own ExitOrder, worldExitOrder()). Not collective: the root calls rootReported(), every
// other rank waitForRoot(); neither blocks past its deadline. MPI calls are checked; a
// failure is logged once and ends the wait (the caller is exiting anyway), so both are
// noexcept. Thread-safety: one thread at a time.
class ExitOrder {
 public:
  ExitOrder(MPI_Comm comm, ExitOrderOptions options);
  int rank() const { return rank_; }
  int size() const { return size_; }

  // Root (rank 0 of comm) after it printed: tells every other rank. Returns true when every
  // notice left within sendSeconds.
  bool rootReported() noexcept;
  // A non-root rank: waits for the root's notice, at most waitSeconds. True when it came.
  bool waitForRoot() noexcept;

 private:
  MPI_Comm comm_;
  ExitOrderOptions options_;
  int rank_ = 0, size_ = 1;
};

// The exit order of the process's Runtime, over its private duplicate of MPI_COMM_WORLD;
// nullptr before dist::init() and after the Runtime is gone (a world of one: nothing to
// order, but the object exists).
ExitOrder* worldExitOrder();

}  // namespace cohort::dist
