// Host side and pre-pass of vgen's quantized Hopper attention (sage_attention_sm90.cuh): the
// per-channel statistics of K and V, the int8 Q and K, the transposed e4m3 V, then the kernel.
#include "backends/cuda/sage_attention_sm90.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "backends/cuda/cuda_common.h"
#include "backends/cuda/sage_attention_sm90.cuh"

namespace vgen::cuda {
namespace {

namespace s90 = ::vgen_sage90;
using cute::Int;
using cute::_1;
using Traits = s90::Traits<4>;
constexpr int D = sage::kHeadDim;
constexpr int kStatRows = sage::kStatRows;  // keys per partial sum of the statistics pass

// ---- pre-pass kernels ---------------------------------------------------------------------

struct View4 {  // a bf16 [B, H, S, D] view, unit stride along D
  const __nv_bfloat16* p;
  int64_t sb, sh, ss;
  int32_t H, S;
};

// Partial per-channel sums of k and maxima of |v| over kStatRows keys:
// part[bh][chunk][0][d] = sum k, part[bh][chunk][1][d] = max |v|. 256 threads: thread t reads
// channels 8 (t % 16) .. + 7 of rows t / 16, + 16, ... with 16-byte loads (all 32 of a thread's
// loads in flight at once), then the 16 row groups are reduced through shared memory.
__global__ void __launch_bounds__(256) kv_stats_kernel(View4 k, View4 v, float* part, int chunks) {
  constexpr int kGroups = sage::kStatGroups, kSteps = kStatRows / kGroups;
  static_assert(kGroups * (D / 8) == 256 && kStatRows % kGroups == 0);  // 16 threads a row, 8 channels each
  __shared__ float sums[kGroups][D], maxes[kGroups][D];
  const int chunk = blockIdx.x, bh = blockIdx.y;
  const int b = bh / k.H, h = bh % k.H;
  const int group = threadIdx.x / 16, d0 = 8 * (threadIdx.x % 16);
  const int s0 = chunk * kStatRows;
  const __nv_bfloat16* kp = k.p + b * k.sb + h * k.sh + d0;
  const __nv_bfloat16* vp = v.p + b * v.sb + h * v.sh + d0;
  uint4 kr[kSteps], vr[kSteps];
  CUTE_UNROLL
  for (int i = 0; i < kSteps; ++i) {
    const int s = s0 + group + kGroups * i;
    const bool in = s < k.S;
    kr[i] = in ? *reinterpret_cast<const uint4*>(kp + int64_t(s) * k.ss) : make_uint4(0u, 0u, 0u, 0u);
    vr[i] = in ? *reinterpret_cast<const uint4*>(vp + int64_t(s) * v.ss) : make_uint4(0u, 0u, 0u, 0u);
  }
  float sum[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, amax[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  CUTE_UNROLL
  for (int i = 0; i < kSteps; ++i)
    CUTE_UNROLL
    for (int j = 0; j < 8; ++j) {
      sum[j] += __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(&kr[i])[j]);
      amax[j] = fmaxf(amax[j], fabsf(__bfloat162float(reinterpret_cast<const __nv_bfloat16*>(&vr[i])[j])));
    }
  CUTE_UNROLL
  for (int j = 0; j < 8; ++j) {
    sums[group][d0 + j] = sum[j];
    maxes[group][d0 + j] = amax[j];
  }
  __syncthreads();
  if (threadIdx.x >= D) return;
  const int d = threadIdx.x;
  float total = 0.f, m = 0.f;
  for (int g = 0; g < kGroups; ++g) {
    total += sums[g][d];
    m = fmaxf(m, maxes[g][d]);
  }
  float* out = part + (int64_t(bh) * chunks + chunk) * 2 * D;
  out[d] = total;
  out[D + d] = m;
}

// k_mean[bh][d]; v_scale = amax / 448 and v_inv = 448 / amax (1 and 0 for amax 0).
__global__ void kv_finalize_kernel(const float* part, int chunks, int keys, float* k_mean, float* v_scale,
                                   float* v_inv) {
  const int d = threadIdx.x, bh = blockIdx.x;
  const float* p = part + int64_t(bh) * chunks * 2 * D;
  float sum = 0.f, amax = 0.f;
  for (int c = 0; c < chunks; ++c) {
    sum += p[c * 2 * D + d];
    amax = fmaxf(amax, p[c * 2 * D + D + d]);
  }
  k_mean[bh * D + d] = sum / static_cast<float>(keys);
  v_scale[bh * D + d] = amax > 0.f ? __fdiv_rn(amax, 448.f) : 1.f;
  v_inv[bh * D + d] = amax > 0.f ? __fdiv_rn(448.f, amax) : 0.f;
}

// int8 codes of [B, H, S, D] rows in groups of kRows (minus the channel mean when `mean`), into
// out [B * H, S, D] and scale [B * H, ceil(S / kRows)]. 256 threads: 8 warps of 16 rows each,
// 128 rows a block; lane l reads channels 8 (l % 16) .. + 7 of rows 2 i + l / 16.
template <int kRows>
__global__ void __launch_bounds__(256) quantize_rows_kernel(View4 x, const float* mean, int8_t* out, float* scale) {
  static_assert(kRows % 16 == 0 && 128 % kRows == 0);
  constexpr int kWarpsPerGroup = kRows / 16;
  __shared__ float warp_amax[8];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, bh = blockIdx.y;
  const int b = bh / x.H, h = bh % x.H;
  const int row_base = blockIdx.x * 128 + warp * 16;
  const int d0 = 8 * (lane % 16);
  float m[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  if (mean != nullptr)
    for (int j = 0; j < 8; ++j) m[j] = mean[bh * D + d0 + j];
  // The rows stay bf16 in registers between the two passes (32 registers, not 64): more blocks
  // fit on an SM, and more loads are in flight.
  uint4 raw[8];
  CUTE_UNROLL
  for (int i = 0; i < 8; ++i) {
    const int s = row_base + 2 * i + lane / 16;
    raw[i] = s < x.S ? *reinterpret_cast<const uint4*>(x.p + b * x.sb + h * x.sh + int64_t(s) * x.ss + d0)
                     : make_uint4(0u, 0u, 0u, 0u);
  }
  auto value = [&](int i, int j) {
    return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(&raw[i])[j]) - m[j];
  };
  float amax = 0.f;
  CUTE_UNROLL
  for (int i = 0; i < 8; ++i)
    if (row_base + 2 * i + lane / 16 < x.S)
      CUTE_UNROLL
      for (int j = 0; j < 8; ++j) amax = fmaxf(amax, fabsf(value(i, j)));
  for (int o = 16; o > 0; o /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffff, amax, o));
  if (lane == 0) warp_amax[warp] = amax;
  __syncthreads();
  const int first = warp / kWarpsPerGroup * kWarpsPerGroup;
  amax = 0.f;
  for (int w = first; w < first + kWarpsPerGroup; ++w) amax = fmaxf(amax, warp_amax[w]);
  const float inv = amax > 0.f ? __fdiv_rn(127.f, amax) : 0.f;
  const int group = row_base / kRows;
  if (lane == 0 && warp == first && row_base < x.S)
    scale[int64_t(bh) * ((x.S + kRows - 1) / kRows) + group] = amax > 0.f ? __fdiv_rn(amax, 127.f) : 1.f;
  for (int i = 0; i < 8; ++i) {
    const int s = row_base + 2 * i + lane / 16;
    if (s >= x.S) continue;
    uint32_t packed[2] = {0u, 0u};
    for (int j = 0; j < 8; ++j) {
      const int c = max(-127, min(127, __float2int_rn(value(i, j) * inv)));
      packed[j / 4] |= (uint32_t(c) & 0xffu) << (8 * (j % 4));
    }
    *reinterpret_cast<uint2*>(out + (int64_t(bh) * x.S + s) * D + d0) = make_uint2(packed[0], packed[1]);
  }
}

// e4m3 codes of v * v_inv, transposed and permuted: vt[bh][d][128 t + 16 g + vt_position(j)] is
// key 128 t + 16 g + j (zero past the end); row D is ones (P V's column D is then P's row sum),
// rows D + 1 .. kVRows - 1 zeros. One block of 256 threads per 128 keys.
__global__ void __launch_bounds__(256) quantize_v_kernel(View4 v, const float* v_inv, uint8_t* vt, int64_t kv_pad) {
  // Row d of the tile holds channel d's 128 keys; its 16-byte chunks are XOR-swizzled by d / 8
  // so that the 16 lanes writing channels 8 l + j at once spread over the banks.
  __shared__ __align__(16) uint8_t tile[D * 128];
  auto at = [](int d, int pos) { return d * 128 + (pos ^ (((d / 8) % 8) << 4)); };
  const int bh = blockIdx.y, b = bh / v.H, h = bh % v.H;
  const int key0 = blockIdx.x * 128;
  for (int it = 0; it < 8; ++it) {
    const int idx = threadIdx.x + 256 * it;
    const int key = idx / 16, d0 = 8 * (idx % 16);
    const int s = key0 + key;
    const int pos = 16 * (key / 16) + sage::vt_position(key % 16);
    float e[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    if (s < v.S) {
      const uint4 raw = *reinterpret_cast<const uint4*>(v.p + b * v.sb + h * v.sh + int64_t(s) * v.ss + d0);
      const __nv_bfloat16* x = reinterpret_cast<const __nv_bfloat16*>(&raw);
      for (int j = 0; j < 8; ++j) e[j] = __bfloat162float(x[j]) * v_inv[bh * D + d0 + j];
    }
    for (int j = 0; j < 8; j += 2) {
      const uint16_t two = __nv_cvt_float2_to_fp8x2(make_float2(e[j], e[j + 1]), __NV_SATFINITE, __NV_E4M3);
      tile[at(d0 + j, pos)] = static_cast<uint8_t>(two & 0xff);
      tile[at(d0 + j + 1, pos)] = static_cast<uint8_t>(two >> 8);
    }
  }
  __syncthreads();
  constexpr int kRows = Traits::kVRows;
  for (int idx = threadIdx.x; idx < kRows * 8; idx += 256) {
    const int d = idx / 8, chunk = idx % 8;
    const uint32_t fill = d == D ? 0x38383838u : 0u;  // e4m3 1.0
    *reinterpret_cast<uint4*>(vt + (int64_t(bh) * kRows + d) * kv_pad + key0 + 16 * chunk) =
        d < D ? *reinterpret_cast<const uint4*>(tile + at(d, 16 * chunk)) : make_uint4(fill, fill, fill, fill);
  }
}

// ---- host ---------------------------------------------------------------------------------

bool built_for_sm90a() { return has_sm90a_code(reinterpret_cast<const void*>(s90::forward_kernel<Traits>)); }

// A view the pre-pass can read with 16-byte loads (a contiguous copy otherwise).
View4 view_of(Tensor& t) {
  auto fits = [&] {
    if (pointer_alignment(t.raw_data(), 16) < 16 || t.strides()[3] != 1) return false;
    for (int d = 0; d < 3; ++d)
      if (t.size(d) > 1 && t.strides()[d] % 8 != 0) return false;
    return true;
  };
  if (!fits()) t = contiguous(t);
  return {static_cast<const __nv_bfloat16*>(t.raw_data()), t.strides()[0], t.strides()[1], t.strides()[2],
          static_cast<int32_t>(t.size(1)), static_cast<int32_t>(t.size(2))};
}

}  // namespace

std::string sage_attention_sm90_unavailable(int device) {
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    (void)cudaGetLastError();
    return fmt::format("cannot read device {}'s compute capability", device);
  }
  if (major != 9 || minor != 0) return fmt::format("needs an sm_90 GPU (this is sm_{}{})", major, minor);
  if (!built_for_sm90a()) return "this build has no sm_90a code (VGEN_CUDA_ARCHS without 90a)";
  return "";
}

std::string sage_attention_sm90_rejects(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias) {
  std::string why = sage::rejects(q, k, v, bias);
  if (!why.empty()) return why;
  why = sage_attention_sm90_unavailable(active().device_index());
  if (!why.empty()) return why;
  // The pre-pass grids put batch x heads in y (at most 65535).
  if (q.size(2) > INT32_MAX / 2 || k.size(2) > INT32_MAX / 2 || q.size(0) * q.size(1) > 65535)
    return "sizes out of range";
  return "";
}

void sage_attention_sm90(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, float scale, const Tensor& out) {
  VGEN_CHECK(out.dtype() == DType::BF16 && out.strides()[3] == 1 && out.shape() == q_in.shape(),
             "sage attention: out {} must be BF16 [B, H, Sq, D] with unit stride along D", out.str());
  if (q_in.numel() == 0) return;
  Tensor q = q_in, k = k_in, v = v_in;
  const View4 vq = view_of(q), vk = view_of(k), vv = view_of(v);
  const int64_t B = q.size(0), H = q.size(1), Sq = q.size(2), Sk = k.size(2), BH = B * H;
  const int64_t chunks = (Sk + kStatRows - 1) / kStatRows;
  const int64_t n_blocks = (Sk + sage::kKBlock - 1) / sage::kKBlock, kv_pad = n_blocks * sage::kKBlock;
  const int64_t q_groups = (Sq + sage::kQGroup - 1) / sage::kQGroup;
  const Device dev = q.device();

  const Tensor part = Tensor::empty({BH, chunks, 2, D}, DType::F32, dev);
  const Tensor stats = Tensor::empty({3, BH, D}, DType::F32, dev);  // k mean, v scale, v inverse scale
  const Tensor q8 = Tensor::empty({BH, Sq, D}, DType::U8, dev);
  const Tensor k8 = Tensor::empty({BH, Sk, D}, DType::U8, dev);
  const Tensor vt = Tensor::empty({BH, Traits::kVRows, kv_pad}, DType::U8, dev);
  const Tensor q_scale = Tensor::empty({BH, q_groups}, DType::F32, dev);
  const Tensor k_scale = Tensor::empty({BH, n_blocks}, DType::F32, dev);
  float* k_mean = static_cast<float*>(stats.raw_data());
  float* v_scale = k_mean + BH * D;
  float* v_inv = v_scale + BH * D;

  const cudaStream_t st = stream();
  kv_stats_kernel<<<dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(BH)), 256, 0, st>>>(
      vk, vv, static_cast<float*>(part.raw_data()), static_cast<int>(chunks));
  check_launch("sage attention (k, v statistics)", k, v);
  kv_finalize_kernel<<<static_cast<unsigned>(BH), D, 0, st>>>(static_cast<const float*>(part.raw_data()),
                                                              static_cast<int>(chunks), static_cast<int>(Sk), k_mean,
                                                              v_scale, v_inv);
  check_launch("sage attention (k, v statistics)", k, v);
  quantize_rows_kernel<sage::kQGroup><<<dim3(static_cast<unsigned>((Sq + 127) / 128), static_cast<unsigned>(BH)), 256, 0, st>>>(
      vq, nullptr, static_cast<int8_t*>(q8.raw_data()), static_cast<float*>(q_scale.raw_data()));
  check_launch("sage attention (quantize q)", q);
  quantize_rows_kernel<sage::kKBlock><<<dim3(static_cast<unsigned>(n_blocks), static_cast<unsigned>(BH)), 256, 0, st>>>(
      vk, k_mean, static_cast<int8_t*>(k8.raw_data()), static_cast<float*>(k_scale.raw_data()));
  check_launch("sage attention (quantize k)", k);
  quantize_v_kernel<<<dim3(static_cast<unsigned>(n_blocks), static_cast<unsigned>(BH)), 256, 0, st>>>(
      vv, v_inv, static_cast<uint8_t*>(vt.raw_data()), kv_pad);
  check_launch("sage attention (quantize v)", v);

