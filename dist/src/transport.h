// What the host collectives need from the network, as two small interfaces: Transport
// (point-to-point bytes, all the ring algorithms use) and ControlChannel (small best-effort
// messages beside the data: "where are you?" queries, their replies, abort notices). The
// MPI implementation is in mpi_backend.cc; tests run the same algorithms, engine and
// control plane over an in-memory implementation (tests/dist/memory_network.h) and inject
// faults there. Private to cohort_dist.
#pragma once

#include <cstddef>
#include <optional>
#include <vector>

namespace cohort::dist::detail {

// Point-to-point transfers within one group. Sends and receives are posted (nonblocking)
// and matched in posting order per (peer, tag); a posted buffer is borrowed until testAll()
// has returned true. Waiting (with the collective's deadline) is the caller's business:
// it polls testAll() (WaitPolicy, engine.h).
// Thread-safety: one thread at a time (the engine's runner token guarantees it).
class Transport {
 public:
  virtual ~Transport() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual void postSend(int peer, int tag, const void* data, std::size_t bytes) = 0;
  virtual void postRecv(int peer, int tag, void* data, std::size_t bytes) = 0;
  // One message of `head` then `body`, sent from where they are (no copy to join them).
  virtual void postSendJoined(int peer, int tag, const void* head, std::size_t headBytes,
                              const void* body, std::size_t bodyBytes) = 0;
  // Nonblocking progress: true once every transfer posted so far has completed (they are
  // then forgotten). Throws DistError when the transport fails.
  virtual bool testAll() = 0;
};

struct ControlMessage {
  int source = -1;
  int tag = 0;
  std::vector<char> payload;
};

// Control messages never match a data receive. Best effort: a message to a dead peer is
// dropped, never an error. Thread-safety: one thread at a time, as Transport.
class ControlChannel {
 public:
  virtual ~ControlChannel() = default;
  // Never blocks.
  virtual void post(int dest, int tag, std::vector<char> payload) = 0;
  // Progresses posted messages; true while some have not left yet.
  virtual bool sending() = 0;
  // The next message that has arrived, if any. Never blocks.
  virtual std::optional<ControlMessage> receive() = 0;
};

}  // namespace cohort::dist::detail
