// A Backend that times every op of another one (synchronizing around each call) and prints a
// table of where the time went when its context ends: ExecutionSettings::profile_ops (VGEN_PROFILE_OPS=1)
// puts it over the GPU backend of a context. `by_shape` (VGEN_PROFILE_OPS=shapes): a row per op
// and the dtypes and shapes of its tensor arguments, e.g. which convolutions of a VAE dominate.
// The synchronizations remove the overlap of launches, so totals run above normal timings; the
// shares show which ops dominate.
#pragma once

#include <memory>

#include "ops/backend.h"

namespace vgen {

std::shared_ptr<Backend> make_profiling_backend(std::shared_ptr<Backend> inner, bool by_shape = false);

}  // namespace vgen
