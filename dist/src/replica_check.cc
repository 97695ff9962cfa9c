#include "replica_check.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <sstream>

#include "cohort/dist/error.h"

namespace cohort::dist::detail {

namespace {

constexpr char kSep = '\x1f';  // cannot occur in a parameter name or a dtype name

at::Device commDevice(Communicator& comm) {
  // NCCL collectives take CUDA tensors (on the current device); MPI takes host tensors.
  return comm.backend().usesDeviceMemory() ? at::Device(at::kCUDA) : at::Device(at::kCPU);
}

std::string encode(const ReplicaEntry& e) {
  std::string s = e.kind + kSep + e.name + kSep + e.dtype + kSep;
  for (std::size_t i = 0; i < e.shape.size(); ++i) {
    s += (i ? "," : "") + std::to_string(e.shape[i]);
  }
  s += kSep;
  s += e.requiresGrad ? '1' : '0';
  return s;
}

std::optional<ReplicaEntry> decode(const std::string& s) {
  std::vector<std::string> f;
  std::string cur;
  for (char c : s) {
    if (c == kSep) {
      f.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  f.push_back(cur);
  if (f.size() != 5) return std::nullopt;
  ReplicaEntry e;
  e.kind = f[0];
  e.name = f[1];
  e.dtype = f[2];
  std::stringstream dims(f[3]);
  std::string d;
  while (std::getline(dims, d, ',')) {
    if (!d.empty()) e.shape.push_back(std::stoll(d));
  }
  e.requiresGrad = f[4] == "1";
  return e;
}

// FNV-1a: a digest only needs to tell different descriptions apart, not resist attack.
std::int64_t digest(const std::string& s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  std::int64_t out;
  std::memcpy(&out, &h, sizeof(out));
  return out;
}

std::string brief(const ReplicaEntry& e) {
  if (e.kind == "options") return "options {" + e.name + "}";
  return e.kind + " '" + e.name + "' " + shapeText(e.shape) + " " + e.dtype +
         (e.kind == "parameter" && !e.requiresGrad ? " (requires_grad=false)" : "");
}

std::string difference(int r, const std::optional<ReplicaEntry>& mine,
                       const std::optional<ReplicaEntry>& root, std::size_t index,
                       std::int64_t countR, std::int64_t count0) {
  const std::string rr = "rank " + std::to_string(r);
  if (mine && root && mine->kind == "options" && root->kind == "options") {
    return rr + " has GradientSync options {" + mine->name + "}, rank 0 has {" + root->name + "}";
  }
  if (mine && root && mine->kind == root->kind && mine->name == root->name) {
    const std::string who = rr + " " + mine->kind + " '" + mine->name + "'";
    if (mine->shape != root->shape) {
      return who + " has shape " + shapeText(mine->shape) + ", rank 0 has " +
             shapeText(root->shape);
    }
    if (mine->dtype != root->dtype) {
      return who + " has dtype " + mine->dtype + ", rank 0 has " + root->dtype;
    }
    return who + " has requires_grad=" + (mine->requiresGrad ? "true" : "false") +
           ", rank 0 has " + (root->requiresGrad ? "true" : "false");
  }
  if (mine && root) {
    return rr + " has " + brief(*mine) + " where rank 0 has " + brief(*root) + " (entry " +
           std::to_string(index) + " in registration order)";
  }
  const std::string counts = " (rank " + std::to_string(r) + " lists " + std::to_string(countR) +
                             " parameters, buffers and option lines, rank 0 lists " +
                             std::to_string(count0) + ")";
  if (root) return rr + " lacks " + brief(*root) + " that rank 0 has" + counts;
  if (mine) return rr + " has an extra " + brief(*mine) + " that rank 0 lacks" + counts;
  return rr + " differs from rank 0 at entry " + std::to_string(index);
}

}  // namespace

std::string shapeText(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void verifyReplicas(Communicator& comm, const std::vector<ReplicaEntry>& entries,
                    const std::string& what) {
  if (entries.empty()) throw DistError(what + ": nothing to verify");
  std::vector<std::string> texts;
  std::vector<std::int64_t> digests;
  for (const auto& e : entries) {
    texts.push_back(encode(e));
    digests.push_back(digest(texts.back()));
  }
  const at::Device dev = commDevice(comm);
  at::Tensor mine = at::tensor(digests, at::kLong).to(dev);
  std::vector<std::int64_t> rows;
  at::Tensor all = comm.allGatherV(mine, &rows).cpu();
  const std::int64_t* d = all.data_ptr<std::int64_t>();

  // Every rank holds every digest, so every rank finds the same first difference.
  std::vector<std::int64_t> start(rows.size(), 0);
  for (std::size_t r = 1; r < rows.size(); ++r) start[r] = start[r - 1] + rows[r - 1];
  int badRank = -1;
  std::int64_t badIndex = -1;
  for (std::size_t r = 1; r < rows.size() && badRank < 0; ++r) {
    const std::int64_t n = std::max(rows[r], rows[0]);
    for (std::int64_t i = 0; i < n; ++i) {
      if (i >= rows[r] || i >= rows[0] || d[start[r] + i] != d[i]) {
        badRank = static_cast<int>(r);
        badIndex = i;
        break;
      }
    }
  }
  if (badRank < 0) return;

  // Second round, agreed by all: the full text of entry badIndex from every rank. A leading
  // marker byte keeps every contribution non-empty.
  std::string payload = "0";
  if (badIndex < static_cast<std::int64_t>(texts.size())) payload = "1" + texts[badIndex];
  at::Tensor bytes = at::empty({static_cast<std::int64_t>(payload.size())}, at::kByte);
  std::memcpy(bytes.data_ptr(), payload.data(), payload.size());
  std::vector<std::int64_t> lens;
  at::Tensor gathered = comm.allGatherV(bytes.to(dev), &lens).cpu();
  const char* g = reinterpret_cast<const char*>(gathered.data_ptr<std::uint8_t>());
  auto entryOf = [&](int r) -> std::optional<ReplicaEntry> {
    std::int64_t off = 0;
    for (int q = 0; q < r; ++q) off += lens[q];
    if (lens[r] < 1 || g[off] != '1') return std::nullopt;
    return decode(std::string(g + off + 1, g + off + lens[r]));
  };
  throw DistError(what + ": models differ across ranks: " +
                  difference(badRank, entryOf(badRank), entryOf(0),
                             static_cast<std::size_t>(badIndex), rows[badRank], rows[0]) +
                  "; every rank must build the same model with the same options");
}

void broadcastTensors(Communicator& comm, const std::vector<at::Tensor>& tensors, int root) {
  if (comm.size() == 1) return;
  at::NoGradGuard noGrad;
  // Collective dtypes have no bool/int8/int16: those travel widened, exactly.
  auto transport = [](at::ScalarType t) {
    switch (t) {
      case at::kBool:
      case at::kChar:
      case at::kShort: return at::kLong;
      default: return t;
    }
  };
  constexpr std::int64_t kChunkBytes = 64ll << 20;
  std::vector<bool> done(tensors.size(), false);
  for (std::size_t first = 0; first < tensors.size(); ++first) {
    if (done[first] || !tensors[first].defined()) continue;
    // Greedy group: this tensor and the following ones of the same dtype and device, up to a
    // chunk. Every rank forms the same groups because the tensor lists match.
    const at::ScalarType type = tensors[first].scalar_type();
    const at::Device device = tensors[first].device();
    std::vector<std::size_t> group;
    std::int64_t bytes = 0;
    for (std::size_t i = first; i < tensors.size(); ++i) {
      const at::Tensor& t = tensors[i];
      if (done[i] || !t.defined() || t.scalar_type() != type || t.device() != device) continue;
      const std::int64_t b = t.numel() * static_cast<std::int64_t>(t.element_size());
      if (!group.empty() && bytes + b > kChunkBytes) break;
      group.push_back(i);
      bytes += b;
      done[i] = true;
    }
    std::vector<at::Tensor> flat;
    for (std::size_t i : group) flat.push_back(tensors[i].reshape({-1}).to(transport(type)));
    at::Tensor buffer = at::cat(flat).contiguous();
    comm.broadcast(buffer, root);
    std::int64_t off = 0;
    for (std::size_t i : group) {
      const at::Tensor& t = tensors[i];
      t.copy_(buffer.narrow(0, off, t.numel()).view(t.sizes()));
      off += t.numel();
    }
  }
}

}  // namespace cohort::dist::detail
