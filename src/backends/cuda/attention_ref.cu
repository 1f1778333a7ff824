// Reference attention on CUDA: scores = q k^T through FP32 GEMMs, one kernel for
// scale + bias + softmax per row (the CPU's exact rule: a row whose scores are all -inf gets
// zero weights), then weights @ v. Computed in float32 over chunks of heads (and of queries
// when one head's scores would not fit), whatever the input dtypes; exact but slow: used for
// F32 inputs and to check the others.
//
// The "math" variant is the same with tensor-core GEMMs for 16-bit q/k/v, for the 16-bit
// attention cuDNN's SDPA does not take (head dims above 256, as the Wan VAE's single 384-wide
// head): q k^T from 16-bit operands with the float32 scores kept, the softmax in float32, the
// weights rounded to v's dtype for weights @ v (float32 accumulation), as flash attention does.

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "backends/cuda/cuda_common.h"
#include "backends/cuda/device_utils.cuh"
#include "ops/ops.h"

namespace vgen::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxScores = int64_t{1} << 28;  // floats of scores per chunk (1 GiB)

__device__ float block_reduce(float v, bool is_max, float* shared) {
  for (int o = 16; o > 0; o >>= 1) {
    const float w = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, w) : v + w;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // `shared` may still be read from a previous reduction
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = shared[0];
  for (int w = 1; w < kThreads / 32; ++w) v = is_max ? fmaxf(v, shared[w]) : v + shared[w];
  return v;
}

// scores [heads, queries, Sk] (contiguous F32), in place: softmax(scores * scale + bias).
// Row r is head h0 + r / queries, query q0 + r % queries; bias element (h, q, j) is at
// bias[h * bsh + q * bsq + j * bsk] (strides 0 where it broadcasts).
template <typename TB>
// With lse (a row's log-sum-exp of the scaled scores, for attention_lse), row r's goes to
// lse[(h0 + r / queries) * lse_h + q0 + r % queries].
__global__ void scale_bias_softmax_kernel(float* scores, int64_t queries, int64_t Sk, float scale, const TB* bias,
                                          int64_t bsh, int64_t bsq, int64_t bsk, int64_t h0, int64_t q0,
                                          float* lse = nullptr, int64_t lse_h = 0) {
  __shared__ float shared[kThreads / 32];
  const int64_t row = blockIdx.x;
  float* s = scores + row * Sk;
  const TB* b = bias == nullptr ? nullptr : bias + (h0 + row / queries) * bsh + (q0 + row % queries) * bsq;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < Sk; j += kThreads) {
    const float v = s[j] * scale + (b != nullptr ? to_float(b[j * bsk]) : 0.0f);
    s[j] = v;
    mx = fmaxf(mx, v);
  }
  mx = block_reduce(mx, true, shared);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < Sk; j += kThreads) {
    const float e = mx == -INFINITY ? 0.0f : expf(s[j] - mx);
    s[j] = e;
    sum += e;
  }
  sum = block_reduce(sum, false, shared);
  if (lse != nullptr && threadIdx.x == 0)
    lse[(h0 + row / queries) * lse_h + q0 + row % queries] = mx == -INFINITY ? -INFINITY : mx + logf(sum);
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
  for (int64_t j = threadIdx.x; j < Sk; j += kThreads) s[j] *= inv;
}

}  // namespace

Tensor matmul_float32_out(const Tensor& a, const Tensor& b);

