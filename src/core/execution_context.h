// ExecutionContext: everything that decides how ops run, in one object instead of process
// globals. A context holds its settings (attention kernel, TF32, convolution and GEMM
// autotuning, CUDA graphs), one runtime per device it touches (for the GPU: its own stream, cuBLASLt and
// cuDNN handles and plan caches), and the place of this process among several (rank, world
// size; a communicator comes with sequence/CFG parallelism).
//
// Contexts are built from the engine configuration in one place (make_execution_context,
// backends/context.h; the pipeline registry calls it) and bound to the calling thread for
// the duration of a pipeline call with ContextScope, the way PyTorch binds a current stream.
// Ops dispatch to the bound context's runtime for their inputs' device. With nothing bound,
// a process default context applies (CPU, default settings; a GPU runtime on first use),
// which is what tests and small tools get. Two pipelines in one process, each with its own
// context, share no state but the device's memory pool.
#pragma once

#include <array>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/communicator.h"
#include "core/device.h"

namespace vgen {

class Tensor;

// The choices of ExecutionSettings::attention_backend.
inline constexpr std::array<std::string_view, 5> kAttentionBackendNames = {"auto", "cudnn", "flash", "reference", "sage"};

// How ops run. Fixed once a context is built (make a second context to run differently).
struct ExecutionSettings {
  // GPU attention kernel: "auto" (the fastest exact one available), "cudnn", "flash" (vgen's Hopper
  // kernel), "reference", or "sage" (the quantized kernel: opt-in, lossy; on sm_90 only, exact
  // kernels elsewhere and for inputs it does not take).
  std::string attention_backend = "auto";
  // Float32 convolutions on the GPU may use TF32 tensor cores (PyTorch's default).
  bool allow_tf32 = true;
  // Time cuDNN's leading engines per convolution shape and keep the fastest
  // (torch.backends.cudnn.benchmark).
  bool conv_autotune = false;
  // Which kernels run bf16 channels-last 3-D convolutions on the GPU: "cudnn" (the default: on an
  // H200 cuDNN's engines reach ~700-730 TFLOP/s on the Wan2.2 decoder's convolutions and vgen's
  // CUTLASS variants beat them on one shape in four, by 6%), "auto" (on an H100/H200, vgen's
  // CUTLASS kernel where it takes the case and is faster than cuDNN, timed on each shape's first
  // call; elsewhere cuDNN), or "cutlass" (wherever it takes the case, for tests;
  // "cutlass:<variant>" one tile variant, conv3d_sm90.h). VGEN_CONV_CUTLASS=1 gives "auto",
  // =force "cutlass", =0 "cudnn".
  std::string conv_kernel = "cudnn";
  // Run 3x3x3 bf16 channels-last convolutions with at most 16 output channels (a VAE's
  // conv_out) with vgen's direct kernel on the GPU (backends/cuda/conv3d_direct.h) rather than
  // cuDNN. VGEN_CONV_DIRECT=0 turns it off.
  bool conv_direct = true;
  // Time cuBLASLt's leading heuristic algorithms per GEMM shape on its first call and keep the
  // fastest (bf16/f16/f32 and FP8 GEMMs); off: the heuristic's first choice.
  bool gemm_autotune = true;
  // Replay the transformer step from a CUDA graph per input shape.
  bool cuda_graphs = true;
  // Time every op (on a GPU synchronizing around each) and print a table when the context ends.
  bool profile_ops = false;
  // With profile_ops, one row per op and argument shapes (VGEN_PROFILE_OPS=shapes).
  bool profile_ops_by_shape = false;

  // The defaults with the environment's overrides (VGEN_ATTENTION_BACKEND, VGEN_ALLOW_TF32,
  // VGEN_CONV_AUTOTUNE, VGEN_CONV_CUTLASS, VGEN_CONV_DIRECT, VGEN_GEMM_AUTOTUNE, VGEN_PROFILE_OPS): what the process default context uses, and what
  // front ends start from before applying their flags.
  static ExecutionSettings from_environment();

