#include "checkpointing.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/module.h>

#include <map>
#include <mutex>
#include <set>

#include "cohort/dist/communicator.h"
#include "cohort/dist/consensus.h"
#include "cohort/dist/fused_optimizer.h"
#include "cohort/dist/gradient_sync.h"
#include "cohort/dist/types.h"

namespace cohort::trainer {

namespace {

std::vector<std::int64_t> shapeOf(const at::Tensor& t) { return t.sizes().vec(); }

std::string rngName(int rank, const std::string& kind) {
  return "rng/" + std::to_string(rank) + "/" + kind;
}

// The generators a rank checkpoints: the CPU one, and the CUDA one of the model's device when
// the model lives on a GPU (the Context hands it out without CUDA headers).
std::vector<std::pair<std::string, at::Generator>> generators(torch::nn::Module& model) {
  std::vector<std::pair<std::string, at::Generator>> out{
      {"torch_cpu", at::detail::getDefaultCPUGenerator()}};
  for (const auto& p : model.parameters()) {
    if (p.is_cuda()) {
      out.emplace_back("torch_cuda", at::globalContext().defaultGenerator(p.device()));
      break;
    }
  }
  return out;
}

// Flat view of a tensor's storage; loads write through it, so it must not be a copy.
at::Tensor flatView(const at::Tensor& t, const std::string& name) {
  if (!t.is_contiguous()) {
    throw CheckpointError("parameter " + name +
                          " is not contiguous; cannot checkpoint it in place");
  }
  return t.detach().view({-1});
}

// For each bucket: the slots (parameters) it holds.
std::vector<std::vector<const dist::ParamSlot*>> slotsByBucket(const dist::GradientSync& sync) {
  std::vector<std::vector<const dist::ParamSlot*>> out(sync.numBuckets());
  for (const auto& s : sync.paramSlots()) out[s.bucket].push_back(&s);
  return out;
}

// Tensors outside the buckets: buffers and parameters that do not require grad.
std::vector<std::pair<std::string, at::Tensor>> looseTensors(torch::nn::Module& model,
                                                             const dist::GradientSync& sync) {
  std::set<std::string> bucketed;
  for (const auto& s : sync.paramSlots()) bucketed.insert(s.name);
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : model.named_parameters()) {
    if (!bucketed.count(p.key())) out.emplace_back(p.key(), p.value());
  }
  for (const auto& b : model.named_buffers()) out.emplace_back(b.key(), b.value());
  return out;
}

// Calls fn(slot, lo, hi) for the part [lo, hi) (bucket coordinates) of every slot of bucket
// k that falls inside [from, to).
template <class Fn>
void forSlotsIn(const std::vector<const dist::ParamSlot*>& slots, std::int64_t from,
                std::int64_t to, Fn&& fn) {
  for (const dist::ParamSlot* s : slots) {
    const std::int64_t lo = std::max(from, s->offset), hi = std::min(to, s->offset + s->numel);
    if (lo < hi) fn(*s, lo, hi);
  }
}

std::map<std::string, at::Tensor> paramsByName(torch::nn::Module& model) {
  std::map<std::string, at::Tensor> m;
  for (const auto& p : model.named_parameters()) m.emplace(p.key(), p.value());
  return m;
}

std::string describe(const std::vector<std::int64_t>& shape, const std::string& dtype) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "] " + dtype;
}

