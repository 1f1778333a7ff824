// Every op of the op list (ops/op_list.h) on every backend against the CPU reference, from one
// declarative list of cases (as ggml's test-backend-ops).
//
// A case names the op it exercises, makes its random CPU inputs (seeded by its name), runs one
// call of the ops:: wrappers (which dispatch by the inputs' device), and bounds the error
// against the CPU. For each case:
//   BackendOps/Case.RunsOnCpu/<case>       the CPU runs it: shape, dtype, no NaN where none is
//                                          expected (CI has no GPU; this still runs there)
//   BackendOps/Case.MatchesCpuOnDevices/<case>  every other available backend (CUDA) runs it on
//                                          its own copies of the inputs, views and layouts
//                                          rebuilt there, in a context with the case's
//                                          settings, into a NaN-poisoned memory pool, and
//                                          must agree with the CPU within the case's bound.
//                                          A dtype the backend's supports() refuses is skipped
//                                          and reported.
// Perf mode (VGEN_OPS_PERF=1): each case is also timed on each backend (median of several
// runs after warm-up) and one line is printed per case and backend; nothing is asserted on
// timings. Cases marked perf-only (Wan-sized shapes, too slow for the CPU reference) run only
// then, only on device backends and without a comparison. VGEN_OPS_ERRORS=1 prints each
// comparison's errors next to its bounds.
//
//   VGEN_OPS_PERF=1 build/tests/vgen_tests --gtest_filter='BackendOps*'
//   VGEN_OPS_PERF=1 build/tests/vgen_tests --gtest_filter='BackendOps/Case.MatchesCpuOnDevices/*Wan*'
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/env.h"
#include "core/error.h"
#include "core/random.h"
#include "ops/backend.h"
#include "ops/ops.h"
#include "ops/channel_norm_shapes.h"
#include "support/gpu.h"

using namespace vgen;

namespace {

// ---- The case ---------------------------------------------------------------------------------

using Args = std::vector<Tensor>;
using Outputs = std::vector<Tensor>;

// One input of a case. `base` is made on the CPU; a backend gets its own copy of it (a host
// input stays in host memory) and then `view` of that copy, so that strided, permuted and
// sliced inputs are the same views on every backend. `channels_last`: on a device backend the
// input is laid out channels-last 3-D (same values; the CPU reference reads the plain layout).
struct Input {
  Tensor base;
  std::function<Tensor(const Tensor&)> view;
  bool channels_last = false;
  bool host = false;

  Tensor on(Device d) const {
    if (!base.defined()) return {};
    // A fresh copy everywhere: copies and fills write into their inputs.
    Tensor t = d.is_cpu() || host ? base.clone() : base.to(d);
    if (view) t = view(t);
    if (channels_last && !d.is_cpu()) t = t.to_channels_last_3d();
    return t;
  }
};

// The error allowed against the CPU, and why it is what it is.
struct Bound {
  double rel_l2 = -1;   // ||got - want|| / ||want|| below this (< 0: not checked)
  double max_abs = -1;  // max |got - want| at most this (< 0: not checked; 0: equal values)
  std::string why;
  bool bitwise = false;  // the same bytes (NaN payloads and the sign of zero included)
};

// Execution settings a case needs (the environment's otherwise).
struct Settings {
  std::string attention;  // "" | "auto" | "cudnn" | "flash" | "reference"
  int tf32 = -1;          // -1: the environment's; 0 / 1: TF32 off / on
  std::string conv;       // "" | "auto" | "cudnn" | "cutlass" (ExecutionSettings::conv_kernel)
  bool conv_autotune = false;  // ExecutionSettings::conv_autotune on
  int conv_direct = -1;        // -1: the environment's; 0 / 1: ExecutionSettings::conv_direct off / on
  bool any() const { return !attention.empty() || tf32 >= 0 || !conv.empty() || conv_autotune || conv_direct >= 0; }
  ExecutionSettings make() const {
    ExecutionSettings s = ExecutionSettings::from_environment();
    if (!attention.empty()) s.attention_backend = attention;
    if (tf32 >= 0) s.allow_tf32 = tf32 == 1;
    if (!conv.empty()) s.conv_kernel = conv;
    if (conv_autotune) s.conv_autotune = true;
    if (conv_direct >= 0) s.conv_direct = conv_direct == 1;
    return s;
  }
};

// Seeded random CPU tensors: the same for a case on every run and machine.
class Gen {
 public:
  explicit Gen(uint64_t seed) : seed_(seed) {}
  // Standard normal values times `scale`, rounded to `dtype`.
  Tensor normal(const Shape& shape, DType dtype = DType::F32, float scale = 1.0f) {
    Tensor t = randn(shape, next());
    if (scale != 1.0f) t = ops::scale(t, scale);
    return t.to(dtype);
  }
  // Random bytes seen as `dtype`: every bit pattern, NaN payloads and infinities included.
  Tensor bytes(const Shape& shape, DType dtype) {
    const size_t n = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
    auto buf = std::make_shared<std::vector<uint8_t>>(std::max<size_t>(n, 1));
    std::mt19937_64 gen(next());
    for (auto& b : *buf) b = static_cast<uint8_t>(gen());
    if (dtype == DType::BOOL)
      for (auto& b : *buf) b &= 1;
    return Tensor::from_blob(buf->data(), shape, dtype, Device::cpu(), buf).clone();
  }
  // Values of `dtype` that every dtype can be converted from and to comparably (F8 and BOOL:
  // every bit pattern; integers: normal values times 40, non-negative for U8).
  Tensor sample(const Shape& shape, DType dtype) {
    if (dtype == DType::F8_E4M3 || dtype == DType::F8_E5M2 || dtype == DType::BOOL) return bytes(shape, dtype);
    std::vector<float> v = normal(shape, DType::F32, 40.0f).to_vector();
    if (dtype == DType::U8)
      for (float& x : v) x = std::fabs(x);
    return Tensor::from_vector(v, shape).to(dtype);
  }

 private:
  uint64_t next() { return seed_ * 1000003ull + (++draws_); }
  uint64_t seed_;
  uint64_t draws_ = 0;
};

struct OpCase {
  Op op;                    // the op of the list it exercises
  std::string name;         // "binary add bf16[3,5,7] + bf16[7]"
  DType dtype;              // the main input's dtype, as supports() takes it
  std::function<std::vector<Input>(Gen&)> inputs;
  std::function<Outputs(const Args&, Device)> run;  // calls ops:: on the args' device
  Bound bound;
  Shape shape;              // of the first output
  DType out_dtype;          // of the first output
  Settings settings;
  double flops = 0;         // perf mode: work per call (0: GB/s of the bytes read and written)
  bool perf_only = false;   // Wan-sized: timed on device backends in perf mode only
  bool nan_ok = false;      // inputs hold NaN bit patterns, so may the outputs
  std::vector<size_t> host_outputs = {};  // outputs in host memory by design (else on the device)
  std::string test_name;    // the gtest name (made from `name`)
};

bool perf_mode() { return env_flag("VGEN_OPS_PERF", false); }

// ---- Names ------------------------------------------------------------------------------------

std::string dt(DType d) {
  std::string s(dtype_name(d));
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string sh(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

const char* binary_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::Add: return "add";
    case BinaryOp::Sub: return "sub";
    case BinaryOp::Mul: return "mul";
    case BinaryOp::Div: return "div";
  }
  return "?";
}

const char* unary_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::Scale: return "scale";
    case UnaryOp::AddScalar: return "add_scalar";
    case UnaryOp::Clamp: return "clamp";
    case UnaryOp::Silu: return "silu";
    case UnaryOp::GeluTanh: return "gelu_tanh";
    case UnaryOp::Gelu: return "gelu";
    case UnaryOp::Exp: return "exp";
    case UnaryOp::Neg: return "neg";
  }
  return "?";
}

const char* act_name(Activation act) {
  switch (act) {
    case Activation::None: return "none";
    case Activation::GeluTanh: return "gelu_tanh";
    case Activation::Gelu: return "gelu";
    case Activation::Silu: return "silu";
  }
  return "?";
}

const BinaryOp kBinaryOps[] = {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div};
const UnaryOp kUnaryOps[] = {UnaryOp::Scale, UnaryOp::AddScalar, UnaryOp::Clamp, UnaryOp::Silu,
                             UnaryOp::GeluTanh, UnaryOp::Gelu,   UnaryOp::Exp,   UnaryOp::Neg};
const Activation kActivations[] = {Activation::None, Activation::GeluTanh, Activation::Gelu, Activation::Silu};
const DType kAllDtypes[] = {DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::F8_E5M2,
                            DType::F64, DType::I64, DType::I32,  DType::U8,      DType::BOOL};

// ---- Bounds -----------------------------------------------------------------------------------

Bound by_dtype(DType d) {
  if (d == DType::F32) return {1e-5, -1, "float32 output: summation order only"};
  return {1e-2, -1, "16-bit output: one rounding of each element (2^-8 relative), float32 inside"};
}
Bound exact(const std::string& why) { return {-1, 0, why}; }
// quantized_linear: the same quantized operands on every backend; Hopper's FP8 tensor cores add
// their products in a narrower accumulator than float32 (about 14 mantissa bits between
// cuBLASLt's promotions to float32, measured 1.3e-4 relative L2 on an H200), so a float32 output
// gets 1e-3 there, not the summation-order bound. NVFP4 (W4A16) runs the ordinary GEMM.
Bound fp8_bound(QuantFormat f, DType d) {
  if (d == DType::F32 && f != QuantFormat::Nvfp4)
    return {1e-3, -1, "float32 output of FP8 tensor cores: their accumulator's precision"};
  return by_dtype(d);
}
const Bound kMoves = exact("moves or converts values, same rounding rule everywhere: equal values");
const Bound kSameBytes = {-1, 0, "moves bytes: the same bytes", true};

// ---- Helpers for the cases --------------------------------------------------------------------

Input in(Tensor t) { return {std::move(t), nullptr, false, false}; }
Input in(Tensor t, std::function<Tensor(const Tensor&)> view) { return {std::move(t), std::move(view), false, false}; }
Input cl(Tensor t) { return {std::move(t), nullptr, true, false}; }
Input host(Tensor t, std::function<Tensor(const Tensor&)> view = nullptr) {
  return {std::move(t), std::move(view), false, true};
}
Input none() { return {}; }

