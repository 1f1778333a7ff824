// Choosing a cuBLASLt algorithm for a GEMM plan (gemm.cpp, gemm_fp8.cpp): the heuristic's first
// result, or with ExecutionSettings::gemm_autotune the fastest of its leading candidates timed on
// the plan's first call (as conv.cpp does for cuDNN's engines).
//
// cuBLASLt ranks algorithms by a model of the GPU, and for some shapes its first choice is not
// the fastest. A plan is made once per shape (its cache key) and keeps its algorithm for the
// context's lifetime. Algorithms differ in tiling and in split-K reduction, i.e. in the order
// the partial sums are added: results can differ in the last bits between algorithms, so an
// autotuned run may differ in the last bits from one with autotuning off (or from another
// process whose timings came out otherwise); within one context a shape always gets the same.
#pragma once

#include <cublasLt.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace vgen::cuda {

// The heuristic results a plan asks for and times when autotuning.
constexpr int kBlasAutotuneCandidates = 8;
// Products of fewer floating-point operations (2 x batch x M x N x K) are not timed: launch
// overhead dominates them, timing them costs more than it could save, and their choice would
// vary with timing noise from process to process (the tiny test models stay on the heuristic's
// first choice, reproducible across runs). Real shapes (a 512-token text projection, any
// transformer layer at video token counts) are far above it.
constexpr double kBlasAutotuneMinFlops = double(int64_t{1} << 27);
// Candidates within this fraction of the fastest so far count as ties (timing noise); the
// earlier in the heuristic's order is kept.
constexpr float kBlasAutotuneTie = 0.02f;

// Whether a plan made now is autotuned: the active context's gemm_autotune, and the active
// stream not capturing a CUDA graph (a capture records launches without running them: nothing
// could be timed, and synchronizing would break the capture).
bool gemm_autotune_now();
// Whether a product of that size is worth timing (kBlasAutotuneMinFlops).
inline bool gemm_worth_autotuning(int64_t batch, int64_t M, int64_t N, int64_t K) {
  return 2.0 * double(batch) * double(M) * double(N) * double(K) >= kBlasAutotuneMinFlops;
}

// One cublasLtMatmul call but its algorithm: D = alpha op(A) op(B) (+ epilogue) with beta 0 and
// C = D. The descriptor holds everything else (scales, bias pointer) for these operands.
struct BlasCall {
  cublasLtHandle_t handle = nullptr;
  cublasLtMatmulDesc_t desc = nullptr;
  const void* a = nullptr;
  cublasLtMatrixLayout_t la = nullptr;
  const void* b = nullptr;
  cublasLtMatrixLayout_t lb = nullptr;
  void* d = nullptr;
  cublasLtMatrixLayout_t ld = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

// The index in results[0, count) (cublasLtMatmulAlgoGetHeuristic's, best first) of the algorithm
// to keep, -1 when none is usable (state not success, or more workspace than the call has) or,
// when timing, none of them runs (the caller then falls back as when the heuristic finds none).
// Without `time`: the first usable one. With it (only outside graph capture, under the lock
// that guards the descriptor): each usable candidate runs once untimed and 3 times between two
// events on the active stream, writing call.d (the real call overwrites it: beta is 0);
// candidates cuBLASLt fails to run are skipped (their error cleared), and the fastest is kept
// (ties, within kBlasAutotuneTie: the earlier). `what` names the problem in the debug log.
int choose_algorithm(const BlasCall& call, const cublasLtMatmulHeuristicResult_t* results, int count, bool time,
                     const std::string& what);

}  // namespace vgen::cuda
