#include "engine.h"

#include <sched.h>

namespace cohort::dist::detail {

namespace {

using Clock = std::chrono::steady_clock;

// A wait spins for kSpinPolls polls, then yields the core between polls until kSpinTime,
// then sleeps between polls (longer after kLongWait). Slice exchanges take tens to hundreds
// of microseconds, and a peer that is briefly descheduled comes back within a few
// milliseconds: sleeping any earlier costs a timer tick (~60 us) per wake-up, which cost up
// to half the bandwidth of 1-16 MiB all-reduces on a loaded machine.
constexpr std::uint64_t kSpinPolls = 2000;
constexpr auto kSpinTime = std::chrono::milliseconds(2);
constexpr auto kLongWait = std::chrono::milliseconds(20);
// A thread blocked in wait() has nothing else to do: it spins (as MPI_Allreduce does) for up
// to kCallerSpinTime before it sleeps. Yielding instead hands a contended core to another
// process for a whole time slice (~3 ms) per message, which made a 1 MiB all-reduce ~20x
// slower than MPI's next to one CPU-bound process per core.
constexpr auto kCallerSpinTime = std::chrono::milliseconds(50);

bool isDone(WorkState& st) {
  std::lock_guard<std::mutex> l(st.mu);
  return st.done;
}

// Waiting runs the engine's queued ops in this thread when the engine is idle.
class EngineWork : public Work {
 public:
  EngineWork(Engine* e, std::shared_ptr<WorkState> s) : engine_(e), state_(std::move(s)) {}
  ~EngineWork() override { engine_->releaseToEngine(state_); }
  void wait() override {
    engine_->runQueuedUntil(state_);
    state_->callerRuns = false;  // done: nothing for the engine to take over
    std::lock_guard<std::mutex> lock(state_->mu);
    if (state_->error) std::rethrow_exception(state_->error);
  }
  bool isCompleted() override { return isDone(*state_); }

 private:
  Engine* engine_;
  std::shared_ptr<WorkState> state_;
};

}  // namespace

void WaitPolicy::waitUntil(const std::function<bool()>& done) {
  std::uint64_t polls = 0;
  const auto start = Clock::now();
  Clock::duration waited{};
  while (true) {
    if (done()) return;
    ++polls;
    if (polls % 64 == 0) {
      checkpoint_();
      waited = Clock::now() - start;
    }
    if (callerRunning_) {
      if (waited > kCallerSpinTime) std::this_thread::sleep_for(std::chrono::microseconds(200));
    } else if (waited > kSpinTime) {
      // Sleeping hands the core to compute threads (GradientSync overlaps with backward).
      std::this_thread::sleep_for(std::chrono::microseconds(waited > kLongWait ? 200 : 20));
    } else if (polls > kSpinPolls) {
      sched_yield();
    }
  }
}

Engine::Engine(bool solo, Runner run, std::function<void()> idle)
    : solo_(solo), run_(std::move(run)), idle_(std::move(idle)) {
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  engineCv_.notify_all();
  thread_.join();
}

std::unique_ptr<Work> Engine::submit(Op o) {
  o.state = std::make_shared<WorkState>();
  const bool callerRuns = callerWaits();
  o.state->callerRuns = callerRuns;
  auto work = std::make_unique<EngineWork>(this, o.state);
  {
    std::unique_lock<std::mutex> lock(mu_);
    o.seq = nextSeq_++;
    queue_.push_back(std::move(o));
    if (solo_ && queue_.size() == 1 && !runnerBusy_) {
      // One rank: the op moves no data between ranks (at most a local copy), so it runs
      // here and now, in order (nothing is queued before it). Handing it to the engine
      // costs two thread wake-ups per op (GradientSync launches every bucket async): a
      // 110-step Trainer run at world 1 made 1021 futex calls, now 326, as many as a
      // hand-written loop without any backend work.
      runFront(lock);
      return work;
    }
  }
  if (!callerRuns) engineCv_.notify_all();
  return work;
}

std::int64_t Engine::nextSeq() {
  std::lock_guard<std::mutex> lock(mu_);
  return nextSeq_;
}

void Engine::wake() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    woken_ = true;
  }
  engineCv_.notify_all();
}

// The engine runs queued ops whenever no other thread holds the runner token; so does a
// thread blocked in wait() (runQueuedUntil). The engine leaves an op whose issuing thread
// runs it itself (callerRuns: a blocking call), which saves the two thread hand-offs (a
// wake-up of ~5 us each here) that the engine would add. Exactly one thread makes the
// network calls at a time.
void Engine::loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    // On shutdown nothing is left for a caller that will not come.
    if (!queue_.empty() && !runnerBusy_ && (stop_ || !queue_.front().state->callerRuns)) {
      runFront(lock);
      continue;
    }
    if (stop_ && queue_.empty()) break;
    if (solo_) {
      // No peer can send a control message or an abort notice: nothing to poll for, so
      // sleep until a submit, a release, an abort or shutdown notifies engineCv_. A 5 ms
      // poll here woke this thread 200 times a second beside the training thread (and a
      // Trainer has two backends: its communicator and its Checkpointer's).
      if (!woken_) engineCv_.wait(lock);
    } else if (!woken_) {
      engineCv_.wait_for(lock, std::chrono::milliseconds(5));
    }
    woken_ = false;
    if (runnerBusy_ || !queue_.empty()) continue;
    runnerBusy_ = true;
    lock.unlock();
    idle_();
    lock.lock();
    runnerBusy_ = false;
    if (!queue_.empty()) cv_.notify_all();  // a caller may have queued meanwhile
  }
  cv_.notify_all();
}

// Pops and runs the front op with the runner token; `lock` holds mu_ on entry and exit.
// Wakes waiting callers, and the engine only when it has something to run: a wake-up
// costs a core that the peer rank or compute threads would use.
void Engine::runFront(std::unique_lock<std::mutex>& lock) {
  runnerBusy_ = true;
  Op op = std::move(queue_.front());
  queue_.pop_front();
  lock.unlock();
  std::exception_ptr error = run_(op);
  op.state->complete(error);
  lock.lock();
  runnerBusy_ = false;
  cv_.notify_all();
  if (!queue_.empty() && !queue_.front().state->callerRuns) engineCv_.notify_all();
}

// Called when a Work is destroyed: an op its issuer meant to run goes to the engine.
void Engine::releaseToEngine(const std::shared_ptr<WorkState>& state) {
  if (!state->callerRuns.exchange(false)) return;
  { std::lock_guard<std::mutex> lock(mu_); }  // the engine is waiting or will see the flag
  engineCv_.notify_all();
}

// Called by Work::wait(): runs queued ops (in order) until `state` is done.
void Engine::runQueuedUntil(const std::shared_ptr<WorkState>& state) {
  std::unique_lock<std::mutex> lock(mu_);
  while (!isDone(*state)) {
    if (!queue_.empty() && !runnerBusy_) {
      runFront(lock);
    } else {
      cv_.wait_for(lock, std::chrono::milliseconds(1));
    }
  }
}

}  // namespace cohort::dist::detail
