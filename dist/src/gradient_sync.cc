// GradientSync internals.
//
// The hook: LibTorch runs a leaf's AccumulateGrad node once per backward, after the incoming
// gradient has been added into .grad(). A post hook on that node is therefore the moment the
// parameter's gradient is final for this backward. We keep a shared_ptr to each accumulator
// (the variable only holds a weak one), so the same node, and our hook, serve every step.
// This API (Node::add_post_hook / del_post_hook, impl::grad_accumulator) is the same in
// LibTorch 1.13 and 2.x, so no version guard is needed.
//
// Unused parameters and agreement: a rank only learns at finish() that a parameter produced
// no gradient, but its peers may have launched that bucket long before. Each bucket buffer
// therefore carries one extra element, a flag, set to 1 at launch when the bucket holds a
// locally unused parameter. After the reduction every rank sees the same flag sums, so all
// ranks raise the error together (no extra collective, no rank left waiting).
#include "cohort/dist/gradient_sync.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <map>
#include <mutex>
#include <sstream>
#include <utility>

#include "cohort/dist/error.h"
#include "replica_check.h"

namespace cohort::dist {

using Clock = std::chrono::steady_clock;

namespace {

std::size_t capBytes(double mb, const char* field) {
  if (!(mb > 0) || !std::isfinite(mb)) {
    throw ConfigError(std::string("GradientSyncOptions::") + field + " must be > 0 MiB, got " +
                      std::to_string(mb));
  }
  return std::max<std::size_t>(1, static_cast<std::size_t>(mb * 1024.0 * 1024.0));
}

std::string optionsText(const GradientSyncOptions& o) {
  std::ostringstream s;
  s << std::boolalpha << "bucketCapMb=" << o.bucketCapMb << ", firstBucketCapMb=" << o.firstBucketCapMb
    << ", op=" << toString(o.op) << ", findUnusedParameters=" << o.findUnusedParameters
    << ", bf16Communication=" << o.bf16Communication;
  return s.str();
}

// numpy-style names, as people write them in configs ("float32", not c10's "Float").
std::string dtypeName(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kByte: return "uint8";
    case at::kChar: return "int8";
    case at::kShort: return "int16";
    case at::kInt: return "int32";
    case at::kLong: return "int64";
    case at::kBool: return "bool";
    default: return c10::toString(t);
  }
}

std::vector<std::int64_t> shapeOf(const at::Tensor& t) {
  return std::vector<std::int64_t>(t.sizes().begin(), t.sizes().end());
}

std::string quotedList(const std::vector<std::string>& names) {
  std::string s;
  for (std::size_t i = 0; i < names.size(); ++i) s += (i ? ", '" : "'") + names[i] + "'";
  return s;
}

}  // namespace

class GradientSync::Impl {
 public:
  struct Param {
    std::string name;
    at::Tensor tensor;
    at::Tensor gradView;  // view into its bucket's buffer
    std::shared_ptr<torch::autograd::Node> accumulator;
    std::uintptr_t hookKey = 0;
    std::size_t bucket = 0;
    bool ready = false;  // gradient produced in the current synchronised step
  };

  struct Bucket {
    at::Tensor buffer;  // numel + 1: the gradients, then the unused-parameter flag
    at::Tensor grads;   // buffer[0:numel]
    at::Tensor flag;    // buffer[numel:numel+1]
    at::Tensor paramsFlat;  // the parameters' storage (flatParameters), same layout as grads
    at::Tensor wire;        // bf16Communication: the bf16 copy of `buffer` that is reduced
    std::vector<std::size_t> params;
    std::size_t pending = 0;  // parameters not yet ready in the current step
    bool localUnused = false;
    std::unique_ptr<Work> work;
    Clock::time_point launchTime{};
  };

  Impl(torch::nn::Module& module, Communicator& comm, GradientSyncOptions options)
      : comm_(comm), options_(std::move(options)) {
    if (options_.shardedUpdate && !options_.flatParameters) {
      throw ConfigError("GradientSyncOptions::shardedUpdate needs flatParameters = true");
    }
    if (options_.op != ReduceOp::kSum && options_.op != ReduceOp::kAvg) {
      throw ConfigError(std::string("GradientSyncOptions::op must be sum or avg, got ") +
                        toString(options_.op));
    }
    const std::size_t cap = capBytes(options_.bucketCapMb, "bucketCapMb");
    const std::size_t firstCap = capBytes(options_.firstBucketCapMb, "firstBucketCapMb");
    collect(module);
    detail::verifyReplicas(comm_, describe(), "GradientSync");
    std::vector<at::Tensor> all;
    for (const auto& p : allParams_) all.push_back(p);
    for (const auto& b : buffers_) all.push_back(b);
    detail::broadcastTensors(comm_, all, /*root=*/0);
    buildBuckets(cap, firstCap);
    installHooks();
  }

