// 3-D convolution on CUDA through the cuDNN frontend graph API: conv_fprop with the bias added
// by a pointwise node of the same graph, NCDHW tensors with the caller's strides. A
// channels-last 3-D input (memory [N, D, H, W, C], Tensor::is_channels_last_3d) convolves in
// NDHWC with the filter in the same layout, and the output is channels-last too: cuDNN's
// NDHWC kernels are markedly faster (the Wan VAE decoder runs in that layout on a GPU).
//
// BF16/F16 convolve with float32 accumulation; F32 convolves in true FP32: engines whose
// numerical notes say tensor cores (TF32 for float inputs), down-converted inputs, reduced
// precision reductions, FFT or Winograd are deselected, so the float32 VAE matches the CPU to
// float rounding. Operands of two dtypes convolve in float32; the result has x's dtype.
//
// Unless TF32 is allowed (set_conv_allow_tf32, or VGEN_ALLOW_TF32=1/0; on by default as in
// PyTorch, whose cuDNN convolutions use TF32 unless torch.backends.cudnn.allow_tf32 is off):
// then float32 convolutions may run on tensor cores, as diffusers' float32 VAE does on a GPU.
//
// Engines: cuDNN's heuristics (mode A) choose; mode B picked no faster ones for the Wan VAE. With
// autotuning on (set_conv_autotune, or VGEN_CONV_AUTOTUNE=1) a graph's first call times the
// heuristics' first kConvAutotunePlans candidates on its own buffers and keeps the fastest:
// worth it where a process decodes many videos (a server), not for one.
//
// On an H100/H200 (a build with sm_90a code), bf16 channels-last convolutions of stride 1 that
// vgen's CUTLASS implicit-GEMM kernel takes (conv3d_sm90.h: input channels a multiple of 64,
// output channels of 8, 16-byte aligned buffers) race cuDNN on each shape's first eager call:
// every CUTLASS tile variant and the cuDNN plan the code would use run on the call's own
// buffers (one untimed and kTimedLaunches timed launches each, CUDA events), and the fastest is
// kept for the shape in the context's ConvKernelChoices (logged at debug level); a variant whose
// output disagrees with cuDNN's on a sample (first and last rows) is warned about and skipped.
// A call during CUDA graph capture runs cuDNN and leaves the choice to a later eager call.
// The race runs with ExecutionSettings::conv_kernel "auto" (VGEN_CONV_CUTLASS=1; the default is
// cuDNN alone: on an H200 the Wan2.2 704x1280x121 decode took 3.48 s with the race, 3.45 s
// without); "cutlass"
// (VGEN_CONV_CUTLASS=force) always runs CUTLASS where it takes the case, "cutlass:<variant>" that tile variant (what the op table test
// uses to check each).
//
// Few output channels (a VAE's conv_out: 3x3x3, at most 16 outputs, bf16 channels-last, input
// channels a multiple of 16) run vgen's direct kernel (conv3d_direct.h) on any sm_80+ GPU unless
// ExecutionSettings::conv_direct is off (VGEN_CONV_DIRECT=0): as an implicit GEMM that shape is
// bound by reloading each input element once per tap (on an H200 cuDNN ran the Wan2.2 decoder's
// 256 -> 12 conv_out at ~90 TFLOP/s).
//
// A residual (conv3d's optional addend) is added after the convolution; with autotuning on, in
// the graph's epilogue instead where that ran faster on the shape's first eager call
// (fuse_residual_chosen).
//
// Graphs are cached per (dtype, shapes, strides, alignments, padding, stride, bias, residual). When
// cuDNN has no engine for the fused graph, a graph without the bias (bias added after) is
// tried, then a contiguous copy of x, and last an im2col (strided copies) + cuBLASLt GEMM path.
// The environment variable VGEN_CONV_IM2COL=1 forces that last path (for tests and debugging).
#include "backends/cuda/conv.h"

#include <cuda_runtime.h>
#include <cudnn.h>
#include <cudnn_frontend.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "backends/cuda/conv3d_direct.h"
#include "backends/cuda/conv3d_sm90.h"
#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_common.h"
#include "backends/cuda/cudnn_common.h"
#include "core/env.h"
#include "ops/ops.h"

