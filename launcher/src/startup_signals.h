#pragma once
// Stop signals from the first instruction of `cohort`. A scheduler may signal the launcher
// (or a rank's wrapper) at any moment, also while the dynamic loader and the static
// initialisers of linked libraries still run, long before main(). A hook in the
// executable's .preinit_array, which the loader runs before any library initialiser,
// blocks the stop signals at once and remembers the mask the process was started with;
// each command then settles the mask it needs (run and _rank-exec keep the signals
// blocked and take them with sigtimedwait; every other command restores the original mask,
// so a signal that arrived meanwhile acts as it would have). Single-threaded use only.

#include <signal.h>

namespace cohort::launcher {

// The signal mask the process had before the startup hook blocked the stop signals.
const sigset_t& startupOriginalMask();

// Sets the mask to the original mask plus KEEP (atomically: no stop signal slips through
// in between).
void settleStartupMask(const sigset_t& keep);

// Restores the original mask: pending stop signals are delivered now.
void restoreStartupMask();

}  // namespace cohort::launcher
