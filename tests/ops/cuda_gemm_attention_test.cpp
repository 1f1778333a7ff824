// The CUDA backend's matrix products (cuBLASLt), attention (cuDNN SDPA and the reference) and
// 3-D convolution (cuDNN) against the CPU reference, on random data: odd and large sizes,
// strided and permuted views, broadcast operands and biases, bf16 and f32. Also the CPU
// convolution's asymmetric time padding. CUDA tests are skipped when no CUDA device is usable.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/random.h"
#include "ops/ops.h"
#include "support/gpu.h"
#include "support/parity.h"
#ifdef VGEN_WITH_CUDA
#include "backends/cuda/attention.h"
#include "backends/cuda/cuda_backend.h"
#endif

using namespace vgen;
using vgen::testing::rel_l2;
using vgen::testing::ScopedContext;
using vgen::testing::with_attention;
using vgen::testing::with_tf32;

namespace {

#define REQUIRE_CUDA()                                                                                \
  do {                                                                                                \
    if (!has_backend(DeviceType::CUDA)) GTEST_SKIP() << backend_unavailable_reason(DeviceType::CUDA); \
  } while (0)

const Device kGpu = Device::cuda(0);
uint64_t g_seed = 91000;

// Normal values times `scale`, rounded to `dtype`, on the CPU; a fresh seed each call.
Tensor rnd(const Shape& shape, DType dtype, float scale = 1.0f) {
  Tensor t = randn(shape, ++g_seed);
  if (scale != 1.0f) t = ops::scale(t, scale);
  return t.to(dtype);
}

Tensor gpu(const Tensor& t) { return t.defined() ? t.to(kGpu) : t; }
Tensor f32(const Tensor& t) { return t.defined() ? t.to(DType::F32) : t; }

// Fills freed device memory with NaN so that outputs allocated next start poisoned.
void poison_pool(int64_t nbytes) {
  for (int i = 0; i < 3; ++i) Tensor::full({nbytes / 4 + 64 * i + 1}, NAN, DType::F32, kGpu);
}

void expect_close(const Tensor& got, const Tensor& want, double tol, const std::string& what) {
  ASSERT_TRUE(got.device().is_cuda()) << what;
  ASSERT_EQ(got.shape(), want.shape()) << what;
  const double err = rel_l2(got, want);
  EXPECT_FALSE(std::isnan(err)) << what << ": unwritten (NaN) elements";
  EXPECT_LT(err, tol) << what << " (" << got.str() << ")";
}

double tol_for(DType d) { return d == DType::F32 ? 1e-5 : 1e-2; }

Tensor activate(Activation act, const Tensor& t) {
  switch (act) {
    case Activation::None:
      return t;
    case Activation::GeluTanh:
      return ops::gelu_tanh(t);
    case Activation::Gelu:
      return ops::gelu(t);
    case Activation::Silu:
      return ops::silu(t);
  }
  return t;
}

const char* act_name(Activation act) {
  switch (act) {
    case Activation::None:
      return "none";
    case Activation::GeluTanh:
      return "gelu_tanh";
    case Activation::Gelu:
      return "gelu";
    case Activation::Silu:
      return "silu";
  }
  return "?";
}

// [B, S, H, D] memory seen as [B, H, S, D], as the models pass q/k/v to attention.
Tensor bshd_view(const Tensor& bshd) { return bshd.permute({0, 2, 1, 3}); }

// Shows the backends' debug lines (which cuDNN graphs were rejected and why) while alive.
struct DebugLog {
  spdlog::level::level_enum saved = spdlog::get_level();
  DebugLog() { spdlog::set_level(spdlog::level::debug); }
  ~DebugLog() { spdlog::set_level(saved); }
};

// Median milliseconds of `iters` runs of f on the GPU (after two warm-up runs).
template <typename F>
double median_ms(int iters, F f) {
  for (int i = 0; i < 2; ++i) f();
  ops::synchronize(Device::cuda(0));
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    ops::synchronize(Device::cuda(0));
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

// ---- CPU: asymmetric time padding ----------------------------------------------------------

TEST(CpuConv3d, TimePaddingBeforeMatchesExplicitPad) {
  const Tensor x = rnd({2, 3, 5, 6, 7}, DType::F32), w = rnd({4, 3, 3, 3, 3}, DType::F32), b = rnd({4}, DType::F32);
  for (int64_t before : {0, 1, 2, 4}) {
    for (int64_t after : {0, 1}) {
      for (int64_t st : {1, 2}) {
        Conv3dParams p;
        p.stride = {st, 1, 2};
        p.padding = {after, 1, 0};
        p.time_padding_before = before;
        Conv3dParams explicit_p = p;
        explicit_p.padding[0] = 0;
        explicit_p.time_padding_before = -1;
        const Tensor want = ops::conv3d(ops::pad(x, 2, before, after), w, b, explicit_p);
        const Tensor got = ops::conv3d(x, w, b, p);
        ASSERT_EQ(got.shape(), want.shape()) << before << " " << after << " " << st;
        EXPECT_LT(rel_l2(got, want), 1e-6) << "before " << before << " after " << after << " stride " << st;
      }
    }
  }
  // -1 keeps the symmetric padding.
  Conv3dParams sym;
  sym.padding = {1, 1, 1};
  Conv3dParams same = sym;
  same.time_padding_before = 1;
  EXPECT_LT(rel_l2(ops::conv3d(x, w, b, sym), ops::conv3d(x, w, b, same)), 1e-7);
}

#ifdef VGEN_WITH_CUDA

// ---- linear ----------------------------------------------------------------------------------

namespace {

// x [.., K] (dtype dt), w [N, K], bias [N] (optional): every activation on the GPU against
// act(linear) of the same (dtype-rounded) values in float32 on the CPU.
void check_linear(const Tensor& x, const Tensor& w, const Tensor& b, double tol, const std::string& what,
                  const Tensor& gx = {}) {
  const Tensor pre = ops::linear(f32(x), f32(w), f32(b));  // CPU, float32
  const Tensor xg = gx.defined() ? gx : gpu(x);
  const Tensor wg = gpu(w), bg = gpu(b);
  for (Activation act : {Activation::None, Activation::GeluTanh, Activation::Gelu, Activation::Silu}) {
    poison_pool(static_cast<int64_t>(pre.numel()) * 4);
    const Tensor got = ops::linear(xg, wg, bg, act);
    EXPECT_EQ(got.dtype(), x.dtype()) << what;
    expect_close(got, activate(act, pre), tol, what + " act " + act_name(act));
  }
}

}  // namespace

TEST(CudaGemm, LinearEveryActivationOddSizes) {
  REQUIRE_CUDA();
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    const std::string d(dtype_name(dt));
    check_linear(rnd({3, 13, 71}, dt), rnd({45, 71}, dt, 0.2f), rnd({45}, dt), tol_for(dt), d + " odd");
    check_linear(rnd({1, 1, 8}, dt), rnd({1, 8}, dt), rnd({1}, dt), tol_for(dt), d + " 1x1");
    check_linear(rnd({5, 64}, dt), rnd({24, 64}, dt, 0.1f), Tensor(), tol_for(dt), d + " no bias");
  }
}

TEST(CudaGemm, LinearLarge) {
  REQUIRE_CUDA();
  for (DType dt : {DType::F32, DType::BF16}) {
    const Tensor x = rnd({1000, 1536}, dt), w = rnd({8960, 1536}, dt, 0.03f), b = rnd({8960}, dt, 0.1f);
    check_linear(x, w, b, dt == DType::F32 ? 2e-5 : 1e-2, std::string(dtype_name(dt)) + " 1000x1536x8960");
  }
}

TEST(CudaGemm, LinearStridedInputAndMixedDtypes) {
  REQUIRE_CUDA();
  for (DType dt : {DType::F32, DType::BF16}) {
    const std::string d(dtype_name(dt));
    // Rows of a wider buffer (a slice of a fused projection) and a transposed input.
    const Tensor wide = rnd({2, 9, 100}, dt);
    const Tensor x = wide.narrow(2, 17, 40), w = rnd({33, 40}, dt, 0.2f), b = rnd({33}, dt);
    check_linear(x, w, b, tol_for(dt), d + " row slice", gpu(wide).narrow(2, 17, 40));
    const Tensor xt_src = rnd({40, 11}, dt);
    check_linear(xt_src.transpose(0, 1), w, b, tol_for(dt), d + " transposed", gpu(xt_src).transpose(0, 1));
    // A permuted [B, H, S, D] view flattened by the model would be copied by reshape: use a
    // 4-D input whose rows do not collapse.
    const Tensor q = rnd({2, 7, 3, 40}, dt);
    check_linear(q.permute({0, 2, 1, 3}), w, b, tol_for(dt), d + " permuted", gpu(q).permute({0, 2, 1, 3}));
  }
  // Float32 weight and bias with a bf16 input: computed in float32, returned as bf16.
  const Tensor x = rnd({6, 50}, DType::BF16), w = rnd({21, 50}, DType::F32, 0.2f), b = rnd({21}, DType::F32);
  check_linear(x, w, b, 1e-2, "bf16 x, f32 weight");
  // A bf16 weight with a float32 input (the float32 time embedding): float32 out.
  check_linear(rnd({6, 50}, DType::F32), rnd({21, 50}, DType::BF16), rnd({21}, DType::BF16), 1e-5,
               "f32 x, bf16 weight");
}

// ---- matmul ----------------------------------------------------------------------------------

// 16-bit operands with the float32 product kept: float32 rounding of exact products.
TEST(CudaGemm, MatmulFloat32OutKeepsTheProduct) {
  REQUIRE_CUDA();
  for (DType dt : {DType::BF16, DType::F16}) {
    const Tensor a = rnd({3, 37, 129}, dt), b = rnd({3, 129, 61}, dt);
    const Tensor want = ops::matmul(f32(a), f32(b));
    const Tensor got = cuda::matmul_float32_out(gpu(a), gpu(b).transpose(-1, -2).contiguous().transpose(-1, -2));
    EXPECT_EQ(got.dtype(), DType::F32);
    expect_close(got, want, 1e-6, std::string(dtype_name(dt)) + " matmul_float32_out");
  }
}

TEST(CudaGemm, MatmulBatchedBroadcastAndTransposed) {
  REQUIRE_CUDA();
  for (DType dt : {DType::F32, DType::BF16}) {
    const std::string d(dtype_name(dt));
    const double tol = tol_for(dt);
    auto check = [&](const Tensor& a, const Tensor& b, const Tensor& ga, const Tensor& gb, const std::string& what) {
      const Tensor want = ops::matmul(f32(a), f32(b));
      poison_pool(want.numel() * 4);
      const Tensor got = ops::matmul(ga, gb);
      EXPECT_EQ(got.dtype(), dt) << what;
      expect_close(got, want, tol, d + " " + what);
    };
    const Tensor a = rnd({2, 3, 37, 29}, dt), b = rnd({2, 3, 29, 41}, dt), b2 = rnd({29, 41}, dt);
    check(a, b, gpu(a), gpu(b), "batched");
    check(a, b2, gpu(a), gpu(b2), "broadcast 2-D");
    check(a.select(0, 1), b2, gpu(a).select(0, 1), gpu(b2), "broadcast, 3-D");
    // Transposed views (k^T for attention scores, a transposed left factor).
    const Tensor bt = rnd({2, 3, 41, 29}, dt);
    check(a, bt.transpose(-1, -2), gpu(a), gpu(bt).transpose(-1, -2), "right transposed");
    const Tensor at = rnd({2, 3, 29, 37}, dt);
    check(at.transpose(-1, -2), b, gpu(at).transpose(-1, -2), gpu(b), "left transposed");
    check(at.transpose(-1, -2), b2, gpu(at).transpose(-1, -2), gpu(b2), "left transposed, broadcast");
    // Heads of a [B, S, H, D] buffer: batch dims that do not collapse (B > 1) and that do (B = 1).
    const Tensor q = rnd({2, 50, 3, 16}, dt), k = rnd({2, 40, 3, 16}, dt);
    check(bshd_view(q), bshd_view(k).transpose(-1, -2), bshd_view(gpu(q)), bshd_view(gpu(k)).transpose(-1, -2),
          "permuted heads");
    check(bshd_view(q).select(0, 1), bshd_view(k).select(0, 1).transpose(-1, -2), bshd_view(gpu(q)).select(0, 1),
          bshd_view(gpu(k)).select(0, 1).transpose(-1, -2), "permuted heads, one batch");
    // Large-ish.
    const Tensor la = rnd({4, 300, 256}, dt), lb = rnd({4, 256, 500}, dt);
    check(la, lb, gpu(la), gpu(lb), "large");
  }
}

// ---- attention -------------------------------------------------------------------------------

namespace {

struct AttnCase {
  int64_t B, H, Sq, Sk, D;
  int bias;  // 0: none, 1: [B, 1, 1, Sk], 2: [1, H, Sq, Sk]
};

std::string case_str(const AttnCase& c, DType dt, const std::string& backend) {
  return fmt::format("{} {} B{} H{} Sq{} Sk{} D{} bias {}", backend, dtype_name(dt), c.B, c.H, c.Sq, c.Sk, c.D,
                     c.bias == 0   ? "none"
                     : c.bias == 1 ? "[B,1,1,Sk]"
                                   : "[1,H,Sq,Sk]");
}

void check_attention(const AttnCase& c, DType dt, const std::string& backend) {
  const std::string what = case_str(c, dt, backend);
  const ScopedContext context(kGpu, with_attention(backend));
  // q/k/v as permuted views of [B, S, H, D] buffers.
  const Tensor q = rnd({c.B, c.Sq, c.H, c.D}, dt), k = rnd({c.B, c.Sk, c.H, c.D}, dt),
               v = rnd({c.B, c.Sk, c.H, c.D}, dt);
  Tensor bias;
  if (c.bias == 1) {
    // A key mask: a few keys of each batch masked out, the rest with small offsets.
    std::vector<float> m = rnd({c.B, 1, 1, c.Sk}, DType::F32, 0.5f).to_vector();
    for (size_t i = 0; i < m.size(); i += 7) m[i] = -INFINITY;
    bias = Tensor::from_vector(m, {c.B, 1, 1, c.Sk}).to(dt);
  } else if (c.bias == 2) {
    bias = rnd({1, c.H, c.Sq, c.Sk}, dt);
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.D));
  const Tensor want = ops::attention(bshd_view(q), bshd_view(k), bshd_view(v), bias, scale);  // CPU
  const Tensor gq = bshd_view(gpu(q)), gk = bshd_view(gpu(k)), gv = bshd_view(gpu(v)), gb = gpu(bias);
  poison_pool(want.numel() * 4);
  const Tensor got = ops::attention(gq, gk, gv, gb, scale);
  ASSERT_EQ(got.dtype(), dt) << what;
  // The output is a [B, H, Sq, D] view of [B, Sq, H, D] memory.
  EXPECT_EQ(got.permute({0, 2, 1, 3}).is_contiguous(), true) << what;
  expect_close(got, want, dt == DType::F32 ? 1e-5 : 1.5e-2, what);
  std::printf("[ attention ] %s: rel_l2 %.3g, path %s\n", what.c_str(), rel_l2(got, want),
              cuda::attention_path(gq, gk, gv, gb).c_str());
}

}  // namespace

