// The CUDA backend's process-wide state: its stream, the device allocator (CUDA's
// stream-ordered memory pool, kept cached), error checks, and registration.
#include "backends/cuda/cuda_backend.h"

#include <atomic>
#include <mutex>

#include "backends/cuda/cuda_common.h"
#include "core/allocator.h"

namespace vgen::cuda {
namespace {

cudaStream_t g_stream = nullptr;
cudaDeviceProp g_props{};

// Device memory from the stream-ordered pool of device 0. The pool keeps freed memory
// (release threshold: unlimited), so steady-state allocations cost no driver call, and frees
// queued on the backend's stream are reused by later work on it in order.
class CudaAllocator final : public Allocator {
 public:
  explicit CudaAllocator(cudaMemPool_t pool) : pool_(pool) {}

  void* allocate(size_t nbytes) override {
    void* ptr = nullptr;
    const size_t n = nbytes == 0 ? 256 : nbytes;
    cudaError_t err = cudaMallocAsync(&ptr, n, g_stream);
    if (err == cudaErrorMemoryAllocation) {
      // Give the pool's cached memory back to the driver and try once more.
      (void)cudaGetLastError();
      check(cudaStreamSynchronize(g_stream), "synchronize before retrying an allocation");
      cudaMemPoolTrimTo(pool_, 0);
      err = cudaMallocAsync(&ptr, n, g_stream);
    }
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      size_t free_bytes = 0, total_bytes = 0;
      cudaMemGetInfo(&free_bytes, &total_bytes);
      fail("out of GPU memory allocating {:.1f} MiB on cuda:0 ({:.1f} MiB in use by vgen tensors, {:.1f} of {:.1f} "
           "MiB free on the device): {}",
           n / 1048576.0, allocated_.load() / 1048576.0, free_bytes / 1048576.0, total_bytes / 1048576.0,
           cudaGetErrorString(err));
    }
    const size_t now = allocated_.fetch_add(nbytes) + nbytes;
    size_t peak = peak_.load();
    while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
    }
    return ptr;
  }

  void deallocate(void* ptr, size_t nbytes) override {
    // During process exit the runtime may already be gone: nothing left to free then.
    if (cudaFreeAsync(ptr, g_stream) != cudaSuccess) (void)cudaGetLastError();
    allocated_.fetch_sub(nbytes);
  }
  size_t allocated_bytes() const override { return allocated_.load(); }
  size_t peak_bytes() const override { return peak_.load(); }
  void reset_peak() override { peak_.store(allocated_.load()); }

 private:
  cudaMemPool_t pool_;
  std::atomic<size_t> allocated_{0};
  std::atomic<size_t> peak_{0};
};

}  // namespace

cudaStream_t stream() { return g_stream; }
const cudaDeviceProp& device_properties() { return g_props; }

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    fail("cuda: {}: {} ({})", what, cudaGetErrorString(err), cudaGetErrorName(err));
  }
}

void check_launch(const char* op, const Tensor& a, const Tensor& b) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    fail("cuda: {} on {}{}: {} ({})", op, a.str(), b.defined() ? " and " + b.str() : std::string(),
         cudaGetErrorString(err), cudaGetErrorName(err));
}

void require_float(const char* op, const Tensor& t) {
  if (!is_kernel_float(t.dtype()))
    fail("{}: {} must be F32, BF16 or F16 on cuda", op, t.str());
}

void require_cuda(const char* op, const Tensor& t) {
  if (t.defined() && !t.device().is_cuda()) fail("{}: {} is not on cuda", op, t.str());
}

Tensor contiguous(const Tensor& t) { return t.is_contiguous() ? t : t.contiguous(); }

void CudaBackend::synchronize() { check(cudaStreamSynchronize(g_stream), "synchronize"); }

bool register_if_available(std::string* why) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    *why = err != cudaSuccess ? fmt::format("no usable CUDA device ({})", cudaGetErrorString(err))
                              : std::string("no CUDA device found");
    return false;
  }
  try {
    check(cudaSetDevice(0), "select device 0");
    check(cudaGetDeviceProperties(&g_props, 0), "read device properties");
    check(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking), "create stream");
    cudaMemPool_t pool;
    check(cudaDeviceGetDefaultMemPool(&pool, 0), "get the memory pool");
    uint64_t keep = UINT64_MAX;
    check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep), "configure the memory pool");
    static CudaAllocator allocator(pool);
    static CudaBackend backend;
    set_allocator(DeviceType::CUDA, &allocator);
    register_backend(DeviceType::CUDA, &backend);
  } catch (const Error& e) {
    *why = e.what();
    return false;
  }
  return true;
}

}  // namespace vgen::cuda
