// Flash-attention forward for Hopper (sm_90a), bf16 in and out, float32 softmax and accumulators.
//
// One CTA computes a 128-row tile of queries of one (batch, head) against all keys (a range of
// them for the split tail tiles, below):
//   - warpgroup 0 is the producer: one thread issues TMA loads of the Q tile (once) and of the
//     K and V tiles into a ring of kStages shared-memory stages, each guarded by a "full"
//     mbarrier (transaction bytes) and an "empty" one (the 8 consumer warps release it);
//     the producer gives its registers back (setmaxnreg.dec) to the consumers.
//   - warpgroups 1 and 2 are consumers, 64 query rows each: S = Q K^T with wgmma from shared
//     memory, online softmax in registers with exp2 and the scale folded into one FFMA,
//     P rounded to bf16 and kept in registers as the A operand of O += P V (wgmma RS, V
//     read transposed from shared memory). Within a warpgroup the GEMMs of consecutive
//     blocks overlap the softmax: S(j+1) = Q K(j+1)^T and O += P(j) V(j) are issued before
//     the softmax of block j+1 runs, so the tensor cores work while the softmax does.
//   - the two consumer warpgroups take turns at the tensor cores (named barriers), so that
//     one's softmax runs while the other's GEMMs do ("ping-pong").
// Keys past the end are masked to -inf in the last block; query rows past the end are read as
// zeros by TMA and not written.
//
// The grid is one CTA a tile, in order (m_block fastest, then head, then batch), but for the
// tiles of the last, partly filled wave (the tiles past the largest multiple of the SM count):
// each of those is split along the keys into `splits` ranges, one CTA each, so that the wave
// that would have kept a few SMs busy for a whole tile's time spreads over all of them for a
// fraction of it. A split CTA writes its unnormalised O and its rows' max and sum (float32) to a
// workspace; the last of a tile's CTAs to finish (a counter) combines them and writes the tile.
//
// The math matches FlashAttention's: P is rounded to bf16 before P V, as cuDNN and
// FlashAttention-3 do; the row sums are accumulated from the unrounded float32 P.
#pragma once

#include <cuda_bf16.h>

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/numeric_types.h>

#include "backends/cuda/sm90_device.cuh"

// Outside namespace vgen, whose Shape and Tensor would hide CuTe's.
namespace vgen_fa90 {

using namespace cute;
using vgen_sm90::exp2_approx;
using vgen_sm90::named_arrive;
using vgen_sm90::named_sync;

template <int kHeadDim_, int kBlockN_, int kStages_>
struct Traits {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = 128;  // two consumer warpgroups x 64 rows
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kStages = kStages_;
  static constexpr int kThreads = 384;  // producer warpgroup + two consumer warpgroups
  static constexpr int kConsumerWarps = 8;
  using Element = cutlass::bfloat16_t;

  using SmemLayoutAtom = GMMA::Layout_K_SW128_Atom<Element>;
  using SmemLayoutQ = decltype(tile_to_shape(SmemLayoutAtom{}, Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  using SmemLayoutK =
      decltype(tile_to_shape(SmemLayoutAtom{}, Shape<Int<kBlockN>, Int<kHeadDim>, Int<kStages>>{}));
  using SmemLayoutV = SmemLayoutK;
  // V seen as the B operand of O = P V: (head dim, keys, stage), head dim contiguous.
  using SmemLayoutVt = decltype(composition(
      SmemLayoutV{},
      make_ordered_layout(make_shape(Int<kHeadDim>{}, Int<kBlockN>{}, Int<kStages>{}), Step<_2, _1, _3>{})));

  using TiledMmaQK = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, float, Shape<_64, Int<kBlockN>, Int<kHeadDim>>>()));
  using TiledMmaPV = decltype(make_tiled_mma(
      GMMA::rs_op_selector<Element, Element, float, Shape<_64, Int<kHeadDim>, Int<kBlockN>>, GMMA::Major::K,
                           GMMA::Major::MN>()));

