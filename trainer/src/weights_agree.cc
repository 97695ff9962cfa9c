#include "weights_agree.h"

#include <ATen/ATen.h>

#include "cohort/ckpt/errors.h"

namespace cohort::trainer {

void agreeOnFailure(dist::Communicator& comm, FailureKind kind, const std::string& message,
                    c10::Device device) {
  const bool usesDevice = comm.backend().usesDeviceMemory();
  const c10::Device dev = usesDevice ? device : c10::Device(c10::kCPU);
  const int world = comm.size(), rank = comm.rank();
  at::Tensor first = at::full({1}, kind == FailureKind::kNone ? world : rank,
                              at::TensorOptions().dtype(at::kLong).device(dev));
  comm.allReduce(first, dist::ReduceOp::kMin);
  const auto root = static_cast<int>(first.cpu().item<std::int64_t>());
  if (root >= world) return;
  at::Tensor head =
      at::tensor({static_cast<std::int64_t>(kind), static_cast<std::int64_t>(message.size())},
                 at::kLong)
          .to(dev);
  comm.broadcast(head, root);
  head = head.cpu();
  const auto agreed = static_cast<FailureKind>(head[0].item<std::int64_t>());
  const std::int64_t n = head[1].item<std::int64_t>();
  at::Tensor bytes = rank == root
                         ? at::from_blob(const_cast<char*>(message.data()), {n}, at::kByte).clone()
                         : at::empty({n}, at::kByte);
  bytes = bytes.to(dev);
  if (n > 0) comm.broadcast(bytes, root);
  bytes = bytes.cpu();
  std::string text(reinterpret_cast<const char*>(bytes.data_ptr<std::uint8_t>()),
                   static_cast<std::size_t>(n));
  if (root != rank && agreed != FailureKind::kConfig)
    text = "rank " + std::to_string(root) + ": " + text;
  switch (agreed) {
    case FailureKind::kConfig:
      throw ConfigError(text);
    case FailureKind::kCorrupt:
      throw CheckpointCorrupt(text);
    case FailureKind::kWrite:
      throw CheckpointError(text);
    default:
      throw Error(text);
  }
}

}  // namespace cohort::trainer
