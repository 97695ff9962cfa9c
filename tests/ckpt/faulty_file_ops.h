// A FileOps (ckpt/src/file_ops.h) that makes one chosen file operation of the save protocol
// fail with a chosen errno (ENOSPC, EIO, ...), passing everything else to POSIX. Used by the
// save-fault tests (save_faults_test.cc, single process; checkpointer_test.cc, real ranks).
#pragma once

#include <cerrno>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "file_ops.h"

namespace cohort::ckpt::testing {

enum class FaultOp { kOpen, kWrite, kSync, kRename, kRemove, kCreateDirectories, kSyncPath };

// Which call fails: the `occurrence`-th call of `op` on a path whose last component is
// `name` (for kRename: the target's), or, for kWrite with afterBytes >= 0, the first write to
// such a file that takes the bytes written to them past afterBytes (a disk filling up).
// Empty `name` matches every path.
struct Fault {
  FaultOp op = FaultOp::kWrite;
  std::string name;
  int occurrence = 1;
  int err = ENOSPC;
  std::int64_t afterBytes = -1;
};

inline bool nameMatches(const std::string& path, const std::string& name) {
  if (name.empty()) return true;
  if (name.front() == '*') {  // "*.h5": a suffix
    const std::string suffix = name.substr(1);
    return path.size() >= suffix.size() &&
           path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0;
  }
  const std::size_t slash = path.find_last_of('/');
  return (slash == std::string::npos ? path : path.substr(slash + 1)) == name;
}

class FaultyFileOps : public FileOps {
 public:
  explicit FaultyFileOps(Fault fault) : fault_(std::move(fault)) {}

  // How many times the fault fired (1 once it did: a test that never reached it is wrong).
  int fired() const {
    std::lock_guard<std::mutex> g(mu_);
    return fired_;
  }

  int open(const std::string& path, OpenMode mode, std::unique_ptr<WritableFile>* out) override {
    if (int err = check(FaultOp::kOpen, path)) return err;
    std::unique_ptr<WritableFile> inner;
    if (int err = posixFileOps().open(path, mode, &inner)) return err;
    *out = std::make_unique<File>(this, path, std::move(inner));
    return 0;
  }
  int rename(const std::string& from, const std::string& to) override {
    if (int err = check(FaultOp::kRename, to)) return err;
    return posixFileOps().rename(from, to);
  }
  int remove(const std::string& path) override {
    if (int err = check(FaultOp::kRemove, path)) return err;
    return posixFileOps().remove(path);
  }
  int createDirectories(const std::string& path) override {
    if (int err = check(FaultOp::kCreateDirectories, path)) return err;
    return posixFileOps().createDirectories(path);
  }
  int syncPath(const std::string& path) override {
    if (int err = check(FaultOp::kSyncPath, path)) return err;
    return posixFileOps().syncPath(path);
  }

 private:
  class File : public WritableFile {
   public:
    File(FaultyFileOps* ops, std::string path, std::unique_ptr<WritableFile> inner)
        : ops_(ops), path_(std::move(path)), inner_(std::move(inner)) {}
    int writeAt(const void* data, std::size_t n, std::int64_t offset) override {
      if (int err = ops_->check(FaultOp::kWrite, path_, static_cast<std::int64_t>(n))) return err;
      return inner_->writeAt(data, n, offset);
    }
    int sync() override {
      if (int err = ops_->check(FaultOp::kSync, path_)) return err;
      return inner_->sync();
    }
    int close() override { return inner_->close(); }

   private:
    FaultyFileOps* ops_;
    std::string path_;
    std::unique_ptr<WritableFile> inner_;
  };

  // The errno to fail this call with, or 0.
  int check(FaultOp op, const std::string& path, std::int64_t bytes = 0) {
    std::lock_guard<std::mutex> g(mu_);
    if (fired_ > 0 || op != fault_.op || !nameMatches(path, fault_.name)) return 0;
    if (op == FaultOp::kWrite && fault_.afterBytes >= 0) {
      written_ += bytes;
      if (written_ <= fault_.afterBytes) return 0;
    } else if (++seen_ < fault_.occurrence) {
      return 0;
    }
    ++fired_;
    return fault_.err;
  }

  Fault fault_;
  mutable std::mutex mu_;
  int seen_ = 0, fired_ = 0;
  std::int64_t written_ = 0;
};

// Installs a FileOps for a scope (restores the previous one at exit).
class ScopedFileOps {
 public:
  explicit ScopedFileOps(FileOps* ops) : previous_(setFileOpsForTesting(ops)) {}
  ~ScopedFileOps() { setFileOpsForTesting(previous_); }
  ScopedFileOps(const ScopedFileOps&) = delete;
  ScopedFileOps& operator=(const ScopedFileOps&) = delete;

 private:
  FileOps* previous_;
};

}  // namespace cohort::ckpt::testing
