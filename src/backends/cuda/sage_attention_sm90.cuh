// Quantized (SageAttention2-style) attention forward for Hopper (sm_90a): INT8 Q K^T with
// per-block scales after K's token mean is subtracted, FP8 (e4m3) P V with per-channel V scales,
// float32 softmax, and float32 accumulation in two levels. The algorithm, step by step, is
// ops/sage_attention.h's; the CPU backend runs the same steps as the reference.
//
// The inputs come quantized by the pre-pass kernels of sage_attention_sm90.cu:
//   q8  int8 [B, H, Sq, D], one scale per 16 query rows (kQGroup: one warp's rows here);
//   k8  int8 [B, H, Sk, D] of k - mean_s(k), one scale per 128 keys (kKBlock: one key block);
//   vt  e4m3 [B, H, D + 8, Sk_pad] (V transposed, a row of ones, 7 of zeros; keys padded with
//       zeros to a multiple of 128 and
//       permuted within each 16 so that P's accumulator registers are the A operand of the FP8
//       wgmma as they stand: see vt_position), one scale per channel (b, h, d).
//
// The kernel is vgen's bf16 flash kernel (flash_attention_sm90.cuh) with other element types:
//   - warpgroup 0 produces: TMA loads of the Q tile and a ring of kStages K / V^T stages;
//   - warpgroups 1 and 2 consume 64 query rows each; unlike the bf16 kernel they do not take
//     turns at the tensor cores (Traits says why); within a warpgroup
//     S(j+1) = Q K(j+1)^T and T (+)= P(j) V(j) are issued before the softmax of block j+1.
//   - S is int32; s * scale_q * scale_k * softmax_scale * log2(e) is the score in log2 units.
//     S's accumulators start from the bits of 1.5 * 2^23, so that Q K^T leaves the bits of the
//     float 1.5 * 2^23 + s exactly (|s| < 2^21 for 128-long int8 dot products); the 1.5 * 2^23
//     comes off in the exponent's FFMA. The row maxima are taken on those bits as int32 (three-input
//     integer max; the order is s's).
//   - The softmax (~5 instructions a score: the max, the FFMA, the MUFU exp2, half an e4m3 pack,
//     and once every kFoldSpan blocks the fold of T into O) saturates no unit: per ncu (S=32760
//     H=12, 2026-12-03, when it also had an integer add a score) issue slots were 39% busy, the
//     MUFU 48%, the tensor pipe 47%, and a warp mostly waits on its own dependent instructions
//     (two consumer warps a scheduler); instructions taken out of it show in the kernel's time,
//     though not one for one (Traits::kFoldSpan and the preset in the consumer loop have the
//     measurements).
//   - P = 2^(s - m + log2 448), i.e. the softmax weights times 448, rounded to e4m3 (saturating)
//     for P V. V^T carries a row of ones after the head dim: column 128 of P V is the row sum of
//     the rounded weights, so numerator and denominator see the same weights and the softmax
//     needs no additions of its own.
//   - Two levels: the P V products of kFoldSpan key blocks add up on the tensor cores in a
//     float32 accumulator T (its rows rescaled in registers, between two blocks, where a row's
//     maximum rose), which is then added to O in registers (O = O * rescale + T): the tensor
//     cores' FP8 accumulation never spans more than kFoldSpan blocks of 128 keys.
//   - Epilogue: O * scale_v[d] / l, bf16.
// Measured slower or not worth it (README, Quantized attention, has the figures): three consumer
// warpgroups with 64-key blocks; splitting the last wave of tiles along the keys (under 1%
// faster, and P then rounds against a range's own running max); issuing S(n + 1) before the
// softmax of block n into a second S register set, with O in shared memory to make room (no
// faster at S=32760, 3% slower at S=75600); unrolling the loop by the ring's stages (within 1%
// once S is preset, and a loop four times longer).
#pragma once

#include <bit>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp8.h>

// The m64n136k32 FP8 wgmma (V's 128 columns + the row-sum column) is one of CuTe's "extended"
// shapes.
#define CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED
#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/numeric_types.h>

#include "backends/cuda/sm90_device.cuh"

