// The public entry point of the vgen C++ library: `#include <vgen/visual_gen.h>`, link
// vgen::vgen (find_package(vgen) from an install, or add_subdirectory of the source tree).
// VisualGen, GenerationParams, ResolvedParams, GenerationOutput, resolve_model_path.
#pragma once

#include "api/model_path.h"
#include "api/visual_gen.h"