namespace vgen::cuda {

bool conv_allow_tf32() { return active().settings().allow_tf32; }
bool conv_autotune() { return active().settings().conv_autotune; }

namespace {

namespace fe = cudnn_frontend;

enum Uid : int64_t { kX = 1, kW = 2, kBias = 3, kY = 4, kResidual = 5 };

constexpr int64_t kConvAutotunePlans = 8;                     // candidates timed per graph
constexpr int64_t kConvAutotuneWorkspace = int64_t{256} << 20;  // the most workspace a candidate may take

// The convolution after dtype conversion: x [B, C, T, H, W] (any strides), w [O, C, kt, kh, kw]
// and bias [O] contiguous, y [B, O, To, Ho, Wo] contiguous; pads before/after per dim. When
// channels_last, x, w and y are all channels-last 3-D.
struct Conv {
  Tensor x, w, bias, y;
  Tensor residual;  // added in the graph's epilogue when defined (y's shape, strides and dtype)
  std::array<int64_t, 3> stride{}, pad_before{}, pad_after{};
  bool channels_last = false;
};

// The strides cuDNN is told: a channels-last tensor's canonical NDHWC strides (the same
// addresses, with size-1 dims given the strides cuDNN expects), else the tensor's own.
Shape descriptor_strides(const Tensor& t, bool channels_last) {
  if (!channels_last) return t.strides();
  const Shape& s = t.shape();
  auto at_least_1 = [](int64_t n) { return std::max<int64_t>(n, 1); };
  const int64_t c = 1, w = at_least_1(s[1]), h = w * at_least_1(s[4]), d = h * at_least_1(s[3]),
                n = d * at_least_1(s[2]);
  return {n, c, d, h, w};
}

struct Conv3dKind;
using ConvState = CudnnPlans<Conv3dKind>;

// The active backend's plans (each execution context has its own).
ConvState& conv_state() { return active().state<ConvState>(); }

std::vector<int64_t> vec(const std::array<int64_t, 3>& a) { return {a[0], a[1], a[2]}; }

// The variant pack of c: its buffers by uid.
std::unordered_map<int64_t, void*> variant_pack(const Conv& c, bool fuse_bias) {
  std::unordered_map<int64_t, void*> pack{{kX, c.x.raw_data()}, {kW, c.w.raw_data()}, {kY, c.y.raw_data()}};
  if (fuse_bias) pack.emplace(kBias, c.bias.raw_data());
  if (c.residual.defined()) pack.emplace(kResidual, c.residual.raw_data());
  return pack;
}

// Builds the first kConvAutotunePlans candidates of g and times them on c's buffers (y is
// overwritten), leaving the fastest as g's plan; false (g unchanged) when that fails.
bool autotune(cudnnHandle_t handle, fe::graph::Graph& g, const Conv& c, bool fuse_bias) {
  g.deselect_workspace_greater_than(kConvAutotuneWorkspace);
  const int64_t n = std::min<int64_t>(g.get_execution_plan_count(), kConvAutotunePlans);
  int64_t built = 0;
  for (int64_t i = 0; i < n; ++i) built += g.build_plan_at_index(i).is_good() ? 1 : 0;
  if (built < 2) return false;
  const int64_t ws = g.get_autotune_workspace_size();
  if (ws > kConvAutotuneWorkspace) return false;
  const Tensor workspace = ws > 0 ? Tensor::empty({ws}, DType::U8, c.x.device()) : Tensor();
  auto pack = variant_pack(c, fuse_bias);
  const fe::error_t err = g.autotune(handle, pack, workspace.defined() ? workspace.raw_data() : nullptr);
  if (err.is_bad()) spdlog::debug("conv3d: autotuning failed: {}", err.err_msg);
  return err.is_good();
}

CudnnPlan build_plan(cudnnHandle_t handle, const Conv& c, bool fuse_bias, std::string* why) {
  const DType dt = c.x.dtype();
  const fe::DataType_t io = dt == DType::F32    ? fe::DataType_t::FLOAT
                            : dt == DType::BF16 ? fe::DataType_t::BFLOAT16
                                                : fe::DataType_t::HALF;
  try {
    auto g = std::make_shared<fe::graph::Graph>();
    g->set_io_data_type(io)
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    auto tensor = [&](const char* name, int64_t uid, const Tensor& t, Shape dims, Shape strides) {
      return g->tensor(fe::graph::Tensor_attributes()
                           .set_name(name)
                           .set_uid(uid)
                           .set_dim(dims)
                           .set_stride(strides)
                           .set_data_type(io)
                           .set_alignment(cudnn_alignment(t.raw_data())));
    };
    auto X = tensor("x", kX, c.x, c.x.shape(), descriptor_strides(c.x, c.channels_last));
    auto W = tensor("w", kW, c.w, c.w.shape(), descriptor_strides(c.w, c.channels_last));
    auto y = g->conv_fprop(X, W,
                           fe::graph::Conv_fprop_attributes()
                               .set_name("conv")
                               .set_pre_padding(vec(c.pad_before))
                               .set_post_padding(vec(c.pad_after))
                               .set_stride(vec(c.stride))
                               .set_dilation({1, 1, 1})
                               .set_compute_data_type(fe::DataType_t::FLOAT));
    if (fuse_bias) {
      const int64_t O = c.w.size(0);
      auto Bt = tensor("bias", kBias, c.bias, {1, O, 1, 1, 1}, {O, 1, 1, 1, 1});
      y->set_data_type(fe::DataType_t::FLOAT);
      y = g->pointwise(y, Bt,
                       fe::graph::Pointwise_attributes()
                           .set_name("add_bias")
                           .set_mode(fe::PointwiseMode_t::ADD)
                           .set_compute_data_type(fe::DataType_t::FLOAT));
    }
    if (c.residual.defined()) {
      auto R = tensor("residual", kResidual, c.residual, c.residual.shape(), descriptor_strides(c.residual, c.channels_last));
      y->set_data_type(fe::DataType_t::FLOAT);
      y = g->pointwise(y, R,
                       fe::graph::Pointwise_attributes()
                           .set_name("add_residual")
                           .set_mode(fe::PointwiseMode_t::ADD)
                           .set_compute_data_type(fe::DataType_t::FLOAT));
    }
    y->set_output(true).set_uid(kY).set_dim(c.y.shape()).set_stride(descriptor_strides(c.y, c.channels_last)).set_data_type(io);

    fe::error_t err = g->validate();
    if (err.is_good()) err = g->build_operation_graph(handle);
    if (err.is_good()) err = g->create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK});
    if (err.is_good() && dt == DType::F32 && !conv_allow_tf32()) {
      using N = fe::NumericalNote_t;
      g->deselect_numeric_notes({N::TENSOR_CORE, N::DOWN_CONVERT_INPUTS, N::REDUCED_PRECISION_REDUCTION, N::FFT,
                                 N::WINOGRAD, N::WINOGRAD_TILE_4x4, N::WINOGRAD_TILE_6x6, N::WINOGRAD_TILE_13x13});
    }
    if (err.is_good()) err = g->check_support();
    const bool tuned = err.is_good() && conv_autotune() && !stream_capturing() && autotune(handle, *g, c, fuse_bias);
    if (err.is_good() && !tuned) err = g->build_plans();
    return finish_plan(std::move(g), err, why);
  } catch (const std::exception& e) {
    *why = e.what();
    return {};
  }
}