Shape broadcast(const Shape& a, const Shape& b) {
  const size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Tensor binary_call(BinaryOp op, const Tensor& a, const Tensor& b) {
  switch (op) {
    case BinaryOp::Add: return ops::add(a, b);
    case BinaryOp::Sub: return ops::sub(a, b);
    case BinaryOp::Mul: return ops::mul(a, b);
    case BinaryOp::Div: return ops::div(a, b);
  }
  return {};
}

// The unary ops with (alpha, beta) = (-0.75, 1.25) where they take them. Neg has no wrapper:
// it goes to the backend directly, after the same supports() check.
Tensor unary_call(UnaryOp op, const Tensor& x) {
  switch (op) {
    case UnaryOp::Scale: return ops::scale(x, -0.75f);
    case UnaryOp::AddScalar: return ops::add_scalar(x, -0.75f);
    case UnaryOp::Clamp: return ops::clamp(x, -0.75f, 1.25f);
    case UnaryOp::Silu: return ops::silu(x);
    case UnaryOp::GeluTanh: return ops::gelu_tanh(x);
    case UnaryOp::Gelu: return ops::gelu(x);
    case UnaryOp::Exp: return ops::exp(x);
    case UnaryOp::Neg: {
      Backend& b = backend_for(x.device());
      VGEN_CHECK(b.supports(Op::unary, x.dtype()), "neg: unary not supported for {}", x.str());
      return b.unary(UnaryOp::Neg, x, 0.0f, 0.0f);
    }
  }
  return {};
}

Conv3dParams conv_params(std::array<int64_t, 3> stride, std::array<int64_t, 3> padding, int64_t before = -1) {
  Conv3dParams p;
  p.stride = stride;
  p.padding = padding;
  p.time_padding_before = before;
  return p;
}

Shape conv_out(const Shape& x, const Shape& w, const Conv3dParams& p) {
  Shape out{x[0], w[0], 0, 0, 0};
  for (int i = 0; i < 3; ++i) {
    const int64_t before = i == 0 && p.time_padding_before >= 0 ? p.time_padding_before : p.padding[i];
    out[2 + i] = (x[2 + i] + before + p.padding[i] - w[2 + i]) / p.stride[i] + 1;
  }
  return out;
}

// [B, S, H, D] memory seen as [B, H, S, D], as the models pass q/k/v to attention.
Tensor bshd_view(const Tensor& t) { return t.permute({0, 2, 1, 3}); }

Tensor scalar_f64(double v) {
  Tensor t = Tensor::empty({1}, DType::F64);
  t.data<double>()[0] = v;
  return t;
}

// ---- The cases --------------------------------------------------------------------------------

class Cases {
 public:
  void add(OpCase c) {
    std::string n;
    for (char ch : c.name) {
      if (std::isalnum(static_cast<unsigned char>(ch))) n += ch;
      else if (!n.empty() && n.back() != '_') n += '_';
    }
    while (!n.empty() && n.back() == '_') n.pop_back();
    std::string unique = n;
    for (int i = 2; names_.count(unique); ++i) unique = n + "_" + std::to_string(i);
    names_.insert(unique);
    c.test_name = unique;
    list_.push_back(std::move(c));
  }
  std::vector<OpCase>& list() { return list_; }

 private:
  std::vector<OpCase> list_;
  std::set<std::string> names_;
};

void copy_cases(Cases& cs) {
  // Every dtype into every non-F8 dtype (conversions to F8 are refused everywhere): contiguous;
  // a permuted and sliced source into a slice of a larger destination; a strided host source
  // uploaded then converted; a strided device source converted into host memory.
  const DType targets[] = {DType::F32, DType::BF16, DType::F16, DType::F64,
                           DType::I64, DType::I32,  DType::U8,  DType::BOOL};
  for (DType sd : kAllDtypes) {
    for (DType dd : targets) {
      cs.add({Op::copy, fmt::format("copy {}[4,6,11] -> {}: contiguous, strided into a slice, upload, download", dt(sd), dt(dd)),
              dd,
              [sd](Gen& g) {
                const Tensor src = g.sample({4, 6, 11}, sd);
                return std::vector<Input>{in(src), host(src)};
              },
              [dd](const Args& t, Device d) {
                const Tensor& src = t[0];
                const Tensor& host_src = t[1];
                Tensor into = Tensor::full({12, 5, 7}, 3.0f, dd, d);
                into.narrow(0, 1, 11).narrow(1, 0, 4).narrow(2, 1, 5).copy_(src.permute({2, 0, 1}).narrow(2, 1, 5));
                Tensor down = Tensor::empty({11, 6, 4}, dd);
                down.copy_(src.permute({2, 1, 0}));
                return Outputs{src.to(dd), into, host_src.permute({1, 0, 2}).to(d).to(dd), down};
              },
              kMoves, {4, 6, 11}, dd, {}, 0, false, /*nan_ok=*/true, /*host_outputs=*/{3}});
    }
  }
  // Permuted copies (contiguous() of a view), exact.
  struct Perm {
    std::string what;
    Shape shape;
    std::vector<int64_t> order;
  };
  const std::vector<Perm> perms = {
      {"[B,S,H,D] -> [B,H,S,D]", {2, 33, 12, 128}, {0, 2, 1, 3}},
      {"unpatchify 8-D", {1, 3, 5, 7, 1, 2, 2, 16}, {0, 7, 1, 4, 2, 5, 3, 6}},
      {"patchify 8-D", {1, 16, 3, 1, 5, 2, 7, 2}, {0, 2, 4, 6, 1, 3, 5, 7}},
  };
  for (DType d : {DType::BF16, DType::F32, DType::F16}) {
    for (const Perm& p : perms) {
      Shape out(p.order.size());
      for (size_t i = 0; i < out.size(); ++i) out[i] = p.shape[p.order[i]];
      cs.add({Op::copy, fmt::format("copy {}{} permuted {}", dt(d), sh(p.shape), p.what), d,
              [d, p](Gen& g) { return std::vector<Input>{in(g.normal(p.shape, d))}; },
              [p](const Args& t, Device) { return Outputs{t[0].permute(p.order).contiguous()}; }, kSameBytes, out, d});
    }
    cs.add({Op::copy, fmt::format("copy {}[5,7,9] narrowed at an odd offset and transposed", dt(d)), d,
            [d](Gen& g) { return std::vector<Input>{in(g.normal({5, 7, 9}, d))}; },
            [](const Args& t, Device) { return Outputs{t[0].narrow(2, 1, 7).transpose(0, 2).contiguous()}; }, kSameBytes,
            {7, 7, 5}, d});
    cs.add({Op::copy, fmt::format("copy {} cat [2,3,5] and [2,4,5] along 1", dt(d)), d,
            [d](Gen& g) { return std::vector<Input>{in(g.normal({2, 3, 5}, d)), in(g.normal({2, 4, 5}, d))}; },
            [](const Args& t, Device) { return Outputs{ops::cat({t[0], t[1]}, 1)}; }, kSameBytes, {2, 7, 5}, d});
    cs.add({Op::copy, fmt::format("copy {} pad [2,3,5] dim 2 by 1 and 2", dt(d)), d,
            [d](Gen& g) { return std::vector<Input>{in(g.normal({2, 3, 5}, d))}; },
            [](const Args& t, Device) { return Outputs{ops::pad(t[0], 2, 1, 2)}; }, kSameBytes, {2, 3, 8}, d});
  }
  // Innermost destination runs read from a source that steps by 2 or 3 elements or repeats one
  // (the gathered-word copy; runs of other lengths fall back to element copies): the Wan2.2
  // VAE's DupUp3D channel de-interleave and broadcasts.
  for (DType d : {DType::BF16, DType::F32}) {
    for (int64_t n : {16, 24, 12}) {
      cs.add({Op::copy, fmt::format("copy {} [3,5,{},2] -> [3,5,2,{}] (source step 2)", dt(d), n, n), d,
              [d, n](Gen& g) { return std::vector<Input>{in(g.normal({3, 5, n, 2}, d))}; },
              [](const Args& t, Device) { return Outputs{t[0].transpose(2, 3).contiguous()}; }, kSameBytes,
              {3, 5, 2, n}, d});
    }
    cs.add({Op::copy, fmt::format("copy {} [2,3,32] narrowed by 3 along channels (source step 3)", dt(d)), d,
            [d](Gen& g) { return std::vector<Input>{in(g.normal({2, 32, 3}, d))}; },
            [](const Args& t, Device) { return Outputs{t[0].transpose(1, 2).narrow(1, 1, 2).contiguous()}; }, kSameBytes,
            {2, 2, 32}, d});
    // Destination runs shorter than a word: the Wan2.2 VAE's unpatchify of a channels-last
    // decoder output (runs of 2 stepping 2, the runs 12 apart on a device), and runs of 4
    // elements stepping 5, the runs 20 apart.
    cs.add({Op::copy, fmt::format("copy {} channels-last [1,12,2,3,8] unpatchified to [1,3,2,6,16]", dt(d)), d,
            [d](Gen& g) { return std::vector<Input>{cl(g.normal({1, 12, 2, 3, 8}, d))}; },
            [d](const Args& t, Device dev) {
              Tensor v = Tensor::empty({1, 3, 2, 6, 16}, d, dev);
              v.view({1, 3, 2, 3, 2, 8, 2}).copy_(t[0].unflatten(1, {3, 2, 2}).permute({0, 1, 4, 5, 3, 6, 2}));
              return Outputs{v};
            },
            kSameBytes, {1, 3, 2, 6, 16}, d});
    cs.add({Op::copy, fmt::format("copy {} [5,8,4] from every fifth element (runs stepping 5, 20 apart)", dt(d)), d,
            [d](Gen& g) { return std::vector<Input>{in(g.normal({5, 8, 4, 5}, d))}; },
            [](const Args& t, Device) { return Outputs{t[0].select(3, 1).contiguous()}; }, kSameBytes, {5, 8, 4}, d});
    cs.add({Op::copy, fmt::format("copy {} [4,1] expanded to [4,48] (source step 0)", dt(d)), d,
            [d](Gen& g) { return std::vector<Input>{in(g.normal({4, 1}, d))}; },
            [](const Args& t, Device) { return Outputs{t[0].expand({4, 48}).contiguous()}; }, kSameBytes, {4, 48}, d});
  }
  cs.add({Op::copy, "copy f32 10-D reversed (dims that do not merge)", DType::F32,
          [](Gen& g) { return std::vector<Input>{in(g.normal({2, 2, 2, 2, 2, 2, 2, 2, 2, 3}))}; },
          [](const Args& t, Device) { return Outputs{t[0].permute({9, 8, 7, 6, 5, 4, 3, 2, 1, 0}).contiguous()}; },
          kSameBytes, {3, 2, 2, 2, 2, 2, 2, 2, 2, 2}, DType::F32});
  cs.add({Op::copy, "copy bf16 empty [0,5] transposed", DType::BF16,
          [](Gen& g) { return std::vector<Input>{in(g.normal({0, 5}, DType::BF16))}; },
          [](const Args& t, Device) { return Outputs{t[0].transpose(0, 1).contiguous()}; }, kSameBytes, {5, 0},
          DType::BF16});
  for (DType d : {DType::F32, DType::BF16}) {
    cs.add({Op::copy, fmt::format("copy {} cat channels-last [2,16,1..3,5,7] along T", dt(d)), d,
            [d](Gen& g) { return std::vector<Input>{cl(g.normal({2, 16, 3, 5, 7}, d))}; },
            [](const Args& t, Device) { return Outputs{ops::cat({t[0].narrow(2, 1, 2), t[0]}, 2)}; }, kMoves,
            {2, 16, 5, 5, 7}, d});
    // Downsample2D's F.pad (0, 1, 0, 1) of a channels-last feature map (the FLUX VAE encoder).
    cs.add({Op::copy, fmt::format("copy {} pad channels-last [2,16,1,5,7] bottom and right", dt(d)), d,
            [d](Gen& g) { return std::vector<Input>{cl(g.normal({2, 16, 1, 5, 7}, d))}; },
            [](const Args& t, Device) { return Outputs{ops::pad(ops::pad(t[0], 4, 0, 1), 3, 0, 1)}; }, kMoves,
            {2, 16, 1, 6, 8}, d});
    // A causal conv's cached last frames copied to the front of its next channels-last input:
    // with one sample both are one dense span (one memcpy on a device); with two they are not.
    for (int64_t n : {1, 2}) {
      cs.add({Op::copy, fmt::format("copy {} channels-last [{},16,2,5,7] frames into the front of [{},16,4,5,7]", dt(d), n, n), d,
              [d, n](Gen& g) {
                return std::vector<Input>{cl(g.normal({n, 16, 3, 5, 7}, d)), cl(g.normal({n, 16, 4, 5, 7}, d))};
              },
              [](const Args& t, Device) {
                t[1].narrow(2, 0, 2).copy_(t[0].narrow(2, 1, 2));
                return Outputs{t[1]};
              },
              kMoves, {n, 16, 4, 5, 7}, d});
    }
  }
}

void fill_cases(Cases& cs) {
  // Contiguous fills of several lengths and one at an odd offset inside random bytes (the rest
  // must stay as it was). F8 fills and strided fills (which the CPU refuses) are in
  // cuda_backend_test.cpp.
  for (DType d : kAllDtypes) {
    if (d == DType::F8_E4M3 || d == DType::F8_E5M2) continue;
    for (float value : {0.0f, 2.75f, -1.5f}) {
      cs.add({Op::fill, fmt::format("fill {} {} n=1,7,64,1001 and [270] at offset 1", dt(d), value), d,
              [d](Gen& g) { return std::vector<Input>{in(g.bytes({6, 9, 5}, d))}; },
              [d, value](const Args& t, Device dev) {
                Outputs out;
                for (int64_t n : {1, 7, 64, 1001}) out.push_back(Tensor::full({n}, value, d, dev));
                Tensor base = t[0];
                backend_for(dev).fill(base.view({270}).narrow(0, 1, 263), value);
                out.push_back(base);
                return out;
              },
              kSameBytes, {1}, d, {}, 0, false, /*nan_ok=*/true});
    }
  }
}

void binary_cases(Cases& cs) {
  struct S {
    Shape a, b;
    DType da, db;
    bool permute_a;
  };
  const std::vector<S> shapes = {
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
  for (const S& s : shapes) {
    for (BinaryOp op : kBinaryOps) {
      cs.add({Op::binary,
              fmt::format("binary {} {}{} {} {}{}{}", binary_name(op), dt(s.da), sh(s.a), op == BinaryOp::Add ? "+" : "by",
                          dt(s.db), sh(s.b), s.permute_a ? " a permuted" : ""),
              s.da,
              [s](Gen& g) {
                Input a = s.permute_a ? in(g.normal({s.a[3], s.a[1], s.a[2], s.a[0]}, s.da),
                                           [](const Tensor& t) { return t.permute({3, 1, 2, 0}); })
                                      : in(g.normal(s.a, s.da));
                return std::vector<Input>{a, in(g.normal(s.b, s.db, 2.0f))};
              },
              [op](const Args& t, Device) { return Outputs{binary_call(op, t[0], t[1])}; }, by_dtype(s.da),
              broadcast(s.a, s.b), s.da});
    }
  }
  // An operand whose innermost elements step by 2 to 8 (gathered into the 16-byte vector path) or
  // 9 (one element a thread), at an odd offset; and the Wan2.2 VAE's spatial up block as it runs:
  // the upsampler's phases [1, 4 x 8, 2, 5, 7] (channels-last memory) read through their diagonal
  // view plus the nearest repeat of its input [1, 16, 2, 4, 6], output channel o from input
  // channel 2o + p at row offset p, both read in place as [B, T, 1, H, 2, W, 2, C].
  for (DType d : {DType::BF16, DType::F32}) {
    for (int64_t step : {2, 3, 8, 9}) {
      for (bool first : {false, true}) {
        cs.add({Op::binary,
                fmt::format("binary add {}[4,6,16] + {}[4,6,16]{} stepping by {}", dt(d), dt(d),
                            first ? " (the first operand)" : "", step),
                d,
                [=](Gen& g) {
                  const Input strided = in(g.normal({4, 6, 16 * step}, d), [step](const Tensor& t) {
                    return t.unflatten(2, {16, step}).select(3, step - 1);
                  });
                  const Input plain = in(g.normal({4, 6, 16}, d));
                  return first ? std::vector<Input>{strided, plain} : std::vector<Input>{plain, strided};
                },
                [](const Args& t, Device) { return Outputs{ops::add(t[0], t[1])}; }, by_dtype(d), {4, 6, 16}, d});
      }
    }
    cs.add({Op::binary, fmt::format("binary add {} upsampler phases (diagonal view) + nearest repeat (channel step 2)", dt(d)),
            d,
            [d](Gen& g) {
              // Memory order [B, T, H, W, C] for both.
              const Input phases = in(g.normal({1, 2, 5, 7, 32}, d), [](const Tensor& t) {
                const int64_t s1 = 1, s4 = 32, s3 = 7 * 32, s2 = 5 * 7 * 32;
                return t.as_strided({1, 2, 1, 4, 2, 6, 2, 8}, {2 * s2, s2, s2, s3, s3 + 16 * s1, s4, s4 + 8 * s1, s1});
              });
              const Input x = in(g.normal({1, 2, 4, 6, 16}, d), [](const Tensor& t) {
                const int64_t sT = 4 * 6 * 16, sH = 6 * 16, sW = 16;
                return t.as_strided({1, 2, 1, 4, 2, 6, 2, 8}, {2 * sT, sT, 0, sH, 1, sW, 0, 2});
              });
              return std::vector<Input>{phases, x};
            },
            [](const Args& t, Device) { return Outputs{ops::add(t[0], t[1])}; }, by_dtype(d), {1, 2, 1, 4, 2, 6, 2, 8},
            d});
  }
  cs.add({Op::binary, "binary mul bf16[3,1536] by f32[1536], both views at an odd offset (no vector path)", DType::BF16,
          [](Gen& g) {
            return std::vector<Input>{in(g.normal({3, 1537}, DType::BF16), [](const Tensor& t) { return t.narrow(1, 1, 1536); }),
                                      in(g.normal({1537}), [](const Tensor& t) { return t.narrow(0, 1, 1536); })};
          },
          [](const Args& t, Device) { return Outputs{ops::mul(t[0], t[1])}; }, by_dtype(DType::BF16), {3, 1536},
          DType::BF16});
  cs.add({Op::binary, "binary add i64[4,5] + f32[5] (integers read as float32)", DType::I64,
          [](Gen& g) { return std::vector<Input>{in(g.sample({4, 5}, DType::I64)), in(g.normal({5}, DType::F32, 10.0f))}; },
          [](const Args& t, Device) { return Outputs{ops::add(t[0], t[1])}; },
          exact("small integers plus float32, rounded to integers: exact"), {4, 5}, DType::I64});
  // Channels-last 3-D operands (the VAE's layout on a GPU).
  for (DType d : {DType::F32, DType::BF16}) {
    const Shape s{2, 16, 3, 5, 7};
    cs.add({Op::binary, fmt::format("binary add {}{} channels-last + channels-last", dt(d), sh(s)), d,
            [d, s](Gen& g) { return std::vector<Input>{cl(g.normal(s, d)), cl(g.normal(s, d))}; },
            [](const Args& t, Device) { return Outputs{ops::add(t[0], t[1])}; }, by_dtype(d), s, d});
    cs.add({Op::binary, fmt::format("binary add {}{} plain + channels-last", dt(d), sh(s)), d,
            [d, s](Gen& g) { return std::vector<Input>{in(g.normal(s, d)), cl(g.normal(s, d))}; },
            [](const Args& t, Device) { return Outputs{ops::add(t[0], t[1])}; }, by_dtype(d), s, d});
    cs.add({Op::binary, fmt::format("binary add {}{} channels-last + [1,16,1,1,1] broadcast", dt(d), sh(s)), d,
            [d, s](Gen& g) { return std::vector<Input>{cl(g.normal(s, d)), in(g.normal({1, 16, 1, 1, 1}, d))}; },
            [](const Args& t, Device) { return Outputs{ops::add(t[0], t[1])}; }, by_dtype(d), s, d});
  }
}

void unary_cases(Cases& cs) {
  for (DType d : {DType::F32, DType::BF16, DType::F16}) {
    for (bool strided : {false, true}) {
      for (UnaryOp op : kUnaryOps) {
        cs.add({Op::unary,
                fmt::format("unary {} {}{}", unary_name(op), dt(d), strided ? "[9,2,1001] transposed and narrowed" : "[3,1001]"),
                d,
                [d, strided](Gen& g) {
                  if (!strided) return std::vector<Input>{in(g.normal({3, 1001}, d, 2.0f))};
                  return std::vector<Input>{in(g.normal({9, 2, 1001}, d, 2.0f),
                                               [](const Tensor& t) { return t.transpose(0, 2).narrow(1, 0, 1); })};
                },
                [op](const Args& t, Device) { return Outputs{unary_call(op, t[0])}; }, by_dtype(d),
                strided ? Shape{1001, 1, 9} : Shape{3, 1001}, d});
      }
    }
    cs.add({Op::unary, fmt::format("unary silu {} empty [0,7]", dt(d)), d,
            [d](Gen& g) { return std::vector<Input>{in(g.normal({0, 7}, d))}; },
            [](const Args& t, Device) { return Outputs{ops::silu(t[0])}; }, by_dtype(d), {0, 7}, d});
    if (d == DType::F16) continue;
    cs.add({Op::unary, fmt::format("unary silu {}[2,16,3,5,7] channels-last", dt(d)), d,
            [d](Gen& g) { return std::vector<Input>{cl(g.normal({2, 16, 3, 5, 7}, d))}; },
            [](const Args& t, Device) { return Outputs{ops::silu(t[0])}; }, by_dtype(d), {2, 16, 3, 5, 7}, d});
  }
}

void axpby_cases(Cases& cs) {
  for (DType d : {DType::F32, DType::BF16}) {
    cs.add({Op::axpby, fmt::format("axpby 0.3 {}[7,5,33] - 1.7 {}[33,5,7] permuted", dt(d), dt(d)), d,
            [d](Gen& g) {
              return std::vector<Input>{in(g.normal({7, 5, 33}, d)),
                                        in(g.normal({33, 5, 7}, d), [](const Tensor& t) { return t.permute({2, 1, 0}); })};
            },
            [](const Args& t, Device) { return Outputs{ops::axpby(0.3f, t[0], -1.7f, t[1])}; }, by_dtype(d),
            {7, 5, 33}, d});
    cs.add({Op::axpby, fmt::format("axpby 2 {}[16,1024] + 0.5 f32[16,1024] mixed dtypes", dt(d)), d,
            [d](Gen& g) { return std::vector<Input>{in(g.normal({16, 1024}, d)), in(g.normal({16, 1024}))}; },
            [](const Args& t, Device) { return Outputs{ops::axpby(2.0f, t[0], 0.5f, t[1])}; }, by_dtype(d),
            {16, 1024}, d});
    cs.add({Op::axpby, fmt::format("axpby 0.5 {}[2,16,3,5,7] - 2 x, both channels-last", dt(d)), d,
            [d](Gen& g) { return std::vector<Input>{cl(g.normal({2, 16, 3, 5, 7}, d)), cl(g.normal({2, 16, 3, 5, 7}, d))}; },
            [](const Args& t, Device) { return Outputs{ops::axpby(0.5f, t[0], -2.0f, t[1])}; }, by_dtype(d),
            {2, 16, 3, 5, 7}, d});
  }
}

// x (made by `make_x`, shape xs, dtype dx) @ w[N, K]^T (+ b), every activation.
void linear_cases(Cases& cs, const std::string& what, DType dx, const Shape& xs,
                  const std::function<Input(Gen&)>& make_x, int64_t N, DType dw, float wscale, bool bias,
                  const Bound& bound, float bscale = 1.0f) {
  const int64_t K = xs.back();
  int64_t M = 1;
  for (size_t i = 0; i + 1 < xs.size(); ++i) M *= xs[i];
  Shape out = xs;
  out.back() = N;
  for (Activation act : kActivations) {
    cs.add({Op::linear,
            fmt::format("linear {}{} x {}[{},{}]{} {} {}", dt(dx), sh(xs), dt(dw), N, K, bias ? " + bias" : "",
                        act_name(act), what),
            dx,
            [=](Gen& g) {
              return std::vector<Input>{make_x(g), in(g.normal({N, K}, dw, wscale)),
                                        bias ? in(g.normal({N}, dw, bscale)) : none()};
            },
            [act](const Args& t, Device) { return Outputs{ops::linear(t[0], t[1], t[2], act)}; }, bound, out, dx, {},
            2.0 * M * N * K});
  }
}

void linear_cases(Cases& cs) {
  for (DType d : {DType::F32, DType::BF16, DType::F16}) {
    linear_cases(cs, "odd sizes", d, {3, 13, 71}, [d](Gen& g) { return in(g.normal({3, 13, 71}, d)); }, 45, d, 0.2f,
                 true, by_dtype(d));
    // One output element: a relative error of one element is not a fair measure when it lands
    // near zero, so 16-bit is held to an absolute bound instead. cuBLASLt's fused epilogue (like
    // PyTorch's linear followed by the activation) rounds the pre-activation s = x.w + b (std ~3
    // here, |s| < 8) to 16 bits before the activation (slope at most 1.13): half an ulp (2^-5
    // for bf16 in [4, 8)) times 1.13, under 2e-2.
    linear_cases(cs, "1x1", d, {1, 1, 8}, [d](Gen& g) { return in(g.normal({1, 1, 8}, d)); }, 1, d, 1.0f, true,
                 d == DType::F32 ? by_dtype(d)
                                 : Bound{-1, 2e-2, "one element; 16-bit rounding of the pre-activation (|s| < 8) "
                                                   "through the activation's slope: absolute"});
    linear_cases(cs, "no bias", d, {5, 64}, [d](Gen& g) { return in(g.normal({5, 64}, d)); }, 24, d, 0.1f, false,
                 by_dtype(d));
  }
  for (DType d : {DType::F32, DType::BF16}) {
    linear_cases(cs, "large", d, {1000, 1536}, [d](Gen& g) { return in(g.normal({1000, 1536}, d)); }, 8960, d, 0.03f,
                 true,
                 d == DType::F32 ? Bound{2e-5, -1, "float32, K=1536: longer sums, summation order"} : by_dtype(d),
                 0.1f);
    linear_cases(cs, "row slice of a wider buffer", d, {2, 9, 40},
                 [d](Gen& g) { return in(g.normal({2, 9, 100}, d), [](const Tensor& t) { return t.narrow(2, 17, 40); }); },
                 33, d, 0.2f, true, by_dtype(d));
    linear_cases(cs, "transposed input", d, {11, 40},
                 [d](Gen& g) { return in(g.normal({40, 11}, d), [](const Tensor& t) { return t.transpose(0, 1); }); }, 33,
                 d, 0.2f, true, by_dtype(d));
    linear_cases(cs, "permuted 4-D input", d, {2, 3, 7, 40},
                 [d](Gen& g) {
                   return in(g.normal({2, 7, 3, 40}, d), [](const Tensor& t) { return t.permute({0, 2, 1, 3}); });
                 },
                 33, d, 0.2f, true, by_dtype(d));
  }
  linear_cases(cs, "mixed: bf16 input, f32 weight and bias (computed in f32, bf16 out)", DType::BF16, {6, 50},
               [](Gen& g) { return in(g.normal({6, 50}, DType::BF16)); }, 21, DType::F32, 0.2f, true,
               by_dtype(DType::BF16));
  linear_cases(cs, "mixed: f32 input, bf16 weight and bias (f32 out)", DType::F32, {6, 50},
               [](Gen& g) { return in(g.normal({6, 50})); }, 21, DType::BF16, 1.0f, true, by_dtype(DType::F32));
}

void matmul_cases(Cases& cs) {
  struct M {
    std::string what;
    Shape as, bs;  // as made
    std::function<Tensor(const Tensor&)> va, vb;
    Shape out;
    double flops;
  };
  const auto tr = [](const Tensor& t) { return t.transpose(-1, -2); };
  const std::vector<M> mm = {
      {"batched", {2, 3, 37, 29}, {2, 3, 29, 41}, nullptr, nullptr, {2, 3, 37, 41}, 2.0 * 6 * 37 * 29 * 41},
      {"b 2-D broadcast", {2, 3, 37, 29}, {29, 41}, nullptr, nullptr, {2, 3, 37, 41}, 2.0 * 6 * 37 * 29 * 41},
      {"3-D a, b 2-D broadcast", {2, 3, 37, 29}, {29, 41}, [](const Tensor& t) { return t.select(0, 1); }, nullptr,
       {3, 37, 41}, 2.0 * 3 * 37 * 29 * 41},
      {"b transposed", {2, 3, 37, 29}, {2, 3, 41, 29}, nullptr, tr, {2, 3, 37, 41}, 2.0 * 6 * 37 * 29 * 41},
      {"a transposed", {2, 3, 29, 37}, {2, 3, 29, 41}, tr, nullptr, {2, 3, 37, 41}, 2.0 * 6 * 37 * 29 * 41},
      {"a transposed, b 2-D broadcast", {2, 3, 29, 37}, {29, 41}, tr, nullptr, {2, 3, 37, 41}, 2.0 * 6 * 37 * 29 * 41},
      {"heads of [B,S,H,D] buffers (q k^T)", {2, 50, 3, 16}, {2, 40, 3, 16}, bshd_view,
       [](const Tensor& t) { return bshd_view(t).transpose(-1, -2); }, {2, 3, 50, 40}, 2.0 * 6 * 50 * 16 * 40},
      {"heads of one batch of [B,S,H,D] buffers", {2, 50, 3, 16}, {2, 40, 3, 16},
       [](const Tensor& t) { return bshd_view(t).select(0, 1); },
       [](const Tensor& t) { return bshd_view(t).select(0, 1).transpose(-1, -2); }, {3, 50, 40},
       2.0 * 3 * 50 * 16 * 40},
      {"large", {4, 300, 256}, {4, 256, 500}, nullptr, nullptr, {4, 300, 500}, 2.0 * 4 * 300 * 256 * 500},
  };
  for (DType d : {DType::F32, DType::BF16}) {
    for (const M& m : mm) {
      cs.add({Op::matmul, fmt::format("matmul {} {} x {} {}", dt(d), sh(m.as), sh(m.bs), m.what), d,
              [d, m](Gen& g) { return std::vector<Input>{in(g.normal(m.as, d), m.va), in(g.normal(m.bs, d), m.vb)}; },
              [](const Args& t, Device) { return Outputs{ops::matmul(t[0], t[1])}; }, by_dtype(d), m.out, d, {},
              m.flops});
    }
  }
}

void layer_norm_cases(Cases& cs) {
  struct L {
    Shape shape;
    DType d, wd;
    bool weight, bias;
  };
  // Widths of whole 16-byte vectors up to 24 a lane run one warp per row on CUDA (plain, with a
  // weight, a bias, or both), the others a block per row.
  const std::vector<L> ls = {
      {{3, 7, 37}, DType::F32, DType::F32, true, true},     {{2, 5, 1536}, DType::BF16, DType::BF16, true, true},
      {{2, 5, 1536}, DType::BF16, DType::BF16, false, false}, {{3, 5120}, DType::BF16, DType::F32, false, true},
      {{2, 5, 1536}, DType::BF16, DType::F32, true, false}, {{4, 1536}, DType::F32, DType::BF16, false, true},
      {{3, 20000}, DType::F32, DType::F32, true, true},     {{2, 3, 40001}, DType::BF16, DType::BF16, false, false},
      {{5, 1}, DType::F32, DType::F32, true, true},         {{0, 8}, DType::F32, DType::F32, false, false},
  };
  for (const L& l : ls) {
    const int64_t D = l.shape.back();
    cs.add({Op::layer_norm,
            fmt::format("layer_norm {}{} weight {} bias {}", dt(l.d), sh(l.shape), l.weight ? dt(l.wd) : "none",
                        l.bias ? dt(l.wd) : "none"),
            l.d,
            [l, D](Gen& g) {
              return std::vector<Input>{in(g.normal(l.shape, l.d, 3.0f)), l.weight ? in(g.normal({D}, l.wd)) : none(),
                                        l.bias ? in(g.normal({D}, l.wd)) : none()};
            },
            [](const Args& t, Device) { return Outputs{ops::layer_norm(t[0], t[1], t[2], 1e-5f)}; }, by_dtype(l.d),
            l.shape, l.d});
  }
  cs.add({Op::layer_norm, "layer_norm bf16[2,9,96] rows of a [2,9,192] buffer, weight, no bias", DType::BF16,
          [](Gen& g) {
            return std::vector<Input>{in(g.normal({2, 9, 192}, DType::BF16), [](const Tensor& t) { return t.narrow(2, 96, 96); }),
                                      in(g.normal({96}, DType::BF16)), none()};
          },
          [](const Args& t, Device) { return Outputs{ops::layer_norm(t[0], t[1], t[2], 1e-6f)}; },
          by_dtype(DType::BF16), {2, 9, 96}, DType::BF16});
}

void rms_norm_cases(Cases& cs) {
  for (DType d : {DType::F32, DType::BF16}) {
    for (const Shape& shape : std::vector<Shape>{{2, 7, 37}, {3, 1536}, {2, 4096}, {2, 40001}, {3, 1}}) {
      for (int wmode = 0; wmode < 3; ++wmode) {
        if (wmode == 2 && d == DType::F32) continue;  // the same as mode 1
        const DType wd = wmode == 1 ? d : DType::F32;
        cs.add({Op::rms_norm, fmt::format("rms_norm {}{} weight {}", dt(d), sh(shape), wmode == 0 ? "none" : dt(wd)), d,
                [=](Gen& g) {
                  return std::vector<Input>{in(g.normal(shape, d, 2.0f)),
                                            wmode == 0 ? none() : in(g.normal({shape.back()}, wd))};
                },
                [](const Args& t, Device) { return Outputs{ops::rms_norm(t[0], t[1], 1e-6f)}; }, by_dtype(d), shape,
                d});
      }
    }
    cs.add({Op::rms_norm, fmt::format("rms_norm {}[2,9,128] rows of a [2,9,256] buffer", dt(d)), d,
            [d](Gen& g) {
              return std::vector<Input>{in(g.normal({2, 9, 256}, d), [](const Tensor& t) { return t.narrow(2, 0, 128); }),
                                        in(g.normal({128}, d))};
            },
            [](const Args& t, Device) { return Outputs{ops::rms_norm(t[0], t[1], 1e-6f)}; }, by_dtype(d), {2, 9, 128},
            d});
  }
}

void channel_rms_norm_cases(Cases& cs) {
  for (DType d : {DType::F32, DType::BF16}) {
    // gamma [C, 1, 1, ...] as the VAE stores it; bias F32.
    for (const Shape& shape : std::vector<Shape>{{2, 12, 3, 5, 8}, {1, 7, 9}, {2, 96, 2, 6, 16}, {3, 5}}) {
      for (bool bias : {false, true}) {
        const int64_t C = shape[1];
        Shape gs(shape.size() - 1, 1);
        gs[0] = C;
        cs.add({Op::channel_rms_norm,
                fmt::format("channel_rms_norm {}{} gamma {}{}", dt(d), sh(shape), sh(gs), bias ? " bias" : ""), d,
                [=](Gen& g) {
                  return std::vector<Input>{in(g.normal(shape, d)), in(g.normal(gs, d)),
                                            bias ? in(g.normal({C})) : none()};
                },
                [](const Args& t, Device) { return Outputs{ops::channel_rms_norm(t[0], t[1], t[2])}; }, by_dtype(d),
                shape, d});
      }
    }
    // Channels-last 3-D inputs and the fused SiLU (the shapes: channel_norm_shapes.h).
    for (const Shape& shape : vgen::testing::kChannelNormShapes) {
      for (bool bias : {false, true}) {
        for (Activation act : {Activation::None, Activation::Silu}) {
          for (bool channels_last : {false, true}) {
            const int64_t C = shape[1];
            cs.add({Op::channel_rms_norm,
                    fmt::format("channel_rms_norm {}{}{}{} then {}", dt(d), sh(shape), channels_last ? " channels-last" : "",
                                bias ? " bias" : "", act_name(act)),
                    d,
                    [=](Gen& g) {
                      const Tensor x = g.normal(shape, d);
                      return std::vector<Input>{channels_last ? cl(x) : in(x), in(g.normal({C, 1, 1, 1}, d)),
                                                bias ? in(g.normal({C})) : none()};
                    },
                    [act](const Args& t, Device) { return Outputs{ops::channel_rms_norm(t[0], t[1], t[2], act)}; },
                    by_dtype(d), shape, d});
          }
        }
      }
    }
  }
  cs.add({Op::channel_rms_norm, "channel_rms_norm f32[2,5,4,6] permuted from [2,4,6,5]", DType::F32,
          [](Gen& g) {
            return std::vector<Input>{in(g.normal({2, 4, 6, 5}), [](const Tensor& t) { return t.permute({0, 3, 1, 2}); }),
                                      in(g.normal({5})), none()};
          },
          [](const Args& t, Device) { return Outputs{ops::channel_rms_norm(t[0], t[1], t[2])}; },
          by_dtype(DType::F32), {2, 5, 4, 6}, DType::F32});
  // Into frames [2, 2 + T) of a larger buffer (a causal conv's input behind its cached frames),
  // whose first frames must stay as they were; channels-last on a device (written in place,
  // one sample at a time for a batch of 2) or not (through a copy). With a tail: the last 2
  // frames also written into a [B, C, 2, H, W] of their own (by the kernel when channels-last).
  for (DType d : {DType::F32, DType::BF16}) {
    for (const Shape& shape : std::vector<Shape>{{1, 16, 3, 4, 6}, {2, 16, 2, 3, 5}, {1, 1040, 2, 1, 3}}) {
      for (bool channels_last : {false, true}) {
        Shape buffer = shape, tail = shape;
        buffer[2] += 2;
        tail[2] = 2;
        const std::string name = fmt::format("channel_rms_norm {}{}{} then silu into frames of {} and a tail {}", dt(d),
                                             sh(shape), channels_last ? " channels-last" : "", sh(buffer), sh(tail));
        cs.add({Op::channel_rms_norm, name, d,
                [=](Gen& g) {
                  auto lay = [&](const Tensor& t) { return channels_last ? cl(t) : in(t); };
                  return std::vector<Input>{lay(g.normal(shape, d)), in(g.normal({shape[1], 1, 1, 1}, d)), none(),
                                            lay(g.normal(buffer, d)), lay(g.normal(tail, d))};
                },
                [=](const Args& t, Device) {
                  const Tensor out = t[3].narrow(2, 2, shape[2]);
                  EXPECT_EQ(ops::channel_rms_norm(t[0], t[1], t[2], Activation::Silu, out, t[4]).raw_data(),
                            out.raw_data());
                  return Outputs{t[3], t[4]};
                },
                by_dtype(d), buffer, d});
      }
    }
    for (const Shape& shape : std::vector<Shape>{{1, 16, 3, 4, 6}, {2, 12, 2, 3, 5}}) {
      for (bool channels_last : {false, true}) {
        Shape buffer = shape;
        buffer[2] += 2;
        cs.add({Op::channel_rms_norm,
                fmt::format("channel_rms_norm {}{}{} then silu into frames of {}", dt(d), sh(shape),
                            channels_last ? " channels-last" : "", sh(buffer)),
                d,
                [=](Gen& g) {
                  const Tensor x = g.normal(shape, d), buf = g.normal(buffer, d);
                  return std::vector<Input>{channels_last ? cl(x) : in(x), in(g.normal({shape[1], 1, 1, 1}, d)),
                                            none(), channels_last ? cl(buf) : in(buf)};
                },
                [=](const Args& t, Device) {
                  const Tensor out = t[3].narrow(2, 2, shape[2]);
                  EXPECT_EQ(ops::channel_rms_norm(t[0], t[1], t[2], Activation::Silu, out).raw_data(), out.raw_data());
                  return Outputs{t[3]};
                },
                by_dtype(d), buffer, d});
      }
    }
  }
}

// residual_channel_rms_norm (the Wan VAE's skip connection and the next channel norm): against
// the CPU's composition, the residual written into x itself or a new tensor, the normed result
// into frames of a larger buffer (a causal conv's input) or a new tensor; on a device, the fused
// kernel (channels-last rows in registers) must equal that device's own composition byte for
// byte. C 5 (not a vector multiple) and 1040 (too wide for registers) and a contiguous input
// take the composition there.
void expect_same_bytes(const Tensor& a, const Tensor& b, const std::string& what);

void residual_channel_rms_norm_cases(Cases& cs) {
  for (DType d : {DType::F32, DType::BF16}) {
    for (const Shape& shape : vgen::testing::kChannelNormShapes) {
      for (bool channels_last : {false, true}) {
        // 0: new tensors, 1: residual into x, 2: and normed into frames, 3: and its last frame into a tail
        for (int mode = 0; mode < 4; ++mode) {
          const Activation act = mode == 0 ? Activation::None : Activation::Silu;
          const bool in_place = mode > 0, into_frames = mode >= 2, with_tail = mode == 3;
          Shape buffer = shape, tail_shape = shape;
          buffer[2] += 2;
          tail_shape[2] = 1;
          const std::string name =
              fmt::format("residual_channel_rms_norm {}{}{} then {}{}{}{}", dt(d), sh(shape),
                          channels_last ? " channels-last" : "", act_name(act), in_place ? ", residual into x" : "",
                          into_frames ? fmt::format(", normed into frames of {}", sh(buffer)) : "",
                          with_tail ? fmt::format(" and a tail {}", sh(tail_shape)) : "");
          cs.add({Op::residual_channel_rms_norm, name, d,
                  [=](Gen& g) {
                    auto lay = [&](const Tensor& t) { return channels_last ? cl(t) : in(t); };
                    std::vector<Input> v{lay(g.normal(shape, d, 2.0f)), lay(g.normal(shape, d)),
                                         in(g.normal({shape[1], 1, 1, 1}, d))};
                    if (into_frames) v.push_back(lay(g.normal(buffer, d)));
                    if (with_tail) v.push_back(lay(g.normal(tail_shape, d)));
                    return v;
                  },
                  [=](const Args& t, Device dev) {
                    const Tensor x0 = t[0].clone();  // x as it was, before the sum is written into it
                    const Tensor out = into_frames ? t[3].narrow(2, 2, shape[2]) : Tensor();
                    const Tensor tail = with_tail ? t[4] : Tensor();
                    const ResidualNorm r = ops::residual_channel_rms_norm(t[0], t[1], t[2], {}, act,
                                                                          in_place ? t[0] : Tensor(), out, tail);
                    if (in_place) EXPECT_EQ(r.residual.raw_data(), t[0].raw_data()) << name;
                    if (into_frames) EXPECT_EQ(r.normed.raw_data(), out.raw_data()) << name;
                    if (!dev.is_cpu()) {
                      const ResidualNorm c = backend_for(dev).Backend::residual_channel_rms_norm(x0, t[1], t[2], {}, act, {},
                                                                                                 {}, {});
                      expect_same_bytes(r.residual, c.residual, name + " residual");
                      expect_same_bytes(r.normed, c.normed, name + " normed");
                      if (with_tail)
                        expect_same_bytes(tail, c.normed.narrow(2, shape[2] - 1, 1), name + " tail");
                    }
                    if (with_tail) return Outputs{r.residual, t[3], tail};
                    return Outputs{r.residual, into_frames ? t[3] : r.normed};
                  },
                  by_dtype(d), shape, d});
        }
      }
    }
  }
}

// torch.nn.GroupNorm (+ SiLU): odd channel counts and groups (C 6 in 3 groups, 96 in 32), one
// position, odd spatial sizes, 4-D and 5-D inputs, channels-last 3-D inputs (on a device), a
// group of ~1M values with a large mean, and (perf mode only) the FLUX VAE decoder's sizes.
void group_norm_cases(Cases& cs) {
  struct G {
    Shape shape;
    int64_t groups;
  };
  const std::vector<G> shapes = {{{2, 6, 7, 13}, 3},      {{2, 6, 1, 7, 13}, 3},  {{2, 96, 1, 33, 47}, 32},
                                 {{3, 64, 1, 1, 1}, 32},   {{1, 128, 1, 9, 16}, 32}, {{1, 40, 2, 5, 6}, 8}};
  const auto call = [](int64_t groups, Activation act) {
    return [groups, act](const Args& t, Device) { return Outputs{ops::group_norm(t[0], t[1], t[2], groups, 1e-6f, act)}; };
  };
  for (DType d : {DType::F32, DType::BF16}) {
    for (const G& s : shapes) {
      for (bool affine : {false, true}) {
        for (Activation act : {Activation::None, Activation::Silu}) {
          for (bool channels_last : {false, true}) {
            if (channels_last && s.shape.size() != 5) continue;
            const int64_t C = s.shape[1];
            cs.add({Op::group_norm,
                    fmt::format("group_norm {}{} groups {}{}{} then {}", dt(d), sh(s.shape), s.groups,
                                channels_last ? " channels-last" : "", affine ? " weight bias" : "", act_name(act)),
                    d,
                    [=](Gen& g) {
                      const Tensor x = g.normal(s.shape, d, 2.0f);
                      return std::vector<Input>{channels_last ? cl(x) : in(x), affine ? in(g.normal({C}, d)) : none(),
                                                affine ? in(g.normal({C}, d)) : none()};
                    },
                    call(s.groups, act), by_dtype(d), s.shape, d});
          }
        }
      }
    }
  }
  // Weight only, in float32 for a bf16 input (the kernels then read parameters as float32).
  cs.add({Op::group_norm, "group_norm bf16[2,32,1,6,10] groups 4 channels-last f32 weight, no bias", DType::BF16,
          [](Gen& g) {
            return std::vector<Input>{cl(g.normal({2, 32, 1, 6, 10}, DType::BF16)), in(g.normal({32})), none()};
          },
          call(4, Activation::None), by_dtype(DType::BF16), {2, 32, 1, 6, 10}, DType::BF16});
  // A strided input (a channel slice) is read as a contiguous copy.
  cs.add({Op::group_norm, "group_norm f32[2,8,5,6] channels 4.. of a [2,16,5,6] buffer", DType::F32,
          [](Gen& g) {
            return std::vector<Input>{in(g.normal({2, 16, 5, 6}), [](const Tensor& t) { return t.narrow(1, 4, 8); }),
                                      in(g.normal({8})), in(g.normal({8}))};
          },
          call(2, Activation::Silu), by_dtype(DType::F32), {2, 8, 5, 6}, DType::F32});
  // ~1M values a group (16 channels x 256 x 256) around a mean of 3: the float32 statistics
  // must keep the variance (the shifted sums).
  for (bool channels_last : {false, true}) {
    const Shape shape{1, 32, 1, 256, 256};
    cs.add({Op::group_norm,
            fmt::format("group_norm bf16{} groups 2{} large groups, mean 3, then silu", sh(shape),
                        channels_last ? " channels-last" : ""),
            DType::BF16,
            [=](Gen& g) {
              const Tensor x = ops::add_scalar(g.normal(shape, DType::F32, 2.0f), 3.0f).to(DType::BF16);
              return std::vector<Input>{channels_last ? cl(x) : in(x), in(g.normal({32}, DType::BF16)),
                                        in(g.normal({32}, DType::BF16))};
            },
            call(2, Activation::Silu), by_dtype(DType::BF16), shape, DType::BF16});
  }
  // The FLUX VAE decoder's group norms (32 groups, bf16): timed only.
  for (const Shape& shape : std::vector<Shape>{{1, 128, 1, 1024, 1024}, {1, 256, 1, 512, 512}, {1, 512, 1, 256, 256},
                                               {1, 512, 1, 128, 128}}) {
    for (bool channels_last : {false, true}) {
      cs.add({Op::group_norm,
              fmt::format("group_norm bf16{} groups 32{} weight bias then silu (FLUX VAE)", sh(shape),
                          channels_last ? " channels-last" : ""),
              DType::BF16,
              [=](Gen& g) {
                const Tensor x = g.normal(shape, DType::BF16);
                return std::vector<Input>{channels_last ? cl(x) : in(x), in(g.normal({shape[1]}, DType::BF16)),
                                          in(g.normal({shape[1]}, DType::BF16))};
              },
              call(32, Activation::Silu), by_dtype(DType::BF16), shape, DType::BF16, {}, 0, true});
    }
  }
}

void softmax_cases(Cases& cs) {
  for (DType d : {DType::F32, DType::BF16, DType::F16}) {
    for (const Shape& shape : std::vector<Shape>{{5, 37}, {3, 1536}, {2, 20000}, {4, 4099}, {2, 3, 1}}) {
      cs.add({Op::softmax, fmt::format("softmax {}{}", dt(d), sh(shape)), d,
              [d, shape](Gen& g) { return std::vector<Input>{in(g.normal(shape, d, 4.0f))}; },
              [](const Args& t, Device) { return Outputs{ops::softmax(t[0])}; }, by_dtype(d), shape, d});
    }
  }
  cs.add({Op::softmax, "softmax bf16 empty [0,7]", DType::BF16,
          [](Gen& g) { return std::vector<Input>{in(g.normal({0, 7}, DType::BF16))}; },
          [](const Args& t, Device) { return Outputs{ops::softmax(t[0])}; }, by_dtype(DType::BF16), {0, 7},
          DType::BF16});
  cs.add({Op::softmax, "softmax f32[9,7] transposed", DType::F32,
          [](Gen& g) { return std::vector<Input>{in(g.normal({7, 9}), [](const Tensor& t) { return t.transpose(0, 1); })}; },
          [](const Args& t, Device) { return Outputs{ops::softmax(t[0])}; }, by_dtype(DType::F32), {9, 7}, DType::F32});
}

// bias: 0 none, 1 a key mask [B, 1, 1, Sk] (every 7th key -inf, the rest small offsets),
// 2 [1, H, Sq, Sk]. q/k/v are [B, H, S, D] views of [B, S, H, D] buffers.
void attention_case(Cases& cs, int64_t B, int64_t H, int64_t Sq, int64_t Sk, int64_t D, int bias, DType d,
                    const std::string& kernel, bool perf_only = false) {
  const char* bias_name = bias == 0 ? "" : bias == 1 ? " bias[B,1,1,Sk] key mask" : " bias[1,H,Sq,Sk]";
  const Bound bound = d == DType::F32 ? Bound{1e-5, -1, "float32 in and out: summation order only"}
                                      : Bound{1.5e-2, -1, "16-bit out, probabilities rounded to 16 bits for P @ v"};
  cs.add({Op::attention,
          fmt::format("attention {} B{} H{} Sq{} Sk{} D{}{} kernel {}", dt(d), B, H, Sq, Sk, D, bias_name, kernel), d,
          [=](Gen& g) {
            std::vector<Input> v;
            for (int64_t S : {Sq, Sk, Sk}) v.push_back(in(g.normal({B, S, H, D}, d), bshd_view));
            if (bias == 1) {
              std::vector<float> m = g.normal({B, 1, 1, Sk}, DType::F32, 0.5f).to_vector();
              for (size_t i = 0; i < m.size(); i += 7) m[i] = -INFINITY;
              v.push_back(in(Tensor::from_vector(m, {B, 1, 1, Sk}).to(d)));
            } else if (bias == 2) {
              v.push_back(in(g.normal({1, H, Sq, Sk}, d)));
            } else {
              v.push_back(none());
            }
            return v;
          },
          [D](const Args& t, Device) {
            return Outputs{ops::attention(t[0], t[1], t[2], t[3], 1.0f / std::sqrt(static_cast<float>(D)))};
          },
          bound, {B, H, Sq, D}, d, Settings{kernel, -1}, 4.0 * B * H * Sq * Sk * D, perf_only});
}

// attention_lse: the output and each row's log-sum-exp (float32) of one key block, as ring
// attention calls it (no bias; [B, H, S, D] views of [B, S, H, D] buffers).
void attention_lse_case(Cases& cs, int64_t B, int64_t H, int64_t Sq, int64_t Sk, int64_t D, DType d) {
  const Bound bound = d == DType::F32 ? Bound{1e-5, -1, "float32 in and out: summation order only"}
                                      : Bound{1.5e-2, -1, "16-bit out, probabilities rounded to 16 bits for P @ v"};
  cs.add({Op::attention_lse, fmt::format("attention_lse {} B{} H{} Sq{} Sk{} D{}", dt(d), B, H, Sq, Sk, D), d,
          [=](Gen& g) {
            std::vector<Input> v;
            for (int64_t S : {Sq, Sk, Sk}) v.push_back(in(g.normal({B, S, H, D}, d), bshd_view));
            return v;
          },
          [D](const Args& t, Device) {
            const ops::AttentionWithLse r = ops::attention_lse(t[0], t[1], t[2], 1.0f / std::sqrt(static_cast<float>(D)));
            return Outputs{r.out, r.lse};
          },
          bound, {B, H, Sq, D}, d, Settings{}, 4.0 * B * H * Sq * Sk * D});
}

// sage_attention: the quantized kernel against the CPU's run of the same steps
// (ops/sage_attention.h); [B, H, S, D] views of [B, S, H, D] buffers, D 128.
// `outlier` >= 0: that key is 8 times larger, so that many rows' maxima rise there, late in
// the kernel's accumulation span of 4 key blocks (its in-span rescale). Such a key's weight
// dominates its rows, and once it is in T the tensor cores' FP8 accumulation (coarser than
// float32) rounds the smaller products added after it: measured on an H200 (2026-12-03, relative
// L2 against this reference, 300 x 1000): no outlier 0.0025; outlier key 100 (block 0, a span's
// first) 0.0069, 400 (block 3, its last) 0.0034, 512 (block 4, a span's first) 0.0081, 800
// (block 6) 0.0040, 950 (block 7) 0.0024. A missing in-span rescale is off by far more: 0.94
// with key 800 (0.29-0.31 without an outlier), emulating these steps in numpy, 3 seeds,
// 2026-12-03 (the emulation with the rescale is 0.037 from float32 attention, as the CPU
// reference is).
void sage_attention_case(Cases& cs, int64_t B, int64_t H, int64_t Sq, int64_t Sk, bool perf_only = false,
                         int64_t outlier = -1) {
  constexpr int64_t D = 128;
  const Bound bound = outlier < 0 ? Bound{3e-3, -1, "the same int8 / e4m3 codes; float32 sums in another order, bf16 out"}
                                  : Bound{6e-3, -1,
                                          "the same int8 / e4m3 codes; the tensor cores' FP8 accumulation after a "
                                          "dominant weight, float32 sums in another order, bf16 out"};
  const std::string what = outlier >= 0 ? fmt::format(" key {} x8", outlier) : "";
  cs.add({Op::sage_attention, fmt::format("sage_attention bf16 B{} H{} Sq{} Sk{} D{}{}", B, H, Sq, Sk, D, what),
          DType::BF16,
          [=](Gen& g) {
            std::vector<Input> v;
            for (int64_t S : {Sq, Sk, Sk}) v.push_back(in(g.normal({B, S, H, D}, DType::BF16), bshd_view));
            if (outlier >= 0) {
              Tensor key = v[1].base.narrow(1, outlier, 1);
              key.copy_(ops::scale(key.to(DType::F32), 8.0f).to(DType::BF16));
            }
            return v;
          },
          [](const Args& t, Device) { return Outputs{ops::sage_attention(t[0], t[1], t[2], 1.0f / std::sqrt(128.0f))}; },
          bound, {B, H, Sq, D}, DType::BF16, Settings{}, 4.0 * B * H * Sq * Sk * D, perf_only});
}

// ops::attention with the "sage" backend: the quantized kernel on sm_90 for what it takes (an
// exact kernel elsewhere and for fewer than 4096 keys), against the CPU's exact attention: the bound is the quantization's
// on random (flat-softmax) inputs, loose enough for it and tight enough for a wrong layout.
void sage_backend_case(Cases& cs, int64_t B, int64_t H, int64_t Sq, int64_t Sk, int64_t D) {
  cs.add({Op::attention, fmt::format("attention bf16 B{} H{} Sq{} Sk{} D{} kernel sage", B, H, Sq, Sk, D), DType::BF16,
          [=](Gen& g) {
            std::vector<Input> v;
            for (int64_t S : {Sq, Sk, Sk}) v.push_back(in(g.normal({B, S, H, D}, DType::BF16), bshd_view));
            v.push_back(none());
            return v;
          },
          [D](const Args& t, Device) {
            return Outputs{ops::attention(t[0], t[1], t[2], t[3], 1.0f / std::sqrt(static_cast<float>(D)))};
          },
          Bound{8e-2, -1, "int8 q / k and e4m3 P / v against exact attention (random inputs)"}, {B, H, Sq, D},
          DType::BF16, Settings{"sage", -1}, 4.0 * B * H * Sq * Sk * D});
}

void attention_cases(Cases& cs) {
  // The quantized kernel: odd lengths (a key block, a query group cut short), short and long
  // key sets, several heads and batches, a single key.
  // 12 x 12 query tiles: more than one wave of CTAs on 132 or 114 SMs.
  for (auto [B, H, Sq, Sk] : std::vector<std::array<int64_t, 4>>{{2, 3, 1000, 1000},
                                                                {1, 4, 999, 512},
                                                                {1, 2, 1500, 769},
                                                                {3, 1, 5, 7},
                                                                {1, 2, 129, 1},
                                                                {1, 2, 200, 250},  // two key blocks
                                                                {2, 1, 70, 300},   // three
                                                                {1, 1, 300, 4100},
                                                                {1, 12, 1500, 2100}})
    sage_attention_case(cs, B, H, Sq, Sk);
  sage_attention_case(cs, 1, 2, 300, 1000, false, 800);  // key block 6 of 8: in the span of blocks 4-7
  sage_backend_case(cs, 2, 3, 300, 4100, 128);  // the quantized kernel (4096 keys or more)
  sage_backend_case(cs, 1, 2, 1000, 1000, 128);  // fewer keys: an exact kernel
  sage_backend_case(cs, 1, 2, 300, 4200, 64);    // head dim 64: an exact kernel
  sage_attention_case(cs, 1, 12, 32760, 32760, true);
  sage_attention_case(cs, 1, 40, 75600, 75600, true);
  sage_attention_case(cs, 1, 12, 32760, 512, true);
  for (DType d : {DType::F32, DType::BF16}) {
    attention_lse_case(cs, 2, 3, 100, 70, 64, d);
    attention_lse_case(cs, 1, 2, 33, 257, 128, d);
  }
  // cuDNN SDPA, self and cross attention, and with bias layouts.
  for (auto [B, H, Sq, Sk, D] : std::vector<std::array<int64_t, 5>>{
           {2, 3, 1000, 1000, 128}, {1, 4, 999, 512, 128}, {2, 2, 1000, 512, 64}, {1, 2, 77, 333, 64}})
    attention_case(cs, B, H, Sq, Sk, D, 0, DType::BF16, "cudnn");
  attention_case(cs, 1, 2, 200, 300, 128, 0, DType::F16, "cudnn");
  // vgen's Hopper kernel (sm_90; elsewhere these run cuDNN): odd lengths, short and long key
  // sets (512 text tokens, + 257 image tokens for I2V), several heads and batches, D 64 and 128,
  // 144 query tiles (more than one wave of CTAs). On a 132-SM H200 the tiles of a last wave of at
  // most 66 are split along the keys (flash_attention_sm90.cu): 144 tiles leave 12 (3 ranges
  // each at D 128, 4 at D 64), 48 tiles split in 2, 2 tiles of 27 key blocks in 13 uneven
  // ranges, 1 tile of 24 blocks (D 64) in 12; 100 tiles (1280 queries, 10 heads) are not split.
  for (auto [B, H, Sq, Sk, D] : std::vector<std::array<int64_t, 5>>{{2, 3, 1000, 1000, 128},
                                                                   {1, 12, 1500, 1000, 128},
                                                                   {1, 12, 1500, 1000, 64},
                                                                   {1, 1, 200, 5000, 128},
                                                                   {1, 1, 100, 3001, 64},
                                                                   {1, 10, 1280, 1000, 128},
                                                                   {1, 4, 999, 512, 128},
                                                                   {1, 2, 1500, 769, 128},
                                                                   {2, 2, 1000, 512, 64},
                                                                   {1, 2, 77, 333, 64},
                                                                   {3, 1, 5, 7, 128},
                                                                   {1, 2, 129, 1, 64}})
    attention_case(cs, B, H, Sq, Sk, D, 0, DType::BF16, "flash");
  attention_case(cs, 2, 3, 1000, 512, 128, 1, DType::BF16, "cudnn");
  attention_case(cs, 1, 3, 1000, 512, 128, 2, DType::BF16, "cudnn");
  attention_case(cs, 2, 2, 300, 300, 64, 1, DType::BF16, "cudnn");
  attention_case(cs, 1, 2, 300, 301, 64, 2, DType::BF16, "cudnn");
  // The reference kernel; float32 takes it whatever the choice.
  for (auto [B, H, Sq, Sk, D, bias] : std::vector<std::array<int64_t, 6>>{
           {2, 3, 1000, 512, 128, 0}, {1, 2, 999, 1000, 64, 1}, {2, 3, 300, 512, 64, 2}, {1, 1, 50, 40, 384, 0}}) {
    attention_case(cs, B, H, Sq, Sk, D, static_cast<int>(bias), DType::F32, "cudnn");
    attention_case(cs, B, H, Sq, Sk, D, static_cast<int>(bias), DType::BF16, "reference");
  }
  // The math path for what cuDNN refuses: head dims above 256 (the Wan VAE's 384), not a
  // multiple of 8 (20).
  for (DType d : {DType::BF16, DType::F16}) {
    for (auto [B, H, Sq, Sk, D, bias] : std::vector<std::array<int64_t, 6>>{
             {1, 1, 780, 780, 384, 0}, {2, 1, 64, 77, 384, 1}, {1, 2, 100, 90, 20, 0}, {1, 2, 33, 65, 320, 2}})
      attention_case(cs, B, H, Sq, Sk, D, static_cast<int>(bias), d, "cudnn");
  }
  // A tiny float32 case with the default ("auto") kernel.
  attention_case(cs, 2, 3, 5, 7, 4, 1, DType::F32, "auto");
  // Wan sizes (perf mode): 1.3B (12 heads) and 14B (40 heads) at 480x832x81, 14B at 720p.
  attention_case(cs, 1, 12, 32760, 32760, 128, 0, DType::BF16, "auto", true);
  attention_case(cs, 1, 40, 32760, 32760, 128, 0, DType::BF16, "auto", true);
  attention_case(cs, 1, 40, 75600, 75600, 128, 0, DType::BF16, "auto", true);
  for (const char* kernel : {"cudnn", "flash"}) {
    attention_case(cs, 1, 12, 32760, 32760, 128, 0, DType::BF16, kernel, true);
    attention_case(cs, 1, 40, 75600, 75600, 128, 0, DType::BF16, kernel, true);
    attention_case(cs, 1, 12, 32760, 512, 128, 0, DType::BF16, kernel, true);
  }
}

void rope_cases(Cases& cs) {
  for (DType d : {DType::F32, DType::BF16}) {
    for (const auto& size : std::vector<std::array<int64_t, 3>>{{9, 3, 16}, {5, 3, 6}, {37, 12, 128}}) {
      const int64_t S = size[0], H = size[1], D = size[2];
      const Shape out{2, S, H, D};
      const auto run = [](const Args& t, Device) { return Outputs{ops::rope(t[0], t[1], t[2])}; };
      cs.add({Op::rope, fmt::format("rope {}[2,{},{},{}]", dt(d), S, H, D), d,
              [=](Gen& g) {
                return std::vector<Input>{in(g.normal({2, S, H, D}, d)), in(g.normal({S, D})), in(g.normal({S, D}))};
              },
              run, by_dtype(d), out, d});
      cs.add({Op::rope, fmt::format("rope {}[2,{},{},{}] slice of a fused [B,S,3,H,D] projection", dt(d), S, H, D), d,
              [=](Gen& g) {
                return std::vector<Input>{in(g.normal({2, S, 3, H, D}, d), [](const Tensor& t) { return t.select(2, 1); }),
                                          in(g.normal({S, D})), in(g.normal({S, D}))};
              },
              run, by_dtype(d), out, d});
      cs.add({Op::rope, fmt::format("rope {}[2,{},{},{}] permuted from [B,H,S,D]", dt(d), S, H, D), d,
              [=](Gen& g) {
                return std::vector<Input>{in(g.normal({2, H, S, D}, d), bshd_view), in(g.normal({S, D})),
                                          in(g.normal({S, D}))};
              },
              run, by_dtype(d), out, d});
    }
  }
}

void embedding_cases(Cases& cs) {
  std::vector<int64_t> idv;
  for (int i = 0; i < 21; ++i) idv.push_back((i * 17 + 3) % 50);
  for (DType d : {DType::F32, DType::BF16}) {
    for (int64_t D : {37, 64, 4096}) {
      for (bool host_ids : {false, true}) {
        cs.add({Op::embedding, fmt::format("embedding {}[50,{}] ids [3,7]{}", dt(d), D, host_ids ? " in host memory" : ""), d,
                [=](Gen& g) {
                  const Tensor ids = Tensor::from_vector_i64(idv, {3, 7});
                  return std::vector<Input>{host_ids ? host(ids) : in(ids), in(g.normal({50, D}, d))};
                },
                [](const Args& t, Device) { return Outputs{ops::embedding(t[0], t[1])}; },
                exact("rows copied as they are"), {3, 7, D}, d});
      }
    }
  }
  cs.add({Op::embedding, "embedding f32[10,8] no ids", DType::F32,
          [](Gen& g) { return std::vector<Input>{in(Tensor::from_vector_i64({}, {0})), in(g.normal({10, 8}))}; },
          [](const Args& t, Device) { return Outputs{ops::embedding(t[0], t[1])}; }, exact("nothing to copy"), {0, 8},
          DType::F32});
}

void conv3d_case(Cases& cs, const Shape& xs, const Shape& ws, bool bias, const Conv3dParams& p, DType d,
                 const std::string& what, bool strided_x, bool channels_last, int tf32, bool perf_only = false,
                 const std::string& kernel = "", int direct = -1) {
  Bound bound = by_dtype(d);
  if (d == DType::F32 && tf32 != 0) bound = {5e-3, -1, "TF32 tensor cores: inputs rounded to 10-bit mantissas"};
  if (d == DType::F32 && tf32 == 0) bound.why = "float32 without TF32: summation order only";
  const Shape out = conv_out(xs, ws, p);
  const double flops = 2.0 * shape_numel(out) * ws[1] * ws[2] * ws[3] * ws[4];
  cs.add({Op::conv3d,
          fmt::format("conv3d {}{} * {}{}{}{} stride {} pad {} before {} {}{}{}{}", dt(d), sh(xs), sh(ws),
                      bias ? " + bias" : "", strided_x ? " x frames [1,T+1) of a longer clip" : "",
                      channels_last ? " channels-last" : "", sh({p.stride[0], p.stride[1], p.stride[2]}),
                      sh({p.padding[0], p.padding[1], p.padding[2]}), p.time_padding_before, what,
                      tf32 < 0 ? "" : tf32 ? " tf32 on" : " tf32 off", kernel.empty() ? "" : " kernel " + kernel,
                      direct < 0 ? "" : direct ? " direct kernel on" : " direct kernel off"),
          d,
          [=](Gen& g) {
            Shape big = xs;
            if (strided_x) big[2] += 2;
            Input x = strided_x ? in(g.normal(big, d), [T = xs[2]](const Tensor& t) { return t.narrow(2, 1, T); })
                                : in(g.normal(big, d));
            x.channels_last = channels_last;
            return std::vector<Input>{x, in(g.normal(ws, d, perf_only ? 0.02f : 0.2f)), bias ? in(g.normal({ws[0]}, d)) : none()};
          },
          [p](const Args& t, Device) { return Outputs{ops::conv3d(t[0], t[1], t[2], p)}; }, bound, out, d,
          Settings{"", tf32, kernel, false, direct}, flops, perf_only});
}

// conv + bias + residual, rounded once (a ResNet block's skip connection), with and without a
// bias. On CUDA the residual is added after the convolution; with autotuning on, a residual laid
// out as the output (channels-last or NCDHW) joins cuDNN's epilogue instead where that ran
// faster on the case's first call (one in the other layout is always added after).
void conv3d_residual_cases(Cases& cs) {
  struct R {
    bool x_channels_last, residual_channels_last, bias, autotune;
  };
  for (DType d : {DType::F32, DType::BF16}) {
    for (const R& r : {R{true, true, true, false}, R{false, false, true, false}, R{false, true, true, false},
                       R{true, true, false, false}, R{true, true, true, true}, R{false, false, true, true},
                       R{true, true, false, true}}) {
      const Shape xs{1, 32, 5, 9, 10}, ws{24, 32, 3, 3, 3};
      const Conv3dParams p = conv_params({1, 1, 1}, {0, 1, 1}, 2);
      const Shape out = conv_out(xs, ws, p);
      cs.add({Op::conv3d,
              fmt::format("conv3d {}{} * {}{} + residual, x {}, residual {}{}", dt(d), sh(xs), sh(ws),
                          r.bias ? " + bias" : "", r.x_channels_last ? "channels-last" : "NCDHW",
                          r.residual_channels_last ? "channels-last" : "NCDHW", r.autotune ? ", autotuned" : ""),
              d,
              [=](Gen& g) {
                Input x = in(g.normal(xs, d)), res = in(g.normal(out, d));
                x.channels_last = r.x_channels_last;
                res.channels_last = r.residual_channels_last;
                return std::vector<Input>{x, in(g.normal(ws, d, 0.2f)), r.bias ? in(g.normal({ws[0]}, d)) : none(), res};
              },
              [p](const Args& t, Device) { return Outputs{ops::conv3d(t[0], t[1], t[2], p, t[3])}; }, by_dtype(d), out,
              d, Settings{"", 0, "", r.autotune}});
    }
  }
}

// The tile variants of vgen's CUTLASS convolution (backends/cuda/conv3d_sm90.h).
constexpr const char* kCutlassVariants[] = {"128x128x64",  "128x128x64c2", "64x256x64",
                                            "64x256x64c2", "64x128x64x2",  "128x256x64coop"};

void conv3d_cases(Cases& cs) {
  for (DType d : {DType::F32, DType::BF16}) {
    conv3d_case(cs, {2, 5, 4, 9, 11}, {7, 5, 3, 3, 3}, true, conv_params({1, 1, 1}, {1, 1, 1}), d, "3x3x3 same", false,
                false, 0);
    conv3d_case(cs, {1, 16, 5, 12, 10}, {32, 16, 3, 3, 3}, true, conv_params({1, 2, 2}, {0, 1, 1}, 2), d,
                "causal, spatial stride 2", false, false, 0);
    conv3d_case(cs, {1, 16, 6, 12, 10}, {16, 16, 3, 1, 1}, true, conv_params({2, 1, 1}, {0, 0, 0}, 1), d,
                "time downsample", false, false, 0);
    conv3d_case(cs, {1, 3, 3, 17, 13}, {24, 3, 3, 3, 3}, true, conv_params({1, 1, 1}, {0, 1, 1}, 2), d, "RGB in, causal",
                true, false, 0);
    conv3d_case(cs, {2, 24, 3, 8, 8}, {3, 24, 3, 3, 3}, false, conv_params({1, 1, 1}, {0, 1, 1}, 2), d, "3 out", false,
                false, 0);
    conv3d_case(cs, {1, 32, 3, 7, 9}, {48, 32, 1, 1, 1}, true, conv_params({1, 1, 1}, {0, 0, 0}), d, "1x1x1", true,
                false, 0);
    // Channels-last 3-D input (NDHWC convolution), including shapes cuDNN may refuse in NDHWC.
    conv3d_case(cs, {2, 16, 4, 9, 11}, {24, 16, 3, 3, 3}, true, conv_params({1, 1, 1}, {1, 1, 1}), d, "3x3x3 same",
                false, true, 0);
    conv3d_case(cs, {1, 32, 5, 12, 10}, {32, 32, 3, 3, 3}, true, conv_params({1, 1, 1}, {0, 1, 1}, 2), d, "causal",
                false, true, 0);
    conv3d_case(cs, {1, 16, 3, 8, 8}, {8, 16, 1, 3, 3}, true, conv_params({1, 1, 1}, {0, 1, 1}), d, "1x3x3", false,
                true, 0);
    conv3d_case(cs, {1, 24, 3, 8, 8}, {3, 24, 3, 3, 3}, true, conv_params({1, 1, 1}, {0, 1, 1}, 2), d, "3 out", false,
                true, 0);
    conv3d_case(cs, {1, 16, 2, 6, 6}, {32, 16, 1, 1, 1}, true, conv_params({1, 1, 1}, {0, 0, 0}), d, "1x1x1", false,
                true, 0);
    conv3d_case(cs, {1, 3, 3, 9, 7}, {8, 3, 3, 3, 3}, false, conv_params({1, 1, 1}, {0, 1, 1}, 2), d, "3 in", false,
                true, 0);
  }
  // The default for float32: TF32 tensor cores, as PyTorch runs diffusers' VAE.
  conv3d_case(cs, {1, 32, 4, 12, 10}, {32, 32, 3, 3, 3}, true, conv_params({1, 1, 1}, {0, 1, 1}, 2), DType::F32,
              "causal", false, false, 1);
  conv3d_case(cs, {2, 5, 4, 9, 11}, {7, 5, 3, 3, 3}, true, conv_params({1, 1, 1}, {1, 1, 1}), DType::F32, "3x3x3 same",
              false, false, 1);
  conv3d_case(cs, {2, 3, 4, 5, 6}, {4, 3, 3, 2, 3}, true, conv_params({1, 2, 1}, {1, 0, 1}), DType::F32,
              "odd kernel and stride", false, false, 1);
  // vgen's CUTLASS kernel (conv3d_sm90.h) forced where it takes the case (bf16 channels-last,
  // input channels a multiple of 64: on an H100/H200; other GPUs run cuDNN): the Wan2.2 VAE
  // decoder's kinds at small sizes, odd H and W, output channels that leave a partial tile.
  // Each tile variant runs every case.
  auto cutlass_case = [&](const Shape& xs, const Shape& ws, bool bias, const Conv3dParams& p, const std::string& what,
                          bool strided_x = false) {
    for (const char* variant : kCutlassVariants)
      conv3d_case(cs, xs, ws, bias, p, DType::BF16, what, strided_x, true, -1, false,
                  fmt::format("cutlass:{}", variant));
  };
  cutlass_case({1, 64, 1, 9, 11}, {64, 64, 3, 3, 3}, true, conv_params({1, 1, 1}, {0, 1, 1}, 2), "first chunk, causal");
  cutlass_case({1, 64, 3, 9, 11}, {64, 64, 3, 3, 3}, false, conv_params({1, 1, 1}, {0, 1, 1}, 1), "one past frame");
  cutlass_case({1, 128, 6, 7, 13}, {96, 128, 3, 3, 3}, true, conv_params({1, 1, 1}, {0, 1, 1}, 0), "two past frames");
  cutlass_case({2, 64, 3, 5, 6}, {72, 64, 3, 3, 3}, true, conv_params({1, 1, 1}, {1, 1, 1}), "3x3x3 same, batch 2");
  cutlass_case({1, 64, 5, 20, 27}, {136, 64, 3, 3, 3}, true, conv_params({1, 1, 1}, {0, 1, 1}, 2), "several tiles",
               true);
  cutlass_case({1, 64, 4, 6, 10}, {128, 64, 3, 1, 1}, true, conv_params({1, 1, 1}, {0, 0, 0}, 2), "3x1x1 time conv");
  cutlass_case({1, 128, 2, 5, 7}, {64, 128, 1, 1, 1}, false, conv_params({1, 1, 1}, {0, 0, 0}), "1x1x1 shortcut");
  cutlass_case({1, 64, 2, 10, 12}, {64, 64, 1, 3, 3}, true, conv_params({1, 1, 1}, {0, 1, 1}), "1x3x3");
  cutlass_case({1, 64, 2, 10, 12}, {256, 64, 1, 2, 2}, true, conv_params({1, 1, 1}, {0, 1, 1}), "1x2x2 upsampler phases");
  cutlass_case({1, 256, 3, 8, 10}, {256, 256, 3, 3, 3}, true, conv_params({1, 1, 1}, {0, 1, 1}, 0), "256 channels");
  // vgen's direct kernel for few output channels (conv3d_direct.h: 3x3x3, at most 16 outputs,
  // bf16 channels-last, input channels a multiple of 16; sm_80+, elsewhere cuDNN): a Wan2.2
  // conv_out (12 outputs) in its first chunk, with past frames, partial tiles of 4 rows x 64
  // columns, batch 2, frames of a longer clip, 1 and 16 outputs, no bias, "same" padding.
  auto direct_case = [&](const Shape& xs, const Shape& ws, bool bias, const Conv3dParams& p, const std::string& what,
                         bool strided_x = false) {
    conv3d_case(cs, xs, ws, bias, p, DType::BF16, what, strided_x, true, -1, false, "", 1);
  };
  direct_case({1, 32, 1, 9, 11}, {12, 32, 3, 3, 3}, true, conv_params({1, 1, 1}, {0, 1, 1}, 2), "first chunk, causal");
  direct_case({1, 48, 6, 7, 70}, {12, 48, 3, 3, 3}, true, conv_params({1, 1, 1}, {0, 1, 1}, 0), "two past frames");
  direct_case({2, 16, 3, 13, 5}, {3, 16, 3, 3, 3}, true, conv_params({1, 1, 1}, {1, 1, 1}), "3x3x3 same, batch 2, 3 out");
  direct_case({1, 64, 4, 10, 130}, {16, 64, 3, 3, 3}, false, conv_params({1, 1, 1}, {0, 1, 1}, 1), "16 out, no bias",
              true);
  direct_case({1, 16, 3, 4, 64}, {1, 16, 3, 3, 3}, true, conv_params({1, 1, 1}, {0, 1, 1}, 2), "1 out, whole tiles");
  direct_case({1, 32, 3, 6, 9}, {5, 32, 3, 3, 3}, true, conv_params({1, 1, 1}, {0, 0, 0}, 0), "no padding");
  // Perf mode: the Wan2.2 decoder's conv_out at 704x1280 (2 past frames + 4 new), the direct
  // kernel off (cuDNN) and on.
  for (int direct : {0, 1})
    conv3d_case(cs, {1, 256, 6, 352, 640}, {12, 256, 3, 3, 3}, true, conv_params({1, 1, 1}, {0, 1, 1}, 0),
                DType::BF16, "Wan2.2 VAE conv_out", false, true, -1, true, "", direct);
  // A Wan VAE decoder convolution (perf mode).
  for (DType d : {DType::BF16, DType::F32})
    conv3d_case(cs, {1, 384, 6, 60, 104}, {384, 384, 3, 3, 3}, true, conv_params({1, 1, 1}, {0, 1, 1}, 2), d,
                "Wan VAE 384 channels", false, false, -1, true);
  // The Wan2.2 VAE decoder's heaviest convolutions at 704x1280 (perf mode, channels-last as the
  // decoder runs): cuDNN, the race's choice ("auto"), and each CUTLASS variant alone.
  std::vector<std::string> kernels{"cudnn", "auto"};
  for (const char* variant : kCutlassVariants) kernels.push_back(fmt::format("cutlass:{}", variant));
  for (const std::string& kernel : kernels) {
    conv3d_case(cs, {1, 512, 6, 176, 320}, {512, 512, 3, 3, 3}, true, conv_params({1, 1, 1}, {0, 1, 1}, 0),
                DType::BF16, "Wan2.2 VAE 512 channels", false, true, -1, true, kernel);
    conv3d_case(cs, {1, 256, 6, 352, 640}, {256, 256, 3, 3, 3}, true, conv_params({1, 1, 1}, {0, 1, 1}, 0),
                DType::BF16, "Wan2.2 VAE 256 channels", false, true, -1, true, kernel);
    conv3d_case(cs, {1, 1024, 4, 88, 160}, {1024, 1024, 3, 3, 3}, true, conv_params({1, 1, 1}, {0, 1, 1}, 0),
                DType::BF16, "Wan2.2 VAE 1024 channels", false, true, -1, true, kernel);
    // The upsampler's four output phases as one 2x2 convolution of the 176x320 frames (nn::UpsampleConv2d).
    conv3d_case(cs, {1, 512, 4, 176, 320}, {2048, 512, 1, 2, 2}, true, conv_params({1, 1, 1}, {0, 1, 1}),
                DType::BF16, "Wan2.2 VAE upsampler 512 channels", false, true, -1, true, kernel);
  }
}

void sum_abs_cases(Cases& cs) {
  const Bound bound{1e-9, -1, "double accumulation on both: only the summation order differs"};
  const auto run = [](const Args& t, Device) { return Outputs{scalar_f64(ops::sum_abs(t[0]))}; };
  for (DType d : {DType::F32, DType::BF16, DType::F16}) {
    for (const Shape& shape : std::vector<Shape>{{1000003}, {3, 1001}, {1}, {64, 1536}}) {
      cs.add({Op::sum_abs, fmt::format("sum_abs {}{}", dt(d), sh(shape)), d,
              [d, shape](Gen& g) { return std::vector<Input>{in(g.normal(shape, d, 3.0f))}; }, run, bound, {1},
              DType::F64, {}, 0, false, false, {0}});
    }
  }
  cs.add({Op::sum_abs, "sum_abs bf16[15,33] transposed and narrowed", DType::BF16,
          [](Gen& g) {
            return std::vector<Input>{in(g.normal({33, 17}, DType::BF16),
                                         [](const Tensor& t) { return t.transpose(0, 1).narrow(0, 1, 15); })};
          },
          run, bound, {1}, DType::F64, {}, 0, false, false, {0}});
  cs.add({Op::sum_abs, "sum_abs f32 empty [0,3]", DType::F32,
          [](Gen& g) { return std::vector<Input>{in(g.normal({0, 3}))}; }, run, exact("an empty sum is 0"), {1},
          DType::F64, {}, 0, false, false, {0}});
}

void modulated_layer_norm_cases(Cases& cs) {
  const int64_t B = 2, S = 37;
  for (DType d : {DType::BF16, DType::F32}) {
    for (int64_t D : {1536, 5120, 1001}) {
      // Per-batch rows out of a [B, 1, 6, D] modulation tensor (strided), per-token rows, one
      // row for everything, contiguous per-batch rows.
      const std::vector<std::string> kinds = {"[B,1,D] rows of a [B,1,6,D] tensor", "per token [B,S,D]", "[1,1,D]",
                                              "[B,1,D]"};
      for (size_t k = 0; k < kinds.size(); ++k) {
        for (bool composition : {false, true}) {
          cs.add({Op::modulated_layer_norm,
                  fmt::format("modulated_layer_norm {}[{},{},{}] scale/shift {}{}", dt(d), B, S, D, kinds[k],
                              composition ? " (the Backend's composition)" : ""),
                  d,
                  [=](Gen& g) {
                    std::vector<Input> v{in(g.normal({B, S, D}, d, 3.0f))};
                    if (k == 0) {
                      const Tensor mod = g.normal({B, 1, 6, D}, DType::F32, 0.5f);
                      v.push_back(in(mod, [](const Tensor& t) { return t.select(2, 1); }));
                      v.push_back(in(mod, [](const Tensor& t) { return t.select(2, 0); }));
                    } else {
                      const Shape s = k == 1 ? Shape{B, S, D} : k == 2 ? Shape{1, 1, D} : Shape{B, 1, D};
                      v.push_back(in(g.normal(s, DType::F32, 0.5f)));
                      v.push_back(in(g.normal(s, DType::F32, 0.5f)));
                    }
                    return v;
                  },
                  [composition](const Args& t, Device dev) {
                    if (composition) return Outputs{backend_for(dev).Backend::modulated_layer_norm(t[0], t[1], t[2], 1e-6f)};
                    return Outputs{ops::modulated_layer_norm(t[0], t[1], t[2], 1e-6f)};
                  },
                  by_dtype(d), {B, S, D}, d});
        }
      }
    }
  }
  // Per-batch rows of more batches than CUDA stages in 48 KB of shared memory (read per row there).
  cs.add({Op::modulated_layer_norm, "modulated_layer_norm bf16[5,3,1536] scale/shift [5,1,1536]", DType::BF16,
          [](Gen& g) {
            return std::vector<Input>{in(g.normal({5, 3, 1536}, DType::BF16, 3.0f)),
                                      in(g.normal({5, 1, 1536}, DType::F32, 0.5f)),
                                      in(g.normal({5, 1, 1536}, DType::F32, 0.5f))};
          },
          [](const Args& t, Device) { return Outputs{ops::modulated_layer_norm(t[0], t[1], t[2], 1e-6f)}; },
          by_dtype(DType::BF16), {5, 3, 1536}, DType::BF16});
  cs.add({Op::modulated_layer_norm, "modulated_layer_norm bf16[2,5,1536] rows of a [2,5,3072] buffer", DType::BF16,
          [](Gen& g) {
            return std::vector<Input>{
                in(g.normal({2, 5, 3072}, DType::BF16), [](const Tensor& t) { return t.narrow(2, 1536, 1536); }),
                in(g.normal({2, 1, 1536}, DType::F32, 0.5f)), in(g.normal({2, 1, 1536}, DType::F32, 0.5f))};
          },
          [](const Args& t, Device) { return Outputs{ops::modulated_layer_norm(t[0], t[1], t[2], 1e-6f)}; },
          by_dtype(DType::BF16), {2, 5, 1536}, DType::BF16});
}

void gated_residual_cases(Cases& cs) {
  const int64_t B = 2, S = 37;
  for (DType d : {DType::BF16, DType::F32}) {
    for (int64_t D : {1536, 1001}) {
      for (const Shape& gs : std::vector<Shape>{{B, 1, D}, {B, S, D}, {1, 1, D}, {1, S, D}}) {
        cs.add({Op::gated_residual, fmt::format("gated_residual {}[{},{},{}] gate f32{}", dt(d), B, S, D, sh(gs)), d,
                [=](Gen& g) {
                  return std::vector<Input>{in(g.normal({B, S, D}, d)), in(g.normal({B, S, D}, d)), in(g.normal(gs))};
                },
                [](const Args& t, Device) { return Outputs{ops::gated_residual(t[0], t[1], t[2])}; }, by_dtype(d),
                {B, S, D}, d});
      }
    }
  }
  cs.add({Op::gated_residual, "gated_residual bf16[2,9,64] y a slice of [2,9,128], gate a row of [2,1,6,64]",
          DType::BF16,
          [](Gen& g) {
            return std::vector<Input>{in(g.normal({2, 9, 64}, DType::BF16)),
                                      in(g.normal({2, 9, 128}, DType::BF16), [](const Tensor& t) { return t.narrow(2, 64, 64); }),
                                      in(g.normal({2, 1, 6, 64}), [](const Tensor& t) { return t.select(2, 2); })};
          },
          [](const Args& t, Device) { return Outputs{ops::gated_residual(t[0], t[1], t[2])}; }, by_dtype(DType::BF16),
          {2, 9, 64}, DType::BF16});
}

// residual_layer_norm: each gate and norm kind against the CPU's composition, and on a device
// the fused result against that device's own composition, which it must equal byte for byte
// (the same roundings in the same order; only the residual is not read back).
void expect_same_bytes(const Tensor& a, const Tensor& b, const std::string& what) {
  const Tensor x = a.to(Device::cpu()).contiguous(), y = b.to(Device::cpu()).contiguous();
  ASSERT_EQ(x.shape(), y.shape()) << what;
  ASSERT_EQ(x.dtype(), y.dtype()) << what;
  const auto* p = static_cast<const uint8_t*>(x.raw_data());
  const auto* q = static_cast<const uint8_t*>(y.raw_data());
  size_t bad = 0;
  for (size_t i = 0; i < x.nbytes(); ++i) bad += p[i] != q[i];
  EXPECT_EQ(bad, 0u) << what << ": bytes differ from the device's composition of the two ops";
}

Outputs run_residual_layer_norm(const Args& t, Device dev, bool composition, bool check, const std::string& name) {
  const LayerNormParams n{t[3], t[4], t[5], t[6], 1e-6f};
  Backend& be = backend_for(dev);
  const ResidualNorm r =
      composition ? be.Backend::residual_layer_norm(t[0], t[1], t[2], n) : ops::residual_layer_norm(t[0], t[1], t[2], n);
  if (check && !composition && !dev.is_cpu()) {
    const ResidualNorm c = be.Backend::residual_layer_norm(t[0], t[1], t[2], n);
    expect_same_bytes(r.residual, c.residual, name + " residual");
    expect_same_bytes(r.normed, c.normed, name + " normed");
  }
  return {r.residual, r.normed};
}

void residual_layer_norm_cases(Cases& cs) {
  const int64_t B = 2, S = 37;
  // Gates: none (a plain add), a [B,1,D] row of a [B,1,6,D] modulation tensor, per token, one row.
  const std::vector<std::string> gates = {"no gate", "gate a row of [B,1,6,D]", "gate per token", "gate [1,1,D]"};
  const std::vector<std::string> norms = {"plain", "weight f32 bias f32", "scale/shift rows of [B,1,6,D]"};
  auto inputs = [](DType d, int64_t b, int64_t s, int64_t D, size_t gate, size_t norm, bool y_strided) {
    return [=](Gen& g) {
      std::vector<Input> v{in(g.normal({b, s, D}, d, 2.0f))};
      if (y_strided) v.push_back(in(g.normal({b, s, 2 * D}, d), [D](const Tensor& t) { return t.narrow(2, D, D); }));
      else v.push_back(in(g.normal({b, s, D}, d)));
      const Tensor mod = g.normal({b, 1, 6, D}, DType::F32, 0.5f);
      if (gate == 0) v.push_back(none());
      else if (gate == 1) v.push_back(in(mod, [](const Tensor& t) { return t.select(2, 2); }));
      else v.push_back(in(g.normal(gate == 2 ? Shape{b, s, D} : Shape{1, 1, D}, DType::F32, 0.5f)));
      if (norm == 1) v.insert(v.end(), {in(g.normal({D})), in(g.normal({D}))});
      else v.insert(v.end(), {none(), none()});
      if (norm == 2) {
        v.push_back(in(mod, [](const Tensor& t) { return t.select(2, 1); }));
        v.push_back(in(mod, [](const Tensor& t) { return t.select(2, 0); }));
      } else {
        v.insert(v.end(), {none(), none()});
      }
      return v;
    };
  };
  auto add = [&](DType d, int64_t b, int64_t s, int64_t D, size_t gate, size_t norm, bool composition,
                 bool y_strided, bool perf_only) {
    const std::string name = fmt::format("residual_layer_norm {}[{},{},{}]{} {} then {}{}", dt(d), b, s, D,
                                         y_strided ? " y a slice of [B,S,2D]," : "", gates[gate], norms[norm],
                                         composition ? " (the Backend's composition)" : perf_only ? " Wan" : "");
    cs.add({Op::residual_layer_norm, name, d, inputs(d, b, s, D, gate, norm, y_strided),
            [=](const Args& t, Device dev) { return run_residual_layer_norm(t, dev, composition, !perf_only, name); },
            by_dtype(d),
            {b, s, D}, d, {}, 0, perf_only});
  };
  for (DType d : {DType::BF16, DType::F32})
    for (int64_t D : {1536, 1001})
      for (size_t gate = 0; gate < gates.size(); ++gate)
        for (size_t norm = 0; norm < norms.size(); ++norm) add(d, B, S, D, gate, norm, false, false, false);
  for (size_t norm = 0; norm < norms.size(); ++norm) add(DType::BF16, B, S, 1536, 1, norm, true, false, false);
  add(DType::F16, B, S, 5120, 1, 1, false, false, false);
  // Modulation rows of more batches than CUDA stages in 48 KB of shared memory; y not contiguous
  // (CUDA composes the ops then).
  add(DType::BF16, 5, 3, 1536, 1, 2, false, false, false);
  add(DType::BF16, B, 9, 1536, 1, 1, false, true, false);
  // The Wan block's two (perf mode): the gated self-attention residual then norm2 (affine), the
  // cross-attention residual then norm3 (modulated), at the 1.3B and 14B widths.
  for (const auto& [T, D] : std::vector<std::pair<int64_t, int64_t>>{{32760, 1536}, {16384, 5120}}) {
    add(DType::BF16, 1, T, D, 1, 1, false, false, true);
    add(DType::BF16, 1, T, D, 0, 2, false, false, true);
  }
}

void rms_norm_rope_cases(Cases& cs) {
  // A backend's fused op against the CPU's, which is the Backend's composition
  // (rope(rms_norm(...))).
  const int64_t B = 2;
  for (DType d : {DType::BF16, DType::F32}) {
    for (const auto& size : std::vector<std::array<int64_t, 3>>{{37, 12, 128}, {5, 3, 6}, {11, 40, 128}, {9, 5, 16}, {13, 3, 64}}) {
      const int64_t S = size[0], H = size[1], D = size[2];
      for (DType wd : d == DType::F32 ? std::vector<DType>{d} : std::vector<DType>{d, DType::F32}) {
        // part 0 / 1: across heads (weight [H * D], Wan); part 2: each head alone (weight [D], FLUX).
        for (int64_t part : {0, 1, 2}) {
          const int64_t wn = part == 2 ? D : H * D;
          cs.add({Op::rms_norm_rope,
                  fmt::format("rms_norm_rope {}[{},{},{},{}] part {} of a fused [B,S,3*H*D] projection, weight {}[{}]",
                              dt(d), B, S, H, D, part, dt(wd), wn),
                  d,
                  [=](Gen& g) {
                    return std::vector<Input>{
                        in(g.normal({B, S, 3 * H * D}, d, 2.0f),
                           [=](const Tensor& t) { return t.view({B, S, 3, H, D}).select(2, part); }),
                        in(g.normal({wn}, wd)), in(g.normal({S, D})), in(g.normal({S, D}))};
                  },
                  [](const Args& t, Device) { return Outputs{ops::rms_norm_rope(t[0], t[1], 1e-6f, t[2], t[3])}; },
                  by_dtype(d), {B, S, H, D}, d});
        }
      }
    }
  }
  cs.add({Op::rms_norm_rope, "rms_norm_rope bf16[2,7,4,16] permuted from [B,H,S,D]", DType::BF16,
          [](Gen& g) {
            return std::vector<Input>{in(g.normal({2, 4, 7, 16}, DType::BF16), bshd_view),
                                      in(g.normal({4 * 16}, DType::BF16)), in(g.normal({7, 16})), in(g.normal({7, 16}))};
          },
          [](const Args& t, Device) { return Outputs{ops::rms_norm_rope(t[0], t[1], 1e-6f, t[2], t[3])}; },
          by_dtype(DType::BF16), {2, 7, 4, 16}, DType::BF16});
}

// The Wan transformer's linear layers at 480x832x81 (32760 tokens), perf mode only.
void wan_linear_cases(Cases& cs) {
  const int64_t T = 32760;
  struct L {
    DType d;
    int64_t K, N;
    bool bias;
    Activation act;
    std::string what;
  };
  const std::vector<L> ls = {
      {DType::BF16, 1536, 1536, true, Activation::None, "1.3B q/k/v/o"},
      {DType::BF16, 1536, 8960, true, Activation::None, "1.3B FFN up"},
      {DType::BF16, 1536, 8960, true, Activation::GeluTanh, "1.3B FFN up"},
      {DType::BF16, 1536, 8960, true, Activation::Gelu, "1.3B FFN up"},
      {DType::BF16, 8960, 1536, true, Activation::None, "1.3B FFN down"},
      {DType::F32, 1536, 1536, false, Activation::None, "1.3B q/k/v/o in f32"},
  };
  for (const L& l : ls) {
    cs.add({Op::linear,
            fmt::format("linear {}[{},{}] x [{},{}]{} {} Wan {}", dt(l.d), T, l.K, l.N, l.K, l.bias ? " + bias" : "",
                        act_name(l.act), l.what),
            l.d,
            [=](Gen& g) {
              return std::vector<Input>{in(g.normal({T, l.K}, l.d)), in(g.normal({l.N, l.K}, l.d, 0.03f)),
                                        l.bias ? in(g.normal({l.N}, l.d)) : none()};
            },
            [act = l.act](const Args& t, Device) { return Outputs{ops::linear(t[0], t[1], t[2], act)}; },
            by_dtype(l.d), {T, l.N}, l.d, {}, 2.0 * T * l.K * l.N, true});
  }
}

// The memory-bound ops of a Wan block at 480x832x81 (32760 tokens, 1.3B width) and at the 14B
// width (16384 tokens of 5120), perf mode only: GB/s of what each reads and writes.
void wan_block_elementwise_cases(Cases& cs) {
  for (const auto& [T, D] : std::vector<std::pair<int64_t, int64_t>>{{32760, 1536}, {16384, 5120}}) {
    const std::string at = fmt::format("bf16[1,{},{}] Wan", T, D);
    const Bound b = by_dtype(DType::BF16);
    // Rows of a [1, 1, 6, D] modulation tensor, as the blocks chunk it.
    auto mod_row = [D](Gen& g, int64_t i) {
      return in(g.normal({1, 1, 6, D}, DType::F32, 0.5f), [i](const Tensor& t) { return t.select(2, i); });
    };
    cs.add({Op::modulated_layer_norm, "modulated_layer_norm " + at + " scale/shift rows of [1,1,6,D]", DType::BF16,
            [=](Gen& g) {
              return std::vector<Input>{in(g.normal({1, T, D}, DType::BF16, 3.0f)), mod_row(g, 1), mod_row(g, 0)};
            },
            [](const Args& t, Device) { return Outputs{ops::modulated_layer_norm(t[0], t[1], t[2], 1e-6f)}; }, b,
            {1, T, D}, DType::BF16, {}, 0, true});
    cs.add({Op::layer_norm, "layer_norm " + at + " weight f32 bias f32", DType::BF16,
            [=](Gen& g) {
              return std::vector<Input>{in(g.normal({1, T, D}, DType::BF16, 3.0f)), in(g.normal({D})), in(g.normal({D}))};
            },
            [](const Args& t, Device) { return Outputs{ops::layer_norm(t[0], t[1], t[2], 1e-6f)}; }, b, {1, T, D},
            DType::BF16, {}, 0, true});
    cs.add({Op::gated_residual, "gated_residual " + at + " gate a row of [1,1,6,D]", DType::BF16,
            [=](Gen& g) {
              return std::vector<Input>{in(g.normal({1, T, D}, DType::BF16)), in(g.normal({1, T, D}, DType::BF16)),
                                        mod_row(g, 2)};
            },
            [](const Args& t, Device) { return Outputs{ops::gated_residual(t[0], t[1], t[2])}; }, b, {1, T, D},
            DType::BF16, {}, 0, true});
    cs.add({Op::binary, "binary add " + at + " + the same", DType::BF16,
            [=](Gen& g) {
              return std::vector<Input>{in(g.normal({1, T, D}, DType::BF16)), in(g.normal({1, T, D}, DType::BF16))};
            },
            [](const Args& t, Device) { return Outputs{ops::add(t[0], t[1])}; }, b, {1, T, D}, DType::BF16, {}, 0,
            true});
    const int64_t hd = 128, H = D / hd;
    cs.add({Op::rms_norm_rope, "rms_norm_rope " + at + " part 0 of a fused [1,T,3*D] projection", DType::BF16,
            [=](Gen& g) {
              return std::vector<Input>{
                  in(g.normal({1, T, 3 * D}, DType::BF16, 2.0f),
                     [=](const Tensor& t) { return t.view({1, T, 3, H, hd}).select(2, 0); }),
                  in(g.normal({D}, DType::BF16)), in(g.normal({T, hd})), in(g.normal({T, hd}))};
            },
            [](const Args& t, Device) { return Outputs{ops::rms_norm_rope(t[0], t[1], 1e-6f, t[2], t[3])}; }, b,
            {1, T, H, hd}, DType::BF16, {}, 0, true});
  }
}

// Quantized linear layers (ops/quant.h): the activation quantization must give the CPU's bytes
// (the same codec, an IEEE division by the same scale); the GEMM agrees within the output
// dtype (FP8 products are exact in float32: only the summation order and the output rounding
// differ; NVFP4's weight expanded to bf16 is one rounding per weight element).
const char* quant_case_name(QuantFormat f) {
  return f == QuantFormat::Fp8PerTensor ? "fp8" : f == QuantFormat::Fp8Block ? "fp8_block" : "nvfp4";
}

void quant_cases(Cases& cs) {
  const Bound same = {-1, 0, "the same e4m3 codec and IEEE division on every backend: the same bytes", true};
  for (DType d : {DType::F32, DType::BF16}) {
    // {3, 7, 5}: a tail past the 16-byte vectors; `offset`: x starts 11 elements into its
    // storage (a contiguous view no vector load may touch).
    for (const Shape& xs : std::vector<Shape>{{37, 144}, {2, 5, 300}, {1, 16}, {3, 7, 5}, {5, 11}}) {
      int64_t M = 1;
      for (size_t i = 0; i + 1 < xs.size(); ++i) M *= xs[i];
      const int64_t K = xs.back();
      const bool offset = xs == Shape{5, 11};
      for (int mode = 0; mode < 3; ++mode) {  // per-tensor dynamic, per-tensor static (clipping), 1x128 groups
        const QuantFormat f = mode == 2 ? QuantFormat::Fp8Block : QuantFormat::Fp8PerTensor;
        cs.add({Op::quantize_fp8,
                fmt::format("quantize_fp8 {}{}{} {}", dt(d), sh(xs), offset ? " at an unaligned offset" : "",
                            mode == 0 ? "per-tensor" : mode == 1 ? "static scale" : "1x128 groups"),
                d,
                [=](Gen& g) {
                  const Input x = offset ? in(g.normal({6, 11}, d, 3.0f), [](const Tensor& t) { return t.narrow(0, 1, 5); })
                                         : in(g.normal(xs, d, 3.0f));
                  return std::vector<Input>{x, mode == 1 ? in(Tensor::full({1}, 0.004f)) : none()};
                },
                [f](const Args& t, Device) {
                  const QuantizedActivation q = ops::quantize_fp8(t[0], f, t[1]);
                  return Outputs{q.data, q.scale};
                },
                same, {M, K}, DType::F8_E4M3});
      }
    }
  }
  struct S {
    int64_t M, N, K;
    std::string what;
  };
  for (QuantFormat f : {QuantFormat::Fp8PerTensor, QuantFormat::Fp8Block, QuantFormat::Nvfp4}) {
    for (DType d : {DType::F32, DType::BF16}) {
      for (const S& s : std::vector<S>{{64, 144, 256, "cuBLASLt FP8 shapes"},
                                       {7, 45, 80, "N not a multiple of 16: the fallback"},
                                       {300, 272, 400, "partial 128-blocks"}}) {
        for (Activation act : {Activation::None, Activation::GeluTanh, Activation::Silu}) {
          for (bool static_scale : {false, true}) {
            if (static_scale && (f != QuantFormat::Fp8PerTensor || act != Activation::None)) continue;
            cs.add({Op::quantized_linear,
                    fmt::format("quantized_linear {} {}[{},{}] x [{},{}] + bias {}{} {}", quant_case_name(f), dt(d),
                                s.M, s.K, s.N, s.K, act_name(act), static_scale ? " static input scale" : "", s.what),
                    d,
                    [=](Gen& g) {
                      return std::vector<Input>{in(g.normal({s.M, s.K}, d)), in(g.normal({s.N, s.K}, DType::F32, 0.05f)),
                                                in(g.normal({s.N}, d, 0.1f))};
                    },
                    [f, act, static_scale](const Args& t, Device dev) {
                      QuantizedWeight w = quantize_weight(t[1], f, "w").to(dev);
                      if (static_scale) w.input_scale = Tensor::full({1}, 0.01f).to(dev);
                      return Outputs{ops::quantized_linear(t[0], w, t[2], act)};
                    },
                    fp8_bound(f, d), {s.M, s.N}, d, {}, 2.0 * s.M * s.N * s.K});
          }
        }
      }
    }
    // Wan 1.3B / 14B shapes at 480x832x81 (32760 tokens), perf mode only.
    for (const S& s : std::vector<S>{{32760, 1536, 1536, "Wan 1.3B q/k/v/o"}, {32760, 8960, 1536, "Wan 1.3B FFN up"},
                                     {32760, 1536, 8960, "Wan 1.3B FFN down"}, {32760, 5120, 5120, "Wan 14B q/k/v/o"},
                                     {32760, 13824, 5120, "Wan 14B FFN up"}}) {
      cs.add({Op::quantized_linear,
              fmt::format("quantized_linear {} bf16[{},{}] x [{},{}] + bias {}", quant_case_name(f), s.M, s.K, s.N, s.K,
                          s.what),
              DType::BF16,
              [=](Gen& g) {
                return std::vector<Input>{in(g.normal({s.M, s.K}, DType::BF16)),
                                          in(g.normal({s.N, s.K}, DType::F32, 0.03f)),
                                          in(g.normal({s.N}, DType::BF16, 0.1f))};
              },
              [f](const Args& t, Device dev) {
                // Quantized once per weight (on the host: not what is timed); perf runs repeat the call.
                static std::map<std::array<int64_t, 4>, QuantizedWeight> cache;
                const std::array<int64_t, 4> key{reinterpret_cast<int64_t>(t[1].raw_data()), static_cast<int64_t>(f),
                                                 t[1].size(0), t[1].size(1)};
                auto it = cache.find(key);
                if (it == cache.end()) it = cache.emplace(key, quantize_weight(t[1], f, "w").to(dev)).first;
                return Outputs{ops::quantized_linear(t[0], it->second, t[2], Activation::None)};
              },
              by_dtype(DType::BF16), {s.M, s.N}, DType::BF16, {}, 2.0 * s.M * s.N * s.K, true});
    }
  }
}

const std::vector<OpCase>& all_cases() {
  static const std::vector<OpCase> cases = [] {
    Cases cs;
    copy_cases(cs);
    fill_cases(cs);
    binary_cases(cs);
    unary_cases(cs);
    axpby_cases(cs);
    linear_cases(cs);
    wan_linear_cases(cs);
    matmul_cases(cs);
    layer_norm_cases(cs);
    rms_norm_cases(cs);
    channel_rms_norm_cases(cs);
    residual_channel_rms_norm_cases(cs);
    group_norm_cases(cs);
    softmax_cases(cs);
    attention_cases(cs);
    rope_cases(cs);
    embedding_cases(cs);
    conv3d_cases(cs);
    conv3d_residual_cases(cs);
    sum_abs_cases(cs);
    modulated_layer_norm_cases(cs);
    gated_residual_cases(cs);
    residual_layer_norm_cases(cs);
    rms_norm_rope_cases(cs);
    wan_block_elementwise_cases(cs);
    quant_cases(cs);
    return cs.list();
  }();
  return cases;
}

std::vector<const OpCase*> case_pointers() {
  std::vector<const OpCase*> out;
  for (const OpCase& c : all_cases()) out.push_back(&c);
  return out;
}

// ---- The runner -------------------------------------------------------------------------------

uint64_t seed_of(const std::string& name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (char c : name) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
  return h % 1000000007ull;
}

// The backends besides the CPU that can run here.
std::vector<Device> device_backends() {
  std::vector<Device> out;
  if (has_backend(DeviceType::CUDA)) out.push_back(Device::cuda(0));
  return out;
}

Args make_args(const std::vector<Input>& inputs, Device d) {
  Args args;
  for (const Input& i : inputs) args.push_back(i.on(d));
  return args;
}

bool has_nan(const Tensor& t) {
  if (!is_floating(t.dtype()) || t.numel() == 0) return false;
  const Tensor f = t.to(Device::cpu()).to(DType::F64).contiguous();
  const double* p = f.data<double>();
  for (int64_t i = 0; i < f.numel(); ++i)
    if (std::isnan(p[i])) return true;
  return false;
}

// got (any device) against want (CPU) within the case's bound.
void compare(const Tensor& got, const Tensor& want, const OpCase& c, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  ASSERT_EQ(got.dtype(), want.dtype()) << what;
  if (c.bound.bitwise) {
    const Tensor g = got.to(Device::cpu()).contiguous(), w = want.contiguous();
    const auto* p = static_cast<const uint8_t*>(g.raw_data());
    const auto* q = static_cast<const uint8_t*>(w.raw_data());
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < g.nbytes(); ++i)
      if (p[i] != q[i] && bad++ == 0) first = i;
    EXPECT_EQ(bad, 0u) << what << ": " << bad << " bytes differ from the CPU's, the first at byte " << first
                       << " (bound: " << c.bound.why << ")";
    return;
  }
  const Tensor g = got.to(Device::cpu()).to(DType::F64).contiguous();
  const Tensor w = want.to(DType::F64).contiguous();
  const double* a = g.data<double>();
  const double* b = w.data<double>();
  double num = 0, den = 0, worst = 0;
  int64_t nan_mismatch = 0, worst_at = -1;
  for (int64_t i = 0; i < g.numel(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) {
      if (std::isnan(a[i]) != std::isnan(b[i]) && nan_mismatch++ < 5)
        ADD_FAILURE() << what << ": element " << i << " is " << a[i] << ", the CPU's " << b[i];
      continue;
    }
    if (a[i] == b[i]) {
      if (std::isfinite(b[i])) den += b[i] * b[i];
      continue;
    }
    const double diff = std::fabs(a[i] - b[i]);
    num += diff * diff;
    den += b[i] * b[i];
    if (!(diff <= worst)) worst = diff, worst_at = i;
  }
  EXPECT_EQ(nan_mismatch, 0) << what << ": NaN where the CPU has a value (unwritten elements?) or the reverse";
  const double rel = std::sqrt(num / std::max(den, 1e-30));
  // The margins, to see how close each case runs to its bound.
  if (env_flag("VGEN_OPS_ERRORS", false))
    std::printf("[ error ] rel_l2 %9.3g (bound %g)  max_abs %9.3g (bound %g)  %s\n", rel, c.bound.rel_l2, worst,
                c.bound.max_abs, what.c_str());
  if (c.bound.rel_l2 >= 0)
    EXPECT_LT(rel, c.bound.rel_l2) << what << ": relative L2 error (bound: " << c.bound.why << "); worst element "
                                   << worst_at << " off by " << worst;
  if (c.bound.max_abs >= 0)
    EXPECT_LE(worst, c.bound.max_abs) << what << ": element " << worst_at << " is " << (worst_at >= 0 ? a[worst_at] : 0)
                                      << ", the CPU's " << (worst_at >= 0 ? b[worst_at] : 0) << " (bound: "
                                      << c.bound.why << ")";
}

double bytes_of(const Args& args, const Outputs& outs) {
  double n = 0;
  for (const Tensor& t : args) n += t.defined() ? static_cast<double>(t.nbytes()) : 0.0;
  for (const Tensor& t : outs) n += static_cast<double>(t.nbytes());
  return n;
}

// Times the case on `d` (median of several runs after warm-up) and prints one line.
void time_case(const OpCase& c, const Args& args, Device d) {
  using Clock = std::chrono::steady_clock;
  Outputs outs = c.run(args, d);  // warm-up (plans, caches)
  ops::synchronize(d);
  const double bytes = bytes_of(args, outs);
  outs.clear();
  const auto once = [&] {
    const auto t0 = Clock::now();
    c.run(args, d);
    ops::synchronize(d);
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  };
  const double first = once();
  // About half a second of runs, 3 to 25 of them.
  const int iters = static_cast<int>(std::clamp(500.0 / std::max(first, 1e-3), 3.0, 25.0));
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) ms.push_back(once());
  std::sort(ms.begin(), ms.end());
  const double med = ms[ms.size() / 2];
  const std::string rate = c.flops > 0 ? fmt::format("{:9.3g} TFLOP/s", c.flops / med / 1e9)
                                       : fmt::format("{:9.3g} GB/s   ", bytes / med / 1e6);
  std::printf("[ perf ] %-6s %10.4f ms %s  %s\n", d.str().c_str(), med, rate.c_str(), c.name.c_str());
  std::fflush(stdout);
}

