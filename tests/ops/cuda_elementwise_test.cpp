// The CUDA backend's copies, fills, elementwise ops, norms, fused ops and small ops against
// the CPU reference, on random data with odd sizes, strided views, broadcasting, bf16 and f32.
// Skipped when no CUDA device is usable.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>

#include "backends/cpu/cpu_backend.h"
#include "core/error.h"
#include "core/random.h"
#include "ops/backend.h"
#include "ops/ops.h"
#include "support/parity.h"

using namespace vgen;
using vgen::testing::rel_l2;

namespace {

#define REQUIRE_CUDA()                                                                  \
  do {                                                                                  \
    if (!has_backend(DeviceType::CUDA)) GTEST_SKIP() << backend_unavailable_reason(DeviceType::CUDA); \
  } while (0)

const Device kGpu = Device::cuda(0);
constexpr double kTolF32 = 1e-5, kTolBf16 = 1e-2;
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

// Values that every dtype holds exactly enough for conversions to be compared, on the CPU.
Tensor sample(const Shape& shape, DType dtype) {
  if (dtype == DType::F8_E4M3 || dtype == DType::F8_E5M2) return random_bytes(shape, dtype);
  if (dtype == DType::BOOL) return random_bytes(shape, dtype);
  std::vector<float> v = rnd(shape, DType::F32, 40.0f).to_vector();
  if (dtype == DType::U8)
    for (float& x : v) x = std::fabs(x);
  return Tensor::from_vector(v, shape).to(dtype);
}

Tensor gpu(const Tensor& t) { return t.defined() ? t.to(kGpu) : t; }
Tensor host(const Tensor& t) { return t.to(Device::cpu()); }

// The bytes of t (contiguous, on the CPU).
std::vector<uint8_t> bytes(const Tensor& t) {
  const Tensor c = host(t).contiguous();
  const auto* p = static_cast<const uint8_t*>(c.raw_data());
  return std::vector<uint8_t>(p, p + c.nbytes());
}

// Same shape and dtype, and equal values (NaN equal to NaN), compared as float64.
void expect_same_values(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  ASSERT_EQ(got.dtype(), want.dtype()) << what;
  const Tensor g = host(got).to(DType::F64).contiguous(), w = host(want).to(DType::F64).contiguous();
  const double* a = g.data<double>();
  const double* b = w.data<double>();
  int64_t bad = 0;
  for (int64_t i = 0; i < g.numel(); ++i) {
    if (a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i]))) continue;
    if (bad++ < 5) ADD_FAILURE() << what << ": element " << i << " is " << a[i] << ", want " << b[i];
  }
  EXPECT_EQ(bad, 0) << what;
}

void expect_close(const Tensor& got, const Tensor& want, double tol, const std::string& what) {
  ASSERT_TRUE(got.device().is_cuda()) << what;
  ASSERT_EQ(got.shape(), want.shape()) << what;
  ASSERT_EQ(got.dtype(), want.dtype()) << what;
  const double err = rel_l2(got, want);
  EXPECT_LT(err, tol) << what << " (" << got.str() << ")";
  EXPECT_FALSE(std::isnan(err)) << what << ": unwritten (NaN) elements";
}

double tol_for(DType d) { return d == DType::F32 ? kTolF32 : kTolBf16; }

// Fills freed device memory with NaN so that outputs allocated next start poisoned.
void poison_pool(int64_t nbytes) {
  for (int i = 0; i < 4; ++i) Tensor::full({nbytes / 4 + 64 * i + 1}, NAN, DType::F32, kGpu);
}

// A CPU tensor filled by the CPU backend (which refuses F8 targets: zero bytes there).
Tensor cpu_filled(const Shape& shape, DType dt, float value) {
  Tensor t = Tensor::empty(shape, dt);
  if (dt == DType::F8_E4M3 || dt == DType::F8_E5M2) std::memset(t.raw_data(), 0, t.nbytes());
  else cpu::cpu_backend().fill(t, value);
  return t;
}

}  // namespace

// ---- Copies --------------------------------------------------------------------------------

