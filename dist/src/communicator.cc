#include "cohort/dist/communicator.h"

#include <ATen/ATen.h>

#include <sstream>

#include "cohort/dist/error.h"
#include "work_state.h"

namespace cohort::dist {

namespace {

constexpr int kMaxDims = 8;

class TensorWork : public Work {
 public:
  TensorWork(std::unique_ptr<Work> inner, at::Tensor keep)
      : inner_(std::move(inner)), keep_(std::move(keep)) {}
  void wait() override { inner_->wait(); }
  bool isCompleted() override { return inner_->isCompleted(); }

 private:
  std::unique_ptr<Work> inner_;
  at::Tensor keep_;
};

std::string shapeString(const std::int64_t* dims, std::int64_t ndim) {
  std::ostringstream s;
  s << "[";
  for (std::int64_t i = 0; i < ndim; ++i) s << (i ? ", " : "") << dims[i];
  s << "]";
  return s.str();
}

}  // namespace

DType toDType(const at::Tensor& t, const char* what) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::kFloat32;
    case at::kDouble: return DType::kFloat64;
    case at::kBFloat16: return DType::kBFloat16;
    case at::kHalf: return DType::kFloat16;
    case at::kInt: return DType::kInt32;
    case at::kLong: return DType::kInt64;
    case at::kByte: return DType::kUInt8;
    default: break;
  }
  throw DistError(std::string(what) + ": dtype " + std::string(c10::toString(t.scalar_type())) +
                  " is not supported by collectives (supported: float32, float64, bfloat16, "
                  "float16, int32, int64, uint8)");
}

Communicator::Communicator(std::unique_ptr<Backend> backend) : backend_(std::move(backend)) {
  if (!backend_) throw DistError("Communicator: null backend");
}

Communicator::~Communicator() = default;

int Communicator::rank() const { return backend_->rank(); }
int Communicator::size() const { return backend_->size(); }

namespace {
void checkTensor(const Backend& b, const at::Tensor& t, const char* what) {
  if (!t.defined()) throw DistError(std::string(what) + ": undefined tensor");
  const bool handled = b.usesDeviceMemory() ? t.device().is_cuda() : t.device().is_cpu();
  if (!handled) {
    throw DistError(std::string(what) + ": tensor on " + t.device().str() + " but the " +
                    b.name() + " backend handles " +
                    (b.usesDeviceMemory() ? "CUDA tensors only" : "host (CPU) tensors only"));
  }
  if (!t.is_contiguous()) {
    throw DistError(std::string(what) + ": tensor must be contiguous (call .contiguous())");
  }
}
}  // namespace

std::unique_ptr<Work> Communicator::allReduceAsync(const at::Tensor& t, ReduceOp op) {
  checkTensor(*backend_, t, "all_reduce");
  const DType dt = toDType(t, "all_reduce");
  auto inner = backend_->allReduce(t.data_ptr(), static_cast<std::size_t>(t.numel()), dt, op);
  return std::make_unique<TensorWork>(std::move(inner), t);
}

// The blocking calls below wait for their collectives at once: CallerWaitsScope lets the
// backend run them on this thread instead of handing them to its engine thread.
void Communicator::allReduce(const at::Tensor& t, ReduceOp op) {
  detail::CallerWaitsScope callerWaits;
  allReduceAsync(t, op)->wait();
}

std::unique_ptr<Work> Communicator::reduceScatterAsync(const at::Tensor& t, ReduceOp op) {
  checkTensor(*backend_, t, "reduce_scatter");
  const DType dt = toDType(t, "reduce_scatter");
  auto inner = backend_->reduceScatter(t.data_ptr(), static_cast<std::size_t>(t.numel()), dt, op);
  return std::make_unique<TensorWork>(std::move(inner), t);
}

std::unique_ptr<Work> Communicator::allGatherPartitionsAsync(const at::Tensor& t) {
  checkTensor(*backend_, t, "all_gather_partitions");
  const DType dt = toDType(t, "all_gather_partitions");
  auto inner = backend_->allGatherPartitions(t.data_ptr(), static_cast<std::size_t>(t.numel()), dt);
  return std::make_unique<TensorWork>(std::move(inner), t);
}

void Communicator::broadcast(const at::Tensor& t, int root) {
  detail::CallerWaitsScope callerWaits;
  checkTensor(*backend_, t, "broadcast");
  const DType dt = toDType(t, "broadcast");
  backend_->broadcast(t.data_ptr(), static_cast<std::size_t>(t.numel()), dt, root)->wait();
}

void Communicator::barrier() {
  detail::CallerWaitsScope callerWaits;
  backend_->barrier()->wait();
}

void Communicator::abort(const std::string& reason) { backend_->abort(reason); }

