// CRC32C (Castagnoli), the checksum of TFRecord framing in TensorBoard event files. Our own
// table-driven implementation: the event writer must not depend on TensorFlow, and the
// hardware instruction would tie the code to x86 or ARM for a few bytes per log entry.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cohort::trainer::crc32c {

// The CRC32C of `data` continued from `crc`, the CRC of the bytes before it (0 for none):
// extend(extend(0, a), b) == value(a + b). Thread-safe (the table is constant).
std::uint32_t extend(std::uint32_t crc, const void* data, std::size_t size);

inline std::uint32_t value(const void* data, std::size_t size) { return extend(0, data, size); }

// TFRecord stores CRCs masked, because a CRC computed over data that itself contains CRCs
// is weak: rotate right by 15 bits and add a constant.
inline std::uint32_t mask(std::uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

inline std::uint32_t unmask(std::uint32_t masked) {
  const std::uint32_t rot = masked - 0xa282ead8u;
  return (rot >> 17) | (rot << 15);
}

}  // namespace cohort::trainer::crc32c
