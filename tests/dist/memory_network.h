// Test support: an in-memory Network (dist/src/host_backend.h) so that N ranks run as
// threads of one process, over the same engine, ring algorithms and control plane as the
// MPI backend, and faults can be injected into the transfers: a rank's n-th data message
// vanishes, a rank dies (from its n-th data message on, nothing it sends arrives, it hears
// nothing, and its own transfers fail), or a rank's n-th send fails (the rank lives on).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "cohort/dist/backend.h"
#include "host_backend.h"

namespace cohort::test {

// The wires between `size` in-memory ranks. Thread-safe. Must outlive the networks (and
// backends) made from it.
class MemoryHub {
 public:
  explicit MemoryHub(int size);
  int size() const { return size_; }

  // The backend of one rank over this hub (as makeMpiBackend, with `options`).
  std::unique_ptr<dist::Backend> backend(int rank, const dist::BackendOptions& options);

  // Faults. Data messages of a rank are counted from 0 in the order it posts them.
  void dropDataMessage(int rank, std::int64_t nth);  // that message never arrives
  void dieAtDataMessage(int rank, std::int64_t nth);  // the rank is dead from that message on
  // Posting that message throws DistError on the rank (which stays alive: it can abort).
  void failAtDataMessage(int rank, std::int64_t nth);
  bool dead(int rank) const { return dead_[rank]->load(); }
  // Data messages `rank` has posted so far, and their bytes.
  std::int64_t dataMessagesSent(int rank);
  std::int64_t dataBytesSent(int rank);

  // For the transport and control channel of rank `from`. sendData returns false for an
  // injected send failure.
  bool sendData(int from, int to, int tag, const void* data, std::size_t bytes);
  // Moves the oldest (from, tag) message to `to` into `out`; false when none arrived yet.
  bool takeData(int to, int from, int tag, void* out, std::size_t bytes);
  void sendControl(int from, int to, int tag, std::vector<char> payload);
  bool takeControl(int to, int* from, int* tag, std::vector<char>* payload);

 private:
  struct Message {
    int from;
    int tag;
    std::vector<char> bytes;
  };
  struct Box {  // everything addressed to one rank
    std::mutex mu;
    std::map<std::pair<int, int>, std::deque<std::vector<char>>> data;  // (from, tag)
    std::deque<Message> control;
  };

  const int size_;
  std::vector<std::unique_ptr<Box>> boxes_;
  std::vector<std::unique_ptr<std::atomic<bool>>> dead_;
  std::mutex faultMu_;  // guards the fault plan and the counters
  std::vector<std::int64_t> sent_, sentBytes_;
  std::map<int, std::int64_t> drop_, die_, fail_;
};

}  // namespace cohort::test