std::string conv_str(const Conv& c) {
  return fmt::format("x {} strides {}, w {}, stride {}, padding before {} after {}", c.x.str(),
                     shape_str(c.x.strides()), c.w.str(), shape_str(vec(c.stride)), shape_str(vec(c.pad_before)),
                     shape_str(vec(c.pad_after)));
}

// Runs the convolution into c.y through cuDNN (the bias fused when fuse_bias); false when
// cuDNN has no engine for it.
// The numbers that identify c's case (with the bias when `bias`): dtype, layout, shapes,
// strides, alignments, stride and padding.
std::vector<int64_t> case_key(const Conv& c, bool bias) {
  std::vector<int64_t> key{static_cast<int64_t>(c.x.dtype()), bias, c.channels_last};
  for (const Tensor* t : {&c.x, &c.w, &c.y}) {
    key.insert(key.end(), t->shape().begin(), t->shape().end());
    key.insert(key.end(), t->strides().begin(), t->strides().end());
    key.push_back(cudnn_alignment(t->raw_data()));
  }
  key.push_back(bias ? cudnn_alignment(c.bias.raw_data()) : 0);
  key.push_back(c.residual.defined() ? cudnn_alignment(c.residual.raw_data()) : -1);
  for (const auto* a : {&c.stride, &c.pad_before, &c.pad_after}) key.insert(key.end(), a->begin(), a->end());
  return key;
}

