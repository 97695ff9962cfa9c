// The POSIX file operations of the save protocol and the one installed FileOps (file_ops.h).
#include "file_ops.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <system_error>

namespace cohort::ckpt {

namespace {

class PosixFile : public WritableFile {
 public:
  explicit PosixFile(int fd) : fd_(fd) {}
  ~PosixFile() override { close(); }
  PosixFile(const PosixFile&) = delete;
  PosixFile& operator=(const PosixFile&) = delete;

  int writeAt(const void* data, std::size_t n, std::int64_t offset) override {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = ::pwrite(fd_, p, n, offset);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return errno;
      if (w == 0) return EIO;
      p += w, n -= static_cast<std::size_t>(w), offset += w;
    }
    return 0;
  }
  int sync() override { return ::fsync(fd_) == 0 ? 0 : errno; }
  int close() override {
    if (fd_ < 0) return 0;
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc == 0 ? 0 : errno;
  }

 private:
  int fd_;
};

class PosixFileOps : public FileOps {
 public:
  int open(const std::string& path, OpenMode mode, std::unique_ptr<WritableFile>* out) override {
    int flags = O_WRONLY | O_CLOEXEC;
    if (mode == OpenMode::kCreate) flags |= O_CREAT | O_TRUNC;
    if (mode == OpenMode::kDirect) flags |= O_DIRECT;
    const int fd = ::open(path.c_str(), flags, 0644);
    if (fd < 0) return errno;
    *out = std::make_unique<PosixFile>(fd);
    return 0;
  }
  int rename(const std::string& from, const std::string& to) override {
    return std::rename(from.c_str(), to.c_str()) == 0 ? 0 : errno;
  }
  int remove(const std::string& path) override { return ::unlink(path.c_str()) == 0 ? 0 : errno; }
  int createDirectories(const std::string& path) override {
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    return ec ? ec.value() : 0;
  }
  int syncPath(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    const int rc = ::fsync(fd);
    const int err = errno;
    ::close(fd);
    return rc == 0 ? 0 : err;
  }
};

std::atomic<FileOps*> gInstalled{nullptr};

}  // namespace

FileOps& posixFileOps() {
  static PosixFileOps ops;
  return ops;
}

FileOps& fileOps() {
  FileOps* ops = gInstalled.load(std::memory_order_acquire);
  return ops != nullptr ? *ops : posixFileOps();
}

FileOps* setFileOpsForTesting(FileOps* ops) {
  return gInstalled.exchange(ops, std::memory_order_acq_rel);
}

void writeFileDurably(const std::string& path, const std::string& bytes, const char* writeStep,
                      const char* syncStep, const char* renameStep) {
  const std::string tmp = path + ".tmp";
  FileOps& ops = fileOps();
  std::unique_ptr<WritableFile> file;
  checkStep(ops.open(tmp, OpenMode::kCreate, &file), writeStep, "create", tmp);
  try {
    checkStep(file->writeAt(bytes.data(), bytes.size(), 0), writeStep, "write", tmp);
    checkStep(file->sync(), syncStep, "fsync", tmp);
    checkStep(file->close(), syncStep, "close", tmp);
    checkStep(ops.rename(tmp, path), renameStep, "rename " + tmp + " to", path);
  } catch (const CheckpointError&) {
    file.reset();
    ops.remove(tmp);  // best effort: do not leave a partial file on a full disk
    throw;
  }
}

}  // namespace cohort::ckpt
