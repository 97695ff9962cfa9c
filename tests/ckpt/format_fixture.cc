// ckpt_format_fixture: writes one small checkpoint with known contents, as `world` ranks would
// (format_util.h), for the tests that look at checkpoints from outside Cohort: the
// independent Python reader and the `cohort ckpt` CLI tests.
//
// Usage: ckpt_format_fixture CHECKPOINT_DIR [--world N] [--block BYTES] [--expected DIR]
//                            [--best METRIC] [--preempted] [--version 1]
//        ckpt_format_fixture CHECKPOINT_DIR --edit NAME SHAPE [DTYPE]
// CHECKPOINT_DIR is the checkpoint itself (e.g. out/checkpoint-20; the step is taken from
// its name). With --expected, DIR receives one raw little-endian file per tensor and
// index.tsv: "name<TAB>dtype<TAB>shape (comma-separated, empty for a scalar)<TAB>file".
// --version 1 writes the manifest as format version 1 did (no checksums of its own).
// --edit changes one tensor's shape (and dtype) in an EXISTING checkpoint's manifest and
// re-seals its checksum, as a tool that edits manifests deliberately would.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iostream>

#include "format_util.h"

namespace {

using cohort::ckpt::testing::HostTensor;
using cohort::ckpt::testing::makeTensor;

int usage(const std::string& why) {
  std::cerr << "ckpt_format_fixture: " << why
            << "\nusage: ckpt_format_fixture CHECKPOINT_DIR [--world N] [--block BYTES] "
               "[--expected DIR] [--best METRIC] [--preempted] [--version 1]\n"
               "       ckpt_format_fixture CHECKPOINT_DIR --edit NAME SHAPE [DTYPE]\n";
  return 2;
}

std::vector<HostTensor> fixtureTensors(int world) {
  std::vector<HostTensor> t;
  // 168 000 bytes: at 2 ranks each writes 84 000 (> 64 KiB, not a multiple of 4096) through
  // the O_DIRECT path; the rest are written by HDF5.
  t.push_back(makeTensor("model/embed.weight", "float32", {600, 70}, 1));
  t.push_back(makeTensor("model/fc.weight", "float16", {10, 7}, 2));
  t.push_back(makeTensor("model/fc.bias", "bfloat16", {10}, 3));
  t.push_back(makeTensor("model/mask", "bool", {3, 5}, 4));
  t.push_back(makeTensor("model/scale", "float64", {}, 5, /*onlyRank=*/0));
  t.push_back(makeTensor("model/ids", "int64", {4}, 6));
  t.push_back(makeTensor("optimizer/exp_avg/embed.weight", "float32", {600, 70}, 7));
  t.push_back(makeTensor("optimizer/exp_avg_sq/embed.weight", "float32", {600, 70}, 8));
  t.push_back(makeTensor("optimizer/step", "int64", {1}, 9, /*onlyRank=*/0));
  for (int r = 0; r < world; ++r) {
    t.push_back(makeTensor("rng/" + std::to_string(r) + "/torch_cpu", "uint8", {5056},
                           static_cast<std::uint32_t>(10 + r), r));
  }
  return t;
}

}  // namespace

int editManifest(const std::string& dir, const std::string& name, const std::string& shape,
                 const std::string& dtype) {
  cohort::ckpt::Manifest m = cohort::ckpt::readManifest(dir);
  for (auto& t : *m.mutable_tensors()) {
    if (t.name() != name) continue;
    t.clear_shape();
    std::size_t pos = 0;
    while (pos < shape.size()) {
      const std::size_t comma = std::min(shape.find(',', pos), shape.size());
      t.add_shape(std::stoll(shape.substr(pos, comma - pos)));
      pos = comma + 1;
    }
    if (!dtype.empty()) t.set_dtype(dtype);
    cohort::ckpt::writeManifest(dir, m);
    std::cout << "edited " << name << " in " << dir << "\n";
    return 0;
  }
  std::cerr << "ckpt_format_fixture: no tensor " << name << " in " << dir << "\n";
  return 1;
}

