// The CUDA backend's per-context objects (stream, active backend, graph capture) and its
// process-wide ones: the device allocator (CUDA's stream-ordered memory pool, kept cached),
// device properties, and the registration as the GPU runtime provider.
#include "backends/cuda/cuda_backend.h"

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "backends/cuda/cuda_common.h"
#include "backends/cuda/sage_attention_sm90.h"
#include "core/allocator.h"
#include "ops/profiling_backend.h"

namespace vgen::cuda {
namespace {

thread_local CudaBackend* t_active = nullptr;
cudaDeviceProp g_props{};

// Device memory from the stream-ordered pool of device 0. The pool keeps freed memory
// (release threshold: unlimited), so steady-state allocations cost no driver call. Each
// allocation is made, and later freed, on the stream of the backend active when it was made:
// work queued there in order reuses it safely, whichever context frees the tensor.
class CudaAllocator final : public Allocator {
 public:
  explicit CudaAllocator(cudaMemPool_t pool) : pool_(pool) {}

  void* allocate(size_t nbytes) override {
    void* ptr = nullptr;
    const size_t n = nbytes == 0 ? 256 : nbytes;
    const cudaStream_t s = active().stream();
    cudaError_t err = cudaMallocAsync(&ptr, n, s);
    if (err == cudaErrorMemoryAllocation) {
      // Give the pool's cached memory back to the driver and try once more.
      (void)cudaGetLastError();
      check(cudaDeviceSynchronize(), "synchronize before retrying an allocation");
      cudaMemPoolTrimTo(pool_, 0);
      err = cudaMallocAsync(&ptr, n, s);
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
    std::lock_guard<std::mutex> lock(mutex_);
    streams_[ptr] = s;
    if (capturing_ && std::this_thread::get_id() == capture_thread_) captured_.insert(ptr);
    return ptr;
  }

  void deallocate(void* ptr, size_t nbytes) override {
    cudaStream_t s = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (capturing_ && std::this_thread::get_id() == capture_thread_ && captured_.erase(ptr) == 0) foreign_free_ = true;
      auto it = streams_.find(ptr);
      if (it != streams_.end()) {
        s = it->second;
        streams_.erase(it);
      }
    }
    // During process exit the runtime may already be gone: nothing left to free then.
    if (cudaFreeAsync(ptr, s) != cudaSuccess) (void)cudaGetLastError();
    allocated_.fetch_sub(nbytes);
  }

  // A backend's stream is going away (after a synchronization): memory made on it and still
  // alive is freed on the default stream later.
  void forget_stream(cudaStream_t s) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [ptr, stream] : streams_)
      if (stream == s) stream = nullptr;
  }

  // While this thread records a graph, allocations and frees become graph nodes: each
  // allocation must be freed inside the recording, and nothing allocated before freed in it
  // (a replay would free it again). end_capture says how many allocations outlive it and
  // whether an outside one was freed.
  void begin_capture() {
    std::lock_guard<std::mutex> lock(mutex_);
    captured_.clear();
    foreign_free_ = false;
    capture_thread_ = std::this_thread::get_id();
    capturing_ = true;
  }
  std::pair<size_t, bool> end_capture() {
    std::lock_guard<std::mutex> lock(mutex_);
    capturing_ = false;
    return {captured_.size(), foreign_free_};
  }
  void trim() { cudaMemPoolTrimTo(pool_, 0); }
  size_t allocated_bytes() const override { return allocated_.load(); }
  size_t peak_bytes() const override { return peak_.load(); }
  void reset_peak() override { peak_.store(allocated_.load()); }
  std::optional<size_t> available_bytes() const override {
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) {
      (void)cudaGetLastError();
      return std::nullopt;
    }
    // The pool's reserved memory not handed out is available too (freed tensors stay cached).
    unsigned long long reserved = 0;  // cuuint64_t
    if (cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrReservedMemCurrent, &reserved) != cudaSuccess) {
      (void)cudaGetLastError();
      reserved = 0;
    }
    const size_t used = allocated_.load();
    return free_bytes + (reserved > used ? static_cast<size_t>(reserved) - used : 0);
  }

 private:
  cudaMemPool_t pool_;
  std::atomic<size_t> allocated_{0};
  std::atomic<size_t> peak_{0};
  std::mutex mutex_;
  std::unordered_map<void*, cudaStream_t> streams_;
  bool capturing_ = false;
  std::thread::id capture_thread_;
  std::unordered_set<void*> captured_;
  bool foreign_free_ = false;
};

CudaAllocator* g_allocator = nullptr;

class CudaGraph final : public CapturedWork {
 public:
  CudaGraph(cudaGraphExec_t exec, cudaStream_t stream) : exec_(exec), stream_(stream) {}
  ~CudaGraph() override {
    if (cudaGraphExecDestroy(exec_) != cudaSuccess) (void)cudaGetLastError();
  }
  void replay() override { check(cudaGraphLaunch(exec_, stream_), "replay a CUDA graph"); }

 private:
  cudaGraphExec_t exec_;
  cudaStream_t stream_;  // the recording backend's (the graph lives no longer than it)
};

}  // namespace

CudaBackend& active() {
  if (t_active != nullptr) return *t_active;
  return static_cast<CudaBackend&>(ExecutionContext::current().runtime(Device::cuda(0)).underlying());
}

const cudaDeviceProp& device_properties() { return g_props; }

CudaBackend::Active::Active(CudaBackend* backend) : previous_(t_active) { t_active = backend; }
CudaBackend::Active::~Active() { t_active = previous_; }

