// torch.nn.GroupNorm on the GPU (ops::group_norm), optionally followed by SiLU, for NCHW
// contiguous and channels-last 3-D inputs (the output keeps the input's layout).
//
// A group holds Cg = C / groups channels x S positions (about 4M values for the FLUX VAE's
// 1024x1024 x 128-channel maps), so the statistics are spread over many blocks:
//   1. stats: each block reduces its piece of x to partial moments (count, mean, M2). A thread
//      sums x - shift and (x - shift)^2 with its first value as the shift (float32 keeps the
//      variance; no cancellation of a large mean), and partials merge with Chan's formula.
//      NCHW: a group is one contiguous run of Cg * S values, and a block takes a chunk of it.
//      Channels-last ([N, S, C] in memory): a block takes a tile of positions x all C channels
//      and writes one partial per channel, so that every load is a whole row of channels.
//   2. finalize: one block per (n, group) merges its partials in double: mean and rstd.
//   3. apply: reads x once more and writes (x - mean) * rstd * weight + bias, rounded to x's
//      dtype, then SiLU of that rounded value (what silu(group_norm(x)) computes) when asked.
// Products and sums are rounded separately (__fmul_rn etc.), as the CPU reference computes them.

#include <algorithm>
#include <cmath>

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_common.h"
#include "backends/cuda/device_utils.cuh"
#include "backends/cuda/norm_utils.cuh"

namespace vgen::cuda {
namespace {

constexpr int kThreads = 256;  // every kernel's block (a multiple of 32: whole warps merge)

// Count, mean and sum of squared deviations of some values.
template <typename F>
struct Moments {
  F n, mean, m2;
};

// a <- a and b together (Chan et al.); b may be empty.
template <typename F>
__device__ __forceinline__ void merge(Moments<F>& a, const Moments<F>& b) {
  if (b.n == F(0)) return;
  const F n = a.n + b.n;
  const F d = b.mean - a.mean;
  const F f = b.n / n;
  a.mean = a.mean + d * f;
  a.m2 = a.m2 + b.m2 + d * d * a.n * f;
  a.n = n;
}

template <typename F>
__device__ __forceinline__ Moments<F> warp_merge(Moments<F> m) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const Moments<F> other{__shfl_xor_sync(0xffffffffu, m.n, o), __shfl_xor_sync(0xffffffffu, m.mean, o),
                           __shfl_xor_sync(0xffffffffu, m.m2, o)};
    merge(m, other);
  }
  return m;
}

// The moments of the whole block, valid in thread 0.
template <typename F>
__device__ __forceinline__ Moments<F> block_merge(Moments<F> m) {
  __shared__ F s_n[32], s_mean[32], s_m2[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  m = warp_merge(m);
  if (lane == 0) s_n[warp] = m.n, s_mean[warp] = m.mean, s_m2[warp] = m.m2;
  __syncthreads();
  if (warp == 0) {
    m = lane < warps ? Moments<F>{s_n[lane], s_mean[lane], s_m2[lane]} : Moments<F>{0, 0, 0};
    m = warp_merge(m);
  }
  return m;
}

// One thread's sums of x - shift and (x - shift)^2 over n values, the shift its first value.
struct ShiftedSums {
  float shift = 0.0f, s1 = 0.0f, s2 = 0.0f;
  __device__ __forceinline__ void add(float v) {
    const float d = __fsub_rn(v, shift);
    s1 = __fadd_rn(s1, d);
    s2 = __fmaf_rn(d, d, s2);
  }
  __device__ __forceinline__ Moments<float> moments(int64_t n) const {
    if (n == 0) return {0.0f, 0.0f, 0.0f};
    const float fn = static_cast<float>(n), d = s1 / fn;
    return {fn, shift + d, fmaxf(s2 - s1 * d, 0.0f)};
  }
};

// How many of first, first + step, ... lie below end.
__device__ __forceinline__ int64_t steps(int64_t first, int64_t end, int64_t step) {
  return first < end ? (end - first + step - 1) / step : 0;
}

// ---- Pass 1: partial moments ---------------------------------------------------------------

// NCHW: group row r = n * groups + g is x[r * L, (r + 1) * L); block (r, k) reduces its
// chunk [k * chunk, (k + 1) * chunk) into part[r * gridDim.y + k]. L and chunk are multiples of VEC.
template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads)
    group_stats_rows_kernel(const T* __restrict__ x, Moments<float>* __restrict__ part, int64_t L, int64_t chunk) {
  const int64_t row = blockIdx.x, k = blockIdx.y;
  const T* base = x + row * L;
  const int64_t end = (k + 1) * chunk < L ? (k + 1) * chunk : L;
  const int64_t first = k * chunk + int64_t(threadIdx.x) * VEC, step = int64_t(blockDim.x) * VEC;
  ShiftedSums acc;
  if (first < end) acc.shift = to_float<T>(base[first]);
#pragma unroll 4
  for (int64_t e = first; e < end; e += step) {
    float v[VEC];
    load_vec<VEC>(base + e, v);
#pragma unroll
    for (int j = 0; j < VEC; ++j) acc.add(v[j]);
  }
  const Moments<float> m = block_merge(acc.moments(steps(first, end, step) * VEC));
  if (threadIdx.x == 0) part[row * gridDim.y + k] = m;
}

