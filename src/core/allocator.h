// Device memory allocators. Each device has one process-wide allocator; a backend may
// install its own (the CUDA backend installs a caching allocator).
#pragma once

#include <cstddef>
#include <memory>
#include <optional>

#include "core/device.h"

namespace vgen {

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* ptr, size_t nbytes) = 0;
  // Bytes currently handed out and the high-water mark since the last reset.
  virtual size_t allocated_bytes() const = 0;
  virtual size_t peak_bytes() const = 0;
  virtual void reset_peak() = 0;
  // Bytes more that allocations could get now (the device's free memory plus what a caching
  // allocator holds unused); nullopt where unknown (host memory). For sizing batches.
  virtual std::optional<size_t> available_bytes() const { return std::nullopt; }
};

Allocator& allocator_for(Device device);
// Replaces the allocator for a device type (used by backends at startup).
void set_allocator(DeviceType type, Allocator* allocator);

}  // namespace vgen
