// Host side and instantiations of vgen's Hopper implicit-GEMM 3-D convolution (conv3d_sm90.h).
//
// The kernels are CUTLASS 3's: the sm90 conv CollectiveBuilder (TMA im2col loads of the NDHWC
// activations, TMA loads of the KTRSC filter, wgmma with float32 accumulation) under
// ConvUniversal, and the sm90 TMA epilogue with a per-output-channel bias (LinCombPerColBias;
// a null bias reads as zeros) storing bf16 NDHWC. CUTLASS 4.2 offers conv only with the
// non-persistent warp-specialized schedule (one producer and one consumer warp group), so the
// tiles are at most 128x128 or 64x256 (the accumulators of one warp group): a few variants,
// timed against each other and cuDNN by conv.cpp.
//
// GEMM view of the convolution: M = N * Do * Ho * Wo output positions, N = K output channels,
// K = C * T * R * S (the filter taps times the input channels, C innermost).
//
// What it is for: the Wan2.2 VAE decoder at 704x1280x121 (1.86 PFLOP of convolutions, chunked
// per latent frame) spends 26% each on 3x3x3 512->512 at 4x176x320 and 256->256 at 4x352x640
// (GEMM 225280x512x13824 and 901120x256x6912, 150 calls each), 16% on 1024->1024 at 2x88x160,
// 21% on the 1024->512 / 512->256 first convs of the last two blocks and 6% on the upsamplers'
// 1x2x2 phase convs (nn::UpsampleConv2d); conv_in (48 channels) stays with cuDNN, conv_out (12)
// runs vgen's direct kernel (conv3d_direct.h).
//
// The kernel body is compiled for sm_90a only (the __global__ wrapper below); other targets of
// VGEN_CUDA_ARCHS get an empty body, and conv3d_sm90_rejects() refuses to run there.
#include "backends/cuda/conv3d_sm90.h"

#include <cute/tensor.hpp>
#include <cutlass/kernel_hardware_info.hpp>
#include <cutlass/conv/collective/collective_builder.hpp>
#include <cutlass/conv/convnd_problem_shape.hpp>
#include <cutlass/conv/dispatch_policy.hpp>
#include <cutlass/conv/kernel/conv_universal.hpp>
#include <cutlass/epilogue/collective/collective_builder.hpp>
#include <cutlass/epilogue/fusion/operations.hpp>
#include <cutlass/util/packed_stride.hpp>

#include <algorithm>
#include <climits>
#include <utility>

#include "backends/cuda/cuda_common.h"

