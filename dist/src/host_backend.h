// The host-memory Backend, assembled from its parts: the engine (engine.h) runs the queued
// collectives, the ring algorithms (ring.h) move the data of all_reduce, reduce_scatter and
// all_gather_partitions over a Transport, the control plane (control_plane.h) checks
// arguments, enforces the deadline and names missing ranks, and a Network supplies the
// transport, the control channel and the collectives the ring does not cover. MPI's
// Network is in mpi_backend.cc; tests build one in memory. Private to cohort_dist.
#pragma once

#include <cstdint>
#include <memory>

#include "cohort/dist/backend.h"
#include "engine.h"
#include "transport.h"

namespace cohort::dist::detail {

// Everything network-specific a host backend needs. Used by the one thread that holds the
// engine's runner token, except checkUsable (any issuing thread).
class Network {
 public:
  virtual ~Network() = default;
  virtual Transport& transport() = 0;
  virtual ControlChannel& control() = 0;
  // broadcast, all_gather (v), gather (v) and barrier, waiting with `wait`. COLLECTIVE.
  virtual void runOther(const Op& op, WaitPolicy& wait) = 0;
  // In place: v[i] = max over the group (the argument check of three or more ranks).
  virtual void maxReduce(SignatureBuffer& v, WaitPolicy& wait) = 0;
  // Throws DistError naming `what` when collectives can no longer be issued (MPI is not
  // initialised, or already finalised).
  virtual void checkUsable(const char* what) = 0;
  // Called once, after the last op ran. `broken`: a collective failed or the rank aborted,
  // transfers may still be in flight, so nothing that could block may be freed.
  virtual void close(bool broken) = 0;
};

// The Backend over `network` (owned), with `options`' timeout, slice size and argument
// check. Not collective itself (the network may be).
std::unique_ptr<Backend> makeHostBackend(std::unique_ptr<Network> network,
                                         const BackendOptions& options, const char* name);

}  // namespace cohort::dist::detail
