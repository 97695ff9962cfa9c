// The one typed registry of COHORT_* environment variables (as NCCL_PARAM). Every variable
// the project reads is declared in env.cc with its default and meaning; docs/env.md lists
// them (a test keeps the two in sync). Reading an undeclared name is a programming error.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cohort::env {

struct Var {
  const char* name;
  const char* defaultValue;
  const char* help;
};

// All declared variables, in declaration order.
const std::vector<Var>& all();

// Typed accessors. The value is the environment's, else the declared default. A value that
// does not parse raises ConfigError naming the variable and the value. Thread-safe.
std::string getString(const std::string& name);
std::int64_t getInt(const std::string& name);
double getDouble(const std::string& name);
bool getBool(const std::string& name);

}  // namespace cohort::env
