// Pure functions of dist: half-type conversions (against torch's own), the env registry,
// and the device policy.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "cohort/dist/backend.h"
#include "cohort/dist/communicator.h"
#include "cohort/dist/device.h"
#include "cohort/dist/mpi_backend.h"
#include "cohort/dist/env.h"
#include "cohort/dist/error.h"
#include "cohort/dist/runtime.h"
#include "env_testing.h"
#include "reduce.h"
#include "test_util.h"

namespace cohort::test {
namespace {

using namespace cohort::dist;

// Threads of this process: tid -> voluntary context switches (each wake-up from a wait).
std::map<std::string, long> threadWakeups() {
  std::map<std::string, long> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream status(e.path() / "status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0) {
        out[e.path().filename().string()] = std::stol(line.substr(line.find(':') + 1));
      }
    }
  }
  return out;
}

// A one-rank backend (MPI_COMM_SELF) has no peer: its ops run on the thread that submits
// them, and its engine thread sleeps until shutdown instead of polling every 5 ms beside the
// training thread (issue 23: a Trainer at world 1 holds two backends, and GradientSync
// launches every bucket async). Before, the engine woke for every async op and ~60 times
// in 300 idle ms.
TEST(UnitEngine, OneRankBackendLeavesItsEngineAsleep) {
  const auto before = threadWakeups();
  BackendOptions o;
  auto comm = std::make_unique<Communicator>(makeMpiBackend(MPI_COMM_SELF, o));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::map<std::string, long> start;
  for (const auto& [tid, n] : threadWakeups()) {
    if (before.count(tid) == 0) start[tid] = n;  // the engine thread(s) this backend started
  }
  ASSERT_FALSE(start.empty());
  at::Tensor t = at::ones({4});
  for (int i = 0; i < 50; ++i) {
    comm->allReduce(t);  // blocking
    auto work = comm->allReduceAsync(t, ReduceOp::kSum);
    EXPECT_TRUE(work->isCompleted());  // ran on this thread, before the call returned
    work->wait();
  }
  EXPECT_TRUE(at::equal(t, at::ones({4})));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto after = threadWakeups();
  for (const auto& [tid, n] : start) {
    EXPECT_LE(after.at(tid) - n, 3) << "engine thread " << tid << " woke " << after.at(tid) - n
                                    << " times for 50 async ops and 300 idle ms";
  }
  comm.reset();  // shutdown wakes and joins the engine: no hang
}

TEST(UnitHalf, EveryFp16AndBf16BitPatternWidensLikeTorch) {
  at::Tensor bits = at::arange(0, 65536, at::kInt).to(at::kShort);
  for (auto type : {at::kHalf, at::kBFloat16}) {
    at::Tensor want = bits.view(type).to(at::kFloat);
    std::vector<float> got(65536);
    std::vector<std::uint16_t> raw(65536);
    for (int i = 0; i < 65536; ++i) raw[i] = static_cast<std::uint16_t>(i);
    detail::widenToFloat(raw.data(), got.data(), raw.size(),
                         type == at::kHalf ? DType::kFloat16 : DType::kBFloat16);
    at::Tensor gotT = at::from_blob(got.data(), {65536}, at::kFloat);
    EXPECT_TRUE(at::equal(at::isnan(gotT), at::isnan(want))) << c10::toString(type);
    at::Tensor finite = at::logical_not(at::isnan(want));
    EXPECT_TRUE(at::equal(gotT.masked_select(finite), want.masked_select(finite)))
        << c10::toString(type);
  }
}

TEST(UnitHalf, NarrowingRoundsToNearestEvenLikeTorch) {
  at::manual_seed(7);
  // Wide dynamic range incl. subnormals, overflow, ties, and specials.
  at::Tensor x = at::cat({at::randn({200000}) * at::pow(2.0, at::randint(-30, 20, {200000})),
                          at::tensor({0.0f, -0.0f, 65504.0f, 65519.0f, 65520.0f, 1e6f, -1e6f,
                                      1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048, 5.96e-8f, 2.98e-8f,
                                      std::numeric_limits<float>::infinity()})});
  std::vector<float> in(x.data_ptr<float>(), x.data_ptr<float>() + x.numel());
  std::vector<std::uint16_t> out(in.size());
  for (auto type : {at::kHalf, at::kBFloat16}) {
    detail::narrowFromFloat(in.data(), out.data(), in.size(),
                            type == at::kHalf ? DType::kFloat16 : DType::kBFloat16);
    at::Tensor want = x.to(type).view(at::kShort);
    at::Tensor got = at::from_blob(out.data(), {x.numel()}, at::kShort);
    const int64_t diff = at::ne(got, want).sum().item<int64_t>();
    EXPECT_EQ(diff, 0) << c10::toString(type);
  }
}

