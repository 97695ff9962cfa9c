// The global sample order of one epoch, spelled out so that it does not depend on the C++
// standard library: std::mt19937_64's output is fixed by the standard, but
// std::uniform_int_distribution's algorithm is not (libstdc++ and libc++ draw differently),
// so a resume on binaries built against another library would silently change the data.
// docs/trainer.md ("The global batch plan") describes the same steps for reimplementation.
// Header-only and torch-free: tests build it against both standard libraries.
#pragma once

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace cohort::trainer {

// A uniform draw from [0, s) (s >= 1) by Lemire's multiply-and-reject method ("Fast Random
// Integer Generation in an Interval", 2019) on the engine's raw 64-bit outputs: the high
// 64 bits of x * s for the first x whose low 64 bits are >= (2^64 - s) mod s.
inline std::uint64_t drawBelow(std::mt19937_64& engine, std::uint64_t s) {
  unsigned __int128 product = static_cast<unsigned __int128>(engine()) * s;
  auto low = static_cast<std::uint64_t>(product);
  if (low < s) {
    const std::uint64_t threshold = (0 - s) % s;  // 2^64 mod s
    while (low < threshold) {
      product = static_cast<unsigned __int128>(engine()) * s;
      low = static_cast<std::uint64_t>(product);
    }
  }
  return static_cast<std::uint64_t>(product >> 64);
}

// The permutation of [0, n) for `epoch`: Fisher-Yates from the last position down, position
// i swapped with drawBelow(i + 1), on MT19937-64 seeded with seed * 1000003 + epoch (mod 2^64).
inline std::vector<std::int64_t> shuffledOrder(std::int64_t n, std::uint64_t seed,
                                               std::int64_t epoch) {
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
  std::mt19937_64 engine(seed * 1000003ull + static_cast<std::uint64_t>(epoch));
  for (std::int64_t i = n - 1; i > 0; --i) {
    const auto j = drawBelow(engine, static_cast<std::uint64_t>(i) + 1);
    std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(j)]);
  }
  return order;
}

}  // namespace cohort::trainer