// Fills freed device memory with NaN so that outputs allocated next start poisoned (an
// element a kernel leaves unwritten then shows as NaN).
void poison_pool(Device d, double nbytes) {
  const int64_t n = static_cast<int64_t>(nbytes / 4);
  for (int i = 0; i < 3; ++i) Tensor::full({n + 64 * i + 1}, NAN, DType::F32, d);
}

}  // namespace

class Case : public ::testing::TestWithParam<const OpCase*> {};

TEST_P(Case, RunsOnCpu) {
  const OpCase& c = *GetParam();
  if (c.perf_only) GTEST_SKIP() << "perf-only case (Wan-sized): run on device backends with VGEN_OPS_PERF=1";
  Gen gen(seed_of(c.name));
  const std::vector<Input> inputs = c.inputs(gen);
  const Device cpu = Device::cpu();
  const Args args = make_args(inputs, cpu);
  const Outputs outs = c.run(args, cpu);
  ASSERT_FALSE(outs.empty()) << c.name;
  EXPECT_EQ(outs[0].shape(), c.shape) << c.name;
  EXPECT_EQ(outs[0].dtype(), c.out_dtype) << c.name;
  for (size_t i = 0; i < outs.size(); ++i) {
    EXPECT_TRUE(outs[i].device().is_cpu()) << c.name;
    if (!c.nan_ok) EXPECT_FALSE(has_nan(outs[i])) << c.name << ": output " << i << " has NaN";
  }
  if (perf_mode()) time_case(c, args, cpu);
}

