// GET /health, GET /metrics, GET /v1/models, GET /v1/models/{model}.
#include <fmt/format.h>

#include "core/allocator.h"
#include "serving/http_util.h"
#include "serving/routes.h"

namespace vgen::serving {
namespace {

using nlohmann::json;

// What the pipeline can do and its defaults (a vgen extension of OpenAI's model object).
json capabilities_json(const PipelineCapabilities& c) {
  // "required", true or false per input: the image as `input_reference`, the last frame as `last_image`.
  const auto input = [](bool accepted, bool required) -> json { return required ? json("required") : json(accepted); };
  json j = {{"tasks", c.tasks},
          {"inputs",
           {{"image", input(c.image_input, c.image_required)},
            {"last_image", input(c.last_image_input, c.last_image_required)}, {"lora", c.lora},
            {"two_experts", c.two_experts}}},
          {"default_fps", c.default_fps},
          {"temporal_multiple", c.temporal_multiple},
          {"spatial_multiple", c.spatial_multiple},
          {"default_height", c.default_height},
          {"default_width", c.default_width},
          {"default_num_frames", c.default_num_frames},
          {"default_num_inference_steps", c.default_num_inference_steps},
          {"default_guidance_scale", c.default_guidance_scale},
          {"default_max_sequence_length", c.default_max_sequence_length}};
  if (c.two_experts) j["default_guidance_scale_2"] = c.default_guidance_scale_2;
  return j;
}

json model_json(const ServerState& s) {
  // The LoRA adapters requests may name in `lora` / `lora_2` (vgen serve --lora-dir).
  json adapters = json::array();
  for (const auto& [name, path] : s.model.info.adapters) adapters.push_back(name);
  return {{"id", s.model.info.id},
          {"object", "model"},
          {"created", s.model_created},
          {"owned_by", "vgen"},
          {"capabilities", capabilities_json(s.model.pipeline->capabilities())},
          {"lora_adapters", adapters}};
}

}  // namespace

std::vector<Route> model_routes(ServerState& s) {
  const Handler health = [&s](const HttpRequest&, HttpResponse& res, const Params&) {
    if (!s.ready) {
      json body = error_body(503, "the model is still loading", std::nullopt, "model_loading");
      body["status"] = "loading";
      send_json(res, 503, body);
      res.set_header("retry-after", "1");
      return;
    }
    send_json(res, 200, {{"status", "ok"}, {"model", s.model.info.id}});
  };
  const Handler prometheus = [&s](const HttpRequest&, HttpResponse& res, const Params&) {
    Metrics::Gauges g;
    g.queue_depth = s.queue.queued();
    g.job_running = s.queue.running();
    g.model_ready = s.ready;
    g.jobs_by_status = s.store->count_by_status();
    if (s.ready) {
      const Allocator& memory = allocator_for(s.model.device);
      g.device = s.model.device.str();
      g.device_allocated_bytes = memory.allocated_bytes();
      g.device_peak_bytes = memory.peak_bytes();
    }
    res.set_content(s.metrics.render(g), "text/plain; version=0.0.4; charset=utf-8");
  };
  const Handler list_models = [&s](const HttpRequest&, HttpResponse& res, const Params&) {
    send_json(res, 200, {{"object", "list"}, {"data", json::array({model_json(s)})}});
  };
  const Handler get_model = [&s](const HttpRequest&, HttpResponse& res, const Params& p) {
    if (p[0] != s.model.info.id)
      throw ApiError(404, fmt::format("model '{}' is not served here (this server serves '{}')", p[0], s.model.info.id),
                     "model", "model_not_found");
    send_json(res, 200, model_json(s));
  };
  return {
      {"/health", true, {{"GET", health}}},
      {"/metrics", true, {{"GET", prometheus}}},
      {"/v1/models", false, {{"GET", list_models}}},
      {"/v1/models/{model}", false, {{"GET", get_model}}},
  };
}

}  // namespace vgen::serving
