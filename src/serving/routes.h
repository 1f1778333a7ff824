// The endpoints, by resource. Each function returns its routes in the order they are matched.
#pragma once

#include <vector>

#include "serving/router.h"
#include "serving/server_state.h"

namespace vgen::serving {

// GET /health, GET /metrics (open: no key, answer while loading), GET /v1/models[/{model}].
std::vector<Route> model_routes(ServerState& state);
// POST /v1/images/generations, POST /v1/images/edits, GET /v1/images/{name} (URL answers).
std::vector<Route> image_routes(ServerState& state);
// /v1/videos (list, create), /v1/videos/generations (sync), /v1/videos/{id}[/content].
std::vector<Route> video_routes(ServerState& state);

}  // namespace vgen::serving
