#include "startup_signals.h"

#include <initializer_list>

namespace cohort::launcher {

namespace {

sigset_t gOriginal;
bool gSaved = false;

// Runs from .preinit_array: before any shared library's initialiser and before main().
void blockStopSignalsAtStartup(int, char**, char**) {
  sigset_t stop;
  sigemptyset(&stop);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) sigaddset(&stop, sig);
  gSaved = sigprocmask(SIG_BLOCK, &stop, &gOriginal) == 0;
}

}  // namespace

// used: the linker must keep it although nothing refers to it by name.
__attribute__((section(".preinit_array"),
               used)) void (*const kBlockStopSignalsAtStartup)(int, char**,
                                                               char**) = blockStopSignalsAtStartup;

const sigset_t& startupOriginalMask() {
  if (!gSaved) {  // the hook did not run (e.g. linked into a test): what we have now
    sigprocmask(SIG_BLOCK, nullptr, &gOriginal);
    gSaved = true;
  }
  return gOriginal;
}

void settleStartupMask(const sigset_t& keep) {
  sigset_t mask = startupOriginalMask();
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sigismember(&keep, sig) == 1) sigaddset(&mask, sig);
  }
  sigprocmask(SIG_SETMASK, &mask, nullptr);
}

void restoreStartupMask() { sigprocmask(SIG_SETMASK, &startupOriginalMask(), nullptr); }

}  // namespace cohort::launcher
