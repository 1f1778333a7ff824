// vgen's direct 3x3x3 convolution for at most 16 output channels (conv3d_direct.h says why).
//
// A block of 128 threads computes one output frame's tile of 4 rows x 64 columns, all output
// channels (padded to 16). Per slice of 16 input channels it stages, with cp.async, the 3 input
// frames x 6 rows x 66 columns the tile reads (zeros outside the input: the padding) and the
// 27 taps' weights, double-buffered; then each warp (16 columns, the 4 rows) runs the 27 taps
// as mma.sync m16n8k16: A is 16 output positions of a row x 16 channels, read with ldmatrix
// straight from the staged frames at the tap's shift; B is the tap's 16 channels x 16 outputs.
// A row of input serves 3 output rows (one per vertical tap), so per (time tap, horizontal tap)
// a warp loads the 6 input rows once and issues 12 x 2 MMAs from them.
//
// Shared memory layout: each staged position holds its 16 channels as two 16-byte halves, the
// halves swapped at columns whose bit 2 is set, so that the 8 rows an ldmatrix phase reads
// (8 consecutive columns of a row, 32 bytes apart) fall in 8 different bank groups. The weights
// are staged [tap][output][16 channels] with the same swap on the output index.
//
// Staging: a thread copies the same one or two 16-byte pieces (column, half) of each of the 18
// staged rows in every slice, so its columns' offsets and bounds are worked out once, and each
// row's once per slice (the same for all threads): the copies cost a few instructions each,
// which matters beside the 216 MMAs a warp issues per slice.
#include "backends/cuda/conv3d_direct.h"

#include <cuda_bf16.h>

#include "backends/cuda/cuda_common.h"

