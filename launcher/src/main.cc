// `cohort`: the command-line tool. It only starts processes (run) and reads checkpoints
// (ckpt); it links no LibTorch, CUDA, MPI, HDF5 or protobuf so that it starts in
// milliseconds. `cohort ckpt` execs the cohort-ckpt helper beside it, which links the
// checkpoint format library (ckpt_helper.h).

#include <stdio.h>
#include <string.h>

#include "ckpt_helper.h"
#include "rank_exec.h"
#include "run_command.h"
#include "startup_signals.h"

namespace {

const char* kUsage = R"(usage: cohort COMMAND [ARGS...]

commands:
  run [options] -- PROGRAM [ARGS...]   start PROGRAM on every rank (mpirun or srun)
  ckpt ...                             list, verify, inspect and export checkpoints
  --help                               this text; `cohort run --help` for run's options
  --version                            the version

See docs/launcher.md.
)";

}  // namespace

int main(int argc, char** argv) {
  // The stop signals are blocked since the first instruction (startup_signals.h): run and
  // _rank-exec take them over; every other command gets the usual behaviour back.
  const char* command = argc < 2 ? "" : argv[1];
  if (strcmp(command, "run") == 0) return cohort::launcher::runRunCommand(argc - 1, argv + 1);
  // Hidden: what `cohort run` starts on every rank.
  if (strcmp(command, "_rank-exec") == 0) {
    return cohort::launcher::runRankExec(argc - 1, argv + 1);
  }
  cohort::launcher::restoreStartupMask();
  if (argc < 2) {
    fputs(kUsage, stderr);
    return 2;
  }
  if (strcmp(command, "ckpt") == 0) {
#ifdef COHORT_HAVE_CKPT_CLI
    return cohort::launcher::execCkptHelper(argc - 1, argv + 1);
#else
    fputs("cohort ckpt: not built in this configuration\n", stderr);
    return 2;
#endif
  }
  if (strcmp(command, "--help") == 0 || strcmp(command, "-h") == 0 ||
      strcmp(command, "help") == 0) {
    fputs(kUsage, stdout);
    return 0;
  }
  if (strcmp(command, "--version") == 0) {
    printf("cohort %s\n", COHORT_VERSION);
    return 0;
  }
  fprintf(stderr, "cohort: unknown command '%s' (expected run, ckpt, --help or --version)\n",
          command);
  return 2;
}
