// quantized_linear on the GPU (ops/quant.h).
//
// FP8 (per-tensor) and FP8_BLOCK_SCALES: the activation is quantized to e4m3 by one kernel
// (quant.cu: a device-side amax then the cast, or one warp per row and 128-column group), then
// cuBLASLt multiplies e4m3 x e4m3 with float32 accumulation on Hopper's FP8 tensor cores:
//   per-tensor: A_SCALE_POINTER / B_SCALE_POINTER = the weight's and the activation's scale;
//   blockwise:  CUDA 12.9+'s scale modes, the weight's BLK128x128_32F ([ceil(N/128),
//               ceil(K/128)], the checkpoint's layout) and the activation's VEC128_32F (one per
//               row and 128 features, written [ceil(K/128), M]: rows contiguous).
// The row-major product Y[M,N] = X[M,K] W[N,K]^T is the column-major Y^T = W^T X^T: cuBLASLt's A
// is W (op T, the "TN" layout FP8 requires), B is X. Bias (+ gelu-tanh) is the epilogue for a
// 16-bit output, as in gemm.cpp; other activations run after. cuBLASLt's FP8 kernels need K and
// N multiples of 16 and 16-byte aligned operands: other shapes (and a cuBLASLt without an
// algorithm for the problem) take the fallback, the quantized activation and weight expanded
// to x's dtype and the ordinary linear (the same values up to the rounding of the expansion).
//
// Algorithms: the heuristic's first, or with ExecutionSettings::gemm_autotune the fastest of its
// leading candidates timed on the shape's first call (blas_autotune.h), as in gemm.cpp.
//
// Fast accumulation (QuantizedWeight::fast_accum, from quant_config.fast_accum): Hopper's FP8
// tensor cores accumulate in reduced precision, and cuBLASLt by default promotes the partial
// sums to float32 at intervals along K; CUBLASLT_MATMUL_DESC_FAST_ACCUM skips the promotion
// (torch._scaled_mm's use_fast_accum): faster, slightly less accurate. It is asked for in both
// FP8 formats. The blockwise scale modes rescale every 128-wide K group in float32 anyway, and
// may reject the flag: a blockwise plan that finds no algorithm with it is made again without
// it (logged once per shape), rather than losing the FP8 GEMM to the fallback.
//
// NVFP4 (W4A16): no tensor cores before Blackwell multiply e2m1, so the weight is expanded to
// x's dtype (e2m1 * e4m3 block scale * global scale, one rounding) by one kernel into a
// temporary and multiplied by the bf16 GEMM. For Wan's shapes (tens of thousands of tokens)
// the expansion reads 0.56 bytes and writes 2 per weight element once per call: well under 1% of
// the GEMM's time; what NVFP4 buys on Hopper is the weights' memory (~0.28x of bf16), not speed.
#include <cublasLt.h>

#include <array>
#include <map>
#include <mutex>

#include <spdlog/spdlog.h>

#include "backends/cuda/blas_autotune.h"
#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_common.h"
#include "backends/cuda/quant.cuh"
#include "ops/ops.h"

namespace vgen::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;

void check_blas(cublasStatus_t status, const char* what, const std::string& detail) {
  if (status != CUBLAS_STATUS_SUCCESS)
    fail("cublasLt fp8: {} ({}): {} ({})", what, detail, cublasLtGetStatusString(status), cublasLtGetStatusName(status));
}

cudaDataType_t out_type(DType d) {
  switch (d) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    default: fail("quantized_linear: output dtype {} is not supported", dtype_name(d));
  }
}

struct Fp8Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool ok = false;
};

void destroy(Fp8Plan& plan) {
  if (plan.la) cublasLtMatrixLayoutDestroy(plan.la);
  if (plan.lb) cublasLtMatrixLayoutDestroy(plan.lb);
  if (plan.ld) cublasLtMatrixLayoutDestroy(plan.ld);
  if (plan.desc) cublasLtMatmulDescDestroy(plan.desc);
  plan = Fp8Plan{};
}

