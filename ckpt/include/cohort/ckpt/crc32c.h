// CRC32C (Castagnoli): the checksum of checkpoint chunks and of TFRecord framing in
// TensorBoard event files. Uses the SSE4.2 instruction when the CPU has it (checksumming a
// checkpoint must not be slower than the disk) and a table otherwise; both give the same
// values. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cohort::ckpt::crc32c {

// The CRC32C of `data` continued from `crc`, the CRC of the bytes before it (0 for none):
// extend(extend(0, a), b) == value(a + b).
std::uint32_t extend(std::uint32_t crc, const void* data, std::size_t size);

inline std::uint32_t value(const void* data, std::size_t size) { return extend(0, data, size); }

// The CRC32C of A followed by B from the CRCs of A and B and B's size, without the bytes:
// combine(value(a), value(b), size of b) == value(a + b). O(log sizeB).
std::uint32_t combine(std::uint32_t crcA, std::uint32_t crcB, std::uint64_t sizeB);

// The portable table-driven path (exposed so tests can compare it with the fast one).
std::uint32_t extendPortable(std::uint32_t crc, const void* data, std::size_t size);

}  // namespace cohort::ckpt::crc32c