bool run_cudnn(const Conv& c, bool fuse_bias) {
  ConvState& st = conv_state();
  std::vector<int64_t> key = case_key(c, fuse_bias);
  key.push_back(conv_allow_tf32());
  key.push_back(conv_autotune());

  std::lock_guard<std::mutex> lock(st.cudnn.mutex);
  auto it = st.plans.find(key);
  if (it == st.plans.end()) {
    std::string why;
    CudnnPlan plan = build_plan(st.cudnn.handle, c, fuse_bias, &why);
    if (!plan.graph)
      spdlog::debug("conv3d: no cuDNN engine for {}{}{}: {}", conv_str(c), fuse_bias ? " + bias" : "",
                    c.residual.defined() ? " + residual" : "", why);
    it = st.plans.emplace(std::move(key), std::move(plan)).first;
  }
  const CudnnPlan& plan = it->second;
  if (!plan.graph) return false;
  auto pack = variant_pack(c, fuse_bias);
  const fe::error_t err = execute(st.cudnn, plan, pack, c.x.device());
  if (err.is_bad()) fail("conv3d: cuDNN failed on {}: {}", conv_str(c), err.err_msg);
  return true;
}

constexpr int kTimedLaunches = 3;  // per candidate of the CUTLASS / cuDNN race

// Per case (case_key), the kernel CudaOps::conv3d runs: a CUTLASS variant (conv3d_sm90.h), or
// kCudnn. Each execution context has its own.
struct ConvKernelChoices {
  static constexpr int kCudnn = -1;
  explicit ConvKernelChoices(CudaBackend&) {}
  std::mutex mutex;
  std::map<std::vector<int64_t>, int> chosen;
  // Per case with a residual (case_key of the fused graph): whether cuDNN's fused epilogue beat
  // the plain graph plus a separate add on the case's first eager call.
  std::map<std::vector<int64_t>, bool> fuse_residual;
};

// Milliseconds per launch of `launch` (one untimed launch first), or infinity when it declines
// (returns false).
float time_launches(const std::function<bool()>& launch) {
  if (!launch()) return std::numeric_limits<float>::infinity();
  const cudaStream_t s = stream();
  cudaEvent_t start = nullptr, stop = nullptr;
  check(cudaEventCreate(&start), "conv3d: create a timing event");
  if (cudaEventCreate(&stop) != cudaSuccess) {
    cudaEventDestroy(start);
    check(cudaGetLastError(), "conv3d: create a timing event");
  }
  float ms = 0.0f;
  cudaError_t err = cudaEventRecord(start, s);
  for (int i = 0; err == cudaSuccess && i < kTimedLaunches; ++i) launch();
  if (err == cudaSuccess) err = cudaEventRecord(stop, s);
  if (err == cudaSuccess) err = cudaEventSynchronize(stop);
  if (err == cudaSuccess) err = cudaEventElapsedTime(&ms, start, stop);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  check(err, "conv3d: time a candidate kernel");
  return ms / kTimedLaunches;
}

