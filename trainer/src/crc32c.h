// TFRecord framing of TensorBoard event files: CRC32C (shared with the checkpoint format,
// cohort/ckpt/crc32c.h) plus TFRecord's masking.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cohort/ckpt/crc32c.h"

namespace cohort::trainer::crc32c {

using ckpt::crc32c::extend;
using ckpt::crc32c::value;

// TFRecord stores CRCs masked, because a CRC computed over data that itself contains CRCs
// is weak: rotate right by 15 bits and add a constant.
inline std::uint32_t mask(std::uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

inline std::uint32_t unmask(std::uint32_t masked) {
  const std::uint32_t rot = masked - 0xa282ead8u;
  return (rot >> 17) | (rot << 15);
}

}  // namespace cohort::trainer::crc32c
