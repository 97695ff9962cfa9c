// Test seam of the env registry (not part of the public header): forget the cached values,
// so a test may change a variable and read it again. Override notices already given are
// not repeated.
#pragma once

namespace cohort::env::testing {

void clearCache();

}  // namespace cohort::env::testing
