// Torch-free vocabulary of the collective core: element types and reduction operators.
// The raw collective interface (backend.h) takes (void*, count, DType) so that it compiles
// without LibTorch, like gloo's algorithms.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

namespace cohort::dist {

enum class DType : std::uint8_t { kFloat32, kFloat64, kBFloat16, kFloat16, kInt32, kInt64, kUInt8 };

enum class ReduceOp : std::uint8_t { kSum, kMax, kMin, kAvg };

// Bytes per element.
inline std::size_t elementSize(DType t) {
  switch (t) {
    case DType::kFloat32: return 4;
    case DType::kFloat64: return 8;
    case DType::kBFloat16: return 2;
    case DType::kFloat16: return 2;
    case DType::kInt32: return 4;
    case DType::kInt64: return 8;
    case DType::kUInt8: return 1;
  }
  return 0;
}

// The element range [first, second) of `count` elements that rank `rank` of `size` owns in
// reduce_scatter / all_gather_partitions: contiguous, in rank order, sizes differ by <= 1.
inline std::pair<std::size_t, std::size_t> partitionOf(std::size_t count, int size, int rank) {
  const auto n = static_cast<std::size_t>(size), r = static_cast<std::size_t>(rank);
  return {count * r / n, count * (r + 1) / n};
}

inline bool isFloating(DType t) {
  return t == DType::kFloat32 || t == DType::kFloat64 || t == DType::kBFloat16 ||
         t == DType::kFloat16;
}

inline const char* toString(DType t) {
  switch (t) {
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat16: return "float16";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kUInt8: return "uint8";
  }
  return "?";
}

inline const char* toString(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kMax: return "max";
    case ReduceOp::kMin: return "min";
    case ReduceOp::kAvg: return "avg";
  }
  return "?";
}

}  // namespace cohort::dist