// A sample of y on the host: the first output frame's first rows and the last frame's last
// rows (where the padding is), every column and channel; a few MB at the Wan sizes.
std::vector<float> output_sample(const Tensor& y) {
  const int64_t rows = std::min<int64_t>(y.size(3), 4);
  std::vector<float> v = y.narrow(2, 0, 1).narrow(3, 0, rows).to_vector();
  const std::vector<float> last = y.narrow(2, y.size(2) - 1, 1).narrow(3, y.size(3) - rows, rows).to_vector();
  v.insert(v.end(), last.begin(), last.end());
  return v;
}

// Why `got` disagrees with cuDNN's `want` beyond bf16 rounding and summation order ("" when it
// agrees): a kernel variant that fails this never runs the case.
std::string disagreement(const std::vector<float>& want, const std::vector<float>& got) {
  float scale = 0.0f, worst = 0.0f;
  for (float w : want) scale = std::max(scale, std::fabs(w));
  for (size_t i = 0; i < want.size(); ++i) {
    const float d = std::fabs(got[i] - want[i]);
    if (std::isnan(d)) return fmt::format("NaN where cuDNN gives {}", want[i]);
    worst = std::max(worst, d);
  }
  if (worst <= 2e-2f * scale + 1e-6f) return "";
  return fmt::format("largest difference {} against cuDNN's values of magnitude up to {}", worst, scale);
}

// Runs c (bias included) through vgen's CUTLASS kernel when that is the choice for its case
// (made now on the case's first eager call, racing `cudnn`, which runs the cuDNN path once into
// c.y, bias included, and says whether it could); false when cuDNN is to run it.
bool run_cutlass_if_chosen(const Conv& c, const std::function<bool()>& cudnn) {
  const std::string& mode = active().settings().conv_kernel;
  if (mode == "cudnn" || c.x.dtype() != DType::BF16 || !c.channels_last) return false;
  const Conv3dSm90Problem p{c.x, c.w, c.bias, c.y, c.pad_before, c.pad_after, c.stride};
  ConvKernelChoices& st = active().state<ConvKernelChoices>();
  const std::vector<int64_t> key = case_key(c, c.bias.defined());
  int chosen = ConvKernelChoices::kCudnn;
  bool known = false;
  {
    std::lock_guard<std::mutex> lock(st.mutex);
    if (auto it = st.chosen.find(key); it != st.chosen.end()) {
      chosen = it->second;
      known = true;
    }
  }
  if (!known) {
    const std::string why = conv3d_sm90_rejects(p);
    const std::vector<int> variants = why.empty() ? conv3d_sm90_variants(p) : std::vector<int>{};
    if (variants.empty()) {
      spdlog::debug("conv3d: CUTLASS does not take {}: {}", conv_str(c), why);
    } else if (mode.rfind("cutlass", 0) == 0) {
      chosen = variants.front();  // "cutlass", or "cutlass:<variant>" where that variant takes it
      for (int v : variants)
        if (mode == fmt::format("cutlass:{}", conv3d_sm90_variant_name(v))) chosen = v;
    } else if (stream_capturing()) {
      return false;  // nothing can be timed while capturing: cuDNN now, the race on an eager call
    } else {
      float best = time_launches(cudnn);
      std::string times = fmt::format("cuDNN {:.3f} ms", best);
      // cuDNN's values (when it ran) vet each variant: a wrong one is never chosen.
      const std::vector<float> want = std::isfinite(best) ? output_sample(c.y) : std::vector<float>{};
      for (int v : variants) {
        const float ms = time_launches([&] {
          conv3d_sm90(p, v);
          return true;
        });
        times += fmt::format(", CUTLASS {} {:.3f} ms", conv3d_sm90_variant_name(v), ms);
        const std::string bad = want.empty() ? std::string() : disagreement(want, output_sample(c.y));
        if (!bad.empty()) {
          spdlog::warn("conv3d: CUTLASS {} disagrees with cuDNN on {}: {}; not used", conv3d_sm90_variant_name(v),
                       conv_str(c), bad);
          continue;
        }
        if (ms < best) {
          best = ms;
          chosen = v;
        }
      }
      spdlog::debug("conv3d: {} for {}{} ({})",
                    chosen == ConvKernelChoices::kCudnn ? std::string("cuDNN")
                                                        : fmt::format("CUTLASS {}", conv3d_sm90_variant_name(chosen)),
                    conv_str(c), c.bias.defined() ? " + bias" : "", times);
    }
    std::lock_guard<std::mutex> lock(st.mutex);
    st.chosen.emplace(key, chosen);
  }
  if (chosen == ConvKernelChoices::kCudnn) return false;
  conv3d_sm90(p, chosen);
  return true;
}

