#include "example_main.h"

#include <ATen/Parallel.h>

#include <cstdio>
#include <exception>
#include <filesystem>
#include <stdexcept>
#include <string>

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

// In a multi-host job a fatal error line also says where this rank runs and which ranks
// run where, so "rank 2 did not arrive" can be read as "host h1 is gone" (issue 19). A
// ConfigError (exit code 2) is the same on every rank and stays as it is.
int reportWithHosts(const std::exception& e, const dist::Runtime* runtime, int rank) {
  if (runtime == nullptr || runtime->topology().nodeCount < 2 ||
      trainer::exitCodeFor(e) == trainer::kConfigErrorExitCode) {
    return trainer::reportFatalError(e, rank);
  }
  const dist::Topology& t = runtime->topology();
  const std::string hosts = t.nodeCount <= 32
                                ? dist::describeHosts(t)
                                : std::to_string(t.nodeCount) + ": see the start-up line";
  const std::runtime_error withHosts("on " + t.hostname + ": " + e.what() + " [hosts: " + hosts +
                                     "]");
  trainer::reportFatalError(withHosts, rank);
  return trainer::exitCodeFor(e);
}

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
    const int code = reportWithHosts(e, runtime.get(), rank);
    if (comm) comm->abort(e.what());
    comm.reset();
    return code;
  }
}

void EvaluateAtTrainBegin::onTrainBegin(const trainer::TrainerState&, trainer::TrainerControl&) {
  if (trainer_ != nullptr) metrics_ = trainer_->evaluate();
}

}  // namespace cohort::examples