  // Global tensors as TMA sees them: (seq, head dim, heads, batch), head dim contiguous.
  using GShape = Shape<int32_t, Int<kHeadDim>, int32_t, int32_t>;
  using GStride = Stride<int64_t, _1, int64_t, int64_t>;
  using GTensor = decltype(make_tensor(make_gmem_ptr(static_cast<Element const*>(nullptr)), GShape{}, GStride{}));
  using TmaQ = decltype(make_tma_copy(SM90_TMA_LOAD{}, GTensor{}, SmemLayoutQ{},
                                      Shape<Int<kBlockM>, Int<kHeadDim>>{}, _1{}));
  using TmaKV = decltype(make_tma_copy(SM90_TMA_LOAD{}, GTensor{}, take<0, 2>(SmemLayoutK{}),
                                       Shape<Int<kBlockN>, Int<kHeadDim>>{}, _1{}));

  struct SharedStorage {
    cute::array_aligned<Element, cosize_v<SmemLayoutQ>, 1024> q;
    cute::array_aligned<Element, cosize_v<SmemLayoutK>, 1024> k;
    cute::array_aligned<Element, cosize_v<SmemLayoutV>, 1024> v;
    uint64_t bar_q;
    uint64_t full_k[kStages], full_v[kStages], empty_k[kStages], empty_v[kStages];
    int combine;  // split tiles: whether this CTA is the tile's last (it combines the parts)
  };
  static constexpr int kSmemBytes = int(sizeof(SharedStorage)) + 1024;  // + alignment slack
  static constexpr uint32_t kQBytes = kBlockM * kHeadDim * sizeof(Element);
  static constexpr uint32_t kKVBytes = kBlockN * kHeadDim * sizeof(Element);
};

template <class T>
struct Params {
  typename T::TmaQ tma_q;
  typename T::TmaKV tma_k;
  typename T::TmaKV tma_v;
  cutlass::bfloat16_t* o;
  int64_t o_stride_s, o_stride_h, o_stride_b;  // elements; head dim contiguous
  int32_t seq_q, seq_kv, heads, batch;
  float scale_log2;  // softmax scale * log2(e)
  // Tiles [0, whole_tiles) take a CTA each; each later tile takes `splits` CTAs (key ranges).
  int32_t whole_tiles, splits;
  float* part_o;      // split tiles: [split tile, split, kBlockM, kHeadDim] unnormalised O
  float2* part_ml;    // [split tile, split, kBlockM]: (row max of the raw scores, row sum)
  int32_t* arrived;   // [split tile]: CTAs done, zero before the launch
};

// The accumulator layout of m64nN wgmma atoms tiling 64 x kBlockN, ((2, 2, N/8), 1, atoms),
// seen as the A operand of an m64nXk16 wgmma over K = kBlockN: ((2, 2, 2), 1, (N/16, atoms)),
// whose last mode, indexed by k, walks the 16-column chunks in order.
template <class AccLayout>
__device__ __forceinline__ auto acc_as_a_operand(AccLayout acc) {
  static_assert(decltype(size<1>(acc))::value == 1);
  auto split = logical_divide(layout<0, 2>(acc), Layout<_2>{});  // (2, N/16)
  return make_layout(make_layout(layout<0, 0>(acc), layout<0, 1>(acc), layout<0>(split)), layout<1>(acc),
                     make_layout(layout<1>(split), layout<2>(acc)));
}

template <class T>
__global__ void __launch_bounds__(T::kThreads, 1) forward_kernel(__grid_constant__ const Params<T> p) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Element = typename T::Element;
  constexpr int kBlockM = T::kBlockM, kBlockN = T::kBlockN, kHeadDim = T::kHeadDim, kStages = T::kStages;
  using Barrier = cutlass::arch::ClusterBarrier;
  using TxBarrier = cutlass::arch::ClusterTransactionBarrier;

