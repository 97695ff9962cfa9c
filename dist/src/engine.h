// The communication engine of the host backend: the queue of issued collectives, the
// background thread that runs them, and the wait policy every transfer of a collective
// polls with. It knows nothing of the network: it runs what it is given (a Runner) and,
// while idle, lets the control plane answer peers (an Idle callback).
//
// Why an engine thread: collectives become asynchronous (GradientSync overlaps them with
// backward), and every wait polls nonblocking transfers against a deadline, so a peer that
// never arrives turns into a TimeoutError instead of a hang. Private to cohort_dist.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "cohort/dist/backend.h"
#include "collective_check.h"
#include "work_state.h"

namespace cohort::dist::detail {

// One issued collective: its signature and borrowed buffers (backend.h states the rules).
struct Op : Signature {
  void* buf = nullptr;
  const void* in = nullptr;
  std::shared_ptr<WorkState> state;
};

// How a thread waits for transfers: spins for a while (the peer is usually right there),
// then yields (compute threads sharing the core run; an idle core returns at once), then
// sleeps, so a long wait does not starve compute threads. Every few polls it calls the
// checkpoint, which answers control messages and throws on a deadline or a peer's failure.
// Used by the one thread that runs the current op.
class WaitPolicy {
 public:
  explicit WaitPolicy(std::function<void()> checkpoint) : checkpoint_(std::move(checkpoint)) {}
  // Set per op: a thread blocked in wait() has nothing else to do, so it spins longer.
  void setCallerRunning(bool callerRunning) { callerRunning_ = callerRunning; }
  // Polls `done` until it returns true. Throws what the checkpoint throws.
  void waitUntil(const std::function<bool()>& done);

 private:
  std::function<void()> checkpoint_;
  bool callerRunning_ = false;
};

// The queue and its threads. Ops run one at a time, in issue order, on whichever thread
// holds the runner token: the engine thread, or a thread blocked in Work::wait() (a
// blocking call runs its op itself, which saves two thread hand-offs). Thread-safety:
// submit() from one thread at a time; everything else from any thread.
class Engine {
 public:
  // Runs one op; returns its error (never throws).
  using Runner = std::function<std::exception_ptr(Op&)>;
  // `solo`: a group of one rank (no peer can send anything: the engine sleeps until
  // notified, and ops run at once on the submitting thread). `idle` is called with the
  // runner token every few milliseconds while nothing runs (not when solo, unless woken).
  // Starts the engine thread; `run` and `idle` must stay callable until destruction.
  Engine(bool solo, Runner run, std::function<void()> idle);
  // Runs what is still queued, then stops and joins the engine thread.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues `op` (numbering it) and returns its Work. The Work must not outlive the engine.
  std::unique_ptr<Work> submit(Op op);
  // The sequence number the next submitted op will get.
  std::int64_t nextSeq();
  bool onEngineThread() const { return std::this_thread::get_id() == thread_.get_id(); }
  // Makes the engine thread run its idle callback soon (an abort request is waiting).
  void wake();

  // For the Work handles: run queued ops until `state` is done; hand an op its issuer
  // meant to run over to the engine.
  void runQueuedUntil(const std::shared_ptr<WorkState>& state);
  void releaseToEngine(const std::shared_ptr<WorkState>& state);

 private:
  void loop();
  void runFront(std::unique_lock<std::mutex>& lock);

  const bool solo_;
  const Runner run_;
  const std::function<void()> idle_;
  std::mutex mu_;                     // guards everything below
  std::condition_variable cv_;        // threads in wait() wait here
  std::condition_variable engineCv_;  // the engine thread waits here
  std::deque<Op> queue_;
  std::int64_t nextSeq_ = 0;
  bool stop_ = false;
  bool woken_ = false;
  bool runnerBusy_ = false;  // a thread is running ops or polling control
  std::thread thread_;       // last: starts after everything above is ready
};

}  // namespace cohort::dist::detail
