// Elementwise ops: broadcasting binary ops, unary ops, axpby and the gated residual.
//
// One engine runs them all: the inputs' strides (0 where broadcast) and the contiguous
// output are simplified together (size-1 dims dropped, contiguous neighbours merged), and
// each thread computes VEC consecutive outputs in float32 from 16-byte loads when the
// innermost dim allows it (every input contiguous or broadcast along it, aligned), one
// element otherwise. Inputs may be any view: a permuted or sliced tensor needs no copy.


#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <utility>

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_common.h"
#include "backends/cuda/device_utils.cuh"
#include "backends/cuda/layout.cuh"

namespace vgen::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Vec {
  T v[VEC];
};

// An input's innermost step in a vectorized launch, 4 bits an input: 0 broadcast, 1 contiguous
// (one 16-byte load), 2 to kMaxGatherStep gathered element by element.
constexpr int kMaxGatherStep = 8;
__device__ __forceinline__ unsigned input_step(unsigned steps, int k) { return (steps >> (4 * k)) & 15u; }

// VEC elements `step` apart (step 1: consecutive; 0: one element broadcast VEC times) as floats.
template <int VEC, typename T>
__device__ __forceinline__ void load_f(const T* p, unsigned step, float (&v)[VEC]) {
  if (VEC == 1 || step == 0) {
    const float x = to_float<T>(*p);
#pragma unroll
    for (int j = 0; j < VEC; ++j) v[j] = x;
  } else if (step > 1) {
#pragma unroll
    for (int j = 0; j < VEC; ++j) v[j] = to_float<T>(p[j * step]);
  } else {
    const Vec<T, VEC> r = *reinterpret_cast<const Vec<T, VEC>*>(p);
#pragma unroll
    for (int j = 0; j < VEC; ++j) v[j] = to_float<T>(r.v[j]);
  }
}

template <int VEC, typename To, typename F, typename... Ts, size_t... Is>
__device__ __forceinline__ void apply(To* out, const F& f, const int64_t (&off)[sizeof...(Ts)], unsigned steps,
                                      std::index_sequence<Is...>, const Ts*... in) {
  float v[sizeof...(Ts)][VEC];
  (load_f<VEC>(in + off[Is], input_step(steps, Is), v[Is]), ...);
  Vec<To, VEC> o;
#pragma unroll
  for (int j = 0; j < VEC; ++j) o.v[j] = from_float<To>(f(v[Is][j]...));
  *reinterpret_cast<Vec<To, VEC>*>(out) = o;
}

// out[i] = f(in...[i]) for n groups of VEC outputs; the output is contiguous (in its memory order).
template <typename To, int VEC, bool kWide, typename F, typename... Ts>
__global__ void map_kernel(To* __restrict__ out, int64_t n, Indexer<sizeof...(Ts)> ix, unsigned steps, F f,
                           const Ts* __restrict__... in) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[sizeof...(Ts)];
    ix.template offsets<kWide>(i, off);
    apply<VEC>(out + i * VEC, f, off, steps, std::index_sequence_for<Ts...>{}, in...);
  }
}

// Strides of t read as `shape` (numpy broadcasting: 0 along broadcast dims).
Shape broadcast_strides(const Tensor& t, const Shape& shape) {
  Shape out(shape.size(), 0);
  const size_t lead = shape.size() - t.shape().size();
  for (size_t i = 0; i < t.shape().size(); ++i) out[lead + i] = t.shape()[i] == 1 ? 0 : t.strides()[i];
  return out;
}