  extern __shared__ char smem_raw[];
  auto& ss = *reinterpret_cast<typename T::SharedStorage*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) &
                                                           ~uintptr_t(1023));
  const int warp_group = threadIdx.x / 128;
  const int wg_thread = threadIdx.x % 128;
  const int lane = threadIdx.x % 32;
  const int n_blocks = (p.seq_kv + kBlockN - 1) / kBlockN;
  // This CTA's tile and its key blocks [n_begin, n_begin + n_count); split < 0: the whole tile.
  int tile = blockIdx.x, split = -1, n_begin = 0, n_count = n_blocks;
  if (tile >= p.whole_tiles) {
    const int t = tile - p.whole_tiles;
    tile = p.whole_tiles + t / p.splits;
    split = t % p.splits;
    n_begin = split * n_blocks / p.splits;
    n_count = (split + 1) * n_blocks / p.splits - n_begin;
  }
  const int m_blocks = (p.seq_q + kBlockM - 1) / kBlockM;
  const int m_block = tile % m_blocks, head = tile / m_blocks % p.heads, batch = tile / m_blocks / p.heads;

  if (threadIdx.x == 0) {
    Barrier::init(&ss.bar_q, 1);
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
  Tensor sV = make_tensor(make_smem_ptr(ss.v.data()), typename T::SmemLayoutV{});
  Tensor sVt = make_tensor(make_smem_ptr(ss.v.data()), typename T::SmemLayoutVt{});

  if (warp_group == 0) {
    // ---- producer ----
    cutlass::arch::warpgroup_reg_dealloc<24>();
    if (wg_thread == 0) {
      cute::prefetch_tma_descriptor(p.tma_q.get_tma_descriptor());
      cute::prefetch_tma_descriptor(p.tma_k.get_tma_descriptor());
      cute::prefetch_tma_descriptor(p.tma_v.get_tma_descriptor());
      auto gshape = make_shape(p.seq_q, Int<kHeadDim>{}, p.heads, p.batch);
      auto kvshape = make_shape(p.seq_kv, Int<kHeadDim>{}, p.heads, p.batch);
      Tensor mQ = p.tma_q.get_tma_tensor(gshape);
      Tensor mK = p.tma_k.get_tma_tensor(kvshape);
      Tensor mV = p.tma_v.get_tma_tensor(kvshape);
      Tensor gQ = local_tile(mQ(_, _, head, batch), Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(m_block, 0));
      Tensor gK = local_tile(mK(_, _, head, batch), Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(_, 0));
      Tensor gV = local_tile(mV(_, _, head, batch), Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(_, 0));
      auto cq = p.tma_q.get_slice(Int<0>{});
      auto ck = p.tma_k.get_slice(Int<0>{});
      auto cv = p.tma_v.get_slice(Int<0>{});
      Tensor tQg = cq.partition_S(gQ);
      Tensor tQs = cq.partition_D(sQ);
      Tensor tKg = ck.partition_S(gK);
      Tensor tKs = ck.partition_D(sK);
      Tensor tVg = cv.partition_S(gV);
      Tensor tVs = cv.partition_D(sV);

      TxBarrier::arrive_and_expect_tx(&ss.bar_q, T::kQBytes);
      copy(p.tma_q.with(ss.bar_q), tQg, tQs);
      for (int j = 0; j < n_count; ++j) {
        const int n = n_begin + j, s = j % kStages, use = j / kStages;
        if (use > 0) Barrier::wait(&ss.empty_k[s], (use - 1) & 1);
        TxBarrier::arrive_and_expect_tx(&ss.full_k[s], T::kKVBytes);
        copy(p.tma_k.with(ss.full_k[s]), tKg(_, _, _, n), tKs(_, _, _, s));
        if (use > 0) Barrier::wait(&ss.empty_v[s], (use - 1) & 1);
        TxBarrier::arrive_and_expect_tx(&ss.full_v[s], T::kKVBytes);
        copy(p.tma_v.with(ss.full_v[s]), tVg(_, _, _, n), tVs(_, _, _, s));
      }
    }
    return;
  }

  // ---- consumers ----
  cutlass::arch::warpgroup_reg_alloc<240>();
  const int wg = warp_group - 1;  // 0 or 1: query rows [64 wg, 64 wg + 64) of the tile
  typename T::TiledMmaQK mma_qk;
  typename T::TiledMmaPV mma_pv;
  auto thr_qk = mma_qk.get_thread_slice(wg_thread);
  auto thr_pv = mma_pv.get_thread_slice(wg_thread);
  Tensor sQw = local_tile(sQ, Shape<_64, Int<kHeadDim>>{}, make_coord(wg, 0));
  Tensor tSrQ = thr_qk.partition_fragment_A(sQw);  // (MMA, MMA_M, MMA_K)
  Tensor tSrK = thr_qk.partition_fragment_B(sK);   // (MMA, MMA_N, MMA_K, stage)
  Tensor tOrV = thr_pv.partition_fragment_B(sVt);  // (MMA, MMA_N, MMA_K, stage)
  Tensor tOrO = partition_fragment_C(mma_pv, Shape<_64, Int<kHeadDim>>{});
  using FragS = decltype(partition_fragment_C(mma_qk, Shape<_64, Int<kBlockN>>{}));
  Tensor tOrPbuf = make_tensor<Element>(typename FragS::layout_type{});
  Tensor tOrP = make_tensor(tOrPbuf.data(), acc_as_a_operand(tOrPbuf.layout()));
  clear(tOrO);

  const int quad_col = 2 * (lane % 4);
  const float sl2 = p.scale_log2;
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.f, 0.f};

  auto release = [&](uint64_t* bar) {
    __syncwarp();
    if (lane == 0) Barrier::arrive(bar);
  };
  auto gemm_qk = [&](auto& acc, int stage) {
    warpgroup_fence_operand(acc);
    warpgroup_arrive();
    mma_qk.accumulate_ = GMMA::ScaleOut::Zero;
    CUTE_UNROLL
    for (int k = 0; k < size<2>(tSrQ); ++k) {
      cute::gemm(mma_qk, tSrQ(_, _, k), tSrK(_, _, k, stage), acc);
      mma_qk.accumulate_ = GMMA::ScaleOut::One;
    }
    warpgroup_commit_batch();
  };
  auto gemm_pv = [&](int stage) {
    warpgroup_fence_operand(tOrP);
    warpgroup_fence_operand(tOrO);
    warpgroup_arrive();
    CUTE_UNROLL
    for (int k = 0; k < size<2>(tOrP); ++k) cute::gemm(mma_pv, tOrP(_, _, k), tOrV(_, _, k, stage), tOrO);
    warpgroup_commit_batch();
  };
  // Value i of an accumulator fragment is row (i / 2) % 2 (0: lane / 4, 1: lane / 4 + 8 of
  // the warp's 16 rows) and column 8 (i / 4) + 2 (lane % 4) + i % 2.
  auto mask_tail = [&](auto& acc, int n) {
    const int limit = p.seq_kv - n * kBlockN - quad_col;
    CUTE_UNROLL
    for (int i = 0; i < size(acc); ++i)
      if (8 * (i / 4) + (i % 2) >= limit) acc(i) = -INFINITY;
  };
  // Online softmax of one block: updates the running max, turns scores into exp2 weights in
  // place, adds them to the (per-thread partial) row sums; returns the old-to-new rescale.
  auto softmax = [&](auto& acc, float (&corr)[2]) {
    float mx[2] = {row_max[0], row_max[1]};
    CUTE_UNROLL
    for (int i = 0; i < size(acc); ++i) mx[(i / 2) % 2] = fmaxf(mx[(i / 2) % 2], acc(i));
    CUTE_UNROLL
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffff, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffff, mx[r], 2));
      corr[r] = row_max[r] == -INFINITY ? 0.f : exp2_approx((row_max[r] - mx[r]) * sl2);
      row_max[r] = mx[r];
      row_sum[r] *= corr[r];
    }
    const float ms[2] = {mx[0] * sl2, mx[1] * sl2};
    CUTE_UNROLL
    for (int i = 0; i < size(acc); ++i) {
      const int r = (i / 2) % 2;
      acc(i) = exp2_approx(fmaf(acc(i), sl2, -ms[r]));
      row_sum[r] += acc(i);
    }
  };
  auto to_p = [&](auto const& acc) {
    auto* dst = reinterpret_cast<__nv_bfloat162*>(raw_pointer_cast(tOrPbuf.data()));
    CUTE_UNROLL
    for (int i = 0; i < size(acc) / 2; ++i) dst[i] = __floats2bfloat162_rn(acc(2 * i), acc(2 * i + 1));
  };
  // A warp whose rows all kept their maxima (corr exactly 1, which after the first blocks is
  // most blocks) skips the multiplications, which would leave O as it is.
  auto rescale_o = [&](const float (&corr)[2]) {
    if (!__any_sync(0xffffffff, corr[0] != 1.f || corr[1] != 1.f)) return;
    CUTE_UNROLL
    for (int i = 0; i < size(tOrO); ++i) tOrO(i) *= corr[(i / 2) % 2];
  };

  // Ping-pong: warpgroup 1 starts; each warpgroup waits for its turn before issuing its GEMMs
  // and hands the turn over once they are issued.
  const int my_bar = 1 + wg, other_bar = 2 - wg;
  if (wg == 1) named_arrive(other_bar);

  float corr_last[2];  // the rescale of the last block's softmax
  Barrier::wait(&ss.bar_q, 0);
  {
    FragS tSrS = partition_fragment_C(mma_qk, Shape<_64, Int<kBlockN>>{});
    Barrier::wait(&ss.full_k[0], 0);
    named_sync(my_bar);
    gemm_qk(tSrS, 0);
    named_arrive(other_bar);
    warpgroup_wait<0>();
    warpgroup_fence_operand(tSrS);
    release(&ss.empty_k[0]);
    if (n_count == 1) mask_tail(tSrS, n_begin);
    softmax(tSrS, corr_last);
    to_p(tSrS);
  }
  // Block j of the range after the first; `last` (a compile-time bool) masks the keys past the
  // end (a range's last block, which only the tile's last range has keys past the end in): the
  // loop body exists twice, so that the other blocks carry no masking work. S(n) = Q K(n)^T is
  // issued as soon as P(n - 1) is out of S's registers, and O's rescale by block n - 1's
  // correction runs under it, before O += P(n - 1) V(n - 1) (measured on an H200: 665 / 720
  // TFLOP/s at S=75600 H=40 / S=32760 H=12, against 647 / 717 with the rescale before both).
  auto block = [&](int j, auto last) {
    const int n = n_begin + j, s = j % kStages, sp = (j - 1) % kStages;
    FragS tSrS = partition_fragment_C(mma_qk, Shape<_64, Int<kBlockN>>{});
    Barrier::wait(&ss.full_k[s], (j / kStages) & 1);
    named_sync(my_bar);
    gemm_qk(tSrS, s);
    if (j >= 2) rescale_o(corr_last);  // O holds blocks up to j - 2 (none before j = 2)
    Barrier::wait(&ss.full_v[sp], ((j - 1) / kStages) & 1);
    gemm_pv(sp);
    named_arrive(other_bar);
    warpgroup_wait<1>();
    warpgroup_fence_operand(tSrS);
    release(&ss.empty_k[s]);
    if constexpr (decltype(last)::value) mask_tail(tSrS, n);
    softmax(tSrS, corr_last);
    warpgroup_wait<0>();
    warpgroup_fence_operand(tOrO);
    release(&ss.empty_v[sp]);
    to_p(tSrS);
  };
  for (int j = 1; j < n_count - 1; ++j) block(j, cute::false_type{});
  if (n_count > 1) block(n_count - 1, cute::true_type{});
  {
    const int s = (n_count - 1) % kStages;
    if (n_count >= 2) rescale_o(corr_last);
    Barrier::wait(&ss.full_v[s], ((n_count - 1) / kStages) & 1);
    named_sync(my_bar);
    gemm_pv(s);
    if (wg == 0) named_arrive(other_bar);  // warpgroup 1's last turn is the last one
    warpgroup_wait<0>();
    warpgroup_fence_operand(tOrO);
    release(&ss.empty_v[s]);
  }
  // Turns alternate 0, 1, 0, 1, ...: each warpgroup syncs n_count + 1 times on its barrier,
  // matched by warpgroup 1's opening arrive plus n_count arrives of 1 for barrier 1, and by
  // n_count + 1 arrives of 0 for barrier 2, so no arrive is left pending at exit.

  // ---- epilogue: O / l, bf16, straight to global memory ----
  float l[2];
  CUTE_UNROLL
  for (int r = 0; r < 2; ++r) {
    l[r] = row_sum[r];
    l[r] += __shfl_xor_sync(0xffffffff, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffff, l[r], 2);
  }
  const int warp_in_wg = wg_thread / 32;
  const int tile_row0 = wg * 64 + warp_in_wg * 16 + lane / 4;  // + 8 r: this thread's rows in the tile
  const int row0 = m_block * kBlockM + tile_row0;
  Element* out = p.o + int64_t(batch) * p.o_stride_b + int64_t(head) * p.o_stride_h;
  auto store = [&](int i, float a, float b) {  // O's columns i, i + 1 of this thread's fragment
    const int row = row0 + 8 * ((i / 2) % 2);
    if (row < p.seq_q)
      *reinterpret_cast<__nv_bfloat162*>(out + int64_t(row) * p.o_stride_s + 8 * (i / 4) + quad_col) =
          __floats2bfloat162_rn(a, b);
  };
  auto recip = [](float x) { return x > 0.f ? 1.f / x : 0.f; };  // of a row sum (0: no keys)
  if (split < 0) {
    const float inv[2] = {recip(l[0]), recip(l[1])};
    CUTE_UNROLL
    for (int i = 0; i < size(tOrO); i += 2) store(i, tOrO(i) * inv[(i / 2) % 2], tOrO(i + 1) * inv[(i / 2) % 2]);
    return;
  }

  // A split tile: this range's part to the workspace, each thread its own fragment's places.
  const int64_t part0 = int64_t(tile - p.whole_tiles) * p.splits;  // the tile's first part
  auto part_o = [&](int sp, int i) {
    return reinterpret_cast<float2*>(p.part_o + ((part0 + sp) * kBlockM + tile_row0 + 8 * ((i / 2) % 2)) * kHeadDim +
                                     8 * (i / 4) + quad_col);
  };
  auto part_ml = [&](int sp, int r) { return p.part_ml + (part0 + sp) * kBlockM + tile_row0 + 8 * r; };
  CUTE_UNROLL
  for (int i = 0; i < size(tOrO); i += 2) *part_o(split, i) = make_float2(tOrO(i), tOrO(i + 1));
  if (lane % 4 == 0) {
    CUTE_UNROLL
    for (int r = 0; r < 2; ++r) *part_ml(split, r) = make_float2(row_max[r], l[r]);
  }
  __threadfence();
  named_sync(3);  // the consumers' writes are done (and visible device-wide)
  if (threadIdx.x == 128) ss.combine = atomicAdd(p.arrived + (tile - p.whole_tiles), 1) == p.splits - 1;
  named_sync(3);
  if (!ss.combine) return;
  __threadfence();
  // The last CTA of the tile: O = sum_s w_s O_s / sum_s w_s l_s, w_s = 2^((m_s - max_s m_s) scale
  // log2 e), summed in the order of the ranges whichever CTA finishes last (the same bits every
  // run), its own part read back as the others are.
  float m[2] = {-INFINITY, -INFINITY}, sum[2] = {0.f, 0.f};
  for (int sp = 0; sp < p.splits; ++sp) {
    CUTE_UNROLL
    for (int r = 0; r < 2; ++r) m[r] = fmaxf(m[r], __ldcg(part_ml(sp, r)).x);
  }
  clear(tOrO);
  for (int sp = 0; sp < p.splits; ++sp) {
    float w[2];
    CUTE_UNROLL
    for (int r = 0; r < 2; ++r) {
      const float2 ml = __ldcg(part_ml(sp, r));
      w[r] = ml.x == -INFINITY ? 0.f : exp2_approx((ml.x - m[r]) * sl2);
      sum[r] += w[r] * ml.y;
    }
    CUTE_UNROLL
    for (int i = 0; i < size(tOrO); i += 2) {
      const float2 o = __ldcg(part_o(sp, i));
      tOrO(i) = fmaf(w[(i / 2) % 2], o.x, tOrO(i));
      tOrO(i + 1) = fmaf(w[(i / 2) % 2], o.y, tOrO(i + 1));
    }
  }
  const float inv[2] = {recip(sum[0]), recip(sum[1])};
  CUTE_UNROLL
  for (int i = 0; i < size(tOrO); i += 2) store(i, tOrO(i) * inv[(i / 2) % 2], tOrO(i + 1) * inv[(i / 2) % 2]);
#endif
}

}  // namespace vgen_fa90
