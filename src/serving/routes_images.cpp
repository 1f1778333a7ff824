// POST /v1/images/generations and /v1/images/edits: one-frame generations, answered
// synchronously as base64 images or as URLs of images saved in the media directory
// (GET /v1/images/{name}).
#include <algorithm>
#include <cctype>
#include <chrono>
#include <map>
#include <mutex>

#include <fmt/format.h>

#include "media/image.h"
#include "media/temp_file.h"
#include "serving/http_util.h"
#include "serving/job_runner.h"
#include "serving/routes.h"

namespace vgen::serving {
namespace {

using nlohmann::json;

// Whether this build encodes `format` (JPEG and WebP need FFmpeg's libraries), found once by trying.
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

// OpenAI's image URLs last an hour; so do these (removed at the next "url" request after that).
constexpr std::chrono::seconds kImageUrlLifetime{3600};

// This server's address as the client reached it (its Host header, which the access check
// has let through), else the address it listens on.
std::string base_url(const ServerState& s, const HttpRequest& req) {
  const std::string host = req.get_header_value("Host");
  const bool usable = !host.empty() && host.size() <= 255 && std::all_of(host.begin(), host.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ':' || c == '[' || c == ']' ||
           c == '_';
  });
  return "http://" + (usable ? host : fmt::format("{}:{}", s.options.host, s.options.port));
}

void images(ServerState& s, const HttpRequest& req, HttpResponse& res, bool edit) {
  const ImagePlan plan = plan_image(parse_image_request(body_fields(req), edit), s.model.info, *s.model.pipeline);
  // Refused before generating, not failed after.
  if (!can_encode(plan.output_format))
    bad_field("output_format", fmt::format("output_format '{}' cannot be encoded by this build of vgen (JPEG and WebP "
                                           "need FFmpeg's libraries); use png{}",
                                           media::image_format_name(plan.output_format),
                                           can_encode(media::ImageFormat::JPEG) ? " or jpeg" : ""));
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::vector<uint8_t>> images;
  try {
    images = run_sync<std::vector<std::vector<uint8_t>>>(s, [&s, &plan](const std::atomic<bool>& cancelled) {
      std::vector<std::vector<uint8_t>> out;
      for (int i = 0; i < plan.n; ++i) {
        ResolvedParams p = plan.resolved;
        p.seed = plan.resolved.seed + static_cast<uint64_t>(i);
        const GenerationOutput g = generate(s, p, plan.adapters, cancelled);
        out.push_back(media::encode_image(g.frames.select(0, 0), plan.output_format, plan.quality));
      }
      return out;
    });
  } catch (const ApiError& e) {
    if (e.status == 500) s.metrics.count_generation("image", "failed", seconds_since(t0));
    throw;
  }
  s.metrics.count_generation("image", "completed", seconds_since(t0));
  json data = json::array();
  if (plan.url) {
    // Saved in MEDIA_DIR/images and served by GET /v1/images/{name} (with the API key, if any).
    s.media.expire_images(kImageUrlLifetime);
    const std::string base = base_url(s, req);
    for (const std::vector<uint8_t>& bytes : images) {
      std::string name;
      try {
        name = s.media.save_image(bytes, plan.output_format);
      } catch (const Error& e) {
        throw ApiError(500, fmt::format("cannot save the image for its URL: {}", e.what()), std::nullopt,
                       "server_error");
      }
      data.push_back({{"url", base + "/v1/images/" + name}, {"revised_prompt", nullptr}});
    }
  } else {
    for (const std::vector<uint8_t>& bytes : images) data.push_back({{"b64_json", base64(bytes)}, {"revised_prompt", nullptr}});
  }
  send_json(res, 200,
            {{"created", unix_now()},
             {"data", data},
             {"size", plan.size},
             {"output_format", std::string(media::image_format_name(plan.output_format))}});
}

// GET /v1/images/{name}: an image answered as a URL, while it lasts.
void get_image(ServerState& s, const HttpRequest& req, HttpResponse& res, const std::string& name) {
  reject_unknown_query(req, {});
  const std::optional<std::string> path = s.media.image_path(name);
  if (!path)
    throw ApiError(404, fmt::format("no image '{}' (image URLs name 'img_...' files and last an hour)", printable(name)),
                   std::nullopt, "not_found");
  std::vector<uint8_t> bytes;
  try {
    bytes = media::read_file(*path);
  } catch (const Error&) {
    throw ApiError(404, fmt::format("image '{}' is gone (image URLs last an hour)", name), std::nullopt, "not_found");
  }
  const std::string ext = name.substr(name.find('.') + 1);
  res.status = 200;
  res.set_content(std::string(bytes.begin(), bytes.end()),
                  std::string(media::image_format_mime_type(media::parse_image_format(ext))));
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
      // After the two above: "generations" and "edits" are not image names.
      {"/v1/images/{name}",
       false,
       {{"GET", [&s](const HttpRequest& q, HttpResponse& r, const Params& p) { get_image(s, q, r, p[0]); }}}},
  };
}

}  // namespace vgen::serving