TEST_P(Case, MatchesCpuOnDevices) {
  const OpCase& c = *GetParam();
  if (c.perf_only && !perf_mode()) GTEST_SKIP() << "perf-only case (Wan-sized): set VGEN_OPS_PERF=1";
  const std::vector<Device> devices = device_backends();
  if (devices.empty()) GTEST_SKIP() << "no backend besides the CPU: " << backend_unavailable_reason(DeviceType::CUDA);
  Gen gen(seed_of(c.name));
  const std::vector<Input> inputs = c.inputs(gen);
  Outputs want;
  double want_bytes = 0;
  if (!c.perf_only) {
    want = c.run(make_args(inputs, Device::cpu()), Device::cpu());
    for (const Tensor& t : want) want_bytes = std::max(want_bytes, static_cast<double>(t.nbytes()) * 2);
  }
  int ran = 0;
  std::string refused;
  for (const Device& d : devices) {
    // Settings for this case: a context of its own, bound while its tensors live.
    std::optional<vgen::testing::ScopedContext> context;
    if (c.settings.any()) context.emplace(d, c.settings.make());
    if (!backend_for(d).supports(c.op, c.dtype)) {
      refused += fmt::format("{}: the {} backend's supports() refuses {} on {}; ", c.name, backend_for(d).name(),
                             op_name(c.op), dtype_name(c.dtype));
      std::printf("[ refused ] %s on %s: supports(%s, %s) is false\n", c.name.c_str(), d.str().c_str(), op_name(c.op),
                  std::string(dtype_name(c.dtype)).c_str());
      continue;
    }
    ++ran;
    const Args args = make_args(inputs, d);
    if (!c.perf_only) {
      poison_pool(d, want_bytes);
      Outputs got;
      try {
        got = c.run(args, d);
        ops::synchronize(d);
      } catch (const std::exception& e) {
        ADD_FAILURE() << c.name << " on " << d.str() << ": " << e.what();
        continue;
      }
      ASSERT_EQ(got.size(), want.size()) << c.name;
      for (size_t i = 0; i < got.size(); ++i) {
        const bool on_host = std::find(c.host_outputs.begin(), c.host_outputs.end(), i) != c.host_outputs.end();
        EXPECT_EQ(got[i].device(), on_host ? Device::cpu() : d) << c.name << ": output " << i;
        const std::string what = fmt::format("{} on {}{}", c.name, d.str(), got.size() > 1 ? fmt::format(" (output {})", i) : "");
        compare(got[i], want[i], c, what);
      }
    }
    if (perf_mode()) time_case(c, args, d);
  }
  if (ran == 0) GTEST_SKIP() << refused;
}