// Every way the checkpoint's tensors do not fit this model (and, with `optimizer`, its
// optimizer state): missing or extra model tensors, other shapes, other dtypes. One line
// each; empty when everything fits. A transposed weight has the same number of elements,
// so the element-range reads alone would load it silently.
std::vector<std::string> mismatches(const TrainingState& s, const ckpt::Manifest& manifest,
                                    bool optimizer) {
  std::map<std::string, const ckpt::TensorEntry*> inCkpt;
  for (const auto& t : manifest.tensors()) inCkpt[t.name()] = &t;
  std::vector<std::string> out;
  std::set<std::string> expected;
  auto expect = [&](const std::string& name, const std::vector<std::int64_t>& shape,
                    const std::string& dtype) {
    expected.insert(name);
    auto it = inCkpt.find(name);
    if (it == inCkpt.end()) {
      out.push_back(name + ": not in the checkpoint (the model has " + describe(shape, dtype) +
                    ")");
      return;
    }
    const std::vector<std::int64_t> saved(it->second->shape().begin(), it->second->shape().end());
    if (saved != shape || it->second->dtype() != dtype) {
      out.push_back(name + ": checkpoint " + describe(saved, it->second->dtype()) + ", model " +
                    describe(shape, dtype));
    }
  };
  for (const auto& p : s.model.named_parameters())
    expect("model/" + p.key(), shapeOf(p.value()), ckpt::dtypeName(p.value()));
  for (const auto& b : s.model.named_buffers())
    expect("model/" + b.key(), shapeOf(b.value()), ckpt::dtypeName(b.value()));
  for (const auto& [name, entry] : inCkpt) {
    if (name.rfind("model/", 0) == 0 && !expected.count(name))
      out.push_back(name + ": in the checkpoint, not in the model");
  }
  if (optimizer) {
    const auto params = paramsByName(s.model);
    for (const auto& slot : s.sync.paramSlots()) {
      const auto shape = shapeOf(params.at(slot.name));
      expect("optimizer/exp_avg/" + slot.name, shape,
             ckpt::dtypeName(s.optimizer.expAvg()[slot.bucket]));
      expect("optimizer/exp_avg_sq/" + slot.name, shape,
             ckpt::dtypeName(s.optimizer.expAvgSq()[slot.bucket]));
    }
  }
  return out;
}

}  // namespace

std::vector<ckpt::SavePiece> savePieces(const TrainingState& s, bool withOptimizer) {
  const int world = s.comm.size(), rank = s.comm.rank();
  std::vector<ckpt::SavePiece> out;
  const auto params = paramsByName(s.model);
  const auto buckets = slotsByBucket(s.sync);
  const auto& grads = s.sync.bucketGradients();
  for (std::size_t k = 0; k < buckets.size(); ++k) {
    const auto [plo, phi] =
        dist::partitionOf(static_cast<std::size_t>(grads[k].numel()), world, rank);
    const auto [olo, ohi] = s.sync.ownedRange(k);
    (void)ohi;
    forSlotsIn(
        buckets[k], static_cast<std::int64_t>(plo), static_cast<std::int64_t>(phi),
        [&](const dist::ParamSlot& slot, std::int64_t lo, std::int64_t hi) {
          const at::Tensor& p = params.at(slot.name);
          const auto shape = shapeOf(p);
          const std::int64_t off = lo - slot.offset;
          // Only the optimizer step changes these (async saves read them in place until then).
          constexpr bool kUntilStep = true;
          out.push_back({"model/" + slot.name, flatView(p, slot.name).slice(0, off, off + hi - lo),
                         shape, off, kUntilStep});
          if (!withOptimizer || s.optimizer.expAvg().empty()) return;
          out.push_back({"optimizer/exp_avg/" + slot.name,
                         s.optimizer.expAvg()[k].slice(0, lo - olo, hi - olo), shape, off,
                         kUntilStep});
          out.push_back({"optimizer/exp_avg_sq/" + slot.name,
                         s.optimizer.expAvgSq()[k].slice(0, lo - olo, hi - olo), shape, off,
                         kUntilStep});
        });
  }
  for (const auto& [name, t] : looseTensors(s.model, s.sync)) {
    const auto [lo, hi] = dist::partitionOf(static_cast<std::size_t>(t.numel()), world, rank);
    const auto a = static_cast<std::int64_t>(lo), b = static_cast<std::int64_t>(hi);
    out.push_back({"model/" + name, flatView(t, name).slice(0, a, b), shapeOf(t), a});
  }
  if (withOptimizer) {
    for (auto& [kind, gen] : generators(s.model)) {
      const at::Tensor state = gen.get_state();
      out.push_back({rngName(rank, kind), state, shapeOf(state), 0});
    }
  }
  return out;
}

