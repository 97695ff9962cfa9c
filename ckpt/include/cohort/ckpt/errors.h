// Errors of the checkpoint layer. Both derive from cohort::Error so that a program's main()
// maps them to exit codes with everything else.
#pragma once

#include <cstring>
#include <string>
#include <utility>

#include "cohort/core/error.h"

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

// One file operation of the save protocol failed (ENOSPC, EIO, EACCES, ...). The message
// names the protocol step ("sentinel create", "shard write", "manifest fsync", ... as listed in
// docs/checkpoint-format.md), the operation, the file and the system's error string.
class CheckpointIoError : public CheckpointError {
 public:
  CheckpointIoError(std::string step, const std::string& operation, std::string path, int err)
      : CheckpointError("checkpoint save step '" + step + "' failed: " + operation + " " + path +
                        ": " + std::strerror(err)),
        step_(std::move(step)),
        path_(std::move(path)),
        errorNumber_(err) {}
  const std::string& step() const { return step_; }
  const std::string& path() const { return path_; }
  int errorNumber() const { return errorNumber_; }

 private:
  std::string step_;
  std::string path_;
  int errorNumber_;
};

}  // namespace cohort
