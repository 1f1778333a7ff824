// What the routes and the job runner share: the options, the media directory, the job
// store, the metrics, the model once it is loaded, and the generation queue.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "serving/job_queue.h"
#include "serving/job_store.h"
#include "serving/media_dir.h"
#include "serving/metrics.h"
#include "serving/model_loading.h"
#include "serving/server.h"

namespace vgen::serving {

struct ServerState {
  // Takes the media directory and opens the job store (marking jobs a previous server left
  // unfinished as failed, and sweeping their stray files).
  explicit ServerState(ServeOptions options);

  ServeOptions options;
  MediaDir media;
  std::unique_ptr<JobStore> store;
  Metrics metrics;
  ServedModel model;  // set once by the loader thread before `ready`
  int64_t model_created = 0;
  std::atomic<bool> ready{false};
  JobQueue queue;  // declared after `model` and `store`: its worker, which uses them, is joined first
};

}  // namespace vgen::serving
