// Helpers shared by the TrainingArguments tests (training_args_test.cc,
// training_args_validation_test.cc). Private to tests/trainer; every test file that
// includes it gets its own copy (anonymous namespace).
#pragma once

#include "cohort/trainer/training_args.h"

#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "cohort/dist/error.h"
#include "test_util.h"

namespace cohort::trainer {
namespace {

namespace fs = std::filesystem;
using test::messageOf;

const std::string kFixtures = std::string(COHORT_SOURCE_DIR) + "/tests/trainer/fixtures/";

// Arguments with `overrides` ("name=value" each) applied to the defaults.
inline TrainingArguments with(const std::vector<std::string>& overrides) {
  TrainingArguments a;
  for (const auto& o : overrides) {
    const auto eq = o.find('=');
    applyOverride(a, o.substr(0, eq), o.substr(eq + 1));
  }
  return a;
}

inline CommandLine parse(const std::vector<std::string>& argv, const ProgramInfo& program = {}) {
  return parseTrainingArgs(argv, program);
}

}  // namespace
}  // namespace cohort::trainer
