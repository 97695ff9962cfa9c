// Errors of the checkpoint layer. Both derive from cohort::Error so that a program's main()
// maps them to exit codes with everything else.
#pragma once

#include "cohort/dist/error.h"

namespace cohort {

// A checkpoint on disk is unusable: missing or unparsable manifest, a missing or truncated
// shard, a checksum mismatch, chunks that do not tile a tensor. The message names the file.
class CheckpointCorrupt : public Error {
 public:
  using Error::Error;
};

// Writing a checkpoint failed (disk full, permissions, a peer failed to write its shard).
// Nothing was published: the previous checkpoints are untouched.
class CheckpointError : public Error {
 public:
  using Error::Error;
};

}  // namespace cohort
