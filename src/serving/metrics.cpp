#include "serving/metrics.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>

#include <fmt/format.h>

namespace vgen::serving {
namespace {

// Resident set size from /proc (0 where unavailable). The CPU backend's tensors live here.
int64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t pages_total = 0, pages_resident = 0;
  if (!(statm >> pages_total >> pages_resident)) return 0;
  return pages_resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

std::string escape_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string normalized_method(const std::string& method) {
  for (const char* m : {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
    if (method == m) return method;
  return "other";
}

}  // namespace

Metrics::Metrics()
    : step_bounds_{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
      step_buckets_(step_bounds_.size() + 1, 0) {}

void Metrics::count_request(const std::string& endpoint, const std::string& method, int status) {
  std::lock_guard lock(mutex_);
  ++requests_[{endpoint, normalized_method(method), status}];
}

void Metrics::observe_generation_memory(size_t peak_bytes) {
  std::lock_guard lock(mutex_);
  last_generation_peak_bytes_ = peak_bytes;
  max_generation_peak_bytes_ = std::max(max_generation_peak_bytes_, peak_bytes);
}

void Metrics::observe_step(double seconds) {
  std::lock_guard lock(mutex_);
  size_t i = 0;
  while (i < step_bounds_.size() && seconds > step_bounds_[i]) ++i;
  ++step_buckets_[i];
  step_sum_ += seconds;
  step_ema_ = step_count_ == 0 ? seconds : 0.8 * step_ema_ + 0.2 * seconds;
  ++step_count_;
}

void Metrics::count_cache_calls(const std::string& backend, int computed, int skipped) {
  std::lock_guard lock(mutex_);
  cache_calls_[{backend, "computed"}] += static_cast<uint64_t>(computed);
  cache_calls_[{backend, "skipped"}] += static_cast<uint64_t>(skipped);
}

void Metrics::count_generation(const std::string& kind, const std::string& result, double seconds) {
  std::lock_guard lock(mutex_);
  ++generations_[{kind, result}];
  generation_seconds_[kind] += seconds;
}

double Metrics::mean_step_seconds() const {
  std::lock_guard lock(mutex_);
  return step_ema_;
}

std::string Metrics::render(const Gauges& g) const {
  std::lock_guard lock(mutex_);
  std::string out;
  out += "# HELP vgen_http_requests_total HTTP requests by endpoint, method and status.\n";
  out += "# TYPE vgen_http_requests_total counter\n";
  for (const auto& [key, n] : requests_) {
    const auto& [endpoint, method, status] = key;
    out += fmt::format("vgen_http_requests_total{{endpoint=\"{}\",method=\"{}\",status=\"{}\"}} {}\n",
                       escape_label(endpoint), escape_label(method), status, n);
  }
  out += "# HELP vgen_model_ready 1 once the model is loaded.\n# TYPE vgen_model_ready gauge\n";
  out += fmt::format("vgen_model_ready {}\n", g.model_ready ? 1 : 0);
  out += "# HELP vgen_queue_depth Generation requests waiting for the worker.\n# TYPE vgen_queue_depth gauge\n";
  out += fmt::format("vgen_queue_depth {}\n", g.queue_depth);
  out += "# HELP vgen_worker_busy 1 while a generation runs.\n# TYPE vgen_worker_busy gauge\n";
  out += fmt::format("vgen_worker_busy {}\n", g.job_running ? 1 : 0);
  out += "# HELP vgen_video_jobs Stored video jobs by state.\n# TYPE vgen_video_jobs gauge\n";
  for (const char* state : {"queued", "in_progress", "completed", "failed"}) {
    auto it = g.jobs_by_status.find(state);
    out += fmt::format("vgen_video_jobs{{state=\"{}\"}} {}\n", state, it == g.jobs_by_status.end() ? 0 : it->second);
  }
  if (!cache_calls_.empty()) {
    out += "# HELP vgen_cache_transformer_calls_total Transformer calls of generations with a step cache, by cache "
           "and whether the block stack ran (computed) or its cached residual was reused (skipped).\n";
    out += "# TYPE vgen_cache_transformer_calls_total counter\n";
    for (const auto& [key, n] : cache_calls_)
      out += fmt::format("vgen_cache_transformer_calls_total{{cache=\"{}\",result=\"{}\"}} {}\n", key.first,
                         key.second, n);
  }
  out += "# HELP vgen_generations_total Finished generations by kind and result.\n";
  out += "# TYPE vgen_generations_total counter\n";
  for (const auto& [key, n] : generations_)
    out += fmt::format("vgen_generations_total{{kind=\"{}\",result=\"{}\"}} {}\n", key.first, key.second, n);
  out += "# HELP vgen_generation_seconds_total Time spent generating, by kind.\n";
  out += "# TYPE vgen_generation_seconds_total counter\n";
  for (const auto& [kind, s] : generation_seconds_)
    out += fmt::format("vgen_generation_seconds_total{{kind=\"{}\"}} {}\n", kind, s);
  out += "# HELP vgen_denoising_step_seconds Time of one denoising step (all CFG branches).\n";
  out += "# TYPE vgen_denoising_step_seconds histogram\n";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < step_bounds_.size(); ++i) {
    cumulative += step_buckets_[i];
    out += fmt::format("vgen_denoising_step_seconds_bucket{{le=\"{}\"}} {}\n", step_bounds_[i], cumulative);
  }
  cumulative += step_buckets_.back();
  out += fmt::format("vgen_denoising_step_seconds_bucket{{le=\"+Inf\"}} {}\n", cumulative);
  out += fmt::format("vgen_denoising_step_seconds_sum {}\n", step_sum_);
  out += fmt::format("vgen_denoising_step_seconds_count {}\n", step_count_);
  out += "# HELP vgen_resident_memory_bytes Resident memory of the server process.\n";
  out += "# TYPE vgen_resident_memory_bytes gauge\n";
  out += fmt::format("vgen_resident_memory_bytes {}\n", resident_bytes());
  if (!g.device.empty()) {
    const std::string d = escape_label(g.device);
    out += "# HELP vgen_device_memory_allocated_bytes Tensor memory in use on the model's device (GPU or CPU).\n";
    out += "# TYPE vgen_device_memory_allocated_bytes gauge\n";
    out += fmt::format("vgen_device_memory_allocated_bytes{{device=\"{}\"}} {}\n", d, g.device_allocated_bytes);
    out += "# HELP vgen_device_memory_peak_bytes High-water mark of that memory since the last generation began.\n";
    out += "# TYPE vgen_device_memory_peak_bytes gauge\n";
    out += fmt::format("vgen_device_memory_peak_bytes{{device=\"{}\"}} {}\n", d, g.device_peak_bytes);
    out += "# HELP vgen_generation_peak_device_memory_bytes Device memory high-water mark of a generation.\n";
    out += "# TYPE vgen_generation_peak_device_memory_bytes gauge\n";
    out += fmt::format("vgen_generation_peak_device_memory_bytes{{device=\"{}\",generation=\"last\"}} {}\n", d,
                       last_generation_peak_bytes_);
    out += fmt::format("vgen_generation_peak_device_memory_bytes{{device=\"{}\",generation=\"max\"}} {}\n", d,
                       max_generation_peak_bytes_);
  }
  return out;
}

}  // namespace vgen::serving
