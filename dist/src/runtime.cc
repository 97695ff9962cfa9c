#include "cohort/dist/runtime.h"

#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <utility>
#include <vector>

#include "cohort/dist/allocator.h"
#include "cohort/dist/error.h"
#include "cohort/dist/log.h"
#include "exit_order_internal.h"
#include "mpi_check.h"

namespace cohort::dist {

namespace {
std::atomic<bool> gInitialized{false};
std::atomic<bool> gBroken{false};

std::string hostName() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown-host";
  return buf;
}
// Every rank's host name (fixed-size records: one MPI_Allgather at start-up).
void gatherHosts(Topology& t) {
  constexpr int kLen = HOST_NAME_MAX + 1;
  std::vector<char> mine(kLen, '\0'), all(static_cast<std::size_t>(kLen) * t.worldSize);
  t.hostname.copy(mine.data(), kLen - 1);
  COHORT_MPI_CHECK(
      MPI_Allgather(mine.data(), kLen, MPI_CHAR, all.data(), kLen, MPI_CHAR, MPI_COMM_WORLD));
  t.hosts.clear();
  for (int r = 0; r < t.worldSize; ++r) t.hosts.emplace_back(all.data() + r * kLen);
}
}  // namespace

std::string describeHosts(const Topology& t) {
  std::vector<std::pair<std::string, std::vector<int>>> byHost;
  for (int r = 0; r < static_cast<int>(t.hosts.size()); ++r) {
    auto it = std::find_if(byHost.begin(), byHost.end(),
                           [&](const auto& h) { return h.first == t.hosts[r]; });
    if (it == byHost.end()) it = byHost.insert(byHost.end(), {t.hosts[r], {}});
    it->second.push_back(r);
  }
  std::string out;
  for (const auto& [host, ranks] : byHost) {
    out += (out.empty() ? "" : ", ") + host + " (rank" + (ranks.size() > 1 ? "s " : " ");
    for (std::size_t i = 0; i < ranks.size();) {  // runs of consecutive ranks as a-b
      std::size_t j = i;
      while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
      out += (i ? "," : "") + std::to_string(ranks[i]);
      if (j > i) out += "-" + std::to_string(ranks[j]);
      i = j + 1;
    }
    out += ")";
  }
  return out;
}

bool isInitialized() { return gInitialized.load(); }
void markJobBroken() { gBroken.store(true); }
bool isJobBroken() { return gBroken.load(); }
void clearJobBrokenForTesting() { gBroken.store(false); }

Runtime::Runtime(int* argc, char*** argv) {
  if (gInitialized.exchange(true)) {
    throw DistError("cohort::dist::Runtime already exists in this process (create it once)");
  }
  tuneHostAllocator();  // before MPI and the first large allocation (allocator.h)
  try {
    int initialized = 0;
    COHORT_MPI_CHECK(MPI_Initialized(&initialized));
    int finalized = 0;
    COHORT_MPI_CHECK(MPI_Finalized(&finalized));
    if (finalized) throw DistError("MPI was already finalized in this process");
    if (!initialized) {
      // The comm engine issues every MPI call from its own thread, one at a time
      // (SERIALIZED); MULTIPLE is asked for so abort() may also post from the caller.
      int provided = 0;
      COHORT_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
      ownsMpi_ = true;
      if (provided < MPI_THREAD_SERIALIZED) {
        throw DistError("MPI provides thread level " + std::to_string(provided) +
                        "; Cohort needs at least MPI_THREAD_SERIALIZED");
      }
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    COHORT_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &topology_.rank));
    COHORT_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &topology_.worldSize));
    topology_.hostname = hostName();
    gatherHosts(topology_);

    MPI_Comm local = MPI_COMM_NULL;
    COHORT_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, topology_.rank,
                                         MPI_INFO_NULL, &local));
    COHORT_MPI_CHECK(MPI_Comm_rank(local, &topology_.localRank));
    COHORT_MPI_CHECK(MPI_Comm_size(local, &topology_.localSize));
    // Node leaders (local rank 0) number the nodes in order of their world rank.
    MPI_Comm leaders = MPI_COMM_NULL;
    COHORT_MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD,
                                    topology_.localRank == 0 ? 0 : MPI_UNDEFINED,
                                    topology_.rank, &leaders));
    int node[2] = {0, 1};
    if (leaders != MPI_COMM_NULL) {
      COHORT_MPI_CHECK(MPI_Comm_rank(leaders, &node[0]));
      COHORT_MPI_CHECK(MPI_Comm_size(leaders, &node[1]));
      MPI_Comm_free(&leaders);
    }
    COHORT_MPI_CHECK(MPI_Bcast(node, 2, MPI_INT, 0, local));
    MPI_Comm_free(&local);
    topology_.nodeIndex = node[0];
    topology_.nodeCount = node[1];
    detail::openWorldExitOrder();  // a private duplicate of the world: collective here
  } catch (...) {
    detail::closeWorldExitOrder(false);
    gInitialized.store(false);
    throw;
  }
}

Runtime::~Runtime() {
  gInitialized.store(false);
  detail::closeWorldExitOrder(!gBroken.load());
  if (!ownsMpi_) return;
  if (gBroken.load()) {
    // A peer may be gone or stuck: MPI_Finalize could block forever. Leave it to the
    // process exit (mpirun/srun then end the job). The error itself has been reported.
    COHORT_LOG_DEBUG("exiting without MPI_Finalize: the job is ending on an error");
    return;
  }
  MPI_Finalize();
}

std::unique_ptr<Runtime> init(int* argc, char*** argv) {
  auto rt = std::make_unique<Runtime>(argc, argv);
  const Topology& t = rt->topology();
  log::configure(t.rank, t.hostname, t.nodeCount > 1);
  if (const auto tuning = hostAllocatorTuning()) {  // what the constructor did
    COHORT_LOG_DEBUG("host allocator: {}", tuning->why);
  }
  if (t.nodeCount > 1) {  // the start-up line of multi-host jobs (shown on rank 0 by default)
    COHORT_LOG_INFO("rank {} on {}: {} ranks on {} hosts: {}", t.rank, t.hostname, t.worldSize,
                    t.nodeCount, describeHosts(t));
  }
  return rt;
}

}  // namespace cohort::dist
