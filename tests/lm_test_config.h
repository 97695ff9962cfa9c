// The small byte-level LM the Trainer tests train (golden, mixed precision, GPU): one
// definition, so the CPU references and the GPU runs stay the same model.
#pragma once

#include "lm_model.h"

namespace cohort::test {

inline examples::LmConfig smallConfig() {
  examples::LmConfig c;
  c.dim = 32;
  c.heads = 2;
  c.layers = 2;
  c.maxLen = 48;
  return c;
}

}  // namespace cohort::test