// With autotuning on: whether `with` (a case with a residual laid out as y) runs as one cuDNN
// graph whose epilogue adds the residual, or as the plain path followed by a separate add.
// cuDNN gives the fused graph engines of its own: on an H200, at the Wan2.2 VAE's 512-1024
// channels they took longer than the plain graph plus the add, while the Wan2.1 VAE's 480x832x81
// decode took 0.72 s fused against 0.80 s. So the case's first eager call times both on its own
// buffers (kTimedLaunches each) and keeps the faster; during graph capture, the plain path.
// Without autotuning the plain path runs: the fused graphs' engines are compiled at run time,
// which cost a process about 1 s more in its first decode (6-7 s the first time on a machine,
// before the JIT cache has them), against 0.08 s gained per Wan2.1 decode.
bool fuse_residual_chosen(const Conv& with, const std::function<bool()>& fused, const std::function<bool()>& plain) {
  ConvKernelChoices& st = active().state<ConvKernelChoices>();
  const std::vector<int64_t> key = case_key(with, with.bias.defined());
  {
    std::lock_guard<std::mutex> lock(st.mutex);
    if (auto it = st.fuse_residual.find(key); it != st.fuse_residual.end()) return it->second;
  }
  if (stream_capturing()) return false;
  const float fused_ms = time_launches(fused);
  if (!std::isfinite(fused_ms)) {
    spdlog::debug("conv3d: no cuDNN engine for {} + residual; adding it after", conv_str(with));
  }
  const float plain_ms = std::isfinite(fused_ms) ? time_launches(plain) : 0.0f;
  const bool fuse = fused_ms < plain_ms;
  if (std::isfinite(fused_ms))
    spdlog::debug("conv3d: residual {} for {} (fused {:.3f} ms, conv + add {:.3f} ms)", fuse ? "fused" : "added after",
                  conv_str(with), fused_ms, plain_ms);
  std::lock_guard<std::mutex> lock(st.mutex);
  st.fuse_residual.emplace(key, fuse);
  return fuse;
}

