#include "core/allocator.h"

#include <atomic>
#include <cstdlib>
#include <new>

#include "core/error.h"
#include "core/execution_context.h"

namespace vgen {
namespace {

// Plain aligned host allocator with byte accounting.
class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override {
    const size_t rounded = ((nbytes == 0 ? 1 : nbytes) + 63) / 64 * 64;
    void* ptr = std::aligned_alloc(64, rounded);
    if (ptr == nullptr) fail("out of host memory allocating {} bytes", nbytes);
    const size_t now = allocated_.fetch_add(nbytes) + nbytes;
    size_t peak = peak_.load();
    while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
    }
    return ptr;
  }
  void deallocate(void* ptr, size_t nbytes) override {
    std::free(ptr);
    allocated_.fetch_sub(nbytes);
  }
  size_t allocated_bytes() const override { return allocated_.load(); }
  size_t peak_bytes() const override { return peak_.load(); }
  void reset_peak() override { peak_.store(allocated_.load()); }

 private:
  std::atomic<size_t> allocated_{0};
  std::atomic<size_t> peak_{0};
};

Allocator* g_allocators[2] = {nullptr, nullptr};

}  // namespace


Allocator& allocator_for(Device device) {
  static CpuAllocator cpu;
  if (device.is_cpu()) return g_allocators[0] ? *g_allocators[0] : cpu;
  // The GPU's allocator comes with its runtime, made on first use.
  if (g_allocators[1] == nullptr) ExecutionContext::current().runtime(device);
  VGEN_CHECK(g_allocators[1] != nullptr, "no allocator for {}", device.str());
  return *g_allocators[1];
}

void set_allocator(DeviceType type, Allocator* allocator) {
  g_allocators[type == DeviceType::CPU ? 0 : 1] = allocator;
}

Device parse_device(const std::string& text) {
  if (text == "cpu") return Device::cpu();
  if (text == "cuda") return Device::cuda(0);
  if (text.rfind("cuda:", 0) == 0) {
    const std::string index = text.substr(5);
    if (!index.empty() && index.find_first_not_of("0123456789") == std::string::npos)
      return Device::cuda(std::stoi(index));
  }
  fail("unknown device '{}': expected cpu, cuda or cuda:N", text);
}

}  // namespace vgen
