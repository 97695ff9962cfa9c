// Test helpers for the torch-free checkpoint format: a whole checkpoint written the way the
// collective Checkpointer writes it (ckpt/src/checkpointer.cc saveNow), with every "rank"
// simulated in this one process. Used by the format unit tests and by the fixture program
// that feeds the independent reader and the `cohort ckpt` CLI tests.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "cohort/ckpt/format.h"

namespace cohort::ckpt::testing {

// A full tensor in host memory: its raw little-endian bytes (bfloat16 as raw bits, bool as
// one byte per element).
struct HostTensor {
  std::string name;
  std::string dtype;
  std::vector<std::int64_t> shape;
  std::vector<char> bytes;
  // -1: split across every rank by element range (a replicated tensor); r: only rank r
  // writes it (per-rank state such as an RNG).
  int onlyRank = -1;

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (std::int64_t d : shape) n *= d;
    return n;
  }
};

// Element range of rank r when n elements are split over world ranks (as the trainer does).
inline std::pair<std::int64_t, std::int64_t> splitRange(std::int64_t n, int r, int world) {
  const std::int64_t lo = n * r / world, hi = n * (r + 1) / world;
  return {lo, hi - lo};
}

// Writes dir as `world` ranks would: sentinel, one shard per rank, merged manifest sorted by
// tensor name with chunks sorted by offset, manifest, sentinel removed. `header` supplies the
// non-tensor fields. Returns the manifest written.
inline Manifest writeCheckpoint(const std::string& dir, int world,
                                const std::vector<HostTensor>& tensors, Manifest header,
                                const WriteOptions& options = {}) {
  createSentinel(dir);
  std::vector<ShardReport> reports(static_cast<std::size_t>(world));
  for (int r = 0; r < world; ++r) {
    ShardReport& report = reports[static_cast<std::size_t>(r)];
    std::vector<ChunkSource> sources;
    for (const HostTensor& t : tensors) {
      if (t.onlyRank >= 0 && t.onlyRank != r) continue;
      const std::size_t es = dtypeSize(t.dtype);
      auto [offset, count] = t.onlyRank >= 0
                                 ? std::make_pair<std::int64_t, std::int64_t>(0, t.numel())
                                 : splitRange(t.numel(), r, world);
      if (count == 0) continue;
      ChunkSource c;
      c.name = t.name;
      c.dtype = t.dtype;
      c.shape = t.shape;
      c.offset = offset;
      c.count = count;
      c.data = t.bytes.data() + offset * static_cast<std::int64_t>(es);
      sources.push_back(c);
      report.set_bytes(report.bytes() + count * static_cast<std::int64_t>(es));
    }
    ShardFile file;
    const std::vector<Chunk> chunks =
        writeShard((std::filesystem::path(dir) / shardFileName(r, world)).string(), sources,
                   options, nullptr, &file);
    report.set_file_bytes(file.bytes);
    report.set_file_crc32c(file.crc32c);
    for (std::size_t i = 0; i < chunks.size(); ++i) {
      TensorEntry* e = report.add_tensors();
      e->set_name(sources[i].name);
      e->set_dtype(sources[i].dtype);
      for (std::int64_t d : sources[i].shape) e->add_shape(d);
      *e->add_chunks() = chunks[i];
    }
  }
  const Manifest m = assembleManifest(std::move(header), reports, options.checksumBlockBytes,
                                      "test manifest for " + dir);
  writeManifest(dir, m);
  removeSentinel(dir);
  return m;
}

// Deterministic bytes for a tensor of a dtype: distinct, recognisable values (every float
// finite, bool 0/1), so a misplaced chunk shows.
inline HostTensor makeTensor(const std::string& name, const std::string& dtype,
                             std::vector<std::int64_t> shape, std::uint32_t seed,
                             int onlyRank = -1) {
  HostTensor t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.onlyRank = onlyRank;
  const std::int64_t n = t.numel();
  const std::size_t es = dtypeSize(dtype);
  t.bytes.resize(static_cast<std::size_t>(n) * es);
  std::uint32_t x = seed * 2654435761u + 12345u;
  auto next = [&x] {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    return x;
  };
  for (std::int64_t i = 0; i < n; ++i) {
    char* p = t.bytes.data() + i * static_cast<std::int64_t>(es);
    const std::uint32_t v = next();
    if (dtype == "float32") {
      const float f = static_cast<float>(i) * 0.5f + static_cast<float>(v % 1000) / 1000.0f;
      std::memcpy(p, &f, 4);
    } else if (dtype == "float64") {
      const double d = static_cast<double>(i) * 0.25 - static_cast<double>(v % 997) / 7.0;
      std::memcpy(p, &d, 8);
    } else if (dtype == "float16") {
      // sign 0/1, exponent 1..29 (finite, normal), any mantissa
      const std::uint16_t h = static_cast<std::uint16_t>(
          ((v >> 20) & 1u) << 15 | (1u + (v >> 8) % 29u) << 10 | (v & 0x3FFu));
      std::memcpy(p, &h, 2);
    } else if (dtype == "bfloat16") {
      // the upper half of a finite float32
      const float f = (static_cast<float>(v % 20000) - 10000.0f) / 64.0f;
      std::uint32_t bits;
      std::memcpy(&bits, &f, 4);
      const std::uint16_t b = static_cast<std::uint16_t>(bits >> 16);
      std::memcpy(p, &b, 2);
    } else if (dtype == "bool") {
      *p = static_cast<char>(v & 1u);
    } else {
      // integers: the low bytes of a value that mixes the index in
      const std::uint64_t w = (static_cast<std::uint64_t>(v) << 20) ^ static_cast<std::uint64_t>(i);
      std::memcpy(p, &w, es);
    }
  }
  return t;
}

}  // namespace cohort::ckpt::testing
