// Running generations on the queue's worker: video jobs (progress, MP4 + thumbnail into the
// media directory, the job's final status) and the synchronous endpoints' work, whose
// caller waits for the result.
#pragma once

#include <atomic>
#include <functional>
#include <future>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "serving/api_error.h"
#include "serving/requests.h"
#include "serving/server_state.h"

namespace vgen::serving {

// Runs the model on `params` (resolved by plan_video/plan_image), counting step times in the
// metrics; stops at the next step once `cancelled` is set (throws Cancelled).
// Runs one generation with `adapters` fused (switching the pipeline's LoRA adapters first when
// they differ from the previous generation's).
GenerationOutput generate(ServerState& state, const ResolvedParams& params, const AdapterPlan& adapters,
                          const std::atomic<bool>& cancelled, const std::function<void(const StepProgress&)>& on_step = {});

// The work of one queued video job: in progress, then completed with its files, or failed.
void run_video_job(ServerState& state, const std::string& id, const VideoPlan& plan, const std::atomic<bool>& cancelled);

// Why the queue refused a job: 503 when the server is stopping (its queue takes no more),
// else 429 (full).
[[noreturn]] inline void throw_not_queued(const ServerState& state) {
  if (state.queue.stopping())
    throw ApiError(503, "the server is shutting down", std::nullopt, "server_shutting_down");
  throw ApiError(429, fmt::format("the generation queue is full ({} waiting); retry later", state.options.max_queue),
                 std::nullopt, "queue_full");
}

// Runs `work` on the worker and waits for its result (sync endpoints): 429 when the queue is
// full, 503 when the server stops first, 500 naming the error when the work fails.
// At stop, Server::stop() shuts the queue down first, which returns once the running work
// has ended (a generation stops at its next step): the result, or the broken promise of
// queued work, is set by then, and the HTTP layer waits for the answers being written.
template <typename T>
T run_sync(ServerState& state, const std::function<T(const std::atomic<bool>&)>& work) {
  auto promise = std::make_shared<std::promise<T>>();
  std::future<T> result = promise->get_future();
  // The queue item holds the only reference, so dropping it unrun breaks the promise.
  const bool queued = state.queue.submit("", [promise = std::move(promise), work](const std::atomic<bool>& cancelled) {
    try {
      promise->set_value(work(cancelled));
    } catch (...) {
      promise->set_exception(std::current_exception());
    }
  });
  if (!queued) throw_not_queued(state);
  try {
    return result.get();
  } catch (const Cancelled&) {
    throw ApiError(503, "the server is shutting down", std::nullopt, "server_shutting_down");
  } catch (const std::future_error&) {
    throw ApiError(503, "the server is shutting down", std::nullopt, "server_shutting_down");
  } catch (const ApiError&) {
    throw;
  } catch (const std::exception& e) {
    throw ApiError(500, fmt::format("generation failed: {}", e.what()), std::nullopt, "generation_failed");
  }
}

}  // namespace vgen::serving
