#pragma once
// `cohort run`: parses the options, plans the launch, prints it (--dry-run) or runs it
// attempt by attempt (--max-restarts), and turns what the ranks did into one exit code.

namespace cohort::launcher {

// argv[0] is "run". Returns the process exit code (see docs/launcher.md).
int runRunCommand(int argc, char** argv);

}  // namespace cohort::launcher
