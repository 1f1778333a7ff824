// One worker thread that runs generation work items in order from a bounded queue, with
// cancellation: a queued item is dropped, a running one sees its flag (the generation's
// step callback returns false at the next denoising step).
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace vgen::serving {

class JobQueue {
 public:
  // Runs with the item's cancel flag. An item dropped without running (cancelled while
  // queued, or at shutdown) is destroyed unrun: owners of promises it holds see that.
  using Work = std::function<void(const std::atomic<bool>& cancelled)>;

  explicit JobQueue(size_t max_queued);
  ~JobQueue();  // shutdown()
  JobQueue(const JobQueue&) = delete;
  JobQueue& operator=(const JobQueue&) = delete;

  // Starts the worker thread; items submitted before wait for it.
  void start();
  // Queues `work` under `key` (a job id, or empty for anonymous work); false when
  // max_queued items are already waiting.
  bool submit(const std::string& key, Work work);
  // Cancels the item with this key: drops it when queued, flags it when running.
  // Returns false when no such item is queued or running.
  bool cancel(const std::string& key);
  size_t queued() const;
  bool running() const;
  // True once shutdown() has begun: submit() refuses everything from then on.
  bool stopping() const;
  // Flags the running item, drops the queued ones, joins the worker.
  void shutdown();

 private:
  struct Item {
    std::string key;
    Work work;
    std::shared_ptr<std::atomic<bool>> cancelled;
  };
  void loop();

  const size_t max_queued_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  std::string running_key_;
  std::shared_ptr<std::atomic<bool>> running_cancelled_;
  bool running_ = false;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace vgen::serving