// (format, out dtype, M, N, K, epilogue, alignments of x_q, w_q, D, bias, fast accumulation asked for)
using Fp8Key = std::array<int64_t, 11>;

struct Fp8State {
  explicit Fp8State(CudaBackend& backend)
      : workspace(Tensor::empty({static_cast<int64_t>(kWorkspaceBytes)}, DType::U8, Device::cuda(backend.device_index()))) {
    check_blas(cublasLtCreate(&handle), "create handle", "");
  }
  ~Fp8State() {
    for (auto& [key, plan] : plans) destroy(plan);
    if (handle) cublasLtDestroy(handle);
  }
  Fp8State(const Fp8State&) = delete;
  Fp8State& operator=(const Fp8State&) = delete;

  std::mutex mutex;
  cublasLtHandle_t handle = nullptr;
  Tensor workspace;
  std::map<Fp8Key, Fp8Plan> plans;
};

struct Fp8Problem {
  QuantFormat format = QuantFormat::Fp8PerTensor;
  DType out = DType::BF16;
  int64_t M = 0, N = 0, K = 0;
  const void *a = nullptr, *b = nullptr, *a_scale = nullptr, *b_scale = nullptr, *bias = nullptr;
  void* d = nullptr;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  bool fast_accum = false;  // CUBLASLT_MATMUL_DESC_FAST_ACCUM
};

std::string problem_str(const Fp8Problem& p) {
  return fmt::format("{} e4m3 x e4m3 -> {}, M {} N {} K {}, epilogue {}{}", quant_format_name(p.format),
                     dtype_name(p.out), p.M, p.N, p.K, static_cast<int>(p.epilogue),
                     p.fast_accum ? ", fast accumulation" : "");
}

void set(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const void* value, size_t size,
         const char* what, const std::string& detail) {
  check_blas(cublasLtMatmulDescSetAttribute(desc, attr, value, size), what, detail);
}

// The plan of p with fast accumulation set as `fast_accum` says, its algorithm chosen on p's own
// operands (timed with autotuning: D is written).
Fp8Plan make_plan(Fp8State& st, const Fp8Problem& p, bool fast_accum) {
  const std::string what = problem_str(p);
  Fp8Plan plan;
  check_blas(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "create matmul descriptor", what);
  const int32_t opa = CUBLAS_OP_T, opb = CUBLAS_OP_N;
  set(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa), "set transA", what);
  set(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb), "set transB", what);
  set(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &p.epilogue, sizeof(p.epilogue), "set epilogue", what);
  if (fast_accum) {
    const int8_t on = 1;
    set(plan.desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &on, sizeof(on), "set fast accumulation", what);
  }
  if (p.bias != nullptr) {
    const int32_t bias_type = out_type(p.out);
    set(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type), "set bias type", what);
    set(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p.bias, sizeof(p.bias), "set bias pointer", what);
  }
  if (p.format == QuantFormat::Fp8Block) {
    const int32_t a_mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, b_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    set(plan.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &a_mode, sizeof(a_mode), "set A scale mode (128x128 blocks)",
        what);
    set(plan.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &b_mode, sizeof(b_mode), "set B scale mode (1x128 groups)", what);
  }
  set(plan.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &p.a_scale, sizeof(p.a_scale), "set A scale", what);
  set(plan.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &p.b_scale, sizeof(p.b_scale), "set B scale", what);
  check_blas(cublasLtMatrixLayoutCreate(&plan.la, CUDA_R_8F_E4M3, p.K, p.N, p.K), "layout A", what);
  check_blas(cublasLtMatrixLayoutCreate(&plan.lb, CUDA_R_8F_E4M3, p.K, p.M, p.K), "layout B", what);
  check_blas(cublasLtMatrixLayoutCreate(&plan.ld, out_type(p.out), p.N, p.M, p.N), "layout D", what);

  cublasLtMatmulPreference_t pref = nullptr;
  check_blas(cublasLtMatmulPreferenceCreate(&pref), "create preference", what);
  const uint64_t ws = kWorkspaceBytes;
  check_blas(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)),
             "set workspace size", what);
  const bool tune = gemm_autotune_now() && gemm_worth_autotuning(1, p.M, p.N, p.K);
  std::array<cublasLtMatmulHeuristicResult_t, kBlasAutotuneCandidates> results{};
  int found = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
      st.handle, plan.desc, plan.la, plan.lb, plan.ld, plan.ld, pref, tune ? kBlasAutotuneCandidates : 1, results.data(), &found);
  cublasLtMatmulPreferenceDestroy(pref);
  // No algorithm (or a scale mode this cuBLASLt or GPU lacks): the caller falls back.
  if (status == CUBLAS_STATUS_SUCCESS) {
    const BlasCall call{st.handle, plan.desc, p.a, plan.la, p.b, plan.lb, p.d, plan.ld, st.workspace.raw_data(),
                        kWorkspaceBytes};
    const int chosen = choose_algorithm(call, results.data(), found, tune, what);
    if (chosen >= 0) {
      plan.algo = results[chosen].algo;
      plan.ok = true;
    }
  }
  return plan;
}