TEST(CudaCopy, HostRoundTripOfEveryDtypeIsBitExact) {
  REQUIRE_CUDA();
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

TEST(CudaCopy, ConversionsMatchCpu) {
  REQUIRE_CUDA();
  const DType targets[] = {DType::F32, DType::BF16, DType::F16, DType::F64,
                           DType::I64, DType::I32,  DType::U8,  DType::BOOL};
  for (DType sd : kAllDtypes) {
    const Tensor src = sample({4, 6, 11}, sd);
    const Tensor src_gpu = src.to(kGpu);
    for (DType dd : targets) {
      const std::string what = fmt::format("{} -> {}", dtype_name(sd), dtype_name(dd));
      // Contiguous both.
      expect_same_values(src_gpu.to(dd), src.to(dd), what);
      // Permuted and sliced source into a slice of a larger destination.
      Tensor dst_gpu = Tensor::full({12, 5, 7}, 3.0f, dd, kGpu);
      Tensor dst_cpu = Tensor::full({12, 5, 7}, 3.0f, dd);
      dst_gpu.narrow(0, 1, 11).narrow(1, 0, 4).narrow(2, 1, 5).copy_(src_gpu.permute({2, 0, 1}).narrow(2, 1, 5));
      dst_cpu.narrow(0, 1, 11).narrow(1, 0, 4).narrow(2, 1, 5).copy_(src.permute({2, 0, 1}).narrow(2, 1, 5));
      expect_same_values(dst_gpu, dst_cpu, what + " strided");
      // Across host and device with a conversion on the way.
      expect_same_values(src.permute({1, 0, 2}).to(kGpu).to(dd), src.permute({1, 0, 2}).to(dd), what + " upload");
      Tensor down = Tensor::empty({11, 6, 4}, dd);
      down.copy_(src_gpu.permute({2, 1, 0}));
      expect_same_values(down, src.permute({2, 1, 0}).to(dd), what + " download");
    }
    // Conversions to F8 are refused, as on the CPU.
    if (sd != DType::F8_E4M3) EXPECT_THROW(src_gpu.to(DType::F8_E4M3), Error) << dtype_name(sd);
  }
}

TEST(CudaCopy, PermutedCopiesAreExact) {
  REQUIRE_CUDA();
  for (DType dt : {DType::BF16, DType::F32, DType::F16}) {
    const std::string what(dtype_name(dt));
    // [B, S, H, D] <-> [B, H, S, D].
    const Tensor x = rnd({2, 33, 12, 128}, dt);
    const Tensor xg = gpu(x);
    poison_pool(x.nbytes());
    EXPECT_EQ(bytes(xg.permute({0, 2, 1, 3}).contiguous()), bytes(x.permute({0, 2, 1, 3}).contiguous())) << what;
    // Unpatchify-like 8-dim permute and its inverse.
    const Tensor p = rnd({1, 3, 5, 7, 1, 2, 2, 16}, dt);
    const Tensor pg = gpu(p);
    const std::vector<int64_t> order{0, 7, 1, 4, 2, 5, 3, 6};
    EXPECT_EQ(bytes(pg.permute(order).contiguous()), bytes(p.permute(order).contiguous())) << what << " unpatchify";
    const Tensor q = rnd({1, 16, 3, 1, 5, 2, 7, 2}, dt);
    const std::vector<int64_t> inverse{0, 2, 4, 6, 1, 3, 5, 7};
    EXPECT_EQ(bytes(gpu(q).permute(inverse).contiguous()), bytes(q.permute(inverse).contiguous())) << what << " patchify";
    // Odd sizes and an odd element offset (no vector path).
    const Tensor og = gpu(rnd({5, 7, 9}, dt));
    EXPECT_EQ(bytes(og.narrow(2, 1, 7).transpose(0, 2).contiguous()),
              bytes(host(og).narrow(2, 1, 7).transpose(0, 2).contiguous()))
        << what << " odd";
    // cat and pad write through narrowed views.
    const Tensor a = rnd({2, 3, 5}, dt), b = rnd({2, 4, 5}, dt);
    EXPECT_EQ(bytes(ops::cat({gpu(a), gpu(b)}, 1)), bytes(ops::cat({a, b}, 1))) << what << " cat";
    EXPECT_EQ(bytes(ops::pad(gpu(a), 2, 1, 2)), bytes(ops::pad(a, 2, 1, 2))) << what << " pad";
  }
  // More than 8 dims that cannot be merged.
  const Tensor t = rnd({2, 2, 2, 2, 2, 2, 2, 2, 2, 3}, DType::F32);
  const std::vector<int64_t> rev{9, 8, 7, 6, 5, 4, 3, 2, 1, 0};
  EXPECT_EQ(bytes(gpu(t).permute(rev).contiguous()), bytes(t.permute(rev).contiguous())) << "10 dims";
  // Empty tensors.
  const Tensor e = rnd({0, 5}, DType::BF16);
  EXPECT_EQ(gpu(e).transpose(0, 1).contiguous().numel(), 0);
}

TEST(CudaCopy, FillMatchesCpu) {
  REQUIRE_CUDA();
  for (DType dt : kAllDtypes) {
    const bool f8 = dt == DType::F8_E4M3 || dt == DType::F8_E5M2;
    for (float value : {0.0f, 2.75f, -1.5f}) {
      if (f8 && value != 0.0f) {
        EXPECT_THROW(Tensor::full({3}, value, dt, kGpu), Error);
        continue;
      }
      const std::string what = fmt::format("{} {}", dtype_name(dt), value);
      for (int64_t n : {1, 7, 64, 1001}) {
        EXPECT_EQ(bytes(Tensor::full({n}, value, dt, kGpu)), bytes(cpu_filled({n}, dt, value))) << what << " n=" << n;
      }
      // A strided view of a larger tensor: the rest must stay untouched.
      const Tensor base = random_bytes({6, 9, 5}, dt);
      Tensor g = base.to(kGpu);
      Tensor c = base.clone();
      backend_for(kGpu).fill(g.narrow(1, 2, 5).transpose(0, 2), value);
      c.narrow(1, 2, 5).transpose(0, 2).copy_(cpu_filled({5, 5, 6}, dt, value));
      EXPECT_EQ(bytes(g), bytes(c)) << what << " strided";
      // Contiguous but at an odd offset.
      Tensor g2 = base.to(kGpu);
      Tensor c2 = base.clone();
      backend_for(kGpu).fill(g2.view({270}).narrow(0, 1, 263), value);
      c2.view({270}).narrow(0, 1, 263).copy_(cpu_filled({263}, dt, value));
      EXPECT_EQ(bytes(g2), bytes(c2)) << what << " offset";
    }
  }
}

// ---- Elementwise ----------------------------------------------------------------------------

TEST(CudaElementwise, BinaryBroadcastingMatchesCpu) {
  REQUIRE_CUDA();
  struct Case {
    Shape a, b;
    DType da, db;
    bool permute_a;
  };
  const std::vector<Case> cases = {
      {{2, 37, 1536}, {2, 37, 1536}, DType::BF16, DType::BF16, false},
      {{2, 37, 1536}, {2, 1, 1536}, DType::BF16, DType::F32, false},
      {{2, 37, 1536}, {1, 37, 1536}, DType::F32, DType::BF16, false},
      {{1, 1, 6, 64}, {3, 1, 6, 64}, DType::F32, DType::F32, false},
      {{5, 1, 7}, {3, 1}, DType::F32, DType::F32, false},
      {{3, 5, 7}, {7}, DType::F16, DType::F32, false},
      {{3, 5, 7}, {1}, DType::BF16, DType::F16, false},
      {{4, 6, 10, 9}, {6, 1, 1}, DType::BF16, DType::BF16, true},
      {{4, 6, 10, 8}, {4, 6, 10, 8}, DType::F32, DType::F32, true},
      {{0, 5}, {5}, DType::F32, DType::F32, false},
  };
  for (const Case& c : cases) {
    Tensor a = rnd(c.a, c.da), b = rnd(c.b, c.db, 2.0f);
    if (c.permute_a) a = rnd({c.a[3], c.a[1], c.a[2], c.a[0]}, c.da).permute({3, 1, 2, 0});
    for (BinaryOp op : {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div}) {
      const std::string what = fmt::format("op {} {} {} x {} {}", static_cast<int>(op), shape_str(c.a),
                                           dtype_name(c.da), shape_str(c.b), dtype_name(c.db));
      const Tensor want = cpu::cpu_backend().binary(op, a, b);
      poison_pool(want.numel() * 4);
      const Tensor got = backend_for(kGpu).binary(op, gpu(a), gpu(b));
      if (want.numel() == 0) {
        EXPECT_EQ(got.shape(), want.shape()) << what;
        continue;
      }
      expect_close(got, want, tol_for(c.da), what);
    }
  }
  // Misaligned views (no vector path).
  const Tensor m = rnd({3, 1537}, DType::BF16).narrow(1, 1, 1536), n = rnd({1537}, DType::F32).narrow(0, 1, 1536);
  expect_close(ops::mul(gpu(m), gpu(n)), ops::mul(m, n), kTolBf16, "misaligned mul");
  // Integer inputs are read as float32; the result has a's dtype.
  const Tensor i = sample({4, 5}, DType::I64), f = rnd({5}, DType::F32, 10.0f);
  expect_same_values(ops::add(gpu(i), gpu(f)), ops::add(i, f), "I64 + F32");
}

TEST(CudaElementwise, UnaryOpsMatchCpu) {
  REQUIRE_CUDA();
  const UnaryOp all[] = {UnaryOp::Scale, UnaryOp::AddScalar, UnaryOp::Clamp, UnaryOp::Silu,
                         UnaryOp::GeluTanh, UnaryOp::Gelu,   UnaryOp::Exp,   UnaryOp::Neg};
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    for (bool strided : {false, true}) {
      const Tensor x = strided ? rnd({9, 2, 1001}, dt, 2.0f).transpose(0, 2).narrow(1, 0, 1) : rnd({3, 1001}, dt, 2.0f);
      for (UnaryOp op : all) {
        const std::string what = fmt::format("unary {} {} strided={}", static_cast<int>(op), dtype_name(dt), strided);
        const Tensor want = cpu::cpu_backend().unary(op, x, -0.75f, 1.25f);
        poison_pool(want.numel() * 4);
        expect_close(backend_for(kGpu).unary(op, gpu(x), -0.75f, 1.25f), want, tol_for(dt), what);
      }
    }
  }
}

