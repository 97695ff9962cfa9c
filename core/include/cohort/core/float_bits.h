// Bit-level conversions between float32 and the 16-bit floating formats (bfloat16, IEEE
// half), shared by the host reduction kernels (dist) and the torch-free checkpoint export
// (ckpt_format). Header-only and dependency-free, like the rest of cohort_core. Pure
// functions: thread-safe.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace cohort::bits {

inline std::uint32_t bitsOf(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float floatOf(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float bf16ToFloat(std::uint16_t v) { return floatOf(static_cast<std::uint32_t>(v) << 16); }

// Round to nearest, ties to even; a NaN stays a (quiet) NaN of the same sign.
inline std::uint16_t floatToBf16(float f) {
  const std::uint32_t x = bitsOf(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);
  const std::uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
  return static_cast<std::uint16_t>((x + rounding) >> 16);
}

// IEEE half -> float32, exact (subnormals included).
inline float fp16ToFloat(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t mant = h & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24, exact in float
    const float v = static_cast<float>(mant) * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  if (exp == 31) return floatOf(sign | 0x7f800000u | (mant << 13));
  return floatOf(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}

}  // namespace cohort::bits