namespace vgen::cuda {
namespace {

using cute::Int;
using cute::Shape;
using Bf16 = cutlass::bfloat16_t;
using LayoutNDHWC = cutlass::layout::TensorNDHWC;
constexpr int kAlign = 8;  // elements in 16 bytes: TMA's alignment of every stride but the innermost

// Every variant's epilogue: the float32 accumulator plus the bias (per output channel, none reads
// as zero), bf16 NDHWC out, under the given epilogue schedule.
template <class TileShape, class ClusterShape, class Schedule>
using BiasEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
    cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, LayoutNDHWC, kAlign, Bf16, LayoutNDHWC, kAlign,
    Schedule, cutlass::epilogue::fusion::LinCombPerColBias<Bf16, float, Bf16, Bf16, float>>::CollectiveOp;

// As many main-loop stages as shared memory holds beside the epilogue's.
template <class Epilogue>
using AutoStages =
    cutlass::conv::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>;

// CUTLASS's sm90 implicit-GEMM fprop main loop: bf16 NDHWC activations and KTRSC filter, float32
// accumulation, `Stages` stages.
template <class TileShape, class ClusterShape, class Stages>
using FpropMainloop = typename cutlass::conv::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, cutlass::conv::Operator::kFprop, Bf16, LayoutNDHWC, kAlign,
    Bf16, LayoutNDHWC, kAlign, float, TileShape, ClusterShape, Stages,
    cutlass::conv::KernelImplicitTmaWarpSpecializedSm90>::CollectiveOp;

// One CUTLASS fprop kernel for a CTA tile (M output positions, N output channels, K reduction),
// a cluster shape, a pipeline depth (0: as many stages as shared memory holds) and the CTAs
// that are to share an SM (2: registers capped at 128 a thread, so that one CTA's epilogue
// overlaps the other's main loop, as the persistent schedules CUTLASS lacks for conv would).
template <int kM, int kN, int kK, int kClusterM, int kStages = 0, int kMinBlocks = 1>
struct ConvSm90 {
  using TileShape = Shape<Int<kM>, Int<kN>, Shape<Int<kK>>>;
  using ClusterShape = Shape<Int<kClusterM>, cute::_1, cute::_1>;
  using Epilogue = BiasEpilogue<TileShape, ClusterShape, cutlass::epilogue::TmaWarpSpecialized>;
  using Mainloop = FpropMainloop<TileShape, ClusterShape,
                                 cute::conditional_t<kStages == 0, AutoStages<Epilogue>,
                                                     cutlass::conv::collective::StageCount<kStages>>>;
  using ProblemShape = cutlass::conv::ConvProblemShape<cutlass::conv::Operator::kFprop, Mainloop::NumSpatialDimensions>;
  using Kernel = cutlass::conv::kernel::ConvUniversal<ProblemShape, Mainloop, Epilogue, void>;
  static constexpr int kClusterSize = kClusterM;
  static constexpr int kBlocksPerSm = kMinBlocks;
};

// CUTLASS's non-persistent warp-specialized conv kernel (GemmUniversal in
// cutlass/gemm/kernel/sm90_gemm_tma_warpspecialized.hpp, BSD-3-Clause, NVIDIA) with two consumer
// warp groups instead of one, as CUTLASS's cooperative GEMM schedule has: each computes half
// of the CTA tile's rows (a 2x1 warp-group TiledMma), so a CTA holds a 128x256 tile, twice the
// accumulators one warp group can, and the load warp group gives its registers to them
// (setmaxnreg 40 / 232). CUTLASS 4.2 refuses the cooperative schedule for conv in its dispatch
// policy only; its conv main loop and TMA pipeline take any number of consumer warp groups.
// Only operator() differs from the base: everything else (params, TMA descriptors, grid) is the
// base's, whose MaxThreadsPerBlock already counts the TiledMma's 256 threads.
template <class Base>
struct CooperativeConvKernel : Base {
  using typename Base::CollectiveEpilogue;
  using typename Base::CollectiveMainloop;
  using typename Base::ClusterShape;
  using typename Base::Params;
  using typename Base::SharedStorage;
  using typename Base::TiledMma;
  using typename Base::TileShape;
  static constexpr uint32_t kMmaThreads = cute::size(TiledMma{});
  static_assert(kMmaThreads == 2 * cutlass::NumThreadsPerWarpGroup, "two consumer warp groups");
  static constexpr uint32_t kLoadRegisters = 40;
  static constexpr uint32_t kMmaRegisters = 232;

