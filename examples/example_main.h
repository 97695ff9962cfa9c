// The skeleton every training example shares: start the runtime, parse and validate the
// TrainingArguments before any collective, run the body, and on an error print one line,
// abort the communicator so peers do not wait, and map the error to an exit code (2 for a
// ConfigError). The communicator is destroyed before the runtime on every path: the
// communication engine must stop before MPI is finalised.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "cohort/dist/communicator.h"
#include "cohort/dist/runtime.h"
#include "cohort/trainer/trainer.h"
#include "cohort/trainer/training_args.h"

namespace cohort::examples {

struct ExampleContext {
  dist::Runtime& runtime;
  trainer::TrainingArguments& args;
  // The body creates it (dist::makeCommunicator) once everything that can fail alike on every
  // rank (reading data) is done; runExample owns its lifetime.
  std::unique_ptr<dist::Communicator>& comm;
  int rank;
};

// The "before training" evaluation of an example: it runs inside train() once a resume has
// loaded its checkpoint (onTrainBegin), so it scores what will actually be trained, not
// the freshly initialised model that a resumed run replaces. evaluate() is COLLECTIVE and
// every rank calls onTrainBegin, so every rank evaluates. attach() the Trainer (borrowed; it
// must outlive train()) before train(); metrics() is empty until then, and after an
// evaluation that a preemption interrupted.
class EvaluateAtTrainBegin : public trainer::TrainerCallback {
 public:
  void attach(trainer::Trainer& t) { trainer_ = &t; }
  void onTrainBegin(const trainer::TrainerState&, trainer::TrainerControl&) override;
  const std::map<std::string, double>& metrics() const { return metrics_; }

 private:
  trainer::Trainer* trainer_ = nullptr;
  std::map<std::string, double> metrics_;
};

// Returns the program's exit code. The example datasets always have a held-out split.
// `program` describes the program for --help (which prints on rank 0 and returns 0 before
// the body runs, so nothing is created) and says whether it takes positional arguments;
// an empty name is taken from argv[0].
int runExample(const trainer::ProgramInfo& program, int argc, char** argv,
               const std::function<void(ExampleContext&)>& body);

}  // namespace cohort::examples
