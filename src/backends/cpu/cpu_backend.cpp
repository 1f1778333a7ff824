// The CPU backend's one instance and its registration as the CPU runtime of every context.
#include "backends/cpu/cpu_backend.h"

#include "ops/profiling_backend.h"

namespace vgen::cpu {

Backend& cpu_backend() {
  static CpuBackend* backend = new CpuBackend();  // never destroyed: contexts may outlive statics
  return *backend;
}

namespace {

std::shared_ptr<DeviceRuntime> create(int, const ExecutionSettings& settings, std::string*) {
  if (settings.profile_ops) return make_profiling_backend(std::shared_ptr<Backend>(&cpu_backend(), [](Backend*) {}),
                                                         settings.profile_ops_by_shape);
  return std::shared_ptr<DeviceRuntime>(&cpu_backend(), [](DeviceRuntime*) {});
}

// Linked whole into every binary (CMake: WHOLE_ARCHIVE), so this runs at start-up.
const bool registered = [] {
  register_runtime_provider(DeviceType::CPU, {&create, nullptr});
  return true;
}();

}  // namespace
}  // namespace vgen::cpu
