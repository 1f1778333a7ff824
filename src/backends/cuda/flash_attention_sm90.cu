// Host side of vgen's Hopper flash-attention kernel: input checks, TMA descriptors, launch.
#include "backends/cuda/flash_attention_sm90.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "backends/cuda/cuda_common.h"
#include "backends/cuda/flash_attention_sm90.cuh"

namespace vgen::cuda {
namespace {

namespace fa90 = ::vgen_fa90;
using cute::Int;
using cute::_1;

// Key blocks of 192 at head dim 128, measured on an H200 at S=32760 H=12 and S=75600 H=40:
// 645 / 652 TFLOP/s, against 626 / 615 with 128, 558 / 560 with 160 and 485 / 483 with 176
// (160 and 176 split into narrower wgmma instructions).
using kTraits128 = fa90::Traits<128, 192, 2>;
using kTraits64 = fa90::Traits<64, 128, 2>;

bool built_for_sm90a() { return has_sm90a_code(reinterpret_cast<const void*>(fa90::forward_kernel<kTraits128>)); }

template <class T>
typename T::GTensor global_view(const Tensor& t) {
  // [B, H, S, D] -> (S, D, H, B) as TMA addresses it. A dimension of size 1 is never stepped
  // along, but TMA wants every stride a multiple of 16 bytes: give it the extent of the
  // dimensions inside it.
  int64_t extent = T::kHeadDim;
  int64_t stride[3];
  for (int d : {2, 1, 0}) {
    stride[d] = t.size(d) > 1 ? t.strides()[d] : (extent + 7) / 8 * 8;
    extent = std::max(extent, t.size(d) * stride[d]);
  }
  return cute::make_tensor(cute::make_gmem_ptr(static_cast<typename T::Element const*>(t.raw_data())),
                           cute::make_shape(static_cast<int32_t>(t.size(2)), Int<T::kHeadDim>{},
                                            static_cast<int32_t>(t.size(1)), static_cast<int32_t>(t.size(0))),
                           cute::make_stride(stride[2], _1{}, stride[1], stride[0]));
}

// The tail's split (flash_attention_sm90.cuh): the tiles past the last multiple of the SM count
// (one CTA an SM) are split into as many key ranges as fill the SMs, at most kMaxSplits, each at
// least kMinSplitBlocks key blocks long. Splitting pays where that tail is at most half the SMs.
// At S=32760, 12 heads (Wan2.1 1.3B at 480x832x81) the 3072 tiles leave 36 on 132 SMs: 3 ranges
// each, and the last wave takes a third of a tile's time instead of a whole one. Measured on an
// H200 in one call, alternating: that 1.3B forward took 0.4412 / 0.4416 s against 0.4445 / 0.4432
// s unsplit; at S=75600, 40 heads (12 tiles left, 11 ranges each) the kernel was within noise.
constexpr int kMaxSplits = 16;
constexpr int kMinSplitBlocks = 2;

struct TileSplit {
  int64_t whole_tiles = 0;  // tiles [0, whole_tiles) in one CTA each
  int splits = 1;           // CTAs of each later tile
};

TileSplit tile_split(int64_t tiles, int64_t n_blocks, int sms) {
  const int64_t tail = tiles % sms;
  const int64_t splits = tail == 0 ? 1 : std::min<int64_t>({sms / tail, n_blocks / kMinSplitBlocks, kMaxSplits});
  if (splits < 2) return {tiles, 1};
  return {tiles - tail, static_cast<int>(splits)};
}

template <class T>
void launch(const Tensor& q, const Tensor& k, const Tensor& v, float scale, const Tensor& out) {
  const int64_t m_blocks = (q.size(2) + T::kBlockM - 1) / T::kBlockM;
  const int64_t n_blocks = (k.size(2) + T::kBlockN - 1) / T::kBlockN;
  const int64_t tiles = m_blocks * q.size(1) * q.size(0);
  const TileSplit split = tile_split(tiles, n_blocks, device_properties().multiProcessorCount);
  const int64_t split_tiles = tiles - split.whole_tiles;
  const int64_t parts = split_tiles * split.splits;
  // The split tiles' workspace (float32 words): unnormalised O, (max, sum) a row, the counters.
  const int64_t o_words = parts * T::kBlockM * T::kHeadDim, ml_words = parts * T::kBlockM * 2;
  Tensor work;
  float* part_o = nullptr;
  if (parts > 0) {
    work = Tensor::empty(Shape{o_words + ml_words + split_tiles}, DType::F32, q.device());
    part_o = static_cast<float*>(work.raw_data());
    check(cudaMemsetAsync(part_o + o_words + ml_words, 0, split_tiles * sizeof(int32_t), stream()),
          "flash attention: clear the split tiles' counters");
  }
  fa90::Params<T> p{
      cute::make_tma_copy(cute::SM90_TMA_LOAD{}, global_view<T>(q), typename T::SmemLayoutQ{},
                    cute::Shape<Int<T::kBlockM>, Int<T::kHeadDim>>{}, _1{}),
      cute::make_tma_copy(cute::SM90_TMA_LOAD{}, global_view<T>(k), cute::take<0, 2>(typename T::SmemLayoutK{}),
                    cute::Shape<Int<T::kBlockN>, Int<T::kHeadDim>>{}, _1{}),
      cute::make_tma_copy(cute::SM90_TMA_LOAD{}, global_view<T>(v), cute::take<0, 2>(typename T::SmemLayoutV{}),
                    cute::Shape<Int<T::kBlockN>, Int<T::kHeadDim>>{}, _1{}),
      static_cast<cutlass::bfloat16_t*>(out.raw_data()),
      out.strides()[2],
      out.strides()[1],
      out.strides()[0],
      static_cast<int32_t>(q.size(2)),
      static_cast<int32_t>(k.size(2)),
      static_cast<int32_t>(q.size(1)),
      static_cast<int32_t>(q.size(0)),
      scale * 1.4426950408889634f,
      static_cast<int32_t>(split.whole_tiles),
      split.splits,
      part_o,
      parts > 0 ? reinterpret_cast<float2*>(part_o + o_words) : nullptr,
      parts > 0 ? reinterpret_cast<int32_t*>(part_o + o_words + ml_words) : nullptr,
  };
  auto* kernel = fa90::forward_kernel<T>;
  allow_dynamic_shared_memory(reinterpret_cast<const void*>(kernel), T::kSmemBytes, "flash attention");
  kernel<<<static_cast<unsigned>(split.whole_tiles + parts), T::kThreads, T::kSmemBytes, stream()>>>(p);
  check_launch("flash attention", q, k);
}

}  // namespace

std::string flash_attention_sm90_rejects(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias) {
  const cudaDeviceProp& prop = device_properties();
  if (prop.major != 9 || prop.minor != 0) return fmt::format("needs an sm_90 GPU (this is sm_{}{})", prop.major, prop.minor);
  if (!built_for_sm90a()) return "this build has no sm_90a code (VGEN_CUDA_ARCHS without 90a)";
  if (bias.defined()) return "takes no bias";
  for (const Tensor* t : {&q, &k, &v}) {
    if (t->dim() != 4) return "needs [B, H, S, D] inputs";
    if (t->dtype() != DType::BF16) return "takes BF16 inputs only";
    if (t->strides()[3] != 1) return "needs unit stride along the head dim";
    for (int d = 0; d < 3; ++d)
      if (t->strides()[d] % 8 != 0 && t->size(d) > 1) return "needs strides that are multiples of 8 elements (TMA)";
    if (!aligned16(*t)) return "needs 16-byte aligned buffers (TMA)";
    if (t->size(0) != q.size(0) || t->size(1) != q.size(1)) return "needs equal batch and head counts";
    if (t->size(2) > INT32_MAX || t->size(1) > 65535 || t->size(0) > 65535) return "sizes out of range";
  }
  // One CTA a tile of kBlockM queries (a few more for the split tail): the count must fit an int.
  static_assert(kTraits128::kBlockM == kTraits64::kBlockM);
  constexpr int64_t kBlockM = kTraits128::kBlockM;
  if ((q.size(2) + kBlockM - 1) / kBlockM * q.size(1) * q.size(0) > INT32_MAX / 2) return "sizes out of range";
  const int64_t D = q.size(3);
  if (D != 64 && D != 128) return fmt::format("takes head dim 64 or 128 (not {})", D);
  if (k.size(3) != D || v.size(3) != D) return "needs equal head dims for q, k and v";
  if (k.size(2) != v.size(2) || k.size(2) == 0) return "needs equal, non-zero key and value lengths";
  return "";
}

void flash_attention_sm90(const Tensor& q, const Tensor& k, const Tensor& v, float scale, const Tensor& out) {
  VGEN_CHECK(out.dtype() == DType::BF16 && out.strides()[3] == 1 && out.shape() == q.shape(),
             "flash attention: out {} must be BF16 [B, H, Sq, D] with unit stride along D", out.str());
  if (q.numel() == 0) return;
  if (q.size(3) == 128) launch<kTraits128>(q, k, v, scale, out);
  else launch<kTraits64>(q, k, v, scale, out);
}

}  // namespace vgen::cuda
