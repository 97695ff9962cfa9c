#include "crc32c.h"

#include <array>

namespace cohort::trainer::crc32c {

namespace {

// Reflected form of the Castagnoli polynomial 0x1EDC6F41: bits are processed LSB first, so
// one table lookup consumes one byte.
constexpr std::uint32_t kPoly = 0x82F63B78u;

constexpr std::array<std::uint32_t, 256> makeTable() {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int bit = 0; bit < 8; ++bit) c = (c & 1u) ? (c >> 1) ^ kPoly : c >> 1;
    table[i] = c;
  }
  return table;
}

// Built at compile time: no init-order or thread-safety questions.
constexpr std::array<std::uint32_t, 256> kTable = makeTable();

}  // namespace

std::uint32_t extend(std::uint32_t crc, const void* data, std::size_t size) {
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint32_t c = ~crc;  // undo the final inversion of the previous chunk
  for (std::size_t i = 0; i < size; ++i) c = kTable[(c ^ p[i]) & 0xFFu] ^ (c >> 8);
  return ~c;
}

}  // namespace cohort::trainer::crc32c