// Runs f over `out` (dense, of dtype To) with inputs given by their pointers and
// their strides broadcast to out's shape.
template <typename To, typename F, typename... Ts>
void launch_map(const char* op, const Tensor& out, const Tensor& culprit, F f,
                const std::array<Shape, sizeof...(Ts)>& strides, const Ts*... in) {
  constexpr int N = sizeof...(Ts);
  const int64_t n = out.numel();
  if (n == 0) return;
  // A dense output in another memory format (channels-last 3-D): dims are taken in the order
  // of its memory, so that it is written as a contiguous array.
  std::vector<size_t> order(out.shape().size());
  std::iota(order.begin(), order.end(), size_t{0});
  if (!out.is_contiguous()) {
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t i, size_t j) { return out.strides()[i] > out.strides()[j]; });
  }
  auto reorder = [&](const Shape& v) {
    Shape r(v.size());
    for (size_t d = 0; d < order.size(); ++d) r[d] = v[order[d]];
    return r;
  };
  const Shape shape = reorder(out.shape());
  std::array<Shape, N + 1> st;
  st[0] = reorder(out.strides());
  for (int k = 0; k < N; ++k) st[k + 1] = reorder(strides[k]);
  for (size_t d = 0, expected = 1; d < shape.size(); ++d) {
    const size_t i = shape.size() - 1 - d;
    if (shape[i] == 1) continue;
    VGEN_CHECK(st[0][i] == static_cast<int64_t>(expected), "{}: output {} strides {} are not dense", op, out.str(),
               shape_str(out.strides()));
    expected *= static_cast<size_t>(shape[i]);
  }
  std::array<const Shape*, N + 1> all;
  for (int k = 0; k <= N; ++k) all[k] = &st[k];
  const Layout<N + 1> full = simplify<N + 1>(shape, all);
  VGEN_CHECK(static_cast<int>(full.size.size()) <= kMaxDims, "{}: {} has more than {} irregular dims", op,
             culprit.str(), kMaxDims);
  Layout<N> l;
  l.size = full.size;
  l.stride.resize(full.size.size());
  for (size_t d = 0; d < full.size.size(); ++d)
    for (int k = 0; k < N; ++k) l.stride[d][k] = full.stride[d][k + 1];

  // 16-byte output vectors when every input is contiguous (16-byte aligned loads), broadcast, or
  // steps by a few elements (gathered: a channel de-interleave such as the Wan2.2 VAE's DupUp3D
  // read in place) along the innermost dim.
  constexpr int kVec = 16 / sizeof(To);
  const std::array<uintptr_t, N> ptrs{reinterpret_cast<uintptr_t>(in)...};
  const std::array<size_t, N> sizes{sizeof(Ts)...};
  bool vec = l.size[0] % kVec == 0 && reinterpret_cast<uintptr_t>(out.raw_data()) % 16 == 0;
  for (int k = 0; k < N && vec; ++k) {
    const int64_t step = l.stride[0][k];
    if (step == 0 || (step > 1 && step <= kMaxGatherStep)) continue;
    vec = step == 1 && ptrs[k] % (kVec * sizes[k]) == 0;
    for (size_t d = 1; d < l.size.size(); ++d) vec = vec && l.stride[d][k] % kVec == 0;
  }
  unsigned steps = 0;
  if (vec) {
    l.size[0] /= kVec;
    for (int k = 0; k < N; ++k) {
      steps |= static_cast<unsigned>(l.stride[0][k]) << (4 * k);
      l.stride[0][k] *= kVec;
    }
  }
  const int64_t count = l.numel();
  const Indexer<N> ix = make_indexer(l);
  const unsigned blocks = blocks_for(count, kThreads);
  const bool wide = count >= (int64_t(1) << 31);
  To* o = static_cast<To*>(out.raw_data());
  if (vec && wide) map_kernel<To, kVec, true><<<blocks, kThreads, 0, stream()>>>(o, count, ix, steps, f, in...);
  else if (vec) map_kernel<To, kVec, false><<<blocks, kThreads, 0, stream()>>>(o, count, ix, steps, f, in...);
  else if (wide) map_kernel<To, 1, true><<<blocks, kThreads, 0, stream()>>>(o, count, ix, steps, f, in...);
  else map_kernel<To, 1, false><<<blocks, kThreads, 0, stream()>>>(o, count, ix, steps, f, in...);
  check_launch(op, culprit);
}

// ---- Functions -------------------------------------------------------------------------
// Explicit roundings (__fmul_rn etc.) keep the compiler from fusing into FMAs, so results
// match the CPU reference's separately rounded products and sums.

