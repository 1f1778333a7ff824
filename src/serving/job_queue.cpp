#include "serving/job_queue.h"

#include <spdlog/spdlog.h>

namespace vgen::serving {

JobQueue::JobQueue(size_t max_queued) : max_queued_(max_queued) {}

JobQueue::~JobQueue() { shutdown(); }

void JobQueue::start() {
  std::lock_guard lock(mutex_);
  if (!worker_.joinable() && !stopping_) worker_ = std::thread([this] { loop(); });
}

bool JobQueue::submit(const std::string& key, Work work) {
  std::lock_guard lock(mutex_);
  if (stopping_ || queue_.size() >= max_queued_) return false;
  queue_.push_back({key, std::move(work), std::make_shared<std::atomic<bool>>(false)});
  cv_.notify_one();
  return true;
}

bool JobQueue::cancel(const std::string& key) {
  Work dropped;  // destroyed outside the lock: it may wake a waiter
  {
    std::lock_guard lock(mutex_);
    if (key.empty()) return false;
    if (running_ && running_key_ == key) {
      running_cancelled_->store(true);
      return true;
    }
    for (auto it = queue_.begin(); it != queue_.end(); ++it) {
      if (it->key != key) continue;
      dropped = std::move(it->work);
      queue_.erase(it);
      return true;
    }
  }
  return false;
}

size_t JobQueue::queued() const {
  std::lock_guard lock(mutex_);
  return queue_.size();
}

bool JobQueue::running() const {
  std::lock_guard lock(mutex_);
  return running_;
}

bool JobQueue::stopping() const {
  std::lock_guard lock(mutex_);
  return stopping_;
}

void JobQueue::shutdown() {
  std::deque<Item> dropped;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    if (running_) running_cancelled_->store(true);
    dropped.swap(queue_);
    cv_.notify_all();
  }
  dropped.clear();
  if (worker_.joinable()) worker_.join();
}

void JobQueue::loop() {
  for (;;) {
    Item item;
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      item = std::move(queue_.front());
      queue_.pop_front();
      running_ = true;
      running_key_ = item.key;
      running_cancelled_ = item.cancelled;
    }
    try {
      item.work(*item.cancelled);
    } catch (const std::exception& e) {
      // Work reports its own failures; this only keeps the worker alive.
      spdlog::error("job {}: {}", item.key.empty() ? "(sync)" : item.key, e.what());
    } catch (...) {
      spdlog::error("job {}: unknown exception", item.key.empty() ? "(sync)" : item.key);
    }
    item.work = nullptr;
    std::lock_guard lock(mutex_);
    running_ = false;
    running_key_.clear();
    running_cancelled_.reset();
  }
}

}  // namespace vgen::serving
