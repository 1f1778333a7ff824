// What is particular to the CUDA backend and is not one op's values against the CPU (those are
// all in tests/ops/backend_ops_test.cpp): host round trips of every dtype, fills the CPU cannot
// do, refusals, the layouts of outputs, which attention implementation runs and that the kernel
// choice, TF32 and GEMM autotuning belong to the execution context, the im2col convolution
// fallback, and matmul_float32_out. Skipped when no CUDA device is usable.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "core/error.h"
#include "core/random.h"
#include "ops/backend.h"
#include "ops/ops.h"
#include "ops/channel_norm_shapes.h"
#include "support/gpu.h"
#include "support/parity.h"
#ifdef VGEN_WITH_CUDA
#include "backends/cuda/attention.h"
#include "backends/cuda/conv3d_direct.h"
#include "backends/cuda/flash_attention_sm90.h"
#include "backends/cuda/sage_attention_sm90.h"
#include "backends/cuda/cuda_backend.h"
#endif

using namespace vgen;
using vgen::testing::kGpu;
using vgen::testing::rel_l2;
using vgen::testing::ScopedContext;
using vgen::testing::with_attention;
using vgen::testing::with_gemm_autotune;
using vgen::testing::with_tf32;

namespace {

const DType kAllDtypes[] = {DType::F32,  DType::F16, DType::BF16, DType::F8_E4M3, DType::F8_E5M2,
                            DType::F64,  DType::I64, DType::I32,  DType::U8,      DType::BOOL};

uint64_t g_seed = 7000;

// Standard normal values (times `scale`) in `dtype`, on the CPU; a fresh seed each call.
Tensor rnd(const Shape& shape, DType dtype = DType::F32, float scale = 1.0f) {
  Tensor t = randn(shape, ++g_seed);
  if (scale != 1.0f) t = ops::scale(t, scale);
  return t.to(dtype);
}

// Random bytes viewed as `dtype` (every bit pattern, NaNs included), on the CPU.
Tensor random_bytes(const Shape& shape, DType dtype) {
  const size_t n = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  auto buf = std::make_shared<std::vector<uint8_t>>(n);
  std::mt19937_64 gen(++g_seed);
  for (auto& b : *buf) b = static_cast<uint8_t>(gen());
  if (dtype == DType::BOOL)
    for (auto& b : *buf) b &= 1;
  return Tensor::from_blob(buf->data(), shape, dtype, Device::cpu(), buf).clone();
}

Tensor gpu(const Tensor& t) { return t.defined() ? t.to(kGpu) : t; }
Tensor host(const Tensor& t) { return t.to(Device::cpu()); }
Tensor f32(const Tensor& t) { return t.defined() ? t.to(DType::F32) : t; }

// The bytes of t (contiguous, on the CPU).
std::vector<uint8_t> bytes(const Tensor& t) {
  const Tensor c = host(t).contiguous();
  const auto* p = static_cast<const uint8_t*>(c.raw_data());
  return std::vector<uint8_t>(p, p + c.nbytes());
}

void expect_close(const Tensor& got, const Tensor& want, double tol, const std::string& what) {
  ASSERT_TRUE(got.device().is_cuda()) << what;
  ASSERT_EQ(got.shape(), want.shape()) << what;
  const double err = rel_l2(got, want);
  EXPECT_FALSE(std::isnan(err)) << what << ": unwritten (NaN) elements";
  EXPECT_LT(err, tol) << what << " (" << got.str() << ")";
}

// Fills freed device memory with NaN so that outputs allocated next start poisoned.
void poison_pool(int64_t nbytes) {
  for (int i = 0; i < 3; ++i) Tensor::full({nbytes / 4 + 64 * i + 1}, NAN, DType::F32, kGpu);
}

// A CPU tensor filled by the CPU backend (which refuses F8 targets: zero bytes there).
Tensor cpu_filled(const Shape& shape, DType dt, float value) {
  Tensor t = Tensor::empty(shape, dt);
  if (dt == DType::F8_E4M3 || dt == DType::F8_E5M2) std::memset(t.raw_data(), 0, t.nbytes());
  else cpu::cpu_backend().fill(t, value);
  return t;
}

// [B, S, H, D] memory seen as [B, H, S, D], as the models pass q/k/v to attention.
Tensor bshd_view(const Tensor& bshd) { return bshd.permute({0, 2, 1, 3}); }

// Shows the backends' debug lines (which cuDNN graphs were rejected and why) while alive.
struct DebugLog {
  spdlog::level::level_enum saved = spdlog::get_level();
  DebugLog() { spdlog::set_level(spdlog::level::debug); }
  ~DebugLog() { spdlog::set_level(saved); }
};

}  // namespace

// ---- Copies and fills ------------------------------------------------------------------------

