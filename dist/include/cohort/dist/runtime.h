// Process-level bootstrap of the distributed runtime: MPI initialisation with the thread
// level the communication engine needs, and the job topology (rank, local rank, node).
// Started without mpirun/srun, a program runs as a world of size 1.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace cohort::dist {

struct Topology {
  int rank = 0;        // in the world
  int worldSize = 1;
  int localRank = 0;   // among the ranks on this node (MPI_COMM_TYPE_SHARED)
  int localSize = 1;
  int nodeIndex = 0;   // nodes numbered by their lowest world rank
  int nodeCount = 1;
  std::string hostname;
  std::vector<std::string> hosts;  // the host name of every rank, by world rank
};

// "h0 (ranks 0-1), h1 (ranks 2-3)": every host and its ranks, hosts in order of their
// lowest rank. For start-up lines and fatal errors of multi-host jobs (issue 19).
std::string describeHosts(const Topology& topology);

// RAII owner of MPI. Exactly one per process; create it first thing in main() and keep it
// alive until every Communicator is destroyed. Construction is COLLECTIVE over the world
// (it computes the topology). Not copyable. The destructor finalises MPI when this object
// initialised it, unless a collective failed or the job was aborted: then it returns
// without MPI_Finalize (which could hang on peers that are gone), and the launcher ends
// the job.
class Runtime {
 public:
  // Throws DistError if MPI is unusable or a Runtime already exists in this process.
  Runtime(int* argc, char*** argv);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  const Topology& topology() const { return topology_; }
  int rank() const { return topology_.rank; }
  int worldSize() const { return topology_.worldSize; }

 private:
  Topology topology_;
  bool ownsMpi_ = false;
};

// Convenience: constructs the Runtime and configures logging with the rank tag.
std::unique_ptr<Runtime> init(int* argc = nullptr, char*** argv = nullptr);

// True between Runtime construction and destruction. Backends check it so that a collective
// issued before init() (or after shutdown) is a DistError, not an MPI crash.
bool isInitialized();

// Recorded by backends when a collective failed or was aborted; the Runtime then skips
// MPI_Finalize. Thread-safe.
void markJobBroken();
bool isJobBroken();
// Test support only: forget a recorded failure (tests that break a communicator on purpose).
void clearJobBrokenForTesting();

}  // namespace cohort::dist
