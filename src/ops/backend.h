// The op interface every compute backend implements (CPU reference, CUDA), generated from
// the op list (ops/op_list.h).
//
// Ops take and return Tensors on the backend's device. The CPU backend is the reference: each
// other backend is tested op by op against it (tests/ops/backend_ops_test.cpp). A backend
// instance belongs to one ExecutionContext (core/execution_context.h) and one device, and
// holds that context's state for the device (for CUDA: stream, library handles, plan caches).
//
// What each op computes:
//   copy(dst, src)        dst and src have the same shape; either may be strided or of another
//                         dtype (or, for a device backend, in host memory)
//   fill(dst, value)
//   binary(op, a, b)      elementwise with numpy broadcasting; the result has a's dtype
//   unary(op, x, a, b)    Scale: x*a. AddScalar: x+a. Clamp: to [a, b]. Others ignore a, b
//   axpby(a, x, b, y)     a*x + b*y for same-shape tensors, accumulated in float32
//   linear(x, w, b, act)  x[..., in] @ w[out, in]^T + b[out], then the activation
//   matmul(a, b)          a[..., M, K] @ b[..., K, N]; batch dims of b equal a's, or b is 2-D
//   layer_norm            over the last dim; undefined weight/bias: no affine part; float32
//                         statistics, rounded once to x's dtype (layer_norm(x.float()).to(x.dtype))
//   rms_norm              x * rsqrt(mean(x^2) + eps) * weight over the last dim (T5, Wan qk-norm)
//   channel_rms_norm      the Wan VAE's norm over dim 1 of [B, C, ...]: x / max(||x||_2, 1e-12) *
//                         sqrt(C) * gamma[C] + bias[C], then act (None or Silu) on the result as
//                         rounded to x's dtype. CUDA keeps a channels-last 3-D input's layout.
//                         out (optional): the result is written there and out returned (x's shape
//                         and dtype, any strides: e.g. frames of a larger buffer). tail (optional,
//                         x 5-D): [B, C, n, H, W], the result's last n frames written there too
//                         (a causal conv's cached frames)
//   group_norm(x, w, b, groups, eps, act)  torch.nn.GroupNorm: x [N, C, *spatial], float32 mean and
//                         biased variance over each group's C / groups channels x all positions,
//                         (x - mean) * rsqrt(var + eps) * w[C] + b[C] (either optional), rounded
//                         once to x's dtype; then act (None or Silu) on that rounded result. CUDA
//                         keeps a channels-last 3-D input's layout.
//   softmax               over the last dim
//   attention(q,k,v,bias,scale)  softmax(q k^T * scale + bias) v; q [B, H, Sq, D], k/v
//                         [B, H, Sk, D]; bias optional, additive, broadcastable to [B, H, Sq, Sk].
//                         The kernel is the context's ExecutionSettings::attention_backend.
//   rope(x, cos, sin)     rotary embedding on interleaved pairs: x [B, S, H, D], cos/sin [S, D] F32
//   embedding(ids, table) table[ids]: ids I64 of any shape, table [V, D]
//   conv3d(x, w, b, p, r) x [B, C, T, H, W], w [O, C, kt, kh, kw], b [O] (optional); r (optional):
//                         a residual of the output's shape added to the result (see ops::conv3d)
//   sum_abs               sum of |x| in double
//   quantize_fp8(x, f, s) x [..., K] -> e4m3 [M, K] (M = rows of x) and float32 scales (ops/quant.h):
//                         f Fp8PerTensor: one scale, s (a static input_scale [1]) or amax(|x|)/448;
//                         f Fp8Block: one per row and 1x128 group, amax/448 (s must be undefined)
//   quantized_linear(x, w, b, act)  linear with a quantized weight (ops/quant.h): FP8 formats
//                         quantize x as quantize_fp8 does (the weight's input_scale, if any) and
//                         compute (x_q * s_x) @ (w_q * s_w)^T + b in float32; NVFP4 keeps x as it
//                         is (W4A16). The reference dequantizes both and runs a float32 GEMM.
//   modulated_layer_norm  (layer_norm(x.float()) * (1 + scale) + shift).to(x.dtype): x [B, S, D];
//                         scale/shift F32 broadcastable to [B, S, D] ([B, 1, D] or per token)
//   gated_residual        (x.float() + y.float() * gate).to(x.dtype): x, y [B, S, D]; gate as scale
//   residual_layer_norm(x, y, gate, n)  a residual and the norm that reads it, in one pass:
//                         residual = gated_residual(x, y, gate) (gate defined) or add(x, y), x and
//                         y [B, S, D] of one dtype; normed = modulated_layer_norm(residual, n.scale,
//                         n.shift, n.eps) (n.scale defined) or layer_norm(residual, n.weight,
//                         n.bias, n.eps), of the residual as rounded to x's dtype: the same
//                         numbers as the ops in turn, without reading the residual back
//   residual_channel_rms_norm(x, y, gamma, bias, act, residual, out, tail)  the Wan VAE's skip connection
//                         and the channel norm of the next block that reads it, in one pass:
//                         residual = add(x, y) (x, y of one shape and dtype), written into
//                         `residual` when defined (x's shape and dtype; may be x itself, each
//                         element read before it is written), else a new tensor; normed =
//                         channel_rms_norm(residual, gamma, bias, act, out, tail) of the residual as
//                         rounded to x's dtype: the same numbers as the ops in turn
//   rms_norm_rope         rope(rms_norm(x over its last two dims, weight, eps), cos, sin): x
//                         [B, S, H, D] (rows may be strided, as a slice of a fused QKV
//                         projection), weight [H * D] (Wan: across heads) or [D] (FLUX: each
//                         head normalized on its own)
//   attention_lse(q,k,v,scale,lse)  attention without bias that also writes each query row's
//                         log-sum-exp of the scaled scores into lse [B, H, Sq] (F32, contiguous;
//                         -inf for no keys): partial results over key blocks merge exactly
//                         (ring attention). out in q's dtype.
//   sage_attention(q,k,v,scale)  quantized attention (ops/sage_attention.h: int8 q, k after
//                         subtracting k's mean, e4m3 P and v, float32 accumulation per key block):
//                         bf16 q [B, H, Sq, 128], k/v [B, H, Sk, 128], no bias; out bf16. The
//                         CPU runs the same steps; CUDA on sm_90a (supports() says no elsewhere).
#pragma once

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/execution_context.h"
#include "core/tensor.h"
#include "ops/op_list.h"
#include "ops/quant.h"