TEST(CudaElementwise, AxpbyMatchesCpu) {
  REQUIRE_CUDA();
  for (DType dt : {DType::F32, DType::BF16}) {
    const Tensor a = rnd({7, 5, 33}, dt), b = rnd({33, 5, 7}, dt).permute({2, 1, 0});
    expect_close(ops::axpby(0.3f, gpu(a), -1.7f, gpu(b)), ops::axpby(0.3f, a, -1.7f, b), tol_for(dt),
                 std::string("axpby ") + std::string(dtype_name(dt)));
    const Tensor c = rnd({16, 1024}, dt), d = rnd({16, 1024}, DType::F32);
    expect_close(ops::axpby(2.0f, gpu(c), 0.5f, gpu(d)), ops::axpby(2.0f, c, 0.5f, d), tol_for(dt),
                 std::string("axpby mixed ") + std::string(dtype_name(dt)));
  }
}

// ---- Norms ---------------------------------------------------------------------------------

TEST(CudaNorm, LayerNormMatchesCpu) {
  REQUIRE_CUDA();
  struct Case {
    Shape shape;
    DType dt, wdt;
    bool weight, bias;
  };
  const std::vector<Case> cases = {
      {{3, 7, 37}, DType::F32, DType::F32, true, true},   {{2, 5, 1536}, DType::BF16, DType::BF16, true, true},
      {{2, 5, 1536}, DType::BF16, DType::F32, true, false}, {{4, 1536}, DType::F32, DType::BF16, false, true},
      {{3, 20000}, DType::F32, DType::F32, true, true},   {{2, 3, 40001}, DType::BF16, DType::BF16, false, false},
      {{5, 1}, DType::F32, DType::F32, true, true},       {{0, 8}, DType::F32, DType::F32, false, false},
  };
  for (const Case& c : cases) {
    const int64_t D = c.shape.back();
    const Tensor x = rnd(c.shape, c.dt, 3.0f);
    const Tensor w = c.weight ? rnd({D}, c.wdt) : Tensor(), b = c.bias ? rnd({D}, c.wdt) : Tensor();
    const std::string what = fmt::format("layer_norm {} {}", x.str(), dtype_name(c.wdt));
    const Tensor want = ops::layer_norm(x, w, b, 1e-5f);
    poison_pool(want.numel() * 4);
    const Tensor got = ops::layer_norm(gpu(x), gpu(w), gpu(b), 1e-5f);
    if (x.numel() == 0) {
      EXPECT_EQ(got.shape(), want.shape());
      continue;
    }
    expect_close(got, want, tol_for(c.dt), what);
  }
  // Rows read in place from a strided [B, S, D] view (a slice of a wider projection).
  const Tensor kv = rnd({2, 9, 2 * 96}, DType::BF16);
  const Tensor w = rnd({96}, DType::BF16);
  expect_close(ops::layer_norm(gpu(kv).narrow(2, 96, 96), gpu(w), {}, 1e-6f),
               ops::layer_norm(kv.narrow(2, 96, 96), w, {}, 1e-6f), kTolBf16, "layer_norm of a strided view");
}