  CUTLASS_DEVICE
  void operator()(Params const& params, char* smem_buf) {
    using namespace cute;
    using cutlass::NumThreadsPerWarp;
    using cutlass::NumThreadsPerWarpGroup;
    using cutlass::NumWarpsPerWarpGroup;
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    enum class WarpGroupRole { Producer = 0, Consumer0 = 1, Consumer1 = 2 };
    SharedStorage& shared_storage = *reinterpret_cast<SharedStorage*>(smem_buf);
    const int thread_idx = int(threadIdx.x);
    const int lane_idx = cutlass::canonical_lane_idx();
    const int warp_idx = cutlass::canonical_warp_idx_sync();
    const int warp_idx_in_warp_group = warp_idx % NumWarpsPerWarpGroup;
    const int warp_group_thread_idx = thread_idx % NumThreadsPerWarpGroup;
    const int mma_thread_idx = thread_idx % kMmaThreads;  // 0..255 over the two consumer warp groups
    const auto warp_group_role = WarpGroupRole(cutlass::canonical_warp_group_idx());
    const bool producer = warp_group_role == WarpGroupRole::Producer;
    const bool load_warp = producer && warp_idx_in_warp_group == 0;
    const int lane_predicate = cute::elect_one_sync();
    const uint32_t block_rank_in_cluster = cute::block_rank_in_cluster();

    if (warp_idx == 0 && lane_predicate) {
      CollectiveMainloop::prefetch_tma_descriptors(params.mainloop);
      CollectiveEpilogue::prefetch_tma_descriptors(params.epilogue);
    }

    using MainloopPipeline = typename CollectiveMainloop::MainloopPipeline;
    typename MainloopPipeline::Params mainloop_pipeline_params;
    if (load_warp) mainloop_pipeline_params.role = MainloopPipeline::ThreadCategory::Producer;
    if (!producer) mainloop_pipeline_params.role = MainloopPipeline::ThreadCategory::Consumer;
    mainloop_pipeline_params.is_leader = warp_group_thread_idx == 0;
    mainloop_pipeline_params.num_consumers = kMmaThreads;
    mainloop_pipeline_params.transaction_bytes = params.mainloop.tma_transaction_bytes;
    MainloopPipeline mainloop_pipeline(shared_storage.pipelines.mainloop, mainloop_pipeline_params, ClusterShape{});

    using EpiLoadPipeline = typename CollectiveEpilogue::LoadPipeline;
    typename EpiLoadPipeline::Params epi_load_pipeline_params;
    if (load_warp) epi_load_pipeline_params.role = EpiLoadPipeline::ThreadCategory::Producer;
    if (!producer) epi_load_pipeline_params.role = EpiLoadPipeline::ThreadCategory::Consumer;
    epi_load_pipeline_params.dst_blockid = cute::block_rank_in_cluster();
    epi_load_pipeline_params.producer_arv_count = NumThreadsPerWarp;
    epi_load_pipeline_params.consumer_arv_count = kMmaThreads;
    if constexpr (CollectiveEpilogue::RequiresTransactionBytes) {
      epi_load_pipeline_params.transaction_bytes = params.epilogue.tma_transaction_bytes;
    }
    EpiLoadPipeline epi_load_pipeline(shared_storage.pipelines.epi_load, epi_load_pipeline_params);

    using EpiStorePipeline = typename CollectiveEpilogue::StorePipeline;
    typename EpiStorePipeline::Params epi_store_pipeline_params;
    epi_store_pipeline_params.always_wait = true;
    EpiStorePipeline epi_store_pipeline(epi_store_pipeline_params);

    typename CollectiveMainloop::PipelineState mainloop_pipe_consumer_state;
    typename CollectiveEpilogue::LoadPipelineState epi_load_pipe_consumer_state;
    auto mainloop_pipe_producer_state = cutlass::make_producer_start_state<MainloopPipeline>();
    auto epi_load_pipe_producer_state = cutlass::make_producer_start_state<EpiLoadPipeline>();
    auto epi_store_pipe_producer_state = cutlass::make_producer_start_state<EpiStorePipeline>();

    // Barrier inits visible to the cluster (or the CTA) before any arrive.
    if constexpr (size(ClusterShape{}) > 1) {
      cute::cluster_arrive_relaxed();
    } else {
      __syncthreads();
    }

    auto blk_shape = TileShape{};
    TiledMma tiled_mma;
    auto problem_shape_MNKL = append<4>(params.problem_shape, Int<1>{});
    CollectiveMainloop collective_mainloop;
    CollectiveEpilogue collective_epilogue(params.epilogue, shared_storage.tensors.epilogue);
    auto load_inputs = collective_mainloop.load_init(problem_shape_MNKL, params.mainloop);
    auto gA_mkl = get<0>(load_inputs);
    auto gB_nkl = get<1>(load_inputs);
    auto m_coord = idx2crd(int(blockIdx.x), shape<2>(gA_mkl));
    auto n_coord = idx2crd(int(blockIdx.y), shape<2>(gB_nkl));
    auto blk_coord = make_coord(m_coord, n_coord, _, Int<0>{});
    auto k_tile_iter = cute::make_coord_iterator(shape<3>(gA_mkl));
    auto k_tile_count = size<3>(gA_mkl);

    if constexpr (size(ClusterShape{}) > 1) cute::cluster_wait();

    if (producer) {
      cutlass::arch::warpgroup_reg_dealloc<kLoadRegisters>();
      if (load_warp) {
        cutlass::arch::wait_on_dependent_grids();
        collective_mainloop.load(params.mainloop, mainloop_pipeline, mainloop_pipe_producer_state, load_inputs,
                                 blk_coord, k_tile_iter, k_tile_count, lane_idx, block_rank_in_cluster,
                                 shared_storage.tensors.mainloop);
        mainloop_pipe_producer_state.advance(k_tile_count);
        collective_mainloop.load_tail(mainloop_pipeline, mainloop_pipe_producer_state);
        if (collective_epilogue.is_producer_load_needed()) {
          __syncwarp();
          epi_load_pipe_producer_state =
              collective_epilogue.load(epi_load_pipeline, epi_load_pipe_producer_state, problem_shape_MNKL, blk_shape,
                                       blk_coord, tiled_mma, lane_idx, shared_storage.tensors.epilogue);
          collective_epilogue.load_tail(epi_load_pipeline, epi_load_pipe_producer_state);
        }
      }
    } else {
      cutlass::arch::warpgroup_reg_alloc<kMmaRegisters>();
      auto accumulators = partition_fragment_C(tiled_mma, take<0, 2>(blk_shape));
      collective_mainloop.mma(mainloop_pipeline, mainloop_pipe_consumer_state, accumulators, k_tile_count,
                              mma_thread_idx, shared_storage.tensors.mainloop, params.mainloop);
      collective_mainloop.mma_tail(mainloop_pipeline, mainloop_pipe_consumer_state, k_tile_count);
      cutlass::arch::launch_dependent_grids();
      auto [epi_load_pipe_consumer_state_next, epi_store_pipe_producer_state_next] = collective_epilogue.store(
          epi_load_pipeline, epi_load_pipe_consumer_state, epi_store_pipeline, epi_store_pipe_producer_state,
          problem_shape_MNKL, blk_shape, blk_coord, accumulators, tiled_mma, mma_thread_idx,
          shared_storage.tensors.epilogue);
      collective_epilogue.store_tail(epi_load_pipeline, epi_load_pipe_consumer_state_next, epi_store_pipeline,
                                     epi_store_pipe_producer_state_next);
    }
#endif
  }
};

// A variant with CooperativeConvKernel: CUTLASS's conv main loop rebuilt around a 2x1
// warp-group TiledMma (the builder's types otherwise), the epilogue of the cooperative schedule.
template <int kM, int kN, int kK>
struct CooperativeConvSm90 {
  using TileShape = Shape<Int<kM>, Int<kN>, Shape<Int<kK>>>;
  using ClusterShape = Shape<cute::_1, cute::_1, cute::_1>;
  using Epilogue = BiasEpilogue<TileShape, ClusterShape, cutlass::epilogue::TmaWarpSpecializedCooperative>;
  using Basic = FpropMainloop<TileShape, ClusterShape, AutoStages<Epilogue>>;
  using TiledMma = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Bf16, Bf16, float, TileShape, cute::GMMA::Major::K, cute::GMMA::Major::K>(),
      cute::Layout<Shape<cute::_2, cute::_1, cute::_1>>{}));
  using Mainloop = cutlass::conv::collective::CollectiveConv<
      typename Basic::DispatchPolicy, TileShape, Bf16, Bf16, TiledMma,
      cutlass::conv::collective::detail::Sm90ImplicitGemmTileTraits<typename Basic::GmemTiledCopyA,
                                                                    typename Basic::SmemLayoutA>,
      cutlass::conv::collective::detail::Sm90ImplicitGemmTileTraits<typename Basic::GmemTiledCopyB,
                                                                    typename Basic::SmemLayoutB>>;
  using ProblemShape = cutlass::conv::ConvProblemShape<cutlass::conv::Operator::kFprop, Mainloop::NumSpatialDimensions>;
  using Kernel = CooperativeConvKernel<cutlass::conv::kernel::ConvUniversal<ProblemShape, Mainloop, Epilogue, void>>;
  static constexpr int kClusterSize = 1;
  static constexpr int kBlocksPerSm = 1;
};

