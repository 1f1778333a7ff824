// The SQLite job store (reopen = server restart) and the worker queue (order, bound,
// cancellation of queued and running work, shutdown).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <thread>

#include "core/error.h"
#include "serving/job_queue.h"
#include "serving/job_store.h"
#include "serving/video_id.h"

using namespace vgen::serving;
namespace fs = std::filesystem;

namespace {

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("vgen_serving_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

VideoJob make_job(const std::string& prompt, int64_t created_at) {
  VideoJob j;
  j.id = new_video_id();
  j.created_at = created_at;
  j.model = "wan21_t2v_tiny";
  j.prompt = prompt;
  j.seconds = "4";
  j.size = "48x32";
  j.params = {{"num_frames", 65}, {"seed", 3}};
  return j;
}

}  // namespace

TEST(ServingJobStore, InsertGetUpdateRemove) {
  const fs::path dir = fresh_dir("store_basic");
  JobStore store((dir / "vgen.db").string());
  EXPECT_EQ(store.interrupted_jobs(), 0);
  const VideoJob job = make_job("a cat \xe2\x9c\x93 'quoted'", 1000);
  store.insert(job);

  std::optional<VideoJob> got = store.get(job.id);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->prompt, job.prompt);
  EXPECT_EQ(got->status, "queued");
  EXPECT_EQ(got->created_at, 1000);
  EXPECT_FALSE(got->completed_at);
  EXPECT_EQ(got->params["num_frames"], 65);

  EXPECT_TRUE(store.set_in_progress(job.id));
  EXPECT_TRUE(store.set_progress(job.id, 40));
  got = store.get(job.id);
  EXPECT_EQ(got->status, "in_progress");
  EXPECT_EQ(got->progress, 40);
  EXPECT_TRUE(store.set_completed(job.id, 1010));
  got = store.get(job.id);
  EXPECT_EQ(got->status, "completed");
  EXPECT_EQ(got->progress, 100);
  EXPECT_EQ(got->completed_at, 1010);

  EXPECT_TRUE(store.remove(job.id));
  EXPECT_FALSE(store.get(job.id));
  // Updates of a deleted job report it, so the worker can clean up.
  EXPECT_FALSE(store.set_progress(job.id, 50));
  EXPECT_FALSE(store.set_completed(job.id, 1));
  EXPECT_FALSE(store.remove(job.id));
  EXPECT_FALSE(store.get("video_does_not_exist_0000"));
}

TEST(ServingJobStore, ListPagesInCreationOrder) {
  const fs::path dir = fresh_dir("store_list");
  JobStore store((dir / "vgen.db").string());
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    VideoJob j = make_job("p" + std::to_string(i), 100);  // same second: order is insertion order
    ids.push_back(j.id);
    store.insert(j);
  }
  std::optional<JobPage> page = store.list(std::nullopt, 2, /*descending=*/true);
  ASSERT_TRUE(page);
  ASSERT_EQ(page->data.size(), 2u);
  EXPECT_EQ(page->data[0].id, ids[4]);
  EXPECT_EQ(page->data[1].id, ids[3]);
  EXPECT_TRUE(page->has_more);
  page = store.list(ids[3], 2, true);
  EXPECT_EQ(page->data[0].id, ids[2]);
  EXPECT_EQ(page->data[1].id, ids[1]);
  EXPECT_TRUE(page->has_more);
  page = store.list(ids[1], 2, true);
  ASSERT_EQ(page->data.size(), 1u);
  EXPECT_EQ(page->data[0].id, ids[0]);
  EXPECT_FALSE(page->has_more);

  page = store.list(std::nullopt, 10, /*descending=*/false);
  ASSERT_EQ(page->data.size(), 5u);
  EXPECT_EQ(page->data[0].id, ids[0]);
  EXPECT_FALSE(page->has_more);
  page = store.list(ids[2], 10, false);
  ASSERT_EQ(page->data.size(), 2u);
  EXPECT_EQ(page->data[0].id, ids[3]);

  EXPECT_FALSE(store.list("video_0123456789abcdefXYZ", 10, true));
  EXPECT_EQ(store.count_by_status()["queued"], 5);
}