TEST(CudaNorm, RmsNormMatchesCpu) {
  REQUIRE_CUDA();
  for (DType dt : {DType::F32, DType::BF16}) {
    for (const Shape& shape : std::vector<Shape>{{2, 7, 37}, {3, 1536}, {2, 4096}, {2, 40001}, {3, 1}}) {
      for (int wmode = 0; wmode < 3; ++wmode) {
        const Tensor x = rnd(shape, dt, 2.0f);
        const Tensor w = wmode == 0 ? Tensor() : rnd({shape.back()}, wmode == 1 ? dt : DType::F32);
        const std::string what = fmt::format("rms_norm {} weight mode {}", x.str(), wmode);
        const Tensor want = ops::rms_norm(x, w, 1e-6f);
        poison_pool(want.numel() * 4);
        expect_close(ops::rms_norm(gpu(x), gpu(w), 1e-6f), want, tol_for(dt), what);
      }
    }
    // A strided input (kv.narrow) is read correctly.
    const Tensor kv = rnd({2, 9, 256}, dt);
    const Tensor w = rnd({128}, dt);
    expect_close(ops::rms_norm(gpu(kv).narrow(2, 0, 128), gpu(w), 1e-6f), ops::rms_norm(kv.narrow(2, 0, 128), w, 1e-6f),
                 tol_for(dt), "rms_norm of a strided view");
  }
}

