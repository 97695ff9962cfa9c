// Cross-rank argument check shared by the MPI and NCCL backends: each collective's
// signature (kind, sequence number, count, dtype, op/root, per-rank counts) is agreed with
// ONE small MAX all-reduce of [v, -v] pairs, so every rank learns min and max of every field
// and all ranks raise the same error on a mismatch (instead of a hang or a silent
// truncation). Header-only: the standalone NCCL core test compiles it too.
#pragma once

#include <array>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "cohort/dist/types.h"

namespace cohort::dist::detail {

enum class Kind : std::int64_t {
  kAllReduce = 1,
  kBroadcast,
  kAllGatherV,
  kGatherV,
  kBarrier,
  kReduceScatter,
  kAllGatherPartitions
};

inline const char* kindName(Kind k) {
  switch (k) {
    case Kind::kAllReduce: return "all_reduce";
    case Kind::kBroadcast: return "broadcast";
    case Kind::kAllGatherV: return "all_gather";
    case Kind::kGatherV: return "gather";
    case Kind::kBarrier: return "barrier";
    case Kind::kReduceScatter: return "reduce_scatter";
    case Kind::kAllGatherPartitions: return "all_gather_partitions";
  }
  return "?";
}

struct Signature {
  Kind kind = Kind::kBarrier;
  std::int64_t seq = 0;
  std::size_t count = 0;  // elements (all_gather/gather: total over ranks)
  DType dtype = DType::kUInt8;
  ReduceOp reduce = ReduceOp::kSum;
  int root = 0;
  std::vector<std::size_t> counts;

  std::string describe() const {
    std::ostringstream s;
    s << kindName(kind) << " #" << seq << " (" << count << " x " << toString(dtype);
    if (kind == Kind::kAllReduce || kind == Kind::kReduceScatter) s << ", " << toString(reduce);
    if (kind == Kind::kBroadcast || kind == Kind::kGatherV) s << ", root " << root;
    s << ")";
    return s.str();
  }

  std::array<std::int64_t, 6> fields() const {
    std::uint64_t h = 1469598103934665603ull;  // FNV-1a over the per-rank counts
    for (std::size_t c : counts) h = (h ^ c) * 1099511628211ull;
    const std::int64_t opOrRoot =
        kind == Kind::kAllReduce || kind == Kind::kReduceScatter ? static_cast<std::int64_t>(reduce)
                                                                 : root;
    return {static_cast<std::int64_t>(kind), seq, static_cast<std::int64_t>(count),
            static_cast<std::int64_t>(dtype), opOrRoot, static_cast<std::int64_t>(h >> 2)};
  }
};

using SignatureBuffer = std::array<std::int64_t, 12>;

// Fill, MAX-all-reduce over the group, then call mismatch().
inline SignatureBuffer encodeSignature(const Signature& sig) {
  SignatureBuffer b{};
  const auto f = sig.fields();
  for (int i = 0; i < 6; ++i) {
    b[2 * i] = f[i];
    b[2 * i + 1] = -f[i];
  }
  return b;
}

// The error message of a disagreement (identical on every rank), or "" when all agree.
inline std::string signatureMismatch(const Signature& sig, const SignatureBuffer& reduced) {
  const auto f = sig.fields();
  const char* names[6] = {"collective",  "sequence number", "element count", "dtype",
                          sig.kind == Kind::kAllReduce ? "reduce op" : "root",
                          "per-rank counts"};
  for (int i = 0; i < 6; ++i) {
    const std::int64_t hi = reduced[2 * i], lo = -reduced[2 * i + 1];
    if (hi == lo) continue;
    std::ostringstream s;
    s << sig.describe() << ": ranks disagree on the " << names[i] << " (";
    if (i == 0) {
      s << kindName(static_cast<Kind>(lo)) << " vs " << kindName(static_cast<Kind>(hi));
    } else if (i == 3) {
      s << toString(static_cast<DType>(lo)) << " vs " << toString(static_cast<DType>(hi));
    } else if (i == 5) {
      s << "they differ";
    } else {
      s << "from " << lo << " to " << hi << " across ranks; this rank " << f[i];
    }
    s << "); every rank must issue the same collectives in the same order";
    return s.str();
  }
  return "";
}

}  // namespace cohort::dist::detail