Fp8Plan make_plan(Fp8State& st, const Fp8Problem& p) {
  Fp8Plan plan = make_plan(st, p, p.fast_accum);
  if (!plan.ok && p.fast_accum && p.format == QuantFormat::Fp8Block) {
    destroy(plan);
    plan = make_plan(st, p, false);
    if (plan.ok)
      spdlog::info("cublasLt fp8: {}: no algorithm with fast accumulation for 128x128 block scales; accumulating "
                   "with promotion instead",
                   problem_str(p));
  }
  return plan;
}

// Runs p; false when cuBLASLt has no FP8 algorithm for it.
bool run_fp8(const Fp8Problem& p) {
  Fp8State& st = active().state<Fp8State>();
  const Fp8Key key{static_cast<int64_t>(p.format),
                   static_cast<int64_t>(p.out),
                   p.M,
                   p.N,
                   p.K,
                   static_cast<int64_t>(p.epilogue),
                   pointer_alignment(p.b, 256),
                   pointer_alignment(p.a, 256),
                   pointer_alignment(p.d, 256),
                   p.bias ? pointer_alignment(p.bias, 256) : -1,
                   p.fast_accum};
  std::lock_guard<std::mutex> lock(st.mutex);
  auto it = st.plans.find(key);
  if (it == st.plans.end()) it = st.plans.emplace(key, make_plan(st, p)).first;
  const Fp8Plan& plan = it->second;
  if (!plan.ok) return false;
  const std::string what = problem_str(p);
  // The descriptor is shared by calls with other scales and biases: set them under the lock.
  set(plan.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &p.a_scale, sizeof(p.a_scale), "set A scale", what);
  set(plan.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &p.b_scale, sizeof(p.b_scale), "set B scale", what);
  if (p.bias != nullptr) set(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p.bias, sizeof(p.bias), "set bias", what);
  const float alpha = 1.0f, beta = 0.0f;
  check_blas(cublasLtMatmul(st.handle, plan.desc, &alpha, p.a, plan.la, p.b, plan.lb, &beta, p.d, plan.ld, p.d, plan.ld,
                            &plan.algo, st.workspace.raw_data(), kWorkspaceBytes, stream()),
             "matmul", what);
  return true;
}

Tensor apply_activation(const Tensor& y, Activation act) {
  switch (act) {
    case Activation::None: return y;
    case Activation::GeluTanh: return ops::gelu_tanh(y);
    case Activation::Gelu: return ops::gelu(y);
    case Activation::Silu: return ops::silu(y);
  }
  return y;
}

// Whether cuBLASLt's FP8 path can take the shapes (else the fallback).
bool fp8_shapes_ok(int64_t M, int64_t N, int64_t K) { return M > 0 && N % 16 == 0 && K % 16 == 0; }

}  // namespace