INSTANTIATE_TEST_SUITE_P(BackendOps, Case, ::testing::ValuesIn(case_pointers()),
                         [](const ::testing::TestParamInfo<const OpCase*>& info) { return info.param->test_name; });

// Adding an op to the list without a case here fails this test.
TEST(BackendOps, EveryOpHasACase) {
  std::map<Op, int> count;
  for (const OpCase& c : all_cases())
    if (!c.perf_only) ++count[c.op];
  for (Op op : all_ops()) EXPECT_GT(count[op], 0) << "op '" << op_name(op) << "' of ops/op_list.h has no case here";
  std::string summary;
  for (Op op : all_ops()) summary += fmt::format(" {} {}", op_name(op), count[op]);
  const size_t perf_only = std::count_if(all_cases().begin(), all_cases().end(), [](const OpCase& c) { return c.perf_only; });
  std::printf("[ cases ] %zu, and %zu perf-only:%s\n", all_cases().size() - perf_only, perf_only, summary.c_str());
}

// Each case has a name of its own (the test names come from them) and an error bound.
TEST(BackendOps, CasesAreWellFormed) {
  std::set<std::string> names;
  for (const OpCase& c : all_cases()) {
    EXPECT_TRUE(names.insert(c.name).second) << "two cases named " << c.name;
    EXPECT_TRUE(c.bound.rel_l2 >= 0 || c.bound.max_abs >= 0) << c.name << " has no error bound";
    EXPECT_FALSE(c.bound.why.empty()) << c.name << ": say why the bound is what it is";
    EXPECT_TRUE(c.inputs && c.run) << c.name;
  }
}

