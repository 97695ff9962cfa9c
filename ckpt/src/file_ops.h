// The file operations of the save protocol behind one small interface, as leveldb's Env: the
// sentinel, the shard files' payload, the manifest, the publish rename, the directory fsyncs.
// Production code uses the POSIX implementation; a test installs a faulty one
// (setFileOpsForTesting) to make any single step fail with ENOSPC or EIO and checks that the
// error names the step and the file and that nothing looks complete. HDF5 still writes a
// shard's metadata itself (through its own driver); every payload byte goes through here.
//
// Private to cohort_ckpt_format: not installed. Implementations return 0 or an errno value
// and never throw; saveStepError (below) turns a failure into the typed error.
// Thread-safety: an implementation must allow calls from several threads (the shard writer
// writes from a background thread while the caller fills the next buffer).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "cohort/ckpt/errors.h"

namespace cohort::ckpt {

// One open file being written. The destructor closes it if close() was not called.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  // Writes all n bytes at file offset `offset` (short writes and EINTR retried).
  virtual int writeAt(const void* data, std::size_t n, std::int64_t offset) = 0;
  // fsync(2).
  virtual int sync() = 0;
  virtual int close() = 0;
};

enum class OpenMode {
  kCreate,    // create or truncate, mode 0644
  kExisting,  // an existing file, for writing
  kDirect,    // an existing file, for writing with O_DIRECT (fails where unsupported)
};

class FileOps {
 public:
  virtual ~FileOps() = default;
  virtual int open(const std::string& path, OpenMode mode, std::unique_ptr<WritableFile>* out) = 0;
  virtual int rename(const std::string& from, const std::string& to) = 0;
  // Removes one file; ENOENT when there is none.
  virtual int remove(const std::string& path) = 0;
  // mkdir -p.
  virtual int createDirectories(const std::string& path) = 0;
  // Opens `path` (a directory, or a file) read-only and fsyncs it.
  virtual int syncPath(const std::string& path) = 0;
};

// The POSIX implementation (what fileOps() returns unless a test installed another).
FileOps& posixFileOps();
// The installed implementation.
FileOps& fileOps();
// Tests only: installs `ops` (borrowed: it must outlive its installation; nullptr restores
// POSIX) and returns the previous one. Not thread-safe against saves in flight.
FileOps* setFileOpsForTesting(FileOps* ops);

// The steps of the save protocol, as errors name them (docs/checkpoint-format.md).
namespace step {
inline constexpr const char* kSentinelCreate = "sentinel create";
inline constexpr const char* kShardCreate = "shard create";
inline constexpr const char* kShardWrite = "shard write";
inline constexpr const char* kShardFsync = "shard fsync";
inline constexpr const char* kManifestWrite = "manifest write";
inline constexpr const char* kManifestFsync = "manifest fsync";
inline constexpr const char* kManifestPublish = "manifest publish";
inline constexpr const char* kDirectoryFsync = "directory fsync";
inline constexpr const char* kSentinelRemove = "sentinel removal";
}  // namespace step

// Throws CheckpointIoError unless err == 0.
inline void checkStep(int err, const char* stepName, const std::string& operation,
                      const std::string& path) {
  if (err != 0) throw CheckpointIoError(stepName, operation, path, err);
}

// Writes `bytes` to path + ".tmp", fsyncs it, renames it to `path`: each failure a
// CheckpointIoError of `writeStep` (create, write), `syncStep` (fsync, close) or
// `renameStep` (rename). The caller fsyncs the directory.
void writeFileDurably(const std::string& path, const std::string& bytes, const char* writeStep,
                      const char* syncStep, const char* renameStep);

}  // namespace cohort::ckpt