TEST(CudaNorm, ChannelRmsNormMatchesCpu) {
  REQUIRE_CUDA();
  for (DType dt : {DType::F32, DType::BF16}) {
    for (const Shape& shape : std::vector<Shape>{{2, 12, 3, 5, 8}, {1, 7, 9}, {2, 96, 2, 6, 16}, {3, 5}}) {
      for (bool bias : {false, true}) {
        const int64_t C = shape[1];
        const Tensor x = rnd(shape, dt);
        Shape gshape(shape.size() - 1, 1);
        gshape[0] = C;  // [C, 1, 1, ...] as the VAE stores it
        const Tensor g = rnd(gshape, dt), b = bias ? rnd({C}, DType::F32) : Tensor();
        const std::string what = fmt::format("channel_rms_norm {} bias={}", x.str(), bias);
        const Tensor want = ops::channel_rms_norm(x, g, b);
        poison_pool(want.numel() * 4);
        expect_close(ops::channel_rms_norm(gpu(x), gpu(g), gpu(b)), want, tol_for(dt), what);
      }
    }
  }
  // A permuted input.
  const Tensor x = rnd({2, 4, 6, 5}, DType::F32).permute({0, 3, 1, 2});
  const Tensor g = rnd({5}, DType::F32);
  expect_close(ops::channel_rms_norm(gpu(x), gpu(g), {}), ops::channel_rms_norm(x, g, {}), kTolF32,
               "channel_rms_norm permuted");
}

// Channels-last 3-D inputs (rows of C channels, the VAE's layout on a GPU) and the fused SiLU:
// the output keeps the layout, the values match the CPU's NCDHW ones.
TEST(CudaNorm, ChannelRmsNormChannelsLastAndSiluMatchCpu) {
  REQUIRE_CUDA();
  for (DType dt : {DType::F32, DType::BF16}) {
    // C a multiple of the vector width or not (5, 12); rows held by groups of 2 to 32 lanes, a
    // last warp only partly used (9 rows), and rows too long for registers (1040).
    for (const Shape& shape : std::vector<Shape>{{2, 12, 3, 5, 8},
                                                 {1, 5, 2, 3, 7},
                                                 {1, 384, 2, 6, 10},
                                                 {1, 96, 1, 4, 4},
                                                 {1, 96, 1, 3, 3},
                                                 {1, 192, 1, 5, 1},
                                                 {1, 1040, 1, 2, 3}}) {
      for (bool bias : {false, true}) {
        for (Activation act : {Activation::None, Activation::Silu}) {
          for (bool channels_last : {false, true}) {
            const int64_t C = shape[1];
            const Tensor x = rnd(shape, dt);
            const Tensor g = rnd({C, 1, 1, 1}, dt), b = bias ? rnd({C}, DType::F32) : Tensor();
            const std::string what = fmt::format("channel_rms_norm {} bias={} silu={} channels_last={}", x.str(), bias,
                                                 act == Activation::Silu, channels_last);
            const Tensor want = ops::channel_rms_norm(x, g, b, act);
            poison_pool(want.numel() * 4);
            const Tensor gx = channels_last ? gpu(x).to_channels_last_3d() : gpu(x);
            const Tensor got = ops::channel_rms_norm(gx, gpu(g), gpu(b), act);
            EXPECT_EQ(got.is_channels_last_3d(), channels_last) << what;
            expect_close(got, want, tol_for(dt), what);
          }
        }
      }
    }
  }
}