// The same inputs give the same bits on every call. The flash kernel's split tail tiles
// (flash_attention_sm90.cu) are combined by whichever of a tile's CTAs finishes last, which
// varies from call to call; the combine adds the ranges in their order whoever runs it. The
// shape: 2 query tiles against 26 key blocks of 192, 13 ranges of 2 blocks each on a 132-SM
// H200, all of one length so that any of them may finish last (elsewhere "flash" runs cuDNN,
// held to the same).
TEST(BackendOps, AttentionGivesTheSameBitsEveryCall) {
  const std::vector<Device> devices = device_backends();
  if (devices.empty()) GTEST_SKIP() << "no backend besides the CPU: " << backend_unavailable_reason(DeviceType::CUDA);
  Gen gen(seed_of("attention same bits"));
  const Tensor q = gen.normal({1, 200, 1, 128}, DType::BF16), k = gen.normal({1, 4992, 1, 128}, DType::BF16),
               v = gen.normal({1, 4992, 1, 128}, DType::BF16);
  for (const Device& d : devices) {
    const vgen::testing::ScopedContext context(d, Settings{"flash"}.make());
    const Tensor qd = bshd_view(q.to(d)), kd = bshd_view(k.to(d)), vd = bshd_view(v.to(d));
    const Tensor first = ops::attention(qd, kd, vd, {}, 1.0f / std::sqrt(128.0f)).to(Device::cpu()).contiguous();
    for (int i = 0; i < 20; ++i) {
      const Tensor again = ops::attention(qd, kd, vd, {}, 1.0f / std::sqrt(128.0f)).to(Device::cpu()).contiguous();
      ASSERT_EQ(std::memcmp(first.raw_data(), again.raw_data(), first.nbytes()), 0) << "call " << i + 2 << " on " << d.str();
    }
  }
}
