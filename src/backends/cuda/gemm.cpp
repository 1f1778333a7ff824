// Matrix products through cuBLASLt: linear (x W^T + bias, fused activation) and batched matmul.
//
// Row-major products are computed as their column-major transposes: C[M,N] = A[M,K] B[K,N]
// is C^T = B^T A^T, and a row-major matrix with unit column stride is, read column-major, its
// own transpose; one with unit row stride (a transposed view) is passed with op = T. So
// strided views (transposes, a batch of heads in a [B,S,H,D] buffer) need no copy as long as
// their batch dimensions collapse into one stride.
//
// BF16/F16 operands multiply with float32 accumulation (CUBLAS_COMPUTE_32F) and give their own
// dtype; F32 operands multiply in true FP32 (CUBLAS_COMPUTE_32F, never TF32). Operands of two
// dtypes multiply in the wider one (F32 when they differ) and the result takes the first
// operand's dtype, as on the CPU. The bias is a fused epilogue (BIAS), and so is gelu-tanh for
// BF16/F16 (GELU_BIAS is the tanh approximation); erf-GELU, SiLU and float32 gelu-tanh run
// after the product.
//
// Algorithms: cuBLASLt's heuristic first choice, or with ExecutionSettings::gemm_autotune the
// fastest of its leading candidates, timed on the shape's first (eager) call (blas_autotune.h;
// algorithms may differ in the last bits).
#include <cublasLt.h>

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>

#include "backends/cuda/blas_autotune.h"
#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_common.h"
#include "ops/ops.h"

namespace vgen::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;

void check_blas(cublasStatus_t status, const char* what, const std::string& detail) {
  if (status != CUBLAS_STATUS_SUCCESS)
    fail("cublasLt: {} ({}): {} ({})", what, detail, cublasLtGetStatusString(status), cublasLtGetStatusName(status));
}

cudaDataType_t blas_type(DType d) {
  switch (d) {
    case DType::F32:
      return CUDA_R_32F;
    case DType::BF16:
      return CUDA_R_16BF;
    case DType::F16:
      return CUDA_R_16F;
    default:
      fail("cublasLt: dtype {} is not supported", dtype_name(d));
  }
}

// The dtype two operands multiply in: their own when equal, else float32.
DType compute_dtype(DType a, DType b) { return a == b ? a : DType::F32; }

// The largest alignment cuBLASLt's heuristics distinguish.
int64_t pointer_alignment(const void* p) { return cuda::pointer_alignment(p, 256); }

// A strided matrix (or batch of them): element (i, j) of batch item b is at
// ptr + b*batch_stride + i*rs + j*cs (in elements).
struct Matrix {
  const void* ptr = nullptr;
  int64_t batch = 1, batch_stride = 0;
  int64_t rows = 0, cols = 0, rs = 0, cs = 0;
};

// Collapses dims [begin, end) of t into one (count, stride), skipping size-1 dims; nullopt
// when they do not form one arithmetic progression.
std::optional<std::pair<int64_t, int64_t>> collapse(const Tensor& t, int64_t begin, int64_t end) {
  int64_t count = 1, stride = 0;
  for (int64_t i = end - 1; i >= begin; --i) {
    const int64_t n = t.size(i), s = t.strides()[i];
    if (n == 1) continue;
    if (count == 1) {
      count = n;
      stride = s;
    } else if (s == stride * count) {
      count *= n;
    } else {
      return std::nullopt;
    }
  }
  return std::make_pair(count, stride);
}

// t's dims: [batch dims (n_batch), row dims (collapsed), last dim = columns].
std::optional<Matrix> describe(const Tensor& t, int64_t n_batch) {
  const int64_t nd = t.dim();
  const auto batch = collapse(t, 0, n_batch);
  const auto rows = collapse(t, n_batch, nd - 1);
  if (!batch || !rows) return std::nullopt;
  Matrix m;
  m.ptr = t.raw_data();
  m.batch = batch->first;
  m.batch_stride = batch->second;
  m.rows = rows->first;
  m.rs = rows->second;
  m.cols = t.size(nd - 1);
  m.cs = t.strides()[nd - 1];
  return m;
}