namespace vgen::cuda {
namespace {

constexpr int kRows = 4;                      // output rows of a block's tile
constexpr int kCols = 64;                     // output columns of a block's tile
constexpr int kWarps = kCols / 16;            // a warp: 16 columns, the 4 rows
constexpr int kThreads = kWarps * 32;
constexpr int kInRows = kRows + 2;            // staged input rows (the 3 vertical taps' halo)
constexpr int kInCols = kCols + 2;            // staged input columns
constexpr int kSlice = 16;                    // input channels per stage (one MMA's K)
constexpr int kPosBytes = kSlice * 2;         // one staged position: 16 bf16
constexpr int kFrameBytes = kInRows * kInCols * kPosBytes;
constexpr int kInputBytes = 3 * kFrameBytes;  // the 3 time taps' frames
constexpr int kWeightBytes = 27 * 16 * kPosBytes;
constexpr int kStageBytes = kInputBytes + kWeightBytes;
constexpr int kStages = 2;
constexpr int kSmemBytes = kStages * kStageBytes;

struct Params {
  const __nv_bfloat16* x;
  const __nv_bfloat16* w;  // packed [C / 16][27 taps][16 outputs][16 channels], zeros past K
  const float* bias;       // [K] or null
  __nv_bfloat16* y;
  int64_t xs[4];           // x's strides along N, T, H, W (elements; channels are unit-stride)
  int64_t ys[4];           // y's strides along N, T, H, W
  int C, K, T, H, W, To, Ho, Wo;
  int pad_t, pad_h, pad_w;  // padding before each dim
  int col_tiles;            // ceil(Wo / kCols)
};

// Byte offset, within a staged row (or the weights' 16-output group), of column (or output)
// `col`'s 16-byte half `half` (0: channels 0-7, 1: 8-15).
__device__ __forceinline__ uint32_t swizzled(int col, int half) {
  return static_cast<uint32_t>(col * kPosBytes + ((half ^ ((col >> 2) & 1)) << 4));
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  const int bytes = valid ? 16 : 0;  // 0: zero-fill, nothing read
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// A thread's share of a staged row: columns `col[j]` (j < pieces), half `half`, the input
// column each reads and whether it lies inside the input.
struct RowPieces {
  int pieces, half;
  uint32_t dst[2];  // byte offsets within a staged row
  int64_t src[2];   // element offsets of the input column (plus the half)
  bool valid[2];
};

__device__ __forceinline__ RowPieces row_pieces(const Params& p, int w0) {
  // 2 x 66 pieces a row: thread t takes (column t / 2, half t % 2), threads 0-3 also column
  // 64 + t / 2.
  RowPieces r{};
  r.half = threadIdx.x & 1;
  r.pieces = threadIdx.x < 2 * (kInCols - kCols) ? 2 : 1;
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int col = (threadIdx.x >> 1) + j * kCols;
    const int wi = w0 + col - p.pad_w;
    r.dst[j] = swizzled(col, r.half);
    r.valid[j] = wi >= 0 && wi < p.W;
    r.src[j] = static_cast<int64_t>(wi) * p.xs[3] + r.half * 8;
  }
  return r;
}

// Stages input channels [16 s, 16 s + 16) of the tile's frames and the weights for them.
__device__ __forceinline__ void stage(const Params& p, const RowPieces& rp, uint32_t smem, int s, int n, int t0,
                                      int h0) {
  const __nv_bfloat16* x = p.x + n * p.xs[0] + s * kSlice;
#pragma unroll
  for (int f = 0; f < 3; ++f) {
#pragma unroll
    for (int row = 0; row < kInRows; ++row) {
      const int ti = t0 + f - p.pad_t, hi = h0 + row - p.pad_h;
      const bool inside = ti >= 0 && ti < p.T && hi >= 0 && hi < p.H;
      const __nv_bfloat16* src = x + ti * p.xs[1] + hi * p.xs[2];
      const uint32_t dst = smem + (f * kInRows + row) * (kInCols * kPosBytes);
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        if (j < rp.pieces) {
          const bool valid = inside && rp.valid[j];
          cp_async16(dst + rp.dst[j], valid ? src + rp.src[j] : p.x, valid);
        }
      }
    }
  }
  const __nv_bfloat16* w = p.w + static_cast<int64_t>(s) * 27 * 16 * kSlice;
  const uint32_t wsmem = smem + kInputBytes;
  for (int i = threadIdx.x; i < 27 * 16 * 2; i += kThreads) {
    const int half = i & 1, row = i >> 1;  // row = tap * 16 + output
    cp_async16(wsmem + (row >> 4) * (16 * kPosBytes) + swizzled(row & 15, half), w + i * 8, true);
  }
  asm volatile("cp.async.commit_group;\n" ::);
}

__global__ void __launch_bounds__(kThreads) conv3d_direct_kernel(const Params p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const uint32_t smem = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int tile_h = blockIdx.x / p.col_tiles, tile_w = blockIdx.x % p.col_tiles;
  const int h0 = tile_h * kRows, w0 = tile_w * kCols, t0 = blockIdx.y, n = blockIdx.z;
  const int slices = p.C / kSlice;

  float acc[kRows][2][4];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[r][j][e] = 0.0f;

  // ldmatrix row addresses: A's matrices are (positions 0-7, 8-15) x (channels 0-7, 8-15) in
  // the order a0..a3 wants; B's are (outputs 0-7: channels 0-7, 8-15), (outputs 8-15: ...).
  const int a_pos = warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, a_half = lane >> 4;
  const int b_row = (lane & 7) + (lane >> 4) * 8, b_half = (lane >> 3) & 1;

  const RowPieces rp = row_pieces(p, w0);
  stage(p, rp, smem, 0, n, t0, h0);
  for (int s = 0; s < slices; ++s) {
    if (s + 1 < slices) {
      stage(p, rp, smem + ((s + 1) % kStages) * kStageBytes, s + 1, n, t0, h0);
      asm volatile("cp.async.wait_group 1;\n" ::);
    } else {
      asm volatile("cp.async.wait_group 0;\n" ::);
    }
    __syncthreads();
    const uint32_t in = smem + (s % kStages) * kStageBytes, wt = in + kInputBytes;
#pragma unroll
    for (int dt = 0; dt < 3; ++dt) {
#pragma unroll
      for (int dw = 0; dw < 3; ++dw) {
        uint32_t b[3][4];
#pragma unroll
        for (int dh = 0; dh < 3; ++dh) {
          const int tap = (dt * 3 + dh) * 3 + dw;
          ldmatrix_x4(wt + tap * (16 * kPosBytes) + swizzled(b_row, b_half), b[dh]);
        }
#pragma unroll
        for (int ir = 0; ir < kInRows; ++ir) {
          uint32_t a[4];
          ldmatrix_x4(in + (dt * kInRows + ir) * (kInCols * kPosBytes) + swizzled(a_pos + dw, a_half), a);
#pragma unroll
          for (int r = 0; r < kRows; ++r) {
            const int dh = ir - r;
            if (dh >= 0 && dh < 3) {
              mma_bf16(acc[r][0], a, b[dh][0], b[dh][1]);
              mma_bf16(acc[r][1], a, b[dh][2], b[dh][3]);
            }
          }
        }
      }
    }
    __syncthreads();  // the stage is refilled next iteration
  }

  // acc[r][j]: e = 0, 1 at column lane / 4, outputs 8 j + 2 (lane % 4) + {0, 1}; e = 2, 3 at
  // column lane / 4 + 8.
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int ho = h0 + r;
    if (ho >= p.Ho) continue;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int wo = w0 + warp * 16 + lane / 4 + (e >> 1) * 8;
      if (wo >= p.Wo) continue;
      __nv_bfloat16* y = p.y + n * p.ys[0] + t0 * p.ys[1] + ho * p.ys[2] + wo * p.ys[3];
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int k = j * 8 + (lane % 4) * 2 + (e & 1);
        if (k < p.K) y[k] = __float2bfloat16_rn(acc[r][j][e] + (p.bias != nullptr ? p.bias[k] : 0.0f));
      }
    }
  }
#endif
}

}  // namespace