struct BinaryFn {
  BinaryOp op;
  __device__ __forceinline__ float operator()(float a, float b) const {
    switch (op) {
      case BinaryOp::Add: return __fadd_rn(a, b);
      case BinaryOp::Sub: return __fsub_rn(a, b);
      case BinaryOp::Mul: return __fmul_rn(a, b);
      case BinaryOp::Div: return __fdiv_rn(a, b);
    }
    return 0.0f;
  }
};

struct UnaryFn {
  UnaryOp op;
  float alpha, beta;
  __device__ __forceinline__ float operator()(float v) const {
    switch (op) {
      case UnaryOp::Scale: return __fmul_rn(v, alpha);
      case UnaryOp::AddScalar: return __fadd_rn(v, alpha);
      case UnaryOp::Clamp: return fminf(fmaxf(v, alpha), beta);
      case UnaryOp::Silu: return silu(v);
      case UnaryOp::GeluTanh: {
        const float k = 0.7978845608028654f;  // sqrt(2/pi)
        return 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
      }
      case UnaryOp::Gelu: return 0.5f * v * (1.0f + erff(v * 0.7071067811865476f));
      case UnaryOp::Exp: return expf(v);
      case UnaryOp::Neg: return -v;
    }
    return v;
  }
};

struct AxpbyFn {
  float alpha, beta;
  __device__ __forceinline__ float operator()(float a, float b) const {
    return __fadd_rn(__fmul_rn(alpha, a), __fmul_rn(beta, b));
  }
};

// x + y * gate, as (x.float() + y.float() * gate).to(x.dtype).
struct GatedFn {
  __device__ __forceinline__ float operator()(float x, float y, float g) const { return __fadd_rn(x, __fmul_rn(y, g)); }
};

Shape broadcast_shape(const Tensor& a, const Tensor& b) {
  const Shape &sa = a.shape(), &sb = b.shape();
  const size_t rank = std::max(sa.size(), sb.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i < rank - sa.size() ? 1 : sa[i - (rank - sa.size())];
    const int64_t db = i < rank - sb.size() ? 1 : sb[i - (rank - sb.size())];
    if (da != db && da != 1 && db != 1)
      fail("shapes {} and {} cannot be broadcast together", shape_str(sa), shape_str(sb));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// Inputs of other dtypes (integers, F64, F8) are read as float32, as the CPU backend does.
Tensor as_kernel_float(const Tensor& t) { return is_kernel_float(t.dtype()) ? t : t.to(DType::F32); }

// The result in the caller's dtype (computed in F32 when that is not a kernel float).
Tensor result_as(const Tensor& out, DType dtype) { return out.dtype() == dtype ? out : out.to(dtype); }



}  // namespace

Tensor CudaOps::binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  require_cuda("binary", a);
  require_cuda("binary", b);
  const Shape shape = broadcast_shape(a, b);
  const Tensor fa = as_kernel_float(a);
  Tensor fb = as_kernel_float(b);
  // b is read in a's type or as float32 (exact for bf16/f16).
  if (fb.dtype() != fa.dtype() && fb.dtype() != DType::F32) fb = fb.to(DType::F32);
  // A channels-last 3-D operand keeps its layout (flat, fully vectorized work when both are).
  Tensor out = Tensor::empty_like_format(a.prefers_channels_last_3d() ? a : b, shape, fa.dtype());
  const std::array<Shape, 2> strides{broadcast_strides(fa, shape), broadcast_strides(fb, shape)};
  const BinaryFn f{op};
  VGEN_DISPATCH_FLOAT(fa.dtype(), "binary", {
    const T* pa = static_cast<const T*>(fa.raw_data());
    if (fb.dtype() == fa.dtype())
      launch_map<T>("binary", out, a, f, strides, pa, static_cast<const T*>(fb.raw_data()));
    else
      launch_map<T>("binary", out, a, f, strides, pa, static_cast<const float*>(fb.raw_data()));
  });
  return result_as(out, a.dtype());
}

