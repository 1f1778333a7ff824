// /v1/videos: asynchronous jobs (create, list, get, content, delete) and the synchronous
// POST /v1/videos/generations that answers with the MP4 itself.
#include <algorithm>
#include <chrono>
#include <tuple>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "media/mp4.h"
#include "media/temp_file.h"
#include "serving/http_util.h"
#include "serving/job_runner.h"
#include "serving/routes.h"
#include "serving/video_id.h"

namespace vgen::serving {
namespace {

using nlohmann::json;

std::string checked_video_id(const std::string& id) {
  if (!is_valid_video_id(id))
    bad_field("video_id", fmt::format("invalid video id '{}' (expected 'video_' and 16 to 64 letters or digits)",
                                      printable(id)));
  return id;
}

json video_json(const VideoJob& j) {
  json v = {{"id", j.id},
            {"object", "video"},
            {"created_at", j.created_at},
            {"completed_at", nullptr},
            {"expires_at", nullptr},
            {"status", j.status},
            {"progress", j.progress},
            {"model", j.model},
            {"seconds", j.seconds},
            {"size", j.size},
            {"prompt", j.prompt},
            {"remixed_from_video_id", nullptr},
            {"error", nullptr}};
  if (j.completed_at) v["completed_at"] = *j.completed_at;
  if (j.error_code) v["error"] = {{"code", *j.error_code}, {"message", j.error_message.value_or("")}};
  for (auto it = j.params.begin(); it != j.params.end(); ++it)
    if (!v.contains(it.key())) v[it.key()] = it.value();
  return v;
}

// How long clients should wait between polls: about one denoising step, within [100 ms, 2 s].
int poll_after_ms(const ServerState& s) {
  const double step_ms = s.metrics.mean_step_seconds() * 1000.0;
  if (step_ms <= 0) return 500;
  return static_cast<int>(std::clamp(step_ms, 100.0, 2000.0));
}

// A build that cannot write MP4s (no FFmpeg libraries and no ffmpeg program) says so before
// the generation, not after it.
void require_mp4_writer() {
  if (const std::string why = media::mp4_writer_problem(); !why.empty())
    throw ApiError(500, fmt::format("this server cannot write MP4s: {}", why), std::nullopt, "mp4_unavailable");
}

void create_video(ServerState& s, const HttpRequest& req, HttpResponse& res) {
  const VideoPlan plan = plan_video(parse_video_request(body_fields(req)), s.model.info, *s.model.pipeline);
  require_mp4_writer();
  VideoJob job;
  job.id = new_video_id();
  job.created_at = unix_now();
  job.model = s.model.info.id;
  job.prompt = plan.resolved.prompt;
  job.seconds = plan.seconds;
  job.size = plan.size;
  job.params = plan.extras();
  s.store->insert(job);
  const std::string id = job.id;
  if (!s.queue.submit(id, [&s, id, plan](const std::atomic<bool>& cancelled) { run_video_job(s, id, plan, cancelled); })) {
    s.store->remove(id);
    throw_not_queued(s);
  }
  spdlog::info("{}: queued", id);
  note_job_id(id);
  send_json(res, 200, video_json(job));
}

void generate_video_sync(ServerState& s, const HttpRequest& req, HttpResponse& res) {
  const VideoPlan plan = plan_video(parse_video_request(body_fields(req)), s.model.info, *s.model.pipeline);
  require_mp4_writer();
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<uint8_t> mp4;
  try {
    mp4 = run_sync<std::vector<uint8_t>>(s, [&s, &plan](const std::atomic<bool>& cancelled) {
      const GenerationOutput out = generate(s, plan.resolved, plan.adapters, cancelled);
      media::VideoEncodeOptions encode;
      encode.fps = plan.fps;
      return media::encode_mp4(out.frames, encode);
    });
  } catch (const ApiError& e) {
    if (e.status == 500) s.metrics.count_generation("video_sync", "failed", seconds_since(t0));
    throw;
  }
  s.metrics.count_generation("video_sync", "completed", seconds_since(t0));
  res.status = 200;
  res.set_content(std::string(mp4.begin(), mp4.end()), "video/mp4");
}

void list_videos(ServerState& s, const HttpRequest& req, HttpResponse& res) {
  reject_unknown_query(req, {"after", "limit", "order"});
  std::optional<std::string> after;
  if (req.has_param("after")) after = checked_video_id(req.get_param_value("after"));
  int limit = 20;
  if (req.has_param("limit")) {
    const std::string v = req.get_param_value("limit");
    if (v.empty() || v.size() > 3 || v.find_first_not_of("0123456789") != std::string::npos || std::stoi(v) < 1 ||
        std::stoi(v) > 100)
      bad_field("limit", fmt::format("'limit' must be an integer in [1, 100], got '{}'", v));
    limit = std::stoi(v);
  }
  bool descending = true;
  if (req.has_param("order")) {
    const std::string v = req.get_param_value("order");
    if (v != "asc" && v != "desc") bad_field("order", fmt::format("'order' must be 'asc' or 'desc', got '{}'", v));
    descending = v == "desc";
  }
  const std::optional<JobPage> page = s.store->list(after, limit, descending);
  if (!page) throw ApiError(404, fmt::format("no video with id '{}' (after)", *after), "after", "not_found");
  json data = json::array();
  for (const VideoJob& j : page->data) data.push_back(video_json(j));
  json body = {{"object", "list"}, {"data", data}, {"has_more", page->has_more}, {"first_id", nullptr},
               {"last_id", nullptr}};
  if (!page->data.empty()) {
    body["first_id"] = page->data.front().id;
    body["last_id"] = page->data.back().id;
  }
  send_json(res, 200, body);
}

void get_video(ServerState& s, const HttpRequest& req, HttpResponse& res, const Params& p) {
  reject_unknown_query(req, {});
  note_job_id(p[0]);
  const std::optional<VideoJob> job = s.store->get(checked_video_id(p[0]));
  if (!job) throw ApiError(404, fmt::format("no video with id '{}'", p[0]), "video_id", "not_found");
  send_json(res, 200, video_json(*job));
  if (job->status == "queued" || job->status == "in_progress")
    res.set_header("openai-poll-after-ms", std::to_string(poll_after_ms(s)));
}

void get_video_content(ServerState& s, const HttpRequest& req, HttpResponse& res, const Params& p) {
  reject_unknown_query(req, {"variant"});
  note_job_id(p[0]);
  const std::string id = checked_video_id(p[0]);
  const std::string variant = req.has_param("variant") ? req.get_param_value("variant") : "video";
  if (variant == "spritesheet") bad_field("variant", "variant 'spritesheet' is not supported (use video or thumbnail)");
  if (variant != "video" && variant != "thumbnail")
    bad_field("variant", fmt::format("'variant' must be 'video' or 'thumbnail', got '{}'", variant));
  const std::optional<VideoJob> job = s.store->get(id);
  if (!job) throw ApiError(404, fmt::format("no video with id '{}'", id), "video_id", "not_found");
  if (job->status == "failed") {
    res.set_header("x-should-retry", "false");
    throw ApiError(409, fmt::format("video {} failed ({}): {}", id, job->error_code.value_or(""),
                                    job->error_message.value_or("")),
                   std::nullopt, "video_failed");
  }
  if (job->status != "completed") {
    // Not ready is not an error to retry at once: the client should poll the job instead.
    res.set_header("x-should-retry", "false");
    throw ApiError(409, fmt::format("video {} is not ready (status {}, progress {}%)", id, job->status, job->progress),
                   std::nullopt, "video_not_ready");
  }
  std::string path = s.media.video_path(id), type = "video/mp4";
  if (variant == "thumbnail") {
    const auto thumbnail = s.media.find_thumbnail(id);
    if (!thumbnail)
      throw ApiError(404, fmt::format("video {} has no thumbnail (it could not be encoded)", id), "variant",
                     "content_missing");
    std::tie(path, type) = *thumbnail;
  }
  std::vector<uint8_t> bytes;
  try {
    bytes = media::read_file(path);
  } catch (const Error&) {
    throw ApiError(404, fmt::format("the {} of video {} is gone from the media directory", variant, id), std::nullopt,
                   "content_missing");
  }
  res.status = 200;
  res.set_content(std::string(bytes.begin(), bytes.end()), type);
}

void delete_video(ServerState& s, const HttpRequest& req, HttpResponse& res, const Params& p) {
  reject_unknown_query(req, {});
  note_job_id(p[0]);
  const std::string id = checked_video_id(p[0]);
  if (!s.store->get(id)) throw ApiError(404, fmt::format("no video with id '{}'", id), "video_id", "not_found");
  if (s.queue.cancel(id)) spdlog::info("{}: cancel requested", id);
  s.store->remove(id);
  s.media.remove_media(id);
  send_json(res, 200, {{"id", id}, {"object", "video.deleted"}, {"deleted", true}});
}

}  // namespace

std::vector<Route> video_routes(ServerState& s) {
  using Fn = void (*)(ServerState&, const HttpRequest&, HttpResponse&, const Params&);
  const auto bind = [&s](Fn f) -> Handler {
    return [&s, f](const HttpRequest& q, HttpResponse& r, const Params& p) { f(s, q, r, p); };
  };
  const auto bind_no_params = [&s](void (*f)(ServerState&, const HttpRequest&, HttpResponse&)) -> Handler {
    return [&s, f](const HttpRequest& q, HttpResponse& r, const Params&) { f(s, q, r); };
  };
  return {
      {"/v1/videos", false, {{"GET", bind_no_params(&list_videos)}, {"POST", bind_no_params(&create_video)}}},
      // Before /v1/videos/{id}: "generations" is not an id.
      {"/v1/videos/generations", false, {{"POST", bind_no_params(&generate_video_sync)}}},
      {"/v1/videos/{id}", false, {{"GET", bind(&get_video)}, {"DELETE", bind(&delete_video)}}},
      {"/v1/videos/{id}/content", false, {{"GET", bind(&get_video_content)}}},
  };
}

}  // namespace vgen::serving