// Elementwise ops on channels-last 3-D tensors give channels-last results with the CPU's values.
TEST(CudaElementwise, ChannelsLast3dKeepsItsLayout) {
  REQUIRE_CUDA();
  for (DType dt : {DType::F32, DType::BF16}) {
    const Tensor a = rnd({2, 16, 3, 5, 7}, dt), b = rnd({2, 16, 3, 5, 7}, dt), bias = rnd({1, 16, 1, 1, 1}, dt);
    const Tensor ga = gpu(a).to_channels_last_3d(), gb = gpu(b).to_channels_last_3d();
    const std::string name(dtype_name(dt));
    const Tensor silu = ops::silu(ga);
    EXPECT_TRUE(silu.is_channels_last_3d());
    expect_close(silu, ops::silu(a), tol_for(dt), name + " silu");
    const Tensor sum = ops::add(ga, gb);
    EXPECT_TRUE(sum.is_channels_last_3d());
    expect_close(sum, ops::add(a, b), tol_for(dt), name + " add");
    const Tensor mixed = ops::add(gpu(a), gb);  // NCDHW + channels-last
    EXPECT_TRUE(mixed.is_channels_last_3d());
    expect_close(mixed, ops::add(a, b), tol_for(dt), name + " add mixed layouts");
    expect_close(ops::add(ga, gpu(bias)), ops::add(a, bias), tol_for(dt), name + " add broadcast bias");
    const Tensor ax = ops::axpby(0.5f, ga, -2.0f, gb);
    EXPECT_TRUE(ax.is_channels_last_3d());
    expect_close(ax, ops::axpby(0.5f, a, -2.0f, b), tol_for(dt), name + " axpby");
    const Tensor c = ops::cat({ga.narrow(2, 1, 2), ga}, 2);
    EXPECT_TRUE(c.is_channels_last_3d());
    expect_same_values(c, ops::cat({a.narrow(2, 1, 2), a}, 2), name + " cat");
  }
}

TEST(CudaNorm, SoftmaxMatchesCpu) {
  REQUIRE_CUDA();
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    for (const Shape& shape : std::vector<Shape>{{5, 37}, {3, 1536}, {2, 20000}, {4, 4099}, {2, 3, 1}}) {
      const Tensor x = rnd(shape, dt, 4.0f);
      const Tensor want = ops::softmax(x);
      poison_pool(want.numel() * 4);
      expect_close(ops::softmax(gpu(x)), want, tol_for(dt), "softmax " + x.str());
    }
  }
  const Tensor t = rnd({7, 9}, DType::F32).transpose(0, 1);
  expect_close(ops::softmax(gpu(t)), ops::softmax(t), kTolF32, "softmax transposed");
}

TEST(CudaNorm, RopeMatchesCpu) {
  REQUIRE_CUDA();
  for (DType dt : {DType::F32, DType::BF16}) {
    for (const auto& [S, H, D] : std::vector<std::array<int64_t, 3>>{{9, 3, 16}, {5, 3, 6}, {37, 12, 128}}) {
      const Tensor cos = rnd({S, D}), sin = rnd({S, D});
      const std::string what = fmt::format("rope {} S={} H={} D={}", dtype_name(dt), S, H, D);
      const Tensor x = rnd({2, S, H, D}, dt);
      expect_close(ops::rope(gpu(x), gpu(cos), gpu(sin)), ops::rope(x, cos, sin), tol_for(dt), what);
      // A slice of a fused projection [B, S, 3, H, D] and a permuted [B, H, S, D] input.
      const Tensor qkv = rnd({2, S, 3, H, D}, dt);
      expect_close(ops::rope(gpu(qkv).select(2, 1), gpu(cos), gpu(sin)), ops::rope(qkv.select(2, 1), cos, sin),
                   tol_for(dt), what + " qkv slice");
      const Tensor p = rnd({2, H, S, D}, dt).permute({0, 2, 1, 3});
      expect_close(ops::rope(gpu(p), gpu(cos), gpu(sin)), ops::rope(p, cos, sin), tol_for(dt), what + " permuted");
    }
  }
}

// ---- Fused ops (against the CPU's default compositions) -------------------------------------

