#include "cohort/dist/env.h"

#include <strings.h>

#include <cerrno>
#include <cstdlib>
#include <mutex>
#include <variant>

#include "cohort/dist/error.h"
#include "env_testing.h"

namespace cohort::env {

const std::vector<Var>& all() {
  static const std::vector<Var> vars = {
#define COHORT_ENV_VAR_(handle, T, name, def, help) handle.var,
      COHORT_ENV_REGISTRY(COHORT_ENV_VAR_)
#undef COHORT_ENV_VAR_
  };
  return vars;
}

namespace {

using Value = std::variant<std::string, std::int64_t, double, bool, AutoBool>;

// The cache, the notices already given, and the sink, under one mutex: reads are rare (a
// backend's creation, the start of train()), so contention does not matter.
struct State {
  std::mutex mu;
  std::optional<Value> cache[detail::kVarCount];
  bool noticed[detail::kVarCount] = {};
  std::vector<std::string> held;  // notices waiting for a sink
  std::function<void(const std::string&)> sink;
};

State& state() {
  static State s;
  return s;
}

[[noreturn]] void bad(const std::string& name, const std::string& value, const char* want) {
  throw ConfigError("environment variable " + name + "='" + value + "' is not " + want);
}

std::int64_t parseInt(const std::string& name, const std::string& s) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || errno != 0 || *end != '\0') bad(name, s, "an integer");
  return v;
}

double parseDouble(const std::string& name, const std::string& s) {
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || errno != 0 || *end != '\0') bad(name, s, "a number");
  return v;
}

std::optional<bool> boolWord(const std::string& s) {
  for (const char* t : {"1", "true", "yes", "on"})
    if (strcasecmp(s.c_str(), t) == 0) return true;
  for (const char* f : {"0", "false", "no", "off"})
    if (strcasecmp(s.c_str(), f) == 0) return false;
  return std::nullopt;
}

bool parseBool(const std::string& name, const std::string& s) {
  if (auto b = boolWord(s)) return *b;
  bad(name, s, "a boolean (1/0, true/false, yes/no, on/off)");
}

Value parse(const Var& v, const std::string& s) {
  switch (v.type) {
    case Type::kString:
      return s;
    case Type::kInt:
      return parseInt(v.name, s);
    case Type::kDouble:
      return parseDouble(v.name, s);
    case Type::kBool:
      return parseBool(v.name, s);
    case Type::kAutoBool:
      if (strcasecmp(s.c_str(), "auto") == 0) return AutoBool{};
      if (auto b = boolWord(s)) return AutoBool{*b};
      bad(v.name, s, "auto or a boolean (1/0, true/false, yes/no, on/off)");
  }
  throw Error("cohort::env: variable " + std::string(v.name) + " has an unknown type");
}

// Reads, parses and caches a variable; the first read of an overridden one yields a notice.
Value read(const Var& v) {
  State& st = state();
  std::function<void(const std::string&)> sink;
  std::vector<std::string> out;
  Value value;
  {
    std::lock_guard<std::mutex> lock(st.mu);
    if (st.cache[v.index]) return *st.cache[v.index];
    const char* s = std::getenv(v.name);
    const bool set = s != nullptr && *s != '\0';
    value = parse(v, set ? std::string(s) : std::string(v.defaultValue));
    st.cache[v.index] = value;
    const bool differs = set && (*v.defaultValue == '\0' || parse(v, v.defaultValue) != value);
    if (differs && !st.noticed[v.index]) {
      st.noticed[v.index] = true;
      st.held.push_back(std::string(v.name) + " set by environment to " + s);
    }
    if (!st.sink) return value;
    sink = st.sink;
    out.swap(st.held);
  }
  for (const auto& line : out) sink(line);  // outside the lock: the sink may read env too
  return value;
}

}  // namespace

std::string get(const Param<std::string>& p) { return std::get<std::string>(read(p.var)); }
std::int64_t get(const Param<std::int64_t>& p) { return std::get<std::int64_t>(read(p.var)); }
double get(const Param<double>& p) { return std::get<double>(read(p.var)); }
bool get(const Param<bool>& p) { return std::get<bool>(read(p.var)); }
AutoBool get(const Param<AutoBool>& p) { return std::get<AutoBool>(read(p.var)); }

void setOverrideSink(std::function<void(const std::string&)> sink) {
  State& st = state();
  std::vector<std::string> out;
  {
    std::lock_guard<std::mutex> lock(st.mu);
    st.sink = sink;
    if (!sink) return;
    out.swap(st.held);
  }
  for (const auto& line : out) sink(line);
}

namespace testing {

void clearCache() {
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  for (auto& c : st.cache) c.reset();
}

}  // namespace testing

}  // namespace cohort::env
