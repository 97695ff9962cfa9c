// Element-wise reduction kernels of the host collectives, and the float <-> bfloat16/float16
// conversions used to accumulate half types in float32 (one rounding at the end, so a sum
// is not silently degraded hop by hop).
#pragma once

#include <cstddef>
#include <cstdint>

#include "cohort/dist/types.h"

namespace cohort::dist::detail {

// dst[i] = op(dst[i], src[i]) for n elements of dtype. kAvg reduces as kSum (the caller
// divides once at the end). Half types are not accepted here (they are widened first).
void reduceInto(void* dst, const void* src, std::size_t n, DType dtype, ReduceOp op);

// dst[i] /= divisor for a floating dtype (float32/float64).
void divideBy(void* buf, std::size_t n, DType dtype, double divisor);

float bf16ToFloat(std::uint16_t v);
std::uint16_t floatToBf16(float f);  // round to nearest even
float fp16ToFloat(std::uint16_t v);
std::uint16_t floatToFp16(float f);  // round to nearest even, overflow to inf

void widenToFloat(const std::uint16_t* in, float* out, std::size_t n, DType halfType);
void narrowFromFloat(const float* in, std::uint16_t* out, std::size_t n, DType halfType);

}  // namespace cohort::dist::detail
