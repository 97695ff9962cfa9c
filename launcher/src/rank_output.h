#pragma once
// How `cohort _rank-exec` passes its program's output on (COHORT_RANK_OUTPUT, set by
// `cohort run --rank-output`). Rank 0's program writes to the wrapper's own stdout/stderr
// untouched: its lines, log dicts and a progress bar redrawn with '\r' reach the console
// as written. Any other rank's output goes through a pipe (a pty for stdout when the
// wrapper's stdout is a terminal, so the program stays line-buffered) and comes out as
// whole lines "[rank r] ...", each with ONE write() so that mpirun/srun never split or
// interleave it; with on-error they are held (the last kHeldLines) and shown only when the
// program fails. Single-threaded; owned by the wrapper.

#include <deque>
#include <optional>
#include <string>

namespace cohort::launcher {

inline constexpr const char* kEnvRankOutput = "COHORT_RANK_OUTPUT";

enum class RankOutputMode {
  kDirect,   // the program writes to the wrapper's stdout/stderr (rank 0; no launcher)
  kPrefix,   // every line as "[rank r] line"
  kOnError,  // held; shown, prefixed, only when the program fails
};

// "prefix" / "on-error"; nullopt for anything else.
std::optional<RankOutputMode> parseRankOutputMode(const std::string& text);
const char* rankOutputModeName(RankOutputMode mode);

// Reads one of the program's streams (a pipe or pty master) and writes whole prefixed
// lines to TARGET (the wrapper's stdout or stderr).
class LineRelay {
 public:
  static constexpr size_t kHeldLines = 1000;
  static constexpr size_t kMaxLine = 64 * 1024;  // longer lines are cut into pieces

  LineRelay(int sourceFd, int targetFd, std::string prefix, bool hold);
  ~LineRelay();
  LineRelay(const LineRelay&) = delete;
  LineRelay& operator=(const LineRelay&) = delete;

  int fd() const { return source_; }
  bool open() const { return source_ >= 0; }
  // Reads what is available; false at end of file or error (the source is then closed).
  bool pump();
  // At the end: a last line without newline is passed on (with one added).
  void finish();
  // on-error: writes the held lines (oldest first) and forgets them.
  void release();

 private:
  void emit(std::string line);  // line without its newline
  void emitCompleteLines();     // emits every whole line in partial_, keeps the rest

  int source_;
  int target_;
  std::string prefix_;
  bool hold_;
  std::string partial_;
  std::deque<std::string> held_;
};

// Writes all of DATA to FD, retrying on EINTR/short writes. False on error.
bool writeAll(int fd, const std::string& data);

}  // namespace cohort::launcher