namespace {

// out [B, H, Sq, D] (any strides, any float dtype) = attention(q, k, v, bias, scale); bias
// (optional) is 4-D, floating and broadcastable to [B, H, Sq, Sk] (the caller checks).
// math: the 16-bit variant (q, k, v of one 16-bit dtype).
// lse: undefined, or [B, H, Sq] contiguous F32 for each row's log-sum-exp (no bias then).
void attention_by_gemms(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias, float scale,
                        const Tensor& out, bool math, const Tensor& lse = {}) {
  const int64_t B = q.size(0), H = q.size(1), Sq = q.size(2), D = q.size(3), Sk = k.size(2);
  if (out.numel() == 0) return;
  if (Sk == 0) {  // no keys: an empty weighted sum
    Tensor(out).copy_(Tensor::zeros(out.shape(), out.dtype(), out.device()));
    if (lse.defined()) Tensor(lse).copy_(Tensor::full(lse.shape(), -INFINITY, DType::F32, lse.device()));
    return;
  }
  int64_t bsb = 0, bsh = 0, bsq = 0, bsk = 0;  // bias strides, 0 where it broadcasts
  if (bias.defined()) {                        // 4-D, float, broadcastable to [B, H, Sq, Sk]: checked by the caller
    bsb = bias.size(0) == 1 ? 0 : bias.strides()[0];
    bsh = bias.size(1) == 1 ? 0 : bias.strides()[1];
    bsq = bias.size(2) == 1 ? 0 : bias.strides()[2];
    bsk = bias.size(3) == 1 ? 0 : bias.strides()[3];
  }
  // Chunks: as many heads as fit, else one head and as many queries as fit.
  const int64_t per_head = Sq * Sk;
  const int64_t heads = std::clamp<int64_t>(kMaxScores / std::max<int64_t>(per_head, 1), 1, H);
  const int64_t queries = per_head <= kMaxScores ? Sq : std::max<int64_t>(1, kMaxScores / Sk);

  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h0 = 0; h0 < H; h0 += heads) {
      const int64_t hc = std::min(heads, H - h0);
      const DType dt = math ? q.dtype() : DType::F32;
      const Tensor kf = k.select(0, b).narrow(0, h0, hc).to(dt);  // [hc, Sk, D]
      const Tensor vf = v.select(0, b).narrow(0, h0, hc).to(dt);  // [hc, Sk, D]
      const Tensor kt = kf.transpose(1, 2);                       // [hc, D, Sk]
      for (int64_t q0 = 0; q0 < Sq; q0 += queries) {
        const int64_t qc = std::min(queries, Sq - q0);
        const Tensor qf = q.select(0, b).narrow(0, h0, hc).narrow(1, q0, qc).to(dt);  // [hc, qc, D]
        Tensor scores = math ? matmul_float32_out(qf, kt) : ops::matmul(qf, kt);       // [hc, qc, Sk] F32
        const unsigned rows = static_cast<unsigned>(hc * qc);
        if (bias.defined()) {
          VGEN_DISPATCH_FLOAT(bias.dtype(), "attention bias", {
            const T* bp = static_cast<const T*>(bias.raw_data()) + b * bsb;
            scale_bias_softmax_kernel<T>
                <<<rows, kThreads, 0, stream()>>>(scores.data<float>(), qc, Sk, scale, bp, bsh, bsq, bsk, h0, q0);
          });
        } else {
          float* lp = lse.defined() ? lse.data<float>() + b * H * Sq : nullptr;
          scale_bias_softmax_kernel<float><<<rows, kThreads, 0, stream()>>>(scores.data<float>(), qc, Sk, scale,
                                                                            nullptr, 0, 0, 0, h0, q0, lp, Sq);
        }
        check_launch("attention (reference softmax)", scores, bias);
        if (math) scores = scores.to(dt);
        out.select(0, b).narrow(0, h0, hc).narrow(1, q0, qc).copy_(ops::matmul(scores, vf));
      }
    }
  }
}

}  // namespace

void attention_reference(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias, float scale,
                         const Tensor& out) {
  attention_by_gemms(q, k, v, bias, scale, out, false);
}

void attention_math(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias, float scale,
                    const Tensor& out) {
  VGEN_CHECK((q.dtype() == DType::BF16 || q.dtype() == DType::F16) && k.dtype() == q.dtype() &&
                 v.dtype() == q.dtype(),
             "attention (math): q {}, k {}, v {} must share a 16-bit dtype", q.str(), k.str(), v.str());
  attention_by_gemms(q, k, v, bias, scale, out, true);
}

Tensor CudaOps::attention_lse(const Tensor& q, const Tensor& k, const Tensor& v, float scale, const Tensor& lse) {
  for (const Tensor* t : {&q, &k, &v, &lse}) require_cuda("attention_lse", *t);
  for (const Tensor* t : {&q, &k, &v}) require_float("attention_lse", *t);
  VGEN_CHECK(lse.dtype() == DType::F32 && lse.is_contiguous() &&
                 lse.shape() == (Shape{q.size(0), q.size(1), q.size(2)}),
             "attention_lse: lse {} must be contiguous F32 [B, H, Sq] for q {}", lse.str(), q.str());
  Tensor out = Tensor::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, q.dtype(), q.device());
  // The GEMM path with float32 scores (tensor cores for 16-bit inputs): what ring attention's
  // merge needs; cuDNN's SDPA statistics would be the faster source.
  const bool math = (q.dtype() == DType::BF16 || q.dtype() == DType::F16) && k.dtype() == q.dtype() &&
                    v.dtype() == q.dtype();
  attention_by_gemms(q, k, v, {}, scale, out, math, lse);
  return out;
}

}  // namespace vgen::cuda