Tensor CudaOps::quantized_linear(const Tensor& x_in, const QuantizedWeight& w, const Tensor& bias, Activation act) {
  require_cuda("quantized_linear", x_in);
  require_float("quantized_linear", x_in);
  const Tensor x = contiguous(x_in);
  const int64_t K = w.in_features, N = w.out_features, M = K == 0 ? 0 : x.numel() / K;
  Shape out_shape = x.shape();
  out_shape.back() = N;
  if (w.format == QuantFormat::Nvfp4) return ops::linear(x, dequantize_weight_device(w, x.dtype()), bias, act);

  const Tensor x2 = x.view({M, K});
  if (fp8_shapes_ok(M, N, K)) {
    QuantizedActivation q;
    q.data = Tensor::empty({M, K}, DType::F8_E4M3, x.device());
    const bool blocks = w.format == QuantFormat::Fp8Block;
    if (blocks) {
      const int64_t G = (K + quant::kBlock - 1) / quant::kBlock;
      q.scale = Tensor::empty({G, M}, DType::F32, x.device());  // cuBLASLt's VEC128 layout: rows contiguous
      quantize_fp8_groups(x2, q.data, q.scale, 1, M);
    } else {
      q.scale = Tensor::empty({1}, DType::F32, x.device());
      quantize_fp8_per_tensor(x2, w.input_scale, q.data, q.scale);
    }
    const bool half = x.dtype() != DType::F32;
    const Tensor b = bias.defined() && half ? (bias.dtype() == x.dtype() ? contiguous(bias) : bias.to(x.dtype())) : Tensor();
    const bool fused_gelu = half && act == Activation::GeluTanh;
    Fp8Problem p;
    p.format = w.format;
    p.fast_accum = w.fast_accum;
    p.out = x.dtype();
    p.M = M;
    p.N = N;
    p.K = K;
    p.a = w.data.raw_data();
    p.b = q.data.raw_data();
    // cuBLASLt reads the BLK128x128 scales column-major with the leading dimension (the K
    // blocks) rounded up to 4 (the H200 run read past a [2, 2] layout: NaNs from the second N
    // block on): a padded copy when K/128 is not a multiple of 4 (Wan 1.3B's FFN down, K 8960).
    Tensor weight_scale = w.weight_scale;
    if (blocks) {
      const int64_t nb_n = (N + quant::kBlock - 1) / quant::kBlock, nb_k = (K + quant::kBlock - 1) / quant::kBlock;
      const int64_t ld = (nb_k + 3) / 4 * 4;
      if (ld != nb_k)
        weight_scale = ops::cat({w.weight_scale.view({nb_n, nb_k}), Tensor::zeros({nb_n, ld - nb_k}, DType::F32, x.device())}, 1);
    }
    p.a_scale = weight_scale.raw_data();
    p.b_scale = q.scale.raw_data();
    p.bias = b.defined() ? b.raw_data() : nullptr;
    p.epilogue = b.defined() ? (fused_gelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS)
                             : (fused_gelu ? CUBLASLT_EPILOGUE_GELU : CUBLASLT_EPILOGUE_DEFAULT);
    Tensor y = Tensor::empty({M, N}, x.dtype(), x.device());
    p.d = y.raw_data();
    if (run_fp8(p)) {
      if (bias.defined() && !half) y = ops::add(y, bias.to(y.dtype()));
      return apply_activation(y, fused_gelu ? Activation::None : act).view(out_shape);
    }
  }
  // The fallback: the same quantized values, expanded to x's dtype, through the ordinary GEMM.
  const QuantizedActivation q = CudaOps::quantize_fp8(x2, w.format, w.input_scale);
  return ops::linear(dequantize_activation_device(q, x.dtype()), dequantize_weight_device(w, x.dtype()), bias, act)
      .view(out_shape);
}

}  // namespace vgen::cuda
