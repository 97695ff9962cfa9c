// The COHORT_* registry (cohort/dist/env.h) on its own: typed handles, defaults, the cache,
// bad values, override notices, and that docs/env.md lists exactly the declared variables.
// Links cohort_env only (no MPI, no LibTorch): the launcher may use the registry too.
#include "cohort/dist/env.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "cohort/dist/error.h"
#include "env_testing.h"

namespace cohort::env {
namespace {

// A handle's type is what get() returns (a wrong type at a call site does not compile).
static_assert(std::is_same_v<decltype(get(kCollectiveTimeout)), double>);
static_assert(std::is_same_v<decltype(get(kAllreduceSliceBytes)), std::int64_t>);
static_assert(std::is_same_v<decltype(get(kCheckCollectives)), bool>);
static_assert(std::is_same_v<decltype(get(kDevice)), std::string>);
static_assert(std::is_same_v<decltype(get(kProgressBar)), AutoBool>);

// Sets (or with nullptr unsets) a variable and forgets cached values.
void set(const char* name, const char* value) {
  if (value == nullptr) {
    unsetenv(name);
  } else {
    setenv(name, value, 1);
  }
  testing::clearCache();
}

std::vector<std::string> collectNotices() {
  static std::vector<std::string>* lines = new std::vector<std::string>();
  setOverrideSink([](const std::string& l) { lines->push_back(l); });
  std::vector<std::string> out;
  out.swap(*lines);
  return out;
}

// Notices: once per variable, only for a value that differs from the default (compared as
// parsed values), held until a sink is installed. First in this file: notices are once
// per process, so the variables here must not have been read with other values before.
TEST(UnitEnvRegistry, OverrideNoticedOnceAndOnlyWhenDifferent) {
  setOverrideSink(nullptr);  // hold
  set("COHORT_DEVICE", "cpu");
  set("COHORT_CKPT_COPY_AHEAD", "true");  // the default "1", spelt differently
  set("COHORT_COLLECTIVE_TIMEOUT", "600.0");
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(get(kDevice), "cpu");
    EXPECT_TRUE(get(kCkptCopyAhead));
    EXPECT_EQ(get(kCollectiveTimeout), 600.0);
    testing::clearCache();  // even re-parsing does not repeat a notice
  }
  EXPECT_EQ(collectNotices(), std::vector<std::string>{"COHORT_DEVICE set by environment to cpu"});
  set("COHORT_LOG_LEVEL", "debug");  // an empty default: any value is an override
  EXPECT_EQ(get(kLogLevel), "debug");
  EXPECT_EQ(collectNotices(),
            std::vector<std::string>{"COHORT_LOG_LEVEL set by environment to debug"});
  EXPECT_EQ(get(kLogLevel), "debug");
  EXPECT_TRUE(collectNotices().empty());
  setOverrideSink(nullptr);
  for (const char* n : {"COHORT_DEVICE", "COHORT_CKPT_COPY_AHEAD", "COHORT_COLLECTIVE_TIMEOUT",
                        "COHORT_LOG_LEVEL"}) {
    set(n, nullptr);
  }
}

TEST(UnitEnvRegistry, DefaultsAndTypedValues) {
  for (const Var& v : all()) set(v.name, nullptr);
  EXPECT_EQ(get(kCollectiveTimeout), 600.0);
  EXPECT_EQ(get(kAllreduceSliceBytes), 1048576);
  EXPECT_TRUE(get(kCheckCollectives));
  EXPECT_EQ(get(kDevice), "auto");
  EXPECT_EQ(get(kLogLevel), "");
  EXPECT_EQ(get(kProgressBar), std::nullopt);
  set("COHORT_COLLECTIVE_TIMEOUT", "2.5");
  EXPECT_EQ(get(kCollectiveTimeout), 2.5);
  set("COHORT_CHECK_COLLECTIVES", "Off");
  EXPECT_FALSE(get(kCheckCollectives));
  set("COHORT_PROGRESS_BAR", "yes");
  EXPECT_EQ(get(kProgressBar), AutoBool{true});
  set("COHORT_PROGRESS_BAR", "0");
  EXPECT_EQ(get(kProgressBar), AutoBool{false});
  set("COHORT_PROGRESS_BAR", "");  // empty is unset: the default
  EXPECT_EQ(get(kProgressBar), std::nullopt);
  for (const Var& v : all()) set(v.name, nullptr);
}

TEST(UnitEnvRegistry, ParsedOnceThenCached) {
  set("COHORT_ALLREDUCE_SLICE_BYTES", "8192");
  EXPECT_EQ(get(kAllreduceSliceBytes), 8192);
  setenv("COHORT_ALLREDUCE_SLICE_BYTES", "16384", 1);
  EXPECT_EQ(get(kAllreduceSliceBytes), 8192) << "a read after the first must be the cached value";
  testing::clearCache();
  EXPECT_EQ(get(kAllreduceSliceBytes), 16384);
  set("COHORT_ALLREDUCE_SLICE_BYTES", nullptr);
}

TEST(UnitEnvRegistry, BadValuesNameTheVariableAndAreNotCached) {
  set("COHORT_ALLREDUCE_SLICE_BYTES", "12k");
  try {
    get(kAllreduceSliceBytes);
    ADD_FAILURE() << "no ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(),
                 "environment variable COHORT_ALLREDUCE_SLICE_BYTES='12k' is not an integer");
  }
  EXPECT_THROW(get(kAllreduceSliceBytes), ConfigError);  // still bad, read again
  setenv("COHORT_ALLREDUCE_SLICE_BYTES", "4096", 1);
  EXPECT_EQ(get(kAllreduceSliceBytes), 4096);  // the failure was not cached
  set("COHORT_PROGRESS_BAR", "sometimes");
  EXPECT_THROW(get(kProgressBar), ConfigError);
  set("COHORT_ALLREDUCE_SLICE_BYTES", nullptr);
  set("COHORT_PROGRESS_BAR", nullptr);
}

// docs/env.md's first table (up to "## Outside the library") lists exactly the registry.
TEST(UnitEnvRegistry, DocsListExactlyTheRegistry) {
  std::ifstream f(COHORT_SOURCE_DIR "/docs/env.md");
  ASSERT_TRUE(f.good()) << "docs/env.md missing";
  std::set<std::string> documented;
  const std::regex row(R"(^\| `(COHORT_[A-Z0-9_]+)` \|)");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("## Outside", 0) == 0) break;
    std::smatch m;
    if (std::regex_search(line, m, row)) {
      EXPECT_TRUE(documented.insert(m[1]).second) << m[1] << " listed twice in docs/env.md";
    }
  }
  std::set<std::string> declared;
  for (const Var& v : all()) declared.insert(v.name);
  for (const auto& name : declared) {
    EXPECT_EQ(documented.count(name), 1u) << name << " is declared in env.h but not in docs/env.md";
  }
  for (const auto& name : documented) {
    EXPECT_EQ(declared.count(name), 1u) << name << " is in docs/env.md but not declared in env.h";
  }
}

TEST(UnitEnvRegistry, NamesAreUniqueAndIndexed) {
  std::set<std::string> names;
  for (std::size_t i = 0; i < all().size(); ++i) {
    EXPECT_EQ(all()[i].index, static_cast<int>(i));
    EXPECT_TRUE(names.insert(all()[i].name).second) << all()[i].name;
    EXPECT_EQ(std::string(all()[i].name).rfind("COHORT_", 0), 0u) << all()[i].name;
  }
  EXPECT_EQ(all().size(), static_cast<std::size_t>(detail::kVarCount));
}

}  // namespace
}  // namespace cohort::env
