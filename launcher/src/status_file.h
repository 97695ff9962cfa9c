#pragma once
// Per-rank exit records of one launch attempt. `cohort _rank-exec` writes
// DIR/rank-<r>.started when it starts and DIR/rank-<r>.status when its program has ended;
// `cohort run` reads them to name the rank that failed first and to tell a launch failure
// (nobody started) from a rank failure. One line of key=value words per file, written to a
// temp name and renamed, so a reader never sees half a record.

#include <optional>
#include <string>
#include <vector>

namespace cohort::launcher {

struct RankStatus {
  int rank = -1;
  std::string host;
  long pid = 0;  // the program's pid on HOST
  bool killedBySignal = false;
  int value = 0;         // exit code, or the signal number when killedBySignal
  double time = 0;       // CLOCK_REALTIME seconds when the program ended
  std::string received;  // signal the wrapper got and forwarded before the end, or ""
};

// Writes DIR/rank-<r>.started (host and wrapper pid). False when DIR is not writable.
bool writeRankStarted(const std::string& dir, int rank, const std::string& host, long pid);
bool writeRankStatus(const std::string& dir, const RankStatus& status);

// Every readable status record in DIR (malformed files are skipped), in rank order.
std::vector<RankStatus> readRankStatuses(const std::string& dir);
// How many ranks wrote their .started marker in DIR.
int countStartedRanks(const std::string& dir);

// The shell-style exit status: the code, or 128 + signal.
int shellExitCode(const RankStatus& status);
// "exit code 1" or "killed by signal 9 (SIGKILL)".
std::string describeOutcome(const RankStatus& status);

// The earliest non-zero record among ranks that were not reacting to a forwarded signal,
// else the earliest non-zero record; nullopt when every record is a clean exit.
std::optional<RankStatus> firstFailure(const std::vector<RankStatus>& statuses);

}  // namespace cohort::launcher
