// `cohort ckpt export --format safetensors`: a checkpoint's model tensors as one safetensors
// file, optionally converted to float32 or bfloat16. Conversions are done on the bits (no
// LibTorch): bfloat16 is the top half of a float32 rounded to nearest-even.
#include <cmath>
#include <cstring>

#include "cohort/ckpt/format.h"
#include "cohort/core/float_bits.h"
#include "cohort/ckpt/safetensors.h"

namespace cohort::ckpt {

namespace {

bool isFloating(const std::string& d) {
  return d == "float64" || d == "float32" || d == "float16" || d == "bfloat16";
}

using bits::bitsOf;
using bits::floatOf;

// float64 -> float32 rounded to ODD (truncate, then set the last bit when inexact): rounding
// that to bfloat16 (8 significant bits, 24 >= 8 + 2) gives the correctly rounded bfloat16
// of the float64, with no double-rounding error.
float floatRoundToOdd(double d) {
  if (std::isnan(d)) return static_cast<float>(d);
  float f = static_cast<float>(d);
  if (static_cast<double>(f) == d) return f;
  if (std::fabs(static_cast<double>(f)) > std::fabs(d)) f = std::nextafter(f, 0.0f);
  return floatOf(bitsOf(f) | 1u);
}

// Element i of a floating array as float32 (exact where float32 can hold it; float64 per
// `odd`: rounded to odd for a later bfloat16 rounding, else to nearest-even).
float toFloat(const std::string& from, const void* src, std::int64_t i, bool odd) {
  if (from == "float32") {
    float f;
    std::memcpy(&f, static_cast<const char*>(src) + 4 * i, 4);
    return f;
  }
  if (from == "float64") {
    double d;
    std::memcpy(&d, static_cast<const char*>(src) + 8 * i, 8);
    return odd ? floatRoundToOdd(d) : static_cast<float>(d);
  }
  std::uint16_t h;
  std::memcpy(&h, static_cast<const char*>(src) + 2 * i, 2);
  if (from == "bfloat16") return bits::bf16ToFloat(h);
  return bits::fp16ToFloat(h);
}

// The dtype a tensor is written as under a conversion option.
std::string targetDtype(const std::string& dtype, const std::string& option) {
  if (option == "keep" || !isFloating(dtype)) return dtype;
  return option == "float32" ? "float32" : "bfloat16";
}

}  // namespace

void convertElements(const std::string& from, const std::string& to, const void* src, void* dst,
                     std::int64_t n) {
  if (from == to) {
    std::memcpy(dst, src, static_cast<std::size_t>(n) * dtypeSize(from));
    return;
  }
  if (!isFloating(from) || (to != "float32" && to != "bfloat16")) {
    throw ConfigError("cannot convert " + from + " to " + to +
                      " (only floating tensors, to float32 or bfloat16)");
  }
  char* out = static_cast<char*>(dst);
  if (to == "float32") {
    for (std::int64_t i = 0; i < n; ++i) {
      const float f = toFloat(from, src, i, /*odd=*/false);
      std::memcpy(out + 4 * i, &f, 4);
    }
    return;
  }
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint16_t b = bits::floatToBf16(toFloat(from, src, i, /*odd=*/true));
    std::memcpy(out + 2 * i, &b, 2);
  }
}

int exportSafetensors(const std::string& dir, const std::string& outFile, const std::string& prefix,
                      const std::string& dtype) {
  if (dtype != "keep" && dtype != "float32" && dtype != "bf16") {
    throw ConfigError("export dtype must be keep, float32 or bf16 (got '" + dtype + "')");
  }
  const Manifest m = readManifest(dir);
  const CheckpointInfo info = inspectCheckpoint(dir, /*verifyChecksums=*/false);
  if (info.status != CheckpointStatus::kValid) {
    throw CheckpointCorrupt(dir + " is " + statusName(info.status) + ": " + info.reason);
  }
  std::vector<const TensorEntry*> entries;
  std::vector<SafetensorsTensorSpec> specs;
  for (const TensorEntry& t : m.tensors()) {
    if (t.name().rfind(prefix, 0) != 0) continue;
    const std::string name = t.name().substr(prefix.size());
    entries.push_back(&t);
    specs.push_back({name, targetDtype(t.dtype(), dtype),
                     std::vector<std::int64_t>(t.shape().begin(), t.shape().end())});
  }
  RangeReader reader(dir, m);
  std::vector<char> raw;
  std::map<std::string, std::string> meta{{"format", "pt"}};
  meta["cohort_checkpoint"] = dir;
  meta["cohort_global_step"] = std::to_string(m.trainer_state().global_step());
  writeSafetensors(outFile, specs, meta, [&](std::size_t i, void* dst) {
    const TensorEntry& t = *entries[i];
    const std::int64_t numel = numelOf(t);
    if (specs[i].dtype == t.dtype()) {
      reader.read(t, 0, numel, dst);  // checksums verified by the reader
      return;
    }
    raw.resize(static_cast<std::size_t>(numel) * dtypeSize(t.dtype()));
    reader.read(t, 0, numel, raw.data());
    convertElements(t.dtype(), specs[i].dtype, raw.data(), dst, numel);
  });
  return static_cast<int>(specs.size());
}

}  // namespace cohort::ckpt
