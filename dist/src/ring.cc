#include "ring.h"

#include <algorithm>
#include <cstring>

#include "cohort/dist/error.h"

#include "reduce.h"

namespace cohort::dist::detail {

namespace {

bool isHalf(DType t) { return t == DType::kBFloat16 || t == DType::kFloat16; }

// The partitions of a ring collective, walked slice by slice: slice k is the k-th chunk
// (of `chunk` elements) of every rank's partition partitionOf(count, n, i).
struct Slices {
  Slices(std::size_t count, int n, std::size_t chunkElems)
      : chunk(chunkElems), start(n), part(n), seg(n), len(n) {
    for (int i = 0; i < n; ++i) {
      const auto [lo, hi] = partitionOf(count, n, i);
      start[i] = lo;
      part[i] = hi - lo;
      maxPart = std::max(maxPart, part[i]);
    }
  }
  std::size_t count() const { return (maxPart + chunk - 1) / chunk; }
  // Points seg/len at slice k of every partition of `base` (elements of `es` bytes).
  void select(std::size_t k, char* base, std::size_t es) {
    for (std::size_t i = 0; i < start.size(); ++i) {
      const std::size_t off = std::min(k * chunk, part[i]);
      len[i] = std::min(chunk, part[i] - off);
      seg[i] = base + (start[i] + off) * es;
    }
  }
  std::size_t chunk, maxPart = 0;
  std::vector<std::size_t> start, part;
  std::vector<char*> seg;
  std::vector<std::size_t> len;
};

}  // namespace

void Ring::allReduce(void* buf, std::size_t count, DType dtype, ReduceOp op) {
  if (t_.size() == 2 && !isHalf(dtype)) {
    pairAllReduce(buf, count, dtype, op);
    return;
  }
  ring(buf, count, dtype, op, true, true);
}

void Ring::reduceScatter(void* buf, std::size_t count, DType dtype, ReduceOp op) {
  ring(buf, count, dtype, op, true, false);
}

void Ring::allGatherPartitions(void* buf, std::size_t count, DType dtype) {
  ring(buf, count, dtype, ReduceOp::kSum, false, true);
}

void Ring::pairMax(SignatureBuffer& v) {
  postCheck(v, nullptr, 0);
  waitAll();
  mergePeerCheck(v);
}

std::string Ring::checkedAllReduce(void* buf, std::size_t count, DType dtype, ReduceOp op,
                                   SignatureBuffer sig, const Mismatch& mismatch) {
  if (!isHalf(dtype) && pairChunk(elementSize(dtype)) * elementSize(dtype) <=
                            checkPayloadCapacity()) {
    return pairAllReduce(buf, count, dtype, op, &sig, &mismatch);
  }
  // Half types (the ring) and slices too big to ride along: the check takes its own round.
  pairMax(sig);
  std::string msg = mismatch(sig);
  if (msg.empty()) allReduce(buf, count, dtype, op);
  return msg;
}

std::size_t Ring::pairChunk(std::size_t es) const {
  return std::max<std::size_t>(1, std::min<std::size_t>(sliceBytes_, 1 << 30) / es / 2);
}

// The same on both ranks when they use the same slice size (makeMpiBackend checks that).
std::size_t Ring::checkPayloadCapacity() const {
  return std::min(std::min<std::size_t>(sliceBytes_, 1 << 30) / 2, kCheckPayloadMaxBytes);
}

void Ring::postCheck(const SignatureBuffer& v, const void* payload, std::size_t bytes) {
  const std::size_t room = sizeof(CheckHeader) + checkPayloadCapacity();
  if (check_.size() < room) check_.resize(room);
  checkOut_.sig = v;
  checkOut_.payloadBytes = static_cast<std::int64_t>(bytes);
  const int other = 1 - t_.rank();
  t_.postRecv(other, kCheckTag, check_.data(), room);
  t_.postSendJoined(other, kCheckTag, &checkOut_, sizeof(checkOut_), payload, bytes);
}

std::int64_t Ring::mergePeerCheck(SignatureBuffer& v) const {
  CheckHeader peer;
  std::memcpy(&peer, check_.data(), sizeof(peer));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = std::max(v[i], peer.sig[i]);
  return peer.payloadBytes;
}

// The ring, shared by all_reduce (reduce-scatter then all-gather), reduce_scatter and
// all_gather of partitions. Rank i's partition is partitionOf(count, n, i); the buffer is
// processed slice by slice, slice k being the k-th chunk of every partition, so each slice
// stays in cache. Half-type reductions take halfReduce() (below).
void Ring::ring(void* buf, std::size_t count, DType dtype, ReduceOp op, bool reduceScatter,
                bool allGather) {
  const int n = t_.size(), rank = t_.rank();
  if (count == 0 || n == 1) return;
  if (isHalf(dtype) && reduceScatter) return halfReduce(buf, count, dtype, op, allGather);
  const std::size_t es = elementSize(dtype);
  const std::size_t chunk = std::max<std::size_t>(1, sliceBytes_ / es / n);
  Slices sl(count, n, chunk);
  if (reduceScatter && scratch_.size() < chunk * es) scratch_.resize(chunk * es);
  const std::vector<char*>& seg = sl.seg;
  const std::vector<std::size_t>& len = sl.len;
  char* base = static_cast<char*>(buf);
  for (std::size_t k = 0; k < sl.count(); ++k) {
    sl.select(k, base, es);
    if (reduceScatter) {
      ringReduceScatter(seg, len, dtype, op);
      if (op == ReduceOp::kAvg) divideBy(seg[rank], len[rank], dtype, n);
    }
    if (allGather) ringAllGather(seg, len, es);
  }
}

// bf16/fp16 reductions: the half type travels (half the bytes of float32), the sum is taken
// in float32 and rounded once. A ring would have to pass partial sums on, rounded at every
// hop; instead each rank receives every peer's copy of its own partition's slice (the same
// bytes per rank as the ring's reduce-scatter: (n-1)/n of the buffer), reduces the n
// contributions in rank order in float32 (so every partition is summed the same way,
// whatever its place in the ring), and rounds once. The all-gather is the ring's, in halves.
void Ring::halfReduce(void* buf, std::size_t count, DType dtype, ReduceOp op, bool allGather) {
  const int n = t_.size(), rank = t_.rank();
  constexpr std::size_t es = 2;
  const std::size_t chunk = std::max<std::size_t>(1, sliceBytes_ / es / n);
  Slices sl(count, n, chunk);
  if (scratch_.size() < chunk * es * n) scratch_.resize(chunk * es * n);
  if (widened_.size() < chunk * 2) widened_.resize(chunk * 2);
  auto* base = static_cast<std::uint16_t*>(buf);
  auto* received = reinterpret_cast<std::uint16_t*>(scratch_.data());
  const std::vector<char*>& seg = sl.seg;
  const std::vector<std::size_t>& len = sl.len;
  for (std::size_t k = 0; k < sl.count(); ++k) {
    sl.select(k, reinterpret_cast<char*>(base), es);
    for (int p = 0; p < n; ++p) {
      if (p == rank) continue;
      t_.postRecv(p, kDataTag, received + static_cast<std::size_t>(p) * chunk, len[rank] * es);
      t_.postSend(p, kDataTag, seg[p], len[p] * es);
    }
    waitAll();
    float* acc = widened_.data();
    float* one = acc + chunk;
    for (int r = 0; r < n; ++r) {
      const std::uint16_t* src = r == rank ? reinterpret_cast<const std::uint16_t*>(seg[rank])
                                           : received + static_cast<std::size_t>(r) * chunk;
      widenToFloat(src, r == 0 ? acc : one, len[rank], dtype);
      if (r > 0) reduceInto(acc, one, len[rank], DType::kFloat32, op);  // kAvg: sums
    }
    if (op == ReduceOp::kAvg) divideBy(acc, len[rank], DType::kFloat32, n);
    narrowFromFloat(acc, reinterpret_cast<std::uint16_t*>(seg[rank]), len[rank], dtype);
    if (allGather) ringAllGather(seg, len, es);
  }
}

// All-reduce of two ranks (float32, float64 and integer types): the ring's two steps per
// slice, pipelined. Each rank owns half of every slice; step one swaps the halves so each
// rank reduces its own, step two swaps the reduced halves back. Slice k+1's first swap is
// posted before slice k is reduced and slice k's second swap is posted right after, so
// each slice costs one wait instead of two and the peer copies one message while this
// rank reduces. Received halves alternate between two scratch areas.
std::string Ring::pairAllReduce(void* buf, std::size_t count, DType dtype, ReduceOp op,
                                SignatureBuffer* sig, const Mismatch* mismatch) {
  if (count == 0 && sig == nullptr) return "";
  const int rank = t_.rank(), peer = 1 - rank;
  const std::size_t es = elementSize(dtype);
  const std::size_t chunk = pairChunk(es);
  const auto [mineLo, mineHi] = partitionOf(count, 2, rank);
  const auto [peerLo, peerHi] = partitionOf(count, 2, peer);
  const std::size_t slices = (std::max(mineHi - mineLo, peerHi - peerLo) + chunk - 1) / chunk;
  if (scratch_.size() < 2 * chunk * es) scratch_.resize(2 * chunk * es);
  char* base = static_cast<char*>(buf);
  struct Segment {
    char* data;
    std::size_t bytes;
  };
  // Slice k of the partition [lo, hi): empty once the partition is exhausted.
  auto segment = [&](std::size_t lo, std::size_t hi, std::size_t k) {
    const std::size_t off = std::min(lo + k * chunk, hi);
    return Segment{base + off * es, std::min(chunk, hi - off) * es};
  };
  auto scratch = [&](std::size_t k) { return scratch_.data() + (k % 2) * chunk * es; };
  // Slice 0 from the peer: in scratch, or in the check message it came with.
  const char* first = scratch(0);
  if (sig != nullptr) {
    const Segment theirs = segment(peerLo, peerHi, 0);
    postCheck(*sig, theirs.data, theirs.bytes);
    waitAll();
    const std::int64_t got = mergePeerCheck(*sig);
    std::string msg = (*mismatch)(*sig);
    if (!msg.empty()) return msg;  // the peer's data stays in check_: nothing written
    const std::size_t want = segment(mineLo, mineHi, 0).bytes;
    if (got != static_cast<std::int64_t>(want)) {
      throw DistError("all_reduce: the peer sent " + std::to_string(got) +
                      " bytes of the first slice, this rank expects " + std::to_string(want) +
                      " (do the ranks use different slice sizes?)");
    }
    first = check_.data() + sizeof(CheckHeader);
  }
  // Each wait covers the halves of slice k going to be reduced and the reduced halves of
  // slice k-1.
  auto postScatter = [&](std::size_t k) {
    const Segment mine = segment(mineLo, mineHi, k), theirs = segment(peerLo, peerHi, k);
    t_.postRecv(peer, kDataTag, scratch(k), mine.bytes);
    t_.postSend(peer, kDataTag, theirs.data, theirs.bytes);
  };
  auto postGather = [&](std::size_t k) {
    const Segment mine = segment(mineLo, mineHi, k), theirs = segment(peerLo, peerHi, k);
    t_.postRecv(peer, kGatherTag, theirs.data, theirs.bytes);
    t_.postSend(peer, kGatherTag, mine.data, mine.bytes);
  };
  if (sig == nullptr) postScatter(0);
  for (std::size_t k = 0; k < slices; ++k) {
    waitAll();  // slice k's halves swapped, slice k-1 complete
    if (k + 1 < slices) postScatter(k + 1);
    const Segment mine = segment(mineLo, mineHi, k);
    const std::size_t n = mine.bytes / es;
    reduceInto(mine.data, k == 0 ? first : scratch(k), n, dtype, op);
    if (op == ReduceOp::kAvg) divideBy(mine.data, n, dtype, 2);
    postGather(k);
  }
  waitAll();
  return "";
}

// After n-1 steps rank r's segment r holds the reduction over all ranks.
void Ring::ringReduceScatter(const std::vector<char*>& seg, const std::vector<std::size_t>& len,
                             DType wt, ReduceOp reduce) {
  const int n = t_.size(), rank = t_.rank();
  const std::size_t es = elementSize(wt);
  const int next = (rank + 1) % n, prev = (rank - 1 + n) % n;
  auto mod = [&](int v) { return ((v % n) + n) % n; };
  for (int s = 0; s < n - 1; ++s) {
    const int si = mod(rank - s - 1), ri = mod(rank - s - 2);
    t_.postRecv(prev, kDataTag, scratch_.data(), len[ri] * es);
    t_.postSend(next, kDataTag, seg[si], len[si] * es);
    waitAll();
    reduceInto(seg[ri], scratch_.data(), len[ri], wt, reduce);
  }
}

// Rank r's segment r goes to every rank.
void Ring::ringAllGather(const std::vector<char*>& seg, const std::vector<std::size_t>& len,
                         std::size_t es) {
  const int n = t_.size(), rank = t_.rank();
  const int next = (rank + 1) % n, prev = (rank - 1 + n) % n;
  auto mod = [&](int v) { return ((v % n) + n) % n; };
  for (int s = 0; s < n - 1; ++s) {
    const int si = mod(rank - s), ri = mod(rank - s - 1);
    t_.postRecv(prev, kDataTag, seg[ri], len[ri] * es);
    t_.postSend(next, kDataTag, seg[si], len[si] * es);
    waitAll();
  }
}

}  // namespace cohort::dist::detail
