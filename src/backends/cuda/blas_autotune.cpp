#include "backends/cuda/blas_autotune.h"

#include <spdlog/spdlog.h>

#include <limits>

#include "backends/cuda/cuda_common.h"

namespace vgen::cuda {
namespace {

constexpr int kTimedLaunches = 3;

// Two events, destroyed on every path out.
struct EventPair {
  cudaEvent_t start = nullptr, stop = nullptr;
  EventPair() {
    if (cudaEventCreate(&start) != cudaSuccess || cudaEventCreate(&stop) != cudaSuccess) {
      (void)cudaGetLastError();  // not sticky: clear it, ok() says it failed
    }
  }
  ~EventPair() {
    if (start) cudaEventDestroy(start);
    if (stop) cudaEventDestroy(stop);
  }
  EventPair(const EventPair&) = delete;
  EventPair& operator=(const EventPair&) = delete;
  bool ok() const { return start != nullptr && stop != nullptr; }
};

bool usable(const cublasLtMatmulHeuristicResult_t& r, size_t workspace_bytes) {
  return r.state == CUBLAS_STATUS_SUCCESS && r.workspaceSize <= workspace_bytes;
}

bool launch(const BlasCall& c, const cublasLtMatmulAlgo_t& algo, cudaStream_t s) {
  const float alpha = 1.0f, beta = 0.0f;
  return cublasLtMatmul(c.handle, c.desc, &alpha, c.a, c.la, c.b, c.lb, &beta, c.d, c.ld, c.d, c.ld, &algo,
                        c.workspace, c.workspace_bytes, s) == CUBLAS_STATUS_SUCCESS;
}

// Milliseconds per launch of `algo` (one untimed launch first), or a negative value when
// cuBLASLt does not run it (its launch error cleared).
float time_algorithm(const BlasCall& c, const cublasLtMatmulAlgo_t& algo, const EventPair& ev, cudaStream_t s) {
  bool ran = launch(c, algo, s);
  ran = ran && cudaEventRecord(ev.start, s) == cudaSuccess;
  for (int i = 0; ran && i < kTimedLaunches; ++i) ran = launch(c, algo, s);
  ran = ran && cudaEventRecord(ev.stop, s) == cudaSuccess;
  if (!ran) {
    // A refused launch queues nothing; clear what it may have left (not sticky), and let what
    // was queued finish so that no event is left pending on the stream.
    (void)cudaGetLastError();
    check(cudaStreamSynchronize(s), "gemm autotuning: synchronize after a failed candidate");
    return -1.0f;
  }
  // An error here is a fault of a kernel that ran (sticky): report it rather than go on.
  check(cudaEventSynchronize(ev.stop), "gemm autotuning: wait for a candidate");
  float ms = 0.0f;
  check(cudaEventElapsedTime(&ms, ev.start, ev.stop), "gemm autotuning: elapsed time");
  return ms / kTimedLaunches;
}

}  // namespace

bool gemm_autotune_now() { return active().settings().gemm_autotune && !stream_capturing(); }

int choose_algorithm(const BlasCall& call, const cublasLtMatmulHeuristicResult_t* results, int count, bool time,
                     const std::string& what) {
  int first = -1, usable_count = 0;
  for (int i = 0; i < count; ++i) {
    if (!usable(results[i], call.workspace_bytes)) continue;
    if (first < 0) first = i;
    ++usable_count;
  }
  if (!time || usable_count < 2) return first;
  const EventPair ev;
  if (!ev.ok()) return first;
  const cudaStream_t s = stream();
  int best = -1;
  float best_ms = std::numeric_limits<float>::infinity(), first_ms = -1.0f;
  for (int i = first; i < count; ++i) {
    if (!usable(results[i], call.workspace_bytes)) continue;
    const float ms = time_algorithm(call, results[i].algo, ev, s);
    if (i == first) first_ms = ms;
    if (ms >= 0.0f && ms < best_ms * (1.0f - kBlasAutotuneTie)) {
      best = i;
      best_ms = ms;
    }
  }
  if (best < 0) {  // offered but not runnable: as if the heuristic had found none (the caller falls back)
    spdlog::warn("cublasLt autotune: {}: none of the heuristic's {} algorithms ran", what, count);
    return -1;
  }
  spdlog::debug("cublasLt autotune: {}: candidate {} of {} at {:.4f} ms (the heuristic's first: {:.4f} ms)", what,
                best, count, best_ms, first_ms);
  return best;
}

}  // namespace vgen::cuda
