// The CUDA backend: every op of the op list (ops/op_list.h) on NVIDIA GPUs (Hopper first;
// sm_80 and sm_100 build too).
//
// One CudaBackend belongs to one execution context and one GPU: it owns the context's stream
// there and, made on first use, its cuBLASLt and cuDNN handles and plan caches, and it reads
// the context's settings (attention kernel, TF32, convolution autotuning). Two contexts in one
// process run on separate streams and share nothing but the device's memory pool: CUDA's
// stream-ordered pool (a caching allocator, process-wide per device), so a tensor freed on the
// host is reused by later work on its stream without a synchronization.
//
// Floating ops take F32, BF16 or F16 tensors and accumulate in float32. The files beside this
// one implement the ops as CudaOps (below): copy.cu (copies, casts, fill, host transfers),
// elementwise.cu (with the gated residual), norm.cu (norms, softmax, fused norm+modulation,
// residual+norm, RMSNorm+RoPE), group_norm.cu (GroupNorm, optionally + SiLU), gemm.cpp
// (cuBLASLt), attention.cpp (cuDNN SDPA and a plain reference), conv.cpp (cuDNN convolution),
// misc.cu (embedding, upsampling, reductions).
#pragma once

#include <memory>
#include <mutex>
#include <typeindex>
#include <utility>
#include <vector>

#include "ops/backend.h"

typedef struct CUstream_st* cudaStream_t;

namespace vgen::cuda {

// a @ b (as matmul) of 16-bit operands with the float32 product kept (no rounding of D).
Tensor matmul_float32_out(const Tensor& a, const Tensor& b);

// The op implementations, one static function per op of the list; they run on the active
// backend (active(), cuda_common.h) that CudaBackend sets around each call.
struct CudaOps {
#define VGEN_CUDA_OP(name, ret, params, args, kind) static ret name params;
  VGEN_OP_LIST(VGEN_CUDA_OP)
#undef VGEN_CUDA_OP
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device_index, const ExecutionSettings& settings);
  ~CudaBackend() override;

  std::string name() const override { return "cuda"; }
  // Copies, fills, embedding, upsampling and the elementwise ops take every dtype (reading
  // non-float inputs as float32); the matrix, norm, attention and convolution ops F32, BF16, F16.
  bool supports(Op op, DType dtype) const override;

  // Each op makes this backend the active one on the calling thread, then runs CudaOps'.
#define VGEN_CUDA_OVERRIDE(name, ret, params, args, kind) \
  ret name params override {                              \
    const Active active(this);                            \
    return CudaOps::name args;                            \
  }
  VGEN_OP_LIST(VGEN_CUDA_OVERRIDE)
#undef VGEN_CUDA_OVERRIDE

  void synchronize() override;
  void activate() override;
  std::string attention_kernel() const override;
  // A CUDA graph of the work (stream capture on this backend's stream, this thread only).
  std::unique_ptr<CapturedWork> capture(const std::function<void()>& work) override;

  int device_index() const { return device_index_; }
  cudaStream_t stream() const { return stream_; }
  const ExecutionSettings& settings() const { return settings_; }

  // Per-backend state of one of the implementation files (plan caches, library handles),
  // made on first use as T(*this) (which may itself ask for other states) and destroyed with
  // the backend in the reverse order of making, before its stream.
  template <typename T>
  T& state() {
    std::lock_guard<std::recursive_mutex> lock(states_mutex_);
    for (auto& [type, ptr] : states_)
      if (type == std::type_index(typeid(T))) return *static_cast<T*>(ptr.get());
    auto made = std::make_shared<T>(*this);
    states_.emplace_back(std::type_index(typeid(T)), made);
    return *made;
  }

  // Sets the backend active() returns on this thread for a scope (scopes nest).
  class Active {
   public:
    explicit Active(CudaBackend* backend);
    ~Active();
    Active(const Active&) = delete;
    Active& operator=(const Active&) = delete;

   private:
    CudaBackend* previous_;
  };

 private:
  int device_index_ = 0;
  ExecutionSettings settings_;
  cudaStream_t stream_ = nullptr;
  std::recursive_mutex states_mutex_;
  std::vector<std::pair<std::type_index, std::shared_ptr<void>>> states_;
};

}  // namespace vgen::cuda
