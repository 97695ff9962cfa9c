#include "sys_util.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

extern char** environ;

namespace cohort::launcher {

EnvMap environmentSnapshot() {
  EnvMap env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const char* eq = strchr(*e, '=');
    if (eq == nullptr) continue;
    env.emplace(std::string(*e, static_cast<size_t>(eq - *e)), std::string(eq + 1));
  }
  return env;
}

std::optional<std::string> lookup(const EnvMap& env, const std::string& name) {
  auto it = env.find(name);
  if (it == env.end()) return std::nullopt;
  return it->second;
}

std::optional<long> parseInteger(const std::string& text, long min, long max) {
  if (text.empty() || text.size() > 18) return std::nullopt;
  long value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  if (value < min || value > max) return std::nullopt;
  return value;
}

std::vector<int> expandCounts(const std::string& text) {
  std::vector<int> counts;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    size_t paren = item.find("(x");
    auto n = parseInteger(item.substr(0, paren), 1, 1 << 20);
    long repeat = 1;
    if (paren != std::string::npos) {
      auto r = item.back() == ')'
                   ? parseInteger(item.substr(paren + 2, item.size() - paren - 3), 1, 1 << 20)
                   : std::nullopt;
      if (!r) return {};
      repeat = *r;
    }
    if (!n || counts.size() + static_cast<size_t>(repeat) > (1u << 20)) return {};
    counts.insert(counts.end(), static_cast<size_t>(repeat), static_cast<int>(*n));
  }
  return counts;
}

std::optional<double> parseSeconds(const std::string& text) {
  if (text.empty() || text.find_first_not_of("0123456789.") != std::string::npos) {
    return std::nullopt;
  }
  errno = 0;
  char* end = nullptr;
  double value = strtod(text.c_str(), &end);
  if (errno != 0 || end == nullptr || *end != '\0' || value < 0 || value > 1e9) {
    return std::nullopt;
  }
  return value;
}

std::string shellQuote(const std::string& word) {
  if (!word.empty() &&
      word.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                             "_-+=/.,:@%") == std::string::npos) {
    return word;
  }
  std::string quoted = "'";
  for (char c : word) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  return quoted + "'";
}

std::string joinCommand(const std::vector<std::string>& argv) {
  std::string line;
  for (const std::string& word : argv) {
    if (!line.empty()) line += ' ';
    line += shellQuote(word);
  }
  return line;
}

namespace {

bool isExecutableFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(path.c_str(), X_OK) == 0;
}

// Reads a small sysfs file's first line; empty when absent.
std::string readLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// Parses a kernel CPU list such as "0-3,8,10-11" into a mask; false when it does not parse.
bool parseCpuList(const std::string& list, cpu_set_t* mask) {
  CPU_ZERO(mask);
  size_t pos = 0;
  bool any = false;
  while (pos < list.size()) {
    size_t comma = list.find(',', pos);
    std::string item =
        list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    pos = comma == std::string::npos ? list.size() : comma + 1;
    if (item.empty()) continue;
    size_t dash = item.find('-');
    auto lo = parseInteger(item.substr(0, dash), 0, CPU_SETSIZE - 1);
    auto hi =
        dash == std::string::npos ? lo : parseInteger(item.substr(dash + 1), 0, CPU_SETSIZE - 1);
    if (!lo || !hi || *hi < *lo) return false;
    for (long cpu = *lo; cpu <= *hi; ++cpu) CPU_SET(cpu, mask);
    any = true;
  }
  return any;
}

}  // namespace

std::optional<std::string> findExecutable(const std::string& name, const EnvMap& env) {
  if (name.empty()) return std::nullopt;
  if (name.find('/') != std::string::npos) {
    if (!isExecutableFile(name)) return std::nullopt;
    char resolved[PATH_MAX];
    if (realpath(name.c_str(), resolved) != nullptr) return std::string(resolved);
    return name;
  }
  std::string path = lookup(env, "PATH").value_or("/usr/local/bin:/usr/bin:/bin");
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t colon = path.find(':', pos);
    std::string dir =
        path.substr(pos, colon == std::string::npos ? std::string::npos : colon - pos);
    pos = colon == std::string::npos ? path.size() + 1 : colon + 1;
    if (dir.empty()) dir = ".";
    std::string candidate = dir + "/" + name;
    if (isExecutableFile(candidate)) return candidate;
  }
  return std::nullopt;
}

std::string selfExecutable() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "cohort";
  return std::string(buf, static_cast<size_t>(n));
}

int physicalCores(const cpu_set_t& mask) {
  std::set<std::pair<std::string, std::string>> cores;
  int cpus = 0;
  bool topology = true;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &mask)) continue;
    ++cpus;
    if (!topology) continue;
    const std::string dir = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    std::string core = readLine(dir + "core_id");
    std::string package = readLine(dir + "physical_package_id");
    if (core.empty()) {
      topology = false;
      continue;
    }
    cores.emplace(package, core);
  }
  int count = topology ? static_cast<int>(cores.size()) : cpus;
  return count > 0 ? count : 1;
}

int coresInAffinity() {
  cpu_set_t mask;
  if (sched_getaffinity(0, sizeof(mask), &mask) != 0) return coresOnNode();
  return physicalCores(mask);
}

int coresOnNode() {
  cpu_set_t mask;
  if (!parseCpuList(readLine("/sys/devices/system/cpu/online"), &mask)) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? static_cast<int>(n) : 1;
  }
  return physicalCores(mask);
}

int visibleGpuCount(const EnvMap& env) {
  if (auto visible = lookup(env, "CUDA_VISIBLE_DEVICES")) {
    // CUDA stops at the first invalid entry; "-1", "" and "NoDevFiles" mean none.
    int count = 0;
    size_t pos = 0;
    const std::string& list = *visible;
    while (pos < list.size()) {
      size_t comma = list.find(',', pos);
      std::string item =
          list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      pos = comma == std::string::npos ? list.size() : comma + 1;
      if (item.empty() || item[0] == '-' || item == "NoDevFiles") break;
      ++count;
    }
    return count;
  }
  int count = 0;
  if (DIR* dir = opendir("/proc/driver/nvidia/gpus")) {
    while (dirent* entry = readdir(dir)) {
      if (entry->d_name[0] != '.') ++count;
    }
    closedir(dir);
  }
  return count;
}

double wallClockSeconds() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

double monotonicSeconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

std::string hostName() {
  char buf[256];
  if (gethostname(buf, sizeof(buf)) != 0) return "unknown-host";
  buf[sizeof(buf) - 1] = '\0';
  return buf;
}

std::string formatSeconds(double seconds) {
  char buf[32];
  snprintf(buf, sizeof(buf), "%g", seconds);
  return buf;
}

std::string signalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  if (abbrev == nullptr) return "signal " + std::to_string(sig);
  return std::string("SIG") + abbrev;
}

}  // namespace cohort::launcher
