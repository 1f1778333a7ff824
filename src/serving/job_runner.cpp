#include "serving/job_runner.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include <spdlog/spdlog.h>

#include "core/allocator.h"
#include "media/image.h"
#include "media/mp4.h"
#include "media/temp_file.h"
#include "serving/http_util.h"

namespace vgen::serving {

namespace {

// The thumbnail is optional: WebP (FFmpeg's libraries) when it can be encoded, else PNG, else
// none. Never fails the job; the content route serves whichever file exists.
void write_thumbnail(const ServerState& state, const std::string& id, const Tensor& frame) {
  for (const media::ImageFormat format : {media::ImageFormat::WEBP, media::ImageFormat::PNG}) {
    const std::string path = state.media.thumbnail_path(id, format);
    try {
      media::write_file_atomic(path, media::encode_image(frame, format));
      return;
    } catch (const std::exception& e) {
      spdlog::warn("{}: thumbnail {} not written: {}", id, path.substr(path.rfind('.') + 1), e.what());
    }
  }
  spdlog::warn("{}: no thumbnail; the video itself is complete", id);
}

// Marks the job failed; set_failed keeps the failure in memory when the database cannot take it.
void fail_job(ServerState& state, const std::string& id, const std::string& message,
              std::chrono::steady_clock::time_point t0) {
  state.store->set_failed(id, "generation_failed", message, unix_now());
  state.media.remove_media(id);
  state.metrics.count_generation("video", "failed", seconds_since(t0));
  spdlog::error("{}: failed: {}", id, message);
}

}  // namespace

GenerationOutput generate(ServerState& state, const ResolvedParams& params, const AdapterPlan& adapters,
                          const std::atomic<bool>& cancelled, const std::function<void(const StepProgress&)>& on_step) {
  state.model.pipeline->set_lora(adapters.lora, adapters.lora_2);
  Allocator& memory = allocator_for(state.model.device);
  memory.reset_peak();
  GenerationOutput out = state.model.pipeline->generate(params, [&](const StepProgress& p) {
    state.metrics.observe_step(p.step_seconds);
    if (on_step) on_step(p);
    return !cancelled.load();
  });
  state.metrics.observe_generation_memory(memory.peak_bytes());
  if (out.cache.enabled()) state.metrics.count_cache_calls(out.cache.backend, out.cache.computed(), out.cache.skipped());
  return out;
}

void run_video_job(ServerState& state, const std::string& id, const VideoPlan& plan, const std::atomic<bool>& cancelled) {
  const auto t0 = std::chrono::steady_clock::now();
  // Every path below ends in a final state (completed, failed, or deleted by its client):
  // a store error is a failed job, never one left queued or in progress.
  try {
    if (!state.store->set_in_progress(id)) return;  // deleted while queued
  } catch (const std::exception& e) {
    fail_job(state, id, e.what(), t0);
    return;
  }
  spdlog::info("{}: started ({} {}x{}x{}, {} steps)", id, state.model.info.id, plan.resolved.width,
               plan.resolved.height, plan.resolved.num_frames, plan.resolved.num_inference_steps);
  bool progress_warned = false;
  try {
    GenerationOutput out = generate(state, plan.resolved, plan.adapters, cancelled, [&](const StepProgress& p) {
      // 100 means "done", which includes encoding: denoising goes up to 99. Progress is
      // advisory: a failed write of it does not stop the generation.
      try {
        state.store->set_progress(id, std::min(99, p.total > 0 ? 100 * p.step / p.total : 0));
      } catch (const std::exception& e) {
        if (!std::exchange(progress_warned, true)) spdlog::warn("{}: progress not stored: {}", id, e.what());
      }
    });
    if (cancelled) throw Cancelled();
    media::VideoEncodeOptions encode;
    encode.fps = plan.fps;
    media::write_mp4(state.media.video_path(id), out.frames, encode);
    write_thumbnail(state, id, out.frames.select(0, 0));
    if (out.cache.enabled()) {
      // The job record says what the step cache did.
      nlohmann::json params = plan.extras();
      params["cache"] = {{"backend", out.cache.backend},
                         {"computed", out.cache.computed()},
                         {"skipped", out.cache.skipped()},
                         {"summary", out.cache.summary()}};
      state.store->set_params(id, params);
    }
    if (!state.store->set_completed(id, unix_now())) {
      state.media.remove_media(id);  // deleted while it was being written
      return;
    }
    state.metrics.count_generation("video", "completed", seconds_since(t0));
    spdlog::info("{}: completed in {:.2f} s", id, seconds_since(t0));
  } catch (const std::exception& e) {
    if (cancelled) {
      // Deleted (its row is gone) or shutting down (the next start marks it failed).
      state.media.remove_media(id);
      state.metrics.count_generation("video", "cancelled", seconds_since(t0));
      spdlog::info("{}: cancelled", id);
      return;
    }
    fail_job(state, id, e.what(), t0);
  }
}

}  // namespace vgen::serving
