/* A minimal MPI program for the Slurm tests: every rank prints one line naming its rank,
 * the world size, its Slurm node and task ids and the world it agrees on, so the test can
 * check from the job's output file that srun --mpi=pmix built ONE world across nodes.
 * The all-reduce proves the ranks really talk to each other, not just that they started. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

static const char* envOr(const char* name, const char* fallback) {
  const char* v = getenv(name);
  return v ? v : fallback;
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int one = 1, total = 0;
  MPI_Allreduce(&one, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  char host[MPI_MAX_PROCESSOR_NAME];
  int len = 0;
  MPI_Get_processor_name(host, &len);
  printf("mpi_hello rank=%d size=%d sum=%d node=%s procid=%s localid=%s host=%s gpus=%s\n", rank,
         size, total, envOr("SLURMD_NODENAME", "-"), envOr("SLURM_PROCID", "-"),
         envOr("SLURM_LOCALID", "-"), host, envOr("CUDA_VISIBLE_DEVICES", "-"));
  fflush(stdout);
  MPI_Finalize();
  return total == size ? 0 : 1;
}