// Channels-last: x [N, S, C] in memory; block (k, n) takes positions [k * positions, ...) of
// sample n and writes one partial per channel c to part[(n * C + c) * gridDim.x + k]. Thread
// (tx, ty) = (threadIdx.x % bx, threadIdx.x / bx) reads channel vector cv0 + tx of positions
// ty, ty + by, ... (a warp reads whole rows of channels), with its own shift per channel.
template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads)
    group_stats_channels_last_kernel(const T* __restrict__ x, Moments<float>* __restrict__ part, int64_t S, int64_t C,
                                     int64_t positions, int bx) {
  __shared__ float s_mean[kThreads * VEC], s_m2[kThreads * VEC], s_n[kThreads];
  const int tx = threadIdx.x % bx, ty = threadIdx.x / bx, by = blockDim.x / bx;
  const int64_t n = blockIdx.y, k = blockIdx.x, chunks = gridDim.x;
  const int64_t p0 = k * positions, p1 = p0 + positions < S ? p0 + positions : S;
  const T* base = x + n * S * C;
  const int64_t nv = C / VEC;
  for (int64_t cv0 = 0; cv0 < nv; cv0 += bx) {  // uniform over the block: it synchronizes inside
    const int64_t cv = cv0 + tx;
    const int64_t count = cv < nv ? steps(p0 + ty, p1, by) : 0;
    ShiftedSums acc[VEC];
    if (count > 0) {
      float v[VEC];
      load_vec<VEC>(base + (p0 + ty) * C + cv * VEC, v);
#pragma unroll
      for (int j = 0; j < VEC; ++j) acc[j].shift = v[j];
#pragma unroll 4
      for (int64_t p = p0 + ty; p < p1; p += by) {
        load_vec<VEC>(base + p * C + cv * VEC, v);
#pragma unroll
        for (int j = 0; j < VEC; ++j) acc[j].add(v[j]);
      }
    }
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const Moments<float> m = acc[j].moments(count);
      s_mean[threadIdx.x * VEC + j] = m.mean;
      s_m2[threadIdx.x * VEC + j] = m.m2;
    }
    s_n[threadIdx.x] = static_cast<float>(count);
    __syncthreads();
    // Column col = tx * VEC + j (channel cv0 * VEC + col) over the by rows of threads.
    for (int col = threadIdx.x; col < bx * VEC; col += blockDim.x) {
      const int64_t c = cv0 * VEC + col;
      if (c >= C) continue;
      Moments<float> m{0.0f, 0.0f, 0.0f};
      for (int y = 0; y < by; ++y) {
        const int t = y * bx + col / VEC;
        merge(m, Moments<float>{s_n[t], s_mean[t * VEC + col % VEC], s_m2[t * VEC + col % VEC]});
      }
      part[(n * C + c) * chunks + k] = m;
    }
    __syncthreads();
  }
}