// im2col through strided copies of a zero-padded x, then one GEMM per chunk of output
// positions: y[b][:, chunk] = w [O, K] @ columns [K, chunk]. No bias.
void conv_im2col(const Conv& c) {
  const Tensor& x = c.x;
  const int64_t B = x.size(0), C = x.size(1), T = x.size(2), H = x.size(3), W = x.size(4);
  const int64_t O = c.w.size(0), kt = c.w.size(2), kh = c.w.size(3), kw = c.w.size(4);
  const int64_t To = c.y.size(2), Ho = c.y.size(3), Wo = c.y.size(4);
  const auto [st, sh, sw] = c.stride;
  const int64_t K = C * kt * kh * kw;
  // Padded extents: multiples of the stride, long enough for every (output, tap) pair, so that
  // xp viewed as [B, C, Tp/st, st, Hp/sh, sh, Wp/sw, sw] gives each tap's inputs as a view.
  auto extent = [](int64_t before, int64_t n, int64_t out, int64_t k, int64_t s) {
    const int64_t need = std::max(before + n, (out + (k - 1) / s + 1) * s);
    return (need + s - 1) / s * s;
  };
  const int64_t Tp = extent(c.pad_before[0], T, To, kt, st), Hp = extent(c.pad_before[1], H, Ho, kh, sh),
                Wp = extent(c.pad_before[2], W, Wo, kw, sw);
  const Tensor xp = Tensor::zeros({B, C, Tp, Hp, Wp}, x.dtype(), x.device());
  xp.narrow(2, c.pad_before[0], T).narrow(3, c.pad_before[1], H).narrow(4, c.pad_before[2], W).copy_(x);
  const Tensor xv = xp.view({B, C, Tp / st, st, Hp / sh, sh, Wp / sw, sw});
  const Tensor w2 = c.w.view({O, K});

  constexpr int64_t kMaxColumns = int64_t{1} << 27;  // elements of one chunk of columns
  const int64_t tc = std::clamp<int64_t>(kMaxColumns / std::max<int64_t>(1, K * Ho * Wo), 1, To);
  const int64_t hc = tc > 1 ? Ho : std::clamp<int64_t>(kMaxColumns / std::max<int64_t>(1, K * Wo), 1, Ho);
  for (int64_t b = 0; b < B; ++b) {
    const Tensor xb = xv.select(0, b);  // [C, Tp/st, st, Hp/sh, sh, Wp/sw, sw]
    for (int64_t t0 = 0; t0 < To; t0 += tc) {
      const int64_t nt = std::min(tc, To - t0);
      for (int64_t h0 = 0; h0 < Ho; h0 += hc) {
        const int64_t nh = std::min(hc, Ho - h0);
        const Tensor col = Tensor::empty({C, kt, kh, kw, nt, nh, Wo}, x.dtype(), x.device());
        for (int64_t dt = 0; dt < kt; ++dt) {
          for (int64_t dh = 0; dh < kh; ++dh) {
            for (int64_t dw = 0; dw < kw; ++dw) {
              // Input frame (t0 + i) * st + dt = (t0 + i + dt / st) * st + dt % st, likewise H, W.
              const Tensor src = xb.narrow(1, t0 + dt / st, nt)
                                     .select(2, dt % st)  // [C, nt, Hp/sh, sh, Wp/sw, sw]
                                     .narrow(2, h0 + dh / sh, nh)
                                     .select(3, dh % sh)  // [C, nt, nh, Wp/sw, sw]
                                     .narrow(3, dw / sw, Wo)
                                     .select(4, dw % sw);  // [C, nt, nh, Wo]
              col.select(1, dt).select(1, dh).select(1, dw).copy_(src);
            }
          }
        }
        const Tensor res = ops::matmul(w2, col.view({K, nt * nh * Wo}));  // [O, nt * nh * Wo]
        c.y.select(0, b).narrow(1, t0, nt).narrow(2, h0, nh).copy_(res.view({O, nt, nh, Wo}));
      }
    }
  }
}

}  // namespace