TEST(CudaFused, ModulatedLayerNormMatchesComposition) {
  REQUIRE_CUDA();
  for (DType dt : {DType::BF16, DType::F32}) {
    for (int64_t D : {1536, 5120, 1001}) {
      const int64_t B = 2, S = 37;
      const Tensor x = rnd({B, S, D}, dt, 3.0f);
      // Per-batch rows taken out of a [B, 1, 6, D] modulation tensor (strided), per-token rows,
      // and one row for everything.
      const Tensor mod = rnd({B, 1, 6, D}, DType::F32, 0.5f);
      const std::vector<std::pair<Tensor, Tensor>> mods = {
          {mod.select(2, 1), mod.select(2, 0)},
          {rnd({B, S, D}, DType::F32, 0.5f), rnd({B, S, D}, DType::F32, 0.5f)},
          {rnd({1, 1, D}, DType::F32, 0.5f), rnd({1, 1, D}, DType::F32, 0.5f)},
          {mod.select(2, 4).contiguous(), mod.select(2, 3).contiguous()},
      };
      for (size_t i = 0; i < mods.size(); ++i) {
        const auto& [scale, shift] = mods[i];
        const std::string what = fmt::format("modulated_layer_norm {} D={} case {}", dtype_name(dt), D, i);
        const Tensor want = ops::modulated_layer_norm(x, scale, shift, 1e-6f);
        poison_pool(want.nbytes());
        expect_close(ops::modulated_layer_norm(gpu(x), gpu(scale), gpu(shift), 1e-6f), want, tol_for(dt), what);
        // The GPU's own composition agrees too.
        const Tensor comp = backend_for(kGpu).Backend::modulated_layer_norm(gpu(x), gpu(scale), gpu(shift), 1e-6f);
        expect_close(comp, want, tol_for(dt), what + " (composition on the GPU)");
      }
    }
  }
  // A strided x (rows of a wider tensor).
  const Tensor wide = rnd({2, 5, 2 * 1536}, DType::BF16);
  const Tensor scale = rnd({2, 1, 1536}, DType::F32, 0.5f), shift = rnd({2, 1, 1536}, DType::F32, 0.5f);
  expect_close(ops::modulated_layer_norm(gpu(wide).narrow(2, 1536, 1536), gpu(scale), gpu(shift), 1e-6f),
               ops::modulated_layer_norm(wide.narrow(2, 1536, 1536), scale, shift, 1e-6f), kTolBf16,
               "modulated_layer_norm of a strided view");
}

TEST(CudaFused, GatedResidualMatchesComposition) {
  REQUIRE_CUDA();
  for (DType dt : {DType::BF16, DType::F32}) {
    for (int64_t D : {1536, 1001}) {
      const int64_t B = 2, S = 37;
      const Tensor x = rnd({B, S, D}, dt), y = rnd({B, S, D}, dt);
      for (const Shape& gs : std::vector<Shape>{{B, 1, D}, {B, S, D}, {1, 1, D}, {1, S, D}}) {
        const Tensor gate = rnd(gs, DType::F32);
        const std::string what = fmt::format("gated_residual {} D={} gate {}", dtype_name(dt), D, shape_str(gs));
        const Tensor want = ops::gated_residual(x, y, gate);
        poison_pool(want.nbytes());
        expect_close(ops::gated_residual(gpu(x), gpu(y), gpu(gate)), want, tol_for(dt), what);
      }
    }
  }
  // Strided y (an attention output permuted back) and a strided gate.
  const Tensor x = rnd({2, 9, 64}, DType::BF16);
  const Tensor y = rnd({2, 9, 128}, DType::BF16).narrow(2, 64, 64);
  const Tensor mod = rnd({2, 1, 6, 64}, DType::F32);
  expect_close(ops::gated_residual(gpu(x), gpu(y), gpu(mod).select(2, 2)), ops::gated_residual(x, y, mod.select(2, 2)),
               kTolBf16, "gated_residual with a strided gate");
}

TEST(CudaFused, RmsNormRopeMatchesComposition) {
  REQUIRE_CUDA();
  for (DType dt : {DType::BF16, DType::F32}) {
    for (const auto& [S, H, D] : std::vector<std::array<int64_t, 3>>{{37, 12, 128}, {5, 3, 6}, {11, 40, 128}}) {
      const int64_t B = 2;
      const Tensor cos = rnd({S, D}), sin = rnd({S, D});
      const Tensor qkv = rnd({B, S, 3 * H * D}, dt, 2.0f);
      for (DType wd : {dt, DType::F32}) {
        const Tensor w = rnd({H * D}, wd);
        const std::string what = fmt::format("rms_norm_rope {} S={} H={} D={} weight {}", dtype_name(dt), S, H, D,
                                             dtype_name(wd));
        for (int64_t part : {0, 1}) {
          const Tensor x = qkv.view({B, S, 3, H, D}).select(2, part);
          const Tensor want = ops::rms_norm_rope(x, w, 1e-6f, cos, sin);
          poison_pool(want.nbytes());
          const Tensor got = ops::rms_norm_rope(gpu(qkv).view({B, S, 3, H, D}).select(2, part), gpu(w), 1e-6f,
                                                gpu(cos), gpu(sin));
          EXPECT_TRUE(got.is_contiguous()) << what;
          expect_close(got, want, tol_for(dt), what);
        }
      }
    }
  }
  // A contiguous x and a permuted one.
  const Tensor cos = rnd({7, 16}), sin = rnd({7, 16}), w = rnd({4 * 16}, DType::BF16);
  const Tensor x = rnd({2, 4, 7, 16}, DType::BF16).permute({0, 2, 1, 3});
  expect_close(ops::rms_norm_rope(gpu(x), gpu(w), 1e-6f, gpu(cos), gpu(sin)), ops::rms_norm_rope(x, w, 1e-6f, cos, sin),
               kTolBf16, "rms_norm_rope permuted");
}