CudaBackend::CudaBackend(int device_index, const ExecutionSettings& settings)
    : device_index_(device_index), settings_(settings) {
  check(cudaSetDevice(device_index_), "select the device");
  check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "create a stream");
}

CudaBackend::~CudaBackend() {
  if (cudaStreamSynchronize(stream_) != cudaSuccess) (void)cudaGetLastError();
  {
    const Active a(this);
    // Handles and workspaces, newest first (a plan cache goes before the handle it used).
    while (!states_.empty()) states_.pop_back();
  }
  if (cudaStreamSynchronize(stream_) != cudaSuccess) (void)cudaGetLastError();
  if (g_allocator != nullptr) g_allocator->forget_stream(stream_);
  if (cudaStreamDestroy(stream_) != cudaSuccess) (void)cudaGetLastError();
}

bool CudaBackend::supports(Op op, DType dtype) const {
  switch (op) {
    // Moves of raw elements (any dtype), and elementwise ops and reductions that read other
    // dtypes as float32, as the CPU does.
    case Op::copy:
    case Op::fill:
    case Op::embedding:
    case Op::binary:
    case Op::unary:
    case Op::axpby:
    case Op::sum_abs:
      return true;
    // The quantized attention: BF16 on an sm_90 device with sm_90a code.
    case Op::sage_attention:
      return dtype == DType::BF16 && sage_attention_sm90_unavailable(device_index_).empty();
    // Matrix products, norms, attention, convolution: F32, BF16, F16 kernels only.
    default:
      return is_kernel_float(dtype);
  }
}

std::string CudaBackend::attention_kernel() const {
  return settings_.attention_backend;  // one of ExecutionSettings' names, checked when the context was made
}

void CudaBackend::activate() { check(cudaSetDevice(device_index_), "select the device"); }

bool has_sm90a_code(const void* kernel) {
  static std::mutex mutex;
  static std::map<const void*, bool> known;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = known.find(kernel);
  if (it != known.end()) return it->second;
  cudaFuncAttributes attr{};
  bool has = false;
  if (cudaFuncGetAttributes(&attr, kernel) == cudaSuccess) has = attr.binaryVersion == 90;
  else (void)cudaGetLastError();
  known.emplace(kernel, has);
  return has;
}

void allow_dynamic_shared_memory(const void* kernel, int bytes, const char* what) {
  static std::mutex mutex;
  static std::set<std::tuple<const void*, int, int>> done;
  int device = 0;
  check(cudaGetDevice(&device), "get the current device");
  std::lock_guard<std::mutex> lock(mutex);
  if (done.count({kernel, bytes, device})) return;
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes),
        fmt::format("{}: allow the kernel's shared memory", what).c_str());
  done.insert({kernel, bytes, device});
}

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

void CudaBackend::synchronize() { check(cudaStreamSynchronize(stream_), "synchronize"); }

std::unique_ptr<CapturedWork> CudaBackend::capture(const std::function<void()>& work) {
  const Active active(this);
  synchronize();
  g_allocator->begin_capture();
  check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "begin a CUDA graph capture");
  cudaGraph_t graph = nullptr;
  try {
    work();
  } catch (...) {
    // End the (possibly invalidated) capture so the stream is usable again, then report.
    (void)cudaStreamEndCapture(stream_, &graph);
    if (graph != nullptr) cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    g_allocator->end_capture();
    throw;
  }
  const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
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
  return std::make_unique<CudaGraph>(exec, stream_);
}

namespace {

// Process-wide set-up of device 0, once: properties, the memory pool, the allocator. "" when
// it worked, else why the GPU cannot be used.
const std::string& device_setup() {
  static const std::string why = [] () -> std::string {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
      (void)cudaGetLastError();
      return err != cudaSuccess ? fmt::format("no usable CUDA device ({})", cudaGetErrorString(err))
                                : std::string("no CUDA device found");
    }
    try {
      check(cudaSetDevice(0), "select device 0");
      check(cudaGetDeviceProperties(&g_props, 0), "read device properties");
      cudaMemPool_t pool;
      check(cudaDeviceGetDefaultMemPool(&pool, 0), "get the memory pool");
      uint64_t keep = UINT64_MAX;
      check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep), "configure the memory pool");
      g_allocator = new CudaAllocator(pool);  // never destroyed: tensors may outlive statics
      set_allocator(DeviceType::CUDA, g_allocator);
    } catch (const Error& e) {
      return e.what();
    }
    return {};
  }();
  return why;
}

std::string unavailable_reason() { return device_setup(); }

std::shared_ptr<DeviceRuntime> create(int index, const ExecutionSettings& settings, std::string* why) {
  *why = device_setup();
  if (!why->empty()) return nullptr;
  if (index != 0) {
    *why = fmt::format("vgen runs one GPU per process, cuda:0 (choose it with CUDA_VISIBLE_DEVICES; several GPUs "
                       "run as several processes)");
    return nullptr;
  }
  auto backend = std::make_shared<CudaBackend>(index, settings);
  if (settings.profile_ops) return make_profiling_backend(backend, settings.profile_ops_by_shape);
  return backend;
}

// Linked whole into every binary (CMake: WHOLE_ARCHIVE), so this runs at start-up.
const bool registered = [] {
  register_runtime_provider(DeviceType::CUDA, {&create, &unavailable_reason});
  return true;
}();

}  // namespace
}  // namespace vgen::cuda
