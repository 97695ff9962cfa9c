#include "memory_network.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <thread>

#include "cohort/dist/error.h"

namespace cohort::test {

namespace {

using dist::detail::ControlMessage;
using dist::detail::Kind;
using dist::detail::Op;
using dist::detail::WaitPolicy;

// Tags of the simple (linear) collectives the in-memory network runs itself.
constexpr int kBroadcastTag = 31;
constexpr int kGatherTag = 32;
constexpr int kBarrierTag = 33;
constexpr int kMaxTag = 34;

// Eager: a send is copied into the receiver's box at once; a receive completes when
// testAll() finds its message.
class MemoryTransport final : public dist::detail::Transport {
 public:
  MemoryTransport(MemoryHub& hub, int rank) : hub_(hub), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return hub_.size(); }

  void postSend(int peer, int tag, const void* data, std::size_t bytes) override {
    checkAlive();
    const bool sent = hub_.sendData(rank_, peer, tag, data, bytes);
    checkAlive();
    if (!sent) throw DistError("in-memory transport: injected send failure on rank " +
                               std::to_string(rank_));
  }

  void postSendJoined(int peer, int tag, const void* head, std::size_t headBytes,
                      const void* body, std::size_t bodyBytes) override {
    std::vector<char> joined(headBytes + bodyBytes);
    if (headBytes > 0) std::memcpy(joined.data(), head, headBytes);
    if (bodyBytes > 0) std::memcpy(joined.data() + headBytes, body, bodyBytes);
    postSend(peer, tag, joined.data(), joined.size());
  }

  void postRecv(int peer, int tag, void* data, std::size_t bytes) override {
    checkAlive();
    recvs_.push_back(Recv{peer, tag, data, bytes});
  }

  bool testAll() override {
    checkAlive();
    // Receives from one peer and tag complete in posting order.
    while (!recvs_.empty()) {
      const Recv& r = recvs_.front();
      if (!hub_.takeData(rank_, r.peer, r.tag, r.data, r.bytes)) {
        // The ranks are threads, usually more than cores: let the peer run.
        std::this_thread::yield();
        return false;
      }
      recvs_.pop_front();
    }
    return true;
  }

 private:
  struct Recv {
    int peer;
    int tag;
    void* data;
    std::size_t bytes;
  };

  void checkAlive() const {
    if (hub_.dead(rank_)) {
      throw DistError("rank " + std::to_string(rank_) + " died (injected fault)");
    }
  }

  MemoryHub& hub_;
  const int rank_;
  std::deque<Recv> recvs_;
};

class MemoryControl final : public dist::detail::ControlChannel {
 public:
  MemoryControl(MemoryHub& hub, int rank) : hub_(hub), rank_(rank) {}
  void post(int dest, int tag, std::vector<char> payload) override {
    hub_.sendControl(rank_, dest, tag, std::move(payload));
  }
  bool sending() override { return false; }
  std::optional<ControlMessage> receive() override {
    ControlMessage m;
    if (!hub_.takeControl(rank_, &m.source, &m.tag, &m.payload)) return std::nullopt;
    return m;
  }

 private:
  MemoryHub& hub_;
  const int rank_;
};

class MemoryNetwork final : public dist::detail::Network {
 public:
  MemoryNetwork(MemoryHub& hub, int rank) : transport_(hub, rank), control_(hub, rank) {}
  dist::detail::Transport& transport() override { return transport_; }
  dist::detail::ControlChannel& control() override { return control_; }
  void checkUsable(const char*) override {}
  void close(bool) override {}

  void runOther(const Op& op, WaitPolicy& wait) override {
    const int n = transport_.size(), me = transport_.rank();
    const std::size_t es = elementSize(op.dtype);
    if (op.kind == Kind::kBroadcast) {
      if (n == 1 || op.count == 0) return;
      for (int p = 0; p < n; ++p) {
        if (me == op.root && p != me) transport_.postSend(p, kBroadcastTag, op.buf, op.count * es);
      }
      if (me != op.root) transport_.postRecv(op.root, kBroadcastTag, op.buf, op.count * es);
    } else if (op.kind == Kind::kBarrier) {
      for (int p = 0; p < n; ++p) {
        if (p == me) continue;
        transport_.postSend(p, kBarrierTag, nullptr, 0);
        transport_.postRecv(p, kBarrierTag, nullptr, 0);
      }
    } else {
      gather(op, es);
    }
    wait.waitUntil([&] { return transport_.testAll(); });
  }

  void maxReduce(dist::detail::SignatureBuffer& v, WaitPolicy& wait) override {
    const int n = transport_.size(), me = transport_.rank();
    std::vector<dist::detail::SignatureBuffer> peers(n);
    for (int p = 0; p < n; ++p) {
      if (p == me) continue;
      transport_.postSend(p, kMaxTag, v.data(), sizeof(v));
      transport_.postRecv(p, kMaxTag, peers[p].data(), sizeof(v));
    }
    wait.waitUntil([&] { return transport_.testAll(); });
    for (int p = 0; p < n; ++p) {
      for (std::size_t i = 0; p != me && i < v.size(); ++i) v[i] = std::max(v[i], peers[p][i]);
    }
  }