// ---- Small ops ---------------------------------------------------------------------------------

TEST(CudaMisc, EmbeddingMatchesCpuAndChecksIds) {
  REQUIRE_CUDA();
  for (DType dt : {DType::F32, DType::BF16}) {
    for (int64_t D : {37, 64, 4096}) {
      const Tensor table = rnd({50, D}, dt);
      std::vector<int64_t> idv;
      for (int i = 0; i < 21; ++i) idv.push_back((i * 17 + 3) % 50);
      const Tensor ids = Tensor::from_vector_i64(idv, {3, 7});
      const Tensor want = ops::embedding(ids, table);
      poison_pool(want.nbytes());
      expect_same_values(ops::embedding(ids.to(kGpu), gpu(table)), want, "embedding with device ids");
      expect_same_values(ops::embedding(ids, gpu(table)), want, "embedding with host ids");
    }
  }
  const Tensor table = gpu(rnd({10, 8}));
  EXPECT_THROW(ops::embedding(Tensor::from_vector_i64({1, 10}, {2}).to(kGpu), table), Error);
  EXPECT_THROW(ops::embedding(Tensor::from_vector_i64({-1}, {1}).to(kGpu), table), Error);
  EXPECT_EQ(ops::embedding(Tensor::from_vector_i64({}, {0}).to(kGpu), table).shape(), (Shape{0, 8}));
}

TEST(CudaMisc, UpsampleNearest2xMatchesCpu) {
  REQUIRE_CUDA();
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    for (const Shape& shape : std::vector<Shape>{{2, 3, 5, 7}, {1, 4, 6, 8}, {4, 4}, {1, 96, 2, 9, 16}}) {
      const Tensor x = rnd(shape, dt);
      const Tensor want = ops::upsample_nearest2x(x);
      poison_pool(want.nbytes());
      expect_same_values(ops::upsample_nearest2x(gpu(x)), want, "upsample " + x.str());
    }
  }
  const Tensor t = rnd({3, 8, 6}, DType::BF16).transpose(1, 2);
  expect_same_values(ops::upsample_nearest2x(gpu(t)), ops::upsample_nearest2x(t), "upsample transposed");
  // Channels-last 3-D: every word width (C * element size of 16, 8, 4, 2 and 1 bytes).
  for (DType dt : {DType::F32, DType::BF16, DType::U8}) {
    for (const Shape& shape : std::vector<Shape>{{2, 96, 2, 5, 7}, {1, 3, 3, 4, 6}, {1, 2, 1, 3, 3}, {1, 1, 2, 3, 5}}) {
      const Tensor x = dt == DType::U8 ? sample(shape, dt) : rnd(shape, dt);
      const Tensor got = ops::upsample_nearest2x(gpu(x).to_channels_last_3d());
      if (shape[1] > 1) EXPECT_TRUE(got.is_channels_last_3d()) << x.str();
      expect_same_values(got, ops::upsample_nearest2x(x), "upsample channels-last " + x.str());
    }
  }
}

TEST(CudaMisc, SumAbsMatchesCpu) {
  REQUIRE_CUDA();
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    for (const Shape& shape : std::vector<Shape>{{1000003}, {3, 1001}, {1}, {64, 1536}}) {
      const Tensor x = rnd(shape, dt, 3.0f);
      const double want = ops::sum_abs(x);
      EXPECT_NEAR(ops::sum_abs(gpu(x)), want, 1e-9 * want) << x.str();
    }
  }
  const Tensor t = rnd({33, 17}, DType::BF16).transpose(0, 1).narrow(0, 1, 15);
  EXPECT_NEAR(ops::sum_abs(gpu(t)), ops::sum_abs(t), 1e-9 * ops::sum_abs(t));
  EXPECT_EQ(ops::sum_abs(gpu(rnd({0, 3}))), 0.0);
}
