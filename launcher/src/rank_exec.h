#pragma once
// `cohort _rank-exec -- PROGRAM ARGS...`: the per-rank wrapper that `cohort run` starts
// under mpirun or srun. It gives the program torchrun's variables and a thread count,
// runs it as a child (with SIGTERM/SIGUSR1 still blocked, so a stop during its start-up
// stays pending until its handlers unblock them), forwards stop signals to it, relays the
// output of ranks other than 0 as whole "[rank r]" lines (rank_output.h), records how it
// ended in the status directory and exits the same way, so mpirun/srun see the program's
// own outcome.

namespace cohort::launcher {

// argv[0] is "_rank-exec". Returns only on errors before the program started (exit 2);
// otherwise the process ends with the program's exit code or signal.
int runRankExec(int argc, char** argv);

}  // namespace cohort::launcher