namespace vgen {

enum class BinaryOp { Add, Sub, Mul, Div };
enum class UnaryOp { Scale, AddScalar, Clamp, Silu, GeluTanh, Gelu, Exp, Neg };
enum class Activation { None, GeluTanh, Gelu, Silu };

struct Conv3dParams {
  std::array<int64_t, 3> stride{1, 1, 1};
  std::array<int64_t, 3> padding{0, 0, 0};  // zero padding on both sides of (T, H, W)
  // when >= 0: zero frames before T instead of padding[0] (padding[0] stays the frames after),
  // for causal convolutions without a pad copy
  int64_t time_padding_before = -1;
};

// The norm after a residual (residual_layer_norm): layer_norm with an optional weight and bias,
// or, when scale is defined, modulated_layer_norm (scale and shift F32, as that op takes them;
// no weight or bias then).
struct LayerNormParams {
  Tensor weight, bias;
  Tensor scale, shift;
  float eps = 1e-6f;
};
// residual_layer_norm's results: the residual stream in x's dtype, and its norm.
struct ResidualNorm {
  Tensor residual, normed;
};

enum class Op {
#define VGEN_OP_ENUM(name, ret, params, args, kind) name,
  VGEN_OP_LIST(VGEN_OP_ENUM)
#undef VGEN_OP_ENUM
};
enum class OpKind { Primitive, Composite };

const char* op_name(Op op);
OpKind op_kind(Op op);
// Every op of the list, in order.
const std::vector<Op>& all_ops();

// Device work recorded by Backend::capture, replayed on the backend's stream.
class CapturedWork {
 public:
  virtual ~CapturedWork() = default;
  virtual void replay() = 0;
};

class Backend : public DeviceRuntime {
 public:
  // Whether this backend runs `op` on inputs of `dtype` (the dtype of the op's main input:
  // x, a, q, the table of an embedding, the destination of a copy or fill). The ops
  // wrappers refuse an unsupported call with an error naming the op, the dtype and the
  // backend. The default: every op on the floating dtypes F32, BF16, F16.
  virtual bool supports(Op op, DType dtype) const;

  // The ops. A Primitive's default throws (a backend that leaves one out must say so in
  // supports()); a Composite's default composes primitives.
#define VGEN_OP_VIRTUAL(name, ret, params, args, kind) virtual ret name params;
  VGEN_OP_LIST(VGEN_OP_VIRTUAL)
#undef VGEN_OP_VIRTUAL

  // The attention kernel this backend runs for the context's choice, for reports: "cpu"; on
  // CUDA the context's setting ("auto", "cudnn", "flash", "reference"; cuda::attention_path
  // says which kernel given inputs take).
  virtual std::string attention_kernel() const { return name(); }

  // Records the device work that `work` queues, without running it, for replay as one launch
  // (a CUDA graph). Throws when this backend cannot capture (the default), or when `work`
  // does what a recording cannot hold: a host synchronization or transfer, or memory
  // allocated inside that outlives it (or memory from outside freed inside).
  virtual std::unique_ptr<CapturedWork> capture(const std::function<void()>& work);

 protected:
  [[noreturn]] void not_implemented(Op op) const;
};

// The backend that runs work on `device` in the context bound to this thread.
Backend& backend_for(Device device);
// Whether a device type can run here, and why not (see core/execution_context.h).
bool has_backend(DeviceType type);
std::string backend_unavailable_reason(DeviceType type);

}  // namespace vgen
