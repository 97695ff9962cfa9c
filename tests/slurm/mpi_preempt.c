/* A stand-in for the trainer's preemption path, small enough to run on the CPU Slurm test
 * cluster: it keeps the contract that the templates in slurm/ and docs/slurm.md describe.
 *
 *   mpi_preempt --output_dir=DIR [--max_seconds=S] [other --flags, ignored]
 *
 * (the trainer's flag names, so the sbatch templates start it exactly like the trainer).
 * First run (no DIR/checkpoint): each rank writes DIR/running.<rank>, then
 * "trains": every 100 ms one all-reduce (MAX) of its SIGTERM flag, the same agreement the
 * trainer rides on its per-step all-reduce. When any rank saw SIGTERM, all ranks stop at
 * the same step, each writes DIR/term.<rank> (whether SIGTERM reached THIS rank),
 * rank 0 writes the "checkpoint" atomically and then the marker DIR/PREEMPTED, and
 * all exit 0. No TERM within --max_seconds (default 120): exit 3.
 * Later run (checkpoint present): every rank reads it, prints that it resumed from that
 * step, rank 0 writes DIR/done, exit 0. */
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t gotTerm = 0;

static void onTerm(int sig) {
  (void)sig;
  gotTerm = 1;
}

static void writeFile(const char* dir, const char* name, const char* text) {
  char tmp[4096], path[4096];
  snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name);
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE* f = fopen(tmp, "w");
  if (!f || fputs(text, f) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0 || fclose(f) != 0 ||
      rename(tmp, path) != 0) {
    fprintf(stderr, "mpi_preempt: cannot write %s\n", path);
    MPI_Abort(MPI_COMM_WORLD, 4);
  }
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char** argv) {
  const char* dir = NULL;
  double maxSeconds = 120.0;
  for (int i = 1; i < argc; ++i) {
    if (strncmp(argv[i], "--output_dir=", 13) == 0) dir = argv[i] + 13;
    if (strncmp(argv[i], "--max_seconds=", 14) == 0) maxSeconds = atof(argv[i] + 14);
  }
  if (!dir || !*dir) {
    fprintf(stderr, "usage: mpi_preempt --output_dir=DIR [--max_seconds=S]\n");
    return 2;
  }
  /* Install before MPI_Init: a TERM that arrives during start-up must not be lost. */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = onTerm;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);

  MPI_Init(&argc, &argv);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const char* restart = getenv("SLURM_RESTART_COUNT");
  const char* node = getenv("SLURMD_NODENAME");
  char name[64], text[256], path[4096];

  /* Rank 0 decides and broadcasts, so all ranks take the same branch. */
  long resumeStep = -1;
  if (rank == 0) {
    snprintf(path, sizeof path, "%s/checkpoint", dir);
    FILE* f = fopen(path, "r");
    if (f) {
      if (fscanf(f, "step=%ld", &resumeStep) != 1) resumeStep = -1;
      fclose(f);
    }
  }
  MPI_Bcast(&resumeStep, 1, MPI_LONG, 0, MPI_COMM_WORLD);
  if (resumeStep >= 0) {
    printf("mpi_preempt rank=%d size=%d node=%s restart=%s resumed step=%ld\n", rank, size,
           node ? node : "-", restart ? restart : "0", resumeStep);
    fflush(stdout);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) writeFile(dir, "done", "done\n");
    MPI_Finalize();
    return 0;
  }

  snprintf(name, sizeof name, "running.%d", rank);
  writeFile(dir, name, "running\n");
  double start = now();
  long step = 0;
  for (;;) {
    usleep(100 * 1000);
    ++step;
    int local = gotTerm, stop = 0;
    MPI_Allreduce(&local, &stop, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (stop) break;
    if (now() - start > maxSeconds) {
      fprintf(stderr, "mpi_preempt rank=%d: no SIGTERM within %.0f s\n", rank, maxSeconds);
      MPI_Finalize();
      return 3;
    }
  }
  /* The stop is agreed as soon as ONE rank has the signal; the others' copies may still be
     on the way (slurmstepd signals the tasks of each node separately). Every rank must get
     its own: wait for it (bounded) before reporting. */
  for (double waitStart = now(); !gotTerm && now() - waitStart < 10.0;) usleep(10 * 1000);
  snprintf(name, sizeof name, "term.%d", rank);
  snprintf(text, sizeof text, "saw_term=%d step=%ld node=%s\n", (int)gotTerm, step,
           node ? node : "-");
  writeFile(dir, name, text);
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0) {
    snprintf(text, sizeof text, "step=%ld\n", step);
    writeFile(dir, "checkpoint", text);
    /* The marker comes last: it promises a complete checkpoint. */
    writeFile(dir, "PREEMPTED", "checkpoint\n");
  }
  printf("mpi_preempt rank=%d size=%d node=%s saw_term=%d stopped step=%ld\n", rank, size,
         node ? node : "-", (int)gotTerm, step);
  fflush(stdout);
  MPI_Finalize();
  return 0;
}
