#include "cohort/dist/fused_optimizer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>

#include "cohort/dist/error.h"

namespace cohort::dist {

namespace {

// The update of torch.optim.AdamW (1.13, single-tensor path), element by element:
//   p *= 1 - lr*wd;  m += (1-b1)(g-m);  v = b2 v + (1-b2) g^2
//   p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)
template <typename T>
void adamwKernel(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v,
                 std::int64_t n, T decayFactor, T oneMinusB1, T b2, T oneMinusB2, T stepSize,
                 T invSqrtBc2, T eps) {
  for (std::int64_t i = 0; i < n; ++i) {
    const T gi = g[i];
    const T mi = m[i] + oneMinusB1 * (gi - m[i]);
    const T vi = b2 * v[i] + oneMinusB2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decayFactor - stepSize * mi / (std::sqrt(vi) * invSqrtBc2 + eps);
  }
}

// p and g are indexed from `off` (bucket offset), m and v from `momentOff` (owned range).
// torch.optim.SGD (no momentum): p -= lr * (g + wd * p).
template <typename T>
void sgdKernel(T* __restrict p, const T* __restrict g, std::int64_t n, T lr, T wd) {
  for (std::int64_t i = 0; i < n; ++i) p[i] -= lr * (g[i] + wd * p[i]);
}

template <typename T>
void runSegment(const at::Tensor& p, const at::Tensor& g, const at::Tensor& m,
                const at::Tensor& v, std::int64_t off, std::int64_t momentOff, std::int64_t n,
                double lr, double wd, const OptimizerOptions& o, std::int64_t step) {
  const double bc1 = 1.0 - std::pow(o.beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(o.beta2, static_cast<double>(step));
  T* pp = p.data_ptr<T>() + off;
  const T* gp = g.data_ptr<T>() + off;
  if (o.kind == OptimizerKind::kSgd) {
    at::parallel_for(0, n, 1 << 15, [&](std::int64_t begin, std::int64_t end) {
      sgdKernel<T>(pp + begin, gp + begin, end - begin, static_cast<T>(lr), static_cast<T>(wd));
    });
    return;
  }
  T* mp = m.data_ptr<T>() + momentOff;
  T* vp = v.data_ptr<T>() + momentOff;
  at::parallel_for(0, n, 1 << 15, [&](std::int64_t begin, std::int64_t end) {
    adamwKernel<T>(pp + begin, gp + begin, mp + begin, vp + begin, end - begin,
                   static_cast<T>(1.0 - lr * wd), static_cast<T>(1.0 - o.beta1),
                   static_cast<T>(o.beta2), static_cast<T>(1.0 - o.beta2),
                   static_cast<T>(lr / bc1), static_cast<T>(1.0 / std::sqrt(bc2)),
                   static_cast<T>(o.eps));
  });
}

}  // namespace

FusedOptimizer::FusedOptimizer(GradientSync& sync, OptimizerOptions options,
                       std::function<bool(const std::string&)> decay)
    : sync_(sync), options_(options) {
  if (!(options_.lr >= 0) || !(options_.eps > 0) || !(options_.beta1 >= 0 && options_.beta1 < 1) ||
      !(options_.beta2 >= 0 && options_.beta2 < 1) || !(options_.weightDecay >= 0)) {
    throw ConfigError("FusedOptimizer: need lr >= 0, eps > 0, 0 <= beta1, beta2 < 1, weight_decay >= 0");
  }
  if (sync_.bucketParameters().size() != sync_.bucketGradients().size()) {
    throw ConfigError("FusedOptimizer needs GradientSync with flatParameters = true");
  }
  const auto& grads = sync_.bucketGradients();
  bool allCpu = true;
  for (std::size_t b = 0; b < grads.size(); ++b) {
    const at::Tensor& g = grads[b];
    if (g.scalar_type() != at::kFloat && g.scalar_type() != at::kDouble) {
      throw ConfigError(std::string("FusedOptimizer: parameters must be float32 or float64, got ") +
                        c10::toString(g.scalar_type()));
    }
    allCpu = allCpu && g.device().is_cpu();
    const auto [lo, hi] = sync_.ownedRange(b);
    const std::int64_t moments = options_.kind == OptimizerKind::kAdamW ? hi - lo : 0;
    // On the parameters' device (g.options() carries it).
    expAvg_.push_back(at::zeros({moments}, g.options()));
    expAvgSq_.push_back(at::zeros({moments}, g.options()));
  }
  if (options_.path == OptimizerPath::kHostLoop && !allCpu) {
    throw ConfigError("FusedOptimizer: path kHostLoop needs CPU parameters; these are on " +
                      grads.front().device().str() + " (use kAuto or kTensorOps)");
  }
  hostLoop_ = allCpu && options_.path != OptimizerPath::kTensorOps;
  // Each parameter's slice of its bucket's owned range, grouped by bucket.
  for (const ParamSlot& s : sync_.paramSlots()) {
    const auto [lo, hi] = sync_.ownedRange(s.bucket);
    const std::int64_t first = std::max(lo, s.offset), last = std::min(hi, s.offset + s.numel);
    if (first < last) segments_.push_back({s.bucket, first, last - first, decay ? decay(s.name) : true});
  }
  std::stable_sort(segments_.begin(), segments_.end(),
                   [](const Segment& a, const Segment& b) { return a.bucket < b.bucket; });
  if (!hostLoop_) buildDecayMasks();
}

void FusedOptimizer::step(double lr) {
  if (lr < 0) lr = options_.lr;
  ++step_;
  if (hostLoop_) {
    stepHostLoop(lr);
  } else {
    stepTensorOps(lr);
  }
}

void FusedOptimizer::stepHostLoop(double lr) {
  const auto& params = sync_.bucketParameters();
  const auto& grads = sync_.bucketGradients();
  std::size_t next = 0;
  for (std::size_t b = 0; b < params.size(); ++b) {
    const std::int64_t owned = sync_.ownedRange(b).first;
    for (; next < segments_.size() && segments_[next].bucket == b; ++next) {
      const Segment& s = segments_[next];
      const double wd = s.decay ? options_.weightDecay : 0.0;
      if (params[b].scalar_type() == at::kFloat) {
        runSegment<float>(params[b], grads[b], expAvg_[b], expAvgSq_[b], s.offset,
                          s.offset - owned, s.numel, lr, wd, options_, step_);
      } else {
        runSegment<double>(params[b], grads[b], expAvg_[b], expAvgSq_[b], s.offset,
                           s.offset - owned, s.numel, lr, wd, options_, step_);
      }
    }
    // Sharded: this bucket travels while the next one is updated.
    sync_.launchParameterGather(b);
  }
  sync_.finishParameterGather();
}

// Which part of each bucket's owned range decays. The segments tile the owned range (a bucket
// holds only parameters that require grad, packed without gaps), so "all" and "none" need no
// mask; a mixed bucket gets a 0/1 mask built once on the host and moved to the device.
void FusedOptimizer::buildDecayMasks() {
  const auto& params = sync_.bucketParameters();
  decay_.assign(params.size(), Decay::kAll);
  decayMask_.assign(params.size(), at::Tensor());
  std::vector<std::int64_t> decayed(params.size(), 0), total(params.size(), 0);
  for (const Segment& s : segments_) {
    total[s.bucket] += s.numel;
    if (s.decay) decayed[s.bucket] += s.numel;
  }
  for (std::size_t b = 0; b < params.size(); ++b) {
    if (decayed[b] == total[b]) continue;
    if (decayed[b] == 0) {
      decay_[b] = Decay::kNone;
      continue;
    }
    decay_[b] = Decay::kSome;
    const auto [lo, hi] = sync_.ownedRange(b);
    at::Tensor mask = at::zeros({hi - lo}, params[b].options().device(at::kCPU));
    for (const Segment& s : segments_) {
      if (s.bucket == b && s.decay) mask.narrow(0, s.offset - lo, s.numel).fill_(1);
    }
    decayMask_[b] = mask.to(params[b].device());
  }
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
  if (options_.kind == OptimizerKind::kAdamW) {
    for (const at::Tensor& p : params) {
      stepTensor_.push_back(p.is_cuda() ? at::zeros({}, p.options().dtype(at::kFloat))
                                        : at::Tensor());
    }
  }
#endif
}

void FusedOptimizer::stepTensorOps(double lr) {
  const auto& params = sync_.bucketParameters();
  const auto& grads = sync_.bucketGradients();
  const OptimizerOptions& o = options_;
  const double bc1 = 1.0 - std::pow(o.beta1, static_cast<double>(step_));
  const double bc2 = 1.0 - std::pow(o.beta2, static_cast<double>(step_));
  at::NoGradGuard noGrad;
  for (std::size_t b = 0; b < params.size(); ++b) {
    const auto [lo, hi] = sync_.ownedRange(b);
    if (hi > lo) {
      at::Tensor p = params[b].narrow(0, lo, hi - lo);
      const at::Tensor g = grads[b].narrow(0, lo, hi - lo);
      // Decoupled (AdamW) or L2 (SGD) decay first: p *= 1 - lr*wd where it applies. For SGD,
      // p - lr*(g + wd*p) = p*(1 - lr*wd) - lr*g, the same update in two ops.
      const double shrink = lr * o.weightDecay;
      if (shrink != 0 && decay_[b] == Decay::kAll) {
        p.mul_(1.0 - shrink);
      } else if (shrink != 0 && decay_[b] == Decay::kSome) {
        p.addcmul_(p, decayMask_[b], -shrink);
      }
      if (o.kind == OptimizerKind::kSgd) {
        p.add_(g, -lr);
      } else {
        at::Tensor& m = expAvg_[b];
        at::Tensor& v = expAvgSq_[b];
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
        if (stepTensor_[b].defined()) {
          // One multi-tensor kernel for the moments and the parameter update (decay is done).
          stepTensor_[b].fill_(static_cast<double>(step_));
          at::_fused_adamw_({p}, {g}, {m}, {v}, {}, {stepTensor_[b]}, lr, o.beta1, o.beta2,
                            /*weight_decay=*/0.0, o.eps, /*amsgrad=*/false, /*maximize=*/false);
          sync_.launchParameterGather(b);
          continue;
        }
#endif
        // The host loop's formulas, op by op: m += (1-b1)(g-m); v = b2 v + (1-b2) g^2;
        // p -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps).
        m.lerp_(g, 1.0 - o.beta1);
        v.mul_(o.beta2).addcmul_(g, g, 1.0 - o.beta2);
        at::Tensor denom = v.sqrt().mul_(1.0 / std::sqrt(bc2)).add_(o.eps);
        p.addcdiv_(m, denom, -lr / bc1);
      }
    }
    // Sharded: this bucket travels while the next one is updated.
    sync_.launchParameterGather(b);
  }
  sync_.finishParameterGather();
}

}  // namespace cohort::dist
