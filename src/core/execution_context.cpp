#include "core/execution_context.h"

#include <algorithm>
#include <cstdlib>
#include <iterator>

#include "core/env.h"
#include "core/error.h"

namespace vgen {
namespace {

std::array<RuntimeProvider, 2>& providers() {
  static std::array<RuntimeProvider, 2> p;
  return p;
}
size_t slot(DeviceType type) { return type == DeviceType::CPU ? 0 : 1; }

thread_local ExecutionContext* t_bound = nullptr;

const char* const kConvKernels[] = {"auto", "cudnn", "cutlass"};

}  // namespace

void ExecutionSettings::check_environment() {
  // The environment's other settings are always valid (VGEN_CONV_CUTLASS maps to a choice).
  try {
    from_environment().validate();
  } catch (const Error& e) {
    fail("VGEN_ATTENTION_BACKEND: {}", e.what());
  }
}

void ExecutionSettings::validate() const {
  if (std::find(std::begin(kConvKernels), std::end(kConvKernels), conv_kernel) == std::end(kConvKernels) &&
      conv_kernel.rfind("cutlass:", 0) != 0)
    fail("unknown convolution kernel choice '{}': expected auto, cudnn, cutlass or cutlass:<variant>", conv_kernel);
  for (std::string_view name : kAttentionBackendNames)
    if (attention_backend == name) return;
  fail("unknown attention backend '{}': expected auto, cudnn, flash, reference or sage", attention_backend);
}

ExecutionSettings ExecutionSettings::from_environment() {
  ExecutionSettings s;
  if (const char* a = std::getenv("VGEN_ATTENTION_BACKEND"); a != nullptr && *a != '\0') s.attention_backend = a;
  s.allow_tf32 = env_flag("VGEN_ALLOW_TF32", true);
  s.conv_autotune = env_flag("VGEN_CONV_AUTOTUNE", false);
  if (const char* c = std::getenv("VGEN_CONV_CUTLASS"); c != nullptr && *c != '\0') {
    const std::string v = c;
    if (v == "force") s.conv_kernel = "cutlass";
    else s.conv_kernel = env_flag("VGEN_CONV_CUTLASS", false) ? "auto" : "cudnn";
  }
  s.conv_direct = env_flag("VGEN_CONV_DIRECT", true);
  s.gemm_autotune = env_flag("VGEN_GEMM_AUTOTUNE", true);
  const char* profile = std::getenv("VGEN_PROFILE_OPS");
  s.profile_ops_by_shape = profile != nullptr && std::string(profile) == "shapes";
  s.profile_ops = s.profile_ops_by_shape || env_flag("VGEN_PROFILE_OPS", false);
  return s;
}

void register_runtime_provider(DeviceType type, RuntimeProvider provider) { providers()[slot(type)] = provider; }

std::string device_unavailable_reason(DeviceType type) {
  const RuntimeProvider& p = providers()[slot(type)];
  if (p.create == nullptr)
    return type == DeviceType::CPU ? "no CPU backend is linked in" : "vgen was built without CUDA support";
  return p.unavailable_reason ? p.unavailable_reason() : std::string();
}

bool device_available(DeviceType type) { return device_unavailable_reason(type).empty(); }

ExecutionContext::ExecutionContext(Device device, ExecutionSettings settings, int rank, int world_size)
    : device_(device), settings_(std::move(settings)), rank_(rank), world_size_(world_size) {
  settings_.validate();
  VGEN_CHECK(world_size_ >= 1 && rank_ >= 0 && rank_ < world_size_, "execution context: rank {} of {} processes",
             rank_, world_size_);
  if (!device_.is_cpu() && !device_available(device_.type))
    fail("device {}: {}", device_.str(), device_unavailable_reason(device_.type));
}

void ExecutionContext::set_parallel(std::shared_ptr<const ParallelLayout> layout) {
  VGEN_CHECK(layout != nullptr, "execution context: no parallel layout");
  parallel_ = std::move(layout);
  rank_ = parallel_->rank();
  world_size_ = parallel_->world_size();
}

ExecutionContext::~ExecutionContext() {
  // Let queued work finish before the streams and handles go.
  try {
    synchronize();
  } catch (...) {
  }
}

void ExecutionContext::synchronize() {
  std::vector<std::shared_ptr<DeviceRuntime>> made;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& g : gpus_)
      if (g) made.push_back(g);
  }
  for (auto& g : made) g->synchronize();
}

DeviceRuntime& ExecutionContext::runtime(Device device) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::shared_ptr<DeviceRuntime>* slot_ptr = nullptr;
  if (device.is_cpu()) {
    slot_ptr = &cpu_;
  } else {
    VGEN_CHECK(device.index >= 0 && device.index < 64, "device {}: bad index", device.str());
    if (gpus_.size() <= static_cast<size_t>(device.index)) gpus_.resize(device.index + 1);
    slot_ptr = &gpus_[device.index];
  }
  if (!*slot_ptr) {
    const RuntimeProvider& p = providers()[slot(device.type)];
    std::string why = p.create == nullptr ? device_unavailable_reason(device.type) : std::string();
    if (p.create != nullptr) *slot_ptr = p.create(device.index, settings_, &why);
    if (!*slot_ptr) fail("no backend for device {}: {}", device.str(), why);
  }
  return **slot_ptr;
}

ExecutionContext& ExecutionContext::process_default() {
  static ExecutionContext* context = new ExecutionContext(Device::cpu());  // lives until exit
  return *context;
}

ExecutionContext& ExecutionContext::current() { return t_bound != nullptr ? *t_bound : process_default(); }

ContextScope::ContextScope(ExecutionContext& context) : previous_(t_bound) {
  ExecutionContext& before = ExecutionContext::current();
  if (&before != &context) before.synchronize();
  t_bound = &context;
  if (!context.device().is_cpu()) context.runtime(context.device()).activate();
}

ContextScope::~ContextScope() {
  ExecutionContext* scoped = t_bound;
  t_bound = previous_;
  if (scoped != nullptr && scoped != &ExecutionContext::current()) {
    try {
      scoped->synchronize();
    } catch (...) {
    }
  }
  if (previous_ != nullptr && !previous_->device().is_cpu()) {
    try {
      previous_->runtime(previous_->device()).activate();
    } catch (...) {
    }
  }
}

}  // namespace vgen