  using T = Traits;
  auto qk_view = [&](const Tensor& t, int64_t S) {
    return cute::make_tensor(cute::make_gmem_ptr(static_cast<const int8_t*>(t.raw_data())),
                             cute::make_shape(static_cast<int32_t>(S), Int<D>{}, static_cast<int32_t>(H),
                                              static_cast<int32_t>(B)),
                             cute::make_stride(int64_t{D}, _1{}, S * D, H * S * D));
  };
  const auto gv = cute::make_tensor(
      cute::make_gmem_ptr(static_cast<const cutlass::float_e4m3_t*>(vt.raw_data())),
      cute::make_shape(Int<T::kVRows>{}, static_cast<int32_t>(kv_pad), static_cast<int32_t>(H), static_cast<int32_t>(B)),
      cute::make_stride(kv_pad, _1{}, T::kVRows * kv_pad, H * T::kVRows * kv_pad));
  s90::Params<T> p{
      cute::make_tma_copy(cute::SM90_TMA_LOAD{}, qk_view(q8, Sq), typename T::SmemLayoutQ{},
                          cute::Shape<Int<T::kBlockM>, Int<D>>{}, _1{}),
      cute::make_tma_copy(cute::SM90_TMA_LOAD{}, qk_view(k8, Sk), cute::take<0, 2>(typename T::SmemLayoutK{}),
                          cute::Shape<Int<T::kBlockN>, Int<D>>{}, _1{}),
      cute::make_tma_copy(cute::SM90_TMA_LOAD{}, gv, cute::take<0, 2>(typename T::SmemLayoutVt{}),
                          cute::Shape<Int<T::kVRows>, Int<T::kBlockN>>{}, _1{}),
      static_cast<const float*>(q_scale.raw_data()),
      static_cast<const float*>(k_scale.raw_data()),
      v_scale,
      static_cast<cutlass::bfloat16_t*>(out.raw_data()),
      out.strides()[2],
      out.strides()[1],
      out.strides()[0],
      static_cast<int32_t>(Sq),
      static_cast<int32_t>(Sk),
      static_cast<int32_t>(H),
      static_cast<int32_t>(B),
      scale * 1.4426950408889634f,
  };
  auto* kernel = s90::forward_kernel<T>;
  allow_dynamic_shared_memory(reinterpret_cast<const void*>(kernel), T::kSmemBytes, "sage attention");
  const dim3 grid(static_cast<unsigned>((Sq + T::kBlockM - 1) / T::kBlockM), static_cast<unsigned>(H),
                  static_cast<unsigned>(B));
  kernel<<<grid, T::kThreads, T::kSmemBytes, st>>>(p);
  check_launch("sage attention", q, k);
}

}  // namespace vgen::cuda