#include "ops/sage_attention.h"

// Outside namespace vgen, whose Shape and Tensor would hide CuTe's.
namespace vgen_sage90 {

using namespace cute;
using vgen_sm90::exp2_approx;

constexpr int kQGroup = vgen::sage::kQGroup;
constexpr int kKBlock = vgen::sage::kKBlock;
// 1.5 * 2^23: an int32 s (|s| < 2^22) added to its bits gives the bits of the float kMagic + s.
constexpr float kMagic = 12582912.f;

// The consumer warpgroups do not take turns at the tensor cores as the bf16 kernel's do:
// measured on an H200 (S=32760 H=12 / S=75600 H=40, 2026-12-03) 923 / 923 TFLOP/s without turns
// against 871 / 884 with them: here the softmax, not the GEMMs, is the long phase, and the turns
// leave one warp per scheduler to run it.
template <int kStages_, int kFoldSpan_ = 4>
struct Traits {
  static constexpr int kHeadDim = vgen::sage::kHeadDim;
  // V^T rows: the head dim, then a row of ones (P's row sums come out of P V as column 128),
  // then zeros to a multiple of 8 (the FP8 wgmma's N step).
  static constexpr int kVRows = kHeadDim + 8;
  static constexpr int kBlockM = 128;  // two consumer warpgroups x 64 rows
  static constexpr int kBlockN = kKBlock;
  static constexpr int kStages = kStages_;
  // Key blocks whose P V products the tensor cores add up in one float32 accumulator T before
  // it is folded into O (the second level); see the consumer loop. Measured on an H200
  // (2026-12-03, one call, each twice, TFLOP/s at S=75600 H=40 / S=32760 H=12): 1 block 896-902
  // / 880-881, 4 blocks 936-937 / 870-871, 2 blocks 848 / 802 (once); 8 blocks (950 / 888)
  // fails the kernel's tests against the CPU reference: the FP8 accumulation of 1024 keys on
  // the tensor cores is too coarse.
  static constexpr int kFoldSpan = kFoldSpan_;
  static constexpr int kThreads = 384;
  static constexpr int kConsumerWarps = 8;
  using EQK = int8_t;
  using EV = cutlass::float_e4m3_t;

  using SmemLayoutQ = decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<EQK>{}, Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  using SmemLayoutK =
      decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<EQK>{}, Shape<Int<kBlockN>, Int<kHeadDim>, Int<kStages>>{}));
  // V^T tiles (head dim, keys, stage), keys contiguous: the K-major B operand of O = P V.
  using SmemLayoutVt =
      decltype(tile_to_shape(GMMA::Layout_K_SW128_Atom<EV>{}, Shape<Int<kVRows>, Int<kBlockN>, Int<kStages>>{}));

  using TiledMmaQK =
      decltype(make_tiled_mma(GMMA::ss_op_selector<EQK, EQK, int32_t, Shape<_64, Int<kBlockN>, Int<kHeadDim>>>()));
  using TiledMmaPV =
      decltype(make_tiled_mma(GMMA::rs_op_selector<EV, EV, float, Shape<_64, Int<kVRows>, Int<kBlockN>>>()));

  // Q and K as TMA sees them: (seq, head dim, heads, batch), head dim contiguous.
  using GShapeQK = Shape<int32_t, Int<kHeadDim>, int32_t, int32_t>;
  using GStrideQK = Stride<int64_t, _1, int64_t, int64_t>;
  using GTensorQK = decltype(make_tensor(make_gmem_ptr(static_cast<EQK const*>(nullptr)), GShapeQK{}, GStrideQK{}));
  // V^T: (head dim + 8, padded keys, heads, batch), keys contiguous.
  using GShapeV = Shape<Int<kVRows>, int32_t, int32_t, int32_t>;
  using GStrideV = Stride<int64_t, _1, int64_t, int64_t>;
  using GTensorV = decltype(make_tensor(make_gmem_ptr(static_cast<EV const*>(nullptr)), GShapeV{}, GStrideV{}));
  using TmaQ = decltype(make_tma_copy(SM90_TMA_LOAD{}, GTensorQK{}, SmemLayoutQ{},
                                      Shape<Int<kBlockM>, Int<kHeadDim>>{}, _1{}));
  using TmaK = decltype(make_tma_copy(SM90_TMA_LOAD{}, GTensorQK{}, take<0, 2>(SmemLayoutK{}),
                                      Shape<Int<kBlockN>, Int<kHeadDim>>{}, _1{}));
  using TmaV = decltype(make_tma_copy(SM90_TMA_LOAD{}, GTensorV{}, take<0, 2>(SmemLayoutVt{}),
                                      Shape<Int<kVRows>, Int<kBlockN>>{}, _1{}));

  struct SharedStorage {
    cute::array_aligned<EQK, cosize_v<SmemLayoutQ>, 1024> q;
    cute::array_aligned<EQK, cosize_v<SmemLayoutK>, 1024> k;
    cute::array_aligned<EV, cosize_v<SmemLayoutVt>, 1024> v;
    uint32_t magic[4];  // the bits of 1.5 * 2^23 four times: S's preset (see the consumer loop)
    uint64_t bar_q;
    uint64_t full_k[kStages], full_v[kStages], empty_k[kStages], empty_v[kStages];
  };
  static constexpr int kSmemBytes = int(sizeof(SharedStorage)) + 1024;
  static constexpr uint32_t kQBytes = kBlockM * kHeadDim;
  static constexpr uint32_t kKBytes = kBlockN * kHeadDim;
  static constexpr uint32_t kVBytes = kBlockN * kVRows;
};