// ---- Pass 2: mean and rstd per (n, group) --------------------------------------------------

// Group r's partials are part[r * per_group, (r + 1) * per_group); stats[r] = (mean, rstd).
__global__ void __launch_bounds__(kThreads)
    group_finalize_kernel(const Moments<float>* __restrict__ part, float2* __restrict__ stats, int64_t per_group,
                          float eps) {
  const int64_t r = blockIdx.x;
  Moments<double> m{0.0, 0.0, 0.0};
  for (int64_t i = threadIdx.x; i < per_group; i += blockDim.x) {
    const Moments<float> p = part[r * per_group + i];
    merge(m, Moments<double>{p.n, p.mean, p.m2});
  }
  m = block_merge(m);
  if (threadIdx.x == 0) {
    const double var = m.n > 0.0 ? m.m2 / m.n : 0.0;  // biased, as torch's
    stats[r] = make_float2(static_cast<float>(m.mean), static_cast<float>(1.0 / sqrt(var + double(eps))));
  }
}

// ---- Pass 3: the output --------------------------------------------------------------------

// One element: the norm's value, rounded to T, then SiLU when kSilu (an unfused silu reads it so).
template <typename T, bool kSilu>
__device__ __forceinline__ float group_norm_out(float v, float2 st, float w, bool has_w, float b, bool has_b) {
  float y = __fmul_rn(__fsub_rn(v, st.x), st.y);
  if (has_w) y = __fmul_rn(y, w);
  if (has_b) y = __fadd_rn(y, b);
  return kSilu ? silu(round_to<T>(y)) : y;
}

// NCHW: block (r, k) writes channel row r = n * C + c, elements [k * chunk, (k + 1) * chunk)
// of its S; S and chunk are multiples of VEC.
template <typename T, typename Tw, int VEC, bool kSilu>
__global__ void __launch_bounds__(kThreads)
    group_apply_rows_kernel(const T* __restrict__ x, T* __restrict__ out, const float2* __restrict__ stats,
                            const Tw* __restrict__ weight, const Tw* __restrict__ bias, int64_t S, int64_t C,
                            int64_t Cg, int64_t chunk) {
  const int64_t r = blockIdx.x, k = blockIdx.y;
  const int64_t n = r / C, c = r - n * C;
  const float2 st = stats[n * (C / Cg) + c / Cg];
  const float w = weight ? to_float<Tw>(weight[c]) : 1.0f, b = bias ? to_float<Tw>(bias[c]) : 0.0f;
  const T* src = x + r * S;
  T* dst = out + r * S;
  const int64_t end = (k + 1) * chunk < S ? (k + 1) * chunk : S;
#pragma unroll 4
  for (int64_t e = k * chunk + int64_t(threadIdx.x) * VEC; e < end; e += int64_t(blockDim.x) * VEC) {
    float v[VEC];
    load_vec<VEC>(src + e, v);
#pragma unroll
    for (int j = 0; j < VEC; ++j) v[j] = group_norm_out<T, kSilu>(v[j], st, w, weight != nullptr, b, bias != nullptr);
    store_vec<VEC>(dst + e, v);
  }
}

