// loadWeights / saveWeights (weights.h). Every source is turned into one list of named
// tensors (dtype, shape, a reader for its bytes), matched against the model's parameters and
// buffers after the prefix map, checked as a whole (so that one error lists every
// difference), and only then read: one CPU tensor of the file's dtype at a time, copied into
// the model (copy_ converts dtype and device).
#include "cohort/trainer/weights.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <set>

#include "cohort/ckpt/checkpointer.h"
#include "cohort/ckpt/format.h"
#include "cohort/ckpt/safetensors.h"
#include "cohort/dist/log.h"
#include "weights_agree.h"

namespace cohort::trainer {

namespace {

namespace fs = std::filesystem;
constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

at::ScalarType scalarTypeOf(const std::string& dtype) {
  static const std::map<std::string, at::ScalarType> kTypes = {
      {"float64", at::kDouble},    {"float32", at::kFloat}, {"float16", at::kHalf},
      {"bfloat16", at::kBFloat16}, {"int64", at::kLong},    {"int32", at::kInt},
      {"int16", at::kShort},       {"int8", at::kChar},     {"uint8", at::kByte},
      {"bool", at::kBool}};
  auto it = kTypes.find(dtype);
  if (it == kTypes.end()) throw CheckpointCorrupt("unknown dtype '" + dtype + "'");
  return it->second;
}

std::string shapeText(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// One tensor a source offers.
struct SourceTensor {
  std::string name;  // as stored
  std::string dtype;
  std::vector<std::int64_t> shape;
  std::int64_t bytes = 0;
  std::function<void(void*)> read;
};

struct Source {
  std::string description;
  std::vector<SourceTensor> tensors;
  std::vector<std::shared_ptr<void>> keepAlive;  // open files, manifests
};

void addSafetensors(Source& src, const std::string& file,
                    const std::set<std::string>* only = nullptr) {
  auto f = std::make_shared<ckpt::SafetensorsFile>(file);
  src.keepAlive.push_back(f);
  for (const auto& e : f->tensors()) {
    if (only != nullptr && only->count(e.name) == 0) {
      throw CheckpointCorrupt("safetensors file " + file + " holds '" + e.name +
                              "', which the index does not map to it");
    }
    const ckpt::SafetensorsFile* fp = f.get();
    src.tensors.push_back(
        {e.name, e.dtype, e.shape, e.bytes(), [fp, e](void* dst) { fp->read(e, dst); }});
  }
}

// Hugging Face's sharded layout: the index names a shard for each tensor; every shard must
// hold exactly the tensors the index maps to it.
void addIndexed(Source& src, const fs::path& dir) {
  const auto map = ckpt::readSafetensorsIndex((dir / kIndexName).string());
  std::map<std::string, std::set<std::string>> byShard;
  for (const auto& [name, shard] : map) byShard[shard].insert(name);
  std::set<std::string> found;
  for (const auto& [shard, names] : byShard) {
    const std::string file = (dir / shard).string();
    if (!fs::exists(file)) {
      throw CheckpointCorrupt((dir / kIndexName).string() + " names shard " + shard +
                              ", which does not exist");
    }
    addSafetensors(src, file, &names);
  }
  for (const auto& t : src.tensors) found.insert(t.name);
  for (const auto& [name, shard] : map) {
    if (!found.count(name)) {
      throw CheckpointCorrupt((dir / kIndexName).string() + " maps '" + name + "' to " + shard +
                              ", which does not hold it");
    }
  }
}

void addCheckpoint(Source& src, const std::string& dir) {
  auto m = std::make_shared<ckpt::Manifest>(ckpt::readManifest(dir));
  const ckpt::CheckpointInfo info = ckpt::inspectCheckpoint(dir, /*verifyChecksums=*/false);
  if (info.status != ckpt::CheckpointStatus::kValid) {
    throw CheckpointCorrupt(dir + " is " + ckpt::statusName(info.status) + ": " + info.reason);
  }
  auto reader = std::make_shared<ckpt::RangeReader>(dir, *m);
  src.keepAlive.push_back(m);
  src.keepAlive.push_back(reader);
  for (const auto& t : m->tensors()) {
    if (t.name().rfind("model/", 0) != 0) continue;
    const std::int64_t numel = ckpt::numelOf(t);
    const ckpt::TensorEntry* tp = &t;
    ckpt::RangeReader* rp = reader.get();
    src.tensors.push_back({t.name().substr(6), t.dtype(),
                           std::vector<std::int64_t>(t.shape().begin(), t.shape().end()),
                           numel * static_cast<std::int64_t>(ckpt::dtypeSize(t.dtype())),
                           [rp, tp, numel](void* dst) { rp->read(*tp, 0, numel, dst); }});
  }
}

Source openSource(const std::string& path) {
  std::error_code ec;
  Source src;
  src.description = path;
  if (fs::is_regular_file(path, ec)) {
    addSafetensors(src, path);
  } else if (fs::is_directory(path, ec)) {
    const fs::path dir(path);
    if (fs::exists(dir / ckpt::kManifestName) || fs::exists(dir / ckpt::kSentinelName)) {
      addCheckpoint(src, path);
    } else if (fs::exists(dir / kIndexName)) {
      addIndexed(src, dir);
    } else if (fs::exists(dir / kSingleName)) {
      addSafetensors(src, (dir / kSingleName).string());
    } else {
      throw ConfigError("loadWeights: " + path + " is a directory with neither " + kIndexName +
                        ", " + kSingleName + " nor a Cohort checkpoint (manifest.pb)");
    }
  } else {
    throw ConfigError("loadWeights: " + path + " does not exist");
  }
  return src;
}

std::string mapName(const std::string& name, const std::map<std::string, std::string>& prefixMap) {
  const std::pair<const std::string, std::string>* best = nullptr;
  for (const auto& kv : prefixMap) {
    if (name.rfind(kv.first, 0) == 0 && (best == nullptr || kv.first.size() > best->first.size()))
      best = &kv;
  }
  return best == nullptr ? name : best->second + name.substr(best->first.size());
}

}  // namespace

LoadWeightsReport loadWeights(torch::nn::Module& model, const std::string& path,
                              const LoadWeightsOptions& options) {
  Source src = openSource(path);
  std::map<std::string, at::Tensor> targets;
  for (const auto& p : model.named_parameters()) targets.emplace(p.key(), p.value());
  for (const auto& b : model.named_buffers()) targets.emplace(b.key(), b.value());

  LoadWeightsReport report;
  report.source = path;
  std::vector<std::string> shapeErrors, duplicates;
  std::map<std::string, const SourceTensor*> matched;
  std::map<std::string, std::string> storedAs;  // mapped -> stored name
  for (const SourceTensor& t : src.tensors) {
    const std::string name = mapName(t.name, options.prefixMap);
    const auto [it, fresh] = storedAs.emplace(name, t.name);
    if (!fresh) {
      duplicates.push_back("'" + it->second + "' and '" + t.name + "' both become '" + name + "'");
      continue;
    }
    auto target = targets.find(name);
    const std::string shown = name == t.name ? name : name + " (stored as " + t.name + ")";
    if (target == targets.end()) {
      report.unexpected.push_back(shown);
      continue;
    }
    if (target->second.sizes().vec() != t.shape) {
      shapeErrors.push_back(shown + ": file " + shapeText(t.shape) + ", model " +
                            shapeText(target->second.sizes().vec()));
      continue;
    }
    matched[name] = &t;
  }
  for (const auto& [name, tensor] : targets) {
    if (!storedAs.count(name)) report.missing.push_back(name);
  }
  const bool namesFail = options.strict && (!report.missing.empty() || !report.unexpected.empty());
  if (namesFail || !shapeErrors.empty() || !duplicates.empty()) {
    std::string msg = "loadWeights: " + path + " does not fit the model";
    auto list = [&msg](const char* what, const std::vector<std::string>& names) {
      if (names.empty()) return;
      msg += std::string("; ") + what + " (" + std::to_string(names.size()) + "): ";
      for (std::size_t i = 0; i < names.size(); ++i) msg += (i ? ", " : "") + names[i];
    };
    if (options.strict) {
      list("missing from the file", report.missing);
      list("unexpected in the file", report.unexpected);
    }
    list("shape mismatch", shapeErrors);
    list("name clash after the prefix map", duplicates);
    if (options.strict && (!report.missing.empty() || !report.unexpected.empty()) &&
        !options.prefixMap.empty()) {
      msg += " (names after the prefix map)";
    }
    throw ConfigError(msg);
  }

  at::NoGradGuard noGrad;
  for (const auto& [name, t] : matched) {
    at::Tensor host = at::empty(t->shape, at::TensorOptions().dtype(scalarTypeOf(t->dtype)));
    if (t->bytes > 0) t->read(host.data_ptr());
    at::Tensor& dst = targets.at(name);
    if (dst.scalar_type() != host.scalar_type()) {
      report.converted.push_back(name + ": " + t->dtype + " -> " + ckpt::dtypeName(dst));
    }
    dst.copy_(host);
    ++report.tensorsLoaded;
    report.bytesRead += t->bytes;
  }
  if (!report.missing.empty() || !report.unexpected.empty()) {
    COHORT_LOG_WARN(
        "loadWeights {}: {} model tensors not in the file, {} file tensors not in "
        "the model (strict = false)",
        path, report.missing.size(), report.unexpected.size());
  }
  return report;
}

LoadWeightsReport loadWeights(dist::Communicator& comm, torch::nn::Module& model,
                              const std::string& path, const LoadWeightsOptions& options) {
  LoadWeightsReport report;
  FailureKind kind = FailureKind::kNone;
  std::string message;
  try {
    report = loadWeights(model, path, options);
  } catch (const ConfigError& e) {
    kind = FailureKind::kConfig, message = e.what();
  } catch (const CheckpointCorrupt& e) {
    kind = FailureKind::kCorrupt, message = e.what();
  } catch (const std::exception& e) {
    kind = FailureKind::kOther, message = e.what();
  }
  c10::Device device(c10::kCPU);
  for (const auto& p : model.parameters()) {
    device = p.device();
    break;
  }
  agreeOnFailure(comm, kind, message, device);
  if (comm.rank() == 0) {
    COHORT_LOG_INFO("loadWeights: {} tensors ({:.1f} MiB) from {}", report.tensorsLoaded,
                    static_cast<double>(report.bytesRead) / (1 << 20), path);
  }
  return report;
}

std::int64_t saveWeights(torch::nn::Module& model, const std::string& file,
                         const std::map<std::string, std::string>& metadata) {
  std::vector<ckpt::SafetensorsTensorSpec> specs;
  std::vector<at::Tensor> host;
  auto add = [&](const std::string& name, const at::Tensor& t) {
    host.push_back(t.detach().cpu().contiguous());
    specs.push_back({name, ckpt::dtypeName(host.back()), host.back().sizes().vec()});
  };
  for (const auto& p : model.named_parameters()) add(p.key(), p.value());
  for (const auto& b : model.named_buffers()) add(b.key(), b.value());
  std::map<std::string, std::string> meta = metadata;
  meta["format"] = "pt";
  return ckpt::writeSafetensors(file, specs, meta, [&](std::size_t i, void* dst) {
    const at::Tensor& t = host[i];
    if (t.numel() > 0) std::memcpy(dst, t.data_ptr(), t.numel() * t.element_size());
  });
}

}  // namespace cohort::trainer
