// The worker's video jobs under store failures (issue 20, item 4): a write of the job
// database that fails at any point (disk full) never leaves a job queued or in progress,
// and a failure that could not be written is written once the database takes writes again.
// Also: an optional output (the thumbnail) never fails a job.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <set>
#include <string>

#include "serving/fake_pipeline.h"
#include "serving/job_runner.h"
#include "serving/server_state.h"
#include "serving/video_id.h"

using namespace vgen::serving;
namespace fs = std::filesystem;

namespace {

ServeOptions options_for(const std::string& name) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("vgen_job_runner_" + name);
  fs::remove_all(dir);
  ServeOptions o;
  o.model = "/models/fake_model/";
  o.media_dir = dir.string();
  return o;
}

void load_fake_model(ServerState& state) {
  state.model.info.id = "fake_model";
  state.model.pipeline = std::make_unique<vgen::testing::FakePipeline>(std::chrono::milliseconds(0));
  state.ready = true;
  state.media.keep();
}

VideoPlan plan_for(ServerState& state) {
  return plan_video(parse_video_request(RequestFields::from_json(R"({"prompt": "x", "num_inference_steps": 2})")),
                    state.model.info, *state.model.pipeline);
}

std::string insert_job(ServerState& state) {
  VideoJob job;
  job.id = new_video_id();
  job.created_at = 1;
  job.model = "fake_model";
  job.prompt = "x";
  job.seconds = "1";
  job.size = "32x32";
  state.store->insert(job);
  return job.id;
}

}  // namespace

TEST(ServingJobRunner, AStoreFailureAtEachWriteEndsInAFinalState) {
  const std::vector<std::set<std::string>> failing = {
      {"set_in_progress"}, {"set_progress"}, {"set_completed"}, {"set_in_progress", "set_failed"},
      {"set_completed", "set_failed"}, {"set_progress", "set_completed", "set_failed"}};
  for (const std::set<std::string>& ops : failing) {
    std::string name;
    for (const std::string& op : ops) name += op + " ";
    SCOPED_TRACE(name);
    const ServeOptions options = options_for("store_failure");
    std::string id;
    {
      ServerState state(options);
      load_fake_model(state);
      id = insert_job(state);
      state.store->inject_write_failures([&ops](std::string_view op) { return ops.count(std::string(op)) > 0; });
      const std::atomic<bool> cancelled{false};
      run_video_job(state, id, plan_for(state), cancelled);

      const std::optional<VideoJob> job = state.store->get(id);
      ASSERT_TRUE(job);
      // Progress is advisory: only its writes failing still completes the job.
      const std::string expected = ops == std::set<std::string>{"set_progress"} ? "completed" : "failed";
      EXPECT_EQ(job->status, expected);
      if (expected == "failed") {
        EXPECT_EQ(job->error_code, "generation_failed");
        EXPECT_TRUE(job->completed_at.has_value());
        EXPECT_FALSE(fs::exists(state.media.video_path(id)));  // a failed job keeps no files
      }
      EXPECT_EQ(state.store->count_by_status()["in_progress"], 0);
      EXPECT_EQ(state.store->count_by_status()["queued"], 0);

      // Space returns: the next job completes, and the failure that was kept in memory is written.
      state.store->inject_write_failures({});
      const std::string next = insert_job(state);
      run_video_job(state, next, plan_for(state), cancelled);
      EXPECT_EQ(state.store->get(next)->status, "completed");
      EXPECT_EQ(state.store->unsaved_failures(), 0u);
    }
    // A restart reads the stored state: failed by the generation, not cut off by the restart.
    ServerState reopened(options);
    EXPECT_EQ(reopened.store->interrupted_jobs(), 0);
    const std::optional<VideoJob> job = reopened.store->get(id);
    ASSERT_TRUE(job);
    EXPECT_NE(job->status, "in_progress");
    EXPECT_NE(job->status, "queued");
    if (job->status == "failed") EXPECT_EQ(job->error_code, "generation_failed");
  }
}

TEST(ServingJobRunner, StoreErrorsNameNoPath) {
  ServerState state(options_for("store_error_message"));
  state.store->inject_write_failures([](std::string_view) { return true; });
  try {
    insert_job(state);
    FAIL() << "no error";
  } catch (const JobStoreError& e) {
    EXPECT_EQ(std::string(e.what()).find(state.media.database_path()), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("vgen_job_runner"), std::string::npos) << e.what();
  }
}

TEST(ServingJobRunner, ThumbnailIsOptional) {
  ServerState state(options_for("thumbnail"));
  load_fake_model(state);
  const std::string id = insert_job(state);
  const std::atomic<bool> cancelled{false};
  run_video_job(state, id, plan_for(state), cancelled);
  ASSERT_EQ(state.store->get(id)->status, "completed");
  // WebP where FFmpeg's libraries are built in, PNG where not: one of them, never a failed job.
  const auto thumbnail = state.media.find_thumbnail(id);
  ASSERT_TRUE(thumbnail);
  EXPECT_TRUE(thumbnail->second == "image/webp" || thumbnail->second == "image/png") << thumbnail->second;
}

// A sync request the queue refuses: 429 while the queue is merely full, 503 once the server is
// stopping (its queue shut down), rather than a "queue full" the client would retry.
TEST(ServingJobRunner, RefusedSyncWorkSays429WhenFullAnd503WhenStopping) {
  ServeOptions o = options_for("refused_sync");
  o.max_queue = 1;
  ServerState state(o);
  ASSERT_TRUE(state.queue.submit("", [](const std::atomic<bool>&) {}));  // not started: it stays queued
  const auto sync = [&state] {
    return run_sync<int>(state, [](const std::atomic<bool>&) { return 1; });
  };
  try {
    sync();
    FAIL() << "a full queue took more work";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 429);
    EXPECT_EQ(e.code.value_or(""), "queue_full");
  }
  state.queue.shutdown();
  try {
    sync();
    FAIL() << "a stopped queue took work";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 503);
    EXPECT_EQ(e.code.value_or(""), "server_shutting_down");
  }
}