template <class T>
struct Params {
  typename T::TmaQ tma_q;
  typename T::TmaK tma_k;
  typename T::TmaV tma_v;
  const float* q_scale;  // [B * H, ceil(Sq / kQGroup)]
  const float* k_scale;  // [B * H, ceil(Sk / kKBlock)]
  const float* v_scale;  // [B * H, D]
  cutlass::bfloat16_t* o;
  int64_t o_stride_s, o_stride_h, o_stride_b;  // elements; head dim contiguous
  int32_t seq_q, seq_kv, heads, batch;
  float scale_log2;  // softmax scale * log2(e)
};

// 2^x on the FMA pipe (ops/sage_attention.h: sage::exp2_poly), for the keys sage::kPolyKeys
// picks (none as tuned: see kPolyPeriod).
__device__ __forceinline__ float exp2_poly(float x) { return vgen::sage::exp2_poly(x); }

__device__ __forceinline__ uint32_t e4m3x4(float a, float b, float c, float d) {
  const uint32_t lo = __nv_cvt_float2_to_fp8x2(make_float2(a, b), __NV_SATFINITE, __NV_E4M3);
  const uint32_t hi = __nv_cvt_float2_to_fp8x2(make_float2(c, d), __NV_SATFINITE, __NV_E4M3);
  return lo | (hi << 16);
}