// Channels-last: the thread layout of group_stats_channels_last_kernel (warps read and write
// whole rows of channels); block (k, n) writes positions [k * positions, ...) of sample n.
template <typename T, typename Tw, int VEC, bool kSilu>
__global__ void __launch_bounds__(kThreads)
    group_apply_channels_last_kernel(const T* __restrict__ x, T* __restrict__ out, const float2* __restrict__ stats,
                                     const Tw* __restrict__ weight, const Tw* __restrict__ bias, int64_t S, int64_t C,
                                     int64_t Cg, int64_t positions, int bx) {
  const int tx = threadIdx.x % bx, ty = threadIdx.x / bx, by = blockDim.x / bx;
  const int64_t n = blockIdx.y, k = blockIdx.x;
  const int64_t p0 = k * positions, p1 = p0 + positions < S ? p0 + positions : S;
  const T* src = x + n * S * C;
  T* dst = out + n * S * C;
  const float2* st_n = stats + n * (C / Cg);
  const int64_t nv = C / VEC;
  for (int64_t cv = tx; cv < nv; cv += bx) {
    float2 st[VEC];
    float w[VEC], b[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const int64_t c = cv * VEC + j;
      st[j] = st_n[c / Cg];
      w[j] = weight ? to_float<Tw>(weight[c]) : 1.0f;
      b[j] = bias ? to_float<Tw>(bias[c]) : 0.0f;
    }
#pragma unroll 4
    for (int64_t p = p0 + ty; p < p1; p += by) {
      float v[VEC];
      load_vec<VEC>(src + p * C + cv * VEC, v);
#pragma unroll
      for (int j = 0; j < VEC; ++j)
        v[j] = group_norm_out<T, kSilu>(v[j], st[j], w[j], weight != nullptr, b[j], bias != nullptr);
      store_vec<VEC>(dst + p * C + cv * VEC, v);
    }
  }
}

// ---- Host side ----------------------------------------------------------------------------

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t m) { return ceil_div(a, m) * m; }

// Lanes per channel row in the channels-last kernels: a power of two covering the row's
// nv vectors, at most a warp (longer rows loop).
int lanes_for(int64_t nv) {
  int bx = 1;
  while (bx < nv && bx < 32) bx *= 2;
  return bx;
}

}  // namespace