// Each execution context keeps its own kernel choice: two alive at once do not affect each
// other, and an unknown name is refused when the context is made.
TEST(CudaAttention, KernelChoiceBelongsToTheContext) {
  REQUIRE_CUDA();
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

TEST(CudaAttention, CudnnBf16SelfAndCrossAttention) {
  REQUIRE_CUDA();
  for (const AttnCase& c : {AttnCase{2, 3, 1000, 1000, 128, 0}, AttnCase{1, 4, 999, 512, 128, 0},
                            AttnCase{2, 2, 1000, 512, 64, 0}, AttnCase{1, 2, 77, 333, 64, 0}}) {
    check_attention(c, DType::BF16, "cudnn");
    // Without a bias, these must not fall back to the reference.
    const Tensor q = bshd_view(Tensor::empty({c.B, c.Sq, c.H, c.D}, DType::BF16, kGpu));
    const Tensor k = bshd_view(Tensor::empty({c.B, c.Sk, c.H, c.D}, DType::BF16, kGpu));
    EXPECT_EQ(cuda::attention_path(q, k, k, {}), "cudnn") << case_str(c, DType::BF16, "cudnn");
  }
  check_attention({1, 2, 200, 300, 128, 0}, DType::F16, "cudnn");
}

TEST(CudaAttention, CudnnBf16WithBias) {
  REQUIRE_CUDA();
  const DebugLog debug;  // shows the bias layouts cuDNN rejects before one it takes
  for (const AttnCase& c : {AttnCase{2, 3, 1000, 512, 128, 1}, AttnCase{1, 3, 1000, 512, 128, 2},
                            AttnCase{2, 2, 300, 300, 64, 1}, AttnCase{1, 2, 300, 301, 64, 2}})
    check_attention(c, DType::BF16, "cudnn");
}

TEST(CudaAttention, ReferenceF32AndBf16) {
  REQUIRE_CUDA();
  for (const AttnCase& c : {AttnCase{2, 3, 1000, 512, 128, 0}, AttnCase{1, 2, 999, 1000, 64, 1},
                            AttnCase{2, 3, 300, 512, 64, 2}, AttnCase{1, 1, 50, 40, 384, 0}}) {
    check_attention(c, DType::F32, "cudnn");  // float32 always takes the reference
    check_attention(c, DType::BF16, "reference");
  }
}

// 16-bit attention cuDNN does not take (head dims above 256 as in the Wan VAE's mid block,
// head dims not a multiple of 8) goes to the tensor-core math path by itself.
TEST(CudaAttention, MathPathForWhatCudnnRefuses) {
  REQUIRE_CUDA();
  for (DType dt : {DType::BF16, DType::F16}) {
    for (const AttnCase& c : {AttnCase{1, 1, 780, 780, 384, 0}, AttnCase{2, 1, 64, 77, 384, 1},
                              AttnCase{1, 2, 100, 90, 20, 0}, AttnCase{1, 2, 33, 65, 320, 2}}) {
      check_attention(c, dt, "cudnn");
      const Tensor q = bshd_view(Tensor::empty({c.B, c.Sq, c.H, c.D}, dt, kGpu));
      const Tensor k = bshd_view(Tensor::empty({c.B, c.Sk, c.H, c.D}, dt, kGpu));
      if (c.bias == 0) EXPECT_EQ(cuda::attention_path(q, k, k, {}), "math") << case_str(c, dt, "cudnn");
    }
  }
  // Float32 keeps the exact reference.
  const Tensor q = Tensor::empty({1, 1, 64, 384}, DType::F32, kGpu);
  EXPECT_EQ(cuda::attention_path(q, q, q, {}), "reference");
}

// ---- conv3d ----------------------------------------------------------------------------------

namespace {

bool ops_allow_tf32 = true;

void check_conv(const Shape& xs, const Shape& ws, bool with_bias, const Conv3dParams& p, DType dt,
                const std::string& what, bool strided_x = false, bool channels_last = false) {
  // strided_x: x is frames [1, T+1) of a longer clip (a non-contiguous view).
  Shape big = xs;
  if (strided_x) big[2] += 2;
  const Tensor xb = rnd(big, dt), w = rnd(ws, dt, 0.2f), b = with_bias ? rnd({ws[0]}, dt) : Tensor();
  const Tensor x = strided_x ? xb.narrow(2, 1, xs[2]) : xb;
  const Tensor want = ops::conv3d(x, w, b, p);  // CPU
  Tensor gx = strided_x ? gpu(xb).narrow(2, 1, xs[2]) : gpu(xb);
  if (channels_last) gx = gx.to_channels_last_3d();
  poison_pool(want.numel() * 4);
  const Tensor got = ops::conv3d(gx, gpu(w), gpu(b), p);
  EXPECT_EQ(got.dtype(), dt) << what;
  // The output is laid out as the input (a 1-channel output is both).
  if (channels_last && ws[0] > 1) EXPECT_TRUE(got.is_channels_last_3d()) << what;
  if (!channels_last) EXPECT_TRUE(got.is_contiguous()) << what;
  // True FP32 unless TF32 is allowed (then ~1e-3, like bf16-sized rounding of the inputs).
  const double tol = dt == DType::F32 ? (ops_allow_tf32 ? 5e-3 : 1e-5) : 1e-2;
  expect_close(got, want, tol, std::string(dtype_name(dt)) + " " + what);
}

// Sets whether float32 convolutions may use TF32 for a scope, then restores the default (on).
struct Tf32 {
  explicit Tf32(bool allow) : context(kGpu, with_tf32(allow)) { ops_allow_tf32 = allow; }
  ~Tf32() { ops_allow_tf32 = true; }
  ScopedContext context;
};

Conv3dParams params(std::array<int64_t, 3> stride, std::array<int64_t, 3> padding, int64_t before = -1) {
  Conv3dParams p;
  p.stride = stride;
  p.padding = padding;
  p.time_padding_before = before;
  return p;
}

}  // namespace

TEST(CudaConv3d, MatchesCpu) {
  REQUIRE_CUDA();
  const Tf32 exact(false);
  const DebugLog debug;  // shows the graphs cuDNN has no engine for (and the fallbacks taken)
  for (DType dt : {DType::F32, DType::BF16}) {
    check_conv({2, 5, 4, 9, 11}, {7, 5, 3, 3, 3}, true, params({1, 1, 1}, {1, 1, 1}), dt, "3x3x3 same");
    check_conv({1, 16, 5, 12, 10}, {32, 16, 3, 3, 3}, true, params({1, 2, 2}, {0, 1, 1}, 2), dt,
               "causal (2 frames before), spatial stride 2");
    check_conv({1, 16, 6, 12, 10}, {16, 16, 3, 1, 1}, true, params({2, 1, 1}, {0, 0, 0}, 1), dt,
               "time downsample, stride 2");
    check_conv({1, 3, 3, 17, 13}, {24, 3, 3, 3, 3}, true, params({1, 1, 1}, {0, 1, 1}, 2), dt, "RGB in, causal", true);
    check_conv({2, 24, 3, 8, 8}, {3, 24, 3, 3, 3}, false, params({1, 1, 1}, {0, 1, 1}, 2), dt, "3 out, no bias");
    check_conv({1, 32, 3, 7, 9}, {48, 32, 1, 1, 1}, true, params({1, 1, 1}, {0, 0, 0}), dt, "1x1x1", true);
  }
}

// Channels-last 3-D input (NDHWC convolution, the VAE's layout on a GPU): a channels-last
// output with the CPU's values, including shapes cuDNN may refuse in NDHWC (3 or 1 channels).
TEST(CudaConv3d, ChannelsLastMatchesCpu) {
  REQUIRE_CUDA();
  const Tf32 exact(false);
  const DebugLog debug;
  for (DType dt : {DType::F32, DType::BF16}) {
    check_conv({2, 16, 4, 9, 11}, {24, 16, 3, 3, 3}, true, params({1, 1, 1}, {1, 1, 1}), dt, "cl 3x3x3 same", false,
               true);
    check_conv({1, 32, 5, 12, 10}, {32, 32, 3, 3, 3}, true, params({1, 1, 1}, {0, 1, 1}, 2), dt, "cl causal", false,
               true);
    check_conv({1, 16, 3, 8, 8}, {8, 16, 1, 3, 3}, true, params({1, 1, 1}, {0, 1, 1}), dt, "cl 1x3x3", false, true);
    check_conv({1, 24, 3, 8, 8}, {3, 24, 3, 3, 3}, true, params({1, 1, 1}, {0, 1, 1}, 2), dt, "cl 3 out", false, true);
    check_conv({1, 16, 2, 6, 6}, {32, 16, 1, 1, 1}, true, params({1, 1, 1}, {0, 0, 0}), dt, "cl 1x1x1", false, true);
    check_conv({1, 3, 3, 9, 7}, {8, 3, 3, 3, 3}, false, params({1, 1, 1}, {0, 1, 1}, 2), dt, "cl 3 in", false, true);
  }
}

// The default: float32 convolutions on TF32 tensor cores, as PyTorch runs diffusers' VAE.
TEST(CudaConv3d, Tf32MatchesCpuToTf32Rounding) {
  REQUIRE_CUDA();
  const Tf32 fast(true);
  check_conv({1, 32, 4, 12, 10}, {32, 32, 3, 3, 3}, true, params({1, 1, 1}, {0, 1, 1}, 2), DType::F32, "tf32 causal");
  check_conv({2, 5, 4, 9, 11}, {7, 5, 3, 3, 3}, true, params({1, 1, 1}, {1, 1, 1}), DType::F32, "tf32 3x3x3 same");
}

TEST(CudaConv3d, Im2colFallbackMatchesCpu) {
  REQUIRE_CUDA();
  const Tf32 exact(false);
  ASSERT_EQ(setenv("VGEN_CONV_IM2COL", "1", 1), 0);
  for (DType dt : {DType::F32, DType::BF16}) {
    check_conv({2, 5, 4, 9, 11}, {7, 5, 3, 3, 3}, true, params({1, 1, 1}, {1, 1, 1}), dt, "im2col 3x3x3 same");
    check_conv({1, 6, 5, 12, 10}, {8, 6, 3, 3, 3}, true, params({2, 2, 2}, {0, 1, 1}, 2), dt, "im2col causal, stride 2",
               true);
    check_conv({1, 4, 6, 7, 9}, {5, 4, 3, 1, 1}, false, params({2, 1, 1}, {1, 0, 0}, 0), dt,
               "im2col time stride 2, padding after only", true);
    check_conv({1, 4, 3, 7, 9}, {6, 4, 1, 2, 3}, true, params({1, 3, 2}, {0, 1, 2}), dt, "im2col odd kernel");
  }
  unsetenv("VGEN_CONV_IM2COL");
}

// ---- timings (run with --gtest_also_run_disabled_tests) -----------------------------------------

TEST(CudaBench, DISABLED_AttentionWanSizes) {
  REQUIRE_CUDA();
  for (auto [B, H, S, D] : {std::array<int64_t, 4>{1, 12, 32760, 128}, std::array<int64_t, 4>{1, 40, 32760, 128},
                            std::array<int64_t, 4>{1, 40, 75600, 128}})
    std::printf("[ bench ] attention %s B%ld H%ld S%ld D%ld: %.1f TFLOP/s\n", cuda::attention_backend().c_str(), B, H,
                S, D, cuda::benchmark_attention_tflops(B, H, S, D, 5));
}

TEST(CudaBench, DISABLED_LinearAndConv) {
  REQUIRE_CUDA();
  const Tensor x = gpu(rnd({32760, 1536}, DType::BF16)), w = gpu(rnd({8960, 1536}, DType::BF16, 0.03f)),
               b = gpu(rnd({8960}, DType::BF16));
  for (Activation act : {Activation::None, Activation::GeluTanh, Activation::Gelu}) {
    const double ms = median_ms(10, [&] { ops::linear(x, w, b, act); });
    std::printf("[ bench ] linear bf16 32760x1536x8960 + bias, act %s: %.3f ms, %.1f TFLOP/s\n", act_name(act), ms,
                2.0 * 32760 * 1536 * 8960 / ms / 1e9);
  }
  const Tensor xf = gpu(rnd({32760, 1536}, DType::F32)), wf = gpu(rnd({1536, 1536}, DType::F32, 0.03f));
  const double msf = median_ms(5, [&] { ops::linear(xf, wf); });
  std::printf("[ bench ] linear f32 32760x1536x1536: %.3f ms, %.1f TFLOP/s\n", msf,
              2.0 * 32760 * 1536 * 1536 / msf / 1e9);
  const DebugLog debug;
  for (DType dt : {DType::BF16, DType::F32}) {
    const Tensor cx = gpu(rnd({1, 384, 6, 60, 104}, dt)), cw = gpu(rnd({384, 384, 3, 3, 3}, dt, 0.02f)),
                 cb = gpu(rnd({384}, dt));
    Conv3dParams p;
    p.padding = {0, 1, 1};
    p.time_padding_before = 2;
    const double ms = median_ms(5, [&] { ops::conv3d(cx, cw, cb, p); });
    std::printf("[ bench ] conv3d %s [1,384,6,60,104] 3x3x3 -> 384: %.3f ms, %.1f TFLOP/s\n",
                std::string(dtype_name(dt)).c_str(), ms, 2.0 * 384 * 384 * 27 * 6 * 60 * 104 / ms / 1e9);
  }
}

#endif  // VGEN_WITH_CUDA
