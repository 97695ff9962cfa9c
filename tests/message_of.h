// Test helper with no MPI or torch dependency (the in-process ring tests use it too).
#pragma once

#include <string>

namespace cohort::test {

// Runs f and returns the message of the exception of type E it throws ("" if none).
template <typename E, typename F>
std::string messageOf(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "";
}

}  // namespace cohort::test
