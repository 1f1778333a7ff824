// A Backend that times every op of another one (synchronizing around each call) and prints a
// table of where the time went at exit: VGEN_PROFILE_OPS=1 installs it over the GPU backend.
// The synchronizations remove the overlap of launches, so totals run above normal timings; the
// shares show which ops dominate.
#pragma once

#include <memory>

#include "ops/backend.h"

namespace vgen {

std::unique_ptr<Backend> make_profiling_backend(Backend* inner);

}  // namespace vgen