// One cuBLASLt operand: the stored column-major matrix (rows x cols, leading dimension ld)
// and the op that turns it into the transpose of the row-major matrix it came from.
struct Operand {
  const void* ptr = nullptr;
  cublasOperation_t op = CUBLAS_OP_N;
  int64_t rows = 0, cols = 0, ld = 0, batch_stride = 0;
};

// The operand that reads as L^T for a row-major matrix L [R, C]; nullopt when neither of L's
// strides is 1 (the caller then makes it contiguous).
std::optional<Operand> transposed_operand(const Matrix& L) {
  const int64_t R = L.rows, C = L.cols;
  Operand o;
  o.ptr = L.ptr;
  o.batch_stride = L.batch_stride;
  if ((C == 1 || L.cs == 1) && (R == 1 || L.rs >= C)) {  // row-major: stored C x R, no transpose
    o.op = CUBLAS_OP_N;
    o.rows = C;
    o.cols = R;
    o.ld = R == 1 ? C : L.rs;
    return o;
  }
  if ((R == 1 || L.rs == 1) && (C == 1 || L.cs >= R)) {  // column-major: stored R x C, transposed
    o.op = CUBLAS_OP_T;
    o.rows = R;
    o.cols = C;
    o.ld = C == 1 ? R : L.cs;
    return o;
  }
  return std::nullopt;
}

// D (contiguous [batch, M, N]) = left [batch, M, K] * right [batch, K, N] (+ bias[N]), epilogue.
struct Problem {
  DType dtype = DType::F32;  // of both operands, D and the bias
  DType out_dtype = DType::F32;  // of D: dtype, or F32 for 16-bit operands (matmul_float32_out)
  Operand a, b;              // cuBLASLt's A (from the right factor) and B (from the left one)
  int64_t M = 0, N = 0, K = 0, batch = 1;
  void* d = nullptr;
  const void* bias = nullptr;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
};

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  cublasLtMatmulAlgo_t algo{};  // the heuristic's first, or the fastest of its candidates (autotuning)
  bool ok = false;  // false: the heuristic found no algorithm (cached too)
};

using PlanKey = std::array<int64_t, 22>;

// A backend's cuBLASLt handle, workspace and plans (each execution context has its own).
struct State {
  explicit State(CudaBackend& backend)
      : workspace(Tensor::empty({static_cast<int64_t>(kWorkspaceBytes)}, DType::U8, Device::cuda(backend.device_index()))) {
    check_blas(cublasLtCreate(&handle), "create handle", "");
  }
  ~State() {
    for (auto& [key, plan] : plans) {
      if (plan.la) cublasLtMatrixLayoutDestroy(plan.la);
      if (plan.lb) cublasLtMatrixLayoutDestroy(plan.lb);
      if (plan.ld) cublasLtMatrixLayoutDestroy(plan.ld);
      if (plan.desc) cublasLtMatmulDescDestroy(plan.desc);
    }
    if (handle) cublasLtDestroy(handle);
  }
  State(const State&) = delete;
  State& operator=(const State&) = delete;

  std::mutex mutex;
  cublasLtHandle_t handle = nullptr;
  Tensor workspace;
  std::map<PlanKey, Plan> plans;
};

State& state() { return active().state<State>(); }

std::string problem_str(const Problem& p) {
  return fmt::format("{} batch {} M {} N {} K {}, opA {} ldA {}, opB {} ldB {}, epilogue {}", dtype_name(p.dtype),
                     p.batch, p.M, p.N, p.K, p.a.op == CUBLAS_OP_T ? "T" : "N", p.a.ld,
                     p.b.op == CUBLAS_OP_T ? "T" : "N", p.b.ld, static_cast<int>(p.epilogue));
}

cublasLtMatrixLayout_t make_layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
                                   int64_t batch_stride, const std::string& what) {
  cublasLtMatrixLayout_t l = nullptr;
  check_blas(cublasLtMatrixLayoutCreate(&l, type, static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), ld),
             "create matrix layout", what);
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    check_blas(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)),
               "set batch count", what);
    check_blas(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &batch_stride,
                                                sizeof(batch_stride)),
               "set batch stride", what);
  }
  return l;
}