TEST(CudaBackend, HostRoundTripOfEveryDtypeIsBitExact) {
  SKIP_WITHOUT_GPU();
  for (DType dt : kAllDtypes) {
    const std::string what(dtype_name(dt));
    const Tensor src = random_bytes({3, 37, 5}, dt);
    const Tensor dev = src.to(kGpu);
    EXPECT_EQ(bytes(dev), bytes(src)) << what;
    // Device -> device (same dtype, contiguous) and back.
    EXPECT_EQ(bytes(dev.clone()), bytes(src)) << what << " clone";
    // A strided host source and a strided device destination.
    const Tensor view = src.permute({2, 0, 1}).narrow(1, 1, 2);
    EXPECT_EQ(bytes(view.to(kGpu)), bytes(view)) << what << " strided upload";
    Tensor dst_dev = random_bytes({5, 4, 40}, dt).to(kGpu);
    Tensor dst_cpu = host(dst_dev);
    dst_dev.narrow(1, 1, 2).narrow(2, 3, 37).copy_(view);
    dst_cpu.narrow(1, 1, 2).narrow(2, 3, 37).copy_(view);
    EXPECT_EQ(bytes(dst_dev), bytes(dst_cpu)) << what << " strided upload into a strided device view";
    // A strided device source into a strided host destination.
    Tensor out_cpu = random_bytes({37, 3, 7}, dt);
    Tensor want = out_cpu.clone();
    out_cpu.narrow(2, 2, 5).copy_(dev.permute({1, 0, 2}));
    want.narrow(2, 2, 5).copy_(src.permute({1, 0, 2}));
    EXPECT_EQ(bytes(out_cpu), bytes(want)) << what << " strided download into a strided host view";
  }
}

// Conversions to F8 are refused, as on the CPU.
TEST(CudaBackend, ConversionsToF8AreRefused) {
  SKIP_WITHOUT_GPU();
  for (DType sd : kAllDtypes) {
    if (sd == DType::F8_E4M3) continue;
    const Tensor src = random_bytes({4, 6, 11}, sd).to(kGpu);
    EXPECT_THROW(src.to(DType::F8_E4M3), Error) << dtype_name(sd);
  }
}

// Fills the CPU reference cannot run (it fills contiguous tensors only, and no F8): strided
// views (the rest must stay untouched) and F8 zeros; F8 fills of other values are refused.
TEST(CudaBackend, FillsOfStridedViewsAndF8) {
  SKIP_WITHOUT_GPU();
  for (DType dt : kAllDtypes) {
    const bool f8 = dt == DType::F8_E4M3 || dt == DType::F8_E5M2;
    for (float value : {0.0f, 2.75f, -1.5f}) {
      if (f8 && value != 0.0f) {
        EXPECT_THROW(Tensor::full({3}, value, dt, kGpu), Error);
        continue;
      }
      const std::string what = fmt::format("{} {}", dtype_name(dt), value);
      if (f8) {
        for (int64_t n : {1, 7, 64, 1001})
          EXPECT_EQ(bytes(Tensor::full({n}, value, dt, kGpu)), bytes(cpu_filled({n}, dt, value))) << what << " n=" << n;
      }
      const Tensor base = random_bytes({6, 9, 5}, dt);
      Tensor g = base.to(kGpu);
      Tensor c = base.clone();
      backend_for(kGpu).fill(g.narrow(1, 2, 5).transpose(0, 2), value);
      c.narrow(1, 2, 5).transpose(0, 2).copy_(cpu_filled({5, 5, 6}, dt, value));
      EXPECT_EQ(bytes(g), bytes(c)) << what << " strided";
      if (f8) {
        Tensor g2 = base.to(kGpu);
        Tensor c2 = base.clone();
        backend_for(kGpu).fill(g2.view({270}).narrow(0, 1, 263), value);
        c2.view({270}).narrow(0, 1, 263).copy_(cpu_filled({263}, dt, value));
        EXPECT_EQ(bytes(g2), bytes(c2)) << what << " offset";
      }
    }
  }
}

// ---- Refusals ----------------------------------------------------------------------------------

// Ids out of the vocabulary are refused on the device as on the CPU.
TEST(CudaBackend, EmbeddingChecksIds) {
  SKIP_WITHOUT_GPU();
  const Tensor table = gpu(rnd({10, 8}));
  EXPECT_THROW(ops::embedding(Tensor::from_vector_i64({1, 10}, {2}).to(kGpu), table), Error);
  EXPECT_THROW(ops::embedding(Tensor::from_vector_i64({-1}, {1}).to(kGpu), table), Error);
}

// ---- Layouts of outputs ------------------------------------------------------------------------