 private:
  // gather: everyone sends to the root; all_gather: everyone sends to everyone.
  void gather(const Op& op, std::size_t es) {
    const int n = transport_.size(), me = transport_.rank();
    const bool all = op.kind == Kind::kAllGatherV;
    std::size_t offset = 0;
    for (int p = 0; p < n; ++p) {
      const std::size_t bytes = op.counts[p] * es;
      char* slot = op.buf != nullptr ? static_cast<char*>(op.buf) + offset : nullptr;
      offset += bytes;
      if (p == me) {
        if ((all || me == op.root) && bytes > 0) std::memmove(slot, op.in, bytes);
        for (int q = 0; q < n; ++q) {
          if (q != me && (all || q == op.root)) transport_.postSend(q, kGatherTag, op.in, bytes);
        }
      } else if (all || me == op.root) {
        transport_.postRecv(p, kGatherTag, slot, bytes);
      }
    }
  }

  MemoryTransport transport_;
  MemoryControl control_;
};

}  // namespace

MemoryHub::MemoryHub(int size) : size_(size), sent_(size, 0), sentBytes_(size, 0) {
  for (int r = 0; r < size; ++r) {
    boxes_.push_back(std::make_unique<Box>());
    dead_.push_back(std::make_unique<std::atomic<bool>>(false));
  }
}

std::unique_ptr<dist::Backend> MemoryHub::backend(int rank, const dist::BackendOptions& options) {
  return dist::detail::makeHostBackend(std::make_unique<MemoryNetwork>(*this, rank), options,
                                       "memory");
}

void MemoryHub::dropDataMessage(int rank, std::int64_t nth) {
  std::lock_guard<std::mutex> lock(faultMu_);
  drop_[rank] = nth;
}

void MemoryHub::dieAtDataMessage(int rank, std::int64_t nth) {
  std::lock_guard<std::mutex> lock(faultMu_);
  die_[rank] = nth;
}

std::int64_t MemoryHub::dataMessagesSent(int rank) {
  std::lock_guard<std::mutex> lock(faultMu_);
  return sent_[rank];
}

std::int64_t MemoryHub::dataBytesSent(int rank) {
  std::lock_guard<std::mutex> lock(faultMu_);
  return sentBytes_[rank];
}

void MemoryHub::failAtDataMessage(int rank, std::int64_t nth) {
  std::lock_guard<std::mutex> lock(faultMu_);
  fail_[rank] = nth;
}

bool MemoryHub::sendData(int from, int to, int tag, const void* data, std::size_t bytes) {
  {
    std::lock_guard<std::mutex> lock(faultMu_);
    const std::int64_t nth = sent_[from]++;
    sentBytes_[from] += static_cast<std::int64_t>(bytes);
    auto at = [&](const std::map<int, std::int64_t>& plan) {
      auto it = plan.find(from);
      return it != plan.end() && it->second == nth;
    };
    if (at(fail_)) return false;
    if (at(drop_)) return true;
    auto die = die_.find(from);
    if (die != die_.end() && nth >= die->second) dead_[from]->store(true);
  }
  if (dead(from) || dead(to)) return true;
  std::vector<char> copy(bytes);
  if (bytes > 0) std::memcpy(copy.data(), data, bytes);
  Box& box = *boxes_[to];
  std::lock_guard<std::mutex> lock(box.mu);
  box.data[{from, tag}].push_back(std::move(copy));
  return true;
}

bool MemoryHub::takeData(int to, int from, int tag, void* out, std::size_t bytes) {
  Box& box = *boxes_[to];
  std::lock_guard<std::mutex> lock(box.mu);
  auto it = box.data.find({from, tag});
  if (it == box.data.end() || it->second.empty()) return false;
  std::vector<char>& m = it->second.front();
  if (m.size() > bytes) {  // as MPI_ERR_TRUNCATE
    throw DistError("in-memory transport: a " + std::to_string(m.size()) + "-byte message from rank " +
                    std::to_string(from) + " does not fit a " + std::to_string(bytes) +
                    "-byte receive");
  }
  if (!m.empty()) std::memcpy(out, m.data(), m.size());
  it->second.pop_front();
  return true;
}

void MemoryHub::sendControl(int from, int to, int tag, std::vector<char> payload) {
  if (dead(from) || dead(to)) return;
  Box& box = *boxes_[to];
  std::lock_guard<std::mutex> lock(box.mu);
  box.control.push_back(Message{from, tag, std::move(payload)});
}

bool MemoryHub::takeControl(int to, int* from, int* tag, std::vector<char>* payload) {
  if (dead(to)) return false;
  Box& box = *boxes_[to];
  std::lock_guard<std::mutex> lock(box.mu);
  if (box.control.empty()) return false;
  *from = box.control.front().from;
  *tag = box.control.front().tag;
  *payload = std::move(box.control.front().bytes);
  box.control.pop_front();
  return true;
}

}  // namespace cohort::test
