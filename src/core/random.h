// Seeded Gaussian noise that is the same on every backend and any number of GPUs:
// a counter-based generator (Philox4x32-10) evaluated on the host, one counter per
// element, so a tensor's noise depends only on (seed, element index).
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace vgen {

// Standard normal F32 noise of `shape` on the CPU. `offset` shifts the counter so that
// successive draws from one seed do not overlap.
Tensor randn(const Shape& shape, uint64_t seed, uint64_t offset = 0);

// The raw generator, exposed for tests: four 32-bit words for (counter, key).
void philox4x32(uint64_t counter, uint64_t key, uint32_t out[4]);

}  // namespace vgen