std::vector<std::int64_t> Communicator::exchangeShapes(const at::Tensor& t, bool sameDim0,
                                                       const char* what) {
  checkTensor(*backend_, t, what);
  const DType dt = toDType(t, what);
  if (t.dim() > kMaxDims) {
    throw DistError(std::string(what) + ": tensors of more than 8 dims are not supported");
  }
  const int n = size();
  constexpr int kRec = kMaxDims + 2;  // dtype, ndim, dims
  std::vector<std::int64_t> mine(kRec, 0), all(static_cast<std::size_t>(kRec) * n, 0);
  mine[0] = static_cast<std::int64_t>(dt);
  mine[1] = t.dim();
  for (int i = 0; i < t.dim(); ++i) mine[2 + i] = t.size(i);
  // Shapes travel over the host backend path even for device tensors: a small host buffer.
  at::Tensor hostMine = at::from_blob(mine.data(), {kRec}, at::kLong);
  at::Tensor hostAll = at::from_blob(all.data(), {kRec * n}, at::kLong);
  if (backend_->usesDeviceMemory()) {
    at::Tensor dm = hostMine.to(t.device());
    at::Tensor da = at::empty({kRec * n}, dm.options());
    backend_->allGatherV(dm.data_ptr(), da.data_ptr(),
                         std::vector<std::size_t>(n, kRec), DType::kInt64)->wait();
    hostAll.copy_(da.cpu());
  } else {
    backend_->allGatherV(mine.data(), all.data(), std::vector<std::size_t>(n, kRec),
                         DType::kInt64)->wait();
  }
  std::vector<std::int64_t> dim0(n);
  for (int r = 0; r < n; ++r) {
    const std::int64_t* rec = all.data() + static_cast<std::size_t>(r) * kRec;
    dim0[r] = rec[1] > 0 ? rec[2] : 1;
    std::string problem;
    if (rec[0] != mine[0]) {
      problem = std::string("dtype ") + toString(static_cast<DType>(rec[0])) + " vs " +
                toString(dt);
    } else if (rec[1] != mine[1]) {
      problem = "rank " + std::to_string(r) + " has shape " + shapeString(rec + 2, rec[1]);
    } else {
      for (std::int64_t d = sameDim0 ? 0 : 1; d < rec[1]; ++d) {
        if (rec[2 + d] != mine[2 + d]) {
          problem = "rank " + std::to_string(r) + " has shape " + shapeString(rec + 2, rec[1]);
          break;
        }
      }
    }
    if (!problem.empty()) {
      if (rec[0] != mine[0]) problem = "rank " + std::to_string(r) + " has " + problem;
      throw DistError(std::string(what) + ": tensors differ across ranks: " + problem +
                      ", rank " + std::to_string(rank()) + " has shape " +
                      shapeString(mine.data() + 2, mine[1]) + " (" + toString(dt) + ")" +
                      (sameDim0 ? "" : "; only dim 0 may differ"));
    }
  }
  return dim0;
}

at::Tensor Communicator::allGather(const at::Tensor& t) {
  detail::CallerWaitsScope callerWaits;
  exchangeShapes(t, /*sameDim0=*/true, "all_gather");
  std::vector<std::int64_t> shape{size()};
  for (auto d : t.sizes()) shape.push_back(d);
  at::Tensor out = at::empty(shape, t.options());
  backend_->allGatherV(t.data_ptr(), out.data_ptr(),
                       std::vector<std::size_t>(size(), static_cast<std::size_t>(t.numel())),
                       toDType(t, "all_gather"))->wait();
  return out;
}

namespace {
std::vector<std::size_t> elementCounts(const at::Tensor& t, const std::vector<std::int64_t>& rows) {
  std::int64_t inner = 1;
  for (int d = 1; d < t.dim(); ++d) inner *= t.size(d);
  std::vector<std::size_t> counts;
  for (std::int64_t r : rows) counts.push_back(static_cast<std::size_t>(r * inner));
  return counts;
}
std::vector<std::int64_t> outShape(const at::Tensor& t, std::int64_t totalRows) {
  std::vector<std::int64_t> shape{totalRows};
  for (int d = 1; d < t.dim(); ++d) shape.push_back(t.size(d));
  return shape;
}
}  // namespace

at::Tensor Communicator::allGatherV(const at::Tensor& t, std::vector<std::int64_t>* rowsPerRank) {
  detail::CallerWaitsScope callerWaits;
  if (t.dim() == 0) throw DistError("all_gather_v: needs a tensor with at least one dim");
  const auto rows = exchangeShapes(t, /*sameDim0=*/false, "all_gather_v");
  std::int64_t total = 0;
  for (auto r : rows) total += r;
  at::Tensor out = at::empty(outShape(t, total), t.options());
  backend_->allGatherV(t.data_ptr(), out.data_ptr(), elementCounts(t, rows),
                       toDType(t, "all_gather_v"))->wait();
  if (rowsPerRank != nullptr) *rowsPerRank = rows;
  return out;
}

std::optional<at::Tensor> Communicator::gatherV(const at::Tensor& t, int root) {
  detail::CallerWaitsScope callerWaits;
  if (t.dim() == 0) throw DistError("gather: needs a tensor with at least one dim");
  if (root < 0 || root >= size()) {
    throw DistError("gather: root " + std::to_string(root) + " is not a rank of this group");
  }
  const auto rows = exchangeShapes(t, /*sameDim0=*/false, "gather");
  std::int64_t total = 0;
  for (auto r : rows) total += r;
  std::optional<at::Tensor> out;
  if (rank() == root) out = at::empty(outShape(t, total), t.options());
  backend_->gatherV(t.data_ptr(), out ? out->data_ptr() : nullptr, elementCounts(t, rows),
                    toDType(t, "gather"), root)->wait();
  return out;
}

}  // namespace cohort::dist
