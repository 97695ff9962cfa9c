#include "status_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "sys_util.h"

namespace cohort::launcher {

namespace {

// Write-then-rename: the launcher may read the directory at any moment.
bool writeAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  bool ok = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ok = close(fd) == 0 && ok;
  if (ok) ok = rename(tmp.c_str(), path.c_str()) == 0;
  if (!ok) unlink(tmp.c_str());
  return ok;
}

std::string rankFile(const std::string& dir, int rank, const char* suffix) {
  return dir + "/rank-" + std::to_string(rank) + suffix;
}

std::optional<RankStatus> parseStatus(const std::string& line) {
  RankStatus s;
  std::stringstream words(line);
  std::string word;
  bool have_outcome = false;
  while (words >> word) {
    size_t eq = word.find('=');
    if (eq == std::string::npos) return std::nullopt;
    std::string key = word.substr(0, eq), value = word.substr(eq + 1);
    if (key == "rank") {
      s.rank = atoi(value.c_str());
    } else if (key == "host") {
      s.host = value;
    } else if (key == "pid") {
      s.pid = atol(value.c_str());
    } else if (key == "outcome") {
      s.killedBySignal = value == "signal";
      have_outcome = value == "signal" || value == "exit";
    } else if (key == "value") {
      s.value = atoi(value.c_str());
    } else if (key == "time") {
      s.time = atof(value.c_str());
    } else if (key == "received") {
      s.received = value == "-" ? "" : value;
    }
  }
  if (s.rank < 0 || !have_outcome) return std::nullopt;
  return s;
}

template <typename Fn>
void forEachRankFile(const std::string& dir, const std::string& suffix, Fn fn) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name.rfind("rank-", 0) == 0 && name.size() > suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      fn(dir + "/" + name);
    }
  }
  closedir(d);
}

}  // namespace

bool writeRankStarted(const std::string& dir, int rank, const std::string& host, long pid) {
  return writeAtomically(rankFile(dir, rank, ".started"),
                         "rank=" + std::to_string(rank) + " host=" + host +
                             " wrapper_pid=" + std::to_string(pid) + "\n");
}

bool writeRankStatus(const std::string& dir, const RankStatus& s) {
  char time_text[64];
  snprintf(time_text, sizeof(time_text), "%.6f", s.time);
  std::string line =
      "rank=" + std::to_string(s.rank) + " host=" + s.host + " pid=" + std::to_string(s.pid) +
      " outcome=" + (s.killedBySignal ? "signal" : "exit") + " value=" + std::to_string(s.value) +
      " time=" + time_text + " received=" + (s.received.empty() ? "-" : s.received) + "\n";
  return writeAtomically(rankFile(dir, s.rank, ".status"), line);
}

std::vector<RankStatus> readRankStatuses(const std::string& dir) {
  std::vector<RankStatus> statuses;
  forEachRankFile(dir, ".status", [&](const std::string& path) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    if (auto s = parseStatus(line)) statuses.push_back(*s);
  });
  std::sort(statuses.begin(), statuses.end(),
            [](const RankStatus& a, const RankStatus& b) { return a.rank < b.rank; });
  return statuses;
}

int countStartedRanks(const std::string& dir) {
  int count = 0;
  forEachRankFile(dir, ".started", [&](const std::string&) { ++count; });
  return count;
}

int shellExitCode(const RankStatus& s) { return s.killedBySignal ? 128 + s.value : s.value; }

std::string describeOutcome(const RankStatus& s) {
  if (!s.killedBySignal) return "exit code " + std::to_string(s.value);
  return "killed by signal " + std::to_string(s.value) + " (" + signalName(s.value) + ")";
}

std::optional<RankStatus> firstFailure(const std::vector<RankStatus>& statuses) {
  std::optional<RankStatus> first;
  for (const RankStatus& s : statuses) {
    if (!s.killedBySignal && s.value == 0) continue;
    // A rank that failed on its own outranks ranks that were reacting to a forwarded signal
    // (they were stopped because of it), whatever the clocks of their nodes say.
    auto key = [](const RankStatus& r) { return std::make_pair(!r.received.empty(), r.time); };
    if (!first || key(s) < key(*first)) first = s;
  }
  return first;
}

}  // namespace cohort::launcher
