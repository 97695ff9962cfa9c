// The 2-rank smoke job: starts the runtime, prints the topology, and checks every collective
// against values each rank can compute on its own. Exit 0 only if every rank agrees.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdio>
#include <string>

#include "cohort/dist/device.h"
#include "cohort/dist/error.h"
#include "cohort/dist/log.h"
#include "cohort/dist/runtime.h"

namespace {

constexpr const char* kUsage =
    "usage: smoke_job\n\n"
    "Starts the runtime on every rank (run it under mpirun or `cohort run`), prints the\n"
    "topology and checks all_reduce, all_gather_v and broadcast against values each rank\n"
    "computes alone. Exit 0 only if every rank agrees. It takes no arguments.\n\n"
    "options:\n"
    "  -h, --help\n"
    "        Print this help and exit.\n";

}  // namespace

int main(int argc, char** argv) {
  std::unique_ptr<cohort::dist::Runtime> rt;
  std::unique_ptr<cohort::dist::Communicator> comm;
  try {
    at::set_num_threads(1);
    rt = cohort::dist::init(&argc, &argv);
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        if (rt->rank() == 0) std::fputs(kUsage, stdout);
        return 0;
      }
    }
    if (argc > 1) {
      throw cohort::ConfigError(std::string("unexpected argument \"") + argv[1] +
                                "\": smoke_job takes no arguments (--help)");
    }
    const auto& t = rt->topology();
    const auto device = cohort::dist::chooseDevice(*rt);
    COHORT_LOG_INFO("world {} ranks on {} node(s); device: {}", t.worldSize, t.nodeCount,
                    device.reason);
    comm = cohort::dist::makeCommunicator(*rt, device);
    const int n = comm->size(), r = comm->rank();

    at::Tensor x = at::arange(1000, at::kDouble) * (r + 1);
    comm->allReduce(x);
    bool ok = at::equal(x, at::arange(1000, at::kDouble) * (n * (n + 1) / 2));
    at::Tensor rows = at::full({r + 1, 3}, static_cast<float>(r));
    at::Tensor all = comm->allGatherV(rows);
    ok = ok && all.size(0) == n * (n + 1) / 2;
    at::Tensor b = at::full({8}, static_cast<int64_t>(r == 0 ? 42 : -1));
    comm->broadcast(b, 0);
    ok = ok && at::equal(b, at::full({8}, static_cast<int64_t>(42)));
    at::Tensor flag = at::full({1}, static_cast<int64_t>(ok ? 1 : 0));
    comm->allReduce(flag, cohort::dist::ReduceOp::kMin);
    ok = flag.item<int64_t>() == 1;
    if (r == 0) {
      std::printf("smoke job: %d ranks, all_reduce/all_gather_v/broadcast %s\n", n,
                  ok ? "OK" : "WRONG");
    }
    comm.reset();
    return ok ? 0 : 1;
  } catch (const cohort::Error& e) {
    COHORT_LOG_ERROR("{}", e.what());
    if (comm) comm->abort(e.what());
    return dynamic_cast<const cohort::ConfigError*>(&e) != nullptr ? 2 : 1;
  }
}
