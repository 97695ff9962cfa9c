// The host backend's ring, engine and control plane in ONE process: N ranks are threads over
// an in-memory network (memory_network.h). The collectives must match a single-process
// reference for world sizes 1-5, every dtype and uneven counts; injected faults (a peer that
// stalls, a message that vanishes, a rank that dies or aborts mid-ring) must raise the
// same typed errors, naming the same things, as the MPI runs do (timeout_test.cc,
// errors_test.cc).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "cohort/dist/backend.h"
#include "cohort/dist/error.h"
#include "cohort/dist/runtime.h"
#include "memory_network.h"
#include "message_of.h"
#include "reduce.h"

namespace cohort::test {
namespace {

using namespace cohort::dist;
using Clock = std::chrono::steady_clock;

// Runs fn(rank, backend) on hub.size() threads, each rank with its own backend.
void runRanks(MemoryHub& hub, const BackendOptions& options,
              const std::function<void(int, Backend&)>& fn) {
  std::vector<std::unique_ptr<Backend>> backends;
  for (int r = 0; r < hub.size(); ++r) backends.push_back(hub.backend(r, options));
  std::vector<std::thread> threads;
  for (int r = 0; r < hub.size(); ++r) {
    threads.emplace_back([&, r] {
      try {
        fn(r, *backends[r]);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "rank " << r << " threw: " << e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  backends.clear();
  clearJobBrokenForTesting();  // the fault tests break their groups on purpose
}

double seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// ---- values of any dtype in a byte buffer ----

void put(DType t, std::vector<char>& b, std::size_t i, double v) {
  void* p = b.data() + i * elementSize(t);
  switch (t) {
    case DType::kFloat32: *static_cast<float*>(p) = static_cast<float>(v); return;
    case DType::kFloat64: *static_cast<double*>(p) = v; return;
    case DType::kBFloat16:
      *static_cast<std::uint16_t*>(p) = detail::floatToBf16(static_cast<float>(v));
      return;
    case DType::kFloat16:
      *static_cast<std::uint16_t*>(p) = detail::floatToFp16(static_cast<float>(v));
      return;
    case DType::kInt32: *static_cast<std::int32_t*>(p) = static_cast<std::int32_t>(v); return;
    case DType::kInt64: *static_cast<std::int64_t*>(p) = static_cast<std::int64_t>(v); return;
    case DType::kUInt8: *static_cast<std::uint8_t*>(p) = static_cast<std::uint8_t>(v); return;
  }
}

double get(DType t, const std::vector<char>& b, std::size_t i) {
  const void* p = b.data() + i * elementSize(t);
  switch (t) {
    case DType::kFloat32: return *static_cast<const float*>(p);
    case DType::kFloat64: return *static_cast<const double*>(p);
    case DType::kBFloat16: return detail::bf16ToFloat(*static_cast<const std::uint16_t*>(p));
    case DType::kFloat16: return detail::fp16ToFloat(*static_cast<const std::uint16_t*>(p));
    case DType::kInt32: return *static_cast<const std::int32_t*>(p);
    case DType::kInt64: return static_cast<double>(*static_cast<const std::int64_t*>(p));
    case DType::kUInt8: return *static_cast<const std::uint8_t*>(p);
  }
  return 0;
}

// Rank r's input element i: small integers, so sums are exact in every dtype (bf16 too)
// and any ring order gives the reference's result.
double input(DType t, int r, std::size_t i) {
  const double v = static_cast<double>((i * 7 + static_cast<std::size_t>(r) * 3 + i / 5) % 11);
  return t == DType::kUInt8 ? v : v - 5;
}

// What a single process computes: op folded over every rank's input, in double, once.
double reference(DType t, ReduceOp op, int n, std::size_t i) {
  double acc = input(t, 0, i);
  for (int r = 1; r < n; ++r) {
    const double v = input(t, r, i);
    acc = op == ReduceOp::kMax ? std::max(acc, v) : op == ReduceOp::kMin ? std::min(acc, v) : acc + v;
  }
  if (op != ReduceOp::kAvg) return acc;
  std::vector<char> b(elementSize(t));  // rounded to the dtype like the result
  put(t, b, 0, acc / n);
  return get(t, b, 0);
}

std::string where(const char* what, int n, DType t, ReduceOp op, std::size_t count, int rank,
                  std::size_t i) {
  return std::string(what) + " world " + std::to_string(n) + " " + toString(t) + " " +
         toString(op) + " count " + std::to_string(count) + ": rank " + std::to_string(rank) +
         " element " + std::to_string(i);
}

// The rank whose partition (partitionOf) holds element i.
int ownerOf(std::size_t count, int n, std::size_t i) {
  int r = 0;
  while (partitionOf(count, n, r).second <= i) ++r;
  return r;
}

// Checks all_reduce, reduce_scatter and all_gather_partitions of every count at once. The
// first wrong element of each rank is reported (after all collectives ran: a rank that
// stopped early would leave the others waiting).
void checkCollectives(int n, DType t, ReduceOp op, std::size_t sliceBytes,
                      const std::vector<std::size_t>& counts) {
  const double tol = op != ReduceOp::kAvg ? 0 : elementSize(t) == 2 ? 1e-2 : 1e-6;
  MemoryHub hub(n);
  BackendOptions o;
  o.timeoutSeconds = 60;
  o.sliceBytes = sliceBytes;
  runRanks(hub, o, [&](int rank, Backend& b) {
    std::string wrong;
    auto check = [&](const char* what, std::size_t count, std::size_t i, double got,
                     double want, double tolerance) {
      if (wrong.empty() && !(std::abs(got - want) <= tolerance)) {
        wrong = where(what, n, t, op, count, rank, i) + ": got " + std::to_string(got) +
                ", want " + std::to_string(want);
      }
    };
    for (std::size_t count : counts) {
      std::vector<char> ar(count * elementSize(t)), rs(ar.size()), ag(ar.size());
      const auto [lo, hi] = partitionOf(count, n, rank);
      for (std::size_t i = 0; i < count; ++i) {
        put(t, ar, i, input(t, rank, i));
        put(t, rs, i, input(t, rank, i));
        put(t, ag, i, i >= lo && i < hi ? input(t, rank, i) : 99);  // only ours is defined
      }
      b.allReduce(ar.data(), count, t, op)->wait();
      b.reduceScatter(rs.data(), count, t, op)->wait();
      b.allGatherPartitions(ag.data(), count, t)->wait();
      for (std::size_t i = 0; i < count; ++i) {
        const double want = reference(t, op, n, i);
        check("all_reduce", count, i, get(t, ar, i), want, tol * std::abs(want));
        if (i >= lo && i < hi) {
          check("reduce_scatter", count, i, get(t, rs, i), want, tol * std::abs(want));
        }
        check("all_gather_partitions", count, i, get(t, ag, i),
              input(t, ownerOf(count, n, i), i), 0);
      }
    }
    EXPECT_EQ(wrong, "");
  });
}

class UnitRing : public ::testing::TestWithParam<int> {};

TEST_P(UnitRing, MatchesTheSingleProcessReference) {
  const int n = GetParam();
  const DType dtypes[] = {DType::kFloat32, DType::kFloat64, DType::kBFloat16, DType::kFloat16,
                          DType::kInt32,   DType::kInt64,   DType::kUInt8};
  for (DType t : dtypes) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kMin, ReduceOp::kAvg}) {
      if (op == ReduceOp::kAvg && !isFloating(t)) continue;
      // Many slices of a few elements (uneven partitions and slice tails), then one slice.
      checkCollectives(n, t, op, 64, {0, 1, 4, 13, 257});
      checkCollectives(n, t, op, 1 << 20, {0, 4099});
      if (::testing::Test::HasFailure()) return;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, UnitRing, ::testing::Values(1, 2, 3, 4, 5));

// bf16/fp16 reductions put the half type on the wire: every rank sends exactly half the bytes
// of the same all-reduce (and reduce-scatter) in float32, while the sum is still taken in
// float32 and rounded once (256 + 1 + 1 + 1 = 259 -> bf16 260, where bf16 partial sums
// passed hop to hop would stay at 256).
TEST(UnitRingHalf, HalfTypesSendHalfTheBytesOfFloat32AndRoundOnce) {
  for (int n : {2, 3, 4}) {
    const std::size_t count = 4099;
    MemoryHub hub(n);
    BackendOptions o;
    o.timeoutSeconds = 60;
    o.sliceBytes = 4096;
    o.checkArguments = false;  // only the collectives' own messages are counted
    std::vector<std::int64_t> bytes32(n), bytes16(n);
    std::vector<float> got(n);
    runRanks(hub, o, [&](int rank, Backend& b) {
      std::vector<float> f(count, 1.0f);
      b.allReduce(f.data(), count, DType::kFloat32, ReduceOp::kSum)->wait();
      b.reduceScatter(f.data(), count, DType::kFloat32, ReduceOp::kSum)->wait();
      bytes32[rank] = hub.dataBytesSent(rank);
      std::vector<std::uint16_t> h(count, detail::floatToBf16(rank == 0 ? 256.0f : 1.0f));
      b.allReduce(h.data(), count, DType::kBFloat16, ReduceOp::kSum)->wait();
      b.reduceScatter(h.data(), count, DType::kBFloat16, ReduceOp::kSum)->wait();
      bytes16[rank] = hub.dataBytesSent(rank) - bytes32[rank];
      got[rank] = detail::bf16ToFloat(h[partitionOf(count, n, rank).first]);
    });
    for (int r = 0; r < n; ++r) {
      EXPECT_GT(bytes32[r], 0);
      EXPECT_EQ(2 * bytes16[r], bytes32[r]) << "world " << n << " rank " << r;
    }
    // After the all-reduce every element is 256 + (n-1); the reduce-scatter then sums that n
    // times: n * (255 + n) rounded once to bf16.
    const float once = detail::bf16ToFloat(detail::floatToBf16(
        static_cast<float>(n) * detail::bf16ToFloat(detail::floatToBf16(255.0f + n))));
    for (int r = 0; r < n; ++r) EXPECT_EQ(got[r], once) << "world " << n << " rank " << r;
  }
}

// The collectives outside the ring (the in-memory network's own) and the argument check.
TEST(UnitRingGroup, ArgumentMismatchIsTheSameErrorAsUnderMpi) {
  for (int n : {2, 3}) {
    MemoryHub hub(n);
    runRanks(hub, BackendOptions{}, [&](int rank, Backend& b) {
      std::vector<float> v(10 + rank, 1.0f);
      const std::string msg = messageOf<DistError>(
          [&] { b.allReduce(v.data(), v.size(), DType::kFloat32, ReduceOp::kSum)->wait(); });
      EXPECT_NE(msg.find("ranks disagree on the element count"), std::string::npos) << msg;
      // No data moved: the group still works.
      std::vector<float> ok(3, 1.0f);
      b.allReduce(ok.data(), 3, DType::kFloat32, ReduceOp::kSum)->wait();
      EXPECT_EQ(ok, std::vector<float>(3, static_cast<float>(n)));
      std::vector<std::int64_t> x = {rank == 1 ? 42 : 0};
      b.broadcast(x.data(), 1, DType::kInt64, 1)->wait();
      EXPECT_EQ(x[0], 42);
      b.barrier()->wait();
    });
  }
}

// Two ranks: an all_reduce's signature rides in one message with its first slice of data,
// so the check costs no round of its own: a one-slice all_reduce is two messages per rank
// (check + first halves, then the reduced halves), not three; k slices are 2k.
TEST(UnitRingGroup, TwoRankAllReduceSendsTheCheckWithTheFirstSlice) {
  for (std::size_t count : {std::size_t{1000}, std::size_t{4099}}) {
    MemoryHub hub(2);
    BackendOptions o;
    o.timeoutSeconds = 60;
    o.sliceBytes = 4096;  // slices of 512 float32 per rank's half
    const std::size_t slices = (partitionOf(count, 2, 0).second + 511) / 512;
    std::vector<std::int64_t> messages(2), bytes(2);
    std::vector<std::vector<float>> got(2);
    runRanks(hub, o, [&](int rank, Backend& b) {
      std::vector<float> v(count);
      for (std::size_t i = 0; i < count; ++i) v[i] = static_cast<float>(i % 7 + rank);
      b.allReduce(v.data(), count, DType::kFloat32, ReduceOp::kSum)->wait();
      messages[rank] = hub.dataMessagesSent(rank);
      bytes[rank] = hub.dataBytesSent(rank);
      got[rank] = v;
    });
    for (int r = 0; r < 2; ++r) {
      EXPECT_EQ(messages[r], static_cast<std::int64_t>(2 * slices)) << "count " << count;
      // Every element crosses once each way, plus one check header (signature + length).
      EXPECT_EQ(bytes[r], static_cast<std::int64_t>(count * sizeof(float) + 13 * 8))
          << "count " << count;
      for (std::size_t i = 0; i < count; ++i) {
        ASSERT_EQ(got[r][i], static_cast<float>(2 * (i % 7) + 1)) << "rank " << r << " i " << i;
      }
    }
  }
}

// The disagreements where one rank's check message carries data and the peer's op reads
// it differently, or not at all: every rank gets the same error, its buffer is untouched,
// nothing is left in flight (the next collectives pair up correctly).
TEST(UnitRingGroup, TwoRankDisagreementsWithDataInTheCheckWriteNothing) {
  struct Case {
    const char* name;
    const char* expect;
    std::function<void(int rank, Backend&, std::vector<float>&)> issue;
  };
  const std::size_t n = 4099;  // several slices of 4096 bytes
  const std::vector<Case> cases = {
      {"count", "ranks disagree on the element count",
       [&](int rank, Backend& b, std::vector<float>& v) {
         b.allReduce(v.data(), n - rank, DType::kFloat32, ReduceOp::kSum)->wait();
       }},
      {"same bytes, other dtype", "ranks disagree on the dtype (float32 vs int32)",
       [&](int rank, Backend& b, std::vector<float>& v) {
         b.allReduce(v.data(), n, rank == 0 ? DType::kFloat32 : DType::kInt32, ReduceOp::kSum)
             ->wait();
       }},
      {"reduce op", "ranks disagree on the reduce op",
       [&](int rank, Backend& b, std::vector<float>& v) {
         b.allReduce(v.data(), n, DType::kFloat32, rank == 0 ? ReduceOp::kSum : ReduceOp::kMax)
             ->wait();
       }},
      {"all_reduce vs broadcast", "ranks disagree on the collective",
       [&](int rank, Backend& b, std::vector<float>& v) {
         if (rank == 0) {
           b.allReduce(v.data(), n, DType::kFloat32, ReduceOp::kSum)->wait();
         } else {
           b.broadcast(v.data(), n, DType::kFloat32, 0)->wait();
         }
       }},
      {"bf16 (check alone) vs float32 (check with data)", "ranks disagree on the dtype",
       [&](int rank, Backend& b, std::vector<float>& v) {
         b.allReduce(v.data(), n, rank == 0 ? DType::kFloat32 : DType::kBFloat16,
                     ReduceOp::kSum)
             ->wait();
       }},
  };
  for (const Case& c : cases) {
    MemoryHub hub(2);
    BackendOptions o;
    o.timeoutSeconds = 20;
    o.sliceBytes = 4096;
    runRanks(hub, o, [&](int rank, Backend& b) {
      std::vector<float> v(2 * n);
      for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i + 10 * rank);
      const std::vector<float> before = v;
      const std::string msg = messageOf<DistError>([&] { c.issue(rank, b, v); });
      EXPECT_NE(msg.find(c.expect), std::string::npos) << c.name << ": " << msg;
      EXPECT_TRUE(std::memcmp(v.data(), before.data(), v.size() * sizeof(float)) == 0)
          << c.name << ": rank " << rank << "'s buffer was written";
      // Still in step: a good all_reduce and broadcast pair up and give the right values.
      std::vector<float> ok(n, static_cast<float>(rank + 1));
      b.allReduce(ok.data(), n, DType::kFloat32, ReduceOp::kSum)->wait();
      EXPECT_EQ(ok, std::vector<float>(n, 3.0f)) << c.name;
      std::vector<std::int64_t> x = {rank == 1 ? 42 : 0};
      b.broadcast(x.data(), 1, DType::kInt64, 1)->wait();
      EXPECT_EQ(x[0], 42) << c.name;
    });
  }
}

// ---- injected faults ----

constexpr double kTimeout = 1.0;

BackendOptions faultOptions(double timeout = kTimeout) {
  BackendOptions o;
  o.timeoutSeconds = timeout;
  o.sliceBytes = 4096;
  return o;
}

// Runs all_reduce #1 of `v` (float32 or float64) and returns its TimeoutError message
// ("" if none), checking that the timeout fired on time: not before the deadline, and
// within the query round plus room for a loaded machine.
template <typename T>
std::string timedOutAllReduce(Backend& b, std::vector<T>& v) {
  const DType t = sizeof(T) == 8 ? DType::kFloat64 : DType::kFloat32;
  const auto start = Clock::now();
  const std::string msg =
      messageOf<TimeoutError>([&] { b.allReduce(v.data(), v.size(), t, ReduceOp::kSum)->wait(); });
  if (!msg.empty()) {
    EXPECT_GE(seconds(start), kTimeout * 0.9) << msg;
    EXPECT_LE(seconds(start), kTimeout + 10.0) << msg;
  }
  return msg;
}

// As timeout_test.cc's SkippedCollectiveNamesTheMissingRank, for several world sizes.
TEST(UnitRingFault, StalledPeerTimesOutNamingIt) {
  for (int n : {2, 3, 5}) {
    MemoryHub hub(n);
    const int staller = n - 1;
    runRanks(hub, faultOptions(), [&](int rank, Backend& b) {
      std::vector<float> v(1024, 1.0f);
      b.allReduce(v.data(), v.size(), DType::kFloat32, ReduceOp::kSum)->wait();  // #0
      if (rank == staller) {
        // Alive (its engine answers queries) but never issues #1.
        std::this_thread::sleep_for(std::chrono::duration<double>(kTimeout + 1.5));
        return;
      }
      const std::string msg = timedOutAllReduce(b, v);
      EXPECT_NE(msg.find("all_reduce #1"), std::string::npos) << msg;
      EXPECT_NE(msg.find("timed out after 1 s"), std::string::npos) << msg;
      EXPECT_NE(msg.find("ranks that did not arrive: rank " + std::to_string(staller) +
                         " (last collective #0, now idle)"),
                std::string::npos)
          << msg;
      const std::string after = messageOf<DistError>([&] { b.barrier()->wait(); });
      EXPECT_NE(after.find("unusable"), std::string::npos) << after;
    });
  }
}

// The last data message rank 1 sends in the ring vanishes: its receiver times out, and as
// every peer has arrived, the error blames the transfer, not a rank. (A message lost
// earlier would shift the rest of that stream, which then misdelivers: transports the ring
// runs over never lose a message silently; a lost one shows up as this timeout.)
TEST(UnitRingFault, DroppedMessageTimesOutAsAStuckTransfer) {
  for (int n : {2, 4}) {
    MemoryHub hub(n);
    const int receiver = 2 % n;
    runRanks(hub, faultOptions(), [&](int rank, Backend& b) {
      std::vector<double> v(5000, 1.0);
      b.allReduce(v.data(), v.size(), DType::kFloat64, ReduceOp::kSum)->wait();  // #0
      // #1 posts as many messages as #0 did.
      if (rank == 1) hub.dropDataMessage(1, 2 * hub.dataMessagesSent(1) - 1);
      const std::string msg = timedOutAllReduce(b, v);
      if (rank != receiver) {
        EXPECT_EQ(msg, "") << "rank " << rank;
        return;
      }
      EXPECT_NE(msg.find("all_reduce #1 (5000 x float64, sum) timed out after 1 s on rank " +
                         std::to_string(rank)),
                std::string::npos)
          << msg;
      EXPECT_NE(msg.find("every peer reports it is in this collective"), std::string::npos)
          << msg;
    });
  }
}

// A rank dies in the middle of the ring: the others time out naming it as silent.
TEST(UnitRingFault, RankDyingMidRingIsNamed) {
  constexpr int n = 4, victim = 2;
  MemoryHub hub(n);
  runRanks(hub, faultOptions(), [&](int rank, Backend& b) {
    std::vector<float> v(3000, 1.0f);
    b.allReduce(v.data(), v.size(), DType::kFloat32, ReduceOp::kSum)->wait();  // #0
    if (rank == victim) {
      hub.dieAtDataMessage(victim, hub.dataMessagesSent(victim) + n - 1 + 3);
      const std::string own = messageOf<DistError>(
          [&] { b.allReduce(v.data(), v.size(), DType::kFloat32, ReduceOp::kSum)->wait(); });
      EXPECT_NE(own.find("died"), std::string::npos) << own;
      return;
    }
    const auto start = std::chrono::steady_clock::now();
    const std::string msg = timedOutAllReduce(b, v);
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_NE(msg.find("all_reduce #1"), std::string::npos) << msg;
    EXPECT_NE(msg.find("ranks that did not arrive: rank 2 (no answer: dead or stuck)"),
              std::string::npos)
        << msg;
    // The peers were asked during the last part of the timeout: the error comes at the
    // deadline, not after another wait for the dead rank's answer (0.5 s here).
    EXPECT_LT(waited, kTimeout + 0.4) << msg;
  });
}

// As timeout_test.cc's Abort.PeersFailFastWithTheReason, but the failure comes from inside
// the ring: rank 1's send fails mid-ring, and it aborts (as a program's main() does) while
// the others wait inside the same collective.
TEST(UnitRingFault, RankFailingMidRingAbortsItsPeersFastWithTheReason) {
  constexpr int n = 3;
  MemoryHub hub(n);
  runRanks(hub, faultOptions(60.0), [&](int rank, Backend& b) {
    std::vector<float> v(3000, 1.0f);
    b.allReduce(v.data(), v.size(), DType::kFloat32, ReduceOp::kSum)->wait();  // #0
    if (rank == 1) {
      hub.failAtDataMessage(1, hub.dataMessagesSent(1) + n - 1 + 3);
      const std::string own = messageOf<DistError>(
          [&] { b.allReduce(v.data(), v.size(), DType::kFloat32, ReduceOp::kSum)->wait(); });
      EXPECT_NE(own.find("injected send failure"), std::string::npos) << own;
      b.abort("bad batch 17");
      return;
    }
    const auto start = Clock::now();
    const std::string msg = messageOf<DistError>(
        [&] { b.allReduce(v.data(), v.size(), DType::kFloat32, ReduceOp::kSum)->wait(); });
    EXPECT_NE(msg.find("all_reduce #1"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rank 1 failed: bad batch 17"), std::string::npos) << msg;
    EXPECT_LT(seconds(start), 30.0);  // not the 60 s timeout
  });
}

}  // namespace
}  // namespace cohort::test
