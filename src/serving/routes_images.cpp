// POST /v1/images/generations and /v1/images/edits: one-frame generations, answered
// synchronously as base64 images.
#include <chrono>
#include <map>
#include <mutex>

#include <fmt/format.h>

#include "media/image.h"
#include "serving/http_util.h"
#include "serving/job_runner.h"
#include "serving/routes.h"

namespace vgen::serving {
namespace {

using nlohmann::json;

// Whether this build encodes `format` (WebP needs FFmpeg's libraries), found once by trying.
bool can_encode(media::ImageFormat format) {
  static std::map<media::ImageFormat, bool> known;
  static std::mutex mutex;
  std::lock_guard lock(mutex);
  if (auto it = known.find(format); it != known.end()) return it->second;
  try {
    media::encode_image(Tensor::zeros({16, 16, 3}, DType::U8), format);
    return known[format] = true;
  } catch (const std::exception&) {
    return known[format] = false;
  }
}

void images(ServerState& s, const HttpRequest& req, HttpResponse& res, bool edit) {
  const ImagePlan plan = plan_image(parse_image_request(body_fields(req), edit), s.model.info, *s.model.pipeline);
  // Refused before generating, not failed after.
  if (!can_encode(plan.output_format))
    bad_field("output_format", fmt::format("output_format '{}' cannot be encoded by this build of vgen (WebP needs "
                                           "FFmpeg's libraries); use png or jpeg",
                                           media::image_format_name(plan.output_format)));
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> images;
  try {
    images = run_sync<std::vector<std::string>>(s, [&s, &plan](const std::atomic<bool>& cancelled) {
      std::vector<std::string> out;
      for (int i = 0; i < plan.n; ++i) {
        ResolvedParams p = plan.resolved;
        p.seed = plan.resolved.seed + static_cast<uint64_t>(i);
        const GenerationOutput g = generate(s, p, plan.adapters, cancelled);
        out.push_back(base64(media::encode_image(g.frames.select(0, 0), plan.output_format, plan.quality)));
      }
      return out;
    });
  } catch (const ApiError& e) {
    if (e.status == 500) s.metrics.count_generation("image", "failed", seconds_since(t0));
    throw;
  }
  s.metrics.count_generation("image", "completed", seconds_since(t0));
  json data = json::array();
  for (std::string& b64 : images) data.push_back({{"b64_json", std::move(b64)}, {"revised_prompt", nullptr}});
  send_json(res, 200,
            {{"created", unix_now()},
             {"data", data},
             {"size", plan.size},
             {"output_format", std::string(media::image_format_name(plan.output_format))}});
}

}  // namespace

std::vector<Route> image_routes(ServerState& s) {
  return {
      {"/v1/images/generations",
       false,
       {{"POST", [&s](const HttpRequest& q, HttpResponse& r, const Params&) { images(s, q, r, false); }}}},
      {"/v1/images/edits",
       false,
       {{"POST", [&s](const HttpRequest& q, HttpResponse& r, const Params&) { images(s, q, r, true); }}}},
  };
}

}  // namespace vgen::serving