TEST(ServingJobStore, ReopenKeepsFinishedJobsAndFailsUnfinishedOnes) {
  const fs::path dir = fresh_dir("store_reopen");
  const std::string path = (dir / "vgen.db").string();
  VideoJob done = make_job("done", 1), failed = make_job("failed", 2), running = make_job("running", 3),
           queued = make_job("queued", 4);
  {
    JobStore store(path);
    for (const VideoJob* j : {&done, &failed, &running, &queued}) store.insert(*j);
    store.set_in_progress(done.id);
    store.set_completed(done.id, 11);
    store.set_failed(failed.id, "generation_failed", "out of memory", 12);
    store.set_in_progress(running.id);
    store.set_progress(running.id, 60);
    // WAL mode: the log file sits beside the database while it is open.
    EXPECT_TRUE(fs::exists(path + "-wal"));
  }
  JobStore store(path);
  EXPECT_EQ(store.interrupted_jobs(), 2);
  EXPECT_EQ(store.get(done.id)->status, "completed");
  EXPECT_EQ(store.get(done.id)->completed_at, 11);
  EXPECT_EQ(store.get(failed.id)->error_code, "generation_failed");
  EXPECT_EQ(store.get(failed.id)->error_message, "out of memory");
  for (const VideoJob* j : {&running, &queued}) {
    const VideoJob r = *store.get(j->id);
    EXPECT_EQ(r.status, "failed");
    EXPECT_EQ(r.error_code, "server_restarted");
    EXPECT_TRUE(r.error_message.has_value());
    EXPECT_TRUE(r.completed_at.has_value());
  }
  EXPECT_EQ(store.get(running.id)->progress, 60);  // where it stopped
  EXPECT_EQ(store.ids().size(), 4u);
  EXPECT_EQ(store.list(std::nullopt, 10, false)->data.front().id, done.id);  // order survives too
}

TEST(ServingJobStore, UnopenableDatabaseNamesThePath) {
  const fs::path dir = fresh_dir("store_bad");
  const std::string path = (dir / "missing_folder" / "vgen.db").string();
  try {
    JobStore store(path);
    ADD_FAILURE() << "opened " << path;
  } catch (const vgen::Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(ServingJobQueue, RunsInOrderAndBoundsTheQueue) {
  JobQueue queue(3);
  std::vector<int> order;
  std::mutex m;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  // Not started yet: items wait, and the bound counts them.
  for (int i = 0; i < 3; ++i)
    EXPECT_TRUE(queue.submit("", [&, i, released](const std::atomic<bool>&) {
      released.wait();
      std::lock_guard lock(m);
      order.push_back(i);
    }));
  EXPECT_FALSE(queue.submit("", [](const std::atomic<bool>&) {}));
  EXPECT_EQ(queue.queued(), 3u);
  queue.start();
  release.set_value();
  while (queue.queued() > 0 || queue.running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
}

TEST(ServingJobQueue, CancelQueuedAndRunning) {
  JobQueue queue(8);
  std::atomic<bool> running_saw_cancel{false}, queued_ran{false};
  std::promise<void> started;
  queue.submit("a", [&](const std::atomic<bool>& cancelled) {
    started.set_value();
    while (!cancelled) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    running_saw_cancel = true;
  });
  auto dropped = std::make_shared<std::promise<int>>();
  std::future<int> dropped_result = dropped->get_future();
  // The queue holds the only reference: dropping the item breaks the promise.
  queue.submit("b", [&, dropped = std::move(dropped)](const std::atomic<bool>&) {
    queued_ran = true;
    dropped->set_value(1);
  });
  queue.start();
  started.get_future().wait();
  EXPECT_TRUE(queue.cancel("b"));  // queued: dropped unrun, its promise broken
  EXPECT_THROW(dropped_result.get(), std::future_error);
  EXPECT_FALSE(queue.cancel("b"));
  EXPECT_FALSE(queue.cancel("unknown"));
  EXPECT_TRUE(queue.cancel("a"));  // running: sees its flag
  while (queue.running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_TRUE(running_saw_cancel);
  EXPECT_FALSE(queued_ran);
}

TEST(ServingJobQueue, ShutdownCancelsRunningAndDropsQueued) {
  JobQueue queue(8);
  std::promise<void> started;
  std::atomic<bool> saw_cancel{false};
  queue.submit("a", [&](const std::atomic<bool>& cancelled) {
    started.set_value();
    while (!cancelled) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    saw_cancel = true;
  });
  auto waiting = std::make_shared<std::promise<int>>();
  std::future<int> waiting_result = waiting->get_future();
  queue.submit("", [waiting = std::move(waiting)](const std::atomic<bool>&) { waiting->set_value(1); });
  queue.start();
  started.get_future().wait();
  queue.shutdown();
  EXPECT_TRUE(saw_cancel);
  EXPECT_THROW(waiting_result.get(), std::future_error);
  EXPECT_FALSE(queue.submit("c", [](const std::atomic<bool>&) {}));
}

TEST(ServingJobQueue, ExceptionsDoNotStopTheWorker) {
  JobQueue queue(4);
  std::promise<void> done;
  queue.submit("boom", [](const std::atomic<bool>&) { throw std::runtime_error("boom"); });
  queue.submit("", [&](const std::atomic<bool>&) { done.set_value(); });
  queue.start();
  EXPECT_EQ(done.get_future().wait_for(std::chrono::seconds(5)), std::future_status::ready);
}
