// The CUDA backend's process-wide state: its stream, the device allocator (CUDA's
// stream-ordered memory pool, kept cached), error checks, and registration.
#include "backends/cuda/cuda_backend.h"

#include <atomic>
#include <mutex>
#include <thread>
#include <unordered_set>

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
    if (capturing_ && std::this_thread::get_id() == capture_thread_) captured_.insert(ptr);
    return ptr;
  }

  void deallocate(void* ptr, size_t nbytes) override {
    if (capturing_ && std::this_thread::get_id() == capture_thread_ && captured_.erase(ptr) == 0) foreign_free_ = true;
    // During process exit the runtime may already be gone: nothing left to free then.
    if (cudaFreeAsync(ptr, g_stream) != cudaSuccess) (void)cudaGetLastError();
    allocated_.fetch_sub(nbytes);
  }

  // While this thread records a graph, allocations and frees become graph nodes: each
  // allocation must be freed inside the recording, and nothing allocated before freed in it
  // (a replay would free it again). end_capture says how many allocations outlive it and
  // whether an outside one was freed.
  void begin_capture() {
    captured_.clear();
    foreign_free_ = false;
    capture_thread_ = std::this_thread::get_id();
    capturing_ = true;
  }
  std::pair<size_t, bool> end_capture() {
    capturing_ = false;
    return {captured_.size(), foreign_free_};
  }
  void trim() { cudaMemPoolTrimTo(pool_, 0); }
  size_t allocated_bytes() const override { return allocated_.load(); }
  size_t peak_bytes() const override { return peak_.load(); }
  void reset_peak() override { peak_.store(allocated_.load()); }

 private:
  cudaMemPool_t pool_;
  std::atomic<size_t> allocated_{0};
  std::atomic<size_t> peak_{0};
  std::atomic<bool> capturing_{false};
  std::thread::id capture_thread_;
  std::unordered_set<void*> captured_;
  bool foreign_free_ = false;
};

CudaAllocator* g_allocator = nullptr;

class CudaGraph final : public CapturedWork {
 public:
  explicit CudaGraph(cudaGraphExec_t exec) : exec_(exec) {}
  ~CudaGraph() override {
    if (cudaGraphExecDestroy(exec_) != cudaSuccess) (void)cudaGetLastError();
  }
  void replay() override { check(cudaGraphLaunch(exec_, g_stream), "replay a CUDA graph"); }

 private:
  cudaGraphExec_t exec_;
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

std::unique_ptr<CapturedWork> CudaBackend::capture(const std::function<void()>& work) {
  synchronize();
  g_allocator->begin_capture();
  check(cudaStreamBeginCapture(g_stream, cudaStreamCaptureModeThreadLocal), "begin a CUDA graph capture");
  cudaGraph_t graph = nullptr;
  try {
    work();
  } catch (...) {
    // End the (possibly invalidated) capture so the stream is usable again, then report.
    (void)cudaStreamEndCapture(g_stream, &graph);
    if (graph != nullptr) cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    g_allocator->end_capture();
    throw;
  }
  const cudaError_t ended = cudaStreamEndCapture(g_stream, &graph);
  const auto [outliving, foreign_free] = g_allocator->end_capture();
  if (ended != cudaSuccess || graph == nullptr) {
    (void)cudaGetLastError();
    fail("cuda: capturing a CUDA graph failed: {} (the work synchronized or used the stream in a way a graph cannot "
         "record)",
         cudaGetErrorString(ended));
  }
  if (outliving != 0 || foreign_free) {
    cudaGraphDestroy(graph);
    fail("cuda: the recorded work {} (a graph replay cannot do that)",
         foreign_free ? "freed memory allocated before the recording"
                      : fmt::format("left {} allocations alive past the recording", outliving));
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  check(made, "instantiate a CUDA graph");
  // Memory the eager runs cached is not needed by the graph, which has its own.
  g_allocator->trim();
  return std::make_unique<CudaGraph>(exec);
}

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
    g_allocator = &allocator;
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