template <class T>
__global__ void __launch_bounds__(T::kThreads, 1) forward_kernel(__grid_constant__ const Params<T> p) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using EV = typename T::EV;
  constexpr int kBlockM = T::kBlockM, kBlockN = T::kBlockN, kHeadDim = T::kHeadDim, kStages = T::kStages;
  using Barrier = cutlass::arch::ClusterBarrier;
  using TxBarrier = cutlass::arch::ClusterTransactionBarrier;

  extern __shared__ char smem_raw[];
  auto& ss = *reinterpret_cast<typename T::SharedStorage*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) &
                                                           ~uintptr_t(1023));
  const int warp_group = threadIdx.x / 128;
  const int wg_thread = threadIdx.x % 128;
  const int lane = threadIdx.x % 32;
  const int m_block = blockIdx.x, head = blockIdx.y, batch = blockIdx.z;
  const int n_blocks = (p.seq_kv + kBlockN - 1) / kBlockN;
  const int64_t bh = int64_t(batch) * p.heads + head;

  if (threadIdx.x == 0) {
    Barrier::init(&ss.bar_q, 1);
    for (int i = 0; i < 4; ++i) ss.magic[i] = std::bit_cast<uint32_t>(kMagic);
    for (int s = 0; s < kStages; ++s) {
      Barrier::init(&ss.full_k[s], 1);
      Barrier::init(&ss.full_v[s], 1);
      Barrier::init(&ss.empty_k[s], T::kConsumerWarps);
      Barrier::init(&ss.empty_v[s], T::kConsumerWarps);
    }
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();

  Tensor sQ = make_tensor(make_smem_ptr(ss.q.data()), typename T::SmemLayoutQ{});
  Tensor sK = make_tensor(make_smem_ptr(ss.k.data()), typename T::SmemLayoutK{});
  Tensor sVt = make_tensor(make_smem_ptr(ss.v.data()), typename T::SmemLayoutVt{});

  if (warp_group == 0) {
    // ---- producer ----
    cutlass::arch::warpgroup_reg_dealloc<24>();
    if (wg_thread == 0) {
      cute::prefetch_tma_descriptor(p.tma_q.get_tma_descriptor());
      cute::prefetch_tma_descriptor(p.tma_k.get_tma_descriptor());
      cute::prefetch_tma_descriptor(p.tma_v.get_tma_descriptor());
      const int32_t kv_pad = n_blocks * kBlockN;
      Tensor mQ = p.tma_q.get_tma_tensor(make_shape(p.seq_q, Int<kHeadDim>{}, p.heads, p.batch));
      Tensor mK = p.tma_k.get_tma_tensor(make_shape(p.seq_kv, Int<kHeadDim>{}, p.heads, p.batch));
      Tensor mV = p.tma_v.get_tma_tensor(make_shape(Int<T::kVRows>{}, kv_pad, p.heads, p.batch));
      Tensor gQ = local_tile(mQ(_, _, head, batch), Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(m_block, 0));
      Tensor gK = local_tile(mK(_, _, head, batch), Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(_, 0));
      Tensor gV = local_tile(mV(_, _, head, batch), Shape<Int<T::kVRows>, Int<kBlockN>>{}, make_coord(0, _));
      auto cq = p.tma_q.get_slice(Int<0>{});
      auto ck = p.tma_k.get_slice(Int<0>{});
      auto cv = p.tma_v.get_slice(Int<0>{});
      Tensor tQg = cq.partition_S(gQ);
      Tensor tQs = cq.partition_D(sQ);
      Tensor tKg = ck.partition_S(gK);
      Tensor tKs = ck.partition_D(sK);
      Tensor tVg = cv.partition_S(gV);
      Tensor tVs = cv.partition_D(sVt);

      TxBarrier::arrive_and_expect_tx(&ss.bar_q, T::kQBytes);
      copy(p.tma_q.with(ss.bar_q), tQg, tQs);
      for (int n = 0; n < n_blocks; ++n) {
        const int s = n % kStages, use = n / kStages;
        if (use > 0) Barrier::wait(&ss.empty_k[s], (use - 1) & 1);
        TxBarrier::arrive_and_expect_tx(&ss.full_k[s], T::kKBytes);
        copy(p.tma_k.with(ss.full_k[s]), tKg(_, _, _, n), tKs(_, _, _, s));
        if (use > 0) Barrier::wait(&ss.empty_v[s], (use - 1) & 1);
        TxBarrier::arrive_and_expect_tx(&ss.full_v[s], T::kVBytes);
        copy(p.tma_v.with(ss.full_v[s]), tVg(_, _, _, n), tVs(_, _, _, s));
      }
    }
    return;
  }

  // ---- consumers ----
  cutlass::arch::warpgroup_reg_alloc<240>();
  const int wg = warp_group - 1;
  typename T::TiledMmaQK mma_qk;
  typename T::TiledMmaPV mma_pv;
  auto thr_qk = mma_qk.get_thread_slice(wg_thread);
  auto thr_pv = mma_pv.get_thread_slice(wg_thread);
  Tensor sQw = local_tile(sQ, Shape<_64, Int<kHeadDim>>{}, make_coord(wg, 0));
  Tensor tSrQ = thr_qk.partition_fragment_A(sQw);   // (MMA, MMA_M, MMA_K)
  Tensor tSrK = thr_qk.partition_fragment_B(sK);    // (MMA, MMA_N, MMA_K, stage)
  Tensor tOrV = thr_pv.partition_fragment_B(sVt);   // (MMA, MMA_N, MMA_K, stage)
  // O and T (the P V of up to kFoldSpan blocks), 136 columns: the head dim, then the row sums
  // (column 128).
  Tensor tOrO = partition_fragment_C(mma_pv, Shape<_64, Int<T::kVRows>>{});
  Tensor tOrT = partition_fragment_C(mma_pv, Shape<_64, Int<T::kVRows>>{});
  using FragS = decltype(partition_fragment_C(mma_qk, Shape<_64, Int<kBlockN>>{}));
  // P as the A operand of the FP8 wgmma: 16 e4m3 values (4 registers) per 32 keys.
  constexpr int kKSteps = kBlockN / 32;
  Tensor tOrP = make_tensor<EV>(Shape<_16, _1, Int<kKSteps>>{});
  uint32_t* p_regs = reinterpret_cast<uint32_t*>(raw_pointer_cast(tOrP.data()));
  clear(tOrO);

  const int warp_in_wg = wg_thread / 32;
  const int quad_col = 2 * (lane % 4);
  const int q_group = (m_block * kBlockM + wg * 64 + warp_in_wg * 16) / kQGroup;
  const int q_groups = (p.seq_q + kQGroup - 1) / kQGroup;
  const float* k_scale = p.k_scale + bh * n_blocks;
  // Rows past the end (their group past the end too) read a scale of 1: their scores are zeros.
  const float qs = (q_group < q_groups ? p.q_scale[bh * q_groups + q_group] : 1.f) * p.scale_log2;
  constexpr float kLog2_448 = 8.807354922057604f;
  float row_max[2] = {-INFINITY, -INFINITY};
  // The row maxima O's and T's weights are relative to (-inf: nothing in them yet).
  float o_max[2] = {-INFINITY, -INFINITY};
  float t_max[2] = {-INFINITY, -INFINITY};

  auto release = [&](uint64_t* bar) {
    __syncwarp();
    if (lane == 0) Barrier::arrive(bar);
  };
  auto gemm_qk = [&](auto& acc, int stage) {
    warpgroup_fence_operand(acc);
    warpgroup_arrive();
    mma_qk.accumulate_ = GMMA::ScaleOut::One;  // onto the preset
    CUTE_UNROLL
    for (int k = 0; k < size<2>(tSrQ); ++k) {
      cute::gemm(mma_qk, tSrQ(_, _, k), tSrK(_, _, k, stage), acc);
      mma_qk.accumulate_ = GMMA::ScaleOut::One;
    }
    warpgroup_commit_batch();
  };
  // S's accumulators are preset to the bits of kMagic = 1.5 * 2^23 before each Q K^T, which adds
  // the int32 scores s to them: they come out as the bits of the float kMagic + s (|s| < 2^21),
  // and the softmax needs no integer add a score. Four registers an instruction: a volatile
  // 16-byte shared-memory load of ss.magic (one address for every thread: a broadcast), which the
  // compiler can neither fold into moves nor hoist out of the loop. (Measured on an H200 in one
  // call, 2026-12-04, GPU-2d452a7f, TFLOP/s, each twice: 967 / 947 against 910 / 938 with the
  // integer add at S=32760 H=12, 963 / 966 against 951 / 949 at S=75600 H=40; ptxas: 499
  // instructions a block in the main loop against 549.)
  const uint32_t magic_smem = cute::cast_smem_ptr_to_uint(&ss.magic[0]);
  auto preset = [&](auto& acc) {
    CUTE_UNROLL
    for (int j = 0; j < size(acc) / 4; ++j)
      asm volatile("ld.volatile.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
                   : "=r"(acc(4 * j)), "=r"(acc(4 * j + 1)), "=r"(acc(4 * j + 2)), "=r"(acc(4 * j + 3))
                   : "r"(magic_smem));
  };
  // T = P V (fresh) or T += P V.
  auto gemm_pv = [&](int stage, bool fresh) {
    warpgroup_fence_operand(tOrP);
    warpgroup_fence_operand(tOrT);
    warpgroup_arrive();
    mma_pv.accumulate_ = fresh ? GMMA::ScaleOut::Zero : GMMA::ScaleOut::One;
    CUTE_UNROLL
    for (int k = 0; k < kKSteps; ++k) {
      cute::gemm(mma_pv, tOrP(_, _, k), tOrV(_, _, k, stage), tOrT);
      mma_pv.accumulate_ = GMMA::ScaleOut::One;
    }
    warpgroup_commit_batch();
  };
  // Value i of an accumulator fragment is row (i / 2) % 2 (0: lane / 4, 1: lane / 4 + 8 of the
  // warp's 16 rows) and column 8 (i / 4) + 2 (lane % 4) + i % 2.
  //
  // The online softmax of block n, in place: the int32 scores s become the float32 weights
  // 2^(s c - m + log2 448) (as bits), and the running max m moves on. f = kMagic + s is the
  // accumulator read as float (see preset); kMagic c is folded into the per-row offset K,
  // whose rounding (a third of c) is far below the int8 scores'.
  // `last` (compile-time) masks the keys past the end.
  auto softmax = [&](auto& acc, int n, float k_scale_n, auto last) {
    const float c = fmaxf(qs * k_scale_n, 1.17549435e-38f);
    float f[size(FragS{})];
    CUTE_UNROLL
    for (int i = 0; i < size(acc); ++i) f[i] = __int_as_float(acc(i));
    if constexpr (decltype(last)::value) {
      const int limit = p.seq_kv - n * kBlockN - quad_col;
      CUTE_UNROLL
      for (int i = 0; i < size(acc); ++i)
        if (8 * (i / 4) + (i % 2) >= limit) f[i] = -INFINITY;
    }
    // Row maxima as a tree (a chain would be 32 dependent max). Unmasked blocks take them on the
    // int32 scores with the three-input integer max (VIMNMX3, Hopper's DPX): 17 instructions a
    // row instead of 31 FMNMX, and the same maximum, as s -> kMagic + s is increasing. (Measured
    // on an H200 with no polynomial keys, in one call: 904 TFLOP/s at S=32760 H=12 against 786
    // with FMNMX.)
    float mx[2];
    if constexpr (!decltype(last)::value) {
      CUTE_UNROLL
      for (int r = 0; r < 2; ++r) {
        int a[32];
        CUTE_UNROLL
        for (int j = 0; j < 16; ++j) {
          a[2 * j] = acc(4 * j + 2 * r);
          a[2 * j + 1] = acc(4 * j + 2 * r + 1);
        }
        int b[11];
        CUTE_UNROLL
        for (int j = 0; j < 10; ++j) b[j] = __vimax3_s32(a[3 * j], a[3 * j + 1], a[3 * j + 2]);
        b[10] = max(a[30], a[31]);
        int c4[4];
        CUTE_UNROLL
        for (int j = 0; j < 3; ++j) c4[j] = __vimax3_s32(b[3 * j], b[3 * j + 1], b[3 * j + 2]);
        c4[3] = max(b[9], b[10]);
        mx[r] = __int_as_float(__vimax3_s32(c4[0], c4[1], max(c4[2], c4[3])));
      }
    } else {
      CUTE_UNROLL
      for (int r = 0; r < 2; ++r) {
        float t[16];
        CUTE_UNROLL
        for (int j = 0; j < 16; ++j) t[j] = fmaxf(f[4 * j + 2 * r], f[4 * j + 2 * r + 1]);
        CUTE_UNROLL
        for (int j = 0; j < 8; ++j) t[j] = fmaxf(t[j], t[j + 8]);
        CUTE_UNROLL
        for (int j = 0; j < 4; ++j) t[j] = fmaxf(t[j], t[j + 4]);
        mx[r] = fmaxf(fmaxf(t[0], t[2]), fmaxf(t[1], t[3]));
      }
    }
    float off[2];
    CUTE_UNROLL
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffff, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffff, mx[r], 2));
      const float m = fmaxf(row_max[r], (mx[r] - kMagic) * c);
      row_max[r] = m;
      off[r] = fmaf(kMagic, c, m - kLog2_448);
    }
    CUTE_UNROLL
    for (int i = 0; i < size(acc); ++i) {
      const float x = fmaf(f[i], c, -off[(i / 2) % 2]);
      // The last 8 columns of every 8 kPolyPeriod (sage::kPolyKeys) on the FMA pipe, the rest
      // on the MUFU.
      constexpr int kPeriod = vgen::sage::kPolyPeriod > 0 ? vgen::sage::kPolyPeriod : 1;
      const bool poly = vgen::sage::kPolyPeriod > 0 && (i / 4) % kPeriod == kPeriod - 1;
      acc(i) = __float_as_int(poly ? exp2_poly(x) : exp2_approx(x));
    }
  };
  // The weights to e4m3, in the A operand's register order (the keys of V^T are permuted to
  // match: vt_position).
  auto to_p = [&](auto const& acc) {
    auto w = [&](int i) { return __int_as_float(acc(i)); };
    CUTE_UNROLL
    for (int kk = 0; kk < kKSteps; ++kk)
      CUTE_UNROLL
      for (int j = 0; j < 4; ++j) {
        const int base = 16 * kk + 8 * (j / 2) + 2 * (j % 2);
        p_regs[4 * kk + j] = e4m3x4(w(base), w(base + 1), w(base + 4), w(base + 5));
      }
  };
  // The second level: O = O * 2^(o_max - t_max) + T (O then relative to T's maxima).
  auto fold = [&]() {
    float g[2];
    CUTE_UNROLL
    for (int r = 0; r < 2; ++r) {
      g[r] = o_max[r] == -INFINITY ? 0.f : exp2_approx(o_max[r] - t_max[r]);
      o_max[r] = t_max[r];
    }
    CUTE_UNROLL
    for (int i = 0; i < size(tOrO); ++i) tOrO(i) = fmaf(tOrO(i), g[(i / 2) % 2], tOrT(i));
  };
  // Before P(j) V(j) goes into T (P(j) in p_regs, row_max block j's running max, T's earlier
  // products done): a span's first block folds T into O (none before block 0) and starts T
  // afresh; a later block of the span moves T's rows to block j's maximum where it rose, which
  // after the first blocks is rare, so that a warp whose rows all kept their maxima skips it.
  // Folding once every kFoldSpan blocks, not every block, takes ~3/4 of the fold's FFMAs out of
  // the softmax's issue slots. Returns whether P(j) V(j) starts T afresh.
  auto prepare_t = [&](int j) {
    bool fresh = j % T::kFoldSpan == 0;
    if (fresh) {
      if (j > 0) fold();
    } else if (__any_sync(0xffffffff, t_max[0] != row_max[0] || t_max[1] != row_max[1])) {
      float f[2];
      CUTE_UNROLL
      for (int r = 0; r < 2; ++r) f[r] = exp2_approx(t_max[r] - row_max[r]);
      CUTE_UNROLL
      for (int i = 0; i < size(tOrT); ++i) tOrT(i) *= f[(i / 2) % 2];
    }
    t_max[0] = row_max[0];
    t_max[1] = row_max[1];
    return fresh;
  };

  float k_scale_next = 0.f;
  FragS tSrS = partition_fragment_C(mma_qk, Shape<_64, Int<kBlockN>>{});  // S, every block's
  Barrier::wait(&ss.bar_q, 0);
  {
    const float k_scale_n = __ldg(k_scale);
    k_scale_next = n_blocks > 1 ? __ldg(k_scale + 1) : 0.f;
    Barrier::wait(&ss.full_k[0], 0);
    preset(tSrS);
    gemm_qk(tSrS, 0);
    warpgroup_wait<0>();
    warpgroup_fence_operand(tSrS);
    release(&ss.empty_k[0]);
    if (n_blocks == 1) softmax(tSrS, 0, k_scale_n, cute::true_type{});
    else softmax(tSrS, 0, k_scale_n, cute::false_type{});
    to_p(tSrS);
  }
  // The blocks after the first; the last one (masked) is a copy of its own, so that the others
  // carry no masking work. S(n) = Q K(n)^T is issued as soon as P(n - 1) is out of S's
  // registers, before T is made ready for block n - 1 (prepare_t), which then runs under it;
  // P(n - 1) V(n - 1) follows into T. (ptxas places the wait for that P V before the softmax
  // of block n, so it overlaps the other warpgroup's softmax, not this one's; a wait that
  // ptxas cannot hoist, a branch on a softmax result, measured no faster; two register sets for
  // P, so that no wait is needed, take 16 registers more than a consumer's 240: ptxas spills
  // ~1 KB a thread; with O in shared memory instead, to make room, ptxas put the second set in
  // the first's registers and the kernel ran 5-8% slower and failed its tests, 2026-12-03.)
  // At the top of block n: P(n - 1) in p_regs, row_max block n - 1's, T's
  // products up to block n - 2 done.
  auto block = [&](int n, auto last) {
    const int s = n % kStages, sp = (n - 1) % kStages;
    // Block n's key scale was loaded a block ahead; n + 1's is loaded now.
    const float k_scale_n = k_scale_next;
    k_scale_next = n + 1 < n_blocks ? __ldg(k_scale + n + 1) : 0.f;
    preset(tSrS);
    Barrier::wait(&ss.full_k[s], (n / kStages) & 1);
    gemm_qk(tSrS, s);
    const bool fresh = prepare_t(n - 1);  // under S(n)
    Barrier::wait(&ss.full_v[sp], ((n - 1) / kStages) & 1);
    gemm_pv(sp, fresh);
    warpgroup_wait<1>();
    warpgroup_fence_operand(tSrS);
    release(&ss.empty_k[s]);
    softmax(tSrS, n, k_scale_n, last);
    warpgroup_wait<0>();
    warpgroup_fence_operand(tOrT);
    release(&ss.empty_v[sp]);
    to_p(tSrS);
  };
  for (int n = 1; n < n_blocks - 1; ++n) block(n, cute::false_type{});
  if (n_blocks > 1) block(n_blocks - 1, cute::true_type{});
  {
    const int s = (n_blocks - 1) % kStages;
    const bool fresh = prepare_t(n_blocks - 1);
    Barrier::wait(&ss.full_v[s], ((n_blocks - 1) / kStages) & 1);
    gemm_pv(s, fresh);
    warpgroup_wait<0>();
    warpgroup_fence_operand(tOrT);
    release(&ss.empty_v[s]);
    fold();
  }

  // ---- epilogue: O * scale_v / l, bf16, straight to global memory ----
  // l is column 128 of O: values 64 (row lane / 4) and 66 (row + 8) of the quad's first thread.
  float inv[2];
  CUTE_UNROLL
  for (int r = 0; r < 2; ++r) {
    const float l = __shfl_sync(0xffffffff, tOrO(64 + 2 * r), lane & ~3);
    inv[r] = l > 0.f ? 1.f / l : 0.f;
  }
  const float* v_scale = p.v_scale + bh * kHeadDim;
  const int row0 = m_block * kBlockM + wg * 64 + warp_in_wg * 16 + lane / 4;
  cutlass::bfloat16_t* out = p.o + int64_t(batch) * p.o_stride_b + int64_t(head) * p.o_stride_h;
  CUTE_UNROLL
  for (int i = 0; i < 4 * (kHeadDim / 8); i += 4) {
    const int col = 8 * (i / 4) + quad_col;
    const float2 sv = *reinterpret_cast<const float2*>(v_scale + col);
    CUTE_UNROLL
    for (int r = 0; r < 2; ++r) {
      const int row = row0 + 8 * r;
      if (row < p.seq_q)
        *reinterpret_cast<__nv_bfloat162*>(out + int64_t(row) * p.o_stride_s + col) =
            __floats2bfloat162_rn(tOrO(i + 2 * r) * sv.x * inv[r], tOrO(i + 2 * r + 1) * sv.y * inv[r]);
    }
  }
#endif
}

}  // namespace vgen_sage90