// The plan of p, its algorithm chosen on p's own operands (timed with autotuning: D is written).
Plan make_plan(State& st, const Problem& p, const std::string& what) {
  Plan plan;
  const cudaDataType_t type = blas_type(p.dtype);
  check_blas(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "create matmul descriptor", what);
  const int32_t opa = p.a.op, opb = p.b.op;
  check_blas(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)), "set transA",
             what);
  check_blas(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)), "set transB",
             what);
  const cublasLtEpilogue_t epi = p.epilogue;
  check_blas(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)),
             "set epilogue", what);
  if (p.bias != nullptr) {
    const int32_t bias_type = type;  // cuBLASLt: the bias has D's type for float outputs
    check_blas(
        cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)),
        "set bias type", what);
    check_blas(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p.bias, sizeof(p.bias)),
               "set bias pointer", what);
  }
  // Column-major: A is N x K (after op), B is K x M, D is N x M with ld N.
  plan.la = make_layout(type, p.a.rows, p.a.cols, p.a.ld, p.batch, p.a.batch_stride, what);
  plan.lb = make_layout(type, p.b.rows, p.b.cols, p.b.ld, p.batch, p.b.batch_stride, what);
  plan.ld = make_layout(blas_type(p.out_dtype), p.N, p.M, p.N, p.batch, p.M * p.N, what);

  cublasLtMatmulPreference_t pref = nullptr;
  check_blas(cublasLtMatmulPreferenceCreate(&pref), "create preference", what);
  const uint64_t ws = kWorkspaceBytes;
  check_blas(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)),
             "set workspace size", what);
  const uint32_t align_a = static_cast<uint32_t>(pointer_alignment(p.a.ptr));
  const uint32_t align_b = static_cast<uint32_t>(pointer_alignment(p.b.ptr));
  const uint32_t align_d = static_cast<uint32_t>(pointer_alignment(p.d));
  check_blas(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a)),
      "set alignment", what);
  check_blas(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b)),
      "set alignment", what);
  check_blas(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_d, sizeof(align_d)),
      "set alignment", what);
  check_blas(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d, sizeof(align_d)),
      "set alignment", what);
  const bool tune = gemm_autotune_now() && gemm_worth_autotuning(p.batch, p.M, p.N, p.K);
  std::array<cublasLtMatmulHeuristicResult_t, kBlasAutotuneCandidates> results{};
  int found = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(st.handle, plan.desc, plan.la, plan.lb, plan.ld, plan.ld,
                                                               pref, tune ? kBlasAutotuneCandidates : 1, results.data(),
                                                               &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (status == CUBLAS_STATUS_SUCCESS) {
    const BlasCall call{st.handle, plan.desc, p.a.ptr, plan.la, p.b.ptr, plan.lb,
                        p.d,       plan.ld,   st.workspace.raw_data(), kWorkspaceBytes};
    const int chosen = choose_algorithm(call, results.data(), found, tune, what);
    if (chosen >= 0) {
      plan.algo = results[chosen].algo;
      plan.ok = true;
    }
  } else if (status != CUBLAS_STATUS_NOT_SUPPORTED) {
    check_blas(status, "algorithm heuristic", what);
  }
  return plan;
}

// Runs p; false when cuBLASLt has no algorithm for it (the caller retries more simply).
bool run(const Problem& p) {
  State& st = state();
  const PlanKey key{static_cast<int64_t>(p.dtype),
                    static_cast<int64_t>(p.out_dtype),
                    p.a.op,
                    p.b.op,
                    p.M,
                    p.N,
                    p.K,
                    p.batch,
                    p.a.rows,
                    p.a.cols,
                    p.a.ld,
                    p.a.batch_stride,
                    p.b.rows,
                    p.b.cols,
                    p.b.ld,
                    p.b.batch_stride,
                    static_cast<int64_t>(p.epilogue),
                    p.bias != nullptr,
                    pointer_alignment(p.a.ptr),
                    pointer_alignment(p.b.ptr),
                    pointer_alignment(p.d),
                    p.bias ? pointer_alignment(p.bias) : 0};
  std::lock_guard<std::mutex> lock(st.mutex);
  auto it = st.plans.find(key);
  if (it == st.plans.end()) it = st.plans.emplace(key, make_plan(st, p, problem_str(p))).first;
  const Plan& plan = it->second;
  if (!plan.ok) return false;
  cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
  if (p.bias != nullptr)  // the descriptor is shared by calls with other biases: set it under the lock
    status = cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p.bias, sizeof(p.bias));
  const float alpha = 1.0f, beta = 0.0f;
  if (status == CUBLAS_STATUS_SUCCESS)
    status = cublasLtMatmul(st.handle, plan.desc, &alpha, p.a.ptr, plan.la, p.b.ptr, plan.lb, &beta, p.d, plan.ld, p.d,
                            plan.ld, &plan.algo, st.workspace.raw_data(), kWorkspaceBytes, stream());
  check_blas(status, "matmul", problem_str(p));
  return true;
}