// CUTLASS's device_kernel, with the body compiled for sm_90a only.
template <class V>
__global__ void __launch_bounds__(V::Kernel::MaxThreadsPerBlock, V::kBlocksPerSm)
    conv3d_sm90_kernel(CUTLASS_GRID_CONSTANT typename V::Kernel::Params const params) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ char smem[];
  typename V::Kernel op;
  op(params, smem);
#endif
}

// The variants, in the order of kVariantNames. A cluster of 2 along M multicasts each filter
// tile to both CTAs (they share the output channels), halving the filter's loads from L2.
using Conv128x128 = ConvSm90<128, 128, 64, 1>;
using Conv128x128c2 = ConvSm90<128, 128, 64, 2>;
using Conv64x256 = ConvSm90<64, 256, 64, 1>;
using Conv64x256c2 = ConvSm90<64, 256, 64, 2>;
using Conv64x128x2 = ConvSm90<64, 128, 64, 1, 4, 2>;  // 4 stages of 24 KB: two CTAs an SM
using Conv128x256coop = CooperativeConvSm90<128, 256, 64>;

constexpr const char* kVariantNames[] = {"128x128x64", "128x128x64c2", "64x256x64", "64x256x64c2", "64x128x64x2",
                                         "128x256x64coop"};
constexpr int kVariants = 6;