Tensor CudaOps::group_norm(const Tensor& x_in, const Tensor& weight, const Tensor& bias, int64_t groups, float eps,
                           Activation act) {
  require_cuda("group_norm", x_in);
  require_float("group_norm", x_in);
  VGEN_CHECK(x_in.dim() >= 2 && groups > 0 && x_in.size(1) % groups == 0 &&
                 (!weight.defined() || weight.numel() == x_in.size(1)) &&
                 (!bias.defined() || bias.numel() == x_in.size(1)),
             "group_norm: x {} in {} groups, weight {} bias {}", x_in.str(), groups, weight.str(), bias.str());
  VGEN_CHECK(act == Activation::None || act == Activation::Silu,
             "group_norm: only no activation or SiLU can follow the norm");
  // Channels-last 3-D input: rows of C contiguous channels, output in the same layout.
  const bool channels_last = x_in.is_channels_last_3d();
  const Tensor x = channels_last ? x_in : contiguous(x_in);
  Tensor out = Tensor::empty_like_format(x, x.shape(), x.dtype());
  if (x.numel() == 0) return out;
  const int64_t N = x.size(0), C = x.size(1), S = x.numel() / (N * C), G = groups, Cg = C / G;
  VGEN_CHECK(N <= 65535 && N * G < (int64_t(1) << 31) && N * C < (int64_t(1) << 31), "group_norm: {} is too large",
             x.str());
  const DType wd = param_dtype(x.dtype(), weight, bias);
  const Tensor w = param(weight, wd), b = param(bias, wd);
  const int64_t es = static_cast<int64_t>(x.element_size());
  const int vmax = static_cast<int>(16 / es);
  // A vector never crosses a channel row (NCHW: S values; channels-last: C values).
  const int vec = pick_vec(vmax, 1, channels_last ? C : S, {{x.raw_data(), es}, {out.raw_data(), es}}, {});
  const int64_t want_blocks = 4 * static_cast<int64_t>(device_properties().multiProcessorCount);

  // Pass 1 geometry: `chunks` partials per (n, group) (NCHW) or per (n, channel) (channels-last).
  const int bx = lanes_for(C / vec), by = kThreads / bx;
  int64_t chunks = 0, chunk = 0, positions = 0;
  if (channels_last) {
    positions = round_up(std::max<int64_t>(ceil_div(S, ceil_div(want_blocks, N)), by), by);
    chunks = ceil_div(S, positions);
  } else {
    const int64_t L = Cg * S;
    chunk = round_up(std::max<int64_t>(ceil_div(L, ceil_div(want_blocks, N * G)), int64_t(kThreads) * vec), vec);
    chunks = ceil_div(L, chunk);
    VGEN_CHECK(chunks <= 65535, "group_norm: {} is too large", x.str());
  }
  const int64_t per_group = channels_last ? Cg * chunks : chunks;
  Tensor part = Tensor::empty({N * G * per_group * 3}, DType::F32, x.device());
  Tensor stats = Tensor::empty({N * G * 2}, DType::F32, x.device());
  auto* part_p = static_cast<Moments<float>*>(part.raw_data());
  auto* stats_p = static_cast<float2*>(stats.raw_data());
  // Channels-last apply: 4x the stats' blocks (it holds more registers: fewer blocks fit an SM,
  // and finer blocks leave a shorter tail).
  const int64_t apply_positions =
      channels_last ? round_up(std::max<int64_t>(ceil_div(S, ceil_div(4 * want_blocks, N)), by), by) : 0;
  // NCHW apply: blocks of at least 4 vectors a thread along a channel's S values.
  const int64_t apply_chunk =
      channels_last ? 0 : round_up(std::max<int64_t>(ceil_div(S, 65535), int64_t(kThreads) * vec * 4), vec);

  dispatch_param(x.dtype(), wd, "group_norm", [&](auto tx, auto tw) {
    using T = decltype(tx);
    using Tw = decltype(tw);
    constexpr int kVec = 16 / sizeof(T);
    const T* in = static_cast<const T*>(x.raw_data());
    T* o = static_cast<T*>(out.raw_data());
    const Tw* wp = w.defined() ? static_cast<const Tw*>(w.raw_data()) : nullptr;
    const Tw* bp = b.defined() ? static_cast<const Tw*>(b.raw_data()) : nullptr;
    auto go = [&](auto v, auto silu) {
      constexpr int V = decltype(v)::value;
      constexpr bool kSilu = decltype(silu)::value;
      if (channels_last) {
        const dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>(N));
        group_stats_channels_last_kernel<T, V><<<grid, kThreads, 0, stream()>>>(in, part_p, S, C, positions, bx);
        group_finalize_kernel<<<static_cast<unsigned>(N * G), kThreads, 0, stream()>>>(part_p, stats_p, per_group, eps);
        const dim3 apply_grid(static_cast<unsigned>(ceil_div(S, apply_positions)), static_cast<unsigned>(N));
        group_apply_channels_last_kernel<T, Tw, V, kSilu>
            <<<apply_grid, kThreads, 0, stream()>>>(in, o, stats_p, wp, bp, S, C, Cg, apply_positions, bx);
      } else {
        group_stats_rows_kernel<T, V>
            <<<dim3(static_cast<unsigned>(N * G), static_cast<unsigned>(chunks)), kThreads, 0, stream()>>>(
                in, part_p, Cg * S, chunk);
        group_finalize_kernel<<<static_cast<unsigned>(N * G), kThreads, 0, stream()>>>(part_p, stats_p, per_group, eps);
        group_apply_rows_kernel<T, Tw, V, kSilu>
            <<<dim3(static_cast<unsigned>(N * C), static_cast<unsigned>(ceil_div(S, apply_chunk))), kThreads, 0,
               stream()>>>(in, o, stats_p, wp, bp, S, C, Cg, apply_chunk);
      }
    };
    auto with_vec = [&](auto silu) {
      if (vec == kVec) go(Int<kVec>{}, silu);
      else go(Int<1>{}, silu);
    };
    if (act == Activation::Silu) with_vec(std::true_type{});
    else with_vec(std::false_type{});
  });
  check_launch("group_norm", x_in, weight);
  return out;
}

}  // namespace vgen::cuda
