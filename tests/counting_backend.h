// A Backend wrapper that counts the collectives reaching the real backend, so tests can prove
// what ran and what did not ("one collective per step", "nothing during no_sync").
#pragma once

#include <mpi.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "cohort/dist/backend.h"
#include "cohort/dist/communicator.h"
#include "cohort/dist/mpi_backend.h"

namespace cohort::test {

class CountingBackend : public dist::Backend {
 public:
  explicit CountingBackend(std::unique_ptr<dist::Backend> inner) : inner_(std::move(inner)) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  const char* name() const override { return inner_->name(); }
  bool usesDeviceMemory() const override { return inner_->usesDeviceMemory(); }
  std::unique_ptr<dist::Work> allReduce(void* b, std::size_t n, dist::DType t,
                                        dist::ReduceOp op) override {
    ++allReduces, ++total;
    return inner_->allReduce(b, n, t, op);
  }
  std::unique_ptr<dist::Work> reduceScatter(void* b, std::size_t n, dist::DType t,
                                            dist::ReduceOp op) override {
    ++reduceScatters, ++total;
    return inner_->reduceScatter(b, n, t, op);
  }
  std::unique_ptr<dist::Work> allGatherPartitions(void* b, std::size_t n, dist::DType t) override {
    ++total;
    return inner_->allGatherPartitions(b, n, t);
  }
  std::unique_ptr<dist::Work> broadcast(void* b, std::size_t n, dist::DType t, int r) override {
    ++total;
    return inner_->broadcast(b, n, t, r);
  }
  std::unique_ptr<dist::Work> allGatherV(const void* in, void* out,
                                         const std::vector<std::size_t>& c,
                                         dist::DType t) override {
    ++total;
    return inner_->allGatherV(in, out, c, t);
  }
  std::unique_ptr<dist::Work> gatherV(const void* in, void* out, const std::vector<std::size_t>& c,
                                      dist::DType t, int r) override {
    ++total;
    return inner_->gatherV(in, out, c, t, r);
  }
  std::unique_ptr<dist::Work> barrier() override {
    ++total;
    return inner_->barrier();
  }
  void abort(const std::string& reason) override { inner_->abort(reason); }

  std::atomic<int> allReduces{0};
  std::atomic<int> reduceScatters{0};
  std::atomic<int> total{0};

 private:
  std::unique_ptr<dist::Backend> inner_;
};

// A world communicator whose backend counts; *counter stays valid while the result lives.
inline std::unique_ptr<dist::Communicator> countingComm(CountingBackend** counter,
                                                        double timeoutSeconds = 60.0) {
  dist::BackendOptions o;
  o.timeoutSeconds = timeoutSeconds;
  auto b = std::make_unique<CountingBackend>(dist::makeMpiBackend(MPI_COMM_WORLD, o));
  *counter = b.get();
  return std::make_unique<dist::Communicator>(std::move(b));
}

}  // namespace cohort::test