int main(int argc, char** argv) {
  if (argc < 2) return usage("missing CHECKPOINT_DIR");
  const std::string dir = argv[1];
  if (argc >= 5 && std::string(argv[2]) == "--edit") {
    try {
      return editManifest(dir, argv[3], argv[4], argc > 5 ? argv[5] : "");
    } catch (const std::exception& e) {
      std::cerr << "ckpt_format_fixture: " << e.what() << "\n";
      return 1;
    }
  }
  int version = 2;
  int world = 2;
  std::int64_t block = 4096;
  std::string expected;
  double best = 0.0;
  bool haveBest = false, preempted = false;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "--world") {
        world = std::stoi(value());
      } else if (a == "--block") {
        block = std::stoll(value());
      } else if (a == "--expected") {
        expected = value();
      } else if (a == "--best") {
        best = std::stod(value()), haveBest = true;
      } else if (a == "--preempted") {
        preempted = true;
      } else if (a == "--version") {
        version = std::stoi(value());
      } else {
        return usage("unknown argument " + a);
      }
    } catch (const std::exception& e) {
      return usage(e.what());
    }
  }
  if (world < 1) return usage("--world must be >= 1");
  const std::string base = std::filesystem::path(dir).filename().string();
  std::int64_t step = 0;
  if (base.rfind("checkpoint-", 0) == 0) step = std::atoll(base.c_str() + 11);

  try {
    const std::vector<HostTensor> tensors = fixtureTensors(world);
    cohort::ckpt::Manifest header;
    auto* s = header.mutable_trainer_state();
    s->set_global_step(step);
    s->set_epoch(static_cast<double>(step) / 10.0);
    s->set_consumed_samples(step * 32);
    s->set_global_batch(32);
    s->set_max_steps(100);
    if (haveBest) {
      s->set_best_metric(best);
      s->set_best_model_checkpoint(dir);
    }
    s->set_optimizer("adamw");
    s->set_optimizer_step(step);
    s->set_lr_scheduler_type("linear");
    s->set_last_learning_rate(0.001 * (1.0 - static_cast<double>(step) / 100.0));
    s->set_preempted(preempted);
    auto* log = s->add_log_history();
    log->set_step(step);
    log->set_epoch(s->epoch());
    (*log->mutable_values())["loss"] = 2.5;
    header.set_training_args(
        "output_dir: \"" + std::filesystem::path(dir).parent_path().string() +
        "\"\nper_device_train_batch_size: 8\nlearning_rate: 0.001\nsave_steps: 10\n");
    cohort::ckpt::WriteOptions options;
    options.checksumBlockBytes = block;
    cohort::ckpt::Manifest m =
        cohort::ckpt::testing::writeCheckpoint(dir, world, tensors, header, options);
    if (version == 1) {
      m.set_format_version(1);
      m.clear_shard_bytes();
      m.clear_shard_crc32c();
      cohort::ckpt::writeManifest(dir, m);
    }

    if (!expected.empty()) {
      std::filesystem::create_directories(expected);
      std::ofstream index(std::filesystem::path(expected) / "index.tsv");
      for (std::size_t i = 0; i < tensors.size(); ++i) {
        const HostTensor& t = tensors[i];
        const std::string file = "tensor" + std::to_string(i) + ".bin";
        std::ofstream out(std::filesystem::path(expected) / file, std::ios::binary);
        out.write(t.bytes.data(), static_cast<std::streamsize>(t.bytes.size()));
        std::string shape;
        for (std::size_t d = 0; d < t.shape.size(); ++d)
          shape += (d ? "," : "") + std::to_string(t.shape[d]);
        index << t.name << '\t' << t.dtype << '\t' << shape << '\t' << file << '\n';
      }
      if (!index) throw std::runtime_error("cannot write " + expected + "/index.tsv");
    }
  } catch (const std::exception& e) {
    std::cerr << "ckpt_format_fixture: " << e.what() << "\n";
    return 1;
  }
  std::cout << "wrote " << dir << "\n";
  return 0;
}
