// How a program's main() ends on an exception: one error line and an exit code that says
// what went wrong (2: configuration, 1: anything else). training_args.h includes this
// header, so programs that map their errors with reportFatalError() keep compiling.
// Thread-safety: reentrant; call from the thread that unwinds main().
#pragma once

#include <cstdio>
#include <exception>

namespace cohort::trainer {

inline constexpr int kConfigErrorExitCode = 2;
// 2 for ConfigError, 1 for any other exception.
int exitCodeFor(const std::exception& e) noexcept;
// Prints the error as ONE line to `out` and returns exitCodeFor(e). A ConfigError is
// deterministic (every rank has the same one), so it is printed by rank 0 only, as
// "config error: <message>"; any other error is printed by every rank that has it, as
// "error (rank N): <message>". In an MPI job the other ranks then wait (at most
// COHORT_EXIT_ORDER_TIMEOUT, 5 s) until rank 0 has printed a ConfigError, so that mpirun
// does not end the job before it shows: dist::worldExitOrder(), the Runtime's exit order
// on its own duplicate of the world; nothing to wait for before dist::init(). `rank` is
// this process's world rank. Not collective: it never blocks past that wait.
int reportFatalError(const std::exception& e, int rank, std::FILE* out = stderr) noexcept;

}  // namespace cohort::trainer