// Each thread reads the outputs it then writes (the same 16-byte words), so out may alias
// the first input.
void add_in_place(const Tensor& out, const Tensor& b) {
  require_cuda("add_in_place", out);
  require_cuda("add_in_place", b);
  VGEN_CHECK(is_kernel_float(out.dtype()) && b.dtype() == out.dtype() && broadcast_shape(out, b) == out.shape(),
             "add_in_place: {} into {}", b.str(), out.str());
  const std::array<Shape, 2> strides{out.strides(), broadcast_strides(b, out.shape())};
  VGEN_DISPATCH_FLOAT(out.dtype(), "add_in_place", {
    launch_map<T>("add_in_place", out, out, BinaryFn{BinaryOp::Add}, strides, static_cast<const T*>(out.raw_data()),
                  static_cast<const T*>(b.raw_data()));
  });
}

Tensor CudaOps::unary(UnaryOp op, const Tensor& x, float alpha, float beta) {
  require_cuda("unary", x);
  const Tensor fx = as_kernel_float(x);
  Tensor out = Tensor::empty_like_format(x, x.shape(), fx.dtype());
  const std::array<Shape, 1> strides{fx.strides()};
  VGEN_DISPATCH_FLOAT(fx.dtype(), "unary", {
    launch_map<T>("unary", out, x, UnaryFn{op, alpha, beta}, strides, static_cast<const T*>(fx.raw_data()));
  });
  return result_as(out, x.dtype());
}

Tensor CudaOps::axpby(float alpha, const Tensor& a, float beta, const Tensor& b) {
  require_cuda("axpby", a);
  require_cuda("axpby", b);
  VGEN_CHECK(a.shape() == b.shape(), "axpby: shapes {} and {} differ", a.str(), b.str());
  const Tensor fa = as_kernel_float(a);
  Tensor fb = as_kernel_float(b);
  if (fb.dtype() != fa.dtype() && fb.dtype() != DType::F32) fb = fb.to(DType::F32);
  Tensor out = Tensor::empty_like_format(a, a.shape(), fa.dtype());
  const std::array<Shape, 2> strides{fa.strides(), fb.strides()};
  const AxpbyFn f{alpha, beta};
  VGEN_DISPATCH_FLOAT(fa.dtype(), "axpby", {
    const T* pa = static_cast<const T*>(fa.raw_data());
    if (fb.dtype() == fa.dtype())
      launch_map<T>("axpby", out, a, f, strides, pa, static_cast<const T*>(fb.raw_data()));
    else
      launch_map<T>("axpby", out, a, f, strides, pa, static_cast<const float*>(fb.raw_data()));
  });
  return result_as(out, a.dtype());
}

Tensor CudaOps::gated_residual(const Tensor& x, const Tensor& y, const Tensor& gate) {
  require_cuda("gated_residual", x);
  require_cuda("gated_residual", y);
  require_cuda("gated_residual", gate);
  require_float("gated_residual", x);
  VGEN_CHECK(x.dim() == 3 && y.shape() == x.shape() && gate.dim() == 3 && gate.size(2) == x.size(2) &&
                 (gate.size(0) == x.size(0) || gate.size(0) == 1) && (gate.size(1) == x.size(1) || gate.size(1) == 1),
             "gated_residual: x {} y {} gate {}", x.str(), y.str(), gate.str());
  VGEN_CHECK(y.dtype() == x.dtype(), "gated_residual: y {} and x {} differ in dtype", y.str(), x.str());
  const Tensor& fy = y;
  // The gate is read as float32 (exact for a bf16/f16 gate).
  const Tensor fg = gate.dtype() == DType::F32 ? gate : gate.to(DType::F32);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  const std::array<Shape, 3> strides{x.strides(), fy.strides(), broadcast_strides(fg, x.shape())};
  VGEN_DISPATCH_FLOAT(x.dtype(), "gated_residual", {
    launch_map<T>("gated_residual", out, x, GatedFn{}, strides, static_cast<const T*>(x.raw_data()),
                  static_cast<const T*>(fy.raw_data()), static_cast<const float*>(fg.raw_data()));
  });
  return out;
}

}  // namespace vgen::cuda