cublasLtEpilogue_t epilogue_for(bool bias, bool gelu_tanh) {
  if (gelu_tanh) return bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
  return bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
}

Tensor apply(Activation act, const Tensor& t) {
  switch (act) {
    case Activation::None:
      return t;
    case Activation::GeluTanh:
      return ops::gelu_tanh(t);
    case Activation::Gelu:
      return ops::gelu(t);
    case Activation::Silu:
      return ops::silu(t);
  }
  return t;
}

int64_t leading_numel(const Tensor& t, int64_t trailing) {
  int64_t n = 1;
  for (int64_t i = 0; i + trailing < t.dim(); ++i) n *= t.size(i);
  return n;
}

// Runs p with as much of bias + activation fused as cuBLASLt takes (fused, then bias only,
// then nothing), finishing the rest with ops; `out` is p's D, the result may be a new tensor.
Tensor gemm(Problem p, const Tensor& out, const Tensor& bias, Activation act) {
  // cuBLASLt's GELU epilogue approximates tanh (relative error ~1e-4): fused for 16-bit outputs
  // only, so float32 results stay exact to float rounding.
  const bool want_gelu_tanh = act == Activation::GeluTanh && p.dtype != DType::F32;
  const bool has_bias = bias.defined();
  // 1. Everything fused that cuBLASLt can fuse.
  p.bias = has_bias ? bias.raw_data() : nullptr;
  p.epilogue = epilogue_for(has_bias, want_gelu_tanh);
  bool bias_done = has_bias, act_done = want_gelu_tanh;
  if (!run(p)) {
    // 2. Bias only.
    act_done = false;
    p.epilogue = epilogue_for(has_bias, false);
    if (!want_gelu_tanh || !run(p)) {
      // 3. Nothing fused.
      bias_done = false;
      p.bias = nullptr;
      p.epilogue = CUBLASLT_EPILOGUE_DEFAULT;
      if (!run(p)) fail("cublasLt: no algorithm for {}", problem_str(p));
    }
  }
  Tensor r = out;
  if (has_bias && !bias_done) r = ops::add(r, bias);
  if (!act_done) r = apply(act, r);
  return r;
}

// The problem out = left[batch, M, K] @ right[batch or shared, K, N] for described operands;
// false when one of them has no unit stride.
bool make_problem(const Matrix& left, const Matrix& right, bool right_shared, DType dtype, void* d, Problem* p) {
  const auto b = transposed_operand(left);
  const auto a = transposed_operand(right);
  if (!a || !b) return false;
  p->dtype = dtype;
  p->out_dtype = dtype;
  p->a = *a;
  p->b = *b;
  p->M = left.rows;
  p->K = left.cols;
  p->N = right.cols;
  p->batch = left.batch;
  if (right_shared) p->a.batch_stride = 0;
  if (p->batch == 1) p->a.batch_stride = p->b.batch_stride = 0;
  p->d = d;
  return true;
}

void require_inputs(const char* op, const Tensor& a, const Tensor& b, const Tensor& bias = {}) {
  require_cuda(op, a);
  require_cuda(op, b);
  require_cuda(op, bias);
  require_float(op, a);
  require_float(op, b);
  if (bias.defined()) require_float(op, bias);
}

}  // namespace