LoadReport loadState(const TrainingState& s, ckpt::Checkpointer& ckpt, const std::string& dir,
                     const ckpt::Manifest& manifest, bool withOptimizer, bool withRng) {
  const int world = s.comm.size(), rank = s.comm.rank();
  std::set<std::string> present;
  for (const auto& t : manifest.tensors()) present.insert(t.name());
  LoadReport report;
  report.optimizerRestored = withOptimizer && !s.optimizer.expAvg().empty() &&
                             present.count("optimizer/exp_avg/" + s.sync.paramSlots().front().name);
  {
    // Checked before any byte is read; the same verdict on every rank (same manifest).
    std::string error;
    const auto bad = mismatches(s, manifest, report.optimizerRestored);
    if (!bad.empty()) {
      error = dir + " does not fit the model (" + std::to_string(bad.size()) + " mismatch" +
              (bad.size() == 1 ? "" : "es") + "): ";
      for (std::size_t i = 0; i < bad.size(); ++i) error += (i ? "; " : "") + bad[i];
    }
    ckpt.consensus().agree<ConfigError>(error);
  }
  std::vector<ckpt::LoadPiece> pieces;
  const auto params = paramsByName(s.model);
  const auto buckets = slotsByBucket(s.sync);
  const auto& grads = s.sync.bucketGradients();
  const bool flat = !s.sync.bucketParameters().empty();
  for (std::size_t k = 0; k < buckets.size(); ++k) {
    const auto numel = grads[k].numel();
    // Parameters: this rank's M-partition, then all-gathered (or all of it without flat
    // buffers to gather from).
    const auto [plo, phi] =
        flat ? dist::partitionOf(static_cast<std::size_t>(numel), world, rank)
             : std::pair<std::size_t, std::size_t>{0, static_cast<std::size_t>(numel)};
    forSlotsIn(buckets[k], static_cast<std::int64_t>(plo), static_cast<std::int64_t>(phi),
               [&](const dist::ParamSlot& slot, std::int64_t lo, std::int64_t hi) {
                 const std::int64_t off = lo - slot.offset;
                 pieces.push_back(
                     {"model/" + slot.name,
                      flatView(params.at(slot.name), slot.name).slice(0, off, off + hi - lo), off});
               });
    if (!report.optimizerRestored) continue;
    const auto [olo, ohi] = s.sync.ownedRange(k);
    forSlotsIn(buckets[k], olo, ohi,
               [&](const dist::ParamSlot& slot, std::int64_t lo, std::int64_t hi) {
                 const std::int64_t off = lo - slot.offset;
                 pieces.push_back({"optimizer/exp_avg/" + slot.name,
                                   s.optimizer.expAvg()[k].slice(0, lo - olo, hi - olo), off});
                 pieces.push_back({"optimizer/exp_avg_sq/" + slot.name,
                                   s.optimizer.expAvgSq()[k].slice(0, lo - olo, hi - olo), off});
               });
  }
  // Buffers and frozen parameters: whole, from every shard; or, from a node's copy of a
  // checkpoint saved on each node (which holds only that node's shards), this rank's own
  // partition, all-gathered below.
  const bool ownPartsOnly = manifest.local_shards_size() > 0;
  std::vector<at::Tensor> gatherLoose;
  for (const auto& [name, t] : looseTensors(s.model, s.sync)) {
    if (!ownPartsOnly) {
      pieces.push_back({"model/" + name, flatView(t, name), 0});
      continue;
    }
    const auto [lo, hi] = dist::partitionOf(static_cast<std::size_t>(t.numel()), world, rank);
    const auto a = static_cast<std::int64_t>(lo), b = static_cast<std::int64_t>(hi);
    gatherLoose.push_back(flatView(t, name));
    pieces.push_back({"model/" + name, gatherLoose.back().slice(0, a, b), a});
  }
  std::vector<std::pair<at::Generator, at::Tensor>> rngs;
  if (withRng) {
    for (auto& [kind, gen] : generators(s.model)) {
      if (!present.count(rngName(rank, kind))) continue;
      rngs.emplace_back(gen, gen.get_state().clone());  // the right size and dtype
      pieces.push_back({rngName(rank, kind), rngs.back().second, 0});
    }
  }
  {
    at::NoGradGuard noGrad;
    report.bytesRead = ckpt.load(dir, manifest, pieces);
    if (flat) {
      for (std::size_t k = 0; k < buckets.size(); ++k) {
        s.comm.allGatherPartitionsAsync(s.sync.bucketParameters()[k])->wait();
      }
    }
    for (const at::Tensor& t : gatherLoose) s.comm.allGatherPartitionsAsync(t)->wait();
  }
  if (report.optimizerRestored) s.optimizer.setStepCount(manifest.trainer_state().optimizer_step());
  for (auto& [gen, state] : rngs) {
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state);
    report.rngRestored = true;
  }
  return report;
}

void loadModelOnly(const TrainingState& s, ckpt::Checkpointer& ckpt, const std::string& dir) {
  const ckpt::Manifest m = ckpt.loadManifest(dir);
  loadState(s, ckpt, dir, m, /*withOptimizer=*/false, /*withRng=*/false);
}

}  // namespace cohort::trainer
