// Prometheus counters of the server: requests by endpoint and status, generations, and the
// denoising step time histogram. Gauges read at scrape time (queue depth, jobs by state)
// are passed to render().
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

namespace vgen::serving {

class Metrics {
 public:
  Metrics();

  // endpoint: the route pattern ("/v1/videos/{id}"), not the raw path, and method: one of
  // HTTP's (anything else counts as "other"), so that clients cannot add series.
  void count_request(const std::string& endpoint, const std::string& method, int status);
  // The device memory high-water mark of one generation.
  void observe_generation_memory(size_t peak_bytes);
  void observe_step(double seconds);
  // Transformer calls of a generation that ran a step cache: computed and skipped.
  void count_cache_calls(const std::string& backend, int computed, int skipped);
  // kind: "video", "video_sync", "image"; result: "completed", "failed", "cancelled".
  void count_generation(const std::string& kind, const std::string& result, double seconds);
  // Exponential moving average of the step time (0 before the first step).
  double mean_step_seconds() const;

  struct Gauges {
    size_t queue_depth = 0;
    bool job_running = false;
    bool model_ready = false;
    std::map<std::string, int64_t> jobs_by_status;
    std::string device;  // the model's device ("cuda:0", "cpu"); empty: not loaded yet
    size_t device_allocated_bytes = 0, device_peak_bytes = 0;
  };
  // Text exposition format 0.0.4.
  std::string render(const Gauges& gauges) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::tuple<std::string, std::string, int>, uint64_t> requests_;
  std::vector<double> step_bounds_;
  std::vector<uint64_t> step_buckets_;  // non-cumulative counts per bound, +Inf last
  double step_sum_ = 0;
  uint64_t step_count_ = 0;
  double step_ema_ = 0;
  std::map<std::pair<std::string, std::string>, uint64_t> generations_;
  std::map<std::string, double> generation_seconds_;
  std::map<std::pair<std::string, std::string>, uint64_t> cache_calls_;  // (backend, computed|skipped)
  size_t last_generation_peak_bytes_ = 0, max_generation_peak_bytes_ = 0;
};

}  // namespace vgen::serving
