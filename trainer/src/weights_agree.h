// One outcome for every rank of a collective file operation that each rank does (or only
// rank 0 does) on its own: loadWeights on every rank, saveModel on rank 0. The lowest
// failing rank's error reaches every rank as the same typed exception, so that a program's
// main() exits with the same code everywhere (ConfigError: 2) and nobody is left waiting.
#pragma once

#include <c10/core/Device.h>

#include <string>

#include "cohort/dist/communicator.h"

namespace cohort::trainer {

enum class FailureKind : std::int64_t {
  kNone = 0,
  kConfig = 1,
  kCorrupt = 2,
  kWrite = 3,
  kOther = 4
};

// COLLECTIVE over `comm` (a few small all-reduce/broadcasts on `device`, which must suit the
// communicator's backend). Returns when no rank failed; otherwise throws, on every rank, the
// lowest failing rank's message as ConfigError / CheckpointCorrupt / CheckpointError / Error.
void agreeOnFailure(dist::Communicator& comm, FailureKind kind, const std::string& message,
                    c10::Device device);

}  // namespace cohort::trainer