// Whether this binary carries sm_90a code for the kernels.
bool built_for_sm90a() { return has_sm90a_code(reinterpret_cast<const void*>(conv3d_sm90_kernel<Conv128x128>)); }

// A channels-last 3-D tensor's strides in CUTLASS's order [n, d, h, w, c] (logical dims 0, 2,
// 3, 4, 1). A dimension of size 1 is never stepped along, but TMA wants every stride a multiple
// of 16 bytes: it gets the extent of the dimensions inside it.
cute::array<int64_t, 5> ndhwc_strides(const Tensor& t) {
  constexpr int kDims[5] = {0, 2, 3, 4, 1};
  cute::array<int64_t, 5> s{};
  int64_t extent = 1;
  for (int i = 4; i >= 0; --i) {
    const int d = kDims[i];
    s[i] = t.size(d) > 1 ? t.strides()[d] : extent;
    extent = std::max(extent, t.size(d) * s[i]);
  }
  return s;
}

cute::array<int32_t, 5> ndhwc_shape(const Tensor& t) {
  return {static_cast<int32_t>(t.size(0)), static_cast<int32_t>(t.size(2)), static_cast<int32_t>(t.size(3)),
          static_cast<int32_t>(t.size(4)), static_cast<int32_t>(t.size(1))};
}

template <class V>
typename V::Kernel::Arguments arguments(const Conv3dSm90Problem& p) {
  using Kernel = typename V::Kernel;
  using ProblemShape = typename V::ProblemShape;
  auto pad = [](const std::array<int64_t, 3>& a) {
    return cute::array<int32_t, 3>{static_cast<int32_t>(a[0]), static_cast<int32_t>(a[1]), static_cast<int32_t>(a[2])};
  };
  const ProblemShape problem(cutlass::conv::Mode::kCrossCorrelation, ndhwc_shape(p.x), ndhwc_strides(p.x),
                             ndhwc_shape(p.w), ndhwc_strides(p.w), pad(p.pad_before), pad(p.pad_after), pad(p.stride),
                             {1, 1, 1}, 1);
  typename Kernel::Arguments args{};
  args.mode = cutlass::gemm::GemmUniversalMode::kGemm;
  args.problem_shape = problem;
  args.mainloop.ptr_A = static_cast<const Bf16*>(p.x.raw_data());
  args.mainloop.ptr_B = static_cast<const Bf16*>(p.w.raw_data());
  args.epilogue.thread.alpha = 1.0f;
  args.epilogue.thread.beta = 0.0f;
  args.epilogue.thread.bias_ptr = p.bias.defined() ? static_cast<const Bf16*>(p.bias.raw_data()) : nullptr;
  args.epilogue.ptr_C = nullptr;
  args.epilogue.ptr_D = static_cast<Bf16*>(p.y.raw_data());
  // The output's strides as the epilogue reads them: ((w, h, d, n), k, 0), from the problem's
  // packed NDHWC strides of y (y is dense; conv3d_sm90_rejects checks it).
  using StrideD = typename Kernel::StrideD;
  StrideD dD{};
  cute::for_each(cute::make_seq<cute::rank<0>(StrideD{})>{}, [&](auto i) {
    cute::get<0, i>(dD) = problem.stride_C[ProblemShape::RankT - 2 - i];
  });
  args.epilogue.dC = dD;
  args.epilogue.dD = dD;
  args.hw_info.device_id = 0;
  args.hw_info.sm_count = device_properties().multiProcessorCount;
  return args;
}

template <class V>
bool takes(const Conv3dSm90Problem& p) {
  return V::Kernel::can_implement(arguments<V>(p));
}

template <class V>
void launch(const Conv3dSm90Problem& p) {
  using Kernel = typename V::Kernel;
  const auto args = arguments<V>(p);
  const typename Kernel::Params params = Kernel::to_underlying_arguments(args, nullptr);
  auto* kernel = conv3d_sm90_kernel<V>;
  constexpr int kSmem = Kernel::SharedStorageSize;
  allow_dynamic_shared_memory(reinterpret_cast<const void*>(kernel), kSmem, "conv3d sm90");
  cudaLaunchConfig_t config{};
  config.gridDim = Kernel::get_grid_shape(params);
  config.blockDim = Kernel::get_block_shape();
  config.dynamicSmemBytes = kSmem;
  config.stream = stream();
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = V::kClusterSize;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  config.attrs = attr;
  config.numAttrs = 1;
  check(cudaLaunchKernelEx(&config, kernel, params), "conv3d sm90: launch");
  check_launch("conv3d sm90", p.x, p.w);
}

}  // namespace