  ~Impl() {
    for (auto& p : params_) {
      if (p.accumulator) p.accumulator->del_post_hook(p.hookKey);
    }
    // Buckets still in flight (finish() was never called) must complete before their buffers
    // go away; errors no longer matter here.
    for (auto& b : buckets_) {
      if (!b.work) continue;
      try {
        b.work->wait();
      } catch (...) {
      }
    }
  }

  // Runs on an autograd thread, once per parameter and backward.
  void onGradReady(std::size_t index) {
    std::lock_guard<std::mutex> lock(mu_);
    try {
      Param& p = params_[index];
      rebind(p);
      if (!sync_) return;
      if (p.ready) {
        throw DistError("GradientSync: parameter '" + p.name +
                        "' produced a gradient twice in one synchronised step (two backward "
                        "passes without finish() in between?)");
      }
      p.ready = true;
      if (--buckets_[p.bucket].pending == 0 && options_.overlap) launchReadyBuckets();
    } catch (...) {
      // Throwing through autograd would lose the type; finish() rethrows it.
      if (!hookError_) hookError_ = std::current_exception();
    }
  }

  void finish() {
    std::unique_lock<std::mutex> lock(mu_);
    if (!sync_) return;
    std::vector<std::string> localUnused;
    for (auto& p : params_) {
      rebind(p);
      if (p.ready) continue;
      localUnused.push_back(p.name);
      p.ready = true;
      Bucket& b = buckets_[p.bucket];
      b.localUnused = true;
      --b.pending;
    }
    std::exception_ptr error = hookError_;
    try {
      launchReadyBuckets();  // everything left, in index order, so every rank matches
    } catch (...) {
      if (!error) error = std::current_exception();
    }
    for (auto& b : buckets_) {
      if (!b.work) continue;
      try {
        b.work->wait();
        if (b.wire.defined()) widenReduced(b);
      } catch (...) {
        if (!error) error = std::current_exception();
      }
    }
    std::vector<std::size_t> flagged;
    if (!error && !buckets_.empty()) {
      at::Tensor f;
      if (options_.shardedUpdate) {
        // The reduce-scatter leaves no in-band flag on every rank: agree with one tiny sum.
        f = at::zeros({static_cast<std::int64_t>(buckets_.size())}, at::kDouble);
        for (std::size_t k = 0; k < buckets_.size(); ++k) {
          f[static_cast<std::int64_t>(k)] = buckets_[k].localUnused ? 1.0 : 0.0;
        }
        f = f.to(buckets_.front().buffer.device());
        try {
          comm_.allReduce(f);
        } catch (...) {
          if (!error) error = std::current_exception();
        }
        f = f.cpu();
      } else {
        // One host read of all flags (one device sync on CUDA).
        std::vector<at::Tensor> flags;
        for (auto& b : buckets_) flags.push_back(b.flag.to(at::kDouble));
        f = at::cat(flags).cpu();
      }
      for (std::size_t k = 0; k < buckets_.size(); ++k) {
        if (f[static_cast<std::int64_t>(k)].item<double>() != 0.0) flagged.push_back(k);
      }
    }
    resetStep();
    if (error) std::rethrow_exception(error);
    if (flagged.empty() || options_.findUnusedParameters) return;
    const std::string fix =
        ". Every parameter that requires grad must contribute to the loss on every rank in "
        "each synchronised step, or set GradientSyncOptions::findUnusedParameters = true";
    if (!localUnused.empty()) {
      throw DistError("GradientSync::finish: rank " + std::to_string(comm_.rank()) +
                      " has parameter(s) without a gradient in this step: " +
                      quotedList(localUnused) + fix);
    }
    std::vector<std::string> candidates;
    for (std::size_t k : flagged) {
      for (std::size_t i : buckets_[k].params) candidates.push_back(params_[i].name);
    }
    throw DistError("GradientSync::finish: another rank has parameter(s) without a gradient "
                    "in this step, among: " + quotedList(candidates) +
                    " (that rank's error names them)" + fix);
  }

