#include "cohort/trainer/preemption.h"

#include <pthread.h>
#include <signal.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <iterator>
#include <map>

#include "cohort/dist/error.h"

namespace cohort::trainer {

namespace {

std::atomic<int> gPhase{0};
std::atomic<int> gSignal{0};
std::atomic<long long> gFirstMonoNs{0};
std::atomic<long long> gFirstWallNs{0};
std::atomic<int> gPhaseAtSignal{0};
std::atomic<bool> gInstalled{false};
std::atomic<bool> gEarly{false};
struct sigaction gPrevious[NSIG];
struct sigaction gEarlyPrevious[NSIG];
constexpr int kEarlySignals[] = {SIGTERM, SIGUSR1};

static_assert(std::atomic<int>::is_always_lock_free && std::atomic<long long>::is_always_lock_free,
              "the signal handler needs lock-free atomics");

long long nowNs(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);  // async-signal-safe
  return static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

void record(int sig) {
  int expected = 0;
  if (gSignal.compare_exchange_strong(expected, sig)) {
    gFirstMonoNs.store(nowNs(CLOCK_MONOTONIC));
    gFirstWallNs.store(nowNs(CLOCK_REALTIME));
    gPhaseAtSignal.store(gPhase.load());
  }
}

extern "C" void onSignal(int sig) { record(sig); }

// `cohort run`'s wrapper starts the program with SIGTERM/SIGUSR1 blocked, so that one sent
// while the program still loads stays pending; with the handlers in place they are
// unblocked and a pending one is recorded now. (Blocked signals are per thread: threads
// created before this keep them blocked, and the kernel delivers to this one.)
// No allocation: this may run before any library is initialised.
void unblock(const int* first, const int* last) {
  sigset_t set;
  sigemptyset(&set);
  for (const int* s = first; s != last; ++s) sigaddset(&set, *s);
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

const std::map<std::string, int>& signalTable() {
  static const std::map<std::string, int> t{
      {"TERM", SIGTERM}, {"INT", SIGINT}, {"HUP", SIGHUP}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2}};
  return t;
}

}  // namespace

const char* phaseName(TrainingPhase p) {
  switch (p) {
    case TrainingPhase::kIdle:
      return "idle";
    case TrainingPhase::kData:
      return "data loading";
    case TrainingPhase::kCompute:
      return "forward/backward/update";
    case TrainingPhase::kEval:
      return "evaluation";
    case TrainingPhase::kSave:
      return "checkpoint save";
  }
  return "?";
}

void setTrainingPhase(TrainingPhase phase) { gPhase.store(static_cast<int>(phase)); }

int signalFromName(const std::string& name) {
  std::string n;
  for (char c : name) n += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (n.rfind("SIG", 0) == 0) n = n.substr(3);
  auto it = signalTable().find(n);
  if (it == signalTable().end()) {
    throw ConfigError("jit_checkpoint_signals: unknown signal \"" + name +
                      "\" (allowed: SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2)");
  }
  return it->second;
}

std::string signalName(int sig) {
  for (const auto& [name, num] : signalTable()) {
    if (num == sig) return "SIG" + name;
  }
  return "signal " + std::to_string(sig);
}

PreemptionWatcher::PreemptionWatcher(const std::vector<int>& signals, double killWaitSeconds)
    : signals_(signals), killWait_(killWaitSeconds) {
  if (gInstalled.exchange(true)) throw ConfigError("a PreemptionWatcher is already installed");
  // A signal caught by the early handlers is a request too: keep it.
  if (!gEarly.load()) gSignal.store(0);
  struct sigaction sa {};
  sa.sa_handler = onSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // blocking calls in other threads resume instead of failing
  for (int s : signals_) sigaction(s, &sa, &gPrevious[s]);
  unblock(signals_.data(), signals_.data() + signals_.size());
}

PreemptionWatcher::~PreemptionWatcher() {
  for (int s : signals_) sigaction(s, &gPrevious[s], nullptr);
  gSignal.store(0);  // a request belongs to the watcher that saw it
  gInstalled.store(false);
}

bool PreemptionWatcher::signalled() const { return gSignal.load() != 0; }

bool PreemptionWatcher::stopRequested() const {
  if (!signalled()) return false;
  return static_cast<double>(nowNs(CLOCK_MONOTONIC) - gFirstMonoNs.load()) * 1e-9 >= killWait_;
}

int PreemptionWatcher::signalNumber() const { return gSignal.load(); }

double PreemptionWatcher::signalWallTime() const {
  return static_cast<double>(gFirstWallNs.load()) * 1e-9;
}

TrainingPhase PreemptionWatcher::phaseAtSignal() const {
  return static_cast<TrainingPhase>(gPhaseAtSignal.load());
}

void PreemptionWatcher::simulateSignal(int sig) { record(sig); }

void installEarlyPreemptionHandlers() {
  if (gEarly.exchange(true)) return;
  if (!gInstalled.load()) gSignal.store(0);
  struct sigaction sa {};
  sa.sa_handler = onSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int s : kEarlySignals) sigaction(s, &sa, &gEarlyPrevious[s]);
  unblock(std::begin(kEarlySignals), std::end(kEarlySignals));
}

void releaseEarlyPreemptionHandlers() {
  if (!gEarly.exchange(false)) return;
  for (int s : kEarlySignals) sigaction(s, &gEarlyPrevious[s], nullptr);
  const int pending = gSignal.exchange(0);
  if (pending != 0) ::raise(pending);  // what would have happened without the early handler
}

}  // namespace cohort::trainer