const char* conv3d_sm90_variant_name(int variant) {
  return variant >= 0 && variant < kVariants ? kVariantNames[variant] : "?";
}

std::string conv3d_sm90_rejects(const Conv3dSm90Problem& p) {
  const cudaDeviceProp& prop = device_properties();
  if (prop.major != 9 || prop.minor != 0) return fmt::format("needs an sm_90 GPU (this is sm_{}{})", prop.major, prop.minor);
  if (!built_for_sm90a()) return "this build has no sm_90a code (VGEN_CUDA_ARCHS without 90a)";
  for (const Tensor* t : {&p.x, &p.w, &p.y}) {
    if (t->dim() != 5) return "needs 5-D tensors";
    if (t->dtype() != DType::BF16) return "takes BF16 tensors only";
    if (!t->is_channels_last_3d()) return "needs channels-last 3-D tensors";
    if (!aligned16(*t)) return "needs 16-byte aligned buffers (TMA)";
    for (int64_t n : t->shape())
      if (n > INT32_MAX) return "sizes out of range";
    for (int64_t s : ndhwc_strides(*t))
      if (s % kAlign != 0 && s != 1) return "needs strides that are multiples of 8 elements (TMA)";
    if (t->strides()[1] != 1) return "needs unit stride along the channels";
  }
  if (p.bias.defined() && (p.bias.dtype() != DType::BF16 || !p.bias.is_contiguous() || !aligned16(p.bias) ||
                           p.bias.numel() != p.w.size(0)))
    return "needs a contiguous, 16-byte aligned BF16 bias of K values";
  const int64_t C = p.x.size(1), K = p.w.size(0);
  if (p.w.size(1) != C) return "input and filter channels differ";
  if (C % 64 != 0) return fmt::format("needs input channels a multiple of 64 (not {})", C);
  if (K % kAlign != 0) return fmt::format("needs output channels a multiple of 8 (not {})", K);
  if (p.stride != std::array<int64_t, 3>{1, 1, 1}) return "takes stride 1 only";
  // y dense NDHWC with the shape the padding gives.
  for (int i = 0; i < 3; ++i)
    if (p.y.size(2 + i) != p.x.size(2 + i) + p.pad_before[i] + p.pad_after[i] - p.w.size(2 + i) + 1)
      return "output extent disagrees with the padding";
  if (p.y.size(0) != p.x.size(0) || p.y.size(1) != K) return "output shape disagrees with the inputs";
  const vgen::Shape& ys = p.y.strides();
  const int64_t Wo = p.y.size(4), Ho = p.y.size(3), Do = p.y.size(2);
  if ((Wo > 1 && ys[4] != K) || (Ho > 1 && ys[3] != K * Wo) || (Do > 1 && ys[2] != K * Wo * Ho) ||
      (p.y.size(0) > 1 && ys[0] != K * Wo * Ho * Do))
    return "needs a dense channels-last output";
  if (p.y.size(0) * Do * Ho * Wo > INT32_MAX) return "too many output positions";
  if (conv3d_sm90_variants(p).empty()) return "no tile variant can implement it (TMA im2col limits)";
  return "";
}

std::vector<int> conv3d_sm90_variants(const Conv3dSm90Problem& p) {
  std::vector<int> v;
  if (takes<Conv128x128>(p)) v.push_back(0);
  if (takes<Conv128x128c2>(p)) v.push_back(1);
  if (takes<Conv64x256>(p)) v.push_back(2);
  if (takes<Conv64x256c2>(p)) v.push_back(3);
  if (takes<Conv64x128x2>(p)) v.push_back(4);
  if (takes<Conv128x256coop>(p)) v.push_back(5);
  return v;
}

void conv3d_sm90(const Conv3dSm90Problem& p, int variant) {
  if (p.y.numel() == 0) return;
  switch (variant) {
    case 0: return launch<Conv128x128>(p);
    case 1: return launch<Conv128x128c2>(p);
    case 2: return launch<Conv64x256>(p);
    case 3: return launch<Conv64x256c2>(p);
    case 4: return launch<Conv64x128x2>(p);
    case 5: return launch<Conv128x256coop>(p);
    default: fail("conv3d sm90: no variant {}", variant);
  }
}

}  // namespace vgen::cuda