  void zeroGrad() {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& b : buckets_) {
      if (b.work) throw DistError("GradientSync::zeroGrad: a step is in flight; call finish() first");
    }
    at::NoGradGuard noGrad;
    for (auto& b : buckets_) b.buffer.zero_();
    for (auto& p : params_) p.tensor.mutable_grad() = p.gradView;
  }

  bool setSync(bool enabled) {
    std::lock_guard<std::mutex> lock(mu_);
    return std::exchange(sync_, enabled);
  }
  bool sync() const {
    std::lock_guard<std::mutex> lock(mu_);
    return sync_;
  }

  std::vector<Clock::time_point> launchTimes() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<Clock::time_point> out;
    for (const auto& b : buckets_) out.push_back(b.launchTime);
    return out;
  }

  const GradientSyncOptions& options() const { return options_; }
  const std::vector<at::Tensor>& bucketGradients() const { return bucketGrads_; }
  const std::vector<at::Tensor>& bucketParameters() const { return bucketParams_; }

  std::pair<std::int64_t, std::int64_t> ownedRange(std::size_t bucket) const {
    const std::int64_t numel = buckets_.at(bucket).grads.numel();
    if (!options_.shardedUpdate) return {0, numel};
    const auto [lo, hi] = partitionOf(static_cast<std::size_t>(numel), comm_.size(), comm_.rank());
    return {static_cast<std::int64_t>(lo), static_cast<std::int64_t>(hi)};
  }

  void launchParameterGather(std::size_t bucket) {
    if (!options_.shardedUpdate) return;
    gathers_.push_back(comm_.allGatherPartitionsAsync(bucketParams_.at(bucket)));
  }

  void finishParameterGather() {
    std::exception_ptr error;
    for (auto& w : gathers_) {
      try {
        w->wait();
      } catch (...) {
        if (!error) error = std::current_exception();
      }
    }
    gathers_.clear();
    if (error) std::rethrow_exception(error);
  }
  const std::vector<ParamSlot>& slots() const { return slots_; }
  std::size_t numBuckets() const { return buckets_.size(); }
  std::int64_t lastStepCommBytes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return lastCommBytes_;
  }

 private:
  class ReadyHook : public torch::autograd::FunctionPostHook {
   public:
    ReadyHook(Impl* impl, std::size_t index) : impl_(impl), index_(index) {}
    torch::autograd::variable_list operator()(
        const torch::autograd::variable_list& outputs,
        const torch::autograd::variable_list& /*inputs*/) override {
      impl_->onGradReady(index_);
      return outputs;
    }

   private:
    Impl* impl_;
    std::size_t index_;
  };

  void collect(torch::nn::Module& module) {
    std::vector<const void*> seen;  // tied weights appear under several names: keep the first
    for (const auto& item : module.named_parameters(/*recurse=*/true)) {
      const at::Tensor& t = item.value();
      if (!t.defined()) continue;
      const void* impl = t.unsafeGetTensorImpl();
      if (std::find(seen.begin(), seen.end(), impl) != seen.end()) continue;
      seen.push_back(impl);
      allParams_.push_back(t);
      allParamNames_.push_back(item.key());
      if (t.requires_grad()) {
        Param p;
        p.name = item.key();
        p.tensor = t;
        params_.push_back(std::move(p));
      }
    }
    for (const auto& item : module.named_buffers(/*recurse=*/true)) {
      if (!item.value().defined()) continue;
      buffers_.push_back(item.value());
      bufferNames_.push_back(item.key());
    }
  }

  std::vector<detail::ReplicaEntry> describe() const {
    std::vector<detail::ReplicaEntry> out;
    out.push_back({"options", optionsText(options_), "", {}, false});
    for (std::size_t i = 0; i < allParams_.size(); ++i) {
      const at::Tensor& t = allParams_[i];
      out.push_back({"parameter", allParamNames_[i], dtypeName(t.scalar_type()), shapeOf(t),
                     t.requires_grad()});
    }
    for (std::size_t i = 0; i < buffers_.size(); ++i) {
      const at::Tensor& t = buffers_[i];
      out.push_back({"buffer", bufferNames_[i], dtypeName(t.scalar_type()), shapeOf(t), false});
    }
    return out;
  }

  // Reverse registration order approximates the order in which backward produces
  // gradients, so the buckets fill (and launch) early. One bucket holds one dtype/device.
  void buildBuckets(std::size_t cap, std::size_t firstCap) {
    struct Open {
      std::vector<std::size_t> params;
      std::size_t bytes = 0;
      std::size_t order = 0;
      std::size_t closed = 0;  // buckets already closed for this key
    };
    struct Closed {
      std::vector<std::size_t> params;
      std::size_t order;
    };
    std::map<std::string, Open> open;
    std::vector<Closed> closed;
    std::size_t counter = 0;
    for (std::size_t j = params_.size(); j-- > 0;) {
      const at::Tensor& t = params_[j].tensor;
      Open& o = open[t.device().str() + "/" + std::string(c10::toString(t.scalar_type()))];
      if (o.params.empty()) o.order = counter++;
      o.params.push_back(j);
      o.bytes += static_cast<std::size_t>(t.numel()) * t.element_size();
      if (o.bytes >= (o.closed == 0 ? firstCap : cap)) {
        closed.push_back({std::move(o.params), o.order});
        o.params.clear();
        o.bytes = 0;
        ++o.closed;
      }
    }
    for (auto& [key, o] : open) {
      if (!o.params.empty()) closed.push_back({std::move(o.params), o.order});
    }
    std::sort(closed.begin(), closed.end(),
              [](const Closed& a, const Closed& b) { return a.order < b.order; });

    at::NoGradGuard noGrad;
    slots_.resize(params_.size());
    for (std::size_t k = 0; k < closed.size(); ++k) {
      Bucket b;
      b.params = closed[k].params;
      std::int64_t numel = 0;
      for (std::size_t i : b.params) numel += params_[i].tensor.numel();
      const at::Tensor& first = params_[b.params.front()].tensor;
      b.buffer = at::zeros({numel + 1}, first.options().requires_grad(false));
      b.grads = b.buffer.narrow(0, 0, numel);
      b.flag = b.buffer.narrow(0, numel, 1);
      std::int64_t off = 0;
      for (std::size_t i : b.params) {
        Param& p = params_[i];
        p.bucket = k;
        p.gradView = b.buffer.narrow(0, off, p.tensor.numel()).view(p.tensor.sizes());
        if (p.tensor.grad().defined()) p.gradView.copy_(p.tensor.grad());
        p.tensor.mutable_grad() = p.gradView;
        slots_[i] = ParamSlot{p.name, k, off, p.tensor.numel()};
        off += p.tensor.numel();
      }
      if (options_.flatParameters) {
        // Parameters move into one flat buffer per bucket with the gradients' layout, so an
        // optimizer can update a whole bucket in one pass (FusedOptimizer).
        b.paramsFlat = at::empty({numel}, first.options().requires_grad(false));
        for (std::size_t i : b.params) {
          Param& p = params_[i];
          const ParamSlot& slot = slots_[i];
          at::Tensor view = b.paramsFlat.narrow(0, slot.offset, slot.numel).view(p.tensor.sizes());
          view.copy_(p.tensor);
          p.tensor.set_data(view);
        }
        bucketParams_.push_back(b.paramsFlat);
      }
      if (options_.bf16Communication && at::isFloatingType(first.scalar_type()) &&
          first.element_size() > 2) {
        b.wire = at::empty({numel + 1}, first.options().dtype(at::kBFloat16).requires_grad(false));
      }
      b.pending = b.params.size();
      bucketGrads_.push_back(b.grads);
      buckets_.push_back(std::move(b));
    }
  }

  void installHooks() {
    for (std::size_t i = 0; i < params_.size(); ++i) {
      Param& p = params_[i];
      p.accumulator = torch::autograd::impl::grad_accumulator(p.tensor);
      if (!p.accumulator) {
        throw DistError("GradientSync: parameter '" + p.name + "' has no gradient accumulator "
                        "(is it a leaf tensor?)");
      }
      p.hookKey = p.accumulator->add_post_hook(std::make_unique<ReadyHook>(this, i));
    }
  }

  // User code may reset or replace .grad() (an optimizer's zero_grad(set_to_none), a manual
  // assignment); then autograd wrote a fresh tensor. Move its value into the bucket so the
  // all-reduce sees it, and point .grad() back at the bucket view.
  void rebind(Param& p) {
    const at::Tensor& g = p.tensor.grad();
    if (g.defined() && g.data_ptr() == p.gradView.data_ptr() && g.sizes() == p.gradView.sizes()) {
      return;
    }
    at::NoGradGuard noGrad;
    if (g.defined()) {
      p.gradView.copy_(g);
    } else {
      p.gradView.zero_();
    }
    p.tensor.mutable_grad() = p.gradView;
  }

  // bf16Communication: the reduced bf16 values into the float gradients (this rank's partition
  // after a reduce-scatter, everything with the flag after an all-reduce).
  void widenReduced(Bucket& b) {
    at::NoGradGuard noGrad;
    if (!options_.shardedUpdate) {
      b.buffer.copy_(b.wire);
      return;
    }
    const auto [lo, hi] = partitionOf(static_cast<std::size_t>(b.grads.numel()), comm_.size(),
                                      comm_.rank());
    const auto first = static_cast<std::int64_t>(lo), count = static_cast<std::int64_t>(hi - lo);
    b.grads.narrow(0, first, count).copy_(b.wire.narrow(0, first, count));
  }

  // Launches complete buckets strictly in index order: bucket k+1 waits for bucket k even if
  // it completed first, so every rank issues the same sequence of collectives.
  void launchReadyBuckets() {
    while (nextLaunch_ < buckets_.size() && buckets_[nextLaunch_].pending == 0) {
      Bucket& b = buckets_[nextLaunch_++];
      b.launchTime = Clock::now();
      if (!options_.shardedUpdate) b.flag.fill_(b.localUnused ? 1 : 0);
      // bf16: the rounded copy travels (the flag, a small integer, is exact in bf16).
      at::Tensor send = b.buffer;
      if (b.wire.defined()) send = b.wire.copy_(b.buffer);
      const std::int64_t numel = b.grads.numel();
      if (options_.shardedUpdate) {
        b.work = comm_.reduceScatterAsync(send.narrow(0, 0, numel), options_.op);
        commBytes_ += numel * static_cast<std::int64_t>(send.element_size());
      } else {
        b.work = comm_.allReduceAsync(send, options_.op);
        commBytes_ += (numel + 1) * static_cast<std::int64_t>(send.element_size());
      }
    }
  }

  void resetStep() {
    if (nextLaunch_ > 0) lastCommBytes_ = std::exchange(commBytes_, 0);
    for (auto& p : params_) p.ready = false;
    for (auto& b : buckets_) {
      b.pending = b.params.size();
      b.localUnused = false;
      b.work.reset();
    }
    nextLaunch_ = 0;
    hookError_ = nullptr;
  }

  Communicator& comm_;
  GradientSyncOptions options_;
  std::vector<at::Tensor> allParams_;  // every parameter, for verification and broadcast
  std::vector<std::string> allParamNames_;
  std::vector<at::Tensor> buffers_;
  std::vector<std::string> bufferNames_;
  std::vector<Param> params_;  // those that require grad
  std::vector<Bucket> buckets_;
  std::vector<at::Tensor> bucketGrads_;
  std::vector<at::Tensor> bucketParams_;
  std::vector<std::unique_ptr<Work>> gathers_;  // parameter all-gathers in flight
  std::vector<ParamSlot> slots_;

  mutable std::mutex mu_;  // hooks may run on autograd worker threads
  bool sync_ = true;
  std::size_t nextLaunch_ = 0;
  std::exception_ptr hookError_;
  std::int64_t commBytes_ = 0, lastCommBytes_ = 0;  // this step's, the last finished step's
};