TEST(UnitEnv, DefaultsParseAndBadValuesNameTheVariable) {
  // Values are cached after the first read: clearCache() lets the test change them.
  unsetenv("COHORT_COLLECTIVE_TIMEOUT");
  env::testing::clearCache();
  EXPECT_DOUBLE_EQ(env::get(env::kCollectiveTimeout), 600.0);
  setenv("COHORT_COLLECTIVE_TIMEOUT", "2.5", 1);
  env::testing::clearCache();
  EXPECT_DOUBLE_EQ(BackendOptions::fromEnv().timeoutSeconds, 2.5);
  setenv("COHORT_COLLECTIVE_TIMEOUT", "ten", 1);
  env::testing::clearCache();
  const std::string msg = messageOf<ConfigError>([] { BackendOptions::fromEnv(); });
  EXPECT_EQ(msg, "environment variable COHORT_COLLECTIVE_TIMEOUT='ten' is not a number");
  setenv("COHORT_COLLECTIVE_TIMEOUT", "0", 1);
  env::testing::clearCache();
  EXPECT_NE(messageOf<ConfigError>([] { BackendOptions::fromEnv(); }).find("must be > 0"),
            std::string::npos);
  unsetenv("COHORT_COLLECTIVE_TIMEOUT");
  setenv("COHORT_CHECK_COLLECTIVES", "maybe", 1);
  env::testing::clearCache();
  EXPECT_NE(messageOf<ConfigError>([] { env::get(env::kCheckCollectives); })
                .find("COHORT_CHECK_COLLECTIVES='maybe'"),
            std::string::npos);
  unsetenv("COHORT_CHECK_COLLECTIVES");
  env::testing::clearCache();
  // An undeclared name no longer reaches run time: it does not compile (dist.env_compile).
}

TEST(UnitEnv, EveryVariableIsDocumented) {
  std::ifstream f(COHORT_SOURCE_DIR "/docs/env.md");
  ASSERT_TRUE(f.good()) << "docs/env.md missing";
  std::stringstream s;
  s << f.rdbuf();
  for (const auto& v : env::all()) {
    EXPECT_NE(s.str().find(std::string("`") + v.name + "`"), std::string::npos)
        << v.name << " is not in docs/env.md";
  }
}

TEST(UnitDevice, OneRankPerGpuPolicy) {
  Topology t;
  t.rank = 5;
  t.localRank = 1;
  t.localSize = 4;
  t.hostname = "n1";
  EXPECT_EQ(chooseDevice(t, 0, "auto", false).kind, DeviceKind::kCpu);
  EXPECT_EQ(chooseDevice(t, 8, "cpu", false).kind, DeviceKind::kCpu);
  const auto c = chooseDevice(t, 4, "auto", false);
  EXPECT_EQ(c.kind, DeviceKind::kCuda);
  EXPECT_EQ(c.index, 1);
  // srun --gpus-per-task: each task sees its own single device.
  EXPECT_EQ(chooseDevice(t, 1, "auto", true).index, 0);
  EXPECT_NE(messageOf<DistError>([&] { chooseDevice(t, 2, "auto", false); })
                .find("4 ranks on n1 but only 2 CUDA devices visible"),
            std::string::npos);
  EXPECT_EQ(messageOf<DistError>([&] { chooseDevice(t, 0, "cuda", false); }),
            "no CUDA device visible to rank 5 (COHORT_DEVICE=cuda)");
  EXPECT_NE(messageOf<ConfigError>([&] { chooseDevice(t, 0, "gpu", false); }).find("COHORT_DEVICE"),
            std::string::npos);
}

// The host map of fatal error lines and the start-up line of multi-host jobs (issue 19).
TEST(UnitHosts, DescribeHostsGroupsRanksByHostInOrderOfTheirLowestRank) {
  Topology t;
  t.hosts = {"n1", "n1", "n2", "n1", "n3", "n3", "n3"};
  EXPECT_EQ(describeHosts(t), "n1 (ranks 0-1,3), n2 (rank 2), n3 (ranks 4-6)");
  t.hosts = {"solo"};
  EXPECT_EQ(describeHosts(t), "solo (rank 0)");
}

}  // namespace
}  // namespace cohort::test