// Ops on channels-last 3-D inputs (the VAE's layout on a GPU) give channels-last outputs; their
// values are held to the CPU by the table (backend_ops_test.cpp, the "channels-last" cases).
TEST(CudaBackend, ChannelsLastOutputsKeepTheirLayout) {
  SKIP_WITHOUT_GPU();
  for (DType dt : {DType::F32, DType::BF16}) {
    const std::string name(dtype_name(dt));
    const Tensor ga = gpu(rnd({2, 16, 3, 5, 7}, dt)).to_channels_last_3d();
    const Tensor gb = gpu(rnd({2, 16, 3, 5, 7}, dt)).to_channels_last_3d();
    const Tensor plain = gpu(rnd({2, 16, 3, 5, 7}, dt));
    EXPECT_TRUE(ops::silu(ga).is_channels_last_3d()) << name << " silu";
    EXPECT_TRUE(ops::add(ga, gb).is_channels_last_3d()) << name << " add";
    EXPECT_TRUE(ops::add(plain, gb).is_channels_last_3d()) << name << " add, NCDHW + channels-last";
    EXPECT_TRUE(ops::axpby(0.5f, ga, -2.0f, gb).is_channels_last_3d()) << name << " axpby";
    EXPECT_TRUE(ops::cat({ga.narrow(2, 1, 2), ga}, 2).is_channels_last_3d()) << name << " cat";
    EXPECT_TRUE(ops::pad(ops::pad(ga, 4, 0, 1), 3, 0, 1).is_channels_last_3d()) << name << " pad";
    EXPECT_TRUE(ops::pad(plain, 4, 0, 1).is_contiguous()) << name << " pad, NCDHW";
    // Channel norms (with and without the fused SiLU) keep the layout they are given.
    for (const Shape& shape : vgen::testing::kChannelNormShapes) {
      for (bool bias : {false, true}) {
        for (Activation act : {Activation::None, Activation::Silu}) {
          for (bool channels_last : {false, true}) {
            const int64_t C = shape[1];
            Tensor x = gpu(rnd(shape, dt));
            if (channels_last) x = x.to_channels_last_3d();
            const Tensor y =
                ops::channel_rms_norm(x, gpu(rnd({C, 1, 1, 1}, dt)), bias ? gpu(rnd({C})) : Tensor(), act);
            EXPECT_EQ(y.is_channels_last_3d(), channels_last) << name << " channel_rms_norm " << shape_str(shape);
          }
        }
      }
    }
    // Group norms likewise (FLUX VAE-like and odd channel counts, one frame or several).
    for (const auto& [shape, groups] : std::vector<std::pair<Shape, int64_t>>{
             {{1, 128, 1, 9, 16}, 32}, {{2, 96, 1, 33, 47}, 32}, {{2, 6, 1, 7, 13}, 3}, {{1, 40, 2, 5, 6}, 8}}) {
      for (Activation act : {Activation::None, Activation::Silu}) {
        for (bool channels_last : {false, true}) {
          const int64_t C = shape[1];
          Tensor x = gpu(rnd(shape, dt));
          if (channels_last) x = x.to_channels_last_3d();
          const Tensor y = ops::group_norm(x, gpu(rnd({C}, dt)), gpu(rnd({C}, dt)), groups, 1e-6f, act);
          EXPECT_EQ(y.is_channels_last_3d(), channels_last) << name << " group_norm " << shape_str(shape);
          EXPECT_EQ(y.is_contiguous(), !channels_last) << name << " group_norm " << shape_str(shape);
        }
      }
    }
    // Convolutions: the output is laid out as the input (a 1-channel output is both).
    struct Conv {
      Shape x, w;
      std::array<int64_t, 3> stride, padding;
      int64_t before;
    };
    for (const Conv& c : std::vector<Conv>{{{2, 16, 4, 9, 11}, {24, 16, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, -1},
                                           {{1, 32, 5, 12, 10}, {32, 32, 3, 3, 3}, {1, 1, 1}, {0, 1, 1}, 2},
                                           {{1, 16, 3, 8, 8}, {8, 16, 1, 3, 3}, {1, 1, 1}, {0, 1, 1}, -1},
                                           {{1, 24, 3, 8, 8}, {3, 24, 3, 3, 3}, {1, 1, 1}, {0, 1, 1}, 2},
                                           {{1, 16, 2, 6, 6}, {32, 16, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, -1},
                                           {{1, 3, 3, 9, 7}, {8, 3, 3, 3, 3}, {1, 1, 1}, {0, 1, 1}, 2},
                                           {{1, 16, 5, 12, 10}, {32, 16, 3, 3, 3}, {1, 2, 2}, {0, 1, 1}, 2},
                                           {{2, 24, 3, 8, 8}, {3, 24, 3, 3, 3}, {1, 1, 1}, {0, 1, 1}, 2}}) {
      Conv3dParams p;
      p.stride = c.stride;
      p.padding = c.padding;
      p.time_padding_before = c.before;
      const Tensor x = gpu(rnd(c.x, dt)), w = gpu(rnd(c.w, dt, 0.2f)), b = gpu(rnd({c.w[0]}, dt));
      const std::string what = name + " conv3d " + shape_str(c.x) + " * " + shape_str(c.w);
      EXPECT_TRUE(ops::conv3d(x.to_channels_last_3d(), w, b, p).is_channels_last_3d()) << what;
      EXPECT_TRUE(ops::conv3d(x, w, b, p).is_contiguous()) << what << " NCDHW";
    }
  }
}

// ---- GEMM autotuning belongs to the context ----------------------------------------------------

// Two contexts alive at once, one timing cuBLASLt's candidates per shape and one taking the
// heuristic's first, used in turns (the second round reuses the cached plans): both hold the
// CPU's values within the backend-ops bounds. Algorithms may differ in the last bits (split-K,
// tile order), never beyond these: float32 1e-5 (2e-5 for K = 1024, longer sums), 16-bit 1e-2
// (one rounding of the output); the FP8 GEMMs 1e-2 for a bf16 output, fast accumulation too.
// All but the first shape are above kBlasAutotuneMinFlops (2^27), so that they are timed.
TEST(CudaBackend, GemmAutotuneBelongsToTheContext) {
  SKIP_WITHOUT_GPU();
  struct Case {
    DType d;
    Shape xs;
    int64_t N;
    bool bias;
    Activation act;
    double tol;
  };
  const std::vector<Case> cases = {
      {DType::F32, {3, 13, 71}, 45, true, Activation::None, 1e-5},
      {DType::F32, {257, 1024}, 320, true, Activation::Silu, 2e-5},
      {DType::BF16, {2, 300, 1024}, 640, true, Activation::GeluTanh, 1e-2},
      {DType::F16, {384, 512}, 512, false, Activation::None, 1e-2},
  };
  std::vector<std::array<Tensor, 4>> inputs;  // x, w, b, the CPU's result
  for (const Case& c : cases) {
    const Tensor x = rnd(c.xs, c.d), w = rnd({c.N, c.xs.back()}, c.d, 0.05f), b = c.bias ? rnd({c.N}, c.d, 0.1f) : Tensor();
    inputs.push_back({x, w, b, ops::linear(x, w, b, c.act)});
  }
  // FP8 per-tensor and blockwise, bf16 in and out, with and without fast accumulation.
  const Tensor qx = rnd({512, 512}, DType::BF16), qw = rnd({384, 512}, DType::F32, 0.05f), qb = rnd({384}, DType::BF16, 0.1f);
  std::vector<QuantizedWeight> qweights;
  std::vector<Tensor> qwant;
  for (QuantFormat f : {QuantFormat::Fp8PerTensor, QuantFormat::Fp8Block})
    for (bool fast : {false, true}) {
      QuantizedWeight w = quantize_weight(qw, f, "w");
      w.fast_accum = fast;  // the CPU has no fast accumulation: the same reference
      qwant.push_back(ops::quantized_linear(qx, w, qb, Activation::None));
      qweights.push_back(w.to(kGpu));
    }

  ExecutionContext tuned(kGpu, with_gemm_autotune(true));
  ExecutionContext untuned(kGpu, with_gemm_autotune(false));
  for (int round = 0; round < 2; ++round) {
    for (ExecutionContext* context : {&tuned, &untuned}) {
      const ContextScope scope(*context);
      const std::string which = fmt::format("autotune {}, round {}", context->settings().gemm_autotune, round);
      for (size_t i = 0; i < cases.size(); ++i) {
        const Case& c = cases[i];
        const auto& [x, w, b, want] = inputs[i];
        expect_close(ops::linear(gpu(x), gpu(w), gpu(b), c.act), want, c.tol,
                     fmt::format("linear {} {} x [{}, {}], {}", dtype_name(c.d), shape_str(c.xs), c.N, c.xs.back(), which));
      }
      for (size_t i = 0; i < qweights.size(); ++i)
        expect_close(ops::quantized_linear(gpu(qx), qweights[i], gpu(qb), Activation::None), qwant[i], 1e-2,
                     fmt::format("quantized_linear {}{}, {}", quant_format_name(qweights[i].format),
                                 qweights[i].fast_accum ? " fast accumulation" : "", which));
    }
  }
}

#ifdef VGEN_WITH_CUDA

// Attention returns [B, H, Sq, D] as a view of [B, Sq, H, D] memory (what the output
// projection reads); the fused RMSNorm + RoPE returns contiguous [B, S, H, D].
TEST(CudaBackend, AttentionAndRmsNormRopeOutputLayouts) {
  SKIP_WITHOUT_GPU();
  // The cuDNN, math and reference paths, with and without a bias.
  for (const std::string& kernel : {"cudnn", "flash", "reference"}) {
    const ScopedContext context(kGpu, with_attention(kernel));
    for (DType dt : {DType::BF16, DType::F16, DType::F32}) {
      for (int64_t D : {128, 64, 384, 20}) {
        for (bool bias : {false, true}) {
          const Tensor q = bshd_view(gpu(rnd({2, 77, 3, D}, dt))), k = bshd_view(gpu(rnd({2, 50, 3, D}, dt)));
          const Tensor b = bias ? gpu(rnd({2, 1, 1, 50}, dt)) : Tensor();
          const Tensor out = ops::attention(q, k, k, b, 0.1f);
          EXPECT_TRUE(out.permute({0, 2, 1, 3}).is_contiguous())
              << kernel << " " << dtype_name(dt) << " D" << D << (bias ? " bias" : "") << ": path "
              << cuda::attention_path(q, k, k, b, 0.1f);
        }
      }
    }
  }
  // Slices of a fused projection (both parts) and a permuted input.
  for (DType dt : {DType::BF16, DType::F32}) {
    const Tensor qkv = gpu(rnd({2, 37, 3 * 12 * 128}, dt));
    for (int64_t part : {0, 1}) {
      const Tensor x = qkv.view({2, 37, 3, 12, 128}).select(2, part);
      const Tensor y =
          ops::rms_norm_rope(x, gpu(rnd({12 * 128}, dt)), 1e-6f, gpu(rnd({37, 128})), gpu(rnd({37, 128})));
      EXPECT_TRUE(y.is_contiguous()) << dtype_name(dt) << " part " << part;
    }
    const Tensor p = bshd_view(gpu(rnd({2, 4, 7, 16}, dt)));
    EXPECT_TRUE(ops::rms_norm_rope(p, gpu(rnd({4 * 16}, dt)), 1e-6f, gpu(rnd({7, 16})), gpu(rnd({7, 16}))).is_contiguous())
        << dtype_name(dt) << " permuted";
  }
}

// ---- Attention: which implementation runs ------------------------------------------------------

// Each execution context keeps its own kernel choice: two alive at once do not affect each
// other, and an unknown name is refused when the context is made.
TEST(CudaBackend, KernelChoiceBelongsToTheContext) {
  SKIP_WITHOUT_GPU();
  ExecutionContext reference(kGpu, with_attention("reference"));
  ExecutionContext cudnn(kGpu, with_attention("cudnn"));
  const Tensor q = bshd_view(Tensor::empty({1, 64, 2, 128}, DType::BF16, kGpu));
  for (int round = 0; round < 2; ++round) {
    {
      const ContextScope scope(reference);
      EXPECT_EQ(cuda::attention_backend(), "reference");
      EXPECT_EQ(cuda::attention_path(q, q, q, {}), "reference");
    }
    {
      const ContextScope scope(cudnn);
      EXPECT_EQ(cuda::attention_backend(), "cudnn");
      EXPECT_EQ(cuda::attention_path(q, q, q, {}), "cudnn");
    }
  }
  EXPECT_THROW(ExecutionContext(kGpu, with_attention("flash9")), Error);
}

// vgen's Hopper kernel ("flash", sm_90 only): it takes BF16 without bias at head dims 64 and
// 128 and leaves the rest to cuDNN; on the same inputs its error against float32 (the CPU on
// the same BF16 values) is no worse than cuDNN's.
TEST(CudaBackend, FlashKernelIsAsExactAsCudnn) {
  SKIP_WITHOUT_GPU();
  const ScopedContext context(kGpu, with_attention("flash"));
  {
    const Tensor q = bshd_view(Tensor::empty({1, 64, 2, 128}, DType::BF16, kGpu));
    const std::string why = cuda::flash_attention_sm90_rejects(q, q, q, {});
    if (!why.empty()) GTEST_SKIP() << "the flash kernel does not run here: " << why;
    EXPECT_EQ(cuda::attention_backend(), "flash");
    EXPECT_EQ(cuda::attention_path(q, q, q, {}), "flash");
    // What it leaves to cuDNN: a bias, F16, head dim 96.
    EXPECT_EQ(cuda::attention_path(q, q, q, gpu(rnd({1, 1, 1, 64}, DType::BF16))), "cudnn");
    const Tensor h = bshd_view(Tensor::empty({1, 64, 2, 128}, DType::F16, kGpu));
    EXPECT_EQ(cuda::attention_path(h, h, h, {}), "cudnn");
    const Tensor d96 = bshd_view(Tensor::empty({1, 64, 2, 96}, DType::BF16, kGpu));
    EXPECT_EQ(cuda::attention_path(d96, d96, d96, {}), "cudnn");
    // "auto": the kernel for long key sets at head dim 128, cuDNN for short ones.
    const ScopedContext automatic(kGpu, with_attention("auto"));
    const Tensor sq = bshd_view(Tensor::empty({1, 256, 2, 128}, DType::BF16, kGpu));
    const Tensor long_k = bshd_view(Tensor::empty({1, 4096, 2, 128}, DType::BF16, kGpu));
    const Tensor short_k = bshd_view(Tensor::empty({1, 512, 2, 128}, DType::BF16, kGpu));
    EXPECT_EQ(cuda::attention_backend(), "auto");
    EXPECT_EQ(cuda::attention_path(sq, long_k, long_k, {}), "flash");
    EXPECT_EQ(cuda::attention_path(sq, short_k, short_k, {}), "cudnn");
  }
  ExecutionContext cudnn(kGpu, with_attention("cudnn"));
  for (const auto& s : std::vector<std::array<int64_t, 6>>{{1, 2, 1000, 1000, 128, 1},
                                                           {2, 3, 777, 512, 128, 1},
                                                           {1, 4, 333, 769, 128, 3},
                                                           {2, 2, 1000, 512, 64, 1},
                                                           {1, 2, 77, 333, 64, 2},
                                                           {1, 1, 5, 7, 128, 1},
                                                           {2, 1, 129, 1, 64, 1},
                                                           {1, 3, 4096, 4096, 128, 1}}) {
    const int64_t B = s[0], H = s[1], Sq = s[2], Sk = s[3], D = s[4];
    const float mag = static_cast<float>(s[5]);  // input scale: 3 gives peaked softmax rows
    const Tensor q = rnd({B, Sq, H, D}, DType::BF16, mag), k = rnd({B, Sk, H, D}, DType::BF16, mag),
                 v = rnd({B, Sk, H, D}, DType::BF16);
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    const Tensor want = ops::attention(bshd_view(q.to(DType::F32)), bshd_view(k.to(DType::F32)),
                                       bshd_view(v.to(DType::F32)), {}, scale);
    auto run = [&] {
      return ops::attention(bshd_view(gpu(q)), bshd_view(gpu(k)), bshd_view(gpu(v)), {}, scale).to(Device::cpu()).to(DType::F32);
    };
    const std::string name = fmt::format("B{} H{} Sq{} Sk{} D{} x{}", B, H, Sq, Sk, D, s[5]);
    EXPECT_EQ(cuda::attention_path(bshd_view(gpu(q)), bshd_view(gpu(k)), bshd_view(gpu(v)), {}, scale), "flash") << name;
    const double flash_err = rel_l2(run(), want);
    double cudnn_err = 0;
    {
      const ContextScope scope(cudnn);
      cudnn_err = rel_l2(run(), want);
    }
    std::printf("flash attention %s: rel L2 vs float32 %.3e (cuDNN %.3e)\n", name.c_str(), flash_err, cudnn_err);
    EXPECT_LE(flash_err, cudnn_err * 1.02 + 1e-6) << name;
  }
}

// The quantized kernel ("sage", sm_90 only, opt-in): where it runs and where the exact kernels
// do, and its error against float32 beside the flash kernel's on the same inputs (random
// inputs: flat softmax rows, the quantization's worst case; x3: peaked rows).
TEST(CudaBackend, SageKernelRunsWhereAskedAndReportsItsError) {
  SKIP_WITHOUT_GPU();
  ScopedContext context(kGpu, with_attention("sage"));
  const Tensor sq = bshd_view(Tensor::empty({1, 256, 2, 128}, DType::BF16, kGpu));
  const Tensor long_k = bshd_view(Tensor::empty({1, 4096, 2, 128}, DType::BF16, kGpu));
  const std::string why = cuda::sage_attention_sm90_rejects(sq, long_k, long_k, {});
  if (!why.empty()) GTEST_SKIP() << "the sage kernel does not run here: " << why;
  EXPECT_EQ(cuda::attention_backend(), "sage");
  EXPECT_EQ(cuda::attention_path(sq, long_k, long_k, {}), "sage");
  // What it leaves to the exact kernels ("auto"'s choice): short key sets, a bias, head dim 64.
  const Tensor short_k = bshd_view(Tensor::empty({1, 512, 2, 128}, DType::BF16, kGpu));
  EXPECT_EQ(cuda::attention_path(sq, short_k, short_k, {}), "cudnn");
  EXPECT_EQ(cuda::attention_path(sq, long_k, long_k, gpu(rnd({1, 1, 1, 4096}, DType::BF16))), "cudnn");
  const Tensor d64 = bshd_view(Tensor::empty({1, 4096, 2, 64}, DType::BF16, kGpu));
  EXPECT_EQ(cuda::attention_path(d64, d64, d64, {}), "cudnn");
  const ScopedContext flash(kGpu, with_attention("flash"));
  for (float mag : {1.0f, 3.0f}) {
    const int64_t B = 1, H = 3, Sq = 1000, Sk = 5000, D = 128;
    const Tensor q = rnd({B, Sq, H, D}, DType::BF16, mag), k = rnd({B, Sk, H, D}, DType::BF16, mag),
                 v = rnd({B, Sk, H, D}, DType::BF16);
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    const Tensor want = ops::attention(bshd_view(q.to(DType::F32)), bshd_view(k.to(DType::F32)),
                                       bshd_view(v.to(DType::F32)), {}, scale);
    const Tensor exact = ops::attention(bshd_view(gpu(q)), bshd_view(gpu(k)), bshd_view(gpu(v)), {}, scale);
    Tensor quant;
    {
      const ContextScope sage(context.context());
      quant = ops::attention(bshd_view(gpu(q)), bshd_view(gpu(k)), bshd_view(gpu(v)), {}, scale);
    }
    const double e_exact = rel_l2(exact.to(Device::cpu()).to(DType::F32), want);
    const double e_quant = rel_l2(quant.to(Device::cpu()).to(DType::F32), want);
    std::printf("[ sage    ] inputs x%.0f: rel L2 against float32: sage %.5f, flash (bf16) %.5f\n", mag, e_quant, e_exact);
    EXPECT_LT(e_quant, 0.08);
    EXPECT_GT(e_quant, e_exact);
  }
}

// 16-bit self and cross attention without a bias is cuDNN's (no fallback to the reference).
TEST(CudaBackend, CudnnTakesSixteenBitAttention) {
  SKIP_WITHOUT_GPU();
  const ScopedContext context(kGpu, with_attention("cudnn"));
  for (DType dt : {DType::BF16, DType::F16}) {
    for (const auto& s : std::vector<std::array<int64_t, 5>>{
             {2, 3, 1000, 1000, 128}, {1, 4, 999, 512, 128}, {2, 2, 1000, 512, 64}, {1, 2, 77, 333, 64}, {1, 2, 200, 300, 128}}) {
      const Tensor q = bshd_view(Tensor::empty({s[0], s[2], s[1], s[4]}, dt, kGpu));
      const Tensor k = bshd_view(Tensor::empty({s[0], s[3], s[1], s[4]}, dt, kGpu));
      EXPECT_EQ(cuda::attention_path(q, k, k, {}), "cudnn")
          << dtype_name(dt) << " B" << s[0] << " H" << s[1] << " Sq" << s[2] << " Sk" << s[3] << " D" << s[4];
    }
  }
}

// 16-bit attention cuDNN does not take (head dims above 256 as in the Wan VAE's mid block,
// head dims not a multiple of 8) goes to the tensor-core math path by itself; float32 keeps
// the exact reference.
TEST(CudaBackend, MathPathForWhatCudnnRefuses) {
  SKIP_WITHOUT_GPU();
  const ScopedContext context(kGpu, with_attention("cudnn"));
  for (DType dt : {DType::BF16, DType::F16}) {
    for (const auto& s : std::vector<std::array<int64_t, 5>>{{1, 1, 780, 780, 384}, {1, 2, 100, 90, 20}}) {
      const Tensor q = bshd_view(Tensor::empty({s[0], s[2], s[1], s[4]}, dt, kGpu));
      const Tensor k = bshd_view(Tensor::empty({s[0], s[3], s[1], s[4]}, dt, kGpu));
      EXPECT_EQ(cuda::attention_path(q, k, k, {}), "math") << dtype_name(dt) << " D" << s[4];
    }
  }
  const Tensor q = Tensor::empty({1, 1, 64, 384}, DType::F32, kGpu);
  EXPECT_EQ(cuda::attention_path(q, q, q, {}), "reference");
}

// ---- TF32 belongs to the context -------------------------------------------------------------

// Two contexts alive at once, one with TF32 and one without, used in turns: the one without
// stays exact float32 (1e-5 against the CPU), the one with TF32 within TF32 rounding (5e-3).
TEST(CudaBackend, Tf32BelongsToTheContext) {
  SKIP_WITHOUT_GPU();
  const Tensor x = rnd({1, 32, 4, 12, 10}), w = rnd({32, 32, 3, 3, 3}, DType::F32, 0.2f), b = rnd({32});
  Conv3dParams p;
  p.padding = {0, 1, 1};
  p.time_padding_before = 2;
  const Tensor want = ops::conv3d(x, w, b, p);  // CPU
  ExecutionContext exact(kGpu, with_tf32(false));
  ExecutionContext fast(kGpu, with_tf32(true));
  for (int round = 0; round < 2; ++round) {
    {
      const ContextScope scope(exact);
      expect_close(ops::conv3d(gpu(x), gpu(w), gpu(b), p), want, 1e-5, fmt::format("tf32 off, round {}", round));
    }
    {
      const ContextScope scope(fast);
      expect_close(ops::conv3d(gpu(x), gpu(w), gpu(b), p), want, 5e-3, fmt::format("tf32 on, round {}", round));
    }
  }
}

// ---- The im2col convolution fallback ---------------------------------------------------------

namespace {

void check_im2col(const Shape& xs, const Shape& ws, bool with_bias, const Conv3dParams& p, DType dt,
                  const std::string& what, bool strided_x = false) {
  // strided_x: x is frames [1, T+1) of a longer clip (a non-contiguous view).
  Shape big = xs;
  if (strided_x) big[2] += 2;
  const Tensor xb = rnd(big, dt), w = rnd(ws, dt, 0.2f), b = with_bias ? rnd({ws[0]}, dt) : Tensor();
  const Tensor x = strided_x ? xb.narrow(2, 1, xs[2]) : xb;
  const Tensor want = ops::conv3d(x, w, b, p);  // CPU
  const Tensor gx = strided_x ? gpu(xb).narrow(2, 1, xs[2]) : gpu(xb);
  poison_pool(want.numel() * 4);
  const Tensor got = ops::conv3d(gx, gpu(w), gpu(b), p);
  EXPECT_EQ(got.dtype(), dt) << what;
  EXPECT_TRUE(got.is_contiguous()) << what;
  // TF32 is off in the scope: true float32.
  expect_close(got, want, dt == DType::F32 ? 1e-5 : 1e-2, std::string(dtype_name(dt)) + " " + what);
}

Conv3dParams params(std::array<int64_t, 3> stride, std::array<int64_t, 3> padding, int64_t before = -1) {
  Conv3dParams p;
  p.stride = stride;
  p.padding = padding;
  p.time_padding_before = before;
  return p;
}

}  // namespace

TEST(CudaBackend, Im2colFallbackMatchesCpu) {
  SKIP_WITHOUT_GPU();
  const ScopedContext exact(kGpu, with_tf32(false));
  const DebugLog debug;
  ASSERT_EQ(setenv("VGEN_CONV_IM2COL", "1", 1), 0);
  for (DType dt : {DType::F32, DType::BF16}) {
    check_im2col({2, 5, 4, 9, 11}, {7, 5, 3, 3, 3}, true, params({1, 1, 1}, {1, 1, 1}), dt, "im2col 3x3x3 same");
    check_im2col({1, 6, 5, 12, 10}, {8, 6, 3, 3, 3}, true, params({2, 2, 2}, {0, 1, 1}, 2), dt,
                 "im2col causal, stride 2", true);
    check_im2col({1, 4, 6, 7, 9}, {5, 4, 3, 1, 1}, false, params({2, 1, 1}, {1, 0, 0}, 0), dt,
                 "im2col time stride 2, padding after only", true);
    check_im2col({1, 4, 3, 7, 9}, {6, 4, 1, 2, 3}, true, params({1, 3, 2}, {0, 1, 2}), dt, "im2col odd kernel");
  }
  unsetenv("VGEN_CONV_IM2COL");
}

// vgen's direct kernel for few output channels, called directly (ops::conv3d picks it where it
// takes the case, so the op table's cases could pass on cuDNN alone): it takes the table's
// conv_out shapes, refuses what it cannot run, and matches the CPU on the same BF16 values.
TEST(CudaBackend, DirectConvTakesFewOutputChannels) {
  SKIP_WITHOUT_GPU();
  const ScopedContext context(kGpu, ExecutionSettings::from_environment());
  struct Case {
    Shape xs, ws;
    Conv3dParams p;
    bool bias;
  };
  const Case cases[] = {{{1, 32, 1, 9, 11}, {12, 32, 3, 3, 3}, params({1, 1, 1}, {0, 1, 1}, 2), true},
                        {{1, 48, 6, 7, 70}, {12, 48, 3, 3, 3}, params({1, 1, 1}, {0, 1, 1}, 0), true},
                        {{2, 16, 3, 13, 5}, {3, 16, 3, 3, 3}, params({1, 1, 1}, {1, 1, 1}), false},
                        {{1, 64, 4, 10, 130}, {16, 64, 3, 3, 3}, params({1, 1, 1}, {0, 1, 1}, 1), true}};
  for (const Case& c : cases) {
    const Tensor x = rnd(c.xs, DType::BF16), w = rnd(c.ws, DType::BF16, 0.2f);
    const Tensor b = c.bias ? rnd({c.ws[0]}, DType::BF16) : Tensor();
    const Tensor want = ops::conv3d(f32(x), f32(w), f32(b), c.p);
    cuda::Conv3dDirectProblem p;
    p.x = gpu(x).to_channels_last_3d();
    p.w = gpu(w);
    p.bias = gpu(b);
    p.y = Tensor::empty_channels_last_3d(want.shape(), DType::BF16, kGpu);
    p.pad_before = c.p.padding;
    p.pad_after = c.p.padding;
    if (c.p.time_padding_before >= 0) p.pad_before[0] = c.p.time_padding_before;
    const std::string why = cuda::conv3d_direct_rejects(p);
    if (why.find("needs an sm_80") == 0) GTEST_SKIP() << why;
    ASSERT_EQ(why, "") << x.str();
    cuda::conv3d_direct(p);
    expect_close(p.y, want, 1e-2, "direct conv " + x.str() + " * " + w.str());
  }
  // What it refuses: 17 outputs, 24 input channels, a 1x3x3 filter, stride 2, NCDHW input.
  auto problem = [](const Shape& xs, const Shape& ws, bool channels_last = true) {
    cuda::Conv3dDirectProblem p;
    p.x = channels_last ? Tensor::empty_channels_last_3d(xs, DType::BF16, kGpu) : Tensor::empty(xs, DType::BF16, kGpu);
    p.w = Tensor::empty(ws, DType::BF16, kGpu);
    p.y = Tensor::empty_channels_last_3d({xs[0], ws[0], xs[2] - ws[2] + 1, xs[3], xs[4]}, DType::BF16, kGpu);
    p.pad_before = {0, (ws[3] - 1) / 2, 1};
    p.pad_after = {0, (ws[3] - 1) / 2, 1};
    return p;
  };
  EXPECT_NE(cuda::conv3d_direct_rejects(problem({1, 32, 3, 8, 8}, {17, 32, 3, 3, 3})), "");
  EXPECT_NE(cuda::conv3d_direct_rejects(problem({1, 24, 3, 8, 8}, {12, 24, 3, 3, 3})), "");
  EXPECT_NE(cuda::conv3d_direct_rejects(problem({1, 32, 3, 8, 8}, {12, 32, 1, 3, 3})), "");
  EXPECT_NE(cuda::conv3d_direct_rejects(problem({1, 32, 3, 8, 8}, {12, 32, 3, 3, 3}, false)), "");
  cuda::Conv3dDirectProblem strided = problem({1, 32, 3, 8, 8}, {12, 32, 3, 3, 3});
  strided.stride = {1, 2, 2};
  EXPECT_NE(cuda::conv3d_direct_rejects(strided), "");
}

// ---- matmul_float32_out ------------------------------------------------------------------------

// 16-bit operands with the float32 product kept: float32 rounding of exact products.
TEST(CudaBackend, MatmulFloat32OutKeepsTheProduct) {
  SKIP_WITHOUT_GPU();
  for (DType dt : {DType::BF16, DType::F16}) {
    const Tensor a = rnd({3, 37, 129}, dt), b = rnd({3, 129, 61}, dt);
    const Tensor want = ops::matmul(f32(a), f32(b));
    const Tensor got = cuda::matmul_float32_out(gpu(a), gpu(b).transpose(-1, -2).contiguous().transpose(-1, -2));
    EXPECT_EQ(got.dtype(), DType::F32);
    expect_close(got, want, 1e-6, std::string(dtype_name(dt)) + " matmul_float32_out");
  }
}

#endif  // VGEN_WITH_CUDA
