#include "rank_output.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

namespace cohort::launcher {

std::optional<RankOutputMode> parseRankOutputMode(const std::string& text) {
  if (text == "prefix") return RankOutputMode::kPrefix;
  if (text == "on-error") return RankOutputMode::kOnError;
  return std::nullopt;
}

const char* rankOutputModeName(RankOutputMode mode) {
  switch (mode) {
    case RankOutputMode::kDirect:
      return "direct";
    case RankOutputMode::kPrefix:
      return "prefix";
    case RankOutputMode::kOnError:
      return "on-error";
  }
  return "?";
}

bool writeAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

LineRelay::LineRelay(int sourceFd, int targetFd, std::string prefix, bool hold)
    : source_(sourceFd), target_(targetFd), prefix_(std::move(prefix)), hold_(hold) {}

LineRelay::~LineRelay() {
  if (source_ >= 0) close(source_);
}

void LineRelay::emit(std::string line) {
  // A pty turns "\n" into "\r\n" unless the program switched that off; drop the '\r'.
  if (!line.empty() && line.back() == '\r') line.pop_back();
  std::string out = prefix_ + line + "\n";
  if (!hold_) {
    writeAll(target_, out);
    return;
  }
  held_.push_back(std::move(out));
  if (held_.size() > kHeldLines) held_.pop_front();
}

void LineRelay::emitCompleteLines() {
  size_t start = 0;
  for (size_t nl; (nl = partial_.find('\n', start)) != std::string::npos; start = nl + 1) {
    emit(partial_.substr(start, nl - start));
  }
  partial_.erase(0, start);
}

bool LineRelay::pump() {
  if (source_ < 0) return false;
  char buf[16384];
  ssize_t n = ::read(source_, buf, sizeof(buf));
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
  if (n <= 0) {  // EOF; a pty master reports EIO once the program's side is closed
    close(source_);
    source_ = -1;
    return false;
  }
  partial_.append(buf, static_cast<size_t>(n));
  emitCompleteLines();
  while (partial_.size() >= kMaxLine) {
    emit(partial_.substr(0, kMaxLine));
    partial_.erase(0, kMaxLine);
  }
  return true;
}

void LineRelay::finish() {
  // The program has ended; a process it left behind may hold the pipe open, so take only
  // what is there now.
  if (source_ >= 0) fcntl(source_, F_SETFL, fcntl(source_, F_GETFL) | O_NONBLOCK);
  while (source_ >= 0) {
    char buf[16384];
    ssize_t n = ::read(source_, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    partial_.append(buf, static_cast<size_t>(n));
  }
  emitCompleteLines();
  if (!partial_.empty()) emit(std::move(partial_));
  partial_.clear();
}

void LineRelay::release() {
  for (const std::string& line : held_) writeAll(target_, line);
  held_.clear();
}

}  // namespace cohort::launcher
