// Cohort's own ring collectives over a Transport: all-reduce (reduce-scatter + all-gather),
// reduce-scatter and all-gather of partitions, and the two-rank swaps. Torch- and MPI-free,
// so tests run them over an in-memory transport with N ranks as threads.
//
// The buffer is processed slice by slice so each slice stays in cache; bf16/fp16 travel as
// themselves (half the bytes) and are summed in float32 per slice and rounded once. With two ranks (other dtypes) the two ring
// steps are pipelined across slices (pairAllReduce). Every function here is COLLECTIVE over
// the transport's group: all ranks call it with the same count, dtype, op and slice size.
// Private to cohort_dist.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cohort/dist/types.h"
#include "engine.h"
#include "transport.h"

namespace cohort::dist::detail {

// Transport tags of the ring (the control channel is separate).
constexpr int kDataTag = 11;
constexpr int kGatherTag = 12;  // the all-gather half of a two-rank all-reduce
constexpr int kCheckTag = 13;   // the two-rank argument check
// The most data a two-rank check message carries along (checkedAllReduce): beyond this the
// all-reduce's slices are big enough that one more round does not matter.
constexpr std::size_t kCheckPayloadMaxBytes = std::size_t{8} << 20;

// One rank's view for one collective: the transport, the wait (which carries the
// collective's deadline) and scratch space reused across collectives. Borrowed references;
// used by one thread at a time.
class Ring {
 public:
  Ring(Transport& transport, WaitPolicy& wait, std::size_t sliceBytes)
      : t_(transport), wait_(wait), sliceBytes_(sliceBytes) {}

  // In place. kAvg divides once at the end (floating dtypes only: checked by the caller).
  void allReduce(void* buf, std::size_t count, DType dtype, ReduceOp op);
  // In place; afterwards this rank's partition (partitionOf) holds the reduction.
  void reduceScatter(void* buf, std::size_t count, DType dtype, ReduceOp op);
  // In place; every rank's partition goes to every rank.
  void allGatherPartitions(void* buf, std::size_t count, DType dtype);
  // Two ranks: v[i] = max(v[i], peer's v[i]) with one message each way (the argument check).
  void pairMax(SignatureBuffer& v);
  // Returns the error of a disagreement for the combined signature, or "".
  using Mismatch = std::function<std::string(const SignatureBuffer&)>;
  // Two ranks only: the argument check and all_reduce in one. The signature travels in the same
  // message as the first slice of data, so the check costs no round of its own (across
  // hosts a round is milliseconds). On a disagreement (`mismatch` returns a message) no
  // data has been written, nothing is left in flight, and the message is returned.
  std::string checkedAllReduce(void* buf, std::size_t count, DType dtype, ReduceOp op,
                               SignatureBuffer sig, const Mismatch& mismatch);

 private:
  void ring(void* buf, std::size_t count, DType dtype, ReduceOp op, bool reduceScatter,
            bool allGather);
  // With `sig`/`mismatch` set: the check rides on the first slice (checkedAllReduce; the
  // slice must fit checkPayloadCapacity()).
  std::string pairAllReduce(void* buf, std::size_t count, DType dtype, ReduceOp op,
                            SignatureBuffer* sig = nullptr, const Mismatch* mismatch = nullptr);
  void halfReduce(void* buf, std::size_t count, DType dtype, ReduceOp op, bool allGather);
  void ringReduceScatter(const std::vector<char*>& seg, const std::vector<std::size_t>& len,
                         DType wt, ReduceOp reduce);
  void ringAllGather(const std::vector<char*>& seg, const std::vector<std::size_t>& len,
                     std::size_t es);
  // The two-rank check message: this header, then `payloadBytes` of data. Every check
  // receive has room for checkPayloadCapacity() bytes of data, whatever the peer's op is,
  // so a peer's message always completes, also when the two disagree.
  struct CheckHeader {
    SignatureBuffer sig;
    std::int64_t payloadBytes;
  };
  std::size_t checkPayloadCapacity() const;
  // Elements per slice of each half in pairAllReduce, for elements of `es` bytes.
  std::size_t pairChunk(std::size_t es) const;
  void postCheck(const SignatureBuffer& v, const void* payload, std::size_t bytes);
  // After the check message arrived: v = max(v, peer's); returns the peer's payload bytes.
  std::int64_t mergePeerCheck(SignatureBuffer& v) const;
  void waitAll() {
    wait_.waitUntil([this] { return t_.testAll(); });
  }

  Transport& t_;
  WaitPolicy& wait_;
  std::size_t sliceBytes_;
  std::vector<char> scratch_;
  std::vector<float> widened_;
  std::vector<char> check_;  // the peer's check message (header, then data)
  CheckHeader checkOut_{};   // this rank's header, until its send has completed
};

}  // namespace cohort::dist::detail
