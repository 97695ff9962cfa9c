#include "cohort/dist/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <mutex>

#include "cohort/dist/env.h"
#include "cohort/dist/error.h"

namespace cohort::log {

namespace {

std::shared_ptr<spdlog::logger> makeLogger() {
  auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>("cohort", sink);
  logger->set_pattern("[%H:%M:%S.%e] [cohort] [%^%l%$] %v");
  logger->set_level(spdlog::level::info);
  return logger;
}

spdlog::logger& instance() {
  static std::shared_ptr<spdlog::logger> logger = makeLogger();
  return *logger;
}

}  // namespace

void configure(int rank, const std::string& host, bool showHost) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  spdlog::logger& l = instance();
  const std::string tag = showHost ? "rank " + std::to_string(rank) + "@" + host
                                   : "rank " + std::to_string(rank);
  l.set_pattern("[%H:%M:%S.%e] [" + tag + "] [%^%l%$] %v");
  const std::string level = env::get(env::kLogLevel);
  if (level.empty()) {
    l.set_level(rank == 0 ? spdlog::level::info : spdlog::level::warn);
  } else {
    const auto parsed = spdlog::level::from_str(level);
    if (parsed == spdlog::level::off && level != "off") {
      throw ConfigError("environment variable COHORT_LOG_LEVEL='" + level +
                        "' is not one of trace|debug|info|warn|error|off");
    }
    l.set_level(parsed);
  }
  // Override notices ("COHORT_X set by environment to Y") once, from rank 0 only: every
  // rank has the same environment under mpirun, so more would be noise.
  if (rank == 0) {
    env::setOverrideSink([](const std::string& line) { COHORT_LOG_INFO("{}", line); });
  } else {
    env::setOverrideSink([](const std::string&) {});
  }
}

spdlog::logger& get() { return instance(); }

}  // namespace cohort::log