Tensor CudaOps::conv3d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv3dParams& p,
                       const Tensor& residual) {
  for (const Tensor* t : {&x, &weight, &bias, &residual}) require_cuda("conv3d", *t);
  require_float("conv3d", x);
  require_float("conv3d", weight);
  if (bias.defined()) require_float("conv3d", bias);
  VGEN_CHECK(x.dim() == 5 && weight.dim() == 5 && x.size(1) == weight.size(1),
             "conv3d: input {} does not match weight {}", x.str(), weight.str());
  const int64_t B = x.size(0), C = x.size(1), O = weight.size(0);
  Conv c;
  c.stride = p.stride;
  c.pad_before = p.padding;
  c.pad_after = p.padding;
  if (p.time_padding_before >= 0) c.pad_before[0] = p.time_padding_before;
  Shape out_shape{B, O, 0, 0, 0};
  for (int i = 0; i < 3; ++i) {
    VGEN_CHECK(c.stride[i] > 0 && c.pad_before[i] >= 0 && c.pad_after[i] >= 0,
               "conv3d: bad stride {} / padding {} for input {}", shape_str(vec(p.stride)), shape_str(vec(p.padding)),
               x.str());
    const int64_t span = x.size(2 + i) + c.pad_before[i] + c.pad_after[i] - weight.size(2 + i);
    out_shape[2 + i] = span < 0 ? 0 : span / c.stride[i] + 1;
  }
  const DType dt = x.dtype() == weight.dtype() ? x.dtype() : DType::F32;
  c.x = x.to(dt);
  c.channels_last = c.x.is_channels_last_3d();
  c.w = c.channels_last ? weight.to(dt).to_channels_last_3d() : weight.to(dt).contiguous();
  if (bias.defined()) c.bias = bias.to(dt).contiguous();
  c.y = c.channels_last ? Tensor::empty_channels_last_3d(out_shape, dt, x.device())
                        : Tensor::empty(out_shape, dt, x.device());
  if (c.y.numel() == 0) return c.y.to(x.dtype());
  if (C == 0) {  // an empty sum: the bias (or zeros)
    Tensor y = Tensor::zeros(out_shape, dt, x.device());
    if (c.bias.defined()) y = ops::add(y, c.bias.view({1, O, 1, 1, 1}));
    if (residual.defined()) y = ops::add(y, residual.to(dt));
    return y.to(x.dtype());
  }

  const bool force_im2col = env_flag("VGEN_CONV_IM2COL", false);
  bool bias_done = false, done = false, residual_done = false;
  auto run = [&](const Conv& conv) {
    if (conv.bias.defined() && run_cudnn(conv, true)) return bias_done = true;
    return run_cudnn(conv, false);
  };
  // The cuDNN path once, bias included, for the race with CUTLASS.
  auto run_with_bias = [&] {
    if (!run(c)) return false;
    if (c.bias.defined() && !bias_done) add_in_place(c.y, c.bias.view({1, O, 1, 1, 1}));
    return true;
  };
  // With autotuning on, the residual joins cuDNN's epilogue (after the bias) where it is laid out
  // as y and that was the faster on the case's first call (fuse_residual_chosen); on every other
  // path (the plain graph, CUTLASS, whose epilogue here has no source operand, im2col) it is
  // added to the rounded result.
  if (residual.defined() && residual.dtype() == dt && residual.strides() == c.y.strides() && !force_im2col &&
      conv_autotune()) {
    Conv with = c;
    with.residual = residual;
    auto fused = [&] { return run_cudnn(with, with.bias.defined()); };
    auto plain = [&] {
      if (!run_with_bias()) return false;
      add_in_place(c.y, residual);
      return true;
    };
    if (fuse_residual_chosen(with, fused, plain) && fused()) done = bias_done = residual_done = true;
  }
  if (!done && !force_im2col && active().settings().conv_direct && c.x.dtype() == DType::BF16 && c.channels_last &&
      c.w.size(0) <= kConv3dDirectMaxOut) {
    const Conv3dDirectProblem d{c.x, c.w, c.bias, c.y, c.pad_before, c.pad_after, c.stride};
    const std::string why = conv3d_direct_rejects(d);
    if (why.empty()) {
      conv3d_direct(d);
      done = bias_done = true;
    } else {
      spdlog::debug("conv3d: the direct kernel does not take {}: {}", conv_str(c), why);
    }
  }
  if (!done && !force_im2col && run_cutlass_if_chosen(c, run_with_bias)) done = bias_done = true;
  if (!force_im2col && !done) {
    done = run(c);
    if (!done && !c.x.is_contiguous()) {  // retry in plain NCDHW
      Conv plain = c;
      plain.channels_last = false;
      plain.x = c.x.contiguous();
      plain.w = c.w.contiguous();
      if (c.channels_last) plain.y = Tensor::empty(out_shape, dt, x.device());
      done = run(plain);
      if (done && c.channels_last) c.y.copy_(plain.y);
    }
  }
  if (!done) {
    spdlog::debug("conv3d: no cuDNN engine for {}; using im2col + GEMM", conv_str(c));
    conv_im2col(c);
  }
  // Added in place: while the convolution's input is still alive (the caller's), a new buffer
  // for the sum would raise the peak by one output.
  if (c.bias.defined() && !bias_done) add_in_place(c.y, c.bias.view({1, O, 1, 1, 1}));
  if (residual.defined() && !residual_done) add_in_place(c.y, residual.to(dt));
  return c.y.to(x.dtype());
}

}  // namespace vgen::cuda
