#include "example_main.h"

#include <ATen/Parallel.h>

#include <cstdio>
#include <exception>
#include <filesystem>

#include "cohort/trainer/preemption.h"

namespace cohort::examples {

namespace {

// Runs from .preinit_array, before the initialisers of LibTorch and the other libraries
// (seconds of start-up during which a SIGTERM would otherwise kill the rank). The handler
// only stores into lock-free atomics, so it needs no library initialised.
void installHandlersAtStartup(int, char**, char**) { trainer::installEarlyPreemptionHandlers(); }
__attribute__((section(".preinit_array"),
               used)) void (*const kInstallHandlersAtStartup)(int, char**,
                                                              char**) = installHandlersAtStartup;

}  // namespace

int runExample(const trainer::ProgramInfo& program, int argc, char** argv,
               const std::function<void(ExampleContext&)>& body) {
  int rank = 0;
  std::unique_ptr<dist::Runtime> runtime;  // declared first: destroyed last
  std::unique_ptr<dist::Communicator> comm;
  // Until the arguments say whether the JIT checkpoint is on, a SIGTERM/SIGUSR1 is recorded
  // instead of killing the rank halfway through start-up (already done at startup above;
  // a second call does nothing).
  trainer::installEarlyPreemptionHandlers();
  try {
    at::set_num_threads(1);
    runtime = dist::init(&argc, &argv);
    rank = runtime->rank();
    trainer::ProgramInfo info = program;
    if (info.name.empty() && argc > 0) info.name = std::filesystem::path(argv[0]).filename();
    trainer::CommandLine cl = trainer::parseTrainingArgs(argc, argv, info);
    if (cl.helpRequested) {
      if (rank == 0) std::fputs(trainer::helpText(info).c_str(), stdout);
      return 0;
    }
    trainer::logWarnings(cl.warnings, rank);
    trainer::ValidationContext ctx;
    ctx.hasTrainDataset = true;
    ctx.hasEvalDataset = true;
    trainer::validate(cl.args, ctx);  // before the first collective: same error on every rank
    if (!cl.args.enable_jit_checkpoint()) trainer::releaseEarlyPreemptionHandlers();
    ExampleContext ex{*runtime, cl.args, comm, rank};
    body(ex);
    comm.reset();
    return 0;
  } catch (const std::exception& e) {
    const int code = trainer::reportFatalError(e, rank);
    if (comm) comm->abort(e.what());
    comm.reset();
    return code;
  }
}

void EvaluateAtTrainBegin::onTrainBegin(const trainer::TrainerState&, trainer::TrainerControl&) {
  if (trainer_ != nullptr) metrics_ = trainer_->evaluate();
}

}  // namespace cohort::examples
