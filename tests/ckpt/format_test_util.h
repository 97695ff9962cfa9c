// gtest helpers of the checkpoint format tests (format_test.cc, integrity_test.cc): temporary
// directories, whole-file reads and writes, expected exceptions, the sample tensors.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "format_util.h"

namespace cohort::ckpt::testing {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "cohort_ckpt_format_XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return (fs::path(path_) / name).string(); }

 private:
  std::string path_;
};

inline std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void writeFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// Flips one byte of `path` inside the first occurrence of `pattern`; returns its file offset.
inline std::int64_t flipByteInPattern(const std::string& path, const std::string& pattern,
                                      std::size_t at) {
  std::string bytes = readFile(path);
  const std::size_t pos = bytes.find(pattern);
  if (pos == std::string::npos || bytes.find(pattern, pos + 1) != std::string::npos) return -1;
  bytes[pos + at] = static_cast<char>(bytes[pos + at] ^ 0x5A);
  writeFile(path, bytes);
  return static_cast<std::int64_t>(pos + at);
}

// Runs fn, expects exception E, returns its message.
template <typename E, typename Fn>
std::string messageOf(Fn&& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "unexpected exception type: " << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no exception thrown";
  return "";
}

inline const TensorEntry& entryOf(const Manifest& m, const std::string& name) {
  for (const TensorEntry& t : m.tensors()) {
    if (t.name() == name) return t;
  }
  throw std::runtime_error("no tensor " + name);
}

// Tensors of every dtype; per "rank" chunk sizes below and above the 64 KiB direct-write
// threshold, none a multiple of 4096 bytes.
inline std::vector<HostTensor> sampleTensors(int world) {
  std::vector<HostTensor> t;
  t.push_back(makeTensor("model/embed.weight", "float32", {1000, 53}, 1));  // ~70.7 KB/rank
  t.push_back(makeTensor("model/fc.weight", "float64", {129, 200}, 2));     // 68.8 KB/rank
  t.push_back(makeTensor("model/fc.bias", "float16", {70001}, 3));          // ~46.7 KB/rank
  t.push_back(makeTensor("model/norm.weight", "bfloat16", {3, 50000}, 4));  // 100 KB/rank
  t.push_back(makeTensor("model/mask", "bool", {1000, 7}, 5));
  t.push_back(makeTensor("model/positions", "int64", {5}, 6));
  t.push_back(makeTensor("model/ids", "int32", {33, 3}, 7));
  t.push_back(makeTensor("model/small16", "int16", {17}, 8));
  t.push_back(makeTensor("model/small8", "int8", {2, 2, 2}, 9));
  t.push_back(makeTensor("model/scale", "float32", {}, 10, /*onlyRank=*/0));
  t.push_back(makeTensor("optimizer/exp_avg/fc.weight", "float64", {129, 200}, 11));
  t.push_back(makeTensor("optimizer/exp_avg_sq/fc.weight", "float64", {129, 200}, 12));
  t.push_back(makeTensor("optimizer/step", "int64", {1}, 13, /*onlyRank=*/0));
  for (int r = 0; r < world; ++r) {
    t.push_back(makeTensor("rng/" + std::to_string(r) + "/torch_cpu", "uint8", {5056},
                           static_cast<std::uint32_t>(20 + r), r));
  }
  return t;
}

inline Manifest sampleHeader() {
  Manifest h;
  TrainerStateRecord* s = h.mutable_trainer_state();
  s->set_global_step(40);
  s->set_epoch(1.5);
  s->set_consumed_samples(2560);
  s->set_best_metric(0.25);
  s->set_best_model_checkpoint("out/checkpoint-30");
  s->set_optimizer("adamw");
  s->set_last_learning_rate(1e-4);
  h.set_training_args("output_dir: \"out\"\nlearning_rate: 0.0001\n");
  return h;
}

}  // namespace cohort::ckpt::testing