std::string conv3d_direct_rejects(const Conv3dDirectProblem& p) {
  const cudaDeviceProp& prop = device_properties();
  if (prop.major < 8) return fmt::format("needs an sm_80 or newer GPU (this is sm_{}{})", prop.major, prop.minor);
  if (prop.sharedMemPerBlockOptin < static_cast<size_t>(kSmemBytes))
    return fmt::format("needs an sm_80 or newer GPU with {} bytes of shared memory a block (this one has {})",
                       kSmemBytes, prop.sharedMemPerBlockOptin);
  for (const Tensor* t : {&p.x, &p.w, &p.y})
    if (t->dim() != 5 || t->dtype() != DType::BF16) return "takes 5-D BF16 tensors only";
  if (p.bias.defined() && p.bias.numel() != p.w.size(0)) return "needs a bias of K values";
  const int64_t C = p.x.size(1), K = p.w.size(0);
  if (p.w.size(1) != C) return "input and filter channels differ";
  if (p.w.size(2) != 3 || p.w.size(3) != 3 || p.w.size(4) != 3) return "takes 3x3x3 filters only";
  if (K < 1 || K > kConv3dDirectMaxOut) return fmt::format("takes 1 to 16 output channels (not {})", K);
  if (C < kSlice || C % kSlice != 0) return fmt::format("needs input channels a multiple of 16 (not {})", C);
  if (p.stride != std::array<int64_t, 3>{1, 1, 1}) return "takes stride 1 only";
  if (!p.x.is_channels_last_3d() || p.x.strides()[1] != 1) return "needs a channels-last 3-D input";
  if (!aligned16(p.x)) return "needs a 16-byte aligned input";
  for (int d : {0, 2, 3, 4})
    if (p.x.size(d) > 1 && p.x.strides()[d] % 8 != 0) return "needs input strides that are multiples of 8 elements";
  for (int i = 0; i < 3; ++i)
    if (p.y.size(2 + i) != p.x.size(2 + i) + p.pad_before[i] + p.pad_after[i] - 2)
      return "output extent disagrees with the padding";
  if (p.y.size(0) != p.x.size(0) || p.y.size(1) != K) return "output shape disagrees with the inputs";
  if (p.y.strides()[1] != 1) return "needs a channels-last output";
  for (const Tensor* t : {&p.x, &p.y})
    for (int64_t v : t->shape())
      if (v > (int64_t{1} << 30)) return "sizes out of range";
  if (p.y.size(2) > 65535 || p.y.size(0) > 65535) return "too many output frames";
  for (int i = 0; i < 3; ++i)
    if (p.pad_before[i] > 2 || p.pad_after[i] > 2) return "takes padding of at most 2";
  return "";
}

void conv3d_direct(const Conv3dDirectProblem& p) {
  const int64_t C = p.x.size(1), K = p.w.size(0);
  if (p.y.numel() == 0) return;
  // The filter packed as the kernel stages it: [C / 16][27 taps][16 outputs][16 channels],
  // outputs past K zero (their accumulators are never stored).
  const Tensor w = Tensor::zeros({C / kSlice, 27, kConv3dDirectMaxOut, kSlice}, DType::BF16, p.x.device());
  w.narrow(2, 0, K).copy_(p.w.contiguous().view({K, C / kSlice, kSlice, 27}).permute({1, 3, 0, 2}));
  const Tensor bias = p.bias.defined() ? p.bias.to(DType::F32).contiguous() : Tensor();
  Params prm{};
  prm.x = static_cast<const __nv_bfloat16*>(p.x.raw_data());
  prm.w = static_cast<const __nv_bfloat16*>(w.raw_data());
  prm.bias = bias.defined() ? static_cast<const float*>(bias.raw_data()) : nullptr;
  prm.y = static_cast<__nv_bfloat16*>(p.y.raw_data());
  const int kDims[4] = {0, 2, 3, 4};
  for (int i = 0; i < 4; ++i) {
    prm.xs[i] = p.x.strides()[kDims[i]];
    prm.ys[i] = p.y.strides()[kDims[i]];
  }
  prm.C = static_cast<int>(C);
  prm.K = static_cast<int>(K);
  prm.T = static_cast<int>(p.x.size(2));
  prm.H = static_cast<int>(p.x.size(3));
  prm.W = static_cast<int>(p.x.size(4));
  prm.To = static_cast<int>(p.y.size(2));
  prm.Ho = static_cast<int>(p.y.size(3));
  prm.Wo = static_cast<int>(p.y.size(4));
  prm.pad_t = static_cast<int>(p.pad_before[0]);
  prm.pad_h = static_cast<int>(p.pad_before[1]);
  prm.pad_w = static_cast<int>(p.pad_before[2]);
  prm.col_tiles = (prm.Wo + kCols - 1) / kCols;
  const int64_t tiles = static_cast<int64_t>(prm.col_tiles) * ((prm.Ho + kRows - 1) / kRows);
  VGEN_CHECK(tiles <= INT32_MAX, "conv3d direct: {} tiles per frame", tiles);
  allow_dynamic_shared_memory(reinterpret_cast<const void*>(conv3d_direct_kernel), kSmemBytes, "conv3d direct");
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(prm.To), static_cast<unsigned>(p.y.size(0)));
  conv3d_direct_kernel<<<grid, kThreads, kSmemBytes, stream()>>>(prm);
  check_launch("conv3d direct", p.x, p.w);
}

}  // namespace vgen::cuda
