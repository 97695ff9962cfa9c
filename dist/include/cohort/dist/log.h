// Project-wide logging through spdlog, one logger. Every line carries the rank (and the
// host once the job spans several nodes). Rank 0 logs at info, other ranks at warn, unless
// COHORT_LOG_LEVEL (trace|debug|info|warn|error|off) says otherwise.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace cohort::log {

// Sets the rank/host tag and the level; called by dist::init(). Thread-safe.
void configure(int rank, const std::string& host, bool showHost);

// The project logger (valid before configure(): then untagged, level info).
spdlog::logger& get();

}  // namespace cohort::log

#define COHORT_LOG_DEBUG(...) ::cohort::log::get().debug(__VA_ARGS__)
#define COHORT_LOG_INFO(...) ::cohort::log::get().info(__VA_ARGS__)
#define COHORT_LOG_WARN(...) ::cohort::log::get().warn(__VA_ARGS__)
#define COHORT_LOG_ERROR(...) ::cohort::log::get().error(__VA_ARGS__)