GradientSync::GradientSync(torch::nn::Module& module, Communicator& comm,
                           GradientSyncOptions options)
    : impl_(std::make_unique<Impl>(module, comm, std::move(options))) {}

GradientSync::~GradientSync() = default;

GradientSync::NoSyncGuard::NoSyncGuard(NoSyncGuard&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)), previous_(other.previous_) {}

GradientSync::NoSyncGuard::~NoSyncGuard() {
  if (owner_ != nullptr) owner_->restoreSync(previous_);
}

GradientSync::NoSyncGuard GradientSync::noSync() {
  return NoSyncGuard(this, impl_->setSync(false));
}

void GradientSync::restoreSync(bool previous) { impl_->setSync(previous); }

bool GradientSync::syncEnabled() const { return impl_->sync(); }

void GradientSync::finish() { impl_->finish(); }

void GradientSync::zeroGrad() { impl_->zeroGrad(); }

std::size_t GradientSync::numBuckets() const { return impl_->numBuckets(); }

const std::vector<at::Tensor>& GradientSync::bucketGradients() const {
  return impl_->bucketGradients();
}

const std::vector<ParamSlot>& GradientSync::paramSlots() const { return impl_->slots(); }

const std::vector<at::Tensor>& GradientSync::bucketParameters() const {
  return impl_->bucketParameters();
}

std::pair<std::int64_t, std::int64_t> GradientSync::ownedRange(std::size_t bucket) const {
  return impl_->ownedRange(bucket);
}

void GradientSync::launchParameterGather(std::size_t bucket) {
  impl_->launchParameterGather(bucket);
}

void GradientSync::finishParameterGather() { impl_->finishParameterGather(); }

std::vector<std::chrono::steady_clock::time_point> GradientSync::lastLaunchTimes() const {
  return impl_->launchTimes();
}

const GradientSyncOptions& GradientSync::options() const { return impl_->options(); }

std::int64_t GradientSync::lastStepCommBytes() const { return impl_->lastStepCommBytes(); }

}  // namespace cohort::dist
