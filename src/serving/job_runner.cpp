#include "serving/job_runner.h"

#include <algorithm>
#include <chrono>

#include <spdlog/spdlog.h>

#include "media/image.h"
#include "media/mp4.h"
#include "media/temp_file.h"
#include "serving/http_util.h"

namespace vgen::serving {

GenerationOutput generate(ServerState& state, const ResolvedParams& params, const std::atomic<bool>& cancelled,
                          const std::function<void(const StepProgress&)>& on_step) {
  return state.model.pipeline->generate(params, [&](const StepProgress& p) {
    state.metrics.observe_step(p.step_seconds);
    if (on_step) on_step(p);
    return !cancelled.load();
  });
}

void run_video_job(ServerState& state, const std::string& id, const VideoPlan& plan, const std::atomic<bool>& cancelled) {
  if (!state.store->set_in_progress(id)) return;  // deleted while queued
  const auto t0 = std::chrono::steady_clock::now();
  spdlog::info("{}: started ({} {}x{}x{}, {} steps)", id, state.model.info.id, plan.resolved.width,
               plan.resolved.height, plan.resolved.num_frames, plan.resolved.num_inference_steps);
  try {
    GenerationOutput out = generate(state, plan.resolved, cancelled, [&](const StepProgress& p) {
      // 100 means "done", which includes encoding: denoising goes up to 99.
      state.store->set_progress(id, std::min(99, p.total > 0 ? 100 * p.step / p.total : 0));
    });
    if (cancelled) throw Cancelled();
    media::VideoEncodeOptions encode;
    encode.fps = plan.fps;
    media::write_mp4(state.media.video_path(id), out.frames, encode);
    media::write_file_atomic(state.media.thumbnail_path(id),
                             media::encode_image(out.frames.select(0, 0), media::ImageFormat::WEBP));
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
    state.store->set_failed(id, "generation_failed", e.what(), unix_now());
    state.metrics.count_generation("video", "failed", seconds_since(t0));
    spdlog::error("{}: failed: {}", id, e.what());
  }
}

}  // namespace vgen::serving