  // Throws naming an unknown attention backend or convolution kernel choice; contexts check it
  // when built.
  void validate() const;
  // Throws naming VGEN_ATTENTION_BACKEND when it holds an unknown choice: front ends call it
  // before they load anything, where no flag or config overrides it.
  static void check_environment();
};

// The part of a backend the tensor layer itself needs: copies (including host transfers),
// fills, and waiting for queued work. Backends (ops/backend.h) implement the rest.
class DeviceRuntime {
 public:
  virtual ~DeviceRuntime() = default;
  virtual std::string name() const = 0;
  // dst and src have the same shape; either may be strided, of another dtype, or (for a
  // device runtime) in host memory.
  virtual void copy(const Tensor& dst, const Tensor& src) = 0;
  virtual void fill(const Tensor& dst, float value) = 0;
  virtual void synchronize() {}
  // Called when a context holding this runtime is bound to a thread (e.g. cudaSetDevice).
  virtual void activate() {}
  // The runtime doing the work when this one wraps another (a profiler), else this one.
  virtual DeviceRuntime& underlying() { return *this; }
};

// Makes the runtime of one device type for a context (registered by each backend).
struct RuntimeProvider {
  // nullptr with the reason in *why when the device type is unusable on this machine.
  std::shared_ptr<DeviceRuntime> (*create)(int device_index, const ExecutionSettings& settings, std::string* why) =
      nullptr;
  // "" when usable, else why not ("no CUDA device found", "built without CUDA support").
  std::string (*unavailable_reason)() = nullptr;
};
// Installed by the backends at static initialization (they are linked whole into binaries).
void register_runtime_provider(DeviceType type, RuntimeProvider provider);
// Whether a device type can run here, and why not ("" when it can).
bool device_available(DeviceType type);
std::string device_unavailable_reason(DeviceType type);

class ExecutionContext {
 public:
  // `device` is where the context's models live (the CPU is always reachable besides).
  explicit ExecutionContext(Device device, ExecutionSettings settings = ExecutionSettings::from_environment(),
                            int rank = 0, int world_size = 1);
  ~ExecutionContext();
  ExecutionContext(const ExecutionContext&) = delete;
  ExecutionContext& operator=(const ExecutionContext&) = delete;

  Device device() const { return device_; }
  const ExecutionSettings& settings() const { return settings_; }
  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  // How this rank's world is divided for CFG and sequence parallelism (one rank by default).
  const ParallelLayout& parallel() const { return *parallel_; }
  // Sets the layout (and with it rank and world size) once, before the context runs anything.
  void set_parallel(std::shared_ptr<const ParallelLayout> layout);

  // The runtime that runs work on `device` in this context (made on first use); throws
  // naming the device and the reason when it cannot run here.
  DeviceRuntime& runtime(Device device);

  // Waits for the work queued by this context's device runtimes (those made so far).
  void synchronize();

  // The context bound to this thread, else the process default.
  static ExecutionContext& current();
  // The process default context: the CPU, ExecutionSettings::from_environment().
  static ExecutionContext& process_default();

 private:
  Device device_;
  ExecutionSettings settings_;
  int rank_ = 0, world_size_ = 1;
  std::shared_ptr<const ParallelLayout> parallel_ = ParallelLayout::single();
  std::mutex mutex_;
  std::shared_ptr<DeviceRuntime> cpu_;
  std::vector<std::shared_ptr<DeviceRuntime>> gpus_;  // by device index
};

// Binds a context to this thread until the scope ends (scopes nest; the previous binding
// comes back). Tensors cross between contexts safely at scope edges: binding waits for the
// work queued by the context bound before, and ending the scope waits for the scoped
// context's own (each context has its own GPU stream).
class ContextScope {
 public:
  explicit ContextScope(ExecutionContext& context);
  ~ContextScope();
  ContextScope(const ContextScope&) = delete;
  ContextScope& operator=(const ContextScope&) = delete;

 private:
  ExecutionContext* previous_;
};

}  // namespace vgen