Tensor CudaOps::linear(const Tensor& x, const Tensor& weight, const Tensor& bias, Activation act) {
  require_inputs("linear", x, weight, bias);
  const int64_t K = weight.size(1), N = weight.size(0);
  const int64_t M = leading_numel(x, 1);
  Shape shape = x.shape();
  shape.back() = N;
  const DType cdt = compute_dtype(x.dtype(), weight.dtype());
  const Tensor b = bias.defined() ? bias.to(cdt).contiguous() : Tensor();
  if (M == 0 || N == 0) return Tensor::empty(shape, x.dtype(), x.device());
  if (K == 0) {  // an empty sum: the bias (or zeros) through the activation
    Tensor out = Tensor::zeros({M, N}, cdt, x.device());
    if (b.defined()) out = ops::add(out, b);
    return apply(act, out).to(x.dtype()).view(shape);
  }

  Tensor xc = x.to(cdt);
  const Tensor wc = weight.to(cdt);
  // x as one [M, K] matrix (its leading dims collapsed), w^T as [K, N].
  std::optional<Matrix> xm = describe(xc, 0);
  if (!xm || !transposed_operand(*xm)) {
    xc = xc.contiguous();
    xm = describe(xc, 0);
  }
  Tensor wt = wc.transpose(0, 1);
  std::optional<Matrix> wm = describe(wt, 0);
  if (!wm || !transposed_operand(*wm)) {
    wt = wc.contiguous().transpose(0, 1);
    wm = describe(wt, 0);
  }
  VGEN_CHECK(xm && wm, "linear: cannot describe {} x {}", x.str(), weight.str());

  Tensor out = Tensor::empty({M, N}, cdt, x.device());
  Problem p;
  VGEN_CHECK(make_problem(*xm, *wm, true, cdt, out.raw_data(), &p), "linear: cannot describe {} x {}", x.str(),
             weight.str());
  return gemm(p, out, b, act).to(x.dtype()).view(shape);
}

namespace {

// a @ b with D in out_dtype (the operands' compute dtype when it is undefined).
Tensor matmul_as(const Tensor& a, const Tensor& b, std::optional<DType> out_dtype) {
  require_inputs("matmul", a, b);
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  const bool shared = b.dim() == 2;
  const int64_t batch = leading_numel(a, 2);
  VGEN_CHECK(shared || leading_numel(b, 2) == batch, "matmul: batch of {} does not match {}", a.str(), b.str());
  Shape shape = a.shape();
  shape.back() = N;
  const DType cdt = compute_dtype(a.dtype(), b.dtype());
  const DType result = out_dtype.value_or(a.dtype());
  if (batch == 0 || M == 0 || N == 0) return Tensor::empty(shape, result, a.device());
  if (K == 0) return Tensor::zeros(shape, result, a.device());

  Tensor ac = a.to(cdt), bc = b.to(cdt);
  Tensor out = Tensor::empty(shape, out_dtype.value_or(cdt), a.device());
  const int64_t a_batch_dims = a.dim() - 2, b_batch_dims = b.dim() - 2;

  Problem p;
  bool ready = false;
  if (shared) {
    // A 2-D right factor: fold the batch into M when the left rows form one strided matrix.
    const auto folded = describe(ac, 0);
    const auto right = describe(bc, 0);
    if (folded && right) ready = make_problem(*folded, *right, true, cdt, out.raw_data(), &p);
  }
  for (int attempt = 0; !ready && attempt < 2; ++attempt) {
    if (attempt == 1) {  // copies of whatever strides cuBLASLt cannot take
      ac = ac.contiguous();
      bc = bc.contiguous();
    }
    auto left = describe(ac, a_batch_dims);
    auto right = describe(bc, b_batch_dims);
    if (!left || !right) continue;
    ready = make_problem(*left, *right, shared, cdt, out.raw_data(), &p);
  }
  VGEN_CHECK(ready, "matmul: cannot describe {} x {} for cublasLt", a.str(), b.str());
  p.out_dtype = out.dtype();
  return gemm(p, out, Tensor(), Activation::None).to(result);
}

}  // namespace

Tensor CudaOps::matmul(const Tensor& a, const Tensor& b) { return matmul_as(a, b, std::nullopt); }

Tensor matmul_float32_out(const Tensor& a, const Tensor& b) { return matmul_as(a, b, DType::F32); }

}  // namespace vgen::cuda
